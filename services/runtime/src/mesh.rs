//! The JetStream resources of the mesh: streams (jobs, events, dead letters, and the
//! max-deliveries advisories of the job consumers), the job consumers, the KV buckets (job
//! records, leases, instance exits, searches) and the object stores. Every service creates what is missing at start-up, so the order in which
//! services start does not matter.
//!
//! Works against nats-server 2.9 as well as current servers: 2.9 cannot create a KV bucket
//! through the client (its account-info reply lacks fields the client expects), so when that
//! fails the bucket's `KV_<bucket>` stream is created directly.

use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use lexmesh_protocol::{JobKind, names, subjects};

use crate::config::JobsConfig;
use crate::error::RuntimeError;

/// How long the server remembers a `Nats-Msg-Id`: a job resubmitted within this window is
/// dropped by the server; after it, the job record stops a finished job from running again.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How long job events are kept for replay.
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long dead letters are kept.
pub const DEADLETTER_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Handles to every JetStream resource.
#[derive(Clone)]
pub struct Mesh {
    /// The core client.
    pub client: Client,
    /// JetStream.
    pub js: jetstream::Context,
    /// Job records (`lexmesh_jobs`).
    pub jobs: kv::Store,
    /// Leases (`lexmesh_leases`): the health service's leader lease.
    pub leases: kv::Store,
    /// How each instance's process last ended (`lexmesh_instances`), as its supervisor saw it.
    pub instances: kv::Store,
    /// Hyperparameter searches (`lexmesh_searches`): each search's state, kept by its
    /// coordinator.
    pub searches: kv::Store,
    /// Uploaded and prepared datasets.
    pub datasets: object_store::ObjectStore,
    /// Training checkpoints.
    pub checkpoints: object_store::ObjectStore,
    /// Trained models.
    pub models: object_store::ObjectStore,
}

impl Mesh {
    /// Opens (creating when missing) every stream, bucket and store; those it creates get
    /// `replicas` copies (`nats.replicas`: 1 on a single server, 3 on a 3-node JetStream
    /// cluster). One that exists with another count keeps it, with a warning.
    ///
    /// Every JetStream request and acknowledgement through the mesh waits at most `timeout`
    /// (`nats.jetstream_timeout`), not the connection's request timeout.
    pub async fn open(
        client: Client,
        replicas: usize,
        timeout: Duration,
    ) -> Result<Self, RuntimeError> {
        let mut js = jetstream::new(client.clone());
        js.set_timeout(timeout);
        let replicas = replicas.max(1);
        ensure_stream(
            &js,
            stream::Config {
                name: names::JOBS_STREAM.into(),
                subjects: vec![subjects::ALL_JOBS.into()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            },
        )
        .await?;
        ensure_stream(
            &js,
            stream::Config {
                name: names::EVENTS_STREAM.into(),
                subjects: vec![subjects::ALL_EVENTS.into()],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                max_age: EVENTS_MAX_AGE,
                ..Default::default()
            },
        )
        .await?;
        ensure_stream(
            &js,
            stream::Config {
                name: names::DEADLETTER_STREAM.into(),
                subjects: vec![subjects::ALL_DEADLETTERS.into()],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                max_age: DEADLETTER_MAX_AGE,
                ..Default::default()
            },
        )
        .await?;
        ensure_stream(
            &js,
            stream::Config {
                name: names::ADVISORIES_STREAM.into(),
                subjects: vec![subjects::max_deliveries_advisory(names::JOBS_STREAM, "*")],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                max_age: DEADLETTER_MAX_AGE,
                ..Default::default()
            },
        )
        .await?;
        let jobs = ensure_kv(&js, names::JOBS_BUCKET, 8, replicas).await?;
        let leases = ensure_kv(&js, names::LEASES_BUCKET, 1, replicas).await?;
        let instances = ensure_kv(&js, names::INSTANCES_BUCKET, 1, replicas).await?;
        let searches = ensure_kv(&js, names::SEARCHES_BUCKET, 1, replicas).await?;
        let datasets = ensure_object_store(&js, names::DATASETS_STORE, replicas).await?;
        let checkpoints = ensure_object_store(&js, names::CHECKPOINTS_STORE, replicas).await?;
        let models = ensure_object_store(&js, names::MODELS_STORE, replicas).await?;
        Ok(Self {
            client,
            js,
            jobs,
            leases,
            instances,
            searches,
            datasets,
            checkpoints,
            models,
        })
    }

    /// The durable pull consumer of `kind`, shared by every replica. `max_ack_pending` bounds
    /// the jobs in flight across replicas.
    pub async fn job_consumer(
        &self,
        kind: JobKind,
        jobs: &JobsConfig,
        max_ack_pending: i64,
    ) -> Result<consumer::PullConsumer, RuntimeError> {
        let stream = self
            .js
            .get_stream(names::JOBS_STREAM)
            .await
            .map_err(RuntimeError::nats("opening the jobs stream"))?;
        let name = names::consumer(kind);
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: subjects::jobs(kind),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: jobs.ack_wait,
            max_deliver: i64::from(jobs.max_deliver),
            max_ack_pending,
            ..Default::default()
        };
        stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(RuntimeError::nats(format!("creating consumer {name}")))
    }
}

