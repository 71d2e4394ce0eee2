//! The search benchmark (`cargo bench --bench search -- [options]`): ASHA against random search
//! (no early stopping) on the news task, over the mesh. For each seed it starts `lexmesh up`
//! with two trainer replicas on a private nats-server and runs two `optimize` jobs with the same
//! search space, the same sampler seed (both draw the same configuration for trial `k`, so early
//! stopping is the only difference), the same trial budget and two trials at once; the arms run
//! one after the other, in alternating order from seed to seed.
//!
//! From the trials' epoch events (their arrival times) it prints, per seed and over all seeds:
//!
//! - each arm's final best validation macro-F1 and wall-clock (submit → `completed`);
//! - **time to random's best**: when ASHA's best-so-far first reached random search's final
//!   best, against random's whole wall-clock (the target: ≤ 0.5x in every seed) and against
//!   the moment random itself first reached it;
//! - best-so-far of both arms at fixed fractions of random's wall-clock;
//! - trial-epochs each arm trained;
//! - the default settings' validation macro-F1 (one train job with no settings, first seed
//!   only), which the best configuration should beat.
//!
//! Options: `--data DIR` (`train.jsonl`, `validation.jsonl`; default
//! `../shared/data/hamshahri-rss-topics`), `--seeds 1,2,3,4,5`, `--trials 12`, `--epochs 12`
//! (every trial's `max_epochs`), `--concurrent 2`, `--trainers 2`, `--grace 2`, `--rf 3`,
//! `--judge best_so_far|last`, `--deadline 1800` (seconds per arm), `--arms both|random|asha`,
//! `--no-defaults` (skip the default settings' job), `--out FILE` (`target/search-bench.json`:
//! every figure and every trial's epochs, written after each seed). `cargo bench` builds the
//! release binary; `--profile dev` runs the debug one (libtorch and burn still optimised).
//!
//! `--replay FILE` trains nothing: it replays a grid of ASHA settings over the learning curves
//! of `FILE`'s random arms (`--arms random` trains every trial to the end) with the
//! coordinator's own scheduler code, and prints for each setting in how many seeds it would
//! have reached random's best within 0.5x (see `search/replay.rs`). Choose settings on seeds
//! other than the ones the benchmark then reports.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark stops at its first failed step

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lexmesh_testkit::{EventLog, TestMesh, is_final};

#[path = "search/replay.rs"]
mod replay;
use serde_json::Value;
#[path = "common/stats.rs"]
mod stats;
use stats::median;

struct Options {
    data: PathBuf,
    seeds: Vec<u64>,
    trials: u32,
    epochs: u32,
    concurrent: u32,
    trainers: usize,
    grace: u32,
    rf: f64,
    judge: String,
    deadline: Duration,
    /// Which arms run: `both`, `random` or `asha`.
    arms: String,
    /// Whether the default settings' score is measured (first seed).
    defaults: bool,
    /// Where every figure and every trial's epochs are written.
    out: PathBuf,
    /// Replays ASHA settings over the trials of this file's random arms instead of running.
    replay: Option<PathBuf>,
}

fn options() -> Options {
    let mut o = Options {
        data: PathBuf::from("../shared/data/hamshahri-rss-topics"),
        seeds: vec![1, 2, 3, 4, 5],
        trials: 12,
        epochs: 12,
        concurrent: 2,
        trainers: 2,
        grace: 2,
        rf: 3.0,
        judge: "best_so_far".into(),
        deadline: Duration::from_secs(1800),
        arms: "both".into(),
        defaults: true,
        out: PathBuf::from("target/search-bench.json"),
        replay: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    let number = |v: Option<&String>, flag: &str| -> f64 {
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
            "--trials" => o.trials = number(it.next(), "--trials") as u32,
            "--epochs" => o.epochs = number(it.next(), "--epochs") as u32,
            "--concurrent" => o.concurrent = number(it.next(), "--concurrent") as u32,
            "--trainers" => o.trainers = number(it.next(), "--trainers") as usize,
            "--grace" => o.grace = number(it.next(), "--grace") as u32,
            "--rf" => o.rf = number(it.next(), "--rf"),
            "--judge" => o.judge = it.next().expect("--judge best_so_far|last").clone(),
            "--deadline" => {
                o.deadline = Duration::from_secs(number(it.next(), "--deadline") as u64)
            }
            "--arms" => {
                o.arms = it.next().expect("--arms both|random|asha").clone();
                assert!(
                    ["both", "random", "asha"].contains(&o.arms.as_str()),
                    "--arms takes both, random or asha"
                );
            }
            "--no-defaults" => o.defaults = false,
            "--out" => o.out = PathBuf::from(it.next().expect("--out FILE")),
            "--replay" => o.replay = Some(PathBuf::from(it.next().expect("--replay FILE"))),
            _ => {} // cargo bench passes --bench
        }
    }
    o
}

