//! The job-consumer loop every service shares.
//!
//! One durable pull consumer per job kind, shared by all replicas. A replica pulls one job per
//! free slot (a semaphore of `jobs.concurrency` permits), so it never holds a job it cannot
//! start. From the moment a job arrives until its final ack (reading and judging its record,
//! the run, settling it), a progress ack every `ack_wait / 3`, the first at once, keeps it
//! ours; if the process dies, the acks stop and JetStream gives the job to another replica
//! after `ack_wait`.
//!
//! Outcomes: completed → `completed` event, ack. Cancelled → `cancelled` event, term.
//! Interrupted by shutdown → nak without delay, so another replica takes it at once.
//! Retryable failure → `failed` event with `retrying: true`, nak with exponential delay, until
//! `jobs.max_failures` such attempts. Permanent failure, or a malformed message → `failed`
//! event, term: a bad message is never retried and never takes the process down.
//!
//! Exactly once: a job is completed by a compare-and-set of its record from a non-final status
//! to `completed`. When two instances race (one declared dead was only slow), one write wins;
//! the loser discards its result and says so in a log line.
//!
//! Lost attempts: an attempt whose worker went away is judged by the next one ([`lost`]): it
//! counts against the job only when it stored no progress and its process was not killed
//! from outside. At `jobs.max_lost_attempts` counted losses since the last progress the job
//! is dead-lettered before it runs again.
//!
//! Dead letters: a job that failed `jobs.max_failures` times, lost too many attempts, or ran
//! out of JetStream deliveries (`jobs.max_deliver`, a backstop: noticed through the
//! max-deliveries advisory, kept in the `LEXMESH_ADVISORIES` stream until one instance of the
//! kind has handled it) is published once on
//! `lexmesh.deadletter.<kind>` with its request and history, gets a `failed` event, and
//! leaves the jobs stream.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use lexmesh_protocol::deadletter::DeadLetter;
use lexmesh_protocol::decode::{decode, salvage_job_id};
use lexmesh_protocol::error::ErrorBody;
use lexmesh_protocol::event::{Accepted, Cancelled, Completed, Failed};
use lexmesh_protocol::job::JobRequest;
use lexmesh_protocol::record::{AttemptEntry, JobRecord, JobStatus};
use lexmesh_protocol::time::now_ms;
use lexmesh_protocol::{ErrorCode, JobEvent, JobKind, JobResult, ProtocolError, names, subjects};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::RuntimeError;
use crate::mesh::Mesh;
use crate::settle::{Ack, Budget, Count, Ended, EventKind, RecordWrite, settle};
use crate::worker::Worker;
use crate::{events, lost, records, telemetry};
use tracing::Instrument;

/// How long a pull request for the next job waits at the server before it expires (and the
/// loop pulls again). A replica that died leaves no pull request behind for longer.
pub const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// How a job ended, when it did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// Finished with a result.
    Completed(JobResult),
    /// Stopped by a cancel request.
    Cancelled {
        /// Epochs finished before it stopped.
        epochs_completed: u32,
    },
    /// Stopped because this instance is shutting down; the job is handed back.
    Interrupted,
    /// Another attempt of the job completed first; this attempt's result was discarded.
    Superseded {
        /// The instance whose attempt won, when known.
        winner: Option<String>,
    },
}

/// Whether this attempt's completion was written ([`JobContext::complete_once`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This attempt completed the job.
    Won,
    /// The job had already ended (completed by another attempt, or cancelled / failed).
    Lost {
        /// The instance recorded as the job's owner.
        winner: Option<String>,
        /// Its status.
        status: JobStatus,
    },
}

/// What a running job can see and use.
#[derive(Clone)]
pub struct JobContext {
    /// The instance running it.
    pub worker: Arc<Worker>,
    /// The job.
    pub job_id: String,
    /// Its kind.
    pub kind: JobKind,
    /// Delivery attempt, from 1.
    pub attempt: u32,
    /// Cancelled when someone cancels the job.
    pub cancel: CancellationToken,
    /// This attempt's span (parent of the spans a handler makes, such as one per epoch).
    pub span: tracing::Span,
    /// The trace context the job message came with (`traceparent`, `tracestate`): passed on
    /// unchanged in events and requests when this process exports no spans.
    pub trace: Option<async_nats::HeaderMap>,
    claim: Arc<OnceLock<Claim>>,
    accepted: Arc<std::sync::atomic::AtomicBool>,
}

impl JobContext {
    /// JetStream resources.
    pub fn mesh(&self) -> &Mesh {
        &self.worker.mesh
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.worker.instance
    }

    /// Cancelled when the instance shuts down.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.worker.shutdown
    }

    /// Completes the job with `result`, exactly once across attempts: a compare-and-set of the
    /// job record from a non-final status to `completed`. A handler that must publish
    /// something only the winner may publish (a model's manifest) calls this first and returns
    /// [`JobOutcome::Superseded`] when it lost; otherwise the job loop calls it.
    pub async fn complete_once(&self, result: &JobResult) -> Result<Claim, RuntimeError> {
        if let Some(claim) = self.claim.get() {
            return Ok(claim.clone());
        }
        let claim = claim_completion(&self.worker, &self.job_id, self.attempt, result).await?;
        let _ = self.claim.set(claim.clone());
        Ok(claim)
    }

    /// Publishes an event of this job (errors are logged: a lost progress event must not
    /// fail the job).
    pub async fn publish(&self, event: &JobEvent) {
        if let Err(e) = events::publish(self.mesh(), event, self.trace.as_ref()).await {
            tracing::warn!(job = %self.job_id, "cannot publish {} event: {e}", event.kind().name());
        }
    }

    /// Publishes the job's `accepted` event (once; later calls do nothing). A handler calls it
    /// when every check that needs the data or the stores has passed (the dataset exists and
    /// has two classes, the model exists), so that a job rejected for its data gets `failed`
    /// without `accepted` first. A handler that never calls it gets it just before `completed`.
    pub async fn accept(&self) {
        if self
            .accepted
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        self.publish(&JobEvent::Accepted(Accepted {
            job_id: self.job_id.clone(),
            kind: self.kind,
            attempt: self.attempt,
            instance: self.worker.instance.clone(),
            timestamp_ms: now_ms(),
        }))
        .await;
        tracing::info!(job = %self.job_id, attempt = self.attempt, "accepted {} job", self.kind.name());
    }

    /// The headers that carry this job's trace on to a request the handler makes (the
    /// attempt's span when spans are exported, else the job message's own trace context).
    pub fn trace_headers(&self) -> async_nats::HeaderMap {
        telemetry::outgoing_headers(&self.span, self.trace.as_ref())
    }
}

