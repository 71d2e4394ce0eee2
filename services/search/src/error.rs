//! Why a search cannot be set up.

/// A search that cannot run as described.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchError {
    /// The space names no setting.
    #[error("the search space names no setting")]
    EmptySpace,
    /// A setting's domain holds no value or cannot be sampled.
    #[error("search space `{setting}`: {reason}")]
    InvalidDomain {
        /// The setting.
        setting: String,
        /// What is wrong.
        reason: String,
    },
    /// A grid over a continuous range, or a grid larger than the trial budget allows.
    #[error("grid search: {0}")]
    Grid(String),
    /// The scheduler's settings are out of range.
    #[error("scheduler: {0}")]
    Scheduler(String),
    /// `max_trials` is 0: the search would try nothing.
    #[error("max_trials must be at least 1")]
    NoTrials,
    /// `max_concurrent_trials` is 0: no trial could ever run.
    #[error("max_concurrent_trials must be at least 1")]
    NoConcurrency,
    /// `max_epochs` is 0: a trial would train for nothing.
    #[error("max_epochs must be at least 1")]
    NoEpochs,
    /// The goal is not a macro-F1 (a number in `[0, 1]`).
    #[error("goal must be a macro-F1 in [0, 1], got {0}")]
    Goal(f64),
    /// ASHA's horizon differs from the trials' epochs: a trial ends at `max_epochs`, so the
    /// scheduler's `max_t` must be the same number (a larger one would keep rungs no trial
    /// reaches, a smaller one would end trials the train job still runs).
    #[error("scheduler: asha max_t ({max_t}) must equal max_epochs ({max_epochs})")]
    Horizon {
        /// The scheduler's `max_t`.
        max_t: u32,
        /// The spec's `max_epochs`.
        max_epochs: u32,
    },
    /// The experiment id cannot prefix its trials' ids, which are train job ids
    /// (`<experiment_id>-t<index>`, 1-64 characters of `A-Z a-z 0-9 _ -`).
    #[error("experiment id `{id}`: {reason}")]
    ExperimentId {
        /// The id given.
        id: String,
        /// What is wrong.
        reason: String,
    },
}
