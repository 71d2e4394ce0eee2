//! Job events, published on `lexmesh.events.<job>.<event>` and kept in the `LEXMESH_EVENTS`
//! stream, so a late subscriber can replay a job's history. Each carries `"event"` with its
//! kind, the job id, the attempt (delivery count) and the publishing instance.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::job::JobKind;

/// The event kinds, as they appear in subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A worker took the job.
    Accepted,
    /// Training progress.
    Progress,
    /// The job finished; the result is attached.
    Completed,
    /// The job failed (perhaps to be retried: see `retrying`).
    Failed,
    /// The job was cancelled.
    Cancelled,
}

impl EventKind {
    /// All kinds.
    pub const ALL: [EventKind; 5] = [
        Self::Accepted,
        Self::Progress,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Name in subjects.
    pub fn name(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Progress => "progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Any job event; `"event"` says which.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    /// See [`Accepted`].
    Accepted(Accepted),
    /// See [`Progress`].
    Progress(Progress),
    /// See [`Completed`].
    Completed(Completed),
    /// See [`Failed`].
    Failed(Failed),
    /// See [`Cancelled`].
    Cancelled(Cancelled),
}

impl JobEvent {
    /// Which event this is.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Accepted(_) => EventKind::Accepted,
            Self::Progress(_) => EventKind::Progress,
            Self::Completed(_) => EventKind::Completed,
            Self::Failed(_) => EventKind::Failed,
            Self::Cancelled(_) => EventKind::Cancelled,
        }
    }

    /// The job it is about.
    pub fn job_id(&self) -> &str {
        match self {
            Self::Accepted(e) => &e.job_id,
            Self::Progress(e) => &e.job_id,
            Self::Completed(e) => &e.job_id,
            Self::Failed(e) => &e.job_id,
            Self::Cancelled(e) => &e.job_id,
        }
    }

    /// When it was published (ms since the Unix epoch).
    pub fn timestamp_ms(&self) -> f64 {
        match self {
            Self::Accepted(e) => e.timestamp_ms,
            Self::Progress(e) => e.timestamp_ms,
            Self::Completed(e) => e.timestamp_ms,
            Self::Failed(e) => e.timestamp_ms,
            Self::Cancelled(e) => e.timestamp_ms,
        }
    }

    /// Whether nothing more will follow for this job (a `failed` that will be retried is not
    /// final).
    pub fn is_final(&self) -> bool {
        match self {
            Self::Completed(_) | Self::Cancelled(_) => true,
            Self::Failed(f) => !f.retrying,
            Self::Accepted(_) | Self::Progress(_) => false,
        }
    }
}

impl crate::decode::Message for JobEvent {}

/// A worker took the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    /// The job.
    pub job_id: String,
    /// Its kind.
    pub kind: JobKind,
    /// Delivery attempt, from 1.
    pub attempt: u32,
    /// The instance that runs it.
    pub instance: String,
    /// Publish time, ms since the Unix epoch.
    pub timestamp_ms: f64,
}

/// Whether a progress event closes a batch or an epoch (with validation figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProgressPhase {
    /// Training has started (epoch is the first to run, batch 0).
    Started,
    /// A batch finished (throttled: not every batch is published).
    Batch,
    /// An epoch and its validation finished.
    Epoch,
}

/// Training progress: the old system's PROGRESS_UPDATE, plus validation figures and speed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// The job.
    pub job_id: String,
    /// The model being trained.
    pub model_id: String,
    /// The training session: one per job, shared by its attempts.
    pub session_id: String,
    /// Delivery attempt, from 1.
    pub attempt: u32,
    /// The instance that trains.
    pub instance: String,
    /// Batch, epoch, or start.
    pub phase: ProgressPhase,
    /// Current epoch, from 1.
    pub epoch: u32,
    /// Epochs planned.
    pub total_epochs: u32,
    /// Batches done in this epoch.
    pub batch: u32,
    /// Batches per epoch.
    pub total_batches: u32,
    /// Mean training loss so far in this epoch (0 at start).
    pub loss: f64,
    /// Training accuracy so far in this epoch (0 at start).
    pub accuracy: f64,
    /// Validation loss (epoch events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_loss: Option<f64>,
    /// Validation accuracy (epoch events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_accuracy: Option<f64>,
    /// Percent of the planned work done, 0 to 100.
    pub completion_percentage: f64,
    /// Estimated seconds left.
    pub estimated_time_remaining_s: f64,
    /// Training examples per second in this epoch.
    pub examples_per_sec: f64,
    /// Set on the `started` event of an attempt that resumes from a stored checkpoint: the
    /// epochs that checkpoint already holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from_epoch: Option<u32>,
    /// With `resumed_from_epoch`, when the checkpoint was taken in the middle of the next
    /// epoch: the batches of it already done (the attempt goes on at the batch after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from_batch: Option<u32>,
    /// Publish time, ms since the Unix epoch.
    pub timestamp_ms: f64,
}

