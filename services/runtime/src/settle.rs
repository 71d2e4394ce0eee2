//! What follows an attempt: the one decision the job loop takes after a handler returns.
//!
//! [`settle`] is pure: from how the attempt ended and where the job stands in its retry budget
//! it decides the record's status, the event, whether a dead letter is sent, how the message
//! is acknowledged, how the instance counts the job and the outcome its span records. The job
//! loop carries the decision out in that order (record, dead letter, event, ack, count), so
//! that whoever sees the event can read the record it describes, and whoever sees the job gone
//! from the instance's running list sees it counted.

use std::time::Duration;

use lexmesh_protocol::record::JobStatus;

/// How an attempt ended, as far as the decision needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Finished with a result, and this attempt's compare-and-set completed the job.
    Completed,
    /// Finished (or was told it lost) after another attempt had already ended the job: the
    /// result is discarded.
    Superseded,
    /// Finished with a result, but the completion could not be written (the bucket did not
    /// answer): neither won nor lost.
    Unrecorded,
    /// Stopped by a cancel request.
    Cancelled,
    /// Stopped because this instance is shutting down.
    Interrupted,
    /// Failed.
    Failed {
        /// Another attempt might succeed (a store did not answer, a worker ran out of memory).
        retryable: bool,
        /// The publisher's mistake (its data, a missing model), not the service's.
        client_error: bool,
    },
}

/// Where the job stands in its retry budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// This delivery, from 1.
    pub attempt: u32,
    /// Earlier attempts that ended with a retryable failure.
    pub earlier_failures: u32,
    /// `jobs.max_failures`: retryable failures a job may have, this one included.
    pub max_failures: u32,
    /// `jobs.max_deliver`: JetStream's deliveries of the message (the backstop).
    pub max_deliver: u32,
}

/// What the record of the job says after the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordWrite {
    /// Already written by the completion's compare-and-set.
    Claimed,
    /// This attempt's history entry says `superseded`; the status stays.
    Superseded,
    /// Back to `queued`, the attempt `handed_back`, for another replica.
    HandedBack,
    /// The attempt ends with this status (never over a final one).
    Status(JobStatus),
    /// Nothing written (the write failed; the next attempt settles it).
    Nothing,
}

/// The event the attempt ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `completed`.
    Completed,
    /// `cancelled`.
    Cancelled,
    /// `failed`, saying whether the job is retried.
    Failed {
        /// It comes back after the nak's delay.
        retrying: bool,
    },
}

/// How the job message is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Done (double ack: the server confirmed it).
    Ack,
    /// Back to the stream at once.
    NakNow,
    /// Back to the stream after `jobs.retry_delay`.
    NakAfterRetryDelay,
    /// Back to the stream after the exponential delay of this attempt
    /// ([`crate::config::JobsConfig::retry_delay_after`]).
    NakWithBackoff,
    /// Never delivered again.
    Term,
}

impl Ack {
    /// The nak delay, given the configured delays.
    pub fn delay(self, retry_delay: Duration, backoff: Duration) -> Option<Duration> {
        match self {
            Self::NakAfterRetryDelay => Some(retry_delay),
            Self::NakWithBackoff => Some(backoff),
            Self::Ack | Self::NakNow | Self::Term => None,
        }
    }
}

/// How the instance counts the job in its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Done here: `completed` (a cancelled job counts here too: the service did what it was
    /// asked).
    Completed,
    /// The service's failure: `failed`, and in the error rate.
    Failed,
    /// The publisher's mistake: `rejected`, not in the error rate.
    Rejected,
    /// Not counted here: another attempt ends it.
    NotCounted,
}

/// The whole decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// The record write.
    pub record: RecordWrite,
    /// A dead letter with the request and history is published (retries ran out).
    pub dead_letter: bool,
    /// The event, if any.
    pub event: Option<EventKind>,
    /// The acknowledgement.
    pub ack: Ack,
    /// The instance's counters.
    pub count: Count,
    /// The outcome the attempt's span records.
    pub span_outcome: &'static str,
    /// Whether the span is marked as an error.
    pub span_error: bool,
}

