//! Harness of the mesh tests: a private nats-server per test, `lexmesh serve` processes with
//! their logs in the test's temporary folder, and a client that speaks raw JSON only, as a
//! foreign system would. Every message a test captures (events, replies, status, job records)
//! is checked against the JSON Schemas in `schemas/`; an invalid one fails the test.
//!
//! Subjects and names are written out as strings on purpose: the tests check the documented
//! wire protocol, not lexmesh's own types.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, Subscriber};
use futures::StreamExt;
use lexmesh_testkit::NatsServer;
use serde_json::{Value, json};
use tempfile::TempDir;

/// `max_payload` of the test servers: twice lexmesh's own 4 MiB limit, so an oversize job
/// reaches the services and is rejected by them rather than by the server.
pub const MAX_PAYLOAD: u64 = 8 * 1024 * 1024;

/// How long a service may take to answer its first status request.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Default wait for one request/reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Default wait for a small job to reach its final event.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(45);

/// The jobs stream.
pub const JOBS_STREAM: &str = "LEXMESH_JOBS";

/// The jobs KV bucket.
pub const JOBS_BUCKET: &str = "lexmesh_jobs";

/// Subject of train jobs.
pub const TRAIN: &str = "lexmesh.jobs.train";
/// Subject of evaluate jobs.
pub const EVALUATE: &str = "lexmesh.jobs.evaluate";
/// Subject of preprocess jobs.
pub const PREPROCESS: &str = "lexmesh.jobs.preprocess";
/// Request/reply inference.
pub const CLASSIFY: &str = "lexmesh.api.evaluator.classify";
/// Request/reply dataset preparation.
pub const PREPARE: &str = "lexmesh.api.preprocessor.prepare";

/// The cancel subject of a job.
pub fn cancel_subject(job_id: &str) -> String {
    format!("lexmesh.control.{job_id}.cancel")
}

// ---------------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------------

/// Validators for every `schemas/<name>.v1.json`, by `<name>`.
pub struct Schemas {
    validators: HashMap<String, jsonschema::Validator>,
}

impl Schemas {
    /// Loads and compiles every schema of the repository.
    pub fn load() -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let mut validators = HashMap::new();
        for entry in std::fs::read_dir(&dir).expect("read schemas/") {
            let path = entry.expect("schemas/ entry").path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".v1.json") else {
                continue;
            };
            let schema: Value = serde_json::from_slice(&std::fs::read(&path).expect("read schema"))
                .unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
            let validator = jsonschema::validator_for(&schema)
                .unwrap_or_else(|e| panic!("{file} does not compile: {e}"));
            validators.insert(name.to_string(), validator);
        }
        assert!(
            validators.contains_key("job-event"),
            "no job-event schema in {}",
            dir.display()
        );
        Self { validators }
    }

    /// What is wrong with `value` according to schema `name` (empty when it is valid).
    pub fn violations(&self, name: &str, value: &Value) -> Vec<String> {
        let validator = self
            .validators
            .get(name)
            .unwrap_or_else(|| panic!("no schema `{name}` in schemas/"));
        validator
            .iter_errors(value)
            .map(|e| format!("at `{}`: {e}", e.instance_path))
            .collect()
    }

    /// Fails the test when `value` does not match schema `name`; `what` names the message.
    pub fn check(&self, name: &str, what: &str, value: &Value) {
        let errors = self.violations(name, value);
        assert!(
            errors.is_empty(),
            "{what} does not match schema {name}:\n  {}\nmessage: {}",
            errors.join("\n  "),
            short(value)
        );
    }

    /// Checks a reply: an error reply (`{"error": …}`) against `error-reply`, anything else
    /// against `ok_schema`.
    pub fn check_reply(&self, ok_schema: &str, what: &str, value: &Value) {
        if value.get("error").is_some() {
            self.check("error-reply", what, value);
        } else {
            self.check(ok_schema, what, value);
        }
    }
}

/// A value as JSON text, cut to a readable length for failure messages.
pub fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= 2000 {
        text
    } else {
        let mut end = 2000;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &text[..end], text.len())
    }
}

