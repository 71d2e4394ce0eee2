//! `lexmesh train`: read data, fit preprocessing, train on a compute thread while this thread
//! renders progress, write the model directory and print the validation report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use lexmesh_evaluator::EvaluationReport;
use lexmesh_preprocessor::prepare::{encode, split};
use lexmesh_preprocessor::{
    Dataset, EncodedSets, FieldNames, LabelSet, SplitReport, content_id, prepare,
};
use lexmesh_trainer::artifact::{FORMAT_VERSION, SavedConfig};
use lexmesh_trainer::progress::ChannelSink;
use lexmesh_trainer::training::{TrainingRun, spawn};
use lexmesh_trainer::{CancelToken, ExperimentConfig, ModelDir, ModelKind, StopReason};

use crate::cli::TrainArgs;
use crate::render::{RenderMode, Renderer, print_line};

/// Where a run's data came from: `run.json` in the model directory, read back by `--resume`
/// and by `evaluate` (for the field names).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunInputs {
    /// Training file.
    pub data: PathBuf,
    /// Validation file, if one was given.
    pub validation: Option<PathBuf>,
    /// Text and label fields.
    pub fields: FieldNames,
}

impl RunInputs {
    /// Reads `run.json` of a model directory.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("run.json");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is malformed", path.display()))
    }

    /// Writes `run.json` into a model directory.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join("run.json");
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Runs the command.
pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let mode = if args.json_progress {
        RenderMode::Json
    } else if args.quiet {
        RenderMode::Quiet
    } else {
        RenderMode::Bar
    };
    let prepared = match &args.resume {
        Some(dir) => prepare_resume(dir)?,
        None => prepare_fresh(&args, mode)?,
    };
    let Prepared {
        dir,
        experiment,
        sets,
        dataset_id,
        feature_space,
        resume,
        labels,
    } = prepared;
    let run = TrainingRun {
        config: experiment.clone(),
        classes: labels.len(),
        feature_space,
        fingerprint: experiment.run_fingerprint(&dataset_id)?,
        data: sets,
        checkpoints: Some(dir.checkpoints()),
        resume,
        compute_threads: 0,
        checkpoint_interval: Some(args.checkpoint_interval),
    };

    let cancel = CancelToken::new();
    let on_signal = cancel.clone();
    ctrlc::set_handler(move || on_signal.cancel()).context("installing the Ctrl-C handler")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = spawn(run, Box::new(ChannelSink(tx)), cancel)?;
    let mut renderer = Renderer::new(mode);
    for event in rx {
        renderer.show(&event);
    }
    let outcome = handle
        .join()
        .map_err(|_| anyhow::anyhow!("the training thread panicked"))??;
    renderer.finish();

    if outcome.reason == StopReason::Cancelled {
        let done = outcome.history.len();
        eprintln!(
            "cancelled: {done} epoch(s) finished; continue with `lexmesh train --resume {}`",
            dir.path().display()
        );
        return Ok(ExitCode::from(130));
    }
    let report = EvaluationReport::new(labels.labels().to_vec(), &outcome.validation)?;
    let metrics = serde_json::json!({
        "best_epoch": outcome.best_epoch,
        "stop_reason": outcome.reason,
        "validation": report,
    });
    dir.write_outputs(&outcome.model, &metrics, &outcome.history)?;
    match mode {
        RenderMode::Json => print_line(
            &serde_json::json!({"event": "report", "model_dir": dir.path(), "best_epoch": outcome.best_epoch, "validation": report})
                .to_string(),
        ),
        RenderMode::Bar | RenderMode::Quiet => {
            println!(
                "model written to {} (kept epoch {}, {:?})",
                dir.path().display(),
                outcome.best_epoch,
                outcome.reason
            );
            println!("validation ({} examples):", report.count);
            print!("{}", report.render_text());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A run's data, prepared the one way ([`lexmesh_preprocessor::prepare`]), and where it goes.
struct Prepared {
    dir: ModelDir,
    experiment: ExperimentConfig,
    sets: EncodedSets,
    dataset_id: String,
    labels: LabelSet,
    feature_space: usize,
    resume: bool,
}

fn prepare_fresh(args: &TrainArgs, mode: RenderMode) -> anyhow::Result<Prepared> {
    let (Some(data), Some(out)) = (&args.data, &args.out) else {
        bail!("--data and --out are required (or --resume DIR)");
    };
    let experiment = experiment_config(args)?;
    let dir = ModelDir::new(out);
    if dir.checkpoints().latest()?.is_some() {
        bail!(
            "{} already holds a training run; use --resume {} to continue it, or another --out",
            out.display(),
            out.display()
        );
    }
    let inputs = RunInputs {
        data: absolute(data),
        validation: args.validation.as_deref().map(absolute),
        fields: FieldNames {
            text: args.text_field.clone(),
            label: args.label_field.clone(),
        },
    };
    let (train, validation) = read_inputs(&inputs)?;
    let settings = experiment.prepare_settings();
    let dataset_id = content_id(&settings, &train, validation.as_ref())?;
    let prepared = prepare(train, validation, &settings)?;
    if let Some(report) = &prepared.split {
        show_split(report, mode);
    }
    let feature_space = prepared.preprocessor.feature_space();
    let saved = SavedConfig {
        format_version: FORMAT_VERSION,
        experiment: experiment.clone(),
        feature_space,
    };
    dir.write_inputs(&saved, &prepared.preprocessor, &prepared.labels)?;
    inputs.write(dir.path())?;
    Ok(Prepared {
        dir,
        experiment,
        labels: prepared.labels,
        sets: prepared.sets,
        dataset_id,
        feature_space,
        resume: false,
    })
}

/// The same data as the run began with, encoded by the preprocessing and labels it saved.
fn prepare_resume(path: &Path) -> anyhow::Result<Prepared> {
    let dir = ModelDir::new(path);
    let saved = dir.read_config()?;
    let inputs = RunInputs::read(path)?;
    let (train, validation) = read_inputs(&inputs)?;
    let settings = saved.experiment.prepare_settings();
    let dataset_id = content_id(&settings, &train, validation.as_ref())?;
    let data = split(
        train,
        validation,
        settings.validation_fraction,
        settings.seed,
    )?;
    let labels = dir.read_labels()?;
    let sets = encode(&dir.read_preprocessor()?, &labels, &data)?;
    Ok(Prepared {
        labels,
        experiment: saved.experiment,
        feature_space: saved.feature_space,
        dir,
        sets,
        dataset_id,
        resume: true,
    })
}

fn read_inputs(inputs: &RunInputs) -> anyhow::Result<(Dataset, Option<Dataset>)> {
    let train = Dataset::load(&inputs.data, &inputs.fields)?;
    let validation = match &inputs.validation {
        Some(v) => Some(Dataset::load(v, &inputs.fields)?),
        None => None,
    };
    Ok((train, validation))
}

fn show_split(report: &SplitReport, mode: RenderMode) {
    match mode {
        RenderMode::Bar => eprintln!("no --validation given: {report}"),
        RenderMode::Json => {
            print_line(&serde_json::json!({"event": "split", "split": report}).to_string())
        }
        RenderMode::Quiet => {}
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Defaults of the kind < config file < flags.
fn experiment_config(args: &TrainArgs) -> anyhow::Result<ExperimentConfig> {
    let file: Option<toml::Table> = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(
                toml::from_str(&text)
                    .with_context(|| format!("{} is not valid TOML", path.display()))?,
            )
        }
        None => None,
    };
    let file_kind = file
        .as_ref()
        .and_then(|t| t.get("model"))
        .and_then(|m| m.get("kind"))
        .and_then(|k| k.as_str());
    let kind = match (args.model, file_kind) {
        (Some(m), _) => m,
        (None, Some(k)) => k.parse::<ModelKind>()?,
        (None, None) => ModelKind::Bow,
    };
    let mut config = ExperimentConfig::for_kind(kind);
    if let Some(file) = file {
        let mut base = toml::Table::try_from(&config)?;
        merge(&mut base, file);
        if let Some(model) = base.get_mut("model").and_then(|m| m.as_table_mut()) {
            model.insert("kind".into(), toml::Value::String(kind.name().into()));
        }
        let path = args.config.as_deref().unwrap_or(Path::new("config"));
        config = toml::Value::Table(base)
            .try_into()
            .with_context(|| format!("{}: invalid configuration", path.display()))?;
    }
    args.settings.overrides().apply_to(&mut config);
    set(&mut config.training.threads, args.threads);
    set(&mut config.training.device, args.device);
    config.validate()?;
    Ok(config)
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}
