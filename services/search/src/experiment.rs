//! A search's decisions as a pure state machine ([`Experiment`]): which trials to start, which
//! to stop, when the search is over. No broker, no clock, no I/O: the coordinator service and
//! the embedded `lexmesh optimize` feed it [`Observation`]s and carry out its [`Action`]s.
//!
//! # Why it looks like this
//!
//! The coordinator may be killed at any moment, and the one that replaces it continues from
//! the state saved in the KV store while the broker redelivers events it may have seen. So:
//!
//! - the whole state is one serialisable value (the spec, the trial table, the ASHA rungs, the
//!   phase), saved after every step;
//! - every observation is idempotent: one that says nothing new (a duplicate, an epoch older
//!   than one already taken, a result of a trial already ended or being stopped, an unknown
//!   trial) changes nothing and returns no action, so no rung records a trial twice, no trial
//!   starts twice, no failure counts twice;
//! - decisions are kept as states until the caller confirms them: a trial whose start is
//!   decided is `Pending` until its train job is seen, one whose stop is decided is `Stopping`
//!   until its train job is confirmed ended. [`Experiment::launch`] hands out the actions for
//!   these again, with the same trial ids and configurations (trial `k` is
//!   `<experiment_id>-t<k>` and its configuration is the sampler's pure function of `k`);
//! - a stopped trial keeps its slot until its train job has ended, so `max_concurrent_trials`
//!   bounds the train jobs that really run, not only those the search believes in.
//!
//! # The caller's contract
//!
//! 1. Create the state with [`Experiment::new`] (or load the saved one), call
//!    [`Experiment::launch`], save the state, and carry out the actions.
//! 2. For each event delivered (a trial's train job started, ended an epoch, completed,
//!    failed, was cancelled; the optimize job was cancelled): [`Experiment::observe`] it, save
//!    the state (compare-and-set on the stored revision; if another coordinator wrote in
//!    between, reload and go on from there), carry out the actions, then acknowledge the
//!    event. One event at a time.
//! 3. After loading a saved state, call [`Experiment::launch`] and carry out what it returns:
//!    the starts and stops decided but perhaps not carried out, the events of the last step,
//!    and `Finish` if the search is over. It changes nothing when called again.
//! 4. Carry out actions idempotently by [`Action::dedup_id`] (the train job's id is the trial
//!    id; events are published with the dedup id as `Nats-Msg-Id`): a crash between saving
//!    and acting, or between acting and saving (the redelivered event then yields the same
//!    actions), repeats some.
//! 5. Answer every [`Action::StopTrial`] with [`Observation::TrialStopped`] once no train job
//!    of that id can run any more, including when it was never submitted. A completion or a
//!    failure that arrives instead is taken as the answer too.
//! 6. The search is over when [`Experiment::is_finished`]; `Finish` may be handed out again.
//!
//! # Decisions
//!
//! - Slots: trials holding one (`Pending`, `Running`, `Stopping`) are at most
//!   `max_concurrent_trials`; each observation that frees one refills it while the budget and
//!   the sampler allow.
//! - Budget: at most `max_trials` trials that do not fail; a failed trial's place goes to the
//!   next configuration (its own is not tried again: a permanent failure would repeat). When
//!   more than `max_failed_trials` have failed, the search ends with
//!   [`FinishReason::TooManyFailures`] and its running trials are stopped.
//! - ASHA: every epoch result goes to the scheduler once, in its trial's bracket; the value
//!   judged is as the spec's [`Judge`](crate::asha::Judge) says (best-so-far by default). A
//!   trial below a rung's cutoff before its last epoch is stopped; one recorded at a rung and
//!   kept is promoted.
//! - Goal: the first trial whose best macro-F1 reaches `goal` ends the search; every trial
//!   still running, itself included, is stopped.
//! - Cancel: every trial still running is stopped, nothing new starts.
//! - Results that arrive for a trial after its stop was decided are not taken (they would
//!   reach rungs it was stopped before).
//! - The best trial: the best score (F1, then loss, then the earlier trial) among trials that
//!   did not fail.

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::asha::{Asha, Decision, cutoff};
use crate::error::SearchError;
use crate::leaderboard::{self, LeaderboardEntry};
use crate::objective::{self, Score};
use crate::observation::{Observation, sanitise};
use crate::outcome::{BestTrial, FinishReason, Phase};
use crate::spec::{ExperimentSpec, Scheduler};
use crate::trial::{EpochScore, StopReason, Trial, TrialStatus};

