//! Checkpoints: model weights, optimizer state, the best weights so far when they
//! are not the model's own, and the loop's state (epoch, early-stopping counters, history).
//!
//! **Crash safety.** Each checkpoint is written into `epoch-NNNN.partial`, renamed to
//! `epoch-NNNN` when whole, and only then published by atomically replacing the `latest`
//! pointer; the previous checkpoint is removed last. A process killed at any moment leaves the
//! previous checkpoint intact and loadable.
//!
//! **Off the compute thread.** [`CheckpointWriter`] takes shallow clones of the model and the
//! optimizer at an epoch's end (tensor handles: the optimizer's functional step makes new
//! tensors and never writes into ones still referenced, so the clones stay the epoch's state)
//! and reads, serialises and writes them on a thread of its own while the next epoch trains.
//! A second epoch ending before the first is written waits for it: at most one checkpoint is
//! in flight.
//!
//! **By time too.** A run with a checkpoint interval also checkpoints in the middle of an
//! epoch once that long has passed since the last checkpoint (`epoch-NNNN-batch-BBBBBB`, with
//! the batches done and the epoch's running figures in its state), so a crash loses at most
//! the interval however long an epoch is; a resume continues at the next batch with the same
//! shuffling and random draws as an uninterrupted run.
//!
//! **No duplicate weights.** `best.bpk` is written only when the best epoch is not the one just
//! finished (then `model.bpk` is the best), and when the best is unchanged since the previous
//! checkpoint it is a hard link to that checkpoint's file, not a second copy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

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
    /// Its validation macro-F1 (−∞ before any epoch; JSON writes that as `null`).
    #[serde(deserialize_with = "null_as_negative_infinity")]
    pub best_score: f64,
    /// Its validation loss (breaks macro-F1 ties; +∞ before any epoch, `null` in JSON).
    #[serde(deserialize_with = "null_as_infinity")]
    pub best_loss: f64,
    /// Epochs since the best one.
    pub epochs_without_improvement: usize,
    /// One entry per finished epoch.
    pub history: Vec<EpochProgress>,
    /// Batches of epoch `epochs_completed + 1` already trained: 0 for a checkpoint at an
    /// epoch's end, more for one taken in the middle of an epoch (by time).
    #[serde(default)]
    pub batches_done: usize,
    /// That epoch's running figures up to `batches_done`.
    #[serde(default)]
    pub partial: PartialEpoch,
}

/// Reads `null` (what JSON makes of −∞) as −∞.
fn null_as_negative_infinity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
}

/// Reads `null` (what JSON makes of +∞) as +∞.
fn null_as_infinity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// The running figures of an epoch interrupted by a mid-epoch checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialEpoch {
    /// Sum of batch loss × batch size.
    pub loss_sum: f64,
    /// Correct training predictions.
    pub correct: usize,
    /// Examples seen.
    pub seen: usize,
    /// Training seconds spent on the epoch so far.
    pub seconds: f64,
}

/// A checkpoint that is complete on disk and is now the latest.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedCheckpoint {
    /// Whole epochs it covers.
    pub epoch: usize,
    /// Batches of the next epoch it covers too (0 at an epoch's end).
    pub batch: usize,
    /// Its folder (`<root>/epoch-NNNN`).
    pub path: PathBuf,
    /// Bytes of its files.
    pub bytes: u64,
}

/// Called on the writer thread after each checkpoint is published, before the next one is
/// written (so the folder it names is whole and stays in place while the call runs).
pub type CheckpointListener = Arc<dyn Fn(&SavedCheckpoint) + Send + Sync>;

/// A checkpoint folder (`<model dir>/checkpoint`).
#[derive(Clone)]
pub struct CheckpointDir {
    root: PathBuf,
    listener: Option<CheckpointListener>,
}

impl std::fmt::Debug for CheckpointDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointDir")
            .field("root", &self.root)
            .field("listener", &self.listener.is_some())
            .finish()
    }
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

const MODEL_FILE: &str = "model.bpk";
const BEST_FILE: &str = "best.bpk";
const OPTIMIZER_FILE: &str = "optimizer.bpk";
const STATE_FILE: &str = "state.json";
const PARTIAL_SUFFIX: &str = ".partial";

