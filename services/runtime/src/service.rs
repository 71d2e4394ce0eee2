//! A running service instance: connection, JetStream resources, NATS service API registration
//! (`$SRV.PING/INFO/STATS`, so `nats micro ls` lists it), status endpoints, heartbeats, metrics
//! reports, the cancel listener, signal handling, and the orderly shutdown: stop pulling, let
//! running jobs checkpoint and hand back (or finish), stop the service, drain the connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::{self, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use lexmesh_protocol::control::{CancelOutcome, CancelReply, CancelRequest};
use lexmesh_protocol::names::Service;
use lexmesh_protocol::{ErrorReply, ProtocolError, decode, subjects};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::Config;
use crate::connection::{Patience, connect};
use crate::error::RuntimeError;
use crate::job_loop::{self, JobHandler};
use crate::mesh::Mesh;
use crate::records;
use crate::worker::{VERSION, Worker, default_instance_id};

/// A service instance being run.
pub struct ServiceRuntime {
    /// Identity, state and resources of this instance.
    pub worker: Arc<Worker>,
    service: service::Service,
    tasks: JoinSet<()>,
    job_loops: JoinSet<Result<(), RuntimeError>>,
}

impl ServiceRuntime {
    /// Connects, opens the mesh, registers with the service API and starts heartbeats, the
    /// status endpoints, the cancel listener and the signal handler.
    pub async fn start(kind: Service, config: Config) -> Result<Self, RuntimeError> {
        // `Config::load` refuses it already; a configuration built in code is checked here.
        if let Some(reason) = config.service.invalid_instance() {
            return Err(RuntimeError::Unusable {
                setting: "service.instance".into(),
                reason,
            });
        }
        let instance = config
            .service
            .instance
            .clone()
            .unwrap_or_else(|| default_instance_id(kind));
        if let Some(dir) = &config.service.work_dir {
            check_work_dir(dir)?;
        }
        let client = connect(&config.nats, &instance, Patience::Retry).await?;
        let mesh = Mesh::open(
            client.clone(),
            config.nats.replicas,
            config.nats.jetstream_timeout,
        )
        .await?;
        let worker = Arc::new(Worker::new(kind, instance.clone(), config, mesh));
        let stats_worker = worker.clone();
        let service = client
            .service_builder()
            .description(format!("lexmesh {} (instance {instance})", kind.name()))
            .metadata([("instance".to_string(), instance.clone())].into())
            .stats_handler(move |_endpoint, _stats| {
                serde_json::to_value(stats_worker.metrics()).unwrap_or_default()
            })
            .start(kind.service_api_name(), VERSION)
            .await
            .map_err(|e| RuntimeError::Nats {
                what: "registering with the NATS service API".into(),
                source: e,
            })?;
        worker.set_service_id(service.info().await.id);
        let mut runtime = Self {
            worker,
            service,
            tasks: JoinSet::new(),
            job_loops: JoinSet::new(),
        };
        let any = runtime.endpoint("status").await?;
        let this = runtime
            .service
            .group(format!("lexmesh.api.{}.{instance}", kind.name()))
            .endpoint("status")
            .await
            .map_err(|e| RuntimeError::Nats {
                what: "adding the instance status endpoint".into(),
                source: e,
            })?;
        for endpoint in [any, this] {
            let worker = runtime.worker.clone();
            runtime.serve(endpoint, move |_request| {
                let worker = worker.clone();
                async move { serde_json::to_vec(&worker.status()).map_err(|e| e.to_string()) }
            });
        }
        runtime.start_heartbeats();
        runtime.start_metrics();
        runtime.start_cancel_listener().await?;
        runtime.start_signal_handler();
        tracing::info!(service = kind.name(), instance = %instance, "started");
        Ok(runtime)
    }

    /// An endpoint `lexmesh.api.<service>.<name>` of this service (queue group: one replica
    /// answers each request).
    pub async fn endpoint(&self, name: &str) -> Result<service::endpoint::Endpoint, RuntimeError> {
        self.service
            .group(subjects::api_group(self.worker.service.name()))
            .endpoint(name)
            .await
            .map_err(|e| RuntimeError::Nats {
                what: format!("adding endpoint {name}"),
                source: e,
            })
    }

    /// Answers each request of `endpoint` with `handler`, each in its own task, until shutdown.
    /// The handler returns the reply body, or an error text that becomes the service-API error.
    pub fn serve<F, Fut>(&mut self, mut endpoint: service::endpoint::Endpoint, handler: F)
    where
        F: Fn(async_nats::Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
    {
        let shutdown = self.worker.shutdown.clone();
        let handler = Arc::new(handler);
        self.tasks.spawn(async move {
            loop {
                let request = tokio::select! {
                    r = endpoint.next() => match r { Some(r) => r, None => break },
                    _ = shutdown.cancelled() => break,
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    // Each request is a span in the caller's trace; the reply carries the trace
                    // on (this span's context, or the caller's own when no spans are exported).
                    let subject = request.message.subject.to_string();
                    let span = tracing::info_span!(
                        "request",
                        otel.name = %subject,
                        otel.kind = "server",
                    );
                    let incoming = request.message.headers.clone();
                    crate::telemetry::set_parent_from_headers(&span, incoming.as_ref());
                    let result = handler(request_clone(&request))
                        .instrument(span.clone())
                        .await;
                    let headers = crate::telemetry::outgoing_headers(&span, incoming.as_ref());
                    let reply = match result {
                        Ok(body) => {
                            request
                                .respond_with_headers(Ok(Bytes::from(body)), headers)
                                .await
                        }
                        Err(text) => {
                            request
                                .respond_with_headers(
                                    Err(service::error::Error {
                                        status: text,
                                        code: 500,
                                    }),
                                    headers,
                                )
                                .await
                        }
                    };
                    if let Err(e) = reply {
                        tracing::debug!("replying failed: {e}");
                    }
                });
            }
            let _ = endpoint.stop().await;
        });
    }

