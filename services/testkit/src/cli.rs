//! Running a command (the `lexmesh` command line) to completion and reading its output.
#![allow(
    clippy::expect_used,
    reason = "a harness fails the test with a message when the binary cannot run"
)]

use std::process::{Command, Output};

/// Runs a command to completion and returns its output.
///
/// # Panics
///
/// When the command cannot be started.
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
