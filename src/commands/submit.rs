//! `lexmesh submit`: build a job from flags (or take it whole from `--json`), upload its data
//! files to the datasets object store, publish it to the jobs stream, print its id, and with
//! `--watch` follow it to the end. An optimize job takes its search space from a TOML file
//! (`--space`), checked here as the coordinator will check it.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use lexmesh_protocol::job::{AshaSpec, SamplerName, SchedulerSpec, SearchSpace};
use lexmesh_protocol::{
    DatasetSource, EvaluateJob, ExperimentSettings, JobKind, OptimizeJob, PreprocessJob,
    ProtocolError, TrainJob, decode, names,
};
use lexmesh_runtime::{Mesh, objects, telemetry};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::cli::SettingsArgs;
use crate::cli_mesh::{OptimizeArgs, SamplerArg, SchedulerArg, SubmitArgs, SubmitKind};
use crate::client;
use lexmesh_mesh::settings;
use lexmesh_trainer::{ClassWeighting, ModelKind};

/// Runs the command.
pub fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    if args.json_events && !args.watch {
        bail!("--json-events goes with --watch");
    }
    let kind = job_kind(args.kind);
    // Everything that can be checked without the mesh is checked before connecting.
    let plan = match &args.json {
        Some(path) => plan_raw(&args, kind, path)?,
        None => plan_from_flags(&args)?,
    };
    // The submit span is exported when the OTEL_* variables ask for it (kept until the end).
    let telemetry = telemetry::requested().then(|| {
        telemetry::Telemetry::builder("lexmesh-cli")
            .default_log_filter("warn")
            .init()
    });
    let outcome = client::runtime()?.block_on(async move {
        let mesh = client::open_mesh(&args.mesh).await?;
        let (job_id, payload) = match plan {
            Plan::Raw { job_id, payload } => (job_id, payload),
            Plan::Flags(flags) => flags.build(&mesh, kind).await?,
        };
        let submitted = client::submit(&mesh, kind, &job_id, payload).await?;
        if submitted.duplicate {
            eprintln!(
                "note: the jobs stream already holds a job {job_id} (same id within the duplicate \
                 window); this submit was dropped"
            );
        } else {
            eprintln!(
                "submitted {} job {job_id} (jobs stream sequence {})",
                kind.name(),
                submitted.sequence
            );
        }
        if args.json_events {
            // Keep stdout pure JSON lines; the events carry the id.
            eprintln!("{job_id}");
        } else {
            crate::render::print_line(&job_id);
        }
        if args.watch {
            crate::commands::watch::follow(&mesh, &job_id, args.json_events).await
        } else {
            Ok(ExitCode::SUCCESS)
        }
    });
    if let Some(telemetry) = telemetry
        && let Err(e) = telemetry.shutdown()
    {
        eprintln!("warning: the submit span may be lost: {e}");
    }
    outcome
}

fn job_kind(kind: SubmitKind) -> JobKind {
    match kind {
        SubmitKind::Train => JobKind::Train,
        SubmitKind::Evaluate => JobKind::Evaluate,
        SubmitKind::Preprocess => JobKind::Preprocess,
        SubmitKind::Optimize => JobKind::Optimize,
    }
}

/// What will be published, as far as it is known before connecting.
enum Plan {
    /// A job given whole with `--json`: published as is.
    Raw { job_id: String, payload: Vec<u8> },
    /// A job described by flags; its files are uploaded first.
    Flags(Box<FlagJob>),
}

/// A job described by flags, checked but not yet uploaded.
struct FlagJob {
    job_id: String,
    model_id: Option<String>,
    data: std::path::PathBuf,
    validation: Option<std::path::PathBuf>,
    text_field: String,
    label_field: String,
    settings: ExperimentSettings,
    /// An optimize job's search, its dataset not yet set.
    search: Option<Box<OptimizeJob>>,
}

