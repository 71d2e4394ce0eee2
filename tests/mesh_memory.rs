//! The old system's budget, kept: a trainer with `service.memory_budget_mb = 512` and the
//! default alert thresholds trains default `bow` jobs on the court rulings, and neither the
//! metrics service (no `memory` or `cpu` alert) nor the health service (no `over_budget` state,
//! and healthy at the end) finds it over its budget, while both demonstrably watched it.
//!
//! The data are the full rulings of the development data (`../shared/data`) when they are
//! there (CI has them beside the clone), else the sample shipped in `data/sample`.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::path::{Path, PathBuf};
use std::time::Duration;

use lexmesh_testkit::{TRAIN, TestMesh, short};
use serde_json::{Value, json};

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

const BUDGET_MIB: u64 = 512;

fn rulings() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let full = root.join("../shared/data/iran-court-rulings");
    if full.join("train.jsonl").exists() {
        full
    } else {
        root.join("data/sample")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_bow_jobs_on_the_rulings_stay_within_512_mib_and_raise_no_alert() {
    let data = rulings();
    eprintln!("training on {}", data.display());
    let mut mesh = TestMesh::start(LEXMESH).await;
    let budget = BUDGET_MIB.to_string();
    let trainer_env = [
        ("LEXMESH_SERVICE__MEMORY_BUDGET_MB", budget.as_str()),
        ("LEXMESH_SERVICE__METRICS_INTERVAL", "500ms"),
        // The default share: the instance's cores among its jobs.
        ("LEXMESH_SERVICE__COMPUTE_THREADS", "0"),
    ];
    let mut alerts = mesh.watch_messages("lexmesh.alerts.>", "alert").await;
    let mut health = mesh
        .watch_messages("lexmesh.health.>", "health-event")
        .await;
    let mut reports = mesh
        .watch_messages("lexmesh.metrics.trainer.trainer-a", "worker-metrics")
        .await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    mesh.start_service("trainer", "trainer-a", &trainer_env)
        .await;
    mesh.start_service("health", "health-a", &[]).await;
    mesh.start_service("metrics", "metrics-a", &[]).await;

    let js = async_nats::jetstream::new(mesh.client.clone());
    let store = js.get_object_store("lexmesh_datasets").await.unwrap();
    for file in ["train.jsonl", "validation.jsonl"] {
        let mut reader = tokio::fs::File::open(data.join(file)).await.unwrap();
        store
            .put(format!("memory/{file}").as_str(), &mut reader)
            .await
            .unwrap();
    }
    // Two default jobs at once (different seeds): the default settings, nothing made small.
    let jobs = ["mem-1", "mem-2"];
    let mut watches = Vec::new();
    for (n, job_id) in jobs.iter().enumerate() {
        watches.push(mesh.watch(job_id).await);
        let job = json!({
            "job_id": job_id,
            "model_id": format!("model-{job_id}"),
            "dataset": {"object": {"key": "memory/train.jsonl", "validation_key": "memory/validation.jsonl"}},
            "settings": {"model": "bow", "seed": n + 1},
        });
        mesh.submit(TRAIN, &job).await;
    }

    // Reports while training: the metrics path was alive when it mattered.
    let mut training_reports: Vec<Value> = Vec::new();
    let mut finals = Vec::new();
    for watch in &mut watches {
        loop {
            while let Some(r) = reports.next_within(Duration::from_millis(10)).await {
                if r["active_jobs"].as_u64().unwrap_or(0) > 0 {
                    training_reports.push(r);
                }
            }
            if let Some(e) = watch.next_within(Duration::from_millis(200)).await
                && lexmesh_testkit::is_final(&e)
            {
                finals.push(e);
                break;
            }
        }
    }
    for e in &finals {
        assert_eq!(e["event"], "completed", "{}", short(e));
    }
    assert!(
        training_reports.len() >= 3,
        "only {} metrics reports while training",
        training_reports.len()
    );
    let peak = training_reports
        .iter()
        .map(|r| r["rss_bytes"].as_u64().unwrap())
        .max()
        .unwrap();
    eprintln!(
        "trainer peak RSS in reports: {:.0} MiB over {} reports",
        peak as f64 / 1048576.0,
        training_reports.len()
    );
    assert!(
        peak < BUDGET_MIB * 1024 * 1024,
        "peak RSS {peak} bytes over the {BUDGET_MIB} MiB budget"
    );
    // A trainer busy training is not a CPU alert either: its control plane idles while the
    // compute threads work (it has short bursts: a job's start reads and decodes its dataset).
    let mut control: Vec<f64> = training_reports
        .iter()
        .map(|r| r["control_cpu_percent"].as_f64().unwrap())
        .collect();
    control.sort_by(f64::total_cmp);
    let median = control[control.len() / 2];
    eprintln!(
        "control-plane CPU while training: median {median:.1} %, max {:.1} % of one core",
        control[control.len() - 1]
    );
    assert!(median < 20.0, "control-plane CPU: {control:?}");

    // Both watchers saw the trainer: the metrics service holds its reports, the health
    // service calls it healthy.
    let snapshot = mesh.metrics_snapshot().await;
    assert!(
        snapshot["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["instance"] == "trainer-a"),
        "{}",
        short(&snapshot)
    );
    let instances = mesh
        .request("lexmesh.api.health.instances", &json!({}), "health-report")
        .await;
    let trainer = instances["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == "trainer-a")
        .cloned()
        .unwrap_or_else(|| panic!("{}", short(&instances)));
    assert_eq!(trainer["state"], "healthy", "{}", short(&trainer));

    // Nothing was raised, at any time since the services started (a late alert would come
    // within two report intervals).
    alerts.drain_for(Duration::from_secs(2)).await;
    // (A `response` alert would say the machine was too busy for the async runtime's tick,
    // which other tests running beside this one can cause: not what this test is about.)
    let raised: Vec<&Value> = alerts
        .events
        .iter()
        .filter(|a| a["instance"] == "trainer-a" && (a["kind"] == "memory" || a["kind"] == "cpu"))
        .collect();
    assert!(raised.is_empty(), "alerts: {raised:?}");
    health.drain_for(Duration::from_millis(100)).await;
    assert!(
        health
            .events
            .iter()
            .all(|e| e["instance"] != "trainer-a" || e["state"] != "over_budget"),
        "health events: {:?}",
        health.events
    );
}
