//! Mesh benchmark: the lexmesh services as separate processes over a private NATS server,
//! each latency figure next to a bare async-nats floor measured in the same run
//! (`cargo bench --bench mesh -- [options]`).
//!
//! What it measures, all in one run (a table on stdout, every figure in
//! `target/mesh-bench.json`):
//!
//! 1. **Control plane while training**: a preprocessor and one trainer; a `bow` job on the full
//!    rulings train split keeps both cores busy. While it trains (checked on the status
//!    endpoint), N sequential requests each of `$SRV.PING.lexmesh-trainer`, of the trainer's
//!    `lexmesh.api.trainer.<instance>.status`, and of a bare async-nats responder in a separate
//!    process (this program with `--responder`), interleaved in chunks so that all three see the
//!    same load: p50/p99/max and lexmesh p99 / floor p99. The same three idle, for context.
//! 2. **Event latency**: receive time − `timestamp_ms` of every batch `progress` event of that
//!    job (progress interval 0 s), against a bare publisher process (`--publisher`) that sends
//!    JSON of the same size at the same rate during the same training.
//! 3. **Memory**: the trainer's VmRSS (`/proc/<pid>/status`, every 100 ms): idle after start,
//!    peak while training `bow` with its default settings on the rulings, and peak with each
//!    `--memory-extra` variant (a fresh trainer process for each).
//! 4. **Concurrency**: four default `bow` jobs on the rulings submitted at once to one trainer
//!    with concurrency 4 (wall time, most jobs seen running at once on the status endpoint,
//!    peak RSS); many small default jobs with one and with two trainer replicas of concurrency
//!    1, the machine's cores shared among the replicas as `lexmesh up` shares them (jobs per
//!    minute).
//!
//! The services are the release-profile `lexmesh` binary that cargo builds for this bench
//! (`CARGO_BIN_EXE_lexmesh`, `target/release/lexmesh` under `cargo bench`), run as
//! `lexmesh serve <service>` on the test kit's mesh (`lexmesh_testkit::TestMesh`): a current
//! (2.10+) `nats-server` found by `lexmesh_runtime::nats_server::locate`, on a free port in a
//! temporary folder. Every child process is killed when the program ends, also on a panic.
//!
//! Options (after `--`): `--quick` (small N, few epochs and jobs: a smoke run), `--requests N`
//! (2000), `--chunk N` (100: requests per subject before switching), `--spread S` (30: the
//! rounds of requests under load are spaced to take about S seconds, so that they cover epoch
//! ends too), `--epochs N` (epochs of the load job, 20), `--small-jobs N` (12), `--skip-idle`,
//! `--skip-memory` (no variant jobs; the default-settings peak of the load job is still
//! reported), `--memory-extra JSON` (one more memory job with these settings over the
//! defaults, e.g. `{"batch_size":8}`; repeatable), `--skip-concurrency`,
//! `--compute-threads N` (`LEXMESH_SERVICE__COMPUTE_THREADS` of the trainers),
//! `--trainer-env KEY=VALUE` (more environment for the trainers, repeatable),
//! `--floor-captured` (the floor publisher sends on a subject the events stream captures, as
//! lexmesh's progress events are), `--data DIR` (the rulings), `--out FILE`
//! (`target/mesh-bench.json`).
//!
//! `--observability` runs only the cost of observability instead (figures in
//! `target/observability-bench.json`): in each of `--rounds N` (3) rounds, a fresh trainer
//! with metrics reports and tracing off (reports and ticks every hour, no `OTEL_*`) and one
//! with both on (reports every 2 s, the responsiveness tick every 100 ms, every span exported
//! over OTLP to a collector inside this program, a metrics service gathering the reports and
//! events), in alternating order, each training the same `bow` job (`--epochs N`, default 8) on
//! the rulings while the trainer's status endpoint is asked `--requests N` times: examples/s
//! (median of the epochs after the first) and the status round trip, off against on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use async_nats::{Client, HeaderMap, jetstream};
use bytes::Bytes;
use futures::StreamExt;
use lexmesh_protocol::time::now_ms;
use lexmesh_testkit::{ChildProcess, TestMesh, is_final, status_subject};
use serde_json::{Value, json};
#[path = "common/stats.rs"]
mod stats;
use stats::{median, quantile};

/// Subject the floor responder answers on.
const FLOOR_ECHO: &str = "bench.floor.echo";
/// Subject the floor publisher sends on (outside every stream).
const FLOOR_EVENTS: &str = "bench.floor.events";
/// Floor subject inside the events stream (`--floor-captured`).
const FLOOR_EVENTS_CAPTURED: &str = "lexmesh.events.bench-floor.progress";
/// Padding of the floor publisher's JSON, so that it is about as long as a progress event.
const FLOOR_PAD: usize = 380;
/// The trainer's service-API name.
const PING_TRAINER: &str = "$SRV.PING.lexmesh-trainer";
/// Object names of the uploaded datasets.
const RULINGS_TRAIN: &str = "bench/rulings-train.jsonl";
const RULINGS_VALIDATION: &str = "bench/rulings-validation.jsonl";
const SAMPLE_TRAIN: &str = "bench/sample-train.jsonl";
const SAMPLE_VALIDATION: &str = "bench/sample-validation.jsonl";
/// The memory target, MiB.
const MEMORY_TARGET_MIB: f64 = 256.0;
/// The latency ratio target (lexmesh p99 / floor p99).
const RATIO_TARGET: f64 = 1.5;

/// Command-line options.
struct Options {
    quick: bool,
    requests: usize,
    chunk: usize,
    load_epochs: u32,
    memory_epochs: u32,
    memory_variants: Vec<Value>,
    spread: Duration,
    concurrent_epochs: u32,
    small_jobs: usize,
    idle: bool,
    memory: bool,
    concurrency: bool,
    trainer_env: Vec<(String, String)>,
    floor_captured: bool,
    observability: bool,
    rounds: usize,
    data: PathBuf,
    sample: PathBuf,
    out: PathBuf,
}

