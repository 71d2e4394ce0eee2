//! The trainer service: `train` jobs. Data comes from the preprocessor through the bus (a
//! `prepare` request, then the prepared dataset from the object store); training runs on its
//! own thread; progress leaves as events; a checkpoint is written after every epoch and the
//! newest one is uploaded (one upload at a time: a checkpoint written while another uploads
//! waits, and a newer one replaces it), and a redelivered job resumes from it; the model goes
//! to the models object store. The trainer also coordinates `optimize` jobs
//! ([`crate::search`]), whose trials are train jobs.

use std::time::Instant;

use lexmesh_evaluator::EvaluationReport;
use lexmesh_protocol::event::{Progress, ProgressPhase, TrainSummary};
use lexmesh_protocol::record::ModelManifest;
use lexmesh_protocol::time::now_ms;
use lexmesh_protocol::{
    DatasetSource, ErrorCode, JobEvent, JobResult, PreprocessJob, ProtocolError, TrainJob,
};
use lexmesh_runtime::{Claim, JobContext, JobHandler, JobOutcome, ServiceRuntime, objects};
use lexmesh_trainer::artifact::{FORMAT_VERSION, SavedConfig};
use lexmesh_trainer::checkpoint::{
    CheckpointDir, CheckpointListener, SavedCheckpoint, snapshot_folder,
};
use lexmesh_trainer::progress::{BatchProgress, EpochProgress, TrainingEnded, TrainingStarted};
use lexmesh_trainer::training::{TrainingData, TrainingRun, spawn};
use lexmesh_trainer::{CancelToken, ModelDir, ProgressSink, StopReason, TrainError};
use tokio::sync::mpsc;

use super::convert::{self, Stage, evaluation_summary};
use super::data::{PreparedData, fetch_prepared, prepare_when_a_preprocessor_answers};
use super::preprocessor::scratch;
use super::{internal, models, runtime_error, settings};

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

/// Starts the trainer's job loops: `train`, and the coordinator of `optimize` jobs (whose
/// trials are train jobs).
pub fn start(runtime: &mut ServiceRuntime) {
    runtime.run_jobs(TrainHandler);
    runtime.run_jobs(crate::search::OptimizeHandler);
}

/// Asks a preprocessor to prepare the job's data (or names an existing prepared dataset) and
/// reads the prepared dataset from the object store. None when the job was cancelled or the
/// instance began to shut down while it waited for a preprocessor.
async fn prepared_data(
    job: &TrainJob,
    ctx: &JobContext,
) -> Result<Option<PreparedData>, ProtocolError> {
    let (id, just_stored) = match &job.dataset {
        DatasetSource::Prepared { dataset_id } => (dataset_id.clone(), false),
        _ => {
            let request = PreprocessJob {
                job_id: job.job_id.clone(),
                dataset: job.dataset.clone(),
                settings: job.settings.clone(),
            };
            match prepare_when_a_preprocessor_answers(ctx, &request).await? {
                Some(summary) => (summary.dataset_id, true),
                None => return Ok(None),
            }
        }
    };
    // A dataset the preprocessor that answered has just stored may not be on the copy of a
    // replicated store that answers a read for a moment: looked for again for a few seconds
    // before the job is rejected for it (a named one is looked for once).
    let looks = if just_stored { PREPARED_LOOKS } else { 1 };
    let mut pause = std::time::Duration::from_millis(100);
    for look in 1..=looks {
        if look > 1 {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(1));
        }
        if let Some(data) = fetch_prepared(ctx.mesh(), &id).await? {
            return Ok(Some(data));
        }
    }
    Err(ProtocolError::new(
        ErrorCode::DatasetNotFound,
        format!("no prepared dataset `{id}`"),
    ))
}

/// Reads of a prepared dataset before it is taken to be missing (about 5 s in all).
const PREPARED_LOOKS: u32 = 8;

/// Forwards the training thread's events into the async side.
struct EventSink {
    events: mpsc::UnboundedSender<TrainingEvent>,
    /// Where each finished batch is noted (the progress that heartbeats report and the health
    /// service judges stalls by), from the compute thread itself: a forwarder waiting for the
    /// broker (an event being stored while a cluster elects a leader) is no stall.
    progress: (std::sync::Arc<lexmesh_runtime::Worker>, String),
    /// Fire drills: wedge the compute thread after this many batches
    /// (`service.drill_stall_after_batches`).
    stall_after: Option<u64>,
    /// Fire drills: abort the process at the first batch (`service.drill_abort_job`).
    abort: bool,
    batches: u64,
}

