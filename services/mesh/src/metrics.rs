//! The metrics service: gathers every instance's reports (`lexmesh.metrics.>`) and the job
//! events (`lexmesh.events.>`), serves them to Prometheus on HTTP `/metrics`, answers
//! `lexmesh.api.metrics.snapshot` (for `lexmesh status` and `lexmesh top`), raises and
//! clears threshold alerts on `lexmesh.alerts.<kind>`, and serves the dashboard on the same
//! HTTP endpoint ([`crate::console`]).
//!
//! Several replicas may run: each keeps the whole picture and serves it; the one holding the
//! `metrics` lease publishes the alerts, so each is published once.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use lexmesh_metrics::MetricsState;
use lexmesh_protocol::alert::Alert;
use lexmesh_protocol::health::HealthEvent;
use lexmesh_protocol::metrics::WorkerMetrics;
use lexmesh_protocol::time::now_ms;
use lexmesh_protocol::{JobEvent, decode, names, subjects};
use lexmesh_runtime::{RuntimeError, ServiceRuntime, Worker};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use lexmesh_runtime::alerts::publish_alert;
use lexmesh_runtime::lease::{Leadership, Lease};

use crate::console::{Body, Console};

/// How often instances that stopped reporting are looked for, and the lease renewed.
const TICK: Duration = Duration::from_millis(500);

/// The content type of the OpenMetrics text that prometheus-client writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn lock(state: &Mutex<MetricsState>) -> std::sync::MutexGuard<'_, MetricsState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the metrics service on `runtime`.
pub async fn start(runtime: &mut ServiceRuntime) -> anyhow::Result<()> {
    let worker = runtime.worker.clone();
    let config = worker.config.metrics.clone();
    config
        .alerts
        .validate()
        .context("invalid [metrics.alerts] configuration")?;
    let listener = match TcpListener::bind(&config.listen).await {
        Ok(listener) => listener,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(crate::Unusable(format!(
                "cannot listen on {} (metrics.listen): the address is already in use, \
                 another metrics instance or mesh may hold it; choose another port with \
                 LEXMESH_METRICS__LISTEN or [metrics] listen",
                config.listen
            ))
            .into());
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot listen on {} (metrics.listen)",
                config.listen
            )));
        }
    };
    let address = listener.local_addr().context("reading the bound address")?;
    let state = Arc::new(Mutex::new(MetricsState::new(
        config.alerts.clone(),
        worker.instance.clone(),
    )));
    let client = &worker.mesh.client;
    let subscribe = |subject: &'static str| async move {
        client
            .subscribe(subject)
            .await
            .map_err(RuntimeError::nats("subscribing for the metrics service"))
    };
    let reports = subscribe(subjects::ALL_METRICS).await?;
    let events = subscribe(subjects::ALL_EVENTS).await?;
    let alerts = subscribe(subjects::ALL_ALERTS).await?;
    let health = subscribe(subjects::ALL_HEALTH).await?;
    let console = Arc::new(Console::new(worker.clone(), config.console_actions));

    let endpoint = runtime.endpoint("snapshot").await?;
    {
        let state = state.clone();
        runtime.serve(endpoint, move |_request| {
            let snapshot = lock(&state).snapshot(now_ms());
            async move { serde_json::to_vec(&snapshot).map_err(|e| e.to_string()) }
        });
    }
    runtime.spawn(serve_http(
        listener,
        state.clone(),
        console.clone(),
        worker.shutdown.clone(),
    ));
    tracing::info!("serving Prometheus metrics on http://{address}/metrics");
    tracing::info!(
        actions = config.console_actions,
        "serving the dashboard on http://{address}/"
    );
    let service = MetricsService {
        lease: Lease::new(
            names::METRICS_LEASE,
            worker.instance.clone(),
            config.lease_ttl,
        ),
        forget_after_ms: config.forget_after.as_secs_f64() * 1000.0,
        worker,
        state,
        console,
    };
    runtime.spawn(service.run(reports, events, alerts, health));
    Ok(())
}

struct MetricsService {
    worker: Arc<Worker>,
    state: Arc<Mutex<MetricsState>>,
    lease: Lease,
    forget_after_ms: f64,
    console: Arc<Console>,
}

