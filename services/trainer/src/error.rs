//! Errors of training, checkpointing and inference.

use std::path::PathBuf;

/// Why training or inference failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Invalid settings.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Data could not be read or prepared.
    #[error(transparent)]
    Data(#[from] lexmesh_preprocessor::DataError),
    /// A file of a model or checkpoint directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file of a model or checkpoint directory is malformed.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Weights or optimizer state could not be saved or loaded.
    #[error("{path}: weights: {message}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// burn's message.
        message: String,
    },
    /// The requested device is not available in this build or on this machine.
    #[error("device: {0}")]
    Device(String),
    /// The loss became NaN or infinite.
    #[error(
        "training diverged at epoch {epoch}, batch {batch} (loss {loss}); lower the learning rate"
    )]
    Diverged {
        /// Epoch (1-based).
        epoch: usize,
        /// Batch (1-based).
        batch: usize,
        /// The loss value.
        loss: f32,
    },
    /// A checkpoint does not belong to this run (different settings or data).
    #[error("cannot resume from {path}: {reason}")]
    Resume {
        /// The checkpoint directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The training thread panicked.
    #[error("training thread failed: {0}")]
    Panicked(String),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    pub(crate) fn weights(
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(burn::store::RecordError) -> Self {
        let path = path.into();
        move |e| Self::Weights {
            path,
            message: e.to_string(),
        }
    }
}
