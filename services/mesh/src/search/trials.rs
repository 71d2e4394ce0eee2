//! Carrying out a search's actions on the mesh, each one idempotently (a coordinator that
//! takes a search over repeats what its predecessor may not have done):
//!
//! - a trial starts as a train job on `lexmesh.jobs.train` with job id = `Nats-Msg-Id` = the
//!   trial id, published only when no job record of that id exists (and deduplicated by the
//!   stream when one is on its way), so a trial never runs twice;
//! - a trial stops through the cancel path: a cancel marker in the jobs bucket (a queued or
//!   redelivered train job is dropped when a trainer takes it) and a cancel request (the
//!   trainer running it stops within one batch). A trial whose train job was never published
//!   is published after its marker, so that it ends with a `cancelled` event like the others;
//! - the search's events go out through JetStream with the action's dedup id as
//!   `Nats-Msg-Id`;
//! - the best trial's model is registered under the search's model id.

use std::collections::HashMap;

use async_nats::jetstream::message::PublishMessage;
use lexmesh_protocol::control::CancelRequest;
use lexmesh_protocol::record::{JobRecord, JobStatus, ModelManifest};
use lexmesh_protocol::time::now_ms;
use lexmesh_protocol::{
    DatasetSource, ErrorCode, JobEvent, JobKind, OptimizeJob, PreprocessJob, ProtocolError, names,
    subjects,
};
use lexmesh_runtime::{JobContext, records};
use lexmesh_search::{Configuration, Experiment, Observation, TrialStatus};

use super::plan::SearchPlan;
use crate::data::prepare_when_a_preprocessor_answers;
use crate::{internal, models, runtime_error, settings};

/// Starts and stops a search's trials and publishes its events.
pub struct Trials<'a> {
    ctx: &'a JobContext,
    job: &'a OptimizeJob,
    plan: &'a SearchPlan,
    /// Prepared dataset ids of inline data, by the preprocessing settings they were prepared
    /// with (JSON): trials that preprocess alike share one.
    prepared: HashMap<String, String>,
}

impl<'a> Trials<'a> {
    /// The trials of `job`, run by the coordinator's `ctx`.
    pub fn new(ctx: &'a JobContext, job: &'a OptimizeJob, plan: &'a SearchPlan) -> Self {
        Self {
            ctx,
            job,
            plan,
            prepared: HashMap::new(),
        }
    }

