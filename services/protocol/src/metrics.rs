//! What every instance measures about itself, published on
//! `lexmesh.metrics.<service>.<instance>` at a fixed interval (and returned as its `$SRV.STATS`
//! data), and what the metrics service makes of all of them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::status::RunningJob;

/// Durations measured over the report's window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencySummary {
    /// Samples in the window.
    pub count: u64,
    /// Their mean, in milliseconds (0 without samples).
    pub mean_ms: f64,
    /// Their 95th percentile, in milliseconds (0 without samples).
    pub p95_ms: f64,
    /// The largest, in milliseconds (0 without samples).
    pub max_ms: f64,
}

/// One instance's report: `lexmesh.metrics.<service>.<instance>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerMetrics {
    /// Service name (`trainer`, ...).
    pub service: String,
    /// Instance id.
    pub instance: String,
    /// lexmesh version.
    pub version: String,
    /// Operating-system process id.
    pub pid: u32,
    /// Host name (the pod name on Kubernetes).
    pub host: String,
    /// Seconds since the instance started.
    pub uptime_s: f64,
    /// CPU used by the process since the previous report, in percent of the cores it may use
    /// (`cores`): 100 = all of them busy, as a trainer that trains on its whole share is.
    pub cpu_percent: f64,
    /// Cores the instance may use (its `service.cores`, or its CPU affinity and cgroup quota).
    pub cores: f64,
    /// CPU of its control plane since the previous report (every thread but the compute
    /// threads that train or write checkpoints: the async runtime, NATS I/O, reports), in
    /// percent of one core. High means a runaway or stuck control plane; the `cpu` alert
    /// watches it.
    pub control_cpu_percent: f64,
    /// Share of the time since the previous report its cgroup was throttled by a CPU quota,
    /// percent (0 without a quota).
    pub cpu_throttled_percent: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// Jobs running now.
    pub active_jobs: u32,
    /// Jobs completed since start.
    pub completed: u64,
    /// Jobs failed since start through the service's fault or beyond its reach (training
    /// failed, retries or workers ran out).
    pub failed: u64,
    /// Messages and jobs rejected since start for the publisher's mistake (malformed, a wrong
    /// value, data that cannot be trained on, a missing model or dataset): not counted in
    /// `failed` nor in the error rate.
    #[serde(default)]
    pub rejected: u64,
    /// The jobs running now, with their progress.
    pub running: Vec<RunningJob>,
    /// Last time a job started, made progress or ended (ms since the Unix epoch); the start time
    /// when none did yet.
    pub last_activity_ms: f64,
    /// Async-runtime responsiveness: how late a periodic tick fired, over the window (the old
    /// system's main-thread response time).
    pub tick_lateness: LatencySummary,
    /// Message latency over the window: publish time to receipt of the job messages and
    /// control requests this instance received (queueing time of a job that waited for a
    /// free worker not included).
    pub message_latency: LatencySummary,
    /// Jobs completed within the window.
    pub window_completed: u64,
    /// Jobs failed within the window.
    pub window_failed: u64,
    /// `window_failed / (window_completed + window_failed)`, 0 when neither.
    pub error_rate: f64,
    /// Length of the window, seconds.
    pub window_s: f64,
    /// Seconds between two reports.
    pub interval_s: f64,
    /// When the report was made (ms since the Unix epoch).
    pub timestamp_ms: f64,
}

impl crate::decode::Message for WorkerMetrics {}

/// The latest training figures of a running job, from its progress events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingProgress {
    /// The job.
    pub job_id: String,
    /// The model it trains.
    pub model_id: String,
    /// The instance training it.
    pub instance: String,
    /// Delivery attempt.
    pub attempt: u32,
    /// Current epoch, from 1.
    pub epoch: u32,
    /// Epochs planned.
    pub total_epochs: u32,
    /// Percent done.
    pub completion_percentage: f64,
    /// Mean training loss so far in the epoch.
    pub loss: f64,
    /// Training accuracy so far in the epoch.
    pub accuracy: f64,
    /// Seconds left, estimated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
    /// When the last progress event was published (ms since the Unix epoch).
    pub updated_ms: f64,
}

/// The reply of `lexmesh.api.metrics.snapshot`: everything the metrics service knows now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsSnapshot {
    /// The latest report of every instance heard from recently, by service then instance.
    pub instances: Vec<WorkerMetrics>,
    /// Training jobs running now.
    pub training: Vec<TrainingProgress>,
    /// Alerts raised and not cleared (by the metrics service and by others).
    pub alerts: Vec<Alert>,
    /// The metrics instance that answered.
    pub source: String,
    /// When (ms since the Unix epoch).
    pub timestamp_ms: f64,
}

impl crate::decode::Message for MetricsSnapshot {}
