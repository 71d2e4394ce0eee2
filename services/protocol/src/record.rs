//! State kept in NATS: the job record (KV bucket `lexmesh_jobs`, key = job id) and the
//! manifest of a stored model (object `<model>/manifest.json` in `lexmesh_models`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ErrorBody;
use crate::event::JobResult;
use crate::job::JobKind;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Submitted, not yet taken.
    Queued,
    /// A worker runs it.
    Running,
    /// Failed once, will be delivered again.
    Retrying,
    /// Finished with a result.
    Completed,
    /// Failed for good.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl JobStatus {
    /// Whether the job is over.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The status as it is written in JSON (`queued`, `running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The job record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    /// The job.
    pub job_id: String,
    /// Its kind.
    pub kind: JobKind,
    /// Where it stands.
    pub status: JobStatus,
    /// Deliveries so far.
    pub attempts: u32,
    /// The instance that runs or ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The model it trains or evaluates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Epochs finished (training); for an optimize job, its trials that have ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs_completed: Option<u32>,
    /// Planned epochs (training); for an optimize job, its trial budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_epochs: Option<u32>,
    /// First time a worker saw it (ms since the Unix epoch).
    pub created_ms: f64,
    /// Last change.
    pub updated_ms: f64,
    /// The result, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// Sequence of the job's message in the jobs stream (to find it again, e.g. to dead-letter
    /// it when its deliveries ran out unnoticed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_sequence: Option<u64>,
    /// Every delivery of the job: who ran it, from when to when, how it ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AttemptEntry>,
}

/// One delivery of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptEntry {
    /// Delivery number, from 1.
    pub attempt: u32,
    /// The instance that ran it.
    pub instance: String,
    /// When it took the job (ms since the Unix epoch).
    pub started_ms: f64,
    /// When that attempt ended; absent while it runs, and for good when its worker was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<f64>,
    /// How it ended: `completed`, `failed`, `retrying`, `cancelled`, `handed_back`,
    /// `superseded`; absent while it runs or when its worker was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// W3C `traceparent` of this attempt's span, when tracing is on: a later attempt's span
    /// links to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The job's stored progress (`epochs_completed`) when this attempt began: a later look
    /// tells whether the attempt moved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs_at_start: Option<u32>,
    /// Set when the attempt's worker went away without ending it, by the next attempt: why,
    /// and whether it counts against the job's budget of lost attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<LostAttempt>,
}

/// Why a process went away, as its supervisor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExitCause {
    /// Ended by a signal from outside (SIGKILL, SIGTERM, SIGINT: an operator, the health
    /// service, a node drain): not the fault of the jobs it ran.
    Killed,
    /// Exited or died of its own fault (an abort, a segfault, an exit code): possibly the
    /// fault of a job it ran.
    Crashed,
    /// No supervisor said (a process not started by `lexmesh up`, a pod, a lost machine).
    Unknown,
}

/// A lost attempt: its worker went away without ending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LostAttempt {
    /// Why the worker went away.
    pub cause: ExitCause,
    /// Whether the attempt stored progress (a checkpoint of a later epoch) before it was
    /// lost.
    pub progress: bool,
    /// Whether it counts against the job: lost without progress, and not killed from outside.
    pub counted: bool,
}

impl LostAttempt {
    /// The verdict on an attempt lost for `cause`, which did or did not store progress.
    pub fn judge(cause: ExitCause, progress: bool) -> Self {
        Self {
            cause,
            progress,
            counted: !progress && cause != ExitCause::Killed,
        }
    }
}

/// How an instance's process last ended, written by the supervisor that saw it end (`lexmesh
/// up`) in KV bucket `lexmesh_instances`, key = instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceExit {
    /// The instance.
    pub instance: String,
    /// Its process id.
    pub pid: u32,
    /// Why it ended.
    pub cause: ExitCause,
    /// The exit status as the supervisor saw it (`signal: 9 (SIGKILL)`, `exit status: 1`).
    pub status: String,
    /// When it ended (ms since the Unix epoch).
    pub ended_ms: f64,
}

impl JobRecord {
    /// A record with only the essentials set, created and updated at `now_ms`.
    pub fn new(job_id: &str, kind: JobKind, status: JobStatus, attempts: u32, now_ms: f64) -> Self {
        Self {
            job_id: job_id.to_string(),
            kind,
            status,
            attempts,
            owner: None,
            model_id: None,
            epochs_completed: None,
            total_epochs: None,
            created_ms: now_ms,
            updated_ms: now_ms,
            result: None,
            error: None,
            stream_sequence: None,
            history: Vec::new(),
        }
    }
}

impl crate::decode::Message for JobRecord {}

/// One file of a stored model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// File name inside the model directory.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// Manifest of a stored model, written after all its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// The model.
    pub model_id: String,
    /// The job that trained it.
    pub job_id: String,
    /// Architecture name.
    pub model_kind: String,
    /// Labels in class order.
    pub labels: Vec<String>,
    /// Validation macro-F1 of the kept weights.
    pub validation_macro_f1: f64,
    /// The prepared dataset it was trained on.
    pub dataset_id: String,
    /// Folder of its files inside `<model>/` (one per training attempt, so that two attempts
    /// racing never mix files; the manifest names the winner's). Empty for files directly
    /// under `<model>/`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub folder: String,
    /// The model whose files these are, when they are stored under another model's id: a
    /// search registers its best trial's model under its own `model_id` without copying it,
    /// and the files stay under `<source_model_id>/<folder>/`. Absent: `<model_id>/<folder>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub source_model_id: Option<String>,
    /// Its files.
    pub files: Vec<ModelFile>,
    /// When it was stored (ms since the Unix epoch).
    pub created_ms: f64,
}

impl crate::decode::Message for ModelManifest {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_are_the_wire_names() {
        use JobStatus::*;
        let all = [Queued, Running, Retrying, Completed, Failed, Cancelled];
        for status in all {
            let wire = serde_json::to_value(status).unwrap();
            assert_eq!(wire.as_str(), Some(status.as_str()));
        }
        // Six different names.
        let names: std::collections::BTreeSet<_> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(names.len(), all.len());
    }
}
