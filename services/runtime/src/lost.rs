//! The budget of lost attempts: which attempts of a job count against it when their worker
//! went away without ending them.
//!
//! An attempt is *lost* when its worker vanished (killed, crashed, frozen and replaced) with
//! the attempt still open in the job's history. The next attempt judges it
//! ([`judge_lost_attempts`]): it *counts* against the job when it stored no progress (no later
//! epoch than it started from) and its process was not killed from outside (how it ended comes
//! from the supervisor's note in `lexmesh_instances`; without one, the cause is unknown and
//! counts). Progress wipes the slate: [`strikes`] are the counted losses since the job last
//! moved forward. A job that reaches `jobs.max_lost_attempts` strikes is taken to be killing
//! its workers (a poison message: out of memory, a crash in its data) and is dead-lettered;
//! a healthy job whose machines die under it keeps going.

use std::collections::HashMap;

use lexmesh_protocol::record::{ExitCause, InstanceExit, JobRecord, LostAttempt};

/// The attempt's entry was left open by a worker that went away.
fn is_open(entry: &lexmesh_protocol::record::AttemptEntry) -> bool {
    entry.outcome.is_none() && entry.ended_ms.is_none()
}

/// The stored progress after entry `i`: where the next attempt started, or the record's
/// progress for the last one.
fn progress_after(record: &JobRecord, i: usize) -> u32 {
    record
        .history
        .get(i + 1)
        .and_then(|next| next.epochs_at_start)
        .or(record.epochs_completed)
        .unwrap_or(0)
}

/// Whether entry `i` moved the job's stored progress forward.
fn made_progress(record: &JobRecord, i: usize) -> bool {
    let start = record.history[i].epochs_at_start.unwrap_or(0);
    progress_after(record, i) > start
}

