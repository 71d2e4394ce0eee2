//! `cnn`: Kim (2014) — word embeddings, one 1-D convolution per kernel width with ReLU, max over
//! time (computed as ReLU of the max), concatenation, dropout, linear head. Padding positions are zeroed before convolving.

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
        let x = x.swap_dims(1, 2); // [B, D, L]
        let pooled: Vec<Tensor<2>> = self
            .convs
            .iter()
            // relu(max_t z) == max_t relu(z) (ReLU is monotonic), with the same gradient; taking
            // the max first runs ReLU on [B, F] instead of [B, F, L], a measurable share of
            // the step on CPU.
            .map(|conv| relu(conv.forward(x.clone()).max_dim(2).squeeze_dim::<2>(2)))
            .collect();
        let features = Tensor::cat(pooled, 1);
        self.output.forward(self.dropout.forward(features))
    }
}