impl CheckpointDir {
    /// A checkpoint folder at `root` (created on first save).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            listener: None,
        }
    }

    /// The same folder, with `listener` told of every checkpoint its writers publish.
    pub fn with_listener(mut self, listener: CheckpointListener) -> Self {
        self.listener = Some(listener);
        self
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

    /// The loop state of the latest checkpoint, if any (without loading weights).
    pub fn latest_state(&self) -> Result<Option<LoopState>, TrainError> {
        match self.latest()? {
            Some(dir) => read_json(&dir.join(STATE_FILE)).map(Some),
            None => Ok(None),
        }
    }

    /// The loop state of the latest checkpoint when every file a resume loads is there and
    /// its state is readable; None when there is no checkpoint; an error that says what is
    /// missing or unreadable otherwise (a checkpoint copied in part, say).
    pub fn latest_complete(&self) -> Result<Option<LoopState>, TrainError> {
        let Some(dir) = self.latest()? else {
            return Ok(None);
        };
        for file in [MODEL_FILE, OPTIMIZER_FILE] {
            let path = dir.join(file);
            let size = std::fs::metadata(&path)
                .map_err(TrainError::io(&path))?
                .len();
            if size == 0 {
                return Err(TrainError::Resume {
                    path,
                    reason: "the file is empty".into(),
                });
            }
        }
        read_json(&dir.join(STATE_FILE)).map(Some)
    }

    /// Writes a checkpoint on the calling thread and makes it the latest. `best` is the best
    /// weights so far; it is stored only when `state.best_epoch` is not the epoch just
    /// finished. Returns what was published (the listener is not called here).
    pub fn save(
        &self,
        state: &LoopState,
        model: &TextClassifier,
        optimizer: &ModuleOptimizer,
        best: &TextClassifier,
    ) -> Result<SavedCheckpoint, TrainError> {
        let name = if state.batches_done == 0 {
            format!("epoch-{:04}", state.epochs_completed)
        } else {
            format!(
                "epoch-{:04}-batch-{:06}",
                state.epochs_completed, state.batches_done
            )
        };
        let dir = self.root.join(&name);
        let partial = self.root.join(format!("{name}{PARTIAL_SUFFIX}"));
        // What a killed writer left: partial folders (never pointed to), and a folder of this
        // epoch from an attempt that did not get to publish it.
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for entry in entries.filter_map(Result::ok) {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .ends_with(PARTIAL_SUFFIX)
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(TrainError::io(&dir))?;
        }
        std::fs::create_dir_all(&partial).map_err(TrainError::io(&partial))?;
        let model_path = partial.join(MODEL_FILE);
        model
            .clone()
            .save_file(&model_path)
            .map_err(TrainError::weights(&model_path))?;
        let previous = self.latest()?;
        if state.best_epoch > 0
            && (state.best_epoch != state.epochs_completed || state.batches_done > 0)
        {
            let best_path = partial.join(BEST_FILE);
            let linked = previous
                .as_deref()
                .and_then(|prev| best_file_for(prev, state.best_epoch))
                .is_some_and(|from| std::fs::hard_link(from, &best_path).is_ok());
            if !linked {
                best.clone()
                    .save_file(&best_path)
                    .map_err(TrainError::weights(&best_path))?;
            }
        }
        let optim_path = partial.join(OPTIMIZER_FILE);
        optimizer
            .save(&optim_path)
            .map_err(TrainError::weights(&optim_path))?;
        write_json(&partial.join(STATE_FILE), state)?;
        std::fs::rename(&partial, &dir).map_err(TrainError::io(&dir))?;
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
        Ok(SavedCheckpoint {
            epoch: state.epochs_completed,
            batch: state.batches_done,
            bytes: folder_bytes(&dir),
            path: dir,
        })
    }

    /// Starts a writer thread for this folder; see the module doc.
    pub fn writer(&self) -> Result<CheckpointWriter, TrainError> {
        let (tx, rx) = sync_channel::<Pending>(0);
        let dir = self.clone();
        let thread = std::thread::Builder::new()
            .name("lexmesh-ckpt".into())
            .spawn(move || dir.write_loop(rx))
            .map_err(|e| {
                TrainError::Panicked(format!("cannot start the checkpoint writer: {e}"))
            })?;
        Ok(CheckpointWriter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn write_loop(&self, rx: Receiver<Pending>) -> Result<(), TrainError> {
        while let Ok(p) = rx.recv() {
            let saved = self.save(&p.state, &p.model, &p.optimizer, &p.best)?;
            if let Some(listener) = &self.listener {
                listener(&saved);
            }
        }
        Ok(())
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
        let state: LoopState = read_json(&dir.join(STATE_FILE))?;
        let model = load_weights(model, &dir.join(MODEL_FILE))?;
        let best_path = dir.join(BEST_FILE);
        let best = if best_path.exists() {
            load_weights(best, &best_path)?
        } else {
            load_weights(best, &dir.join(MODEL_FILE))?
        };
        let optim_path = dir.join(OPTIMIZER_FILE);
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

/// Copies the checkpoint folder `dir` into `into/<name>` by hard links, with a `latest`
/// pointer beside it (the layout of a checkpoint folder), so it stays whole while training
/// goes on and replaces it. Falls back to copying where hard links are not possible. Returns
/// false when `dir` is gone.
pub fn snapshot_folder(dir: &Path, into: &Path) -> Result<bool, TrainError> {
    let Some(name) = dir.file_name() else {
        return Ok(false);
    };
    if !dir.exists() {
        return Ok(false);
    }
    if into.exists() {
        std::fs::remove_dir_all(into).map_err(TrainError::io(into))?;
    }
    let target = into.join(name);
    std::fs::create_dir_all(&target).map_err(TrainError::io(&target))?;
    for entry in std::fs::read_dir(dir).map_err(TrainError::io(dir))? {
        let entry = entry.map_err(TrainError::io(dir))?;
        let to = target.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &to).is_err() {
            std::fs::copy(entry.path(), &to).map_err(TrainError::io(&to))?;
        }
    }
    let pointer = into.join("latest");
    std::fs::write(&pointer, name.as_encoded_bytes()).map_err(TrainError::io(&pointer))?;
    Ok(true)
}

/// The file of `prev` (a checkpoint folder) that holds the weights of `best_epoch`, if any.
fn best_file_for(prev: &Path, best_epoch: usize) -> Option<PathBuf> {
    let state: LoopState = read_json(&prev.join(STATE_FILE)).ok()?;
    if state.best_epoch != best_epoch {
        return None;
    }
    let file = if state.best_epoch == state.epochs_completed && state.batches_done == 0 {
        prev.join(MODEL_FILE)
    } else {
        prev.join(BEST_FILE)
    };
    file.exists().then_some(file)
}

fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

struct Pending {
    state: LoopState,
    model: TextClassifier,
    optimizer: ModuleOptimizer,
    best: TextClassifier,
}

/// Writes checkpoints on a thread of its own (see the module doc). Dropping it without
/// [`CheckpointWriter::finish`] still waits for the checkpoint in flight.
pub struct CheckpointWriter {
    tx: Option<SyncSender<Pending>>,
    thread: Option<JoinHandle<Result<(), TrainError>>>,
}

impl CheckpointWriter {
    /// Hands the epoch's state to the writer. Takes shallow clones; returns as soon as the
    /// writer has taken them (at once, unless the previous checkpoint is still being written).
    /// A failure of an earlier write is returned here.
    pub fn submit(
        &mut self,
        state: &LoopState,
        model: &TextClassifier,
        optimizer: &ModuleOptimizer,
        best: &TextClassifier,
    ) -> Result<(), TrainError> {
        let pending = Pending {
            state: state.clone(),
            model: model.clone(),
            optimizer: optimizer.clone(),
            best: best.clone(),
        };
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(pending).is_ok());
        if sent {
            Ok(())
        } else {
            // The writer stopped: its error says why.
            self.finish_inner().and(Err(TrainError::Panicked(
                "the checkpoint writer stopped".into(),
            )))
        }
    }

    /// Waits until every submitted checkpoint is written; returns the first write error.
    pub fn finish(mut self) -> Result<(), TrainError> {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Result<(), TrainError> {
        self.tx = None;
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| TrainError::Panicked("the checkpoint writer panicked".into()))?,
            None => Ok(()),
        }
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        let _ = self.finish_inner();
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
