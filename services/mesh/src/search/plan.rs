//! An optimize job read into what the search runs ([`SearchPlan`]): the search crate's
//! [`ExperimentSpec`], the settings every trial shares, and the model id the best model gets.
//! Every rule is checked here, before anything runs; a job that breaks one is answered
//! `invalid_value` (or `invalid_message` for a setting no train job has).

use lexmesh_protocol::job::{
    AshaSpec, DomainSpec, JudgeName, SamplerName, SchedulerSpec, SettingType, setting_type,
};
use lexmesh_protocol::{ErrorCode, ExperimentSettings, OptimizeJob, ProtocolError};
use lexmesh_search::{
    AshaConfig, Configuration, Domain, Experiment, ExperimentSpec, Judge, SamplerKind, Scheduler,
    Space,
};

use crate::settings;

/// ASHA's grace period when the job names none (and `max_epochs` is not smaller). Chosen by
/// replaying ASHA's settings over the learning curves of random searches on the news task
/// (`cargo bench --bench search -- --replay`, seeds other than the benchmark's): a shorter
/// grace stopped the slow starter that became the best trial in some seeds.
pub const DEFAULT_GRACE_PERIOD: u32 = 5;

/// ASHA's reduction factor when the job names none.
pub const DEFAULT_REDUCTION_FACTOR: f64 = 3.0;

/// Trials that run at once when the job names no number.
pub const DEFAULT_CONCURRENCY: u32 = 1;

/// What an optimize job asks for, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPlan {
    /// The optimize job's id (the experiment's id: trial `k` is `<job_id>-t<k>`).
    pub job_id: String,
    /// The id the best trial's model is registered under.
    pub model_id: String,
    /// The search's settings for the state machine.
    pub spec: ExperimentSpec,
    /// The settings every trial shares (`epochs` = `max_epochs`).
    pub base: ExperimentSettings,
}

impl SearchPlan {
    /// Reads and checks `job`: the space (known settings, non-empty and ordered ranges), the
    /// base settings, the sampler and scheduler against the budgets, the trial ids.
    pub fn new(job: &OptimizeJob) -> Result<Self, ProtocolError> {
        let invalid = |reason: String| ProtocolError::new(ErrorCode::InvalidValue, reason);
        let max_epochs = match (job.max_epochs, job.base.epochs) {
            (Some(max), Some(base)) if max != base => {
                return Err(invalid(format!(
                    "`/base/epochs` ({base}) differs from `/max_epochs` ({max}); every trial \
                     trains for max_epochs: leave base.epochs out"
                )));
            }
            (Some(max), _) | (None, Some(max)) => max,
            // The model's default, as a train job with these settings would run.
            (None, None) => u32::try_from(settings::experiment(&job.base)?.training.epochs)
                .map_err(|_| invalid("the model's default epochs are out of range".into()))?,
        };
        let base = ExperimentSettings {
            epochs: Some(max_epochs),
            ..job.base.clone()
        };
        base.validate()
            .map_err(|e| ProtocolError::new(e.code, format!("base settings: {}", e.reason)))?;
        let spec = ExperimentSpec {
            space: space(job)?,
            sampler: match job.sampler.unwrap_or_default() {
                SamplerName::Random => SamplerKind::Random,
                SamplerName::Grid => SamplerKind::Grid,
            },
            scheduler: match &job.scheduler {
                None | Some(SchedulerSpec::None) => Scheduler::None,
                Some(SchedulerSpec::Asha(asha)) => Scheduler::Asha(asha_config(asha, max_epochs)),
            },
            max_trials: job.trials,
            max_concurrent_trials: job.max_concurrent_trials.unwrap_or(DEFAULT_CONCURRENCY),
            max_failed_trials: job.max_failed_trials.unwrap_or(0),
            max_epochs,
            goal: job.goal,
            seed: job.seed.unwrap_or(0),
        };
        // The spec's own checks (domains, grid, scheduler, budgets) and the trial ids'.
        Experiment::new(job.job_id.clone(), spec.clone())
            .map_err(|e| invalid(format!("search: {e}")))?;
        Ok(Self {
            job_id: job.job_id.clone(),
            model_id: job.model_id().to_string(),
            spec,
            base,
        })
    }

