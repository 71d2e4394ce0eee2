//! Job events, published on `lexmesh.events.<job>.<event>` and kept in the `LEXMESH_EVENTS`
//! stream, so a late subscriber can replay a job's history. Each carries `"event"` with its
//! kind, the job id and the publishing instance; the events of a job's attempt also carry the
//! attempt (delivery count).
//!
//! An optimize job has, besides its own `accepted` / `completed` / `failed` / `cancelled`, the
//! events of its search on its own subjects: `trial_started`, `trial_promoted`,
//! `trial_stopped`, `trial_completed`, `trial_failed` and `leaderboard`. Each is published
//! once (its `Nats-Msg-Id` is stable, so a coordinator that replaces a crashed one and
//! publishes it again is deduplicated by the stream). A trial's own train job has the usual
//! events on its own subjects (`lexmesh.events.<job>-t<k>.>`).

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
    /// A search started a trial (its train job was submitted).
    TrialStarted,
    /// A trial of a search passed a rung and keeps training.
    TrialPromoted,
    /// A trial of a search was stopped early (by the scheduler, or because the search ended)
    /// and its train job has ended.
    TrialStopped,
    /// A trial's train job ran to its end.
    TrialCompleted,
    /// A trial's train job failed for good.
    TrialFailed,
    /// A search's trials, ranked, after a change.
    Leaderboard,
}

impl EventKind {
    /// All kinds.
    pub const ALL: [EventKind; 11] = [
        Self::Accepted,
        Self::Progress,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::TrialStarted,
        Self::TrialPromoted,
        Self::TrialStopped,
        Self::TrialCompleted,
        Self::TrialFailed,
        Self::Leaderboard,
    ];

