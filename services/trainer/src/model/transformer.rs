//! `transformer`: word embeddings plus learned positions, a small Transformer encoder that
//! ignores padding, mean over real positions, linear head.

use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;

use crate::batch::Batch;
use crate::config::ModelConfig;

/// The Transformer classifier.
#[derive(Module, Debug)]
pub struct TransformerModel {
    embedding: Embedding,
    positions: Embedding,
    encoder: TransformerEncoder,
    dropout: Dropout,
    output: Linear,
}

impl TransformerModel {
    /// A freshly initialised model for sequences up to `max_length`.
    pub fn new(
        config: &ModelConfig,
        vocab: usize,
        classes: usize,
        max_length: usize,
        device: &Device,
    ) -> Self {
        let dim = config.embedding_dim;
        Self {
            embedding: EmbeddingConfig::new(vocab, dim).init(device),
            positions: EmbeddingConfig::new(max_length.max(1), dim).init(device),
            encoder: TransformerEncoderConfig::new(dim, config.hidden, config.heads, config.layers)
                .with_dropout(config.dropout)
                .with_norm_first(true)
                .init(device),
            dropout: DropoutConfig::new(config.dropout).init(),
            output: LinearConfig::new(dim, classes).init(device),
        }
    }

    /// Logits `[batch, classes]`.
    pub fn forward(&self, batch: &Batch) -> Tensor<2> {
        let [b, l] = batch.ids.dims();
        let device = batch.ids.device();
        let positions = Tensor::<1, Int>::arange(0..l as i64, &device)
            .unsqueeze_dim::<2>(0)
            .repeat_dim(0, b);
        let x = self.embedding.forward(batch.ids.clone()) + self.positions.forward(positions);
        let x = self.dropout.forward(x);
        let encoded = self
            .encoder
            .forward(TransformerEncoderInput::new(x).mask_pad(batch.padding.clone()));
        let pooled = batch.masked_mean(encoded);
        self.output.forward(self.dropout.forward(pooled))
    }
}
