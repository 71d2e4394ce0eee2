//! Service configuration: defaults < `lexmesh.toml` < `LEXMESH_<SECTION>__<KEY>` environment
//! variables (plus the conventional `NATS_URL`). An unknown key anywhere is an error, so a typo
//! never silently falls back to a default.
//!
//! Only variables with a double underscore are configuration (`LEXMESH_JOBS__CONCURRENCY=2`);
//! single-word ones such as `LEXMESH_NATS_SERVER` or `LEXMESH_CACHE` belong to scripts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole configuration of a service process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach NATS.
    pub nats: NatsConfig,
    /// How jobs are taken and retried.
    pub jobs: JobsConfig,
    /// This instance.
    pub service: ServiceConfig,
    /// The health service: when an instance counts as unresponsive, stalled or over budget, and
    /// how it is replaced.
    pub health: HealthConfig,
    /// The metrics service: its Prometheus endpoint and alert thresholds.
    pub metrics: MetricsConfig,
}

/// NATS connection settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated (`nats://a:4222,nats://b:4222`). `NATS_URL` sets it too.
    pub url: String,
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Token authentication.
    pub token: Option<String>,
    /// NKey seed (`SU...`).
    pub nkey_seed: Option<String>,
    /// Credentials file (JWT + seed).
    pub creds_file: Option<PathBuf>,
    /// TLS settings.
    pub tls: TlsConfig,
    /// Give up connecting at start-up after this long.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Timeout of request/reply calls to other services.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest wait for one JetStream request or acknowledgement (streams, buckets, object
    /// stores). On a cluster, a request that the node answering it took down with it costs this
    /// long before it is tried again or fails.
    #[serde(with = "humantime_serde")]
    pub jetstream_timeout: Duration,
    /// Copies of every stream, KV bucket and object store lexmesh creates: 1 on a single
    /// server, 3 (or 5) on a JetStream cluster of at least that many nodes. Existing ones keep
    /// their count (a warning says when it differs).
    pub replicas: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            user: None,
            password: None,
            token: None,
            nkey_seed: None,
            creds_file: None,
            tls: TlsConfig::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            jetstream_timeout: Duration::from_secs(10),
            replicas: 1,
        }
    }
}

/// TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Require TLS even when the server does not ask for it.
    pub required: bool,
    /// CA certificate (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM).
    pub key_file: Option<PathBuf>,
}

/// Job consumption and retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Jobs one replica runs at once (the old system's MAX_WORKERS).
    pub concurrency: u32,
    /// A job not acknowledged for this long is given to another replica; a running job sends
    /// progress acks every third of it.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// JetStream's limit of deliveries of one job: a backstop far above the budgets below,
    /// reached only when every attempt vanished unjudged.
    pub max_deliver: u32,
    /// Attempts that may end with a retryable failure; the next one fails the job for good.
    pub max_failures: u32,
    /// Attempts that may be lost with their worker without storing progress (and not killed
    /// from outside); at this many since the last progress the job is dead-lettered
    /// (`worker_lost`): it is taken to kill its workers.
    pub max_lost_attempts: u32,
    /// Delay before the n-th retry of a retryable failure: `retry_delay · factorⁿ⁻¹`, capped.
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    /// Growth of the retry delay.
    pub retry_factor: f64,
    /// Largest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// On shutdown (SIGTERM), a job expected to end within this long is finished rather than
    /// handed back; one still running after twice this long is handed back all the same.
    #[serde(with = "humantime_serde")]
    pub finish_within: Duration,
    /// How long an attempt waits for a service it needs that nobody answers for (a trainer
    /// for a preprocessor that is starting or being replaced) before it fails as
    /// `unavailable`; the wait is no failed attempt.
    #[serde(with = "humantime_serde")]
    pub wait_for_service: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            ack_wait: Duration::from_secs(30),
            max_deliver: 50,
            max_failures: 5,
            max_lost_attempts: 3,
            retry_delay: Duration::from_secs(1),
            retry_factor: 2.0,
            retry_max_delay: Duration::from_secs(60),
            finish_within: Duration::from_secs(10),
            wait_for_service: Duration::from_secs(120),
        }
    }
}