    /// Name in subjects.
    pub fn name(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Progress => "progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TrialStarted => "trial_started",
            Self::TrialPromoted => "trial_promoted",
            Self::TrialStopped => "trial_stopped",
            Self::TrialCompleted => "trial_completed",
            Self::TrialFailed => "trial_failed",
            Self::Leaderboard => "leaderboard",
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
    /// See [`TrialStarted`].
    TrialStarted(TrialStarted),
    /// See [`TrialPromoted`].
    TrialPromoted(TrialPromoted),
    /// See [`TrialStopped`].
    TrialStopped(TrialStopped),
    /// See [`TrialCompleted`].
    TrialCompleted(TrialCompleted),
    /// See [`TrialFailed`].
    TrialFailed(TrialFailed),
    /// See [`Leaderboard`].
    Leaderboard(Leaderboard),
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
            Self::TrialStarted(_) => EventKind::TrialStarted,
            Self::TrialPromoted(_) => EventKind::TrialPromoted,
            Self::TrialStopped(_) => EventKind::TrialStopped,
            Self::TrialCompleted(_) => EventKind::TrialCompleted,
            Self::TrialFailed(_) => EventKind::TrialFailed,
            Self::Leaderboard(_) => EventKind::Leaderboard,
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
            Self::TrialStarted(e) => &e.job_id,
            Self::TrialPromoted(e) => &e.job_id,
            Self::TrialStopped(e) => &e.job_id,
            Self::TrialCompleted(e) => &e.job_id,
            Self::TrialFailed(e) => &e.job_id,
            Self::Leaderboard(e) => &e.job_id,
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
            Self::TrialStarted(e) => e.timestamp_ms,
            Self::TrialPromoted(e) => e.timestamp_ms,
            Self::TrialStopped(e) => e.timestamp_ms,
            Self::TrialCompleted(e) => e.timestamp_ms,
            Self::TrialFailed(e) => e.timestamp_ms,
            Self::Leaderboard(e) => e.timestamp_ms,
        }
    }

    /// Whether nothing more will follow for this job (a `failed` that will be retried is not
    /// final).
    pub fn is_final(&self) -> bool {
        match self {
            Self::Completed(_) | Self::Cancelled(_) => true,
            Self::Failed(f) => !f.retrying,
            Self::Accepted(_)
            | Self::Progress(_)
            | Self::TrialStarted(_)
            | Self::TrialPromoted(_)
            | Self::TrialStopped(_)
            | Self::TrialCompleted(_)
            | Self::TrialFailed(_)
            | Self::Leaderboard(_) => false,
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
    /// Validation macro-F1 (epoch events only): what a search judges a trial by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_macro_f1: Option<f64>,
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

impl Progress {
    /// A progress event of `job_id`'s attempt `attempt` on `instance`, in `phase`, with every
    /// figure still zero, no validation figures, not resumed and no timestamp: what a reporter
    /// fills in. Its session is the job (one session per job, shared by its attempts).
    pub fn new(
        job_id: &str,
        model_id: &str,
        attempt: u32,
        instance: &str,
        phase: ProgressPhase,
    ) -> Self {
        Self {
            job_id: job_id.to_string(),
            model_id: model_id.to_string(),
            session_id: job_id.to_string(),
            attempt,
            instance: instance.to_string(),
            phase,
            epoch: 0,
            total_epochs: 0,
            batch: 0,
            total_batches: 0,
            loss: 0.0,
            accuracy: 0.0,
            validation_loss: None,
            validation_accuracy: None,
            validation_macro_f1: None,
            completion_percentage: 0.0,
            estimated_time_remaining_s: 0.0,
            examples_per_sec: 0.0,
            resumed_from_epoch: None,
            resumed_from_batch: None,
            timestamp_ms: 0.0,
        }
    }
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
    /// An optimize job's result.
    Optimize(Box<OptimizeSummary>),
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

/// A trial's validation score: macro-F1, ties broken by the lower loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialScore {
    /// Validation macro-F1.
    pub macro_f1: f64,
    /// Validation loss.
    pub validation_loss: f64,
}

/// Where a trial of a search is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    /// Its train job is submitted, not seen running yet.
    Pending,
    /// Its train job runs.
    Running,
    /// Its stop is decided; its train job has not ended yet.
    Stopping,
    /// Stopped early by the scheduler.
    Stopped,
    /// Its train job ran to its end.
    Completed,
    /// Its train job failed for good.
    Failed,
    /// Ended because the search ended, or its train job was cancelled from outside.
    Cancelled,
}

impl TrialStatus {
    /// The status as it is written in JSON (`pending`, `running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Why a search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SearchEndReason {
    /// Every trial the budget (or the grid) allowed has ended.
    AllTrialsDone,
    /// A trial reached the goal.
    GoalReached,
    /// More trials failed than `max_failed_trials` allows.
    TooManyFailures,
    /// The optimize job was cancelled.
    Cancelled,
}

/// Why a trial was stopped early.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TrialStopReason {
    /// Its value at a rung was below the rung's cutoff.
    Rung {
        /// The rung's milestone (epochs).
        milestone: f64,
        /// The value judged there.
        value: f64,
        /// The cutoff: the `(1 - 1/reduction_factor)` quantile of the values recorded at the
        /// rung before it.
        cutoff: f64,
    },
    /// The search ended while it ran.
    SearchEnded {
        /// Why the search ended.
        reason: SearchEndReason,
    },
    /// Its train job was cancelled from outside the search.
    External,
}

/// A search started a trial: its train job (`trial_id`) was submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialStarted {
    /// The optimize job.
    pub job_id: String,
    /// The trial: its train job's id (and model id).
    pub trial_id: String,
    /// The trial's index in the search, from 0.
    pub index: u32,
    /// The values it tries, by setting.
    pub configuration: std::collections::BTreeMap<String, serde_json::Value>,
    /// The coordinating instance.
    pub instance: String,
    /// Publish time, ms since the Unix epoch.
    pub timestamp_ms: f64,
}

/// A trial passed a rung of the scheduler and keeps training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialPromoted {
    /// The optimize job.
    pub job_id: String,
    /// The trial.
    pub trial_id: String,
    /// The trial's index.
    pub index: u32,
    /// The epoch whose result reached the rung.
    pub epoch: u32,
    /// The rung's milestone (epochs).
    pub milestone: f64,
    /// The value recorded for the trial there.
    pub value: f64,
    /// The coordinating instance.
    pub instance: String,
    /// Publish time, ms since the Unix epoch.
    pub timestamp_ms: f64,
}

