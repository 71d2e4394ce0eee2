//! The job-consumer loop every service shares.
//!
//! One durable pull consumer per job kind, shared by all replicas. A replica pulls one job per
//! free slot (a semaphore of `jobs.concurrency` permits), so it never holds a job it cannot
//! start. While a job runs, a progress ack every `ack_wait / 3` keeps it ours; if the process
//! dies, the acks stop and JetStream gives the job to another replica after `ack_wait`.
//!
//! Outcomes: completed → `completed` event, ack. Cancelled → `cancelled` event, term.
//! Interrupted by shutdown → nak without delay, so another replica takes it at once.
//! Retryable failure → `failed` event with `retrying: true`, nak with exponential delay, until
//! `max_deliver`. Permanent failure, or a malformed message → `failed` event, term: a bad
//! message is never retried and never takes the process down.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use lexmesh_protocol::decode::{decode, salvage_job_id};
use lexmesh_protocol::error::ErrorBody;
use lexmesh_protocol::event::{Accepted, Cancelled, Completed, Failed};
use lexmesh_protocol::job::JobRequest;
use lexmesh_protocol::record::{JobRecord, JobStatus};
use lexmesh_protocol::time::now_ms;
use lexmesh_protocol::{ErrorCode, JobEvent, JobKind, JobResult, ProtocolError};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::RuntimeError;
use crate::mesh::Mesh;
use crate::worker::Worker;
use crate::{events, records};

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

    /// Publishes an event of this job (errors are logged: a lost progress event must not
    /// fail the job).
    pub async fn publish(&self, event: &JobEvent) {
        if let Err(e) = events::publish(self.mesh(), event).await {
            tracing::warn!(job = %self.job_id, "cannot publish {} event: {e}", event.kind().name());
        }
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
    let slots = Arc::new(Semaphore::new(concurrency as usize));
    let mut running = tokio::task::JoinSet::new();
    tracing::info!(kind = kind.name(), concurrency, "taking jobs");
    'pull: loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = worker.shutdown.cancelled() => break,
        };
        let batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_secs(5))
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
    Ok(())
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
    let (attempt, sequence) = attempt_of(&message);
    let max_deliver = worker.config.jobs.max_deliver.max(1);
    let job: H::Job = match decode(&message.payload) {
        Ok(job) => job,
        Err(error) => {
            let job_id =
                salvage_job_id(&message.payload).unwrap_or_else(|| format!("seq-{sequence}"));
            tracing::warn!(job = %job_id, code = %error.code, "rejected a {} message: {}", kind.name(), error.reason);
            reject(&worker, &message, kind, &job_id, attempt, &error).await;
            return;
        }
    };
    let job_id = job.job_id().to_string();
    if let Some(header_id) = message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_string())
        && header_id != job_id
    {
        let error = ProtocolError::new(
            ErrorCode::JobIdMismatch,
            format!("Nats-Msg-Id `{header_id}` differs from job_id `{job_id}`"),
        );
        reject(&worker, &message, kind, &job_id, attempt, &error).await;
        return;
    }
    let kv = &worker.mesh.jobs;
    match records::read(kv, &job_id).await {
        Ok(Some((record, _))) if record.status.is_final() => {
            tracing::info!(job = %job_id, "job already {:?}; duplicate submit dropped", record.status);
            ack(&message, AckKind::Ack, &job_id).await;
            return;
        }
        Ok(_) => {}
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
    }
    if records::is_marked_cancelled(kv, &job_id)
        .await
        .unwrap_or(false)
    {
        let model_id = handler.model_id(&job);
        open_record(
            &worker,
            &job_id,
            kind,
            attempt,
            model_id,
            JobStatus::Cancelled,
        )
        .await;
        tracing::info!(job = %job_id, "cancelled before it started");
        let event = JobEvent::Cancelled(Cancelled {
            job_id: job_id.clone(),
            kind,
            attempt,
            instance: worker.instance.clone(),
            epochs_completed: 0,
            timestamp_ms: now_ms(),
        });
        publish(&worker, &event).await;
        ack(&message, AckKind::Term, &job_id).await;
        return;
    }
    let model_id = handler.model_id(&job);
    open_record(
        &worker,
        &job_id,
        kind,
        attempt,
        model_id,
        JobStatus::Running,
    )
    .await;
    let cancel = worker.register(&job_id, kind, attempt);
    publish(
        &worker,
        &JobEvent::Accepted(Accepted {
            job_id: job_id.clone(),
            kind,
            attempt,
            instance: worker.instance.clone(),
            timestamp_ms: now_ms(),
        }),
    )
    .await;
    tracing::info!(job = %job_id, attempt, "running {} job", kind.name());

    let keep_alive = {
        let message = message.clone();
        let every = (worker.config.jobs.ack_wait / 3).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!("progress ack failed: {e}");
                }
            }
        })
    };
    let ctx = JobContext {
        worker: worker.clone(),
        job_id: job_id.clone(),
        kind,
        attempt,
        cancel,
    };
    let started = Instant::now();
    let outcome = handler.run(job, ctx).await;
    keep_alive.abort();

    let failed_event = |error: &ProtocolError, retrying: bool| {
        JobEvent::Failed(Failed {
            job_id: job_id.clone(),
            kind,
            attempt,
            instance: worker.instance.clone(),
            code: error.code,
            reason: error.reason.clone(),
            retrying,
            timestamp_ms: now_ms(),
        })
    };
    match outcome {
        Ok(JobOutcome::Completed(result)) => {
            finish_record(
                &worker,
                &job_id,
                JobStatus::Completed,
                Some(result.clone()),
                None,
            )
            .await;
            let event = JobEvent::Completed(Completed {
                job_id: job_id.clone(),
                kind,
                attempt,
                instance: worker.instance.clone(),
                duration_s: started.elapsed().as_secs_f64(),
                result,
                timestamp_ms: now_ms(),
            });
            publish(&worker, &event).await;
            ack(&message, AckKind::Ack, &job_id).await;
            worker.finish(&job_id, true);
            tracing::info!(job = %job_id, "completed in {:.1}s", started.elapsed().as_secs_f64());
        }
        Ok(JobOutcome::Cancelled { epochs_completed }) => {
            finish_record(&worker, &job_id, JobStatus::Cancelled, None, None).await;
            let event = JobEvent::Cancelled(Cancelled {
                job_id: job_id.clone(),
                kind,
                attempt,
                instance: worker.instance.clone(),
                epochs_completed,
                timestamp_ms: now_ms(),
            });
            publish(&worker, &event).await;
            ack(&message, AckKind::Term, &job_id).await;
            worker.finish(&job_id, true);
            tracing::info!(job = %job_id, "cancelled after {epochs_completed} epoch(s)");
        }
        Ok(JobOutcome::Interrupted) => {
            let _ = records::update(&worker.mesh.jobs, &job_id, |current| {
                current.map(|mut r| {
                    r.status = JobStatus::Queued;
                    r.updated_ms = now_ms();
                    r
                })
            })
            .await;
            ack(&message, AckKind::Nak(None), &job_id).await;
            worker.finish(&job_id, true);
            tracing::info!(job = %job_id, "handed back for another replica (shutting down)");
        }
        Err(error) if error.retryable() && attempt < max_deliver => {
            let delay = worker.config.jobs.retry_delay_after(attempt);
            finish_record(&worker, &job_id, JobStatus::Retrying, None, Some(&error)).await;
            publish(&worker, &failed_event(&error, true)).await;
            ack(&message, AckKind::Nak(Some(delay)), &job_id).await;
            worker.finish(&job_id, false);
            tracing::warn!(job = %job_id, attempt, "failed ({error}); retrying in {delay:?}");
        }
        Err(error) => {
            finish_record(&worker, &job_id, JobStatus::Failed, None, Some(&error)).await;
            publish(&worker, &failed_event(&error, false)).await;
            ack(&message, AckKind::Term, &job_id).await;
            worker.finish(&job_id, false);
            tracing::warn!(job = %job_id, attempt, "failed for good: {error}");
        }
    }
}