/// Runs one kind of job.
pub trait JobHandler: Send + Sync + 'static {
    /// The job message.
    type Job: JobRequest + DeserializeOwned + Send + 'static;

    /// The model a job trains or evaluates, for the job record.
    fn model_id(&self, _job: &Self::Job) -> Option<String> {
        None
    }

    /// Whether a job that was cancelled while no attempt of it ran still runs, with
    /// `ctx.cancel` already set, so that it winds down what its earlier attempts started (a
    /// search stops its trials, which are jobs of their own). Default: no, such a job ends
    /// `cancelled` without running.
    fn runs_when_cancelled(&self) -> bool {
        false
    }

    /// Runs the job to its end. It should watch `ctx.cancel` and `ctx.shutdown()`.
    fn run(
        &self,
        job: Self::Job,
        ctx: JobContext,
    ) -> impl Future<Output = Result<JobOutcome, ProtocolError>> + Send;
}

/// Pulls and runs jobs of `H::Job::KIND` until the worker shuts down, then waits for the
/// running jobs to end.
pub async fn run<H: JobHandler>(worker: Arc<Worker>, handler: Arc<H>) -> Result<(), RuntimeError> {
    let kind = H::Job::KIND;
    let concurrency = worker.config.jobs.concurrency.max(1);
    // Enough for many replicas; each replica is bounded by its own semaphore.
    let max_ack_pending = i64::from(concurrency) * 64;
    let consumer = worker
        .mesh
        .job_consumer(kind, &worker.config.jobs, max_ack_pending)
        .await?;
    let advisories = worker.mesh.advisory_consumer(kind).await?;
    let advisory_task = tokio::spawn(handle_advisories(worker.clone(), kind, advisories));
    let slots = Arc::new(Semaphore::new(concurrency as usize));
    let mut running = tokio::task::JoinSet::new();
    tracing::info!(kind = kind.name(), concurrency, "taking jobs");
    'pull: loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = worker.shutdown.cancelled() => break,
        };
        let asked_ms = now_ms();
        let batch = consumer
            .batch()
            .max_messages(1)
            .expires(PULL_EXPIRES)
            .messages();
        let mut batch = tokio::select! {
            b = batch => match b {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("pulling {} jobs failed: {e}; retrying", kind.name());
                    drop(permit);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = worker.shutdown.cancelled() => break,
        };
        loop {
            let next = tokio::select! {
                n = batch.next() => n,
                _ = worker.shutdown.cancelled() => break 'pull,
            };
            match next {
                Some(Ok(message)) => {
                    // Publish to receipt; a job that waited in the stream for a free worker
                    // counts from the moment this worker asked for it.
                    if let Some(published_ms) = published_ms(&message) {
                        worker.record_message_latency(published_ms.max(asked_ms));
                    }
                    let worker = worker.clone();
                    let handler = handler.clone();
                    running.spawn(async move {
                        handle(worker, handler, message).await;
                        drop(permit);
                    });
                    break;
                }
                Some(Err(e)) => {
                    tracing::debug!("pull of {} jobs: {e}", kind.name());
                }
                None => break,
            }
        }
        // Reap finished tasks so the set does not grow.
        while running.try_join_next().is_some() {}
    }
    tracing::info!(
        kind = kind.name(),
        "stopped taking jobs; waiting for {} running",
        running.len()
    );
    while running.join_next().await.is_some() {}
    advisory_task.abort();
    Ok(())
}

/// When the server stored the message (ms since the Unix epoch).
fn published_ms(message: &jetstream::Message) -> Option<f64> {
    let info = message.info().ok()?;
    Some(info.published.unix_timestamp_nanos() as f64 / 1e6)
}

fn attempt_of(message: &jetstream::Message) -> (u32, u64) {
    message
        .info()
        .map(|i| {
            (
                u32::try_from(i.delivered.max(1)).unwrap_or(u32::MAX),
                i.stream_sequence,
            )
        })
        .unwrap_or((1, 0))
}

/// The message's `Nats-Msg-Id` header.
fn message_id(message: &jetstream::Message) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_string())
}

/// The trace headers (`traceparent`, `tracestate`) a job message came with.
fn trace_of(message: &jetstream::Message) -> Option<async_nats::HeaderMap> {
    let headers = telemetry::trace_headers(message.headers.as_ref());
    (!headers.is_empty()).then_some(headers)
}

async fn ack(message: &jetstream::Message, kind: AckKind, job_id: &str) {
    let result = match kind {
        AckKind::Ack => message.double_ack().await,
        other => message.ack_with(other).await,
    };
    if let Err(e) = result {
        tracing::warn!(job = job_id, "acknowledging the job message failed: {e}");
    }
}

