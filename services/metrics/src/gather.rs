//! What the metrics service knows now: the latest report of every instance, the training jobs
//! running, and the alerts other services raised. [`Gatherer::snapshot`] answers
//! `lexmesh.api.metrics.snapshot`.
//!
//! Pure: time comes in as an argument (ms since the Unix epoch).

use std::collections::BTreeMap;

use lexmesh_protocol::alert::{Alert, AlertKind, AlertState};
use lexmesh_protocol::event::{JobEvent, Progress};
use lexmesh_protocol::metrics::{MetricsSnapshot, TrainingProgress, WorkerMetrics};

/// The latest figures of a training job, from one of its progress events.
pub fn training_progress(p: &Progress) -> TrainingProgress {
    TrainingProgress {
        job_id: p.job_id.clone(),
        model_id: p.model_id.clone(),
        instance: p.instance.clone(),
        attempt: p.attempt,
        epoch: p.epoch,
        total_epochs: p.total_epochs,
        completion_percentage: p.completion_percentage,
        loss: p.loss,
        accuracy: p.accuracy,
        eta_s: Some(p.estimated_time_remaining_s).filter(|s| s.is_finite() && *s >= 0.0),
        updated_ms: p.timestamp_ms,
    }
}

#[derive(Debug, Clone)]
struct Heard {
    report: WorkerMetrics,
    /// When it arrived, on this side's clock: what expiry goes by, so skew between hosts
    /// does not matter.
    received_ms: f64,
}

/// An alert's identity: (service, instance, kind).
type AlertKey = (String, String, AlertKind);

fn alert_key(alert: &Alert) -> AlertKey {
    (alert.service.clone(), alert.instance.clone(), alert.kind)
}

/// Latest reports, running training jobs and others' alerts.
#[derive(Debug, Clone, Default)]
pub struct Gatherer {
    instances: BTreeMap<(String, String), Heard>,
    training: BTreeMap<String, TrainingProgress>,
    alerts: BTreeMap<AlertKey, Alert>,
}

impl Gatherer {
    /// Nothing heard yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps an instance's report (replacing its previous one); `received_ms` is when it
    /// arrived.
    pub fn observe_report(&mut self, report: WorkerMetrics, received_ms: f64) {
        let key = (report.service.clone(), report.instance.clone());
        self.instances.insert(
            key,
            Heard {
                report,
                received_ms,
            },
        );
    }

    /// Follows training jobs: a progress event updates its job, the job's last event (completed,
    /// failed and not retried, cancelled) removes it.
    pub fn observe_event(&mut self, event: &JobEvent) {
        match event {
            JobEvent::Progress(p) => {
                self.training.insert(p.job_id.clone(), training_progress(p));
            }
            e if e.is_final() => {
                self.training.remove(e.job_id());
            }
            _ => {}
        }
    }

    /// Keeps an alert another service raised; its `cleared` removes it. Alerts are told apart by
    /// service, instance and kind, so the same alert from two replicas is kept once.
    pub fn observe_alert(&mut self, alert: &Alert) {
        match alert.state {
            AlertState::Raised => {
                self.alerts.insert(alert_key(alert), alert.clone());
            }
            AlertState::Cleared => {
                self.alerts.remove(&alert_key(alert));
            }
        }
    }

    /// Whether `instance` (of any service) is known: heard from, not yet forgotten.
    pub fn knows(&self, instance: &str) -> bool {
        self.instances.keys().any(|(_, i)| i == instance)
    }

    /// Forgets the instances not heard from for more than `forget_after_ms`, and the training
    /// jobs they ran; returns them as (service, instance). Alerts raised by others about them
    /// stay until those others clear them (a "gave up replacing it" alert is about exactly
    /// such an instance).
    pub fn expire(&mut self, now_ms: f64, forget_after_ms: f64) -> Vec<(String, String)> {
        let gone: Vec<(String, String)> = self
            .instances
            .iter()
            .filter(|(_, heard)| now_ms - heard.received_ms > forget_after_ms)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &gone {
            self.instances.remove(key);
            self.training.retain(|_, t| t.instance != key.1);
        }
        gone
    }

    /// The latest report of an instance.
    pub fn report(&self, service: &str, instance: &str) -> Option<&WorkerMetrics> {
        self.instances
            .get(&(service.to_string(), instance.to_string()))
            .map(|h| &h.report)
    }

    /// The alerts heard from others and not cleared, by service, instance and kind.
    pub fn alerts(&self) -> Vec<Alert> {
        self.alerts.values().cloned().collect()
    }

