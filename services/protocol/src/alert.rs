//! Alerts on `lexmesh.alerts.<kind>`: raised when something needs a person's attention, and
//! published again as `cleared` when it no longer does.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What an alert is about; its name is the last token of the subject `lexmesh.alerts.<kind>`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Resident memory above its threshold (metrics service).
    Memory,
    /// Control-plane CPU above its threshold (metrics service).
    Cpu,
    /// The async runtime's tick lateness p95 above its threshold (metrics service).
    Response,
    /// Failed jobs among those that ended above its threshold (metrics service).
    ErrorRate,
    /// Message latency p95 above its threshold (metrics service).
    MessageLatency,
    /// A local service process kept exiting and `lexmesh up` stopped restarting it.
    CrashLoop,
    /// The health service replaced an instance too often in its window and stopped.
    ReplacementGivenUp,
    /// The health service could not replace an instance.
    ReplacementFailed,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 8] = [
        Self::Memory,
        Self::Cpu,
        Self::Response,
        Self::ErrorRate,
        Self::MessageLatency,
        Self::CrashLoop,
        Self::ReplacementGivenUp,
        Self::ReplacementFailed,
    ];

    /// The name on the wire (`memory`, `crash_loop`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Cpu => "cpu",
            Self::Response => "response",
            Self::ErrorRate => "error_rate",
            Self::MessageLatency => "message_latency",
            Self::CrashLoop => "crash_loop",
            Self::ReplacementGivenUp => "replacement_given_up",
            Self::ReplacementFailed => "replacement_failed",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// What kind; the subject's last token.
    pub kind: AlertKind,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_kind_is_written_as_its_name() {
        for kind in AlertKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.as_str().to_owned())
            );
            let back: AlertKind = serde_json::from_value(kind.as_str().into()).unwrap();
            assert_eq!(back, kind);
        }
        let names: std::collections::BTreeSet<&str> =
            AlertKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), AlertKind::ALL.len());
        assert!(serde_json::from_value::<AlertKind>("disk".into()).is_err());
    }
}
