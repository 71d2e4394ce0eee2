//! Inference on a stored model: request/reply on [`crate::subjects::CLASSIFY`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most texts in one classify request.
pub const MAX_TEXTS: usize = 1000;

/// Classify texts with a stored model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// The stored model.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub model_id: String,
    /// Texts to classify, 1 to 1000.
    #[schemars(length(min = 1, max = 1000))]
    pub texts: Vec<String>,
}

impl crate::decode::Message for ClassifyRequest {
    const SCHEMA: Option<&'static str> = Some("classify-request");
}

/// One text's prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassPrediction {
    /// The most probable label.
    pub label: String,
    /// Probability of every label.
    pub probabilities: BTreeMap<String, f32>,
}

/// Reply to a [`ClassifyRequest`]: one prediction per text, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyReply {
    /// The model used.
    pub model_id: String,
    /// Predictions, in the order of the texts.
    pub predictions: Vec<ClassPrediction>,
}