    /// Everything known now. `own_alerts` are the caller's active alerts; where one has the
    /// same service, instance and kind as another's, the caller's is kept. Instances are
    /// sorted by service then instance, training jobs by job id, alerts by service, instance
    /// and kind.
    pub fn snapshot(&self, source: &str, now_ms: f64, own_alerts: Vec<Alert>) -> MetricsSnapshot {
        let mut alerts = self.alerts.clone();
        for alert in own_alerts {
            alerts.insert(alert_key(&alert), alert);
        }
        MetricsSnapshot {
            instances: self.instances.values().map(|h| h.report.clone()).collect(),
            training: self.training.values().cloned().collect(),
            alerts: alerts.into_values().collect(),
            source: source.to_string(),
            timestamp_ms: now_ms,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::fixtures::{alert, cancelled, completed, failed, progress, report};

    #[test]
    fn keeps_the_latest_report_sorted_by_service_then_instance() {
        let mut g = Gatherer::new();
        g.observe_report(report("trainer", "b", 100.0), 1.0);
        g.observe_report(report("evaluator", "z", 100.0), 1.0);
        g.observe_report(report("trainer", "a", 100.0), 1.0);
        g.observe_report(report("trainer", "b", 300.0), 2.0);
        let snap = g.snapshot("metrics-1", 9.0, vec![]);
        let names: Vec<(&str, &str)> = snap
            .instances
            .iter()
            .map(|r| (r.service.as_str(), r.instance.as_str()))
            .collect();
        assert_eq!(
            names,
            [("evaluator", "z"), ("trainer", "a"), ("trainer", "b")]
        );
        assert_eq!(snap.instances[2].rss_bytes, 300 * 1024 * 1024);
        assert_eq!(
            (snap.source.as_str(), snap.timestamp_ms),
            ("metrics-1", 9.0)
        );
        assert_eq!(
            g.report("trainer", "b").unwrap().rss_bytes,
            300 * 1024 * 1024
        );
    }

    #[test]
    fn follows_training_jobs_until_their_last_event() {
        let mut g = Gatherer::new();
        g.observe_event(&progress("j1", "w-1", 2, 40.0));
        g.observe_event(&progress("j2", "w-1", 1, 10.0));
        g.observe_event(&progress("j1", "w-1", 3, 60.0));
        let t = g.snapshot("m", 0.0, vec![]).training;
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].job_id.as_str(), t[0].epoch), ("j1", 3));
        assert_eq!(t[0].completion_percentage, 60.0);
        assert_eq!(t[0].model_id, "model-j1");
        assert_eq!(t[0].eta_s, Some(120.0));
        // A failure that will be retried is not the end.
        g.observe_event(&failed("j1", "w-1", true));
        assert_eq!(g.snapshot("m", 0.0, vec![]).training.len(), 2);
        g.observe_event(&failed("j1", "w-1", false));
        g.observe_event(&progress("j3", "w-1", 1, 1.0));
        g.observe_event(&cancelled("j3", "w-1"));
        let t = g.snapshot("m", 0.0, vec![]).training;
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].job_id, "j2");
        g.observe_event(&completed("j2", "w-1", 5.0));
        assert!(g.snapshot("m", 0.0, vec![]).training.is_empty());
    }

    #[test]
    fn expire_forgets_silent_instances_and_their_jobs() {
        let mut g = Gatherer::new();
        g.observe_report(report("trainer", "w-1", 100.0), 1_000.0);
        g.observe_report(report("trainer", "w-2", 100.0), 5_000.0);
        g.observe_event(&progress("j1", "w-1", 1, 1.0));
        g.observe_event(&progress("j2", "w-2", 1, 1.0));
        assert!(g.expire(6_000.0, 5_000.0).is_empty());
        assert_eq!(
            g.expire(6_001.0, 5_000.0),
            vec![("trainer".to_string(), "w-1".to_string())]
        );
        let snap = g.snapshot("m", 0.0, vec![]);
        assert_eq!(snap.instances.len(), 1);
        assert_eq!(snap.instances[0].instance, "w-2");
        assert_eq!(snap.training.len(), 1);
        assert_eq!(snap.training[0].job_id, "j2");
        assert!(g.report("trainer", "w-1").is_none());
    }

    #[test]
    fn others_alerts_are_kept_until_cleared_and_merged_with_own() {
        let mut g = Gatherer::new();
        g.observe_alert(&alert(
            AlertKind::CrashLoop,
            "trainer",
            "w-1",
            AlertState::Raised,
            "health-1",
        ));
        g.observe_alert(&alert(
            AlertKind::Memory,
            "trainer",
            "w-2",
            AlertState::Raised,
            "metrics-2",
        ));
        g.observe_alert(&alert(
            AlertKind::Cpu,
            "trainer",
            "w-2",
            AlertState::Raised,
            "metrics-2",
        ));
        g.observe_alert(&alert(
            AlertKind::Cpu,
            "trainer",
            "w-2",
            AlertState::Cleared,
            "metrics-2",
        ));
        assert_eq!(g.alerts().len(), 2);
        // Expiry of the instance does not drop others' alerts about it.
        g.observe_report(report("trainer", "w-1", 100.0), 0.0);
        g.expire(1e9, 1.0);
        let own = vec![
            alert(
                AlertKind::Memory,
                "trainer",
                "w-2",
                AlertState::Raised,
                "metrics-1",
            ),
            alert(
                AlertKind::Memory,
                "evaluator",
                "e-1",
                AlertState::Raised,
                "metrics-1",
            ),
        ];
        let alerts = g.snapshot("metrics-1", 0.0, own).alerts;
        let got: Vec<(&str, &str, &str, &str)> = alerts
            .iter()
            .map(|a| {
                (
                    a.service.as_str(),
                    a.instance.as_str(),
                    a.kind.as_str(),
                    a.source.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("evaluator", "e-1", "memory", "metrics-1"),
                ("trainer", "w-1", "crash_loop", "health-1"),
                ("trainer", "w-2", "memory", "metrics-1"),
            ]
        );
    }
}
