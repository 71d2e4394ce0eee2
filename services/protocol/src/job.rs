//! Job requests. Each is published to [`crate::subjects::jobs`] with its `job_id` also as the
//! `Nats-Msg-Id` header, so the server drops a repeated submit.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, ProtocolError};

/// The kinds of job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Fit preprocessing and vectorise a dataset.
    Preprocess,
    /// Train a model.
    Train,
    /// Evaluate a stored model on a labelled dataset.
    Evaluate,
    /// Hyperparameter search (the message shape is fixed; no service runs it yet).
    Optimize,
}

impl JobKind {
    /// All kinds.
    pub const ALL: [JobKind; 4] = [
        Self::Preprocess,
        Self::Train,
        Self::Evaluate,
        Self::Optimize,
    ];

    /// Name in subjects and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Preprocess => "preprocess",
            Self::Train => "train",
            Self::Evaluate => "evaluate",
            Self::Optimize => "optimize",
        }
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("unknown job kind `{s}` (preprocess, train, evaluate, optimize)")
            })
    }
}

/// One labelled example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The document text.
    pub text: String,
    /// Its label.
    pub label: String,
}

/// Where a job's data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DatasetSource {
    /// Records inside the message (small datasets; the message size limit applies).
    Inline {
        /// Training records (for `evaluate`: the records to evaluate on).
        train: Vec<Record>,
        /// Validation records; when absent, a stratified split of `train` is held out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        validation: Option<Vec<Record>>,
    },
    /// A CSV or JSON Lines file uploaded to the `lexmesh_datasets` object store.
    Object {
        /// Object name of the training file (`.csv`, `.jsonl`).
        key: String,
        /// Object name of a validation file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        validation_key: Option<String>,
        /// Field (JSON Lines) or column (CSV) with the text.
        #[serde(default = "default_text_field")]
        text_field: String,
        /// Field or column with the label.
        #[serde(default = "default_label_field")]
        label_field: String,
    },
    /// A dataset the preprocessor already prepared (the `dataset_id` of a preprocess result).
    Prepared {
        /// Content hash naming the prepared dataset.
        dataset_id: String,
    },
}

fn default_text_field() -> String {
    "text".into()
}

fn default_label_field() -> String {
    "label".into()
}

impl DatasetSource {
    /// Checks what the types cannot say: non-empty inline data, non-empty names.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        match self {
            Self::Inline { train, validation } => {
                if train.is_empty() {
                    return Err(ProtocolError::new(
                        ErrorCode::EmptyDataset,
                        "dataset.inline.train holds no records",
                    ));
                }
                if validation.as_ref().is_some_and(Vec::is_empty) {
                    return Err(ProtocolError::new(
                        ErrorCode::EmptyDataset,
                        "dataset.inline.validation is empty (leave it out to split train)",
                    ));
                }
                for (i, r) in train.iter().chain(validation.iter().flatten()).enumerate() {
                    if r.text.trim().is_empty() || r.label.trim().is_empty() {
                        return Err(ProtocolError::new(
                            ErrorCode::InvalidDataset,
                            format!("record {i} has an empty text or label"),
                        ));
                    }
                }
                Ok(())
            }
            Self::Object { key, .. } if key.is_empty() => Err(ProtocolError::new(
                ErrorCode::InvalidValue,
                "dataset.object.key is empty",
            )),
            Self::Object { .. } => Ok(()),
            Self::Prepared { dataset_id } if !crate::valid_id(dataset_id) => {
                Err(ProtocolError::new(
                    ErrorCode::InvalidValue,
                    format!("dataset.prepared.dataset_id `{dataset_id}` is not a valid id"),
                ))
            }
            Self::Prepared { .. } => Ok(()),
        }
    }
}

/// The model architectures, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelKindName {
    /// Embedding bag + MLP (fastText-like).
    Bow,
    /// Kim-style CNN.
    Cnn,
    /// Bidirectional GRU/LSTM.
    Bigru,
    /// Small Transformer encoder.
    Transformer,
}

/// Settings of an experiment. Everything is optional: what is absent takes the model kind's
/// defaults (the same as `lexmesh train`'s).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSettings {
    /// Model architecture (default `bow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelKindName>,
    /// Passes over the training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub epochs: Option<u32>,
    /// Examples per batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub batch_size: Option<u32>,
    /// Adam learning rate (finite, > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// Epochs without improvement before stopping (0 = never stop early).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<u32>,
    /// Seed of initialisation, shuffling and the validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Fraction held out for validation when no validation data is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_fraction: Option<f64>,
    /// Embedding dimension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub embedding_dim: Option<u32>,
    /// Hidden size (meaning depends on the model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 16384))]
    pub hidden: Option<u32>,
    /// Dropout probability in [0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// Longest token sequence kept (sequence models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_length: Option<u32>,
    /// Hashed character n-gram buckets (`bow`); sizes the embedding table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10000000))]
    pub char_buckets: Option<u32>,
    /// Weight classes inversely to their frequency (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balanced_class_weights: Option<bool>,
}

impl ExperimentSettings {
    /// Checks ranges that JSON types cannot express; the error names the field.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let bad = |msg: String| Err(ProtocolError::new(ErrorCode::InvalidValue, msg));
        if self.epochs == Some(0) {
            return bad("settings.epochs must be at least 1".into());
        }
        if let Some(e) = self.epochs
            && e > 10_000
        {
            return bad(format!("settings.epochs {e} is more than 10000"));
        }
        if self.batch_size == Some(0) {
            return bad("settings.batch_size must be at least 1".into());
        }
        if let Some(lr) = self.learning_rate
            && !(lr.is_finite() && lr > 0.0 && lr <= 10.0)
        {
            return bad(format!(
                "settings.learning_rate must be in (0, 10], got {lr}"
            ));
        }
        if let Some(f) = self.validation_fraction
            && !(f.is_finite() && f > 0.0 && f < 1.0)
        {
            return bad(format!(
                "settings.validation_fraction must be in (0, 1), got {f}"
            ));
        }
        if let Some(d) = self.dropout
            && !(d.is_finite() && (0.0..1.0).contains(&d))
        {
            return bad(format!("settings.dropout must be in [0, 1), got {d}"));
        }
        if self.embedding_dim == Some(0) || self.max_length == Some(0) {
            return bad("settings.embedding_dim and settings.max_length must be at least 1".into());
        }
        Ok(())
    }
}

