//! What a search learns from its trials' train jobs: their events (read from the events
//! stream, so that a coordinator that takes a search over reads again what it may have missed)
//! and, as a backstop for an event that never came, their job records.
//!
//! Every observation may come twice (an event re-read after a take-over, the same end seen in
//! an event and in the record): the search ignores one that says nothing new.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use lexmesh_protocol::event::TrainSummary;
use lexmesh_protocol::record::{JobRecord, JobStatus};
use lexmesh_protocol::{JobEvent, JobResult, ProgressPhase, names, subjects};
use lexmesh_runtime::{Mesh, RuntimeError};
use lexmesh_search::{Experiment, Observation, Score};

/// What a trial's train job event tells the search; none for an event that tells it nothing
/// (a batch's progress, a failure that will be retried).
pub fn from_event(event: &JobEvent, experiment: &Experiment) -> Option<Observation> {
    let trial_id = event.job_id().to_string();
    experiment.trial(&trial_id)?;
    match event {
        JobEvent::Accepted(a) => Some(Observation::TrialStarted {
            trial_id,
            instance: Some(a.instance.clone()),
        }),
        JobEvent::Progress(p) => match p.phase {
            ProgressPhase::Started => Some(Observation::TrialStarted {
                trial_id,
                instance: Some(p.instance.clone()),
            }),
            ProgressPhase::Epoch => Some(Observation::EpochEnded {
                trial_id,
                epoch: p.epoch,
                // A trainer that does not say its F1 gets the worst (the search keeps finite
                // numbers only).
                macro_f1: p.validation_macro_f1.unwrap_or(f64::NAN),
                validation_loss: p.validation_loss.unwrap_or(f64::NAN),
            }),
            ProgressPhase::Batch => None,
        },
        JobEvent::Completed(c) => match &c.result {
            JobResult::Train(summary) => Some(Observation::TrialCompleted {
                score: completed_score(summary, experiment, &trial_id),
                trial_id,
            }),
            _ => None,
        },
        JobEvent::Failed(f) if !f.retrying => Some(Observation::TrialFailed {
            trial_id,
            error: format!("{}: {}", f.code, f.reason),
        }),
        JobEvent::Cancelled(_) => Some(Observation::TrialStopped { trial_id }),
        _ => None,
    }
}

/// What a trial's job record tells the search once its job has ended; none while it has not.
pub fn from_record(record: &JobRecord, experiment: &Experiment) -> Option<Observation> {
    let trial_id = record.job_id.clone();
    experiment.trial(&trial_id)?;
    match record.status {
        JobStatus::Completed => match &record.result {
            Some(JobResult::Train(summary)) => Some(Observation::TrialCompleted {
                score: completed_score(summary, experiment, &trial_id),
                trial_id,
            }),
            _ => None,
        },
        JobStatus::Failed => Some(Observation::TrialFailed {
            trial_id,
            error: record.error.as_ref().map_or_else(
                || "its train job failed".to_string(),
                |e| format!("{}: {}", e.code, e.reason),
            ),
        }),
        JobStatus::Cancelled => Some(Observation::TrialStopped { trial_id }),
        JobStatus::Queued | JobStatus::Running | JobStatus::Retrying => None,
    }
}

/// The final score of a completed trial: the macro-F1 of its kept weights, with the
/// validation loss of that (best) epoch as the search saw it.
fn completed_score(summary: &TrainSummary, experiment: &Experiment, trial_id: &str) -> Score {
    let epochs = experiment
        .trial(trial_id)
        .map(|t| t.epochs.as_slice())
        .unwrap_or_default();
    let validation_loss = epochs
        .iter()
        .find(|e| e.epoch == summary.best_epoch)
        .or_else(|| {
            epochs
                .iter()
                .min_by(|a, b| a.score.validation_loss.total_cmp(&b.score.validation_loss))
        })
        .map_or(f64::NAN, |e| e.score.validation_loss);
    Score {
        macro_f1: summary.validation.macro_f1,
        validation_loss,
    }
}

/// How long a read of the trials' events waits before the caller looks again at what else
/// may have happened.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The events of the running trials, read in order from the events stream with an ordered
/// consumer filtered on their subjects; made again from the last sequence read whenever the
/// set of trials changes. (On a 2.9 server, which ignores several filters, every event comes
/// and the caller's check that an event is a trial's own drops the rest.)
pub struct TrialEvents {
    mesh: Mesh,
    trials: BTreeSet<String>,
    messages: Option<pull::Ordered>,
    /// Sequence of the last event read.
    cursor: u64,
    /// Reads that found nothing within [`READ_TIMEOUT`]: after one, every event of the trials
    /// followed that was stored before it began has been read.
    quiet_reads: u64,
}

impl TrialEvents {
    /// Reads from the event after `cursor`.
    pub fn new(mesh: Mesh, cursor: u64) -> Self {
        Self {
            mesh,
            trials: BTreeSet::new(),
            messages: None,
            cursor,
            quiet_reads: 0,
        }
    }

    /// Sequence of the last event read.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// How many reads found nothing new within [`READ_TIMEOUT`] so far: when it has grown
    /// since a moment, every event of the trials followed stored before that moment was read.
    pub fn quiet_reads(&self) -> u64 {
        self.quiet_reads
    }