/// A job's settings from the command line's (`lexmesh submit`): the same flags as
/// `lexmesh train`'s, so that [`settings::overrides`] of the result gives what `lexmesh train` applies.
pub fn job_settings(model: Option<ModelKind>, args: &SettingsArgs) -> ExperimentSettings {
    ExperimentSettings {
        model: model.map(settings::model_name),
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        patience: args.patience,
        seed: args.seed,
        validation_fraction: args.validation_fraction,
        embedding_dim: args.embedding_dim,
        hidden: args.hidden,
        dropout: args.dropout,
        max_length: args.max_length,
        char_buckets: args.char_buckets,
        balanced_class_weights: args.class_weights.map(|w| w == ClassWeighting::Balanced),
        weight_decay: args.weight_decay,
        cell: args.cell.map(settings::cell_name),
    }
}

/// The setting flags given (`--model`, then the others by name).
fn setting_flags(args: &SubmitArgs) -> Vec<String> {
    let model = args.model.map(|_| "model".to_string());
    model
        .into_iter()
        .chain(args.settings.overrides().set_names())
        .map(|name| format!("--{}", name.replace('_', "-")))
        .collect()
}

/// The search flags given (`--space`, `--trials`, ...).
fn search_flags(args: &OptimizeArgs) -> Vec<&'static str> {
    [
        ("--space", args.space.is_some()),
        ("--trials", args.trials.is_some()),
        ("--scheduler", args.scheduler.is_some()),
        ("--sampler", args.sampler.is_some()),
        ("--max-concurrent", args.max_concurrent.is_some()),
        ("--max-failed", args.max_failed.is_some()),
        ("--goal", args.goal.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, given)| given.then_some(flag))
    .collect()
}

fn plan_raw(args: &SubmitArgs, kind: JobKind, path: &Path) -> anyhow::Result<Plan> {
    let mut given = setting_flags(args);
    given.extend(search_flags(&args.optimize).into_iter().map(String::from));
    if args.model_id.is_some() {
        given.insert(0, "--model-id".to_string());
    }
    if !given.is_empty() {
        bail!(
            "--json gives the whole job; put {} into the JSON instead",
            given.join(", ")
        );
    }
    let payload = if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the job from stdin")?;
        bytes
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
    };
    let job_id = check_job(kind, &payload).with_context(|| {
        format!(
            "{} is not a valid {} job",
            if path.as_os_str() == "-" {
                "stdin".to_string()
            } else {
                path.display().to_string()
            },
            kind.name()
        )
    })?;
    if let Some(flag_id) = &args.job_id
        && *flag_id != job_id
    {
        bail!("--job-id {flag_id} differs from the job_id `{job_id}` in the JSON");
    }
    Ok(Plan::Raw { job_id, payload })
}

/// Decodes a job of `kind` the way the services will, returning its id or the typed error.
fn check_job(kind: JobKind, payload: &[u8]) -> Result<String, ProtocolError> {
    match kind {
        JobKind::Train => decode::<TrainJob>(payload).map(|j| j.job_id),
        JobKind::Evaluate => decode::<EvaluateJob>(payload).map(|j| j.job_id),
        JobKind::Preprocess => decode::<PreprocessJob>(payload).map(|j| j.job_id),
        JobKind::Optimize => decode::<lexmesh_protocol::OptimizeJob>(payload).map(|j| j.job_id),
    }
}