impl JobsConfig {
    /// The delay before redelivering a job that failed on `attempt` (from 1).
    pub fn retry_delay_after(&self, attempt: u32) -> Duration {
        let exp = self
            .retry_factor
            .max(1.0)
            .powi(attempt.saturating_sub(1) as i32);
        let secs = (self.retry_delay.as_secs_f64() * exp).min(self.retry_max_delay.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// This instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Instance id (default: `<service>-<host>-<pid>`); must be a valid subject token.
    pub instance: Option<String>,
    /// Seconds between heartbeats.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Memory budget reported in heartbeats and checked by the health service, in MiB: the
    /// old system's 512 MB per worker. A trainer running 4 default bow jobs on the court
    /// rulings at once stays inside it (README, "Mesh performance").
    pub memory_budget_mb: u64,
    /// Cores this instance may use (0 = detect: its CPU affinity and cgroup quota). Its CPU %
    /// is measured against them, and its jobs share them. `lexmesh up` gives each of N
    /// replicas of a service on one machine 1/N of the cores, so replicas side by side do not
    /// oversubscribe it.
    pub cores: usize,
    /// Scratch folder for models and checkpoints in transit (default: the system temp folder).
    pub work_dir: Option<PathBuf>,
    /// Compute threads of each job (libtorch intra-op), for training and inference
    /// (0 = `cores / jobs.concurrency`, at least 1).
    pub compute_threads: usize,
    /// Models kept in memory by the evaluator for `classify`.
    pub model_cache: usize,
    /// Shortest interval between two published batch-progress events of one job (epoch events
    /// are always published). `0s` publishes every batch.
    #[serde(with = "humantime_serde")]
    pub progress_interval: Duration,
    /// Fire drills only: after this many training batches of each job, the compute thread
    /// stops making progress while the rest of the process keeps answering, as a wedged thread
    /// would. Lets a drill (and the tests) show that the health service finds and replaces a
    /// stalled trainer. Unset in any real deployment.
    pub drill_stall_after_batches: Option<u64>,
    /// A training job also checkpoints in the middle of an epoch once this long has passed
    /// since its last checkpoint, so a lost worker costs at most this much of its work.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Fire drills only: a trainer that runs the job with this id aborts its whole process
    /// at the job's first batch, as a job that crashes its worker (a poison message) would.
    /// Lets a drill (and the tests) show that such a job is dead-lettered while the jobs next
    /// to it complete. Unset in any real deployment.
    pub drill_abort_job: Option<String>,
    /// Fire drills only: a trainer aborts its whole process once the checkpoint that holds
    /// epoch N of a training job is stored, before it publishes that epoch's event, as a
    /// worker killed at that moment would. Lets a drill (and the tests) show that the attempt
    /// that resumes from that checkpoint tells the epoch. Unset in any real deployment.
    pub drill_abort_before_epoch_event: Option<u32>,
    /// Interval of the metrics reports on `lexmesh.metrics.<service>.<instance>`.
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
    /// Window of the windowed figures of a report (latencies, error rate).
    #[serde(with = "humantime_serde")]
    pub metrics_window: Duration,
    /// Period of the tick whose lateness measures how responsive the async runtime is.
    #[serde(with = "humantime_serde")]
    pub tick_interval: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            instance: None,
            heartbeat_interval: Duration::from_secs(1),
            memory_budget_mb: 512,
            cores: 0,
            work_dir: None,
            compute_threads: 0,
            model_cache: 4,
            progress_interval: Duration::from_millis(250),
            drill_stall_after_batches: None,
            drill_abort_job: None,
            drill_abort_before_epoch_event: None,
            checkpoint_interval: Duration::from_secs(30),
            metrics_interval: Duration::from_secs(2),
            metrics_window: Duration::from_secs(60),
            tick_interval: Duration::from_millis(100),
        }
    }
}

impl ServiceConfig {
    /// Why `instance` cannot name this instance (it must be a subject token), when it cannot.
    pub fn invalid_instance(&self) -> Option<String> {
        self.instance
            .as_deref()
            .filter(|id| !lexmesh_protocol::valid_id(id))
            .map(|id| format!("`{id}` must be 1 to 64 of A-Z a-z 0-9 _ -"))
    }
}

/// How an instance that stopped working is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplacerKind {
    /// Kill the process (same host only); its supervisor (`lexmesh up`, systemd) starts it
    /// again.
    Local,
    /// Delete its pod through the Kubernetes API; its Deployment recreates it.
    Kubernetes,
    /// Only report and hand its jobs back; replace nothing.
    None,
}

