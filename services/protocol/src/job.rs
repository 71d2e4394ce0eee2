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
    /// Hyperparameter search: trials run as train jobs.
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
    /// L2 penalty on the weights, added to the gradient before Adam's step (as
    /// `torch.optim.Adam`'s `weight_decay`), in [0, 1]; 0 = none. Default: the model kind's
    /// (0.001 for `bow`, 0 for the others).
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

/// Hyperparameter search: `lexmesh.jobs.optimize`. The coordinator (a trainer replica)
/// runs each trial as a train job with the `base` settings, the trial's values from
/// `search_space` and `max_epochs` epochs, stops trials early as the scheduler says, and
/// registers the best trial's model under `model_id`.
///
/// The rules between fields that a schema cannot state (a range's `low` at most its `high`, a
/// value every trial's settings accept, a grid over choice lists and integer ranges only and
/// no larger than `trials`, ASHA's `max_t` equal to `max_epochs`, trial ids of at most 64
/// characters) are checked when the job is received, before any trial runs, and answered
/// `invalid_value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("allOf" = optimize_rules()))]
pub struct OptimizeJob {
    /// Unique job id; also the `Nats-Msg-Id`. Trial `k` is the train job `<job_id>-t<k>`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub job_id: String,
    /// Id under which the best trial's model is registered (default: the job id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub model_id: Option<String>,
    /// The data every trial trains on (inline records are prepared once and the trials get
    /// the prepared dataset).
    pub dataset: DatasetSource,
    /// Settings shared by every trial (`epochs` is `max_epochs`'s).
    #[serde(default)]
    pub base: ExperimentSettings,
    /// Trials that end with a result (completed, stopped or cancelled) at most: the search's
    /// `max_trials`. A trial that fails does not use up the budget.
    #[schemars(range(min = 1, max = 1000))]
    pub trials: u32,
    /// The settings to search, by name (any setting of a train job's `settings` but
    /// `epochs`), each with its domain: a list of values (`[0.001, 0.01]`), or
    /// `{"choice": [...]}`, `{"uniform": {"low", "high"}}`, `{"log_uniform": {"low", "high"}}`
    /// (low > 0), `{"int": {"low", "high"}}` (bounds included).
    pub search_space: SearchSpace,
    /// How trial `k`'s values are chosen (default `random`): `random` draws them, seeded by
    /// `seed` and `k`; `grid` walks every combination of choice lists and integer ranges (no
    /// `uniform` or `log_uniform` domain), each once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "SamplerName")]
    pub sampler: Option<SamplerName>,
    /// Seed of the random sampler and of ASHA's bracket choice (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maximum" = u64::MAX))]
    pub seed: Option<u64>,
    /// Early stopping of trials (default `none`: every trial runs `max_epochs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "SchedulerSpec")]
    pub scheduler: Option<SchedulerSpec>,
    /// Trials that run at once (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_concurrent_trials: Option<u32>,
    /// Trials that may fail for good before the search fails (default 0: the first failure
    /// ends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000))]
    pub max_failed_trials: Option<u32>,
    /// Epochs of each trial (default: `base.epochs`, else the model's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_epochs: Option<u32>,
    /// A validation macro-F1 in [0, 1] that ends the search as soon as a trial reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub goal: Option<f64>,
}

impl OptimizeJob {
    /// The id the best model is registered under.
    pub fn model_id(&self) -> &str {
        self.model_id.as_deref().unwrap_or(&self.job_id)
    }
}

/// The settings a search may vary (every field of [`ExperimentSettings`] but `epochs`, which
/// is the search's `max_epochs`), in the order of the schema.
pub fn searchable_settings() -> Vec<String> {
    setting_schemas()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name != "epochs")
        .collect()
}

/// What kind of value a setting of [`ExperimentSettings`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingType {
    /// A whole number (`batch_size`, `embedding_dim`, ...).
    Integer,
    /// Any number (`learning_rate`, `dropout`, ...).
    Number,
    /// `true` or `false`.
    Boolean,
    /// One of some names (`model`, `cell`).
    Name,
}

