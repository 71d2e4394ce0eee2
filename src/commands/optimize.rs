//! `lexmesh optimize`: a hyperparameter search in one process.
//!
//! It is the search an `optimize` job runs in the mesh: the same flags and space file, checked
//! by the same plan ([`SearchPlan`]), decided by the same state machine
//! ([`lexmesh_search::Experiment`]). Only the carrying out differs: a trial trains on a thread
//! of this process instead of as a train job, at most `--max-concurrent` at once, each with its
//! share of the cores; a stop decided by the scheduler cancels the trial's thread within one
//! batch.
//!
//! What it writes under `--out`: `trials/<trial>/`, the model directory of every trial that
//! finished an epoch (a stopped trial keeps the weights of its best epoch, so the best trial
//! always has a model); `best/`, a copy of the best trial's; `search.json`, the search's whole
//! final state (trials, their epochs and scores, the ASHA rung records, the outcome).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use anyhow::{Context, bail};
use lexmesh_evaluator::EvaluationReport;
use lexmesh_mesh::search::plan::SearchPlan;
use lexmesh_mesh::search::wire;
use lexmesh_preprocessor::{Dataset, FieldNames, Prepared, content_id, prepare};
use lexmesh_protocol::ExperimentSettings;
use lexmesh_search::{
    Action, BestTrial, Configuration, Experiment, FinishReason, Observation, Score, StopReason,
};
use lexmesh_trainer::artifact::{FORMAT_VERSION, SavedConfig};
use lexmesh_trainer::device::available_cores;
use lexmesh_trainer::progress::{BatchProgress, EpochProgress, TrainingEnded, TrainingStarted};
use lexmesh_trainer::training::{TrainingRun, train};
use lexmesh_trainer::{
    CancelToken, DeviceChoice, ExperimentConfig, ModelDir, ProgressSink, StopReason as RunEnd,
};

use crate::cli::{FormatArg, OptimizeRunArgs};
use crate::commands::submit::{job_settings, search_job};
use crate::commands::train::RunInputs;
use crate::commands::trials::{self, configuration_text};
use crate::render::print_line;

/// The search's id: trial `k` is `search-t<k>` (and its folder `trials/search-t<k>`).
const SEARCH_ID: &str = "search";

/// Runs the command.
pub fn run(args: OptimizeRunArgs) -> anyhow::Result<ExitCode> {
    let settings = job_settings(args.model, &args.settings);
    let job = search_job(&args.optimize, &settings, None, SEARCH_ID)?;
    let plan = SearchPlan::new(&job).context("the search is not valid")?;
    if args.out.join("search.json").exists() {
        bail!(
            "{} already holds a search; choose another --out",
            args.out.display()
        );
    }
    let inputs = RunInputs {
        data: std::path::absolute(&args.data).unwrap_or_else(|_| args.data.clone()),
        validation: args
            .validation
            .as_deref()
            .map(|v| std::path::absolute(v).unwrap_or_else(|_| v.to_path_buf())),
        fields: FieldNames {
            text: args.text_field.clone(),
            label: args.label_field.clone(),
        },
    };
    let train_set = Dataset::load(&inputs.data, &inputs.fields)?;
    let validation_set = match &inputs.validation {
        Some(path) => Some(Dataset::load(path, &inputs.fields)?),
        None => None,
    };
    std::fs::create_dir_all(args.out.join("trials"))
        .with_context(|| format!("creating {}", args.out.display()))?;

    let concurrency = plan.spec.max_concurrent_trials.max(1) as usize;
    let cores = args
        .threads
        .filter(|&t| t > 0)
        .unwrap_or_else(available_cores);
    let (tx, rx) = channel();
    let on_signal = tx.clone();
    ctrlc::set_handler(move || {
        let _ = on_signal.send(Message::Cancel);
    })
    .context("installing the Ctrl-C handler")?;
    let mut driver = Driver {
        experiment: plan.experiment()?,
        plan,
        data: TrialData {
            inputs,
            train: train_set,
            validation: validation_set,
            prepared: HashMap::new(),
        },
        out: args.out.clone(),
        threads_per_trial: (cores / concurrency).max(1),
        device: args.device,
        format: if args.quiet { None } else { Some(args.format) },
        running: HashMap::new(),
        tx,
        rx,
        pending: VecDeque::new(),
    };
    let (reason, best) = driver.run()?;
    driver.write_state()?;

    let rows = trials::rows(&driver.experiment);
    match args.format {
        FormatArg::Json => print_line(
            &serde_json::json!({
                "event": "search_over",
                "reason": reason,
                "best": best,
                "best_model_dir": best.as_ref().map(|_| args.out.join("best")),
                "trials": rows,
            })
            .to_string(),
        ),
        FormatArg::Text => {
            trials::print_rows(&rows);
            match &best {
                Some(best) => println!(
                    "search over ({}): best {} (validation macro-F1 {:.4}, {}), model in {}",
                    reason_text(reason),
                    best.trial_id,
                    best.score.macro_f1,
                    configuration_text(&best.configuration),
                    args.out.join("best").display()
                ),
                None => println!("search over ({}): no trial scored", reason_text(reason)),
            }
        }
    }
    Ok(match reason {
        FinishReason::AllTrialsDone | FinishReason::GoalReached => ExitCode::SUCCESS,
        FinishReason::Cancelled => ExitCode::from(130),
        FinishReason::TooManyFailures => ExitCode::FAILURE,
    })
}

