//! Progress reporting. Training calls a [`ProgressSink`] in this order:
//!
//! 1. [`ProgressSink::on_start`] once (also when resuming: `start_epoch` > 1 then);
//! 2. per epoch, [`ProgressSink::on_batch`] after every batch, then [`ProgressSink::on_epoch`]
//!    after validation;
//! 3. [`ProgressSink::on_end`] once, whatever the reason (completed, early stop, cancel).
//!    It is not called when training fails with an error.
//!
//! The CLI renders these as progress bars or JSON lines; the mesh publishes the same events on
//! NATS. [`ChannelSink`] forwards them to another thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

/// Sent once before the first batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingStarted {
    /// Model kind name.
    pub model: String,
    /// Epochs in the whole run.
    pub total_epochs: usize,
    /// First epoch this process runs (1, or later when resumed).
    pub start_epoch: usize,
    /// Batches of `start_epoch` already done (resumed from a mid-epoch checkpoint), else 0.
    pub start_batch: usize,
    /// Batches per epoch.
    pub batches_per_epoch: usize,
    /// Training examples.
    pub train_examples: usize,
    /// Validation examples.
    pub validation_examples: usize,
    /// Trainable parameters.
    pub parameters: usize,
    /// The epochs a resumed run restored from its checkpoint (empty for a fresh run): a
    /// reporter can tell again an epoch whose report the stopped process never sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restored: Vec<EpochProgress>,
}

/// Sent after every batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchProgress {
    /// Epoch, 1-based.
    pub epoch: usize,
    /// Epochs in the whole run.
    pub total_epochs: usize,
    /// Batch within the epoch, 1-based.
    pub batch: usize,
    /// Batches per epoch.
    pub total_batches: usize,
    /// Mean training loss of this epoch so far.
    pub loss: f64,
    /// Training accuracy of this epoch so far.
    pub accuracy: f64,
    /// Training throughput of this epoch so far.
    pub examples_per_sec: f64,
    /// Run completion, 0–100.
    pub percent: f64,
    /// Estimated seconds to the end of the last epoch.
    pub eta_secs: f64,
}

/// Sent after every epoch's validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochProgress {
    /// Epoch, 1-based.
    pub epoch: usize,
    /// Epochs in the whole run.
    pub total_epochs: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy.
    pub accuracy: f64,
    /// Validation loss (unweighted cross-entropy).
    pub validation_loss: f64,
    /// Validation accuracy.
    pub validation_accuracy: f64,
    /// Validation macro-F1 (the early-stopping metric).
    pub validation_macro_f1: f64,
    /// Whether this epoch is the best so far.
    pub improved: bool,
    /// Training throughput of the epoch.
    pub examples_per_sec: f64,
    /// Seconds the epoch took (training + validation).
    pub seconds: f64,
    /// Seconds the compute thread spent handing the epoch's checkpoint to the writer thread
    /// (shallow clones, plus any wait for the previous checkpoint still being written): the
    /// pause the checkpoint costs training. Written to disk off the compute thread.
    #[serde(default)]
    pub checkpoint_seconds: f64,
    /// Run completion, 0–100.
    pub percent: f64,
    /// Estimated seconds to the end of the last epoch.
    pub eta_secs: f64,
}

/// Why training stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// All epochs ran.
    Completed,
    /// Validation macro-F1 did not improve for `patience` epochs.
    EarlyStopped,
    /// The cancel token was set; the last finished epoch's checkpoint is kept.
    Cancelled,
}

/// Sent once at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingEnded {
    /// Why it stopped.
    pub reason: StopReason,
    /// Epochs finished.
    pub epochs_completed: usize,
    /// Epoch whose weights were kept (0 if none finished).
    pub best_epoch: usize,
    /// Its validation macro-F1.
    pub best_validation_macro_f1: f64,
    /// Seconds this process trained.
    pub seconds: f64,
}

/// Receives training progress; see the module doc for the call order.
pub trait ProgressSink: Send {
    /// Training is about to start.
    fn on_start(&mut self, event: &TrainingStarted);
    /// A batch finished.
    fn on_batch(&mut self, event: &BatchProgress);
    /// An epoch and its validation finished.
    fn on_epoch(&mut self, event: &EpochProgress);
    /// Training stopped.
    fn on_end(&mut self, event: &TrainingEnded);
}

/// Any progress event, for sinks that forward events as values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// See [`TrainingStarted`].
    Started(TrainingStarted),
    /// See [`BatchProgress`].
    Batch(BatchProgress),
    /// See [`EpochProgress`].
    Epoch(EpochProgress),
    /// See [`TrainingEnded`].
    Ended(TrainingEnded),
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl ProgressSink for NullSink {
    fn on_start(&mut self, _: &TrainingStarted) {}
    fn on_batch(&mut self, _: &BatchProgress) {}
    fn on_epoch(&mut self, _: &EpochProgress) {}
    fn on_end(&mut self, _: &TrainingEnded) {}
}

/// Forwards events to a channel (a receiver that hung up is ignored: training goes on).
#[derive(Debug, Clone)]
pub struct ChannelSink(pub std::sync::mpsc::Sender<ProgressEvent>);

impl ProgressSink for ChannelSink {
    fn on_start(&mut self, e: &TrainingStarted) {
        let _ = self.0.send(ProgressEvent::Started(e.clone()));
    }
    fn on_batch(&mut self, e: &BatchProgress) {
        let _ = self.0.send(ProgressEvent::Batch(e.clone()));
    }
    fn on_epoch(&mut self, e: &EpochProgress) {
        let _ = self.0.send(ProgressEvent::Epoch(e.clone()));
    }
    fn on_end(&mut self, e: &TrainingEnded) {
        let _ = self.0.send(ProgressEvent::Ended(e.clone()));
    }
}

/// Collects every event (tests, and callers that want the history).
#[derive(Debug, Default, Clone)]
pub struct RecordingSink(pub Vec<ProgressEvent>);

impl ProgressSink for RecordingSink {
    fn on_start(&mut self, e: &TrainingStarted) {
        self.0.push(ProgressEvent::Started(e.clone()));
    }
    fn on_batch(&mut self, e: &BatchProgress) {
        self.0.push(ProgressEvent::Batch(e.clone()));
    }
    fn on_epoch(&mut self, e: &EpochProgress) {
        self.0.push(ProgressEvent::Epoch(e.clone()));
    }
    fn on_end(&mut self, e: &TrainingEnded) {
        self.0.push(ProgressEvent::Ended(e.clone()));
    }
}

/// A cancellation flag, checked by training after every batch.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks training to stop after the current batch.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