impl MetricsService {
    async fn run(
        mut self,
        mut reports: async_nats::Subscriber,
        mut events: async_nats::Subscriber,
        mut alerts: async_nats::Subscriber,
        mut health: async_nats::Subscriber,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.worker.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(message) = reports.next() => {
                    match decode::<WorkerMetrics>(&message.payload) {
                        Ok(report) => {
                            self.worker.record_message_latency(report.timestamp_ms);
                            self.console.on_report(&report);
                            let changes = lock(&self.state).on_report(report);
                            self.publish(&changes).await;
                        }
                        Err(e) => tracing::warn!(subject = %message.subject, "unreadable metrics report: {e}"),
                    }
                }
                Some(message) = events.next() => {
                    let received_ms = now_ms();
                    match decode::<JobEvent>(&message.payload) {
                        Ok(event) => {
                            self.worker.record_message_latency(event.timestamp_ms());
                            lock(&self.state).on_event(&event, received_ms);
                            self.console.forward("job", &event);
                        }
                        // Malformed events are the publisher's problem; the job services
                        // never publish one, so this is someone else's traffic.
                        Err(e) => tracing::debug!(subject = %message.subject, "unreadable job event: {e}"),
                    }
                }
                Some(message) = alerts.next() => {
                    if let Ok(alert) = decode::<Alert>(&message.payload) {
                        lock(&self.state).on_alert(&alert);
                        self.console.forward("alert", &alert);
                    }
                }
                Some(message) = health.next() => {
                    if let Ok(event) = decode::<HealthEvent>(&message.payload) {
                        self.console.forward("health", &event);
                    }
                }
                _ = tick.tick() => self.on_tick().await,
            }
        }
        self.lease.release(&self.worker.mesh.leases).await;
    }

    async fn on_tick(&mut self) {
        match self.lease.tick(&self.worker.mesh.leases).await {
            Leadership::Gained => {
                tracing::info!("became the metrics leader (publishes alerts)");
                // Alerts raised while no replica led (at start, or while the lease passed
                // from a lost leader) are announced now.
                let active = lock(&self.state).own_alerts();
                self.publish(&active).await;
            }
            Leadership::Lost => tracing::info!("is no longer the metrics leader"),
            Leadership::Same => {}
        }
        let cleared = {
            let mut state = lock(&self.state);
            let cleared = state.expire(now_ms(), self.forget_after_ms);
            self.console.retain(|instance| state.knows(instance));
            cleared
        };
        self.publish(&cleared).await;
    }

    /// Publishes alert transitions (the leader only; every replica logs them at debug level).
    async fn publish(&self, changes: &[Alert]) {
        for alert in changes {
            if self.lease.held() {
                publish_alert(&self.worker.mesh.client, alert).await;
            } else {
                tracing::debug!(kind = %alert.kind, instance = %alert.instance, "alert {:?} (not the leader: not published)", alert.state);
            }
        }
    }
}

/// Serves `GET /metrics` and the dashboard until shutdown.
async fn serve_http(
    listener: TcpListener,
    state: Arc<Mutex<MetricsState>>,
    console: Arc<Console>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let state = state.clone();
        let console = console.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                let console = console.clone();
                async move { Ok::<_, Infallible>(answer(&request, &state, &console).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                done = connection => if let Err(e) = done {
                    tracing::debug!(%peer, "metrics endpoint connection: {e}");
                },
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

async fn answer(
    request: &Request<Incoming>,
    state: &Mutex<MetricsState>,
    console: &Console,
) -> Response<Body> {
    let path = request.uri().path();
    if path != "/metrics" {
        let snapshot = || lock(state).snapshot(now_ms());
        return console
            .answer(request.method(), path, request.headers(), snapshot)
            .await;
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return crate::console::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served\n".into(),
        );
    }
    match lock(state).encode() {
        Ok(body) => {
            let mut response = crate::console::text(StatusCode::OK, body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(OPENMETRICS),
            );
            response
        }
        Err(e) => crate::console::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics failed: {e}\n"),
        ),
    }
}
