//! A trained model loaded for prediction: the same preprocessing as in training, then a
//! forward pass without autodiff.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use burn::tensor::activation::softmax;
use serde::Serialize;

use lexmesh_evaluator::{ConfusionMatrix, EvaluationReport};
use lexmesh_preprocessor::{Dataset, Encoded, LabelSet, Preprocessor};

use crate::artifact::{ModelDir, SavedConfig};
use crate::batch::Batch;
use crate::checkpoint::load_weights;
use crate::config::DeviceChoice;
use crate::device::select_device;
use crate::error::TrainError;
use crate::model::TextClassifier;

/// One prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The most probable label.
    pub label: String,
    /// Its class id.
    pub class: usize,
    /// Probability of each label, in label order.
    pub probabilities: Vec<(String, f32)>,
}

/// A loaded model.
pub struct Classifier {
    config: SavedConfig,
    preprocessor: Preprocessor,
    labels: LabelSet,
    model: TextClassifier,
    device: Device,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("model", &self.config.experiment.model.kind)
            .field("labels", &self.labels.labels())
            .finish()
    }
}

const PREDICT_BATCH: usize = 64;

impl Classifier {
    /// Loads a model directory.
    pub fn load(dir: &Path, device: DeviceChoice) -> Result<Self, TrainError> {
        let dir = ModelDir::new(dir);
        let config = dir.read_config()?;
        let preprocessor = dir.read_preprocessor()?;
        let labels = dir.read_labels()?;
        let device = select_device(device)?;
        let exp = &config.experiment;
        let max_length = exp.max_sequence_length();
        let fresh = TextClassifier::new(
            &exp.model,
            config.feature_space,
            labels.len(),
            max_length,
            &device,
        );
        let model = load_weights(fresh, &dir.weights_path())?.valid();
        Ok(Self::from_parts(
            config,
            preprocessor,
            labels,
            model,
            device,
        ))
    }

    /// Wraps a model that is already in memory (e.g. right after training).
    pub fn from_parts(
        config: SavedConfig,
        preprocessor: Preprocessor,
        labels: LabelSet,
        model: TextClassifier,
        device: Device,
    ) -> Self {
        Self {
            config,
            preprocessor,
            labels,
            model,
            device,
        }
    }

    /// The labels, in class-id order.
    pub fn labels(&self) -> &LabelSet {
        &self.labels
    }

    /// The fitted preprocessing.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// The saved settings.
    pub fn config(&self) -> &SavedConfig {
        &self.config
    }

    /// Class probabilities of encoded inputs, one row per input.
    pub fn probabilities_encoded(&self, inputs: &[Encoded]) -> Result<Vec<Vec<f32>>, TrainError> {
        let exp = &self.config.experiment;
        let min_len = exp.min_sequence_length();
        let classes = self.labels.len();
        let mut out = Vec::with_capacity(inputs.len());
        for range in
            crate::batch::budget_ranges(inputs, PREDICT_BATCH, crate::batch::INFERENCE_TOKEN_BUDGET)
        {
            let rows: Vec<&Encoded> = inputs[range].iter().collect();
            let batch = Batch::new(&rows, None, min_len, &self.device);
            let probs: Vec<f32> = softmax(self.model.forward(&batch), 1)
                .into_data()
                .try_into_vec()
                .map_err(|e| TrainError::Config(format!("reading probabilities: {e:?}")))?;
            out.extend(probs.chunks(classes).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// Evaluates the model on a labelled dataset: accuracy, macro-F1, per-class scores and
    /// confusion matrix. A label the model does not know is a [`TrainError::Data`] naming its
    /// line.
    pub fn evaluate(&self, dataset: &Dataset) -> Result<EvaluationReport, TrainError> {
        let gold = self.labels.encode(dataset)?;
        let texts: Vec<&str> = dataset.examples.iter().map(|e| e.text.as_str()).collect();
        let encoded = self.preprocessor.encode_all(&texts);
        let predicted: Vec<usize> = self
            .probabilities_encoded(&encoded)?
            .iter()
            .map(|p| argmax(p))
            .collect();
        let matrix = ConfusionMatrix::from_pairs(self.labels.len(), &gold, &predicted)
            .map_err(|e| TrainError::Config(e.to_string()))?;
        EvaluationReport::new(self.labels.labels().to_vec(), &matrix)
            .map_err(|e| TrainError::Config(e.to_string()))
    }

    /// Predicts labels of raw texts.
    pub fn predict<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Prediction>, TrainError> {
        let encoded = self.preprocessor.encode_all(texts);
        let probabilities = self.probabilities_encoded(&encoded)?;
        Ok(probabilities
            .into_iter()
            .map(|p| {
                let class = argmax(&p);
                Prediction {
                    label: self.labels.label(class).unwrap_or_default().to_string(),
                    class,
                    probabilities: self.labels.labels().iter().cloned().zip(p).collect(),
                }
            })
            .collect())
    }
}

/// Index of the largest value (first on ties).
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}
