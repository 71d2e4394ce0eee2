//! The search coordinator: runs `optimize` jobs by driving the search crate's state machine
//! ([`lexmesh_search::Experiment`]) over the mesh. It runs in the trainer service and takes
//! optimize jobs through the shared job loop, so a coordinator whose process dies is
//! redelivered to another replica like any job, and the job loop's progress acks keep the job
//! while the search runs.
//!
//! - [`plan`]: the optimize job read and checked into what the search runs (rejections are
//!   typed `failed` events before anything runs).
//! - [`state`]: the search's state in the `lexmesh_searches` KV bucket, changed by
//!   compare-and-set.
//! - [`observe`]: what the search learns from its trials' train jobs: their events, read from
//!   the events stream, and their job records.
//! - [`trials`]: carrying out the search's actions: trials as train jobs, stops through the
//!   cancel path, the search's events, the best model's registration.
//! - [`wire`]: the search's values as the protocol says them.
//!
//! # The caller's contract, kept
//!
//! The coordinator follows the contract of [`lexmesh_search::experiment`] step by step: on
//! start it loads the saved state (or creates it), calls `launch()`, saves, and carries out
//! the actions; then, one observation at a time, it observes, saves with compare-and-set on
//! the entry's revision (on a conflict it reloads and observes again on what it read), and
//! carries out the actions. The saved state carries the sequence of the last event it took:
//! a coordinator that takes the search over reads the trials' events again from there, and
//! every observation it had already taken changes nothing.
//!
//! # Crashes
//!
//! Killed anywhere, the coordinator leaves a state that is either before or after a step;
//! its successor (the optimize job redelivered to another trainer) repeats the actions of the
//! last saved step (`launch`), each idempotent: a trial is submitted only when no job record
//! of its id exists, and its submit carries `Nats-Msg-Id` = trial id; events carry their
//! dedup id. Trials keep running meanwhile: they are train jobs of their own.

pub mod observe;
pub mod plan;
pub mod state;
pub mod trials;
pub mod wire;

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use lexmesh_protocol::event::{BestTrialSummary, OptimizeSummary, TrialCounts};
use lexmesh_protocol::time::now_ms;
use lexmesh_protocol::{ErrorCode, JobResult, OptimizeJob, ProtocolError};
use lexmesh_runtime::{JobContext, JobHandler, JobOutcome};
use lexmesh_search::{
    Action, BestTrial, Experiment, FinishReason, Observation, StopReason, TrialStatus,
};

use self::observe::TrialEvents;
use self::plan::SearchPlan;
use self::state::{SearchState, StateStore, Written};
use self::trials::Trials;
use crate::runtime_error;

/// How often the coordinator reads the job records of its running trials, as a backstop for
/// an end whose event never came (its trainer died between recording and publishing it).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);

/// A trial's end read from its job record, held back until the events its train job published
/// before it have been read: taken first, it would end the trial before its last epochs (and
/// their rung records) are taken, and they never would be. That is the rule after a take-over,
/// whose first look at the records comes before the events published while no coordinator ran.
struct HeldEnd {
    /// The events stream's last sequence once the record was read: the trial's earlier events
    /// are at or before it.
    after_sequence: u64,
    /// [`TrialEvents::quiet_reads`] then: a quiet read since means they have all been read
    /// (the end's own event may never come).
    quiet_reads: u64,
    observation: Observation,
}

/// Runs `optimize` jobs: coordinates their searches.
pub struct OptimizeHandler;

impl JobHandler for OptimizeHandler {
    type Job = OptimizeJob;

    fn model_id(&self, job: &OptimizeJob) -> Option<String> {
        Some(job.model_id().to_string())
    }

    /// A search cancelled while no coordinator ran still has trials running (train jobs of
    /// their own): the coordinator that takes it stops them before the search ends.
    fn runs_when_cancelled(&self) -> bool {
        true
    }

    async fn run(&self, job: OptimizeJob, ctx: JobContext) -> Result<JobOutcome, ProtocolError> {
        coordinate(job, ctx).await
    }
}

