//! `bow`: an embedding bag (weighted sum of feature embeddings; the weights are a mean or
//! L2-normalised TF-IDF) followed by an MLP or a linear head. With character n-grams this is
//! fastText; with TF-IDF weights and no hidden layer it is a low-rank linear model on TF-IDF.

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
    output: Linear,
}

impl BowModel {
    /// A freshly initialised model.
    pub fn new(config: &ModelConfig, features: usize, classes: usize, device: &Device) -> Self {
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
            dropout: DropoutConfig::new(config.dropout).init(),
            output: LinearConfig::new(head_in, classes).init(device),
        }
    }

    /// Logits `[batch, classes]`.
    pub fn forward(&self, batch: &Batch) -> Tensor<2> {
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
        self.output.forward(x)
    }
}
