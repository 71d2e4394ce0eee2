//! Every bad-input case of the CLI: non-zero exit and a message naming the file and line.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lexmesh_testkit::cli::{run, text};
use lexmesh_testkit::{sample_path, small_bow_config};

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write");
    path
}

/// Trains one tiny model shared by the evaluation cases.
fn trained_model() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("model");
        let config = small_bow_config(dir.path());
        let o = run(Command::new(LEXMESH)
            .args(["train", "--quiet", "--epochs", "1", "--out"])
            .arg(&out)
            .arg("--config")
            .arg(&config)
            .arg("--data")
            .arg(sample_path("train.jsonl"))
            .arg("--validation")
            .arg(sample_path("validation.jsonl")));
        assert!(o.status.success(), "{:?}", text(&o));
        (dir, out)
    });
    path
}

/// Runs `lexmesh train` on one file and returns (exit code, stderr).
fn train_on(file: &Path) -> (Option<i32>, String) {
    let out = file.parent().expect("parent").join("out");
    let o = run(Command::new(LEXMESH)
        .args(["train", "--quiet", "--epochs", "1", "--data"])
        .arg(file)
        .arg("--out")
        .arg(out));
    (o.status.code(), text(&o).1)
}

#[test]
fn invalid_utf8_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = write(
        dir.path(),
        "bad.jsonl",
        b"{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"\xff\",\"label\":\"y\"}\n",
    );
    let (code, err) = train_on(&f);
    assert_eq!(code, Some(1));
    assert!(err.contains("bad.jsonl:2: not valid UTF-8"), "{err}");
}

#[test]
fn broken_json_is_reported_with_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = write(
        dir.path(),
        "bad.jsonl",
        b"{\"text\":\"a\",\"label\":\"x\"}\n{\"text\": \"b\",\n",
    );
    let (code, err) = train_on(&f);
    assert_eq!(code, Some(1));
    assert!(err.contains("bad.jsonl:2: invalid JSON"), "{err}");
}

#[test]
fn missing_text_or_label_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = write(
        dir.path(),
        "a.jsonl",
        b"{\"text\":\"a\",\"label\":\"x\"}\n{\"label\":\"y\"}\n",
    );
    let (code, err) = train_on(&f);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("a.jsonl:2: missing or empty field `text`"),
        "{err}"
    );
    let f = write(dir.path(), "b.jsonl", b"{\"text\":\"a\"}\n");
    let (code, err) = train_on(&f);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("b.jsonl:1: missing or empty field `label`"),
        "{err}"
    );
    let f = write(dir.path(), "c.csv", b"body,label\nx,y\n");
    let (code, err) = train_on(&f);
    assert_eq!(code, Some(1));
    assert!(err.contains("c.csv: header has no column `text`"), "{err}");
}

#[test]
fn empty_file_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = write(dir.path(), "empty.jsonl", b"");
    let (code, err) = train_on(&f);
    assert_eq!(code, Some(1));
    assert!(err.contains("empty.jsonl: no records"), "{err}");
}

#[test]
fn single_class_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = write(
        dir.path(),
        "one.jsonl",
        "{\"text\":\"حکم\",\"label\":\"civil\"}\n{\"text\":\"دعوی\",\"label\":\"civil\"}\n"
            .as_bytes(),
    );
    let (code, err) = train_on(&f);
    assert_eq!(code, Some(1));
    assert!(err.contains("every record has the label `civil`"), "{err}");
}

#[test]
fn missing_file_and_unknown_format_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, err) = train_on(&dir.path().join("nope.jsonl"));
    assert_eq!(code, Some(1));
    assert!(err.contains("nope.jsonl: cannot read"), "{err}");
    let f = write(dir.path(), "data.txt", b"x");
    let (code, err) = train_on(&f);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown format"), "{err}");
}

