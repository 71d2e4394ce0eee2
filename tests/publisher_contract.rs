//! The publisher contract as a property: hundreds of job messages per kind, generated from
//! `schemas/` alone by hypothesis-jsonschema (`tests/publisher/contract.py`, an outside
//! publisher with nats-py and no lexmesh code), sent to a running mesh on a server with
//! nats-server's default limits. Each must be accepted, or rejected before `accepted` with one
//! of the documented data-dependent codes; never with a shape or value error (an optimize job
//! excepted, for the rules between its fields that a schema cannot state: `invalid_value`).
//!
//! Needs `scripts/setup-publisher-tests` (run by `scripts/test`).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::path::Path;
use std::time::Duration;

use lexmesh_testkit::TestMesh;
use serde_json::Value;

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

/// Messages per job kind.
const PER_KIND: u32 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_valid_messages_are_accepted_or_rejected_for_their_data_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".tools/publisher-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-publisher-tests (scripts/test does)",
        python.display()
    );
    let mut mesh = TestMesh::start_default_payload(LEXMESH).await;
    mesh.start_all(&[]).await;
    let run = tokio::process::Command::new(&python)
        .arg(root.join("tests/publisher/contract.py"))
        .args(["--nats", &mesh.server.url()])
        .args(["--per-kind", &PER_KIND.to_string(), "--seed", "1"])
        .current_dir(root)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(1200), run)
        .await
        .expect("the contract run ends within 20 minutes")
        .expect("run tests/publisher/contract.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail = |s: &str| {
        s.chars()
            .rev()
            .take(6000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>()
    };
    assert!(
        output.status.success(),
        "the contract was broken ({}):\n{}\n--- stderr ---\n{}",
        output.status,
        tail(&stdout),
        tail(&stderr)
    );
    let summary: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("a JSON summary line");
    let kinds = &summary["kinds"];
    for kind in ["train", "preprocess", "evaluate", "optimize"] {
        assert_eq!(kinds[kind]["sent"], PER_KIND, "{kind}: {summary}");
        assert_eq!(kinds[kind]["violations"], 0, "{kind}: {summary}");
    }
    // The accept path ran too, not only rejections.
    for kind in ["train", "preprocess", "evaluate"] {
        assert!(
            kinds[kind]["accepted"].as_u64() > Some(PER_KIND as u64 / 10),
            "{kind}: too few accepted to prove anything: {summary}"
        );
    }
    // Searches run: no optimize job is answered `unsupported` any more.
    assert!(
        kinds["optimize"]["rejected"].get("unsupported").is_none(),
        "{summary}"
    );
}
