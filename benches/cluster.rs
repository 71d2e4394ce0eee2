//! The cluster benchmark (`cargo bench --bench cluster -- [options]`): lexmesh on a 3-node
//! JetStream cluster (three `nats-server` processes with routes on loopback, every stream,
//! bucket and store with 3 replicas) against the same mesh on one server, in the same run.
//!
//! For each topology, `lexmesh up` with two trainer replicas (2 jobs at once each) and a
//! preprocessor; `--jobs` small train jobs on the repository's sample, submitted at once:
//!
//! - **job throughput**: jobs completed per minute, from the first submit to the last
//!   `completed` event;
//! - **progress-event latency**: receive time − `timestamp_ms` of every `progress` event, as a
//!   client connected to the mesh receives it live (batch events with `progress_interval = 0s`,
//!   and epoch events), p50 / p95 / p99 / max.
//!
//! Then, on the cluster only, `--kills` rounds: `--kill-jobs` longer jobs train; once every
//! one has finished an epoch, the node that leads a stream (in turn `LEXMESH_JOBS`,
//! `KV_lexmesh_jobs`, `LEXMESH_EVENTS`) is SIGKILLed; **kill → first progress event** of each
//! job, as a client on a surviving node receives it (median and max over the jobs, per round).
//! The node is restarted, every job must complete exactly once, and the restarted node must
//! catch up before the next round.
//!
//! Options (after `--`): `--jobs N` (12), `--epochs N` (3, of the throughput jobs),
//! `--kills N` (3), `--kill-jobs N` (4), `--kill-epochs N` (40), `--rounds N` (1: throughput
//! runs per topology, alternating which goes first), `--out FILE`
//! (`target/cluster-bench.json`). Every figure of a run is also in the JSON file.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark stops at its first failed step

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use lexmesh_testkit::{TRAIN, TestMesh, eventually, is_final, no_early_stop_job};
use serde_json::{Value, json};
#[path = "common/stats.rs"]
mod stats;
use stats::quantile;

/// The `lexmesh` binary the benchmark runs.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

/// The streams whose leader a kill round takes down, in turn.
const LEADERS: [&str; 3] = ["LEXMESH_JOBS", "KV_lexmesh_jobs", "LEXMESH_EVENTS"];

struct Options {
    jobs: usize,
    epochs: u32,
    kills: usize,
    kill_jobs: usize,
    kill_epochs: u32,
    rounds: usize,
    out: PathBuf,
}

fn options() -> Options {
    let mut o = Options {
        jobs: 12,
        epochs: 3,
        kills: 3,
        kill_jobs: 4,
        kill_epochs: 40,
        rounds: 1,
        out: PathBuf::from("target/cluster-bench.json"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    let number = |flag: &str, v: Option<&String>| -> usize {
        v.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a whole number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--jobs" => o.jobs = number(arg, it.next()),
            "--epochs" => o.epochs = number(arg, it.next()) as u32,
            "--kills" => o.kills = number(arg, it.next()),
            "--kill-jobs" => o.kill_jobs = number(arg, it.next()),
            "--kill-epochs" => o.kill_epochs = number(arg, it.next()) as u32,
            "--rounds" => o.rounds = number(arg, it.next()).max(1),
            "--out" => o.out = PathBuf::from(it.next().expect("--out FILE")),
            // `cargo bench` passes `--bench` to every bench program.
            "--bench" => {}
            other => panic!("unknown option `{other}` (see the doc comment of benches/cluster.rs)"),
        }
    }
    o
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// A job event as a live subscriber received it.
#[derive(Clone)]
struct Received {
    at_ms: f64,
    event: Value,
}

/// Every job event a client receives live, from the moment it subscribes.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Received>>>);

impl Events {
    async fn follow(client: &async_nats::Client) -> Self {
        let events = Events::default();
        let mut subscription = client.subscribe("lexmesh.events.>").await.unwrap();
        client.flush().await.unwrap();
        let sink = events.clone();
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let at_ms = now_ms();
                if let Ok(event) = serde_json::from_slice::<Value>(&message.payload) {
                    sink.0.lock().unwrap().push(Received { at_ms, event });
                }
            }
        });
        events
    }

    fn snapshot(&self) -> Vec<Received> {
        self.0.lock().unwrap().clone()
    }

    /// The final events of `ids` received so far, per job.
    fn finals(&self, ids: &[String]) -> BTreeMap<String, Vec<Value>> {
        let mut finals: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for r in self.snapshot() {
            let id = r.event["job_id"].as_str().unwrap_or_default();
            if ids.iter().any(|i| i == id) && is_final(&r.event) {
                finals.entry(id.to_string()).or_default().push(r.event);
            }
        }
        finals
    }

    /// Waits until every job of `ids` has a final event; fails on one that is not `completed`.
    async fn wait_completed(&self, ids: &[String], timeout: Duration) {
        eventually("every job completed", timeout, || async {
            let finals = self.finals(ids);
            for (id, events) in &finals {
                for event in events {
                    assert_eq!(event["event"], "completed", "{id}: {event}");
                }
            }
            (finals.len() == ids.len()).then_some(())
        })
        .await;
    }
}

