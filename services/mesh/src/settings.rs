//! Job settings → [`ExperimentConfig`]: the kind's defaults (the same as `lexmesh train`'s)
//! with the job's values on top through the same [`Overrides`], checked by the same validation.

use lexmesh_protocol::{CellName, ErrorCode, ExperimentSettings, ModelKindName, ProtocolError};
use lexmesh_trainer::{ClassWeighting, ExperimentConfig, ModelKind, Overrides, RnnCell};

/// The model kind named in a job.
pub fn model_kind(name: Option<ModelKindName>) -> ModelKind {
    match name.unwrap_or(ModelKindName::Bow) {
        ModelKindName::Bow => ModelKind::Bow,
        ModelKindName::Cnn => ModelKind::Cnn,
        ModelKindName::Bigru => ModelKind::Bigru,
        ModelKindName::Transformer => ModelKind::Transformer,
    }
}

/// The name of a model kind in a job.
pub fn model_name(kind: ModelKind) -> ModelKindName {
    match kind {
        ModelKind::Bow => ModelKindName::Bow,
        ModelKind::Cnn => ModelKindName::Cnn,
        ModelKind::Bigru => ModelKindName::Bigru,
        ModelKind::Transformer => ModelKindName::Transformer,
    }
}

/// The name of a recurrent cell in a job.
pub fn cell_name(cell: RnnCell) -> CellName {
    match cell {
        RnnCell::Gru => CellName::Gru,
        RnnCell::Lstm => CellName::Lstm,
    }
}

/// The recurrent cell named in a job.
pub fn cell(name: CellName) -> RnnCell {
    match name {
        CellName::Gru => RnnCell::Gru,
        CellName::Lstm => RnnCell::Lstm,
    }
}

/// A job's settings as the overrides `lexmesh train`'s flags also map into.
pub fn overrides(settings: &ExperimentSettings) -> Overrides {
    let size = |v: Option<u32>| v.map(|v| v as usize);
    Overrides {
        epochs: size(settings.epochs),
        batch_size: size(settings.batch_size),
        learning_rate: settings.learning_rate,
        weight_decay: settings.weight_decay.map(|v| v as f32),
        patience: size(settings.patience),
        seed: settings.seed,
        validation_fraction: settings.validation_fraction,
        class_weights: settings.balanced_class_weights.map(|balanced| {
            if balanced {
                ClassWeighting::Balanced
            } else {
                ClassWeighting::None
            }
        }),
        embedding_dim: size(settings.embedding_dim),
        hidden: size(settings.hidden),
        dropout: settings.dropout,
        cell: settings.cell.map(cell),
        max_length: size(settings.max_length),
        char_buckets: size(settings.char_buckets),
    }
}

/// The experiment a job describes.
pub fn experiment(settings: &ExperimentSettings) -> Result<ExperimentConfig, ProtocolError> {
    settings.validate()?;
    let mut config = ExperimentConfig::for_kind(model_kind(settings.model));
    overrides(settings).apply_to(&mut config);
    config
        .validate()
        .map_err(|e| ProtocolError::new(ErrorCode::InvalidValue, e.to_string()))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_settings_are_the_kind_defaults() {
        let c = experiment(&ExperimentSettings::default()).unwrap();
        assert_eq!(c, ExperimentConfig::for_kind(ModelKind::Bow));
        let s = ExperimentSettings {
            model: Some(ModelKindName::Cnn),
            epochs: Some(3),
            learning_rate: Some(0.01),
            ..Default::default()
        };
        let c = experiment(&s).unwrap();
        assert_eq!(c.model.kind, ModelKind::Cnn);
        assert_eq!(c.training.epochs, 3);
        assert_eq!(c.training.learning_rate, 0.01);
    }

    #[test]
    fn the_schemas_transformer_rule_uses_the_models_heads() {
        let c = ExperimentConfig::for_kind(ModelKind::Transformer);
        assert_eq!(
            c.model.heads,
            lexmesh_protocol::job::TRANSFORMER_HEADS as usize
        );
        // Every width the schema allows builds.
        for dim in (1..=64).map(|k| k * lexmesh_protocol::job::TRANSFORMER_HEADS) {
            let s = ExperimentSettings {
                model: Some(ModelKindName::Transformer),
                embedding_dim: Some(dim),
                ..Default::default()
            };
            experiment(&s).unwrap();
        }
    }

    #[test]
    fn every_job_setting_reaches_an_override() {
        // Every field, without `..Default::default()`: a new setting must be mapped here.
        let s = ExperimentSettings {
            model: Some(ModelKindName::Bigru),
            epochs: Some(7),
            batch_size: Some(5),
            learning_rate: Some(0.123),
            patience: Some(9),
            seed: Some(77),
            validation_fraction: Some(0.33),
            embedding_dim: Some(12),
            hidden: Some(13),
            dropout: Some(0.11),
            max_length: Some(99),
            char_buckets: Some(1234),
            balanced_class_weights: Some(false),
            weight_decay: Some(0.25),
            cell: Some(CellName::Lstm),
        };
        // Each setting but the kind (which picks the defaults) is an override.
        assert_eq!(overrides(&s).set_names().len(), 14);
        let c = experiment(&s).unwrap();
        assert_eq!(c.model.kind, ModelKind::Bigru);
        assert_eq!(c.model.cell, RnnCell::Lstm);
        assert_eq!(c.training.weight_decay, 0.25);
        assert_eq!(c.training.class_weights, ClassWeighting::None);
        assert_eq!(c.features.char_buckets, 1234);
        assert_eq!(c.training.validation_fraction, 0.33);
    }

    #[test]
    fn out_of_range_values_are_invalid_value() {
        let s = ExperimentSettings {
            dropout: Some(1.0),
            ..Default::default()
        };
        assert_eq!(experiment(&s).unwrap_err().code, ErrorCode::InvalidValue);
    }
}
