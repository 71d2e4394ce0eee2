//! The dashboard: a web page served by the metrics service next to `/metrics`, live through
//! Server-Sent Events that this service bridges from NATS.
//!
//! - `GET /` (and `/console.js`, `/console.css`): the page, from files compiled into the
//!   binary (`console/`), no third-party code, no CDN.
//! - `GET /api/state`: what the page starts from: the metrics snapshot (instances, trainings,
//!   alerts), each instance's recent CPU and memory, the health service's view of the
//!   instances, and the most recent job records.
//! - `GET /api/jobs/<id>/events`: every stored event of one job (its curves so far).
//! - `GET /api/events`: the live stream: job events, metrics reports, alerts and health
//!   events as they reach this service (`event: job|metrics|alert|health`), `event: ping`
//!   after [`PING`] of silence so that a lost connection is noticed, `event: resync` when this client fell
//!   behind and must read `/api/state` again.
//! - `POST /api/jobs/<id>/cancel`: cancels the job (as `lexmesh cancel` does) when
//!   `metrics.console_actions` is on; refused otherwise (the page is read-only by default).
//!   The request must carry `X-Lexmesh-Action: cancel`, which a page of another origin cannot
//!   send without a CORS preflight that this server never grants.
//!
//! Why SSE and not the browser on NATS over WebSocket: the page needs no NATS credentials, no
//! client library and no port besides this one; the browser reads only what this service
//! chooses to forward; any HTTP ingress with authentication can front it.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Response, StatusCode, header};
use lexmesh_protocol::health::HealthReport;
use lexmesh_protocol::metrics::{MetricsSnapshot, WorkerMetrics};
use lexmesh_protocol::record::JobRecord;
use lexmesh_protocol::time::now_ms;
use lexmesh_protocol::{JobEvent, names, subjects};
use lexmesh_runtime::Worker;
use lexmesh_runtime::cancel::{CancelError, Cancelled, cancel, describe};
use lexmesh_runtime::records;
use serde::Serialize;
use tokio::sync::broadcast;

/// The body every answer of the metrics service's HTTP endpoint has.
pub type Body = BoxBody<Bytes, Infallible>;

/// After how long without a message an event stream sends a ping (the page counts a
/// connection silent for three of these as lost).
pub const PING: Duration = Duration::from_secs(5);

/// Messages a slow page may fall behind before it is told to read the state again.
const BACKLOG: usize = 1024;

/// Job records `/api/state` returns, the most recently changed first.
const JOBS_SHOWN: usize = 200;

/// Reports per instance kept for its sparklines.
const HISTORY: usize = 120;

/// Events of one job `/api/jobs/<id>/events` returns at most.
const JOB_EVENTS: u64 = 20_000;

/// How long the health service has to say how it sees the instances.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(800);

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");

/// One instance's recent figures (for the sparklines).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// When the report was made (ms since the Unix epoch).
    pub timestamp_ms: f64,
    /// CPU, percent of the cores it may use.
    pub cpu_percent: f64,
    /// Resident memory.
    pub rss_bytes: u64,
}

/// What the page starts from.
#[derive(Debug, Serialize)]
pub struct ConsoleState {
    /// The metrics service instance that answers.
    pub source: String,
    /// Whether the page may cancel jobs.
    pub actions: bool,
    /// Instances, trainings and active alerts.
    pub metrics: MetricsSnapshot,
    /// Recent figures per instance, oldest first.
    pub history: HashMap<String, Vec<Sample>>,
    /// The health service's view, when it answered.
    pub health: Option<HealthReport>,
    /// The most recently changed job records.
    pub jobs: Vec<JobRecord>,
    /// When this was made.
    pub timestamp_ms: f64,
}

/// The dashboard's part of the metrics service: the live fan-out and the recent history.
pub struct Console {
    worker: Arc<Worker>,
    actions: bool,
    live: broadcast::Sender<Bytes>,
    history: Mutex<HashMap<String, VecDeque<Sample>>>,
}

impl Console {
    /// A console for the metrics service of `worker`.
    pub fn new(worker: Arc<Worker>, actions: bool) -> Self {
        let (live, _) = broadcast::channel(BACKLOG);
        Self {
            worker,
            actions,
            live,
            history: Mutex::new(HashMap::new()),
        }
    }

