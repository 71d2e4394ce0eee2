//! Dead letters: a job that could not be finished in `max_deliver` deliveries is published
//! once on `lexmesh.deadletter.<kind>` (kept by the `LEXMESH_DEADLETTER` stream) with the
//! original request and its history, and is never delivered again.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::job::JobKind;
use crate::record::AttemptEntry;

/// A job given up on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    /// The job.
    pub job_id: String,
    /// Its kind.
    pub kind: JobKind,
    /// Deliveries made.
    pub deliveries: u32,
    /// Error code of the last failure (`worker_lost` when its workers kept disappearing).
    pub code: ErrorCode,
    /// Why it was given up on.
    pub reason: String,
    /// Every attempt: who ran it, when, how it ended.
    pub history: Vec<AttemptEntry>,
    /// The job request as submitted (JSON).
    pub request: serde_json::Value,
    /// Its sequence in the jobs stream.
    pub stream_sequence: u64,
    /// The instance that dead-lettered it.
    pub instance: String,
    /// When (ms since the Unix epoch).
    pub timestamp_ms: f64,
}

impl crate::decode::Message for DeadLetter {}
