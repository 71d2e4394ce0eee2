//! The mesh under test: a private nats-server, the `lexmesh serve` processes started on it
//! (their logs and work folders in the test's temporary folder), and a client that speaks raw
//! JSON only, as a foreign system would. Every message the mesh reads back (replies, status,
//! job records) is checked against the JSON Schemas of `schemas/`; an invalid one fails the
//! test.
//!
//! The `lexmesh` binary is the caller's: only an integration test or bench of the root crate
//! knows it (`env!("CARGO_BIN_EXE_lexmesh")`).
#![allow(
    clippy::expect_used,
    reason = "a harness fails the test with a message when the mesh cannot be set up"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::events::{EventLog, EventWatch};
use crate::heartbeats::Heartbeats;
use crate::process::{ChildProcess, ServiceProcess};
use crate::schemas::{Schemas, short};
use crate::server::{NatsServer, ServerFlavor};
use crate::subjects::{JOBS_BUCKET, JOBS_STREAM, status_subject};
use crate::up::UpProcess;
use crate::wait::eventually;

/// `max_payload` of the test servers: twice lexmesh's own 4 MiB limit, so an oversize job
/// reaches the services and is rejected by them rather than by the server.
pub const MAX_PAYLOAD: u64 = 8 * 1024 * 1024;

/// How long a service may take to answer its first status request (the default of
/// [`TestMeshBuilder::ready_timeout`]).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Default wait for one request/reply (the default of [`TestMeshBuilder::request_timeout`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Default wait for a small job to reach its final event.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(45);

/// The environment every service process of a test gets by default (see
/// [`TestMeshBuilder::service_env`]).
const TEST_SERVICE_ENV: [(&str, &str); 3] = [
    ("LEXMESH_SERVICE__COMPUTE_THREADS", "1"),
    ("LEXMESH_LOG", "info"),
    // Tests run side by side: no fixed Prometheus port.
    ("LEXMESH_METRICS__LISTEN", "127.0.0.1:0"),
];

/// Every stream lexmesh creates (KV buckets and object stores are streams too).
pub const MESH_STREAMS: [&str; 11] = [
    "LEXMESH_JOBS",
    "LEXMESH_EVENTS",
    "LEXMESH_DEADLETTER",
    "LEXMESH_ADVISORIES",
    "KV_lexmesh_jobs",
    "KV_lexmesh_leases",
    "KV_lexmesh_instances",
    "KV_lexmesh_searches",
    "OBJ_lexmesh_datasets",
    "OBJ_lexmesh_checkpoints",
    "OBJ_lexmesh_models",
];

/// Options of a [`TestMesh`]; get one from [`TestMesh::builder`].
#[derive(Debug, Clone)]
pub struct TestMeshBuilder {
    binary: PathBuf,
    flavor: ServerFlavor,
    max_payload: Option<u64>,
    server_config: Option<String>,
    cluster: usize,
    service_env: Vec<(String, String)>,
    ready_timeout: Duration,
    request_timeout: Duration,
}

impl TestMeshBuilder {
    /// Which server to run (default [`ServerFlavor::Current`]).
    pub fn flavor(mut self, flavor: ServerFlavor) -> Self {
        self.flavor = flavor;
        self
    }

    /// The server's `max_payload` in bytes (default [`MAX_PAYLOAD`]).
    pub fn max_payload(mut self, bytes: u64) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Leaves the server's `max_payload` at nats-server's own default (1 MiB), as an outside
    /// publisher usually meets it.
    pub fn server_default_payload(mut self) -> Self {
        self.max_payload = None;
        self
    }

    /// More nats-server configuration (users, permissions, ...), added verbatim to the server's
    /// config file. The test client connects without credentials: give the server a
    /// `no_auth_user` when the configuration requires them.
    pub fn server_config(mut self, config: impl Into<String>) -> Self {
        self.server_config = Some(config.into());
        self
    }

    /// A JetStream cluster of `nodes` servers instead of one server ([`NatsServer::cluster`]):
    /// [`TestMesh::server`] is the first node, [`TestMesh::nodes`] all of them, and the
    /// services and the client get every node's URL. The start waits until the cluster's
    /// JetStream answers.
    pub fn cluster(mut self, nodes: usize) -> Self {
        self.cluster = nodes.max(1);
        self
    }

