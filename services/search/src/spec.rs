//! What a search is asked to do: its space, sampler, scheduler and budgets
//! ([`ExperimentSpec`]), checked before anything runs.
//!
//! The doc comments of the fields are the user documentation of an optimize job's search
//! settings; unknown fields are refused, so that a typo is an error instead of a silently
//! ignored setting.
//!
//! ```
//! use lexmesh_search::ExperimentSpec;
//!
//! let spec: ExperimentSpec = serde_json::from_value(serde_json::json!({
//!     "space": {"learning_rate": {"log_uniform": {"low": 1e-4, "high": 0.1}}},
//!     "scheduler": {"asha": {"max_t": 9, "grace_period": 1, "reduction_factor": 3.0,
//!                            "brackets": 1, "judge": "best_so_far"}},
//!     "max_trials": 20,
//!     "max_concurrent_trials": 2,
//!     "max_epochs": 9,
//!     "goal": 0.8,
//! }))?;
//! spec.validate()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::asha::{Asha, AshaConfig};
use crate::error::SearchError;
use crate::sampler::Sampler;
use crate::space::Space;

/// A search's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// The settings to search and their domains.
    pub space: Space,
    /// How configurations are chosen (default: `random`).
    #[serde(default)]
    pub sampler: SamplerKind,
    /// Whether trials are stopped early (default: `none`).
    #[serde(default)]
    pub scheduler: Scheduler,
    /// Trials that end with a result (completed, stopped or cancelled) at most; a trial that
    /// fails does not use up the budget, its place goes to the next configuration. A grid
    /// search may ask for more trials than its grid has points: it tries every point once and
    /// ends (a grid with more points than `max_trials` is refused, since part of it would go
    /// untried).
    pub max_trials: u32,
    /// Trials that may run at once (a trial that was asked to stop holds its slot until its
    /// train job has ended).
    pub max_concurrent_trials: u32,
    /// Trials that may fail permanently before the search gives up (default 0: the first
    /// failure ends it). The search ends when *more* than this many have failed.
    #[serde(default)]
    pub max_failed_trials: u32,
    /// Epochs of one trial (the train job's `epochs`).
    pub max_epochs: u32,
    /// A validation macro-F1 that, once a trial reaches it, ends the search early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<f64>,
    /// Seeds the random sampler and the choice of ASHA brackets (default 0).
    #[serde(default)]
    pub seed: u64,
}

/// Which sampler a search uses (the seed is the spec's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// Independent seeded draws.
    #[default]
    Random,
    /// Every combination of choice lists and integer ranges.
    Grid,
}

/// Which scheduler a search uses: `"none"` or `{"asha": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    /// Every trial runs to `max_epochs`.
    #[default]
    None,
    /// Asynchronous successive halving; its `max_t` must equal `max_epochs`.
    Asha(AshaConfig),
}

impl ExperimentSpec {
    /// Checks every setting, field by field, and says what is wrong with the first bad one.
    pub fn validate(&self) -> Result<(), SearchError> {
        self.space.validate()?;
        if self.max_trials == 0 {
            return Err(SearchError::NoTrials);
        }
        if self.max_concurrent_trials == 0 {
            return Err(SearchError::NoConcurrency);
        }
        if self.max_epochs == 0 {
            return Err(SearchError::NoEpochs);
        }
        if let Some(goal) = self.goal
            && !(0.0..=1.0).contains(&goal)
        {
            return Err(SearchError::Goal(goal));
        }
        self.sampler()
            .validate(&self.space, u64::from(self.max_trials))?;
        if let Scheduler::Asha(config) = &self.scheduler {
            Asha::new(config.clone())?;
            if config.max_t != self.max_epochs {
                return Err(SearchError::Horizon {
                    max_t: config.max_t,
                    max_epochs: self.max_epochs,
                });
            }
        }
        Ok(())
    }