fn plan_from_flags(args: &SubmitArgs) -> anyhow::Result<Plan> {
    let Some(data) = args.data.clone() else {
        bail!("--data FILE is required (or give the whole job with --json FILE)");
    };
    let settings = job_settings(args.model, &args.settings);
    let search_given = search_flags(&args.optimize);
    if args.kind != SubmitKind::Optimize && !search_given.is_empty() {
        bail!("{} apply to optimize jobs only", search_given.join(", "));
    }
    let job_id = match &args.job_id {
        Some(id) if lexmesh_protocol::valid_id(id) => id.clone(),
        Some(id) => bail!("--job-id `{id}` must be 1 to 64 of A-Z a-z 0-9 _ -"),
        None => generate_job_id(
            job_kind(args.kind),
            unix_seconds_now(),
            rand::random::<u16>(),
        ),
    };
    let mut search = None;
    match args.kind {
        SubmitKind::Train => {}
        SubmitKind::Optimize => {
            search = Some(Box::new(search_job(
                &args.optimize,
                &settings,
                args.model_id.clone(),
                &job_id,
            )?));
        }
        SubmitKind::Evaluate => {
            if args.model_id.is_none() {
                bail!("an evaluate job needs --model-id (the stored model to evaluate)");
            }
            if args.validation.is_some() {
                bail!("an evaluate job uses only --data; leave out --validation");
            }
            let given = setting_flags(args);
            if !given.is_empty() {
                bail!(
                    "{} apply to train and preprocess jobs only",
                    given.join(", ")
                );
            }
        }
        SubmitKind::Preprocess => {
            if args.model_id.is_some() {
                bail!("--model-id applies to train, evaluate and optimize jobs only");
            }
        }
    }
    if search.is_none() {
        settings.validate()?;
    }
    if let Some(model_id) = &args.model_id
        && !lexmesh_protocol::valid_id(model_id)
    {
        bail!("--model-id `{model_id}` must be 1 to 64 of A-Z a-z 0-9 _ -");
    }
    // Fail on a bad extension or a missing file now rather than after connecting and
    // uploading the other file.
    dataset_extension(&data)?;
    std::fs::metadata(&data).with_context(|| format!("reading {}", data.display()))?;
    if let Some(v) = &args.validation {
        dataset_extension(v)?;
        std::fs::metadata(v).with_context(|| format!("reading {}", v.display()))?;
    }
    Ok(Plan::Flags(Box::new(FlagJob {
        job_id,
        model_id: args.model_id.clone(),
        data,
        validation: args.validation.clone(),
        text_field: args.text_field.clone(),
        label_field: args.label_field.clone(),
        settings,
        search,
    })))
}

/// A search space file: `[space]`, and optionally `[base]` and `[asha]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceFile {
    /// A domain per setting.
    pub space: SearchSpace,
    /// Settings every trial shares.
    #[serde(default)]
    pub base: ExperimentSettings,
    /// ASHA's settings (with `--scheduler asha`).
    #[serde(default)]
    pub asha: Option<AshaSpec>,
}

/// Reads a search space file.
pub fn read_space_file(path: &Path) -> anyhow::Result<SpaceFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not a valid search space", path.display()))
}

/// An optimize job's search from `--space FILE` and the flags (its job id and dataset are set
/// later), checked as the coordinator will check it. The setting flags are the trials' shared
/// settings (over the file's `[base]`), but `--epochs` (each trial's epochs) and `--seed` (the
/// search's seed). `lexmesh optimize` reads its flags with it too.
pub fn search_job(
    flags: &OptimizeArgs,
    settings: &ExperimentSettings,
    model_id: Option<String>,
    job_id: &str,
) -> anyhow::Result<OptimizeJob> {
    let Some(space_path) = &flags.space else {
        bail!("an optimize job needs --space FILE.toml (the search space)");
    };
    let Some(trials) = flags.trials else {
        bail!("an optimize job needs --trials N (how many trials at most)");
    };
    let file = read_space_file(space_path)?;
    let mut base = serde_json::to_value(&file.base)?;
    let shared = ExperimentSettings {
        epochs: None,
        seed: None,
        ..settings.clone()
    };
    if let (Some(base), serde_json::Value::Object(flags)) =
        (base.as_object_mut(), serde_json::to_value(&shared)?)
    {
        base.extend(flags);
    }
    let base: ExperimentSettings = serde_json::from_value(base)?;
    let scheduler = match (flags.scheduler, file.asha) {
        (Some(SchedulerArg::Asha), asha) => Some(SchedulerSpec::Asha(asha.unwrap_or_default())),
        (_, Some(_)) => bail!(
            "{} has an [asha] section: submit with --scheduler asha",
            space_path.display()
        ),
        (Some(SchedulerArg::None), None) => Some(SchedulerSpec::None),
        (None, None) => None,
    };
    let job = OptimizeJob {
        job_id: job_id.to_string(),
        model_id,
        dataset: DatasetSource::Prepared {
            dataset_id: "not-yet-uploaded".into(),
        },
        base,
        trials,
        search_space: file.space,
        sampler: flags.sampler.map(|s| match s {
            SamplerArg::Random => SamplerName::Random,
            SamplerArg::Grid => SamplerName::Grid,
        }),
        seed: settings.seed,
        scheduler,
        max_concurrent_trials: flags.max_concurrent,
        max_failed_trials: flags.max_failed,
        max_epochs: settings.epochs,
        goal: flags.goal,
    };
    let payload = serde_json::to_vec(&job)?;
    check_job(JobKind::Optimize, &payload).context("the search is not valid")?;
    lexmesh_mesh::search::plan::SearchPlan::new(&job).context("the search is not valid")?;
    Ok(job)
}