    /// The environment every `lexmesh serve` and `lexmesh up` of the mesh gets, in place of the
    /// tests' defaults (`LEXMESH_SERVICE__COMPUTE_THREADS=1`, `LEXMESH_LOG=info`,
    /// `LEXMESH_METRICS__LISTEN=127.0.0.1:0`). The server's URL, and for a service its
    /// instance id and work folder, are always set; what a single start passes comes last.
    pub fn service_env(mut self, env: &[(&str, &str)]) -> Self {
        self.service_env = env
            .iter()
            .map(|(key, value)| ((*key).to_string(), (*value).to_string()))
            .collect();
        self
    }

    /// How long [`TestMesh::wait_ready`] waits for a service's first status reply (default
    /// [`READY_TIMEOUT`]).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// The client's request timeout, also the default wait of the mesh's own requests
    /// (default [`REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Starts the server and connects the client.
    ///
    /// # Panics
    ///
    /// When the server does not start (the message says how to install one when none is
    /// found), or the client cannot connect.
    pub async fn start(self) -> TestMesh {
        let mut server = NatsServer::builder().flavor(self.flavor);
        if let Some(bytes) = self.max_payload {
            server = server.max_payload(bytes);
        }
        if let Some(config) = self.server_config {
            server = server.extra_config(config);
        }
        let (server, peers) = if self.cluster > 1 {
            let mut nodes = NatsServer::cluster(self.cluster).unwrap_or_else(|e| {
                panic!("start a {}-node nats-server cluster: {e}", self.cluster)
            });
            let first = nodes.remove(0);
            (first, nodes)
        } else {
            let server = server
                .start()
                .unwrap_or_else(|e| panic!("start a private nats-server ({:?}): {e}", self.flavor));
            (server, Vec::new())
        };
        let urls = std::iter::once(&server)
            .chain(&peers)
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",");
        let client = async_nats::ConnectOptions::new()
            .name("lexmesh-mesh-test")
            .request_timeout(Some(self.request_timeout))
            .connect(
                urls.split(',')
                    .map(|u| u.parse::<async_nats::ServerAddr>().expect("a server URL"))
                    .collect::<Vec<_>>(),
            )
            .await
            .expect("connect the test client");
        if !peers.is_empty() {
            let js = async_nats::jetstream::new(client.clone());
            crate::eventually(
                "the cluster's JetStream answering",
                Duration::from_secs(30),
                || async { js.query_account().await.ok().map(|_| ()) },
            )
            .await;
        }
        let dir = tempfile::Builder::new()
            .prefix("lexmesh-mesh-test-")
            .tempdir()
            .expect("temporary folder");
        TestMesh {
            services: Vec::new(),
            client,
            schemas: Arc::new(Schemas::load()),
            server,
            peers,
            urls,
            dir: Some(dir),
            binary: self.binary,
            service_env: self.service_env,
            ready_timeout: self.ready_timeout,
            request_timeout: self.request_timeout,
        }
    }
}

/// A private nats-server, the service processes started on it, and a raw-JSON client.
pub struct TestMesh {
    // Dropped first: the services go before the server they talk to.
    services: Vec<ServiceProcess>,
    /// The client (core NATS only; no lexmesh types).
    pub client: async_nats::Client,
    /// Every schema of `schemas/`.
    pub schemas: Arc<Schemas>,
    /// The server (the first node of a cluster).
    pub server: NatsServer,
    /// The other nodes of a cluster.
    peers: Vec<NatsServer>,
    /// Every node's URL, comma-separated.
    urls: String,
    dir: Option<TempDir>,
    binary: PathBuf,
    service_env: Vec<(String, String)>,
    ready_timeout: Duration,
    request_timeout: Duration,
}

impl TestMesh {
    /// Options for a mesh whose services run `binary` (the `lexmesh` executable, e.g.
    /// `env!("CARGO_BIN_EXE_lexmesh")`).
    pub fn builder(binary: impl Into<PathBuf>) -> TestMeshBuilder {
        TestMeshBuilder {
            binary: binary.into(),
            flavor: ServerFlavor::Current,
            max_payload: Some(MAX_PAYLOAD),
            server_config: None,
            cluster: 1,
            service_env: TEST_SERVICE_ENV
                .iter()
                .map(|(key, value)| ((*key).to_string(), (*value).to_string()))
                .collect(),
            ready_timeout: READY_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
        }
    }