async fn handle<H: JobHandler>(worker: Arc<Worker>, handler: Arc<H>, message: jetstream::Message) {
    let kind = H::Job::KIND;
    // Before anything else: the record reads and writes below can outlast `ack_wait` on a
    // loaded machine, and a delivery whose acks are late is given to another replica or, on
    // its last delivery, dead-lettered while it runs here.
    let keep_alive = KeepAlive::start(&message, worker.config.jobs.ack_wait);
    let (attempt, sequence) = attempt_of(&message);
    let job: H::Job = match decode(&message.payload) {
        Ok(job) => job,
        Err(error) => {
            // A message too broken to name its job is reported under its Nats-Msg-Id when that
            // is a valid job id, else under its stream sequence.
            let job_id = salvage_job_id(&message.payload)
                .or_else(|| message_id(&message).filter(|id| lexmesh_protocol::valid_id(id)))
                .unwrap_or_else(|| format!("seq-{sequence}"));
            tracing::warn!(job = %job_id, code = %error.code, "rejected a {} message: {}", kind.name(), error.reason);
            reject(&worker, &message, kind, &job_id, attempt, &error).await;
            return;
        }
    };
    let job_id = job.job_id().to_string();
    if let Some(header_id) = message_id(&message)
        && header_id != job_id
    {
        let error = ProtocolError::new(
            ErrorCode::JobIdMismatch,
            format!(
                "Nats-Msg-Id {} differs from job_id `{job_id}`",
                lexmesh_protocol::decode::brief(&header_id.into())
            ),
        );
        reject(&worker, &message, kind, &job_id, attempt, &error).await;
        return;
    }
    let kv = &worker.mesh.jobs;
    let record = match records::read(kv, &job_id).await {
        Ok(Some((record, _))) if record.status.is_final() => {
            tracing::info!(job = %job_id, "job already {:?}; duplicate submit dropped", record.status);
            publish_missing_final_event(&worker, &record).await;
            ack(&message, AckKind::Ack, &job_id).await;
            return;
        }
        Ok(Some((record, _))) => Some(judge_lost(&worker, record).await),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(job = %job_id, "cannot read the job record ({e}); retrying the job later");
            ack(
                &message,
                AckKind::Nak(Some(worker.config.jobs.retry_delay)),
                &job_id,
            )
            .await;
            return;
        }
    };
    if let Some(record) = &record {
        let strikes = lost::strikes(record);
        let limit = worker.config.jobs.max_lost_attempts.max(1);
        if strikes >= limit {
            give_up_lost(&worker, &message, kind, &job_id, attempt, sequence, strikes).await;
            return;
        }
    }
    let earlier_attempts: Vec<String> = record
        .iter()
        .flat_map(|r| r.history.iter().filter_map(|e| e.traceparent.clone()))
        .collect();
    let earlier_failures = record.as_ref().map_or(0, lost::failures);
    // This attempt's span: a child of the submitter's span (W3C trace context in the message
    // headers), linked to the spans of earlier attempts of the job.
    let span = tracing::info_span!(
        "job",
        otel.name = %format!("{} {}", kind.name(), job_id),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        job_id = %job_id,
        kind = kind.name(),
        attempt,
        instance = %worker.instance,
        outcome = tracing::field::Empty,
    );
    telemetry::set_parent_from_headers(&span, message.headers.as_ref());
    for earlier in &earlier_attempts {
        telemetry::add_link(&span, earlier);
    }
    let delivery = Delivery {
        attempt,
        sequence,
        traceparent: telemetry::traceparent(&span),
        earlier_failures,
    };
    run_attempt(
        worker,
        handler,
        (message, keep_alive),
        job,
        job_id,
        delivery,
        span.clone(),
    )
    .instrument(span)
    .await;
}

/// Progress acks of one delivery, every `ack_wait / 3` and the first at once, until stopped
/// or dropped.
struct KeepAlive(tokio::task::JoinHandle<()>);

