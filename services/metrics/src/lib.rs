//! What the lexmesh metrics service makes of the reports, job events and alerts it hears,
//! without a broker in sight.
//!
//! - [`gather`]: the latest report of every instance, the training jobs running and other
//!   services' alerts; the snapshot that answers `lexmesh.api.metrics.snapshot`.
//! - [`alerts`]: threshold alerts (memory, CPU, response time, error rate, message latency)
//!   with hysteresis, per-service thresholds, and their configuration.
//! - [`exporter`]: the Prometheus exposition (OpenMetrics text).
//! - [`MetricsState`] (here) ties the three together behind one call per incoming message.
//!
//! The metrics service in the `lexmesh-mesh` crate (`services/mesh/src/metrics.rs`) wires it to NATS and
//! HTTP: it calls [`MetricsState::on_report`], [`MetricsState::on_event`] and
//! [`MetricsState::on_alert`] as messages arrive, publishes the alerts they return,
//! calls [`MetricsState::expire`] now and then, and serves [`MetricsState::snapshot`] and
//! [`MetricsState::encode`].
//!
//! ```
//! use lexmesh_metrics::MetricsState;
//! use lexmesh_metrics::alerts::AlertConfig;
//!
//! let config = AlertConfig::default();
//! config.validate()?;
//! let mut state = MetricsState::new(config, "metrics-1".to_string());
//! // ... state.on_report(report) for every `lexmesh.metrics.>` message ...
//! let snapshot = state.snapshot(lexmesh_protocol::time::now_ms());
//! assert!(snapshot.instances.is_empty());
//! assert!(state.encode()?.ends_with("# EOF\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod alerts;
pub mod exporter;
pub mod gather;

use std::fmt;

use lexmesh_protocol::alert::Alert;
use lexmesh_protocol::event::JobEvent;
use lexmesh_protocol::metrics::{MetricsSnapshot, WorkerMetrics};
use lexmesh_protocol::time::now_ms;

use crate::alerts::{AlertConfig, AlertEngine};
use crate::exporter::Exporter;
use crate::gather::Gatherer;

/// Everything the metrics service keeps: one per service instance, behind a `Mutex`.
#[derive(Debug)]
pub struct MetricsState {
    source: String,
    gatherer: Gatherer,
    alerts: AlertEngine,
    exporter: Exporter,
}

impl MetricsState {
    /// Nothing heard yet. `source` is this metrics instance's id: the `source` of the alerts
    /// it raises. The configuration should have passed [`AlertConfig::validate`].
    pub fn new(config: AlertConfig, source: String) -> Self {
        Self {
            gatherer: Gatherer::new(),
            alerts: AlertEngine::new(config, source.clone()),
            exporter: Exporter::new(),
            source,
        }
    }

    /// This instance's id.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// An instance's report (`lexmesh.metrics.<service>.<instance>`), received now; returns the
    /// alerts it raised or cleared, to publish on `lexmesh.alerts.<kind>`.
    pub fn on_report(&mut self, report: WorkerMetrics) -> Vec<Alert> {
        let transitions = self.alerts.observe(&report);
        self.exporter.observe_report(&report);
        self.gatherer.observe_report(report, now_ms());
        transitions
    }

    /// A job event, received at `received_ms` (ms since the Unix epoch).
    pub fn on_event(&mut self, event: &JobEvent, received_ms: f64) {
        self.gatherer.observe_event(event);
        self.exporter.observe_event(event, received_ms);
    }

    /// An alert heard on `lexmesh.alerts.>`; this instance's own (same `source`) are ignored,
    /// its engine knows them already.
    pub fn on_alert(&mut self, alert: &Alert) {
        if alert.source != self.source {
            self.gatherer.observe_alert(alert);
        }
    }

    /// Forgets the instances that sent no report for more than `forget_after_ms`; returns the
    /// alerts this cleared, to publish.
    pub fn expire(&mut self, now_ms: f64, forget_after_ms: f64) -> Vec<Alert> {
        let mut cleared = Vec::new();
        for (service, instance) in self.gatherer.expire(now_ms, forget_after_ms) {
            self.exporter.forget(&service, &instance);
            cleared.extend(self.alerts.forget(&service, &instance, now_ms));
        }
        cleared
    }