fn reason_text(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::AllTrialsDone => "every trial done",
        FinishReason::GoalReached => "goal reached",
        FinishReason::TooManyFailures => "too many trials failed",
        FinishReason::Cancelled => "cancelled",
    }
}

/// What the trials' threads (and Ctrl-C) tell the driver.
enum Message {
    /// A trial finished an epoch.
    Epoch {
        trial_id: String,
        epoch: EpochProgress,
    },
    /// A trial's thread ended.
    Ended {
        trial_id: String,
        end: Result<TrialEnd, String>,
    },
    /// Ctrl-C.
    Cancel,
}

/// How a trial's training ended.
enum TrialEnd {
    /// It ran to its end (all epochs, or early stopping), with the score of its kept weights.
    Completed(Score),
    /// It was cancelled (a stop of the search).
    Stopped,
}

/// The search's data: read once, prepared once per distinct preparation.
struct TrialData {
    inputs: RunInputs,
    train: Dataset,
    validation: Option<Dataset>,
    /// Preparations by content id (trials that differ only in training settings share one).
    prepared: HashMap<String, Arc<Prepared>>,
}

impl TrialData {
    fn prepared(&mut self, config: &ExperimentConfig) -> anyhow::Result<(String, Arc<Prepared>)> {
        let settings = config.prepare_settings();
        let id = content_id(&settings, &self.train, self.validation.as_ref())?;
        if let Some(prepared) = self.prepared.get(&id) {
            return Ok((id, prepared.clone()));
        }
        let prepared = Arc::new(prepare(
            self.train.clone(),
            self.validation.clone(),
            &settings,
        )?);
        self.prepared.insert(id.clone(), prepared.clone());
        Ok((id, prepared))
    }
}

/// A trial training on its thread.
struct Running {
    cancel: CancelToken,
    thread: JoinHandle<()>,
}

struct Driver {
    plan: SearchPlan,
    experiment: Experiment,
    data: TrialData,
    out: PathBuf,
    threads_per_trial: usize,
    device: Option<DeviceChoice>,
    /// How progress is printed (none: quiet).
    format: Option<FormatArg>,
    running: HashMap<String, Running>,
    tx: Sender<Message>,
    rx: Receiver<Message>,
    /// Observations not yet fed to the search, in order.
    pending: VecDeque<Observation>,
}