    /// A new search (nothing started yet).
    pub fn experiment(&self) -> Result<Experiment, ProtocolError> {
        Experiment::new(self.job_id.clone(), self.spec.clone())
            .map_err(|e| ProtocolError::new(ErrorCode::InvalidValue, format!("search: {e}")))
    }

    /// A trial's settings as JSON: the base with the trial's values on top. Left as JSON so
    /// that a combination the settings' rules exclude (a transformer width that is no multiple
    /// of its heads) reaches the trainer, which rejects it with its own typed error: the trial
    /// fails, the search goes on.
    pub fn trial_settings_json(&self, configuration: &Configuration) -> serde_json::Value {
        let mut settings = serde_json::to_value(&self.base)
            .unwrap_or_else(|_| serde_json::Value::Object(serde_json::Map::new()));
        if let serde_json::Value::Object(map) = &mut settings {
            for (name, value) in configuration {
                map.insert(name.clone(), value.clone());
            }
        }
        settings
    }

    /// A trial's settings, typed; none when its values do not make valid settings.
    pub fn trial_settings(&self, configuration: &Configuration) -> Option<ExperimentSettings> {
        let settings: ExperimentSettings =
            serde_json::from_value(self.trial_settings_json(configuration)).ok()?;
        settings.validate().ok()?;
        Some(settings)
    }
}

/// The job's search space as the search crate's, each setting checked to be one a train job
/// takes (the schema says so too).
fn space(job: &OptimizeJob) -> Result<Space, ProtocolError> {
    let mut space = Space::default();
    for (name, domain) in &job.search_space.0 {
        let kind = setting_type(name).filter(|_| name != "epochs").ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::InvalidMessage,
                format!(
                    "`/search_space` names `{name}`, which is not a setting of a train job (or is \
                     `epochs`, which is max_epochs)"
                ),
            )
        })?;
        let domain = match domain.spec() {
            DomainSpec::Choice(values) => Domain::Choice(values),
            DomainSpec::Int { low, high } => Domain::Int { low, high },
            DomainSpec::Uniform { .. } | DomainSpec::LogUniform { .. }
                if kind != SettingType::Number =>
            {
                return Err(ProtocolError::new(
                    ErrorCode::InvalidMessage,
                    format!("`/search_space/{name}` takes a choice list or an int range"),
                ));
            }
            DomainSpec::Uniform { low, high } => Domain::Uniform { low, high },
            DomainSpec::LogUniform { low, high } => Domain::LogUniform { low, high },
        };
        domain.validate(name).map_err(|e| {
            ProtocolError::new(ErrorCode::InvalidValue, format!("`/search_space`: {e}"))
        })?;
        space.0.insert(name.clone(), domain);
    }
    if space.0.is_empty() {
        return Err(ProtocolError::new(
            ErrorCode::InvalidValue,
            "`/search_space` names no setting: there would be nothing to search",
        ));
    }
    Ok(space)
}