    /// Checks the search's data before anything runs, as a train job checks its own before
    /// `accepted`: the dataset exists and can be trained on. Inline records are prepared here
    /// once (the trials get the prepared dataset); a file is prepared with the base settings
    /// (the trials' own prepare requests then find it); a prepared dataset must exist.
    pub async fn check_data(&mut self) -> Result<(), ProtocolError> {
        match &self.job.dataset {
            DatasetSource::Prepared { dataset_id } => {
                let name = names::prepared_dataset(dataset_id);
                match self.ctx.mesh().datasets.info(&name).await {
                    Ok(info) if !info.deleted => Ok(()),
                    Ok(_) => Err(no_dataset(dataset_id)),
                    Err(e)
                        if e.kind()
                            == async_nats::jetstream::object_store::InfoErrorKind::NotFound =>
                    {
                        Err(no_dataset(dataset_id))
                    }
                    Err(e) => Err(ProtocolError::new(
                        ErrorCode::Unavailable,
                        format!("reading the datasets store: {e}"),
                    )),
                }
            }
            DatasetSource::Inline(_) | DatasetSource::Object { .. } => {
                let base = self.plan.base.clone();
                self.prepare(&self.job.job_id.clone(), &base)
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Prepares the search's data with `settings` (once per distinct preprocessing).
    async fn prepare(
        &mut self,
        request_id: &str,
        settings: &lexmesh_protocol::ExperimentSettings,
    ) -> Result<String, ProtocolError> {
        let key = serde_json::to_string(&settings::experiment(settings)?.prepare_settings())
            .map_err(|e| internal("encoding preprocessing settings", e))?;
        if let Some(id) = self.prepared.get(&key) {
            return Ok(id.clone());
        }
        let request = PreprocessJob {
            job_id: request_id.to_string(),
            dataset: self.job.dataset.clone(),
            settings: settings.clone(),
        };
        // Like a train job, the search waits for a preprocessor that is not running yet. A
        // cancel or shutdown during that wait ends this attempt as `unavailable` (retried), as
        // a failed prepare request always did.
        let Some(summary) = prepare_when_a_preprocessor_answers(self.ctx, &request).await? else {
            return Err(ProtocolError::new(
                ErrorCode::Unavailable,
                "stopped while waiting for a preprocessor",
            ));
        };
        let id = summary.dataset_id;
        self.prepared.insert(key, id.clone());
        Ok(id)
    }

    /// The dataset a trial's train job names: inline records as their prepared dataset (the
    /// trial's preprocessing settings may differ from the base's), anything else as given.
    async fn dataset_of(
        &mut self,
        trial_id: &str,
        configuration: &Configuration,
    ) -> Result<DatasetSource, ProtocolError> {
        if !matches!(self.job.dataset, DatasetSource::Inline(_)) {
            return Ok(self.job.dataset.clone());
        }
        let Some(settings) = self.plan.trial_settings(configuration) else {
            // Settings the trainer rejects whatever the data: the records are not prepared
            // for them.
            return Ok(self.job.dataset.clone());
        };
        match self.prepare(trial_id, &settings).await {
            Ok(id) => Ok(DatasetSource::Prepared { dataset_id: id }),
            // Data these settings cannot prepare: the trial's train job says so and fails.
            Err(e) if !e.retryable() => Ok(self.job.dataset.clone()),
            Err(e) => Err(e),
        }
    }

    /// Submits a trial's train job unless a job record of its id exists (it was submitted
    /// before).
    pub async fn start(
        &mut self,
        trial_id: &str,
        configuration: &Configuration,
    ) -> Result<(), ProtocolError> {
        if self.record(trial_id).await?.is_some() {
            // Submitted before (its record exists from the submit on): never twice.
            return Ok(());
        }
        let dataset = self.dataset_of(trial_id, configuration).await?;
        self.publish_job(trial_id, configuration, dataset).await
    }

    /// Stops a trial: its cancel marker, a cancel request, and its train job published when it
    /// never was (so that it ends, cancelled, like the others). Returns what the search can
    /// observe at once: the end of a train job that had ended already.
    pub async fn stop(
        &mut self,
        trial_id: &str,
        configuration: &Configuration,
        experiment: &Experiment,
    ) -> Result<Option<Observation>, ProtocolError> {
        let record = self.record(trial_id).await?;
        if let Some(record) = &record
            && record.status.is_final()
        {
            return Ok(super::observe::from_record(record, experiment));
        }
        let reason = format!("stopped by search {}", self.job.job_id);
        records::mark_cancelled(&self.ctx.mesh().jobs, trial_id, &reason)
            .await
            .map_err(runtime_error)?;
        if record.is_none() {
            // Perhaps never published (a coordinator died between deciding and submitting):
            // published now, a trainer drops it at once for its marker. When it was, the stream
            // drops this copy as a duplicate.
            let dataset = self.job.dataset.clone();
            let dataset = match dataset {
                DatasetSource::Inline(_) => {
                    self.prepared
                        .values()
                        .next()
                        .map_or(dataset, |id| DatasetSource::Prepared {
                            dataset_id: id.clone(),
                        })
                }
                other => other,
            };
            self.publish_job(trial_id, configuration, dataset).await?;
        }
        let request = CancelRequest {
            job_id: trial_id.to_string(),
            reason: Some(reason),
        };
        let body =
            serde_json::to_vec(&request).map_err(|e| internal("encoding a cancel request", e))?;
        self.ctx
            .mesh()
            .client
            .publish(subjects::cancel(trial_id), body.into())
            .await
            .map_err(|e| {
                ProtocolError::new(
                    ErrorCode::Unavailable,
                    format!("cancelling {trial_id}: {e}"),
                )
            })?;
        Ok(None)
    }

    /// The job record of a trial, if any.
    pub async fn record(&self, trial_id: &str) -> Result<Option<JobRecord>, ProtocolError> {
        records::read(&self.ctx.mesh().jobs, trial_id)
            .await
            .map(|r| r.map(|(record, _)| record))
            .map_err(runtime_error)
    }

    /// Publishes a trial's train job (`Nats-Msg-Id` = the trial id) and gives it a `queued`
    /// record, as `lexmesh submit` does.
    async fn publish_job(
        &self,
        trial_id: &str,
        configuration: &Configuration,
        dataset: DatasetSource,
    ) -> Result<(), ProtocolError> {
        let job = serde_json::json!({
            "job_id": trial_id,
            "dataset": dataset,
            "settings": self.plan.trial_settings_json(configuration),
        });
        let payload = serde_json::to_vec(&job).map_err(|e| internal("encoding a trial", e))?;
        let message = PublishMessage::build()
            .payload(payload.into())
            .headers(self.ctx.trace_headers())
            .message_id(trial_id);
        let ack = self
            .ctx
            .mesh()
            .js
            .send_publish(subjects::jobs(JobKind::Train), message)
            .await
            .map_err(|e| publish_failed(trial_id, e))?
            .await
            .map_err(|e| publish_failed(trial_id, e))?;
        if !ack.duplicate {
            records::update(&self.ctx.mesh().jobs, trial_id, |current| match current {
                Some(_) => None,
                None => Some(JobRecord::new(
                    trial_id,
                    JobKind::Train,
                    JobStatus::Queued,
                    0,
                    now_ms(),
                )),
            })
            .await
            .map_err(runtime_error)?;
            tracing::info!(search = %self.job.job_id, trial = trial_id, "trial submitted");
        }
        Ok(())
    }

    /// Publishes one of the search's events with `dedup_id` as its `Nats-Msg-Id`.
    pub async fn publish_event(
        &self,
        event: &JobEvent,
        dedup_id: &str,
    ) -> Result<(), ProtocolError> {
        let payload = serde_json::to_vec(event).map_err(|e| internal("encoding an event", e))?;
        let message = PublishMessage::build()
            .payload(payload.into())
            .headers(self.ctx.trace_headers())
            .message_id(dedup_id);
        let subject = subjects::event(event.job_id(), event.kind());
        self.ctx
            .mesh()
            .js
            .send_publish(subject, message)
            .await
            .map_err(|e| publish_failed(dedup_id, e))?
            .await
            .map_err(|e| publish_failed(dedup_id, e))?;
        Ok(())
    }

    /// Registers the best trial's model under the search's model id: the best-ranked trial
    /// that did not fail and stored a model (a trial stopped early stored none). Returns the
    /// trial and the manifest registered.
    pub async fn register_best(
        &self,
        experiment: &Experiment,
    ) -> Result<(String, ModelManifest), ProtocolError> {
        for entry in experiment.leaderboard() {
            if entry.status == TrialStatus::Failed || entry.best.is_none() {
                continue;
            }
            if let Some(manifest) = models::manifest(self.ctx.mesh(), &entry.trial_id).await? {
                let registered =
                    models::register(self.ctx.mesh(), &self.plan.model_id, &manifest).await?;
                return Ok((entry.trial_id, registered));
            }
        }
        Err(ProtocolError::new(
            ErrorCode::TrainingFailed,
            "no trial of the search stored a model",
        ))
    }
}

fn no_dataset(id: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::DatasetNotFound,
        format!("no prepared dataset `{id}`"),
    )
}

fn publish_failed(what: &str, error: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::Unavailable,
        format!("publishing {what}: {error}"),
    )
}