impl Mesh {
    /// The durable consumer of the max-deliveries advisories of `kind`'s job consumer, shared
    /// by every replica (each advisory is handled by one, and comes back if it is not acked).
    pub async fn advisory_consumer(
        &self,
        kind: JobKind,
    ) -> Result<consumer::PullConsumer, RuntimeError> {
        let stream = self
            .js
            .get_stream(names::ADVISORIES_STREAM)
            .await
            .map_err(RuntimeError::nats("opening the advisories stream"))?;
        let name = names::deadletter_queue(kind);
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: subjects::max_deliveries_advisory(
                names::JOBS_STREAM,
                &names::consumer(kind),
            ),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: ADVISORY_ACK_WAIT,
            ..Default::default()
        };
        stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(RuntimeError::nats(format!("creating consumer {name}")))
    }
}

/// How long an instance may take to dead-letter a job before its advisory goes to another.
pub const ADVISORY_ACK_WAIT: Duration = Duration::from_secs(60);

async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<(), RuntimeError> {
    let name = config.name.clone();
    let wanted = config.num_replicas;
    match js.get_or_create_stream(config).await {
        Ok(stream) => {
            warn_replicas(&name, stream.cached_info().config.num_replicas, wanted);
            Ok(())
        }
        // Two services starting at once both find the stream missing; the one that loses the
        // race is told "subjects overlap with an existing stream" by 2.9 servers (not "already
        // in use"), so the stream is looked up once more before giving up.
        Err(error) => js
            .get_stream(&name)
            .await
            .map(|_| ())
            .map_err(|_| RuntimeError::Nats {
                what: format!("creating stream {name}"),
                source: Box::new(error),
            }),
    }
}

/// Says so when a stream lexmesh opened has another replica count than `nats.replicas`
/// (created before the setting changed): JetStream can change it (`nats stream edit
/// <name> --replicas N`), lexmesh does not do it behind the operator's back.
fn warn_replicas(stream: &str, has: usize, wanted: usize) {
    // A stream's info reports 0 or 1 for a single copy, depending on the server.
    if has.max(1) != wanted {
        tracing::warn!(
            "stream {stream} has {} replica(s), nats.replicas is {wanted}: it keeps its count \
             (`nats stream edit {stream} --replicas {wanted}` changes it)",
            has.max(1)
        );
    }
}

/// Opens the KV bucket, creating it when missing (directly as a stream on servers whose
/// replies the client's `create_key_value` cannot read).
pub async fn ensure_kv(
    js: &jetstream::Context,
    bucket: &str,
    history: i64,
    replicas: usize,
) -> Result<kv::Store, RuntimeError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        if let Ok(stream) = js.get_stream(format!("KV_{bucket}")).await {
            warn_replicas(
                &format!("KV_{bucket}"),
                stream.cached_info().config.num_replicas,
                replicas,
            );
        }
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: bucket.into(),
            history,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        Err(error) => {
            tracing::debug!("create_key_value failed ({error}); creating KV_{bucket} directly");
            ensure_stream(
                js,
                stream::Config {
                    name: format!("KV_{bucket}"),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: history,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: stream::DiscardPolicy::New,
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                },
            )
            .await?;
            js.get_key_value(bucket)
                .await
                .map_err(RuntimeError::nats(format!("opening bucket {bucket}")))
        }
    }
}

async fn ensure_object_store(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<object_store::ObjectStore, RuntimeError> {
    if let Ok(store) = js.get_object_store(bucket).await {
        if let Ok(stream) = js.get_stream(format!("OBJ_{bucket}")).await {
            warn_replicas(
                &format!("OBJ_{bucket}"),
                stream.cached_info().config.num_replicas,
                replicas,
            );
        }
        return Ok(store);
    }
    match js
        .create_object_store(object_store::Config {
            bucket: bucket.into(),
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
    {
        Ok(store) => Ok(store),
        // Another replica may have created it in the meantime.
        Err(error) => js
            .get_object_store(bucket)
            .await
            .map_err(|_| RuntimeError::Nats {
                what: format!("creating object store {bucket}"),
                source: Box::new(error),
            }),
    }
}