enum TrainingEvent {
    Started(TrainingStarted),
    Batch(BatchProgress),
    Epoch(EpochProgress),
    /// A checkpoint was written (off the compute thread) and its snapshot waits in the
    /// [`NewestSnapshot`] slot.
    CheckpointReady,
    Ended,
}

/// The newest checkpoint snapshot not yet being uploaded: (epoch, folder). A newer checkpoint
/// replaces an older one still waiting, so uploads never fall behind the training: however
/// short the epochs, at most one upload runs and one waits.
type NewestSnapshot = std::sync::Arc<std::sync::Mutex<Option<(usize, std::path::PathBuf)>>>;

fn lock_slot(
    slot: &NewestSnapshot,
) -> std::sync::MutexGuard<'_, Option<(usize, std::path::PathBuf)>> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ProgressSink for EventSink {
    fn on_start(&mut self, e: &TrainingStarted) {
        let _ = self.events.send(TrainingEvent::Started(e.clone()));
    }
    fn on_batch(&mut self, e: &BatchProgress) {
        if self.abort {
            tracing::error!("drill: this job aborts its worker now");
            std::process::abort();
        }
        let (worker, job_id) = &self.progress;
        worker.record_progress(job_id, e.epoch as u32, e.total_epochs as u32, e.percent);
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
        let _ = self.events.send(TrainingEvent::Epoch(e.clone()));
    }
    fn on_end(&mut self, e: &TrainingEnded) {
        let _ = e;
        let (worker, job_id) = &self.progress;
        worker.end_progress(job_id);
        let _ = self.events.send(TrainingEvent::Ended);
    }
}

/// Told by the checkpoint writer (on its thread) of each written checkpoint: snapshots it by
/// hard links before the writer may replace it, and puts the snapshot in `slot` (dropping an
/// older one that no upload took yet); wakes the async side when the slot was empty.
fn checkpoint_listener(
    events: mpsc::UnboundedSender<TrainingEvent>,
    snapshots: std::path::PathBuf,
    slot: NewestSnapshot,
) -> CheckpointListener {
    std::sync::Arc::new(move |saved: &SavedCheckpoint| {
        // Named as the checkpoint: two of one epoch (one by time, one at its end) differ.
        let name = saved.path.file_name().map_or_else(
            || format!("epoch-{:04}-batch-{:06}", saved.epoch, saved.batch),
            |n| n.to_string_lossy().into_owned(),
        );
        let snapshot = snapshots.join(name);
        match snapshot_folder(&saved.path, &snapshot) {
            Ok(true) => {
                let replaced = lock_slot(&slot).replace((saved.epoch, snapshot));
                match replaced {
                    Some((_, older)) => {
                        let _ = std::fs::remove_dir_all(older);
                    }
                    None => {
                        let _ = events.send(TrainingEvent::CheckpointReady);
                    }
                }
            }
            Ok(false) => tracing::warn!("checkpoint of epoch {} vanished", saved.epoch),
            Err(err) => {
                tracing::warn!("checkpoint of epoch {} not snapshotted: {err}", saved.epoch);
            }
        }
    })
}

