//! The chaos benchmark (`cargo bench --bench chaos -- [options]`): `lexmesh up` with two
//! trainer replicas on a private nats-server, default `bow` jobs on the full court rulings, and
//! a random trainer SIGKILLed every few seconds from the moment the first job starts. For each
//! seed it prints, and at the end over all seeds:
//!
//! - jobs completed / lost (failed, or unfinished at the deadline) / duplicated (completed
//!   more than once);
//! - kill → running again: from a kill to the `started` event of the next attempt of each job
//!   the killed trainer ran (median, max);
//! - work lost per interrupted attempt, in seconds of training: from the moment the killed
//!   attempt had reached the point its successor resumed from (a checkpoint's epoch and batch)
//!   to the kill; the whole attempt when its successor started from scratch (median, max).
//!
//! Options: `--data DIR` (the rulings: `train.jsonl`, `validation.jsonl`; default
//! `../shared/data/iran-court-rulings`), `--seeds 1,2,3`, `--jobs 6`, `--epochs 3`, `--kills 8`,
//! `--every 4-8` (seconds between kills, uniform), `--trainers 2`, `--checkpoint-interval 30s`,
//! `--deadline 900` (seconds per seed). Needs the release binary (`cargo build --release`).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark stops at its first failed step

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lexmesh_testkit::{TestMesh, is_final, try_send_signal};
use rand::{RngExt, SeedableRng};
use serde_json::Value;
#[path = "common/stats.rs"]
mod stats;
use stats::median;

struct Options {
    data: PathBuf,
    seeds: Vec<u64>,
    jobs: usize,
    epochs: u32,
    kills: usize,
    every: (f64, f64),
    trainers: usize,
    checkpoint_interval: String,
    deadline: Duration,
}

fn options() -> Options {
    let mut o = Options {
        data: PathBuf::from("../shared/data/iran-court-rulings"),
        seeds: vec![1, 2, 3],
        jobs: 6,
        epochs: 3,
        kills: 8,
        every: (4.0, 8.0),
        trainers: 2,
        checkpoint_interval: "30s".into(),
        deadline: Duration::from_secs(900),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    let number = |v: Option<&String>, flag: &str| -> u64 {
        v.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--data" => o.data = PathBuf::from(it.next().expect("--data DIR")),
            "--seeds" => {
                o.seeds = it
                    .next()
                    .expect("--seeds 1,2,3")
                    .split(',')
                    .map(|s| s.trim().parse().expect("--seeds takes numbers"))
                    .collect();
            }
            "--jobs" => o.jobs = number(it.next(), "--jobs") as usize,
            "--epochs" => o.epochs = number(it.next(), "--epochs") as u32,
            "--kills" => o.kills = number(it.next(), "--kills") as usize,
            "--trainers" => o.trainers = number(it.next(), "--trainers") as usize,
            "--deadline" => o.deadline = Duration::from_secs(number(it.next(), "--deadline")),
            "--checkpoint-interval" => {
                o.checkpoint_interval = it.next().expect("--checkpoint-interval 30s").clone();
            }
            "--every" => {
                let text = it.next().expect("--every 4-8");
                let (a, b) = text.split_once('-').expect("--every MIN-MAX");
                o.every = (a.parse().expect("seconds"), b.parse().expect("seconds"));
            }
            _ => {} // cargo bench passes --bench
        }
    }
    o
}

/// The `lexmesh` binary under test (the release build under `cargo bench`).
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

/// What one seed measured.
#[derive(Default)]
struct Outcome {
    completed: usize,
    lost: usize,
    duplicated: usize,
    kills: usize,
    back_s: Vec<f64>,
    lost_work_s: Vec<f64>,
    seconds: f64,
}

