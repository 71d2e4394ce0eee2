//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lexmesh_trainer::{ClassWeighting, DeviceChoice, ModelKind, Overrides, RnnCell};

/// Train, evaluate and use text classifiers for Persian legal documents.
#[derive(Debug, Parser)]
#[command(name = "lexmesh", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model on a labelled file (JSON Lines or CSV/TSV) and print its validation report.
    Train(Box<TrainArgs>),
    /// Evaluate a trained model on a labelled file.
    Evaluate(EvaluateArgs),
    /// Predict labels of texts given as arguments, or of JSON Lines on stdin.
    Predict(PredictArgs),
    /// Search hyperparameters in this process: trials on threads, ASHA or none, the same search
    /// as `lexmesh submit optimize`; writes every trial's model and the best one.
    Optimize(Box<OptimizeRunArgs>),
    /// Write the JSON Schema of every mesh message into a folder.
    Schemas(SchemasArgs),
    /// Start a local mesh: one process per service replica (and a nats-server if none answers).
    Up(crate::cli_mesh::UpArgs),
    /// Run one service (what a container runs).
    Serve(crate::cli_mesh::ServeArgs),
    /// Submit a job to the mesh.
    Submit(Box<crate::cli_mesh::SubmitArgs>),
    /// Follow a job's events (replayed from the start) until it ends.
    Watch(crate::cli_mesh::WatchArgs),
    /// List jobs with their status.
    Jobs(crate::cli_mesh::JobsArgs),
    /// Show the trials of a hyperparameter search (an optimize job): settings, epochs run,
    /// best macro-F1, status.
    Trials(crate::cli_mesh::TrialsArgs),
    /// Show every service instance (health, CPU, memory), running jobs with progress, and
    /// active alerts.
    Status(crate::cli_mesh::StatusArgs),
    /// Show the `status` view again every `--interval` until Ctrl-C.
    Top(crate::cli_mesh::TopArgs),
    /// Cancel a job.
    Cancel(crate::cli_mesh::CancelArgs),
    /// List stored models.
    Models(crate::cli_mesh::ModelsArgs),
    /// Classify texts with a stored model through the evaluator service.
    Classify(crate::cli_mesh::ClassifyArgs),
}

/// `lexmesh schemas`.
#[derive(Debug, Args)]
pub struct SchemasArgs {
    /// Folder to write into (created if missing).
    #[arg(long, default_value = "schemas")]
    pub out: PathBuf,
    /// Write nothing; exit 1 when a file is missing or differs from the types.
    #[arg(long)]
    pub check: bool,
}

/// The settings of a run, shared by `lexmesh train` and `lexmesh submit train`: each flag is
/// one field of [`Overrides`] (and of a job's `settings`).
#[derive(Debug, Clone, Default, PartialEq, Args)]
pub struct SettingsArgs {
    /// Epochs (upper bound with early stopping).
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Examples per batch.
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// Adam learning rate.
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// L2 penalty on the weights, added to the gradient (as `torch.optim.Adam`'s); 0 = none.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Early-stopping patience in epochs (0 = off).
    #[arg(long)]
    pub patience: Option<u32>,
    /// Random seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fraction held out for validation when no validation file is given.
    #[arg(long)]
    pub validation_fraction: Option<f64>,
    /// Class weighting of the loss.
    #[arg(long, value_enum)]
    pub class_weights: Option<ClassWeighting>,
    /// Embedding dimension.
    #[arg(long)]
    pub embedding_dim: Option<u32>,
    /// Hidden size (bow: 0 = linear head; bigru: state size; transformer: feed-forward size).
    #[arg(long)]
    pub hidden: Option<u32>,
    /// Dropout probability.
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Recurrent cell of bigru.
    #[arg(long, value_enum)]
    pub cell: Option<RnnCell>,
    /// Longest input kept (tokens, or distinct features for bow).
    #[arg(long)]
    pub max_length: Option<u32>,
    /// Hashed character n-gram buckets (bow); the ones training texts fill get feature ids.
    #[arg(long)]
    pub char_buckets: Option<u32>,
}

