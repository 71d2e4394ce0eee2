//! The latest heartbeat of each instance, gathered in the background: which instances are
//! alive, their process ids and the jobs they run (for chaos tests that kill a busy worker).
#![allow(
    clippy::expect_used,
    reason = "a harness fails the test with a message on a heartbeat without its fields"
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::Subscriber;
use futures::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::schemas::Schemas;

/// The latest heartbeat of one instance.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// The process id it reported.
    pub pid: u32,
    /// The ids of the jobs it was running.
    pub running: Vec<String>,
    /// When the heartbeat arrived.
    pub at: Instant,
}

/// The latest heartbeat of each instance, by instance id; get one from
/// [`TestMesh::track_heartbeats`](crate::TestMesh::track_heartbeats). Every heartbeat is
/// checked against the `heartbeat` schema; those of a stopping instance are left out. Stops
/// gathering when dropped.
pub struct Heartbeats {
    latest: Arc<Mutex<BTreeMap<String, Heartbeat>>>,
    task: JoinHandle<()>,
}

impl Heartbeats {
    /// Gathers the heartbeats of `subscriber`.
    pub(crate) fn start(mut subscriber: Subscriber, schemas: Arc<Schemas>) -> Self {
        let latest: Arc<Mutex<BTreeMap<String, Heartbeat>>> = Arc::default();
        let sink = latest.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let beat: Value =
                    serde_json::from_slice(&message.payload).expect("a heartbeat is JSON");
                schemas.check(
                    "heartbeat",
                    &format!("heartbeat on {}", message.subject),
                    &beat,
                );
                if beat["stopping"] == true {
                    continue;
                }
                let running = beat["running"]
                    .as_array()
                    .expect("a heartbeat lists its running jobs")
                    .iter()
                    .map(|job| {
                        job["job_id"]
                            .as_str()
                            .expect("a running job has a job_id")
                            .to_string()
                    })
                    .collect();
                let pid = u32::try_from(beat["pid"].as_u64().expect("a heartbeat has a pid"))
                    .expect("a pid fits in u32");
                let instance = beat["instance"]
                    .as_str()
                    .expect("a heartbeat names its instance")
                    .to_string();
                lock(&sink).insert(
                    instance,
                    Heartbeat {
                        pid,
                        running,
                        at: Instant::now(),
                    },
                );
            }
        });
        Self { latest, task }
    }

    /// How many instances have sent a heartbeat (and were not forgotten since).
    pub fn instances(&self) -> usize {
        lock(&self.latest).len()
    }

    /// The instances heard from within `within`, with their latest heartbeat.
    pub fn alive(&self, within: Duration) -> Vec<(String, Heartbeat)> {
        lock(&self.latest)
            .iter()
            .filter(|(_, beat)| beat.at.elapsed() < within)
            .map(|(instance, beat)| (instance.clone(), beat.clone()))
            .collect()
    }

    /// Forgets an instance (e.g. one just killed) until its next heartbeat.
    pub fn forget(&self, instance: &str) {
        lock(&self.latest).remove(instance);
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
