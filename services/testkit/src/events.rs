//! Watching messages: [`EventWatch`] pulls job events one by one (each checked against its
//! schema and its subject as it arrives), [`EventLog`] keeps every message of a subject with
//! its arrival time in the background; [`is_final`] says whether a job event ends its job.
#![allow(
    clippy::expect_used,
    reason = "a harness fails the test with a message when a subscription breaks"
)]

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::Subscriber;
use futures::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::schemas::{Schemas, short};

/// Whether nothing more follows this event for its job: `completed`, `cancelled`, or `failed`
/// without a retry.
pub fn is_final(event: &Value) -> bool {
    match event["event"].as_str() {
        Some("completed" | "cancelled") => true,
        Some("failed") => event["retrying"] == false,
        _ => false,
    }
}

/// A subscription to job events (or other messages); every message is checked against its
/// schema, job events also against their subject (`lexmesh.events.<job_id>.<event>`), as they
/// arrive, and kept in `events`. Get one from [`TestMesh::watch`](crate::TestMesh::watch),
/// [`watch_subject`](crate::TestMesh::watch_subject) or
/// [`watch_messages`](crate::TestMesh::watch_messages).
pub struct EventWatch {
    subject: String,
    subscriber: Subscriber,
    schemas: Arc<Schemas>,
    /// The schema every message must match.
    schema: &'static str,
    /// Whether messages are job events (`lexmesh.events.<job_id>.<event>`).
    job_events: bool,
    /// Every event received so far, in order.
    pub events: Vec<Value>,
}

impl EventWatch {
    /// A watch over `subscriber` (subscribed to `subject`), each message checked against
    /// `schema`; `job_events` adds the check of the subject against the body.
    pub(crate) fn new(
        subject: &str,
        subscriber: Subscriber,
        schemas: Arc<Schemas>,
        schema: &'static str,
        job_events: bool,
    ) -> Self {
        Self {
            subject: subject.to_string(),
            subscriber,
            schemas,
            schema,
            job_events,
            events: Vec::new(),
        }
    }

    /// The next event, or None when none arrives within `timeout`.
    ///
    /// # Panics
    ///
    /// When the subscription ends, or the message is not JSON, does not match its schema or
    /// (for job events) its subject.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Value> {
        let message = tokio::time::timeout(timeout, self.subscriber.next())
            .await
            .ok()?
            .expect("the event subscription ended");
        let event: Value = serde_json::from_slice(&message.payload).unwrap_or_else(|e| {
            panic!(
                "event on {} is not JSON ({e}): {:?}",
                message.subject,
                String::from_utf8_lossy(&message.payload)
            )
        });
        self.schemas.check(
            self.schema,
            &format!("message on {}", message.subject),
            &event,
        );
        if !self.job_events {
            self.events.push(event.clone());
            return Some(event);
        }
        let tokens: Vec<&str> = message.subject.as_str().split('.').collect();
        assert_eq!(tokens.len(), 4, "event subject {}", message.subject);
        assert_eq!(
            (tokens[2], tokens[3]),
            (
                event["job_id"].as_str().unwrap_or_default(),
                event["event"].as_str().unwrap_or_default()
            ),
            "event subject {} does not match its body {}",
            message.subject,
            short(&event)
        );
        self.events.push(event.clone());
        Some(event)
    }

    /// The next event; fails the test when none arrives within `timeout`.
    ///
    /// # Panics
    ///
    /// When no event arrives in time, or as [`next_within`](Self::next_within).
    pub async fn next(&mut self, timeout: Duration) -> Value {
        match self.next_within(timeout).await {
            Some(event) => event,
            None => panic!(
                "no event on {} within {timeout:?}; so far: {}",
                self.subject,
                self.summary()
            ),
        }
    }

    /// Events until one matching `stop` (returned); fails after `timeout` in all.
    ///
    /// # Panics
    ///
    /// As [`next`](Self::next).
    pub async fn until(&mut self, timeout: Duration, stop: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.next(left).await;
            if stop(&event) {
                return event;
            }
        }
    }

    /// Events until a final one (completed, cancelled, failed without retry), which is
    /// returned; fails after `timeout`.
    ///
    /// # Panics
    ///
    /// As [`next`](Self::next).
    pub async fn until_final(&mut self, timeout: Duration) -> Value {
        self.until(timeout, is_final).await
    }

    /// Every event arriving within `period` (to check that nothing more comes).
    ///
    /// # Panics
    ///
    /// As [`next_within`](Self::next_within).
    pub async fn drain_for(&mut self, period: Duration) -> Vec<Value> {
        let deadline = Instant::now() + period;
        let mut more = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return more;
            }
            match self.next_within(left).await {
                Some(event) => more.push(event),
                None => return more,
            }
        }
    }

    /// Events of one kind received so far.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == kind).collect()
    }

    /// A one-line-per-event digest, for failure messages.
    pub fn summary(&self) -> String {
        self.events
            .iter()
            .map(|e| {
                format!(
                    "\n  {} {} {}",
                    e["job_id"].as_str().unwrap_or("?"),
                    e["event"].as_str().unwrap_or("?"),
                    match e["event"].as_str() {
                        Some("progress") => format!(
                            "phase={} epoch={} batch={} pct={}",
                            e["phase"], e["epoch"], e["batch"], e["completion_percentage"]
                        ),
                        Some("failed") => format!(
                            "code={} retrying={} reason={}",
                            e["code"], e["retrying"], e["reason"]
                        ),
                        _ => format!("instance={} attempt={}", e["instance"], e["attempt"]),
                    }
                )
            })
            .collect()
    }
}

/// Every message of a subject with its arrival time, gathered in the background; get one from
/// [`TestMesh::record_events`](crate::TestMesh::record_events). Each message must be JSON and
/// match its schema; one that does not stops the gathering with a panic message on stderr
/// (the test then misses what follows). Stops gathering when dropped.
pub struct EventLog {
    events: Arc<Mutex<Vec<(Instant, Value)>>>,
    task: JoinHandle<()>,
}

impl EventLog {
    /// Gathers the messages of `subscriber`, each checked against `schema`.
    pub(crate) fn start(
        mut subscriber: Subscriber,
        schemas: Arc<Schemas>,
        schema: &'static str,
    ) -> Self {
        let events: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();
        let sink = events.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let event: Value = serde_json::from_slice(&message.payload).unwrap_or_else(|e| {
                    panic!(
                        "message on {} is not JSON ({e}): {:?}",
                        message.subject,
                        String::from_utf8_lossy(&message.payload)
                    )
                });
                schemas.check(schema, &format!("message on {}", message.subject), &event);
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((Instant::now(), event));
            }
        });
        Self { events, task }
    }

    /// The messages so far, with their arrival times, in arrival order (more keep coming
    /// while the guard is not held).
    pub fn lock(&self) -> MutexGuard<'_, Vec<(Instant, Value)>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the messages so far.
    pub fn snapshot(&self) -> Vec<(Instant, Value)> {
        self.lock().clone()
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}
