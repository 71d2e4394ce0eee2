//! The mesh services: thin adapters that turn NATS messages into calls of the domain crates
//! (`lexmesh serve <service>` runs one). The domain crates hold no NATS code; this crate holds
//! nothing else.
//!
//! - [`settings`]: job settings → the experiment configuration of the embedded pipeline.
//! - [`data`]: reading a job's dataset (inline records or an uploaded file) and the prepared
//!   (vectorised) dataset stored by the preprocessor.
//! - [`models`]: trained models in the models object store.
//! - [`preprocessor`], [`trainer`], [`evaluator`]: the three job services; [`search`]: the
//!   coordinator of hyperparameter searches (`optimize` jobs), run by the trainer; [`health`]: the
//!   service that watches them and replaces the ones that stop working; [`metrics`]: the
//!   service that gathers their metrics, serves them to Prometheus and raises alerts;
//!   [`console`]: the dashboard page the metrics service serves, live over Server-Sent Events.
//! - [`convert`]: domain values as the protocol reports them (evaluation reports, training
//!   errors).
//!
//! Generic pieces every service could use (the leader lease, alerts, the job loop) live in
//! `lexmesh-runtime`.

pub mod console;
pub mod convert;
pub mod data;
pub mod evaluator;
pub mod health;
pub mod metrics;
pub mod models;
pub mod preprocessor;
pub mod search;
pub mod settings;
pub mod trainer;

use lexmesh_protocol::{ErrorCode, ProtocolError};
use lexmesh_runtime::RuntimeError;
use lexmesh_runtime::error::RuntimeErrorKind;

/// The protocol error of a failure of the mesh's plumbing during a job: `unavailable` when the
/// broker or a store did not answer or was busy, `internal` (logged) when stored data is
/// unreadable or the instance cannot work; both are worth another attempt.
pub fn runtime_error(error: RuntimeError) -> ProtocolError {
    match error.kind() {
        RuntimeErrorKind::Transient => {
            ProtocolError::new(ErrorCode::Unavailable, error.to_string())
        }
        RuntimeErrorKind::Data | RuntimeErrorKind::Setup => internal("the mesh", error),
    }
}

/// A failure inside lexmesh: worth another attempt, and logged.
pub fn internal(what: &str, error: impl std::fmt::Display) -> ProtocolError {
    tracing::error!("{what}: {error}");
    ProtocolError::new(ErrorCode::Internal, format!("{what}: {error}"))
}

/// A service cannot start with its configuration as it is (its metrics port is taken, ...):
/// starting it again would fail the same way. `lexmesh serve` exits with
/// [`Unusable::EXIT_CODE`], which `lexmesh up` reports once instead of restarting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unusable(pub String);

impl Unusable {
    /// `EX_CONFIG` of sysexits.h: a configuration error.
    pub const EXIT_CODE: u8 = 78;
}
