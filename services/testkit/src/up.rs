//! `lexmesh up`: the whole mesh as one process tree, its stdout and stderr in files.
#![allow(
    clippy::expect_used,
    reason = "a harness fails the test with a message when `lexmesh up` cannot run"
)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::process::ChildProcess;

/// How long [`UpProcess::stop`] waits for `up` to stop its replicas and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// `lexmesh up`, started by [`TestMesh::up`](crate::TestMesh::up); SIGKILLed on drop (its
/// replicas then stop by themselves), its stderr printed when the test is failing.
#[derive(Debug)]
pub struct UpProcess {
    process: ChildProcess,
    stdout: PathBuf,
}

impl UpProcess {
    /// Starts `command` (a `lexmesh up …`) with its stdout in `<dir>/up.stdout` and its stderr
    /// in `<dir>/up.stderr`.
    pub(crate) fn spawn(command: &mut Command, dir: &Path) -> Self {
        let stdout = dir.join("up.stdout");
        let stderr = dir.join("up.stderr");
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create up.stdout"))
            .stderr(File::create(&stderr).expect("create up.stderr"))
            .spawn()
            .expect("run lexmesh up");
        Self {
            process: ChildProcess::from_child("lexmesh up", child, stderr),
            stdout,
        }
    }

    /// The process id of `up` itself.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// What `up` printed on stdout so far (e.g. `started trainer-1 (pid N)` lines).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What `up` printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }

    /// The file `up`'s stderr goes to.
    pub fn stderr_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Waits (polling) for `up` to exit; None when it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout).await
    }

    /// Stops `up` with SIGTERM and fails unless it exits cleanly within 60 s.
    ///
    /// # Panics
    ///
    /// When it does not exit in time (it is then killed) or exits with an error.
    pub async fn stop(&mut self) {
        let status = self.process.stop(STOP_TIMEOUT).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "lexmesh up did not stop cleanly: {status:?}\n{}",
            self.stderr()
        );
    }
}
