//! The cancel control message: publish (or request) on `lexmesh.control.<job>.cancel`.
//!
//! Every worker instance listens. The instance running the job stops it within one batch and
//! replies `cancelling` at once; the others record the cancel in the jobs bucket (a job still
//! waiting in the queue is then dropped when a worker takes it) and reply `recorded` after a
//! short delay, so a requester sees the running instance's reply first.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Asks for a job to stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// The job (must match the subject).
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub job_id: String,
    /// Why, for the logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl crate::decode::Message for CancelRequest {
    const SCHEMA: Option<&'static str> = Some("cancel-request");
}

/// What happened to a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The job was running on the replying instance; it stops within one batch.
    Cancelling,
    /// The job was not running anywhere that answered; the cancel is recorded and the job is
    /// dropped if a worker takes it later.
    Recorded,
    /// The job had already finished.
    AlreadyFinished,
}

/// Reply to a [`CancelRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelReply {
    /// The job.
    pub job_id: String,
    /// What happened.
    pub outcome: CancelOutcome,
    /// The instance that replied.
    pub instance: String,
}
