//! Job settings → [`ExperimentConfig`]: the kind's defaults (the same as `lexmesh train`'s)
//! with the job's values on top, checked by the same validation.

use lexmesh_protocol::{ErrorCode, ExperimentSettings, ModelKindName, ProtocolError};
use lexmesh_trainer::{ClassWeighting, ExperimentConfig, ModelKind};

/// The model kind named in a job.
pub fn model_kind(name: Option<ModelKindName>) -> ModelKind {
    match name.unwrap_or(ModelKindName::Bow) {
        ModelKindName::Bow => ModelKind::Bow,
        ModelKindName::Cnn => ModelKind::Cnn,
        ModelKindName::Bigru => ModelKind::Bigru,
        ModelKindName::Transformer => ModelKind::Transformer,
    }
}

/// The experiment a job describes.
pub fn experiment(settings: &ExperimentSettings) -> Result<ExperimentConfig, ProtocolError> {
    settings.validate()?;
    let mut config = ExperimentConfig::for_kind(model_kind(settings.model));
    let t = &mut config.training;
    if let Some(v) = settings.epochs {
        t.epochs = v as usize;
    }
    if let Some(v) = settings.batch_size {
        t.batch_size = v as usize;
    }
    if let Some(v) = settings.learning_rate {
        t.learning_rate = v;
    }
    if let Some(v) = settings.patience {
        t.patience = v as usize;
    }
    if let Some(v) = settings.seed {
        t.seed = v;
    }
    if let Some(v) = settings.validation_fraction {
        t.validation_fraction = v;
    }
    if let Some(v) = settings.balanced_class_weights {
        t.class_weights = if v {
            ClassWeighting::Balanced
        } else {
            ClassWeighting::None
        };
    }
    let m = &mut config.model;
    if let Some(v) = settings.embedding_dim {
        m.embedding_dim = v as usize;
    }
    if let Some(v) = settings.hidden {
        m.hidden = v as usize;
    }
    if let Some(v) = settings.dropout {
        m.dropout = v;
    }
    if let Some(v) = settings.max_length {
        config.features.max_length = v as usize;
    }
    if let Some(v) = settings.char_buckets {
        config.features.char_buckets = v as usize;
    }
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
    fn out_of_range_values_are_invalid_value() {
        let s = ExperimentSettings {
            dropout: Some(1.0),
            ..Default::default()
        };
        assert_eq!(experiment(&s).unwrap_err().code, ErrorCode::InvalidValue);
    }
}
