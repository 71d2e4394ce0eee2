//! The health service: listens to every heartbeat, pings instances whose heartbeats stop,
//! publishes each change of state on `lexmesh.health.<instance>.<state>`, and replaces
//! instances that are unresponsive, stalled or over budget, handing their jobs back to the
//! queue at once (a `-NAK` on each job's delivery) so that another replica resumes them from
//! their checkpoints without waiting for `ack_wait`.
//!
//! Several replicas may run: they elect a leader through a lease in the `lexmesh_leases` KV
//! bucket (compare-and-set on its revision). Every replica keeps the picture and answers
//! `lexmesh.api.health.instances`; only the leader publishes and replaces, so no worker is
//! replaced twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lexmesh_health::monitor::{Monitor, Thresholds, Transition};
use lexmesh_health::policy::{Decision, RestartPolicy, RestartTracker};
#[cfg(feature = "kubernetes")]
use lexmesh_health::replace::kubernetes::KubernetesReplacer;
use lexmesh_health::replace::{LocalReplacer, Replacer};
use lexmesh_protocol::alert::{AlertKind, AlertState};
use lexmesh_protocol::health::{HealthEvent, HealthReport, HealthState};
use lexmesh_protocol::heartbeat::Heartbeat;
use lexmesh_protocol::names::{self, Service};
use lexmesh_protocol::time::now_ms;
use lexmesh_protocol::{decode, subjects};
use lexmesh_runtime::config::{HealthConfig, ReplacerKind};
use lexmesh_runtime::{RuntimeError, ServiceRuntime, Worker, job_loop};
use serde::Serialize;
use tokio::sync::mpsc;

use lexmesh_runtime::alerts::{new_alert, publish_alert};
use lexmesh_runtime::lease::{Leadership, Lease};

/// How often overdue heartbeats, pending replacements and the lease are looked at.
const TICK: Duration = Duration::from_millis(250);

/// How often the leader looks for jobs whose deliveries ran out unnoticed.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// After a replaced process is gone, how long the server gets to notice its closed connection
/// before its jobs are handed back.
const EXITED_RELEASE_DELAY: Duration = Duration::from_millis(300);

/// Starts the health service on `runtime`.
pub async fn start(runtime: &mut ServiceRuntime) -> anyhow::Result<()> {
    let worker = runtime.worker.clone();
    let config = worker.config.health.clone();
    let replacer: Arc<dyn Replacer> = match config.replacer {
        ReplacerKind::Local => Arc::new(LocalReplacer::new(lexmesh_runtime::worker::host_name())),
        #[cfg(feature = "kubernetes")]
        ReplacerKind::Kubernetes => Arc::new(KubernetesReplacer::in_cluster().await?),
        #[cfg(not(feature = "kubernetes"))]
        ReplacerKind::Kubernetes => {
            return Err(crate::Unusable(
                "health.replacer = \"kubernetes\" needs a lexmesh built with the `kubernetes` \
                 feature (cargo build --release --features kubernetes; the container image of \
                 k8s/Dockerfile has it); this build can replace `local` processes or `none`"
                    .into(),
            )
            .into());
        }
        ReplacerKind::None => Arc::new(NoReplacer),
    };
    let heartbeats = worker
        .mesh
        .client
        .subscribe(subjects::ALL_HEARTBEATS)
        .await
        .map_err(RuntimeError::nats("subscribing to heartbeats"))?;
    let shared = Arc::new(Mutex::new(Shared {
        monitor: Monitor::new(thresholds(&config)),
        leader: false,
    }));
    let endpoint = runtime.endpoint("instances").await?;
    {
        let shared = shared.clone();
        let worker = worker.clone();
        runtime.serve(endpoint, move |_request| {
            let report = {
                let s = lock(&shared);
                HealthReport {
                    observer: worker.instance.clone(),
                    leader: s.leader,
                    instances: s.monitor.report(now_ms()),
                    timestamp_ms: now_ms(),
                }
            };
            async move { serde_json::to_vec(&report).map_err(|e| e.to_string()) }
        });
    }
    tracing::info!(
        replacer = replacer.name(),
        dead_after = ?config.dead_after,
        worker_timeout = ?config.worker_timeout,
        "watching heartbeats"
    );
    let worker_instance = worker.instance.clone();
    let config_lease_ttl = config.lease_ttl;
    let service = HealthService {
        worker,
        config,
        replacer,
        shared,
        trackers: HashMap::new(),
        pending: HashMap::new(),
        given_up: HashSet::new(),
        lease: Lease::new(names::HEALTH_LEASE, worker_instance, config_lease_ttl),
        last_sweep: Instant::now(),
    };
    runtime.spawn(service.run(heartbeats));
    Ok(())
}

