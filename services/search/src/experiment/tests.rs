#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use serde_json::json;

use super::simulation::World;
use super::*;
use crate::asha::{AshaConfig, Judge};
use crate::space::Space;
use crate::spec::SamplerKind;

// ---------------------------------------------------------------------------------------
// Set-up

fn space() -> Space {
    serde_json::from_value(json!({
        "learning_rate": {"log_uniform": {"low": 1e-4, "high": 0.1}},
        "dropout": {"uniform": {"low": 0.0, "high": 0.5}},
    }))
    .unwrap()
}

fn asha(max_t: u32) -> Scheduler {
    Scheduler::Asha(AshaConfig {
        max_t,
        grace_period: 1,
        reduction_factor: 3.0,
        brackets: 1,
        judge: Judge::BestSoFar,
    })
}

fn spec(scheduler: Scheduler, max_trials: u32, concurrent: u32, max_epochs: u32) -> ExperimentSpec {
    ExperimentSpec {
        space: space(),
        sampler: SamplerKind::Random,
        scheduler,
        max_trials,
        max_concurrent_trials: concurrent,
        max_failed_trials: 0,
        max_epochs,
        goal: None,
        seed: 7,
    }
}

fn json_of(exp: &Experiment) -> String {
    serde_json::to_string(exp).unwrap()
}

fn from_json(state: &str) -> Experiment {
    serde_json::from_str(state).unwrap()
}

fn epoch(trial: &str, epoch: u32, macro_f1: f64) -> Observation {
    Observation::EpochEnded {
        trial_id: trial.into(),
        epoch,
        macro_f1,
        validation_loss: 1.0 - macro_f1,
    }
}

fn stopped(trial: &str) -> Observation {
    Observation::TrialStopped {
        trial_id: trial.into(),
    }
}

fn starts(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StartTrial { trial_id, .. } => Some(trial_id.clone()),
            _ => None,
        })
        .collect()
}

fn stops(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StopTrial { trial_id, .. } => Some(trial_id.clone()),
            _ => None,
        })
        .collect()
}