/// Job ids (and so trial ids) are at most this long (the protocol's `job_id` pattern).
const MAX_ID_LEN: usize = 64;

/// A search and its whole state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    id: String,
    spec: ExperimentSpec,
    trials: Vec<Trial>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    asha: Option<Asha>,
    phase: Phase,
    leaderboard_version: u64,
    /// The events of the last step that changed the state, handed out again by `launch` (a
    /// coordinator may have saved the state and died before publishing them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    last_events: Vec<Action>,
}

/// How many trials are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Start decided, not seen running.
    pub pending: u32,
    /// Running.
    pub running: u32,
    /// Stop decided, not confirmed.
    pub stopping: u32,
    /// Stopped by the scheduler.
    pub stopped: u32,
    /// Completed.
    pub completed: u32,
    /// Failed.
    pub failed: u32,
    /// Cancelled.
    pub cancelled: u32,
}

impl Counts {
    /// Trials holding a slot.
    pub fn live(&self) -> u32 {
        self.pending + self.running + self.stopping
    }

    /// Trials counted against `max_trials` (all but the failed).
    pub fn budgeted(&self) -> u32 {
        self.live() + self.stopped + self.completed + self.cancelled
    }
}

impl Experiment {
    /// A search that has not started anything yet (call [`Experiment::launch`]). `id` is the
    /// optimize job's id; trial `k` is `<id>-t<k>`.
    pub fn new(id: impl Into<String>, spec: ExperimentSpec) -> Result<Self, SearchError> {
        let id = id.into();
        spec.validate()?;
        // The highest index a trial can get: failures are replaced, up to max_failed_trials.
        let highest = u64::from(spec.max_trials) + u64::from(spec.max_failed_trials) - 1;
        check_id(&id, highest)?;
        let asha = match &spec.scheduler {
            Scheduler::None => None,
            Scheduler::Asha(config) => Some(Asha::new(config.clone())?),
        };
        Ok(Self {
            id,
            spec,
            trials: Vec::new(),
            asha,
            phase: Phase::Searching,
            leaderboard_version: 0,
            last_events: Vec::new(),
        })
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What it was asked to do.
    pub fn spec(&self) -> &ExperimentSpec {
        &self.spec
    }

    /// Its trials, by index.
    pub fn trials(&self) -> &[Trial] {
        &self.trials
    }

    /// A trial by id.
    pub fn trial(&self, trial_id: &str) -> Option<&Trial> {
        self.position(trial_id).map(|i| &self.trials[i])
    }

    /// The ASHA scheduler's state (its rung records), if it uses one.
    pub fn asha(&self) -> Option<&Asha> {
        self.asha.as_ref()
    }

    /// Where it is.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Whether it is over.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished { .. })
    }

