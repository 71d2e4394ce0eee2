//! `cnn`: Kim (2014) — word embeddings, one 1-D convolution per kernel width with ReLU, max over
//! time (computed as ReLU of the max), concatenation, dropout, linear head. Padding positions are zeroed before convolving.
//! Each convolution runs as one matrix product over the unfolded windows ([`max_over_time`]).

use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::batch::Batch;
use crate::config::ModelConfig;

/// The Kim CNN.
#[derive(Module, Debug)]
pub struct CnnModel {
    embedding: Embedding,
    convs: Vec<Conv1d>,
    dropout: Dropout,
    output: Linear,
}

impl CnnModel {
    /// A freshly initialised model.
    pub fn new(config: &ModelConfig, vocab: usize, classes: usize, device: &Device) -> Self {
        let dim = config.embedding_dim;
        Self {
            embedding: EmbeddingConfig::new(vocab, dim).init(device),
            convs: config
                .kernel_sizes
                .iter()
                .map(|&k| Conv1dConfig::new(dim, config.filters, k).init(device))
                .collect(),
            dropout: DropoutConfig::new(config.dropout).init(),
            output: LinearConfig::new(config.filters * config.kernel_sizes.len(), classes)
                .init(device),
        }
    }

    /// Logits `[batch, classes]`.
    pub fn forward(&self, batch: &Batch) -> Tensor<2> {
        let x = self.embedding.forward(batch.ids.clone()) * batch.keep.clone();
        let pooled: Vec<Tensor<2>> = self
            .convs
            .iter()
            // relu(max_t z) == max_t relu(z) (ReLU is monotonic), with the same gradient; taking
            // the max first runs ReLU on [B, F] instead of [B, F, L], a measurable share of
            // the step on CPU.
            .map(|conv| relu(max_over_time(conv, &x)))
            .collect();
        let features = Tensor::cat(pooled, 1);
        self.output.forward(self.dropout.forward(features))
    }
}

/// `conv`'s output over `x` (`[B, L, D]`), maxed over time: `[B, F]`. The convolution is run as
/// one matrix product of the unfolded windows (`[B·(L-k+1), k·D]`, window offset major) with the
/// weights laid out to match (`[k·D, F]`): the same sums as `conv.forward` on `[B, D, L]`, with
/// the same parameters (checkpoints are unchanged), but its backward is two matrix products and
/// slice sums instead of the transposed convolutions the autodiff backend derives, which on
/// libtorch's CPU kernels cost more than the forward.
fn max_over_time(conv: &Conv1d, x: &Tensor<3>) -> Tensor<2> {
    let [batch, length, dim] = x.dims();
    let weight = conv.weight.val();
    let [filters, _, width] = weight.dims();
    let out = length + 1 - width;
    let windows: Vec<Tensor<3>> = (0..width)
        .map(|i| x.clone().slice([0..batch, i..i + out, 0..dim]))
        .collect();
    let unfolded = Tensor::cat(windows, 2).reshape([batch * out, width * dim]);
    let weight = weight.permute([2, 1, 0]).reshape([width * dim, filters]);
    let mut y = unfolded.matmul(weight);
    if let Some(bias) = &conv.bias {
        y = y + bias.val().unsqueeze_dim::<2>(0);
    }
    y.reshape([batch, out, filters])
        .max_dim(1)
        .squeeze_dim::<2>(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use burn::tensor::Distribution;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    fn assert_close(what: &str, ours: Vec<f32>, reference: Vec<f32>) {
        assert_eq!(ours.len(), reference.len(), "{what}");
        let worst = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{what}: off by up to {worst}");
        assert!(reference.iter().any(|v| v.abs() > 1e-3), "{what}: all zero");
    }

    #[test]
    fn the_unfolded_convolution_gives_the_convolutions_values_and_gradients() {
        let device = crate::device::select_device(crate::config::DeviceChoice::Cpu)
            .unwrap()
            .autodiff();
        for width in [1, 3, 5] {
            let conv = Conv1dConfig::new(6, 4, width).init(&device);
            let x = Tensor::<3>::random([3, 9, 6], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            // A weighted sum, so that every output's gradient differs.
            let mix = Tensor::<2>::random([3, 4], Distribution::Normal(0.0, 1.0), &device);
            let ours = max_over_time(&conv, &x);
            let reference = conv
                .forward(x.clone().swap_dims(1, 2))
                .max_dim(2)
                .squeeze_dim::<2>(2);
            assert_close(
                &format!("width {width}: outputs"),
                values(ours.clone()),
                values(reference.clone()),
            );
            let ours = (ours * mix.clone()).sum().backward();
            let reference = (reference * mix).sum().backward();
            let bias = conv.bias.as_ref().unwrap();
            assert_close(
                &format!("width {width}: input gradient"),
                values(x.grad(&ours).unwrap()),
                values(x.grad(&reference).unwrap()),
            );
            assert_close(
                &format!("width {width}: weight gradient"),
                values(conv.weight.grad(&ours).unwrap()),
                values(conv.weight.grad(&reference).unwrap()),
            );
            assert_close(
                &format!("width {width}: bias gradient"),
                values(bias.grad(&ours).unwrap()),
                values(bias.grad(&reference).unwrap()),
            );
        }
    }
}