/// ASHA's settings, with the job's defaults filled in.
fn asha_config(asha: &AshaSpec, max_epochs: u32) -> AshaConfig {
    AshaConfig {
        max_t: asha.max_t.unwrap_or(max_epochs),
        grace_period: asha
            .grace_period
            .unwrap_or(DEFAULT_GRACE_PERIOD.min(max_epochs)),
        reduction_factor: asha.reduction_factor.unwrap_or(DEFAULT_REDUCTION_FACTOR),
        brackets: asha.brackets.unwrap_or(1),
        judge: match asha.judge {
            Some(JudgeName::Last) | None => Judge::Last,
            Some(JudgeName::BestSoFar) => Judge::BestSoFar,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn job(extra: serde_json::Value) -> OptimizeJob {
        let mut job = json!({
            "job_id": "opt-1",
            "dataset": {"prepared": {"dataset_id": "d1"}},
            "trials": 6,
            "search_space": {
                "learning_rate": {"log_uniform": {"low": 0.001, "high": 0.1}},
                "embedding_dim": [16, 32],
            },
        });
        if let (Some(job), serde_json::Value::Object(extra)) = (job.as_object_mut(), extra) {
            job.extend(extra);
        }
        lexmesh_protocol::decode(&serde_json::to_vec(&job).unwrap()).unwrap()
    }

    fn code(extra: serde_json::Value) -> (ErrorCode, String) {
        let e = SearchPlan::new(&job(extra)).unwrap_err();
        (e.code, e.reason)
    }

    #[test]
    fn a_job_maps_onto_the_spec_with_its_defaults() {
        let plan = SearchPlan::new(&job(json!({
            "max_epochs": 4,
            "scheduler": {"asha": {"reduction_factor": 2}},
            "max_concurrent_trials": 2,
            "seed": 7,
        })))
        .unwrap();
        assert_eq!(plan.model_id, "opt-1");
        assert_eq!(plan.base.epochs, Some(4));
        assert_eq!(plan.spec.max_trials, 6);
        assert_eq!(plan.spec.max_concurrent_trials, 2);
        assert_eq!(plan.spec.seed, 7);
        let Scheduler::Asha(asha) = &plan.spec.scheduler else {
            panic!("{:?}", plan.spec.scheduler)
        };
        assert_eq!((asha.max_t, asha.grace_period), (4, 4));
        assert_eq!(asha.reduction_factor, 2.0);
        assert_eq!(asha.judge, Judge::Last);
        // A trial's settings: the base, its values on top.
        let configuration: Configuration =
            serde_json::from_value(json!({"learning_rate": 0.01, "embedding_dim": 32})).unwrap();
        let settings = plan.trial_settings(&configuration).unwrap();
        assert_eq!(settings.epochs, Some(4));
        assert_eq!(settings.embedding_dim, Some(32));
        assert_eq!(settings.learning_rate, Some(0.01));
        // Without max_epochs: base.epochs, else the model's default.
        let plan = SearchPlan::new(&job(json!({"base": {"epochs": 2}}))).unwrap();
        assert_eq!(plan.spec.max_epochs, 2);
        let plan = SearchPlan::new(&job(json!({}))).unwrap();
        assert!(plan.spec.max_epochs >= 1);
        assert_eq!(plan.spec.max_concurrent_trials, DEFAULT_CONCURRENCY);
    }

    #[test]
    fn the_rules_a_schema_cannot_state_are_invalid_value() {
        let cases = [
            (
                json!({"search_space": {"dropout": {"uniform": {"low": 0.5, "high": 0.1}}}}),
                "inverted",
            ),
            (
                json!({"search_space": {"hidden": {"int": {"low": 9, "high": 3}}}}),
                "inverted",
            ),
            (json!({"search_space": {}}), "nothing to search"),
            (
                json!({"max_epochs": 4, "scheduler": {"asha": {"max_t": 5}}}),
                "max_t (5) must equal max_epochs (4)",
            ),
            (
                json!({"max_epochs": 2, "scheduler": {"asha": {"grace_period": 3}}}),
                "grace_period",
            ),
            (
                json!({"sampler": "grid", "trials": 3, "search_space": {"hidden": [1, 2, 3, 4]}}),
                "4 points",
            ),
            (json!({"job_id": "x".repeat(62)}), "longer than 64"),
            (
                json!({"max_epochs": 3, "base": {"epochs": 5}}),
                "leave base.epochs out",
            ),
        ];
        for (extra, words) in cases {
            let (code, reason) = code(extra.clone());
            assert_eq!(code, ErrorCode::InvalidValue, "{extra}: {reason}");
            assert!(reason.contains(words), "{extra}: {reason}");
        }
    }
}