    /// Trials per status.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for trial in &self.trials {
            let n = match trial.status {
                TrialStatus::Pending => &mut counts.pending,
                TrialStatus::Running => &mut counts.running,
                TrialStatus::Stopping => &mut counts.stopping,
                TrialStatus::Stopped => &mut counts.stopped,
                TrialStatus::Completed => &mut counts.completed,
                TrialStatus::Failed => &mut counts.failed,
                TrialStatus::Cancelled => &mut counts.cancelled,
            };
            *n += 1;
        }
        counts
    }

    /// The trials ranked by best score (see [`leaderboard`](crate::leaderboard)).
    pub fn leaderboard(&self) -> Vec<LeaderboardEntry> {
        leaderboard::rank(&self.trials)
    }

    /// The best trial so far among those that did not fail.
    pub fn best(&self) -> Option<BestTrial> {
        let scored = self
            .trials
            .iter()
            .filter(|t| t.status != TrialStatus::Failed)
            .filter_map(|t| t.best.map(|score| (t, score)));
        objective::best(scored).map(|(t, score)| BestTrial {
            trial_id: t.id.clone(),
            index: t.index,
            configuration: t.configuration.clone(),
            score,
            epochs_run: t.epochs_run(),
            status: t.status,
        })
    }

    /// Fills free slots, then returns everything the caller must (still) carry out: stops and
    /// starts decided and not confirmed, the events of the last step, and `Finish` when the
    /// search is over. Called at the start and after loading a saved state; calling it again
    /// changes nothing and returns the same actions.
    pub fn launch(&mut self) -> Vec<Action> {
        let before = self.leaderboard();
        let mut fresh = Vec::new();
        if self.settle(before, &mut fresh) {
            self.last_events = fresh.into_iter().filter(Action::is_event).collect();
        }
        let mut actions: Vec<Action> = self
            .trials
            .iter()
            .filter_map(|t| match t.status {
                TrialStatus::Stopping => Some(stop_action(t)),
                _ => None,
            })
            .collect();
        actions.extend(self.trials.iter().filter_map(|t| match t.status {
            TrialStatus::Pending => Some(start_action(t)),
            _ => None,
        }));
        actions.extend(self.last_events.iter().cloned());
        if let Phase::Finished { reason, best } = &self.phase {
            actions.push(Action::Finish {
                experiment_id: self.id.clone(),
                reason: *reason,
                best: best.clone(),
            });
        }
        actions
    }

    /// Takes one observation and returns what to do about it: the trial's own events and
    /// stop, stops for the end of the search, starts for freed slots, a leaderboard update,
    /// `Finish`. An observation that says nothing new changes nothing and returns nothing.
    pub fn observe(&mut self, observation: Observation) -> Vec<Action> {
        let before = self.leaderboard();
        let mut actions = Vec::new();
        let changed = match observation {
            Observation::TrialStarted { trial_id, instance } => {
                self.on_started(&trial_id, instance)
            }
            Observation::EpochEnded {
                trial_id,
                epoch,
                macro_f1,
                validation_loss,
            } => self.on_epoch(
                &trial_id,
                epoch,
                Score {
                    macro_f1,
                    validation_loss,
                },
                &mut actions,
            ),
            Observation::TrialCompleted { trial_id, score } => {
                self.on_completed(&trial_id, score, &mut actions)
            }
            Observation::TrialFailed { trial_id, error } => {
                self.on_failed(&trial_id, error, &mut actions)
            }
            Observation::TrialStopped { trial_id } => self.on_stopped(&trial_id, &mut actions),
            Observation::ExperimentCancelled => self.end(FinishReason::Cancelled),
        };
        if !changed {
            return Vec::new();
        }
        self.settle(before, &mut actions);
        self.last_events = actions.iter().filter(|a| a.is_event()).cloned().collect();
        actions
    }

    /// The index of a trial by id (`<id>-t<index>`); none for another search's or an unknown
    /// trial.
    fn position(&self, trial_id: &str) -> Option<usize> {
        let index: usize = trial_id
            .strip_prefix(self.id.as_str())?
            .strip_prefix("-t")?
            .parse()
            .ok()?;
        (self.trials.get(index)?.id == trial_id).then_some(index)
    }

    fn on_started(&mut self, trial_id: &str, instance: Option<String>) -> bool {
        let Some(i) = self.position(trial_id) else {
            return false;
        };
        let trial = &mut self.trials[i];
        if trial.status.is_final() {
            return false;
        }
        let mut changed = false;
        if trial.status == TrialStatus::Pending {
            trial.status = TrialStatus::Running;
            changed = true;
        }
        if let Some(instance) = instance
            && !trial.instances.contains(&instance)
        {
            trial.instances.push(instance);
            changed = true;
        }
        changed
    }

    fn on_epoch(
        &mut self,
        trial_id: &str,
        epoch: u32,
        score: Score,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(i) = self.position(trial_id) else {
            return false;
        };
        let max_epochs = self.spec.max_epochs;
        let trial = &mut self.trials[i];
        let takes = matches!(trial.status, TrialStatus::Pending | TrialStatus::Running)
            && (1..=max_epochs).contains(&epoch)
            && epoch > trial.epochs_run();
        if !takes {
            return false;
        }
        let score = sanitise(score);
        trial.status = TrialStatus::Running;
        trial.epochs.push(EpochScore { epoch, score });
        trial.consider(score);
        if let Some(asha) = &mut self.asha {
            judge_at_rung(asha, trial, epoch, score.macro_f1, max_epochs, out);
        }
        self.check_goal(i);
        true
    }

    fn on_completed(&mut self, trial_id: &str, score: Score, out: &mut Vec<Action>) -> bool {
        let Some(i) = self.position(trial_id) else {
            return false;
        };
        let trial = &mut self.trials[i];
        match trial.status {
            TrialStatus::Pending | TrialStatus::Running => {
                let score = sanitise(score);
                trial.final_score = Some(score);
                trial.consider(score);
                trial.status = TrialStatus::Completed;
                out.push(ended_action(trial));
                self.check_goal(i);
                true
            }
            TrialStatus::Stopping => {
                confirm_stop(trial, out);
                true
            }
            _ => false,
        }
    }

    fn on_failed(&mut self, trial_id: &str, error: String, out: &mut Vec<Action>) -> bool {
        let Some(i) = self.position(trial_id) else {
            return false;
        };
        let trial = &mut self.trials[i];
        match trial.status {
            TrialStatus::Pending | TrialStatus::Running => {
                trial.status = TrialStatus::Failed;
                trial.error = Some(error);
                out.push(ended_action(trial));
                true
            }
            // A trial asked to stop whose job then failed: stopped, not a failure to count.
            TrialStatus::Stopping => {
                confirm_stop(trial, out);
                true
            }
            _ => false,
        }
    }

    fn on_stopped(&mut self, trial_id: &str, out: &mut Vec<Action>) -> bool {
        let Some(i) = self.position(trial_id) else {
            return false;
        };
        let trial = &mut self.trials[i];
        match trial.status {
            TrialStatus::Stopping => confirm_stop(trial, out),
            TrialStatus::Pending | TrialStatus::Running => {
                trial.status = TrialStatus::Cancelled;
                trial.stop_reason = Some(StopReason::External);
                out.push(ended_action(trial));
            }
            _ => return false,
        }
        true
    }

    /// Decides the end of the search (if it is still searching).
    fn end(&mut self, reason: FinishReason) -> bool {
        if self.phase != Phase::Searching {
            return false;
        }
        self.phase = Phase::Ending { reason };
        true
    }

    fn check_goal(&mut self, i: usize) {
        if let (Some(goal), Some(best)) = (self.spec.goal, self.trials[i].best)
            && best.reaches(goal)
        {
            self.end(FinishReason::GoalReached);
        }
    }

    /// Everything that follows from the state after a step: the end of the search when too
    /// many trials failed or none is left to run, stops for an ending search, starts for free
    /// slots, a leaderboard update, `Finish`. Says whether anything changed.
    fn settle(&mut self, before: Vec<LeaderboardEntry>, out: &mut Vec<Action>) -> bool {
        let mut changed = false;
        if self.counts().failed > self.spec.max_failed_trials {
            changed |= self.end(FinishReason::TooManyFailures);
        }
        if let Phase::Ending { reason } = self.phase {
            for trial in &mut self.trials {
                if matches!(trial.status, TrialStatus::Pending | TrialStatus::Running) {
                    trial.status = TrialStatus::Stopping;
                    trial.stop_reason = Some(StopReason::SearchEnded { reason });
                    out.push(stop_action(trial));
                    changed = true;
                }
            }
        }
        if self.phase == Phase::Searching {
            changed |= self.fill(out);
            if self.counts().live() == 0 {
                changed |= self.end(FinishReason::AllTrialsDone);
            }
        }
        let mut finish = None;
        if let Phase::Ending { reason } = self.phase
            && self.counts().live() == 0
        {
            let best = self.best();
            finish = Some(Action::Finish {
                experiment_id: self.id.clone(),
                reason,
                best: best.clone(),
            });
            self.phase = Phase::Finished { reason, best };
            changed = true;
        }
        let after = self.leaderboard();
        if after != before {
            self.leaderboard_version += 1;
            out.push(Action::LeaderboardChanged {
                experiment_id: self.id.clone(),
                version: self.leaderboard_version,
                entries: after,
            });
            changed = true;
        }
        out.extend(finish);
        changed
    }

    /// Starts trials while a slot is free, the budget allows and the sampler has a next
    /// configuration.
    fn fill(&mut self, out: &mut Vec<Action>) -> bool {
        let sampler = self.spec.sampler();
        let mut counts = self.counts();
        let mut changed = false;
        while counts.live() < self.spec.max_concurrent_trials
            && counts.budgeted() < self.spec.max_trials
        {
            let Ok(index) = u32::try_from(self.trials.len()) else {
                break;
            };
            let Some(configuration) = sampler.configuration(&self.spec.space, u64::from(index))
            else {
                break;
            };
            let bracket = self
                .asha
                .as_ref()
                .map_or(0, |a| a.bracket_of(self.spec.seed, u64::from(index)));
            let trial = Trial {
                index,
                id: format!("{}-t{index}", self.id),
                configuration,
                bracket,
                status: TrialStatus::Pending,
                instances: Vec::new(),
                epochs: Vec::new(),
                best: None,
                final_score: None,
                stop_reason: None,
                error: None,
            };
            out.push(start_action(&trial));
            self.trials.push(trial);
            counts.pending += 1;
            changed = true;
        }
        changed
    }
}

