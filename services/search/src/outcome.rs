//! How a search ends: why ([`FinishReason`]) and with which trial ([`BestTrial`]), and the
//! phase it is in on the way ([`Phase`]).

use serde::{Deserialize, Serialize};

use crate::objective::Score;
use crate::space::Configuration;
use crate::trial::TrialStatus;

/// Why a search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Every trial the budget (or the grid) allowed has ended.
    AllTrialsDone,
    /// A trial reached the goal.
    GoalReached,
    /// More trials failed than `max_failed_trials` allows: the search failed.
    TooManyFailures,
    /// The search was cancelled.
    Cancelled,
}

/// Where a search is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Trials are started as slots free up.
    Searching,
    /// The end is decided; the trials still running were asked to stop and the search waits
    /// for their train jobs to end.
    Ending {
        /// Why it ends.
        reason: FinishReason,
    },
    /// Over: no trial runs.
    Finished {
        /// Why it ended.
        reason: FinishReason,
        /// Its best trial (none when no trial that did not fail reported a score).
        best: Option<BestTrial>,
    },
}

impl Phase {
    /// Why the search ends or ended; none while it searches.
    pub fn reason(&self) -> Option<FinishReason> {
        match self {
            Self::Searching => None,
            Self::Ending { reason } | Self::Finished { reason, .. } => Some(*reason),
        }
    }
}

/// The best trial of a search: what the optimize job's `completed` event reports and whose
/// model it registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestTrial {
    /// Its id (its train job's id).
    pub trial_id: String,
    /// Its index.
    pub index: u32,
    /// The settings it tried.
    pub configuration: Configuration,
    /// Its best score.
    pub score: Score,
    /// The last epoch it reported.
    pub epochs_run: u32,
    /// How it ended (or where it is, while the search runs).
    pub status: TrialStatus,
}
