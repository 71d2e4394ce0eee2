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

/// What a finished command said, for assertions that show all of it when they fail.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The command as the messages name it (`lexmesh submit …`).
    pub what: String,
    /// Its exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Ran {
    /// The finished command `what` from its output.
    pub fn from_output(what: impl Into<String>, output: &Output) -> Self {
        let (stdout, stderr) = text(output);
        Self {
            what: what.into(),
            code: output.status.code(),
            stdout,
            stderr,
        }
    }

    /// The command, its exit code and both outputs, for a failure message.
    pub fn describe(&self) -> String {
        format!(
            "`{}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }

    /// Fails unless the command exited with `code`.
    ///
    /// # Panics
    ///
    /// When it exited otherwise.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "{}", self.describe());
        self
    }

    /// Fails unless the command exited 0.
    ///
    /// # Panics
    ///
    /// When it exited otherwise.
    pub fn success(self) -> Self {
        self.expect_code(0)
    }

    /// stdout as JSON (one document).
    ///
    /// # Panics
    ///
    /// When it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.describe()))
    }

    /// stdout as JSON lines.
    ///
    /// # Panics
    ///
    /// When a line is not JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("line {l:?} is not JSON ({e}): {}", self.describe()))
            })
            .collect()
    }
}
