//! What a search asks its caller to do ([`Action`]): start and stop trials, publish events,
//! finish.
//!
//! Every action may be handed out more than once (after a crash, [`Experiment::launch`]
//! repeats what the previous coordinator may not have done), so each has a stable
//! [`Action::dedup_id`]: the caller publishes with it as `Nats-Msg-Id`, or otherwise makes
//! doing it twice harmless.
//!
//! [`Experiment::launch`]: crate::experiment::Experiment::launch

use serde::{Deserialize, Serialize};

use crate::leaderboard::LeaderboardEntry;
use crate::objective::Score;
use crate::outcome::{BestTrial, FinishReason};
use crate::space::Configuration;
use crate::trial::{StopReason, TrialStatus};

/// One thing for the caller to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Submit a train job for the trial (job id = `trial_id`, the search's base settings
    /// overridden by `configuration`, `max_epochs` epochs) and publish "trial started".
    StartTrial {
        /// The trial's id: the train job's id.
        trial_id: String,
        /// The trial's index.
        index: u32,
        /// The settings it tries.
        configuration: Configuration,
    },
    /// Cancel the trial's train job and publish "trial stopped"; once no train job of that id
    /// can run any more (it ended, or was never submitted), observe
    /// [`TrialStopped`](crate::observation::Observation::TrialStopped).
    StopTrial {
        /// The trial's id.
        trial_id: String,
        /// The trial's index.
        index: u32,
        /// Why.
        reason: StopReason,
    },
    /// Publish "trial promoted": the trial passed a rung and keeps training.
    TrialPromoted {
        /// The trial's id.
        trial_id: String,
        /// The trial's index.
        index: u32,
        /// The epoch whose result reached the rung.
        epoch: u32,
        /// The rung's milestone (epochs).
        milestone: f64,
        /// The value recorded for it there.
        value: f64,
    },
    /// Publish that the trial has ended ("trial completed", "stopped", "failed" or
    /// "cancelled", by its status).
    TrialEnded {
        /// The trial's id.
        trial_id: String,
        /// The trial's index.
        index: u32,
        /// How it ended.
        status: TrialStatus,
        /// The last epoch it reported.
        epochs_run: u32,
        /// Its best score.
        best: Option<Score>,
    },
    /// Publish a leaderboard update.
    LeaderboardChanged {
        /// The search's id.
        experiment_id: String,
        /// Increases with every change (the events' order).
        version: u64,
        /// The ranked trials.
        entries: Vec<LeaderboardEntry>,
    },
    /// The search is over: publish the optimize job's outcome (`completed` with the best
    /// trial, or `failed` for [`FinishReason::TooManyFailures`]) and register the best
    /// trial's model.
    Finish {
        /// The search's id.
        experiment_id: String,
        /// Why it ended.
        reason: FinishReason,
        /// Its best trial.
        best: Option<BestTrial>,
    },
}

impl Action {
    /// A stable id: the same action handed out again has the same one.
    pub fn dedup_id(&self) -> String {
        match self {
            Self::StartTrial { trial_id, .. } => format!("{trial_id}.start"),
            Self::StopTrial { trial_id, .. } => format!("{trial_id}.stop"),
            Self::TrialPromoted {
                trial_id,
                milestone,
                ..
            } => format!("{trial_id}.promoted.{milestone}"),
            Self::TrialEnded { trial_id, .. } => format!("{trial_id}.ended"),
            Self::LeaderboardChanged {
                experiment_id,
                version,
                ..
            } => format!("{experiment_id}.leaderboard.{version}"),
            Self::Finish { experiment_id, .. } => format!("{experiment_id}.finish"),
        }
    }

    /// Whether it only publishes (changes nothing outside the search's own events).
    pub fn is_event(&self) -> bool {
        matches!(
            self,
            Self::TrialPromoted { .. } | Self::TrialEnded { .. } | Self::LeaderboardChanged { .. }
        )
    }

    /// The trial it is about, if any.
    pub fn trial_id(&self) -> Option<&str> {
        match self {
            Self::StartTrial { trial_id, .. }
            | Self::StopTrial { trial_id, .. }
            | Self::TrialPromoted { trial_id, .. }
            | Self::TrialEnded { trial_id, .. } => Some(trial_id),
            Self::LeaderboardChanged { .. } | Self::Finish { .. } => None,
        }
    }
}
