//! From labelled records to what training consumes, one way for every caller (`lexmesh train`
//! and the preprocessor service): the labels of the training records, a stratified, seeded
//! split when no validation set is given, the preprocessing fitted on the training texts, both
//! sets encoded; and the content id that names the result.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::dataset::{Dataset, LabelSet};
use crate::error::DataError;
use crate::normalize::NormalizerConfig;
use crate::pipeline::{Encoded, FeatureConfig, Preprocessor};
use crate::split::{SplitReport, stratified_split};

/// Version of the preparation, part of every content id: raised when the same records and
/// settings would prepare differently. 2: character n-gram buckets unseen in training get no
/// feature id.
pub const PREPARE_VERSION: u32 = 2;

/// Everything that shapes a prepared dataset besides its records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrepareSettings {
    /// Normalisation.
    pub normalizer: NormalizerConfig,
    /// Tokens, vocabulary and n-grams.
    pub features: FeatureConfig,
    /// Fraction of each class held out when no validation set is given.
    pub validation_fraction: f64,
    /// Seed of that split.
    pub seed: u64,
}

/// Training and validation records with their labels, before preprocessing.
#[derive(Debug, Clone)]
pub struct SplitData {
    /// Labels of the training records, in class order.
    pub labels: LabelSet,
    /// Training records.
    pub train: Dataset,
    /// Validation records (given, or held out of the training records).
    pub validation: Dataset,
    /// How the split was made, when it was made here.
    pub split: Option<SplitReport>,
}

/// Both sets encoded by a fitted preprocessing.
#[derive(Debug, Clone)]
pub struct EncodedSets {
    /// Training inputs.
    pub train: Vec<Encoded>,
    /// Their class ids.
    pub train_labels: Vec<usize>,
    /// Validation inputs.
    pub validation: Vec<Encoded>,
    /// Their class ids.
    pub validation_labels: Vec<usize>,
}

/// A prepared dataset: the fitted preprocessing, the labels and both sets encoded.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The fitted preprocessing.
    pub preprocessor: Preprocessor,
    /// Labels in class order.
    pub labels: LabelSet,
    /// The encoded sets.
    pub sets: EncodedSets,
    /// How the validation set was split off, when it was.
    pub split: Option<SplitReport>,
}

/// The content id of what [`prepare`] makes of these records with these settings: a SHA-256
/// (first 16 bytes, hex) of [`PREPARE_VERSION`], the settings and every record's text and
/// label. The same records and settings get the same id wherever they are prepared.
pub fn content_id(
    settings: &PrepareSettings,
    train: &Dataset,
    validation: Option<&Dataset>,
) -> Result<String, DataError> {
    let mut hash = Sha256::new();
    hash.update(PREPARE_VERSION.to_le_bytes());
    let settings = serde_json::to_vec(settings).map_err(|e| DataError::Split {
        reason: format!("the preparation settings cannot be hashed: {e}"),
    })?;
    hash.update(&settings);
    for (part, data) in [(b'T', Some(train)), (b'V', validation)] {
        hash.update([part]);
        for e in data.iter().flat_map(|d| &d.examples) {
            hash.update(e.text.as_bytes());
            hash.update([0]);
            hash.update(e.label.as_bytes());
            hash.update([0]);
        }
    }
    let digest = hash.finalize();
    Ok(digest.iter().take(16).map(|b| format!("{b:02x}")).collect())
}

/// The labels of `train` (at least two), and the validation set: `validation` when given, else
/// a stratified, seeded split of `train`.
pub fn split(
    train: Dataset,
    validation: Option<Dataset>,
    validation_fraction: f64,
    seed: u64,
) -> Result<SplitData, DataError> {
    let labels = train.training_labels()?;
    let (train, validation, split) = match validation {
        Some(v) => (train, v, None),
        None => {
            let (t, v, report) = stratified_split(&train, validation_fraction, seed)?;
            (t, v, Some(report))
        }
    };
    Ok(SplitData {
        labels,
        train,
        validation,
        split,
    })
}

/// Encodes both sets with `preprocessor`; a validation label the training records lack is an
/// error.
pub fn encode(
    preprocessor: &Preprocessor,
    labels: &LabelSet,
    data: &SplitData,
) -> Result<EncodedSets, DataError> {
    fn texts(d: &Dataset) -> Vec<&str> {
        d.examples.iter().map(|e| e.text.as_str()).collect()
    }
    Ok(EncodedSets {
        train_labels: labels.encode(&data.train)?,
        validation_labels: labels.encode(&data.validation)?,
        train: preprocessor.encode_all(&texts(&data.train)),
        validation: preprocessor.encode_all(&texts(&data.validation)),
    })
}

