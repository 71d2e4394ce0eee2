//! `lexmesh watch`: follow a job's events (replayed from its first, then live) with a progress
//! bar and a final summary, or as JSON lines. An optimize job shows its trials starting and
//! ending and its leaderboard as it changes. Exit status: 0 completed, 1 failed, 130
//! cancelled.

use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use lexmesh_protocol::event::{EvaluationSummary, JobResult, Progress};
use lexmesh_protocol::record::JobStatus;
use lexmesh_protocol::{JobEvent, ProgressPhase};
use lexmesh_runtime::{Mesh, records};

use crate::cli_mesh::WatchArgs;
use crate::client::{self, EventFollower};
use crate::commands::trials;
use crate::render::print_line;

/// Exit status of a cancelled job (as for a command stopped by Ctrl-C).
const EXIT_CANCELLED: u8 = 130;

/// Runs the command.
pub fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    if !lexmesh_protocol::valid_id(&args.job_id) {
        anyhow::bail!(
            "`{}` is not a job id (1 to 64 of A-Z a-z 0-9 _ -)",
            args.job_id
        );
    }
    client::runtime()?.block_on(async {
        let mesh = client::open_mesh(&args.mesh).await?;
        follow(&mesh, &args.job_id, args.json).await
    })
}

/// Follows `job_id` until its final event and returns the exit status it calls for.
pub async fn follow(mesh: &Mesh, job_id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let mut events = EventFollower::open(mesh, job_id).await?;
    if events.pending_at_start() == 0 {
        match records::read(&mesh.jobs, job_id).await? {
            // Its events are gone (they are kept for a week) but the record says how it ended.
            Some((record, _)) if record.status.is_final() => {
                if json {
                    print_line(&serde_json::to_string(&record)?);
                } else {
                    eprintln!(
                        "job {job_id} {} (its events are no longer kept)",
                        record.status.as_str()
                    );
                    if let Some(result) = &record.result {
                        print_summary(job_id, result, None);
                    }
                    if let Some(error) = &record.error {
                        eprintln!("last error: {}: {}", error.code, error.reason);
                    }
                }
                return Ok(match record.status {
                    JobStatus::Completed => ExitCode::SUCCESS,
                    JobStatus::Cancelled => ExitCode::from(EXIT_CANCELLED),
                    _ => ExitCode::FAILURE,
                });
            }
            Some((record, _)) if record.status == JobStatus::Queued => eprintln!(
                "job {job_id} is queued; waiting for a worker (Ctrl-C stops watching, not the job)"
            ),
            // Running: its first event is on the way.
            Some(_) => {}
            None => {
                eprintln!("no job {job_id} is known yet; waiting for its events (Ctrl-C to stop)")
            }
        }
    }
    let mut view = EventView::new(json);
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                view.clear();
                return Err(error);
            }
        };
        view.show(&event);
        if event.is_final() {
            return Ok(exit_code(&event));
        }
    }
    view.clear();
    anyhow::bail!("the events of {job_id} ended without a final one")
}

fn exit_code(event: &JobEvent) -> ExitCode {
    match event {
        JobEvent::Completed(_) => ExitCode::SUCCESS,
        JobEvent::Cancelled(_) => ExitCode::from(EXIT_CANCELLED),
        _ => ExitCode::FAILURE,
    }
}

/// Shows job events: a progress bar and lines on stderr and the summary on stdout, or one
/// JSON line per event on stdout.
struct EventView {
    json: bool,
    bar: Option<ProgressBar>,
}

impl EventView {
    fn new(json: bool) -> Self {
        Self { json, bar: None }
    }

