//! Every model kind trains briefly on the shipped sample and beats the majority class on its
//! validation split (30 civil / 10 criminal: majority accuracy 0.75, macro-F1 0.4286).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::process::Command;

use lexmesh_testkit::cli::{run, text};
use lexmesh_testkit::{read_json, sample_path};

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

/// Trains one kind with small settings and returns the validation report.
fn train(kind: &str, extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join(kind);
    let o = run(Command::new(LEXMESH)
        .args([
            "train",
            "--quiet",
            "--threads",
            "2",
            "--model",
            kind,
            "--out",
        ])
        .arg(&out)
        .arg("--data")
        .arg(sample_path("train.jsonl"))
        .arg("--validation")
        .arg(sample_path("validation.jsonl"))
        .args(extra));
    assert!(o.status.success(), "{kind}: {:?}", text(&o));
    for file in [
        "config.json",
        "preprocessing.json",
        "labels.json",
        "model.bpk",
        "metrics.json",
        "history.json",
        "run.json",
    ] {
        assert!(out.join(file).exists(), "{kind}: {file} missing");
    }
    // The saved model reproduces the report through `evaluate`.
    let e = run(Command::new(LEXMESH)
        .args(["evaluate", "--format", "json", "--model"])
        .arg(&out)
        .arg("--data")
        .arg(sample_path("validation.jsonl")));
    assert!(e.status.success(), "{kind}: {:?}", text(&e));
    let evaluated: serde_json::Value = serde_json::from_slice(&e.stdout).expect("json");
    let metrics = read_json(&out.join("metrics.json"));
    assert_eq!(
        evaluated["confusion_matrix"], metrics["validation"]["confusion_matrix"],
        "{kind}"
    );
    metrics["validation"].clone()
}

fn assert_beats_majority(kind: &str, report: &serde_json::Value) {
    let accuracy = report["accuracy"].as_f64().expect("accuracy");
    let macro_f1 = report["macro_f1"].as_f64().expect("macro_f1");
    assert!(
        macro_f1 > 0.6,
        "{kind}: macro-F1 {macro_f1} does not beat the majority class (0.4286)"
    );
    assert!(
        accuracy >= 0.75,
        "{kind}: accuracy {accuracy} below the majority class (0.75)"
    );
}

#[test]
fn bow_beats_majority() {
    let r = train("bow", &["--epochs", "8", "--embedding-dim", "32"]);
    assert_beats_majority("bow", &r);
}

#[test]
fn cnn_beats_majority() {
    let r = train(
        "cnn",
        &[
            "--epochs",
            "6",
            "--max-length",
            "256",
            "--embedding-dim",
            "64",
        ],
    );
    assert_beats_majority("cnn", &r);
}

#[test]
fn bigru_beats_majority() {
    let r = train(
        "bigru",
        &[
            "--epochs",
            "6",
            "--max-length",
            "96",
            "--embedding-dim",
            "48",
            "--hidden",
            "32",
            "--learning-rate",
            "0.003",
        ],
    );
    assert_beats_majority("bigru", &r);
}

#[test]
fn transformer_beats_majority() {
    let r = train(
        "transformer",
        &[
            "--epochs",
            "8",
            "--max-length",
            "192",
            "--embedding-dim",
            "64",
            "--hidden",
            "128",
        ],
    );
    assert_beats_majority("transformer", &r);
}
