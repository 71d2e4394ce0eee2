//! Asynchronous successive halving (ASHA), with the semantics of Ray Tune's
//! `AsyncHyperBandScheduler`:
//!
//! - bracket `s` has rungs at `grace_period · rf^(k + s)` epochs, for every `k ≥ 0` whose
//!   milestone is at most `max_t`;
//! - when a trial first reaches a rung (its first result at or past the milestone), its value
//!   is compared with the values recorded at that rung so far: it stops when it is below their
//!   `(1 − 1/rf)` quantile (linear interpolation, numpy's default), i.e. it continues only in
//!   the top `1/rf`; on an empty rung there is no cutoff. Its value is recorded either way;
//! - nothing waits for a rung to fill: each decision uses what is recorded when it is taken;
//! - a trial stops at `max_t`.
//!
//! One addition is a choice ([`Judge`]): the value judged at a rung is the last epoch's, as in
//! Ray (the default, which reached random search's best more often on the news task), or the
//! trial's best so far, so that a trial whose score dipped after its peak is judged by its peak.
//!
//! The whole state is serialisable: a coordinator stores it after every decision, and one that
//! replaces a crashed coordinator continues from it with the same rung records.

use std::collections::BTreeMap;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::SearchError;

/// The scheduler's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AshaConfig {
    /// Epochs a trial may run at most.
    pub max_t: u32,
    /// Epochs before the first rung.
    pub grace_period: u32,
    /// Only the top `1 / reduction_factor` of a rung continue (> 1).
    pub reduction_factor: f64,
    /// Brackets (1: plain ASHA; more: Hyperband-style brackets with later first rungs).
    pub brackets: u32,
    /// Which value of a trial is judged at a rung.
    pub judge: Judge,
}

impl Default for AshaConfig {
    fn default() -> Self {
        Self {
            max_t: 30,
            grace_period: 5,
            reduction_factor: 3.0,
            brackets: 1,
            judge: Judge::Last,
        }
    }
}

/// Which value of a trial a rung judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Judge {
    /// The value reported at the epoch that reached the rung (Ray, Optuna).
    Last,
    /// The best value reported so far.
    BestSoFar,
}

/// What a trial does after a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Keeps training.
    Continue,
    /// Stops now.
    Stop,
}

/// One rung: its milestone and the values recorded there, by trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rung {
    /// Epochs a trial has run when it reaches the rung.
    pub milestone: f64,
    /// Values recorded at the rung, by trial id.
    pub recorded: BTreeMap<String, f64>,
}

/// A bracket: rungs from the highest milestone to the lowest (as Ray keeps them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bracket {
    /// The rungs, highest milestone first.
    pub rungs: Vec<Rung>,
}

/// The scheduler and its whole state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asha {
    /// Its settings.
    pub config: AshaConfig,
    /// Its brackets.
    pub brackets: Vec<Bracket>,
    /// The best value each trial reported so far.
    pub best: BTreeMap<String, f64>,
}

