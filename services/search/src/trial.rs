//! One trial of a search: its configuration, where it is in its life, and what it scored.
//!
//! - `Pending` (start decided) → `Running` (its train job was seen) → `Completed` or `Failed` (also straight
//!   from `Pending` when its start event was lost);
//! - `Pending` or `Running` → `Stopping` (stop decided) → `Stopped` (by the scheduler) or
//!   `Cancelled` (by the end of the search) once its train job is confirmed ended;
//! - `Pending` or `Running` → `Cancelled` when its train job was cancelled from outside.
//!
//! `Pending` and `Stopping` are decisions the caller may not have carried out yet: they are
//! kept in the state so that a coordinator that replaces a crashed one can repeat them.

use serde::{Deserialize, Serialize};

use crate::objective::Score;
use crate::outcome::FinishReason;
use crate::space::Configuration;

/// Where a trial is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    /// Its start is decided; its train job has not been seen running yet.
    Pending,
    /// Its train job runs (a start or an epoch result was seen).
    Running,
    /// Its stop is decided; its train job has not been confirmed ended yet. It still holds its
    /// slot.
    Stopping,
    /// Stopped early by the scheduler (below a rung's cutoff).
    Stopped,
    /// Its train job ran to its end.
    Completed,
    /// Its train job failed permanently.
    Failed,
    /// Ended because the search ended (goal reached, too many failures, cancelled), or because
    /// its train job was cancelled without the search asking.
    Cancelled,
}

impl TrialStatus {
    /// Whether the trial has ended for good.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Stopped | Self::Completed | Self::Failed | Self::Cancelled
        )
    }

    /// Whether it holds one of the `max_concurrent_trials` slots.
    pub fn holds_slot(self) -> bool {
        !self.is_final()
    }
}

/// Why a trial was (or is being) stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StopReason {
    /// Its value at a rung was below the rung's cutoff.
    Rung {
        /// The rung's milestone (epochs).
        milestone: f64,
        /// The value judged (its best-so-far macro-F1 with [`Judge::BestSoFar`]).
        ///
        /// [`Judge::BestSoFar`]: crate::asha::Judge::BestSoFar
        value: f64,
        /// The `(1 − 1/rf)` quantile of the values recorded at the rung before it.
        cutoff: f64,
    },
    /// The search ended while it ran.
    SearchEnded {
        /// Why the search ended.
        reason: FinishReason,
    },
    /// Its train job was cancelled without the search asking.
    External,
}

/// A validation score after one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochScore {
    /// The epoch (from 1).
    pub epoch: u32,
    /// Its validation score.
    pub score: Score,
}

/// One trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Its index in the search (from 0): the sampler's argument.
    pub index: u32,
    /// Its id, `<experiment_id>-t<index>`: also its train job's id.
    pub id: String,
    /// The settings it tries.
    pub configuration: Configuration,
    /// Its ASHA bracket (0 without ASHA).
    pub bracket: usize,
    /// Where it is.
    pub status: TrialStatus,
    /// Instances seen running it, first seen first (more than one after a resume elsewhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<String>,
    /// Its epochs' scores, by increasing epoch (an epoch whose result never arrived is
    /// missing).
    pub epochs: Vec<EpochScore>,
    /// Its best score so far (over its epochs and its final score).
    pub best: Option<Score>,
    /// The final score its completed train job reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_score: Option<Score>,
    /// Why it is being, or was, stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Trial {
    /// The last epoch it reported (0 before its first result).
    pub fn epochs_run(&self) -> u32 {
        self.epochs.last().map_or(0, |e| e.epoch)
    }

    /// Takes a score into its best-so-far; says whether the best changed.
    pub(crate) fn consider(&mut self, score: Score) -> bool {
        match self.best {
            Some(best) if !score.beats(&best) => false,
            _ => {
                self.best = Some(score);
                true
            }
        }
    }
}
