//! Reproducibility and checkpoints: the same seed gives the same metrics; a run killed with
//! kill -9 in the middle of an epoch and resumed with `--resume` starts at the epoch after its
//! last checkpoint, trains only the remaining epochs and ends exactly like the uninterrupted
//! run (the default linear bag and one with a hidden layer); Ctrl-C stops cleanly after a batch
//! and leaves the last checkpoint.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use lexmesh_testkit::cli::{run, text};
use lexmesh_testkit::{read_json, sample_path, small_bow_config};

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

const EPOCHS: &str = "4";

/// The model variants the resume test runs: the default (linear bag, dropout on its inputs)
/// and one with a hidden layer (dropout on the pooled bag and the hidden layer).
const VARIANTS: [&[&str]; 2] = [&[], &["--hidden", "16"]];

fn train_args(out: &Path, config: &Path) -> Vec<std::ffi::OsString> {
    variant_args(out, config, &["--hidden", "16"])
}

fn variant_args(out: &Path, config: &Path, variant: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = [
        "train",
        "--epochs",
        EPOCHS,
        "--patience",
        "0",
        "--batch-size",
        "16",
    ]
    .iter()
    .map(Into::into)
    .collect();
    args.extend(["--out".into(), out.into(), "--config".into(), config.into()]);
    args.extend(["--data".into(), sample_path("train.jsonl").into()]);
    args.extend([
        "--validation".into(),
        sample_path("validation.jsonl").into(),
    ]);
    // Dropout exercises the per-epoch RNG.
    args.extend(["--dropout".into(), "0.3".into()]);
    args.extend(variant.iter().map(Into::into));
    args
}

fn full_run(dir: &Path, name: &str, variant: &[&str]) -> serde_json::Value {
    let out = dir.join(name);
    let o = run(Command::new(LEXMESH)
        .args(variant_args(&out, &small_bow_config(dir), variant))
        .arg("--quiet"));
    assert!(o.status.success(), "{:?}", text(&o));
    read_json(&out.join("history.json"))
}

/// Starts a JSON-progress run and returns once an `epoch` event for `epoch` was printed.
fn run_until_epoch(out: &Path, config: &Path, epoch: u64) -> Child {
    run_until(out, config, &["--hidden", "16"], |e| {
        e["event"] == "epoch" && e["epoch"] == epoch
    })
}

/// Starts a JSON-progress run and returns once it printed an event that `stop` accepts.
fn run_until(
    out: &Path,
    config: &Path,
    variant: &[&str],
    stop: impl Fn(&serde_json::Value) -> bool,
) -> Child {
    let mut child = Command::new(LEXMESH)
        .args(variant_args(out, config, variant))
        .arg("--json-progress")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON event");
        if stop(&event) {
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the run ended before the awaited event");
}

fn same_history(a: &serde_json::Value, b: &serde_json::Value) {
    let (a, b) = (a.as_array().expect("array"), b.as_array().expect("array"));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        for key in [
            "loss",
            "accuracy",
            "validation_loss",
            "validation_accuracy",
            "validation_macro_f1",
        ] {
            let (p, q) = (
                x[key].as_f64().expect("number"),
                y[key].as_f64().expect("number"),
            );
            assert!(
                (p - q).abs() <= 1e-6,
                "epoch {}: {key} {p} vs {q}",
                x["epoch"]
            );
        }
    }
}