/// Runs one search to its end (or until this instance shuts down: the job is then handed
/// back and another replica continues from the saved state).
async fn coordinate(job: OptimizeJob, ctx: JobContext) -> Result<JobOutcome, ProtocolError> {
    let store = StateStore::new(ctx.mesh().searches.clone(), &job.job_id);
    // Cancelled while no coordinator ran (the job loop runs an optimize job all the same, with
    // its cancel set): a search that never started has nothing to wind down.
    if ctx.cancel.is_cancelled() && store.load().await.map_err(runtime_error)?.is_none() {
        tracing::info!(search = %job.job_id, "cancelled before it started");
        return Ok(JobOutcome::Cancelled {
            epochs_completed: 0,
        });
    }
    let plan = SearchPlan::new(&job)?;
    let mut trials = Trials::new(&ctx, &job, &plan);
    trials.check_data().await?;
    ctx.accept().await;
    let (state, revision) = load_or_create(&store, &plan, &ctx).await?;
    let events = TrialEvents::new(ctx.mesh().clone(), state.events_cursor);
    let mut search = Search {
        ctx: &ctx,
        store,
        state,
        revision,
        trials,
        events,
        pending: VecDeque::new(),
        held: Vec::new(),
    };
    if search.state.experiment.trials().is_empty() {
        tracing::info!(search = %job.job_id, "search started");
    } else {
        tracing::info!(
            search = %job.job_id,
            trials = search.state.experiment.trials().len(),
            "search taken over from its saved state"
        );
    }
    search.run().await
}

/// The saved state, or a new one saved now.
async fn load_or_create(
    store: &StateStore,
    plan: &SearchPlan,
    ctx: &JobContext,
) -> Result<(SearchState, u64), ProtocolError> {
    loop {
        if let Some(saved) = store.load().await.map_err(runtime_error)? {
            return Ok(saved);
        }
        let now = now_ms();
        let state = SearchState {
            experiment: plan.experiment()?,
            base: plan.base.clone(),
            model_id: plan.model_id.clone(),
            // The trials' events all come after this point.
            events_cursor: observe::last_event_sequence(ctx.mesh())
                .await
                .map_err(runtime_error)?,
            created_ms: now,
            updated_ms: now,
        };
        if let Written::At(revision) = store.create(&state).await.map_err(runtime_error)? {
            return Ok((state, revision));
        }
        // Another coordinator created it meanwhile: read its.
    }
}

/// A search being coordinated.
struct Search<'a> {
    ctx: &'a JobContext,
    store: StateStore,
    state: SearchState,
    /// The revision of the saved state `state` is (or was made from).
    revision: u64,
    trials: Trials<'a>,
    events: TrialEvents,
    /// Observations learnt while carrying out actions, taken before the next event.
    pending: VecDeque<Observation>,
    /// Ends read from job records, waiting for the events before them.
    held: Vec<HeldEnd>,
}