fn thresholds(config: &HealthConfig) -> Thresholds {
    Thresholds {
        dead_after: config.dead_after,
        worker_timeout: config.worker_timeout,
        over_budget_heartbeats: config.over_budget_heartbeats,
        forget_after: config.forget_after,
    }
}

/// The restart policy of `config` (shared with `lexmesh up`).
pub fn restart_policy(config: &HealthConfig) -> RestartPolicy {
    RestartPolicy {
        first_delay: config.restart_delay,
        factor: config.restart_factor,
        max_delay: config.restart_max_delay,
        max_restarts: config.max_restarts,
        window: config.restart_window,
    }
}

/// Reports and hands jobs back, replaces nothing (`health.replacer = "none"`).
struct NoReplacer;

impl Replacer for NoReplacer {
    fn name(&self) -> &'static str {
        "none"
    }

    fn replace<'a>(
        &'a self,
        target: &'a lexmesh_health::replace::Target,
    ) -> futures::future::BoxFuture<'a, Result<String, lexmesh_health::replace::ReplaceError>> {
        Box::pin(async move {
            Err(lexmesh_health::replace::ReplaceError::OutOfReach {
                instance: target.instance.clone(),
                reason: "health.replacer is `none`".into(),
            })
        })
    }
}

struct Shared {
    monitor: Monitor,
    leader: bool,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

enum Done {
    Ping {
        instance: String,
        answered: bool,
    },
    Replaced {
        instance: String,
        outcome: Result<String, String>,
    },
}

struct HealthService {
    worker: Arc<Worker>,
    config: HealthConfig,
    replacer: Arc<dyn Replacer>,
    shared: Arc<Mutex<Shared>>,
    trackers: HashMap<String, RestartTracker>,
    /// Instances waiting for their next allowed replacement.
    pending: HashMap<String, Instant>,
    given_up: HashSet<String>,
    lease: Lease,
    last_sweep: Instant,
}

impl HealthService {
    async fn run(mut self, mut heartbeats: async_nats::Subscriber) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.worker.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                message = heartbeats.next() => {
                    let Some(message) = message else { break };
                    match decode::<Heartbeat>(&message.payload) {
                        Ok(heartbeat) => {
                            self.worker.record_message_latency(heartbeat.timestamp_ms);
                            let change = lock(&self.shared).monitor.observe(heartbeat, now_ms());
                            if let Some(t) = change {
                                self.on_transition(t, &done_tx).await;
                            }
                        }
                        Err(e) => tracing::warn!(subject = %message.subject, "unreadable heartbeat: {e}"),
                    }
                }
                Some(done) = done_rx.recv() => self.on_done(done, &done_tx).await,
                _ = tick.tick() => self.on_tick(&done_tx).await,
            }
        }
        self.lease.release(&self.worker.mesh.leases).await;
        lock(&self.shared).leader = false;
    }

    async fn on_tick(&mut self, done: &mpsc::UnboundedSender<Done>) {
        match self.lease.tick(&self.worker.mesh.leases).await {
            Leadership::Gained => tracing::info!("became the health leader"),
            Leadership::Lost => tracing::info!("is no longer the health leader"),
            Leadership::Same => {}
        }
        lock(&self.shared).leader = self.lease.held();
        if self.last_sweep.elapsed() >= SWEEP_EVERY {
            self.last_sweep = Instant::now();
            let s = lock(&self.shared);
            if s.leader {
                let running: HashSet<String> = s
                    .monitor
                    .report(now_ms())
                    .into_iter()
                    .flat_map(|i| i.running.into_iter().map(|j| j.job_id))
                    .collect();
                tokio::spawn(sweep_exhausted(self.worker.clone(), running));
            }
        }
        let suspects = {
            let mut s = lock(&self.shared);
            s.monitor.forget_gone(now_ms());
            s.monitor.overdue(now_ms())
        };
        for target in suspects {
            let client = self.worker.mesh.client.clone();
            let timeout = self.config.ping_timeout;
            let done = done.clone();
            tokio::spawn(async move {
                let answered = ping(&client, &target.service, &target.instance, timeout).await;
                let _ = done.send(Done::Ping {
                    instance: target.instance,
                    answered,
                });
            });
        }
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, at)| Instant::now() >= **at)
            .map(|(i, _)| i.clone())
            .collect();
        for instance in due {
            self.pending.remove(&instance);
            let still = lock(&self.shared)
                .monitor
                .state(&instance)
                .is_some_and(HealthState::needs_replacement);
            if still {
                let service = self.service_of(&instance);
                self.act(&service, &instance, done);
            }
        }
    }

    async fn on_done(&mut self, done: Done, tx: &mpsc::UnboundedSender<Done>) {
        match done {
            Done::Ping { instance, answered } => {
                let change = lock(&self.shared)
                    .monitor
                    .ping_result(&instance, answered, now_ms());
                if let Some(t) = change {
                    self.on_transition(t, tx).await;
                }
            }
            Done::Replaced { instance, outcome } => {
                let jobs = lock(&self.shared).monitor.jobs(&instance);
                match outcome {
                    Ok(how) => {
                        tracing::warn!(instance = %instance, "replaced: {how}");
                        let change =
                            lock(&self.shared)
                                .monitor
                                .mark_replaced(&instance, &how, now_ms());
                        // Hand the jobs back only once the instance can no longer take them
                        // again: JetStream gives a nak'ed job to any pending pull request,
                        // and a dying instance's may still be pending.
                        let wait = if self.replacer.confirms_exit() {
                            EXITED_RELEASE_DELAY
                        } else {
                            job_loop::PULL_EXPIRES + Duration::from_secs(1)
                        };
                        release_later(self.worker.clone(), instance.clone(), jobs, wait);
                        if let Some(t) = change {
                            self.on_transition(t, tx).await;
                        }
                    }
                    Err(reason) => {
                        tracing::error!(instance = %instance, "cannot replace: {reason}");
                        release(&self.worker, &instance, &jobs).await;
                        let service = self.service_of(&instance);
                        let alert = new_alert(
                            AlertKind::ReplacementFailed,
                            AlertState::Raised,
                            (&service, &instance),
                            (1.0, 1.0),
                            &reason,
                            &self.worker.instance,
                        );
                        publish_alert(&self.worker.mesh.client, &alert).await;
                    }
                }
            }
        }
    }

    async fn on_transition(&mut self, t: Transition, done: &mpsc::UnboundedSender<Done>) {
        let leader = lock(&self.shared).leader;
        if leader && !t.orphaned.is_empty() {
            // Its supervisor restarted it: the old process is gone, its jobs wait for
            // ack_wait unless handed back now.
            tracing::warn!(
                instance = %t.instance,
                "restarted while running {} job(s); handing them back",
                t.orphaned.len()
            );
            release_later(
                self.worker.clone(),
                t.instance.clone(),
                t.orphaned.clone(),
                EXITED_RELEASE_DELAY,
            );
        }
        let line = format!(
            "{} {}: {} -> {} ({})",
            t.service,
            t.instance,
            t.from.map_or("new", HealthState::name),
            t.to.name(),
            t.reason
        );
        if t.to.needs_replacement() {
            tracing::warn!("{line}");
        } else {
            tracing::info!("{line}");
        }
        if !leader {
            return;
        }
        let event = HealthEvent {
            service: t.service.clone(),
            instance: t.instance.clone(),
            state: t.to,
            previous: t.from,
            reason: t.reason.clone(),
            jobs: t.jobs.iter().map(|j| j.job_id.clone()).collect(),
            observer: self.worker.instance.clone(),
            timestamp_ms: now_ms(),
        };
        self.publish(subjects::health(&t.instance, t.to), &event)
            .await;
        if t.to == HealthState::Healthy && self.given_up.remove(&t.instance) {
            let alert = new_alert(
                AlertKind::ReplacementGivenUp,
                AlertState::Cleared,
                (&t.service, &t.instance),
                (0.0, f64::from(self.config.max_restarts)),
                "running again",
                &self.worker.instance,
            );
            publish_alert(&self.worker.mesh.client, &alert).await;
        }
        // A health replica is replaced like any other, except by itself.
        if t.to.needs_replacement() && t.instance != self.worker.instance {
            self.act(&t.service, &t.instance, done);
        }
    }

    /// Replaces `instance` now, later, or never (with an alert), as the restart policy says.
    fn act(&mut self, service: &str, instance: &str, done: &mpsc::UnboundedSender<Done>) {
        let policy = restart_policy(&self.config);
        let tracker = self
            .trackers
            .entry(instance.to_string())
            .or_insert_with(|| RestartTracker::new(policy));
        match tracker.request(Instant::now()) {
            Decision::Now { .. } => {
                let Some(target) = lock(&self.shared).monitor.target(instance) else {
                    return;
                };
                let replacer = self.replacer.clone();
                let done = done.clone();
                let instance = instance.to_string();
                tokio::spawn(async move {
                    let outcome = replacer.replace(&target).await.map_err(|e| e.to_string());
                    let _ = done.send(Done::Replaced { instance, outcome });
                });
            }
            Decision::Wait(delay) => {
                tracing::info!(instance, "replaced recently; next replacement in {delay:?}");
                self.pending
                    .insert(instance.to_string(), Instant::now() + delay);
            }
            Decision::GiveUp => {
                if self.given_up.insert(instance.to_string()) {
                    let reason = format!(
                        "replaced {} times within {:?}; giving up on it",
                        policy.max_restarts, policy.window
                    );
                    tracing::error!(instance, "{reason}");
                    let jobs = lock(&self.shared).monitor.jobs(instance);
                    let worker = self.worker.clone();
                    let max = f64::from(policy.max_restarts);
                    let alert = new_alert(
                        AlertKind::ReplacementGivenUp,
                        AlertState::Raised,
                        (service, instance),
                        (max, max),
                        &reason,
                        &worker.instance,
                    );
                    let instance = instance.to_string();
                    tokio::spawn(async move {
                        release(&worker, &instance, &jobs).await;
                        publish_alert(&worker.mesh.client, &alert).await;
                    });
                }
            }
        }
    }

    /// The service an instance belongs to, as its heartbeats said.
    fn service_of(&self, instance: &str) -> String {
        lock(&self.shared)
            .monitor
            .target(instance)
            .map(|t| t.service)
            .unwrap_or_default()
    }

    async fn publish<T: Serialize>(&self, subject: String, body: &T) {
        match serde_json::to_vec(body) {
            Ok(bytes) => {
                if let Err(e) = self.worker.mesh.client.publish(subject, bytes.into()).await {
                    tracing::warn!("cannot publish a health event: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot encode a health event: {e}"),
        }
    }
}

/// Dead-letters jobs that ran out of deliveries while the max-deliveries advisory went
/// unheard (every instance that could handle it was down, or died handling it): a record not
/// final, delivered `max_deliver` times, quiet for two `ack_wait`s, and running nowhere.
async fn sweep_exhausted(worker: Arc<Worker>, running: HashSet<String>) {
    let jobs = &worker.config.jobs;
    let quiet_ms = jobs.ack_wait.as_secs_f64() * 2000.0;
    let records = match lexmesh_runtime::records::list(&worker.mesh.jobs).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("sweep: cannot list job records: {e}");
            return;
        }
    };
    for record in records {
        let stale = !record.status.is_final()
            && record.attempts >= jobs.max_deliver.max(1)
            && now_ms() - record.updated_ms > quiet_ms
            && !running.contains(&record.job_id);
        let Some(sequence) = record.stream_sequence.filter(|_| stale) else {
            continue;
        };
        if let Err(e) =
            job_loop::dead_letter_exhausted(&worker, record.kind, sequence, record.attempts).await
        {
            tracing::warn!(job = %record.job_id, "sweep: cannot dead-letter: {e}");
        }
    }
}