impl Asha {
    /// A scheduler with empty rungs.
    pub fn new(config: AshaConfig) -> Result<Self, SearchError> {
        let bad = |m: String| Err(SearchError::Scheduler(m));
        if config.grace_period == 0 {
            return bad("grace_period must be at least 1 epoch".into());
        }
        if config.max_t < config.grace_period {
            return bad(format!(
                "max_t ({}) must be at least grace_period ({})",
                config.max_t, config.grace_period
            ));
        }
        if !(config.reduction_factor.is_finite() && config.reduction_factor > 1.0) {
            return bad(format!(
                "reduction_factor must be a number above 1, got {}",
                config.reduction_factor
            ));
        }
        if config.brackets == 0 {
            return bad("brackets must be at least 1".into());
        }
        let rf = config.reduction_factor;
        let grace = f64::from(config.grace_period);
        let max_t = f64::from(config.max_t);
        // Rungs of bracket 0: every k with grace · rf^k ≤ max_t (a tolerance so that 3^2 = 9
        // counts when max_t is 9).
        let rungs0 = ((max_t / grace).ln() / rf.ln() + 1e-9).floor() as i64 + 1;
        let brackets = (0..i64::from(config.brackets))
            .map(|s| Bracket {
                rungs: (0..(rungs0 - s).max(0))
                    .rev()
                    .map(|k| Rung {
                        milestone: grace * rf.powi((k + s) as i32),
                        recorded: BTreeMap::new(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Self {
            config,
            brackets,
            best: BTreeMap::new(),
        })
    }

    /// The bracket of trial `index` of a search seeded `seed`: drawn as Ray draws it (a softmax
    /// over the brackets' rung counts, so brackets with more rungs are likelier), but from the
    /// trial's index, so that it is the same whenever it is asked.
    pub fn bracket_of(&self, seed: u64, index: u64) -> usize {
        if self.brackets.len() <= 1 {
            return 0;
        }
        let sizes: Vec<f64> = self.brackets.iter().map(|b| b.rungs.len() as f64).collect();
        let max = sizes.iter().copied().fold(f64::MIN, f64::max);
        let weights: Vec<f64> = sizes.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut draw = rng.random::<f64>() * total;
        for (i, w) in weights.iter().enumerate() {
            if draw < *w {
                return i;
            }
            draw -= w;
        }
        weights.len() - 1
    }

    /// Takes trial `trial`'s result after `t` epochs (value: higher is better) in its bracket,
    /// records it where it reaches a rung, and says whether the trial goes on.
    pub fn on_result(&mut self, trial: &str, bracket: usize, t: u32, value: f64) -> Decision {
        let best = self
            .best
            .entry(trial.to_string())
            .and_modify(|b| *b = b.max(value))
            .or_insert(value);
        let judged = match self.config.judge {
            Judge::Last => value,
            Judge::BestSoFar => *best,
        };
        let mut decision = if t >= self.config.max_t {
            Decision::Stop
        } else {
            Decision::Continue
        };
        let rf = self.config.reduction_factor;
        let Some(bracket) = self.brackets.get_mut(bracket) else {
            return decision;
        };
        let t = f64::from(t);
        for rung in &mut bracket.rungs {
            let recorded_here = rung.recorded.contains_key(trial);
            if t >= rung.milestone && recorded_here {
                // Already judged at this rung (the highest it reached): nothing new.
                break;
            }
            if t < rung.milestone || recorded_here {
                continue;
            }
            if let Some(cutoff) = cutoff(&rung.recorded, rf)
                && judged < cutoff
            {
                decision = Decision::Stop;
            }
            if judged.is_finite() {
                rung.recorded.insert(trial.to_string(), judged);
            }
            break;
        }
        decision
    }

    /// Forgets a trial's best value (a trial that failed and is started again from scratch).
    pub fn forget(&mut self, trial: &str) {
        self.best.remove(trial);
    }
}

/// The `(1 − 1/rf)` quantile of the recorded values (linear interpolation); none when empty.
pub fn cutoff(recorded: &BTreeMap<String, f64>, rf: f64) -> Option<f64> {
    let mut values: Vec<f64> = recorded.values().copied().filter(|v| !v.is_nan()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let q = 1.0 - 1.0 / rf;
    let position = q * (values.len() - 1) as f64;
    let lower = position.floor() as usize;
    let upper = position.ceil() as usize;
    let fraction = position - lower as f64;
    Some(values[lower] + (values[upper] - values[lower]) * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asha(max_t: u32, grace: u32, rf: f64, judge: Judge) -> Asha {
        Asha::new(AshaConfig {
            max_t,
            grace_period: grace,
            reduction_factor: rf,
            brackets: 1,
            judge,
        })
        .unwrap()
    }

    fn milestones(a: &Asha, bracket: usize) -> Vec<f64> {
        a.brackets[bracket]
            .rungs
            .iter()
            .map(|r| r.milestone)
            .collect()
    }

    #[test]
    fn rungs_sit_at_grace_times_powers_of_rf() {
        assert_eq!(
            milestones(&asha(9, 1, 3.0, Judge::Last), 0),
            [9.0, 3.0, 1.0]
        );
        assert_eq!(
            milestones(&asha(30, 3, 3.0, Judge::Last), 0),
            [27.0, 9.0, 3.0]
        );
        assert_eq!(
            milestones(&asha(10, 1, 2.0, Judge::Last), 0),
            [8.0, 4.0, 2.0, 1.0]
        );
        // max_t = grace: a single rung.
        assert_eq!(milestones(&asha(5, 5, 4.0, Judge::Last), 0), [5.0]);
        // A fractional factor.
        assert_eq!(
            milestones(&asha(7, 2, 1.5, Judge::Last), 0),
            [6.75, 4.5, 3.0, 2.0]
        );
        // Bracket s starts s rungs later.
        let a = Asha::new(AshaConfig {
            max_t: 27,
            grace_period: 1,
            reduction_factor: 3.0,
            brackets: 3,
            judge: Judge::Last,
        })
        .unwrap();
        assert_eq!(milestones(&a, 0), [27.0, 9.0, 3.0, 1.0]);
        assert_eq!(milestones(&a, 1), [27.0, 9.0, 3.0]);
        assert_eq!(milestones(&a, 2), [27.0, 9.0]);
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        for (max_t, grace, rf, brackets) in [
            (10, 0, 3.0, 1),
            (2, 3, 3.0, 1),
            (10, 1, 1.0, 1),
            (10, 1, 0.5, 1),
            (10, 1, f64::NAN, 1),
            (10, 1, 3.0, 0),
        ] {
            let config = AshaConfig {
                max_t,
                grace_period: grace,
                reduction_factor: rf,
                brackets,
                judge: Judge::Last,
            };
            assert!(
                matches!(Asha::new(config), Err(SearchError::Scheduler(_))),
                "{max_t} {grace} {rf} {brackets}"
            );
        }
    }

    #[test]
    fn the_cutoff_is_numpys_linear_percentile() {
        let rung = |values: &[f64]| -> BTreeMap<String, f64> {
            values
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("t{i}"), *v))
                .collect()
        };
        assert_eq!(cutoff(&rung(&[]), 3.0), None);
        assert_eq!(cutoff(&rung(&[0.4]), 3.0), Some(0.4));
        // np.percentile([0.1, 0.2, 0.3, 0.4], 66.666...) = 0.3
        let c = cutoff(&rung(&[0.4, 0.1, 0.3, 0.2]), 3.0).unwrap();
        assert!((c - 0.3).abs() < 1e-12, "{c}");
        // np.percentile([1, 2], 50) = 1.5
        assert_eq!(cutoff(&rung(&[2.0, 1.0]), 2.0), Some(1.5));
        // np.percentile([1, 2, 3, 4, 5], 75) = 4
        assert_eq!(cutoff(&rung(&[1.0, 2.0, 3.0, 4.0, 5.0]), 4.0), Some(4.0));
    }

    #[test]
    fn the_first_trial_at_a_rung_always_continues_and_later_ones_need_the_top_third() {
        let mut a = asha(9, 1, 3.0, Judge::Last);
        // Empty rung: no cutoff.
        assert_eq!(a.on_result("a", 0, 1, 0.2), Decision::Continue);
        // Rung 1 holds [0.2]: the cutoff is 0.2, and a tie with it continues (Ray stops only
        // below it).
        assert_eq!(a.on_result("c", 0, 1, 0.2), Decision::Continue);
        // [0.2, 0.2]: 0.1 is below.
        assert_eq!(a.on_result("b", 0, 1, 0.1), Decision::Stop);
        // Rung holds [0.1, 0.2, 0.2]: the 66.7th percentile is 0.2.
        assert_eq!(a.on_result("d", 0, 1, 0.19), Decision::Stop);
        assert_eq!(a.on_result("e", 0, 1, 0.5), Decision::Continue);
        let rung1 = &a.brackets[0].rungs[2];
        assert_eq!(rung1.milestone, 1.0);
        assert_eq!(rung1.recorded.len(), 5, "stopped trials are recorded too");
        assert_eq!(rung1.recorded["b"], 0.1);
    }

    #[test]
    fn a_trial_is_judged_once_per_rung_and_at_the_first_result_past_it() {
        let mut a = asha(9, 1, 3.0, Judge::Last);
        assert_eq!(a.on_result("a", 0, 1, 0.5), Decision::Continue);
        // Epoch 2: no rung reached, nothing recorded.
        assert_eq!(a.on_result("a", 0, 2, 0.1), Decision::Continue);
        assert_eq!(a.brackets[0].rungs[1].recorded.len(), 0);
        // A result at epoch 4 (it skipped 3) is judged at rung 3.
        assert_eq!(a.on_result("a", 0, 4, 0.6), Decision::Continue);
        assert_eq!(a.brackets[0].rungs[1].recorded["a"], 0.6);
        // Epoch 5: rung 3 already holds it; nothing changes.
        a.on_result("a", 0, 5, 0.0);
        assert_eq!(a.brackets[0].rungs[1].recorded["a"], 0.6);
        // max_t ends every trial.
        assert_eq!(a.on_result("a", 0, 9, 0.9), Decision::Stop);
    }

    #[test]
    fn best_so_far_judges_a_trial_by_its_peak() {
        for (judge, expected) in [
            (Judge::Last, Decision::Stop),
            (Judge::BestSoFar, Decision::Continue),
        ] {
            let mut a = asha(9, 3, 3.0, judge);
            a.on_result("leader", 0, 3, 0.6);
            // The second trial peaked at 0.7 in epoch 2, then dipped to 0.5 at the rung.
            a.on_result("dipper", 0, 1, 0.3);
            a.on_result("dipper", 0, 2, 0.7);
            assert_eq!(a.on_result("dipper", 0, 3, 0.5), expected, "{judge:?}");
        }
    }

    #[test]
    fn a_replayed_sequence_gives_the_same_decisions_and_a_restored_state_goes_on_alike() {
        let results: Vec<(&str, u32, f64)> = vec![
            ("t0", 1, 0.3),
            ("t1", 1, 0.5),
            ("t2", 1, 0.2),
            ("t0", 2, 0.35),
            ("t1", 2, 0.55),
            ("t3", 1, 0.45),
            ("t0", 3, 0.4),
            ("t1", 3, 0.6),
            ("t3", 2, 0.5),
            ("t3", 3, 0.58),
            ("t4", 1, 0.1),
            ("t1", 4, 0.61),
        ];
        let run = |a: &mut Asha, part: &[(&str, u32, f64)]| -> Vec<Decision> {
            part.iter()
                .map(|(t, e, v)| a.on_result(t, 0, *e, *v))
                .collect()
        };
        let mut whole = asha(9, 1, 3.0, Judge::BestSoFar);
        let all = run(&mut whole, &results);
        // The same scheduler restored from its stored state half-way.
        let mut first = asha(9, 1, 3.0, Judge::BestSoFar);
        let mut decisions = run(&mut first, &results[..6]);
        let stored = serde_json::to_string(&first).unwrap();
        let mut restored: Asha = serde_json::from_str(&stored).unwrap();
        decisions.extend(run(&mut restored, &results[6..]));
        assert_eq!(decisions, all);
        assert_eq!(restored, whole);
        assert!(all.contains(&Decision::Stop) && all.contains(&Decision::Continue));
    }

    #[test]
    fn brackets_are_drawn_per_trial_and_reproducibly() {
        let a = Asha::new(AshaConfig {
            max_t: 27,
            grace_period: 1,
            reduction_factor: 3.0,
            brackets: 3,
            judge: Judge::Last,
        })
        .unwrap();
        let draws: Vec<usize> = (0..300).map(|i| a.bracket_of(5, i)).collect();
        assert_eq!(
            draws,
            (0..300).map(|i| a.bracket_of(5, i)).collect::<Vec<_>>()
        );
        let count = |b| draws.iter().filter(|d| **d == b).count();
        // Softmax of rung counts 4, 3, 2: about 67 %, 24 %, 9 %.
        assert!(
            count(0) > count(1) && count(1) > count(2),
            "{:?}",
            (count(0), count(1), count(2))
        );
        assert!(count(2) > 0);
        assert_eq!(asha(9, 1, 3.0, Judge::Last).bracket_of(5, 7), 0);
    }
}