    /// Whether `instance` is known: it reported and was not forgotten by [`Self::expire`].
    pub fn knows(&self, instance: &str) -> bool {
        self.gatherer.knows(instance)
    }

    /// The alerts this instance raised and has not cleared.
    pub fn own_alerts(&self) -> Vec<Alert> {
        self.alerts.active()
    }

    /// Everything known now: the reply of `lexmesh.api.metrics.snapshot`. Its alerts are this
    /// instance's and those heard from others.
    pub fn snapshot(&self, now_ms: f64) -> MetricsSnapshot {
        self.gatherer
            .snapshot(&self.source, now_ms, self.alerts.active())
    }

    /// The Prometheus exposition, in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        self.exporter.encode()
    }
}

/// Reports and events for the unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use lexmesh_protocol::alert::{Alert, AlertKind, AlertState};
    use lexmesh_protocol::event::{
        Accepted, Cancelled, Completed, Failed, JobEvent, JobResult, Progress, ProgressPhase,
        TrainSummary,
    };
    use lexmesh_protocol::job::JobKind;
    use lexmesh_protocol::metrics::{LatencySummary, WorkerMetrics};
    use lexmesh_protocol::{ErrorCode, event::EvaluationSummary};

    /// A quiet report with `rss_mib` MiB of resident memory, made at 1000 ms.
    pub fn report(service: &str, instance: &str, rss_mib: f64) -> WorkerMetrics {
        WorkerMetrics {
            service: service.into(),
            instance: instance.into(),
            version: "0.1.0".into(),
            pid: 42,
            host: "host-1".into(),
            uptime_s: 10.0,
            cpu_percent: 5.0,
            cores: 2.0,
            control_cpu_percent: 1.0,
            cpu_throttled_percent: 0.0,
            rss_bytes: (rss_mib * 1024.0 * 1024.0) as u64,
            active_jobs: 0,
            completed: 0,
            failed: 0,
            rejected: 0,
            running: vec![],
            last_activity_ms: 0.0,
            tick_lateness: LatencySummary::default(),
            message_latency: LatencySummary::default(),
            window_completed: 0,
            window_failed: 0,
            error_rate: 0.0,
            window_s: 60.0,
            interval_s: 5.0,
            timestamp_ms: 1_000.0,
        }
    }

    /// A train job accepted, published at 1000 ms.
    pub fn accepted(job: &str, instance: &str) -> JobEvent {
        JobEvent::Accepted(Accepted {
            job_id: job.into(),
            kind: JobKind::Train,
            attempt: 1,
            instance: instance.into(),
            timestamp_ms: 1_000.0,
        })
    }

    /// Training progress of model `model-<job>`, with 120 s to go.
    pub fn progress(job: &str, instance: &str, epoch: u32, percent: f64) -> JobEvent {
        JobEvent::Progress(Progress {
            job_id: job.into(),
            model_id: format!("model-{job}"),
            session_id: format!("session-{job}"),
            attempt: 1,
            instance: instance.into(),
            phase: ProgressPhase::Batch,
            epoch,
            total_epochs: 5,
            batch: 3,
            total_batches: 10,
            loss: 0.5,
            accuracy: 0.8,
            validation_loss: None,
            validation_accuracy: None,
            validation_macro_f1: None,
            completion_percentage: percent,
            estimated_time_remaining_s: 120.0,
            examples_per_sec: 100.0,
            resumed_from_epoch: None,
            resumed_from_batch: None,
            timestamp_ms: 1_000.0,
        })
    }

    /// A train job completed after `duration_s`.
    pub fn completed(job: &str, instance: &str, duration_s: f64) -> JobEvent {
        JobEvent::Completed(Completed {
            job_id: job.into(),
            kind: JobKind::Train,
            attempt: 1,
            instance: instance.into(),
            duration_s,
            result: JobResult::Train(TrainSummary {
                model_id: format!("model-{job}"),
                dataset_id: "d".into(),
                best_epoch: 1,
                epochs_completed: 1,
                stop_reason: "completed".into(),
                validation: EvaluationSummary {
                    labels: vec![],
                    count: 0,
                    accuracy: 0.0,
                    macro_f1: 0.0,
                    weighted_f1: 0.0,
                    per_class: vec![],
                    confusion_matrix: vec![],
                },
            }),
            timestamp_ms: 1_000.0,
        })
    }

    /// A train job failed, to be retried or not.
    pub fn failed(job: &str, instance: &str, retrying: bool) -> JobEvent {
        JobEvent::Failed(Failed {
            job_id: job.into(),
            kind: JobKind::Train,
            attempt: 1,
            instance: instance.into(),
            code: ErrorCode::Internal,
            reason: "boom".into(),
            retrying,
            timestamp_ms: 1_000.0,
        })
    }

    /// A train job cancelled.
    pub fn cancelled(job: &str, instance: &str) -> JobEvent {
        JobEvent::Cancelled(Cancelled {
            job_id: job.into(),
            kind: JobKind::Train,
            attempt: 1,
            instance: instance.into(),
            epochs_completed: 0,
            timestamp_ms: 1_000.0,
        })
    }

    /// An alert.
    pub fn alert(
        kind: AlertKind,
        service: &str,
        instance: &str,
        state: AlertState,
        source: &str,
    ) -> Alert {
        Alert {
            kind,
            state,
            service: service.into(),
            instance: instance.into(),
            value: 1.0,
            threshold: 0.5,
            message: "m".into(),
            source: source.into(),
            timestamp_ms: 1_000.0,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::fixtures::{alert, progress, report};
    use lexmesh_protocol::alert::{AlertKind, AlertState};

    fn state() -> MetricsState {
        MetricsState::new(AlertConfig::default(), "metrics-1".into())
    }

    #[test]
    fn is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<MetricsState>();
    }

    #[test]
    fn a_report_reaches_alerts_snapshot_and_exposition() {
        let mut s = state();
        assert!(s.on_report(report("trainer", "w-1", 600.0)).is_empty());
        let raised = s.on_report(report("trainer", "w-1", 600.0));
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].source, "metrics-1");
        let snap = s.snapshot(5.0);
        assert_eq!(snap.instances.len(), 1);
        assert_eq!(snap.alerts, raised);
        assert_eq!(s.own_alerts(), raised);
        assert!(s.encode().unwrap().contains(r#"instance="w-1""#));
    }

    #[test]
    fn own_alerts_heard_back_are_ignored_others_are_kept() {
        let mut s = state();
        s.on_alert(&alert(
            AlertKind::Memory,
            "trainer",
            "w-9",
            AlertState::Raised,
            "metrics-1",
        ));
        assert!(s.snapshot(0.0).alerts.is_empty());
        s.on_alert(&alert(
            AlertKind::CrashLoop,
            "trainer",
            "w-9",
            AlertState::Raised,
            "health-1",
        ));
        assert_eq!(s.snapshot(0.0).alerts.len(), 1);
        s.on_alert(&alert(
            AlertKind::CrashLoop,
            "trainer",
            "w-9",
            AlertState::Cleared,
            "health-1",
        ));
        assert!(s.snapshot(0.0).alerts.is_empty());
    }

    #[test]
    fn expire_forgets_everywhere_and_clears_alerts() {
        let mut s = state();
        s.on_report(report("trainer", "w-1", 600.0));
        s.on_report(report("trainer", "w-1", 600.0));
        s.on_event(&progress("j1", "w-1", 1, 10.0), 1_000.0);
        let now = now_ms();
        assert!(s.expire(now, 60_000.0).is_empty());
        assert!(s.knows("w-1") && !s.knows("w-2"));
        let cleared = s.expire(now + 120_000.0, 60_000.0);
        assert!(!s.knows("w-1"));
        assert_eq!(cleared.len(), 1);
        assert_eq!(cleared[0].state, AlertState::Cleared);
        assert_eq!(cleared[0].instance, "w-1");
        let snap = s.snapshot(now);
        assert!(snap.instances.is_empty() && snap.training.is_empty() && snap.alerts.is_empty());
        let text = s.encode().unwrap();
        assert!(!text.contains("w-1"), "{text}");
    }
}
