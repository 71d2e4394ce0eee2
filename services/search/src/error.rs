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
}
