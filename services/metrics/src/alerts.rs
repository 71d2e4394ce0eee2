//! Threshold alerts with hysteresis, judged on every instance's periodic report.
//!
//! An alert is raised after [`AlertConfig::raise_after`] reports in a row above its threshold,
//! and cleared only after [`AlertConfig::clear_after`] reports in a row below the *clear line*,
//! `threshold × (1 − hysteresis)`. A value hovering at the threshold therefore raises once and
//! stays raised instead of flapping. Alerts are kept per (service, instance, kind).
//!
//! Pure: nothing is published here; [`AlertEngine::observe`] returns the transitions for the
//! caller to publish on `lexmesh.alerts.<kind>`.

use std::collections::BTreeMap;
use std::fmt;

use lexmesh_protocol::alert::{Alert, AlertKind, AlertState};
use lexmesh_protocol::metrics::WorkerMetrics;
use serde::{Deserialize, Serialize};

const MIB: f64 = 1024.0 * 1024.0;

/// What the metrics service alerts on (the `[metrics.alerts]` configuration section).
///
/// ```toml
/// [metrics.alerts]
/// hysteresis = 0.1
/// raise_after = 2
/// clear_after = 2
///
/// [metrics.alerts.thresholds]
/// memory_mb = 512
/// cpu_percent = 80
///
/// # A service whose normal load needs another line.
/// [metrics.alerts.services.evaluator]
/// response_ms = 200
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// Thresholds for every service.
    pub thresholds: Thresholds,
    /// Per-service changes to `thresholds`, by service name (`trainer`, ...).
    pub services: BTreeMap<String, ThresholdOverrides>,
    /// An alert clears only once the value is below `threshold × (1 − hysteresis)`; from 0
    /// (clear as soon as it is below the threshold) up to, not including, 1.
    pub hysteresis: f64,
    /// Reports in a row above the threshold that raise an alert (at least 1).
    pub raise_after: u32,
    /// Reports in a row below the clear line that clear it (at least 1).
    pub clear_after: u32,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            thresholds: Thresholds::default(),
            services: BTreeMap::new(),
            hysteresis: 0.1,
            raise_after: 2,
            clear_after: 2,
        }
    }
}

/// The alert thresholds. An alert is raised while the value is strictly above its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Resident memory, MiB.
    pub memory_mb: f64,
    /// CPU, percent of one core (200 = two cores busy).
    pub cpu_percent: f64,
    /// Response time: the 95th percentile of the async runtime's tick lateness, ms.
    pub response_ms: f64,
    /// Failed jobs among the jobs that ended in the report's window, 0 to 1.
    pub error_rate: f64,
    /// The 95th percentile of message latency (publish to receipt), ms.
    pub message_latency_ms: f64,
}

impl Default for Thresholds {
    /// The old system's thresholds.
    fn default() -> Self {
        Self {
            memory_mb: 512.0,
            cpu_percent: 80.0,
            response_ms: 100.0,
            error_rate: 0.05,
            message_latency_ms: 50.0,
        }
    }
}

impl Thresholds {
    /// The threshold of one kind of alert.
    pub fn get(&self, kind: Measure) -> f64 {
        match kind {
            Measure::Memory => self.memory_mb,
            Measure::Cpu => self.cpu_percent,
            Measure::Response => self.response_ms,
            Measure::ErrorRate => self.error_rate,
            Measure::MessageLatency => self.message_latency_ms,
        }
    }

    /// These thresholds with a service's overrides applied.
    pub fn with_overrides(&self, overrides: &ThresholdOverrides) -> Thresholds {
        Thresholds {
            memory_mb: overrides.memory_mb.unwrap_or(self.memory_mb),
            cpu_percent: overrides.cpu_percent.unwrap_or(self.cpu_percent),
            response_ms: overrides.response_ms.unwrap_or(self.response_ms),
            error_rate: overrides.error_rate.unwrap_or(self.error_rate),
            message_latency_ms: overrides
                .message_latency_ms
                .unwrap_or(self.message_latency_ms),
        }
    }
}

