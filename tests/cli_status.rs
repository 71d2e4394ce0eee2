//! `lexmesh status` and `lexmesh top` against a private nats-server, with stand-ins for the
//! health and metrics services that answer fixed reports (or are absent).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::process::{Command, Output};

use futures::StreamExt;
use lexmesh_protocol::alert::{Alert, AlertKind, AlertState};
use lexmesh_protocol::health::{HealthReport, HealthState, InstanceHealth};
use lexmesh_protocol::metrics::{LatencySummary, MetricsSnapshot, TrainingProgress, WorkerMetrics};
use lexmesh_protocol::status::RunningJob;
use lexmesh_protocol::time::now_ms;
use lexmesh_protocol::{JobKind, subjects};
use lexmesh_testkit::NatsServer;
use lexmesh_testkit::cli::{run, text};
use tokio::task::JoinHandle;

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

fn running_job() -> RunningJob {
    RunningJob {
        job_id: "job-a".into(),
        kind: JobKind::Train,
        attempt: 1,
        started_ms: now_ms() - 60_000.0,
        last_progress_ms: now_ms(),
        epoch: Some(3),
        total_epochs: Some(10),
        completion_percentage: Some(25.0),
        ack_subject: None,
    }
}

fn health_report() -> HealthReport {
    let instance = |service: &str, instance: &str| InstanceHealth {
        service: service.into(),
        instance: instance.into(),
        host: "host".into(),
        pid: 42,
        state: HealthState::Healthy,
        reason: "heartbeats on time, jobs progressing".into(),
        since_ms: now_ms() - 60_000.0,
        heartbeat_age_s: 1.0,
        rss_bytes: 64 << 20,
        memory_budget_bytes: 1 << 30,
        running: Vec::new(),
        replacements: 0,
    };
    let mut trainer = instance("trainer", "trainer-1");
    trainer.running = vec![running_job()];
    HealthReport {
        observer: "health-1".into(),
        leader: true,
        instances: vec![instance("health", "health-1"), trainer],
        timestamp_ms: now_ms(),
    }
}

fn metrics_snapshot() -> MetricsSnapshot {
    let latency = LatencySummary {
        count: 10,
        mean_ms: 1.0,
        p95_ms: 2.5,
        max_ms: 4.0,
    };
    MetricsSnapshot {
        instances: vec![WorkerMetrics {
            service: "trainer".into(),
            instance: "trainer-1".into(),
            version: "0.1.0".into(),
            pid: 42,
            host: "host".into(),
            uptime_s: 120.0,
            cpu_percent: 99.5,
            cores: 2.0,
            control_cpu_percent: 1.0,
            cpu_throttled_percent: 0.0,
            rss_bytes: 80 << 20,
            active_jobs: 1,
            completed: 4,
            failed: 1,
            rejected: 0,
            running: vec![running_job()],
            last_activity_ms: now_ms(),
            tick_lateness: latency.clone(),
            message_latency: latency,
            window_completed: 4,
            window_failed: 1,
            error_rate: 0.2,
            window_s: 60.0,
            interval_s: 5.0,
            timestamp_ms: now_ms(),
        }],
        training: vec![TrainingProgress {
            job_id: "job-a".into(),
            model_id: "model-a".into(),
            instance: "trainer-1".into(),
            attempt: 1,
            epoch: 3,
            total_epochs: 10,
            completion_percentage: 25.0,
            loss: 0.5,
            accuracy: 0.75,
            eta_s: Some(90.0),
            updated_ms: now_ms(),
        }],
        alerts: vec![Alert {
            kind: AlertKind::ErrorRate,
            state: AlertState::Raised,
            service: "trainer".into(),
            instance: "trainer-1".into(),
            value: 0.2,
            threshold: 0.1,
            message: "error rate above 10%".into(),
            source: "metrics-1".into(),
            timestamp_ms: now_ms() - 30_000.0,
        }],
        source: "metrics-1".into(),
        timestamp_ms: now_ms(),
    }
}

/// A stand-in service answering every request on `subject` with `reply`; aborted on drop.
struct Responder(JoinHandle<()>);

impl Drop for Responder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn respond(client: &async_nats::Client, subject: &'static str, reply: Vec<u8>) -> Responder {
    let mut requests = client.subscribe(subject).await.expect("subscribe");
    client.flush().await.expect("flush");
    let client = client.clone();
    Responder(tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            if let Some(to) = request.reply {
                let _ = client.publish(to, reply.clone().into()).await;
            }
        }
    }))
}

