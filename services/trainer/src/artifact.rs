//! The model directory that training writes and inference reads:
//!
//! | file | what |
//! | --- | --- |
//! | `config.json` | [`ExperimentConfig`]: architecture, training, normaliser and feature settings |
//! | `preprocessing.json` | the fitted [`Preprocessor`] (vocabulary, n-gram statistics) |
//! | `labels.json` | class labels in class-id order |
//! | `model.bpk` | weights (burnpack) of the kept epoch |
//! | `metrics.json` | validation report of the kept weights |
//! | `history.json` | one entry per epoch |
//! | `checkpoint/` | the latest per-epoch checkpoint, for `--resume` |

use std::path::{Path, PathBuf};

use burn::module::Module;
use serde::{Deserialize, Serialize};

use lexmesh_preprocessor::{LabelSet, Preprocessor};

use crate::checkpoint::{CheckpointDir, read_json, write_json};
use crate::config::ExperimentConfig;
use crate::error::TrainError;
use crate::model::TextClassifier;
use crate::progress::EpochProgress;

/// A model directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    root: PathBuf,
}

/// Format version of the model directory; bumped when a file changes incompatibly.
pub const FORMAT_VERSION: u32 = 2;

/// `config.json`: the settings plus facts a loader needs before reading weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedConfig {
    /// Model directory format version.
    pub format_version: u32,
    /// The experiment settings.
    pub experiment: ExperimentConfig,
    /// Size of the id space the embedding covers.
    pub feature_space: usize,
}

impl ModelDir {
    /// A model directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Its checkpoint folder.
    pub fn checkpoints(&self) -> CheckpointDir {
        CheckpointDir::new(self.root.join("checkpoint"))
    }

    /// Creates the directory.
    pub fn create(&self) -> Result<(), TrainError> {
        std::fs::create_dir_all(&self.root).map_err(TrainError::io(&self.root))
    }

    /// Writes what inference needs before training starts (settings, preprocessing, labels),
    /// so a resumed run can reuse them.
    pub fn write_inputs(
        &self,
        config: &SavedConfig,
        preprocessor: &Preprocessor,
        labels: &LabelSet,
    ) -> Result<(), TrainError> {
        self.create()?;
        write_json(&self.root.join("config.json"), config)?;
        write_json(&self.root.join("preprocessing.json"), preprocessor)?;
        write_json(&self.root.join("labels.json"), labels)
    }

    /// Writes the trained weights, the validation report and the history.
    pub fn write_outputs<M: Serialize>(
        &self,
        model: &TextClassifier,
        metrics: &M,
        history: &[EpochProgress],
    ) -> Result<(), TrainError> {
        let weights = self.root.join("model.bpk");
        let tmp = self.root.join("model.bpk.tmp");
        model
            .clone()
            .save_file(&tmp)
            .map_err(TrainError::weights(&tmp))?;
        std::fs::rename(&tmp, &weights).map_err(TrainError::io(&weights))?;
        write_json(&self.root.join("metrics.json"), metrics)?;
        write_json(&self.root.join("history.json"), &history)
    }

    /// Reads `config.json`.
    pub fn read_config(&self) -> Result<SavedConfig, TrainError> {
        let path = self.root.join("config.json");
        let config: SavedConfig = read_json(&path)?;
        if config.format_version != FORMAT_VERSION {
            return Err(TrainError::Format {
                path,
                message: format!(
                    "model format {} is not supported (this lexmesh reads {FORMAT_VERSION})",
                    config.format_version
                ),
            });
        }
        Ok(config)
    }

    /// Reads `preprocessing.json`.
    pub fn read_preprocessor(&self) -> Result<Preprocessor, TrainError> {
        Ok(read_json::<Preprocessor>(&self.root.join("preprocessing.json"))?.prepared())
    }

    /// Reads `labels.json`.
    pub fn read_labels(&self) -> Result<LabelSet, TrainError> {
        read_json(&self.root.join("labels.json"))
    }

    /// Path of the weights file.
    pub fn weights_path(&self) -> PathBuf {
        self.root.join("model.bpk")
    }
}