/// `$SRV.PING.lexmesh-<service>` answered by this instance: the service API's ping reaches
/// every instance of the service, so the answer that names `instance` is the one awaited.
async fn ping(
    client: &async_nats::Client,
    service: &str,
    instance: &str,
    timeout: Duration,
) -> bool {
    let Ok(service) = service.parse::<Service>() else {
        return false;
    };
    let subject = format!("$SRV.PING.{}", service.service_api_name());
    let inbox = client.new_inbox();
    let Ok(mut replies) = client.subscribe(inbox.clone()).await else {
        return false;
    };
    if client
        .publish_with_reply(subject, inbox, bytes::Bytes::new())
        .await
        .is_err()
    {
        return false;
    }
    let found = async {
        while let Some(reply) = replies.next().await {
            let answered = serde_json::from_slice::<serde_json::Value>(&reply.payload)
                .ok()
                .and_then(|v| {
                    v.get("metadata")
                        .and_then(|m| m.get("instance"))
                        .and_then(|i| i.as_str())
                        .map(|i| i == instance)
                })
                .unwrap_or(false);
            if answered {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(timeout, found).await.unwrap_or(false)
}

/// [`release`] after `wait`, without holding up the caller.
fn release_later(
    worker: Arc<Worker>,
    instance: String,
    jobs: Vec<lexmesh_protocol::status::RunningJob>,
    wait: Duration,
) {
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        release(&worker, &instance, &jobs).await;
    });
}

/// Hands `instance`'s jobs back to the queue: a `-NAK` on each job's delivery makes
/// JetStream deliver it again at once, to a replica that is alive.
async fn release(worker: &Worker, instance: &str, jobs: &[lexmesh_protocol::status::RunningJob]) {
    for job in jobs {
        let Some(ack) = &job.ack_subject else {
            continue;
        };
        match worker
            .mesh
            .client
            .publish(ack.clone(), bytes::Bytes::from_static(b"-NAK"))
            .await
        {
            Ok(()) => tracing::warn!(
                instance,
                job = %job.job_id,
                "handed the job back to the queue (attempt {} will resume elsewhere)",
                job.attempt + 1
            ),
            Err(e) => tracing::warn!(instance, job = %job.job_id, "cannot hand the job back: {e}"),
        }
    }
    let _ = worker.mesh.client.flush().await;
}