#[test]
fn bad_flags_are_usage_errors() {
    let o = run(Command::new(LEXMESH).args([
        "train", "--data", "x.jsonl", "--out", "o", "--model", "lstm",
    ]));
    assert_eq!(o.status.code(), Some(2));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write(dir.path(), "c.toml", b"[training]\nepoch = 3\n");
    let o = run(Command::new(LEXMESH)
        .args(["train", "--out"])
        .arg(dir.path().join("o"))
        .arg("--config")
        .arg(&cfg)
        .arg("--data")
        .arg(sample_path("train.jsonl")));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("unknown field `epoch`"),
        "{:?}",
        text(&o)
    );
    let o = run(Command::new(LEXMESH)
        .args(["train", "--learning-rate", "NaN", "--out"])
        .arg(dir.path().join("o2"))
        .arg("--data")
        .arg(sample_path("train.jsonl")));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("learning_rate"), "{:?}", text(&o));
}

#[test]
fn unknown_label_at_evaluation_is_reported() {
    let model = trained_model();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = write(
        dir.path(),
        "test.jsonl",
        "{\"text\":\"دادگاه\",\"label\":\"civil\"}\n{\"text\":\"شورا\",\"label\":\"administrative\"}\n".as_bytes(),
    );
    let o = run(Command::new(LEXMESH)
        .args(["evaluate", "--model"])
        .arg(model)
        .arg("--data")
        .arg(&f));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o).1;
    assert!(
        err.contains("test.jsonl:2: unknown label `administrative`"),
        "{err}"
    );
    assert!(err.contains("civil, criminal"), "{err}");
}

#[test]
fn evaluate_json_has_the_documented_keys() {
    let model = trained_model();
    let o = run(Command::new(LEXMESH)
        .args(["evaluate", "--format", "json", "--model"])
        .arg(model)
        .arg("--data")
        .arg(sample_path("validation.jsonl")));
    assert!(o.status.success(), "{:?}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    for key in [
        "accuracy",
        "macro_f1",
        "per_class",
        "confusion_matrix",
        "labels",
        "count",
    ] {
        assert!(report.get(key).is_some(), "missing {key}: {report}");
    }
    assert_eq!(report["count"], 40);
    assert_eq!(report["labels"], serde_json::json!(["civil", "criminal"]));
}

#[test]
fn predict_from_arguments_and_stdin() {
    use std::io::Write;
    let model = trained_model();
    let o = run(Command::new(LEXMESH)
        .args(["predict", "--model"])
        .arg(model)
        .arg("متهم به حبس تعزیری محکوم می شود")
        .arg("خواهان دادخواست مطالبه وجه تقدیم کرده است"));
    assert!(o.status.success(), "{:?}", text(&o));
    let lines: Vec<serde_json::Value> = text(&o)
        .0
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        let sum: f64 = line["probabilities"]
            .as_object()
            .expect("probabilities")
            .values()
            .map(|v| v.as_f64().expect("number"))
            .sum();
        assert!((sum - 1.0).abs() < 1e-4, "{line}");
    }
    let mut child = Command::new(LEXMESH)
        .args(["predict", "--model"])
        .arg(model)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all("{\"text\":\"رای دادگاه\"}\n{\"text\": 3}\n".as_bytes())
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o)
            .1
            .contains("<stdin>:2: field `text` must be a string"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn missing_validation_file_makes_a_reported_stratified_split() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(Command::new(LEXMESH)
        .args(["train", "--json-progress", "--epochs", "1", "--out"])
        .arg(dir.path().join("m"))
        .arg("--config")
        .arg(small_bow_config(dir.path()))
        .arg("--data")
        .arg(sample_path("train.jsonl")));
    assert!(o.status.success(), "{:?}", text(&o));
    let first: serde_json::Value =
        serde_json::from_str(text(&o).0.lines().next().expect("a line")).expect("JSON");
    assert_eq!(first["event"], "split");
    // 96 civil / 32 criminal, 20 % of each held out.
    assert_eq!(
        first["split"]["per_label"]["civil"],
        serde_json::json!([77, 19])
    );
    assert_eq!(
        first["split"]["per_label"]["criminal"],
        serde_json::json!([26, 6])
    );
}