/// Instances whose open attempts are not judged yet (whose exits the judge needs).
pub fn unjudged_instances(record: &JobRecord) -> Vec<String> {
    let mut names: Vec<String> = record
        .history
        .iter()
        .filter(|e| is_open(e) && e.lost.is_none())
        .map(|e| e.instance.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Marks every open, unjudged attempt of `record` lost, with its cause (from `exits`, by
/// instance: an exit noted after the attempt began) and whether it counts. Returns whether
/// anything changed.
pub fn judge_lost_attempts(record: &mut JobRecord, exits: &HashMap<String, InstanceExit>) -> bool {
    let mut changed = false;
    for i in 0..record.history.len() {
        let entry = &record.history[i];
        if !is_open(entry) || entry.lost.is_some() {
            continue;
        }
        let exit = exits
            .get(&entry.instance)
            .filter(|x| x.ended_ms >= entry.started_ms);
        let cause = exit.map_or(ExitCause::Unknown, |x| x.cause);
        let ended_ms = exit.map(|x| x.ended_ms);
        let verdict = LostAttempt::judge(cause, made_progress(record, i));
        let entry = &mut record.history[i];
        entry.lost = Some(verdict);
        entry.outcome = Some("lost".into());
        entry.ended_ms = ended_ms;
        changed = true;
    }
    changed
}

/// Counted lost attempts since the job last stored progress.
pub fn strikes(record: &JobRecord) -> u32 {
    let mut strikes = 0;
    for (i, entry) in record.history.iter().enumerate() {
        if made_progress(record, i) {
            strikes = 0;
        }
        if entry.lost.is_some_and(|l| l.counted) {
            strikes += 1;
        }
    }
    strikes
}

/// Attempts that ended with a retryable failure.
pub fn failures(record: &JobRecord) -> u32 {
    record
        .history
        .iter()
        .filter(|e| e.outcome.as_deref() == Some("retrying"))
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use lexmesh_protocol::JobKind;
    use lexmesh_protocol::record::{AttemptEntry, JobStatus};

    fn entry(attempt: u32, instance: &str, started_ms: f64, at_start: u32) -> AttemptEntry {
        AttemptEntry {
            attempt,
            instance: instance.into(),
            started_ms,
            ended_ms: None,
            outcome: None,
            error: None,
            traceparent: None,
            epochs_at_start: Some(at_start),
            lost: None,
        }
    }

    fn record(history: Vec<AttemptEntry>, epochs: u32) -> JobRecord {
        let mut r = JobRecord::new("j", JobKind::Train, JobStatus::Running, 1, 0.0);
        r.history = history;
        r.epochs_completed = Some(epochs);
        r
    }

    fn exit(instance: &str, cause: ExitCause, ended_ms: f64) -> (String, InstanceExit) {
        (
            instance.into(),
            InstanceExit {
                instance: instance.into(),
                pid: 7,
                cause,
                status: String::new(),
                ended_ms,
            },
        )
    }

    #[test]
    fn a_kill_from_outside_never_counts_a_crash_without_progress_does() {
        // t1 was killed from outside, t2 crashed, t3 left no note; none stored progress.
        let mut r = record(
            vec![
                entry(1, "t1", 10.0, 0),
                entry(2, "t2", 20.0, 0),
                entry(3, "t3", 30.0, 0),
            ],
            0,
        );
        let exits = HashMap::from([
            exit("t1", ExitCause::Killed, 15.0),
            exit("t2", ExitCause::Crashed, 25.0),
        ]);
        assert_eq!(unjudged_instances(&r), ["t1", "t2", "t3"]);
        assert!(judge_lost_attempts(&mut r, &exits));
        let verdicts: Vec<(ExitCause, bool)> = r
            .history
            .iter()
            .map(|e| e.lost.map(|l| (l.cause, l.counted)).unwrap())
            .collect();
        assert_eq!(
            verdicts,
            [
                (ExitCause::Killed, false),
                (ExitCause::Crashed, true),
                (ExitCause::Unknown, true)
            ]
        );
        assert_eq!(r.history[0].ended_ms, Some(15.0));
        assert_eq!(r.history[2].outcome.as_deref(), Some("lost"));
        assert_eq!(strikes(&r), 2);
        // Judged once: a second look changes nothing.
        assert!(!judge_lost_attempts(&mut r, &exits));
        assert!(unjudged_instances(&r).is_empty());
    }

    #[test]
    fn progress_wipes_the_slate_and_an_old_exit_is_not_this_attempts() {
        // Attempt 1 crashed without progress; attempt 2 crashed after storing epoch 3; attempt
        // 3 crashed at once. The note on t1 predates attempt 3 there: its cause is unknown.
        let mut r = record(
            vec![
                entry(1, "t1", 10.0, 0),
                entry(2, "t2", 20.0, 0),
                entry(3, "t1", 30.0, 3),
            ],
            3,
        );
        let exits = HashMap::from([
            exit("t1", ExitCause::Crashed, 12.0),
            exit("t2", ExitCause::Crashed, 25.0),
        ]);
        judge_lost_attempts(&mut r, &exits);
        let lost: Vec<LostAttempt> = r.history.iter().map(|e| e.lost.unwrap()).collect();
        assert!(lost[0].counted && !lost[0].progress);
        assert!(lost[1].progress && !lost[1].counted);
        assert_eq!(lost[2].cause, ExitCause::Unknown);
        assert!(lost[2].counted);
        assert_eq!(strikes(&r), 1, "only the loss after the progress counts");
    }

    #[test]
    fn ended_attempts_are_not_lost_and_failures_are_counted_apart() {
        let mut first = entry(1, "t1", 10.0, 0);
        first.outcome = Some("retrying".into());
        first.ended_ms = Some(11.0);
        let mut second = entry(2, "t1", 12.0, 0);
        second.outcome = Some("handed_back".into());
        second.ended_ms = Some(13.0);
        let mut r = record(vec![first, second], 0);
        assert!(!judge_lost_attempts(&mut r, &HashMap::new()));
        assert_eq!(strikes(&r), 0);
        assert_eq!(failures(&r), 1);
    }
}
