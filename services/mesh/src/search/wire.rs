//! The search's values as the protocol says them: scores, trial statuses, stop and end
//! reasons, the leaderboard, and the events of a search's actions.

use lexmesh_protocol::JobEvent;
use lexmesh_protocol::event::{
    Leaderboard, LeaderboardEntry, SearchEndReason, TrialCompleted, TrialFailed, TrialPromoted,
    TrialScore, TrialStarted, TrialStatus, TrialStopReason, TrialStopped,
};
use lexmesh_protocol::time::now_ms;
use lexmesh_search::{self as search, Action, Experiment};

/// A score on the wire.
pub fn score(score: search::Score) -> TrialScore {
    TrialScore {
        macro_f1: score.macro_f1,
        validation_loss: score.validation_loss,
    }
}

/// A trial status on the wire.
pub fn status(status: search::TrialStatus) -> TrialStatus {
    match status {
        search::TrialStatus::Pending => TrialStatus::Pending,
        search::TrialStatus::Running => TrialStatus::Running,
        search::TrialStatus::Stopping => TrialStatus::Stopping,
        search::TrialStatus::Stopped => TrialStatus::Stopped,
        search::TrialStatus::Completed => TrialStatus::Completed,
        search::TrialStatus::Failed => TrialStatus::Failed,
        search::TrialStatus::Cancelled => TrialStatus::Cancelled,
    }
}

/// Why a search ended, on the wire.
pub fn end_reason(reason: search::FinishReason) -> SearchEndReason {
    match reason {
        search::FinishReason::AllTrialsDone => SearchEndReason::AllTrialsDone,
        search::FinishReason::GoalReached => SearchEndReason::GoalReached,
        search::FinishReason::TooManyFailures => SearchEndReason::TooManyFailures,
        search::FinishReason::Cancelled => SearchEndReason::Cancelled,
    }
}

/// Why a trial was stopped, on the wire.
pub fn stop_reason(reason: &search::StopReason) -> TrialStopReason {
    match reason {
        search::StopReason::Rung {
            milestone,
            value,
            cutoff,
        } => TrialStopReason::Rung {
            milestone: *milestone,
            value: *value,
            cutoff: *cutoff,
        },
        search::StopReason::SearchEnded { reason } => TrialStopReason::SearchEnded {
            reason: end_reason(*reason),
        },
        search::StopReason::External => TrialStopReason::External,
    }
}

/// A leaderboard line on the wire.
pub fn leaderboard_entry(entry: &search::LeaderboardEntry) -> LeaderboardEntry {
    LeaderboardEntry {
        rank: entry.rank,
        trial_id: entry.trial_id.clone(),
        index: entry.index,
        status: status(entry.status),
        epochs_run: entry.epochs_run,
        best: entry.best.map(score),
    }
}

/// The event an action publishes on the optimize job's subjects (none for an action that
/// publishes nothing: a stop, whose event comes when the trial has ended, and the end of the
/// search, whose event is the job's own). `experiment` is the state the action came from.
pub fn event_of(action: &Action, experiment: &Experiment, instance: &str) -> Option<JobEvent> {
    let job_id = experiment.id().to_string();
    let instance = instance.to_string();
    let timestamp_ms = now_ms();
    Some(match action {
        Action::StartTrial {
            trial_id,
            index,
            configuration,
        } => JobEvent::TrialStarted(TrialStarted {
            job_id,
            trial_id: trial_id.clone(),
            index: *index,
            configuration: configuration.clone(),
            instance,
            timestamp_ms,
        }),
        Action::TrialPromoted {
            trial_id,
            index,
            epoch,
            milestone,
            value,
        } => JobEvent::TrialPromoted(TrialPromoted {
            job_id,
            trial_id: trial_id.clone(),
            index: *index,
            epoch: *epoch,
            milestone: *milestone,
            value: *value,
            instance,
            timestamp_ms,
        }),
        Action::TrialEnded {
            trial_id,
            index,
            status: ended,
            epochs_run,
            best,
        } => {
            let trial = experiment.trial(trial_id);
            match ended {
                search::TrialStatus::Completed => JobEvent::TrialCompleted(TrialCompleted {
                    job_id,
                    trial_id: trial_id.clone(),
                    index: *index,
                    epochs_run: *epochs_run,
                    best: best.map(score),
                    instance,
                    timestamp_ms,
                }),
                search::TrialStatus::Failed => JobEvent::TrialFailed(TrialFailed {
                    job_id,
                    trial_id: trial_id.clone(),
                    index: *index,
                    epochs_run: *epochs_run,
                    error: trial
                        .and_then(|t| t.error.clone())
                        .unwrap_or_else(|| "its train job failed".into()),
                    instance,
                    timestamp_ms,
                }),
                search::TrialStatus::Stopped | search::TrialStatus::Cancelled => {
                    JobEvent::TrialStopped(TrialStopped {
                        job_id,
                        trial_id: trial_id.clone(),
                        index: *index,
                        status: status(*ended),
                        reason: trial
                            .and_then(|t| t.stop_reason.as_ref())
                            .map_or(TrialStopReason::External, stop_reason),
                        epochs_run: *epochs_run,
                        best: best.map(score),
                        instance,
                        timestamp_ms,
                    })
                }
                search::TrialStatus::Pending
                | search::TrialStatus::Running
                | search::TrialStatus::Stopping => return None,
            }
        }
        Action::LeaderboardChanged {
            version, entries, ..
        } => JobEvent::Leaderboard(Leaderboard {
            job_id,
            version: *version,
            entries: entries.iter().map(leaderboard_entry).collect(),
            instance,
            timestamp_ms,
        }),
        Action::StopTrial { .. } | Action::Finish { .. } => return None,
    })
}