    fn show(&mut self, event: &JobEvent) {
        if self.json {
            if let Ok(line) = serde_json::to_string(event) {
                print_line(&line);
            }
            return;
        }
        match event {
            JobEvent::Accepted(a) => {
                // A new attempt starts over: drop the previous attempt's bar.
                self.clear();
                eprintln!(
                    "{} job {} accepted by {} (attempt {})",
                    a.kind.name(),
                    a.job_id,
                    a.instance,
                    a.attempt
                );
            }
            JobEvent::Progress(p) => self.show_progress(p),
            JobEvent::Failed(f) if f.retrying => self.line(format!(
                "attempt {} failed on {}: {}: {}; it will be retried",
                f.attempt, f.instance, f.code, f.reason
            )),
            JobEvent::Failed(f) => {
                self.clear();
                eprintln!(
                    "job {} failed (attempt {} on {}): {}: {}",
                    f.job_id, f.attempt, f.instance, f.code, f.reason
                );
            }
            JobEvent::Cancelled(c) => {
                self.clear();
                eprintln!(
                    "job {} cancelled on {} after {} epoch(s)",
                    c.job_id, c.instance, c.epochs_completed
                );
            }
            JobEvent::Completed(c) => {
                self.clear();
                print_summary(
                    &c.job_id,
                    &c.result,
                    Some(Duration::from_secs_f64(c.duration_s.max(0.0))),
                );
            }
            JobEvent::TrialStarted(t) => self.line(format!(
                "trial {} started: {}",
                t.trial_id,
                trials::configuration_text(&t.configuration)
            )),
            JobEvent::TrialPromoted(t) => self.line(format!(
                "trial {} promoted at the rung of epoch {} (macro-F1 {:.4})",
                t.trial_id, t.milestone, t.value
            )),
            JobEvent::TrialStopped(t) => self.line(format!(
                "trial {} {} after {} epoch(s): {}",
                t.trial_id,
                t.status.as_str(),
                t.epochs_run,
                trials::stop_reason_text(&t.reason)
            )),
            JobEvent::TrialCompleted(t) => self.line(format!(
                "trial {} completed {} epoch(s): best macro-F1 {}",
                t.trial_id,
                t.epochs_run,
                t.best
                    .map_or_else(|| "-".into(), |b| format!("{:.4}", b.macro_f1))
            )),
            JobEvent::TrialFailed(t) => {
                self.line(format!("trial {} failed: {}", t.trial_id, t.error))
            }
            JobEvent::Leaderboard(board) => {
                let mut lines = vec![format!("leaderboard (update {}):", board.version)];
                lines.extend(trials::leaderboard_lines(&board.entries));
                for line in lines {
                    self.line(line);
                }
            }
        }
    }

    fn show_progress(&mut self, p: &Progress) {
        if let Some(done) = p.resumed_from_epoch {
            let within = p
                .resumed_from_batch
                .map(|b| format!(" and {b} batch(es) of epoch {}", done + 1))
                .unwrap_or_default();
            self.line(format!(
                "attempt {} resumes from the checkpoint of epoch {done}{within}",
                p.attempt
            ));
        }
        let total = u64::from(p.total_epochs) * u64::from(p.total_batches);
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(total);
            let style =
                ProgressStyle::with_template("{prefix} [{bar:30.cyan/blue}] {percent:>3}% {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        if bar.length() != Some(total) {
            bar.set_length(total);
        }
        let done_before = u64::from(p.epoch.saturating_sub(1)) * u64::from(p.total_batches);
        bar.set_prefix(format!(
            "epoch {}/{} batch {}/{}",
            p.epoch, p.total_epochs, p.batch, p.total_batches
        ));
        // The ETA is the trainer's: a replayed history arrives too fast for the bar's own.
        bar.set_message(format!(
            "loss {:.4} acc {:.3} | {:.0} ex/s | ETA {}",
            p.loss,
            p.accuracy,
            p.examples_per_sec,
            client::format_duration(Duration::from_secs_f64(
                p.estimated_time_remaining_s.max(0.0)
            ))
        ));
        match p.phase {
            ProgressPhase::Started => {
                bar.set_position(done_before);
                let line = format!(
                    "training {} on {}: epochs {}..{}, {} batches each",
                    p.model_id, p.instance, p.epoch, p.total_epochs, p.total_batches
                );
                self.line(line);
            }
            ProgressPhase::Batch => bar.set_position(done_before + u64::from(p.batch)),
            ProgressPhase::Epoch => {
                bar.set_position(done_before + u64::from(p.total_batches));
                let validation = match (p.validation_loss, p.validation_accuracy) {
                    (Some(l), Some(a)) => format!(" | val loss {l:.4} acc {a:.3}"),
                    (None, Some(a)) => format!(" | val acc {a:.3}"),
                    _ => String::new(),
                };
                let line = format!(
                    "epoch {:>3}/{}: loss {:.4} acc {:.3}{validation} | {:.0} ex/s",
                    p.epoch, p.total_epochs, p.loss, p.accuracy, p.examples_per_sec
                );
                self.line(line);
            }
        }
    }