impl KeepAlive {
    fn start(message: &jetstream::Message, ack_wait: Duration) -> Self {
        let message = message.clone();
        let every = (ack_wait / 3).max(Duration::from_millis(100));
        Self(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!("progress ack failed: {e}");
                }
            }
        }))
    }

    fn stop(&self) {
        self.0.abort();
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How this attempt of a job reached this instance.
struct Delivery {
    attempt: u32,
    sequence: u64,
    traceparent: Option<String>,
    /// Earlier attempts that ended with a retryable failure.
    earlier_failures: u32,
}

/// Runs one attempt of a decoded job, inside its span.
async fn run_attempt<H: JobHandler>(
    worker: Arc<Worker>,
    handler: Arc<H>,
    (message, keep_alive): (jetstream::Message, KeepAlive),
    job: H::Job,
    job_id: String,
    delivery: Delivery,
    span: tracing::Span,
) {
    let kind = H::Job::KIND;
    let Delivery {
        attempt,
        sequence,
        earlier_failures,
        ..
    } = delivery;
    let trace = trace_of(&message);
    let kv = &worker.mesh.jobs;
    let end_span = |outcome: &str, error: bool| {
        span.record("outcome", outcome);
        if error {
            span.record("otel.status_code", "ERROR");
        }
    };
    let marked_cancelled = records::is_marked_cancelled(kv, &job_id)
        .await
        .unwrap_or(false);
    if marked_cancelled && !handler.runs_when_cancelled() {
        let model_id = handler.model_id(&job);
        open_record(
            &worker,
            &job_id,
            kind,
            &delivery,
            model_id,
            JobStatus::Cancelled,
        )
        .await;
        end_span("cancelled", false);
        tracing::info!(job = %job_id, "cancelled before it started");
        let event = JobEvent::Cancelled(Cancelled {
            job_id: job_id.clone(),
            kind,
            attempt,
            instance: worker.instance.clone(),
            epochs_completed: 0,
            timestamp_ms: now_ms(),
        });
        publish(&worker, &event, trace.as_ref()).await;
        ack(&message, AckKind::Term, &job_id).await;
        return;
    }
    let model_id = handler.model_id(&job);
    open_record(
        &worker,
        &job_id,
        kind,
        &delivery,
        model_id,
        JobStatus::Running,
    )
    .await;
    let ack_subject = message.reply.as_ref().map(|r| r.to_string());
    let cancel = worker.register(&job_id, kind, attempt, ack_subject);
    if marked_cancelled {
        tracing::info!(job = %job_id, attempt, "running {} job, cancelled while no attempt ran, to wind it down", kind.name());
        cancel.cancel();
    } else {
        tracing::info!(job = %job_id, attempt, "running {} job", kind.name());
    }

    let ctx = JobContext {
        worker: worker.clone(),
        job_id: job_id.clone(),
        kind,
        attempt,
        cancel,
        span: span.clone(),
        trace: trace.clone(),
        claim: Arc::new(OnceLock::new()),
        accepted: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let claim = ctx.claim.clone();
    let accepting = ctx.clone();
    let started = Instant::now();
    let outcome = handler.run(job, ctx).await;

    // The completion's compare-and-set, for a result: the only async step of the decision.
    let claimed = match &outcome {
        Ok(JobOutcome::Completed(result)) => {
            accepting.accept().await;
            Some(match claim.get() {
                Some(c) => Ok(c.clone()),
                None => claim_completion(&worker, &job_id, attempt, result).await,
            })
        }
        _ => None,
    };
    let ended = match (&outcome, &claimed) {
        (Ok(JobOutcome::Completed(_)), Some(Ok(Claim::Won))) => Ended::Completed,
        (Ok(JobOutcome::Completed(_)), Some(Ok(Claim::Lost { .. }))) => Ended::Superseded,
        (Ok(JobOutcome::Completed(_)), _) => Ended::Unrecorded,
        (Ok(JobOutcome::Superseded { .. }), _) => Ended::Superseded,
        (Ok(JobOutcome::Cancelled { .. }), _) => Ended::Cancelled,
        (Ok(JobOutcome::Interrupted), _) => Ended::Interrupted,
        (Err(error), _) => Ended::Failed {
            retryable: error.retryable(),
            client_error: error.code.is_client_error(),
        },
    };
    let settlement = settle(
        ended,
        Budget {
            attempt,
            earlier_failures,
            max_failures: worker.config.jobs.max_failures,
            max_deliver: worker.config.jobs.max_deliver,
        },
    );
    end_span(settlement.span_outcome, settlement.span_error);
    let error = outcome.as_ref().err();
    if let Some(Err(e)) = &claimed {
        tracing::warn!(job = %job_id, "cannot record the completion ({e}); handing the job back");
    }

    // 1. The record, so that whoever sees the event can read the record it describes.
    let record = match settlement.record {
        RecordWrite::Claimed | RecordWrite::Nothing => None,
        RecordWrite::Superseded => {
            let (winner, status) = match (&outcome, &claimed) {
                (_, Some(Ok(Claim::Lost { winner, status }))) => (winner.clone(), *status),
                (Ok(JobOutcome::Superseded { winner }), _) => {
                    (winner.clone(), JobStatus::Completed)
                }
                _ => (None, JobStatus::Completed),
            };
            tracing::warn!(
                job = %job_id,
                attempt,
                winner = winner.as_deref().unwrap_or("?"),
                "result discarded: the job was already {} by another attempt",
                status.as_str()
            );
            write_attempt_end(&worker, &job_id, attempt, AttemptEnd::Superseded, None).await
        }
        RecordWrite::HandedBack => {
            write_attempt_end(&worker, &job_id, attempt, AttemptEnd::HandedBack, None).await
        }
        RecordWrite::Status(status) => {
            write_attempt_end(&worker, &job_id, attempt, AttemptEnd::Status(status), error).await
        }
    };

    // 2. The dead letter: the request and its history, where someone will look.
    if settlement.dead_letter
        && let Some(error) = error
    {
        let letter = DeadLetter {
            job_id: job_id.clone(),
            kind,
            deliveries: attempt,
            code: error.code,
            reason: format!(
                "failed {} time(s), the last with: {error}",
                earlier_failures + 1
            ),
            history: record.map(|r| r.history).unwrap_or_default(),
            request: serde_json::from_slice(&message.payload).unwrap_or(serde_json::Value::Null),
            stream_sequence: sequence,
            instance: worker.instance.clone(),
            timestamp_ms: now_ms(),
        };
        publish_dead_letter(&worker, &letter).await;
    }

    // 3. The event.
    let event = match (settlement.event, &outcome) {
        (Some(EventKind::Completed), Ok(JobOutcome::Completed(result))) => {
            Some(JobEvent::Completed(Completed {
                job_id: job_id.clone(),
                kind,
                attempt,
                instance: worker.instance.clone(),
                duration_s: started.elapsed().as_secs_f64(),
                result: result.clone(),
                timestamp_ms: now_ms(),
            }))
        }
        (Some(EventKind::Cancelled), Ok(JobOutcome::Cancelled { epochs_completed })) => {
            Some(JobEvent::Cancelled(Cancelled {
                job_id: job_id.clone(),
                kind,
                attempt,
                instance: worker.instance.clone(),
                epochs_completed: *epochs_completed,
                timestamp_ms: now_ms(),
            }))
        }
        (Some(EventKind::Failed { retrying }), Err(error)) => Some(JobEvent::Failed(Failed {
            job_id: job_id.clone(),
            kind,
            attempt,
            instance: worker.instance.clone(),
            code: error.code,
            reason: error.reason.clone(),
            retrying,
            timestamp_ms: now_ms(),
        })),
        _ => None,
    };
    if let Some(event) = &event {
        publish(&worker, event, trace.as_ref()).await;
    }

    // 4. The message (no progress ack after it: one would restart a nak's delay).
    keep_alive.stop();
    let backoff = worker.config.jobs.retry_delay_after(attempt);
    let ack_kind = match settlement.ack {
        Ack::Ack => AckKind::Ack,
        Ack::Term => AckKind::Term,
        nak => AckKind::Nak(nak.delay(worker.config.jobs.retry_delay, backoff)),
    };
    ack(&message, ack_kind, &job_id).await;

    // 5. The instance's counters (before the job leaves its running list).
    match settlement.count {
        Count::Completed => worker.finish(&job_id, true),
        Count::Failed => worker.finish(&job_id, false),
        Count::Rejected => worker.finish_rejected(&job_id),
        Count::NotCounted => worker.forget(&job_id),
    }
    let took = started.elapsed().as_secs_f64();
    match (ended, error) {
        (Ended::Completed, _) => tracing::info!(job = %job_id, "completed in {took:.1}s"),
        (Ended::Cancelled, _) => {
            let epochs = match &outcome {
                Ok(JobOutcome::Cancelled { epochs_completed }) => *epochs_completed,
                _ => 0,
            };
            tracing::info!(job = %job_id, "cancelled after {epochs} epoch(s)");
        }
        (Ended::Interrupted, _) => {
            tracing::info!(job = %job_id, "handed back for another replica (shutting down)");
        }
        (Ended::Failed { .. }, Some(error)) => match settlement.count {
            _ if settlement.ack == Ack::NakWithBackoff => {
                tracing::warn!(job = %job_id, attempt, "failed ({error}); retrying in {backoff:?}");
            }
            Count::Rejected => tracing::info!(job = %job_id, attempt, "rejected: {error}"),
            _ => tracing::warn!(job = %job_id, attempt, "failed for good: {error}"),
        },
        _ => {}
    }
}

/// Writes the record of a job a worker takes (creating it for a job submitted without one).
async fn open_record(
    worker: &Worker,
    job_id: &str,
    kind: JobKind,
    delivery: &Delivery,
    model_id: Option<String>,
    status: JobStatus,
) {
    let Delivery {
        attempt,
        sequence,
        ref traceparent,
        ..
    } = *delivery;
    let instance = worker.instance.clone();
    let write = records::update(&worker.mesh.jobs, job_id, |current| {
        let now = now_ms();
        let mut history = current
            .as_ref()
            .map(|c| c.history.clone())
            .unwrap_or_default();
        history.push(AttemptEntry {
            attempt,
            instance: instance.clone(),
            started_ms: now,
            ended_ms: (status != JobStatus::Running).then_some(now),
            outcome: (status != JobStatus::Running).then(|| status.as_str().to_string()),
            error: None,
            traceparent: traceparent.clone(),
            epochs_at_start: current.as_ref().and_then(|c| c.epochs_completed),
            lost: None,
        });
        Some(JobRecord {
            owner: Some(instance.clone()),
            model_id: model_id.clone(),
            epochs_completed: current.as_ref().and_then(|c| c.epochs_completed),
            total_epochs: current.as_ref().and_then(|c| c.total_epochs),
            created_ms: current.as_ref().map_or(now, |c| c.created_ms),
            stream_sequence: (sequence > 0).then_some(sequence),
            history,
            ..JobRecord::new(job_id, kind, status, attempt, now)
        })
    })
    .await;
    if let Err(e) = write {
        tracing::warn!(job = job_id, "cannot write the job record: {e}");
    }
}

async fn publish(worker: &Worker, event: &JobEvent, trace: Option<&async_nats::HeaderMap>) {
    if let Err(e) = events::publish(&worker.mesh, event, trace).await {
        tracing::warn!(
            job = event.job_id(),
            "cannot publish {} event: {e}",
            event.kind().name()
        );
    }
}

/// How an attempt ends in its job record.
#[derive(Debug, Clone, Copy)]
enum AttemptEnd {
    /// Another attempt ended the job first: only this attempt's history entry changes.
    Superseded,
    /// Back to `queued` for another replica (never over a final status).
    HandedBack,
    /// The job ends with this status (never over a final status another attempt wrote).
    Status(JobStatus),
}

/// Writes how this attempt ended into the job record; returns the record as written (`None`
/// when nothing was written: the record is gone or final already, or the write failed, which
/// is logged).
async fn write_attempt_end(
    worker: &Worker,
    job_id: &str,
    attempt: u32,
    end: AttemptEnd,
    error: Option<&ProtocolError>,
) -> Option<JobRecord> {
    let instance = worker.instance.clone();
    let body = error.map(|e| ErrorBody {
        code: e.code,
        reason: e.reason.clone(),
    });
    let write = records::update(&worker.mesh.jobs, job_id, |current| {
        let mut record = current?;
        let (outcome, entry_error) = match end {
            // Only this attempt's history entry changes: the record is another attempt's.
            AttemptEnd::Superseded => ("superseded", None),
            _ if record.status.is_final() => return None,
            AttemptEnd::HandedBack => {
                record.status = JobStatus::Queued;
                record.updated_ms = now_ms();
                ("handed_back", None)
            }
            AttemptEnd::Status(status) => {
                record.status = status;
                record.owner = Some(instance.clone());
                record.error = body.clone();
                record.updated_ms = now_ms();
                (status.as_str(), body.clone())
            }
        };
        end_attempt(&mut record, attempt, &instance, outcome, entry_error);
        Some(record)
    })
    .await;
    match write {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!(
                job = job_id,
                ?end,
                "cannot write the attempt's end into the job record: {e}"
            );
            None
        }
    }
}

/// The compare-and-set that completes a job once: from any non-final status to `completed`.
async fn claim_completion(
    worker: &Worker,
    job_id: &str,
    attempt: u32,
    result: &JobResult,
) -> Result<Claim, RuntimeError> {
    let instance = worker.instance.clone();
    let mut lost = None;
    let written = records::update(&worker.mesh.jobs, job_id, |current| {
        if let Some(c) = &current
            && c.status.is_final()
        {
            lost = Some(Claim::Lost {
                winner: c.owner.clone(),
                status: c.status,
            });
            return None;
        }
        lost = None;
        let now = now_ms();
        let mut record = current.unwrap_or_else(|| {
            JobRecord::new(
                job_id,
                result_kind(result),
                JobStatus::Running,
                attempt,
                now,
            )
        });
        record.status = JobStatus::Completed;
        record.owner = Some(instance.clone());
        record.updated_ms = now;
        if let JobResult::Train(t) = result {
            record.epochs_completed = Some(t.epochs_completed);
        }
        record.result = Some(result.clone());
        record.error = None;
        end_attempt(&mut record, attempt, &instance, "completed", None);
        Some(record)
    })
    .await?;
    Ok(match (written, lost) {
        (Some(_), _) => Claim::Won,
        (None, Some(lost)) => lost,
        (None, None) => Claim::Won,
    })
}

fn result_kind(result: &JobResult) -> JobKind {
    match result {
        JobResult::Preprocess(_) => JobKind::Preprocess,
        JobResult::Train(_) => JobKind::Train,
        JobResult::Evaluate(_) => JobKind::Evaluate,
        JobResult::Optimize(_) => JobKind::Optimize,
    }
}

/// Marks this attempt's history entry ended (adding one when the record lacks it).
fn end_attempt(
    record: &mut JobRecord,
    attempt: u32,
    instance: &str,
    outcome: &str,
    error: Option<ErrorBody>,
) {
    let now = now_ms();
    let entry = record
        .history
        .iter_mut()
        .rev()
        .find(|e| e.attempt == attempt && e.instance == instance);
    let entry = match entry {
        Some(e) => e,
        None => {
            record.history.push(AttemptEntry {
                attempt,
                instance: instance.to_string(),
                started_ms: now,
                ended_ms: None,
                outcome: None,
                error: None,
                traceparent: None,
                epochs_at_start: None,
                lost: None,
            });
            let last = record.history.len() - 1;
            &mut record.history[last]
        }
    };
    entry.ended_ms = Some(now);
    entry.outcome = Some(outcome.to_string());
    entry.error = error;
}

/// Judges the attempts of `record` that were lost with their worker (see [`lost`]), with the
/// exits their supervisors noted, and writes the verdicts into the record. Returns the record
/// as judged (as read when the write did not happen: the verdicts are made again next time).
async fn judge_lost(worker: &Worker, record: JobRecord) -> JobRecord {
    let instances = lost::unjudged_instances(&record);
    if instances.is_empty() {
        return record;
    }
    let mut exits = std::collections::HashMap::new();
    for instance in instances {
        match records::instance_exit(&worker.mesh.instances, &instance).await {
            Ok(Some(exit)) => {
                exits.insert(instance, exit);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot read how {instance} ended: {e}"),
        }
    }
    let job_id = record.job_id.clone();
    let written = records::update(&worker.mesh.jobs, &job_id, |current| {
        let mut current = current?;
        if current.status.is_final() || !lost::judge_lost_attempts(&mut current, &exits) {
            return None;
        }
        current.updated_ms = now_ms();
        Some(current)
    })
    .await;
    match written {
        Ok(Some(judged)) => {
            tracing::info!(
                job = %job_id,
                strikes = lost::strikes(&judged),
                "earlier attempts were lost with their workers; see the record's history"
            );
            return judged;
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(job = %job_id, "cannot record the lost attempts: {e}"),
    }
    // Not written (the record ended meanwhile, or the write failed): judge the copy read.
    let mut judged = record;
    lost::judge_lost_attempts(&mut judged, &exits);
    judged
}

/// Dead-letters a job whose attempts kept being lost with their workers without progress
/// (`strikes` of them since the last progress): `failed` record and event (`worker_lost`), a
/// dead letter, and the message terminated.
async fn give_up_lost(
    worker: &Worker,
    message: &jetstream::Message,
    kind: JobKind,
    job_id: &str,
    attempt: u32,
    sequence: u64,
    strikes: u32,
) {
    let reason = format!(
        "its last {strikes} attempts were lost with their worker, which crashed or vanished \
         before the job stored any progress (jobs.max_lost_attempts is {}; kills from outside \
         do not count): the job itself is taken to kill its workers",
        worker.config.jobs.max_lost_attempts
    );
    let error = ErrorBody {
        code: ErrorCode::WorkerLost,
        reason: reason.clone(),
    };
    let record = records::update(&worker.mesh.jobs, job_id, |current| {
        let mut record = current?;
        if record.status.is_final() {
            return None;
        }
        record.status = JobStatus::Failed;
        record.attempts = attempt;
        record.updated_ms = now_ms();
        record.error = Some(error.clone());
        Some(record)
    })
    .await;
    let record = match record {
        Ok(Some(r)) => r,
        Ok(None) => {
            // Final already (another attempt ended it): only the message is left to remove.
            ack(message, AckKind::Term, job_id).await;
            return;
        }
        Err(e) => {
            tracing::warn!(
                job = job_id,
                "cannot fail the job record ({e}); retrying later"
            );
            ack(
                message,
                AckKind::Nak(Some(worker.config.jobs.retry_delay)),
                job_id,
            )
            .await;
            return;
        }
    };
    let payload: &[u8] = &message.payload;
    let lost = LostWorkers {
        deliveries: attempt,
        history: record.history,
        payload,
        sequence,
    };
    dead_letter_lost(worker, kind, job_id, lost, reason).await;
    ack(message, AckKind::Term, job_id).await;
}

async fn publish_dead_letter(worker: &Worker, letter: &DeadLetter) {
    let body = match serde_json::to_vec(letter) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(job = %letter.job_id, "dead letter not serialised: {e}");
            return;
        }
    };
    let sent = match worker
        .mesh
        .js
        .publish(subjects::deadletter(letter.kind), body.into())
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match sent {
        Ok(()) => {
            tracing::warn!(job = %letter.job_id, deliveries = letter.deliveries, "dead-lettered: {}", letter.reason)
        }
        Err(e) => tracing::error!(job = %letter.job_id, "dead letter not stored: {e}"),
    }
}

/// JetStream's max-deliveries advisory (the fields lexmesh reads).
#[derive(serde::Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: u64,
}