async fn run_seed(o: &Options, seed: u64) -> Outcome {
    // A private nats-server (its own default max_payload) and a temporary folder; every job
    // event with its arrival time, and the latest heartbeat of each trainer.
    let mesh = TestMesh::builder(LEXMESH)
        .server_default_payload()
        .service_env(&[("LEXMESH_LOG", "info")])
        .start()
        .await;
    let url = mesh.server.url();
    let events = mesh.record_events("lexmesh.events.>").await;
    let trainers = mesh.track_heartbeats("lexmesh.heartbeat.trainer.*").await;
    let work = mesh.dir().join("work");
    // SIGKILLed with its replicas (which then stop on their own) when dropped.
    let up = mesh.up(
        &[
            "--replicas",
            &format!("trainer={},evaluator=0,metrics=0", o.trainers),
        ],
        &[
            ("LEXMESH_SERVICE__WORK_DIR", work.to_str().unwrap()),
            (
                "LEXMESH_SERVICE__CHECKPOINT_INTERVAL",
                o.checkpoint_interval.as_str(),
            ),
        ],
    );
    let ready = Instant::now();
    while trainers.instances() < o.trainers {
        assert!(
            ready.elapsed() < Duration::from_secs(60),
            "the trainers did not start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let ids: Vec<String> = (1..=o.jobs).map(|i| format!("chaos{i}")).collect();
    for id in &ids {
        let status = Command::new(LEXMESH)
            .args(["submit", "train", "--data"])
            .arg(o.data.join("train.jsonl"))
            .arg("--validation")
            .arg(o.data.join("validation.jsonl"))
            .args([
                "--job-id",
                id,
                "--epochs",
                &o.epochs.to_string(),
                "--patience",
                "0",
            ])
            .current_dir(mesh.dir())
            .env("NATS_URL", &url)
            .stdout(Stdio::null())
            .status()
            .expect("run lexmesh submit");
        assert!(status.success(), "lexmesh submit {id} failed");
    }
    let started = Instant::now();
    let accepted =
        |events: &[(Instant, Value)]| events.iter().any(|(_, e)| e["event"] == "accepted");
    while !accepted(&events.lock()) {
        assert!(started.elapsed() < o.deadline, "no job started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finished = |events: &[(Instant, Value)]| {
        ids.iter()
            .filter(|id| {
                events
                    .iter()
                    .any(|(_, e)| e["job_id"] == id.as_str() && is_final(e))
            })
            .count()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // (when, instance, jobs it ran)
    let mut kills: Vec<(Instant, String, Vec<String>)> = Vec::new();
    while finished(&events.lock()) < ids.len() && started.elapsed() < o.deadline {
        if kills.len() >= o.kills {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let pause = rng.random_range(o.every.0..o.every.1);
        tokio::time::sleep(Duration::from_secs_f64(pause)).await;
        let alive = trainers.alive(Duration::from_millis(1500));
        if alive.is_empty() || finished(&events.lock()) == ids.len() {
            continue;
        }
        let (instance, beat) = alive[rng.random_range(0..alive.len())].clone();
        try_send_signal("-KILL", beat.pid);
        trainers.forget(&instance);
        kills.push((Instant::now(), instance, beat.running));
    }
    // Late duplicates, if any.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = events.snapshot();
    let mut out = Outcome {
        kills: kills.len(),
        seconds: started.elapsed().as_secs_f64(),
        ..Outcome::default()
    };
    for id in &ids {
        let n = events
            .iter()
            .filter(|(_, e)| e["job_id"] == id.as_str() && e["event"] == "completed")
            .count();
        if n == 0 {
            out.lost += 1;
        } else {
            out.completed += 1;
            out.duplicated += n - 1;
        }
    }
    for (at, instance, jobs) in &kills {
        for id in jobs {
            let of_job: Vec<&(Instant, Value)> = events
                .iter()
                .filter(|(_, e)| e["job_id"] == id.as_str())
                .collect();
            let Some(attempt) = of_job
                .iter()
                .filter(|(t, e)| t < at && e["instance"] == instance.as_str())
                .filter_map(|(_, e)| e["attempt"].as_u64())
                .max()
            else {
                continue;
            };
            let Some((back_at, next)) = of_job.iter().find(|(t, e)| {
                t > at && e["phase"] == "started" && e["attempt"].as_u64() > Some(attempt)
            }) else {
                continue;
            };
            out.back_s.push(back_at.duration_since(*at).as_secs_f64());
            // Where the successor went on from, in batches since the job's start.
            let per_epoch = next["total_batches"].as_u64().unwrap_or(1).max(1);
            let resumed_at = next["resumed_from_epoch"].as_u64().unwrap_or(0) * per_epoch
                + next["resumed_from_batch"].as_u64().unwrap_or(0);
            let killed: Vec<&&(Instant, Value)> = of_job
                .iter()
                .filter(|(t, e)| t <= at && e["attempt"].as_u64() == Some(attempt))
                .collect();
            let attempt_start = killed
                .iter()
                .find(|(_, e)| e["phase"] == "started")
                .map(|(t, _)| *t);
            let reached = killed
                .iter()
                .filter(|(_, e)| e["event"] == "progress" && e["phase"] != "started")
                .find(|(_, e)| {
                    let epoch = e["epoch"].as_u64().unwrap_or(0);
                    let batch = e["batch"].as_u64().unwrap_or(0);
                    epoch.saturating_sub(1) * per_epoch + batch >= resumed_at && resumed_at > 0
                })
                .map(|(t, _)| *t);
            if let Some(from) = reached.or(attempt_start) {
                out.lost_work_s.push(at.duration_since(from).as_secs_f64());
            }
        }
    }
    // `up` and its replicas go with `up`, then the server and the folder with `mesh`.
    let _ = std::fs::copy(
        up.stderr_path(),
        std::env::temp_dir().join(format!("lexmesh-chaos-{seed}.stderr")),
    );
    out
}

fn main() {
    let mut o = options();
    // `lexmesh submit` runs in a temporary folder: the data's path must not be relative.
    o.data = std::fs::canonicalize(&o.data).unwrap_or(o.data);
    for file in ["train.jsonl", "validation.jsonl"] {
        assert!(
            o.data.join(file).exists(),
            "{} is missing: pass the rulings with --data DIR",
            o.data.join(file).display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "chaos: {} jobs of {} epochs (default bow, {}), {} trainers under `lexmesh up`, a random \
         trainer SIGKILLed every {}-{} s from the first job's start, at most {} kills, \
         checkpoint interval {}",
        o.jobs,
        o.epochs,
        o.data.display(),
        o.trainers,
        o.every.0,
        o.every.1,
        o.kills,
        o.checkpoint_interval
    );
    let mut all = Outcome::default();
    for &seed in &o.seeds {
        let out = runtime.block_on(run_seed(&o, seed));
        println!(
            "seed {seed}: {} kills; jobs completed {} / lost {} / duplicated {}; kill -> running \
             again median {:.1} s, max {:.1} s ({} interrupted attempts); work lost per \
             interrupted attempt median {:.1} s, max {:.1} s; {:.0} s",
            out.kills,
            out.completed,
            out.lost,
            out.duplicated,
            median(out.back_s.clone()),
            max(&out.back_s),
            out.back_s.len(),
            median(out.lost_work_s.clone()),
            max(&out.lost_work_s),
            out.seconds
        );
        all.kills += out.kills;
        all.completed += out.completed;
        all.lost += out.lost;
        all.duplicated += out.duplicated;
        all.back_s.extend(out.back_s);
        all.lost_work_s.extend(out.lost_work_s);
        all.seconds += out.seconds;
    }
    println!(
        "all {} seeds: {} kills; jobs completed {} / lost {} / duplicated {}; kill -> running \
         again median {:.1} s, max {:.1} s ({} interrupted attempts); work lost per interrupted \
         attempt median {:.1} s, max {:.1} s",
        o.seeds.len(),
        all.kills,
        all.completed,
        all.lost,
        all.duplicated,
        median(all.back_s.clone()),
        max(&all.back_s),
        all.back_s.len(),
        median(all.lost_work_s.clone()),
        max(&all.lost_work_s)
    );
}