/// Splits, fits the preprocessing on the training texts and encodes both sets.
pub fn prepare(
    train: Dataset,
    validation: Option<Dataset>,
    settings: &PrepareSettings,
) -> Result<Prepared, DataError> {
    let data = split(
        train,
        validation,
        settings.validation_fraction,
        settings.seed,
    )?;
    let texts: Vec<&str> = data
        .train
        .examples
        .iter()
        .map(|e| e.text.as_str())
        .collect();
    let preprocessor = Preprocessor::fit(
        &texts,
        settings.normalizer.clone(),
        settings.features.clone(),
    )?;
    let sets = encode(&preprocessor, &data.labels, &data)?;
    Ok(Prepared {
        preprocessor,
        labels: data.labels,
        sets,
        split: data.split,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Example;
    use crate::pipeline::FeatureMode;

    fn dataset(name: &str, rows: &[(&str, &str)]) -> Dataset {
        Dataset {
            path: name.into(),
            examples: rows
                .iter()
                .enumerate()
                .map(|(i, (text, label))| Example {
                    text: text.to_string(),
                    label: label.to_string(),
                    line: i + 1,
                })
                .collect(),
        }
    }

    fn rows(n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| {
                let label = if i % 2 == 0 {
                    "حقوقی"
                } else {
                    "کیفری"
                };
                (format!("متن شماره {i} دادگاه {label}"), label.to_string())
            })
            .collect()
    }

    fn settings() -> PrepareSettings {
        PrepareSettings {
            normalizer: NormalizerConfig::default(),
            features: FeatureConfig {
                mode: FeatureMode::Sequence,
                ..FeatureConfig::default()
            },
            validation_fraction: 0.25,
            seed: 7,
        }
    }

    fn owned(rows: &[(String, String)]) -> Vec<(&str, &str)> {
        rows.iter().map(|(t, l)| (t.as_str(), l.as_str())).collect()
    }

    #[test]
    fn without_validation_a_seeded_split_is_made_and_reported() {
        let all = rows(40);
        let p = prepare(dataset("t", &owned(&all)), None, &settings()).unwrap();
        assert_eq!(p.sets.train.len() + p.sets.validation.len(), 40);
        assert_eq!(p.sets.validation.len(), 10);
        assert_eq!(p.sets.train_labels.len(), p.sets.train.len());
        let report = p.split.expect("a split report");
        assert_eq!(report.seed, 7);
        assert_eq!(report.per_label["کیفری"], (15, 5));
        assert_eq!(p.labels.labels(), ["حقوقی", "کیفری"]);
        // The same seed splits the same way.
        let again = prepare(dataset("t", &owned(&all)), None, &settings()).unwrap();
        assert_eq!(again.sets.validation, p.sets.validation);
    }

    #[test]
    fn a_given_validation_set_is_used_whole() {
        let all = rows(12);
        let p = prepare(
            dataset("t", &owned(&all[..8])),
            Some(dataset("v", &owned(&all[8..]))),
            &settings(),
        )
        .unwrap();
        assert!(p.split.is_none());
        assert_eq!(p.sets.train.len(), 8);
        assert_eq!(p.sets.validation_labels, vec![0, 1, 0, 1]);
    }

    #[test]
    fn a_validation_label_unseen_in_training_is_an_error() {
        let all = rows(8);
        let err = prepare(
            dataset("t", &owned(&all)),
            Some(dataset("v", &[("متن تازه", "اداری")])),
            &settings(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("اداری"), "{err}");
    }

    #[test]
    fn the_content_id_changes_with_records_settings_and_their_place() {
        let all = rows(8);
        let train = dataset("t", &owned(&all));
        let base = content_id(&settings(), &train, None).unwrap();
        assert_eq!(base.len(), 32);
        // The file's name is not content.
        assert_eq!(
            content_id(&settings(), &dataset("other", &owned(&all)), None).unwrap(),
            base
        );
        let mut edited = all.clone();
        edited[3].0.push('!');
        assert_ne!(
            content_id(&settings(), &dataset("t", &owned(&edited)), None).unwrap(),
            base
        );
        let other_seed = PrepareSettings {
            seed: 8,
            ..settings()
        };
        assert_ne!(content_id(&other_seed, &train, None).unwrap(), base);
        // The same records as validation instead of training are another dataset.
        let (a, b) = (
            dataset("a", &owned(&all[..4])),
            dataset("b", &owned(&all[4..])),
        );
        let moved = content_id(&settings(), &a, Some(&b)).unwrap();
        assert_ne!(moved, content_id(&settings(), &b, Some(&a)).unwrap());
        assert_ne!(moved, base);
    }
}
