//! What a worker instance reports about itself: the reply of its `status` endpoint.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::job::JobKind;

/// A job running on an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunningJob {
    /// The job.
    pub job_id: String,
    /// Its kind.
    pub kind: JobKind,
    /// Delivery attempt.
    pub attempt: u32,
    /// When this instance took it (ms since the Unix epoch).
    pub started_ms: f64,
    /// When it last made progress (a batch, for training).
    pub last_progress_ms: f64,
    /// Current epoch (training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
    /// Planned epochs (training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_epochs: Option<u32>,
    /// Percent done (training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_percentage: Option<f64>,
    /// Reply subject of the job message's delivery. Acknowledging it with `-NAK` hands the job
    /// back to the queue at once: the health service does that for an instance it declares
    /// unresponsive, instead of waiting for `ack_wait`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_subject: Option<String>,
}

/// The reply of `lexmesh.api.<service>.status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerStatus {
    /// Service name (`trainer`, ...).
    pub service: String,
    /// This instance's id.
    pub instance: String,
    /// lexmesh version.
    pub version: String,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Jobs this instance may run at once.
    pub concurrency: u32,
    /// Jobs running now.
    pub running: Vec<RunningJob>,
    /// Jobs completed since start.
    pub completed: u64,
    /// Jobs failed since start.
    pub failed: u64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// Time of the reply (ms since the Unix epoch).
    pub timestamp_ms: f64,
}
