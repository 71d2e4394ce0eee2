//! Helpers shared by the CLI tests: the built binary, the sample data, small configurations.
#![allow(dead_code, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `lexmesh` binary built for this test run.
pub fn lexmesh() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lexmesh"))
}

/// A file of the sample shipped in the repository.
pub fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/sample")
        .join(name)
}

/// Runs a command and returns its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the lexmesh binary runs")
}

/// stdout and stderr as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a small bag-model configuration that trains in seconds.
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
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("valid json")
}