/// The protocol error of a training failure.
fn train_error(e: TrainError) -> ProtocolError {
    convert::train_error(e, Stage::Training)
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
    let Some(prepared) = prepared_data(&job, &ctx).await? else {
        // Cancelled, or shutting down (the job goes back to the stream for another replica),
        // while it waited for a preprocessor: nothing was trained.
        return Ok(if ctx.cancel.is_cancelled() {
            JobOutcome::Cancelled {
                epochs_completed: 0,
            }
        } else {
            JobOutcome::Interrupted
        });
    };
    if prepared.features != experiment.features || prepared.normalizer != experiment.normalizer {
        return Err(ProtocolError::new(
            ErrorCode::InvalidDataset,
            format!(
                "dataset `{}` was prepared with other preprocessing settings than this job's",
                prepared.dataset_id
            ),
        ));
    }
    // The data exists, was prepared and has two classes at least: the checks that need the
    // data or the stores are done.
    ctx.accept().await;
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
    let model_id = job.model_id().to_string();
    let run_fingerprint = experiment
        .run_fingerprint(&prepared.dataset_id)
        .map_err(|e| internal("fingerprint", e))?;
    // A redelivered job continues from the checkpoint its previous attempt stored.
    let resume = restore_checkpoint(&ctx, &job.job_id, &checkpoint_dir, &run_fingerprint).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let newest = NewestSnapshot::default();
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
        checkpoints: Some(checkpoint_dir.clone().with_listener(checkpoint_listener(
            tx.clone(),
            work.path().join("snapshots"),
            newest.clone(),
        ))),
        resume,
        fingerprint: run_fingerprint,
        compute_threads: ctx.worker.config.threads_per_job(),
        checkpoint_interval: Some(ctx.worker.config.service.checkpoint_interval),
    };
    if resume {
        tracing::info!(job = %job.job_id, "resuming from the stored checkpoint");
    }

    let cancel = CancelToken::new();
    let sink = EventSink {
        events: tx,
        progress: (ctx.worker.clone(), job.job_id.clone()),
        stall_after: ctx.worker.config.service.drill_stall_after_batches,
        abort: ctx.worker.config.service.drill_abort_job.as_deref() == Some(job.job_id.as_str()),
        batches: 0,
    };
    let handle = spawn(run, Box::new(sink), cancel.clone()).map_err(train_error)?;
    let drill_abort_at = ctx.worker.config.service.drill_abort_before_epoch_event;
    let mut stopping_for_shutdown = false;
    let mut finishing = false;
    let finish_within = ctx.worker.config.jobs.finish_within;
    // Asked to stop while finishing: handed back all the same if not done by then.
    let mut finish_by = tokio::time::Instant::now();
    // The checkpoint upload in flight: (epoch, task).
    let mut upload: Option<(usize, Upload)> = None;
    // The newest epoch whose checkpoint upload has ended.
    let mut stored_epoch = 0usize;
    let start_upload = || {
        let (epoch, snapshot) = lock_slot(&newest).take()?;
        let store = ctx.mesh().checkpoints.clone();
        let prefix = job.job_id.clone();
        let task = tokio::spawn(async move {
            // `latest` last: a reader never sees a pointer to a half-stored epoch.
            let stored = objects::sync_dir(&store, &prefix, &snapshot, &["latest"])
                .await
                .map(|_| ());
            let _ = std::fs::remove_dir_all(&snapshot);
            stored
        });
        Some((epoch, task))
    };
    let mut last_eta_s = f64::INFINITY;
    let mut last_batch_event: Option<Instant> = None;
    let mut epochs_done = 0u32;
    let progress = |phase: ProgressPhase| {
        Progress::new(&job.job_id, &model_id, ctx.attempt, ctx.instance(), phase)
    };
    let mut batches_per_epoch = 0u32;
    let mut pending_epochs: std::collections::VecDeque<EpochProgress> =
        std::collections::VecDeque::new();
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
                if last_eta_s <= finish_within.as_secs_f64() {
                    tracing::info!(job = %job.job_id, "shutting down: finishing (about {last_eta_s:.0}s left)");
                    finishing = true;
                    finish_by = tokio::time::Instant::now() + 2 * finish_within;
                } else {
                    stopping_for_shutdown = true;
                    cancel.cancel();
                }
                continue;
            }
            _ = tokio::time::sleep_until(finish_by), if finishing && !cancel.is_cancelled() => {
                tracing::info!(job = %job.job_id, "shutting down: not finished within {:?}; handing the job back", 2 * finish_within);
                stopping_for_shutdown = true;
                cancel.cancel();
                continue;
            }
            ended = async {
                match upload.as_mut() {
                    Some((_, task)) => task.await,
                    None => std::future::pending().await,
                }
            }, if upload.is_some() => {
                if let Some((epoch, _)) = upload.take() {
                    stored_epoch = stored_epoch.max(upload_ended(&job.job_id, epoch, ended));
                }
                drill_abort_before_epoch_event(drill_abort_at, &pending_epochs, stored_epoch);
                let template = progress(ProgressPhase::Epoch);
                publish_epochs(&ctx, &template, &mut pending_epochs, stored_epoch, batches_per_epoch).await;
                upload = start_upload();
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
                p.resumed_from_batch =
                    (resume && s.start_batch > 0).then_some(s.start_batch as u32);
                p.completion_percentage = 100.0 * f64::from(epochs_done) / f64::from(total.max(1));
                p.timestamp_ms = now_ms();
                if p.epoch > epochs_done {
                    epoch_span = Some(new_epoch_span(&ctx.span, p.epoch, total));
                }
                ctx.worker
                    .record_progress(&job.job_id, p.epoch, total, p.completion_percentage);
                ctx.publish(&JobEvent::Progress(p)).await;
                if resume {
                    // After `started`, which says where this attempt resumed: the epochs it
                    // tells again are the ones it starts from.
                    let template = progress(ProgressPhase::Epoch);
                    tell_restored_epochs(&ctx, &template, &s.restored, batches_per_epoch).await;
                }
            }
            TrainingEvent::Batch(b) => {
                last_eta_s = b.eta_secs;
                if !pending_epochs.is_empty() {
                    // Events stay in order: no batch of the next epoch before the epoch event
                    // that waits for its checkpoint.
                    continue;
                }
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
            TrainingEvent::Epoch(e) => {
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
                // Published once a checkpoint that holds it is stored: an epoch event tells the
                // world the epoch cannot be lost any more, while the compute thread is already
                // training the next one.
                pending_epochs.push_back(e);
                let template = progress(ProgressPhase::Epoch);
                publish_epochs(
                    &ctx,
                    &template,
                    &mut pending_epochs,
                    stored_epoch,
                    batches_per_epoch,
                )
                .await;
            }
            TrainingEvent::CheckpointReady => {
                if upload.is_none() {
                    upload = start_upload();
                }
            }
            TrainingEvent::Ended => {}
        }
    }
    // The training thread has ended: its last checkpoint is stored before the attempt ends (a
    // job handed back resumes from it).
    loop {
        if upload.is_none() {
            upload = start_upload();
        }
        let Some((epoch, task)) = upload.take() else {
            break;
        };
        stored_epoch = stored_epoch.max(upload_ended(&job.job_id, epoch, task.await));
        drill_abort_before_epoch_event(drill_abort_at, &pending_epochs, stored_epoch);
    }
    // Epochs whose checkpoint was not written (a write failed): told all the same.
    let template = progress(ProgressPhase::Epoch);
    publish_epochs(
        &ctx,
        &template,
        &mut pending_epochs,
        usize::MAX,
        batches_per_epoch,
    )
    .await;
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
            clear_checkpoints(&ctx, &job.job_id).await;
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
    let validation = evaluation_summary(report);
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
            validation_macro_f1: validation.macro_f1,
            dataset_id: dataset_id.clone(),
            folder: String::new(),
            source_model_id: None,
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
            clear_checkpoints(&ctx, &job.job_id).await;
            Ok(JobOutcome::Completed(result))
        }
        Ok(Claim::Lost { winner, .. }) => {
            models::discard_upload(ctx.mesh(), &manifest.model_id, &folder).await;
            Ok(JobOutcome::Superseded { winner })
        }
        Err(e) => {
            models::discard_upload(ctx.mesh(), &manifest.model_id, &folder).await;
            Err(runtime_error(e))
        }
    }
}

