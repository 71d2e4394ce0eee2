//! The settings a run may change on top of its model kind's defaults (and a config file's
//! values): one type that every way of starting a run maps into — `lexmesh train`'s flags, a
//! train job's `settings`, a search trial's sampled values — so that each setting is applied
//! in one place and reachable from all of them.
//!
//! Where training runs (threads, device) is not here: the command line or the trainer
//! service's own configuration decides it, not the run.

use serde::Serialize;

use crate::config::{ClassWeighting, ExperimentConfig, RnnCell};

/// Values that replace the defaults; `None` keeps them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overrides {
    /// `training.epochs`.
    pub epochs: Option<usize>,
    /// `training.batch_size`.
    pub batch_size: Option<usize>,
    /// `training.learning_rate`.
    pub learning_rate: Option<f64>,
    /// `training.weight_decay` (an L2 penalty added to the gradient).
    pub weight_decay: Option<f32>,
    /// `training.patience`.
    pub patience: Option<usize>,
    /// `training.seed`.
    pub seed: Option<u64>,
    /// `training.validation_fraction`.
    pub validation_fraction: Option<f64>,
    /// `training.class_weights`.
    pub class_weights: Option<ClassWeighting>,
    /// `model.embedding_dim`.
    pub embedding_dim: Option<usize>,
    /// `model.hidden`.
    pub hidden: Option<usize>,
    /// `model.dropout`.
    pub dropout: Option<f64>,
    /// `model.cell`.
    pub cell: Option<RnnCell>,
    /// `features.max_length`.
    pub max_length: Option<usize>,
    /// `features.char_buckets`.
    pub char_buckets: Option<usize>,
}

impl Overrides {
    /// Writes the values that are set into `config` (the caller validates the result).
    pub fn apply_to(&self, config: &mut ExperimentConfig) {
        fn set<T: Clone>(field: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *field = v.clone();
            }
        }
        let t = &mut config.training;
        set(&mut t.epochs, &self.epochs);
        set(&mut t.batch_size, &self.batch_size);
        set(&mut t.learning_rate, &self.learning_rate);
        set(&mut t.weight_decay, &self.weight_decay);
        set(&mut t.patience, &self.patience);
        set(&mut t.seed, &self.seed);
        set(&mut t.validation_fraction, &self.validation_fraction);
        set(&mut t.class_weights, &self.class_weights);
        let m = &mut config.model;
        set(&mut m.embedding_dim, &self.embedding_dim);
        set(&mut m.hidden, &self.hidden);
        set(&mut m.dropout, &self.dropout);
        set(&mut m.cell, &self.cell);
        let f = &mut config.features;
        set(&mut f.max_length, &self.max_length);
        set(&mut f.char_buckets, &self.char_buckets);
    }

    /// The names of the settings that are set (as the fields are named), sorted.
    pub fn set_names(&self) -> Vec<String> {
        let mut names: Vec<String> = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, _)| k)
                .collect(),
            _ => Vec::new(),
        };
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelKind;

    /// Every override set to a value that differs from every kind's default.
    fn all_set() -> Overrides {
        Overrides {
            epochs: Some(7),
            batch_size: Some(5),
            learning_rate: Some(0.123),
            weight_decay: Some(0.25),
            patience: Some(9),
            seed: Some(77),
            validation_fraction: Some(0.33),
            class_weights: Some(ClassWeighting::None),
            embedding_dim: Some(12),
            hidden: Some(13),
            dropout: Some(0.11),
            cell: Some(RnnCell::Lstm),
            max_length: Some(99),
            char_buckets: Some(1234),
        }
    }

    #[test]
    fn absent_overrides_keep_the_defaults() {
        for kind in ModelKind::ALL {
            let mut c = ExperimentConfig::for_kind(kind);
            Overrides::default().apply_to(&mut c);
            assert_eq!(c, ExperimentConfig::for_kind(kind));
        }
        assert!(Overrides::default().set_names().is_empty());
    }

    #[test]
    fn every_override_reaches_its_field() {
        let o = all_set();
        let mut c = ExperimentConfig::for_kind(ModelKind::Bigru);
        o.apply_to(&mut c);
        assert_eq!(c.training.epochs, 7);
        assert_eq!(c.training.batch_size, 5);
        assert_eq!(c.training.learning_rate, 0.123);
        assert_eq!(c.training.weight_decay, 0.25);
        assert_eq!(c.training.patience, 9);
        assert_eq!(c.training.seed, 77);
        assert_eq!(c.training.validation_fraction, 0.33);
        assert_eq!(c.training.class_weights, ClassWeighting::None);
        assert_eq!(c.model.embedding_dim, 12);
        assert_eq!(c.model.hidden, 13);
        assert_eq!(c.model.dropout, 0.11);
        assert_eq!(c.model.cell, RnnCell::Lstm);
        assert_eq!(c.features.max_length, 99);
        assert_eq!(c.features.char_buckets, 1234);
        // The list above is every field: a new override must be added to it.
        assert_eq!(o.set_names().len(), 14, "{:?}", o.set_names());
        // The kind and what no override names stay.
        let d = ExperimentConfig::for_kind(ModelKind::Bigru);
        assert_eq!(c.model.kind, ModelKind::Bigru);
        assert_eq!(c.model.layers, d.model.layers);
        assert_eq!(c.training.threads, d.training.threads);
        assert_eq!(c.features.mode, d.features.mode);
    }
}
