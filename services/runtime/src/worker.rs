//! What one service instance knows about itself: identity, the jobs it runs (with their
//! cancel tokens and last progress), counters, memory. The status endpoint, heartbeats and the
//! cancel listener all read it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use lexmesh_protocol::heartbeat::Heartbeat;
use lexmesh_protocol::metrics::WorkerMetrics;
use lexmesh_protocol::names::Service;
use lexmesh_protocol::status::{RunningJob, WorkerStatus};
use lexmesh_protocol::time::now_ms;
use lexmesh_protocol::{JobKind, PROTOCOL_VERSION};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::mesh::Mesh;
use crate::metrics::Measurements;

/// lexmesh's version, as reported by every service.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Entry {
    job: RunningJob,
    cancel: CancellationToken,
}

/// One service instance.
pub struct Worker {
    /// Which service.
    pub service: Service,
    /// Instance id (a valid subject token).
    pub instance: String,
    /// The configuration it runs with.
    pub config: Config,
    /// JetStream resources.
    pub mesh: Mesh,
    /// Cancelled when the instance is asked to stop (SIGTERM/SIGINT).
    pub shutdown: CancellationToken,
    started: Instant,
    service_id: OnceLock<String>,
    host: String,
    running: Mutex<HashMap<String, Entry>>,
    /// Told whenever a job starts or ends, so a heartbeat lists it at once: the health
    /// service can hand back the delivery of a job that started a moment before its worker
    /// died, instead of leaving it to `ack_wait`.
    running_changed: tokio::sync::Notify,
    completed: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    measurements: Mutex<Measurements>,
}