/// Feeds an epoch's value to ASHA and turns its decision into actions: promoted when it was
/// recorded at a rung and goes on, stopped when it fell below a rung's cutoff before its last
/// epoch (ASHA's stop at `max_t` is the trial's normal end, reported by its completion).
fn judge_at_rung(
    asha: &mut Asha,
    trial: &mut Trial,
    epoch: u32,
    value: f64,
    max_epochs: u32,
    out: &mut Vec<Action>,
) {
    let bracket = trial.bracket;
    let recorded_before: Vec<bool> = asha
        .brackets
        .get(bracket)
        .map(|b| {
            b.rungs
                .iter()
                .map(|r| r.recorded.contains_key(&trial.id))
                .collect()
        })
        .unwrap_or_default();
    let decision = asha.on_result(&trial.id, bracket, epoch, value);
    let Some(rung) = asha.brackets.get(bracket).and_then(|b| {
        b.rungs
            .iter()
            .zip(&recorded_before)
            .find(|(r, before)| !**before && r.recorded.contains_key(&trial.id))
            .map(|(r, _)| r)
    }) else {
        return;
    };
    let recorded = rung.recorded.get(&trial.id).copied().unwrap_or(value);
    match decision {
        Decision::Continue => out.push(Action::TrialPromoted {
            trial_id: trial.id.clone(),
            index: trial.index,
            epoch,
            milestone: rung.milestone,
            value: recorded,
        }),
        Decision::Stop if epoch < max_epochs => {
            let mut others = rung.recorded.clone();
            others.remove(&trial.id);
            let reason = StopReason::Rung {
                milestone: rung.milestone,
                value: recorded,
                cutoff: cutoff(&others, asha.config.reduction_factor).unwrap_or(recorded),
            };
            trial.status = TrialStatus::Stopping;
            trial.stop_reason = Some(reason);
            out.push(stop_action(trial));
        }
        Decision::Stop => {}
    }
}