/// A mesh with `lexmesh up` running on it, ready for jobs.
struct Running {
    mesh: TestMesh,
    up: lexmesh_testkit::UpProcess,
    cluster: bool,
}

async fn start(cluster: bool) -> Running {
    let mut builder = TestMesh::builder(LEXMESH);
    if cluster {
        builder = builder.cluster(3);
    }
    let mesh = builder.start().await;
    let trainers = mesh.track_heartbeats("lexmesh.heartbeat.trainer.*").await;
    let preprocessors = mesh
        .track_heartbeats("lexmesh.heartbeat.preprocessor.*")
        .await;
    let work = mesh.dir().join("work");
    let replicas = if cluster { "3" } else { "1" };
    let up = mesh.up(
        &["--replicas", "trainer=2,evaluator=0"],
        &[
            ("LEXMESH_NATS__REPLICAS", replicas),
            ("LEXMESH_JOBS__CONCURRENCY", "2"),
            ("LEXMESH_SERVICE__PROGRESS_INTERVAL", "0s"),
            ("LEXMESH_SERVICE__WORK_DIR", work.to_str().unwrap()),
        ],
    );
    eventually(
        "two trainers and a preprocessor",
        Duration::from_secs(180),
        || async { (trainers.instances() >= 2 && preprocessors.instances() >= 1).then_some(()) },
    )
    .await;
    Running { mesh, up, cluster }
}

/// One throughput run: `jobs` jobs of `epochs` epochs submitted at once.
async fn throughput(run: &Running, tag: &str, jobs: usize, epochs: u32) -> Value {
    let events = Events::follow(&run.mesh.client).await;
    let ids: Vec<String> = (1..=jobs).map(|n| format!("{tag}-{n}")).collect();
    let started = Instant::now();
    let started_ms = now_ms();
    for id in &ids {
        run.mesh.submit(TRAIN, &no_early_stop_job(id, epochs)).await;
    }
    events.wait_completed(&ids, Duration::from_secs(900)).await;
    let wall = started.elapsed().as_secs_f64();
    let received = events.snapshot();
    let latency = |phase: Option<&str>| -> Vec<f64> {
        received
            .iter()
            .filter(|r| r.event["event"] == "progress")
            .filter(|r| phase.is_none_or(|p| r.event["phase"] == p))
            .filter(|r| r.event["timestamp_ms"].as_f64() >= Some(started_ms))
            .filter_map(|r| Some(r.at_ms - r.event["timestamp_ms"].as_f64()?))
            .collect()
    };
    let summary = |values: Vec<f64>| {
        json!({
            "events": values.len(),
            "p50_ms": quantile(values.iter().copied(), 0.5),
            "p95_ms": quantile(values.iter().copied(), 0.95),
            "p99_ms": quantile(values.iter().copied(), 0.99),
            "max_ms": quantile(values.iter().copied(), 1.0),
        })
    };
    json!({
        "topology": if run.cluster { "cluster-3" } else { "single" },
        "jobs": jobs,
        "epochs": epochs,
        "wall_s": wall,
        "jobs_per_minute": jobs as f64 * 60.0 / wall,
        "latency_all": summary(latency(None)),
        "latency_batch": summary(latency(Some("batch"))),
        "latency_epoch": summary(latency(Some("epoch"))),
    })
}

