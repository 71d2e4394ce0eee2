//! The trainer service: `train` jobs. Data comes from the preprocessor through the bus (a
//! `prepare` request, then the prepared dataset from the object store); training runs on its
//! own thread; progress leaves as events; a checkpoint is stored after every epoch, and a
//! redelivered job resumes from it; the model goes to the models object store.

use std::time::Instant;

use lexmesh_evaluator::EvaluationReport;
use lexmesh_protocol::event::{
    EvaluationSummary, PreparedSummary, Progress, ProgressPhase, TrainSummary,
};
use lexmesh_protocol::record::ModelManifest;
use lexmesh_protocol::time::now_ms;
use lexmesh_protocol::{
    DatasetSource, ErrorCode, ErrorReply, JobEvent, JobResult, PreprocessJob, ProtocolError,
    TrainJob, subjects,
};
use lexmesh_runtime::{Claim, JobContext, JobHandler, JobOutcome, ServiceRuntime, objects};
use lexmesh_trainer::artifact::{FORMAT_VERSION, SavedConfig};
use lexmesh_trainer::checkpoint::CheckpointDir;
use lexmesh_trainer::progress::{BatchProgress, EpochProgress, TrainingEnded, TrainingStarted};
use lexmesh_trainer::training::{TrainingData, TrainingRun, spawn};
use lexmesh_trainer::{
    CancelToken, ExperimentConfig, ModelDir, ProgressSink, StopReason, TrainError,
};
use tokio::sync::mpsc;

use super::data::{PreparedData, fetch_prepared};
use super::preprocessor::scratch;
use super::{internal, models, settings, unavailable};

/// On shutdown, a job expected to end within this long is finished instead of handed back.
pub const FINISH_ON_SHUTDOWN_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `train` jobs.
pub struct TrainHandler;

impl JobHandler for TrainHandler {
    type Job = TrainJob;

    fn model_id(&self, job: &TrainJob) -> Option<String> {
        Some(job.model_id().to_string())
    }

    async fn run(&self, job: TrainJob, ctx: JobContext) -> Result<JobOutcome, ProtocolError> {
        train_job(job, ctx).await
    }
}

/// Starts the trainer's job loop.
pub fn start(runtime: &mut ServiceRuntime) {
    runtime.run_jobs(TrainHandler);
}

/// Asks a preprocessor to prepare the job's data (or names an existing prepared dataset) and
/// reads the prepared dataset from the object store.
async fn prepared_data(job: &TrainJob, ctx: &JobContext) -> Result<PreparedData, ProtocolError> {
    let id = match &job.dataset {
        DatasetSource::Prepared { dataset_id } => dataset_id.clone(),
        _ => request_prepare(job, ctx).await?.dataset_id,
    };
    fetch_prepared(ctx.mesh(), &id).await?.ok_or_else(|| {
        ProtocolError::new(
            ErrorCode::DatasetNotFound,
            format!("no prepared dataset `{id}`"),
        )
    })
}

async fn request_prepare(
    job: &TrainJob,
    ctx: &JobContext,
) -> Result<PreparedSummary, ProtocolError> {
    let request = PreprocessJob {
        job_id: job.job_id.clone(),
        dataset: job.dataset.clone(),
        settings: job.settings.clone(),
    };
    let body =
        serde_json::to_vec(&request).map_err(|e| internal("encoding a prepare request", e))?;
    let timeout = ctx.worker.config.nats.request_timeout;
    let reply = tokio::time::timeout(
        timeout,
        ctx.mesh().client.request(subjects::PREPARE, body.into()),
    )
    .await
    .map_err(|_| {
        ProtocolError::new(
            ErrorCode::Unavailable,
            format!("no preprocessor answered within {timeout:?}"),
        )
    })?
    .map_err(|e| ProtocolError::new(ErrorCode::Unavailable, format!("prepare request: {e}")))?;
    if let Ok(error) = serde_json::from_slice::<ErrorReply>(&reply.payload) {
        return Err(error.into());
    }
    serde_json::from_slice(&reply.payload)
        .map_err(|e| internal("the preprocessor's reply is unreadable", e))
}

