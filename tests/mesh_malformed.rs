//! Malformed input from outside: every bad job ends in exactly one `failed` event with
//! `retrying: false` and the documented code, is never delivered again and leaves the jobs
//! stream empty; every bad request gets an error reply with its code; and the services keep
//! serving afterwards.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use lexmesh_testkit::{
    CLASSIFY, EVALUATE, JOB_TIMEOUT, PREPARE, PREPROCESS, Schemas, TRAIN, TestMesh, cancel_subject,
    inline, is_final, sample_subset, short, small_settings,
};
use serde_json::{Value, json};

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

/// Short ack wait, so that a message that was not terminated would come back within the
/// quiet period the test waits after the last failure.
const ACK_WAIT: &str = "2s";

/// How long the test waits after the last failure for a redelivery that must not come.
const QUIET: Duration = Duration::from_secs(3);

/// One malformed job.
struct JobCase {
    name: &'static str,
    subject: &'static str,
    payload: Vec<u8>,
    /// `Nats-Msg-Id` header (None: no header).
    msg_id: Option<String>,
    /// The job id the failure names; None: too malformed to name one, so the failure comes on
    /// `lexmesh.events.seq-<stream sequence>.failed`.
    job_id: Option<String>,
    code: &'static str,
}

/// A few short records of both classes: if a case is wrongly accepted, it trains in a blink.
fn tiny_records() -> Vec<Value> {
    let mut civil = Vec::new();
    let mut criminal = Vec::new();
    for r in sample_subset("train.jsonl", 1) {
        let short_text: String = r["text"].as_str().unwrap().chars().take(300).collect();
        let record = json!({"text": short_text, "label": r["label"]});
        match r["label"].as_str() {
            Some("civil") if civil.len() < 4 => civil.push(record),
            Some("criminal") if criminal.len() < 4 => criminal.push(record),
            _ => {}
        }
    }
    civil.into_iter().chain(criminal).collect()
}