/// Dead-letters the jobs whose deliveries ran out because their workers kept disappearing
/// (each delivery ended by ack_wait, not by a failure this loop saw).
async fn handle_advisories(
    worker: Arc<Worker>,
    kind: JobKind,
    advisories: jetstream::consumer::PullConsumer,
) {
    loop {
        let mut messages = match advisories.messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(
                    "pulling {} max-deliveries advisories failed: {e}; retrying",
                    kind.name()
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(next) = messages.next().await {
            let message = match next {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!("pull of {} advisories: {e}", kind.name());
                    continue;
                }
            };
            let advisory: MaxDeliveries = match serde_json::from_slice(&message.payload) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("unreadable max-deliveries advisory: {e}");
                    ack(&message, AckKind::Term, "?").await;
                    continue;
                }
            };
            let deliveries = u32::try_from(advisory.deliveries).unwrap_or(u32::MAX);
            match dead_letter_exhausted(&worker, kind, advisory.stream_seq, deliveries).await {
                Ok(()) => ack(&message, AckKind::Ack, "?").await,
                Err(e) => {
                    // Kept: the advisory comes back (here or to another replica) until done.
                    tracing::error!(
                        sequence = advisory.stream_seq,
                        "cannot dead-letter a job that ran out of deliveries yet: {e}"
                    );
                    ack(
                        &message,
                        AckKind::Nak(Some(worker.config.jobs.retry_delay)),
                        "?",
                    )
                    .await;
                }
            }
        }
    }
}