/// Forwards the training thread's events into the async side.
struct EventSink {
    events: mpsc::UnboundedSender<TrainingEvent>,
    /// The run's checkpoints, and where each epoch's is snapshotted for upload.
    checkpoints: CheckpointDir,
    snapshots: std::path::PathBuf,
    /// Fire drills: wedge the compute thread after this many batches
    /// (`service.drill_stall_after_batches`).
    stall_after: Option<u64>,
    batches: u64,
}

enum TrainingEvent {
    Started(TrainingStarted),
    Batch(BatchProgress),
    /// An epoch, with a snapshot of its checkpoint (None when it could not be taken).
    Epoch(EpochProgress, Option<std::path::PathBuf>),
    Ended,
}

impl ProgressSink for EventSink {
    fn on_start(&mut self, e: &TrainingStarted) {
        let _ = self.events.send(TrainingEvent::Started(e.clone()));
    }
    fn on_batch(&mut self, e: &BatchProgress) {
        let _ = self.events.send(TrainingEvent::Batch(e.clone()));
        self.batches += 1;
        if self.stall_after.is_some_and(|n| self.batches >= n) {
            tracing::warn!("drill: the compute thread stops making progress now");
            loop {
                std::thread::park();
            }
        }
    }
    fn on_epoch(&mut self, e: &EpochProgress) {
        // Taken here, on the training thread, before the next epoch replaces the checkpoint:
        // the upload then reads a whole checkpoint however far training has moved on.
        let snapshot = self.snapshots.join(format!("epoch-{:04}", e.epoch));
        let taken = match self.checkpoints.snapshot(&snapshot) {
            Ok(true) => Some(snapshot),
            Ok(false) => None,
            Err(err) => {
                tracing::warn!("checkpoint of epoch {} not snapshotted: {err}", e.epoch);
                None
            }
        };
        let _ = self.events.send(TrainingEvent::Epoch(e.clone(), taken));
    }
    fn on_end(&mut self, e: &TrainingEnded) {
        let _ = e;
        let _ = self.events.send(TrainingEvent::Ended);
    }
}

fn train_error(e: TrainError) -> ProtocolError {
    match e {
        TrainError::Config(reason) => ProtocolError::new(ErrorCode::InvalidValue, reason),
        TrainError::Data(d) => ProtocolError::new(ErrorCode::InvalidDataset, d.to_string()),
        TrainError::Io { .. } => internal("training", e),
        other => ProtocolError::new(ErrorCode::TrainingFailed, other.to_string()),
    }
}

fn fingerprint(
    experiment: &ExperimentConfig,
    prepared: &PreparedData,
) -> Result<String, ProtocolError> {
    let settings = serde_json::to_vec(experiment).map_err(|e| internal("fingerprint", e))?;
    Ok(format!(
        "{}-{:016x}",
        prepared.dataset_id,
        lexmesh_preprocessor::tokenize::fnv1a(&settings)
    ))
}