    /// A line above the bar (or plainly on stderr when there is no visible bar).
    fn line(&self, line: String) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }

    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Prints what a job produced, on stdout.
fn print_summary(job_id: &str, result: &JobResult, took: Option<Duration>) {
    let took = took
        .map(|d| format!(" in {}", client::format_duration(d)))
        .unwrap_or_default();
    match result {
        JobResult::Train(t) => {
            print_line(&format!(
                "job {job_id} completed{took}: model {} (best epoch {} of {}, {})",
                t.model_id,
                t.best_epoch,
                t.epochs_completed,
                t.stop_reason.replace('_', " ")
            ));
            print_line(&format!(
                "validation: macro-F1 {:.4}, accuracy {:.4}, weighted-F1 {:.4} on {} examples",
                t.validation.macro_f1,
                t.validation.accuracy,
                t.validation.weighted_f1,
                t.validation.count
            ));
        }
        JobResult::Evaluate(e) => {
            print_line(&format!(
                "job {job_id} completed{took}: model {} on {} examples",
                e.model_id, e.evaluation.count
            ));
            print_evaluation(&e.evaluation);
        }
        JobResult::Optimize(o) => {
            let best = &o.best_trial;
            print_line(&format!(
                "job {job_id} completed{took}: best trial {} (macro-F1 {:.4}, validation loss \
                 {:.4}, {} epoch(s)); model {} is trial {}'s",
                best.trial_id,
                best.score.macro_f1,
                best.score.validation_loss,
                best.epochs_run,
                o.model_id,
                o.model_trial_id
            ));
            print_line(&format!(
                "settings: {}",
                trials::configuration_text(&best.configuration)
            ));
            print_line(&format!(
                "trials: {} completed, {} stopped early, {} cancelled, {} failed",
                o.trials.completed, o.trials.stopped, o.trials.cancelled, o.trials.failed
            ));
        }
        JobResult::Preprocess(p) => {
            print_line(&format!(
                "job {job_id} completed{took}: dataset {}{}",
                p.dataset_id,
                if p.reused { " (already prepared)" } else { "" }
            ));
            print_line(&format!(
                "{} labels, {} training + {} validation examples, feature space {}",
                p.labels.len(),
                p.train_examples,
                p.validation_examples,
                p.feature_space
            ));
        }
    }
}

fn print_evaluation(e: &EvaluationSummary) {
    print_line(&format!(
        "accuracy {:.4}, macro-F1 {:.4}, weighted-F1 {:.4}",
        e.accuracy, e.macro_f1, e.weighted_f1
    ));
    let rows: Vec<Vec<String>> = e
        .per_class
        .iter()
        .map(|c| {
            vec![
                c.label.clone(),
                format!("{:.4}", c.precision),
                format!("{:.4}", c.recall),
                format!("{:.4}", c.f1),
                c.support.to_string(),
            ]
        })
        .collect();
    client::print_table(&["LABEL", "PRECISION", "RECALL", "F1", "SUPPORT"], &rows);
}