impl FlagJob {
    /// Uploads the files and encodes the job (checked as the services will check it).
    async fn build(self, mesh: &Mesh, kind: JobKind) -> anyhow::Result<(String, Vec<u8>)> {
        let key = upload(mesh, &self.data).await?;
        let validation_key = match &self.validation {
            Some(path) => Some(upload(mesh, path).await?),
            None => None,
        };
        let dataset = DatasetSource::Object {
            key,
            validation_key,
            text_field: self.text_field,
            label_field: self.label_field,
        };
        let job_id = self.job_id;
        let payload = match kind {
            JobKind::Train => serde_json::to_vec(&TrainJob {
                job_id: job_id.clone(),
                model_id: self.model_id,
                dataset,
                settings: self.settings,
            })?,
            JobKind::Evaluate => serde_json::to_vec(&EvaluateJob {
                job_id: job_id.clone(),
                model_id: self.model_id.unwrap_or_default(),
                dataset,
            })?,
            JobKind::Preprocess => serde_json::to_vec(&PreprocessJob {
                job_id: job_id.clone(),
                dataset,
                settings: self.settings,
            })?,
            JobKind::Optimize => {
                let Some(search) = self.search else {
                    bail!("an optimize job needs --space and --trials");
                };
                serde_json::to_vec(&OptimizeJob {
                    job_id: job_id.clone(),
                    dataset,
                    ..*search
                })?
            }
        };
        check_job(kind, &payload).context("the job built from the flags is not valid")?;
        Ok((job_id, payload))
    }
}

/// Uploads a data file as `uploads/<sha256>.<ext>` unless an object of that name and size is
/// already there (the name is the content's hash, so it is the same file).
async fn upload(mesh: &Mesh, path: &Path) -> anyhow::Result<String> {
    let bytes = tokio::fs::read(path)
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bail!("{} is empty", path.display());
    }
    let key = upload_key(path, &bytes)?;
    let present = mesh
        .datasets
        .info(&key)
        .await
        .is_ok_and(|info| !info.deleted && info.size == bytes.len());
    if present {
        eprintln!("{} is already uploaded as {key}", path.display());
    } else {
        objects::put_bytes(&mesh.datasets, &key, &bytes)
            .await
            .with_context(|| format!("uploading {}", path.display()))?;
        eprintln!(
            "uploaded {} ({}) to {} as {key}",
            path.display(),
            client::format_bytes(bytes.len() as u64),
            names::DATASETS_STORE
        );
    }
    Ok(key)
}

/// The object name of an uploaded data file: `uploads/<sha256 of the content>.<ext>`, the
/// extension normalised to the one the preprocessor reads (`jsonl`, `csv`, `tsv`).
pub fn upload_key(path: &Path, content: &[u8]) -> anyhow::Result<String> {
    let ext = dataset_extension(path)?;
    let digest = Sha256::digest(content);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("uploads/{hex}.{ext}"))
}