/// Downloads the job's stored checkpoint into `dir`; whether the run resumes from it. A
/// checkpoint that cannot be read in time (after one more try), is incomplete, or was made
/// with other settings or data is set aside with a logged reason: the run starts afresh
/// rather than stall or fail.
async fn restore_checkpoint(
    ctx: &JobContext,
    job_id: &str,
    dir: &CheckpointDir,
    fingerprint: &str,
) -> bool {
    let mut tries = 0;
    let reason = loop {
        tries += 1;
        let _ = std::fs::remove_dir_all(dir.path());
        match objects::download_dir(&ctx.mesh().checkpoints, job_id, dir.path()).await {
            Ok(0) => return false,
            Ok(_) => match dir.latest_complete() {
                Ok(Some(state)) if state.fingerprint == fingerprint => return true,
                Ok(Some(_)) => break "it was made with other settings or data".to_string(),
                Ok(None) => break "it has no `latest` pointer".to_string(),
                Err(e) => break e.to_string(),
            },
            Err(e) if tries < 2 => {
                tracing::warn!(job = %job_id, "reading the stored checkpoint failed ({e}); trying again");
            }
            Err(e) => break e.to_string(),
        }
    };
    tracing::warn!(job = %job_id, "the stored checkpoint is not used ({reason}); training from the start");
    let _ = std::fs::remove_dir_all(dir.path());
    false
}

/// A checkpoint upload: a task on the runtime.
type Upload = tokio::task::JoinHandle<Result<(), lexmesh_runtime::RuntimeError>>;

/// Logs how the upload of `epoch`'s checkpoint ended; returns the epoch. A failed upload is
/// logged and its epochs are told all the same (the previous checkpoint stays the newest
/// stored one).
fn upload_ended(
    job_id: &str,
    epoch: usize,
    ended: Result<Result<(), lexmesh_runtime::RuntimeError>, tokio::task::JoinError>,
) -> usize {
    let failure = match ended {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(err.to_string()),
        Err(err) => Some(err.to_string()),
    };
    if let Some(err) = failure {
        tracing::warn!(job = %job_id, "checkpoint of epoch {epoch} not stored: {err}");
    }
    epoch
}

