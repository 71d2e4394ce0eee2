//! Prometheus exposition (OpenMetrics text, as `prometheus-client` writes it).
//!
//! Per instance, labels `service`, `instance`, `host`, from its latest report:
//!
//! | series | what |
//! | --- | --- |
//! | `lexmesh_instance_cpu_percent` | CPU, percent of the cores the instance may use |
//! | `lexmesh_instance_cores` | the cores it may use |
//! | `lexmesh_instance_control_cpu_percent` | its control plane's CPU (all but compute threads), percent of one core |
//! | `lexmesh_instance_cpu_throttled_percent` | share of time throttled by a cgroup CPU quota |
//! | `lexmesh_instance_memory_rss_bytes` | resident memory |
//! | `lexmesh_instance_active_jobs` | jobs running |
//! | `lexmesh_instance_uptime_seconds` | since the instance started |
//! | `lexmesh_instance_last_activity_timestamp_seconds` | last job start, progress or end |
//! | `lexmesh_instance_tick_lateness_p95_seconds`, `..._max_seconds` | runtime responsiveness* |
//! | `lexmesh_instance_message_latency_p95_seconds` | publish to receipt* |
//! | `lexmesh_instance_error_rate` | failed / ended jobs in the window* |
//! | `lexmesh_instance_jobs_completed_total`, `_jobs_failed_total`, `_jobs_rejected_total` | counters |
//!
//! \* absent while the window had nothing to measure. The two counters are the worker's own
//! totals since it started, so a restarted instance starts again from 0: a counter reset, which
//! `rate()` handles. They are emitted as constant metrics from the latest report on every
//! scrape, and a forgotten instance's series disappear.
//!
//! From job events:
//!
//! | series | labels |
//! | --- | --- |
//! | `lexmesh_jobs_total` | `kind`, `outcome` (`completed`, `failed`, `retrying`, `cancelled`, `rejected`: the publisher's mistake) |
//! | `lexmesh_job_duration_seconds` (histogram, 0.1 s to 2 h) | `kind` |
//! | `lexmesh_event_latency_seconds` (histogram, 0.5 ms to 5 s; publish to receipt) | `event` |
//! | `lexmesh_training_epoch`, `_total_epochs`, `_loss`, `_accuracy`, `_completion_ratio` | `job_id`, `model_id`, `instance` |
//!
//! A training job's series go with its last event (completed, failed and not retried,
//! cancelled) or when its instance is forgotten.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use lexmesh_protocol::event::JobEvent;
use lexmesh_protocol::metrics::{TrainingProgress, WorkerMetrics};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::gather::training_progress;

/// Buckets of `lexmesh_job_duration_seconds`: 0.1 s to 2 h.
const JOB_DURATION_BUCKETS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
    7200.0,
];

/// Buckets of `lexmesh_event_latency_seconds`: 0.5 ms to 5 s.
const EVENT_LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

fn job_duration_histogram() -> Histogram {
    Histogram::new(JOB_DURATION_BUCKETS)
}