/// The leader node of `stream`, asked until the stream answers.
async fn leader_of(js: &async_nats::jetstream::Context, stream: &str) -> String {
    eventually(
        &format!("the leader of {stream}"),
        Duration::from_secs(30),
        || async {
            let mut s = js.get_stream(stream).await.ok()?;
            s.info().await.ok()?.cluster.clone()?.leader
        },
    )
    .await
}

/// One kill round on the cluster: the leader of `stream` is killed while `jobs` jobs train.
async fn kill_round(
    run: &mut Running,
    round: usize,
    stream: &str,
    jobs: usize,
    epochs: u32,
) -> Value {
    let js = async_nats::jetstream::new(run.mesh.client.clone());
    let leader = leader_of(&js, stream).await;
    // The watcher is connected to a node that survives, so that it sees every event.
    let survivor = run
        .mesh
        .nodes()
        .find(|n| n.name() != leader)
        .expect("a second node")
        .url();
    let watcher = async_nats::connect(survivor.as_str()).await.unwrap();
    let events = Events::follow(&watcher).await;
    let ids: Vec<String> = (1..=jobs).map(|n| format!("kill{round}-{n}")).collect();
    for id in &ids {
        run.mesh.submit(TRAIN, &no_early_stop_job(id, epochs)).await;
    }
    eventually(
        "every job past its first epoch",
        Duration::from_secs(180),
        || async {
            let seen: BTreeSet<String> = events
                .snapshot()
                .iter()
                .filter(|r| r.event["event"] == "progress" && r.event["phase"] == "epoch")
                .filter_map(|r| r.event["job_id"].as_str().map(str::to_string))
                .collect();
            (seen.len() == ids.len()).then_some(())
        },
    )
    .await;
    // The leader may have moved while the jobs started: kill the one that leads now.
    let leader = leader_of(&js, stream).await;
    let survivor_alive = run
        .mesh
        .nodes()
        .any(|n| n.name() != leader && n.url() == survivor);
    assert!(
        survivor_alive,
        "the watcher's node became {stream}'s leader; run again"
    );
    let killed_ms = now_ms();
    run.mesh
        .nodes()
        .find(|n| n.name() == leader)
        .expect("the leader is a node")
        .kill();
    eprintln!("round {round}: killed {leader}, the leader of {stream}");
    // Kill → first progress event of each job that had not finished.
    let unfinished: Vec<String> = {
        let finals = events.finals(&ids);
        ids.iter()
            .filter(|id| !finals.contains_key(*id))
            .cloned()
            .collect()
    };
    let first_after = eventually(
        "a progress event of every running job after the kill",
        Duration::from_secs(180),
        || async {
            let received = events.snapshot();
            let firsts: Vec<f64> = unfinished
                .iter()
                .filter_map(|id| {
                    received
                        .iter()
                        .filter(|r| r.event["job_id"] == id.as_str())
                        .filter(|r| r.event["event"] == "progress" && r.at_ms > killed_ms)
                        .map(|r| (r.at_ms - killed_ms) / 1000.0)
                        .reduce(f64::min)
                })
                .collect();
            (firsts.len() == unfinished.len()).then_some(firsts)
        },
    )
    .await;
    events.wait_completed(&ids, Duration::from_secs(600)).await;
    for (id, finals) in events.finals(&ids) {
        assert_eq!(finals.len(), 1, "{id} ended more than once: {finals:?}");
    }
    // The node comes back and catches up before the next round.
    let restarted = Instant::now();
    run.mesh
        .nodes()
        .find(|n| n.name() == leader)
        .unwrap()
        .restart()
        .unwrap();
    run.mesh
        .wait_node_caught_up(&leader, Duration::from_secs(120))
        .await;
    let catch_up = restarted.elapsed().as_secs_f64();
    json!({
        "round": round,
        "stream": stream,
        "killed": leader,
        "running_at_kill": unfinished.len(),
        "kill_to_first_progress_s": first_after,
        "median_s": quantile(first_after.iter().copied(), 0.5),
        "max_s": quantile(first_after.iter().copied(), 1.0),
        "restart_to_caught_up_s": catch_up,
    })
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut throughput_runs = Vec::new();
        let mut kills = Vec::new();
        for round in 0..o.rounds {
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for cluster in order {
                let mut run = start(cluster).await;
                let tag = format!("{}{round}", if cluster { "c" } else { "s" });
                let figures = throughput(&run, &tag, o.jobs, o.epochs).await;
                eprintln!("{figures}");
                throughput_runs.push(figures);
                if cluster && round == 0 {
                    for k in 0..o.kills {
                        let stream = LEADERS[k % LEADERS.len()];
                        let figures =
                            kill_round(&mut run, k + 1, stream, o.kill_jobs, o.kill_epochs).await;
                        eprintln!("{figures}");
                        kills.push(figures);
                    }
                }
                run.up.stop().await;
            }
        }
        report(&o, &throughput_runs, &kills);
    });
}