fn options() -> Result<Options> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut o = Options {
        quick: false,
        requests: 2000,
        chunk: 100,
        load_epochs: 20,
        memory_epochs: 5,
        memory_variants: Vec::new(),
        spread: Duration::from_secs(30),
        concurrent_epochs: 3,
        small_jobs: 12,
        idle: true,
        memory: true,
        concurrency: true,
        trainer_env: Vec::new(),
        floor_captured: false,
        observability: false,
        rounds: 3,
        data: root.join("../shared/data/iran-court-rulings"),
        sample: root.join("data/sample"),
        out: target.join("mesh-bench.json"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--quick") {
        o.quick = true;
        o.requests = 200;
        o.chunk = 50;
        o.load_epochs = 6;
        o.memory_epochs = 2;
        o.spread = Duration::from_secs(5);
        o.concurrent_epochs = 1;
        o.small_jobs = 4;
        o.rounds = 1;
    }
    let mut it = args.into_iter();
    let number = |v: Option<String>, name: &str| -> Result<usize> {
        v.as_deref()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("{name} needs a number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => {}
            "--requests" => o.requests = number(it.next(), "--requests")?.max(1),
            "--chunk" => o.chunk = number(it.next(), "--chunk")?.max(1),
            "--epochs" => o.load_epochs = number(it.next(), "--epochs")?.max(1) as u32,
            "--small-jobs" => o.small_jobs = number(it.next(), "--small-jobs")?.max(1),
            "--spread" => o.spread = Duration::from_secs(number(it.next(), "--spread")? as u64),
            "--memory-extra" => {
                let text = it.next().unwrap_or_default();
                let v: Value = serde_json::from_str(&text)
                    .with_context(|| format!("--memory-extra `{text}` is not JSON"))?;
                if !v.is_object() {
                    bail!("--memory-extra needs a JSON object of job settings");
                }
                o.memory_variants.push(v);
            }
            "--skip-idle" => o.idle = false,
            "--skip-memory" => o.memory = false,
            "--skip-concurrency" => o.concurrency = false,
            "--floor-captured" => o.floor_captured = true,
            "--observability" => o.observability = true,
            "--rounds" => o.rounds = number(it.next(), "--rounds")?.max(1),
            "--compute-threads" => {
                let n = number(it.next(), "--compute-threads")?;
                o.trainer_env
                    .push(("LEXMESH_SERVICE__COMPUTE_THREADS".into(), n.to_string()));
            }
            "--trainer-env" => {
                let kv = it.next().unwrap_or_default();
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--trainer-env needs KEY=VALUE"))?;
                o.trainer_env.push((k.into(), v.into()));
            }
            "--data" => o.data = it.next().map(PathBuf::from).unwrap_or(o.data),
            "--out" => o.out = it.next().map(PathBuf::from).unwrap_or(o.out),
            _ => {} // cargo bench passes --bench
        }
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------

/// Percentiles of a sample, in ms.
#[derive(Debug, Clone, Copy)]
struct Stats {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

/// Nearest-rank percentiles.
fn stats(values: &[f64]) -> Stats {
    Stats {
        n: values.len(),
        p50: quantile(values.iter().copied(), 0.5),
        p99: quantile(values.iter().copied(), 0.99),
        max: quantile(values.iter().copied(), 1.0),
    }
}

impl Stats {
    fn json(&self) -> Value {
        json!({"n": self.n, "p50_ms": self.p50, "p99_ms": self.p99, "max_ms": self.max})
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// The `lexmesh` binary the services run (`target/release/lexmesh` under `cargo bench`).
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

/// How long a process gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The private nats-server (`max_payload` 8 MiB) in a temporary folder, and a client; the
/// services run with batch progress events (interval 0 s) and warnings only in their logs.
async fn start_mesh() -> Result<TestMesh> {
    if !Path::new(LEXMESH).exists() {
        bail!("{LEXMESH} is missing: run `cargo build --release`");
    }
    Ok(TestMesh::builder(LEXMESH)
        .service_env(&[
            ("LEXMESH_SERVICE__PROGRESS_INTERVAL", "0s"),
            ("LEXMESH_LOG", "warn"),
        ])
        .ready_timeout(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(5))
        .start()
        .await)
}

/// `lexmesh serve <service>` as `instance`, running `concurrency` jobs at once, with `env`
/// added; does not wait for it (see `TestMesh::wait_ready`).
fn spawn_service(
    mesh: &mut TestMesh,
    service: &str,
    instance: &str,
    concurrency: u32,
    env: &[(String, String)],
) {
    let concurrency = concurrency.to_string();
    let mut all = vec![("LEXMESH_JOBS__CONCURRENCY", concurrency.as_str())];
    all.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    mesh.spawn(service, instance, &all);
}

/// Starts a service (see [`spawn_service`]) and waits until it answers its status request.
async fn start_service(
    mesh: &mut TestMesh,
    service: &str,
    instance: &str,
    concurrency: u32,
    env: &[(String, String)],
) {
    spawn_service(mesh, service, instance, concurrency, env);
    mesh.wait_ready(instance).await;
}

/// Stops a service in order (SIGTERM, SIGKILL after 10 s).
async fn stop_service(mesh: &mut TestMesh, instance: &str) {
    mesh.process(instance).stop(STOP_TIMEOUT).await;
}

/// This program in one of its helper modes (`--responder`, `--publisher`), its log in the
/// mesh's temporary folder.
fn spawn_helper(mesh: &TestMesh, name: &str, args: &[String]) -> Result<ChildProcess> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let mut command = Command::new(exe);
    command.args(args);
    Ok(ChildProcess::spawn(
        name,
        &mut command,
        mesh.dir().join(format!("{name}.log")),
    )?)
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Samples a process's VmRSS every 100 ms on a thread of its own.
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(Instant, u64)>>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    samples.push((Instant::now(), kib));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        Self { stop, handle }
    }

    fn finish(self) -> Vec<(Instant, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// Median VmRSS over `window` (idle memory).
async fn idle_rss_kib(pid: u32, window: Duration) -> u64 {
    let sampler = RssSampler::start(pid);
    tokio::time::sleep(window).await;
    let mut v: Vec<u64> = sampler.finish().into_iter().map(|(_, k)| k).collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// (busy, total) jiffies of all CPUs, from `/proc/stat`.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// utime + stime of a process in jiffies.
fn process_jiffies(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU use over a window: the machine's busy fraction and a process's cores in use.
struct CpuWindow {
    start: Instant,
    machine: Option<(u64, u64)>,
    process: Option<u64>,
    pid: u32,
}

impl CpuWindow {
    fn start(pid: u32) -> Self {
        Self {
            start: Instant::now(),
            machine: cpu_jiffies(),
            process: process_jiffies(pid),
            pid,
        }
    }

    /// (machine busy %, cores the process used); jiffies are 1/100 s on Linux.
    fn end(&self) -> (f64, f64) {
        let secs = self.start.elapsed().as_secs_f64();
        let machine = match (self.machine, cpu_jiffies()) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                100.0 * (b1 - b0) as f64 / (t1 - t0) as f64
            }
            _ => f64::NAN,
        };
        let process = match (self.process, process_jiffies(self.pid)) {
            (Some(a), Some(b)) if secs > 0.0 => (b - a) as f64 / 100.0 / secs,
            _ => f64::NAN,
        };
        (machine, process)
    }
}

// ---------------------------------------------------------------------------------------------
// NATS helpers
// ---------------------------------------------------------------------------------------------

/// How long a status request during training may take before it counts as unanswered.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

fn running_jobs(status: &Value) -> Vec<String> {
    status["running"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|j| j["job_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Sequential request/reply round trips, interleaved across `subjects` in chunks so that each
/// subject sees the same conditions (the order rotates every round, and `pause` separates
/// rounds so that the measurement spans more of a changing load); per subject, the latencies
/// in ms and the failures.
async fn interleaved(
    client: &Client,
    subjects: &[&str],
    n: usize,
    chunk: usize,
    pause: Duration,
) -> (Vec<Vec<f64>>, Vec<usize>) {
    let mut out = vec![Vec::with_capacity(n); subjects.len()];
    let mut failures = vec![0; subjects.len()];
    // Warm-up: connections, inbox subscription, caches.
    for s in subjects {
        for _ in 0..20 {
            let _ = client.request(s.to_string(), Bytes::new()).await;
        }
    }
    let mut done = 0;
    let mut round = 0;
    while done < n {
        let k = chunk.min(n - done);
        for j in 0..subjects.len() {
            let i = (j + round) % subjects.len();
            let s = subjects[i];
            for _ in 0..k {
                let t = Instant::now();
                match client.request(s.to_string(), Bytes::new()).await {
                    Ok(_) => out[i].push(ms(t.elapsed())),
                    Err(_) => failures[i] += 1,
                }
            }
        }
        done += k;
        round += 1;
        if done < n && !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    (out, failures)
}

/// One received event: its latency and what it says.
#[derive(Debug, Clone)]
struct EventSample {
    at: Instant,
    timestamp_ms: f64,
    latency_ms: f64,
    phase: String,
    epoch: u64,
}

/// Records every message of `subject` with receive time − `timestamp_ms`.
async fn collect_events(client: &Client, subject: &str) -> Result<Arc<Mutex<Vec<EventSample>>>> {
    let mut sub = client.subscribe(subject.to_string()).await?;
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    tokio::spawn(async move {
        while let Some(message) = sub.next().await {
            let received = now_ms();
            let at = Instant::now();
            let Ok(v) = serde_json::from_slice::<Value>(&message.payload) else {
                continue;
            };
            let Some(ts) = v["timestamp_ms"].as_f64() else {
                continue;
            };
            sink.lock().unwrap().push(EventSample {
                at,
                timestamp_ms: ts,
                latency_ms: received - ts,
                phase: v["phase"].as_str().unwrap_or("floor").to_string(),
                epoch: v["epoch"].as_u64().unwrap_or(0),
            });
        }
    });
    Ok(out)
}

/// Final events (completed, failed without retry, cancelled) of every job, with their
/// arrival time.
#[derive(Clone)]
struct Finals(Arc<Mutex<HashMap<String, (Instant, Value)>>>);

impl Finals {
    async fn start(client: &Client) -> Result<Self> {
        let mut subs = Vec::new();
        for kind in ["completed", "failed", "cancelled"] {
            subs.push(client.subscribe(format!("lexmesh.events.*.{kind}")).await?);
        }
        let map = Arc::new(Mutex::new(HashMap::new()));
        let sink = map.clone();
        let mut all = futures::stream::select_all(subs);
        tokio::spawn(async move {
            while let Some(message) = all.next().await {
                let at = Instant::now();
                let Ok(v) = serde_json::from_slice::<Value>(&message.payload) else {
                    continue;
                };
                if !is_final(&v) {
                    continue;
                }
                if let Some(id) = v["job_id"].as_str() {
                    sink.lock().unwrap().insert(id.to_string(), (at, v.clone()));
                }
            }
        });
        Ok(Self(map))
    }

    fn get(&self, job: &str) -> Option<(Instant, Value)> {
        self.0.lock().unwrap().get(job).cloned()
    }

    /// Waits for the final events of `jobs`; fails on a job that did not complete. While
    /// waiting, `poll` (if any) is called every 50 ms.
    async fn wait(
        &self,
        jobs: &[String],
        timeout: Duration,
        mut poll: impl AsyncPoll,
    ) -> Result<Vec<(Instant, Value)>> {
        let deadline = Instant::now() + timeout;
        loop {
            let got: Vec<_> = jobs.iter().filter_map(|j| self.get(j)).collect();
            if got.len() == jobs.len() {
                for (_, v) in &got {
                    if v["event"] != "completed" {
                        bail!("job {} ended with {}", v["job_id"], v);
                    }
                }
                return Ok(got);
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of {} jobs finished within {timeout:?}",
                    got.len(),
                    jobs.len()
                );
            }
            poll.poll().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Something to do while waiting for jobs.
trait AsyncPoll {
    async fn poll(&mut self);
}

impl AsyncPoll for () {
    async fn poll(&mut self) {}
}

impl<T: AsyncPoll> AsyncPoll for &mut T {
    async fn poll(&mut self) {
        (**self).poll().await;
    }
}

/// `n` fresh ids of small jobs.
fn job_ids(n: usize, seq: &mut usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            *seq += 1;
            format!("small-{seq}")
        })
        .collect()
}

/// Polls a trainer's status endpoint and remembers the most jobs seen running at once.
struct MaxRunning<'a> {
    mesh: &'a TestMesh,
    instance: &'a str,
    max: usize,
    polls: usize,
}

impl AsyncPoll for MaxRunning<'_> {
    async fn poll(&mut self) {
        if let Some(s) = self
            .mesh
            .try_status("trainer", self.instance, STATUS_TIMEOUT)
            .await
        {
            self.polls += 1;
            self.max = self.max.max(running_jobs(&s).len());
        }
    }
}

fn object_dataset(train: &str, validation: &str) -> Value {
    json!({"object": {"key": train, "validation_key": validation}})
}

async fn submit(
    js: &jetstream::Context,
    job_id: &str,
    dataset: &Value,
    settings: Value,
) -> Result<()> {
    let body = json!({"job_id": job_id, "dataset": dataset, "settings": settings});
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", job_id);
    js.publish_with_headers(
        "lexmesh.jobs.train",
        headers,
        serde_json::to_vec(&body)?.into(),
    )
    .await?
    .await
    .with_context(|| format!("submitting job {job_id}"))?;
    Ok(())
}

async fn upload(js: &jetstream::Context, name: &str, file: &Path) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let store = js.get_object_store("lexmesh_datasets").await?;
    store
        .put(name, &mut bytes.as_slice())
        .await
        .with_context(|| format!("uploading {}", file.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helper modes: the floor
// ---------------------------------------------------------------------------------------------

/// The runtime the services use: multi-threaded, two workers.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// `--responder <url> <subject>`: answers every request with a 16-byte body.
fn responder(url: &str, subject: &str) -> Result<()> {
    runtime()?.block_on(async {
        let client = async_nats::connect(url).await?;
        let mut sub = client.subscribe(subject.to_string()).await?;
        let body = Bytes::from_static(b"{\"ok\":true,\"x\":0}");
        while let Some(message) = sub.next().await {
            if let Some(reply) = message.reply {
                client.publish(reply, body.clone()).await?;
            }
        }
        Ok(())
    })
}

/// `--publisher <url> <subject> <count> <rate>`: publishes `count` JSON messages with a
/// `timestamp_ms` (set just before publishing) at `rate` per second.
fn publisher(url: &str, subject: &str, count: u64, rate: f64) -> Result<()> {
    runtime()?.block_on(async {
        let client = async_nats::connect(url).await?;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let pad = "x".repeat(FLOOR_PAD);
        for seq in 0..count {
            tick.tick().await;
            let body = json!({"seq": seq, "pad": pad, "timestamp_ms": now_ms()});
            client
                .publish(subject.to_string(), serde_json::to_vec(&body)?.into())
                .await?;
        }
        client.flush().await?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------

/// Control-plane figures of one condition (idle or training).
struct ControlPlane {
    ping: Stats,
    status: Stats,
    floor: Stats,
    failures: Vec<usize>,
}

impl ControlPlane {
    fn json(&self) -> Value {
        json!({
            "ping": self.ping.json(),
            "status": self.status.json(),
            "floor": self.floor.json(),
            "ping_p99_over_floor_p99": self.ping.p99 / self.floor.p99,
            "status_p99_over_floor_p99": self.status.p99 / self.floor.p99,
            "failures": {"ping": self.failures[0], "status": self.failures[1], "floor": self.failures[2]},
        })
    }
}

/// `o.requests` of each of ping, status and floor; with `spread`, the rounds are spaced so
/// that the whole takes about that long.
async fn control_plane(
    client: &Client,
    instance: &str,
    o: &Options,
    spread: Duration,
) -> ControlPlane {
    let status = status_subject("trainer", instance);
    let rounds = o.requests.div_ceil(o.chunk).max(1) as u32;
    let (v, failures) = interleaved(
        client,
        &[PING_TRAINER, status.as_str(), FLOOR_ECHO],
        o.requests,
        o.chunk,
        spread / rounds,
    )
    .await;
    ControlPlane {
        ping: stats(&v[0]),
        status: stats(&v[1]),
        floor: stats(&v[2]),
        failures,
    }
}

/// Everything measured, for the table and the JSON file.
#[derive(Default)]
struct Report {
    json: serde_json::Map<String, Value>,
    table: Vec<String>,
}

impl Report {
    fn row(&mut self, cells: &[String]) {
        self.table.push(format!("| {} |", cells.join(" | ")));
    }
    fn line(&mut self, text: impl Into<String>) {
        self.table.push(text.into());
    }
}

fn f2(v: f64) -> String {
    format!("{v:.2}")
}

fn control_rows(r: &mut Report, condition: &str, c: &ControlPlane) {
    let ratio = |s: &Stats| format!("{:.2}x", s.p99 / c.floor.p99);
    let with_target = |s: &Stats| {
        let x = s.p99 / c.floor.p99;
        format!("**{x:.2}x** ({})", verdict(x <= RATIO_TARGET))
    };
    let ping_ratio = if condition == "training" {
        with_target(&c.ping)
    } else {
        ratio(&c.ping)
    };
    let status_ratio = if condition == "training" {
        with_target(&c.status)
    } else {
        ratio(&c.status)
    };
    for (name, s, rcell) in [
        ("`$SRV.PING.lexmesh-trainer`", &c.ping, ping_ratio),
        ("trainer status endpoint", &c.status, status_ratio),
        (
            "floor: bare async-nats responder",
            &c.floor,
            "1.00x".to_string(),
        ),
    ] {
        r.row(&[
            name.into(),
            condition.into(),
            s.n.to_string(),
            f2(s.p50),
            f2(s.p99),
            f2(s.max),
            rcell,
        ]);
    }
}

async fn run(o: Options) -> Result<()> {
    let started = Instant::now();
    let mut mesh = start_mesh().await?;
    let url = mesh.server.url();
    println!(
        "lexmesh mesh benchmark{}: services {}, nats-server {} at {url}",
        if o.quick { " (--quick)" } else { "" },
        mesh.binary().display(),
        mesh.server.binary().display(),
    );
    if !mesh
        .binary()
        .components()
        .any(|c| c.as_os_str() == "release")
    {
        eprintln!(
            "warning: {} is not a release-profile binary; figures are not representative",
            mesh.binary().display()
        );
    }
    let (a, b, c) = mesh.server.version();
    let nats_server_version = format!("{a}.{b}.{c}");
    let mut report = Report::default();
    report.json.insert(
        "options".into(),
        json!({
            "quick": o.quick, "requests": o.requests, "chunk": o.chunk,
            "load_epochs": o.load_epochs, "memory_epochs": o.memory_epochs,
            "concurrent_epochs": o.concurrent_epochs, "small_jobs": o.small_jobs,
            "spread_s": o.spread.as_secs_f64(), "memory_variants": o.memory_variants,
            "trainer_env": o.trainer_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "floor_captured": o.floor_captured,
            "lexmesh": mesh.binary(), "nats_server": mesh.server.binary(),
            "nats_server_version": nats_server_version,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        }),
    );

    let client = mesh.client.clone();
    let js = jetstream::new(client.clone());
    spawn_service(&mut mesh, "preprocessor", "bench-pre", 1, &[]);
    spawn_service(&mut mesh, "trainer", "bench-t1", 1, &o.trainer_env);
    mesh.wait_ready("bench-pre").await;
    mesh.wait_ready("bench-t1").await;
    let t1_pid = mesh.process("bench-t1").pid();
    let idle_rss_t1 = idle_rss_kib(t1_pid, Duration::from_secs(1)).await;

    let rulings_train = o.data.join("train.jsonl");
    let rulings_validation = o.data.join("validation.jsonl");
    upload(&js, RULINGS_TRAIN, &rulings_train).await?;
    upload(&js, RULINGS_VALIDATION, &rulings_validation).await?;
    upload(&js, SAMPLE_TRAIN, &o.sample.join("train.jsonl")).await?;
    upload(&js, SAMPLE_VALIDATION, &o.sample.join("validation.jsonl")).await?;
    let rulings = object_dataset(RULINGS_TRAIN, RULINGS_VALIDATION);
    let sample = object_dataset(SAMPLE_TRAIN, SAMPLE_VALIDATION);
    let finals = Finals::start(&client).await?;

    let _responder = {
        let mut r = spawn_helper(
            &mesh,
            "responder",
            &["--responder".into(), url.clone(), FLOOR_ECHO.into()],
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::time::timeout(
            Duration::from_millis(500),
            client.request(FLOOR_ECHO, Bytes::new()),
        )
        .await
        .map_or(true, |r| r.is_err())
        {
            if !r.is_running() || Instant::now() > deadline {
                bail!("the floor responder did not start:\n{}", r.log_tail(20));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        r
    };
    let floor_subject = if o.floor_captured {
        FLOOR_EVENTS_CAPTURED
    } else {
        FLOOR_EVENTS
    };
    let spawn_publisher = |mesh: &TestMesh, count: u64, rate: f64| {
        spawn_helper(
            mesh,
            "publisher",
            &[
                "--publisher".into(),
                url.clone(),
                floor_subject.into(),
                count.to_string(),
                format!("{rate}"),
            ],
        )
    };

    // ---- Idle ------------------------------------------------------------------------------
    let idle = if o.idle {
        println!(
            "[{:>5.1}s] idle: {} requests each of ping, status, floor",
            started.elapsed().as_secs_f64(),
            o.requests
        );
        let c = control_plane(&client, "bench-t1", &o, Duration::ZERO).await;
        let floor_events = collect_events(&client, floor_subject).await?;
        let count = if o.quick { 100 } else { 500 };
        let mut p = spawn_publisher(&mesh, count, 100.0)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while p.is_running() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let lat: Vec<f64> = floor_events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.latency_ms)
            .collect();
        Some((c, stats(&lat)))
    } else {
        None
    };

    // ---- Load job: control plane, events, memory with the default settings -----------------
    let load_job = "load-default-bow".to_string();
    println!(
        "[{:>5.1}s] load job: bow, default settings, rulings train split, {} epochs, patience 0",
        started.elapsed().as_secs_f64(),
        o.load_epochs
    );
    let lex_events =
        collect_events(&client, &format!("lexmesh.events.{load_job}.progress")).await?;
    let floor_events = collect_events(&client, floor_subject).await?;
    let sampler = RssSampler::start(t1_pid);
    let submitted = Instant::now();
    submit(
        &js,
        &load_job,
        &rulings,
        json!({"model": "bow", "epochs": o.load_epochs, "patience": 0}),
    )
    .await?;
    // Running on the status endpoint, and training (batch events flowing).
    let mut seen_running = false;
    let mut rate_window: Vec<Instant>;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if !seen_running
            && let Some(s) = mesh.try_status("trainer", "bench-t1", STATUS_TIMEOUT).await
        {
            seen_running = running_jobs(&s).contains(&load_job);
        }
        rate_window = lex_events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.phase == "batch")
            .map(|e| e.at)
            .take(12)
            .collect::<Vec<_>>();
        if seen_running && rate_window.len() >= 12 {
            break;
        }
        if let Some((_, v)) = finals.get(&load_job) {
            bail!("the load job ended before it could be measured: {v}");
        }
        if Instant::now() > deadline {
            bail!(
                "the load job did not start training within 300 s:\n{}",
                mesh.process("bench-t1").log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let training_started_after = rate_window[0].duration_since(submitted);
    // Batch events per second, leaving out the first (warm-up) interval.
    let rate = (10.0
        / rate_window[11]
            .duration_since(rate_window[1])
            .as_secs_f64()
            .max(1e-3))
    .clamp(1.0, 1000.0);
    let mut publisher = spawn_publisher(&mesh, (rate * 3600.0) as u64, rate)?;
    println!(
        "[{:>5.1}s] training (first batch {:.1} s after submit, {:.1} batch events/s); floor publisher at the same rate; {} requests each of ping, status, floor",
        started.elapsed().as_secs_f64(),
        training_started_after.as_secs_f64(),
        rate,
        o.requests
    );
    let cpu = CpuWindow::start(t1_pid);
    let busy = control_plane(&client, "bench-t1", &o, o.spread).await;
    let control_secs = cpu.start.elapsed().as_secs_f64();
    let (machine_busy, trainer_cores) = cpu.end();
    let still_running = mesh
        .try_status("trainer", "bench-t1", STATUS_TIMEOUT)
        .await
        .is_some_and(|s| running_jobs(&s).contains(&load_job));
    if !still_running {
        eprintln!(
            "warning: the load job was no longer running at the end of the control-plane measurement; use more --epochs"
        );
    }
    println!(
        "[{:>5.1}s] control plane measured in {control_secs:.1} s; waiting for the load job",
        started.elapsed().as_secs_f64()
    );
    let load_final = finals
        .wait(
            std::slice::from_ref(&load_job),
            Duration::from_secs(1800),
            (),
        )
        .await?;
    let load_secs = load_final[0].0.duration_since(submitted).as_secs_f64();
    publisher.stop(STOP_TIMEOUT).await;
    let load_rss = sampler.finish();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lex: Vec<EventSample> = lex_events.lock().unwrap().clone();
    let batches: Vec<&EventSample> = lex.iter().filter(|e| e.phase == "batch").collect();
    let (first_ts, last_ts) = (
        batches.first().map_or(0.0, |e| e.timestamp_ms),
        batches.last().map_or(0.0, |e| e.timestamp_ms),
    );
    let floor: Vec<f64> = floor_events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.timestamp_ms >= first_ts && e.timestamp_ms <= last_ts)
        .map(|e| e.latency_ms)
        .collect();
    let lex_stats = stats(&batches.iter().map(|e| e.latency_ms).collect::<Vec<_>>());
    let floor_stats = stats(&floor);
    // Events during the control-plane window vs. after it.
    let epochs_seen = lex.iter().filter(|e| e.phase == "epoch").count();
    let peak_default = load_rss.iter().map(|&(_, k)| k).max().unwrap_or(0);
    let epoch_end = |n: u64| {
        lex.iter()
            .find(|e| e.phase == "epoch" && e.epoch == n)
            .map(|e| e.at)
    };
    let peak_default_first = epoch_end(u64::from(o.memory_epochs)).map(|end| {
        load_rss
            .iter()
            .filter(|(t, _)| *t <= end)
            .map(|&(_, k)| k)
            .max()
            .unwrap_or(0)
    });
    let default_end_rss = load_rss.last().map_or(0, |&(_, k)| k);
    stop_service(&mut mesh, "bench-t1").await;

    // Pause at each epoch end (validation, checkpoint written and uploaded): from the last
    // batch event of an epoch to its epoch event.
    let epoch_pauses: Vec<f64> = lex
        .iter()
        .filter(|e| e.phase == "epoch")
        .filter_map(|end| {
            lex.iter()
                .filter(|b| b.phase == "batch" && b.epoch == end.epoch)
                .map(|b| b.at)
                .max()
                .map(|last| ms(end.at.duration_since(last)) / 1000.0)
        })
        .collect();
    let epoch_pause = stats(&epoch_pauses);
    // Where the memory peak comes from: training batches alone (before the first epoch end;
    // afterwards the allocator keeps what an epoch end touched resident) or the epoch-end
    // windows (validation in batches of 64, checkpoint written and uploaded).
    let windows: Vec<(Instant, Instant)> = lex
        .iter()
        .filter(|e| e.phase == "epoch")
        .filter_map(|end| {
            lex.iter()
                .filter(|b| b.phase == "batch" && b.epoch == end.epoch)
                .map(|b| b.at)
                .max()
                .map(|last| (last, end.at + Duration::from_millis(200)))
        })
        .collect();
    let in_window = |t: Instant| windows.iter().any(|&(a, b)| t >= a && t <= b);
    let peak_epoch_ends = load_rss
        .iter()
        .filter(|(t, _)| in_window(*t))
        .map(|&(_, k)| k)
        .max()
        .unwrap_or(0);
    let first_epoch_end = windows.first().map(|&(a, _)| a);
    let peak_batches = load_rss
        .iter()
        .filter(|(t, _)| first_epoch_end.is_some_and(|end| *t < end))
        .map(|&(_, k)| k)
        .max()
        .unwrap_or(0);
    stop_service(&mut mesh, "bench-t1").await;

    // ---- Memory with other settings, a fresh trainer each -----------------------------------
    let mut variants = Vec::new();
    if o.memory {
        variants.extend(o.memory_variants.iter().cloned());
    }
    let mut memory_rows = Vec::new();
    for (i, variant) in variants.iter().enumerate() {
        println!(
            "[{:>5.1}s] memory: fresh trainer, bow with {variant}, {} epochs",
            started.elapsed().as_secs_f64(),
            o.memory_epochs
        );
        let instance = format!("bench-m{}", i + 1);
        start_service(&mut mesh, "trainer", &instance, 1, &o.trainer_env).await;
        let pid = mesh.process(&instance).pid();
        let idle = idle_rss_kib(pid, Duration::from_secs(1)).await;
        let sampler = RssSampler::start(pid);
        let job = format!("memory-{}", i + 1);
        let mut settings = json!({"model": "bow", "epochs": o.memory_epochs, "patience": 0});
        if let (Some(s), Some(v)) = (settings.as_object_mut(), variant.as_object()) {
            s.extend(v.clone());
        }
        submit(&js, &job, &rulings, settings).await?;
        finals
            .wait(std::slice::from_ref(&job), Duration::from_secs(900), ())
            .await?;
        let peak = sampler.finish().iter().map(|&(_, k)| k).max().unwrap_or(0);
        stop_service(&mut mesh, &instance).await;
        memory_rows.push((variant.clone(), idle, peak));
    }

    // ---- Concurrency ------------------------------------------------------------------------
    let concurrency = if o.concurrency {
        println!(
            "[{:>5.1}s] concurrency: 4 jobs at once on one trainer with concurrency 4",
            started.elapsed().as_secs_f64()
        );
        start_service(&mut mesh, "trainer", "bench-t3", 4, &o.trainer_env).await;
        let sampler = RssSampler::start(mesh.process("bench-t3").pid());
        let jobs: Vec<String> = (1..=4).map(|i| format!("concurrent-{i}")).collect();
        let start = Instant::now();
        for j in &jobs {
            submit(
                &js,
                j,
                &rulings,
                json!({"model": "bow", "epochs": o.concurrent_epochs, "patience": 0}),
            )
            .await?;
        }
        let mut poll = MaxRunning {
            mesh: &mesh,
            instance: "bench-t3",
            max: 0,
            polls: 0,
        };
        let done = finals
            .wait(&jobs, Duration::from_secs(900), &mut poll)
            .await?;
        let wall = done
            .iter()
            .map(|(t, _)| t.duration_since(start))
            .max()
            .unwrap_or_default();
        let peak = sampler.finish().iter().map(|&(_, k)| k).max().unwrap_or(0);
        let (max_running, polls) = (poll.max, poll.polls);
        stop_service(&mut mesh, "bench-t3").await;

        // Throughput of small jobs: one replica, then two.
        // Default settings; replicas side by side share the cores as `lexmesh up` shares them.
        let small = json!({"model": "bow", "epochs": 2, "patience": 0});
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut seq = 0usize;
        let mut throughput = Vec::new();
        let mut replicas: Vec<String> = Vec::new();
        for n in [1usize, 2] {
            for r in &replicas {
                stop_service(&mut mesh, r).await;
            }
            replicas.clear();
            while replicas.len() < n {
                let instance = format!("bench-r{}", replicas.len() + 1);
                let mut env = o.trainer_env.clone();
                env.push((
                    "LEXMESH_SERVICE__CORES".into(),
                    (cores / n).max(1).to_string(),
                ));
                start_service(&mut mesh, "trainer", &instance, 1, &env).await;
                replicas.push(instance);
            }
            println!(
                "[{:>5.1}s] throughput: {} small jobs, {n} replica(s) of concurrency 1",
                started.elapsed().as_secs_f64(),
                o.small_jobs
            );
            // Warm-up: one job per replica (first libtorch use, prepared dataset).
            let warm = job_ids(n, &mut seq);
            for j in &warm {
                submit(&js, j, &sample, small.clone()).await?;
            }
            finals.wait(&warm, Duration::from_secs(300), ()).await?;
            let ids = job_ids(o.small_jobs, &mut seq);
            let start = Instant::now();
            for j in &ids {
                submit(&js, j, &sample, small.clone()).await?;
            }
            let done = finals.wait(&ids, Duration::from_secs(900), ()).await?;
            let wall = done
                .iter()
                .map(|(t, _)| t.duration_since(start))
                .max()
                .unwrap_or_default()
                .as_secs_f64();
            let mut by_instance: HashMap<String, usize> = HashMap::new();
            for (_, v) in &done {
                *by_instance
                    .entry(v["instance"].as_str().unwrap_or("?").to_string())
                    .or_default() += 1;
            }
            throughput.push((n, wall, o.small_jobs as f64 / wall * 60.0, by_instance));
        }
        for r in &replicas {
            stop_service(&mut mesh, r).await;
        }
        Some((wall.as_secs_f64(), max_running, polls, peak, throughput))
    } else {
        None
    };
    stop_service(&mut mesh, "bench-pre").await;

    // ---- Report -----------------------------------------------------------------------------
    let r = &mut report;
    r.line(format!(
        "### Control plane: {} sequential request/replies each, interleaved in chunks of {}, ms",
        o.requests, o.chunk
    ));
    r.line("");
    r.line("| request | condition | n | p50 | p99 | max | p99 / floor p99 (target ≤ 1.5x) |");
    r.line("| --- | --- | --- | --- | --- | --- | --- |");
    control_rows(r, "training", &busy);
    if let Some((c, _)) = &idle {
        control_rows(r, "idle", c);
    }
    r.line("");
    r.line(format!(
        "During the training measurement ({control_secs:.1} s): machine CPU busy {machine_busy:.0} %, trainer process {trainer_cores:.2} cores; job still running at the end: {}; status showed it running: {seen_running}. Failed requests (ping/status/floor): {:?}.",
        if still_running { "yes" } else { "NO" },
        busy.failures
    ));
    r.line("");
    r.line("### Events: receive time − `timestamp_ms`, ms");
    r.line("");
    r.line("| events | condition | n | p50 | p99 | max | p99 / floor p99 (target ≤ 1.5x) |");
    r.line("| --- | --- | --- | --- | --- | --- | --- |");
    let event_ratio = lex_stats.p99 / floor_stats.p99;
    r.row(&[
        "lexmesh `progress` (batch) events of the load job".into(),
        "training".into(),
        lex_stats.n.to_string(),
        f2(lex_stats.p50),
        f2(lex_stats.p99),
        f2(lex_stats.max),
        format!(
            "**{event_ratio:.2}x** ({})",
            verdict(event_ratio <= RATIO_TARGET)
        ),
    ]);
    r.row(&[
        format!(
            "floor: bare publisher at {rate:.1}/s{}",
            if o.floor_captured {
                " (subject captured by the events stream)"
            } else {
                ""
            }
        ),
        "training".into(),
        floor_stats.n.to_string(),
        f2(floor_stats.p50),
        f2(floor_stats.p99),
        f2(floor_stats.max),
        "1.00x".into(),
    ]);
    if let Some((_, s)) = &idle {
        r.row(&[
            "floor: bare publisher at 100/s".into(),
            "idle".into(),
            s.n.to_string(),
            f2(s.p50),
            f2(s.p99),
            f2(s.max),
            "-".into(),
        ]);
    }
    r.line("");
    r.line(format!(
        "Load job: {} epochs, {epochs_seen} epoch events, first batch {:.1} s after submit, completed after {load_secs:.1} s; pause at each epoch end (validation, checkpoint stored) median {:.1} s, max {:.1} s.",
        o.load_epochs,
        training_started_after.as_secs_f64(),
        epoch_pause.p50,
        epoch_pause.max
    ));
    r.line("");
    r.line("### Memory: trainer VmRSS, MiB (sampled every 100 ms)");
    r.line("");
    r.line("| trainer | idle after start | peak while training | target ≤ 256 MiB |");
    r.line("| --- | --- | --- | --- |");
    let first_note = peak_default_first
        .map(|k| {
            format!(
                " (first {} epochs: {:.0}; batches of epoch 1 only: {:.0}; at epoch ends: {:.0}; after the job: {:.0})",
                o.memory_epochs,
                mib(k),
                mib(peak_batches),
                mib(peak_epoch_ends),
                mib(default_end_rss)
            )
        })
        .unwrap_or_default();
    r.row(&[
        "bow, default settings (the linear bag), rulings".into(),
        format!("{:.0}", mib(idle_rss_t1)),
        format!("{:.0}{first_note}", mib(peak_default)),
        verdict(mib(peak_default) <= MEMORY_TARGET_MIB).into(),
    ]);
    for (variant, idle, peak) in &memory_rows {
        let (idle, peak) = (*idle, *peak);
        r.row(&[
            format!(
                "bow, defaults + `{variant}`, rulings ({} epochs, fresh process)",
                o.memory_epochs
            ),
            format!("{:.0}", mib(idle)),
            format!("{:.0}", mib(peak)),
            verdict(mib(peak) <= MEMORY_TARGET_MIB).into(),
        ]);
    }
    if let Some((wall, max_running, polls, peak, throughput)) = &concurrency {
        r.line("");
        r.line("### Concurrency");
        r.line("");
        r.line("| | figure |");
        r.line("| --- | --- |");
        r.row(&[
            format!("4 jobs at once, one trainer with concurrency 4 (default bow, {} epochs, rulings)", o.concurrent_epochs),
            format!("all completed in {wall:.1} s; most running at once on the status endpoint: {max_running} ({polls} polls); peak RSS {:.0} MiB", mib(*peak)),
        ]);
        for (n, wall, per_min, by_instance) in throughput {
            let mut split: Vec<String> = by_instance
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            split.sort();
            r.row(&[
                format!("{} small jobs (sample data, default bow, 2 epochs), {n} replica(s) of concurrency 1, the cores shared among them", o.small_jobs),
                format!("{wall:.1} s, **{per_min:.1} jobs/min** ({})", split.join(", ")),
            ]);
        }
        if throughput.len() == 2 {
            r.row(&[
                "2 replicas / 1 replica".into(),
                format!("**{:.2}x**", throughput[1].2 / throughput[0].2),
            ]);
        }
    }

    let j = &mut r.json;
    j.insert(
        "control_plane".into(),
        json!({
            "training": busy.json(),
            "idle": idle.as_ref().map(|(c, _)| c.json()),
            "training_window": {
                "seconds": control_secs, "machine_cpu_busy_percent": machine_busy,
                "trainer_cores": trainer_cores, "job_running_at_end": still_running,
                "status_showed_running": seen_running,
            },
            "target_ratio": RATIO_TARGET,
        }),
    );
    j.insert(
        "events".into(),
        json!({
            "lexmesh_progress_batch": lex_stats.json(),
            "floor_training": floor_stats.json(),
            "floor_rate_per_s": rate,
            "floor_subject": floor_subject,
            "floor_idle": idle.as_ref().map(|(_, s)| s.json()),
            "p99_over_floor_p99": event_ratio,
            "target_ratio": RATIO_TARGET,
        }),
    );
    j.insert(
        "load_job".into(),
        json!({
            "epochs": o.load_epochs, "epoch_events": epochs_seen,
            "first_batch_after_s": training_started_after.as_secs_f64(),
            "completed_after_s": load_secs,
            "epoch_end_pause_s": {"median": epoch_pause.p50, "max": epoch_pause.max},
            "result": load_final[0].1["result"]["train"]["stop_reason"],
        }),
    );
    j.insert(
        "memory_mib".into(),
        json!({
            "idle_after_start": mib(idle_rss_t1),
            "peak_default_bow": mib(peak_default),
            "peak_default_bow_first_epochs": peak_default_first.map(mib),
            "default_bow_at_end": mib(default_end_rss),
            "peak_default_bow_epoch1_batches": mib(peak_batches),
            "peak_default_bow_at_epoch_ends": mib(peak_epoch_ends),
            "variants": memory_rows.iter().map(|(v, i, p)| json!({"settings": v, "idle_after_start": mib(*i), "peak": mib(*p), "met": mib(*p) <= MEMORY_TARGET_MIB})).collect::<Vec<_>>(),
            "target": MEMORY_TARGET_MIB,
            "default_met": mib(peak_default) <= MEMORY_TARGET_MIB,
        }),
    );
    if let Some((wall, max_running, polls, peak, throughput)) = &concurrency {
        j.insert(
            "concurrency".into(),
            json!({
                "four_jobs_wall_s": wall, "max_running_seen": max_running, "status_polls": polls,
                "peak_rss_mib": mib(*peak),
                "small_jobs": throughput.iter().map(|(n, wall, per_min, by)| json!({
                    "replicas": n, "jobs": o.small_jobs, "wall_s": wall, "jobs_per_min": per_min, "by_instance": by,
                })).collect::<Vec<_>>(),
                "two_over_one": if throughput.len() == 2 { Some(throughput[1].2 / throughput[0].2) } else { None },
            }),
        );
    }
    j.insert("total_s".into(), json!(started.elapsed().as_secs_f64()));

    println!();
    for line in &r.table {
        println!("{line}");
    }
    println!();
    println!(
        "total {:.0} s; figures written to {}",
        started.elapsed().as_secs_f64(),
        o.out.display()
    );
    if let Some(parent) = o.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        &o.out,
        serde_json::to_vec_pretty(&Value::Object(r.json.clone()))?,
    )?;
    // The helper processes (declared after the mesh) are killed first, then the mesh: its
    // services, the server, the temporary folder.
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--responder") {
        let (url, subject) = (args.get(i + 1), args.get(i + 2));
        return match (url, subject) {
            (Some(u), Some(s)) => responder(u, s),
            _ => bail!("usage: --responder <url> <subject>"),
        };
    }
    if let Some(i) = args.iter().position(|a| a == "--publisher") {
        let a: Vec<&String> = args.iter().skip(i + 1).take(4).collect();
        if a.len() < 4 {
            bail!("usage: --publisher <url> <subject> <count> <rate>");
        }
        return publisher(a[0], a[1], a[2].parse()?, a[3].parse()?);
    }
    let o = options()?;
    if o.observability {
        return runtime()?.block_on(observability(o));
    }
    runtime()?.block_on(run(o))
}

// ---------------------------------------------------------------------------------------------
// The cost of observability (`--observability`)
// ---------------------------------------------------------------------------------------------

/// One trainer's run of the observability comparison.
struct ObservedRun {
    /// Median examples/s of the epochs after the first.
    examples_per_sec: f64,
    /// The trainer's status endpoint during training.
    status: Stats,
}

/// Trains `job_id` on a fresh trainer started with `env`, asking its status endpoint
/// `o.requests` times spread over the training.
async fn observed_run(
    mesh: &mut TestMesh,
    client: &Client,
    js: &jetstream::Context,
    finals: &Finals,
    o: &Options,
    (instance, job_id): (&str, &str),
    env: &[(String, String)],
) -> Result<ObservedRun> {
    let mut env = env.to_vec();
    env.extend(o.trainer_env.iter().cloned());
    start_service(mesh, "trainer", instance, 1, &env).await;
    let epochs = collect_events(client, &format!("lexmesh.events.{job_id}.progress")).await?;
    let rates: Arc<Mutex<Vec<f64>>> = Arc::default();
    {
        let mut sub = client
            .subscribe(format!("lexmesh.events.{job_id}.progress"))
            .await?;
        let rates = rates.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let Ok(v) = serde_json::from_slice::<Value>(&m.payload) else {
                    continue;
                };
                if v["phase"] == "epoch"
                    && v["epoch"].as_u64().is_some_and(|e| e > 1)
                    && let Some(r) = v["examples_per_sec"].as_f64()
                {
                    rates.lock().unwrap().push(r);
                }
            }
        });
    }
    submit(
        js,
        job_id,
        &object_dataset(RULINGS_TRAIN, RULINGS_VALIDATION),
        json!({"model": "bow", "epochs": o.load_epochs, "patience": 0}),
    )
    .await?;
    // Training: the first batch event arrived.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !epochs.lock().unwrap().iter().any(|e| e.phase == "batch") {
        let trainer = mesh.process(instance);
        if Instant::now() > deadline || !trainer.is_running() {
            bail!("{job_id} did not start training:\n{}", trainer.log_tail(30));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let subject = status_subject("trainer", instance);
    let mut latencies = Vec::with_capacity(o.requests);
    while finals.get(job_id).is_none() && latencies.len() < o.requests {
        let t = Instant::now();
        if client.request(subject.clone(), Bytes::new()).await.is_ok() {
            latencies.push(ms(t.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    finals
        .wait(&[job_id.to_string()], Duration::from_secs(1800), ())
        .await?;
    stop_service(mesh, instance).await;
    let rates = rates.lock().unwrap().clone();
    if rates.is_empty() {
        bail!("{job_id}: no epoch after the first reported examples/s (--epochs 2 or more)");
    }
    Ok(ObservedRun {
        examples_per_sec: median(rates),
        status: stats(&latencies),
    })
}

async fn observability(mut o: Options) -> Result<()> {
    if !std::env::args().any(|a| a == "--epochs") && !o.quick {
        o.load_epochs = 8;
    }
    let mut mesh = start_mesh().await?;
    let receiver = lexmesh_testkit::otlp::OtlpReceiver::start()?;
    println!(
        "lexmesh observability cost{}: {} rounds, bow on the rulings, {} epochs; services {}",
        if o.quick { " (--quick)" } else { "" },
        o.rounds,
        o.load_epochs,
        mesh.binary().display()
    );
    let client = mesh.client.clone();
    let js = jetstream::new(client.clone());
    start_service(&mut mesh, "preprocessor", "obs-pre", 1, &[]).await;
    start_service(
        &mut mesh,
        "metrics",
        "obs-metrics",
        1,
        &[("LEXMESH_METRICS__LISTEN".into(), "127.0.0.1:0".into())],
    )
    .await;
    upload(&js, RULINGS_TRAIN, &o.data.join("train.jsonl")).await?;
    upload(&js, RULINGS_VALIDATION, &o.data.join("validation.jsonl")).await?;
    let finals = Finals::start(&client).await?;
    let off: Vec<(String, String)> = vec![
        ("LEXMESH_SERVICE__METRICS_INTERVAL".into(), "1h".into()),
        ("LEXMESH_SERVICE__TICK_INTERVAL".into(), "1h".into()),
    ];
    let on: Vec<(String, String)> = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "1000".into()),
    ];
    let mut runs: Vec<(bool, ObservedRun)> = Vec::new();
    let started = Instant::now();
    for round in 0..o.rounds {
        // Alternate the order so that a drift of the machine hits both alike.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for observed in order {
            let name = format!("obs-{}-{round}", if observed { "on" } else { "off" });
            let run = observed_run(
                &mut mesh,
                &client,
                &js,
                &finals,
                &o,
                (&name, &format!("job-{name}")),
                if observed { &on } else { &off },
            )
            .await?;
            println!(
                "[{:>6.1}s] round {}: observability {:<3} {:>8.0} examples/s, status p50 {:.2} ms p99 {:.2} ms",
                started.elapsed().as_secs_f64(),
                round + 1,
                if observed { "on" } else { "off" },
                run.examples_per_sec,
                run.status.p50,
                run.status.p99
            );
            runs.push((observed, run));
        }
    }
    let spans = receiver.spans();
    let epoch_spans = spans
        .iter()
        .filter(|s| s.attributes.contains_key("epoch"))
        .count();
    let pick = |observed: bool| -> Vec<&ObservedRun> {
        runs.iter()
            .filter(|(o, _)| *o == observed)
            .map(|(_, r)| r)
            .collect()
    };
    let summary = |runs: &[&ObservedRun]| {
        (
            median(runs.iter().map(|r| r.examples_per_sec)),
            median(runs.iter().map(|r| r.status.p50)),
            median(runs.iter().map(|r| r.status.p99)),
        )
    };
    let (off_rate, off_p50, off_p99) = summary(&pick(false));
    let (on_rate, on_p50, on_p99) = summary(&pick(true));
    // The machine drifts between rounds (other tenants): compare each round's pair, which ran
    // back to back, and take the median of the rounds' costs.
    let costs: Vec<f64> = pick(false)
        .iter()
        .zip(pick(true))
        .map(|(off, on)| {
            (off.examples_per_sec - on.examples_per_sec) / off.examples_per_sec * 100.0
        })
        .collect();
    let per_round = costs
        .iter()
        .map(|c| format!("{c:+.2} %"))
        .collect::<Vec<_>>()
        .join(", ");
    let cost = median(costs.iter().copied());
    println!();
    println!(
        "| figure (median of {} rounds) | off | on | on vs off |",
        o.rounds
    );
    println!("| --- | --- | --- | --- |");
    println!(
        "| training throughput, examples/s | {off_rate:.1} | {on_rate:.1} | **{cost:+.2} %** cost, median of the rounds' pairs ({per_round}) ({}; target < 2 %) |",
        verdict(cost < 2.0)
    );
    println!(
        "| trainer status round trip while training, p50 ms | {off_p50:.2} | {on_p50:.2} | {:.2}x |",
        on_p50 / off_p50
    );
    println!(
        "| trainer status round trip while training, p99 ms | {off_p99:.2} | {on_p99:.2} | {:.2}x |",
        on_p99 / off_p99
    );
    println!(
        "spans received by the collector: {} ({epoch_spans} epoch spans) in {} export requests",
        spans.len(),
        receiver.requests()
    );
    let out = o.out.with_file_name("observability-bench.json");
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let json_runs: Vec<Value> = runs
        .iter()
        .map(|(observed, r)| {
            json!({"observability": observed, "examples_per_sec": r.examples_per_sec, "status": r.status.json()})
        })
        .collect();
    std::fs::write(
        &out,
        serde_json::to_vec_pretty(&json!({
            "rounds": o.rounds, "epochs": o.load_epochs, "requests": o.requests,
            "off": {"examples_per_sec": off_rate, "status_p50_ms": off_p50, "status_p99_ms": off_p99},
            "on": {"examples_per_sec": on_rate, "status_p50_ms": on_p50, "status_p99_ms": on_p99},
            "throughput_cost_percent": cost, "per_round_cost_percent": costs,
            "spans": spans.len(), "epoch_spans": epoch_spans,
            "runs": json_runs,
        }))?,
    )?;
    println!("figures in {}", out.display());
    stop_service(&mut mesh, "obs-pre").await;
    stop_service(&mut mesh, "obs-metrics").await;
    Ok(())
}