/// The `lexmesh` binary under test (the release build under `cargo bench`).
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

/// The search space: what a fastText-style bag model is tuned over (learning rate, width,
/// hashed character buckets, dropout, batch size, weight decay). Every trial trains all its
/// epochs (no early stopping of its own), so that the scheduler's stops are the only ones.
/// Widths stay small enough that two trials fit a trainer's 512 MiB budget (a 128-wide bag
/// over the news features does not, and the health service replaces such a trainer).
fn space_file(o: &Options, asha: bool) -> String {
    let mut text = String::from(
        "[space]\n\
         learning_rate = { log_uniform = { low = 1e-3, high = 0.3 } }\n\
         dropout = { uniform = { low = 0.0, high = 0.6 } }\n\
         hidden = [0, 0, 16]\n\
         embedding_dim = [16, 32]\n\
         char_buckets = [20000, 200000]\n\
         batch_size = [16, 32, 64]\n\
         weight_decay = [0.0, 1e-5, 1e-4, 1e-3]\n\
         [base]\n\
         model = \"bow\"\n\
         patience = 0\n",
    );
    if asha {
        text.push_str(&format!(
            "[asha]\ngrace_period = {}\nreduction_factor = {}\njudge = \"{}\"\n",
            o.grace, o.rf, o.judge
        ));
    }
    text
}

/// One arm of one seed.
#[derive(Debug, Default, Clone)]
struct Arm {
    /// Submit → `completed`, seconds.
    wall: f64,
    /// The optimize job's best trial's macro-F1.
    best: f64,
    /// (seconds since submit, best-so-far macro-F1) at each epoch that raised it.
    curve: Vec<(f64, f64)>,
    /// Trial-epochs trained (epoch events of the search's trials).
    trial_epochs: usize,
    /// Trials by outcome, as the `completed` event counts them.
    counts: String,
    /// Every trial's epochs: `(seconds since submit, epoch, macro-F1, validation loss)`.
    trials: BTreeMap<String, Vec<(f64, u64, f64, f64)>>,
}

impl Arm {
    /// When best-so-far first reached `target` (seconds), if it did.
    fn reached(&self, target: f64) -> Option<f64> {
        reached(&self.curve, target)
    }

    /// Best-so-far at `t` seconds.
    fn best_at(&self, t: f64) -> f64 {
        self.curve
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(0.0, |(_, f1)| *f1)
    }
}

fn submit(mesh: &TestMesh, o: &Options, args: &[&str]) {
    let status = Command::new(LEXMESH)
        .arg("submit")
        .args(args)
        .arg("--data")
        .arg(o.data.join("train.jsonl"))
        .arg("--validation")
        .arg(o.data.join("validation.jsonl"))
        .current_dir(mesh.dir())
        .env("NATS_URL", mesh.server.url())
        .stdout(Stdio::null())
        .status()
        .expect("run lexmesh submit");
    assert!(status.success(), "lexmesh submit {args:?} failed");
}

