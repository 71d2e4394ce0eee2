//! The mesh command line as a user runs it: `lexmesh up` starting its own nats-server and one
//! process per replica, then `submit`, `watch`, `jobs`, `models`, `classify` and `cancel` as
//! separate processes, and SIGTERM to `up` leaving nothing behind. Also the errors a user meets
//! without a mesh, and `watch` on a job that fails.
//!
//! Every child process runs in the test's temporary folder (no `lexmesh.toml` of the checkout
//! leaks in), with a timeout, and is killed when the test ends; every `LEXMESH_*` and `NATS_URL`
//! variable of the test's own environment is removed from it.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lexmesh_runtime::nats_server::{self, ServerFlavor};
use lexmesh_testkit::cli::Ran;
use lexmesh_testkit::{
    Schemas, TestMesh, inline, is_final, sample_path, sample_records, short, small_settings,
    try_send_signal,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

/// A command that talks to the mesh but runs no job (jobs, models, classify, cancel, a replay).
const QUICK: Duration = Duration::from_secs(60);

/// A command that submits a job and follows it to its end.
const JOB: Duration = Duration::from_secs(240);

/// How long `lexmesh up` may take to start the server and have every replica answer.
const MESH_READY: Duration = Duration::from_secs(180);

/// How long `lexmesh up` may take to stop after SIGTERM.
const STOP: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Running the command line
// ---------------------------------------------------------------------------------------------

/// A child process killed (and reaped) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` with `stdin` (or none), killing it after `timeout` (which fails the test).
fn run(mut cmd: Command, what: &str, stdin: Option<&[u8]>, timeout: Duration) -> Ran {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = KillOnDrop(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}")),
    );
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = reader(Box::new(child.0.stdout.take().expect("stdout pipe")));
    let stderr = reader(Box::new(child.0.stderr.take().expect("stderr pipe")));
    if let Some(bytes) = stdin {
        let mut pipe = child.0.stdin.take().expect("stdin pipe");
        // A command that fails before reading its input closes the pipe: not this test's error.
        let _ = pipe.write_all(bytes);
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for the command") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.0.kill();
            let _ = child.0.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let ran = Ran {
        what: what.to_string(),
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    assert!(
        status.is_some(),
        "`{what}` did not finish within {timeout:?} (killed)\n{}",
        ran.describe()
    );
    ran
}

/// A user at a terminal: a working folder and the NATS URL in the environment.
struct User {
    /// The working folder (the test's temporary folder, canonical).
    dir: PathBuf,
    /// `NATS_URL`.
    url: String,
}

impl User {
    fn new(dir: &Path, url: String) -> Self {
        Self {
            dir: dir.canonicalize().expect("canonical temporary folder"),
            url,
        }
    }

    /// `lexmesh <args>` in the working folder, with a clean mesh environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(LEXMESH);
        cmd.args(args).current_dir(&self.dir);
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("LEXMESH_") || name == "NATS_URL" {
                cmd.env_remove(&key);
            }
        }
        cmd.env("NATS_URL", &self.url)
            .env("LEXMESH_SERVICE__WORK_DIR", self.dir.join("work"))
            .env("LEXMESH_SERVICE__COMPUTE_THREADS", "1")
            // Tests run side by side: no fixed Prometheus port.
            .env("LEXMESH_METRICS__LISTEN", "127.0.0.1:0");
        cmd
    }

    fn run(&self, args: &[&str], timeout: Duration) -> Ran {
        self.run_with_input(args, None, timeout)
    }

    fn run_with_input(&self, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Ran {
        let what = format!("lexmesh {}", args.join(" "));
        run(self.command(args), &what, stdin, timeout)
    }

    /// Writes a file into the working folder and returns its name relative to it.
    fn write(&self, name: &str, content: &[u8]) -> String {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create folder");
        }
        std::fs::write(&path, content).expect("write file");
        name.to_string()
    }

    /// Copies the repository's `data/sample` into the working folder, so that the commands
    /// read `data/sample/...` as in the README.
    fn copy_sample(&self) {
        for file in ["train.jsonl", "validation.jsonl"] {
            let from = sample_path(file);
            let bytes = std::fs::read(&from).expect("read the sample");
            self.write(&format!("data/sample/{file}"), &bytes);
        }
    }
}