/// A message that names a job.
pub trait JobRequest {
    /// Which kind of job this is.
    const KIND: JobKind;
    /// The job's id (also its `Nats-Msg-Id`).
    fn job_id(&self) -> &str;
    /// Checks everything beyond the types; the error carries the code to report.
    fn validate(&self) -> Result<(), ProtocolError>;
}

fn check_job_id(id: &str) -> Result<(), ProtocolError> {
    if crate::valid_id(id) {
        Ok(())
    } else {
        Err(ProtocolError::new(
            ErrorCode::InvalidJobId,
            format!("job_id `{id}` must be 1 to 64 of A-Z a-z 0-9 _ -"),
        ))
    }
}

fn check_model_id(id: &str) -> Result<(), ProtocolError> {
    if crate::valid_id(id) {
        Ok(())
    } else {
        Err(ProtocolError::new(
            ErrorCode::InvalidValue,
            format!("model_id `{id}` must be 1 to 64 of A-Z a-z 0-9 _ -"),
        ))
    }
}

/// Train a model: `lexmesh.jobs.train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainJob {
    /// Unique job id; also the `Nats-Msg-Id`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub job_id: String,
    /// Id under which the trained model is stored (default: the job id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub model_id: Option<String>,
    /// The data.
    pub dataset: DatasetSource,
    /// Model and training settings.
    #[serde(default)]
    pub settings: ExperimentSettings,
}

impl TrainJob {
    /// The id the model is stored under.
    pub fn model_id(&self) -> &str {
        self.model_id.as_deref().unwrap_or(&self.job_id)
    }
}

impl JobRequest for TrainJob {
    const KIND: JobKind = JobKind::Train;
    fn job_id(&self) -> &str {
        &self.job_id
    }
    fn validate(&self) -> Result<(), ProtocolError> {
        check_job_id(&self.job_id)?;
        if let Some(m) = &self.model_id {
            check_model_id(m)?;
        }
        self.dataset.validate()?;
        self.settings.validate()
    }
}

/// Prepare a dataset: `lexmesh.jobs.preprocess`, and the body of a `prepare` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreprocessJob {
    /// Unique job id; also the `Nats-Msg-Id`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub job_id: String,
    /// The data.
    pub dataset: DatasetSource,
    /// The settings whose preprocessing part (model kind, lengths, buckets, split) applies.
    #[serde(default)]
    pub settings: ExperimentSettings,
}

impl JobRequest for PreprocessJob {
    const KIND: JobKind = JobKind::Preprocess;
    fn job_id(&self) -> &str {
        &self.job_id
    }
    fn validate(&self) -> Result<(), ProtocolError> {
        check_job_id(&self.job_id)?;
        if matches!(self.dataset, DatasetSource::Prepared { .. }) {
            return Err(ProtocolError::new(
                ErrorCode::InvalidValue,
                "a preprocess job needs raw data (inline or object), not a prepared dataset",
            ));
        }
        self.dataset.validate()?;
        self.settings.validate()
    }
}

/// Evaluate a stored model: `lexmesh.jobs.evaluate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateJob {
    /// Unique job id; also the `Nats-Msg-Id`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub job_id: String,
    /// The stored model.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub model_id: String,
    /// Labelled data to evaluate on (inline `train` records or an object; `validation` is
    /// not used).
    pub dataset: DatasetSource,
}

impl JobRequest for EvaluateJob {
    const KIND: JobKind = JobKind::Evaluate;
    fn job_id(&self) -> &str {
        &self.job_id
    }
    fn validate(&self) -> Result<(), ProtocolError> {
        check_job_id(&self.job_id)?;
        check_model_id(&self.model_id)?;
        if matches!(self.dataset, DatasetSource::Prepared { .. }) {
            return Err(ProtocolError::new(
                ErrorCode::InvalidValue,
                "an evaluate job needs raw labelled data (inline or object)",
            ));
        }
        self.dataset.validate()
    }
}

/// Hyperparameter search: `lexmesh.jobs.optimize`. The shape is fixed; the search itself is
/// a later issue and no service consumes these jobs yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizeJob {
    /// Unique job id; also the `Nats-Msg-Id`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub job_id: String,
    /// The data.
    pub dataset: DatasetSource,
    /// Settings shared by every trial.
    #[serde(default)]
    pub base: ExperimentSettings,
    /// Number of trials.
    #[schemars(range(min = 1, max = 1000))]
    pub trials: u32,
    /// Candidate values per setting name (for example `{"learning_rate": [0.001, 0.0003]}`).
    pub search_space: std::collections::BTreeMap<String, Vec<serde_json::Value>>,
}

impl JobRequest for OptimizeJob {
    const KIND: JobKind = JobKind::Optimize;
    fn job_id(&self) -> &str {
        &self.job_id
    }
    fn validate(&self) -> Result<(), ProtocolError> {
        check_job_id(&self.job_id)?;
        if self.trials == 0 {
            return Err(ProtocolError::new(
                ErrorCode::InvalidValue,
                "trials must be at least 1",
            ));
        }
        self.dataset.validate()?;
        self.base.validate()
    }
}
