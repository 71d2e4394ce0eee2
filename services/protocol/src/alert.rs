//! Alerts on `lexmesh.alerts.<kind>`: raised when something needs a person's attention, and
//! published again as `cleared` when it no longer does.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Raised or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds.
    Raised,
    /// It no longer does.
    Cleared,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// What kind (`crash_loop`, `replacement_given_up`, `memory`, ...); the subject's last token.
    pub kind: String,
    /// Raised or cleared.
    pub state: AlertState,
    /// Service concerned.
    pub service: String,
    /// Instance concerned.
    pub instance: String,
    /// The measured value.
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// In words.
    pub message: String,
    /// Who raised it.
    pub source: String,
    /// When (ms since the Unix epoch).
    pub timestamp_ms: f64,
}

impl crate::decode::Message for Alert {}
