//! Models, the training loop, checkpoints and inference for lexmesh. No broker dependency:
//! the embedded CLI and the mesh's trainer service (`services/mesh/src/trainer.rs`) both drive
//! [`training::train`].
//!
//! - [`config`]: model kinds and hyperparameters ([`ExperimentConfig`]).
//! - [`overrides`]: the settings a run changes on top of the defaults ([`Overrides`]), from the
//!   command line or a job.
//! - [`model`]: the four architectures behind [`TextClassifier`].
//! - [`batch`]: encoded texts → tensors.
//! - [`training`]: the loop (runs on the caller's thread; [`training::spawn`] gives it its own).
//! - [`progress`]: the [`ProgressSink`] trait and its call order, and [`CancelToken`].
//! - [`checkpoint`]: per-epoch checkpoints and resume.
//! - [`artifact`]: the model directory written by training and read by inference.
//! - [`inference`]: [`Classifier`], a loaded model that predicts labels and probabilities.
//! - [`device`]: CPU/GPU and thread settings.

pub mod artifact;
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod error;
pub mod inference;
pub mod model;
pub mod optimizer;
pub mod overrides;
pub mod progress;
pub mod training;

pub use artifact::ModelDir;
pub use config::{
    ClassWeighting, DeviceChoice, ExperimentConfig, ModelConfig, ModelKind, RnnCell, TrainingConfig,
};
pub use error::TrainError;
pub use inference::{Classifier, Prediction};
pub use model::TextClassifier;
pub use overrides::Overrides;
pub use progress::{CancelToken, ProgressEvent, ProgressSink, StopReason};
pub use training::{TrainingData, TrainingOutcome, TrainingRun};
