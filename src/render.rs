//! Progress display of `lexmesh train`: a progress bar (indicatif) with a summary line per
//! epoch, JSON lines for scripts, or nothing.

use indicatif::{ProgressBar, ProgressStyle};
use lexmesh_trainer::ProgressEvent;

/// Prints a line on stdout; a reader that went away (closed pipe) does not stop training.
pub fn print_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderMode {
    /// Progress bar on stderr.
    Bar,
    /// One JSON object per event on stdout.
    Json,
    /// Nothing.
    Quiet,
}

/// Shows training events.
pub struct Renderer {
    mode: RenderMode,
    bar: Option<ProgressBar>,
}

impl Renderer {
    /// A renderer for a mode.
    pub fn new(mode: RenderMode) -> Self {
        Self { mode, bar: None }
    }

    /// Shows one event.
    pub fn show(&mut self, event: &ProgressEvent) {
        match self.mode {
            RenderMode::Quiet => {}
            RenderMode::Json => {
                if let Ok(line) = serde_json::to_string(event) {
                    print_line(&line);
                }
            }
            RenderMode::Bar => self.show_bar(event),
        }
    }

    fn show_bar(&mut self, event: &ProgressEvent) {
        match event {
            ProgressEvent::Started(s) => {
                eprintln!(
                    "training {} ({} parameters) on {} examples, validating on {}; epochs {}..{}",
                    s.model,
                    s.parameters,
                    s.train_examples,
                    s.validation_examples,
                    s.start_epoch,
                    s.total_epochs
                );
                let bar = ProgressBar::new((s.total_epochs * s.batches_per_epoch) as u64);
                bar.set_position(((s.start_epoch - 1) * s.batches_per_epoch) as u64);
                let style = ProgressStyle::with_template(
                    "{prefix} [{bar:30.cyan/blue}] {percent:>3}% {msg} | ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                self.bar = Some(bar);
            }
            ProgressEvent::Batch(b) => {
                if let Some(bar) = &self.bar {
                    bar.set_prefix(format!(
                        "epoch {}/{} batch {}/{}",
                        b.epoch, b.total_epochs, b.batch, b.total_batches
                    ));
                    bar.set_message(format!(
                        "loss {:.4} acc {:.3} {:.0} ex/s",
                        b.loss, b.accuracy, b.examples_per_sec
                    ));
                    bar.set_position(((b.epoch - 1) * b.total_batches + b.batch) as u64);
                }
            }
            ProgressEvent::Epoch(e) => {
                let line = format!(
                    "epoch {:>3}/{}: loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} macro-F1 {:.4}{} | {:.0} ex/s, {:.1}s",
                    e.epoch,
                    e.total_epochs,
                    e.loss,
                    e.accuracy,
                    e.validation_loss,
                    e.validation_accuracy,
                    e.validation_macro_f1,
                    if e.improved { " *" } else { "" },
                    e.examples_per_sec,
                    e.seconds
                );
                match &self.bar {
                    Some(bar) if !bar.is_hidden() => bar.println(line),
                    _ => eprintln!("{line}"),
                }
            }
            ProgressEvent::Ended(end) => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                eprintln!(
                    "stopped ({:?}) after {} epoch(s) in {:.1}s; best epoch {} (validation macro-F1 {:.4})",
                    end.reason,
                    end.epochs_completed,
                    end.seconds,
                    end.best_epoch,
                    end.best_validation_macro_f1
                );
            }
        }
    }

    /// Clears any bar left (training failed before its end event).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
