//! Publishing job events. Batch progress goes out as a core publish (fast, frequent, captured
//! by the events stream all the same; one lost while the stream elects a leader is replaced by
//! the next). Every other event (a job's start and end, each epoch's figures, the search's
//! decisions) goes through JetStream and waits for the stream's acknowledgement, tried again
//! for up to [`STORE_PATIENCE`] when the stream does not answer (a cluster node lost, a leader
//! being elected), under a `Nats-Msg-Id` that makes a retry of an event already stored a
//! duplicate the stream drops. So they are stored before the job message is acknowledged, and
//! a failover loses none. Each carries the job's trace context in its headers: the current
//! span's when spans are exported, else the one the job message came with.

use std::time::Duration;

use lexmesh_protocol::event::ProgressPhase;
use lexmesh_protocol::{JobEvent, subjects};

use crate::error::RuntimeError;
use crate::mesh::Mesh;

/// How long an event that must be stored is tried again when the stream does not answer.
pub const STORE_PATIENCE: Duration = Duration::from_secs(30);

/// How long one try of a store (an event's acknowledgement, a job record's read or write) is
/// waited for before it is tried again. A request the broker lost (the node that was to answer
/// died mid-request) would otherwise hold the job for the whole request timeout; a try that was
/// only slow is harmless to repeat (an event is a duplicate the stream drops, a record write is
/// recognised on the next read).
pub const STORE_ATTEMPT: Duration = Duration::from_secs(3);

/// The pauses between tries of something the broker did not answer: 100 ms, doubling up to
/// 2 s, for as long as [`STORE_PATIENCE`] allows.
pub(crate) struct StoreRetry {
    started: std::time::Instant,
    pause: Duration,
}

impl StoreRetry {
    pub(crate) fn new() -> Self {
        Self {
            started: std::time::Instant::now(),
            pause: Duration::from_millis(100),
        }
    }

    /// The pause before the next try, when the patience allows one more.
    pub(crate) fn next_pause(&self) -> Option<Duration> {
        (self.started.elapsed() + self.pause < STORE_PATIENCE).then_some(self.pause)
    }

    /// Waits the pause, and makes the next one longer.
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_secs(2));
    }
}

/// Whether `event` is published through JetStream (stored for sure) rather than as a core
/// message.
pub fn is_stored(event: &JobEvent) -> bool {
    !matches!(event, JobEvent::Progress(p) if p.phase == ProgressPhase::Batch)
}

/// The `Nats-Msg-Id` of an event: the same for every retry of one event, different for any
/// two events of a job. A final event (`completed`, `cancelled`, a `failed` not retried) is
/// identified by its job and kind alone: a job ends once, and the same ending rebuilt from the
/// job record by another instance (a duplicate delivery that finds the record final before the
/// owner's event is stored, `publish_missing_final_event`) carries another timestamp but is
/// still that one event, which the stream then drops. An epoch's `progress` event is identified
/// by its job and epoch: a resumed attempt tells again the last epochs of its checkpoint (their
/// events may have died with the process that stored the checkpoint), and the copy of one that
/// was stored is dropped.
pub fn event_id(event: &JobEvent) -> String {
    if event.is_final() {
        return format!("{}:{}:final", event.job_id(), event.kind().name());
    }
    if let JobEvent::Progress(p) = event
        && p.phase == ProgressPhase::Epoch
    {
        return format!("{}:progress:epoch:{}", p.job_id, p.epoch);
    }
    format!(
        "{}:{}:{:x}",
        event.job_id(),
        event.kind().name(),
        event.timestamp_ms().to_bits()
    )
}

/// Publishes `event` on `lexmesh.events.<job>.<event>`, with the trace context of the current
/// span, or, when this process exports no spans, the trace context `trace` of the job message
/// (so that a publisher's trace passes through whatever lexmesh's own settings).
pub async fn publish(
    mesh: &Mesh,
    event: &JobEvent,
    trace: Option<&async_nats::HeaderMap>,
) -> Result<(), RuntimeError> {
    let subject = subjects::event(event.job_id(), event.kind());
    let payload = serde_json::to_vec(event).map_err(RuntimeError::encode("a job event"))?;
    let mut headers = crate::telemetry::outgoing_headers(&tracing::Span::current(), trace);
    if !is_stored(event) {
        let sent = if headers.is_empty() {
            mesh.client.publish(subject, payload.into()).await
        } else {
            mesh.client
                .publish_with_headers(subject, headers, payload.into())
                .await
        };
        return sent.map_err(RuntimeError::nats("publishing a progress event"));
    }
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        event_id(event).as_str(),
    );
    let payload = bytes::Bytes::from(payload);
    let mut retry = StoreRetry::new();
    loop {
        let attempt = async {
            match mesh
                .js
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
            {
                Ok(ack) => ack
                    .await
                    .map(|_| ())
                    .map_err(RuntimeError::nats("storing a job event")),
                Err(e) => Err(RuntimeError::nats("publishing a job event")(e)),
            }
        };
        let stored = within_attempt("storing a job event", attempt).await;
        match stored {
            Ok(()) => return Ok(()),
            Err(e) => match retry.next_pause() {
                Some(pause) => {
                    tracing::debug!(
                        job = event.job_id(),
                        "{} event not stored yet ({e}); again in {pause:?}",
                        event.kind().name()
                    );
                    retry.wait().await;
                }
                None => return Err(e),
            },
        }
    }
}

/// `operation`, or [`RuntimeError::TimedOut`] (transient) when it takes longer than
/// [`STORE_ATTEMPT`].
pub(crate) async fn within_attempt<T>(
    what: &str,
    operation: impl std::future::Future<Output = Result<T, RuntimeError>>,
) -> Result<T, RuntimeError> {
    tokio::time::timeout(STORE_ATTEMPT, operation)
        .await
        .unwrap_or_else(|_| {
            Err(RuntimeError::TimedOut {
                what: what.to_string(),
                after: STORE_ATTEMPT,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lexmesh_protocol::event::Progress;

    fn progress(job_id: &str, phase: ProgressPhase, epoch: u32, attempt: u32, at: f64) -> JobEvent {
        let instance = format!("trainer-{attempt}");
        JobEvent::Progress(Progress {
            epoch,
            timestamp_ms: at,
            ..Progress::new(job_id, job_id, attempt, &instance, phase)
        })
    }

    #[test]
    fn an_epoch_told_again_by_another_attempt_has_the_id_of_its_first_telling() {
        let first = progress("j", ProgressPhase::Epoch, 2, 1, 1000.0);
        let again = progress("j", ProgressPhase::Epoch, 2, 2, 9000.0);
        assert_eq!(event_id(&first), event_id(&again));
        assert_ne!(
            event_id(&first),
            event_id(&progress("j", ProgressPhase::Epoch, 3, 1, 1000.0))
        );
        assert_ne!(
            event_id(&first),
            event_id(&progress("k", ProgressPhase::Epoch, 2, 1, 1000.0))
        );
        // Other progress events stay told apart by their time.
        let started = |at| event_id(&progress("j", ProgressPhase::Started, 2, 2, at));
        assert_ne!(started(1000.0), started(1000.5));
        assert_ne!(started(1000.0), event_id(&first));
    }
}