impl Driver {
    /// Runs the search to its end: the caller's contract of the search crate, step by step
    /// (launch, then one observation at a time, each step's actions carried out in order).
    fn run(&mut self) -> anyhow::Result<(FinishReason, Option<BestTrial>)> {
        let launched = self.experiment.launch();
        let mut finished = self.carry_out(launched)?;
        while finished.is_none() {
            if let Some(observation) = self.pending.pop_front() {
                let actions = self.experiment.observe(observation);
                finished = self.carry_out(actions)?;
                continue;
            }
            let message = self
                .rx
                .recv()
                .context("every trial thread is gone while the search runs")?;
            let observation = match message {
                Message::Epoch { trial_id, epoch } => {
                    self.show_epoch(&trial_id, &epoch);
                    Observation::EpochEnded {
                        trial_id,
                        epoch: u32::try_from(epoch.epoch).unwrap_or(u32::MAX),
                        macro_f1: epoch.validation_macro_f1,
                        validation_loss: epoch.validation_loss,
                    }
                }
                Message::Ended { trial_id, end } => {
                    if let Some(running) = self.running.remove(&trial_id) {
                        // The thread sent its last message: it is ending.
                        let _ = running.thread.join();
                    }
                    match end {
                        Ok(TrialEnd::Completed(score)) => {
                            Observation::TrialCompleted { trial_id, score }
                        }
                        Ok(TrialEnd::Stopped) => Observation::TrialStopped { trial_id },
                        Err(error) => Observation::TrialFailed { trial_id, error },
                    }
                }
                Message::Cancel => {
                    self.note("cancelling the search (Ctrl-C)");
                    Observation::ExperimentCancelled
                }
            };
            self.pending.push_back(observation);
        }
        // A search ends once no trial holds a slot; wait for any thread still winding down.
        for (_, running) in self.running.drain() {
            running.cancel.cancel();
            let _ = running.thread.join();
        }
        let finished = finished.unwrap_or((FinishReason::Cancelled, None));
        if let Some(best) = &finished.1 {
            let from = self.trial_dir(&best.trial_id);
            let to = self.out.join("best");
            if from.exists() {
                copy_dir(&from, &to)?;
            }
        }
        Ok(finished)
    }

    /// Carries out actions in order; the outcome once the search is over.
    fn carry_out(
        &mut self,
        actions: Vec<Action>,
    ) -> anyhow::Result<Option<(FinishReason, Option<BestTrial>)>> {
        for action in actions {
            if self.format == Some(FormatArg::Json) {
                print_line(&serde_json::json!({"event": "search", "action": action}).to_string());
            }
            match action {
                Action::StartTrial {
                    trial_id,
                    configuration,
                    ..
                } => self.start(trial_id, &configuration)?,
                Action::StopTrial {
                    trial_id, reason, ..
                } => {
                    self.show_text(|| format!("{trial_id}: stopping ({})", stop_text(&reason)));
                    match self.running.get(&trial_id) {
                        Some(running) => running.cancel.cancel(),
                        // Never started (its preparation failed) or already ended: the stop
                        // is answered now.
                        None => self.pending.push_back(Observation::TrialStopped { trial_id }),
                    }
                }
                Action::TrialPromoted {
                    trial_id,
                    epoch,
                    milestone,
                    value,
                    ..
                } => self.show_text(|| {
                    format!("{trial_id}: promoted at the rung of epoch {milestone} (epoch {epoch}, macro-F1 {value:.4})")
                }),
                Action::TrialEnded {
                    trial_id,
                    status,
                    epochs_run,
                    best,
                    ..
                } => self.show_text(|| {
                    format!(
                        "{trial_id}: {} after {epochs_run} epoch(s), best macro-F1 {}",
                        wire::status(status).as_str(),
                        best.map_or_else(|| "-".into(), |b| format!("{:.4}", b.macro_f1))
                    )
                }),
                Action::LeaderboardChanged { .. } => {}
                Action::Finish { reason, best, .. } => return Ok(Some((reason, best))),
            }
        }
        Ok(None)
    }