/// The type of the setting `name`; none for a name [`ExperimentSettings`] does not have.
pub fn setting_type(name: &str) -> Option<SettingType> {
    let (_, schema) = setting_schemas().into_iter().find(|(n, _)| n == name)?;
    let types: Vec<&str> = match schema.get("type") {
        Some(serde_json::Value::String(t)) => vec![t.as_str()],
        Some(serde_json::Value::Array(ts)) => ts.iter().filter_map(|t| t.as_str()).collect(),
        _ => Vec::new(),
    };
    Some(if types.contains(&"integer") {
        SettingType::Integer
    } else if types.contains(&"number") {
        SettingType::Number
    } else if types.contains(&"boolean") {
        SettingType::Boolean
    } else {
        SettingType::Name
    })
}

/// The fields of [`ExperimentSettings`] with their schemas.
fn setting_schemas() -> Vec<(String, serde_json::Value)> {
    let schema = schemars::schema_for!(ExperimentSettings);
    match schema.get("properties") {
        Some(serde_json::Value::Object(properties)) => properties
            .iter()
            .map(|(name, schema)| (name.clone(), schema.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The settings a search varies, each with its domain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SearchSpace(pub std::collections::BTreeMap<String, SearchDomain>);

impl JsonSchema for SearchSpace {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SearchSpace".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // The settings' own definitions (model and cell names) are referred to below.
        let _ = generator.subschema_for::<ExperimentSettings>();
        let properties: serde_json::Map<String, serde_json::Value> = setting_schemas()
            .into_iter()
            .filter(|(name, _)| name != "epochs")
            .filter_map(|(name, schema)| {
                let kind = setting_type(&name)?;
                Some((name, domain_schema(&schema, kind)))
            })
            .collect();
        schemars::json_schema!({
            "description": "The settings to search (any of a train job's `settings` but `epochs`), each with its domain.",
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        })
    }
}

/// The schema of one setting's domain in a search space: a list of values, or an object with
/// exactly one of `choice`, `int` (whole-number and number settings), `uniform` and
/// `log_uniform` (number settings), every value and bound one the setting takes. Both forms
/// in one schema, not an `anyOf` (array keywords apply to arrays, object keywords to
/// objects): a validator then names the real mistake (an empty list is `invalid_value`), not
/// "matches none of its forms".
fn domain_schema(setting: &serde_json::Value, kind: SettingType) -> serde_json::Value {
    use serde_json::{Value, json};
    let value = non_null(setting);
    let mut forms = serde_json::Map::new();
    forms.insert(
        "choice".into(),
        json!({"description": "One of these values, each as likely.", "type": "array", "minItems": 1, "items": value}),
    );
    let range = |bound: Value, what: &str| {
        json!({
            "description": what,
            "type": "object",
            "properties": {"low": bound.clone(), "high": bound},
            "required": ["low", "high"],
            "additionalProperties": false,
        })
    };
    if matches!(kind, SettingType::Integer | SettingType::Number) {
        let mut whole = value.clone();
        if let Value::Object(map) = &mut whole {
            map.insert("type".into(), "integer".into());
            map.remove("format");
        }
        forms.insert(
            "int".into(),
            range(
                whole,
                "A whole number in [low, high] (both included), each as likely.",
            ),
        );
    }
    if kind == SettingType::Number {
        forms.insert(
            "uniform".into(),
            range(value.clone(), "A number in [low, high], uniformly."),
        );
        let mut positive = value.clone();
        if let Value::Object(map) = &mut positive {
            map.insert("exclusiveMinimum".into(), 0.into());
        }
        forms.insert(
            "log_uniform".into(),
            range(
                positive,
                "A number in [low, high] (low > 0), uniformly in its logarithm.",
            ),
        );
    }
    json!({
        "description": setting.get("description").cloned().unwrap_or(Value::Null),
        "type": ["array", "object"],
        "minItems": 1,
        "items": value,
        "properties": forms,
        "additionalProperties": false,
        "minProperties": 1,
        "maxProperties": 1,
    })
}

/// A setting's schema without its `null` (the settings are optional; a searched value is not)
/// and its description.
fn non_null(schema: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let mut schema = schema.clone();
    let Value::Object(map) = &mut schema else {
        return schema;
    };
    map.remove("description");
    map.remove("default");
    if let Some(Value::Array(types)) = map.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            map.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(forms)) = map.get_mut("anyOf") {
        forms.retain(|f| f.get("type").and_then(Value::as_str) != Some("null"));
        if forms.len() == 1 {
            let only = forms.remove(0);
            map.remove("anyOf");
            if let Value::Object(only) = only {
                map.extend(only);
            }
        }
    }
    schema
}

/// The values a search may try for one setting: a list of values (each as likely), or an
/// object with exactly one of `choice`, `uniform`, `log_uniform`, `int`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SearchDomain {
    /// A list of values, each as likely (the same as `{"choice": [...]}`).
    Values(Vec<serde_json::Value>),
    /// A domain object.
    Domain(DomainSpec),
}

impl SearchDomain {
    /// The domain, the list form read as a choice.
    pub fn spec(&self) -> DomainSpec {
        match self {
            Self::Values(values) => DomainSpec::Choice(values.clone()),
            Self::Domain(domain) => domain.clone(),
        }
    }
}

/// A setting's domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DomainSpec {
    /// One of these values, each as likely.
    Choice(Vec<serde_json::Value>),
    /// A real number in `[low, high]`, uniformly.
    Uniform {
        /// Smallest value.
        low: f64,
        /// Largest value.
        high: f64,
    },
    /// A positive real number in `[low, high]`, uniformly in its logarithm (a learning rate).
    LogUniform {
        /// Smallest value (> 0).
        low: f64,
        /// Largest value.
        high: f64,
    },
    /// A whole number in `[low, high]`, each as likely.
    Int {
        /// Smallest value.
        low: i64,
        /// Largest value.
        high: i64,
    },
}