/// A port on 127.0.0.1 where nothing listens.
fn dead_url() -> String {
    let port = nats_server::free_port().expect("a free port");
    format!("nats://127.0.0.1:{port}")
}

/// The object name `lexmesh submit --data FILE` uploads FILE as.
fn upload_key(path: &Path) -> String {
    let digest = Sha256::digest(std::fs::read(path).expect("read the data file"));
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("uploads/{hex}.jsonl")
}

// ---------------------------------------------------------------------------------------------
// Processes left behind
// ---------------------------------------------------------------------------------------------

/// Processes (other than this one) whose working folder is `dir` or below, or whose command
/// line names it: what `lexmesh up` started there (replicas, nats-server). (pid, command line.)
fn processes_under(dir: &Path) -> Vec<(u32, String)> {
    let me = std::process::id();
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let proc_dir = entry.path();
        // A zombie has no cwd and an empty command line: it is gone as far as we care.
        let cmdline = std::fs::read(proc_dir.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let in_dir = std::fs::read_link(proc_dir.join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir));
        if in_dir || cmdline.contains(&needle) {
            found.push((pid, cmdline.trim().to_string()));
        }
    }
    found
}

/// Whether `pid` is a live process (not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `pid (comm) S ...`: the state follows the last `)`.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

// ---------------------------------------------------------------------------------------------
// `lexmesh up`
// ---------------------------------------------------------------------------------------------

/// A running `lexmesh up`, its stdout and stderr in files of the working folder. Dropped: it
/// gets SIGTERM, then SIGKILL, and whatever it left in the folder is killed.
struct Up {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
    dir: PathBuf,
}

