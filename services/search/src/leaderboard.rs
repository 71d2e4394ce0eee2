//! The leaderboard: a search's trials ranked by their best score.
//!
//! Ranked by best validation macro-F1, ties by the lower validation loss, then by index (the
//! earlier trial first). Trials without a score follow, by index; failed trials come last
//! whatever they scored, since they left no model to use.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::objective::Score;
use crate::trial::{Trial, TrialStatus};

/// One line of the leaderboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardEntry {
    /// Its rank, from 1.
    pub rank: u32,
    /// The trial's id.
    pub trial_id: String,
    /// The trial's index.
    pub index: u32,
    /// The trial's status.
    pub status: TrialStatus,
    /// The last epoch it reported.
    pub epochs_run: u32,
    /// Its best score so far.
    pub best: Option<Score>,
}

/// Ranks trials (see the module doc).
pub fn rank<'a>(trials: impl IntoIterator<Item = &'a Trial>) -> Vec<LeaderboardEntry> {
    let mut trials: Vec<&Trial> = trials.into_iter().collect();
    trials.sort_by(|a, b| order(a, b));
    trials
        .into_iter()
        .zip(1..)
        .map(|(t, rank)| LeaderboardEntry {
            rank,
            trial_id: t.id.clone(),
            index: t.index,
            status: t.status,
            epochs_run: t.epochs_run(),
            best: t.best,
        })
        .collect()
}

/// `Less` when `a` ranks above `b`.
fn order(a: &Trial, b: &Trial) -> Ordering {
    let failed = |t: &Trial| t.status == TrialStatus::Failed;
    failed(a)
        .cmp(&failed(b))
        .then_with(|| match (&a.best, &b.best) {
            (Some(x), Some(y)) => y.compare(x),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .then_with(|| a.index.cmp(&b.index))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn trial(index: u32, status: TrialStatus, best: Option<(f64, f64)>) -> Trial {
        Trial {
            index,
            id: format!("x-t{index}"),
            configuration: Default::default(),
            bracket: 0,
            status,
            instances: vec![],
            epochs: vec![],
            best: best.map(|(macro_f1, validation_loss)| Score {
                macro_f1,
                validation_loss,
            }),
            final_score: None,
            stop_reason: None,
            error: None,
        }
    }

    #[test]
    fn trials_rank_by_f1_then_loss_then_index_with_failures_last() {
        use TrialStatus::*;
        let trials = [
            trial(0, Completed, Some((0.6, 0.5))),
            trial(1, Failed, Some((0.9, 0.1))),
            trial(2, Running, None),
            trial(3, Stopped, Some((0.7, 0.5))),
            trial(4, Completed, Some((0.7, 0.4))),
            trial(5, Running, Some((0.6, 0.5))),
            trial(6, Pending, None),
        ];
        let board = rank(&trials);
        let order: Vec<u32> = board.iter().map(|e| e.index).collect();
        assert_eq!(order, [4, 3, 0, 5, 2, 6, 1]);
        assert_eq!(
            board.iter().map(|e| e.rank).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(board[0].trial_id, "x-t4");
        assert_eq!(board[6].status, Failed);
    }
}
