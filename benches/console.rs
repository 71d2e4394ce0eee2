//! The dashboard's update latency (`cargo bench --bench console -- [options]`): a job event
//! published by a trainer → drawn on the page, while training keeps every core busy.
//!
//! It starts `lexmesh up` (one trainer per core, each running one job at a time on every core
//! it may use) on a private nats-server, queues more training jobs than the trainers can run
//! at once so that they never idle, opens the dashboard in headless Chromium with one running
//! job selected (its curve redrawn on every event), and after `--seconds` reads the latencies
//! the page measured: for every job event, the time from its `timestamp_ms` (set when the
//! trainer published it) to the end of the animation frame that drew it. It prints their
//! count, median, p95 and maximum, and the trainers' mean CPU over the run (100 % = every
//! core the instance may use busy).
//!
//! Options: `--seconds 60`, `--trainers N` (default: the machine's cores), `--jobs 8`,
//! `--model cnn` (the jobs' model, on the shipped sample, 128 hidden units).
//! Needs `scripts/setup-browser-tests`.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark stops at its first failed step

use std::time::Duration;

use lexmesh_testkit::{Browser, TRAIN, TestMesh, eventually, no_early_stop_job};
#[path = "common/stats.rs"]
mod stats;
use serde_json::Value;
use stats::{median, quantile};

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

struct Options {
    seconds: u64,
    trainers: usize,
    jobs: usize,
    model: String,
}

fn options() -> Options {
    let mut o = Options {
        seconds: 60,
        trainers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        jobs: 8,
        model: "cnn".into(),
    };
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut it = args.iter();
    let number = |flag: &str, v: Option<&String>| -> usize {
        v.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => o.seconds = number("--seconds", it.next()) as u64,
            "--trainers" => o.trainers = number("--trainers", it.next()),
            "--jobs" => o.jobs = number("--jobs", it.next()),
            "--model" => o.model = it.next().expect("--model bow|cnn|...").clone(),
            other => panic!("unknown option {other} (--seconds, --trainers, --jobs, --model)"),
        }
    }
    o
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = options();
    let mesh = TestMesh::start(LEXMESH).await;
    let work = mesh.dir().join("work");
    let mut up = mesh.up(
        &["--replicas", &format!("trainer={}", o.trainers)],
        &[("LEXMESH_SERVICE__WORK_DIR", work.to_str().unwrap())],
    );
    let url = eventually(
        "the dashboard's address in the log",
        Duration::from_secs(60),
        || async {
            let log = up.stderr();
            let (_, rest) = log.split_once("serving the dashboard on http://")?;
            Some(format!("http://{}", rest.split_whitespace().next()?))
        },
    )
    .await;
    for n in 0..o.jobs {
        // The sample with a convolutional model: every batch is real work for every core.
        let mut job = no_early_stop_job(&format!("bench-{n}"), 10_000);
        job["settings"]["model"] = serde_json::json!(o.model);
        job["settings"]["hidden"] = serde_json::json!(128);
        mesh.submit(TRAIN, &job).await;
    }
    let mut page = Browser::open(&url, 1280, 800).await;
    page.wait(
        "a running job",
        "() => document.querySelector('#jobs tr[data-job=\"bench-0\"] .status.running')",
        Duration::from_secs(120),
    )
    .await;
    page.click("#jobs tr[data-job=\"bench-0\"]").await;
    // From here on: the page is warm, the first job's history drawn.
    page.eval("() => { window.lexmeshLatencies.length = 0; }")
        .await;
    let mut cpu = Vec::new();
    for _ in 0..o.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let trainers = page
            .eval(
                "() => [...document.querySelectorAll('#instances tbody tr')]\
                   .filter(r => r.children[1].textContent === 'trainer')\
                   .map(r => parseFloat(r.children[3].textContent)).filter(Number.isFinite)",
            )
            .await;
        if let Some(values) = trainers.as_array()
            && !values.is_empty()
        {
            let mean = values.iter().filter_map(Value::as_f64).sum::<f64>() / values.len() as f64;
            cpu.push(mean);
        }
    }
    let latencies = page.eval("() => window.lexmeshLatencies.slice()").await;
    let ms: Vec<f64> = latencies
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let points = page
        .eval("() => Number(document.querySelector('#loss-chart').dataset.points)")
        .await;
    println!(
        "dashboard update latency (event published -> drawn), {} s, {} trainers, {} {} jobs queued:",
        o.seconds, o.trainers, o.jobs, o.model
    );
    println!(
        "  events {}  median {:.1} ms  p95 {:.1} ms  max {:.1} ms",
        ms.len(),
        median(ms.iter().copied()),
        quantile(ms.iter().copied(), 0.95),
        quantile(ms.iter().copied(), 1.0)
    );
    println!(
        "  trainers' mean CPU over the run {:.0} % of their cores; the selected curve has {points} points",
        cpu.iter().sum::<f64>() / cpu.len().max(1) as f64
    );
    page.close().await;
    up.stop().await;
}
