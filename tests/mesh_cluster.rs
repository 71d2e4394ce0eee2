//! lexmesh on a 3-node JetStream cluster (three nats-server processes with routes on
//! loopback), every stream, bucket and store with 3 replicas (`nats.replicas = 3`), the mesh
//! started by `lexmesh up`. The node leading the jobs stream, or the job records' bucket, is
//! killed with SIGKILL while several jobs train: every job completes exactly once, every
//! stored event chain is whole, the job records keep their history, and the node, restarted,
//! catches up.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lexmesh_testkit::{MESH_STREAMS, TRAIN, TestMesh, eventually, no_early_stop_job};
use serde_json::Value;

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

const JOBS: usize = 4;
const EPOCHS: u64 = 40;

/// The record of `job_id`; None when there is none yet or the bucket does not answer (while
/// its leader is being elected).
async fn record(js: &async_nats::jetstream::Context, job_id: &str) -> Option<Value> {
    let bucket = js.get_key_value("lexmesh_jobs").await.ok()?;
    let value = bucket.get(job_id).await.ok()??;
    serde_json::from_slice(&value).ok()
}

async fn a_node_killed_under_training_loses_nothing(leading: &str) {
    let mut mesh = TestMesh::builder(LEXMESH).cluster(3).start().await;
    let trainers = mesh.track_heartbeats("lexmesh.heartbeat.trainer.*").await;
    let preprocessors = mesh
        .track_heartbeats("lexmesh.heartbeat.preprocessor.*")
        .await;
    let work = mesh.dir().join("work");
    let mut up = mesh.up(
        &["--replicas", "trainer=2,evaluator=0"],
        &[
            ("LEXMESH_NATS__REPLICAS", "3"),
            // A JetStream API request lost while the cluster settles fails after 10 s (and the
            // service starts again) rather than after the default minute.
            ("LEXMESH_NATS__REQUEST_TIMEOUT", "10s"),
            ("LEXMESH_JOBS__CONCURRENCY", "2"),
            ("LEXMESH_SERVICE__WORK_DIR", work.to_str().unwrap()),
        ],
    );
    eventually(
        "two trainers and a preprocessor",
        Duration::from_secs(120),
        || async { (trainers.instances() >= 2 && preprocessors.instances() >= 1).then_some(()) },
    )
    .await;
    let js = async_nats::jetstream::new(mesh.client.clone());
    for name in MESH_STREAMS {
        let mut stream = js
            .get_stream(name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.num_replicas, 3, "{name}");
        let cluster = info.cluster.as_ref().expect("clustered");
        assert_eq!(cluster.replicas.len(), 2, "{name}: {cluster:?}");
    }

    let ids: Vec<String> = (1..=JOBS).map(|n| format!("cluster-{n}")).collect();
    for id in &ids {
        mesh.submit(TRAIN, &no_early_stop_job(id, EPOCHS as u32))
            .await;
    }
    // Every job has finished an epoch: all are mid-training.
    for id in &ids {
        eventually(
            &format!("{id} training"),
            Duration::from_secs(120),
            || async {
                let record = record(&js, id).await?;
                (record["epochs_completed"].as_u64() >= Some(1)).then_some(())
            },
        )
        .await;
    }
    let leader = js
        .get_stream(leading)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .cluster
        .clone()
        .unwrap()
        .leader
        .expect("the stream has a leader");
    let killed_at = Instant::now();
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0;
    mesh.nodes()
        .find(|n| n.name() == leader)
        .expect("the leader is a node of the cluster")
        .kill();
    eprintln!("killed {leader}, the leader of {leading}");

    // Every job completes.
    eventually("every job completed", Duration::from_secs(240), || async {
        let mut done = 0;
        for id in &ids {
            let record = record(&js, id).await?;
            assert_ne!(record["status"], "failed", "{record}");
            done += usize::from(record["status"] == "completed");
        }
        (done == JOBS).then_some(())
    })
    .await;
    eprintln!(
        "figure: {leading} leader kill -> every job completed: {:.1?}",
        killed_at.elapsed()
    );

    // Exactly once, and whole: one `completed` per job; every attempt that trained was
    // accepted once and is in the record's history (an attempt may also end before it is
    // accepted: a preprocessor not up yet is retried), and every epoch of the job has its
    // event. A job's record turns `completed` before its `completed` event is stored (so that
    // whoever sees the event finds the record it describes), so the event is waited for.
    let mut first_after_kill = f64::INFINITY;
    for id in &ids {
        let events = eventually(
            &format!("{id}'s completed event stored"),
            Duration::from_secs(60),
            || async {
                let events = mesh.stored_events(&format!("lexmesh.events.{id}.>")).await;
                events
                    .iter()
                    .any(|e| e["event"] == "completed")
                    .then_some(events)
            },
        )
        .await;
        let ends: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "completed")
            .collect();
        assert_eq!(ends.len(), 1, "{id}: completed events {ends:?}");
        let record = record(&js, id).await.unwrap();
        let recorded: BTreeSet<u64> = record["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["attempt"].as_u64())
            .collect();
        let accepted: Vec<u64> = events
            .iter()
            .filter(|e| e["event"] == "accepted")
            .filter_map(|e| e["attempt"].as_u64())
            .collect();
        let trained: BTreeSet<u64> = events
            .iter()
            .filter(|e| e["event"] == "progress")
            .filter_map(|e| e["attempt"].as_u64())
            .collect();
        let accepted_once: BTreeSet<u64> = accepted.iter().copied().collect();
        assert_eq!(
            accepted.len(),
            accepted_once.len(),
            "{id}: accepted twice: {accepted:?}"
        );
        assert!(
            trained.is_subset(&accepted_once) && accepted_once.is_subset(&recorded),
            "{id}: attempts trained {trained:?}, accepted {accepted:?}, in the record {recorded:?}"
        );
        let epochs: BTreeSet<u64> = events
            .iter()
            .filter(|e| e["event"] == "progress" && e["phase"] == "epoch")
            .filter_map(|e| e["epoch"].as_u64())
            .collect();
        let missing: Vec<u64> = (1..=EPOCHS).filter(|e| !epochs.contains(e)).collect();
        assert!(
            missing.is_empty(),
            "{id}: no stored event for epochs {missing:?}"
        );
        first_after_kill = events
            .iter()
            .filter(|e| e["event"] == "progress")
            .filter_map(|e| e["timestamp_ms"].as_f64())
            .filter(|t| *t > killed_ms)
            .fold(first_after_kill, f64::min);
    }
    eprintln!(
        "figure: {leading} leader kill -> first progress event stored: {:.2} s",
        (first_after_kill - killed_ms) / 1000.0
    );

    // The killed node, restarted, catches up with every stream.
    mesh.nodes()
        .find(|n| n.name() == leader)
        .unwrap()
        .restart()
        .unwrap();
    mesh.wait_node_caught_up(&leader, Duration::from_secs(60))
        .await;
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_jobs_stream_leader_mid_training_loses_no_job_and_no_event() {
    a_node_killed_under_training_loses_nothing("LEXMESH_JOBS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_job_records_leader_mid_training_loses_no_job_and_no_event() {
    a_node_killed_under_training_loses_nothing("KV_lexmesh_jobs").await;
}
