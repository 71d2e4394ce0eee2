//! What a publisher that reads only `schemas/` and the README can rely on, against a real
//! nats-server with its default 1 MiB `max_payload`: records with extra fields and other field
//! names train; a message too broken to name its job is reported under its `Nats-Msg-Id`; a
//! 1 MB job id still gets a small `failed` event; rejections that need the data or the stores
//! come without `accepted` (an optimize job's too); the publisher's mistakes are counted
//! as rejected, not in the services' error rate; a publisher's trace context comes back on
//! the events and on a classify reply although the services export no spans; a taken metrics
//! port is one clear error. The property test of the schemas is `tests/publisher_contract.rs`.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures::StreamExt;
use lexmesh_testkit::{
    CLASSIFY, EVALUATE, JOB_TIMEOUT, PREPARE, TRAIN, TestMesh, inline, is_final, short,
    small_settings,
};
use serde_json::{Value, json};

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

const OPTIMIZE: &str = "lexmesh.jobs.optimize";

/// A publisher's trace context: its trace id and span id.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The sample's records as they are in the file: `id`, `text`, `label`, `title`, cut short.
fn raw_records(count: usize) -> Vec<Value> {
    let path = lexmesh_testkit::sample_path("train.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    let mut by_label: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut v: Value = serde_json::from_str(line).unwrap();
        let short_text: String = v["text"].as_str().unwrap().chars().take(400).collect();
        v["text"] = json!(short_text);
        let label = v["label"].as_str().unwrap().to_string();
        by_label.entry(label).or_default().push(v);
    }
    // Both classes, alternating.
    let mut out = Vec::new();
    let lists: Vec<Vec<Value>> = by_label.into_values().collect();
    for i in 0..count {
        if let Some(v) = lists[i % lists.len()].get(i / lists.len()) {
            out.push(v.clone());
        }
    }
    out
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, *v);
    }
    h
}

/// Every event of every job, with its headers, from one subscription made before anything is
/// published.
struct AllEvents {
    subscriber: async_nats::Subscriber,
    /// job id → events with their `traceparent` header, in order.
    by_job: HashMap<String, Vec<(Value, Option<String>)>>,
}

impl AllEvents {
    async fn start(mesh: &TestMesh) -> Self {
        let subscriber = mesh.client.subscribe("lexmesh.events.>").await.unwrap();
        mesh.client.flush().await.unwrap();
        Self {
            subscriber,
            by_job: HashMap::new(),
        }
    }