/// One service's changes to the common [`Thresholds`]; a field left out keeps the common value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdOverrides {
    /// Resident memory, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<f64>,
    /// CPU, percent of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Tick lateness p95, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_ms: Option<f64>,
    /// Error rate, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// Message latency p95, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_latency_ms: Option<f64>,
}

impl ThresholdOverrides {
    /// Every field set to `thresholds`' value.
    fn all(t: &Thresholds) -> Self {
        Self {
            memory_mb: Some(t.memory_mb),
            cpu_percent: Some(t.cpu_percent),
            response_ms: Some(t.response_ms),
            error_rate: Some(t.error_rate),
            message_latency_ms: Some(t.message_latency_ms),
        }
    }

    fn get(&self, kind: Measure) -> Option<f64> {
        match kind {
            Measure::Memory => self.memory_mb,
            Measure::Cpu => self.cpu_percent,
            Measure::Response => self.response_ms,
            Measure::ErrorRate => self.error_rate,
            Measure::MessageLatency => self.message_latency_ms,
        }
    }
}

/// Why an [`AlertConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlertConfigError {
    /// A threshold is negative or not a number.
    #[error("alert threshold `{scope}.{field}` must be a number of at least 0, not {value}")]
    Threshold {
        /// `thresholds`, or `services.<name>` for an override.
        scope: String,
        /// The field (`memory_mb`, ...).
        field: &'static str,
        /// What it was set to.
        value: f64,
    },
    /// `hysteresis` is outside `[0, 1)`.
    #[error("alert `hysteresis` must be at least 0 and below 1, not {0}")]
    Hysteresis(f64),
    /// `raise_after` or `clear_after` is 0.
    #[error("alert `{0}` must be at least 1")]
    ZeroCount(&'static str),
}

impl AlertConfig {
    /// Checks every value; the first bad one is the error.
    pub fn validate(&self) -> Result<(), AlertConfigError> {
        let scopes = std::iter::once((
            "thresholds".to_string(),
            ThresholdOverrides::all(&self.thresholds),
        ))
        .chain(
            self.services
                .iter()
                .map(|(name, o)| (format!("services.{name}"), *o)),
        );
        for (scope, overrides) in scopes {
            for kind in Measure::ALL {
                if let Some(value) = overrides.get(kind)
                    && (value.is_nan() || value < 0.0)
                {
                    return Err(AlertConfigError::Threshold {
                        scope,
                        field: kind.field(),
                        value,
                    });
                }
            }
        }
        if !(0.0..1.0).contains(&self.hysteresis) {
            return Err(AlertConfigError::Hysteresis(self.hysteresis));
        }
        if self.raise_after == 0 {
            return Err(AlertConfigError::ZeroCount("raise_after"));
        }
        if self.clear_after == 0 {
            return Err(AlertConfigError::ZeroCount("clear_after"));
        }
        Ok(())
    }

    /// The thresholds that apply to a service: the common ones with its overrides.
    pub fn thresholds_for(&self, service: &str) -> Thresholds {
        match self.services.get(service) {
            Some(overrides) => self.thresholds.with_overrides(overrides),
            None => self.thresholds,
        }
    }
}

/// A measure of a report that has a threshold; each raises alerts of its own [`AlertKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Measure {
    /// Resident memory above `memory_mb`.
    Memory,
    /// Control-plane CPU above `cpu_percent` (of one core): a runaway or stuck async side.
    /// Compute threads at work are not trouble and do not count; a starved or throttled
    /// instance shows in `response` (its tick runs late).
    Cpu,
    /// Tick lateness p95 above `response_ms`.
    Response,
    /// Error rate above `error_rate`.
    ErrorRate,
    /// Message latency p95 above `message_latency_ms`.
    MessageLatency,
}

