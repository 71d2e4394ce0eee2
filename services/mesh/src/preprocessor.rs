//! The preprocessor service: `preprocess` jobs, and `prepare` requests from trainers (the same
//! body, answered directly). Both fit preprocessing and vectorise a dataset into the datasets
//! object store under its content hash; a dataset already there is reused, not redone.

use std::sync::Arc;

use lexmesh_protocol::event::PreparedSummary;
use lexmesh_protocol::{JobResult, PreprocessJob, ProtocolError, decode};
use lexmesh_runtime::service::error_reply;
use lexmesh_runtime::{JobContext, JobHandler, JobOutcome, ServiceRuntime, Worker};

use super::data::{
    dataset_id, fetch_prepared, load_raw, prepare, prepared_summary, store_prepared,
};
use super::{internal, settings};

/// Prepares (or finds) the dataset of `job`.
pub async fn prepare_dataset(
    worker: &Worker,
    job: &PreprocessJob,
) -> Result<PreparedSummary, ProtocolError> {
    let experiment = settings::experiment(&job.settings)?;
    let work = scratch(worker)?;
    let raw = load_raw(&worker.mesh, &job.dataset, work.path()).await?;
    let id = dataset_id(&raw, &experiment)?;
    if let Some(existing) = fetch_prepared(&worker.mesh, &id).await? {
        tracing::info!(job = %job.job_id, dataset = %id, "prepared dataset reused");
        return Ok(prepared_summary(&existing, true));
    }
    let prepared_id = id.clone();
    let prepared = lexmesh_runtime::compute::run(move || prepare(raw, &experiment, prepared_id))
        .await
        .map_err(|e| internal("preparing a dataset", e))??;
    store_prepared(&worker.mesh, &prepared).await?;
    tracing::info!(job = %job.job_id, dataset = %id, "dataset prepared");
    Ok(prepared_summary(&prepared, false))
}

/// A scratch folder under `service.work_dir` (or the system temp folder).
pub fn scratch(worker: &Worker) -> Result<tempfile::TempDir, ProtocolError> {
    let result = match &worker.config.service.work_dir {
        Some(dir) => std::fs::create_dir_all(dir).and_then(|_| tempfile::tempdir_in(dir)),
        None => tempfile::tempdir(),
    };
    result.map_err(|e| internal("creating a scratch folder", e))
}

/// Runs `preprocess` jobs.
pub struct PreprocessHandler;

impl JobHandler for PreprocessHandler {
    type Job = PreprocessJob;

    async fn run(&self, job: PreprocessJob, ctx: JobContext) -> Result<JobOutcome, ProtocolError> {
        // Preparing is the job and the check of its data at once: `accepted` goes out when it
        // succeeded (just before `completed`), so data that cannot be prepared is `failed`
        // without `accepted` first.
        let summary = prepare_dataset(&ctx.worker, &job).await?;
        Ok(JobOutcome::Completed(JobResult::Preprocess(summary)))
    }
}

/// Starts the service's job loop and its `prepare` endpoint.
pub async fn start(runtime: &mut ServiceRuntime) -> Result<(), lexmesh_runtime::RuntimeError> {
    let endpoint = runtime.endpoint("prepare").await?;
    let worker = runtime.worker.clone();
    runtime.serve(endpoint, move |message| {
        let worker: Arc<Worker> = worker.clone();
        async move {
            let result = match decode::<PreprocessJob>(&message.payload) {
                Ok(job) => prepare_dataset(&worker, &job).await,
                Err(e) => Err(e),
            };
            Ok(match result {
                Ok(summary) => serde_json::to_vec(&summary).unwrap_or_default(),
                Err(error) => error_reply(&error),
            })
        }
    });
    runtime.run_jobs(PreprocessHandler);
    Ok(())
}