    /// Forwards a message to every open page as `event: <kind>`.
    pub fn forward(&self, kind: &str, value: &impl Serialize) {
        if self.live.receiver_count() == 0 {
            return;
        }
        match serde_json::to_string(value) {
            // serde_json's compact form has no line breaks, so it is one `data:` line.
            Ok(json) => {
                let _ = self
                    .live
                    .send(Bytes::from(format!("event: {kind}\ndata: {json}\n\n")));
            }
            Err(e) => tracing::warn!("console: a {kind} message not encoded: {e}"),
        }
    }

    /// Notes a metrics report (history) and forwards it.
    pub fn on_report(&self, report: &WorkerMetrics) {
        {
            let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            let samples = history.entry(report.instance.clone()).or_default();
            samples.push_back(Sample {
                timestamp_ms: report.timestamp_ms,
                cpu_percent: report.cpu_percent,
                rss_bytes: report.rss_bytes,
            });
            while samples.len() > HISTORY {
                samples.pop_front();
            }
        }
        self.forward("metrics", report);
    }

    /// Keeps the history of the instances `known` still knows, and drops the rest.
    pub fn retain(&self, known: impl Fn(&str) -> bool) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.retain(|instance, _| known(instance));
    }

    /// Answers a request whose path is not `/metrics`.
    pub async fn answer(
        &self,
        method: &Method,
        path: &str,
        headers: &header::HeaderMap,
        snapshot: impl FnOnce() -> MetricsSnapshot,
    ) -> Response<Body> {
        let get = method == Method::GET || method == Method::HEAD;
        match (path, get) {
            ("/" | "/index.html", true) => asset(INDEX_HTML, "text/html; charset=utf-8"),
            ("/console.js", true) => asset(CONSOLE_JS, "text/javascript; charset=utf-8"),
            ("/console.css", true) => asset(CONSOLE_CSS, "text/css; charset=utf-8"),
            ("/api/state", true) => json(StatusCode::OK, &self.state(snapshot()).await),
            ("/api/events", true) => self.events(),
            _ => match job_path(path) {
                Some((job_id, "events")) if get => self.job_events(job_id).await,
                Some((job_id, "cancel")) if method == Method::POST => {
                    self.cancel(job_id, headers).await
                }
                Some((_, "events" | "cancel")) => text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "events are read with GET, a cancel is a POST\n".into(),
                ),
                _ if !get => text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{path}: only GET is served here\n"),
                ),
                _ => text(
                    StatusCode::NOT_FOUND,
                    format!("{path} not found; the dashboard is at /, metrics at /metrics\n"),
                ),
            },
        }
    }

    async fn state(&self, metrics: MetricsSnapshot) -> ConsoleState {
        let mesh = &self.worker.mesh;
        let health = async {
            let reply = mesh
                .client
                .send_request(
                    subjects::HEALTH_INSTANCES,
                    async_nats::Request::new()
                        .payload(Bytes::new())
                        .timeout(Some(HEALTH_TIMEOUT)),
                )
                .await
                .ok()?;
            serde_json::from_slice::<HealthReport>(&reply.payload).ok()
        };
        let jobs = async {
            match records::list(&mesh.jobs).await {
                Ok(mut jobs) => {
                    jobs.sort_by(|a, b| b.updated_ms.total_cmp(&a.updated_ms));
                    jobs.truncate(JOBS_SHOWN);
                    jobs
                }
                Err(e) => {
                    tracing::warn!("console: cannot list the job records: {e}");
                    Vec::new()
                }
            }
        };
        let (health, jobs) = tokio::join!(health, jobs);
        let history = self
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(instance, samples)| (instance.clone(), samples.iter().copied().collect()))
            .collect();
        ConsoleState {
            source: self.worker.instance.clone(),
            actions: self.actions,
            metrics,
            history,
            health,
            jobs,
            timestamp_ms: now_ms(),
        }
    }

    fn events(&self) -> Response<Body> {
        let receiver = self.live.subscribe();
        let hello = Bytes::from(format!(
            "retry: 1000\nevent: hello\ndata: {{\"source\":{}}}\n\n",
            serde_json::to_string(&self.worker.instance).unwrap_or_else(|_| "\"?\"".into())
        ));
        let stream = futures::stream::once(async move { hello }).chain(futures::stream::unfold(
            receiver,
            |mut receiver| async move {
                let next = tokio::select! {
                    message = receiver.recv() => match message {
                        Ok(bytes) => bytes,
                        Err(broadcast::error::RecvError::Lagged(missed)) => Bytes::from(format!(
                            "event: resync\ndata: {{\"missed\":{missed}}}\n\n"
                        )),
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    () = tokio::time::sleep(PING) => Bytes::from_static(b"event: ping\ndata: {}\n\n"),
                };
                Some((next, receiver))
            },
        ));
        let body = StreamBody::new(stream.map(|bytes| Ok::<_, Infallible>(Frame::data(bytes))));
        let mut response = Response::new(BodyExt::boxed(body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        // A proxy in front (nginx, an ingress) must pass each message on at once.
        headers.insert("x-accel-buffering", header::HeaderValue::from_static("no"));
        response
    }

    async fn job_events(&self, job_id: &str) -> Response<Body> {
        if !lexmesh_protocol::valid_id(job_id) {
            return text(
                StatusCode::BAD_REQUEST,
                format!("`{job_id}` is not a job id\n"),
            );
        }
        match stored_events(&self.worker, job_id).await {
            Ok(events) => json(StatusCode::OK, &events),
            Err(e) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the events of {job_id}: {e}\n"),
            ),
        }
    }

    async fn cancel(&self, job_id: &str, headers: &header::HeaderMap) -> Response<Body> {
        if !self.actions {
            return text(
                StatusCode::FORBIDDEN,
                "the dashboard is read-only: set metrics.console_actions = true to allow \
                 cancelling from it\n"
                    .into(),
            );
        }
        if headers
            .get("x-lexmesh-action")
            .and_then(|v| v.to_str().ok())
            != Some("cancel")
        {
            return text(
                StatusCode::FORBIDDEN,
                "a cancel must carry the header X-Lexmesh-Action: cancel\n".into(),
            );
        }
        let reason = "cancelled from the dashboard";
        match cancel(&self.worker.mesh, job_id, reason).await {
            Ok(done) => {
                let line = describe(job_id, &done);
                tracing::info!(job = %job_id, "{line}");
                let status = match done {
                    Cancelled::Answered(_) | Cancelled::Recorded { finished: false } => {
                        StatusCode::ACCEPTED
                    }
                    Cancelled::Recorded { finished: true } => StatusCode::OK,
                };
                json(
                    status,
                    &serde_json::json!({ "job_id": job_id, "message": line }),
                )
            }
            Err(e @ CancelError::InvalidId(_)) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            Err(e @ CancelError::NoSuchJob(_)) => text(StatusCode::NOT_FOUND, format!("{e}\n")),
            Err(e @ CancelError::Refused { .. }) => text(StatusCode::CONFLICT, format!("{e}\n")),
            Err(e @ CancelError::Runtime(_)) => {
                text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
            }
        }
    }
}

/// `/api/jobs/<id>/<what>` → `(id, what)`.
fn job_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/jobs/")?;
    let (job_id, what) = rest.split_once('/')?;
    Some((job_id, what))
}