impl Search<'_> {
    async fn run(&mut self) -> Result<JobOutcome, ProtocolError> {
        let mut cancel_seen = false;
        if self.ctx.cancel.is_cancelled() {
            // Cancelled while no coordinator ran: stop the trials before anything else (the
            // launch below would hand out starts decided before the cancel).
            cancel_seen = true;
            tracing::info!(search = %self.id(), "cancelled while no coordinator ran: stopping its trials");
            let actions = self.step(Observation::ExperimentCancelled).await?;
            if let Some(outcome) = self.carry_out(actions).await? {
                return Ok(outcome);
            }
        }
        let actions = self.launch().await?;
        if let Some(outcome) = self.carry_out(actions).await? {
            return Ok(outcome);
        }
        let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
        loop {
            self.release_held();
            while let Some(observation) = self.pending.pop_front() {
                let actions = self.step(observation).await?;
                if let Some(outcome) = self.carry_out(actions).await? {
                    return Ok(outcome);
                }
            }
            if let Err(e) = self.events.follow(self.live_trials()).await {
                tracing::warn!(search = %self.id(), "cannot follow the trials' events ({e}); trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            tokio::select! {
                biased;
                _ = self.ctx.shutdown().cancelled() => {
                    tracing::info!(search = %self.id(), "shutting down: the search is handed back");
                    return Ok(JobOutcome::Interrupted);
                }
                _ = self.ctx.cancel.cancelled(), if !cancel_seen => {
                    cancel_seen = true;
                    tracing::info!(search = %self.id(), "cancelled: stopping its trials");
                    self.pending.push_back(Observation::ExperimentCancelled);
                }
                _ = reconcile.tick() => self.reconcile().await?,
                event = self.events.next() => match event {
                    Ok(Some(event)) => {
                        if let Some(observation) = observe::from_event(&event, &self.state.experiment) {
                            self.pending.push_back(observation);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(search = %self.id(), "reading the trials' events: {e}"),
                },
            }
        }
    }

    fn id(&self) -> &str {
        self.state.experiment.id()
    }

    /// The trials whose train jobs may still send events.
    fn live_trials(&self) -> BTreeSet<String> {
        self.state
            .experiment
            .trials()
            .iter()
            .filter(|t| t.status.holds_slot())
            .map(|t| t.id.clone())
            .collect()
    }

    /// `launch()` on the state, saved when it changed.
    async fn launch(&mut self) -> Result<Vec<Action>, ProtocolError> {
        loop {
            let before = self.state.experiment.clone();
            let actions = self.state.experiment.launch();
            if self.state.experiment == before || self.save().await? {
                return Ok(actions);
            }
        }
    }

    /// Observes one thing, saves the state when it changed (compare-and-set; on a conflict
    /// the saved state is read and the observation made on it), and returns what to do.
    async fn step(&mut self, observation: Observation) -> Result<Vec<Action>, ProtocolError> {
        loop {
            let before = self.state.experiment.clone();
            let actions = self.state.experiment.observe(observation.clone());
            if self.state.experiment == before {
                return Ok(actions);
            }
            self.state.events_cursor = self.state.events_cursor.max(self.events.cursor());
            if self.save().await? {
                return Ok(actions);
            }
        }
    }

    /// Saves the state; false (with the saved state read in its place) when another
    /// coordinator wrote first.
    async fn save(&mut self) -> Result<bool, ProtocolError> {
        match self
            .store
            .save(&mut self.state, self.revision)
            .await
            .map_err(runtime_error)?
        {
            Written::At(revision) => {
                self.revision = revision;
                Ok(true)
            }
            Written::Conflict => {
                tracing::warn!(search = %self.id(), "another coordinator changed the search; going on from its state");
                let (state, revision) = self
                    .store
                    .load()
                    .await
                    .map_err(runtime_error)?
                    .ok_or_else(|| {
                        ProtocolError::new(
                            ErrorCode::Internal,
                            format!("the saved state of search {} is gone", self.id()),
                        )
                    })?;
                self.state = state;
                self.revision = revision;
                Ok(false)
            }
        }
    }

    /// Carries out actions in order; the job's outcome once the search is over.
    async fn carry_out(
        &mut self,
        actions: Vec<Action>,
    ) -> Result<Option<JobOutcome>, ProtocolError> {
        for action in actions {
            match &action {
                Action::StartTrial {
                    trial_id,
                    configuration,
                    ..
                } => {
                    self.trials.start(trial_id, configuration).await?;
                }
                Action::StopTrial {
                    trial_id, reason, ..
                } => {
                    if self.keeps_running(trial_id, reason) {
                        tracing::info!(search = %self.id(), trial = %trial_id, "the trial that reached the goal trains to its end, so that its model is kept");
                        continue;
                    }
                    let configuration = self
                        .state
                        .experiment
                        .trial(trial_id)
                        .map(|t| t.configuration.clone())
                        .unwrap_or_default();
                    let ended = self
                        .trials
                        .stop(trial_id, &configuration, &self.state.experiment)
                        .await?;
                    // Its train job had ended already: that is the stop's answer (a
                    // completion or failure is taken as one too).
                    self.pending.extend(ended);
                }
                Action::Finish { reason, best, .. } => {
                    return self.finish(*reason, best.clone()).await.map(Some);
                }
                Action::TrialEnded { .. } => {
                    record_progress(self.ctx, &self.state.experiment).await;
                }
                _ => {}
            }
            if let Some(event) =
                wire::event_of(&action, &self.state.experiment, self.ctx.instance())
            {
                self.trials
                    .publish_event(&event, &action.dedup_id())
                    .await?;
            }
        }
        Ok(None)
    }

    /// Whether a trial asked to stop is left to finish instead: the best trial when the goal
    /// ended the search, so that the model that reached the goal is stored (a cancelled train
    /// job stores none). Its completion answers the stop.
    fn keeps_running(&self, trial_id: &str, reason: &StopReason) -> bool {
        matches!(
            reason,
            StopReason::SearchEnded {
                reason: FinishReason::GoalReached
            }
        ) && self
            .state
            .experiment
            .best()
            .is_some_and(|best| best.trial_id == trial_id)
    }

    /// Reads the job records of the running trials and holds the ends they tell until the
    /// events before them are read (see [`HeldEnd`]); their own events may bring them first.
    async fn reconcile(&mut self) -> Result<(), ProtocolError> {
        let mut ends = Vec::new();
        for trial_id in self.live_trials() {
            if self
                .held
                .iter()
                .any(|h| h.observation.trial_id() == Some(trial_id.as_str()))
            {
                continue;
            }
            if let Some(record) = self.trials.record(&trial_id).await?
                && let Some(observation) = observe::from_record(&record, &self.state.experiment)
            {
                ends.push(observation);
            }
        }
        if ends.is_empty() {
            return Ok(());
        }
        // A job's record ends before its final event is published, after all its others.
        let after_sequence = observe::last_event_sequence(self.ctx.mesh())
            .await
            .map_err(runtime_error)?;
        let quiet_reads = self.events.quiet_reads();
        self.held
            .extend(ends.into_iter().map(|observation| HeldEnd {
                after_sequence,
                quiet_reads,
                observation,
            }));
        Ok(())
    }

    /// Takes the held ends whose trials' earlier events have all been read.
    fn release_held(&mut self) {
        let (cursor, quiet_reads) = (self.events.cursor(), self.events.quiet_reads());
        let (ready, held): (Vec<HeldEnd>, Vec<HeldEnd>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| cursor >= h.after_sequence || quiet_reads > h.quiet_reads);
        self.held = held;
        self.pending
            .extend(ready.into_iter().map(|h| h.observation));
    }

    /// The search is over: the job's outcome.
    async fn finish(
        &mut self,
        reason: FinishReason,
        best: Option<BestTrial>,
    ) -> Result<JobOutcome, ProtocolError> {
        let experiment = &self.state.experiment;
        tracing::info!(search = %self.id(), ?reason, best = best.as_ref().map_or("-", |b| b.trial_id.as_str()), "search over");
        match reason {
            FinishReason::Cancelled => Ok(JobOutcome::Cancelled {
                epochs_completed: 0,
            }),
            FinishReason::TooManyFailures => {
                let counts = experiment.counts();
                Err(ProtocolError::new(
                    ErrorCode::TrainingFailed,
                    format!(
                        "{} trial(s) failed, more than max_failed_trials ({}) allows; the last: {}",
                        counts.failed,
                        experiment.spec().max_failed_trials,
                        last_error(experiment)
                    ),
                ))
            }
            FinishReason::AllTrialsDone | FinishReason::GoalReached => {
                let Some(best) = best else {
                    return Err(ProtocolError::new(
                        ErrorCode::TrainingFailed,
                        format!(
                            "no trial of the search reported a score (the last error: {})",
                            last_error(experiment)
                        ),
                    ));
                };
                let (model_trial_id, _) = self.trials.register_best(experiment).await?;
                let counts = experiment.counts();
                let settings = self
                    .trials_settings(&best.configuration)
                    .unwrap_or_else(|| self.state.base.clone());
                let summary = OptimizeSummary {
                    model_id: self.state.model_id.clone(),
                    model_trial_id,
                    reason: wire::end_reason(reason),
                    best_trial: BestTrialSummary {
                        trial_id: best.trial_id.clone(),
                        index: best.index,
                        configuration: best.configuration.clone(),
                        settings,
                        score: wire::score(best.score),
                        epochs_run: best.epochs_run,
                        status: wire::status(best.status),
                    },
                    trials: TrialCounts {
                        completed: counts.completed,
                        stopped: counts.stopped,
                        cancelled: counts.cancelled,
                        failed: counts.failed,
                    },
                };
                Ok(JobOutcome::Completed(JobResult::Optimize(Box::new(
                    summary,
                ))))
            }
        }
    }

    /// A trial's whole settings.
    fn trials_settings(
        &self,
        configuration: &lexmesh_search::Configuration,
    ) -> Option<lexmesh_protocol::ExperimentSettings> {
        let mut settings = serde_json::to_value(&self.state.base).ok()?;
        if let serde_json::Value::Object(map) = &mut settings {
            map.extend(configuration.clone());
        }
        serde_json::from_value(settings).ok()
    }
}

/// The error of the last trial that failed.
fn last_error(experiment: &Experiment) -> String {
    experiment
        .trials()
        .iter()
        .rev()
        .find(|t| t.status == TrialStatus::Failed)
        .and_then(|t| t.error.clone())
        .unwrap_or_else(|| "none".into())
}

/// Records how many trials have ended in the optimize job's record (`epochs_completed`, out of
/// `total_epochs` = the trial budget): what `lexmesh jobs` shows, and the progress by which a
/// lost coordinator attempt is judged (one that saw trials end is not counted against
/// `jobs.max_lost_attempts`). A failed write is logged: the next end writes again.
async fn record_progress(ctx: &JobContext, experiment: &Experiment) {
    let ended = experiment
        .trials()
        .iter()
        .filter(|t| t.status.is_final())
        .count();
    let ended = u32::try_from(ended).unwrap_or(u32::MAX);
    let total = experiment.spec().max_trials.max(ended);
    let written = lexmesh_runtime::records::update(&ctx.mesh().jobs, &ctx.job_id, |r| {
        r.map(|mut r| {
            r.epochs_completed = Some(r.epochs_completed.unwrap_or(0).max(ended));
            r.total_epochs = Some(total);
            r.updated_ms = now_ms();
            r
        })
    })
    .await;
    if let Err(e) = written {
        tracing::warn!(search = %experiment.id(), "cannot record the search's progress ({ended} trial(s) ended): {e}");
    }
}
