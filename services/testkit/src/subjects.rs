//! The subjects and names of the wire protocol, written out as strings on purpose: the tests
//! check the documented protocol, not lexmesh's own types (`lexmesh_protocol::subjects`).

/// The jobs stream.
pub const JOBS_STREAM: &str = "LEXMESH_JOBS";

/// The jobs KV bucket.
pub const JOBS_BUCKET: &str = "lexmesh_jobs";

/// Subject of train jobs.
pub const TRAIN: &str = "lexmesh.jobs.train";
/// Subject of evaluate jobs.
pub const EVALUATE: &str = "lexmesh.jobs.evaluate";
/// Subject of preprocess jobs.
pub const PREPROCESS: &str = "lexmesh.jobs.preprocess";
/// Request/reply inference.
pub const CLASSIFY: &str = "lexmesh.api.evaluator.classify";
/// Request/reply dataset preparation.
pub const PREPARE: &str = "lexmesh.api.preprocessor.prepare";

/// The cancel subject of a job.
pub fn cancel_subject(job_id: &str) -> String {
    format!("lexmesh.control.{job_id}.cancel")
}

/// The status subject of one instance, `lexmesh.api.<service>.<instance>.status`.
pub fn status_subject(service: &str, instance: &str) -> String {
    format!("lexmesh.api.{service}.{instance}.status")
}
