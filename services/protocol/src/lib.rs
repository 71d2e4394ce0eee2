//! The lexmesh wire protocol: the single source of truth for everything that crosses NATS.
//!
//! - [`job`]: job requests (`train`, `preprocess`, `evaluate`, `optimize`) and their settings.
//! - [`event`]: job events (`accepted`, `progress`, `completed`, `failed`, `cancelled`, and a
//!   search's `trial_*` and `leaderboard` events).
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
//! Every message rejects unknown fields (inline records excepted: they are read like the lines
//! of a data file). A publisher's message is checked against its JSON Schema before anything
//! else ([`decode`]), so the schemas in `schemas/` say everything the services enforce on a
//! message's shape and values. Identifiers that appear in subjects (job and model
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
    CellName, DatasetSource, EvaluateJob, ExperimentSettings, InlineData, JobKind, ModelKindName,
    OptimizeJob, PreprocessJob, Record, TrainJob,
};

/// Version of the protocol; part of every schema's `$id` and carried by heartbeats.
pub const PROTOCOL_VERSION: u32 = 1;

/// Checks an identifier that becomes a subject token: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The pattern of [`valid_id`], as written into the schemas.
pub const ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";
