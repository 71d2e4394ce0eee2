//! Reproducibility and checkpoints: the same seed gives the same metrics; a run killed after an
//! epoch and resumed with `--resume` ends exactly like the uninterrupted run; Ctrl-C stops
//! cleanly after a batch and leaves the last checkpoint.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

use common::{json, lexmesh, run, sample, small_bow_config, text};

const EPOCHS: &str = "4";

fn train_args(out: &Path, config: &Path) -> Vec<std::ffi::OsString> {
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
    args.extend(["--data".into(), sample("train.jsonl").into()]);
    args.extend(["--validation".into(), sample("validation.jsonl").into()]);
    // Dropout exercises the per-epoch RNG.
    args.extend([
        "--dropout".into(),
        "0.3".into(),
        "--hidden".into(),
        "16".into(),
    ]);
    args
}

fn full_run(dir: &Path, name: &str) -> serde_json::Value {
    let out = dir.join(name);
    let o = run(lexmesh()
        .args(train_args(&out, &small_bow_config(dir)))
        .arg("--quiet"));
    assert!(o.status.success(), "{:?}", text(&o));
    json(&out.join("history.json"))
}

/// Starts a JSON-progress run and returns once an `epoch` event for `epoch` was printed.
fn run_until_epoch(out: &Path, config: &Path, epoch: u64) -> Child {
    let mut child = lexmesh()
        .args(train_args(out, config))
        .arg("--json-progress")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON event");
        if event["event"] == "epoch" && event["epoch"] == epoch {
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the run ended before epoch {epoch}");
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
    let dir = tempfile::tempdir().expect("tempdir");
    let first = full_run(dir.path(), "a");
    let second = full_run(dir.path(), "b");
    same_history(&first, &second);

    // Kill -9 after epoch 2's checkpoint, in the middle of epoch 3.
    let out = dir.path().join("killed");
    let mut child = run_until_epoch(&out, &small_bow_config(dir.path()), 2);
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert!(
        !out.join("model.bpk").exists(),
        "the killed run did not finish"
    );
    let o = run(lexmesh().args(["train", "--quiet", "--resume"]).arg(&out));
    assert!(o.status.success(), "{:?}", text(&o));
    let resumed = json(&out.join("history.json"));
    same_history(&first, &resumed);
    assert_eq!(
        json(&out.join("metrics.json"))["validation"],
        json(&dir.path().join("a/metrics.json"))["validation"]
    );
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
    let again = run(lexmesh()
        .args(train_args(&out, &small_bow_config(dir.path())))
        .arg("--quiet"));
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).1.contains("--resume"), "{:?}", text(&again));
}

#[test]
fn resume_refuses_changed_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("r");
    let o = run(lexmesh()
        .args(train_args(&out, &small_bow_config(dir.path())))
        .args(["--quiet"]));
    assert!(o.status.success(), "{:?}", text(&o));
    // Point run.json at a different training file.
    let copy = dir.path().join("train.jsonl");
    let mut data = std::fs::read_to_string(sample("train.jsonl")).expect("read");
    data.push_str("{\"text\":\"متن تازه\",\"label\":\"civil\"}\n");
    std::fs::write(&copy, data).expect("write");
    let mut inputs = json(&out.join("run.json"));
    inputs["data"] = serde_json::json!(copy);
    std::fs::write(out.join("run.json"), inputs.to_string()).expect("write");
    let o = run(lexmesh().args(["train", "--quiet", "--resume"]).arg(&out));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("other settings or data"),
        "{:?}",
        text(&o)
    );
}
