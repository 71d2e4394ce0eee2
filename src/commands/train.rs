//! `lexmesh train`: read data, fit preprocessing, train on a compute thread while this thread
//! renders progress, write the model directory and print the validation report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use lexmesh_evaluator::EvaluationReport;
use lexmesh_preprocessor::tokenize::fnv1a;
use lexmesh_preprocessor::{Dataset, FieldNames, LabelSet, Preprocessor, stratified_split};
use lexmesh_trainer::artifact::{FORMAT_VERSION, SavedConfig};
use lexmesh_trainer::progress::ChannelSink;
use lexmesh_trainer::training::{TrainingData, TrainingRun, spawn};
use lexmesh_trainer::{
    CancelToken, ClassWeighting, ExperimentConfig, ModelDir, ModelKind, RnnCell, StopReason,
};

use crate::cli::{CellArg, ClassWeightsArg, ModelArg, TrainArgs};
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

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
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
        preprocessor,
        labels,
        train,
        validation,
        feature_space,
        resume,
    } = prepared;

    let train_labels = labels.encode(&train)?;
    let validation_labels = labels.encode(&validation)?;
    let train_texts: Vec<&str> = train.examples.iter().map(|e| e.text.as_str()).collect();
    let validation_texts: Vec<&str> = validation
        .examples
        .iter()
        .map(|e| e.text.as_str())
        .collect();
    let fingerprint = fingerprint(&experiment, &preprocessor, &labels, &train, &validation)?;
    let run = TrainingRun {
        config: experiment.clone(),
        classes: labels.len(),
        feature_space,
        data: TrainingData {
            train: preprocessor.encode_all(&train_texts),
            train_labels,
            validation: preprocessor.encode_all(&validation_texts),
            validation_labels,
        },
        checkpoints: Some(dir.checkpoints()),
        resume,
        fingerprint,
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

struct Prepared {
    dir: ModelDir,
    experiment: ExperimentConfig,
    preprocessor: Preprocessor,
    labels: LabelSet,
    train: Dataset,
    validation: Dataset,
    feature_space: usize,
    resume: bool,
}

fn prepare_fresh(args: &TrainArgs, mode: RenderMode) -> anyhow::Result<Prepared> {
    let (Some(data), Some(out)) = (&args.data, &args.out) else {
        bail!("--data and --out are required (or --resume DIR)");
    };
    let experiment = experiment_config(args)?;
    let fields = FieldNames {
        text: args.text_field.clone(),
        label: args.label_field.clone(),
    };
    let inputs = RunInputs {
        data: absolute(data),
        validation: args.validation.as_deref().map(absolute),
        fields,
    };
    let (train, validation) = load_data(&inputs, &experiment, mode)?;
    let labels = train.training_labels()?;
    let texts: Vec<&str> = train.examples.iter().map(|e| e.text.as_str()).collect();
    let preprocessor = Preprocessor::fit(
        &texts,
        experiment.normalizer.clone(),
        experiment.features.clone(),
    )?;
    let feature_space = preprocessor.feature_space();
    let dir = ModelDir::new(out);
    if dir.checkpoints().latest()?.is_some() {
        bail!(
            "{} already holds a training run; use --resume {} to continue it, or another --out",
            out.display(),
            out.display()
        );
    }
    let saved = SavedConfig {
        format_version: FORMAT_VERSION,
        experiment: experiment.clone(),
        feature_space,
    };
    dir.write_inputs(&saved, &preprocessor, &labels)?;
    inputs.write(dir.path())?;
    Ok(Prepared {
        dir,
        experiment,
        preprocessor,
        labels,
        train,
        validation,
        feature_space,
        resume: false,
    })
}

fn prepare_resume(path: &Path) -> anyhow::Result<Prepared> {
    let dir = ModelDir::new(path);
    let saved = dir.read_config()?;
    let inputs = RunInputs::read(path)?;
    let (train, validation) = load_data(&inputs, &saved.experiment, RenderMode::Quiet)?;
    Ok(Prepared {
        preprocessor: dir.read_preprocessor()?,
        labels: dir.read_labels()?,
        experiment: saved.experiment,
        feature_space: saved.feature_space,
        dir,
        train,
        validation,
        resume: true,
    })
}

fn load_data(
    inputs: &RunInputs,
    experiment: &ExperimentConfig,
    mode: RenderMode,
) -> anyhow::Result<(Dataset, Dataset)> {
    let all = Dataset::load(&inputs.data, &inputs.fields)?;
    all.training_labels()?;
    match &inputs.validation {
        Some(v) => Ok((all, Dataset::load(v, &inputs.fields)?)),
        None => {
            let t = &experiment.training;
            let (train, validation, report) =
                stratified_split(&all, t.validation_fraction, t.seed)?;
            match mode {
                RenderMode::Bar => eprintln!("no --validation given: {report}"),
                RenderMode::Json => {
                    print_line(&serde_json::json!({"event": "split", "split": report}).to_string())
                }
                RenderMode::Quiet => {}
            }
            Ok((train, validation))
        }
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
        (Some(m), _) => model_kind(m),
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
    let t = &mut config.training;
    let m = &mut config.model;
    set(&mut t.epochs, args.epochs);
    set(&mut t.batch_size, args.batch_size);
    set(&mut t.learning_rate, args.learning_rate);
    set(&mut t.seed, args.seed);
    set(&mut t.patience, args.patience);
    set(&mut t.threads, args.threads);
    set(&mut t.device, args.device.map(Into::into));
    set(
        &mut t.class_weights,
        args.class_weights.map(|c| match c {
            ClassWeightsArg::None => ClassWeighting::None,
            ClassWeightsArg::Balanced => ClassWeighting::Balanced,
        }),
    );
    set(&mut m.embedding_dim, args.embedding_dim);
    set(&mut m.hidden, args.hidden);
    set(&mut m.dropout, args.dropout);
    set(
        &mut m.cell,
        args.cell.map(|c| match c {
            CellArg::Gru => RnnCell::Gru,
            CellArg::Lstm => RnnCell::Lstm,
        }),
    );
    set(&mut config.features.max_length, args.max_length);
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

fn model_kind(m: ModelArg) -> ModelKind {
    match m {
        ModelArg::Bow => ModelKind::Bow,
        ModelArg::Cnn => ModelKind::Cnn,
        ModelArg::Bigru => ModelKind::Bigru,
        ModelArg::Transformer => ModelKind::Transformer,
    }
}

/// Hash of everything that defines a run, stored in checkpoints: a resume against changed data
/// or settings is refused instead of silently mixing two runs.
fn fingerprint(
    experiment: &ExperimentConfig,
    preprocessor: &Preprocessor,
    labels: &LabelSet,
    train: &Dataset,
    validation: &Dataset,
) -> anyhow::Result<String> {
    let mut bytes = serde_json::to_vec(experiment)?;
    bytes.extend(serde_json::to_vec(preprocessor)?);
    bytes.extend(serde_json::to_vec(labels)?);
    for e in train.examples.iter().chain(&validation.examples) {
        bytes.extend_from_slice(e.text.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(e.label.as_bytes());
        bytes.push(0);
    }
    Ok(format!("{:016x}", fnv1a(&bytes)))
}
