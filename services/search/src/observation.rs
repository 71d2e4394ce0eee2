//! What a search learns from the outside ([`Observation`]): its trials' train jobs starting,
//! reporting epochs, ending, and the search being cancelled.
//!
//! Every observation may arrive twice, late or out of order (events are redelivered, a
//! replacement coordinator re-reads them): [`Experiment::observe`] ignores one that says
//! nothing new.
//!
//! [`Experiment::observe`]: crate::experiment::Experiment::observe

use serde::{Deserialize, Serialize};

use crate::objective::Score;

/// One thing that happened to a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    /// A trial's train job started (or resumed) on an instance.
    TrialStarted {
        /// The trial's id (its train job's id).
        trial_id: String,
        /// The instance running it, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
    },
    /// A trial finished an epoch.
    EpochEnded {
        /// The trial's id.
        trial_id: String,
        /// The epoch (from 1).
        epoch: u32,
        /// Validation macro-F1 after it (a value that is not a number counts as 0).
        macro_f1: f64,
        /// Validation loss after it (a value that is not a finite number counts as the
        /// largest finite one, so that the state stays JSON).
        validation_loss: f64,
    },
    /// A trial's train job completed.
    TrialCompleted {
        /// The trial's id.
        trial_id: String,
        /// The final validation score it reported.
        score: Score,
    },
    /// A trial's train job failed for good (retries, if any, are behind it).
    TrialFailed {
        /// The trial's id.
        trial_id: String,
        /// Why, in words.
        error: String,
    },
    /// A trial's train job has ended after a cancel (or was never submitted): the answer to a
    /// [`StopTrial`](crate::action::Action::StopTrial), or a cancel from outside the search.
    TrialStopped {
        /// The trial's id.
        trial_id: String,
    },
    /// The search was cancelled.
    ExperimentCancelled,
}

impl Observation {
    /// The trial it is about, if any.
    pub fn trial_id(&self) -> Option<&str> {
        match self {
            Self::TrialStarted { trial_id, .. }
            | Self::EpochEnded { trial_id, .. }
            | Self::TrialCompleted { trial_id, .. }
            | Self::TrialFailed { trial_id, .. }
            | Self::TrialStopped { trial_id } => Some(trial_id),
            Self::ExperimentCancelled => None,
        }
    }
}

/// A score as the state keeps it: finite numbers only (JSON has no NaN or infinity, and a
/// state that cannot be read back would strand the search). A missing F1 is the worst F1, a
/// diverged loss the worst loss.
pub(crate) fn sanitise(score: Score) -> Score {
    Score {
        macro_f1: if score.macro_f1.is_finite() {
            score.macro_f1
        } else if score.macro_f1 == f64::INFINITY {
            1.0
        } else {
            0.0
        },
        validation_loss: if score.validation_loss.is_finite() {
            score.validation_loss
        } else if score.validation_loss == f64::NEG_INFINITY {
            f64::MIN
        } else {
            f64::MAX
        },
    }
}
