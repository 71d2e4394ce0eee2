//! The core flow (train, then classify) against Debian's nats-server 2.9.10, where the client
//! cannot create KV buckets and the services must create the bucket's stream themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::time::Duration;

use lexmesh_testkit::{
    CLASSIFY, JOB_TIMEOUT, TRAIN, TestMesh, sample_records, sample_train_job, short, small_settings,
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