fn event_latency_histogram() -> Histogram {
    Histogram::new(EVENT_LATENCY_BUCKETS)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    service: String,
    instance: String,
    host: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrainingLabels {
    job_id: String,
    model_id: String,
    instance: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Keeps what the exposition shows and writes it.
#[derive(Debug)]
pub struct Exporter {
    instances: BTreeMap<(String, String), Arc<WorkerMetrics>>,
    training: BTreeMap<String, TrainingProgress>,
    jobs: Family<JobLabels, Counter>,
    job_duration: HistogramFamily<KindLabels>,
    event_latency: HistogramFamily<EventLabels>,
}

impl Default for Exporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Exporter {
    /// Nothing observed yet.
    pub fn new() -> Self {
        Self {
            instances: BTreeMap::new(),
            training: BTreeMap::new(),
            jobs: Family::default(),
            job_duration: Family::new_with_constructor(job_duration_histogram),
            event_latency: Family::new_with_constructor(event_latency_histogram),
        }
    }

    /// An instance's report: its series now show these figures.
    pub fn observe_report(&mut self, report: &WorkerMetrics) {
        self.instances.insert(
            (report.service.clone(), report.instance.clone()),
            Arc::new(report.clone()),
        );
    }

    /// A job event, received at `received_ms` (ms since the Unix epoch, this side's clock).
    pub fn observe_event(&mut self, event: &JobEvent, received_ms: f64) {
        let latency_s = ((received_ms - event.timestamp_ms()) / 1000.0).max(0.0);
        if latency_s.is_finite() {
            self.event_latency
                .get_or_create(&EventLabels {
                    event: event.kind().name().to_string(),
                })
                .observe(latency_s);
        }
        let (kind, outcome) = match event {
            // A search's own events: its trials are counted by their train jobs' events.
            JobEvent::Accepted(_)
            | JobEvent::TrialStarted(_)
            | JobEvent::TrialPromoted(_)
            | JobEvent::TrialStopped(_)
            | JobEvent::TrialCompleted(_)
            | JobEvent::TrialFailed(_)
            | JobEvent::Leaderboard(_) => return,
            JobEvent::Progress(p) => {
                self.training.insert(p.job_id.clone(), training_progress(p));
                return;
            }
            JobEvent::Completed(c) => {
                if c.duration_s.is_finite() {
                    self.job_duration
                        .get_or_create(&KindLabels {
                            kind: c.kind.name().to_string(),
                        })
                        .observe(c.duration_s.max(0.0));
                }
                (c.kind, "completed")
            }
            JobEvent::Failed(f) if f.retrying => (f.kind, "retrying"),
            JobEvent::Failed(f) if f.code.is_client_error() => (f.kind, "rejected"),
            JobEvent::Failed(f) => (f.kind, "failed"),
            JobEvent::Cancelled(c) => (c.kind, "cancelled"),
        };
        self.jobs
            .get_or_create(&JobLabels {
                kind: kind.name().to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        if event.is_final() {
            self.training.remove(event.job_id());
        }
    }

    /// The instance is gone: its series and its training jobs' series disappear.
    pub fn forget(&mut self, service: &str, instance: &str) {
        self.instances
            .remove(&(service.to_string(), instance.to_string()));
        self.training.retain(|_, t| t.instance != instance);
    }

    /// The exposition, in the OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        // A registry per scrape: the event metrics are shared handles, the per-instance and
        // training series are a copy of the latest figures, so nothing here needs a lock.
        let mut registry = Registry::default();
        registry.register(
            "lexmesh_jobs",
            "Jobs that ended, by kind and outcome (retrying: failed and delivered again)",
            self.jobs.clone(),
        );
        registry.register_with_unit(
            "lexmesh_job_duration",
            "Duration of completed job attempts",
            Unit::Seconds,
            self.job_duration.clone(),
        );
        registry.register_with_unit(
            "lexmesh_event_latency",
            "Job events: publish to receipt by the metrics service",
            Unit::Seconds,
            self.event_latency.clone(),
        );
        registry.register_collector(Box::new(LatestFigures {
            instances: self.instances.values().cloned().collect(),
            training: self.training.values().cloned().collect(),
        }));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// One per-instance gauge: name (without the unit), help, unit, and its value in a report
/// (`None`: no series for that report).
struct InstanceGauge {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    value: fn(&WorkerMetrics) -> Option<f64>,
}

fn with_samples(summary_count: u64, ms: f64) -> Option<f64> {
    (summary_count > 0).then_some(ms / 1000.0)
}

const INSTANCE_GAUGES: [InstanceGauge; 12] = [
    InstanceGauge {
        name: "lexmesh_instance_cpu_percent",
        help: "CPU used since the previous report, percent of the cores the instance may use",
        unit: None,
        value: |r| Some(r.cpu_percent),
    },
    InstanceGauge {
        name: "lexmesh_instance_cores",
        help: "Cores the instance may use",
        unit: None,
        value: |r| Some(r.cores),
    },
    InstanceGauge {
        name: "lexmesh_instance_control_cpu_percent",
        help: "CPU of the control plane (all but compute threads) since the previous report, percent of one core",
        unit: None,
        value: |r| Some(r.control_cpu_percent),
    },
    InstanceGauge {
        name: "lexmesh_instance_cpu_throttled_percent",
        help: "Share of the time since the previous report the instance was throttled by a CPU quota, percent",
        unit: None,
        value: |r| Some(r.cpu_throttled_percent),
    },
    InstanceGauge {
        name: "lexmesh_instance_memory_rss",
        help: "Resident memory",
        unit: Some(Unit::Bytes),
        value: |r| Some(r.rss_bytes as f64),
    },
    InstanceGauge {
        name: "lexmesh_instance_active_jobs",
        help: "Jobs running",
        unit: None,
        value: |r| Some(f64::from(r.active_jobs)),
    },
    InstanceGauge {
        name: "lexmesh_instance_uptime",
        help: "Time since the instance started",
        unit: Some(Unit::Seconds),
        value: |r| Some(r.uptime_s),
    },
    InstanceGauge {
        name: "lexmesh_instance_last_activity_timestamp",
        help: "Last time a job started, made progress or ended (Unix time)",
        unit: Some(Unit::Seconds),
        value: |r| Some(r.last_activity_ms / 1000.0),
    },
    InstanceGauge {
        name: "lexmesh_instance_tick_lateness_p95",
        help: "95th percentile of how late a periodic tick fired, over the report's window",
        unit: Some(Unit::Seconds),
        value: |r| with_samples(r.tick_lateness.count, r.tick_lateness.p95_ms),
    },
    InstanceGauge {
        name: "lexmesh_instance_tick_lateness_max",
        help: "Latest a periodic tick fired, over the report's window",
        unit: Some(Unit::Seconds),
        value: |r| with_samples(r.tick_lateness.count, r.tick_lateness.max_ms),
    },
    InstanceGauge {
        name: "lexmesh_instance_message_latency_p95",
        help: "95th percentile of message publish-to-receipt time, over the report's window",
        unit: Some(Unit::Seconds),
        value: |r| with_samples(r.message_latency.count, r.message_latency.p95_ms),
    },
    InstanceGauge {
        name: "lexmesh_instance_error_rate",
        help: "Failed jobs among the jobs that ended in the report's window",
        unit: None,
        value: |r| (r.window_completed + r.window_failed > 0).then_some(r.error_rate),
    },
];

/// One per-instance counter: the worker's own total since it started.
struct InstanceCounter {
    name: &'static str,
    help: &'static str,
    value: fn(&WorkerMetrics) -> u64,
}

const INSTANCE_COUNTERS: [InstanceCounter; 3] = [
    InstanceCounter {
        name: "lexmesh_instance_jobs_completed",
        help: "Jobs the instance completed since it started",
        value: |r| r.completed,
    },
    InstanceCounter {
        name: "lexmesh_instance_jobs_failed",
        help: "Jobs the instance failed since it started (the publisher's mistakes not included)",
        value: |r| r.failed,
    },
    InstanceCounter {
        name: "lexmesh_instance_jobs_rejected",
        help: "Messages and jobs the instance rejected since it started for the publisher's mistake (malformed, a wrong value, unusable data, a missing model)",
        value: |r| r.rejected,
    },
];

/// One training gauge.
struct TrainingGauge {
    name: &'static str,
    help: &'static str,
    value: fn(&TrainingProgress) -> f64,
}

const TRAINING_GAUGES: [TrainingGauge; 5] = [
    TrainingGauge {
        name: "lexmesh_training_epoch",
        help: "Current epoch of a running training job, from 1",
        value: |t| f64::from(t.epoch),
    },
    TrainingGauge {
        name: "lexmesh_training_total_epochs",
        help: "Epochs planned for a running training job",
        value: |t| f64::from(t.total_epochs),
    },
    TrainingGauge {
        name: "lexmesh_training_loss",
        help: "Mean training loss so far in the current epoch",
        value: |t| t.loss,
    },
    TrainingGauge {
        name: "lexmesh_training_accuracy",
        help: "Training accuracy so far in the current epoch",
        value: |t| t.accuracy,
    },
    TrainingGauge {
        name: "lexmesh_training_completion_ratio",
        help: "Part of the planned training done, 0 to 1",
        value: |t| (t.completion_percentage / 100.0).clamp(0.0, 1.0),
    },
];

/// The per-instance and training series of one scrape, as constant metrics.
#[derive(Debug)]
struct LatestFigures {
    instances: Vec<Arc<WorkerMetrics>>,
    training: Vec<TrainingProgress>,
}

impl Collector for LatestFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let labelled: Vec<(InstanceLabels, &WorkerMetrics)> = self
            .instances
            .iter()
            .map(|r| {
                let labels = InstanceLabels {
                    service: r.service.clone(),
                    instance: r.instance.clone(),
                    host: r.host.clone(),
                };
                (labels, r.as_ref())
            })
            .collect();
        for gauge in &INSTANCE_GAUGES {
            let mut family = encoder.encode_descriptor(
                gauge.name,
                gauge.help,
                gauge.unit.as_ref(),
                MetricType::Gauge,
            )?;
            for (labels, report) in &labelled {
                if let Some(value) = (gauge.value)(report) {
                    ConstGauge::new(value).encode(family.encode_family(labels)?)?;
                }
            }
        }
        for counter in &INSTANCE_COUNTERS {
            let mut family =
                encoder.encode_descriptor(counter.name, counter.help, None, MetricType::Counter)?;
            for (labels, report) in &labelled {
                ConstCounter::new((counter.value)(report)).encode(family.encode_family(labels)?)?;
            }
        }

        let labelled: Vec<(TrainingLabels, &TrainingProgress)> = self
            .training
            .iter()
            .map(|t| {
                let labels = TrainingLabels {
                    job_id: t.job_id.clone(),
                    model_id: t.model_id.clone(),
                    instance: t.instance.clone(),
                };
                (labels, t)
            })
            .collect();
        for gauge in &TRAINING_GAUGES {
            let mut family =
                encoder.encode_descriptor(gauge.name, gauge.help, None, MetricType::Gauge)?;
            for (labels, progress) in &labelled {
                ConstGauge::new((gauge.value)(progress)).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::fixtures::{accepted, cancelled, completed, failed, progress, report};

    /// The sample lines (not comments) of the exposition that start with `prefix`.
    fn lines(exporter: &Exporter, prefix: &str) -> Vec<String> {
        exporter
            .encode()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn instance_series_follow_the_latest_report() {
        let mut e = Exporter::new();
        let mut r = report("trainer", "w-1", 1.0);
        r.completed = 3;
        e.observe_report(&r);
        assert_eq!(
            lines(&e, "lexmesh_instance_jobs_completed"),
            [
                r#"lexmesh_instance_jobs_completed_total{service="trainer",instance="w-1",host="host-1"} 3"#
            ]
        );
        r.completed = 5;
        r.rss_bytes = 2048;
        e.observe_report(&r);
        assert_eq!(
            lines(&e, "lexmesh_instance_jobs_completed"),
            [
                r#"lexmesh_instance_jobs_completed_total{service="trainer",instance="w-1",host="host-1"} 5"#
            ]
        );
        assert_eq!(
            lines(&e, "lexmesh_instance_memory_rss_bytes"),
            [
                r#"lexmesh_instance_memory_rss_bytes{service="trainer",instance="w-1",host="host-1"} 2048.0"#
            ]
        );
    }

    #[test]
    fn window_figures_are_absent_without_samples() {
        let mut e = Exporter::new();
        e.observe_report(&report("trainer", "w-1", 1.0));
        assert!(lines(&e, "lexmesh_instance_tick_lateness").is_empty());
        assert!(lines(&e, "lexmesh_instance_message_latency").is_empty());
        assert!(lines(&e, "lexmesh_instance_error_rate").is_empty());
        let mut r = report("trainer", "w-1", 1.0);
        r.tick_lateness.count = 4;
        r.tick_lateness.p95_ms = 12.0;
        r.tick_lateness.max_ms = 30.0;
        r.window_completed = 3;
        r.window_failed = 1;
        r.error_rate = 0.25;
        e.observe_report(&r);
        assert_eq!(lines(&e, "lexmesh_instance_tick_lateness").len(), 2);
        assert_eq!(
            lines(&e, "lexmesh_instance_tick_lateness_max_seconds"),
            [
                r#"lexmesh_instance_tick_lateness_max_seconds{service="trainer",instance="w-1",host="host-1"} 0.03"#
            ]
        );
        assert!(lines(&e, "lexmesh_instance_error_rate")[0].ends_with(" 0.25"));
    }

    #[test]
    fn forget_removes_the_instance_and_its_training_jobs() {
        let mut e = Exporter::new();
        e.observe_report(&report("trainer", "w-1", 1.0));
        e.observe_report(&report("trainer", "w-2", 1.0));
        e.observe_event(&progress("j1", "w-1", 1, 10.0), 0.0);
        e.observe_event(&progress("j2", "w-2", 1, 10.0), 0.0);
        e.forget("trainer", "w-1");
        let text = e.encode().unwrap();
        assert!(!text.contains(r#"instance="w-1""#), "{text}");
        assert!(text.contains(r#"instance="w-2""#), "{text}");
        assert_eq!(lines(&e, "lexmesh_training_epoch").len(), 1);
    }

    #[test]
    fn job_outcomes_are_counted() {
        use lexmesh_protocol::ErrorCode;
        let mut e = Exporter::new();
        e.observe_event(&accepted("j1", "w-1"), 0.0);
        e.observe_event(&completed("j1", "w-1", 12.0), 0.0);
        e.observe_event(&failed("j2", "w-1", true), 0.0);
        e.observe_event(&failed("j2", "w-1", false), 0.0);
        e.observe_event(&failed("j3", "w-1", false), 0.0);
        e.observe_event(&cancelled("j4", "w-1"), 0.0);
        let mut rejected = failed("j5", "w-1", false);
        if let JobEvent::Failed(f) = &mut rejected {
            f.code = ErrorCode::InvalidDataset;
        }
        e.observe_event(&rejected, 0.0);
        let mut got = lines(&e, "lexmesh_jobs_total");
        got.sort();
        assert_eq!(
            got,
            [
                r#"lexmesh_jobs_total{kind="train",outcome="cancelled"} 1"#,
                r#"lexmesh_jobs_total{kind="train",outcome="completed"} 1"#,
                r#"lexmesh_jobs_total{kind="train",outcome="failed"} 2"#,
                r#"lexmesh_jobs_total{kind="train",outcome="rejected"} 1"#,
                r#"lexmesh_jobs_total{kind="train",outcome="retrying"} 1"#,
            ]
        );
        assert!(
            lines(&e, "lexmesh_job_duration_seconds_sum")
                .iter()
                .any(|l| l == r#"lexmesh_job_duration_seconds_sum{kind="train"} 12.0"#)
        );
    }

    #[test]
    fn training_series_go_with_the_jobs_last_event() {
        let mut e = Exporter::new();
        e.observe_event(&progress("j1", "w-1", 2, 40.0), 0.0);
        assert_eq!(
            lines(&e, "lexmesh_training_completion_ratio"),
            [
                r#"lexmesh_training_completion_ratio{job_id="j1",model_id="model-j1",instance="w-1"} 0.4"#
            ]
        );
        e.observe_event(&failed("j1", "w-1", true), 0.0);
        assert_eq!(lines(&e, "lexmesh_training_epoch").len(), 1);
        // The retry runs elsewhere: the series follow it to the new instance.
        e.observe_event(&progress("j1", "w-2", 1, 5.0), 0.0);
        assert_eq!(
            lines(&e, "lexmesh_training_epoch"),
            [r#"lexmesh_training_epoch{job_id="j1",model_id="model-j1",instance="w-2"} 1.0"#]
        );
        e.observe_event(&completed("j1", "w-2", 60.0), 0.0);
        assert!(lines(&e, "lexmesh_training_").is_empty());
    }

    #[test]
    fn event_latency_is_receipt_minus_publish_clamped_at_zero() {
        let mut e = Exporter::new();
        // Published at 1000 ms (fixtures), received 3 ms later; one from a clock ahead of ours.
        e.observe_event(&accepted("j1", "w-1"), 1_003.0);
        e.observe_event(&accepted("j2", "w-1"), 900.0);
        let sum = lines(&e, r#"lexmesh_event_latency_seconds_sum{event="accepted"}"#);
        assert_eq!(
            sum,
            [r#"lexmesh_event_latency_seconds_sum{event="accepted"} 0.003"#]
        );
        let first = lines(
            &e,
            r#"lexmesh_event_latency_seconds_bucket{le="0.0005",event="accepted"}"#,
        );
        assert_eq!(first.len(), 1);
        assert!(first[0].ends_with(" 1"), "{first:?}");
    }

    #[test]
    fn encode_ends_with_eof() {
        let e = Exporter::new();
        let text = e.encode().unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE lexmesh_instance_jobs_failed counter"));
        assert!(text.contains("# UNIT lexmesh_instance_uptime_seconds seconds"));
    }
}
