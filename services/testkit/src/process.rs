//! Child processes of a test: their output in a log file, killed (SIGKILL) and reaped on drop,
//! and their log printed when the test is failing; signals by process id.
#![allow(
    clippy::expect_used,
    reason = "a harness fails the test with a message when a process cannot be handled"
)]

use std::fs::File;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::TestkitError;

/// A child process whose output goes to a log file; killed (SIGKILL) and reaped when dropped,
/// its log printed when the thread is panicking (the test is failing).
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    /// Starts `command` with stdin closed and stdout and stderr into `log` (created anew);
    /// `name` names it in messages.
    ///
    /// # Errors
    ///
    /// When the log file cannot be created or the process cannot be started.
    pub fn spawn(
        name: impl Into<String>,
        command: &mut Command,
        log: impl Into<PathBuf>,
    ) -> Result<Self, TestkitError> {
        let name = name.into();
        let log = log.into();
        let spawn_error = |source| TestkitError::Spawn {
            name: name.clone(),
            source,
        };
        let out = File::create(&log).map_err(spawn_error)?;
        let err = out.try_clone().map_err(spawn_error)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(spawn_error)?;
        Ok(Self { name, child, log })
    }

    /// Takes over a child that the caller started with its output where it wanted it; `log`
    /// is the file printed when the test fails (e.g. its stderr).
    pub fn from_child(name: impl Into<String>, child: Child, log: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            child,
            log: log.into(),
        }
    }

    /// The name given at the start, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit status, when it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits (polling) for the process to exit; None when it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM.
    ///
    /// # Panics
    ///
    /// When `kill` fails (e.g. the process was reaped already).
    pub fn terminate(&mut self) {
        send_signal("-TERM", self.child.id());
    }

    /// Sends `signal` (`-STOP`, `-CONT`, ...).
    ///
    /// # Panics
    ///
    /// When `kill` fails.
    pub fn signal(&self, signal: &str) {
        send_signal(signal, self.child.id());
    }

    /// Kills it with SIGKILL and waits for it: a crash, with no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it in order: SIGTERM, up to `timeout` for it to exit, then SIGKILL (said on
    /// stderr). Returns the exit status, None when it had to be killed.
    pub async fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exit_status() {
            return Some(status);
        }
        try_send_signal("-TERM", self.child.id());
        if let Some(status) = self.wait_exit(timeout).await {
            return Some(status);
        }
        eprintln!("{} did not stop within {timeout:?}; killing it", self.name);
        self.kill();
        None
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Waits until a line of the log gives `find` a value, and returns it: what a process says
    /// of itself once it knows it (e.g. the address the system gave it for port 0). Reads the
    /// log every 50 ms, at most `timeout`; `what` names the line in the failure message.
    ///
    /// # Panics
    ///
    /// When the process exits before such a line is written, or none is within `timeout`.
    pub async fn wait_log_line<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut find: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            // The exit status first: a line written just before the exit is in the log read
            // after it.
            let exited = self.exit_status();
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(found) = text.lines().find_map(&mut find) {
                return found;
            }
            if let Some(status) = exited {
                panic!(
                    "{} exited with {status} before its log said {what}",
                    self.name
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: its log did not say {what} within {timeout:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn print_log(&self) {
        eprintln!(
            "===== log of {} =====\n{}\n===== end of log of {} =====",
            self.name,
            self.log_text(),
            self.name
        );
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            self.print_log();
        }
    }
}

/// One `lexmesh serve <service>` process (see [`TestMesh::spawn`](crate::TestMesh::spawn));
/// a [`ChildProcess`] that knows its service and instance.
#[derive(Debug)]
pub struct ServiceProcess {
    /// `preprocessor`, `trainer`, `evaluator`, `health` or `metrics`.
    pub service: String,
    /// The instance id.
    pub instance: String,
    process: ChildProcess,
}

impl ServiceProcess {
    /// A started `lexmesh serve <service>` process of instance `instance`.
    pub fn new(service: &str, instance: &str, process: ChildProcess) -> Self {
        Self {
            service: service.to_string(),
            instance: instance.to_string(),
            process,
        }
    }
}

impl Deref for ServiceProcess {
    type Target = ChildProcess;

    fn deref(&self) -> &ChildProcess {
        &self.process
    }
}

impl DerefMut for ServiceProcess {
    fn deref_mut(&mut self) -> &mut ChildProcess {
        &mut self.process
    }
}

/// `kill <signal> <pid>` (e.g. `-KILL`, `-STOP`); whether the signal was delivered (false also
/// when `kill` cannot run). Quiet: for a process that may have exited meanwhile.
pub fn try_send_signal(signal: &str, pid: u32) -> bool {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `kill <signal> <pid>`; fails the test when kill fails.
///
/// # Panics
///
/// When the signal was not delivered.
pub fn send_signal(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}