impl SettingsArgs {
    /// The flags as overrides of a run's defaults.
    pub fn overrides(&self) -> Overrides {
        let size = |v: Option<u32>| v.map(|v| v as usize);
        Overrides {
            epochs: size(self.epochs),
            batch_size: size(self.batch_size),
            learning_rate: self.learning_rate,
            weight_decay: self.weight_decay.map(|v| v as f32),
            patience: size(self.patience),
            seed: self.seed,
            validation_fraction: self.validation_fraction,
            class_weights: self.class_weights,
            embedding_dim: size(self.embedding_dim),
            hidden: size(self.hidden),
            dropout: self.dropout,
            cell: self.cell,
            max_length: size(self.max_length),
            char_buckets: size(self.char_buckets),
        }
    }
}

/// Report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Human-readable.
    Text,
    /// One JSON object (evaluate) or one per line (predict).
    Json,
}

/// `lexmesh train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training data (.jsonl/.ndjson/.json, .csv, .tsv).
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// Validation data; without it a stratified, seeded split of --data is made.
    #[arg(long)]
    pub validation: Option<PathBuf>,
    /// Architecture (default: bow, or the config file's model.kind).
    #[arg(long, value_enum)]
    pub model: Option<ModelKind>,
    /// Output model directory.
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this model directory from its latest checkpoint (same data and
    /// settings are read back from the directory).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["data", "validation", "out", "config", "model"])]
    pub resume: Option<PathBuf>,
    /// TOML file with [model], [training], [normalizer], [features] tables; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Field (JSON) or column (CSV) holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Field or column holding the label.
    #[arg(long, default_value = "label")]
    pub label_field: String,
    /// The run's settings.
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Compute threads (0 = all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Compute device.
    #[arg(long, value_enum)]
    pub device: Option<DeviceChoice>,
    /// Also checkpoint in the middle of an epoch once this long has passed since the last
    /// checkpoint (e.g. `30s`, `2m`; `0s` = after every batch); an interrupted run resumed
    /// with `--resume` loses at most this much.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub checkpoint_interval: std::time::Duration,
    /// Print only the final report.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print one JSON object per progress event on stdout (and the report as the last line).
    #[arg(long, conflicts_with = "quiet")]
    pub json_progress: bool,
}

/// `lexmesh optimize`.
#[derive(Debug, Args)]
pub struct OptimizeRunArgs {
    /// Training data (.jsonl/.ndjson/.json, .csv, .tsv).
    #[arg(long)]
    pub data: PathBuf,
    /// Validation data (the objective is scored on it); without it a stratified, seeded split
    /// of --data is made.
    #[arg(long)]
    pub validation: Option<PathBuf>,
    /// Field (JSON) or column (CSV) holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Field or column holding the label.
    #[arg(long, default_value = "label")]
    pub label_field: String,
    /// Output folder: `trials/<trial>/` (each trial's model), `best/` (the best trial's model),
    /// `search.json` (the search's final state).
    #[arg(long)]
    pub out: PathBuf,
    /// Architecture every trial uses unless the space varies `model` (default: bow).
    #[arg(long, value_enum)]
    pub model: Option<ModelKind>,
    /// The settings every trial shares (over the space file's `[base]`); `--epochs` is each
    /// trial's epochs, `--seed` the search's seed.
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// The search: `--space FILE.toml`, `--trials N`, the scheduler and sampler, trials at once.
    #[command(flatten)]
    pub optimize: crate::cli_mesh::OptimizeArgs,
    /// Compute threads in all (0 = all cores), shared out among the trials that run at once.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Compute device.
    #[arg(long, value_enum)]
    pub device: Option<DeviceChoice>,
    /// How progress and the result are printed: text on stderr and a table, or JSON lines on
    /// stdout (the search's actions, every epoch, the result last).
    #[arg(long, value_enum, default_value = "text")]
    pub format: FormatArg,
    /// Print only the result.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `lexmesh evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Model directory written by `lexmesh train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled test data.
    #[arg(long)]
    pub data: PathBuf,
    /// Field or column holding the text (default: the one the model was trained with).
    #[arg(long)]
    pub text_field: Option<String>,
    /// Field or column holding the label (default: the one the model was trained with).
    #[arg(long)]
    pub label_field: Option<String>,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: FormatArg,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceChoice,
}

/// `lexmesh predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Model directory written by `lexmesh train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Texts to classify; without any, JSON Lines are read from stdin.
    pub texts: Vec<String>,
    /// Field holding the text in stdin's JSON Lines.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Output format: JSON Lines or a text table.
    #[arg(long, value_enum, default_value = "json")]
    pub format: FormatArg,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceChoice,
}