/// Dead-letters the job at `sequence` of the jobs stream, which JetStream no longer delivers
/// (its `deliveries` ran out with workers lost): `failed` record and event (`worker_lost`), a
/// dead letter, and the message removed. Nothing when the message is gone already; only the
/// record's compare-and-set winner publishes, so two callers dead-letter it once.
pub async fn dead_letter_exhausted(
    worker: &Worker,
    kind: JobKind,
    sequence: u64,
    deliveries: u32,
) -> Result<(), RuntimeError> {
    let stream = worker
        .mesh
        .js
        .get_stream(names::JOBS_STREAM)
        .await
        .map_err(RuntimeError::nats("opening the jobs stream"))?;
    let stored = match stream.get_raw_message(sequence).await {
        Ok(m) => m,
        // Gone already: another handler, or the job was acknowledged late.
        Err(e) if is_no_message(&e) => return Ok(()),
        Err(e) => {
            return Err(RuntimeError::Nats {
                what: format!("reading job message {sequence}"),
                source: Box::new(e),
            });
        }
    };
    let job_id = salvage_job_id(&stored.payload).unwrap_or_else(|| format!("seq-{sequence}"));
    let reason = format!(
        "its worker was lost {deliveries} time(s) in a row (killed, crashed or replaced before finishing); max_deliver is {}",
        worker.config.jobs.max_deliver
    );
    let error = ErrorBody {
        code: ErrorCode::WorkerLost,
        reason: reason.clone(),
    };
    let mut ours = false;
    let record = records::update(&worker.mesh.jobs, &job_id, |current| {
        ours = false;
        let mut record = current.unwrap_or_else(|| {
            JobRecord::new(&job_id, kind, JobStatus::Running, deliveries, now_ms())
        });
        if record.status.is_final() {
            return None;
        }
        ours = true;
        record.status = JobStatus::Failed;
        record.updated_ms = now_ms();
        record.error = Some(error.clone());
        Some(record)
    })
    .await?;
    if ours {
        let lost = LostWorkers {
            deliveries,
            history: record.map(|r| r.history).unwrap_or_default(),
            payload: &stored.payload,
            sequence,
        };
        dead_letter_lost(worker, kind, &job_id, lost, reason).await;
    }
    stream
        .delete_message(sequence)
        .await
        .map(|_| ())
        .map_err(RuntimeError::nats("removing a dead-lettered job"))
}

