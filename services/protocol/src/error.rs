//! Stable error codes. A code never changes meaning; clients match on it, people read the
//! `reason`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a request failed. Serialized in `snake_case`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The payload is not JSON (or not UTF-8).
    InvalidJson,
    /// JSON, but not the shape its schema gives: not an object, a missing or unknown field, a
    /// wrong type, an unknown enum value (model kind), a dataset with none or two of `inline`,
    /// `object`, `prepared`, or one a job kind does not take.
    InvalidMessage,
    /// A job id that is not 1 to 64 of `[A-Za-z0-9_-]`.
    InvalidJobId,
    /// A value the schema's rules exclude: out of range (zero or negative epochs, a learning
    /// rate above 10), too short (an empty `train` array, a blank text), not matching its
    /// pattern (a model id), a setting that does not fit the model.
    InvalidValue,
    /// A data file holds no records.
    EmptyDataset,
    /// The records cannot be trained on or read, found only by reading them: a single class,
    /// a record without the field `text_field` or `label_field` names, a broken or unreadable
    /// file, a label the evaluated model does not know.
    InvalidDataset,
    /// Not sent by the services any more: a message over the server's `max_payload` never
    /// reaches them (the publish itself fails). Kept so that the code keeps its meaning.
    PayloadTooLarge,
    /// The `Nats-Msg-Id` header differs from the body's `job_id`.
    JobIdMismatch,
    /// No stored model with that id.
    ModelNotFound,
    /// No dataset object or prepared dataset with that name.
    DatasetNotFound,
    /// No job with that id.
    JobNotFound,
    /// The job kind has no service (no kind is without one in this version; kept so that the
    /// code keeps its meaning).
    Unsupported,
    /// Training itself failed (for example a model the settings cannot build).
    TrainingFailed,
    /// A service the job depends on did not answer in time; the job is retried.
    Unavailable,
    /// The job was cancelled.
    Cancelled,
    /// A bug or an unexpected failure inside lexmesh; the job is retried.
    Internal,
    /// The workers running the job kept disappearing (killed, crashed, replaced) until its
    /// deliveries ran out.
    WorkerLost,
}

impl ErrorCode {
    /// Whether a job that failed with this code is worth another delivery.
    pub fn retryable(self) -> bool {
        matches!(self, Self::Unavailable | Self::Internal)
    }

    /// Whether the failure is the publisher's mistake (the message, its data, a missing model
    /// or dataset, an unsupported kind) rather than the service's: such failures are counted as
    /// `rejected`, apart from the service's error rate.
    pub fn is_client_error(self) -> bool {
        matches!(
            self,
            Self::InvalidJson
                | Self::InvalidMessage
                | Self::InvalidJobId
                | Self::InvalidValue
                | Self::EmptyDataset
                | Self::InvalidDataset
                | Self::PayloadTooLarge
                | Self::JobIdMismatch
                | Self::ModelNotFound
                | Self::DatasetNotFound
                | Self::JobNotFound
                | Self::Unsupported
        )
    }

    /// The wire name, for logs and the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidMessage => "invalid_message",
            Self::InvalidJobId => "invalid_job_id",
            Self::InvalidValue => "invalid_value",
            Self::EmptyDataset => "empty_dataset",
            Self::InvalidDataset => "invalid_dataset",
            Self::PayloadTooLarge => "payload_too_large",
            Self::JobIdMismatch => "job_id_mismatch",
            Self::ModelNotFound => "model_not_found",
            Self::DatasetNotFound => "dataset_not_found",
            Self::JobNotFound => "job_not_found",
            Self::Unsupported => "unsupported",
            Self::TrainingFailed => "training_failed",
            Self::Unavailable => "unavailable",
            Self::Cancelled => "cancelled",
            Self::Internal => "internal",
            Self::WorkerLost => "worker_lost",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Longest reason a [`ProtocolError`] carries, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

/// A typed failure: a stable code and a readable reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct ProtocolError {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub reason: String,
}

impl ProtocolError {
    /// An error with `code` and `reason`; a reason longer than [`MAX_REASON_CHARS`] is cut, so
    /// that an event carrying it always fits a message.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let reason = if reason.chars().count() > MAX_REASON_CHARS {
            crate::decode::brief_str(&reason, MAX_REASON_CHARS)
        } else {
            reason
        };
        Self { code, reason }
    }

    /// Whether another attempt could succeed.
    pub fn retryable(&self) -> bool {
        self.code.retryable()
    }
}

/// The reply of a request/reply endpoint that failed (`classify`, `prepare`, `cancel`,
/// `status`). Successful replies have their own message types; an error reply always has
/// `"error"` at the top level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    /// The failure.
    pub error: ErrorBody,
}

/// Code and reason of an [`ErrorReply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable code.
    pub code: ErrorCode,
    /// Readable reason.
    pub reason: String,
}

impl From<&ProtocolError> for ErrorReply {
    fn from(e: &ProtocolError) -> Self {
        Self {
            error: ErrorBody {
                code: e.code,
                reason: e.reason.clone(),
            },
        }
    }
}

impl From<ErrorReply> for ProtocolError {
    fn from(e: ErrorReply) -> Self {
        Self::new(e.error.code, e.error.reason)
    }
}
