//! `bow`: an embedding bag (weighted sum of feature embeddings; the weights are a mean or
//! L2-normalised TF-IDF) followed by an MLP or a linear head. With character n-grams this is
//! fastText; with TF-IDF weights and no hidden layer it is a linear model on TF-IDF.
//!
//! **Width sized to the task.** With no hidden layer (`hidden = 0`, the default) and fewer
//! classes than `embedding_dim`, the bag itself is the logits: each feature's row holds one
//! weight per class and a bias is added. That is the full-rank linear model, where an
//! `embedding_dim`-wide bag followed by a linear head is a low-rank one wider than it (128
//! columns for a 2-class task). It holds `classes / embedding_dim` of the parameters (1/64 for
//! the rulings, 11/128 for the news topics), which shrinks the table, its gradient, both Adam
//! moments, the `[batch, length, width]` activations and the checkpoints by the same factor.
//! Dropout then acts on the bag's inputs (each feature of a text is dropped with probability
//! `dropout`, the rest scaled up), the regulariser that fits a linear model; rows start at
//! zero, so a feature never seen in training adds nothing at inference.

use burn::module::Param;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig,
};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::batch::Batch;
use crate::config::ModelConfig;

/// The embedding-bag model.
#[derive(Module, Debug)]
pub struct BowModel {
    embedding: Embedding,
    hidden: Option<Linear>,
    dropout: Dropout,
    /// The head after the bag; none when the bag is already the logits.
    output: Option<Linear>,
    /// The logits' bias when the bag is the logits.
    bias: Option<Param<Tensor<1>>>,
}

/// Whether a bag model with these settings is the direct (full-rank) linear model: no hidden
/// layer and no more classes than `embedding_dim`.
pub fn is_direct_linear(config: &ModelConfig, classes: usize) -> bool {
    config.hidden == 0 && classes <= config.embedding_dim
}

impl BowModel {
    /// A freshly initialised model.
    pub fn new(config: &ModelConfig, features: usize, classes: usize, device: &Device) -> Self {
        let dropout = DropoutConfig::new(config.dropout).init();
        if is_direct_linear(config, classes) {
            return Self {
                embedding: EmbeddingConfig::new(features, classes)
                    .with_initializer(Initializer::Zeros)
                    .init(device),
                hidden: None,
                dropout,
                output: None,
                bias: Some(Initializer::Zeros.init([classes], device)),
            };
        }
        let dim = config.embedding_dim;
        // fastText initialises input vectors uniformly in ±1/dim.
        let bound = 1.0 / dim as f64;
        let embedding = EmbeddingConfig::new(features, dim)
            .with_initializer(Initializer::Uniform {
                min: -bound,
                max: bound,
            })
            .init(device);
        let (hidden, head_in) = if config.hidden > 0 {
            (
                Some(LinearConfig::new(dim, config.hidden).init(device)),
                config.hidden,
            )
        } else {
            (None, dim)
        };
        Self {
            embedding,
            hidden,
            dropout,
            output: Some(LinearConfig::new(head_in, classes).init(device)),
            bias: None,
        }
    }

    /// Logits `[batch, classes]`.
    pub fn forward(&self, batch: &Batch) -> Tensor<2> {
        let Some(output) = &self.output else {
            return self.forward_direct(batch);
        };
        let embedded = self.embedding.forward(batch.ids.clone()); // [B, L, D]
        let pooled = match &batch.weights {
            // [B, 1, L] x [B, L, D] -> [B, 1, D]
            Some(w) => w
                .clone()
                .unsqueeze_dim::<3>(1)
                .matmul(embedded)
                .squeeze_dim::<2>(1),
            None => batch.masked_mean(embedded),
        };
        let mut x = self.dropout.forward(pooled);
        if let Some(hidden) = &self.hidden {
            x = self.dropout.forward(relu(hidden.forward(x)));
        }
        output.forward(x)
    }

    /// The linear model: dropout on the bag's weights, the weighted sum of per-class rows, bias.
    fn forward_direct(&self, batch: &Batch) -> Tensor<2> {
        let weights = match &batch.weights {
            Some(w) => w.clone(),
            // A mean bag: 1/length at real tokens, 0 at padding.
            None => batch.keep.clone().squeeze_dim::<2>(2) / batch.lengths.clone(),
        };
        let weights = self.dropout.forward(weights); // [B, L]
        let embedded = self.embedding.forward(batch.ids.clone()); // [B, L, C]
        let logits = weights
            .unsqueeze_dim::<3>(1)
            .matmul(embedded)
            .squeeze_dim::<2>(1); // [B, C]
        match &self.bias {
            Some(bias) => logits + bias.val().unsqueeze_dim::<2>(0),
            None => logits,
        }
    }
}