/// A `Stopping` trial whose train job has ended: stopped by the scheduler, or cancelled by the
/// end of the search.
fn confirm_stop(trial: &mut Trial, out: &mut Vec<Action>) {
    trial.status = match trial.stop_reason {
        Some(StopReason::Rung { .. }) => TrialStatus::Stopped,
        _ => TrialStatus::Cancelled,
    };
    out.push(ended_action(trial));
}

fn start_action(trial: &Trial) -> Action {
    Action::StartTrial {
        trial_id: trial.id.clone(),
        index: trial.index,
        configuration: trial.configuration.clone(),
    }
}

fn stop_action(trial: &Trial) -> Action {
    Action::StopTrial {
        trial_id: trial.id.clone(),
        index: trial.index,
        reason: trial
            .stop_reason
            .clone()
            .unwrap_or(StopReason::SearchEnded {
                reason: FinishReason::Cancelled,
            }),
    }
}

fn ended_action(trial: &Trial) -> Action {
    Action::TrialEnded {
        trial_id: trial.id.clone(),
        index: trial.index,
        status: trial.status,
        epochs_run: trial.epochs_run(),
        best: trial.best,
    }
}

/// Checks that `<id>-t<highest>` is a valid job id.
fn check_id(id: &str, highest: u64) -> Result<(), SearchError> {
    let bad = |reason: String| {
        Err(SearchError::ExperimentId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("it is empty".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return bad(format!("`{c}` is not one of A-Z a-z 0-9 _ -"));
    }
    let longest = format!("{id}-t{highest}");
    if longest.len() > MAX_ID_LEN {
        return bad(format!(
            "trial ids such as `{longest}` would be longer than {MAX_ID_LEN} characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;