/// Every stored event of `job_id`, in order (an ordered consumer on the events stream, read
/// up to what was pending when it was made).
async fn stored_events(worker: &Worker, job_id: &str) -> anyhow::Result<Vec<JobEvent>> {
    let stream = worker.mesh.js.get_stream(names::EVENTS_STREAM).await?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subjects::events_of(job_id),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending.min(JOB_EVENTS);
    let mut events = Vec::with_capacity(usize::try_from(pending).unwrap_or(0));
    if pending == 0 {
        return Ok(events);
    }
    let mut messages = consumer.messages().await?;
    let mut read = 0;
    while read < pending {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .map_err(|_| anyhow::anyhow!("the events stream stopped answering"))?
            .ok_or_else(|| anyhow::anyhow!("the events subscription ended"))??;
        read += 1;
        if let Ok(event) = lexmesh_protocol::decode::<JobEvent>(&message.payload) {
            events.push(event);
        }
    }
    Ok(events)
}

fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    full(
        StatusCode::OK,
        content_type,
        Bytes::from_static(body.as_bytes()),
    )
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: String) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", Bytes::from(body))
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => full(status, "application/json", Bytes::from(body)),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer failed: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_paths_name_the_job_and_what_is_asked() {
        assert_eq!(job_path("/api/jobs/j-1/events"), Some(("j-1", "events")));
        assert_eq!(job_path("/api/jobs/j-1/cancel"), Some(("j-1", "cancel")));
        assert_eq!(job_path("/api/jobs/j-1"), None);
        assert_eq!(job_path("/api/state"), None);
    }
}