// ---------------------------------------------------------------------------------------------
// Service processes
// ---------------------------------------------------------------------------------------------

/// One `lexmesh serve` process; killed on drop, its log printed when the test is failing.
pub struct ServiceProcess {
    /// `preprocessor`, `trainer` or `evaluator`.
    pub service: String,
    /// The instance id.
    pub instance: String,
    child: Child,
    log: PathBuf,
}

impl ServiceProcess {
    /// The process's stdout and stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit status, when it has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`-STOP`, `-CONT`, ...).
    pub fn signal(&self, signal: &str) {
        send_signal(signal, self.child.id());
    }

    /// Kills it with SIGKILL and waits for it: a crash, with no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (polling) for the process to exit; None when it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn print_log(&self) {
        eprintln!(
            "===== log of `lexmesh serve {}` ({}) =====\n{}\n===== end of log of {} =====",
            self.service,
            self.instance,
            self.log_text(),
            self.instance
        );
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            self.print_log();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The mesh under test
// ---------------------------------------------------------------------------------------------

/// A private nats-server, the service processes started on it, and a raw-JSON client.
pub struct TestMesh {
    // Dropped first: the services go before the server they talk to.
    services: Vec<ServiceProcess>,
    /// The client (core NATS only; no lexmesh types).
    pub client: async_nats::Client,
    /// Every schema of `schemas/`.
    pub schemas: Arc<Schemas>,
    /// The server.
    pub server: NatsServer,
    dir: Option<TempDir>,
}

impl TestMesh {
    /// A current (2.10+) server with `max_payload` 8 MiB, and a client connected to it.
    pub async fn start() -> Self {
        let server = NatsServer::builder()
            .max_payload(MAX_PAYLOAD)
            .start()
            .expect("start a private nats-server");
        Self::on(server).await
    }

    /// A current server with nats-server's own default `max_payload` (1 MiB), as an outside
    /// publisher usually meets it.
    pub async fn start_default_payload() -> Self {
        let server = NatsServer::builder()
            .start()
            .expect("start a private nats-server");
        Self::on(server).await
    }

    /// Debian's nats-server 2.9.10, with `max_payload` 8 MiB.
    pub async fn start_legacy() -> Self {
        let server = NatsServer::builder()
            .flavor(lexmesh_testkit::ServerFlavor::Legacy)
            .max_payload(MAX_PAYLOAD)
            .start()
            .expect("start Debian's nats-server 2.9");
        Self::on(server).await
    }

    async fn on(server: NatsServer) -> Self {
        let client = async_nats::ConnectOptions::new()
            .name("lexmesh-mesh-test")
            .request_timeout(Some(REQUEST_TIMEOUT))
            .connect(server.url())
            .await
            .expect("connect the test client");
        let dir = tempfile::Builder::new()
            .prefix("lexmesh-mesh-test-")
            .tempdir()
            .expect("temporary folder");
        Self {
            services: Vec::new(),
            client,
            schemas: Arc::new(Schemas::load()),
            server,
            dir: Some(dir),
        }
    }

    /// The test's temporary folder (service logs, work folders).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temporary folder").path()
    }