fn report(o: &Options, runs: &[Value], kills: &[Value]) {
    let median_of = |topology: &str, pick: &dyn Fn(&Value) -> Option<f64>| -> f64 {
        let values: Vec<f64> = runs
            .iter()
            .filter(|r| r["topology"] == topology)
            .filter_map(pick)
            .collect();
        quantile(values.iter().copied(), 0.5)
    };
    println!(
        "cluster benchmark: {} jobs of {} epochs (sample data, 2 trainers x 2 jobs), {} round(s)",
        o.jobs, o.epochs, o.rounds
    );
    println!(
        "{:<10} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "topology", "jobs/min", "p50 ms", "p95 ms", "p99 ms", "epoch p50", "epoch p99"
    );
    for topology in ["single", "cluster-3"] {
        println!(
            "{:<10} {:>9.1} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            topology,
            median_of(topology, &|r| r["jobs_per_minute"].as_f64()),
            median_of(topology, &|r| r["latency_all"]["p50_ms"].as_f64()),
            median_of(topology, &|r| r["latency_all"]["p95_ms"].as_f64()),
            median_of(topology, &|r| r["latency_all"]["p99_ms"].as_f64()),
            median_of(topology, &|r| r["latency_epoch"]["p50_ms"].as_f64()),
            median_of(topology, &|r| r["latency_epoch"]["p99_ms"].as_f64()),
        );
    }
    let ratio = median_of("cluster-3", &|r| r["jobs_per_minute"].as_f64())
        / median_of("single", &|r| r["jobs_per_minute"].as_f64());
    println!("throughput cluster / single: {ratio:.2}x");
    for k in kills {
        println!(
            "kill {} leader ({}): {} jobs running, kill -> first progress median {:.2} s, max {:.2} s; restarted node caught up in {:.1} s",
            k["stream"].as_str().unwrap_or_default(),
            k["killed"].as_str().unwrap_or_default(),
            k["running_at_kill"],
            k["median_s"].as_f64().unwrap_or(f64::NAN),
            k["max_s"].as_f64().unwrap_or(f64::NAN),
            k["restart_to_caught_up_s"].as_f64().unwrap_or(f64::NAN),
        );
    }
    let all = json!({"throughput": runs, "kills": kills, "ratio_cluster_to_single": ratio});
    if let Some(parent) = o.out.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&o.out, serde_json::to_vec_pretty(&all).unwrap()).unwrap();
    println!("every figure: {}", o.out.display());
}
