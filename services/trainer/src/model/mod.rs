//! The four architectures behind one [`TextClassifier`] module.

mod bow;
mod cnn;
mod rnn;
mod transformer;

pub use bow::BowModel;
pub use cnn::CnnModel;
pub use rnn::{Recurrent, RnnModel};
pub use transformer::TransformerModel;

use burn::prelude::*;

use crate::batch::Batch;
use crate::config::{ModelConfig, ModelKind};

/// A text classifier of any supported kind.
// A handful of these exist per process; burn's Module derive needs the variants inline.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum TextClassifier {
    /// Embedding bag + MLP.
    Bow(BowModel),
    /// Kim CNN.
    Cnn(CnnModel),
    /// Bidirectional GRU/LSTM.
    Rnn(RnnModel),
    /// Transformer encoder.
    Transformer(TransformerModel),
}

impl TextClassifier {
    /// A freshly initialised model; `features` is the size of the id space, `max_length` the
    /// longest input (positions of the Transformer).
    pub fn new(
        config: &ModelConfig,
        features: usize,
        classes: usize,
        max_length: usize,
        device: &Device,
    ) -> Self {
        match config.kind {
            ModelKind::Bow => Self::Bow(BowModel::new(config, features, classes, device)),
            ModelKind::Cnn => Self::Cnn(CnnModel::new(config, features, classes, device)),
            ModelKind::Bigru => Self::Rnn(RnnModel::new(config, features, classes, device)),
            ModelKind::Transformer => Self::Transformer(TransformerModel::new(
                config, features, classes, max_length, device,
            )),
        }
    }

    /// Logits `[batch, classes]`.
    pub fn forward(&self, batch: &Batch) -> Tensor<2> {
        match self {
            Self::Bow(m) => m.forward(batch),
            Self::Cnn(m) => m.forward(batch),
            Self::Rnn(m) => m.forward(batch),
            Self::Transformer(m) => m.forward(batch),
        }
    }
}
