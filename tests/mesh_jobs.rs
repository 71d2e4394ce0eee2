//! The job mesh seen from outside: a client that speaks raw JSON over NATS submits jobs to
//! `lexmesh serve` processes and follows their events. Training with progress, evaluation and
//! classification; two trainer replicas sharing the queue; duplicate submits; cancelling a
//! running and a queued job; reuse of a prepared dataset.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lexmesh_testkit::{
    CLASSIFY, EVALUATE, JOB_TIMEOUT, PREPARE, PREPROCESS, TRAIN, TestMesh, cancel_subject,
    eventually, inline, is_final, no_early_stop_job, sample_records, sample_subset,
    sample_train_job, short, small_settings,
};
use serde_json::{Value, json};

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

const EPOCHS: u32 = 3;

/// Epochs of the job that is cancelled while it runs (far more than it gets to).
const CANCELLED_EPOCHS: u32 = 200;

fn f64_of(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

/// Checks the event sequence of a train job that completed: accepted first, progress in
/// order with an epoch-phase event (with validation figures) per epoch, completed last.
fn check_train_events(events: &[Value], job_id: &str, model_id: &str, epochs: u32) {
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(kinds.first(), Some(&"accepted"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"completed"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "accepted").count(),
        1,
        "{kinds:?}"
    );
    assert!(
        kinds[1..kinds.len() - 1].iter().all(|k| *k == "progress"),
        "only progress between accepted and completed: {kinds:?}"
    );
    let accepted = &events[0];
    assert_eq!(accepted["job_id"], job_id);
    assert_eq!(accepted["kind"], "train");
    assert_eq!(accepted["attempt"], 1);

    let progress: Vec<&Value> = events.iter().filter(|e| e["event"] == "progress").collect();
    assert!(!progress.is_empty(), "no progress events");
    let mut last_epoch = 0;
    let mut last_pct = -1.0;
    let mut epoch_events: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for p in &progress {
        assert_eq!(p["job_id"], job_id);
        assert_eq!(p["model_id"], model_id, "{}", short(p));
        assert_eq!(p["total_epochs"], epochs, "{}", short(p));
        assert_eq!(p["instance"], accepted["instance"], "{}", short(p));
        let epoch = p["epoch"].as_u64().expect("epoch");
        assert!(
            epoch >= last_epoch,
            "epoch went back from {last_epoch} to {epoch}"
        );
        assert!(
            (1..=u64::from(epochs)).contains(&epoch),
            "epoch {epoch} outside 1..={epochs}"
        );
        last_epoch = epoch;
        let pct = f64_of(&p["completion_percentage"], "completion_percentage");
        assert!(
            pct >= last_pct,
            "completion_percentage went back from {last_pct} to {pct}"
        );
        assert!((0.0..=100.0).contains(&pct), "completion_percentage {pct}");
        last_pct = pct;
        if p["phase"] == "epoch" {
            for field in ["validation_loss", "validation_accuracy"] {
                let v = f64_of(&p[field], field);
                assert!(v.is_finite(), "{field} {v}");
            }
            epoch_events.entry(epoch).or_default().push(p);
        }
    }
    let epochs_seen: Vec<u64> = epoch_events.keys().copied().collect();
    assert_eq!(
        epochs_seen,
        (1..=u64::from(epochs)).collect::<Vec<_>>(),
        "an epoch-phase progress event for every epoch"
    );
    let last_epoch_event = epoch_events[&u64::from(epochs)].last().unwrap();
    let done = f64_of(
        &last_epoch_event["completion_percentage"],
        "completion_percentage",
    );
    assert!(
        (done - 100.0).abs() < 1e-6,
        "completion after the last epoch is {done}, not 100"
    );
}

/// The completed event's train result.
fn train_result<'a>(completed: &'a Value, model_id: &str, epochs: u32) -> &'a Value {
    assert_eq!(completed["event"], "completed", "{}", short(completed));
    assert_eq!(completed["kind"], "train");
    let train = &completed["result"]["train"];
    assert_eq!(train["model_id"], model_id, "{}", short(completed));
    assert_eq!(train["epochs_completed"], epochs, "{}", short(completed));
    assert!(
        train["dataset_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{}",
        short(completed)
    );
    train
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_then_evaluate_then_classify() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_all(&[]).await;

    // Train.
    let mut watch = mesh.watch("j1").await;
    let job = sample_train_job("j1", "m1", small_settings(EPOCHS));
    mesh.schemas
        .check("train-job", "the test's train job", &job);
    let ack = mesh.submit(TRAIN, &job).await;
    assert_ne!(ack["duplicate"], true, "{ack}");
    let completed = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(
        completed["event"],
        "completed",
        "events: {}",
        watch.summary()
    );
    check_train_events(&watch.events, "j1", "m1", EPOCHS);
    assert_eq!(completed["instance"], "trainer-a");
    assert_eq!(completed["attempt"], 1);
    let train = train_result(&completed, "m1", EPOCHS);
    let validation = &train["validation"];
    assert_eq!(validation["count"], 40, "{}", short(validation));
    let macro_f1 = f64_of(&validation["macro_f1"], "macro_f1");
    assert!(
        macro_f1 > 0.5,
        "macro-F1 {macro_f1} on the sample: {}",
        short(validation)
    );
    let record = mesh
        .wait_job_status("j1", "completed", Duration::from_secs(5))
        .await;
    assert_eq!(record["kind"], "train");
    assert_eq!(record["attempts"], 1);
    assert_eq!(record["owner"], "trainer-a");

    // Evaluate the stored model on the validation records.
    let mut watch = mesh.watch("e1").await;
    let job = json!({
        "job_id": "e1",
        "model_id": "m1",
        "dataset": inline(sample_records("validation.jsonl"), None),
    });
    mesh.schemas
        .check("evaluate-job", "the test's evaluate job", &job);
    mesh.submit(EVALUATE, &job).await;
    let completed = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(
        completed["event"],
        "completed",
        "events: {}",
        watch.summary()
    );
    assert_eq!(completed["kind"], "evaluate");
    assert_eq!(completed["instance"], "evaluator-a");
    let evaluate = &completed["result"]["evaluate"];
    assert_eq!(evaluate["model_id"], "m1", "{}", short(&completed));
    assert_eq!(evaluate["evaluation"]["count"], 40);
    assert!(f64_of(&evaluate["evaluation"]["macro_f1"], "macro_f1") > 0.5);
    assert_eq!(watch.of_kind("accepted").len(), 1, "{}", watch.summary());

    // Classify two texts.
    let texts: Vec<Value> = sample_records("validation.jsonl")
        .into_iter()
        .take(2)
        .map(|r| r["text"].clone())
        .collect();
    let request = json!({"model_id": "m1", "texts": texts});
    mesh.schemas
        .check("classify-request", "the test's classify request", &request);
    let reply = mesh.request(CLASSIFY, &request, "classify-reply").await;
    assert!(reply.get("error").is_none(), "{}", short(&reply));
    assert_eq!(reply["model_id"], "m1");
    let predictions = reply["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), 2, "{}", short(&reply));
    for p in predictions {
        let probabilities = p["probabilities"].as_object().expect("probabilities");
        let labels: BTreeSet<&str> = probabilities.keys().map(String::as_str).collect();
        assert_eq!(labels, BTreeSet::from(["civil", "criminal"]), "{p}");
        let sum: f64 = probabilities.values().map(|v| f64_of(v, "p")).sum();
        assert!((sum - 1.0).abs() < 1e-3, "probabilities sum to {sum}: {p}");
        let best = probabilities
            .iter()
            .max_by(|a, b| f64_of(a.1, "p").total_cmp(&f64_of(b.1, "p")))
            .unwrap()
            .0;
        assert_eq!(
            p["label"],
            best.as_str(),
            "the label is the most probable: {p}"
        );
    }

    // Cancelling a finished job changes nothing.
    let reply = mesh
        .request(
            &cancel_subject("j1"),
            &json!({"job_id": "j1"}),
            "cancel-reply",
        )
        .await;
    assert_eq!(reply["outcome"], "already_finished", "{}", short(&reply));
    mesh.wait_job_status("j1", "completed", Duration::from_secs(1))
        .await;

    // SIGTERM: each idle service exits 0.
    mesh.shutdown_all(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trainer_replicas_share_the_queue() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    let one = [("LEXMESH_JOBS__CONCURRENCY", "1")];
    mesh.spawn("preprocessor", "preprocessor-a", &[]);
    mesh.spawn("trainer", "trainer-a", &one);
    mesh.spawn("trainer", "trainer-b", &one);
    for instance in ["preprocessor-a", "trainer-a", "trainer-b"] {
        mesh.wait_ready(instance).await;
    }
    let status = mesh.status("trainer", "trainer-b").await;
    assert_eq!(status["concurrency"], 1, "{}", short(&status));
    // Both replicas are pulling before the jobs arrive.
    eventually(
        "two pending pulls on the train consumer",
        Duration::from_secs(10),
        || {
            let mesh = &mesh;
            async move {
                let info = mesh.consumer_info("lexmesh-train").await;
                (info["num_waiting"].as_u64().unwrap_or(0) >= 2).then_some(())
            }
        },
    )
    .await;

    let train = sample_subset("train.jsonl", 2);
    let validation = sample_subset("validation.jsonl", 2);
    let mut all = mesh.watch_subject("lexmesh.events.>").await;
    let ids: Vec<String> = (1..=6).map(|i| format!("r{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let mut settings = small_settings(2);
        settings["seed"] = json!(i + 1);
        let job = json!({
            "job_id": id,
            "dataset": inline(train.clone(), Some(validation.clone())),
            "settings": settings,
        });
        mesh.submit(TRAIN, &job).await;
    }
    let mut finished: BTreeMap<String, Value> = BTreeMap::new();
    while finished.len() < ids.len() {
        let event = all.until_final(JOB_TIMEOUT).await;
        let id = event["job_id"].as_str().unwrap().to_string();
        assert!(
            ids.contains(&id),
            "an event of an unknown job: {}",
            short(&event)
        );
        assert!(
            finished.insert(id.clone(), event).is_none(),
            "{id} ended twice: {}",
            all.summary()
        );
    }
    let mut instances = BTreeSet::new();
    for (id, event) in &finished {
        assert_eq!(event["event"], "completed", "{id}: {}", all.summary());
        // The model id defaults to the job id.
        assert_eq!(event["result"]["train"]["model_id"], id.as_str());
        instances.insert(event["instance"].as_str().unwrap().to_string());
    }
    assert_eq!(
        instances,
        BTreeSet::from(["trainer-a".to_string(), "trainer-b".to_string()]),
        "both replicas should have run jobs: {}",
        all.summary()
    );
    // Concurrency 1: a replica never runs two jobs at once (its accepted events and final
    // events alternate).
    for instance in ["trainer-a", "trainer-b"] {
        let mut running = 0;
        for e in all.events.iter().filter(|e| e["instance"] == instance) {
            match e["event"].as_str() {
                Some("accepted") => {
                    running += 1;
                    assert!(
                        running <= 1,
                        "{instance} ran two jobs at once: {}",
                        all.summary()
                    );
                }
                Some("completed" | "failed" | "cancelled") => running -= 1,
                _ => {}
            }
        }
    }
    let a = mesh.wait_idle("trainer", "trainer-a").await["completed"]
        .as_u64()
        .unwrap();
    let b = mesh.wait_idle("trainer", "trainer-b").await["completed"]
        .as_u64()
        .unwrap();
    assert_eq!(a + b, 6, "completed counters of the replicas: {a} + {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_submit_runs_once() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    mesh.start_service("trainer", "trainer-a", &[]).await;

    let mut watch = mesh.watch("dup1").await;
    let job = json!({
        "job_id": "dup1",
        "dataset": inline(sample_subset("train.jsonl", 2), Some(sample_subset("validation.jsonl", 2))),
        "settings": small_settings(2),
    });
    let first = mesh.submit(TRAIN, &job).await;
    let second = mesh.submit(TRAIN, &job).await;
    assert_ne!(first["duplicate"], true, "{first}");
    assert_eq!(second["duplicate"], true, "{second}");
    assert_eq!(first["seq"], second["seq"], "{first} {second}");

    let last = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(last["event"], "completed", "{}", watch.summary());
    let more = watch.drain_for(Duration::from_secs(2)).await;
    assert!(
        more.is_empty(),
        "events after completion: {}",
        watch.summary()
    );
    let accepted = watch.of_kind("accepted");
    assert_eq!(accepted.len(), 1, "{}", watch.summary());
    assert_eq!(accepted[0]["attempt"], 1);
    assert_eq!(watch.of_kind("completed").len(), 1, "{}", watch.summary());
    let record = mesh
        .wait_job_status("dup1", "completed", Duration::from_secs(5))
        .await;
    assert_eq!(record["attempts"], 1, "{}", short(&record));
    mesh.wait_jobs_stream_empty().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_running_job() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    mesh.start_service("trainer", "trainer-a", &[]).await;

    let mut watch = mesh.watch("long1").await;
    let mut settings = small_settings(CANCELLED_EPOCHS);
    settings["patience"] = json!(0); // never stop early
    let job = sample_train_job("long1", "long1", settings);
    mesh.submit(TRAIN, &job).await;
    watch
        .until(JOB_TIMEOUT, |e| e["event"] == "progress" || is_final(e))
        .await;
    assert!(
        watch.of_kind("progress").len() == 1,
        "expected a first progress event: {}",
        watch.summary()
    );
    let status = mesh.status("trainer", "trainer-a").await;
    let running = status["running"].as_array().expect("running");
    assert_eq!(running.len(), 1, "{}", short(&status));
    assert_eq!(running[0]["job_id"], "long1", "{}", short(&status));
    assert_eq!(running[0]["kind"], "train", "{}", short(&status));
    assert_eq!(running[0]["attempt"], 1, "{}", short(&status));

    let cancel = json!({"job_id": "long1"});
    mesh.schemas
        .check("cancel-request", "the test's cancel request", &cancel);
    let reply = mesh
        .request(&cancel_subject("long1"), &cancel, "cancel-reply")
        .await;
    assert_eq!(
        reply,
        json!({"job_id": "long1", "outcome": "cancelling", "instance": "trainer-a"})
    );

    let last = watch.until_final(Duration::from_secs(20)).await;
    assert_eq!(last["event"], "cancelled", "{}", watch.summary());
    assert_eq!(last["instance"], "trainer-a");
    assert_eq!(last["attempt"], 1);
    let epochs_completed = last["epochs_completed"].as_u64().unwrap();
    assert!(
        epochs_completed < u64::from(CANCELLED_EPOCHS),
        "{}",
        short(&last)
    );
    assert!(watch.of_kind("completed").is_empty(), "{}", watch.summary());
    let record = mesh
        .wait_job_status("long1", "cancelled", Duration::from_secs(5))
        .await;
    assert_eq!(record["owner"], "trainer-a");
    let more = watch.drain_for(Duration::from_secs(1)).await;
    assert!(
        more.is_empty(),
        "events after cancelled: {}",
        watch.summary()
    );
    mesh.wait_jobs_stream_empty().await;
    mesh.wait_idle("trainer", "trainer-a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_queued_job() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    // No trainer yet: the job waits in the queue.
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;

    let mut watch = mesh.watch("queued1").await;
    let job = sample_train_job("queued1", "queued1", small_settings(EPOCHS));
    mesh.submit(TRAIN, &job).await;
    assert_eq!(mesh.jobs_stream_messages().await, 1);

    // No instance runs the job: the preprocessor records the cancel and says so.
    let request = async_nats::Request::new()
        .payload(
            serde_json::to_vec(&json!({"job_id": "queued1"}))
                .unwrap()
                .into(),
        )
        .timeout(Some(Duration::from_secs(5)));
    let reply = mesh
        .client
        .send_request(cancel_subject("queued1"), request)
        .await
        .expect("a reply to the cancel of a queued job");
    let reply: Value = serde_json::from_slice(&reply.payload).expect("JSON reply");
    mesh.schemas
        .check_reply("cancel-reply", "cancel reply", &reply);
    assert_eq!(reply["outcome"], "recorded", "{}", short(&reply));

    mesh.start_service("trainer", "trainer-a", &[]).await;
    let last = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(last["event"], "cancelled", "{}", watch.summary());
    assert_eq!(last["epochs_completed"], 0);
    assert_eq!(last["attempt"], 1);
    assert!(
        watch.of_kind("progress").is_empty(),
        "a cancelled queued job must not train: {}",
        watch.summary()
    );
    assert!(watch.of_kind("completed").is_empty(), "{}", watch.summary());
    let more = watch.drain_for(Duration::from_secs(1)).await;
    assert!(
        more.is_empty(),
        "events after cancelled: {}",
        watch.summary()
    );
    mesh.wait_jobs_stream_empty().await;
    mesh.wait_job_status("queued1", "cancelled", Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_dataset_is_reused() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    let dataset = inline(
        sample_subset("train.jsonl", 2),
        Some(sample_subset("validation.jsonl", 2)),
    );
    let settings = small_settings(EPOCHS);

    let mut results = Vec::new();
    for id in ["p1", "p2"] {
        let mut watch = mesh.watch(id).await;
        let job = json!({"job_id": id, "dataset": dataset, "settings": settings});
        mesh.schemas
            .check("preprocess-job", "the test's preprocess job", &job);
        mesh.submit(PREPROCESS, &job).await;
        let last = watch.until_final(JOB_TIMEOUT).await;
        assert_eq!(last["event"], "completed", "{}", watch.summary());
        assert_eq!(last["kind"], "preprocess");
        assert_eq!(last["instance"], "preprocessor-a");
        results.push(last["result"]["preprocess"].clone());
    }
    let (first, second) = (&results[0], &results[1]);
    assert_eq!(first["reused"], false, "{first}");
    assert_eq!(second["reused"], true, "{second}");
    assert_eq!(first["dataset_id"], second["dataset_id"]);
    assert_eq!(first["train_examples"], 64, "{first}");
    assert_eq!(first["validation_examples"], 20, "{first}");
    assert_eq!(first["labels"], json!(["civil", "criminal"]), "{first}");

    // The same data through the prepare request: reused again.
    let job = json!({"job_id": "p3", "dataset": dataset, "settings": settings});
    let reply = mesh.request(PREPARE, &job, "prepare-reply").await;
    assert_eq!(reply["reused"], true, "{}", short(&reply));
    assert_eq!(reply["dataset_id"], first["dataset_id"]);

    // Different settings that change the features: a different dataset.
    let mut other = settings.clone();
    other["char_buckets"] = json!(3000);
    let job = json!({"job_id": "p4", "dataset": dataset, "settings": other});
    let reply = mesh.request(PREPARE, &job, "prepare-reply").await;
    assert_eq!(reply["reused"], false, "{}", short(&reply));
    assert_ne!(reply["dataset_id"], first["dataset_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_the_service_api_describe_the_instance() {
    use futures::StreamExt;
    let mut mesh = TestMesh::start(LEXMESH).await;
    let mut beats = mesh
        .client
        .subscribe("lexmesh.heartbeat.trainer.trainer-a")
        .await
        .unwrap();
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    mesh.start_service(
        "trainer",
        "trainer-a",
        &[("LEXMESH_SERVICE__HEARTBEAT_INTERVAL", "200ms")],
    )
    .await;
    let job = json!({
        "job_id": "beat1",
        "dataset": inline(sample_subset("train.jsonl", 2), Some(sample_subset("validation.jsonl", 2))),
        "settings": small_settings(40),
    });
    let mut watch = mesh.watch("beat1").await;
    mesh.submit(TRAIN, &job).await;
    let mut saw_idle = false;
    let mut saw_running = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(saw_idle && saw_running) {
        let message = tokio::time::timeout_at(deadline, beats.next())
            .await
            .expect("heartbeats keep coming")
            .expect("subscription open");
        let beat: Value = serde_json::from_slice(&message.payload).unwrap();
        mesh.schemas.check("heartbeat", "heartbeat", &beat);
        assert_eq!(beat["service"], "trainer");
        assert_eq!(beat["instance"], "trainer-a");
        assert_eq!(beat["interval_s"], 0.2);
        assert!(beat["rss_bytes"].as_u64().unwrap() > 10 << 20, "{beat}");
        let running = beat["running"].as_array().unwrap();
        match running.first() {
            None => saw_idle = true,
            Some(job) => {
                assert_eq!(job["job_id"], "beat1");
                assert!(
                    job["last_progress_ms"].as_f64().unwrap()
                        >= job["started_ms"].as_f64().unwrap()
                );
                saw_running = true;
            }
        }
    }
    // The NATS service API sees the instance, and its stats carry the instance's metrics.
    let stats = mesh
        .client
        .request("$SRV.STATS.lexmesh-trainer", "".into())
        .await
        .unwrap();
    let stats: Value = serde_json::from_slice(&stats.payload).unwrap();
    assert_eq!(stats["name"], "lexmesh-trainer", "{stats}");
    let data = &stats["endpoints"][0]["data"];
    mesh.schemas
        .check("worker-metrics", "service API stats data", data);
    assert_eq!(data["instance"], "trainer-a");
    assert_eq!(data["service"], "trainer");
    assert!(data["uptime_s"].as_f64().unwrap() > 0.0, "{data}");
    assert!(data["rss_bytes"].as_u64().unwrap() > 0, "{data}");
    let info = mesh
        .client
        .request("$SRV.INFO.lexmesh-trainer", "".into())
        .await
        .unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    let subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["subject"].as_str())
        .collect();
    assert!(subjects.contains(&"lexmesh.api.trainer.status"), "{info}");
    assert!(
        subjects.contains(&"lexmesh.api.trainer.trainer-a.status"),
        "{info}"
    );
    let cancel = mesh
        .client
        .request(
            "lexmesh.control.beat1.cancel",
            serde_json::to_vec(&json!({"job_id": "beat1"}))
                .unwrap()
                .into(),
        )
        .await
        .unwrap();
    let cancel: Value = serde_json::from_slice(&cancel.payload).unwrap();
    assert_eq!(cancel["outcome"], "cancelling");
    watch.until_final(JOB_TIMEOUT).await;
}

/// Trains on trainer-a until its first stored checkpoint, stops trainer-a with `stop`, starts
/// trainer-b, and checks that the second attempt resumes from the checkpoint instead of
/// starting over. With `epochs` small the job then runs to completion; with a long job it is
/// cancelled once attempt 2 has started. Returns the time from `stop` to attempt 2's start.
async fn resume_after(stop: impl FnOnce(&mut TestMesh), ack_wait: &str, epochs: u32) -> Duration {
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    // A stopping trainer hands every job back, however near its end.
    let env = [
        ("LEXMESH_JOBS__ACK_WAIT", ack_wait),
        ("LEXMESH_JOBS__FINISH_WITHIN", "0s"),
    ];
    mesh.start_service("trainer", "trainer-a", &env).await;
    let mut settings = small_settings(epochs);
    settings["patience"] = json!(0);
    let job = json!({
        "job_id": "resume1",
        "dataset": inline(sample_records("train.jsonl"), Some(sample_records("validation.jsonl"))),
        "settings": settings,
    });
    let mut watch = mesh.watch("resume1").await;
    mesh.submit(TRAIN, &job).await;
    watch
        .until(JOB_TIMEOUT, |e| {
            e["event"] == "progress" && e["phase"] == "epoch"
        })
        .await;
    let stopped = std::time::Instant::now();
    stop(&mut mesh);
    mesh.start_service("trainer", "trainer-b", &env).await;
    let resumed = watch
        .until(JOB_TIMEOUT, |e| {
            e["event"] == "progress" && e["phase"] == "started" && e["attempt"] == 2
        })
        .await;
    let took = stopped.elapsed();
    assert_eq!(resumed["instance"], "trainer-b");
    let from = resumed["resumed_from_epoch"]
        .as_u64()
        .expect("resumed_from_epoch on attempt 2");
    assert!(from >= 1, "{resumed}");
    assert_eq!(resumed["epoch"].as_u64().unwrap(), from + 1);
    let first_attempt_epochs = watch
        .of_kind("progress")
        .into_iter()
        .filter(|e| e["attempt"] == 1 && e["phase"] == "epoch")
        .filter_map(|e| e["epoch"].as_u64())
        .max()
        .unwrap();
    assert!(
        from <= first_attempt_epochs,
        "resumed from epoch {from}, but attempt 1 finished only {first_attempt_epochs}"
    );
    if epochs <= 30 {
        let last = watch.until_final(JOB_TIMEOUT).await;
        assert_eq!(last["event"], "completed", "{}", watch.summary());
        assert_eq!(last["result"]["train"]["epochs_completed"], epochs);
        assert_eq!(last["attempt"], 2);
        let record = mesh.job_record("resume1").await.unwrap();
        assert_eq!(record["status"], "completed");
        assert_eq!(record["attempts"], 2);
    } else {
        mesh.client
            .publish(
                cancel_subject("resume1"),
                serde_json::to_vec(&json!({"job_id": "resume1"}))
                    .unwrap()
                    .into(),
            )
            .await
            .unwrap();
        let last = watch.until_final(JOB_TIMEOUT).await;
        assert_eq!(last["event"], "cancelled", "{}", watch.summary());
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_trainers_job_resumes_from_its_checkpoint_elsewhere() {
    resume_after(|mesh| mesh.process("trainer-a").kill(), "2s", 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_job_back_at_once() {
    // A long ack_wait: the job must come back through the nak, not through the timeout.
    let took = resume_after(|mesh| mesh.process("trainer-a").terminate(), "60s", 1000).await;
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_job_near_its_end_finish_first() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    // Any job of the sample ends within 300 s: SIGTERM lets it finish rather than hand it
    // back (and the trainer exits once it has).
    mesh.start_service(
        "trainer",
        "trainer-a",
        &[("LEXMESH_JOBS__FINISH_WITHIN", "300s")],
    )
    .await;
    let mut watch = mesh.watch("near-end").await;
    mesh.submit(TRAIN, &no_early_stop_job("near-end", 30)).await;
    watch
        .until(JOB_TIMEOUT, |e| {
            e["event"] == "progress" && e["phase"] == "epoch"
        })
        .await;
    mesh.process("trainer-a").terminate();
    let done = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(done["event"], "completed", "{}", watch.summary());
    assert_eq!(done["attempt"], 1);
    assert_eq!(done["instance"], "trainer-a");
    assert_eq!(done["result"]["train"]["epochs_completed"], 30);
    let exited = mesh
        .process("trainer-a")
        .wait_exit(Duration::from_secs(30))
        .await;
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    let record = mesh.job_record("near-end").await.unwrap();
    assert_eq!(record["attempts"], 1, "{}", short(&record));
}