/// Whether reading a stream message failed because there is no such message (and not because
/// the server did not answer).
/// Publishes the final event of a job whose record is final when the events stream holds no
/// such event: the attempt that wrote the record was killed before it published the event
/// (the record is written first, so that whoever sees the event can read the record). Without
/// this, the redelivered job would be dropped as a duplicate and its watchers would wait for
/// an end that never comes. Failures are logged; the record stays the truth.
async fn publish_missing_final_event(worker: &Worker, record: &JobRecord) {
    let Some(event) = final_event(record, &worker.instance) else {
        return;
    };
    let subject = subjects::event(&record.job_id, event.kind());
    let stream = match worker.mesh.js.get_stream(names::EVENTS_STREAM).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(job = %record.job_id, "cannot open the events stream to check the final event: {e}");
            return;
        }
    };
    match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(_) => {}
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
            tracing::warn!(
                job = %record.job_id,
                "the job's final event was never published (its worker died after writing the \
                 record): publishing it from the record"
            );
            if let Err(e) = events::publish(&worker.mesh, &event, None).await {
                tracing::warn!(job = %record.job_id, "cannot publish the final event: {e}");
            }
        }
        Err(e) => {
            tracing::warn!(job = %record.job_id, "cannot look for the job's final event: {e}");
        }
    }
}

/// The final event a final job record describes (`None` for a record that is not final, or
/// one without the result or error its status needs). `fallback_instance` names the instance
/// when the record names no owner.
fn final_event(record: &JobRecord, fallback_instance: &str) -> Option<JobEvent> {
    let instance = record
        .owner
        .clone()
        .unwrap_or_else(|| fallback_instance.to_owned());
    let (job_id, kind, attempt) = (record.job_id.clone(), record.kind, record.attempts);
    match record.status {
        JobStatus::Completed => {
            let started_ms = record
                .history
                .iter()
                .rev()
                .find(|e| e.attempt == attempt)
                .map(|e| e.started_ms);
            Some(JobEvent::Completed(Completed {
                job_id,
                kind,
                attempt,
                instance,
                duration_s: started_ms.map_or(0.0, |s| ((record.updated_ms - s) / 1000.0).max(0.0)),
                result: record.result.clone()?,
                timestamp_ms: now_ms(),
            }))
        }
        JobStatus::Failed => {
            let error = record.error.as_ref()?;
            Some(JobEvent::Failed(Failed {
                job_id,
                kind,
                attempt,
                instance,
                code: error.code,
                reason: error.reason.clone(),
                retrying: false,
                timestamp_ms: now_ms(),
            }))
        }
        JobStatus::Cancelled => Some(JobEvent::Cancelled(Cancelled {
            job_id,
            kind,
            attempt,
            instance,
            epochs_completed: record.epochs_completed.unwrap_or(0),
            timestamp_ms: now_ms(),
        })),
        _ => None,
    }
}