#[test]
fn same_seed_same_metrics_and_killed_run_resumes_to_the_same_result() {
    for (n, variant) in VARIANTS.iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = full_run(dir.path(), "a", variant);
        let second = full_run(dir.path(), "b", variant);
        same_history(&first, &second);

        // kill -9 in the middle of epoch 3 (after its first batch): the checkpoint of epoch 2
        // is written, or still being written off the compute thread (then epoch 1's is the
        // latest); either way a whole one is there.
        let out = dir.path().join("killed");
        let config = small_bow_config(dir.path());
        let mut child = run_until(&out, &config, variant, |e| {
            e["event"] == "batch" && e["epoch"] == 3
        });
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(
            !out.join("model.bpk").exists(),
            "variant {n}: the killed run did not finish"
        );
        let latest =
            std::fs::read_to_string(out.join("checkpoint/latest")).expect("checkpoint pointer");
        let checkpointed: u64 = latest
            .trim()
            .strip_prefix("epoch-")
            .and_then(|e| e.parse().ok())
            .unwrap_or_else(|| panic!("pointer `{latest}`"));
        assert!(
            (1..=2).contains(&checkpointed),
            "variant {n}: latest checkpoint {latest}"
        );

        let o = run(Command::new(LEXMESH)
            .args(["train", "--json-progress", "--resume"])
            .arg(&out));
        assert!(o.status.success(), "{:?}", text(&o));
        let events: Vec<serde_json::Value> = text(&o)
            .0
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON event"))
            .collect();
        let started = events
            .iter()
            .find(|e| e["event"] == "started")
            .expect("a started event");
        assert_eq!(
            started["start_epoch"].as_u64(),
            Some(checkpointed + 1),
            "variant {n}: the resumed process starts after its checkpoint"
        );
        let trained: Vec<u64> = events
            .iter()
            .filter(|e| e["event"] == "epoch")
            .map(|e| e["epoch"].as_u64().expect("epoch"))
            .collect();
        let remaining: Vec<u64> = (checkpointed + 1..=EPOCHS.parse().unwrap()).collect();
        assert_eq!(
            trained, remaining,
            "variant {n}: only the remaining epochs ran"
        );
        assert!(
            events
                .iter()
                .filter(|e| e["event"] == "batch")
                .all(|e| e["epoch"].as_u64().unwrap() > checkpointed),
            "variant {n}: no batch of a checkpointed epoch ran again"
        );

        let resumed = read_json(&out.join("history.json"));
        same_history(&first, &resumed);
        assert_eq!(
            read_json(&out.join("metrics.json"))["validation"],
            read_json(&dir.path().join("a/metrics.json"))["validation"],
            "variant {n}"
        );
    }
}

#[test]
fn interrupt_stops_cleanly_and_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("interrupted");
    let child = run_until_epoch(&out, &small_bow_config(dir.path()), 1);
    let pid = child.id().to_string();
    let kill = run(std::process::Command::new("kill").args(["-INT", &pid]));
    assert!(kill.status.success());
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(130), "{:?}", text(&o));
    let latest =
        std::fs::read_to_string(out.join("checkpoint/latest")).expect("checkpoint pointer");
    assert!(latest.starts_with("epoch-"), "{latest}");
    // Training again into the same folder without --resume is refused, not silently mixed.
    let again = run(Command::new(LEXMESH)
        .args(train_args(&out, &small_bow_config(dir.path())))
        .arg("--quiet"));
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).1.contains("--resume"), "{:?}", text(&again));
}

#[test]
fn resume_refuses_changed_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("r");
    let o = run(Command::new(LEXMESH)
        .args(train_args(&out, &small_bow_config(dir.path())))
        .args(["--quiet"]));
    assert!(o.status.success(), "{:?}", text(&o));
    // Point run.json at a different training file.
    let copy = dir.path().join("train.jsonl");
    let mut data = std::fs::read_to_string(sample_path("train.jsonl")).expect("read");
    data.push_str("{\"text\":\"متن تازه\",\"label\":\"civil\"}\n");
    std::fs::write(&copy, data).expect("write");
    let mut inputs = read_json(&out.join("run.json"));
    inputs["data"] = serde_json::json!(copy);
    std::fs::write(out.join("run.json"), inputs.to_string()).expect("write");
    let o = run(Command::new(LEXMESH)
        .args(["train", "--quiet", "--resume"])
        .arg(&out));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("other settings or data"),
        "{:?}",
        text(&o)
    );
}
