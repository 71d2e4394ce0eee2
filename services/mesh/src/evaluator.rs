//! The evaluator service: `evaluate` jobs on a stored model and a labelled dataset, and the
//! `classify` request/reply endpoint. Models are downloaded once and kept in memory (a small
//! LRU cache keyed by model id and manifest time, so a re-trained model replaces the old one).

use std::sync::{Arc, Mutex};

use lexmesh_preprocessor::Dataset;
use lexmesh_protocol::classify::{ClassPrediction, ClassifyReply, ClassifyRequest};
use lexmesh_protocol::event::{EvaluateSummary, EvaluationSummary};
use lexmesh_protocol::{ErrorCode, EvaluateJob, JobResult, ProtocolError, decode};
use lexmesh_runtime::service::error_reply;
use lexmesh_runtime::{JobContext, JobHandler, JobOutcome, Mesh, ServiceRuntime, Worker};
use lexmesh_trainer::{Classifier, DeviceChoice};

use super::convert::{Stage, evaluation_summary, train_error};
use super::data::load_raw;
use super::preprocessor::scratch;
use super::{internal, models};

struct Cached {
    model_id: String,
    created_ms: f64,
    classifier: Arc<Classifier>,
    _dir: tempfile::TempDir,
}

/// Loaded models, most recently used last.
pub struct ModelCache {
    capacity: usize,
    entries: Mutex<Vec<Cached>>,
}

impl ModelCache {
    /// An empty cache holding up to `capacity` models (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(Vec::new()),
        }
    }

    fn lookup(&self, model_id: &str, created_ms: f64) -> Option<Arc<Classifier>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let at = entries
            .iter()
            .position(|c| c.model_id == model_id && c.created_ms == created_ms)?;
        let entry = entries.remove(at);
        let classifier = entry.classifier.clone();
        entries.push(entry);
        Some(classifier)
    }

    /// The classifier of `model_id`, loading it on first use.
    pub async fn get(
        &self,
        worker: &Worker,
        model_id: &str,
    ) -> Result<Arc<Classifier>, ProtocolError> {
        let mesh: &Mesh = &worker.mesh;
        let manifest = models::require_manifest(mesh, model_id).await?;
        if let Some(c) = self.lookup(model_id, manifest.created_ms) {
            return Ok(c);
        }
        let dir = scratch(worker)?;
        models::fetch(mesh, &manifest, dir.path()).await?;
        let path = dir.path().to_path_buf();
        let classifier =
            lexmesh_runtime::compute::run(move || Classifier::load(&path, DeviceChoice::Cpu))
                .await
                .map_err(|e| internal("loading a model", e))?
                .map_err(|e| internal(&format!("loading model {model_id}"), e))?;
        let classifier = Arc::new(classifier);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|c| c.model_id != model_id);
        entries.push(Cached {
            model_id: model_id.to_string(),
            created_ms: manifest.created_ms,
            classifier: classifier.clone(),
            _dir: dir,
        });
        while entries.len() > self.capacity {
            entries.remove(0);
        }
        tracing::info!(model = model_id, "model loaded");
        Ok(classifier)
    }
}

/// Evaluates `classifier` on labelled records, as the protocol reports it.
pub fn evaluate(
    classifier: &Classifier,
    dataset: &Dataset,
) -> Result<EvaluationSummary, ProtocolError> {
    let report = classifier
        .evaluate(dataset)
        .map_err(|e| train_error(e, Stage::Inference))?;
    Ok(evaluation_summary(report))
}

/// Answers a classify request.
pub async fn classify(
    worker: &Worker,
    cache: &ModelCache,
    request: ClassifyRequest,
) -> Result<ClassifyReply, ProtocolError> {
    let classifier = cache.get(worker, &request.model_id).await?;
    let texts = request.texts;
    let predictions = lexmesh_runtime::compute::run(move || classifier.predict(&texts))
        .await
        .map_err(|e| internal("classifying", e))?
        .map_err(|e| internal("classifying", e))?;
    Ok(ClassifyReply {
        model_id: request.model_id,
        predictions: predictions
            .into_iter()
            .map(|p| ClassPrediction {
                label: p.label,
                probabilities: p.probabilities.into_iter().collect(),
            })
            .collect(),
    })
}

/// Runs `evaluate` jobs.
pub struct EvaluateHandler {
    cache: Arc<ModelCache>,
}

impl JobHandler for EvaluateHandler {
    type Job = EvaluateJob;

    fn model_id(&self, job: &EvaluateJob) -> Option<String> {
        Some(job.model_id.clone())
    }

    async fn run(&self, job: EvaluateJob, ctx: JobContext) -> Result<JobOutcome, ProtocolError> {
        let classifier = self.cache.get(&ctx.worker, &job.model_id).await?;
        let work = scratch(&ctx.worker)?;
        let raw = load_raw(ctx.mesh(), &job.dataset, work.path()).await?;
        if raw.train.is_empty() {
            return Err(ProtocolError::new(
                ErrorCode::EmptyDataset,
                "no records to evaluate on",
            ));
        }
        let dataset = raw.train;
        // Every check that needs the data or the stores comes before `accepted`.
        if let Err(e) = classifier.labels().encode(&dataset) {
            return Err(ProtocolError::new(ErrorCode::InvalidDataset, e.to_string()));
        }
        ctx.accept().await;
        let evaluating = lexmesh_runtime::compute::run(move || evaluate(&classifier, &dataset));
        // A cancel stops waiting for the evaluation (its thread finishes on its own and its
        // result is dropped); a shutdown hands the job back.
        let evaluation = tokio::select! {
            done = evaluating => done.map_err(|e| internal("evaluating", e))??,
            () = ctx.cancel.cancelled() => {
                return Ok(JobOutcome::Cancelled { epochs_completed: 0 });
            }
            () = ctx.shutdown().cancelled() => return Ok(JobOutcome::Interrupted),
        };
        Ok(JobOutcome::Completed(JobResult::Evaluate(
            EvaluateSummary {
                model_id: job.model_id,
                evaluation,
            },
        )))
    }
}

/// Starts the job loop and the `classify` endpoint.
pub async fn start(runtime: &mut ServiceRuntime) -> Result<(), lexmesh_runtime::RuntimeError> {
    let cache = Arc::new(ModelCache::new(runtime.worker.config.service.model_cache));
    let endpoint = runtime.endpoint("classify").await?;
    let worker = runtime.worker.clone();
    let endpoint_cache = cache.clone();
    runtime.serve(endpoint, move |message| {
        let worker = worker.clone();
        let cache = endpoint_cache.clone();
        async move {
            let result = match decode::<ClassifyRequest>(&message.payload) {
                Ok(request) => classify(&worker, &cache, request).await,
                Err(e) => Err(e),
            };
            Ok(match result {
                Ok(reply) => serde_json::to_vec(&reply).unwrap_or_default(),
                Err(error) => error_reply(&error),
            })
        }
    });
    runtime.run_jobs(EvaluateHandler { cache });
    Ok(())
}