    /// Follows the events of `trials` from now on (from the event after the last one read).
    pub async fn follow(&mut self, trials: BTreeSet<String>) -> Result<(), RuntimeError> {
        if trials == self.trials && self.messages.is_some() {
            return Ok(());
        }
        self.messages = None;
        self.trials = trials;
        if self.trials.is_empty() {
            return Ok(());
        }
        let stream = self
            .mesh
            .js
            .get_stream(names::EVENTS_STREAM)
            .await
            .map_err(RuntimeError::nats("opening the events stream"))?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subjects: self.trials.iter().map(|t| subjects::events_of(t)).collect(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: self.cursor + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(RuntimeError::nats("following the trials' events"))?;
        self.messages = Some(
            consumer
                .messages()
                .await
                .map_err(RuntimeError::nats("reading the trials' events"))?,
        );
        Ok(())
    }

    /// The next event of the trials followed (its stream sequence now the cursor); none when
    /// nothing came within [`READ_TIMEOUT`] or no trial is followed. An event that cannot be
    /// read is skipped with a warning.
    pub async fn next(&mut self) -> Result<Option<JobEvent>, RuntimeError> {
        let Some(messages) = self.messages.as_mut() else {
            tokio::time::sleep(READ_TIMEOUT).await;
            return Ok(None);
        };
        let next = match tokio::time::timeout(READ_TIMEOUT, messages.next()).await {
            Err(_) => {
                self.quiet_reads += 1;
                return Ok(None);
            }
            Ok(next) => next,
        };
        match next {
            Some(Ok(message)) => {
                if let Ok(info) = message.info() {
                    self.cursor = self.cursor.max(info.stream_sequence);
                }
                match lexmesh_protocol::decode::<JobEvent>(&message.payload) {
                    Ok(event) => Ok(Some(event)),
                    Err(e) => {
                        tracing::warn!(subject = %message.subject, "skipped an unreadable event: {e}");
                        Ok(None)
                    }
                }
            }
            Some(Err(e)) => {
                // Made again from the cursor at the next call.
                self.messages = None;
                Err(RuntimeError::nats("reading the trials' events")(e))
            }
            None => {
                self.messages = None;
                Ok(None)
            }
        }
    }
}

/// The events stream's last sequence now: a new search reads its trials' events from after
/// it.
pub async fn last_event_sequence(mesh: &Mesh) -> Result<u64, RuntimeError> {
    let mut stream = mesh
        .js
        .get_stream(names::EVENTS_STREAM)
        .await
        .map_err(RuntimeError::nats("opening the events stream"))?;
    let info = stream
        .info()
        .await
        .map_err(RuntimeError::nats("reading the events stream's state"))?;
    Ok(info.state.last_sequence)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use lexmesh_protocol::event::{Cancelled, Failed, Progress};
    use lexmesh_protocol::{ErrorCode, JobKind};
    use serde_json::json;

    fn experiment() -> Experiment {
        let spec = serde_json::from_value(json!({
            "space": {"hidden": {"int": {"low": 0, "high": 3}}},
            "max_trials": 2, "max_concurrent_trials": 2, "max_epochs": 3,
        }))
        .unwrap();
        let mut e = Experiment::new("s", spec).unwrap();
        e.launch();
        e
    }

    fn progress(job_id: &str, phase: ProgressPhase, epoch: u32) -> JobEvent {
        JobEvent::Progress(Progress {
            epoch,
            total_epochs: 3,
            batch: 1,
            total_batches: 1,
            loss: 1.0,
            accuracy: 0.5,
            validation_loss: Some(0.9),
            validation_accuracy: Some(0.6),
            validation_macro_f1: Some(0.55),
            completion_percentage: 10.0,
            estimated_time_remaining_s: 1.0,
            examples_per_sec: 100.0,
            ..Progress::new(job_id, job_id, 1, "trainer-a", phase)
        })
    }

    #[test]
    fn trial_events_become_observations_and_others_do_not() {
        let e = experiment();
        assert_eq!(
            from_event(&progress("s-t0", ProgressPhase::Epoch, 2), &e),
            Some(Observation::EpochEnded {
                trial_id: "s-t0".into(),
                epoch: 2,
                macro_f1: 0.55,
                validation_loss: 0.9
            })
        );
        assert_eq!(
            from_event(&progress("s-t1", ProgressPhase::Batch, 2), &e),
            None
        );
        // Another job's events, and a trial the search never started.
        assert_eq!(
            from_event(&progress("other", ProgressPhase::Epoch, 1), &e),
            None
        );
        assert_eq!(
            from_event(&progress("s-t7", ProgressPhase::Epoch, 1), &e),
            None
        );
        let failed = |retrying| {
            JobEvent::Failed(Failed {
                job_id: "s-t1".into(),
                kind: JobKind::Train,
                attempt: 1,
                instance: "trainer-a".into(),
                code: ErrorCode::Unavailable,
                reason: "later".into(),
                retrying,
                timestamp_ms: 0.0,
            })
        };
        assert_eq!(from_event(&failed(true), &e), None);
        assert_eq!(
            from_event(&failed(false), &e),
            Some(Observation::TrialFailed {
                trial_id: "s-t1".into(),
                error: "unavailable: later".into()
            })
        );
        let cancelled = JobEvent::Cancelled(Cancelled {
            job_id: "s-t0".into(),
            kind: JobKind::Train,
            attempt: 1,
            instance: "trainer-a".into(),
            epochs_completed: 1,
            timestamp_ms: 0.0,
        });
        assert_eq!(
            from_event(&cancelled, &e),
            Some(Observation::TrialStopped {
                trial_id: "s-t0".into()
            })
        );
    }

    #[test]
    fn a_record_speaks_only_once_its_job_has_ended() {
        let e = experiment();
        let mut record = JobRecord::new("s-t0", JobKind::Train, JobStatus::Running, 1, 0.0);
        assert_eq!(from_record(&record, &e), None);
        record.status = JobStatus::Cancelled;
        assert_eq!(
            from_record(&record, &e),
            Some(Observation::TrialStopped {
                trial_id: "s-t0".into()
            })
        );
        record.status = JobStatus::Failed;
        assert!(matches!(
            from_record(&record, &e),
            Some(Observation::TrialFailed { .. })
        ));
    }
}