/// The format of a data file by its extension, as the preprocessor names it.
fn dataset_extension(path: &Path) -> anyhow::Result<&'static str> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("jsonl" | "ndjson" | "json") => Ok("jsonl"),
        Some("csv") => Ok("csv"),
        Some("tsv" | "tab") => Ok("tsv"),
        _ => bail!(
            "{}: unknown format; use .jsonl/.ndjson/.json (JSON Lines), .csv or .tsv",
            path.display()
        ),
    }
}

fn unix_seconds_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `<kind>-<yyyymmddThhmmss>-<4 hex digits>` (UTC): sortable by time, unique enough for one
/// user, and a valid subject token.
pub fn generate_job_id(kind: JobKind, unix_seconds: i64, random: u16) -> String {
    let (y, mo, d, h, mi, s) = client::utc_parts(unix_seconds);
    format!(
        "{}-{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}-{random:04x}",
        kind.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use lexmesh_trainer::RnnCell;

    #[test]
    fn submit_and_train_flags_give_the_same_overrides() {
        // Every flag set: the job `lexmesh submit` publishes maps back to exactly what
        // `lexmesh train` applies with the same flags.
        let args = SettingsArgs {
            epochs: Some(7),
            batch_size: Some(5),
            learning_rate: Some(0.125),
            weight_decay: Some(0.25),
            patience: Some(9),
            seed: Some(77),
            validation_fraction: Some(0.375),
            class_weights: Some(ClassWeighting::None),
            embedding_dim: Some(12),
            hidden: Some(13),
            dropout: Some(0.125),
            cell: Some(RnnCell::Lstm),
            max_length: Some(99),
            char_buckets: Some(1234),
        };
        assert_eq!(args.overrides().set_names().len(), 14);
        let job = job_settings(Some(ModelKind::Bigru), &args);
        assert_eq!(settings::overrides(&job), args.overrides());
        assert_eq!(job.model, Some(lexmesh_protocol::ModelKindName::Bigru));
        for kind in ModelKind::ALL {
            assert_eq!(settings::model_kind(Some(settings::model_name(kind))), kind);
        }
        for c in [RnnCell::Gru, RnnCell::Lstm] {
            assert_eq!(settings::cell(settings::cell_name(c)), c);
        }
    }

    #[test]
    fn generated_job_ids_are_valid_and_readable() {
        let id = generate_job_id(JobKind::Train, 1_735_689_599, 0x0a3f);
        assert_eq!(id, "train-20241231T235959-0a3f");
        for kind in [JobKind::Train, JobKind::Evaluate, JobKind::Preprocess] {
            for (secs, random) in [(0, 0), (4_102_444_800, u16::MAX), (1_700_000_000, 7)] {
                let id = generate_job_id(kind, secs, random);
                assert!(lexmesh_protocol::valid_id(&id), "{id}");
                assert!(id.starts_with(kind.name()));
            }
        }
    }

    #[test]
    fn upload_keys_are_content_hashes_with_the_format() {
        let key = upload_key(Path::new("data/train.JSONL"), b"abc").unwrap();
        assert_eq!(
            key,
            "uploads/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.jsonl"
        );
        let csv = upload_key(Path::new("x.csv"), b"abc").unwrap();
        assert!(csv.ends_with(".csv") && csv.starts_with("uploads/ba7816bf"));
        assert!(
            upload_key(Path::new("x.ndjson"), b"")
                .unwrap()
                .ends_with(".jsonl")
        );
        assert!(
            upload_key(Path::new("x.tab"), b"")
                .unwrap()
                .ends_with(".tsv")
        );
        let other = upload_key(Path::new("x.csv"), b"abd").unwrap();
        assert_ne!(csv, other);
        let err = upload_key(Path::new("notes.txt"), b"abc").unwrap_err();
        assert!(err.to_string().contains("unknown format"), "{err}");
        assert!(upload_key(Path::new("noext"), b"abc").is_err());
    }

    fn submit_args(args: &[&str]) -> SubmitArgs {
        use clap::Parser;
        let mut line = vec!["lexmesh", "submit"];
        line.extend_from_slice(args);
        match crate::cli::Cli::parse_from(line).command {
            crate::cli::Command::Submit(args) => *args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_space_file_and_the_flags_make_an_optimize_job() {
        let dir = tempfile::tempdir().unwrap();
        let space = dir.path().join("space.toml");
        std::fs::write(
            &space,
            "[space]\nlearning_rate = { log_uniform = { low = 1e-4, high = 0.1 } }\n\
             model = [\"bow\", \"cnn\"]\ndropout = { uniform = { low = 0, high = 0.5 } }\n\
             [base]\nbatch_size = 16\npatience = 0\n[asha]\nreduction_factor = 2\n",
        )
        .unwrap();
        let path = space.to_str().unwrap();
        let args = submit_args(&[
            "optimize",
            "--space",
            path,
            "--trials",
            "8",
            "--scheduler",
            "asha",
            "--epochs",
            "6",
            "--seed",
            "3",
            "--batch-size",
            "32",
            "--max-concurrent",
            "2",
            "--data",
            "x.jsonl",
        ]);
        let settings = job_settings(args.model, &args.settings);
        let job = search_job(&args.optimize, &settings, args.model_id.clone(), "opt-1").unwrap();
        assert_eq!(job.trials, 8);
        assert_eq!(job.max_epochs, Some(6));
        assert_eq!(job.seed, Some(3));
        assert_eq!(job.max_concurrent_trials, Some(2));
        // The flags over the file's [base]; epochs and seed are the search's.
        assert_eq!(job.base.batch_size, Some(32));
        assert_eq!(job.base.patience, Some(0));
        assert_eq!((job.base.epochs, job.base.seed), (None, None));
        let Some(SchedulerSpec::Asha(asha)) = &job.scheduler else {
            panic!("{:?}", job.scheduler)
        };
        assert_eq!(asha.reduction_factor, Some(2.0));
        assert_eq!(job.search_space.0.len(), 3);

        // [asha] without --scheduler asha, a typo in the file, an inverted range.
        let args = submit_args(&[
            "optimize", "--space", path, "--trials", "8", "--data", "x.jsonl",
        ]);
        let err =
            search_job(&args.optimize, &settings, args.model_id.clone(), "opt-1").unwrap_err();
        assert!(format!("{err:#}").contains("--scheduler asha"), "{err:#}");
        std::fs::write(
            &space,
            "[space]\nlearning_rate = [0.1]\n[bsae]\nbatch_size = 1\n",
        )
        .unwrap();
        let err =
            search_job(&args.optimize, &settings, args.model_id.clone(), "opt-1").unwrap_err();
        assert!(format!("{err:#}").contains("bsae"), "{err:#}");
        std::fs::write(
            &space,
            "[space]\nhidden = { int = { low = 9, high = 3 } }\n",
        )
        .unwrap();
        let err =
            search_job(&args.optimize, &settings, args.model_id.clone(), "opt-1").unwrap_err();
        assert!(format!("{err:#}").contains("inverted"), "{err:#}");
    }

    #[test]
    fn raw_jobs_are_checked_with_their_typed_error() {
        let ok = br#"{"job_id":"j1","dataset":{"object":{"key":"uploads/a.jsonl"}}}"#;
        assert_eq!(check_job(JobKind::Train, ok).unwrap(), "j1");
        let bad = br#"{"job_id":"j1","dataset":{"object":{"key":"k"}},"settings":{"epochs":0}}"#;
        let err = check_job(JobKind::Train, bad).unwrap_err();
        assert_eq!(err.code, lexmesh_protocol::ErrorCode::InvalidValue);
        // An evaluate job needs a model id.
        let err = check_job(JobKind::Evaluate, ok).unwrap_err();
        assert_eq!(err.code, lexmesh_protocol::ErrorCode::InvalidMessage);
    }
}
