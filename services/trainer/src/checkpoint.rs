//! Per-epoch checkpoints: model weights, optimizer state, best weights so far and the loop's
//! state (epoch, early-stopping counters, history). Each checkpoint is written into its own
//! folder and then published by atomically replacing the `latest` pointer, so a process killed
//! while writing leaves the previous checkpoint intact.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::model::TextClassifier;
use crate::progress::EpochProgress;

/// The loop state saved with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopState {
    /// Identifies the run (settings, labels, data); a resume with other inputs is refused.
    pub fingerprint: String,
    /// Epochs finished.
    pub epochs_completed: usize,
    /// Best epoch so far (0 = none).
    pub best_epoch: usize,
    /// Its validation macro-F1.
    pub best_score: f64,
    /// Its validation loss (breaks macro-F1 ties).
    pub best_loss: f64,
    /// Epochs since the best one.
    pub epochs_without_improvement: usize,
    /// One entry per finished epoch.
    pub history: Vec<EpochProgress>,
}

/// A checkpoint folder (`<model dir>/checkpoint`).
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    root: PathBuf,
}

/// What a checkpoint holds, loaded.
pub struct Restored {
    /// Loop state.
    pub state: LoopState,
    /// Model weights at the end of the epoch.
    pub model: TextClassifier,
    /// Optimizer with its state.
    pub optimizer: ModuleOptimizer,
    /// Best weights so far.
    pub best: TextClassifier,
}

impl CheckpointDir {
    /// A checkpoint folder at `root` (created on first save).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    fn latest_pointer(&self) -> PathBuf {
        self.root.join("latest")
    }

    /// The folder of the latest complete checkpoint, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>, TrainError> {
        let pointer = self.latest_pointer();
        match std::fs::read_to_string(&pointer) {
            Ok(name) => Ok(Some(self.root.join(name.trim()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TrainError::io(pointer)(e)),
        }
    }

    /// Writes a checkpoint and makes it the latest.
    pub fn save(
        &self,
        state: &LoopState,
        model: &TextClassifier,
        optimizer: &ModuleOptimizer,
        best: &TextClassifier,
    ) -> Result<(), TrainError> {
        let name = format!("epoch-{:04}", state.epochs_completed);
        let dir = self.root.join(&name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(TrainError::io(&dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(TrainError::io(&dir))?;
        let model_path = dir.join("model.bpk");
        model
            .clone()
            .save_file(&model_path)
            .map_err(TrainError::weights(&model_path))?;
        let best_path = dir.join("best.bpk");
        best.clone()
            .save_file(&best_path)
            .map_err(TrainError::weights(&best_path))?;
        let optim_path = dir.join("optimizer.bpk");
        optimizer
            .save(&optim_path)
            .map_err(TrainError::weights(&optim_path))?;
        write_json(&dir.join("state.json"), state)?;
        let previous = self.latest()?;
        let tmp = self.root.join("latest.tmp");
        std::fs::write(&tmp, &name).map_err(TrainError::io(&tmp))?;
        std::fs::rename(&tmp, self.latest_pointer())
            .map_err(TrainError::io(self.latest_pointer()))?;
        if let Some(prev) = previous
            && prev != dir
        {
            // Best effort: an old checkpoint left behind wastes space but breaks nothing.
            let _ = std::fs::remove_dir_all(prev);
        }
        Ok(())
    }

    /// Copies the latest checkpoint into `into` (a folder of the same layout: `latest` and its
    /// epoch folder) by hard links, so it stays whole while training goes on and replaces it.
    /// Returns false when there is no checkpoint yet. Falls back to copying where hard links
    /// are not possible.
    pub fn snapshot(&self, into: &Path) -> Result<bool, TrainError> {
        let Some(dir) = self.latest()? else {
            return Ok(false);
        };
        let Some(name) = dir.file_name() else {
            return Ok(false);
        };
        if into.exists() {
            std::fs::remove_dir_all(into).map_err(TrainError::io(into))?;
        }
        let target = into.join(name);
        std::fs::create_dir_all(&target).map_err(TrainError::io(&target))?;
        for entry in std::fs::read_dir(&dir).map_err(TrainError::io(&dir))? {
            let entry = entry.map_err(TrainError::io(&dir))?;
            let to = target.join(entry.file_name());
            if std::fs::hard_link(entry.path(), &to).is_err() {
                std::fs::copy(entry.path(), &to).map_err(TrainError::io(&to))?;
            }
        }
        let pointer = into.join("latest");
        std::fs::write(&pointer, name.as_encoded_bytes()).map_err(TrainError::io(&pointer))?;
        Ok(true)
    }

    /// Loads the latest checkpoint into fresh modules (`model` on the training device, `best`
    /// on the plain device) and a fresh optimizer.
    pub fn load(
        &self,
        model: TextClassifier,
        optimizer: ModuleOptimizer,
        best: TextClassifier,
    ) -> Result<Option<Restored>, TrainError> {
        let Some(dir) = self.latest()? else {
            return Ok(None);
        };
        let state: LoopState = read_json(&dir.join("state.json"))?;
        let model = load_weights(model, &dir.join("model.bpk"))?;
        let best = load_weights(best, &dir.join("best.bpk"))?;
        let optim_path = dir.join("optimizer.bpk");
        let optimizer = optimizer
            .load(&optim_path)
            .map_err(TrainError::weights(&optim_path))?;
        Ok(Some(Restored {
            state,
            model,
            optimizer,
            best,
        }))
    }
}

/// Loads weights from a burnpack file into a module of the same architecture.
pub fn load_weights(model: TextClassifier, path: &Path) -> Result<TextClassifier, TrainError> {
    let record = ModuleRecord::load(path).map_err(TrainError::weights(path))?;
    model
        .try_load_record(record)
        .map_err(TrainError::weights(path))
}

/// Writes pretty JSON through a temporary file and a rename.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| TrainError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(TrainError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(TrainError::io(path))
}

/// Reads a JSON file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TrainError> {
    let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