/// The rules of an optimize job between its fields: a grid walks choice lists and integer
/// ranges only.
fn optimize_rules() -> serde_json::Value {
    serde_json::json!([{
        "if": {"properties": {"sampler": {"const": "grid"}}, "required": ["sampler"]},
        "then": {"properties": {"search_space": {"additionalProperties": {
            "properties": {"uniform": false, "log_uniform": false}
        }}}}
    }])
}

/// How a search chooses the values of its trials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SamplerName {
    /// Independent draws, seeded by the search's seed and the trial's index.
    #[default]
    Random,
    /// Every combination of the choice lists and integer ranges, in order.
    Grid,
}

/// A search's scheduler: `"none"` or `{"asha": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerSpec {
    /// Every trial runs `max_epochs`.
    None,
    /// Asynchronous successive halving.
    Asha(AshaSpec),
}

impl JsonSchema for SchedulerSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SchedulerSpec".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let asha = generator.subschema_for::<AshaSpec>();
        // The string and the object form in one schema (see `SearchDomain`): an unknown name
        // is told as such.
        schemars::json_schema!({
            "description": "Early stopping of trials: `\"none\"`, or `{\"asha\": {...}}` (asynchronous successive halving).",
            "type": ["string", "object"],
            "if": {"type": "string"},
            "then": {"enum": ["none"]},
            "properties": {"asha": asha},
            "additionalProperties": false,
            "minProperties": 1,
            "maxProperties": 1,
        })
    }
}

/// ASHA's settings, with Ray Tune's meaning: rungs at `grace_period · reduction_factor^k`
/// epochs; a trial reaching a rung continues only in the top `1 / reduction_factor` of the
/// values recorded there so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AshaSpec {
    /// Epochs a trial may run: must equal the search's `max_epochs` (default: that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_t: Option<u32>,
    /// Epochs before the first rung (default 5, or `max_epochs` when smaller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub grace_period: Option<u32>,
    /// Only the top `1 / reduction_factor` of a rung continue (default 3; above 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("exclusiveMinimum" = 1, "maximum" = 1000))]
    pub reduction_factor: Option<f64>,
    /// Brackets (default 1: plain ASHA; more: Hyperband-style brackets with later first
    /// rungs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub brackets: Option<u32>,
    /// Which value of a trial a rung judges (default `last`: the epoch that reached the rung,
    /// as Ray Tune and Optuna do; `best_so_far`: its best epoch so far, so that a trial whose
    /// score dipped after its peak is judged by its peak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "JudgeName")]
    pub judge: Option<JudgeName>,
}

/// Which value of a trial an ASHA rung judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JudgeName {
    /// The value of the epoch that reached the rung.
    Last,
    /// The best value so far.
    BestSoFar,
}

impl JobRequest for OptimizeJob {
    const KIND: JobKind = JobKind::Optimize;
    fn job_id(&self) -> &str {
        &self.job_id
    }
}
