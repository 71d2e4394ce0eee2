//! The core flow (train, then classify) and a hyperparameter search against Debian's
//! nats-server 2.9.10, where the client cannot create KV buckets (the services create the
//! bucket's stream themselves) and ordered consumers ignore several subject filters.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::time::Duration;

use lexmesh_testkit::{
    CLASSIFY, JOB_TIMEOUT, TRAIN, TestMesh, inline, is_final, sample_records, sample_train_job,
    short, small_settings,
};
use serde_json::json;

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_and_classify_on_nats_server_2_9() {
    let mut mesh = TestMesh::start_legacy(LEXMESH).await;
    assert_eq!(
        (mesh.server.version().0, mesh.server.version().1),
        (2, 9),
        "{:?}",
        mesh.server.version()
    );
    mesh.start_all(&[]).await;

    let mut watch = mesh.watch("legacy1").await;
    let job = sample_train_job("legacy1", "legacy-model", small_settings(2));
    let first = mesh.submit(TRAIN, &job).await;
    // Deduplication works on 2.9 too.
    let again = mesh.submit(TRAIN, &job).await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(first["seq"], again["seq"]);

    let last = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(last["event"], "completed", "{}", watch.summary());
    assert_eq!(watch.of_kind("accepted").len(), 1, "{}", watch.summary());
    assert!(!watch.of_kind("progress").is_empty(), "{}", watch.summary());
    let train = &last["result"]["train"];
    assert_eq!(train["model_id"], "legacy-model", "{}", short(&last));
    let macro_f1 = train["validation"]["macro_f1"].as_f64().unwrap();
    assert!(macro_f1 > 0.5, "macro-F1 {macro_f1}");

    // The job record lives in the KV bucket the services created on 2.9.
    let record = mesh
        .wait_job_status("legacy1", "completed", Duration::from_secs(5))
        .await;
    assert_eq!(record["owner"], "trainer-a");

    let texts: Vec<_> = sample_records("validation.jsonl")
        .into_iter()
        .take(2)
        .map(|r| r["text"].clone())
        .collect();
    let reply = mesh
        .request(
            CLASSIFY,
            &json!({"model_id": "legacy-model", "texts": texts}),
            "classify-reply",
        )
        .await;
    let predictions = reply["predictions"].as_array().unwrap_or_else(|| {
        panic!("no predictions: {}", short(&reply));
    });
    assert_eq!(predictions.len(), 2);
    for p in predictions {
        let sum: f64 = p["probabilities"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-3, "{p}");
    }
    mesh.assert_all_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_completes_on_nats_server_2_9() {
    let mut mesh = TestMesh::start_legacy(LEXMESH).await;
    assert_eq!(mesh.server.version().1, 9, "{:?}", mesh.server.version());
    mesh.start_all(&[]).await;
    let mut watch = mesh.watch("legacy-search").await;
    let job = json!({
        "job_id": "legacy-search",
        "model_id": "legacy-best",
        "dataset": inline(
            sample_records("train.jsonl"),
            Some(sample_records("validation.jsonl")),
        ),
        "base": {"model": "bow", "patience": 0},
        "trials": 4,
        "search_space": {"learning_rate": [0.05, 0.00001], "dropout": [0.0, 0.2]},
        "sampler": "grid",
        "scheduler": {"asha": {"grace_period": 1, "reduction_factor": 2}},
        "max_concurrent_trials": 2,
        "max_epochs": 3,
    });
    mesh.submit("lexmesh.jobs.optimize", &job).await;
    let last = watch.until(JOB_TIMEOUT * 2, is_final).await;
    assert_eq!(last["event"], "completed", "{}", watch.summary());
    let summary = &last["result"]["optimize"];
    let counts = &summary["trials"];
    let ended: u64 = ["completed", "stopped", "cancelled", "failed"]
        .iter()
        .map(|k| counts[k].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(ended, 4, "{}", short(&last));
    assert_eq!(counts["failed"], 0, "{}", short(&last));
    // Each trial told the search its end once, whatever the server's filters let through.
    for kind in ["trial_started", "trial_completed"] {
        let mut ids: Vec<String> = watch
            .of_kind(kind)
            .iter()
            .map(|e| e["trial_id"].as_str().unwrap().to_string())
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "{kind} twice: {}", watch.summary());
    }
    assert_eq!(
        watch.of_kind("trial_started").len(),
        4,
        "{}",
        watch.summary()
    );
    let reply = mesh
        .request(
            CLASSIFY,
            &json!({"model_id": "legacy-best", "texts": ["متن یک رأی"]}),
            "classify-reply",
        )
        .await;
    assert!(reply.get("error").is_none(), "{}", short(&reply));
}