/// Tells again, at the start of a resumed attempt, the epochs of its checkpoint whose events
/// may be missing: the process that stored the checkpoint may have died before it published
/// them. An epoch's event follows its entry in the job record, so every epoch after the
/// record's last (and that one, whose event may not have followed) is told; an event that was
/// stored has the same id ([`lexmesh_runtime::events::event_id`]) and the stream drops the
/// copy. Without the record, every restored epoch is told.
async fn tell_restored_epochs(
    ctx: &JobContext,
    template: &Progress,
    restored: &[EpochProgress],
    batches_per_epoch: u32,
) {
    let recorded = match lexmesh_runtime::records::read(&ctx.mesh().jobs, &ctx.job_id).await {
        Ok(record) => record.and_then(|(r, _)| r.epochs_completed).unwrap_or(0),
        Err(e) => {
            tracing::warn!(job = %ctx.job_id, "cannot read the job record ({e}); telling every restored epoch again");
            0
        }
    };
    for e in restored.iter().filter(|e| e.epoch as u32 >= recorded) {
        publish_epoch(ctx, template.clone(), e, batches_per_epoch).await;
    }
}

/// Fire drills only (`service.drill_abort_before_epoch_event`): aborts the process once the
/// checkpoint that holds epoch `at` is stored and that epoch's event is still to be published,
/// as a worker killed at that moment would die.
fn drill_abort_before_epoch_event(
    at: Option<u32>,
    pending: &std::collections::VecDeque<EpochProgress>,
    stored_epoch: usize,
) {
    let Some(at) = at.map(|a| a as usize) else {
        return;
    };
    if stored_epoch >= at && pending.iter().any(|e| e.epoch == at) {
        tracing::error!(
            "drill: the checkpoint of epoch {at} is stored; this trainer aborts before telling the epoch"
        );
        std::process::abort();
    }
}

/// Publishes the pending epochs up to `up_to` (their checkpoint is stored), in order.
async fn publish_epochs(
    ctx: &JobContext,
    template: &Progress,
    pending: &mut std::collections::VecDeque<EpochProgress>,
    up_to: usize,
    batches_per_epoch: u32,
) {
    while let Some(e) = pending.pop_front() {
        if e.epoch > up_to {
            pending.push_front(e);
            break;
        }
        publish_epoch(ctx, template.clone(), &e, batches_per_epoch).await;
    }
}

/// Records a finished epoch in the job record and publishes its `progress` event (`base` is
/// the job's progress template with phase `epoch`).
async fn publish_epoch(
    ctx: &JobContext,
    base: Progress,
    e: &EpochProgress,
    batches_per_epoch: u32,
) {
    let job_id = base.job_id.clone();
    let job_id = job_id.as_str();
    let written = lexmesh_runtime::records::update(&ctx.mesh().jobs, job_id, |r| {
        r.map(|mut r| {
            r.epochs_completed = Some(e.epoch as u32);
            r.total_epochs = Some(e.total_epochs as u32);
            r.updated_ms = now_ms();
            r
        })
    })
    .await;
    if let Err(err) = written {
        // The event still goes out; the record catches up at the next epoch or at the end.
        tracing::warn!(job = %job_id, "cannot record epoch {} in the job record: {err}", e.epoch);
    }
    let mut p = base;
    p.epoch = e.epoch as u32;
    p.total_epochs = e.total_epochs as u32;
    p.batch = batches_per_epoch;
    p.total_batches = batches_per_epoch;
    p.loss = e.loss;
    p.accuracy = e.accuracy;
    p.validation_loss = Some(e.validation_loss);
    p.validation_accuracy = Some(e.validation_accuracy);
    p.validation_macro_f1 = Some(e.validation_macro_f1);
    p.completion_percentage = e.percent;
    p.estimated_time_remaining_s = e.eta_secs;
    p.examples_per_sec = e.examples_per_sec;
    p.timestamp_ms = now_ms();
    ctx.worker
        .record_progress(job_id, p.epoch, p.total_epochs, p.completion_percentage);
    ctx.publish(&JobEvent::Progress(p)).await;
}

/// Removes a finished job's checkpoints from the store.
/// Deletes a finished job's checkpoints. A failure is logged, not fatal: the job is over, and
/// what stays behind only takes room.
async fn clear_checkpoints(ctx: &JobContext, job_id: &str) {
    let store = &ctx.mesh().checkpoints;
    let names = match objects::list(store, &format!("{job_id}/")).await {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(job = %job_id, "cannot list the checkpoints to delete: {e}");
            return;
        }
    };
    for (name, _) in names {
        if let Err(e) = store.delete(&name).await {
            tracing::warn!(job = %job_id, "cannot delete checkpoint object {name}: {e}");
        }
    }
}
