//! [`Browser`]: a headless Chromium on a page, for the dashboard's tests and benchmark.
//!
//! It runs `tests/console/driver.py` in the virtualenv that `scripts/setup-browser-tests`
//! makes (Playwright for Python driving Debian's `chromium`), one JSON command per line.
#![allow(
    clippy::expect_used,
    reason = "a harness fails the test with a message when the browser cannot run"
)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::fixtures::repo_root;

/// Longest a command other than `wait` may take (a page load, a screenshot).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A headless Chromium showing one page; killed on drop.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Browser {
    /// Opens `url` in a fresh profile with a `width`×`height` window.
    ///
    /// # Panics
    ///
    /// When the virtualenv is missing (with how to make it) or the page cannot be opened.
    pub async fn open(url: &str, width: u32, height: u32) -> Self {
        let root = repo_root();
        let python = root.join(".tools/browser-venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/setup-browser-tests (scripts/test does)",
            python.display()
        );
        let mut child = Command::new(&python)
            .arg(root.join("tests/console/driver.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start tests/console/driver.py");
        let stdin = child.stdin.take().expect("driver stdin");
        let stdout = BufReader::new(child.stdout.take().expect("driver stdout")).lines();
        let mut browser = Self {
            child,
            stdin,
            stdout,
        };
        browser
            .command(
                json!({"op": "open", "url": url, "width": width, "height": height}),
                COMMAND_TIMEOUT,
            )
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
        browser
    }

    /// Sends one command; its value, or the driver's error.
    async fn command(&mut self, command: Value, timeout: Duration) -> Result<Value, String> {
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("the browser driver is gone: {e}"))?;
        self.stdin.flush().await.map_err(|e| e.to_string())?;
        let answer =
            tokio::time::timeout(timeout + Duration::from_secs(10), self.stdout.next_line())
                .await
                .map_err(|_| format!("no answer from the browser driver to {command}"))?
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "the browser driver exited".to_string())?;
        let answer: Value = serde_json::from_str(&answer).map_err(|e| format!("{e}: {answer}"))?;
        if answer["ok"] == true {
            Ok(answer["value"].clone())
        } else {
            Err(format!(
                "{}\npage console: {}",
                answer["error"], answer["console"]
            ))
        }
    }

    /// Waits until the JavaScript function `js` returns a truthy value; that value.
    ///
    /// # Panics
    ///
    /// When it does not within `timeout`, saying `what` was awaited.
    pub async fn wait(&mut self, what: &str, js: &str, timeout: Duration) -> Value {
        self.command(
            json!({"op": "wait", "js": js, "timeout_s": timeout.as_secs_f64()}),
            timeout,
        )
        .await
        .unwrap_or_else(|e| panic!("the page never showed {what} within {timeout:?}: {e}"))
    }

    /// The value of the JavaScript function `js` now.
    ///
    /// # Panics
    ///
    /// When it throws.
    pub async fn eval(&mut self, js: &str) -> Value {
        self.command(json!({"op": "eval", "js": js}), COMMAND_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("evaluating {js}: {e}"))
    }

    /// Clicks the element `selector` names.
    ///
    /// # Panics
    ///
    /// When there is none to click.
    pub async fn click(&mut self, selector: &str) {
        self.command(
            json!({"op": "click", "selector": selector}),
            COMMAND_TIMEOUT,
        )
        .await
        .unwrap_or_else(|e| panic!("clicking {selector}: {e}"));
    }

    /// Resizes the window.
    ///
    /// # Panics
    ///
    /// When the driver fails.
    pub async fn resize(&mut self, width: u32, height: u32) {
        self.command(
            json!({"op": "viewport", "width": width, "height": height}),
            COMMAND_TIMEOUT,
        )
        .await
        .unwrap_or_else(|e| panic!("resizing the window: {e}"));
    }

    /// Writes a PNG of the whole page to `path`.
    ///
    /// # Panics
    ///
    /// When it cannot.
    pub async fn screenshot(&mut self, path: &Path) {
        self.command(
            json!({"op": "screenshot", "path": path.to_string_lossy()}),
            COMMAND_TIMEOUT,
        )
        .await
        .unwrap_or_else(|e| panic!("screenshot to {}: {e}", path.display()));
    }

    /// Closes the browser.
    pub async fn close(mut self) {
        let _ = self.command(json!({"op": "close"}), COMMAND_TIMEOUT).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}
