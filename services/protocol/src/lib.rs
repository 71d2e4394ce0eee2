//! The lexmesh wire protocol: the single source of truth for everything that crosses NATS.
//!
//! - [`job`]: job requests (`train`, `preprocess`, `evaluate`, `optimize`) and their settings.
//! - [`event`]: job events (`accepted`, `progress`, `completed`, `failed`, `cancelled`).
//! - [`control`]: the cancel message and its reply.
//! - [`classify`]: the request/reply inference endpoint.
//! - [`heartbeat`], [`status`]: what workers say about themselves; [`health`]: what the health
//!   service says about them; [`alert`]: alerts; [`deadletter`]: jobs given up on;
//!   [`metrics`]: what every instance measures, and the metrics service's snapshot.
//! - [`record`]: the job record kept in the jobs KV bucket, and stored-model manifests.
//! - [`error`]: stable error codes and the error reply; [`decode`] turns bytes into a message
//!   or a typed error.
//! - [`subjects`], [`names`]: every subject, stream, consumer, bucket and service name.
//! - [`schema`]: the JSON Schema of every message (`schemas/` is generated from it).
//!
//! Every message rejects unknown fields. Identifiers that appear in subjects (job and model
//! ids) are restricted to `[A-Za-z0-9_-]{1,64}` so a message can never address a subject it
//! should not.

pub mod alert;
pub mod classify;
pub mod control;
pub mod deadletter;
pub mod decode;
pub mod error;
pub mod event;
pub mod health;
pub mod heartbeat;
pub mod job;
pub mod metrics;
pub mod names;
pub mod record;
pub mod schema;
pub mod status;
pub mod subjects;
pub mod time;

pub use decode::{Message, decode};
pub use error::{ErrorCode, ErrorReply, ProtocolError};
pub use event::{
    Accepted, Cancelled, Completed, EventKind, Failed, JobEvent, JobResult, Progress, ProgressPhase,
};
pub use job::{
    DatasetSource, EvaluateJob, ExperimentSettings, JobKind, ModelKindName, OptimizeJob,
    PreprocessJob, Record, TrainJob,
};

/// Version of the protocol; part of every schema's `$id` and carried by heartbeats.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest message any lexmesh service accepts (4 MiB), whatever the server allows (servers that
/// lexmesh starts allow 8 MiB, nats-server's default is 1 MiB); a larger
/// job request fails with [`ErrorCode::PayloadTooLarge`]. Big datasets go through the
/// datasets object store ([`DatasetSource::Object`]).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Checks an identifier that becomes a subject token: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The pattern of [`valid_id`], as written into the schemas.
pub const ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";
