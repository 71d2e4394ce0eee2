//! A fake world for the experiment's tests: trainers whose validation scores are a
//! deterministic function of the configuration and the epoch, and a broker that delivers one
//! event at a time. It carries out actions the way the contract asks a caller to: by trial
//! id, so that an action handed out twice has no second effect.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::action::Action;
use crate::objective::Score;
use crate::observation::Observation;
use crate::space::Configuration;

/// Validation score of a configuration (`learning_rate`, `dropout`) after `epoch` epochs.
///
/// The peak is highest near a learning rate of 6e-4, which learns slowly (a slow starter:
/// F1 below 0.1 after one epoch); large learning rates learn at once but peak lower and dip
/// every third epoch (a best-so-far judge sees through the dip).
pub fn curve(configuration: &Configuration, epoch: u32) -> Score {
    let lr = configuration
        .get("learning_rate")
        .and_then(|v| v.as_f64())
        .unwrap_or(1e-3);
    let dropout = configuration
        .get("dropout")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.2);
    let x = lr.log10();
    let peak = 0.85 - 0.08 * (x + 3.2).powi(2) - 0.2 * (dropout - 0.2).powi(2);
    let speed = 0.15 * 10f64.powf(x + 3.0);
    let mut f1 = peak * (1.0 - (-speed * f64::from(epoch)).exp());
    if x > -2.0 && epoch.is_multiple_of(3) {
        f1 -= 0.05;
    }
    Score {
        macro_f1: f1,
        validation_loss: 1.2 - f1 + 0.01 * dropout,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum JobState {
    Running,
    Cancelling,
    Done,
}

#[derive(Debug, Clone)]
struct Job {
    trial_id: String,
    index: u32,
    configuration: Configuration,
    next_epoch: u32,
    state: JobState,
}

/// Trainers and a broker.
#[derive(Debug, Clone)]
pub struct World {
    max_epochs: u32,
    /// Trials (by index) whose train job fails permanently at that epoch.
    failing: BTreeMap<u32, u32>,
    jobs: Vec<Job>,
    queue: VecDeque<Observation>,
    cursor: usize,
    /// Jobs submitted, by trial id (a repeated start is not a second submission).
    pub submitted: BTreeMap<String, u32>,
    /// Cancels asked, by trial id.
    pub cancels: BTreeMap<String, u32>,
    /// Every action handed to the world, in order.
    pub log: Vec<Action>,
    /// Ids of the events published (deduplicated).
    pub published: BTreeSet<String>,
    /// The most train jobs running at once.
    pub most_running: usize,
    /// Every epoch score a trainer reported, by trial id.
    pub reported: BTreeMap<String, Vec<Score>>,
}

impl World {
    /// Trainers for `max_epochs`-epoch jobs; trial `i` fails at epoch `failing[i]`.
    pub fn new(max_epochs: u32, failing: BTreeMap<u32, u32>) -> Self {
        Self {
            max_epochs,
            failing,
            jobs: Vec::new(),
            queue: VecDeque::new(),
            cursor: 0,
            submitted: BTreeMap::new(),
            cancels: BTreeMap::new(),
            log: Vec::new(),
            published: BTreeSet::new(),
            most_running: 0,
            reported: BTreeMap::new(),
        }
    }

    /// Carries out actions, by trial id.
    pub fn act(&mut self, actions: Vec<Action>) {
        for action in actions {
            self.log.push(action.clone());
            match &action {
                Action::StartTrial {
                    trial_id,
                    index,
                    configuration,
                } => {
                    let count = self.submitted.entry(trial_id.clone()).or_insert(0);
                    *count += 1;
                    if *count == 1 {
                        self.jobs.push(Job {
                            trial_id: trial_id.clone(),
                            index: *index,
                            configuration: configuration.clone(),
                            next_epoch: 1,
                            state: JobState::Running,
                        });
                        self.queue.push_back(Observation::TrialStarted {
                            trial_id: trial_id.clone(),
                            instance: Some(format!("trainer-{}", index % 2)),
                        });
                    }
                }
                Action::StopTrial { trial_id, .. } => {
                    *self.cancels.entry(trial_id.clone()).or_insert(0) += 1;
                    match self.jobs.iter_mut().find(|j| j.trial_id == *trial_id) {
                        Some(job) if job.state == JobState::Running => {
                            job.state = JobState::Cancelling;
                        }
                        Some(_) => {}
                        // Never submitted: nothing can run under that id.
                        None => self.queue.push_back(Observation::TrialStopped {
                            trial_id: trial_id.clone(),
                        }),
                    }
                }
                _ => {
                    self.published.insert(action.dedup_id());
                }
            }
            let running = self
                .jobs
                .iter()
                .filter(|j| j.state != JobState::Done)
                .count();
            self.most_running = self.most_running.max(running);
        }
    }

    /// The next event: one queued, else the next job's (round robin); none when idle.
    pub fn next(&mut self) -> Option<Observation> {
        if let Some(observation) = self.queue.pop_front() {
            return Some(observation);
        }
        let n = self.jobs.len();
        for offset in 0..n {
            let k = (self.cursor + offset) % n;
            if self.jobs[k].state == JobState::Done {
                continue;
            }
            self.cursor = (k + 1) % n;
            return Some(self.advance(k));
        }
        None
    }

    fn advance(&mut self, k: usize) -> Observation {
        let max_epochs = self.max_epochs;
        let fails_at = self.failing.get(&self.jobs[k].index).copied();
        let job = &mut self.jobs[k];
        let trial_id = job.trial_id.clone();
        if job.state == JobState::Cancelling {
            job.state = JobState::Done;
            return Observation::TrialStopped { trial_id };
        }
        let epoch = job.next_epoch;
        if fails_at == Some(epoch) {
            job.state = JobState::Done;
            return Observation::TrialFailed {
                trial_id,
                error: "diverged".into(),
            };
        }
        if epoch > max_epochs {
            job.state = JobState::Done;
            return Observation::TrialCompleted {
                trial_id,
                score: curve(&job.configuration, max_epochs),
            };
        }
        job.next_epoch += 1;
        let score = curve(&job.configuration, epoch);
        self.reported
            .entry(trial_id.clone())
            .or_default()
            .push(score);
        Observation::EpochEnded {
            trial_id,
            epoch,
            macro_f1: score.macro_f1,
            validation_loss: score.validation_loss,
        }
    }

    /// Train jobs not ended.
    pub fn running(&self) -> usize {
        self.jobs
            .iter()
            .filter(|j| j.state != JobState::Done)
            .count()
    }
}
