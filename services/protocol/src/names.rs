//! Names of streams, consumers, buckets, object stores and services.

use crate::job::JobKind;

/// Work-queue stream of job requests (`lexmesh.jobs.*`).
pub const JOBS_STREAM: &str = "LEXMESH_JOBS";

/// Replayable stream of job events (`lexmesh.events.>`).
pub const EVENTS_STREAM: &str = "LEXMESH_EVENTS";

/// The durable pull consumer shared by every replica that runs jobs of `kind`.
pub fn consumer(kind: JobKind) -> String {
    format!("lexmesh-{}", kind.name())
}

/// Stream keeping dead letters (`lexmesh.deadletter.>`).
pub const DEADLETTER_STREAM: &str = "LEXMESH_DEADLETTER";

/// Work-queue stream that keeps the server's max-deliveries advisories of the job consumers
/// until a service has dead-lettered their job: an advisory sent while no replica runs is not
/// lost.
pub const ADVISORIES_STREAM: &str = "LEXMESH_ADVISORIES";

/// The durable consumer of [`ADVISORIES_STREAM`] through which one instance per job kind
/// handles each max-deliveries advisory of that kind.
pub fn deadletter_queue(kind: JobKind) -> String {
    format!("lexmesh-deadletter-{}", kind.name())
}

/// KV bucket of leader leases (keys [`HEALTH_LEASE`], [`METRICS_LEASE`]).
pub const LEASES_BUCKET: &str = "lexmesh_leases";

/// Key of the health service's leader lease in [`LEASES_BUCKET`].
pub const HEALTH_LEASE: &str = "health";

/// Key of the metrics service's leader lease in [`LEASES_BUCKET`] (the leader publishes
/// alerts).
pub const METRICS_LEASE: &str = "metrics";

/// KV bucket of job records ([`crate::record::JobRecord`]), keyed by job id.
pub const JOBS_BUCKET: &str = "lexmesh_jobs";

/// KV bucket of how each instance's process last ended ([`crate::record::InstanceExit`], key
/// = instance), written by `lexmesh up`.
pub const INSTANCES_BUCKET: &str = "lexmesh_instances";

/// KV bucket of hyperparameter searches (key = optimize job id): each search's whole state,
/// written by its coordinator with compare-and-set after every step, so that a coordinator
/// that replaces a crashed one continues from it.
pub const SEARCHES_BUCKET: &str = "lexmesh_searches";

/// Object store of uploaded and prepared datasets.
pub const DATASETS_STORE: &str = "lexmesh_datasets";

/// Object store of per-job training checkpoints (`<job>/<file>`).
pub const CHECKPOINTS_STORE: &str = "lexmesh_checkpoints";

/// Object store of trained models (`<model>/<file>`, `<model>/manifest.json` written last).
pub const MODELS_STORE: &str = "lexmesh_models";

/// Object name of a prepared dataset in [`DATASETS_STORE`].
pub fn prepared_dataset(id: &str) -> String {
    format!("prepared/{id}")
}

/// Object name of a model file in [`MODELS_STORE`].
pub fn model_file(model_id: &str, file: &str) -> String {
    format!("{model_id}/{file}")
}

/// Object name of a model's manifest: written last, so a model without one is incomplete.
pub fn model_manifest(model_id: &str) -> String {
    model_file(model_id, "manifest.json")
}

/// Object name of a checkpoint file in [`CHECKPOINTS_STORE`].
pub fn checkpoint_file(job_id: &str, file: &str) -> String {
    format!("{job_id}/{file}")
}

/// The lexmesh services, as named in the NATS service API and in subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Runs `preprocess` jobs and answers `prepare` requests.
    Preprocessor,
    /// Runs `train` jobs, and coordinates `optimize` jobs (searches whose trials are train
    /// jobs).
    Trainer,
    /// Runs `evaluate` jobs and answers `classify` requests.
    Evaluator,
    /// Watches the other instances and replaces the ones that stop working.
    Health,
    /// Gathers every instance's metrics, serves them to Prometheus and raises alerts.
    Metrics,
}

impl Service {
    /// All services, in start-up order.
    pub const ALL: [Service; 5] = [
        Self::Preprocessor,
        Self::Trainer,
        Self::Evaluator,
        Self::Health,
        Self::Metrics,
    ];

    /// Short name: `preprocessor`, `trainer`, `evaluator`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Preprocessor => "preprocessor",
            Self::Trainer => "trainer",
            Self::Evaluator => "evaluator",
            Self::Health => "health",
            Self::Metrics => "metrics",
        }
    }

    /// Name registered with the NATS service API (`nats micro ls`): `lexmesh-<service>`.
    pub fn service_api_name(self) -> String {
        format!("lexmesh-{}", self.name())
    }

    /// The job kinds this service consumes.
    pub fn job_kinds(self) -> &'static [JobKind] {
        match self {
            Self::Preprocessor => &[JobKind::Preprocess],
            Self::Trainer => &[JobKind::Train, JobKind::Optimize],
            Self::Evaluator => &[JobKind::Evaluate],
            Self::Health | Self::Metrics => &[],
        }
    }
}

impl std::str::FromStr for Service {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                format!("unknown service `{s}` (preprocessor, trainer, evaluator, health, metrics)")
            })
    }
}
