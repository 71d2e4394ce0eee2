//! Job requests. Each is published to [`crate::subjects::jobs`] with its `job_id` also as the
//! `Nats-Msg-Id` header, so the server drops a repeated submit.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// A pattern a string matches when it holds something besides whitespace (Unicode
/// `White_Space`, what Rust's `trim` removes), spelt with the characters themselves so that
/// every regex engine reads it alike.
pub const NON_BLANK_PATTERN: &str = "[^\t\n\u{b}\u{c}\r \u{85}\u{a0}\u{1680}\u{2000}-\u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}]";

/// One labelled example: a JSON object, read like a line of a JSON Lines file. The field named
/// by the dataset's `text_field` (default `text`) holds the text, a non-blank string; the one
/// named by `label_field` (default `label`) the label, a non-blank string, number or boolean.
/// Other fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Record(pub serde_json::Map<String, serde_json::Value>);

impl Record {
    /// A record with `text` and `label` fields.
    pub fn new(text: impl Into<String>, label: impl Into<String>) -> Self {
        let mut map = serde_json::Map::new();
        map.insert("text".into(), serde_json::Value::String(text.into()));
        map.insert("label".into(), serde_json::Value::String(label.into()));
        Self(map)
    }
}

impl JsonSchema for Record {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Record".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "One labelled example: a JSON object, read like a line of a JSON Lines file. The field named by `text_field` (default `text`) holds the text, a non-blank string; the one named by `label_field` (default `label`) the label, a non-blank string, number or boolean. Other fields are ignored.",
            "type": "object"
        })
    }
}

/// What the fields named by default must hold; with other names the same rules apply to the
/// named fields, checked when the records are read (`invalid_dataset`).
fn default_fields_rules() -> serde_json::Value {
    let text = serde_json::json!({"type": "string", "pattern": NON_BLANK_PATTERN});
    let label =
        serde_json::json!({"type": ["string", "number", "boolean"], "pattern": NON_BLANK_PATTERN});
    let rule = |selector: &str, field: &str, value: &serde_json::Value| {
        let items = serde_json::json!({"required": [field], "properties": {field: value}});
        serde_json::json!({
            "if": {"properties": {selector: {"const": field}}},
            "then": {"properties": {"train": {"items": items}, "validation": {"items": items}}}
        })
    };
    serde_json::json!([
        rule("text_field", "text", &text),
        rule("label_field", "label", &label)
    ])
}

/// Records inside the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("allOf" = default_fields_rules()))]
pub struct InlineData {
    /// Training records (for `evaluate`: the records to evaluate on), at least one.
    #[schemars(length(min = 1))]
    pub train: Vec<Record>,
    /// Validation records; when absent, a stratified split of `train` is held out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub validation: Option<Vec<Record>>,
    /// The field of each record that holds the text.
    #[serde(default = "default_text_field")]
    #[schemars(length(min = 1, max = 256))]
    pub text_field: String,
    /// The field of each record that holds the label.
    #[serde(default = "default_label_field")]
    #[schemars(length(min = 1, max = 256))]
    pub label_field: String,
}

impl InlineData {
    /// Records with `text` and `label` fields, no validation records.
    pub fn new(train: Vec<Record>) -> Self {
        Self {
            train,
            validation: None,
            text_field: default_text_field(),
            label_field: default_label_field(),
        }
    }
}

/// Where a job's data comes from: an object with exactly one of `inline`, `object` or
/// `prepared`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(transform = crate::schema::one_key_object)]
pub enum DatasetSource {
    /// Records inside the message (small datasets; the server's message size limit applies).
    Inline(InlineData),
    /// A CSV or JSON Lines file uploaded to the `lexmesh_datasets` object store.
    Object {
        /// Object name of the training file (`.csv`, `.jsonl`).
        #[schemars(length(min = 1, max = 1024))]
        key: String,
        /// Object name of a validation file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(min = 1, max = 1024))]
        validation_key: Option<String>,
        /// Field (JSON Lines) or column (CSV) with the text.
        #[serde(default = "default_text_field")]
        #[schemars(length(min = 1, max = 256))]
        text_field: String,
        /// Field or column with the label.
        #[serde(default = "default_label_field")]
        #[schemars(length(min = 1, max = 256))]
        label_field: String,
    },
    /// A dataset the preprocessor already prepared (the `dataset_id` of a preprocess result).
    Prepared {
        /// Content hash naming the prepared dataset.
        #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
        dataset_id: String,
    },
}