    /// Starts a trial's thread; a trial whose settings or data cannot make a run fails.
    fn start(&mut self, trial_id: String, configuration: &Configuration) -> anyhow::Result<()> {
        self.show_text(|| {
            format!(
                "{trial_id}: started ({})",
                configuration_text(configuration)
            )
        });
        self.pending.push_back(Observation::TrialStarted {
            trial_id: trial_id.clone(),
            instance: None,
        });
        match self.trial_run(configuration) {
            Ok((run, prepared)) => {
                let cancel = CancelToken::new();
                let thread = spawn_trial(
                    trial_id.clone(),
                    run,
                    prepared,
                    self.data.inputs.clone(),
                    self.trial_dir(&trial_id),
                    cancel.clone(),
                    self.tx.clone(),
                )?;
                self.running.insert(trial_id, Running { cancel, thread });
            }
            Err(error) => {
                self.show_text(|| format!("{trial_id}: cannot run: {error:#}"));
                self.pending.push_back(Observation::TrialFailed {
                    trial_id,
                    error: format!("{error:#}"),
                });
            }
        }
        Ok(())
    }

    /// A trial's run: the search's base settings with its values on top, its data prepared.
    fn trial_run(
        &mut self,
        configuration: &Configuration,
    ) -> anyhow::Result<(TrainingRun, Arc<Prepared>)> {
        let settings: ExperimentSettings =
            serde_json::from_value(self.plan.trial_settings_json(configuration))
                .context("the trial's settings")?;
        let mut config = lexmesh_mesh::settings::experiment(&settings)?;
        if let Some(device) = self.device {
            config.training.device = device;
        }
        let (dataset_id, prepared) = self.data.prepared(&config)?;
        let run = TrainingRun {
            classes: prepared.labels.len(),
            feature_space: prepared.preprocessor.feature_space(),
            fingerprint: config.run_fingerprint(&dataset_id)?,
            data: prepared.sets.clone(),
            config,
            checkpoints: None,
            resume: false,
            compute_threads: self.threads_per_trial,
            checkpoint_interval: None,
        };
        Ok((run, prepared))
    }

    fn trial_dir(&self, trial_id: &str) -> PathBuf {
        self.out.join("trials").join(trial_id)
    }

    /// Writes the search's final state.
    fn write_state(&self) -> anyhow::Result<()> {
        let path = self.out.join("search.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&self.experiment)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    fn show_epoch(&self, trial_id: &str, epoch: &EpochProgress) {
        match self.format {
            Some(FormatArg::Json) => print_line(
                &serde_json::json!({"event": "epoch", "trial_id": trial_id, "epoch": epoch})
                    .to_string(),
            ),
            Some(FormatArg::Text) => eprintln!(
                "{trial_id}: epoch {}/{} validation macro-F1 {:.4}, loss {:.4} ({:.1} s)",
                epoch.epoch,
                epoch.total_epochs,
                epoch.validation_macro_f1,
                epoch.validation_loss,
                epoch.seconds
            ),
            None => {}
        }
    }

    fn show_text(&self, line: impl FnOnce() -> String) {
        if self.format == Some(FormatArg::Text) {
            eprintln!("{}", line());
        }
    }

    fn note(&self, line: &str) {
        if self.format.is_some() {
            eprintln!("{line}");
        }
    }
}

fn stop_text(reason: &StopReason) -> String {
    match reason {
        StopReason::Rung {
            milestone,
            value,
            cutoff,
        } => format!(
            "macro-F1 {value:.4} below the cutoff {cutoff:.4} of the rung at epoch {milestone}"
        ),
        StopReason::SearchEnded { reason } => format!("the search ended: {}", reason_text(*reason)),
        StopReason::External => "cancelled".into(),
    }
}

/// Trains a trial on a thread of its own; its epochs and its end go to the driver. A trial
/// that finished an epoch leaves its model directory (the kept weights), stopped or not.
fn spawn_trial(
    trial_id: String,
    run: TrainingRun,
    prepared: Arc<Prepared>,
    inputs: RunInputs,
    dir: PathBuf,
    cancel: CancelToken,
    tx: Sender<Message>,
) -> anyhow::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("lexmesh-{trial_id}"))
        .spawn(move || {
            let mut sink = TrialSink {
                trial_id: trial_id.clone(),
                tx: tx.clone(),
            };
            let end = train(&run, &mut sink, &cancel)
                .map_err(|e| e.to_string())
                .and_then(|outcome| match outcome.reason {
                    RunEnd::Cancelled => {
                        if outcome.best_epoch > 0 {
                            save_trial(&dir, &run, &prepared, &inputs, &outcome)?;
                        }
                        Ok(TrialEnd::Stopped)
                    }
                    _ if outcome.best_epoch == 0 => Err("it finished no epoch".to_string()),
                    _ => save_trial(&dir, &run, &prepared, &inputs, &outcome)
                        .map(TrialEnd::Completed),
                });
            let _ = tx.send(Message::Ended { trial_id, end });
        })
        .context("starting a trial's thread")
}