/// Decides what follows an attempt.
pub fn settle(ended: Ended, budget: Budget) -> Settlement {
    let plain = |record, event, ack, count, span_outcome: &'static str, span_error| Settlement {
        record,
        dead_letter: false,
        event,
        ack,
        count,
        span_outcome,
        span_error,
    };
    match ended {
        Ended::Completed => plain(
            RecordWrite::Claimed,
            Some(EventKind::Completed),
            Ack::Ack,
            Count::Completed,
            "completed",
            false,
        ),
        Ended::Superseded => plain(
            RecordWrite::Superseded,
            None,
            Ack::Ack,
            Count::NotCounted,
            "superseded",
            false,
        ),
        // The next attempt finds either a completed record (and drops the job) or none (and
        // completes it).
        Ended::Unrecorded => plain(
            RecordWrite::Nothing,
            None,
            Ack::NakAfterRetryDelay,
            Count::Failed,
            "handed_back",
            true,
        ),
        Ended::Cancelled => plain(
            RecordWrite::Status(JobStatus::Cancelled),
            Some(EventKind::Cancelled),
            Ack::Term,
            Count::Completed,
            "cancelled",
            false,
        ),
        Ended::Interrupted => plain(
            RecordWrite::HandedBack,
            None,
            Ack::NakNow,
            Count::NotCounted,
            "handed_back",
            false,
        ),
        Ended::Failed {
            retryable,
            client_error,
        } => {
            let retry = retryable
                && budget.earlier_failures.saturating_add(1) < budget.max_failures.max(1)
                && budget.attempt < budget.max_deliver.max(1);
            if retry {
                plain(
                    RecordWrite::Status(JobStatus::Retrying),
                    Some(EventKind::Failed { retrying: true }),
                    Ack::NakWithBackoff,
                    Count::Failed,
                    "retrying",
                    true,
                )
            } else {
                Settlement {
                    record: RecordWrite::Status(JobStatus::Failed),
                    // Retries ran out: the request and its history go where someone looks.
                    dead_letter: retryable,
                    event: Some(EventKind::Failed { retrying: false }),
                    ack: Ack::Term,
                    count: if client_error {
                        Count::Rejected
                    } else {
                        Count::Failed
                    },
                    span_outcome: "failed",
                    span_error: true,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(attempt: u32, earlier_failures: u32) -> Budget {
        Budget {
            attempt,
            earlier_failures,
            max_failures: 3,
            max_deliver: 5,
        }
    }

    fn failed(retryable: bool, client_error: bool) -> Ended {
        Ended::Failed {
            retryable,
            client_error,
        }
    }

    #[test]
    fn a_completed_attempt_is_acked_and_counted() {
        let s = settle(Ended::Completed, budget(4, 2));
        assert_eq!(s.record, RecordWrite::Claimed);
        assert_eq!(s.event, Some(EventKind::Completed));
        assert_eq!(s.ack, Ack::Ack);
        assert_eq!(s.count, Count::Completed);
        assert!(!s.dead_letter && !s.span_error);
    }

    #[test]
    fn a_superseded_attempt_is_acked_silently_and_not_counted() {
        let s = settle(Ended::Superseded, budget(2, 0));
        assert_eq!(s.record, RecordWrite::Superseded);
        assert_eq!(s.event, None);
        assert_eq!(s.ack, Ack::Ack);
        assert_eq!(s.count, Count::NotCounted);
        assert_eq!(s.span_outcome, "superseded");
    }

    #[test]
    fn an_unrecorded_completion_comes_back_after_the_retry_delay_without_an_event() {
        let s = settle(Ended::Unrecorded, budget(1, 0));
        assert_eq!(s.record, RecordWrite::Nothing);
        assert_eq!(s.event, None);
        assert_eq!(s.ack, Ack::NakAfterRetryDelay);
        assert_eq!(s.count, Count::Failed);
        assert!(s.span_error);
    }

    #[test]
    fn a_cancelled_job_is_terminated_with_its_event() {
        let s = settle(Ended::Cancelled, budget(1, 0));
        assert_eq!(s.record, RecordWrite::Status(JobStatus::Cancelled));
        assert_eq!(s.event, Some(EventKind::Cancelled));
        assert_eq!(s.ack, Ack::Term);
        assert_eq!(s.count, Count::Completed);
    }

    #[test]
    fn an_interrupted_job_goes_back_at_once_uncounted() {
        // Whatever the budget: shutting down is not the job's failure.
        for b in [budget(1, 0), budget(5, 2), budget(9, 9)] {
            let s = settle(Ended::Interrupted, b);
            assert_eq!(s.record, RecordWrite::HandedBack);
            assert_eq!(s.event, None);
            assert_eq!(s.ack, Ack::NakNow);
            assert_eq!(s.count, Count::NotCounted);
            assert!(!s.dead_letter && !s.span_error);
        }
    }

    #[test]
    fn retryable_failures_retry_until_max_failures_then_dead_letter() {
        // max_failures 3: the first two failures retry, the third is final.
        for earlier in 0..2 {
            let s = settle(failed(true, false), budget(earlier + 1, earlier));
            assert_eq!(s.record, RecordWrite::Status(JobStatus::Retrying));
            assert_eq!(s.event, Some(EventKind::Failed { retrying: true }));
            assert_eq!(s.ack, Ack::NakWithBackoff);
            assert_eq!(s.count, Count::Failed);
            assert!(!s.dead_letter);
        }
        let s = settle(failed(true, false), budget(3, 2));
        assert_eq!(s.record, RecordWrite::Status(JobStatus::Failed));
        assert_eq!(s.event, Some(EventKind::Failed { retrying: false }));
        assert_eq!(s.ack, Ack::Term);
        assert!(s.dead_letter);
        assert_eq!(s.span_outcome, "failed");
    }

    #[test]
    fn kills_do_not_spend_the_failure_budget_but_deliveries_end_at_max_deliver() {
        // Attempt 4 after three lost attempts (no failures): still retried.
        let s = settle(failed(true, false), budget(4, 0));
        assert_eq!(s.ack, Ack::NakWithBackoff);
        // Attempt 5 of max_deliver 5: the server would not deliver again, so it ends here.
        let s = settle(failed(true, false), budget(5, 0));
        assert_eq!(s.ack, Ack::Term);
        assert!(s.dead_letter);
    }

    #[test]
    fn a_permanent_failure_ends_at_once_without_a_dead_letter() {
        let s = settle(failed(false, false), budget(1, 0));
        assert_eq!(s.record, RecordWrite::Status(JobStatus::Failed));
        assert_eq!(s.event, Some(EventKind::Failed { retrying: false }));
        assert_eq!(s.ack, Ack::Term);
        assert_eq!(s.count, Count::Failed);
        assert!(!s.dead_letter);
    }

    #[test]
    fn the_publishers_mistake_is_rejected_not_failed() {
        let s = settle(failed(false, true), budget(1, 0));
        assert_eq!(s.count, Count::Rejected);
        assert_eq!(s.ack, Ack::Term);
        assert!(!s.dead_letter);
    }

    #[test]
    fn a_budget_of_zero_means_one() {
        // max_failures 0 and max_deliver 0 are read as 1: the first failure is final.
        let b = Budget {
            attempt: 1,
            earlier_failures: 0,
            max_failures: 0,
            max_deliver: 0,
        };
        assert_eq!(settle(failed(true, false), b).ack, Ack::Term);
        let b = Budget {
            max_failures: 2,
            max_deliver: 2,
            ..b
        };
        assert_eq!(settle(failed(true, false), b).ack, Ack::NakWithBackoff);
    }

    #[test]
    fn the_delay_of_each_ack() {
        let (retry, backoff) = (Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(Ack::NakAfterRetryDelay.delay(retry, backoff), Some(retry));
        assert_eq!(Ack::NakWithBackoff.delay(retry, backoff), Some(backoff));
        assert_eq!(Ack::NakNow.delay(retry, backoff), None);
        assert_eq!(Ack::Term.delay(retry, backoff), None);
    }
}