fn tiny_train_job(job_id: &str) -> Value {
    json!({
        "job_id": job_id,
        "dataset": inline(tiny_records(), None),
        "settings": small_settings(1),
    })
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// A case whose payload is `value` and whose job id is readable.
fn named(name: &'static str, subject: &'static str, value: Value, code: &'static str) -> JobCase {
    let id = value["job_id"].as_str().unwrap().to_string();
    JobCase {
        name,
        subject,
        payload: bytes(&value),
        msg_id: Some(id.clone()),
        job_id: Some(id),
        code,
    }
}

/// A case too malformed to name its job.
fn unnamed(
    name: &'static str,
    subject: &'static str,
    payload: Vec<u8>,
    code: &'static str,
) -> JobCase {
    JobCase {
        name,
        subject,
        payload,
        msg_id: None,
        job_id: None,
        code,
    }
}

/// A train job with one setting replaced.
fn with_setting(job_id: &str, key: &str, value: Value) -> Value {
    let mut job = tiny_train_job(job_id);
    job["settings"][key] = value;
    job
}

fn job_cases() -> Vec<JobCase> {
    let dataset = inline(tiny_records(), None);

    let mut unknown_top = tiny_train_job("mf-unknown-top");
    unknown_top["priority"] = json!(1);
    let mut missing_id = tiny_train_job("x");
    missing_id.as_object_mut().unwrap().remove("job_id");
    let mut numeric_id = tiny_train_job("x");
    numeric_id["job_id"] = json!(42);
    let mut bad_model_id = tiny_train_job("mf-bad-model-id");
    bad_model_id["model_id"] = json!("m.1");
    let mut empty_text = tiny_train_job("mf-empty-text");
    empty_text["dataset"]["inline"]["train"][0]["text"] = json!("  ");
    let mut no_label = tiny_train_job("mf-no-label");
    no_label["dataset"]["inline"]["train"][0]
        .as_object_mut()
        .unwrap()
        .remove("label");
    let mut single_class = tiny_train_job("mf-single-class");
    let civil_only: Vec<Value> = tiny_records()
        .into_iter()
        .filter(|r| r["label"] == "civil")
        .collect();
    single_class["dataset"] = inline(civil_only, None);
    let mut evaluate_extra = json!({
        "job_id": "mf-evaluate-extra",
        "model_id": "m1",
        "dataset": dataset,
    });
    evaluate_extra["threshold"] = json!(0.5);

    let mut mismatch = named(
        "Nats-Msg-Id differs from job_id",
        TRAIN,
        tiny_train_job("mf-mismatch"),
        "job_id_mismatch",
    );
    mismatch.msg_id = Some("mf-other-id".into());
    // Too broken to name its job, but its Nats-Msg-Id does.
    let named_by_header = JobCase {
        name: "bad JSON with a Nats-Msg-Id",
        subject: TRAIN,
        payload: br#"{"job_id": "#.to_vec(),
        msg_id: Some("mf-named-by-header".into()),
        job_id: Some("mf-named-by-header".into()),
        code: "invalid_json",
    };

    vec![
        unnamed(
            "bad JSON",
            TRAIN,
            br#"{"job_id":"mf-bad-json","#.to_vec(),
            "invalid_json",
        ),
        unnamed(
            "not UTF-8",
            TRAIN,
            b"{\"job_id\":\"mf-\xff\xfe\"}".to_vec(),
            "invalid_json",
        ),
        unnamed("empty payload", TRAIN, Vec::new(), "invalid_json"),
        unnamed(
            "a JSON array",
            TRAIN,
            b"[1,2,3]".to_vec(),
            "invalid_message",
        ),
        unnamed(
            "a JSON string",
            TRAIN,
            b"\"train\"".to_vec(),
            "invalid_message",
        ),
        unnamed(
            "missing job_id",
            TRAIN,
            bytes(&missing_id),
            "invalid_message",
        ),
        unnamed(
            "job_id is a number",
            TRAIN,
            bytes(&numeric_id),
            "invalid_message",
        ),
        unnamed(
            "job_id with a dot",
            TRAIN,
            bytes(&tiny_train_job("mf.dot")),
            "invalid_job_id",
        ),
        unnamed(
            "job_id with a space",
            TRAIN,
            bytes(&tiny_train_job("mf space")),
            "invalid_job_id",
        ),
        unnamed(
            "job_id too long",
            TRAIN,
            bytes(&tiny_train_job(&"a".repeat(65))),
            "invalid_job_id",
        ),
        named(
            "unknown top-level field",
            TRAIN,
            unknown_top,
            "invalid_message",
        ),
        named(
            "unknown settings field",
            TRAIN,
            with_setting("mf-unknown-setting", "epochz", json!(2)),
            "invalid_message",
        ),
        named(
            "record without its label",
            TRAIN,
            no_label,
            "invalid_message",
        ),
        named(
            "negative epochs",
            TRAIN,
            with_setting("mf-negative-epochs", "epochs", json!(-1)),
            "invalid_value",
        ),
        named(
            "epochs 10001",
            TRAIN,
            with_setting("mf-many-epochs", "epochs", json!(10001)),
            "invalid_value",
        ),
        named(
            "transformer width not a multiple of its heads",
            TRAIN,
            {
                let mut job = with_setting("mf-heads", "model", json!("transformer"));
                job["settings"]["embedding_dim"] = json!(30);
                job
            },
            "invalid_value",
        ),
        named(
            "epochs 0",
            TRAIN,
            with_setting("mf-zero-epochs", "epochs", json!(0)),
            "invalid_value",
        ),
        named(
            "learning_rate \"NaN\"",
            TRAIN,
            with_setting("mf-lr-nan", "learning_rate", json!("NaN")),
            "invalid_message",
        ),
        named(
            "learning_rate 0",
            TRAIN,
            with_setting("mf-lr-zero", "learning_rate", json!(0)),
            "invalid_value",
        ),
        named(
            "learning_rate -1",
            TRAIN,
            with_setting("mf-lr-negative", "learning_rate", json!(-1)),
            "invalid_value",
        ),
        named(
            "learning_rate 11",
            TRAIN,
            with_setting("mf-lr-huge", "learning_rate", json!(11)),
            "invalid_value",
        ),
        named(
            "batch_size 0",
            TRAIN,
            with_setting("mf-batch-zero", "batch_size", json!(0)),
            "invalid_value",
        ),
        named(
            "validation_fraction 1.5",
            TRAIN,
            with_setting("mf-fraction", "validation_fraction", json!(1.5)),
            "invalid_value",
        ),
        named(
            "dropout 1.0",
            TRAIN,
            with_setting("mf-dropout", "dropout", json!(1.0)),
            "invalid_value",
        ),
        named(
            "unknown model kind",
            TRAIN,
            with_setting("mf-svm", "model", json!("svm")),
            "invalid_message",
        ),
        named("invalid model_id", TRAIN, bad_model_id, "invalid_value"),
        named(
            "empty dataset",
            TRAIN,
            json!({"job_id": "mf-empty", "dataset": {"inline": {"train": []}}}),
            "invalid_value",
        ),
        named(
            "record with a blank text",
            TRAIN,
            empty_text,
            "invalid_value",
        ),
        named(
            "single-class dataset",
            TRAIN,
            single_class,
            "invalid_dataset",
        ),
        named(
            "unknown dataset source",
            TRAIN,
            json!({"job_id": "mf-hdfs", "dataset": {"hdfs": {"path": "/x"}}}),
            "invalid_message",
        ),
        named(
            "missing object key",
            TRAIN,
            json!({
                "job_id": "mf-no-object",
                "dataset": {"object": {"key": "uploads/missing.jsonl"}},
                "settings": small_settings(1),
            }),
            "dataset_not_found",
        ),
        named(
            "missing prepared dataset",
            TRAIN,
            json!({
                "job_id": "mf-no-prepared",
                "dataset": {"prepared": {"dataset_id": "no-such-dataset"}},
                "settings": small_settings(1),
            }),
            "dataset_not_found",
        ),
        mismatch,
        named_by_header,
        named(
            "evaluate: unknown model",
            EVALUATE,
            json!({"job_id": "mf-no-model", "model_id": "no-such-model", "dataset": dataset}),
            "model_not_found",
        ),
        named(
            "evaluate: unknown field",
            EVALUATE,
            evaluate_extra,
            "invalid_message",
        ),
        unnamed(
            "preprocess: bad JSON",
            PREPROCESS,
            b"{not json}".to_vec(),
            "invalid_json",
        ),
        named(
            "preprocess: prepared dataset as input",
            PREPROCESS,
            json!({"job_id": "mf-pre-prepared", "dataset": {"prepared": {"dataset_id": "abc"}}}),
            "invalid_message",
        ),
    ]
}

fn kind_of(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_jobs_fail_once_and_are_never_redelivered() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_all(&[("LEXMESH_JOBS__ACK_WAIT", ACK_WAIT)])
        .await;
    let cases = job_cases();
    assert!(cases.len() >= 24, "{} cases", cases.len());

    let mut events = mesh.watch_subject("lexmesh.events.>").await;
    // job id of the failure → the case
    let mut expected: BTreeMap<String, &JobCase> = BTreeMap::new();
    for case in &cases {
        let headers = case.msg_id.as_ref().map(|id| {
            let mut h = HeaderMap::new();
            h.insert("Nats-Msg-Id", id.as_str());
            h
        });
        let ack = mesh
            .publish_raw(case.subject, headers, case.payload.clone())
            .await;
        assert!(
            ack.get("error").is_none() && ack["duplicate"] != true,
            "{}: JetStream did not store the message: {}",
            case.name,
            short(&ack)
        );
        let id = case
            .job_id
            .clone()
            .unwrap_or_else(|| format!("seq-{}", ack["seq"].as_u64().expect("seq")));
        assert!(
            expected.insert(id.clone(), case).is_none(),
            "two cases name {id}"
        );
    }

    // One final event per case.
    let mut finals: HashMap<String, Value> = HashMap::new();
    let deadline = Instant::now() + JOB_TIMEOUT;
    while finals.len() < expected.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(event) = events.next_within(left).await else {
            let missing: Vec<String> = expected
                .iter()
                .filter(|(id, _)| !finals.contains_key(*id))
                .map(|(id, case)| format!("{} ({id})", case.name))
                .collect();
            panic!(
                "no final event within {JOB_TIMEOUT:?} for: {missing:?}\nevents:{}",
                events.summary()
            );
        };
        let id = event["job_id"].as_str().unwrap().to_string();
        assert!(
            expected.contains_key(&id),
            "an event of no case: {}",
            short(&event)
        );
        if is_final(&event) {
            assert!(
                finals.insert(id.clone(), event).is_none(),
                "{id} ended twice:{}",
                events.summary()
            );
        }
    }
    // Nothing comes back: a redelivered message would fail again within the ack wait.
    let more = events.drain_for(QUIET).await;
    assert!(
        more.is_empty(),
        "events after every case had failed: {}",
        more.iter().map(short).collect::<Vec<_>>().join("\n")
    );

    let mut wrong = Vec::new();
    for (id, case) in &expected {
        let event = &finals[id];
        let got = (
            event["event"].as_str().unwrap_or("?"),
            event["code"].as_str().unwrap_or("-"),
            event["retrying"].as_bool(),
            event["kind"].as_str().unwrap_or("?"),
        );
        let want = ("failed", case.code, Some(false), kind_of(case.subject));
        if got != want {
            wrong.push(format!(
                "{} ({id}): expected {want:?}, got {got:?}: {}",
                case.name,
                short(event)
            ));
        }
        let failed = events
            .events
            .iter()
            .filter(|e| e["job_id"] == id.as_str() && e["event"] == "failed")
            .count();
        if failed != 1 {
            wrong.push(format!("{} ({id}): {failed} failed events", case.name));
        }
        // Every check, including those that need the data or the stores, comes before
        // `accepted`.
        if events
            .events
            .iter()
            .any(|e| e["job_id"] == id.as_str() && e["event"] == "accepted")
        {
            wrong.push(format!("{} ({id}): accepted before failed", case.name));
        }
    }
    assert!(wrong.is_empty(), "wrong outcomes:\n{}", wrong.join("\n"));

    // Terminated messages leave the work queue.
    mesh.wait_jobs_stream_empty().await;

    // Cases that name their job leave a failed record with the code.
    for (id, case) in &expected {
        if case.job_id.is_none() {
            continue;
        }
        let record = mesh
            .wait_job_status(id, "failed", Duration::from_secs(5))
            .await;
        assert_eq!(
            record["error"]["code"],
            case.code,
            "{}: {}",
            case.name,
            short(&record)
        );
    }

    // The services kept serving: a valid job still completes.
    let mut watch = mesh.watch("mf-valid").await;
    mesh.submit(TRAIN, &tiny_train_job("mf-valid")).await;
    let last = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(last["event"], "completed", "{}", watch.summary());
    mesh.assert_all_serving().await;
    for (service, instance) in [
        ("preprocessor", "preprocessor-a"),
        ("trainer", "trainer-a"),
        ("evaluator", "evaluator-a"),
    ] {
        mesh.wait_idle(service, instance).await;
    }
}

