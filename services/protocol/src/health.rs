//! What the health service says about worker instances: a state per instance, published on
//! `lexmesh.health.<instance>.<state>` whenever it changes, and the whole picture as the reply
//! of `lexmesh.api.health.instances` (what `lexmesh status` shows).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::RunningJob;

/// Where an instance stands, as seen by the health service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Heartbeats arrive on time and its jobs make progress.
    Healthy,
    /// Heartbeats arrive, but a running job has made no progress for the worker timeout (a
    /// wedged compute thread).
    Stalled,
    /// No heartbeat for the dead-after interval and no answer to a `$SRV.PING` (a killed,
    /// crashed, frozen or cut-off process).
    Unresponsive,
    /// Resident memory above its memory budget for several heartbeats in a row.
    OverBudget,
    /// Said goodbye: a last heartbeat while shutting down on purpose.
    Stopped,
    /// The health service replaced it (killed the process or deleted the pod).
    Replaced,
}

impl HealthState {
    /// Subject token: `healthy`, `stalled`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Stalled => "stalled",
            Self::Unresponsive => "unresponsive",
            Self::OverBudget => "over_budget",
            Self::Stopped => "stopped",
            Self::Replaced => "replaced",
        }
    }

    /// Whether an instance in this state should be replaced.
    pub fn needs_replacement(self) -> bool {
        matches!(self, Self::Stalled | Self::Unresponsive | Self::OverBudget)
    }
}

/// A change of an instance's state (`lexmesh.health.<instance>.<state>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthEvent {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub instance: String,
    /// The new state.
    pub state: HealthState,
    /// The state before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<HealthState>,
    /// Why, in words.
    pub reason: String,
    /// Jobs the instance was running, as its last heartbeat listed them.
    pub jobs: Vec<String>,
    /// The health-service instance that decided.
    pub observer: String,
    /// When (ms since the Unix epoch).
    pub timestamp_ms: f64,
}

impl crate::decode::Message for HealthEvent {}

/// One instance in the health report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceHealth {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub instance: String,
    /// Host (pod name on Kubernetes).
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Current state.
    pub state: HealthState,
    /// Why it is in that state.
    pub reason: String,
    /// Since when (ms since the Unix epoch).
    pub since_ms: f64,
    /// Seconds since its last heartbeat arrived.
    pub heartbeat_age_s: f64,
    /// Resident memory in bytes, from the last heartbeat.
    pub rss_bytes: u64,
    /// Its memory budget in bytes.
    pub memory_budget_bytes: u64,
    /// Jobs running there, from the last heartbeat.
    pub running: Vec<RunningJob>,
    /// Times the health service replaced it.
    pub replacements: u32,
}

/// The reply of `lexmesh.api.health.instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthReport {
    /// The health-service instance that answered.
    pub observer: String,
    /// Whether it holds the lease (only the leader replaces workers).
    pub leader: bool,
    /// Every instance it has heard of, by service then instance.
    pub instances: Vec<InstanceHealth>,
    /// Time of the reply (ms since the Unix epoch).
    pub timestamp_ms: f64,
}

impl crate::decode::Message for HealthReport {}