impl Measure {
    /// Every kind.
    pub const ALL: [Measure; 5] = [
        Self::Memory,
        Self::Cpu,
        Self::Response,
        Self::ErrorRate,
        Self::MessageLatency,
    ];

    /// The kind of the alerts it raises.
    pub fn kind(self) -> AlertKind {
        match self {
            Self::Memory => AlertKind::Memory,
            Self::Cpu => AlertKind::Cpu,
            Self::Response => AlertKind::Response,
            Self::ErrorRate => AlertKind::ErrorRate,
            Self::MessageLatency => AlertKind::MessageLatency,
        }
    }

    /// The field of [`Thresholds`] that holds its threshold.
    fn field(self) -> &'static str {
        match self {
            Self::Memory => "memory_mb",
            Self::Cpu => "cpu_percent",
            Self::Response => "response_ms",
            Self::ErrorRate => "error_rate",
            Self::MessageLatency => "message_latency_ms",
        }
    }

    /// What is measured, in words.
    fn label(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Cpu => "control-plane CPU",
            Self::Response => "response time (tick lateness p95)",
            Self::ErrorRate => "error rate",
            Self::MessageLatency => "message latency p95",
        }
    }

    /// The value a report gives, in the threshold's unit; `None` when the report has nothing
    /// to judge (no latency samples, no job ended in the window).
    pub fn measure(self, report: &WorkerMetrics) -> Option<f64> {
        match self {
            Self::Memory => Some(report.rss_bytes as f64 / MIB),
            Self::Cpu => Some(report.control_cpu_percent),
            Self::Response => {
                (report.tick_lateness.count > 0).then_some(report.tick_lateness.p95_ms)
            }
            Self::ErrorRate => {
                (report.window_completed + report.window_failed > 0).then_some(report.error_rate)
            }
            Self::MessageLatency => {
                (report.message_latency.count > 0).then_some(report.message_latency.p95_ms)
            }
        }
    }

    /// A value with its unit.
    fn format(self, value: f64) -> Formatted {
        Formatted { kind: self, value }
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind().as_str())
    }
}

struct Formatted {
    kind: Measure,
    value: f64,
}

impl fmt::Display for Formatted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.value;
        match self.kind {
            Measure::Memory => write!(f, "{v:.0} MiB"),
            Measure::Cpu => write!(f, "{v:.0}%"),
            Measure::Response | Measure::MessageLatency => write!(f, "{v:.1} ms"),
            Measure::ErrorRate => write!(f, "{:.1}%", v * 100.0),
        }
    }
}

/// What the engine remembers about one (service, instance, kind).
#[derive(Debug, Clone, Default)]
struct Track {
    /// Reports in a row above the threshold (while not raised).
    over: u32,
    /// Reports in a row below the clear line (while raised).
    under: u32,
    /// The latest value judged.
    last_value: f64,
    /// The alert as raised, while it is.
    raised: Option<Alert>,
}

type Key = (String, String, Measure);

/// Judges reports against the thresholds and remembers which alerts are raised.
#[derive(Debug, Clone)]
pub struct AlertEngine {
    config: AlertConfig,
    source: String,
    tracks: BTreeMap<Key, Track>,
}