fn default_text_field() -> String {
    "text".into()
}

fn default_label_field() -> String {
    "label".into()
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

/// The recurrent cell of the `bigru` model, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CellName {
    /// Gated recurrent unit (the default).
    Gru,
    /// Long short-term memory.
    Lstm,
}

/// Attention heads of the `transformer` model: its `embedding_dim` must be a multiple.
pub const TRANSFORMER_HEADS: u32 = 4;

/// The rules between settings: a transformer's width is a multiple of its heads, and the
/// recurrent and transformer models need a hidden layer.
fn settings_rules() -> serde_json::Value {
    let when = |model: &str, then: serde_json::Value| {
        serde_json::json!({
            "if": {"properties": {"model": {"const": model}}, "required": ["model"]},
            "then": {"properties": then}
        })
    };
    serde_json::json!([
        when(
            "transformer",
            serde_json::json!({
                "embedding_dim": {"multipleOf": TRANSFORMER_HEADS},
                "hidden": {"minimum": 1}
            })
        ),
        when("bigru", serde_json::json!({"hidden": {"minimum": 1}})),
    ])
}

/// Settings of an experiment. Everything is optional: what is absent takes the model kind's
/// defaults (the same as `lexmesh train`'s). Every rule is in the schema.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("allOf" = settings_rules()))]
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
    /// Adam learning rate, in (0, 10].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 10))]
    pub learning_rate: Option<f64>,
    /// Epochs without improvement before stopping (0 = never stop early).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10000))]
    pub patience: Option<u32>,
    /// Seed of initialisation, shuffling and the validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maximum" = u64::MAX))]
    pub seed: Option<u64>,
    /// Fraction held out for validation when no validation data is given, in (0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("exclusiveMinimum" = 0, "exclusiveMaximum" = 1))]
    pub validation_fraction: Option<f64>,
    /// Embedding dimension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub embedding_dim: Option<u32>,
    /// Hidden size (meaning depends on the model; `bigru` and `transformer` need at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2048))]
    pub hidden: Option<u32>,
    /// Dropout probability, in [0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0, "exclusiveMaximum" = 1))]
    pub dropout: Option<f64>,
    /// Longest token sequence kept (sequence models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8192))]
    pub max_length: Option<u32>,
    /// Hashed character n-gram buckets (`bow`); sizes the embedding table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub char_buckets: Option<u32>,
    /// Weight classes inversely to their frequency (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balanced_class_weights: Option<bool>,
    /// Decoupled weight decay (AdamW), in [0, 1]; 0 = plain Adam (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0, "maximum" = 1))]
    pub weight_decay: Option<f64>,
    /// Recurrent cell of `bigru` (default `gru`; other models ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<CellName>,
}

impl ExperimentSettings {
    /// Checks the settings by the rules of the `train-job` schema, as a service does (the
    /// reason names the field, e.g. `/settings/epochs`).
    pub fn validate(&self) -> Result<(), crate::ProtocolError> {
        let job = serde_json::json!({
            "job_id": "settings",
            "dataset": {"prepared": {"dataset_id": "settings"}},
            "settings": self,
        });
        crate::decode::check("train-job", &job)
    }
}

/// A message that names a job.
pub trait JobRequest {
    /// Which kind of job this is.
    const KIND: JobKind;
    /// The job's id (also its `Nats-Msg-Id`).
    fn job_id(&self) -> &str;
}

/// What a job's dataset must be when the job needs raw records (not a prepared dataset).
fn raw_data_only() -> serde_json::Value {
    serde_json::json!({"required": ["prepared"]})
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
}

/// Prepare a dataset: `lexmesh.jobs.preprocess`, and the body of a `prepare` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreprocessJob {
    /// Unique job id; also the `Nats-Msg-Id`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub job_id: String,
    /// The raw data (inline or an object; not a prepared dataset).
    #[schemars(extend("not" = raw_data_only()))]
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
    /// Labelled data to evaluate on: inline `train` records or an object (not a prepared
    /// dataset; `validation` is not used).
    #[schemars(extend("not" = raw_data_only()))]
    pub dataset: DatasetSource,
}

impl JobRequest for EvaluateJob {
    const KIND: JobKind = JobKind::Evaluate;
    fn job_id(&self) -> &str {
        &self.job_id
    }
}

/// Hyperparameter search: `lexmesh.jobs.optimize`. No service runs searches yet: a valid
/// optimize job is answered with a `failed` event, code `unsupported`.
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
}