impl Worker {
    /// A worker with nothing running.
    pub fn new(service: Service, instance: String, config: Config, mesh: Mesh) -> Self {
        Self {
            service,
            instance,
            mesh,
            shutdown: CancellationToken::new(),
            started: Instant::now(),
            service_id: OnceLock::new(),
            host: host_name(),
            running: Mutex::new(HashMap::new()),
            running_changed: tokio::sync::Notify::new(),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            measurements: Mutex::new(Measurements::new(
                config.service.metrics_window,
                now_ms(),
                config.cores(),
            )),
            config,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn measure(&self) -> std::sync::MutexGuard<'_, Measurements> {
        self.measurements.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note_activity(&self) {
        self.measure().last_activity_ms = now_ms();
    }

    /// Notes how late the runtime's periodic tick fired.
    pub fn record_tick_lateness(&self, late: std::time::Duration) {
        self.measure()
            .ticks
            .push(Instant::now(), late.as_secs_f64() * 1000.0);
    }

    /// Notes a received message published at `published_ms` (ms since the Unix epoch, by the
    /// publisher's or the server's clock).
    pub fn record_message_latency(&self, published_ms: f64) {
        self.measure()
            .latency
            .push(Instant::now(), now_ms() - published_ms);
    }

    /// Notes the id the NATS service API gave this instance (set once, at start-up).
    pub fn set_service_id(&self, id: String) {
        let _ = self.service_id.set(id);
    }

    /// Registers a job that starts now; the token is cancelled by a cancel request.
    /// `ack_subject` is the reply subject of its delivery (see [`RunningJob::ack_subject`]).
    pub fn register(
        &self,
        job_id: &str,
        kind: JobKind,
        attempt: u32,
        ack_subject: Option<String>,
    ) -> CancellationToken {
        let cancel = CancellationToken::new();
        let now = now_ms();
        self.note_activity();
        self.lock().insert(
            job_id.to_string(),
            Entry {
                job: RunningJob {
                    job_id: job_id.to_string(),
                    kind,
                    attempt,
                    started_ms: now,
                    last_progress_ms: now,
                    epoch: None,
                    total_epochs: None,
                    completion_percentage: None,
                    ack_subject,
                },
                cancel: cancel.clone(),
            },
        );
        self.running_changed.notify_one();
        cancel
    }

    /// Resolves when a job started or ended since the last call (a start or end before the
    /// first call counts too).
    pub async fn running_changed(&self) {
        self.running_changed.notified().await;
    }

    /// Notes progress of a running job.
    pub fn record_progress(&self, job_id: &str, epoch: u32, total_epochs: u32, percent: f64) {
        self.note_activity();
        if let Some(e) = self.lock().get_mut(job_id) {
            e.job.last_progress_ms = now_ms();
            e.job.epoch = Some(epoch);
            e.job.total_epochs = Some(total_epochs);
            e.job.completion_percentage = Some(percent);
        }
    }

    /// Notes that a running job's computation has ended: what is left (storing its last
    /// checkpoint, record and events) waits on the broker, which has its own patience, so the
    /// job no longer reports an epoch and cannot be judged stalled.
    pub fn end_progress(&self, job_id: &str) {
        self.note_activity();
        if let Some(e) = self.lock().get_mut(job_id) {
            e.job.last_progress_ms = now_ms();
            e.job.epoch = None;
        }
    }

    /// Counts a finished job, then removes it: whoever sees it gone from [`Self::running`]
    /// also sees it counted.
    pub fn finish(&self, job_id: &str, succeeded: bool) {
        self.count(succeeded);
        self.forget(job_id);
    }

    fn count(&self, succeeded: bool) {
        let counter = if succeeded {
            &self.completed
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut m = self.measure();
        m.outcomes.push(Instant::now(), succeeded);
        m.last_activity_ms = now_ms();
    }

    /// Removes a job whose attempt was superseded, without counting it.
    pub fn forget(&self, job_id: &str) {
        self.lock().remove(job_id);
        self.running_changed.notify_one();
    }

    /// Removes a job rejected for the publisher's mistake (its data, a missing model) and
    /// counts it as rejected: not a failure of this service.
    pub fn finish_rejected(&self, job_id: &str) {
        self.count_rejected();
        self.forget(job_id);
    }

    /// Counts a message rejected before it became a job (malformed, a wrong value): the
    /// publisher's mistake, kept out of the error rate.
    pub fn count_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.measure().last_activity_ms = now_ms();
    }

    /// Cancels a job running here; false when it does not run here.
    pub fn cancel_local(&self, job_id: &str) -> bool {
        match self.lock().get(job_id) {
            Some(e) => {
                e.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Jobs running now.
    pub fn running(&self) -> Vec<RunningJob> {
        let mut jobs: Vec<RunningJob> = self.lock().values().map(|e| e.job.clone()).collect();
        jobs.sort_by(|a, b| a.started_ms.total_cmp(&b.started_ms));
        jobs
    }

    /// The reply of the status endpoint.
    pub fn status(&self) -> WorkerStatus {
        WorkerStatus {
            service: self.service.name().into(),
            instance: self.instance.clone(),
            version: VERSION.into(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            concurrency: self.config.jobs.concurrency,
            running: self.running(),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            rss_bytes: rss_bytes(),
            timestamp_ms: now_ms(),
        }
    }

    /// The metrics report as of now (published every `service.metrics_interval`, and the
    /// `$SRV.STATS` data).
    pub fn metrics(&self) -> WorkerMetrics {
        let running = self.running();
        let now = Instant::now();
        let mut m = self.measure();
        let (window_completed, window_failed, error_rate) = m.outcomes.counts(now);
        let cpu = m.cpu.read(now);
        WorkerMetrics {
            service: self.service.name().into(),
            instance: self.instance.clone(),
            version: VERSION.into(),
            pid: std::process::id(),
            host: self.host.clone(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            cpu_percent: cpu.percent_of_cores,
            cores: m.cpu.cores(),
            control_cpu_percent: cpu.control_percent,
            cpu_throttled_percent: cpu.throttled_percent,
            rss_bytes: rss_bytes(),
            active_jobs: u32::try_from(running.len()).unwrap_or(u32::MAX),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            running,
            last_activity_ms: m.last_activity_ms,
            tick_lateness: m.ticks.summary(now),
            message_latency: m.latency.summary(now),
            window_completed,
            window_failed,
            error_rate,
            window_s: self.config.service.metrics_window.as_secs_f64(),
            interval_s: self.config.service.metrics_interval.as_secs_f64(),
            timestamp_ms: now_ms(),
        }
    }

    /// A heartbeat as of now; `stopping` on the last one of an orderly shutdown.
    pub fn heartbeat(&self, stopping: bool) -> Heartbeat {
        Heartbeat {
            service: self.service.name().into(),
            instance: self.instance.clone(),
            protocol_version: PROTOCOL_VERSION,
            pid: std::process::id(),
            host: self.host.clone(),
            namespace: std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|n| !n.is_empty()),
            service_id: self.service_id.get().cloned().unwrap_or_default(),
            stopping,
            running: self.running(),
            rss_bytes: rss_bytes(),
            memory_budget_bytes: self.config.service.memory_budget_mb * 1024 * 1024,
            interval_s: self.config.service.heartbeat_interval.as_secs_f64(),
            timestamp_ms: now_ms(),
        }
    }
}

/// Resident memory of this process in bytes (0 where `/proc` is unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// This machine's host name (the pod name on Kubernetes).
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A default instance id: `<service>-<host>-<pid>`, reduced to subject-safe characters.
pub fn default_instance_id(service: Service) -> String {
    let raw = format!("{}-{}-{}", service.name(), host_name(), std::process::id());
    let mut id: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    id.truncate(64);
    id
}