fn finish(actions: &[Action]) -> Option<(FinishReason, Option<BestTrial>)> {
    actions.iter().find_map(|a| match a {
        Action::Finish { reason, best, .. } => Some((*reason, best.clone())),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------
// The driver: the caller's contract, with crashes.

#[derive(Debug, Clone, Copy)]
enum Crash {
    Never,
    /// Every `every`-th step, the caller carries out the step's actions and dies before
    /// saving the state; the replacement loads the previous state and is redelivered the
    /// last `refeed` events.
    BeforeSave {
        every: usize,
        refeed: usize,
    },
    /// Every `every`-th step, the caller saves the state and dies before carrying out the
    /// actions; the replacement is redelivered the last `refeed` events.
    BeforeActing {
        every: usize,
        refeed: usize,
    },
}

/// Runs a search to its end against a world, following the contract; checks at every step
/// that no more trials hold slots, and no more train jobs run, than allowed.
fn drive(mut exp: Experiment, mut world: World, crash: Crash) -> (Experiment, World) {
    let slots = exp.spec().max_concurrent_trials as usize;
    world.act(exp.launch());
    let mut saved = json_of(&exp);
    let mut history: Vec<Observation> = Vec::new();
    for step in 1.. {
        assert!(step < 100_000, "the search does not end");
        let Some(observation) = world.next() else {
            break;
        };
        history.push(observation.clone());
        let actions = exp.observe(observation);
        match crash {
            Crash::BeforeSave { every, refeed } if step % every == 0 => {
                world.act(actions.clone());
                exp = from_json(&saved);
                let redelivered = &history[history.len().saturating_sub(refeed)..];
                let (last, earlier) = redelivered.split_last().unwrap();
                for o in earlier {
                    assert_eq!(exp.observe(o.clone()), vec![], "{o:?} seen before");
                }
                // The lost step, taken again, decides the same.
                let again = exp.observe(last.clone());
                assert_eq!(again, actions, "step {step}");
                world.act(again);
                world.act(exp.launch());
            }
            Crash::BeforeActing { every, refeed } if step % every == 0 => {
                exp = from_json(&json_of(&exp));
                for o in &history[history.len().saturating_sub(refeed)..] {
                    let before = json_of(&exp);
                    assert_eq!(exp.observe(o.clone()), vec![], "{o:?} seen before");
                    assert_eq!(json_of(&exp), before);
                }
                // What the dead caller did not do is handed out again.
                let resumed = exp.launch();
                for action in &actions {
                    assert!(resumed.contains(action), "{action:?} lost");
                }
                world.act(resumed);
            }
            _ => world.act(actions),
        }
        saved = json_of(&exp);
        assert!(exp.counts().live() as usize <= slots);
        assert!(world.running() <= slots);
    }
    (exp, world)
}

/// The best score each trial that did not fail reported to the world, and the best of them
/// (the earlier trial first among equals).
fn true_best(exp: &Experiment, world: &World) -> Option<(String, Score)> {
    let per_trial = exp
        .trials()
        .iter()
        .filter(|t| t.status != TrialStatus::Failed)
        .filter_map(|t| {
            let scores = world.reported.get(&t.id)?;
            objective::best(scores.iter().map(|s| ((), *s))).map(|(_, s)| (t.id.clone(), s))
        });
    objective::best(per_trial)
}

/// Checks, after a run without crashes, that the search ended for `reason`, every trial was
/// submitted, ended and reported once, and the best trial is the true best.
fn assert_accounted_for(exp: &Experiment, world: &World, reason: FinishReason) {
    let Phase::Finished {
        reason: ended,
        best,
    } = exp.phase()
    else {
        panic!("not finished: {:?}", exp.phase());
    };
    assert_eq!(*ended, reason);
    // Every trial final; each submitted once, ended once, and no train job left running.
    for trial in exp.trials() {
        assert!(trial.status.is_final(), "{trial:?}");
        assert!(
            world.submitted.contains_key(&trial.id),
            "{} never ran",
            trial.id
        );
        let ended = world
            .log
            .iter()
            .filter(|a| matches!(a, Action::TrialEnded { trial_id, .. } if *trial_id == trial.id))
            .count();
        assert_eq!(ended, 1, "{}", trial.id);
    }
    assert_eq!(world.submitted.len(), exp.trials().len());
    assert_eq!(world.running(), 0);
    // Trial ids are the experiment's and the indices are 0..n, in order.
    for (i, trial) in exp.trials().iter().enumerate() {
        assert_eq!(trial.index as usize, i);
        assert_eq!(trial.id, format!("{}-t{i}", exp.id()));
    }
    let truth = true_best(exp, world);
    assert_eq!(
        best.as_ref().map(|b| (b.trial_id.clone(), b.score)),
        truth,
        "the best trial"
    );
    assert_eq!(
        world
            .log
            .iter()
            .filter(|a| matches!(a, Action::Finish { .. }))
            .count(),
        1
    );
}

/// Each rung holds, for every trial of its bracket that reached it, the trial's best F1 up to
/// the first epoch at or past the milestone, and nothing else; a trial stopped at a rung was
/// below its cutoff.
fn assert_rungs_agree(exp: &Experiment) {
    let asha = exp.asha().unwrap();
    for trial in exp.trials() {
        for (b, bracket) in asha.brackets.iter().enumerate() {
            for rung in &bracket.rungs {
                let reached = trial
                    .epochs
                    .iter()
                    .position(|e| f64::from(e.epoch) >= rung.milestone);
                let expected = reached.filter(|_| b == trial.bracket).map(|p| {
                    trial.epochs[..=p]
                        .iter()
                        .map(|e| e.score.macro_f1)
                        .fold(f64::MIN, f64::max)
                });
                assert_eq!(
                    rung.recorded.get(&trial.id).copied(),
                    expected,
                    "{} at rung {}",
                    trial.id,
                    rung.milestone
                );
            }
        }
        if let Some(StopReason::Rung { value, cutoff, .. }) = &trial.stop_reason {
            assert!(value < cutoff, "{trial:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Full runs

#[test]
fn without_a_scheduler_every_trial_runs_to_max_epochs_within_the_slots() {
    let exp = Experiment::new("opt1", spec(Scheduler::None, 8, 3, 5)).unwrap();
    let (exp, world) = drive(exp, World::new(5, BTreeMap::new()), Crash::Never);
    assert_accounted_for(&exp, &world, FinishReason::AllTrialsDone);
    assert_eq!(exp.trials().len(), 8);
    assert_eq!(world.most_running, 3, "the slots were used");
    for trial in exp.trials() {
        assert_eq!(trial.status, TrialStatus::Completed);
        assert_eq!(trial.epochs_run(), 5);
        assert_eq!(trial.epochs.len(), 5);
        assert_eq!(world.submitted[&trial.id], 1, "started once");
    }
    assert!(exp.asha().is_none());
    assert!(world.cancels.is_empty());
}

#[test]
fn asha_stops_trials_at_rungs_and_finds_the_best_of_those_run() {
    let exp = Experiment::new("opt2", spec(asha(9), 12, 3, 9)).unwrap();
    let (exp, world) = drive(exp, World::new(9, BTreeMap::new()), Crash::Never);
    assert_accounted_for(&exp, &world, FinishReason::AllTrialsDone);
    assert_rungs_agree(&exp);
    let counts = exp.counts();
    assert_eq!(exp.trials().len(), 12);
    assert!(counts.stopped > 0 && counts.completed > 0, "{counts:?}");
    assert_eq!(counts.stopped + counts.completed, 12);
    assert!(world.most_running <= 3);
    for trial in exp.trials() {
        assert_eq!(world.submitted[&trial.id], 1, "started once");
        match trial.status {
            // Stopped right at a rung (1 or 3), never later.
            TrialStatus::Stopped => {
                assert!([1, 3].contains(&trial.epochs_run()), "{trial:?}");
                assert_eq!(world.cancels[&trial.id], 1);
            }
            TrialStatus::Completed => assert_eq!(trial.epochs_run(), 9),
            other => panic!("{other:?}"),
        }
    }
    let trial_epochs: u32 = exp.trials().iter().map(Trial::epochs_run).sum();
    assert!(trial_epochs < 12 * 9, "{trial_epochs}");
}

#[test]
fn a_grid_smaller_than_the_budget_tries_each_point_once() {
    let mut s = spec(Scheduler::None, 5, 2, 2);
    s.sampler = SamplerKind::Grid;
    s.space =
        serde_json::from_value(json!({"learning_rate": {"choice": [1e-3, 1e-2, 3e-2]}})).unwrap();
    let exp = Experiment::new("grid", s).unwrap();
    let (exp, world) = drive(exp, World::new(2, BTreeMap::new()), Crash::Never);
    assert_accounted_for(&exp, &world, FinishReason::AllTrialsDone);
    let tried: Vec<f64> = exp
        .trials()
        .iter()
        .map(|t| t.configuration["learning_rate"].as_f64().unwrap())
        .collect();
    assert_eq!(tried, [1e-3, 1e-2, 3e-2]);
}

// ---------------------------------------------------------------------------------------
// Crashes

#[test]
fn a_search_crashed_and_resumed_at_any_step_ends_in_the_same_state() {
    let scenarios: Vec<(ExperimentSpec, BTreeMap<u32, u32>)> = vec![
        (spec(asha(9), 10, 3, 9), BTreeMap::new()),
        // Failures (replaced, then too many) and a goal.
        (
            ExperimentSpec {
                max_failed_trials: 2,
                ..spec(asha(9), 10, 3, 9)
            },
            BTreeMap::from([(1, 1), (4, 1), (6, 3)]),
        ),
        (
            ExperimentSpec {
                max_failed_trials: 1,
                ..spec(asha(9), 10, 3, 9)
            },
            BTreeMap::from([(2, 1), (5, 1)]),
        ),
        (
            ExperimentSpec {
                goal: Some(0.7),
                ..spec(Scheduler::None, 10, 4, 6)
            },
            BTreeMap::new(),
        ),
        (
            ExperimentSpec {
                goal: Some(0.64),
                max_failed_trials: 3,
                ..spec(asha(9), 20, 4, 9)
            },
            BTreeMap::from([(0, 1), (3, 2)]),
        ),
    ];
    for (n, (spec, failing)) in scenarios.into_iter().enumerate() {
        let max_epochs = spec.max_epochs;
        let world = World::new(max_epochs, failing);
        let exp = Experiment::new("crashy", spec).unwrap();
        let (whole, whole_world) = drive(exp.clone(), world.clone(), Crash::Never);
        assert!(whole.is_finished());
        let expected = json_of(&whole);
        for every in [1, 2, 3, 5, 7] {
            for refeed in [1, 2, 3] {
                for crash in [
                    Crash::BeforeSave { every, refeed },
                    Crash::BeforeActing { every, refeed },
                ] {
                    let (resumed, resumed_world) = drive(exp.clone(), world.clone(), crash);
                    assert_eq!(json_of(&resumed), expected, "scenario {n}, {crash:?}");
                    // No trial submitted twice, none left running, no event lost.
                    assert_eq!(
                        resumed_world.submitted.keys().collect::<Vec<_>>(),
                        whole_world.submitted.keys().collect::<Vec<_>>()
                    );
                    assert_eq!(resumed_world.running(), 0);
                    assert_eq!(resumed_world.published, whole_world.published, "{crash:?}");
                }
            }
        }
    }
}

#[test]
fn a_loaded_state_hands_out_the_undone_starts_stops_and_finish_again() {
    let mut exp = Experiment::new("x", spec(asha(9), 4, 2, 9)).unwrap();
    let first = exp.launch();
    assert_eq!(starts(&first), ["x-t0", "x-t1"]);
    // Saved, then the caller died before submitting: the replacement is told again, with the
    // same ids and configurations, and nothing new is decided.
    let mut resumed = from_json(&json_of(&exp));
    let state = json_of(&resumed);
    let again = resumed.launch();
    assert_eq!(
        json_of(&resumed),
        state,
        "launch changes nothing the second time"
    );
    for action in first
        .iter()
        .filter(|a| matches!(a, Action::StartTrial { .. }))
    {
        assert!(again.contains(action), "{action:?}");
    }
    assert_eq!(resumed.launch(), again);
    // A stop decided and saved is handed out until its train job is confirmed ended.
    resumed.observe(epoch("x-t0", 1, 0.5));
    let actions = resumed.observe(epoch("x-t1", 1, 0.1));
    assert_eq!(stops(&actions), ["x-t1"]);
    let mut reloaded = from_json(&json_of(&resumed));
    assert_eq!(stops(&reloaded.launch()), ["x-t1"]);
    assert!(
        starts(&reloaded.launch()).is_empty(),
        "x-t0 runs, x-t1 holds its slot"
    );
    let actions = reloaded.observe(stopped("x-t1"));
    assert_eq!(starts(&actions), ["x-t2"]);
    assert!(stops(&reloaded.launch()).is_empty());
    assert_eq!(starts(&reloaded.launch()), ["x-t2"]);
    // Finish is handed out again once over.
    reloaded.observe(Observation::ExperimentCancelled);
    reloaded.observe(stopped("x-t0"));
    let actions = reloaded.observe(stopped("x-t2"));
    assert_eq!(finish(&actions).unwrap().0, FinishReason::Cancelled);
    let mut finished = from_json(&json_of(&reloaded));
    assert_eq!(
        finish(&finished.launch()).unwrap().0,
        FinishReason::Cancelled
    );
}

#[test]
fn duplicate_stale_and_unknown_observations_change_nothing() {
    let mut exp = Experiment::new("x", spec(asha(9), 6, 3, 9)).unwrap();
    exp.launch();
    for o in [
        Observation::TrialStarted {
            trial_id: "x-t0".into(),
            instance: Some("a".into()),
        },
        epoch("x-t0", 1, 0.5),
        epoch("x-t0", 2, 0.6),
        epoch("x-t1", 1, 0.1), // stopped at rung 1
        stopped("x-t1"),
        epoch("x-t2", 1, 0.7),
        Observation::TrialCompleted {
            trial_id: "x-t2".into(),
            score: Score {
                macro_f1: 0.7,
                validation_loss: 0.3,
            },
        },
    ] {
        assert!(!exp.observe(o).is_empty());
    }
    assert_eq!(exp.trial("x-t1").unwrap().status, TrialStatus::Stopped);
    assert_eq!(exp.trial("x-t2").unwrap().status, TrialStatus::Completed);
    let state = json_of(&exp);
    let noops = [
        // Redelivered.
        Observation::TrialStarted {
            trial_id: "x-t0".into(),
            instance: Some("a".into()),
        },
        epoch("x-t0", 2, 0.6),
        // Older than one seen, even with a better value.
        epoch("x-t0", 1, 0.9),
        // Out of range.
        epoch("x-t0", 0, 0.9),
        epoch("x-t0", 10, 0.9),
        // After the trial ended: a stop confirmed twice, a completion or a failure after a
        // stop, results of a completed trial.
        stopped("x-t1"),
        Observation::TrialCompleted {
            trial_id: "x-t1".into(),
            score: Score {
                macro_f1: 0.9,
                validation_loss: 0.1,
            },
        },
        Observation::TrialFailed {
            trial_id: "x-t1".into(),
            error: "late".into(),
        },
        epoch("x-t1", 2, 0.9),
        epoch("x-t2", 2, 0.9),
        Observation::TrialCompleted {
            trial_id: "x-t2".into(),
            score: Score {
                macro_f1: 0.8,
                validation_loss: 0.1,
            },
        },
        stopped("x-t2"),
        // Unknown trials: not started yet, another search's, padded, garbage.
        epoch("x-t5", 1, 0.9),
        epoch("y-t0", 1, 0.9),
        epoch("x-t00", 1, 0.9),
        epoch("x", 1, 0.9),
        stopped("x-t-1"),
    ];
    for o in noops {
        assert_eq!(exp.observe(o.clone()), vec![], "{o:?}");
        assert_eq!(json_of(&exp), state, "{o:?}");
    }
    // A failure counts once.
    let actions = exp.observe(Observation::TrialFailed {
        trial_id: "x-t0".into(),
        error: "oom".into(),
    });
    assert!(!actions.is_empty());
    let state = json_of(&exp);
    let again = exp.observe(Observation::TrialFailed {
        trial_id: "x-t0".into(),
        error: "oom".into(),
    });
    assert_eq!(again, vec![]);
    assert_eq!(json_of(&exp), state);
    assert_eq!(exp.counts().failed, 1);
    // Cancelling twice.
    exp.observe(Observation::ExperimentCancelled);
    let state = json_of(&exp);
    assert_eq!(exp.observe(Observation::ExperimentCancelled), vec![]);
    assert_eq!(json_of(&exp), state);
}

#[test]
fn results_after_a_stop_decision_are_not_taken() {
    let mut exp = Experiment::new("x", spec(asha(9), 6, 2, 9)).unwrap();
    exp.launch();
    exp.observe(epoch("x-t0", 1, 0.5));
    let actions = exp.observe(epoch("x-t1", 1, 0.2));
    assert_eq!(stops(&actions), ["x-t1"]);
    let rungs = json!(exp.asha());
    // The trainer finished another epoch before the cancel reached it: not taken.
    assert_eq!(exp.observe(epoch("x-t1", 2, 0.9)), vec![]);
    assert_eq!(json!(exp.asha()), rungs);
    // It completed before the cancel: that ends the stop (stopped, not completed) and frees
    // its slot; its final score is not taken.
    let actions = exp.observe(Observation::TrialCompleted {
        trial_id: "x-t1".into(),
        score: Score {
            macro_f1: 0.9,
            validation_loss: 0.1,
        },
    });
    assert_eq!(starts(&actions), ["x-t2"]);
    let t1 = exp.trial("x-t1").unwrap();
    assert_eq!(t1.status, TrialStatus::Stopped);
    assert_eq!(t1.best.unwrap().macro_f1, 0.2);
    assert_eq!(t1.epochs_run(), 1);
    // A job that fails while being stopped is stopped, not a failure.
    exp.observe(epoch("x-t2", 1, 0.1));
    exp.observe(Observation::TrialFailed {
        trial_id: "x-t2".into(),
        error: "cancelled".into(),
    });
    assert_eq!(exp.trial("x-t2").unwrap().status, TrialStatus::Stopped);
    assert_eq!(exp.counts().failed, 0);
    assert_eq!(exp.phase(), &Phase::Searching);
}

#[test]
fn scores_that_are_not_numbers_keep_the_state_readable() {
    let mut exp = Experiment::new("x", spec(Scheduler::None, 2, 2, 3)).unwrap();
    exp.launch();
    exp.observe(Observation::EpochEnded {
        trial_id: "x-t0".into(),
        epoch: 1,
        macro_f1: f64::NAN,
        validation_loss: f64::INFINITY,
    });
    exp.observe(Observation::EpochEnded {
        trial_id: "x-t1".into(),
        epoch: 1,
        macro_f1: 0.3,
        validation_loss: f64::NAN,
    });
    let reloaded = from_json(&json_of(&exp));
    assert_eq!(reloaded, exp);
    let t0 = exp.trial("x-t0").unwrap().best.unwrap();
    assert_eq!((t0.macro_f1, t0.validation_loss), (0.0, f64::MAX));
    assert_eq!(exp.best().unwrap().trial_id, "x-t1");
}

// ---------------------------------------------------------------------------------------
// Failures, goal, cancel

#[test]
fn failed_trials_below_the_limit_are_replaced() {
    let spec = ExperimentSpec {
        max_failed_trials: 2,
        ..spec(Scheduler::None, 6, 2, 3)
    };
    let exp = Experiment::new("f", spec).unwrap();
    let failing = BTreeMap::from([(1, 2), (3, 1)]);
    let (exp, world) = drive(exp, World::new(3, failing), Crash::Never);
    assert_accounted_for(&exp, &world, FinishReason::AllTrialsDone);
    let counts = exp.counts();
    assert_eq!((counts.failed, counts.completed), (2, 6));
    assert_eq!(
        exp.trials().len(),
        8,
        "two more configurations in their place"
    );
    let failed: Vec<u32> = exp
        .trials()
        .iter()
        .filter(|t| t.status == TrialStatus::Failed)
        .map(|t| t.index)
        .collect();
    assert_eq!(failed, [1, 3]);
    assert_eq!(
        exp.trials()[1].error.as_deref(),
        Some("diverged"),
        "the failure is kept"
    );
    // Failed trials are last on the leaderboard.
    let board = exp.leaderboard();
    assert!(board[6..].iter().all(|e| e.status == TrialStatus::Failed));
}

#[test]
fn failures_past_the_limit_end_the_search_and_stop_the_running_trials() {
    let mut exp = Experiment::new(
        "f",
        ExperimentSpec {
            max_failed_trials: 1,
            ..spec(Scheduler::None, 10, 3, 5)
        },
    )
    .unwrap();
    exp.launch();
    for t in ["f-t0", "f-t1", "f-t2"] {
        exp.observe(epoch(t, 1, 0.4));
    }
    let fail = |t: &str| Observation::TrialFailed {
        trial_id: t.into(),
        error: "oom".into(),
    };
    // The first failure is allowed: its slot is refilled.
    let actions = exp.observe(fail("f-t0"));
    assert_eq!(starts(&actions), ["f-t3"]);
    assert!(stops(&actions).is_empty());
    // The second is one too many: every running or pending trial is stopped.
    let actions = exp.observe(fail("f-t1"));
    assert_eq!(stops(&actions), ["f-t2", "f-t3"]);
    assert!(starts(&actions).is_empty());
    assert!(actions.iter().all(|a| match a {
        Action::StopTrial { reason, .. } => {
            *reason
                == StopReason::SearchEnded {
                    reason: FinishReason::TooManyFailures,
                }
        }
        _ => true,
    }));
    assert_eq!(
        exp.phase(),
        &Phase::Ending {
            reason: FinishReason::TooManyFailures
        }
    );
    assert_eq!(finish(&actions), None, "not before the trials have ended");
    // A third failure (a stopping trial's) is no failure; nothing starts.
    let actions = exp.observe(fail("f-t2"));
    assert!(starts(&actions).is_empty());
    assert_eq!(exp.counts().failed, 2);
    let actions = exp.observe(stopped("f-t3"));
    let (reason, best) = finish(&actions).unwrap();
    assert_eq!(reason, FinishReason::TooManyFailures);
    assert_eq!(
        best.unwrap().trial_id,
        "f-t2",
        "failed trials are not the best"
    );
    assert!(exp.is_finished());
    assert_eq!(exp.trials().len(), 4);
}

#[test]
fn reaching_the_goal_ends_the_search_early_and_stops_the_others() {
    let goal = 0.7;
    let exp = Experiment::new(
        "g",
        ExperimentSpec {
            goal: Some(goal),
            ..spec(Scheduler::None, 30, 3, 8)
        },
    )
    .unwrap();
    let (exp, world) = drive(exp, World::new(8, BTreeMap::new()), Crash::Never);
    assert_accounted_for(&exp, &world, FinishReason::GoalReached);
    assert!(exp.trials().len() < 30, "ended early");
    let Phase::Finished { best, .. } = exp.phase() else {
        unreachable!()
    };
    let best = best.clone().unwrap();
    assert!(best.score.macro_f1 >= goal);
    // Exactly one trial reached the goal (the search ended at once), and the trials still
    // running then were cancelled.
    let reached: Vec<&Trial> = exp
        .trials()
        .iter()
        .filter(|t| t.best.is_some_and(|b| b.reaches(goal)))
        .collect();
    assert_eq!(reached.len(), 1);
    assert_eq!(reached[0].id, best.trial_id);
    // It reached the goal at an epoch result, before its end, and was stopped there too.
    assert!(reached[0].epochs_run() < 8, "{:?}", reached[0]);
    assert_eq!(reached[0].status, TrialStatus::Cancelled);
    let stop_log: Vec<&Action> = world
        .log
        .iter()
        .filter(|a| matches!(a, Action::StopTrial { .. }))
        .collect();
    assert!(!stop_log.is_empty());
    for action in stop_log {
        let Action::StopTrial {
            trial_id, reason, ..
        } = action
        else {
            unreachable!()
        };
        assert_eq!(
            *reason,
            StopReason::SearchEnded {
                reason: FinishReason::GoalReached
            }
        );
        assert_eq!(exp.trial(trial_id).unwrap().status, TrialStatus::Cancelled);
    }
    // Nothing started after the goal was reached.
    let goal_at = world
        .log
        .iter()
        .position(|a| matches!(a, Action::StopTrial { .. }))
        .unwrap();
    assert!(starts(&world.log[goal_at..]).is_empty());
}

#[test]
fn cancelling_stops_the_running_trials_and_starts_nothing() {
    let mut exp = Experiment::new("c", spec(Scheduler::None, 10, 3, 5)).unwrap();
    let mut world = World::new(5, BTreeMap::new());
    world.act(exp.launch());
    for _ in 0..10 {
        let o = world.next().unwrap();
        world.act(exp.observe(o));
    }
    let live: Vec<String> = exp
        .trials()
        .iter()
        .filter(|t| t.status.holds_slot())
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(live.len(), 3);
    let actions = exp.observe(Observation::ExperimentCancelled);
    assert_eq!(stops(&actions), live);
    assert!(starts(&actions).is_empty());
    world.act(actions);
    let n = exp.trials().len();
    while let Some(o) = world.next() {
        let actions = exp.observe(o);
        assert!(starts(&actions).is_empty());
        world.act(actions);
    }
    assert_eq!(exp.trials().len(), n, "nothing new");
    assert_accounted_for(&exp, &world, FinishReason::Cancelled);
    for id in live {
        assert_eq!(exp.trial(&id).unwrap().status, TrialStatus::Cancelled);
    }
}

// ---------------------------------------------------------------------------------------
// ASHA, by hand

#[test]
fn asha_stops_below_the_cutoff_and_promotes_above_it_by_best_so_far() {
    let mut exp = Experiment::new("a", spec(asha(9), 6, 4, 9)).unwrap();
    assert_eq!(starts(&exp.launch()), ["a-t0", "a-t1", "a-t2", "a-t3"]);
    let promoted = |actions: &[Action]| -> Vec<(String, f64, f64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::TrialPromoted {
                    trial_id,
                    milestone,
                    value,
                    ..
                } => Some((trial_id.clone(), *milestone, *value)),
                _ => None,
            })
            .collect()
    };
    let stop_reason = |actions: &[Action]| -> Option<(String, f64, f64, f64)> {
        actions.iter().find_map(|a| match a {
            Action::StopTrial {
                trial_id,
                reason:
                    StopReason::Rung {
                        milestone,
                        value,
                        cutoff,
                    },
                ..
            } => Some((trial_id.clone(), *milestone, *value, *cutoff)),
            _ => None,
        })
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;

    // Rung 1 is empty: no cutoff.
    let a = exp.observe(epoch("a-t0", 1, 0.5));
    assert_eq!(promoted(&a), [("a-t0".into(), 1.0, 0.5)]);
    // Rung 1 holds [0.5]: the cutoff is 0.5.
    let a = exp.observe(epoch("a-t1", 1, 0.3));
    assert_eq!(stop_reason(&a), Some(("a-t1".into(), 1.0, 0.3, 0.5)));
    assert!(
        starts(&a).is_empty(),
        "its slot is held until it has stopped"
    );
    let a = exp.observe(stopped("a-t1"));
    assert_eq!(starts(&a), ["a-t4"]);
    // [0.3, 0.5]: 66.7th percentile = 0.3 + 0.2 · 2/3 ≈ 0.433.
    let a = exp.observe(epoch("a-t2", 1, 0.6));
    assert_eq!(promoted(&a), [("a-t2".into(), 1.0, 0.6)]);
    // [0.3, 0.5, 0.6]: 0.5 + 0.1 · 1/3 ≈ 0.533.
    let a = exp.observe(epoch("a-t3", 1, 0.45));
    let (id, milestone, value, cutoff) = stop_reason(&a).unwrap();
    assert_eq!((id.as_str(), milestone, value), ("a-t3", 1.0, 0.45));
    assert!(close(cutoff, 0.5 + 0.1 / 3.0), "{cutoff}");
    // a-t0 dips after epoch 1: rung 3 (empty) records its best so far, 0.5, not its 0.4.
    assert!(promoted(&exp.observe(epoch("a-t0", 2, 0.2))).is_empty());
    let a = exp.observe(epoch("a-t0", 3, 0.4));
    assert_eq!(promoted(&a), [("a-t0".into(), 3.0, 0.5)]);
    // a-t2 peaks at 0.7 in epoch 2 and falls to 0.1: judged 0.7 against [0.5], promoted. By
    // its last epoch (Ray's judge) it would have been stopped.
    exp.observe(epoch("a-t2", 2, 0.7));
    let a = exp.observe(epoch("a-t2", 3, 0.1));
    assert_eq!(promoted(&a), [("a-t2".into(), 3.0, 0.7)]);
    assert!(stops(&a).is_empty());
    // [0.3, 0.45, 0.5, 0.6]: the 66.7th percentile is exactly 0.5.
    let a = exp.observe(epoch("a-t4", 1, 0.2));
    let (id, _, _, cutoff) = stop_reason(&a).unwrap();
    assert_eq!(id, "a-t4");
    assert!(close(cutoff, 0.5), "{cutoff}");

    let rungs = &exp.asha().unwrap().brackets[0].rungs;
    assert_eq!(
        rungs.iter().map(|r| r.milestone).collect::<Vec<_>>(),
        [9.0, 3.0, 1.0]
    );
    let values = |r: usize| -> Vec<(&str, f64)> {
        rungs[r]
            .recorded
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    };
    assert_eq!(
        values(2),
        [
            ("a-t0", 0.5),
            ("a-t1", 0.3),
            ("a-t2", 0.6),
            ("a-t3", 0.45),
            ("a-t4", 0.2)
        ]
    );
    assert_eq!(values(1), [("a-t0", 0.5), ("a-t2", 0.7)]);
    assert!(values(0).is_empty());
    assert_rungs_agree(&exp);
    // The promoted keep running; the stopped wait for their train jobs to end.
    let status = |t: &str| exp.trial(t).unwrap().status;
    assert_eq!(status("a-t0"), TrialStatus::Running);
    assert_eq!(status("a-t2"), TrialStatus::Running);
    assert_eq!(status("a-t1"), TrialStatus::Stopped);
    assert_eq!(status("a-t3"), TrialStatus::Stopping);
    assert_eq!(status("a-t4"), TrialStatus::Stopping);
    // The last epoch is not a stop: the trial completes on its own.
    for e in 4..=9 {
        let a = exp.observe(epoch("a-t0", e, 0.5));
        assert!(stops(&a).is_empty(), "epoch {e}");
    }
    assert_eq!(rungs_of(&exp, 0)["a-t0"], 0.5);
}

fn rungs_of(exp: &Experiment, rung: usize) -> BTreeMap<String, f64> {
    exp.asha().unwrap().brackets[0].rungs[rung].recorded.clone()
}

// ---------------------------------------------------------------------------------------
// Set-up errors and the leaderboard

#[test]
fn an_experiment_id_must_make_valid_trial_ids() {
    let good = spec(Scheduler::None, 100, 2, 3);
    Experiment::new("a".repeat(60), good.clone()).unwrap(); // `aaa…-t99`: 64 characters
    for id in ["", "has space", "dot.ted", &"a".repeat(61)] {
        let err = Experiment::new(id, good.clone()).unwrap_err();
        assert!(
            matches!(&err, SearchError::ExperimentId { id: got, .. } if got == id),
            "{id}: {err:?}"
        );
    }
    // Replaced failures make higher indices: 100 + 1 trials → `-t100`, 65 characters.
    let err = Experiment::new(
        "a".repeat(60),
        ExperimentSpec {
            max_failed_trials: 1,
            ..good.clone()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("-t100"), "{err}");
    // The spec is checked too.
    assert_eq!(
        Experiment::new("ok", spec(Scheduler::None, 0, 2, 3)).unwrap_err(),
        SearchError::NoTrials
    );
}

#[test]
fn the_leaderboard_ranks_trials_and_changes_are_published_with_a_version() {
    let mut exp = Experiment::new("l", spec(Scheduler::None, 3, 3, 5)).unwrap();
    let first = exp.launch();
    let versions = |actions: &[Action]| -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::LeaderboardChanged { version, .. } => Some(*version),
                _ => None,
            })
            .collect()
    };
    assert_eq!(versions(&first), [1]);
    exp.observe(epoch("l-t0", 1, 0.4));
    exp.observe(epoch("l-t1", 1, 0.6));
    let a = exp.observe(Observation::EpochEnded {
        trial_id: "l-t2".into(),
        epoch: 1,
        macro_f1: 0.6,
        validation_loss: 0.2,
    });
    assert_eq!(versions(&a), [4]);
    let Some(Action::LeaderboardChanged { entries, .. }) = a.last() else {
        panic!("{a:?}");
    };
    assert_eq!(*entries, exp.leaderboard());
    // Equal F1: the lower loss (0.2 against 0.4) first.
    let order: Vec<&str> = entries.iter().map(|e| e.trial_id.as_str()).collect();
    assert_eq!(order, ["l-t2", "l-t1", "l-t0"]);
    assert_eq!(entries[0].epochs_run, 1);
    assert_eq!(entries[0].status, TrialStatus::Running);
    // A change that leaves the board as it was publishes nothing.
    let a = exp.observe(Observation::TrialStarted {
        trial_id: "l-t0".into(),
        instance: Some("a".into()),
    });
    assert_eq!(a, vec![]);
    assert_eq!(exp.trial("l-t0").unwrap().instances, ["a"]);
}