/// Waits for the job's final event; returns it.
async fn wait_final(events: &EventLog, job_id: &str, deadline: Duration) -> Value {
    let started = Instant::now();
    loop {
        if let Some((_, e)) = events
            .lock()
            .iter()
            .find(|(_, e)| e["job_id"] == job_id && is_final(e))
        {
            return e.clone();
        }
        assert!(
            started.elapsed() < deadline,
            "{job_id} did not end within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_arm(mesh: &TestMesh, events: &EventLog, o: &Options, seed: u64, asha: bool) -> Arm {
    let name = if asha { "asha" } else { "random" };
    let job_id = format!("{name}{seed}");
    let space = mesh.dir().join(format!("{job_id}.toml"));
    std::fs::write(&space, space_file(o, asha)).expect("write the space file");
    let mut args = vec![
        "optimize".to_string(),
        "--job-id".into(),
        job_id.clone(),
        "--space".into(),
        space.to_str().unwrap().into(),
        "--trials".into(),
        o.trials.to_string(),
        "--max-concurrent".into(),
        o.concurrent.to_string(),
        "--epochs".into(),
        o.epochs.to_string(),
        "--seed".into(),
        seed.to_string(),
    ];
    if asha {
        args.extend(["--scheduler".into(), "asha".into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let submitted = Instant::now();
    submit(mesh, o, &args);
    let done = wait_final(events, &job_id, o.deadline).await;
    let wall = submitted.elapsed().as_secs_f64();
    assert_eq!(done["event"], "completed", "{job_id}: {done}");
    let summary = &done["result"]["optimize"];
    let best = summary["best_trial"]["score"]["macro_f1"]
        .as_f64()
        .unwrap_or_else(|| panic!("{job_id}: no best trial score in {done}"));
    let prefix = format!("{job_id}-t");
    let mut arm = Arm {
        wall,
        best,
        counts: summary["trials"].to_string(),
        ..Arm::default()
    };
    let mut best_so_far = f64::NEG_INFINITY;
    for (at, e) in events.snapshot() {
        let of_trial = e["job_id"]
            .as_str()
            .is_some_and(|id| id.starts_with(&prefix));
        if !of_trial || e["event"] != "progress" || e["phase"] != "epoch" || at < submitted {
            continue;
        }
        arm.trial_epochs += 1;
        let since = at.duration_since(submitted).as_secs_f64();
        if let (Some(trial), Some(epoch), Some(f1)) = (
            e["job_id"].as_str(),
            e["epoch"].as_u64(),
            e["validation_macro_f1"].as_f64(),
        ) {
            let loss = e["validation_loss"].as_f64().unwrap_or(f64::NAN);
            arm.trials
                .entry(trial.to_string())
                .or_default()
                .push((since, epoch, f1, loss));
        }
        if let Some(f1) = e["validation_macro_f1"].as_f64()
            && f1 > best_so_far
        {
            best_so_far = f1;
            arm.curve
                .push((at.duration_since(submitted).as_secs_f64(), f1));
        }
    }
    println!(
        "  {name:>6}: best {best:.4} in {wall:.1} s, {} trial-epochs, trials {}",
        arm.trial_epochs, arm.counts
    );
    arm
}

/// The default settings' validation macro-F1 on the task: one train job with no settings.
async fn default_score(mesh: &TestMesh, events: &EventLog, o: &Options) -> f64 {
    submit(mesh, o, &["train", "--job-id", "defaults"]);
    let done = wait_final(events, "defaults", o.deadline).await;
    assert_eq!(done["event"], "completed", "defaults: {done}");
    done["result"]["train"]["validation"]["macro_f1"]
        .as_f64()
        .unwrap_or_else(|| panic!("no validation macro-F1 in {done}"))
}

/// When a best-so-far curve (`(seconds, best)` at each improvement) first reached `target`.
fn reached(curve: &[(f64, f64)], target: f64) -> Option<f64> {
    curve
        .iter()
        .find(|(_, f1)| *f1 >= target - 1e-12)
        .map(|(t, _)| *t)
}

fn check_data(dir: &Path) {
    for file in ["train.jsonl", "validation.jsonl"] {
        assert!(
            dir.join(file).exists(),
            "{} is missing (give the news task with --data DIR)",
            dir.join(file).display()
        );
    }
}

#[tokio::main]
async fn main() {
    let o = options();
    check_data(&o.data);
    let data = std::path::absolute(&o.data).expect("absolute --data");
    let o = Options { data, ..o };
    println!(
        "search benchmark: {} trials per arm, {} epochs each, {} at once, {} trainers, ASHA grace \
         {} rf {} judge {}; seeds {:?}",
        o.trials, o.epochs, o.concurrent, o.trainers, o.grace, o.rf, o.judge, o.seeds
    );
    if let Some(file) = &o.replay {
        replay::run(file, &o);
        return;
    }
    let mut rows = Vec::new();
    let mut all = Vec::new();
    let mut default = None;
    for (i, &seed) in o.seeds.iter().enumerate() {
        let mesh = TestMesh::builder(LEXMESH)
            .server_default_payload()
            .start()
            .await;
        let events = mesh.record_events("lexmesh.events.>").await;
        let trainers = mesh.track_heartbeats("lexmesh.heartbeat.trainer.*").await;
        let work = mesh.dir().join("work");
        let _up = mesh.up(
            &[
                "--replicas",
                &format!("trainer={},evaluator=0,metrics=0", o.trainers),
            ],
            &[("LEXMESH_SERVICE__WORK_DIR", work.to_str().unwrap())],
        );
        let ready = Instant::now();
        while trainers.instances() < o.trainers {
            assert!(
                ready.elapsed() < Duration::from_secs(60),
                "the trainers did not start"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("seed {seed}:");
        if o.defaults && default.is_none() {
            let score = default_score(&mesh, &events, &o).await;
            println!("  default settings: validation macro-F1 {score:.4}");
            default = Some(score);
        }
        // Alternate which arm goes first.
        let (mut random, mut asha) = (None, None);
        let order = if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for is_asha in order {
            if o.arms == "both" || (o.arms == "asha") == is_asha {
                let arm = run_arm(&mesh, &events, &o, seed, is_asha).await;
                *(if is_asha { &mut asha } else { &mut random }) = Some(arm);
            }
        }
        all.push((seed, random.clone(), asha.clone()));
        if let (Some(random), Some(asha)) = (random, asha) {
            rows.push((seed, random, asha));
        }
        write_out(&o, &all, default);
    }
    if rows.is_empty() {
        println!("every trial's epochs: {}", o.out.display());
        return;
    }

    println!();
    println!(
        "| seed | random best | random wall s | random reached its best s | ASHA best | ASHA wall s \
         | ASHA reached random's best s | ÷ random wall | trial-epochs random / ASHA |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for (seed, random, asha) in &rows {
        let own = random.reached(random.best).unwrap_or(f64::NAN);
        let reach = asha.reached(random.best);
        let ratio = reach.map_or(f64::NAN, |t| t / random.wall);
        ratios.push(ratio);
        println!(
            "| {seed} | {:.4} | {:.1} | {own:.1} | {:.4} | {:.1} | {} | {} | {} / {} |",
            random.best,
            random.wall,
            asha.best,
            asha.wall,
            reach.map_or_else(|| "never".into(), |t| format!("{t:.1}")),
            if ratio.is_nan() {
                "-".into()
            } else {
                format!("{ratio:.2}x")
            },
            random.trial_epochs,
            asha.trial_epochs,
        );
    }
    println!();
    println!("best-so-far at fractions of random's wall-clock (median over seeds):");
    for fraction in [0.1, 0.25, 0.5, 1.0] {
        let r = median(rows.iter().map(|(_, r, _)| r.best_at(fraction * r.wall)));
        let a = median(rows.iter().map(|(_, r, a)| a.best_at(fraction * r.wall)));
        println!("  {:>4.0}%: random {r:.4}, ASHA {a:.4}", fraction * 100.0);
    }
    let reached_all = ratios.iter().all(|r| r.is_finite() && *r <= 0.5);
    let median_best = median(rows.iter().map(|(_, r, _)| r.best));
    println!();
    println!(
        "random's median final best {median_best:.4}; ASHA reached each seed's random best in \
         ≤ 0.5x random's wall-clock: {} (ratios {:?}); median wall random {:.1} s, ASHA {:.1} s; \
         trial-epochs median random {}, ASHA {}",
        if reached_all {
            "every seed"
        } else {
            "NOT every seed"
        },
        ratios
            .iter()
            .map(|r| (r * 100.0).round() / 100.0)
            .collect::<Vec<_>>(),
        median(rows.iter().map(|(_, r, _)| r.wall)),
        median(rows.iter().map(|(_, _, a)| a.wall)),
        median(rows.iter().map(|(_, r, _)| r.trial_epochs as f64)),
        median(rows.iter().map(|(_, _, a)| a.trial_epochs as f64)),
    );
    if let Some(default) = default {
        let best_asha = rows.iter().map(|(_, _, a)| a.best).fold(f64::NAN, f64::max);
        let median_asha = median(rows.iter().map(|(_, _, a)| a.best));
        println!(
            "default settings {default:.4}; ASHA's best per seed: median {median_asha:.4}, max \
             {best_asha:.4}"
        );
    }
}

/// Writes every arm of every seed so far, each trial's epochs included, to `--out`.
fn write_out(o: &Options, all: &[(u64, Option<Arm>, Option<Arm>)], default: Option<f64>) {
    let arm_json = |arm: &Option<Arm>| {
        arm.as_ref().map(|a| {
            serde_json::json!({
                "wall_s": a.wall,
                "best": a.best,
                "trial_epochs": a.trial_epochs,
                "counts": a.counts,
                "trials": a.trials,
            })
        })
    };
    let seeds: Vec<Value> = all
        .iter()
        .map(|(seed, random, asha)| {
            serde_json::json!({"seed": seed, "random": arm_json(random), "asha": arm_json(asha)})
        })
        .collect();
    let report = serde_json::json!({
        "trials": o.trials,
        "epochs": o.epochs,
        "concurrent": o.concurrent,
        "trainers": o.trainers,
        "asha": {"grace": o.grace, "rf": o.rf, "judge": o.judge},
        "default_macro_f1": default,
        "seeds": seeds,
    });
    if let Some(parent) = o.out.parent() {
        std::fs::create_dir_all(parent).expect("create the output folder");
    }
    std::fs::write(&o.out, serde_json::to_vec_pretty(&report).unwrap()).expect("write --out");
}