/// A trial was stopped early and its train job has ended (`cancelled` as a rule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialStopped {
    /// The optimize job.
    pub job_id: String,
    /// The trial.
    pub trial_id: String,
    /// The trial's index.
    pub index: u32,
    /// `stopped` (by the scheduler) or `cancelled` (the search ended, or from outside).
    pub status: TrialStatus,
    /// Why.
    pub reason: TrialStopReason,
    /// The last epoch it reported.
    pub epochs_run: u32,
    /// Its best score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<TrialScore>,
    /// The coordinating instance.
    pub instance: String,
    /// Publish time, ms since the Unix epoch.
    pub timestamp_ms: f64,
}

/// A trial's train job ran to its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialCompleted {
    /// The optimize job.
    pub job_id: String,
    /// The trial.
    pub trial_id: String,
    /// The trial's index.
    pub index: u32,
    /// The last epoch it reported.
    pub epochs_run: u32,
    /// Its best score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<TrialScore>,
    /// The coordinating instance.
    pub instance: String,
    /// Publish time, ms since the Unix epoch.
    pub timestamp_ms: f64,
}

/// A trial's train job failed for good; it counts against `max_failed_trials`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialFailed {
    /// The optimize job.
    pub job_id: String,
    /// The trial.
    pub trial_id: String,
    /// The trial's index.
    pub index: u32,
    /// The last epoch it reported.
    pub epochs_run: u32,
    /// Why it failed (`<code>: <reason>` of its train job's `failed` event).
    pub error: String,
    /// The coordinating instance.
    pub instance: String,
    /// Publish time, ms since the Unix epoch.
    pub timestamp_ms: f64,
}

/// One line of a search's leaderboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaderboardEntry {
    /// Rank, from 1.
    pub rank: u32,
    /// The trial.
    pub trial_id: String,
    /// The trial's index.
    pub index: u32,
    /// Where the trial is.
    pub status: TrialStatus,
    /// The last epoch it reported.
    pub epochs_run: u32,
    /// Its best score so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<TrialScore>,
}

/// A search's trials ranked by best validation macro-F1 (ties: the lower loss, then the earlier
/// trial); trials without a score follow, failed trials come last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Leaderboard {
    /// The optimize job.
    pub job_id: String,
    /// Increases by one with every change: the updates' order.
    pub version: u64,
    /// The ranked trials.
    pub entries: Vec<LeaderboardEntry>,
    /// The coordinating instance.
    pub instance: String,
    /// Publish time, ms since the Unix epoch.
    pub timestamp_ms: f64,
}

/// The best trial of a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BestTrialSummary {
    /// The trial (its train job's id).
    pub trial_id: String,
    /// Its index.
    pub index: u32,
    /// The values it tried, by setting.
    pub configuration: std::collections::BTreeMap<String, serde_json::Value>,
    /// Its train job's whole settings (the search's base with the values above).
    pub settings: crate::job::ExperimentSettings,
    /// Its best validation score.
    pub score: TrialScore,
    /// The last epoch it reported.
    pub epochs_run: u32,
    /// How it ended.
    pub status: TrialStatus,
}

/// How many of a search's trials ended how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialCounts {
    /// Ran to their end.
    pub completed: u32,
    /// Stopped early by the scheduler.
    pub stopped: u32,
    /// Cancelled (the search ended while they ran).
    pub cancelled: u32,
    /// Failed.
    pub failed: u32,
}

/// What an optimize job produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizeSummary {
    /// The model registered under the optimize job's `model_id`: the best trial's.
    pub model_id: String,
    /// The trial whose stored model is registered: the best trial, unless it left no model
    /// (then the best trial that did).
    pub model_trial_id: String,
    /// Why the search ended (`all_trials_done` or `goal_reached`).
    pub reason: SearchEndReason,
    /// The best trial.
    pub best_trial: BestTrialSummary,
    /// Trials by outcome.
    pub trials: TrialCounts,
}