/// Writes a trial's model directory (as `lexmesh train` writes one) and returns the score of
/// its kept weights: their macro-F1, and the validation loss of their epoch.
fn save_trial(
    dir: &Path,
    run: &TrainingRun,
    prepared: &Prepared,
    inputs: &RunInputs,
    outcome: &lexmesh_trainer::TrainingOutcome,
) -> Result<Score, String> {
    let report = EvaluationReport::new(prepared.labels.labels().to_vec(), &outcome.validation)
        .map_err(|e| e.to_string())?;
    let model_dir = ModelDir::new(dir);
    let saved = SavedConfig {
        format_version: FORMAT_VERSION,
        experiment: run.config.clone(),
        feature_space: run.feature_space,
    };
    let written = model_dir
        .write_inputs(&saved, &prepared.preprocessor, &prepared.labels)
        .map_err(|e| e.to_string())
        .and_then(|()| inputs.write(dir).map_err(|e| format!("{e:#}")))
        .and_then(|()| {
            let metrics = serde_json::json!({
                "best_epoch": outcome.best_epoch,
                "stop_reason": outcome.reason,
                "validation": report,
            });
            model_dir
                .write_outputs(&outcome.model, &metrics, &outcome.history)
                .map_err(|e| e.to_string())
        });
    written.map_err(|e| format!("writing the trial's model to {}: {e}", dir.display()))?;
    let validation_loss = outcome
        .history
        .iter()
        .find(|e| e.epoch == outcome.best_epoch)
        .map_or(f64::NAN, |e| e.validation_loss);
    Ok(Score {
        macro_f1: report.macro_f1,
        validation_loss,
    })
}

/// Forwards a trial's epochs to the driver (batches are not shown: trials interleave).
struct TrialSink {
    trial_id: String,
    tx: Sender<Message>,
}

impl ProgressSink for TrialSink {
    fn on_start(&mut self, _: &TrainingStarted) {}
    fn on_batch(&mut self, _: &BatchProgress) {}
    fn on_epoch(&mut self, epoch: &EpochProgress) {
        let _ = self.tx.send(Message::Epoch {
            trial_id: self.trial_id.clone(),
            epoch: epoch.clone(),
        });
    }
    fn on_end(&mut self, _: &TrainingEnded) {}
}

/// Copies a model directory (flat) into `to`, replacing what is there.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to).with_context(|| format!("removing {}", to.display()))?;
    }
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let target = to.join(entry.file_name());
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying to {}", target.display()))?;
        }
    }
    Ok(())
}