    /// Reads events until every job of `jobs` has its final event.
    async fn until_final(&mut self, mesh: &TestMesh, jobs: &[&str]) {
        let deadline = Instant::now() + JOB_TIMEOUT;
        while !jobs.iter().all(|j| self.final_of(j).is_some()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(message)) = tokio::time::timeout(left, self.subscriber.next()).await else {
                panic!(
                    "no final event for every one of {jobs:?}; got {:#?}",
                    self.by_job
                );
            };
            let event: Value = serde_json::from_slice(&message.payload).unwrap();
            assert!(
                message.payload.len() < 4096 || event["event"] == "completed",
                "an event of {} bytes: {}",
                message.payload.len(),
                short(&event)
            );
            mesh.schemas.check("job-event", "an event", &event);
            let traceparent = message
                .headers
                .as_ref()
                .and_then(|h| h.get("traceparent"))
                .map(|v| v.as_str().to_string());
            let job = event["job_id"].as_str().unwrap().to_string();
            self.by_job
                .entry(job)
                .or_default()
                .push((event, traceparent));
        }
    }

    fn final_of(&self, job: &str) -> Option<&Value> {
        self.by_job
            .get(job)?
            .iter()
            .map(|(e, _)| e)
            .find(|e| is_final(e))
    }

    fn kinds(&self, job: &str) -> Vec<String> {
        self.by_job
            .get(job)
            .map(|events| {
                events
                    .iter()
                    .map(|(e, _)| e["event"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Sends `body` on `subject` with the publisher's trace context, checks the reply against
/// `schema`, and returns the `traceparent` the reply came back with.
async fn traced_request(
    mesh: &TestMesh,
    subject: &str,
    body: &Value,
    schema: &str,
) -> Option<String> {
    let reply = mesh
        .client
        .request_with_headers(
            subject.to_string(),
            headers(&[("traceparent", TRACEPARENT)]),
            serde_json::to_vec(body).unwrap().into(),
        )
        .await
        .unwrap();
    let parsed: Value = serde_json::from_slice(&reply.payload).unwrap();
    mesh.schemas
        .check(schema, &format!("reply on {subject}"), &parsed);
    reply
        .headers
        .as_ref()
        .and_then(|h| h.get("traceparent"))
        .map(|v| v.as_str().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_trusts_the_schemas_on_a_default_server() {
    let mut mesh = TestMesh::start_default_payload(LEXMESH).await;
    mesh.start_all(&[]).await;
    mesh.start_service("metrics", "metrics-a", &[]).await;
    let mut events = AllEvents::start(&mesh).await;
    let records = raw_records(12);

    // Records as they are in the data files (id, title, ...), and a job that trains on the
    // titles with its own label field name; the first carries the publisher's trace context.
    let extra_fields = json!({
        "job_id": "pc-extra-fields",
        "dataset": {"inline": {"train": records}},
        "settings": small_settings(2),
    });
    let renamed: Vec<Value> = records
        .iter()
        .map(|r| json!({"headline": r["title"], "kind": r["label"], "n": 1}))
        .collect();
    let other_fields = json!({
        "job_id": "pc-other-fields",
        "dataset": {"inline": {"train": renamed, "text_field": "headline", "label_field": "kind"}},
        "settings": small_settings(2),
    });
    mesh.publish_raw(
        TRAIN,
        Some(headers(&[
            ("Nats-Msg-Id", "pc-extra-fields"),
            ("traceparent", TRACEPARENT),
        ])),
        serde_json::to_vec(&extra_fields).unwrap(),
    )
    .await;
    mesh.submit(TRAIN, &other_fields).await;

    // Rejections that need the data or the stores: `failed`, and no `accepted` before it.
    let civil: Vec<Value> = records
        .iter()
        .filter(|r| r["label"] == "civil")
        .cloned()
        .collect();
    let data_cases = [
        (
            TRAIN,
            json!({"job_id": "pc-one-class", "dataset": inline(civil.clone(), None)}),
            "invalid_dataset",
        ),
        (
            TRAIN,
            json!({"job_id": "pc-missing-field", "dataset": {"inline": {"train": records, "text_field": "body"}}}),
            "invalid_dataset",
        ),
        (
            TRAIN,
            json!({"job_id": "pc-no-object", "dataset": {"object": {"key": "uploads/none.jsonl"}}}),
            "dataset_not_found",
        ),
        (
            EVALUATE,
            json!({"job_id": "pc-no-model", "model_id": "no-such-model", "dataset": inline(civil.clone(), None)}),
            "model_not_found",
        ),
        (
            OPTIMIZE,
            // A search checks its data before any trial runs, as a train job does.
            json!({
                "job_id": "pc-optimize",
                "dataset": inline(civil, None),
                "trials": 4,
                "search_space": {"learning_rate": [0.01, 0.001]},
            }),
            "invalid_dataset",
        ),
    ];
    for (subject, job, _) in &data_cases {
        mesh.schemas.check(
            &format!("{}-job", subject.rsplit('.').next().unwrap()),
            "a publisher's job",
            job,
        );
        mesh.submit(subject, job).await;
    }

    // A job id of about 1 MB (the message fits the default 1 MiB): reported under the
    // Nats-Msg-Id the publisher sent, or under the stream sequence without one, in a small
    // event that does not repeat the id.
    let mut huge =
        json!({"job_id": "x".repeat(1_000_000), "dataset": inline(raw_records(4), None)});
    let payload = serde_json::to_vec(&huge).unwrap();
    assert!(payload.len() < 1024 * 1024, "{} bytes", payload.len());
    mesh.publish_raw(
        TRAIN,
        Some(headers(&[("Nats-Msg-Id", "pc-huge-id")])),
        payload.clone(),
    )
    .await;
    // Not JSON at all, named only by its header.
    mesh.publish_raw(
        TRAIN,
        Some(headers(&[("Nats-Msg-Id", "pc-not-json")])),
        b"{\"job_id\": ".to_vec(),
    )
    .await;
    huge["job_id"] = json!("y".repeat(1_000_000));
    let ack = mesh
        .publish_raw(TRAIN, None, serde_json::to_vec(&huge).unwrap())
        .await;
    let unnamed = format!("seq-{}", ack["seq"].as_u64().expect("a stream sequence"));

    let mut jobs: Vec<&str> = vec!["pc-extra-fields", "pc-other-fields", "pc-huge-id"];
    jobs.push("pc-not-json");
    jobs.push(&unnamed);
    for (_, job, _) in &data_cases {
        jobs.push(job["job_id"].as_str().unwrap());
    }
    events.until_final(&mesh, &jobs).await;

    for job in ["pc-extra-fields", "pc-other-fields"] {
        let last = events.final_of(job).unwrap();
        assert_eq!(last["event"], "completed", "{job}: {:?}", events.kinds(job));
    }
    for (_, job, code) in &data_cases {
        let id = job["job_id"].as_str().unwrap();
        let last = events.final_of(id).unwrap();
        assert_eq!(
            (last["event"].as_str(), last["code"].as_str()),
            (Some("failed"), Some(*code)),
            "{id}: {}",
            short(last)
        );
        assert_eq!(events.kinds(id), ["failed"], "{id}: accepted before failed");
    }
    for (id, code) in [
        ("pc-huge-id", "invalid_job_id"),
        ("pc-not-json", "invalid_json"),
        (unnamed.as_str(), "invalid_job_id"),
    ] {
        let last = events.final_of(id).unwrap();
        assert_eq!(last["code"], code, "{id}: {}", short(last));
        let reason = last["reason"].as_str().unwrap();
        assert!(
            reason.len() < 1000,
            "{id}: a reason of {} bytes",
            reason.len()
        );
        if code == "invalid_job_id" {
            assert!(
                reason.contains("1000000 characters"),
                "{id}: the reason does not say what was wrong: {reason}"
            );
        }
    }

    // The publisher's trace context comes back on every event of its job, unchanged (these
    // services export no spans).
    let traced = &events.by_job["pc-extra-fields"];
    assert!(traced.len() >= 3, "{:?}", events.kinds("pc-extra-fields"));
    for (event, traceparent) in traced {
        assert_eq!(
            traceparent.as_deref(),
            Some(TRACEPARENT),
            "{} event without the publisher's trace",
            event["event"]
        );
    }
    // ... and on a classify reply and a prepare reply.
    let classify = json!({"model_id": "pc-extra-fields", "texts": ["متن یک رأی"]});
    assert_eq!(
        traced_request(&mesh, CLASSIFY, &classify, "classify-reply").await,
        Some(TRACEPARENT.to_string())
    );
    let prepare = json!({"job_id": "pc-prepare", "dataset": {"inline": {"train": raw_records(6)}}});
    assert_eq!(
        traced_request(&mesh, PREPARE, &prepare, "prepare-reply").await,
        Some(TRACEPARENT.to_string())
    );

    // The mistakes are the publisher's: counted as rejected, not as the trainer's failures,
    // and its error rate stays 0.
    // One class, missing field, no object, huge id ×2, not JSON, and the optimize job (the
    // trainer answers those).
    let train_rejections = 7;
    let mut reports = mesh
        .client
        .subscribe("lexmesh.metrics.trainer.>")
        .await
        .unwrap();
    let report = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), reports.next())
            .await
            .expect("a trainer report within 10 s")
            .unwrap();
        let report: Value = serde_json::from_slice(&message.payload).unwrap();
        if report["rejected"].as_u64() >= Some(train_rejections) {
            break report;
        }
    };
    assert_eq!(report["rejected"], train_rejections, "{}", short(&report));
    assert_eq!(report["failed"], 0, "{}", short(&report));
    assert_eq!(report["window_failed"], 0, "{}", short(&report));
    assert_eq!(report["error_rate"], 0.0, "{}", short(&report));
    let snapshot = mesh.metrics_snapshot().await;
    let alerts = snapshot["alerts"].as_array().cloned().unwrap_or_default();
    assert!(
        alerts.iter().all(|a| a["kind"] != "error_rate"),
        "{}",
        short(&snapshot)
    );
    mesh.assert_all_serving().await;
}

/// Runs `lexmesh <args>` against `mesh`'s server with `env` on top, until it ends by itself
/// (at most a minute): its exit code and standard error.
async fn serve_until_it_ends(
    mesh: &TestMesh,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(LEXMESH)
            .args(args)
            .current_dir(mesh.dir())
            .env("NATS_URL", mesh.server.url())
            .envs(env.iter().copied())
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("lexmesh {args:?} ends by itself"))
    .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `lexmesh serve metrics` on a port something else holds: one clear error and the exit code
/// that tells `lexmesh up` not to restart it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_metrics_port_is_one_clear_error() {
    let mesh = TestMesh::start(LEXMESH).await;
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = holder.local_addr().unwrap().to_string();
    let (code, stderr) = serve_until_it_ends(
        &mesh,
        &["serve".as_ref(), "metrics".as_ref()],
        &[
            ("LEXMESH_METRICS__LISTEN", &address),
            ("LEXMESH_SERVICE__INSTANCE", "metrics-taken"),
        ],
    )
    .await;
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains(&address) && stderr.contains("already in use"),
        "{stderr}"
    );
    drop(holder);
}

/// `lexmesh serve` with a configuration file it cannot read (an unknown key) exits with the
/// code that tells a supervisor not to restart it, and names the key. (A scratch folder that
/// cannot be created exits 1 and is restarted: `mesh_chaos`'s crash-loop test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_configuration_key_ends_serve_with_the_configuration_exit_code() {
    let mesh = TestMesh::start(LEXMESH).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lexmesh.toml");
    std::fs::write(&config, "[jobs]\ncolour = \"red\"\n").unwrap();
    let (code, stderr) = serve_until_it_ends(
        &mesh,
        &[
            "serve".as_ref(),
            "trainer".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        &[("LEXMESH_SERVICE__INSTANCE", "trainer-unusable")],
    )
    .await;
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");
}

/// `lexmesh serve` with an instance id that cannot be a subject token exits with the
/// configuration exit code too, against a reachable server: starting again would fail the same
/// way, unlike a scratch folder that cannot be created yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_instance_id_ends_serve_with_the_configuration_exit_code() {
    let mesh = TestMesh::start(LEXMESH).await;
    let (code, stderr) = serve_until_it_ends(
        &mesh,
        &["serve".as_ref(), "trainer".as_ref()],
        &[("LEXMESH_SERVICE__INSTANCE", "trainer.one")],
    )
    .await;
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("service.instance") && stderr.contains("trainer.one"),
        "{stderr}"
    );
}

/// `lexmesh submit --json` reads the server's `max_payload` and says what to do instead of
/// failing with the client's bare error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_names_the_servers_payload_limit() {
    let mesh = TestMesh::start_default_payload(LEXMESH).await;
    let records: Vec<Value> = (0..300)
        .map(|i| json!({"text": "متن ".repeat(1000), "label": if i % 2 == 0 { "a" } else { "b" }}))
        .collect();
    let job = json!({"job_id": "pc-too-big", "dataset": inline(records, None)});
    let file = mesh.dir().join("big.json");
    std::fs::write(&file, serde_json::to_vec(&job).unwrap()).unwrap();
    assert!(std::fs::metadata(&file).unwrap().len() > 1024 * 1024);
    let output = tokio::process::Command::new(LEXMESH)
        .args(["submit", "train", "--json"])
        .arg(&file)
        .env("NATS_URL", mesh.server.url())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("max_payload of 1048576 bytes") && stderr.contains("--data"),
        "{stderr}"
    );
}