fn is_no_message(error: &jetstream::stream::RawMessageError) -> bool {
    use jetstream::stream::RawMessageErrorKind;
    match error.kind() {
        RawMessageErrorKind::NoMessageFound => true,
        // 10037: "no message found".
        RawMessageErrorKind::JetStream(e) => {
            e.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND
        }
        _ => false,
    }
}

/// A job given up on because its workers kept being lost: how far it got.
struct LostWorkers<'a> {
    deliveries: u32,
    history: Vec<AttemptEntry>,
    /// The job's message as stored.
    payload: &'a [u8],
    /// Its sequence in the jobs stream.
    sequence: u64,
}

/// Publishes the dead letter and the final `failed` event (`worker_lost`, `reason`) of a job
/// given up on because its workers kept being lost.
async fn dead_letter_lost(
    worker: &Worker,
    kind: JobKind,
    job_id: &str,
    lost: LostWorkers<'_>,
    reason: String,
) {
    let letter = DeadLetter {
        job_id: job_id.to_string(),
        kind,
        deliveries: lost.deliveries,
        code: ErrorCode::WorkerLost,
        reason: reason.clone(),
        history: lost.history,
        request: serde_json::from_slice(lost.payload).unwrap_or(serde_json::Value::Null),
        stream_sequence: lost.sequence,
        instance: worker.instance.clone(),
        timestamp_ms: now_ms(),
    };
    publish_dead_letter(worker, &letter).await;
    publish(
        worker,
        &JobEvent::Failed(Failed {
            job_id: job_id.to_string(),
            kind,
            attempt: lost.deliveries,
            instance: worker.instance.clone(),
            code: ErrorCode::WorkerLost,
            reason,
            retrying: false,
            timestamp_ms: now_ms(),
        }),
        None,
    )
    .await;
}

/// A message that is not a valid job: `failed` event, a failed record when it names a job,
/// and `term`, so it is never delivered again.
async fn reject(
    worker: &Worker,
    message: &jetstream::Message,
    kind: JobKind,
    job_id: &str,
    attempt: u32,
    error: &ProtocolError,
) {
    let event = JobEvent::Failed(Failed {
        job_id: job_id.to_string(),
        kind,
        attempt,
        instance: worker.instance.clone(),
        code: error.code,
        reason: error.reason.clone(),
        retrying: false,
        timestamp_ms: now_ms(),
    });
    publish(worker, &event, trace_of(message).as_ref()).await;
    if lexmesh_protocol::valid_id(job_id) && !job_id.starts_with("seq-") {
        let now = now_ms();
        let write = records::update(&worker.mesh.jobs, job_id, |current| match current {
            // Never let a malformed resubmit overwrite a real job's record.
            Some(_) => None,
            None => Some(JobRecord {
                owner: Some(worker.instance.clone()),
                error: Some(ErrorBody {
                    code: error.code,
                    reason: error.reason.clone(),
                }),
                ..JobRecord::new(job_id, kind, JobStatus::Failed, attempt, now)
            }),
        })
        .await;
        if let Err(e) = write {
            tracing::warn!(job = job_id, "cannot record the rejected job: {e}");
        }
    }
    ack(message, AckKind::Term, job_id).await;
    worker.count_rejected();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use lexmesh_protocol::event::PreparedSummary;

    use super::*;

    fn record(status: JobStatus) -> JobRecord {
        let mut record = JobRecord::new("j1", JobKind::Preprocess, status, 2, 1_000.0);
        record.owner = Some("worker-b".into());
        record.history.push(AttemptEntry {
            attempt: 2,
            instance: "worker-b".into(),
            started_ms: 1_000.0,
            ended_ms: Some(4_000.0),
            outcome: Some(status.as_str().into()),
            error: None,
            traceparent: None,
            epochs_at_start: None,
            lost: None,
        });
        record.updated_ms = 4_000.0;
        record
    }

    #[test]
    fn the_final_event_is_rebuilt_from_a_final_record_only() {
        let result = JobResult::Preprocess(PreparedSummary {
            dataset_id: "d1".into(),
            labels: vec!["a".into(), "b".into()],
            train_examples: 8,
            validation_examples: 2,
            feature_space: 100,
            reused: false,
        });
        let mut completed = record(JobStatus::Completed);
        // A completed record without its result cannot say what the job produced.
        assert!(final_event(&completed, "me").is_none());
        completed.result = Some(result.clone());
        let Some(JobEvent::Completed(c)) = final_event(&completed, "me") else {
            panic!("a completed event");
        };
        assert_eq!(
            (c.job_id.as_str(), c.attempt, c.instance.as_str()),
            ("j1", 2, "worker-b")
        );
        assert_eq!(c.result, result);
        assert!((c.duration_s - 3.0).abs() < 1e-9, "{}", c.duration_s);

        let mut failed = record(JobStatus::Failed);
        failed.owner = None;
        failed.error = Some(ErrorBody {
            code: ErrorCode::InvalidDataset,
            reason: "one class".into(),
        });
        let Some(JobEvent::Failed(f)) = final_event(&failed, "me") else {
            panic!("a failed event");
        };
        assert_eq!((f.code, f.retrying), (ErrorCode::InvalidDataset, false));
        assert_eq!(f.instance, "me");

        let mut cancelled = record(JobStatus::Cancelled);
        cancelled.epochs_completed = Some(3);
        let Some(JobEvent::Cancelled(c)) = final_event(&cancelled, "me") else {
            panic!("a cancelled event");
        };
        assert_eq!(c.epochs_completed, 3);

        for status in [JobStatus::Queued, JobStatus::Running] {
            assert!(final_event(&record(status), "me").is_none());
        }
    }
}