impl Up {
    fn start(user: &User, args: &[&str], env: &[(&str, &Path)]) -> Self {
        let out = user.dir.join("up.stdout");
        let err = user.dir.join("up.stderr");
        let mut cmd = user.command(args);
        for (key, value) in env {
            cmd.env(key, value);
        }
        cmd.env("LEXMESH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("create up.stdout"))
            .stderr(std::fs::File::create(&err).expect("create up.stderr"));
        let child = cmd.spawn().expect("run lexmesh up");
        Self {
            child: Some(child),
            out,
            err,
            dir: user.dir.clone(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("up is running").id()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn logs(&self) -> String {
        format!(
            "--- stdout of lexmesh up ---\n{}\n--- stderr of lexmesh up (and its replicas) ---\n{}",
            self.stdout(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// Fails the test when `up` has exited.
    fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("up was started");
        if let Some(status) = child.try_wait().expect("wait for up") {
            panic!("lexmesh up exited early with {status}\n{}", self.logs());
        }
    }

    /// Waits until a line of stdout satisfies `pred`; returns it.
    fn wait_line(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stdout().lines().find(|l| pred(l)) {
                return line.to_string();
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "lexmesh up did not print {what} within {timeout:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `(instance, pid)` of every `started <instance> (pid N)` line.
    fn replica_pids(&self) -> Vec<(String, u32)> {
        self.stdout()
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("started ")?;
                let (instance, pid) = rest.split_once(" (pid ")?;
                Some((instance.to_string(), pid.strip_suffix(')')?.parse().ok()?))
            })
            .collect()
    }

    /// SIGTERM, then waits up to `timeout`; the exit status and how long it took.
    fn terminate(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        try_send_signal("-TERM", self.pid());
        let started = Instant::now();
        let child = self.child.as_mut().expect("up was started");
        loop {
            if let Some(status) = child.try_wait().expect("wait for up") {
                self.child = None;
                return (status, started.elapsed());
            }
            if started.elapsed() >= timeout {
                panic!(
                    "lexmesh up did not exit within {timeout:?} of SIGTERM\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            try_send_signal("-TERM", child.id());
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for (pid, _) in processes_under(&self.dir) {
            try_send_signal("-KILL", pid);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Replies to `$SRV.PING.<service>` within a second.
async fn ping_replies(client: &async_nats::Client, service: &str) -> Vec<Value> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply(format!("$SRV.PING.{service}"), inbox, Vec::new().into())
        .await
        .expect("publish PING");
    client.flush().await.expect("flush");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut found = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
        found.push(serde_json::from_slice(&message.payload).unwrap_or(Value::Null));
    }
    found
}

/// Whether `lexmesh.api.<service>.<instance>.status` answers.
async fn answers_status(client: &async_nats::Client, service: &str, instance: &str) -> bool {
    let request = async_nats::Request::new()
        .payload(Vec::new().into())
        .timeout(Some(Duration::from_secs(2)));
    client
        .send_request(format!("lexmesh.api.{service}.{instance}.status"), request)
        .await
        .is_ok_and(|reply| serde_json::from_slice::<Value>(&reply.payload).is_ok())
}

// ---------------------------------------------------------------------------------------------
// 1. The whole mesh through the command line
// ---------------------------------------------------------------------------------------------

#[test]
fn up_runs_a_mesh_that_the_commands_drive_and_stops_on_sigterm() {
    let server_binary = nats_server::locate(ServerFlavor::Current)
        .expect("a nats-server 2.10+ (scripts/setup-nats)");
    let tmp = tempfile::Builder::new()
        .prefix("lexmesh-cli-mesh-")
        .tempdir()
        .expect("temporary folder");
    let user = User::new(tmp.path(), dead_url());
    user.copy_sample();
    let schemas = Schemas::load();
    let data_dir = user.dir.join("nats");

    // --- lexmesh up: nothing answers at NATS_URL, so it starts a nats-server -----------------
    let mut up = Up::start(
        &user,
        &[
            "up",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--replicas",
            "trainer=2",
        ],
        &[("LEXMESH_NATS_SERVER", server_binary.as_path())],
    );
    let started = up.wait_line("that it started a nats-server", MESH_READY, |l| {
        l.starts_with("started nats-server")
    });
    assert!(started.contains(&user.url), "{started} names {}", user.url);
    assert!(
        started.contains(&data_dir.display().to_string()),
        "{started} names {}",
        data_dir.display()
    );

    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let client = rt
        .block_on(async_nats::connect(&user.url))
        .expect("connect to the server lexmesh up started");
    let instances = [
        ("preprocessor", "preprocessor-1"),
        ("trainer", "trainer-1"),
        ("trainer", "trainer-2"),
        ("evaluator", "evaluator-1"),
    ];
    let deadline = Instant::now() + MESH_READY;
    let mut waiting: Vec<(&str, &str)> = instances.to_vec();
    while !waiting.is_empty() {
        up.assert_running();
        let still = rt.block_on(async {
            let mut still = Vec::new();
            for (service, instance) in &waiting {
                if !answers_status(&client, service, instance).await {
                    still.push((*service, *instance));
                }
            }
            still
        });
        waiting = still;
        assert!(
            waiting.is_empty() || Instant::now() < deadline,
            "{waiting:?} did not answer their status within {MESH_READY:?}\n{}",
            up.logs()
        );
        if !waiting.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let pings = rt.block_on(ping_replies(&client, "lexmesh-trainer"));
    assert_eq!(
        pings.len(),
        2,
        "$SRV.PING.lexmesh-trainer: {pings:?}\n{}",
        up.logs()
    );
    let pids = up.replica_pids();
    let mut named: Vec<&str> = pids.iter().map(|(i, _)| i.as_str()).collect();
    named.sort_unstable();
    assert_eq!(
        named,
        [
            "evaluator-1",
            "health-1",
            "metrics-1",
            "preprocessor-1",
            "trainer-1",
            "trainer-2"
        ],
        "{}",
        up.logs()
    );

    // --- lexmesh status: the health service's view of every instance -------------------------
    let deadline = Instant::now() + MESH_READY;
    loop {
        let status = user.run(&["status"], JOB).success();
        let healthy = status
            .stdout
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("healthy"))
            .count();
        // preprocessor, two trainers, evaluator, health, metrics.
        if healthy == 6 {
            assert!(
                status.stdout.starts_with("SERVICE"),
                "{}",
                status.describe()
            );
            assert!(status.stderr.contains("(leader)"), "{}", status.describe());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lexmesh status does not show 6 healthy instances\n{}",
            status.describe()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let json = user.run(&["status", "--format", "json"], JOB).success();
    let status: serde_json::Value = serde_json::from_str(&json.stdout).expect("status JSON");
    // `{"health": <HealthReport or null>, "metrics": <MetricsSnapshot or null>}`.
    schemas.check(
        "health-report",
        "lexmesh status --format json: health",
        &status["health"],
    );
    schemas.check(
        "metrics-snapshot",
        "lexmesh status --format json: metrics",
        &status["metrics"],
    );

    // --- submit with flags: upload the files, prepare them -----------------------------------
    let prep = user
        .run(
            &[
                "submit",
                "preprocess",
                "--data",
                "data/sample/train.jsonl",
                "--validation",
                "data/sample/validation.jsonl",
                "--job-id",
                "prep1",
                "--watch",
            ],
            JOB,
        )
        .success();
    assert!(
        prep.stderr.contains("uploaded data/sample/train.jsonl")
            && prep
                .stderr
                .contains("uploaded data/sample/validation.jsonl"),
        "{}",
        prep.describe()
    );
    assert!(
        prep.stdout.contains("job prep1 completed") && prep.stdout.contains("2 labels"),
        "{}",
        prep.describe()
    );

    // --- submit train: a job given whole, with small settings (the flags do not cover them
    // all). The data are the files just uploaded, named as `submit --data` names them.
    let train_key = upload_key(&user.dir.join("data/sample/train.jsonl"));
    let validation_key = upload_key(&user.dir.join("data/sample/validation.jsonl"));
    let job = json!({
        "job_id": "cli1",
        "model_id": "cli1-bow",
        "dataset": {"object": {"key": train_key, "validation_key": validation_key}},
        "settings": small_settings(2),
    });
    schemas.check("train-job", "job cli1", &job);
    let file = user.write("cli1.json", job.to_string().as_bytes());
    let train = user
        .run(
            &[
                "submit", "train", "--json", &file, "--job-id", "cli1", "--watch",
            ],
            JOB,
        )
        .success();
    assert!(
        train.stderr.contains("submitted train job cli1"),
        "{}",
        train.describe()
    );
    assert!(
        train.stdout.contains("job cli1 completed")
            && train.stdout.contains("model cli1-bow")
            && train.stdout.contains("validation: macro-F1")
            && train.stdout.contains("on 40 examples"),
        "{}",
        train.describe()
    );

    // --- jobs ---------------------------------------------------------------------------------
    let jobs = user.run(&["jobs", "--format", "json"], QUICK).success();
    let records = jobs.json();
    let records = records.as_array().expect("jobs --format json is an array");
    for record in records {
        schemas.check("job-record", "a record of `jobs --format json`", record);
    }
    let record = |id: &str| {
        records
            .iter()
            .find(|r| r["job_id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {}", jobs.describe()))
    };
    let cli1 = record("cli1");
    assert_eq!(cli1["status"], "completed", "{}", short(cli1));
    assert_eq!(cli1["kind"], "train", "{}", short(cli1));
    assert_eq!(cli1["epochs_completed"], 2, "{}", short(cli1));
    assert_eq!(record("prep1")["status"], "completed");
    let table = user.run(&["jobs"], QUICK).success();
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("cli1 ") && l.contains("completed")),
        "{}",
        table.describe()
    );

    // --- models -------------------------------------------------------------------------------
    let models = user.run(&["models", "--format", "json"], QUICK).success();
    let manifests = models.json();
    let manifest = manifests
        .as_array()
        .expect("models --format json is an array")
        .iter()
        .find(|m| m["model_id"] == "cli1-bow")
        .unwrap_or_else(|| panic!("no model cli1-bow: {}", models.describe()))
        .clone();
    schemas.check("model-manifest", "manifest of cli1-bow", &manifest);
    assert_eq!(manifest["job_id"], "cli1", "{}", short(&manifest));

    // --- classify -----------------------------------------------------------------------------
    let text = sample_records("validation.jsonl")[0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let classify = user
        .run(
            &["classify", "--model", "cli1-bow", &text, "--format", "json"],
            QUICK,
        )
        .success();
    let reply = classify.json();
    schemas.check("classify-reply", "classify --format json", &reply);
    let predictions = reply["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), 1, "{}", short(&reply));
    let label = predictions[0]["label"].as_str().unwrap_or_default();
    assert!(
        ["civil", "criminal"].contains(&label),
        "{}",
        classify.describe()
    );
    let unknown = user
        .run(&["classify", "--model", "no-such-model", "متن"], QUICK)
        .expect_code(1);
    assert!(
        unknown.stderr.contains("model_not_found"),
        "{}",
        unknown.describe()
    );

    // --- submit evaluate with flags (the file is uploaded already) ----------------------------
    let evaluate = user
        .run(
            &[
                "submit",
                "evaluate",
                "--model-id",
                "cli1-bow",
                "--data",
                "data/sample/validation.jsonl",
                "--job-id",
                "eval1",
                "--watch",
            ],
            JOB,
        )
        .success();
    assert!(
        evaluate
            .stderr
            .contains("data/sample/validation.jsonl is already uploaded"),
        "{}",
        evaluate.describe()
    );
    assert!(
        evaluate.stdout.contains("job eval1 completed")
            && evaluate.stdout.contains("model cli1-bow on 40 examples")
            && evaluate.stdout.contains("macro-F1"),
        "{}",
        evaluate.describe()
    );

    // --- watch replays a finished job ---------------------------------------------------------
    let watch = user.run(&["watch", "cli1", "--json"], QUICK).success();
    let events = watch.json_lines();
    for event in &events {
        schemas.check("job-event", "a line of `watch cli1 --json`", event);
        assert_eq!(event["job_id"], "cli1", "{}", short(event));
    }
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(kinds.first(), Some(&"accepted"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"completed"), "{kinds:?}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "progress" && e["phase"] == "epoch" && e["epoch"] == 2),
        "no epoch-2 progress: {kinds:?}"
    );

    // --- cancel -------------------------------------------------------------------------------
    let finished = user.run(&["cancel", "cli1"], QUICK).success();
    assert!(
        finished.stdout.contains("cli1: already finished"),
        "{}",
        finished.describe()
    );
    // A running service answers for a job nobody runs: the cancel is recorded (should the job
    // come later) and the command succeeds. (Without any service it is `no such job`, exit 1:
    // see `watch_follows_a_failing_job_to_exit_1`.)
    let unknown = user.run(&["cancel", "nosuchjob"], QUICK).success();
    assert!(
        unknown.stdout.contains("nosuchjob: recorded"),
        "{}",
        unknown.describe()
    );
    let after = user.run(&["jobs", "--format", "json"], QUICK).success();
    let after = after.json();
    let cli1 = after
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["job_id"] == "cli1")
        .expect("cli1 is still listed");
    assert_eq!(
        cli1["status"], "completed",
        "a cancel of a finished job changed it"
    );
    assert!(
        after
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["job_id"] != "nosuchjob"),
        "a cancel made a record: {}",
        short(&after)
    );

    // --- SIGTERM: everything stops ------------------------------------------------------------
    drop(client);
    drop(rt);
    // What must be gone afterwards is seen now: the replicas and the server.
    let running = processes_under(&user.dir);
    for (instance, pid) in &pids {
        assert!(
            running.iter().any(|(p, _)| p == pid),
            "{instance} (pid {pid}) is not among {running:?}"
        );
    }
    assert!(
        running.iter().any(|(_, cmd)| cmd.contains("nats-server")),
        "no nats-server among {running:?}"
    );
    let (status, took) = up.terminate(STOP);
    assert!(
        status.success(),
        "lexmesh up exited with {status}\n{}",
        up.logs()
    );
    eprintln!("lexmesh up stopped {took:?} after SIGTERM");
    for (instance, pid) in &pids {
        assert!(
            !alive(*pid),
            "{instance} (pid {pid}) is still running\n{}",
            up.logs()
        );
    }
    let left = processes_under(&user.dir);
    assert!(left.is_empty(), "left running: {left:?}\n{}", up.logs());
    let port = user.url.rsplit_once(':').unwrap().1;
    assert!(
        TcpStream::connect(format!("127.0.0.1:{port}")).is_err(),
        "something still listens at {}",
        user.url
    );
    let stderr = std::fs::read_to_string(&up.err).unwrap_or_default();
    assert!(stderr.contains("stopped nats-server"), "{}", up.logs());
}

// ---------------------------------------------------------------------------------------------
// 2. Errors a user meets without a mesh
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_input_fails_at_once_without_a_mesh() {
    let tmp = tempfile::tempdir().expect("temporary folder");
    let user = User::new(tmp.path(), dead_url());
    let quick = Duration::from_secs(30);

    // A malformed job on stdin: the typed error, before any connection.
    let cases: [(&str, &[u8], &[&str]); 4] = [
        ("not JSON", b"{\"job_id\": ", &["invalid_json"]),
        (
            "zero epochs",
            br#"{"job_id":"bad1","dataset":{"object":{"key":"uploads/a.jsonl"}},"settings":{"epochs":0}}"#,
            &["invalid_value", "/settings/epochs"],
        ),
        (
            "unknown field",
            br#"{"job_id":"bad2","dataset":{"object":{"key":"uploads/a.jsonl"}},"colour":"red"}"#,
            &["invalid_message", "colour"],
        ),
        (
            "empty inline dataset",
            br#"{"job_id":"bad3","dataset":{"inline":{"train":[]}}}"#,
            &["invalid_value", "/dataset/inline/train", "at least 1 item"],
        ),
    ];
    for (what, job, wanted) in cases {
        let ran = user
            .run_with_input(&["submit", "train", "--json", "-"], Some(job), quick)
            .expect_code(1);
        assert!(
            ran.stderr.contains("stdin is not a valid train job"),
            "{what}: {}",
            ran.describe()
        );
        for word in wanted {
            assert!(
                ran.stderr.contains(word),
                "{what}: no `{word}` in {}",
                ran.describe()
            );
        }
        assert!(
            !ran.stderr.contains(&user.url),
            "{what}: it tried to connect: {}",
            ran.describe()
        );
    }

    // A data file that is not there: named, and no connection tried.
    let missing = user
        .run(&["submit", "train", "--data", "missing.jsonl"], quick)
        .expect_code(1);
    assert!(
        missing.stderr.contains("missing.jsonl"),
        "{}",
        missing.describe()
    );
    assert!(
        !missing.stderr.contains(&user.url),
        "it connected before checking the file: {}",
        missing.describe()
    );

    // A replica count for no service.
    let mut bogus = user.command(&["up", "--replicas", "bogus=2", "--data-dir", "nats"]);
    bogus
        .env("LEXMESH_NATS_SERVER", user.dir.join("no-nats-server"))
        .env("LEXMESH_LOG", "info");
    let bogus = run(bogus, "lexmesh up --replicas bogus=2", None, quick).expect_code(1);
    assert!(
        bogus.stderr.contains("unknown service `bogus`") && bogus.stderr.contains("trainer"),
        "{}",
        bogus.describe()
    );
    assert!(
        !user.dir.join("nats").exists(),
        "it started a server: {}",
        bogus.describe()
    );

    // Nothing at NATS_URL: `jobs` says where it looked, at once.
    let started = Instant::now();
    let jobs = user.run(&["jobs"], quick).expect_code(1);
    assert!(jobs.stderr.contains(&user.url), "{}", jobs.describe());
    assert!(jobs.stderr.contains("lexmesh up"), "{}", jobs.describe());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "jobs took {:?} to fail",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A job that fails
// ---------------------------------------------------------------------------------------------

#[test]
fn watch_follows_a_failing_job_to_exit_1() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut mesh = rt.block_on(TestMesh::start(LEXMESH));
    let user = User::new(mesh.dir(), mesh.server.url());

    // No service runs yet: nobody answers a cancel, and there is no such job.
    let nobody = user.run(&["cancel", "nosuchjob"], QUICK).expect_code(1);
    assert!(
        nobody.stderr.contains("no such job nosuchjob"),
        "{}",
        nobody.describe()
    );

    rt.block_on(async {
        mesh.start_service("preprocessor", "preprocessor-a", &[])
            .await;
        mesh.start_service("trainer", "trainer-a", &[]).await;
    });

    let civil_only: Vec<Value> = sample_records("train.jsonl")
        .into_iter()
        .filter(|r| r["label"] == "civil")
        .take(24)
        .collect();
    let job = json!({
        "job_id": "onecls",
        "dataset": inline(civil_only, None),
        "settings": small_settings(1),
    });
    let file = user.write("onecls.json", job.to_string().as_bytes());
    let submit = user
        .run(&["submit", "train", "--json", &file], QUICK)
        .success();
    assert_eq!(submit.stdout.trim(), "onecls", "{}", submit.describe());

    let watch = user.run(&["watch", "onecls", "--json"], JOB).expect_code(1);
    let events = watch.json_lines();
    for event in &events {
        mesh.schemas
            .check("job-event", "a line of `watch onecls --json`", event);
    }
    let last = events
        .last()
        .unwrap_or_else(|| panic!("no events: {}", watch.describe()));
    assert_eq!(last["event"], "failed", "{}", watch.describe());
    assert_eq!(last["code"], "invalid_dataset", "{}", watch.describe());
    assert_eq!(last["retrying"], false, "{}", watch.describe());

    // The record says the same.
    let jobs = user.run(&["jobs", "--format", "json"], QUICK).success();
    let records = jobs.json();
    let record = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["job_id"] == "onecls")
        .unwrap_or_else(|| panic!("no onecls: {}", jobs.describe()));
    assert_eq!(record["status"], "failed", "{}", short(record));
    assert_eq!(
        record["error"]["code"],
        "invalid_dataset",
        "{}",
        short(record)
    );

    // Submitting and following in one go says the same, with the JSON lines on stdout.
    let again = json!({
        "job_id": "onecls2",
        "dataset": job["dataset"],
        "settings": small_settings(1),
    });
    let file = user.write("onecls2.json", again.to_string().as_bytes());
    let follow = user
        .run(
            &[
                "submit",
                "train",
                "--json",
                &file,
                "--watch",
                "--json-events",
            ],
            JOB,
        )
        .expect_code(1);
    let events = follow.json_lines();
    let last = events
        .last()
        .unwrap_or_else(|| panic!("no events: {}", follow.describe()));
    assert_eq!(
        (&last["event"], &last["code"]),
        (&json!("failed"), &json!("invalid_dataset")),
        "{}",
        follow.describe()
    );
    drop(mesh);
}

// ---------------------------------------------------------------------------------------------
// 4. `up --auth`: the services' user and the publishers' user
// ---------------------------------------------------------------------------------------------

#[test]
fn up_with_auth_runs_the_services_as_their_user_and_lets_a_publisher_only_submit_and_follow() {
    let server_binary = nats_server::locate(ServerFlavor::Current)
        .expect("a nats-server 2.10+ (scripts/setup-nats)");
    let tmp = tempfile::Builder::new()
        .prefix("lexmesh-cli-auth-")
        .tempdir()
        .expect("temporary folder");
    let user = User::new(tmp.path(), dead_url());
    let data_dir = user.dir.join("nats");
    let mut up = Up::start(
        &user,
        &[
            "up",
            "--auth",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--replicas",
            "evaluator=0,health=0,metrics=0",
        ],
        &[("LEXMESH_NATS_SERVER", server_binary.as_path())],
    );
    let users = up.wait_line("the users it made", MESH_READY, |l| l.starts_with("users:"));
    let services_config = data_dir.join("users/services.toml");
    let publisher_file = data_dir.join("users/publisher.url");
    assert!(
        users.contains(&services_config.display().to_string())
            && users.contains(&publisher_file.display().to_string()),
        "{users}"
    );
    let publisher_url = std::fs::read_to_string(&publisher_file)
        .expect("publisher.url")
        .trim()
        .to_string();
    assert!(
        publisher_url.starts_with("nats://publisher:"),
        "{publisher_url}"
    );

    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    // Without credentials the server lets nobody in.
    let anonymous = rt.block_on(
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(&user.url),
    );
    let refused = anonymous
        .map(|_| ())
        .expect_err("an anonymous client is refused");
    assert!(
        refused.to_string().to_lowercase().contains("authorization"),
        "{refused}"
    );

    // The publisher submits a job (the services, as their own user, run it) and follows it.
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = errors.clone();
    // async-nats reads no credentials from a URL (Go, Python and JavaScript clients do).
    let (credentials, address) = publisher_url
        .strip_prefix("nats://")
        .and_then(|rest| rest.rsplit_once('@'))
        .expect("nats://user:password@host:port");
    let (name, password) = credentials.split_once(':').expect("user:password");
    assert_eq!(name, "publisher");
    let publisher = rt
        .block_on(
            async_nats::ConnectOptions::with_user_and_password(name.into(), password.into())
                .event_callback(move |event| {
                    let seen = seen.clone();
                    async move {
                        if let async_nats::Event::ServerError(e) = event {
                            seen.lock().unwrap().push(e.to_string());
                        }
                    }
                })
                .connect(format!("nats://{address}")),
        )
        .expect("the publisher connects with the credentials up wrote");
    // A password that is not the publisher's is refused.
    let wrong = rt.block_on(
        async_nats::ConnectOptions::with_user_and_password(name.into(), format!("x{password}"))
            .connection_timeout(Duration::from_secs(5))
            .connect(format!("nats://{address}")),
    );
    assert!(wrong.is_err(), "a wrong password is let in");
    let mut settings = small_settings(2);
    settings["patience"] = json!(0);
    let job = json!({
        "job_id": "auth-1",
        "model_id": "auth-model",
        "dataset": inline(
            sample_records("train.jsonl"),
            Some(sample_records("validation.jsonl")),
        ),
        "settings": settings,
    });
    let events = rt.block_on(async {
        let mut events = publisher
            .subscribe("lexmesh.events.auth-1.>")
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        let js = async_nats::jetstream::new(publisher.clone());
        // The services create the jobs stream as they start: until then there is none.
        let deadline = Instant::now() + MESH_READY;
        loop {
            let ack = js
                .publish(
                    "lexmesh.jobs.train",
                    serde_json::to_vec(&job).unwrap().into(),
                )
                .await
                .expect("publish the job")
                .await;
            match ack {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    assert!(!e.to_string().to_lowercase().contains("permission"), "{e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("the jobs stream does not take the publisher's job: {e}"),
            }
        }
        let mut seen = Vec::new();
        tokio::time::timeout(JOB, async {
            while let Some(message) = events.next().await {
                let event: Value = serde_json::from_slice(&message.payload).unwrap();
                // A failed attempt that will be retried is not the end: the trainer may take the
                // job before the preprocessor answers (no responders) and run it again.
                let done = is_final(&event);
                seen.push(event);
                if done {
                    break;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no final event of auth-1: {seen:?}\n{}", up.logs()));
        seen
    });
    let last = events.last().unwrap();
    assert_eq!(last["event"], "completed", "{events:?}\n{}", up.logs());

    // It may not pretend to be a service: its heartbeat is refused by the server.
    rt.block_on(async {
        publisher
            .publish("lexmesh.heartbeat.trainer.fake", "{}".into())
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !errors
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.to_lowercase().contains("permissions violation"))
        {
            assert!(
                Instant::now() < deadline,
                "no permissions violation for a publisher's heartbeat"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    // The command line, with the services' configuration up wrote, sees the job completed;
    // without it, it is refused.
    let services_config = services_config.to_str().unwrap();
    let jobs = user
        .run(
            &["jobs", "--config", services_config, "--format", "json"],
            QUICK,
        )
        .success();
    let listed = jobs.json();
    let record = listed
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["job_id"] == "auth-1"))
        .unwrap_or_else(|| panic!("auth-1 is not listed: {}", jobs.describe()));
    assert_eq!(record["status"], "completed", "{record}");
    let without = user.run(&["jobs"], QUICK);
    assert_ne!(without.code, Some(0), "{}", without.describe());
    assert!(
        without.stderr.to_lowercase().contains("authorization"),
        "{}",
        without.describe()
    );

    // The same login written in the URL instead (NATS_URL=nats://lexmesh:<password>@host:port,
    // no --config): lexmesh reads the credentials from it (async-nats alone sends none).
    let services_toml: toml::Table = std::fs::read_to_string(services_config)
        .expect("services.toml")
        .parse()
        .expect("services.toml is TOML");
    let services_password = services_toml["nats"]["password"]
        .as_str()
        .expect("password");
    let login_url = |password: &str| format!("nats://lexmesh:{password}@{address}");
    let jobs = User::new(&user.dir, login_url(services_password))
        .run(&["jobs", "--format", "json"], QUICK)
        .success();
    assert!(
        jobs.json()
            .as_array()
            .is_some_and(|jobs| jobs.iter().any(|j| j["job_id"] == "auth-1")),
        "{}",
        jobs.describe()
    );
    // A wrong password in the URL is refused, and the message shows the URL without it.
    let refused = User::new(&user.dir, login_url("wr0ngpassw0rd")).run(&["jobs"], QUICK);
    assert_ne!(refused.code, Some(0), "{}", refused.describe());
    assert!(
        refused.stderr.contains("lexmesh:***@")
            && refused.stderr.contains("password of nats.url")
            && !refused.stderr.contains("wr0ngpassw0rd"),
        "{}",
        refused.describe()
    );

    let (status, _) = up.terminate(STOP);
    assert!(status.success(), "{status:?}\n{}", up.logs());
}