/// Per-class scores of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassSummary {
    /// Label.
    pub label: String,
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// Examples of this label.
    pub support: u64,
}

/// An evaluation report (the same figures as `lexmesh evaluate --format json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSummary {
    /// Labels in class order.
    pub labels: Vec<String>,
    /// Examples evaluated.
    pub count: u64,
    /// Accuracy.
    pub accuracy: f64,
    /// Unweighted mean F1 over classes.
    pub macro_f1: f64,
    /// Support-weighted mean F1.
    pub weighted_f1: f64,
    /// Scores per class.
    pub per_class: Vec<ClassSummary>,
    /// `confusion_matrix[gold][predicted]`.
    pub confusion_matrix: Vec<Vec<u64>>,
}

/// What a preprocess job (or a prepare request) produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreparedSummary {
    /// Content hash of data + settings; the object `prepared/<dataset_id>` holds it.
    pub dataset_id: String,
    /// Labels in class order.
    pub labels: Vec<String>,
    /// Training examples.
    pub train_examples: u64,
    /// Validation examples.
    pub validation_examples: u64,
    /// Size of the feature space (vocabulary + buckets).
    pub feature_space: u64,
    /// True when an identical dataset was already prepared and was reused.
    pub reused: bool,
}

/// What a train job produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainSummary {
    /// The stored model.
    pub model_id: String,
    /// The prepared dataset it trained on.
    pub dataset_id: String,
    /// The epoch whose weights were kept.
    pub best_epoch: u32,
    /// Epochs run.
    pub epochs_completed: u32,
    /// Why training stopped: `completed` or `early_stopped`.
    pub stop_reason: String,
    /// Validation figures of the kept weights.
    pub validation: EvaluationSummary,
}

/// What an evaluate job produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateSummary {
    /// The model evaluated.
    pub model_id: String,
    /// The figures.
    pub evaluation: EvaluationSummary,
}

/// The result attached to a `completed` event, by job kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum JobResult {
    /// A preprocess job's result.
    Preprocess(PreparedSummary),
    /// A train job's result.
    Train(TrainSummary),
    /// An evaluate job's result.
    Evaluate(EvaluateSummary),
}

/// The job finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Completed {
    /// The job.
    pub job_id: String,
    /// Its kind.
    pub kind: JobKind,
    /// Delivery attempt, from 1.
    pub attempt: u32,
    /// The instance that ran it.
    pub instance: String,
    /// Seconds this attempt took.
    pub duration_s: f64,
    /// What it produced.
    pub result: JobResult,
    /// Publish time, ms since the Unix epoch.
    pub timestamp_ms: f64,
}

/// The job failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Failed {
    /// The job (for a message too malformed to name one: the stream sequence, `seq-<n>`).
    pub job_id: String,
    /// Its kind (from the subject it arrived on).
    pub kind: JobKind,
    /// Delivery attempt, from 1.
    pub attempt: u32,
    /// The instance that saw it fail.
    pub instance: String,
    /// Stable code.
    pub code: ErrorCode,
    /// Readable reason.
    pub reason: String,
    /// True when the job will be delivered again.
    pub retrying: bool,
    /// Publish time, ms since the Unix epoch.
    pub timestamp_ms: f64,
}

/// The job was cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancelled {
    /// The job.
    pub job_id: String,
    /// Its kind.
    pub kind: JobKind,
    /// Delivery attempt, from 1.
    pub attempt: u32,
    /// The instance that stopped it.
    pub instance: String,
    /// Epochs finished before it stopped.
    pub epochs_completed: u32,
    /// Publish time, ms since the Unix epoch.
    pub timestamp_ms: f64,
}