impl AlertEngine {
    /// No alert raised yet. `source` names the alerts' origin (the metrics instance).
    ///
    /// The configuration should have passed [`AlertConfig::validate`]; a count of 0 acts as 1.
    pub fn new(config: AlertConfig, source: String) -> Self {
        Self {
            config,
            source,
            tracks: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AlertConfig {
        &self.config
    }

    /// Judges one report; returns the alerts it raised or cleared (none most of the time).
    pub fn observe(&mut self, report: &WorkerMetrics) -> Vec<Alert> {
        let thresholds = self.config.thresholds_for(&report.service);
        let raise_after = self.config.raise_after.max(1);
        let clear_after = self.config.clear_after.max(1);
        let keep = 1.0 - self.config.hysteresis;
        let mut transitions = Vec::new();
        for kind in Measure::ALL {
            let Some(value) = kind.measure(report) else {
                continue;
            };
            let threshold = thresholds.get(kind);
            let clear_line = threshold * keep;
            let track = self
                .tracks
                .entry((report.service.clone(), report.instance.clone(), kind))
                .or_default();
            track.last_value = value;
            if track.raised.is_none() {
                track.over = if value > threshold { track.over + 1 } else { 0 };
                if track.over >= raise_after {
                    let alert = Alert {
                        kind: kind.kind(),
                        state: AlertState::Raised,
                        service: report.service.clone(),
                        instance: report.instance.clone(),
                        value,
                        threshold,
                        message: format!(
                            "{}: {} {} above {}",
                            report.instance,
                            kind.label(),
                            kind.format(value),
                            kind.format(threshold)
                        ),
                        source: self.source.clone(),
                        timestamp_ms: report.timestamp_ms,
                    };
                    track.over = 0;
                    track.under = 0;
                    track.raised = Some(alert.clone());
                    transitions.push(alert);
                }
            } else {
                // A clear line of 0 (threshold 0) could never be undercut: 0 itself clears.
                let below = value < clear_line || (clear_line <= 0.0 && value <= 0.0);
                track.under = if below { track.under + 1 } else { 0 };
                if track.under >= clear_after {
                    track.under = 0;
                    track.over = 0;
                    track.raised = None;
                    transitions.push(Alert {
                        kind: kind.kind(),
                        state: AlertState::Cleared,
                        service: report.service.clone(),
                        instance: report.instance.clone(),
                        value,
                        threshold,
                        message: format!(
                            "{}: {} {} back under {}",
                            report.instance,
                            kind.label(),
                            kind.format(value),
                            kind.format(clear_line)
                        ),
                        source: self.source.clone(),
                        timestamp_ms: report.timestamp_ms,
                    });
                }
            }
        }
        transitions
    }

    /// The instance is gone: forgets it, and clears the alerts it had raised.
    pub fn forget(&mut self, service: &str, instance: &str, now_ms: f64) -> Vec<Alert> {
        let kinds: Vec<Key> = self
            .tracks
            .keys()
            .filter(|(s, i, _)| s == service && i == instance)
            .cloned()
            .collect();
        let mut cleared = Vec::new();
        for key in kinds {
            let Some(track) = self.tracks.remove(&key) else {
                continue;
            };
            if let Some(raised) = track.raised {
                let kind = key.2;
                cleared.push(Alert {
                    state: AlertState::Cleared,
                    value: track.last_value,
                    message: format!(
                        "{instance}: {} alert cleared: the instance is gone",
                        kind.label()
                    ),
                    timestamp_ms: now_ms,
                    ..raised
                });
            }
        }
        cleared
    }

    /// The alerts raised and not cleared, by service, instance and kind.
    pub fn active(&self) -> Vec<Alert> {
        self.tracks
            .values()
            .filter_map(|t| t.raised.clone())
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::fixtures::report;

    fn engine() -> AlertEngine {
        AlertEngine::new(AlertConfig::default(), "metrics-1".into())
    }

    /// Feeds memory figures (MiB) and returns the transitions, as (report index, state).
    fn feed(engine: &mut AlertEngine, service: &str, mibs: &[f64]) -> Vec<(usize, AlertState)> {
        let mut out = Vec::new();
        for (i, mib) in mibs.iter().enumerate() {
            for alert in engine.observe(&report(service, "w-1", *mib)) {
                assert_eq!(alert.kind, AlertKind::Memory);
                out.push((i, alert.state));
            }
        }
        out
    }

    #[test]
    fn raises_only_after_raise_after_reports_in_a_row() {
        let mut e = engine();
        // One spike, then back under: nothing.
        assert!(feed(&mut e, "trainer", &[600.0, 400.0, 600.0, 400.0]).is_empty());
        // Two in a row: raised on the second.
        let got = feed(&mut e, "trainer", &[600.0, 700.0]);
        assert_eq!(got, vec![(1, AlertState::Raised)]);
        let active = e.active();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].value, 700.0);
        assert_eq!(active[0].threshold, 512.0);
        assert_eq!(active[0].source, "metrics-1");
        assert_eq!(active[0].message, "w-1: memory 700 MiB above 512 MiB");
        // Still above: no second raise.
        assert!(feed(&mut e, "trainer", &[800.0, 800.0]).is_empty());
    }

    #[test]
    fn a_value_hovering_at_the_line_does_not_flap() {
        let mut e = engine();
        // Around 512 MiB: above, then just below (but above the clear line 460.8), and so on.
        let hovering: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 520.0 } else { 500.0 })
            .collect();
        let mut series = vec![520.0, 530.0];
        series.extend(hovering);
        assert_eq!(
            feed(&mut e, "trainer", &series),
            vec![(1, AlertState::Raised)]
        );
        // Even judging every single report, the hysteresis alone keeps it from flapping.
        let mut e = AlertEngine::new(
            AlertConfig {
                raise_after: 1,
                clear_after: 1,
                ..Default::default()
            },
            "m".into(),
        );
        assert_eq!(
            feed(&mut e, "trainer", &series),
            vec![(0, AlertState::Raised)]
        );
    }

    #[test]
    fn clears_only_under_the_clear_line_after_clear_after_reports() {
        let mut e = engine();
        assert_eq!(
            feed(&mut e, "trainer", &[600.0, 600.0]),
            vec![(1, AlertState::Raised)]
        );
        // Below the threshold but not below 512 × 0.9 = 460.8: stays raised.
        assert!(feed(&mut e, "trainer", &[470.0, 470.0, 470.0]).is_empty());
        // Once under the line, then back above it: the count starts again.
        assert!(feed(&mut e, "trainer", &[450.0, 470.0, 450.0]).is_empty());
        let got = feed(&mut e, "trainer", &[440.0]);
        assert_eq!(got, vec![(0, AlertState::Cleared)]);
        assert!(e.active().is_empty());
        // And it can be raised again.
        assert_eq!(
            feed(&mut e, "trainer", &[600.0, 600.0]),
            vec![(1, AlertState::Raised)]
        );
    }

    #[test]
    fn cleared_alert_says_what_and_why() {
        let mut e = engine();
        feed(&mut e, "trainer", &[600.0, 600.0]);
        let mut cleared = Vec::new();
        for mib in [300.0, 300.0] {
            cleared.extend(e.observe(&report("trainer", "w-1", mib)));
        }
        assert_eq!(cleared.len(), 1);
        let c = &cleared[0];
        assert_eq!(c.state, AlertState::Cleared);
        assert_eq!(
            (c.service.as_str(), c.instance.as_str()),
            ("trainer", "w-1")
        );
        assert_eq!((c.value, c.threshold), (300.0, 512.0));
        assert_eq!(c.message, "w-1: memory 300 MiB back under 461 MiB");
    }

    #[test]
    fn per_service_overrides_apply_to_that_service_only() {
        let config = AlertConfig {
            services: BTreeMap::from([(
                "trainer".to_string(),
                ThresholdOverrides {
                    memory_mb: Some(3072.0),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        };
        assert_eq!(config.thresholds_for("trainer").memory_mb, 3072.0);
        assert_eq!(config.thresholds_for("trainer").cpu_percent, 80.0);
        assert_eq!(config.thresholds_for("evaluator").memory_mb, 512.0);
        let mut e = AlertEngine::new(config, "m".into());
        assert!(feed(&mut e, "trainer", &[1100.0, 1100.0, 1100.0]).is_empty());
        let raised = feed(&mut e, "evaluator", &[1100.0, 1100.0]);
        assert_eq!(raised, vec![(1, AlertState::Raised)]);
        assert_eq!(e.active()[0].service, "evaluator");
    }

    #[test]
    fn instances_and_kinds_are_judged_apart() {
        let mut e = engine();
        let mut hot = report("trainer", "w-1", 600.0);
        hot.control_cpu_percent = 150.0;
        e.observe(&hot);
        // Another instance's report in between does not break w-1's streak.
        assert!(e.observe(&report("trainer", "w-2", 100.0)).is_empty());
        let raised = e.observe(&hot);
        let kinds: Vec<&str> = raised.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(kinds, vec!["memory", "cpu"]);
        assert_eq!(raised[1].message, "w-1: control-plane CPU 150% above 80%");
    }

    #[test]
    fn a_trainer_training_on_all_its_cores_raises_no_cpu_alert() {
        let mut e = engine();
        let mut busy = report("trainer", "w-1", 200.0);
        // Every core the instance may use is busy training; its control plane idles.
        busy.cpu_percent = 99.0;
        busy.control_cpu_percent = 3.0;
        for _ in 0..5 {
            assert!(e.observe(&busy).is_empty(), "{:?}", e.active());
        }
        // A runaway control plane is trouble, whatever the compute threads do.
        busy.control_cpu_percent = 95.0;
        e.observe(&busy);
        let raised = e.observe(&busy);
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(raised[0].kind, AlertKind::Cpu);
    }

    #[test]
    fn latency_and_error_rate_are_judged_only_with_something_to_judge() {
        let mut e = engine();
        let mut r = report("trainer", "w-1", 100.0);
        // No samples: a p95 of 500 ms is not judged; an error rate without ended jobs neither.
        r.tick_lateness.p95_ms = 500.0;
        r.message_latency.p95_ms = 500.0;
        r.error_rate = 1.0;
        for _ in 0..3 {
            assert!(e.observe(&r).is_empty());
        }
        r.tick_lateness.count = 10;
        r.message_latency.count = 3;
        r.window_failed = 1;
        e.observe(&r);
        let raised = e.observe(&r);
        let kinds: Vec<&str> = raised.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(kinds, vec!["response", "error_rate", "message_latency"]);
        assert_eq!(
            raised[1].message, "w-1: error rate 100.0% above 5.0%",
            "{raised:?}"
        );
        // A report without samples does not clear them either.
        r.tick_lateness.count = 0;
        r.message_latency.count = 0;
        r.window_failed = 0;
        for _ in 0..3 {
            assert!(e.observe(&r).is_empty());
        }
        assert_eq!(e.active().len(), 3);
    }

    #[test]
    fn forget_clears_the_instances_alerts() {
        let mut e = engine();
        feed(&mut e, "trainer", &[600.0, 600.0]);
        e.observe(&report("trainer", "w-2", 600.0));
        assert!(e.forget("trainer", "w-3", 5.0).is_empty());
        let cleared = e.forget("trainer", "w-1", 5_000.0);
        assert_eq!(cleared.len(), 1);
        let c = &cleared[0];
        assert_eq!(c.state, AlertState::Cleared);
        assert_eq!((c.kind.as_str(), c.instance.as_str()), ("memory", "w-1"));
        assert_eq!(c.timestamp_ms, 5_000.0);
        assert!(c.message.contains("gone"), "{}", c.message);
        assert!(e.active().is_empty());
        // w-2's streak (one report over) is untouched: one more raises it.
        assert_eq!(e.observe(&report("trainer", "w-2", 600.0)).len(), 1);
        // A forgotten instance that comes back starts from nothing.
        assert!(e.observe(&report("trainer", "w-1", 600.0)).is_empty());
    }

    #[test]
    fn active_is_sorted() {
        let mut e = engine();
        for (service, instance) in [("trainer", "b"), ("evaluator", "z"), ("trainer", "a")] {
            let mut r = report(service, instance, 600.0);
            r.control_cpu_percent = 100.0;
            e.observe(&r);
            e.observe(&r);
        }
        let keys: Vec<(String, String, AlertKind)> = e
            .active()
            .into_iter()
            .map(|a| (a.service, a.instance, a.kind))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        assert_eq!(keys, sorted);
        assert_eq!(keys.len(), 6);
        assert_eq!(keys[0], ("evaluator".into(), "z".into(), AlertKind::Memory));
        assert_eq!(keys[1], ("evaluator".into(), "z".into(), AlertKind::Cpu));
    }

    #[test]
    fn threshold_zero_can_clear() {
        let config = AlertConfig {
            thresholds: Thresholds {
                error_rate: 0.0,
                ..Default::default()
            },
            raise_after: 1,
            clear_after: 1,
            ..Default::default()
        };
        let mut e = AlertEngine::new(config, "m".into());
        let mut r = report("trainer", "w-1", 1.0);
        r.window_failed = 1;
        r.error_rate = 0.5;
        assert_eq!(e.observe(&r).len(), 1);
        r.window_failed = 0;
        r.window_completed = 1;
        r.error_rate = 0.0;
        assert_eq!(e.observe(&r)[0].state, AlertState::Cleared);
    }

    #[test]
    fn config_defaults_and_validation() {
        let c = AlertConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.thresholds.memory_mb, 512.0);
        assert_eq!(c.thresholds.cpu_percent, 80.0);
        assert_eq!(c.thresholds.response_ms, 100.0);
        assert_eq!(c.thresholds.error_rate, 0.05);
        assert_eq!(c.thresholds.message_latency_ms, 50.0);
        assert_eq!((c.hysteresis, c.raise_after, c.clear_after), (0.1, 2, 2));

        let mut bad = c.clone();
        bad.thresholds.cpu_percent = -1.0;
        assert!(matches!(
            bad.validate(),
            Err(AlertConfigError::Threshold {
                field: "cpu_percent",
                ..
            })
        ));
        let mut bad = c.clone();
        bad.services.insert(
            "trainer".into(),
            ThresholdOverrides {
                response_ms: Some(f64::NAN),
                ..Default::default()
            },
        );
        let err = bad.validate().unwrap_err();
        assert!(
            err.to_string().contains("services.trainer.response_ms"),
            "{err}"
        );
        for h in [-0.1, 1.0, f64::NAN] {
            let bad = AlertConfig {
                hysteresis: h,
                ..c.clone()
            };
            assert!(matches!(
                bad.validate(),
                Err(AlertConfigError::Hysteresis(_))
            ));
        }
        let bad = AlertConfig {
            raise_after: 0,
            ..c.clone()
        };
        assert_eq!(
            bad.validate(),
            Err(AlertConfigError::ZeroCount("raise_after"))
        );
        let bad = AlertConfig {
            clear_after: 0,
            ..c.clone()
        };
        assert_eq!(
            bad.validate(),
            Err(AlertConfigError::ZeroCount("clear_after"))
        );
    }

    #[test]
    fn config_reads_from_toml_and_rejects_typos() {
        let text = r#"
            raise_after = 3
            [thresholds]
            memory_mb = 600
            [services.trainer]
            memory_mb = 3072
        "#;
        let c: AlertConfig = toml::from_str(text).unwrap();
        assert_eq!(c.thresholds.memory_mb, 600.0);
        assert_eq!(c.thresholds.cpu_percent, 80.0);
        assert_eq!(c.raise_after, 3);
        assert_eq!(c.clear_after, 2);
        assert_eq!(c.thresholds_for("trainer").memory_mb, 3072.0);
        assert!(toml::from_str::<AlertConfig>("hysterisis = 0.2").is_err());
        assert!(toml::from_str::<AlertConfig>("[thresholds]\nmemory = 1").is_err());
        assert!(toml::from_str::<AlertConfig>("[services.trainer]\nmem = 1").is_err());
        let round: AlertConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);
    }
}