    /// A current (2.10+) server with `max_payload` 8 MiB, and a client connected to it.
    ///
    /// # Panics
    ///
    /// As [`TestMeshBuilder::start`].
    pub async fn start(binary: impl Into<PathBuf>) -> Self {
        Self::builder(binary).start().await
    }

    /// A current server with nats-server's own default `max_payload` (1 MiB), as an outside
    /// publisher usually meets it.
    ///
    /// # Panics
    ///
    /// As [`TestMeshBuilder::start`].
    pub async fn start_default_payload(binary: impl Into<PathBuf>) -> Self {
        Self::builder(binary).server_default_payload().start().await
    }

    /// Debian's nats-server 2.9.10, with `max_payload` 8 MiB.
    ///
    /// # Panics
    ///
    /// When Debian's 2.9 binary is absent, or as [`TestMeshBuilder::start`].
    pub async fn start_legacy(binary: impl Into<PathBuf>) -> Self {
        Self::builder(binary)
            .flavor(ServerFlavor::Legacy)
            .start()
            .await
    }

    /// The test's temporary folder (service logs, work folders).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temporary folder").path()
    }

    /// The `lexmesh` binary the services run.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// `lexmesh` in the test's folder, connected to the server, with the mesh's service
    /// environment; no configuration of the caller's environment leaks in.
    fn lexmesh_command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        // Inherited configuration must not leak into the services (nor ./lexmesh.toml of
        // the checkout: they run in the test's folder).
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if (name.starts_with("LEXMESH_") && name.contains("__")) || name == "NATS_URL" {
                command.env_remove(&key);
            }
        }
        command
            .current_dir(self.dir())
            .env("LEXMESH_NATS__URL", &self.urls);
        for (key, value) in &self.service_env {
            command.env(key, value);
        }
        command
    }

    /// Starts `lexmesh serve <service>` as `instance`, with `env` added (e.g.
    /// `("LEXMESH_JOBS__CONCURRENCY", "1")`); does not wait for it. Its log is
    /// `<dir>/<instance>.log`, its work folder `<dir>/work-<instance>`.
    ///
    /// # Panics
    ///
    /// When the process cannot be started.
    pub fn spawn(&mut self, service: &str, instance: &str, env: &[(&str, &str)]) {
        let log = self.dir().join(format!("{instance}.log"));
        let work = self.dir().join(format!("work-{instance}"));
        std::fs::create_dir_all(&work).expect("work folder");
        let mut command = self.lexmesh_command();
        command
            .args(["serve", service])
            .env("LEXMESH_SERVICE__INSTANCE", instance)
            .env("LEXMESH_SERVICE__WORK_DIR", &work);
        for (key, value) in env {
            command.env(key, value);
        }
        let process = ChildProcess::spawn(
            format!("lexmesh serve {service} ({instance})"),
            &mut command,
            log,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        self.services
            .push(ServiceProcess::new(service, instance, process));
    }

    /// Starts a service and waits until it answers its status request; returns the status.
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn) and [`wait_ready`](Self::wait_ready).
    pub async fn start_service(
        &mut self,
        service: &str,
        instance: &str,
        env: &[(&str, &str)],
    ) -> Value {
        self.spawn(service, instance, env);
        self.wait_ready(instance).await
    }

    /// Starts a preprocessor, a trainer and an evaluator (`preprocessor-a`, `trainer-a`,
    /// `evaluator-a`) with `env`, and waits for all three.
    ///
    /// # Panics
    ///
    /// As [`start_service`](Self::start_service).
    pub async fn start_all(&mut self, env: &[(&str, &str)]) {
        for (service, instance) in [
            ("preprocessor", "preprocessor-a"),
            ("trainer", "trainer-a"),
            ("evaluator", "evaluator-a"),
        ] {
            self.spawn(service, instance, env);
        }
        for instance in ["preprocessor-a", "trainer-a", "evaluator-a"] {
            self.wait_ready(instance).await;
        }
    }

    /// Starts `lexmesh up <args>` in the test's folder with `env` added, its stdout in
    /// `<dir>/up.stdout` and its stderr in `<dir>/up.stderr` (one `up` per mesh); does not wait
    /// for its replicas.
    ///
    /// # Panics
    ///
    /// When the process cannot be started.
    pub fn up(&self, args: &[&str], env: &[(&str, &str)]) -> UpProcess {
        let mut command = self.lexmesh_command();
        command.arg("up").args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        UpProcess::spawn(&mut command, self.dir())
    }

    /// Every node of the server (one unless a [`cluster`](TestMeshBuilder::cluster)).
    pub fn nodes(&mut self) -> impl Iterator<Item = &mut NatsServer> {
        std::iter::once(&mut self.server).chain(self.peers.iter_mut())
    }

    /// The URLs of every node, comma-separated (what the services connect to).
    pub fn nats_url(&self) -> &str {
        &self.urls
    }

    /// The process of `instance`: the latest one started under that name (an instance stopped
    /// and started again, as the mesh benchmark does between rounds, is the new process).
    ///
    /// # Panics
    ///
    /// When no such instance was started.
    pub fn process(&mut self, instance: &str) -> &mut ServiceProcess {
        self.services
            .iter_mut()
            .rev()
            .find(|p| p.instance == instance)
            .unwrap_or_else(|| panic!("no service instance `{instance}` was started"))
    }

    /// The address the metrics service `instance` serves Prometheus on, as its log says it once
    /// it is listening (`serving Prometheus metrics on http://<address>/metrics`): the port the
    /// system gave it when `metrics.listen` asked for port 0, as the tests' default
    /// `LEXMESH_METRICS__LISTEN=127.0.0.1:0` does.
    ///
    /// # Panics
    ///
    /// When no such instance was started, it exits first, or its log does not say so within
    /// the ready timeout.
    pub async fn metrics_address(&mut self, instance: &str) -> SocketAddr {
        let timeout = self.ready_timeout;
        self.process(instance)
            .wait_log_line("where it serves Prometheus metrics", timeout, |line| {
                let (_, rest) = line.split_once("serving Prometheus metrics on http://")?;
                let (address, _) = rest.split_once("/metrics")?;
                address.parse().ok()
            })
            .await
    }

    /// Polls `lexmesh.api.<service>.<instance>.status` until it answers (at most the ready
    /// timeout, [`READY_TIMEOUT`] unless set); fails at once when the process exits. The
    /// status is checked against `worker-status`.
    ///
    /// # Panics
    ///
    /// When the process exits, does not answer in time, or its status is invalid.
    pub async fn wait_ready(&mut self, instance: &str) -> Value {
        let service = self.process(instance).service.clone();
        let subject = status_subject(&service, instance);
        let timeout = self.ready_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let process = self.process(instance);
            if let Some(status) = process.exit_status() {
                panic!(
                    "lexmesh serve {service} ({instance}) exited with {status} before it was ready"
                );
            }
            if let Some(status) = self
                .try_status(&service, instance, Duration::from_secs(1))
                .await
            {
                self.check_status(&service, instance, &status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lexmesh serve {service} ({instance}) did not answer {subject} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The status of one instance (validated against `worker-status`).
    ///
    /// # Panics
    ///
    /// When there is no reply, or it is invalid.
    pub async fn status(&self, service: &str, instance: &str) -> Value {
        let status = self
            .request_raw(&status_subject(service, instance), Vec::new(), None)
            .await;
        self.check_status(service, instance, &status);
        status
    }

    /// The status of one instance as it answers within `timeout`, not validated; None when no
    /// JSON reply came (for polling a busy or starting instance).
    pub async fn try_status(
        &self,
        service: &str,
        instance: &str,
        timeout: Duration,
    ) -> Option<Value> {
        let request = async_nats::Request::new()
            .payload(Vec::new().into())
            .timeout(Some(timeout));
        let reply = self
            .client
            .send_request(status_subject(service, instance), request)
            .await
            .ok()?;
        serde_json::from_slice(&reply.payload).ok()
    }

    fn check_status(&self, service: &str, instance: &str, status: &Value) {
        self.schemas
            .check("worker-status", &format!("status of {instance}"), status);
        assert_eq!(status["service"], service, "{}", short(status));
        assert_eq!(status["instance"], instance, "{}", short(status));
    }

    /// Fails unless every started service process is running and answers its status request.
    ///
    /// # Panics
    ///
    /// When one has exited or does not answer with a valid status.
    pub async fn assert_all_serving(&mut self) {
        let started: Vec<(String, String)> = self
            .services
            .iter()
            .map(|p| (p.service.clone(), p.instance.clone()))
            .collect();
        for (service, instance) in started {
            let process = self.process(&instance);
            assert!(
                process.is_running(),
                "{instance} exited: {:?}",
                process.exit_status()
            );
            self.status(&service, &instance).await;
        }
    }

    /// Sends SIGTERM to every service and fails unless each exits with status 0 within
    /// `timeout`.
    ///
    /// # Panics
    ///
    /// When one cannot be signalled, does not exit in time, or exits with an error.
    pub async fn shutdown_all(&mut self, timeout: Duration) {
        for process in &mut self.services {
            process.terminate();
        }
        for process in &mut self.services {
            match process.wait_exit(timeout).await {
                Some(status) => assert!(
                    status.success(),
                    "{} exited with {status} after SIGTERM",
                    process.instance
                ),
                None => panic!("{} still runs {timeout:?} after SIGTERM", process.instance),
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Raw-JSON client
    // -----------------------------------------------------------------------------------------

    /// Publishes a job through JetStream with `Nats-Msg-Id: <job_id>`; returns the server's
    /// acknowledgement as JSON (`{"stream","seq"[,"duplicate"]}`).
    ///
    /// # Panics
    ///
    /// When the job has no string `job_id`, or JetStream refuses it.
    pub async fn submit(&self, subject: &str, job: &Value) -> Value {
        let job_id = job["job_id"]
            .as_str()
            .expect("a job to submit has a string job_id");
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", job_id);
        let ack = self.publish_raw(subject, Some(headers), to_vec(job)).await;
        assert!(
            ack.get("error").is_none() && ack["stream"] == JOBS_STREAM,
            "JetStream refused job {job_id}: {}",
            short(&ack)
        );
        ack
    }

    /// Publishes raw bytes on a stream subject (expecting the JetStream acknowledgement as the
    /// reply); returns the acknowledgement JSON, which may be an `{"error": …}`.
    ///
    /// # Panics
    ///
    /// When no reply comes, or it is not JSON.
    pub async fn publish_raw(
        &self,
        subject: &str,
        headers: Option<HeaderMap>,
        payload: Vec<u8>,
    ) -> Value {
        let mut request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(self.request_timeout));
        if let Some(headers) = headers {
            request = request.headers(headers);
        }
        let reply = self
            .client
            .send_request(subject.to_string(), request)
            .await
            .unwrap_or_else(|e| panic!("publishing on {subject}: {e}"));
        serde_json::from_slice(&reply.payload).unwrap_or_else(|e| {
            panic!(
                "the JetStream ack on {subject} is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&reply.payload)
            )
        })
    }

    /// A request with raw bytes; returns the reply parsed as JSON (not validated). A reply that
    /// is not JSON (e.g. a bare service-API error header) fails the test.
    ///
    /// # Panics
    ///
    /// When no reply comes within `timeout` (the request timeout when None), or it is not
    /// JSON.
    pub async fn request_raw(
        &self,
        subject: &str,
        payload: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Value {
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(timeout.unwrap_or(self.request_timeout)));
        let reply = self
            .client
            .send_request(subject.to_string(), request)
            .await
            .unwrap_or_else(|e| panic!("request on {subject}: {e}"));
        serde_json::from_slice(&reply.payload).unwrap_or_else(|e| {
            panic!(
                "reply on {subject} is not JSON ({e}): body {:?}, headers {:?}",
                String::from_utf8_lossy(&reply.payload),
                reply.headers
            )
        })
    }

    /// A JSON request; the reply is checked against `ok_schema` (or `error-reply` when it
    /// holds `"error"`).
    ///
    /// # Panics
    ///
    /// As [`request_raw`](Self::request_raw), and when the reply does not match its schema.
    pub async fn request(&self, subject: &str, body: &Value, ok_schema: &str) -> Value {
        let reply = self.request_raw(subject, to_vec(body), None).await;
        self.schemas
            .check_reply(ok_schema, &format!("reply on {subject}"), &reply);
        reply
    }

    /// What the metrics service knows now (`lexmesh.api.metrics.snapshot`, schema-checked).
    ///
    /// # Panics
    ///
    /// As [`request`](Self::request).
    pub async fn metrics_snapshot(&self) -> Value {
        self.request(
            "lexmesh.api.metrics.snapshot",
            &json!({}),
            "metrics-snapshot",
        )
        .await
    }

    /// Subscribes to every event of `job_id` (`lexmesh.events.<job>.>`); subscribe BEFORE
    /// submitting the job.
    ///
    /// # Panics
    ///
    /// As [`watch_subject`](Self::watch_subject).
    pub async fn watch(&self, job_id: &str) -> EventWatch {
        self.watch_subject(&format!("lexmesh.events.{job_id}.>"))
            .await
    }

    /// Subscribes to job events on any subject pattern (e.g. `lexmesh.events.>`).
    ///
    /// # Panics
    ///
    /// When the subscription cannot be made.
    pub async fn watch_subject(&self, subject: &str) -> EventWatch {
        let subscriber = self.subscribe(subject).await;
        EventWatch::new(subject, subscriber, self.schemas.clone(), "job-event", true)
    }

    /// Watches other messages than job events (health events, dead letters, alerts), each
    /// checked against `schema`.
    ///
    /// # Panics
    ///
    /// As [`watch_subject`](Self::watch_subject).
    pub async fn watch_messages(&self, subject: &str, schema: &'static str) -> EventWatch {
        let subscriber = self.subscribe(subject).await;
        EventWatch::new(subject, subscriber, self.schemas.clone(), schema, false)
    }

    /// Gathers every job event on `subject` (e.g. `lexmesh.events.>`) in the background, with
    /// its arrival time; each is checked against `job-event`.
    ///
    /// # Panics
    ///
    /// As [`watch_subject`](Self::watch_subject).
    pub async fn record_events(&self, subject: &str) -> EventLog {
        let subscriber = self.subscribe(subject).await;
        EventLog::start(subscriber, self.schemas.clone(), "job-event")
    }

    /// Keeps the latest heartbeat of each instance on `subject` (e.g.
    /// `lexmesh.heartbeat.trainer.*`), each checked against `heartbeat`.
    ///
    /// # Panics
    ///
    /// As [`watch_subject`](Self::watch_subject).
    pub async fn track_heartbeats(&self, subject: &str) -> Heartbeats {
        let subscriber = self.subscribe(subject).await;
        Heartbeats::start(subscriber, self.schemas.clone())
    }

    async fn subscribe(&self, subject: &str) -> async_nats::Subscriber {
        let subscriber = self
            .client
            .subscribe(subject.to_string())
            .await
            .expect("subscribe to events");
        // The subscription must be known to the server before anything is published.
        self.client.flush().await.expect("flush");
        subscriber
    }

    /// Every event the events stream holds on `subject` (`lexmesh.events.>` for all, or
    /// `lexmesh.events.<job>.>`), in stream order, each checked against `job-event`.
    ///
    /// # Panics
    ///
    /// When the stream cannot be read within 10 s per event, or an event is invalid.
    pub async fn stored_events(&self, subject: &str) -> Vec<Value> {
        use async_nats::jetstream::consumer::{DeliverPolicy, pull};
        use futures::StreamExt;
        let js = async_nats::jetstream::new(self.client.clone());
        let consumer = js
            .get_stream("LEXMESH_EVENTS")
            .await
            .expect("open the events stream")
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject.to_string(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .expect("an ordered consumer on the events stream");
        let pending = consumer.cached_info().num_pending;
        let mut messages = consumer.messages().await.expect("read the events stream");
        let mut events = Vec::new();
        for _ in 0..pending {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .expect("the stored events within 10 s")
                .expect("the events stream")
                .expect("a stored event");
            let event: Value =
                serde_json::from_slice(&message.payload).expect("a stored event is JSON");
            self.schemas.check(
                "job-event",
                &format!("event on {}", message.subject),
                &event,
            );
            events.push(event);
        }
        events
    }

    /// The job record (KV `lexmesh_jobs`, key = job id), validated against `job-record`.
    ///
    /// # Panics
    ///
    /// When the bucket cannot be read, or the record is not JSON or invalid.
    pub async fn job_record(&self, job_id: &str) -> Option<Value> {
        let js = async_nats::jetstream::new(self.client.clone());
        let bucket = js
            .get_key_value(JOBS_BUCKET)
            .await
            .expect("open the jobs bucket");
        let bytes = bucket
            .get(job_id)
            .await
            .unwrap_or_else(|e| panic!("reading the record of {job_id}: {e}"))?;
        let record: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("the record of {job_id} is not JSON: {e}"));
        self.schemas
            .check("job-record", &format!("job record {job_id}"), &record);
        Some(record)
    }

    /// Polls the job record until its status is `status` (at most `timeout`).
    ///
    /// # Panics
    ///
    /// When it is not in time, or as [`job_record`](Self::job_record).
    pub async fn wait_job_status(&self, job_id: &str, status: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let record = self.job_record(job_id).await;
            if let Some(r) = &record
                && r["status"] == status
            {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "job record of {job_id} is not `{status}` after {timeout:?}: {}",
                record.as_ref().map_or_else(|| "no record".into(), short)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the instance runs no job (its status says `running: []`); the status can
    /// lag the job's final event by a moment.
    ///
    /// # Panics
    ///
    /// When it is still busy after 5 s, or as [`status`](Self::status).
    pub async fn wait_idle(&self, service: &str, instance: &str) -> Value {
        eventually(
            &format!("{instance} to be idle"),
            Duration::from_secs(5),
            || async move {
                let status = self.status(service, instance).await;
                (status["running"] == json!([])).then_some(status)
            },
        )
        .await
    }

    /// Waits until the jobs stream holds no message (a job is acknowledged or terminated just
    /// after its final event).
    ///
    /// # Panics
    ///
    /// When messages remain after 5 s.
    pub async fn wait_jobs_stream_empty(&self) {
        eventually(
            "the jobs stream to be empty",
            Duration::from_secs(5),
            || async move { (self.jobs_stream_messages().await == 0).then_some(()) },
        )
        .await;
    }

    /// Info of a job consumer (`lexmesh-train`, ...), through the raw JetStream API.
    ///
    /// # Panics
    ///
    /// As [`request_raw`](Self::request_raw).
    pub async fn consumer_info(&self, consumer: &str) -> Value {
        self.request_raw(
            &format!("$JS.API.CONSUMER.INFO.{JOBS_STREAM}.{consumer}"),
            Vec::new(),
            None,
        )
        .await
    }

    /// `state.messages` of the jobs stream, read through the raw JetStream API.
    ///
    /// # Panics
    ///
    /// As [`stream_messages`](Self::stream_messages).
    pub async fn jobs_stream_messages(&self) -> u64 {
        self.stream_messages(JOBS_STREAM).await
    }

    /// Messages held by a stream now.
    ///
    /// # Panics
    ///
    /// When the stream info cannot be read.
    pub async fn stream_messages(&self, stream: &str) -> u64 {
        let info = self
            .request_raw(&format!("$JS.API.STREAM.INFO.{stream}"), Vec::new(), None)
            .await;
        info["state"]["messages"]
            .as_u64()
            .unwrap_or_else(|| panic!("stream info without state.messages: {}", short(&info)))
    }
}

impl TestMesh {
    /// Waits until the node `node` holds a current copy of every stream of [`MESH_STREAMS`]
    /// (it leads the stream, or its replica is current with no lag): a node restarted after a
    /// kill has caught up.
    ///
    /// # Panics
    ///
    /// When it has not within `timeout`.
    pub async fn wait_node_caught_up(&self, node: &str, timeout: Duration) {
        let js = async_nats::jetstream::new(self.client.clone());
        eventually(
            &format!("{node} caught up with every stream"),
            timeout,
            || async {
                for name in MESH_STREAMS {
                    let mut stream = js.get_stream(name).await.ok()?;
                    let info = stream.info().await.ok()?;
                    let cluster = info.cluster.as_ref()?;
                    let current = cluster.leader.as_deref() == Some(node)
                        || cluster
                            .replicas
                            .iter()
                            .any(|p| p.name == node && p.current && p.lag.unwrap_or(0) == 0);
                    if !current {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
    }
}

impl Drop for TestMesh {
    fn drop(&mut self) {
        // The services go first (their logs print as they drop when failing).
        self.services.clear();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.server.log_path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "===== last lines of the nats-server log =====\n{}\n===== end of the nats-server log =====",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            );
            // LEXMESH_KEEP_TEST_DIR=1 keeps the service logs and work folders for a look.
            if std::env::var_os("LEXMESH_KEEP_TEST_DIR").is_some()
                && let Some(dir) = self.dir.take()
            {
                eprintln!("===== test files kept in {} =====", dir.keep().display());
            }
        }
    }
}

/// A JSON value as bytes.
fn to_vec(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a JSON value serialises")
}