/// One malformed request/reply.
struct RequestCase {
    name: &'static str,
    subject: String,
    payload: Vec<u8>,
    code: &'static str,
}

fn request(name: &'static str, subject: &str, payload: Vec<u8>, code: &'static str) -> RequestCase {
    RequestCase {
        name,
        subject: subject.to_string(),
        payload,
        code,
    }
}

fn request_cases() -> Vec<RequestCase> {
    let dataset = inline(tiny_records(), None);
    vec![
        request(
            "classify: empty texts",
            CLASSIFY,
            bytes(&json!({"model_id": "m1", "texts": []})),
            "invalid_value",
        ),
        request(
            "classify: unknown model",
            CLASSIFY,
            bytes(&json!({"model_id": "no-such-model", "texts": ["متن"]})),
            "model_not_found",
        ),
        request(
            "classify: bad JSON",
            CLASSIFY,
            br#"{"model_id": "m1", "texts": ["#.to_vec(),
            "invalid_json",
        ),
        request(
            "classify: not UTF-8",
            CLASSIFY,
            b"{\"model_id\":\"m\xff\"}".to_vec(),
            "invalid_json",
        ),
        request(
            "classify: empty payload",
            CLASSIFY,
            Vec::new(),
            "invalid_json",
        ),
        request(
            "classify: unknown field",
            CLASSIFY,
            bytes(&json!({"model_id": "m1", "texts": ["x"], "top_k": 2})),
            "invalid_message",
        ),
        request(
            "classify: texts missing",
            CLASSIFY,
            bytes(&json!({"model_id": "m1"})),
            "invalid_message",
        ),
        request(
            "classify: texts not strings",
            CLASSIFY,
            bytes(&json!({"model_id": "m1", "texts": [1, 2]})),
            "invalid_message",
        ),
        request(
            "classify: invalid model id",
            CLASSIFY,
            bytes(&json!({"model_id": "m.1", "texts": ["x"]})),
            "invalid_value",
        ),
        request(
            "prepare: unknown field",
            PREPARE,
            bytes(&json!({"job_id": "rq-1", "dataset": dataset, "extra": true})),
            "invalid_message",
        ),
        request("prepare: bad JSON", PREPARE, b"]".to_vec(), "invalid_json"),
        request(
            "prepare: empty dataset",
            PREPARE,
            bytes(&json!({"job_id": "rq-2", "dataset": {"inline": {"train": []}}})),
            "invalid_value",
        ),
        request(
            "prepare: missing object",
            PREPARE,
            bytes(&json!({"job_id": "rq-3", "dataset": {"object": {"key": "uploads/none.csv"}}})),
            "dataset_not_found",
        ),
        request(
            "cancel: job id differs from the subject",
            &cancel_subject("rq-4"),
            bytes(&json!({"job_id": "rq-5"})),
            "job_id_mismatch",
        ),
        request(
            "cancel: bad JSON",
            &cancel_subject("rq-6"),
            b"{".to_vec(),
            "invalid_json",
        ),
        request(
            "cancel: invalid job id",
            &cancel_subject("rq-7"),
            bytes(&json!({"job_id": "rq 7"})),
            "invalid_job_id",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_error_replies() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_all(&[]).await;
    let mut wrong = Vec::new();
    for case in request_cases() {
        let reply = mesh
            .request_raw(&case.subject, case.payload.clone(), None)
            .await;
        if reply.get("error").is_none() {
            wrong.push(format!(
                "{}: expected error {}, got {}",
                case.name,
                case.code,
                short(&reply)
            ));
            continue;
        }
        mesh.schemas
            .check("error-reply", &format!("reply to {}", case.name), &reply);
        if reply["error"]["code"] != case.code {
            wrong.push(format!(
                "{}: expected {}, got {}",
                case.name,
                case.code,
                short(&reply)
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong replies:\n{}", wrong.join("\n"));
    mesh.assert_all_serving().await;
}

/// The harness itself: the schema check that every captured message goes through does reject
/// what the protocol forbids (so the passing tests above mean something).
#[test]
fn the_schema_check_rejects_invalid_messages() {
    let schemas = Schemas::load();
    let accepted = json!({
        "event": "accepted", "job_id": "j1", "kind": "train", "attempt": 1,
        "instance": "trainer-a", "timestamp_ms": 1.0,
    });
    assert_eq!(
        schemas.violations("job-event", &accepted),
        Vec::<String>::new()
    );
    let mut bad = Vec::new();
    let mut extra = accepted.clone();
    extra["priority"] = json!(1);
    bad.push(extra);
    let mut missing = accepted.clone();
    missing.as_object_mut().unwrap().remove("instance");
    bad.push(missing);
    let mut unknown_kind = accepted.clone();
    unknown_kind["event"] = json!("started");
    bad.push(unknown_kind);
    let mut negative = accepted.clone();
    negative["attempt"] = json!(-1);
    bad.push(negative);
    for event in &bad {
        assert!(
            !schemas.violations("job-event", event).is_empty(),
            "job-event accepts {event}"
        );
    }
    let error = json!({"error": {"code": "invalid_json", "reason": "x"}});
    assert!(schemas.violations("error-reply", &error).is_empty());
    let unknown_code = json!({"error": {"code": "oops", "reason": "x"}});
    assert!(!schemas.violations("error-reply", &unknown_code).is_empty());
    assert!(!schemas.violations("classify-reply", &error).is_empty());
}
