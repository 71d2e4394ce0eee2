//! `bigru`: word embeddings, a bidirectional GRU (or LSTM), mean over the real (unpadded)
//! positions, dropout, linear head.

use burn::nn::{
    BiGru, BiGruConfig, BiLstm, BiLstmConfig, Dropout, DropoutConfig, Embedding, EmbeddingConfig,
    Linear, LinearConfig,
};
use burn::prelude::*;

use crate::batch::Batch;
use crate::config::{ModelConfig, RnnCell};

/// The recurrent layer.
// A handful of these exist per process; burn's Module derive needs the variants inline.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Recurrent {
    /// Bidirectional GRU.
    Gru(BiGru),
    /// Bidirectional LSTM.
    Lstm(BiLstm),
}

/// The bidirectional recurrent classifier.
#[derive(Module, Debug)]
pub struct RnnModel {
    embedding: Embedding,
    recurrent: Recurrent,
    dropout: Dropout,
    output: Linear,
}

impl RnnModel {
    /// A freshly initialised model.
    pub fn new(config: &ModelConfig, vocab: usize, classes: usize, device: &Device) -> Self {
        let dim = config.embedding_dim;
        let recurrent = match config.cell {
            RnnCell::Gru => Recurrent::Gru(BiGruConfig::new(dim, config.hidden, true).init(device)),
            RnnCell::Lstm => {
                Recurrent::Lstm(BiLstmConfig::new(dim, config.hidden, true).init(device))
            }
        };
        Self {
            embedding: EmbeddingConfig::new(vocab, dim).init(device),
            recurrent,
            dropout: DropoutConfig::new(config.dropout).init(),
            output: LinearConfig::new(2 * config.hidden, classes).init(device),
        }
    }

    /// Logits `[batch, classes]`.
    pub fn forward(&self, batch: &Batch) -> Tensor<2> {
        let x = self
            .dropout
            .forward(self.embedding.forward(batch.ids.clone()));
        let out = match &self.recurrent {
            Recurrent::Gru(gru) => gru.forward(x, None).0,
            Recurrent::Lstm(lstm) => lstm.forward(x, None).0,
        }; // [B, L, 2H]
        let pooled = batch.masked_mean(out);
        self.output.forward(self.dropout.forward(pooled))
    }
}
