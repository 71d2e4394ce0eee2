//! Heartbeats: every worker instance publishes one on `lexmesh.heartbeat.<service>.<instance>`
//! at a fixed interval, whatever it is doing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::RunningJob;

/// "I am alive, and this is what I run."
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub instance: String,
    /// Protocol version the instance speaks.
    pub protocol_version: u32,
    /// Operating-system process id (for a local supervisor).
    pub pid: u32,
    /// Host name (the pod name on Kubernetes).
    pub host: String,
    /// Kubernetes namespace (from `POD_NAMESPACE`), when it runs in a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Id of its NATS service-API registration: `$SRV.PING.<service>.<id>` reaches it alone.
    pub service_id: String,
    /// True on the last heartbeat of an instance that is shutting down on purpose.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopping: bool,
    /// Jobs running now, with the time each last made progress.
    pub running: Vec<RunningJob>,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// Configured memory budget in bytes.
    pub memory_budget_bytes: u64,
    /// Seconds between heartbeats.
    pub interval_s: f64,
    /// Publish time (ms since the Unix epoch).
    pub timestamp_ms: f64,
}

impl crate::decode::Message for Heartbeat {}
