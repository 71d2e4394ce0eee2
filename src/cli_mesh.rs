//! Arguments of the mesh commands (`up`, `serve`, `submit`, `watch`, `jobs`, `trials`,
//! `cancel`, `models`, `classify`). Every one takes `--config FILE` (the service configuration: NATS URL,
//! auth, TLS; see `lexmesh_runtime::config`), layered under `LEXMESH_*__*` and `NATS_URL`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::cli::{FormatArg, SettingsArgs};
use lexmesh_trainer::ModelKind;

/// A lexmesh service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceArg {
    /// Runs `preprocess` jobs and `prepare` requests.
    Preprocessor,
    /// Runs `train` jobs.
    Trainer,
    /// Runs `evaluate` jobs and `classify` requests.
    Evaluator,
    /// Watches every instance's heartbeats and replaces those that stop working.
    Health,
    /// Gathers every instance's metrics, serves Prometheus `/metrics` and raises alerts.
    Metrics,
}

/// Job kinds that can be submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SubmitKind {
    /// Train a model.
    Train,
    /// Evaluate a stored model.
    Evaluate,
    /// Prepare (normalise, tokenise, vectorise) a dataset.
    Preprocess,
    /// Search hyperparameters: trials as train jobs (`--space FILE.toml --trials N`).
    Optimize,
}

/// The scheduler of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchedulerArg {
    /// Every trial runs all its epochs.
    None,
    /// Asynchronous successive halving: trials below a rung's cutoff stop early.
    Asha,
}

/// The sampler of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SamplerArg {
    /// Seeded random draws.
    Random,
    /// Every combination of the choice lists and integer ranges.
    Grid,
}

/// The flags of `lexmesh submit optimize`.
#[derive(Debug, Args, Clone, Default)]
pub struct OptimizeArgs {
    /// optimize: the search space, a TOML file with `[space]` (a domain per setting) and
    /// optionally `[base]` (settings every trial shares) and `[asha]` (the scheduler's
    /// settings); see the README's "Hyperparameter search".
    #[arg(long, value_name = "FILE.toml")]
    pub space: Option<PathBuf>,
    /// optimize: trials at most (failed trials do not count).
    #[arg(long)]
    pub trials: Option<u32>,
    /// optimize: early stopping of trials (default none).
    #[arg(long, value_enum)]
    pub scheduler: Option<SchedulerArg>,
    /// optimize: how trials' values are chosen (default random).
    #[arg(long, value_enum)]
    pub sampler: Option<SamplerArg>,
    /// optimize: trials that run at once (default 1).
    #[arg(long)]
    pub max_concurrent: Option<u32>,
    /// optimize: trials that may fail before the search fails (default 0).
    #[arg(long)]
    pub max_failed: Option<u32>,
    /// optimize: a validation macro-F1 that ends the search once a trial reaches it.
    #[arg(long)]
    pub goal: Option<f64>,
}

/// Options every mesh command shares.
#[derive(Debug, Args, Clone)]
pub struct MeshOptions {
    /// Service configuration file (TOML; default ./lexmesh.toml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

/// `lexmesh up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Replicas per service, e.g. `--replicas trainer=2` (repeatable; default 1 each).
    #[arg(long, value_name = "SERVICE=N")]
    pub replicas: Vec<String>,
    /// Folder for the local nats-server's data, when one is started.
    #[arg(long, default_value = ".lexmesh/nats")]
    pub data_dir: PathBuf,
    /// Start the local nats-server with users and permissions: `lexmesh` for the services and
    /// the command line, `publisher` for other systems (submit jobs, follow them, classify,
    /// cancel). Passwords are made once and kept in `<data-dir>/users/`, with `services.toml`
    /// (a `--config` for the command line) and `publisher.url` (the URL other systems use).
    #[arg(long)]
    pub auth: bool,
    /// Shared options.
    #[command(flatten)]
    pub mesh: MeshOptions,
}

/// `lexmesh serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Which service.
    pub service: ServiceArg,
    /// Shared options.
    #[command(flatten)]
    pub mesh: MeshOptions,
}

/// `lexmesh submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Job kind.
    pub kind: SubmitKind,
    /// The whole job as JSON (a file, or `-` for stdin) instead of the flags below.
    #[arg(long, conflicts_with_all = ["data", "validation"])]
    pub json: Option<PathBuf>,
    /// Labelled data file (JSON Lines or CSV/TSV); uploaded to the datasets object store.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Validation file (train, preprocess); default: a stratified split of --data.
    #[arg(long)]
    pub validation: Option<PathBuf>,
    /// Field (JSON Lines) or column (CSV) holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Field or column holding the label.
    #[arg(long, default_value = "label")]
    pub label_field: String,
    /// Job id (default: generated).
    #[arg(long)]
    pub job_id: Option<String>,
    /// train: id to store the model under (default: the job id); evaluate: the model;
    /// optimize: the id the best trial's model is registered under (default: the job id).
    #[arg(long)]
    pub model_id: Option<String>,
    /// Model architecture.
    #[arg(long, value_enum)]
    pub model: Option<ModelKind>,
    /// The run's settings (train and preprocess jobs; optimize: the settings every trial
    /// shares, `--epochs` the epochs of each trial and `--seed` the search's seed), as
    /// `lexmesh train` takes them.
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// The search (optimize jobs).
    #[command(flatten)]
    pub optimize: OptimizeArgs,
    /// Follow the job's progress until it ends.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: print events as JSON lines instead of a progress bar.
    #[arg(long)]
    pub json_events: bool,
    /// Shared options.
    #[command(flatten)]
    pub mesh: MeshOptions,
}

/// `lexmesh watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The job.
    pub job_id: String,
    /// Print events as JSON lines instead of a progress bar.
    #[arg(long)]
    pub json: bool,
    /// Shared options.
    #[command(flatten)]
    pub mesh: MeshOptions,
}

/// `lexmesh jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// Shared options.
    #[command(flatten)]
    pub mesh: MeshOptions,
}

/// `lexmesh trials`.
#[derive(Debug, Args)]
pub struct TrialsArgs {
    /// The optimize job.
    pub job_id: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// Shared options.
    #[command(flatten)]
    pub mesh: MeshOptions,
}

/// `lexmesh status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format: the instances, running jobs and active alerts as tables, or
    /// `{"health": <health report or null>, "metrics": <metrics snapshot or null>}`.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// Shared options.
    #[command(flatten)]
    pub mesh: MeshOptions,
}

/// `lexmesh top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Time between two frames: `500ms`, `2s`, `1.5s`, `1m` (at least 200ms).
    #[arg(long, default_value = "2s", value_parser = crate::commands::top::parse_interval)]
    pub interval: Duration,
    /// Stop after this many frames (default: until Ctrl-C).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Shared options.
    #[command(flatten)]
    pub mesh: MeshOptions,
}

/// `lexmesh cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job.
    pub job_id: String,
    /// Shared options.
    #[command(flatten)]
    pub mesh: MeshOptions,
}

/// `lexmesh models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// Shared options.
    #[command(flatten)]
    pub mesh: MeshOptions,
}

/// `lexmesh classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// The stored model.
    #[arg(long)]
    pub model: String,
    /// Texts to classify.
    #[arg(required = true)]
    pub texts: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// Shared options.
    #[command(flatten)]
    pub mesh: MeshOptions,
}