/// Writes the record of a job a worker takes (creating it for a job submitted without one).
async fn open_record(
    worker: &Worker,
    job_id: &str,
    kind: JobKind,
    attempt: u32,
    model_id: Option<String>,
    status: JobStatus,
) {
    let instance = worker.instance.clone();
    let write = records::update(&worker.mesh.jobs, job_id, |current| {
        let now = now_ms();
        Some(JobRecord {
            owner: Some(instance.clone()),
            model_id: model_id.clone(),
            epochs_completed: current.as_ref().and_then(|c| c.epochs_completed),
            total_epochs: current.as_ref().and_then(|c| c.total_epochs),
            created_ms: current.as_ref().map_or(now, |c| c.created_ms),
            ..JobRecord::new(job_id, kind, status, attempt, now)
        })
    })
    .await;
    if let Err(e) = write {
        tracing::warn!(job = job_id, "cannot write the job record: {e}");
    }
}

async fn publish(worker: &Worker, event: &JobEvent) {
    if let Err(e) = events::publish(&worker.mesh, event).await {
        tracing::warn!(
            job = event.job_id(),
            "cannot publish {} event: {e}",
            event.kind().name()
        );
    }
}

async fn finish_record(
    worker: &Worker,
    job_id: &str,
    status: JobStatus,
    result: Option<JobResult>,
    error: Option<&ProtocolError>,
) {
    let instance = worker.instance.clone();
    let write = records::update(&worker.mesh.jobs, job_id, |current| {
        let mut record = current?;
        record.status = status;
        record.owner = Some(instance.clone());
        record.updated_ms = now_ms();
        if let Some(JobResult::Train(t)) = &result {
            record.epochs_completed = Some(t.epochs_completed);
        }
        record.result = result.clone();
        record.error = error.map(|e| ErrorBody {
            code: e.code,
            reason: e.reason.clone(),
        });
        Some(record)
    })
    .await;
    if let Err(e) = write {
        tracing::warn!(job = job_id, "cannot update the job record: {e}");
    }
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
    publish(worker, &event).await;
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
    worker.count_failure();
}