/// The private server, a client and a runtime for the stand-ins.
struct Setup {
    server: NatsServer,
    client: async_nats::Client,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Self {
        let server = NatsServer::start().expect("nats-server");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let client = rt
            .block_on(async_nats::connect(server.url()))
            .expect("connect");
        Self {
            server,
            client,
            rt,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn health(&self) -> Responder {
        let reply = serde_json::to_vec(&health_report()).unwrap();
        self.rt
            .block_on(respond(&self.client, subjects::HEALTH_INSTANCES, reply))
    }

    fn metrics(&self) -> Responder {
        let reply = serde_json::to_vec(&metrics_snapshot()).unwrap();
        self.rt
            .block_on(respond(&self.client, subjects::METRICS_SNAPSHOT, reply))
    }

    /// Stops a stand-in and waits until the server has forgotten its subscription.
    fn stop(&self, responder: Responder) {
        drop(responder);
        self.rt.block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            self.client.flush().await.expect("flush");
        });
    }

    fn lexmesh(&self, args: &[&str]) -> Output {
        run(Command::new(LEXMESH)
            .args(args)
            .current_dir(self.dir.path())
            .env("NATS_URL", self.server.url()))
    }
}

#[test]
fn status_merges_health_and_metrics() {
    let setup = Setup::start();
    let health = setup.health();
    let metrics = setup.metrics();

    let o = setup.lexmesh(&["status"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.starts_with("SERVICE"), "{out}");
    let trainer: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("trainer "))
        .expect("a trainer row")
        .split_whitespace()
        .collect();
    assert_eq!(
        trainer[..8],
        [
            "trainer",
            "trainer-1",
            "healthy",
            "99.5%",
            "80.0",
            "MiB",
            "1",
            "4/1"
        ],
        "{out}"
    );
    assert!(
        out.lines().any(|l| l
            .split_whitespace()
            .take(4)
            .eq(["health", "health-1", "healthy", "-"])),
        "{out}"
    );
    let job: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("job-a"))
        .expect("a job row")
        .split_whitespace()
        .collect();
    assert_eq!(
        job,
        [
            "job-a",
            "train",
            "trainer-1",
            "1",
            "3/10",
            "25%",
            "0.5000",
            "0.750",
            "1m30s"
        ]
    );
    assert!(out.contains("error_rate  trainer/trainer-1  0.2"), "{out}");
    assert!(err.contains("as seen by health-1 (leader)"), "{err}");
    assert!(err.contains("metrics from metrics-1"), "{err}");

    let o = setup.lexmesh(&["status", "--format", "json"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(json["health"]["observer"], "health-1");
    assert_eq!(json["metrics"]["source"], "metrics-1");

    // Without metrics: the health part, and a note.
    setup.stop(metrics);
    let o = setup.lexmesh(&["status"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.starts_with("SERVICE"), "{out}");
    assert!(out.contains("job-a"), "{out}");
    assert!(out.contains("alerts unknown"), "{out}");
    assert!(err.contains("metrics unavailable"), "{err}");
    let o = setup.lexmesh(&["status", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert!(
        json["metrics"].is_null() && json["health"].is_object(),
        "{json}"
    );

    // Without health: the metrics part, and a note.
    setup.stop(health);
    let metrics = setup.metrics();
    let o = setup.lexmesh(&["status"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.lines().any(|l| l.split_whitespace().take(4).eq([
            "trainer",
            "trainer-1",
            "-",
            "99.5%"
        ])),
        "{out}"
    );
    assert!(err.contains("health unavailable"), "{err}");

    // Neither, and no heartbeat: a clear error.
    setup.stop(metrics);
    let o = setup.lexmesh(&["status"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains("neither the health service") && err.contains("is the mesh running?"),
        "{err}"
    );
}

#[test]
fn top_prints_frames_until_its_count() {
    let setup = Setup::start();
    let _health = setup.health();

    let o = setup.lexmesh(&["top", "--count", "2", "--interval", "200ms"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(!out.contains('\x1b'), "no escapes into a pipe: {out:?}");
    assert_eq!(out.matches("=== ").count(), 2, "{out}");
    assert!(out.starts_with("=== "), "{out}");
    assert!(
        out.contains("\n\n=== "),
        "frames separated by a blank line: {out}"
    );
    // The metrics service is missing: noted in every frame, not fatal.
    assert_eq!(out.matches("metrics unavailable").count(), 2, "{out}");
    assert_eq!(out.matches("trainer-1").count(), 4, "{out}");
}

#[test]
fn top_survives_frames_without_any_service() {
    let setup = Setup::start();
    let o = setup.lexmesh(&["top", "--count", "1", "--interval", "1s"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("no instances known"), "{out}");
    assert!(
        out.contains("health unavailable") && out.contains("metrics unavailable"),
        "{out}"
    );
}

#[test]
fn top_refuses_bad_intervals_and_counts() {
    for (args, expected) in [
        (
            ["top", "--interval", "100ms"].as_slice(),
            "100ms is shorter than the minimum of 200ms",
        ),
        (
            ["top", "--interval", "soon"].as_slice(),
            "is not a duration",
        ),
        (["top", "--count", "0"].as_slice(), "--count"),
    ] {
        let o = run(Command::new(LEXMESH)
            .args(args)
            .env("NATS_URL", "nats://127.0.0.1:1"));
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