/// The health service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// No heartbeat for this long (and no answer to a ping) makes an instance unresponsive.
    #[serde(with = "humantime_serde")]
    pub dead_after: Duration,
    /// A running training job without a finished batch for this long makes its instance
    /// stalled (the old system's WORKER_TIMEOUT).
    #[serde(with = "humantime_serde")]
    pub worker_timeout: Duration,
    /// How long to wait for the answer to a `$SRV.PING`.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// Heartbeats in a row above the memory budget that make an instance over budget.
    pub over_budget_heartbeats: u32,
    /// How instances are replaced.
    pub replacer: ReplacerKind,
    /// First delay before replacing the same instance again; it grows by `restart_factor`.
    #[serde(with = "humantime_serde")]
    pub restart_delay: Duration,
    /// Growth of the delay between replacements.
    pub restart_factor: f64,
    /// Longest delay between replacements.
    #[serde(with = "humantime_serde")]
    pub restart_max_delay: Duration,
    /// Replacements of one instance within `restart_window` after which it is given up on
    /// (with an alert).
    pub max_restarts: u32,
    /// The window of `max_restarts`.
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
    /// How long the leader's lease lasts without renewal (only the leader replaces).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// An instance not heard of for this long is dropped from the report.
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            dead_after: Duration::from_secs(3),
            worker_timeout: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(1),
            over_budget_heartbeats: 5,
            replacer: ReplacerKind::Local,
            restart_delay: Duration::from_secs(1),
            restart_factor: 2.0,
            restart_max_delay: Duration::from_secs(30),
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(5),
            forget_after: Duration::from_secs(600),
        }
    }
}

/// The metrics service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint serving Prometheus metrics on `/metrics`.
    pub listen: String,
    /// An instance that sent no report for this long is dropped: its series leave `/metrics`
    /// and its alerts are cleared.
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
    /// How long the leader's lease lasts without renewal (only the leader publishes alerts).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Alert thresholds (defaults from the old system: 512 MiB, 80 % CPU, 100 ms response,
    /// 5 % errors, 50 ms message latency), per-service overrides and hysteresis.
    pub alerts: lexmesh_metrics::alerts::AlertConfig,
    /// Whether the dashboard (served on `/` of `listen`) may cancel jobs; off, it is read-only.
    pub console_actions: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9464".into(),
            forget_after: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(5),
            alerts: lexmesh_metrics::alerts::AlertConfig::default(),
            console_actions: false,
        }
    }
}

/// A configuration that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

impl Config {
    /// Cores this instance may use: `service.cores`, or what the process may run on (CPU
    /// affinity and cgroup quota), at least 1.
    pub fn cores(&self) -> usize {
        if self.service.cores > 0 {
            self.service.cores
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }
    }

    /// Compute threads of each job: `service.compute_threads`, or this instance's cores shared
    /// among its `jobs.concurrency` jobs (at least 1 each), so concurrent jobs never ask for
    /// more threads than the instance has cores.
    pub fn threads_per_job(&self) -> usize {
        if self.service.compute_threads > 0 {
            self.service.compute_threads
        } else {
            (self.cores() / (self.jobs.concurrency.max(1) as usize)).max(1)
        }
    }