    /// Runs `task` alongside the service; it should end when [`Worker::shutdown`] is
    /// cancelled, and is waited for before the connection is drained.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Runs jobs with `handler` until shutdown.
    pub fn run_jobs<H: JobHandler>(&mut self, handler: H) {
        let worker = self.worker.clone();
        self.job_loops
            .spawn(async move { job_loop::run(worker, Arc::new(handler)).await });
    }

    fn start_heartbeats(&mut self) {
        let worker = self.worker.clone();
        self.tasks.spawn(async move {
            let subject = subjects::heartbeat(worker.service.name(), &worker.instance);
            let mut tick = tokio::time::interval(worker.config.service.heartbeat_interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    // A job started or ended: say so now, not up to an interval later.
                    _ = worker.running_changed() => {}
                    _ = worker.shutdown.cancelled() => break,
                }
                send_heartbeat(&worker, &subject, false).await;
            }
        });
    }

    /// The responsiveness tick (how late it fires is the runtime's response time) and the
    /// metrics reports on `lexmesh.metrics.<service>.<instance>`.
    fn start_metrics(&mut self) {
        let worker = self.worker.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(worker.config.service.tick_interval);
            // A late tick is measured once; the next is scheduled a period after it.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let due = tokio::select! {
                    due = tick.tick() => due,
                    _ = worker.shutdown.cancelled() => break,
                };
                worker.record_tick_lateness(
                    tokio::time::Instant::now().saturating_duration_since(due),
                );
            }
        });
        let worker = self.worker.clone();
        self.tasks.spawn(async move {
            let subject = subjects::metrics(worker.service.name(), &worker.instance);
            let every = worker.config.service.metrics_interval;
            // The first report after one interval, when there is something to report.
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = worker.shutdown.cancelled() => break,
                }
                match serde_json::to_vec(&worker.metrics()) {
                    Ok(body) => {
                        if let Err(e) = worker
                            .mesh
                            .client
                            .publish(subject.clone(), body.into())
                            .await
                        {
                            tracing::debug!("metrics report not sent: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("metrics report not serialised: {e}"),
                }
            }
        });
    }

    async fn start_cancel_listener(&mut self) -> Result<(), RuntimeError> {
        let mut subscription = self
            .worker
            .mesh
            .client
            .subscribe(subjects::ALL_CANCELS)
            .await
            .map_err(RuntimeError::nats("subscribing to cancel requests"))?;
        let worker = self.worker.clone();
        self.tasks.spawn(async move {
            loop {
                let message = tokio::select! {
                    m = subscription.next() => match m { Some(m) => m, None => break },
                    _ = worker.shutdown.cancelled() => break,
                };
                let worker = worker.clone();
                tokio::spawn(async move { handle_cancel(&worker, message).await });
            }
        });
        Ok(())
    }

    fn start_signal_handler(&mut self) {
        let shutdown = self.worker.shutdown.clone();
        let supervisor = supervisor_pid();
        self.tasks.spawn(async move {
            let terminate = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
                _ = terminate => tracing::info!("SIGTERM: shutting down"),
                pid = supervisor_gone(supervisor) => {
                    tracing::warn!("the supervisor that started this instance (pid {pid}) is gone: shutting down");
                }
                _ = shutdown.cancelled() => return,
            }
            shutdown.cancel();
        });
    }

    /// Waits for shutdown (a signal, or [`Worker::shutdown`] cancelled), lets running jobs end,
    /// stops the service and drains the connection.
    pub async fn run_until_shutdown(mut self) -> Result<(), RuntimeError> {
        let mut first_error = None;
        loop {
            tokio::select! {
                _ = self.worker.shutdown.cancelled() => break,
                done = self.job_loops.join_next(), if !self.job_loops.is_empty() => {
                    if let Some(Ok(Err(e))) = done {
                        tracing::error!("a job loop stopped: {e}");
                        first_error.get_or_insert(e);
                        self.worker.shutdown.cancel();
                    }
                }
            }
        }
        while let Some(done) = self.job_loops.join_next().await {
            if let Ok(Err(e)) = done {
                first_error.get_or_insert(e);
            }
        }
        while self.tasks.join_next().await.is_some() {}
        // Goodbye: the health service marks this instance stopped instead of unresponsive.
        let subject = subjects::heartbeat(self.worker.service.name(), &self.worker.instance);
        send_heartbeat(&self.worker, &subject, true).await;
        let _ = self.service.stop().await;
        crate::connection::close(
            &self.worker.mesh.client,
            self.worker.config.nats.request_timeout,
        )
        .await;
        tracing::info!("stopped");
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Fails at start-up, not at the first job, when the scratch folder cannot be written.
fn check_work_dir(dir: &std::path::Path) -> Result<(), RuntimeError> {
    let unusable = |e: std::io::Error| RuntimeError::Unusable {
        setting: "service.work_dir".into(),
        reason: format!("{} cannot be used: {e}", dir.display()),
    };
    std::fs::create_dir_all(dir).map_err(unusable)?;
    let probe = dir.join(format!(".lexmesh-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(unusable)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Publishes one heartbeat (a lost one is only logged: the next follows within an interval).
async fn send_heartbeat(worker: &Worker, subject: &str, stopping: bool) {
    match serde_json::to_vec(&worker.heartbeat(stopping)) {
        Ok(body) => {
            if let Err(e) = worker
                .mesh
                .client
                .publish(subject.to_string(), body.into())
                .await
            {
                tracing::debug!("heartbeat not sent: {e}");
            }
        }
        Err(e) => tracing::warn!("heartbeat not serialised: {e}"),
    }
}

fn request_clone(request: &service::Request) -> async_nats::Message {
    request.message.clone()
}

/// How long an instance that does not run a cancelled job waits before answering `recorded`.
pub const RECORDED_REPLY_DELAY: std::time::Duration = std::time::Duration::from_millis(300);

async fn handle_cancel(worker: &Worker, message: async_nats::Message) {
    let reply = |body: Vec<u8>| async {
        if let Some(reply) = &message.reply
            && let Err(e) = worker.mesh.client.publish(reply.clone(), body.into()).await
        {
            tracing::debug!("cancel reply failed: {e}");
        }
    };
    let request: CancelRequest = match decode(&message.payload) {
        Ok(r) => r,
        Err(error) => {
            reply(error_reply(&error)).await;
            return;
        }
    };
    let job_id = request.job_id.clone();
    if message.subject.as_str() != subjects::cancel(&job_id) {
        let error = ProtocolError::new(
            lexmesh_protocol::ErrorCode::JobIdMismatch,
            format!(
                "job_id `{job_id}` does not match subject {}",
                message.subject
            ),
        );
        reply(error_reply(&error)).await;
        return;
    }
    let outcome = if worker.cancel_local(&job_id) {
        tracing::info!(job = %job_id, "cancel requested");
        Some(CancelOutcome::Cancelling)
    } else {
        match records::read(&worker.mesh.jobs, &job_id).await {
            Ok(Some((record, _))) if record.status.is_final() => {
                Some(CancelOutcome::AlreadyFinished)
            }
            _ => {
                let reason = request.reason.as_deref().unwrap_or("cancelled");
                if let Err(e) = records::mark_cancelled(&worker.mesh.jobs, &job_id, reason).await {
                    tracing::warn!(job = %job_id, "cannot record the cancel: {e}");
                }
                // Not ours: answer late, so that the instance running the job (which answers
                // at once) is the reply a requester sees.
                tokio::time::sleep(RECORDED_REPLY_DELAY).await;
                Some(CancelOutcome::Recorded)
            }
        }
    };
    if let Some(outcome) = outcome {
        let body = serde_json::to_vec(&CancelReply {
            job_id,
            outcome,
            instance: worker.instance.clone(),
        })
        .unwrap_or_default();
        reply(body).await;
    }
}

/// The JSON body of an error reply.
pub fn error_reply(error: &ProtocolError) -> Vec<u8> {
    serde_json::to_vec(&ErrorReply::from(error)).unwrap_or_default()
}

/// Environment variable by which a supervisor (`lexmesh up`) gives its pid to the instances it
/// starts: an instance whose supervisor dies, even by SIGKILL, shuts down (handing its jobs
/// back) instead of running on as an orphan.
pub const SUPERVISOR_PID_ENV: &str = "LEXMESH_SUPERVISOR_PID";

/// How often an instance checks that its supervisor is still its parent.
const SUPERVISOR_CHECK: Duration = Duration::from_millis(250);

/// The supervisor's pid, when one started this process (`LEXMESH_SUPERVISOR_PID`). It is read
/// whether or not the supervisor is still the parent: one that died between starting this
/// process and this check (while it connected, say) must stop it just the same.
fn supervisor_pid() -> Option<u32> {
    std::env::var(SUPERVISOR_PID_ENV).ok()?.trim().parse().ok()
}

/// Resolves (with the supervisor's pid) once this process is not the supervisor's child: the
/// supervisor died and the process was given to another parent, at once when that happened
/// before the first check. Never without a supervisor.
async fn supervisor_gone(supervisor: Option<u32>) -> u32 {
    let Some(pid) = supervisor else {
        return std::future::pending().await;
    };
    loop {
        if std::os::unix::process::parent_id() != pid {
            return pid;
        }
        tokio::time::sleep(SUPERVISOR_CHECK).await;
    }
}