    /// The sampler, seeded with the spec's seed.
    pub fn sampler(&self) -> Sampler {
        match self.sampler {
            SamplerKind::Random => Sampler::Random { seed: self.seed },
            SamplerKind::Grid => Sampler::Grid,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::asha::Judge;
    use serde_json::json;

    fn valid() -> ExperimentSpec {
        serde_json::from_value(json!({
            "space": {
                "learning_rate": {"log_uniform": {"low": 1e-4, "high": 0.1}},
                "model": {"choice": ["bow", "cnn"]},
            },
            "scheduler": {"asha": {"max_t": 9, "grace_period": 1, "reduction_factor": 3.0,
                                   "brackets": 1, "judge": "best_so_far"}},
            "max_trials": 10,
            "max_concurrent_trials": 2,
            "max_epochs": 9,
        }))
        .unwrap()
    }

    #[test]
    fn a_spec_reads_from_json_with_defaults_and_refuses_unknown_fields() {
        let spec = valid();
        spec.validate().unwrap();
        assert_eq!(spec.sampler, SamplerKind::Random);
        assert_eq!(spec.max_failed_trials, 0);
        assert_eq!(spec.goal, None);
        assert_eq!(spec.sampler(), Sampler::Random { seed: 0 });
        let Scheduler::Asha(config) = &spec.scheduler else {
            panic!("{:?}", spec.scheduler);
        };
        assert_eq!(config.judge, Judge::BestSoFar);
        // Round trip.
        let again: ExperimentSpec =
            serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);
        // `"none"` is a plain string.
        let none: ExperimentSpec = serde_json::from_value(json!({
            "space": {"x": {"int": {"low": 0, "high": 3}}},
            "scheduler": "none", "sampler": "grid",
            "max_trials": 4, "max_concurrent_trials": 1, "max_epochs": 2,
        }))
        .unwrap();
        assert_eq!(none.scheduler, Scheduler::None);
        assert_eq!(none.sampler(), Sampler::Grid);
        // A typo is an error, at the top level and inside the scheduler.
        let mut typo = serde_json::to_value(&spec).unwrap();
        typo["max_trail"] = json!(3);
        assert!(serde_json::from_value::<ExperimentSpec>(typo).is_err());
        let mut typo = serde_json::to_value(&spec).unwrap();
        typo["scheduler"]["asha"]["grace"] = json!(3);
        assert!(serde_json::from_value::<ExperimentSpec>(typo).is_err());
    }

    #[test]
    fn each_invalid_field_gives_its_own_error() {
        type Edit = fn(&mut ExperimentSpec);
        type Expected = fn(&SearchError) -> bool;
        fn asha(spec: &mut ExperimentSpec) -> &mut AshaConfig {
            match &mut spec.scheduler {
                Scheduler::Asha(config) => config,
                Scheduler::None => unreachable!(),
            }
        }
        let cases: Vec<(Edit, Expected)> = vec![
            (
                |s| s.space = Space::default(),
                |e| *e == SearchError::EmptySpace,
            ),
            (
                |s| {
                    s.space
                        .0
                        .insert("dropout".into(), crate::Domain::Choice(vec![]));
                },
                |e| matches!(e, SearchError::InvalidDomain { setting, .. } if setting == "dropout"),
            ),
            (|s| s.max_trials = 0, |e| *e == SearchError::NoTrials),
            (
                |s| s.max_concurrent_trials = 0,
                |e| *e == SearchError::NoConcurrency,
            ),
            (|s| s.max_epochs = 0, |e| *e == SearchError::NoEpochs),
            (|s| s.goal = Some(1.5), |e| *e == SearchError::Goal(1.5)),
            (|s| s.goal = Some(-0.1), |e| *e == SearchError::Goal(-0.1)),
            (
                |s| s.goal = Some(f64::NAN),
                |e| matches!(e, SearchError::Goal(g) if g.is_nan()),
            ),
            // A grid over a continuous range.
            (
                |s| s.sampler = SamplerKind::Grid,
                |e| matches!(e, SearchError::Grid(m) if m.contains("learning_rate")),
            ),
            (
                |s| {
                    s.sampler = SamplerKind::Grid;
                    s.space.0.insert(
                        "learning_rate".into(),
                        crate::Domain::Int { low: 1, high: 10 },
                    );
                },
                // 10 × 2 points, 10 trials.
                |e| matches!(e, SearchError::Grid(m) if m.contains("20 points")),
            ),
            (
                |s| asha(s).reduction_factor = 1.0,
                |e| matches!(e, SearchError::Scheduler(m) if m.contains("reduction_factor")),
            ),
            (
                |s| asha(s).grace_period = 0,
                |e| matches!(e, SearchError::Scheduler(m) if m.contains("grace_period")),
            ),
            (
                |s| asha(s).max_t = 10,
                |e| {
                    *e == SearchError::Horizon {
                        max_t: 10,
                        max_epochs: 9,
                    }
                },
            ),
        ];
        for (i, (edit, expected)) in cases.into_iter().enumerate() {
            let mut spec = valid();
            edit(&mut spec);
            let err = spec.validate().unwrap_err();
            assert!(expected(&err), "case {i}: {err:?}");
        }
        // Edge values that are fine: a goal of 0 or 1, no failure allowed, more slots than
        // trials, a grid smaller than the budget.
        let mut spec = valid();
        spec.goal = Some(1.0);
        spec.max_concurrent_trials = 50;
        spec.validate().unwrap();
        spec.goal = Some(0.0);
        spec.validate().unwrap();
        spec.sampler = SamplerKind::Grid;
        spec.space.0.insert(
            "learning_rate".into(),
            crate::Domain::Int { low: 1, high: 2 },
        );
        spec.validate().unwrap();
    }
}