    /// Starts `lexmesh serve <service>` as `instance`, with `env` added (e.g.
    /// `("LEXMESH_JOBS__CONCURRENCY", "1")`); does not wait for it.
    pub fn spawn(&mut self, service: &str, instance: &str, env: &[(&str, &str)]) {
        let log = self.dir().join(format!("{instance}.log"));
        let out = File::create(&log).expect("create service log");
        let err = out.try_clone().expect("clone log handle");
        let work = self.dir().join(format!("work-{instance}"));
        std::fs::create_dir_all(&work).expect("work folder");
        let mut command = Command::new(env!("CARGO_BIN_EXE_lexmesh"));
        command
            .args(["serve", service])
            // No ./lexmesh.toml of the checkout may leak into the test.
            .current_dir(self.dir())
            .env("LEXMESH_NATS__URL", self.server.url())
            .env("LEXMESH_SERVICE__INSTANCE", instance)
            .env("LEXMESH_SERVICE__WORK_DIR", &work)
            .env("LEXMESH_SERVICE__COMPUTE_THREADS", "1")
            .env("LEXMESH_LOG", "info")
            // Tests run side by side: no fixed Prometheus port.
            .env("LEXMESH_METRICS__LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start lexmesh serve {service}: {e}"));
        self.services.push(ServiceProcess {
            service: service.to_string(),
            instance: instance.to_string(),
            child,
            log,
        });
    }

    /// Starts a service and waits until it answers its status request; returns the status.
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

    /// The process of `instance`.
    pub fn process(&mut self, instance: &str) -> &mut ServiceProcess {
        self.services
            .iter_mut()
            .find(|p| p.instance == instance)
            .unwrap_or_else(|| panic!("no service instance `{instance}` was started"))
    }

    /// Polls `lexmesh.api.<service>.<instance>.status` until it answers (at most
    /// [`READY_TIMEOUT`]); fails at once when the process exits.
    pub async fn wait_ready(&mut self, instance: &str) -> Value {
        let service = self.process(instance).service.clone();
        let subject = format!("lexmesh.api.{service}.{instance}.status");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let process = self.process(instance);
            if let Some(status) = process.exit_status() {
                panic!(
                    "lexmesh serve {service} ({instance}) exited with {status} before it was ready"
                );
            }
            let request = async_nats::Request::new()
                .payload(Vec::new().into())
                .timeout(Some(Duration::from_secs(1)));
            if let Ok(reply) = self.client.send_request(subject.clone(), request).await
                && let Ok(status) = serde_json::from_slice::<Value>(&reply.payload)
            {
                self.check_status(&service, instance, &status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lexmesh serve {service} ({instance}) did not answer {subject} within {READY_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The status of one instance (validated against `worker-status`).
    pub async fn status(&self, service: &str, instance: &str) -> Value {
        let status = self
            .request_raw(
                &format!("lexmesh.api.{service}.{instance}.status"),
                Vec::new(),
                None,
            )
            .await;
        self.check_status(service, instance, &status);
        status
    }

    fn check_status(&self, service: &str, instance: &str, status: &Value) {
        self.schemas
            .check("worker-status", &format!("status of {instance}"), status);
        assert_eq!(status["service"], service, "{}", short(status));
        assert_eq!(status["instance"], instance, "{}", short(status));
    }

    /// Fails unless every started service process is running and answers its status request.
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
    pub async fn submit(&self, subject: &str, job: &Value) -> Value {
        let job_id = job["job_id"]
            .as_str()
            .expect("a job to submit has a string job_id");
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", job_id);
        let ack = self
            .publish_raw(subject, Some(headers), serde_json::to_vec(job).unwrap())
            .await;
        assert!(
            ack.get("error").is_none() && ack["stream"] == JOBS_STREAM,
            "JetStream refused job {job_id}: {}",
            short(&ack)
        );
        ack
    }

    /// Publishes raw bytes on a stream subject (expecting the JetStream acknowledgement as the
    /// reply); returns the acknowledgement JSON, which may be an `{"error": …}`.
    pub async fn publish_raw(
        &self,
        subject: &str,
        headers: Option<HeaderMap>,
        payload: Vec<u8>,
    ) -> Value {
        let mut request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(REQUEST_TIMEOUT));
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
    pub async fn request_raw(
        &self,
        subject: &str,
        payload: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Value {
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(timeout.unwrap_or(REQUEST_TIMEOUT)));
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
    pub async fn request(&self, subject: &str, body: &Value, ok_schema: &str) -> Value {
        let reply = self
            .request_raw(subject, serde_json::to_vec(body).unwrap(), None)
            .await;
        self.schemas
            .check_reply(ok_schema, &format!("reply on {subject}"), &reply);
        reply
    }

    /// What the metrics service knows now (`lexmesh.api.metrics.snapshot`, schema-checked).
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
    pub async fn watch(&self, job_id: &str) -> EventWatch {
        self.watch_subject(&format!("lexmesh.events.{job_id}.>"))
            .await
    }

    /// Subscribes to events on any subject pattern (e.g. `lexmesh.events.>`).
    pub async fn watch_subject(&self, subject: &str) -> EventWatch {
        let subscriber = self
            .client
            .subscribe(subject.to_string())
            .await
            .expect("subscribe to events");
        // The subscription must be known to the server before anything is published.
        self.client.flush().await.expect("flush");
        EventWatch {
            subject: subject.to_string(),
            subscriber,
            schemas: self.schemas.clone(),
            schema: "job-event",
            job_events: true,
            events: Vec::new(),
        }
    }

    /// Watches other messages than job events (health events, dead letters, alerts), each
    /// checked against `schema`.
    pub async fn watch_messages(&self, subject: &str, schema: &'static str) -> EventWatch {
        let mut watch = self.watch_subject(subject).await;
        watch.schema = schema;
        watch.job_events = false;
        watch
    }

    /// The job record (KV `lexmesh_jobs`, key = job id), validated against `job-record`.
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
    pub async fn wait_jobs_stream_empty(&self) {
        eventually(
            "the jobs stream to be empty",
            Duration::from_secs(5),
            || async move { (self.jobs_stream_messages().await == 0).then_some(()) },
        )
        .await;
    }

    /// Info of a job consumer (`lexmesh-train`, ...), through the raw JetStream API.
    pub async fn consumer_info(&self, consumer: &str) -> Value {
        self.request_raw(
            &format!("$JS.API.CONSUMER.INFO.{JOBS_STREAM}.{consumer}"),
            Vec::new(),
            None,
        )
        .await
    }

    /// `state.messages` of the jobs stream, read through the raw JetStream API.
    pub async fn jobs_stream_messages(&self) -> u64 {
        self.stream_messages(JOBS_STREAM).await
    }

    /// Messages held by a stream now.
    pub async fn stream_messages(&self, stream: &str) -> u64 {
        let info = self
            .request_raw(&format!("$JS.API.STREAM.INFO.{stream}"), Vec::new(), None)
            .await;
        info["state"]["messages"]
            .as_u64()
            .unwrap_or_else(|| panic!("stream info without state.messages: {}", short(&info)))
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

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// Whether nothing more follows this event for its job.
pub fn is_final(event: &Value) -> bool {
    match event["event"].as_str() {
        Some("completed" | "cancelled") => true,
        Some("failed") => event["retrying"] == false,
        _ => false,
    }
}

/// A subscription to job events; every event is checked against `job-event` and against its
/// subject (`lexmesh.events.<job_id>.<event>`) as it arrives, and kept in `events`.
pub struct EventWatch {
    subject: String,
    subscriber: Subscriber,
    schemas: Arc<Schemas>,
    /// The schema every message must match.
    schema: &'static str,
    /// Whether messages are job events (`lexmesh.events.<job_id>.<event>`).
    job_events: bool,
    /// Every event received so far, in order.
    pub events: Vec<Value>,
}

impl EventWatch {
    /// The next event, or None when none arrives within `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Value> {
        let message = tokio::time::timeout(timeout, self.subscriber.next())
            .await
            .ok()?
            .expect("the event subscription ended");
        let event: Value = serde_json::from_slice(&message.payload).unwrap_or_else(|e| {
            panic!(
                "event on {} is not JSON ({e}): {:?}",
                message.subject,
                String::from_utf8_lossy(&message.payload)
            )
        });
        self.schemas.check(
            self.schema,
            &format!("message on {}", message.subject),
            &event,
        );
        if !self.job_events {
            self.events.push(event.clone());
            return Some(event);
        }
        let tokens: Vec<&str> = message.subject.as_str().split('.').collect();
        assert_eq!(tokens.len(), 4, "event subject {}", message.subject);
        assert_eq!(
            (tokens[2], tokens[3]),
            (
                event["job_id"].as_str().unwrap_or_default(),
                event["event"].as_str().unwrap_or_default()
            ),
            "event subject {} does not match its body {}",
            message.subject,
            short(&event)
        );
        self.events.push(event.clone());
        Some(event)
    }

    /// The next event; fails the test when none arrives within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Value {
        match self.next_within(timeout).await {
            Some(event) => event,
            None => panic!(
                "no event on {} within {timeout:?}; so far: {}",
                self.subject,
                self.summary()
            ),
        }
    }

    /// Events until one matching `stop` (returned); fails after `timeout` in all.
    pub async fn until(&mut self, timeout: Duration, stop: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.next(left).await;
            if stop(&event) {
                return event;
            }
        }
    }

    /// Events until a final one (completed, cancelled, failed without retry), which is
    /// returned; fails after `timeout`.
    pub async fn until_final(&mut self, timeout: Duration) -> Value {
        self.until(timeout, is_final).await
    }

    /// Every event arriving within `period` (to check that nothing more comes).
    pub async fn drain_for(&mut self, period: Duration) -> Vec<Value> {
        let deadline = Instant::now() + period;
        let mut more = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return more;
            }
            match self.next_within(left).await {
                Some(event) => more.push(event),
                None => return more,
            }
        }
    }

    /// Events of one kind received so far.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == kind).collect()
    }

    /// A one-line-per-event digest, for failure messages.
    pub fn summary(&self) -> String {
        self.events
            .iter()
            .map(|e| {
                format!(
                    "\n  {} {} {}",
                    e["job_id"].as_str().unwrap_or("?"),
                    e["event"].as_str().unwrap_or("?"),
                    match e["event"].as_str() {
                        Some("progress") => format!(
                            "phase={} epoch={} batch={} pct={}",
                            e["phase"], e["epoch"], e["batch"], e["completion_percentage"]
                        ),
                        Some("failed") => format!(
                            "code={} retrying={} reason={}",
                            e["code"], e["retrying"], e["reason"]
                        ),
                        _ => format!("instance={} attempt={}", e["instance"], e["attempt"]),
                    }
                )
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Data and jobs
// ---------------------------------------------------------------------------------------------

/// Records of a sample file (`train.jsonl`, `validation.jsonl`) as `{"text","label"}` (the
/// sample's `id` field is dropped: job records allow only text and label).
pub fn sample_records(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/sample")
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("sample line is JSON");
            json!({"text": v["text"], "label": v["label"]})
        })
        .collect()
}

/// Every `step`-th record of a sample file (both classes survive steps up to 4).
pub fn sample_subset(file: &str, step: usize) -> Vec<Value> {
    sample_records(file).into_iter().step_by(step).collect()
}

/// Small, fast training settings: bow, 2000 buckets, 32 dimensions, `epochs` epochs.
pub fn small_settings(epochs: u32) -> Value {
    json!({
        "model": "bow",
        "epochs": epochs,
        "batch_size": 32,
        "learning_rate": 0.01,
        "seed": 1,
        "patience": 3,
        "char_buckets": 2000,
        "embedding_dim": 32,
    })
}

/// An inline dataset.
pub fn inline(train: Vec<Value>, validation: Option<Vec<Value>>) -> Value {
    match validation {
        Some(validation) => json!({"inline": {"train": train, "validation": validation}}),
        None => json!({"inline": {"train": train}}),
    }
}

/// A train job on the whole sample (128 train, 40 validation records).
pub fn sample_train_job(job_id: &str, model_id: &str, settings: Value) -> Value {
    json!({
        "job_id": job_id,
        "model_id": model_id,
        "dataset": inline(
            sample_records("train.jsonl"),
            Some(sample_records("validation.jsonl")),
        ),
        "settings": settings,
    })
}

/// A train job on the whole sample that runs all `epochs` (no early stop), model
/// `model-<job_id>`: long enough for a fault to land mid-job.
pub fn no_early_stop_job(job_id: &str, epochs: u32) -> Value {
    let mut settings = small_settings(epochs);
    settings["patience"] = json!(0);
    let mut job = sample_train_job(job_id, &format!("model-{job_id}"), settings);
    job["job_id"] = json!(job_id);
    job
}

/// Polls `check` every 100 ms until it returns Some (at most `timeout`; then fails with
/// `what`).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kill <signal> <pid>`; fails the test when kill fails.
pub fn send_signal(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}