    /// Defaults < `file` (or `./lexmesh.toml` when it exists) < `NATS_URL` < `LEXMESH_*__*`.
    /// Values no start could ever use (an instance id that is not a subject token) are refused
    /// here, with the configuration's other errors.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Self = Self::figment(file)
            .extract()
            .map_err(|e| ConfigError(Box::new(e)))?;
        if let Some(reason) = config.service.invalid_instance() {
            let error = figment::Error::from(format!("service.instance {reason}"));
            return Err(ConfigError(Box::new(error)));
        }
        Ok(config)
    }

    /// The layered sources.
    pub fn figment(file: Option<&Path>) -> Figment {
        let figment = Figment::from(Serialized::defaults(Config::default()));
        let figment = match file {
            Some(path) => figment.merge(Toml::file_exact(path)),
            None => figment.merge(Toml::file("lexmesh.toml")),
        };
        figment
            .merge(Env::raw().only(&["NATS_URL"]).map(|_| "nats.url".into()))
            .merge(
                Env::prefixed("LEXMESH_")
                    .filter(|key| key.as_str().contains("__"))
                    .split("__"),
            )
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_id_that_is_not_a_subject_token_is_a_configuration_error() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LEXMESH_SERVICE__INSTANCE", "trainer.one");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(
                error.contains("service.instance") && error.contains("trainer.one"),
                "{error}"
            );
            jail.set_env("LEXMESH_SERVICE__INSTANCE", "trainer-one_2");
            assert_eq!(
                Config::load(None).unwrap().service.instance.as_deref(),
                Some("trainer-one_2")
            );
            Ok(())
        });
    }

    #[test]
    fn defaults_then_file_then_environment() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(Config::load(None).unwrap(), Config::default());
            jail.create_file(
                "lexmesh.toml",
                "[jobs]\nconcurrency = 2\nack_wait = \"10s\"\n[nats]\nurl = \"nats://file:4222\"\n",
            )?;
            let c = Config::load(None).unwrap();
            assert_eq!(c.jobs.concurrency, 2);
            assert_eq!(c.jobs.ack_wait, Duration::from_secs(10));
            assert_eq!(c.nats.url, "nats://file:4222");
            jail.set_env("NATS_URL", "nats://env:4222");
            jail.set_env("LEXMESH_JOBS__CONCURRENCY", "3");
            jail.set_env("LEXMESH_NATS_SERVER", "/not/config");
            let c = Config::load(None).unwrap();
            assert_eq!(c.jobs.concurrency, 3);
            assert_eq!(c.nats.url, "nats://env:4222");
            jail.set_env("LEXMESH_NATS__URL", "nats://mine:4222");
            assert_eq!(Config::load(None).unwrap().nats.url, "nats://mine:4222");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[jobs]\nconcurency = 2\n")?;
            let e = Config::load(Some(Path::new("bad.toml"))).unwrap_err();
            assert!(e.to_string().contains("concurency"), "{e}");
            jail.create_file("bad2.toml", "[nope]\n")?;
            let e = Config::load(Some(Path::new("bad2.toml"))).unwrap_err();
            assert!(e.to_string().contains("nope"), "{e}");
            let e = Config::load(Some(Path::new("missing.toml"))).unwrap_err();
            assert!(e.to_string().contains("missing.toml"), "{e}");
            jail.set_env("LEXMESH_JOBS__CONCURENCY", "3");
            let e = Config::load(None).unwrap_err();
            assert!(e.to_string().contains("concurency"), "{e}");
            Ok(())
        });
    }

    /// The TOML inside `k8s/config.yaml` (the block under `lexmesh.toml: |`), dedented.
    fn kubernetes_config() -> String {
        let yaml = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../k8s/config.yaml"),
        )
        .unwrap();
        let block = yaml.split_once("lexmesh.toml: |\n").unwrap().1;
        block
            .lines()
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| l.get(4..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn jobs_share_the_instance_cores() {
        let mut c = Config::default();
        c.service.cores = 2;
        c.jobs.concurrency = 1;
        assert_eq!((c.cores(), c.threads_per_job()), (2, 2));
        c.jobs.concurrency = 4;
        assert_eq!(c.threads_per_job(), 1, "never fewer than one thread");
        c.service.cores = 8;
        assert_eq!(c.threads_per_job(), 2);
        c.jobs.concurrency = 3;
        assert_eq!(
            c.threads_per_job(),
            2,
            "rounded down: 3 jobs never ask for 9 threads"
        );
        c.service.compute_threads = 5;
        assert_eq!(c.threads_per_job(), 5, "an explicit setting wins");
        c.service.cores = 0;
        assert!(
            c.cores() >= 1,
            "detected from the process's affinity and quota"
        );
    }

    #[test]
    fn the_kubernetes_config_map_is_a_valid_configuration() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("k8s.toml", &kubernetes_config())?;
            let c = Config::load(Some(Path::new("k8s.toml"))).unwrap();
            assert_eq!(
                c.nats.url,
                "nats://nats-0.nats-headless:4222,nats://nats-1.nats-headless:4222,\
                 nats://nats-2.nats-headless:4222"
            );
            assert_eq!(c.nats.replicas, 3);
            assert_eq!(c.metrics.listen, "0.0.0.0:9464");
            c.metrics.alerts.validate().unwrap();
            // The trainer keeps the old system's thresholds: no override hides its memory.
            assert_eq!(c.metrics.alerts.thresholds_for("trainer").memory_mb, 512.0);
            assert_eq!(c.metrics.alerts.thresholds_for("trainer").cpu_percent, 80.0);
            assert!(c.metrics.alerts.services.is_empty());
            assert_eq!(c.service.memory_budget_mb, 512);
            assert_eq!(
                c.metrics.alerts.thresholds_for("evaluator").memory_mb,
                512.0
            );
            Ok(())
        });
    }

    #[test]
    fn metrics_settings_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LEXMESH_METRICS__ALERTS__SERVICES__TRAINER__MEMORY_MB", "1");
            jail.set_env("LEXMESH_METRICS__ALERTS__THRESHOLDS__CPU_PERCENT", "150");
            jail.set_env("LEXMESH_SERVICE__METRICS_INTERVAL", "300ms");
            let c = Config::load(None).unwrap();
            assert_eq!(c.service.metrics_interval, Duration::from_millis(300));
            assert_eq!(c.metrics.alerts.thresholds_for("trainer").memory_mb, 1.0);
            assert_eq!(
                c.metrics.alerts.thresholds_for("trainer").cpu_percent,
                150.0
            );
            jail.set_env("LEXMESH_METRICS__ALERTS__THRESHOLDS__CPU_PERCENTAGE", "150");
            let e = Config::load(None).unwrap_err();
            assert!(e.to_string().contains("cpu_percentage"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn retry_delays_grow_and_are_capped() {
        let j = JobsConfig::default();
        assert_eq!(j.retry_delay_after(1), Duration::from_secs(1));
        assert_eq!(j.retry_delay_after(3), Duration::from_secs(4));
        assert_eq!(j.retry_delay_after(30), Duration::from_secs(60));
    }
}
