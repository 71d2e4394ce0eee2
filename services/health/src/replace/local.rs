//! The local replacer: SIGKILL the instance's process. Whatever supervises it (`lexmesh up`,
//! systemd) starts it again with its own backoff. Only for instances on this host.

use std::process::Stdio;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{ReplaceError, Replacer, Target};

/// How long a killed process may take to be gone.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `pid` has exited (absent, or a zombie waiting for its parent).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Kills processes on this host.
#[derive(Debug, Clone)]
pub struct LocalReplacer {
    host: String,
}

impl LocalReplacer {
    /// A replacer for instances whose heartbeats name `host` (this machine's host name).
    pub fn new(host: impl Into<String>) -> Self {
        Self { host: host.into() }
    }
}

impl Replacer for LocalReplacer {
    fn name(&self) -> &'static str {
        "local"
    }

    fn confirms_exit(&self) -> bool {
        true
    }

    fn replace<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<String, ReplaceError>> {
        async move {
            if target.host != self.host {
                return Err(ReplaceError::OutOfReach {
                    instance: target.instance.clone(),
                    reason: format!("it runs on host `{}`, this is `{}`", target.host, self.host),
                });
            }
            if target.pid <= 1 || target.pid == std::process::id() {
                return Err(ReplaceError::OutOfReach {
                    instance: target.instance.clone(),
                    reason: format!("will not kill pid {}", target.pid),
                });
            }
            // `kill -KILL`: the workspace allows no `unsafe`, so no libc::kill. SIGKILL also
            // ends a stopped (SIGSTOP) process, which SIGTERM would not.
            let output = tokio::process::Command::new("kill")
                .arg("-KILL")
                .arg(target.pid.to_string())
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|e| ReplaceError::Failed {
                    instance: target.instance.clone(),
                    reason: format!("running kill: {e}"),
                })?;
            if output.status.success() {
                // Gone means its sockets are closed: the server drops its pull requests.
                let deadline = tokio::time::Instant::now() + EXIT_WAIT;
                while !exited(target.pid) {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ReplaceError::Failed {
                            instance: target.instance.clone(),
                            reason: format!(
                                "pid {} still runs {EXIT_WAIT:?} after SIGKILL",
                                target.pid
                            ),
                        });
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Ok(format!("killed pid {}", target.pid))
            } else {
                let stderr = String::from_utf8_lossy(&output.stderr);
                if stderr.contains("No such process") {
                    Ok(format!("pid {} already gone", target.pid))
                } else {
                    Err(ReplaceError::Failed {
                        instance: target.instance.clone(),
                        reason: format!("kill {}: {}", target.pid, stderr.trim()),
                    })
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, pid: u32) -> Target {
        Target {
            service: "trainer".into(),
            instance: "trainer-1".into(),
            host: host.into(),
            pid,
            namespace: None,
        }
    }

    #[tokio::test]
    async fn kills_a_real_process_on_this_host() {
        let mut child = tokio::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let replacer = LocalReplacer::new("here");
        let done = replacer.replace(&target("here", pid)).await.unwrap();
        assert!(done.contains(&pid.to_string()), "{done}");
        let status = child.wait().await.unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
        // Killing it again: already gone, not an error.
        let again = replacer.replace(&target("here", pid)).await.unwrap();
        assert!(again.contains("already gone"), "{again}");
    }

    #[tokio::test]
    async fn other_hosts_are_out_of_reach() {
        let replacer = LocalReplacer::new("here");
        let err = replacer
            .replace(&target("elsewhere", 4242))
            .await
            .unwrap_err();
        assert!(matches!(err, ReplaceError::OutOfReach { .. }), "{err}");
        let err = replacer.replace(&target("here", 1)).await.unwrap_err();
        assert!(matches!(err, ReplaceError::OutOfReach { .. }), "{err}");
    }
}
