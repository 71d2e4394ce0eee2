//! The sample data of the repository (`data/sample`), small settings and job builders.
//!
//! Paths are found from this crate's folder (`services/testkit`, two levels below the
//! repository root), never from the current directory: a test may run anywhere.
#![allow(
    clippy::expect_used,
    reason = "a harness fails the test with a message when the repository's sample is broken"
)]

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The root of the repository (the folder that holds `schemas/`, `data/` and `Cargo.lock`).
///
/// # Panics
///
/// Never for this crate's own layout (`services/testkit`).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the test kit lives in services/testkit of the repository")
}

/// A file of the sample shipped in the repository, `data/sample/<name>`.
pub fn sample_path(name: &str) -> PathBuf {
    repo_root().join("data/sample").join(name)
}

/// Records of a sample file (`train.jsonl`, `validation.jsonl`) as `{"text","label"}` (the
/// sample's `id` field is dropped: job records allow only text and label).
///
/// # Panics
///
/// When the file cannot be read or a line is not JSON.
pub fn sample_records(file: &str) -> Vec<Value> {
    let path = sample_path(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("sample line is JSON");
            json!({"text": v["text"], "label": v["label"]})
        })
        .collect()
}

/// Every `step`-th record of a sample file (both classes survive steps up to 4).
///
/// # Panics
///
/// As [`sample_records`].
pub fn sample_subset(file: &str, step: usize) -> Vec<Value> {
    sample_records(file).into_iter().step_by(step).collect()
}

/// Small, fast training settings: bow, 2000 buckets, 32 dimensions, `epochs` epochs.
pub fn small_settings(epochs: u32) -> Value {
    json!({
        "model": "bow",
        "epochs": epochs,
        "batch_size": 32,
        "learning_rate": 0.01,
        "seed": 1,
        "patience": 3,
        "char_buckets": 2000,
        "embedding_dim": 32,
    })
}

/// An inline dataset.
pub fn inline(train: Vec<Value>, validation: Option<Vec<Value>>) -> Value {
    match validation {
        Some(validation) => json!({"inline": {"train": train, "validation": validation}}),
        None => json!({"inline": {"train": train}}),
    }
}

/// A train job on the whole sample (128 train, 40 validation records).
///
/// # Panics
///
/// As [`sample_records`].
pub fn sample_train_job(job_id: &str, model_id: &str, settings: Value) -> Value {
    json!({
        "job_id": job_id,
        "model_id": model_id,
        "dataset": inline(
            sample_records("train.jsonl"),
            Some(sample_records("validation.jsonl")),
        ),
        "settings": settings,
    })
}

/// A train job on the whole sample that runs all `epochs` (no early stop), model
/// `model-<job_id>`: long enough for a fault to land mid-job.
///
/// # Panics
///
/// As [`sample_records`].
pub fn no_early_stop_job(job_id: &str, epochs: u32) -> Value {
    let mut settings = small_settings(epochs);
    settings["patience"] = json!(0);
    let mut job = sample_train_job(job_id, &format!("model-{job_id}"), settings);
    job["job_id"] = json!(job_id);
    job
}

/// Writes a small bag-model configuration for `lexmesh train` that trains in seconds
/// (`<dir>/small.toml`); returns its path.
///
/// # Panics
///
/// When the file cannot be written.
pub fn small_bow_config(dir: &Path) -> PathBuf {
    let path = dir.join("small.toml");
    std::fs::write(
        &path,
        "[model]\nkind = \"bow\"\nembedding_dim = 32\n\n[features]\nchar_buckets = 20000\nmax_length = 2048\n\n[training]\nthreads = 2\n",
    )
    .expect("write config");
    path
}

/// Reads a JSON file.
///
/// # Panics
///
/// When the file cannot be read or is not JSON.
pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("valid json")
}