/// The span of one training epoch, under the job's span.
fn new_epoch_span(job_span: &tracing::Span, epoch: u32, total_epochs: u32) -> tracing::Span {
    tracing::info_span!(
        parent: job_span,
        "epoch",
        otel.name = %format!("epoch {epoch}/{total_epochs}"),
        epoch,
        total_epochs,
        loss = tracing::field::Empty,
        accuracy = tracing::field::Empty,
        validation_loss = tracing::field::Empty,
        validation_accuracy = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

async fn train_job(job: TrainJob, ctx: JobContext) -> Result<JobOutcome, ProtocolError> {
    let experiment = settings::experiment(&job.settings)?;
    let prepared = prepared_data(&job, &ctx).await?;
    if prepared.features != experiment.features || prepared.normalizer != experiment.normalizer {
        return Err(ProtocolError::new(
            ErrorCode::InvalidValue,
            format!(
                "dataset `{}` was prepared with other preprocessing settings than this job's",
                prepared.dataset_id
            ),
        ));
    }
    let work = scratch(&ctx.worker)?;
    let model_dir = ModelDir::new(work.path().join("model"));
    let checkpoint_dir = CheckpointDir::new(work.path().join("checkpoints"));
    let saved = SavedConfig {
        format_version: FORMAT_VERSION,
        experiment: experiment.clone(),
        feature_space: prepared.preprocessor.feature_space(),
    };
    model_dir
        .write_inputs(&saved, &prepared.preprocessor, &prepared.labels)
        .map_err(train_error)?;
    // A redelivered job continues from the checkpoint its previous attempt stored.
    let restored =
        objects::download_dir(&ctx.mesh().checkpoints, &job.job_id, checkpoint_dir.path())
            .await
            .map_err(unavailable)?;
    let resume = restored > 0 && checkpoint_dir.latest().map_err(train_error)?.is_some();
    let model_id = job.model_id().to_string();
    let run_fingerprint = fingerprint(&experiment, &prepared)?;
    // The vectors move into the run: a dataset is held once, not twice.
    let PreparedData {
        dataset_id,
        labels,
        train,
        train_labels,
        validation,
        validation_labels,
        ..
    } = prepared;
    let run = TrainingRun {
        config: experiment.clone(),
        classes: labels.len(),
        feature_space: saved.feature_space,
        data: TrainingData {
            train,
            train_labels,
            validation,
            validation_labels,
        },
        checkpoints: Some(checkpoint_dir.clone()),
        resume,
        fingerprint: run_fingerprint,
    };
    if resume {
        tracing::info!(job = %job.job_id, "resuming from the stored checkpoint");
    }

    let cancel = CancelToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink = EventSink {
        events: tx,
        checkpoints: checkpoint_dir.clone(),
        snapshots: work.path().join("snapshots"),
        stall_after: ctx.worker.config.service.drill_stall_after_batches,
        batches: 0,
    };
    let handle = spawn(run, Box::new(sink), cancel.clone()).map_err(train_error)?;
    let mut stopping_for_shutdown = false;
    let mut finishing = false;
    let mut last_eta_s = f64::INFINITY;
    let mut last_batch_event: Option<Instant> = None;
    let mut epochs_done = 0u32;
    let progress = |phase: ProgressPhase| Progress {
        job_id: job.job_id.clone(),
        model_id: model_id.clone(),
        session_id: job.job_id.clone(),
        attempt: ctx.attempt,
        instance: ctx.instance().to_string(),
        phase,
        epoch: 0,
        total_epochs: 0,
        batch: 0,
        total_batches: 0,
        loss: 0.0,
        accuracy: 0.0,
        validation_loss: None,
        validation_accuracy: None,
        completion_percentage: 0.0,
        estimated_time_remaining_s: 0.0,
        examples_per_sec: 0.0,
        resumed_from_epoch: None,
        timestamp_ms: 0.0,
    };
    let mut batches_per_epoch = 0u32;
    let interval = ctx.worker.config.service.progress_interval;
    // One span per epoch, a child of the job's span: open from the epoch's start to its end.
    let mut epoch_span: Option<tracing::Span> = None;
    loop {
        let event = tokio::select! {
            e = rx.recv() => match e { Some(e) => e, None => break },
            _ = ctx.cancel.cancelled(), if !cancel.is_cancelled() => {
                cancel.cancel();
                continue;
            }
            _ = ctx.shutdown().cancelled(), if !cancel.is_cancelled() && !finishing => {
                if last_eta_s <= FINISH_ON_SHUTDOWN_WITHIN.as_secs_f64() {
                    tracing::info!(job = %job.job_id, "shutting down: finishing (about {last_eta_s:.0}s left)");
                    finishing = true;
                } else {
                    stopping_for_shutdown = true;
                    cancel.cancel();
                }
                continue;
            }
        };
        match event {
            TrainingEvent::Started(s) => {
                batches_per_epoch = s.batches_per_epoch as u32;
                epochs_done = s.start_epoch.saturating_sub(1) as u32;
                let total = s.total_epochs as u32;
                let mut p = progress(ProgressPhase::Started);
                p.epoch = s.start_epoch.clamp(1, s.total_epochs.max(1)) as u32;
                p.total_epochs = total;
                p.total_batches = batches_per_epoch;
                p.resumed_from_epoch = resume.then_some(epochs_done);
                p.completion_percentage = 100.0 * f64::from(epochs_done) / f64::from(total.max(1));
                p.timestamp_ms = now_ms();
                if p.epoch > epochs_done {
                    epoch_span = Some(new_epoch_span(&ctx.span, p.epoch, total));
                }
                ctx.worker
                    .record_progress(&job.job_id, p.epoch, total, p.completion_percentage);
                ctx.publish(&JobEvent::Progress(p)).await;
            }
            TrainingEvent::Batch(b) => {
                ctx.worker.record_progress(
                    &job.job_id,
                    b.epoch as u32,
                    b.total_epochs as u32,
                    b.percent,
                );
                last_eta_s = b.eta_secs;
                let last_of_epoch = b.batch == b.total_batches;
                let due = last_batch_event.is_none_or(|t| t.elapsed() >= interval);
                if !(due || last_of_epoch) {
                    continue;
                }
                last_batch_event = Some(Instant::now());
                let mut p = progress(ProgressPhase::Batch);
                p.epoch = b.epoch as u32;
                p.total_epochs = b.total_epochs as u32;
                p.batch = b.batch as u32;
                p.total_batches = b.total_batches as u32;
                p.loss = b.loss;
                p.accuracy = b.accuracy;
                p.completion_percentage = b.percent;
                p.estimated_time_remaining_s = b.eta_secs;
                p.examples_per_sec = b.examples_per_sec;
                p.timestamp_ms = now_ms();
                ctx.publish(&JobEvent::Progress(p)).await;
            }
            TrainingEvent::Epoch(e, snapshot) => {
                epochs_done = e.epoch as u32;
                if let Some(span) = epoch_span.take() {
                    span.record("outcome", "completed");
                    span.record("loss", e.loss);
                    span.record("accuracy", e.accuracy);
                    span.record("validation_loss", e.validation_loss);
                    span.record("validation_accuracy", e.validation_accuracy);
                }
                if e.epoch < e.total_epochs {
                    epoch_span = Some(new_epoch_span(
                        &ctx.span,
                        epochs_done + 1,
                        e.total_epochs as u32,
                    ));
                }
                if let Some(snapshot) = snapshot {
                    // `latest` last: a reader never sees a pointer to a half-stored epoch.
                    if let Err(err) = objects::sync_dir(
                        &ctx.mesh().checkpoints,
                        &job.job_id,
                        &snapshot,
                        &["latest"],
                    )
                    .await
                    {
                        tracing::warn!(job = %job.job_id, "checkpoint of epoch {} not stored: {err}", e.epoch);
                    }
                    let _ = std::fs::remove_dir_all(&snapshot);
                }
                let _ = lexmesh_runtime::records::update(&ctx.mesh().jobs, &job.job_id, |r| {
                    r.map(|mut r| {
                        r.epochs_completed = Some(e.epoch as u32);
                        r.total_epochs = Some(e.total_epochs as u32);
                        r.updated_ms = now_ms();
                        r
                    })
                })
                .await;
                let mut p = progress(ProgressPhase::Epoch);
                p.epoch = e.epoch as u32;
                p.total_epochs = e.total_epochs as u32;
                p.batch = batches_per_epoch;
                p.total_batches = batches_per_epoch;
                p.loss = e.loss;
                p.accuracy = e.accuracy;
                p.validation_loss = Some(e.validation_loss);
                p.validation_accuracy = Some(e.validation_accuracy);
                p.completion_percentage = e.percent;
                p.estimated_time_remaining_s = e.eta_secs;
                p.examples_per_sec = e.examples_per_sec;
                p.timestamp_ms = now_ms();
                ctx.worker.record_progress(
                    &job.job_id,
                    p.epoch,
                    p.total_epochs,
                    p.completion_percentage,
                );
                ctx.publish(&JobEvent::Progress(p)).await;
            }
            TrainingEvent::Ended => {}
        }
    }
    if let Some(span) = epoch_span.take() {
        // Stopped early, cancelled or interrupted before this epoch ended.
        span.record("outcome", "not_finished");
    }
    let outcome = tokio::task::spawn_blocking(move || handle.join())
        .await
        .map_err(|e| internal("joining the training thread", e))?
        .map_err(|_| ProtocolError::new(ErrorCode::TrainingFailed, "the training thread panicked"))?
        .map_err(train_error)?;

    if outcome.reason == StopReason::Cancelled {
        let epochs_completed = outcome.history.len() as u32;
        return Ok(if stopping_for_shutdown {
            JobOutcome::Interrupted
        } else {
            let _ = clear_checkpoints(&ctx, &job.job_id).await;
            JobOutcome::Cancelled { epochs_completed }
        });
    }
    let report = EvaluationReport::new(labels.labels().to_vec(), &outcome.validation)
        .map_err(|e| internal("the validation report", e))?;
    let metrics = serde_json::json!({
        "best_epoch": outcome.best_epoch,
        "stop_reason": outcome.reason,
        "validation": report,
    });
    model_dir
        .write_outputs(&outcome.model, &metrics, &outcome.history)
        .map_err(train_error)?;
    let validation: EvaluationSummary = serde_json::to_value(&report)
        .and_then(serde_json::from_value)
        .map_err(|e| internal("converting the validation report", e))?;
    // Upload into this attempt's own folder; only the attempt that completes the job
    // publishes the manifest.
    let folder = format!("{}-a{}", job.job_id, ctx.attempt);
    let manifest = models::upload(
        ctx.mesh(),
        model_dir.path(),
        &folder,
        ModelManifest {
            model_id: model_id.clone(),
            job_id: job.job_id.clone(),
            model_kind: experiment.model.kind.name().into(),
            labels: labels.labels().to_vec(),
            validation_macro_f1: report.macro_f1,
            dataset_id: dataset_id.clone(),
            folder: String::new(),
            files: Vec::new(),
            created_ms: now_ms(),
        },
    )
    .await?;
    let result = JobResult::Train(TrainSummary {
        model_id,
        dataset_id: dataset_id.clone(),
        best_epoch: outcome.best_epoch as u32,
        epochs_completed: outcome.history.len().max(epochs_done as usize) as u32,
        stop_reason: match outcome.reason {
            StopReason::EarlyStopped => "early_stopped".into(),
            _ => "completed".into(),
        },
        validation,
    });
    match ctx.complete_once(&result).await {
        Ok(Claim::Won) => {
            models::publish_manifest(ctx.mesh(), &manifest).await?;
            let _ = clear_checkpoints(&ctx, &job.job_id).await;
            Ok(JobOutcome::Completed(result))
        }
        Ok(Claim::Lost { winner, .. }) => {
            models::discard_upload(ctx.mesh(), &manifest.model_id, &folder).await;
            Ok(JobOutcome::Superseded { winner })
        }
        Err(e) => {
            models::discard_upload(ctx.mesh(), &manifest.model_id, &folder).await;
            Err(unavailable(e))
        }
    }
}

/// Removes a finished job's checkpoints from the store.
async fn clear_checkpoints(
    ctx: &JobContext,
    job_id: &str,
) -> Result<(), lexmesh_runtime::RuntimeError> {
    for (name, _) in objects::list(&ctx.mesh().checkpoints, &format!("{job_id}/")).await? {
        let _ = ctx.mesh().checkpoints.delete(&name).await;
    }
    Ok(())
}
