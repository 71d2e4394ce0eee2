//! The stored form of a prepared dataset: a fitted preprocessing with both vectorised sets,
//! as the preprocessor service keeps it under `prepared/<dataset_id>` and trainers read it.
//!
//! Binary: `LXPD`, the header length (u64 LE), a JSON header (settings, fitted preprocessing,
//! labels, counts), then every vector as `u32 n, n × u32 ids, u32 m, m × f32 weights`
//! (little-endian). JSON numbers for millions of ids and weights took several times the
//! memory and time.

use serde::{Deserialize, Serialize};

use crate::{Encoded, FeatureConfig, LabelSet, NormalizerConfig, Preprocessor};

/// Version of the stored form (what [`encode`] writes). The dataset id carries the version of
/// the preparation itself ([`crate::prepare::PREPARE_VERSION`]).
pub const PREPARED_FORMAT: u32 = 2;

/// Why bytes are not a readable prepared dataset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredError {
    /// The bytes do not start with `LXPD`.
    #[error("not a prepared dataset (bad magic)")]
    Magic,
    /// The bytes end before what the header announces.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// The JSON header does not read.
    #[error("header: {0}")]
    Header(String),
    /// Written by another version of this form.
    #[error("format version {found} is not {PREPARED_FORMAT}")]
    Version {
        /// The version the bytes carry.
        found: u32,
    },
    /// The numbers of vectors and labels differ.
    #[error("vector and label counts differ")]
    Counts,
}

/// A fitted preprocessor with the vectorised training and validation sets.
#[derive(Debug, Clone)]
pub struct PreparedData {
    /// Format version.
    pub format_version: u32,
    /// Content hash of records and settings.
    pub dataset_id: String,
    /// Normalisation settings used.
    pub normalizer: NormalizerConfig,
    /// Feature settings used.
    pub features: FeatureConfig,
    /// The fitted preprocessing.
    pub preprocessor: Preprocessor,
    /// Labels in class order.
    pub labels: LabelSet,
    /// Vectorised training texts.
    pub train: Vec<Encoded>,
    /// Their classes.
    pub train_labels: Vec<usize>,
    /// Vectorised validation texts.
    pub validation: Vec<Encoded>,
    /// Their classes.
    pub validation_labels: Vec<usize>,
}

/// The part of a prepared dataset stored as JSON (everything but the vectors).
#[derive(Serialize, Deserialize)]
struct PreparedHeader {
    format_version: u32,
    dataset_id: String,
    normalizer: NormalizerConfig,
    features: FeatureConfig,
    preprocessor: Preprocessor,
    labels: LabelSet,
    train_labels: Vec<usize>,
    validation_labels: Vec<usize>,
    train_count: u64,
    validation_count: u64,
}

const MAGIC: &[u8; 4] = b"LXPD";

/// The binary form of `data` (see the [module documentation](self)).
///
/// # Errors
///
/// When the header cannot be written as JSON (a number that JSON cannot hold).
pub fn encode(data: &PreparedData) -> Result<Vec<u8>, serde_json::Error> {
    let header = PreparedHeader {
        format_version: data.format_version,
        dataset_id: data.dataset_id.clone(),
        normalizer: data.normalizer.clone(),
        features: data.features.clone(),
        preprocessor: data.preprocessor.clone(),
        labels: data.labels.clone(),
        train_labels: data.train_labels.clone(),
        validation_labels: data.validation_labels.clone(),
        train_count: data.train.len() as u64,
        validation_count: data.validation.len() as u64,
    };
    let header = serde_json::to_vec(&header)?;
    let vectors: usize = data
        .train
        .iter()
        .chain(&data.validation)
        .map(|e| 8 + 4 * (e.ids.len() + e.weights.len()))
        .sum();
    let mut out = Vec::with_capacity(12 + header.len() + vectors);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for e in data.train.iter().chain(&data.validation) {
        out.extend_from_slice(&(e.ids.len() as u32).to_le_bytes());
        for id in &e.ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
        out.extend_from_slice(&(e.weights.len() as u32).to_le_bytes());
        for w in &e.weights {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn encoded(&mut self) -> Option<Encoded> {
        let n = self.u32()? as usize;
        let ids = self
            .take(n.checked_mul(4)?)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let m = self.u32()? as usize;
        let weights = self
            .take(m.checked_mul(4)?)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(Encoded { ids, weights })
    }
}

/// Reads the form written by [`encode`].
///
/// # Errors
///
/// [`StoredError`] when the bytes are not that form, are cut short, or come from another
/// version of it.
pub fn decode(bytes: &[u8]) -> Result<PreparedData, StoredError> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4) != Some(MAGIC.as_slice()) {
        return Err(StoredError::Magic);
    }
    let header_len = r.u64().ok_or(StoredError::Truncated("header length"))? as usize;
    let header: PreparedHeader =
        serde_json::from_slice(r.take(header_len).ok_or(StoredError::Truncated("header"))?)
            .map_err(|e| StoredError::Header(e.to_string()))?;
    if header.format_version != PREPARED_FORMAT {
        return Err(StoredError::Version {
            found: header.format_version,
        });
    }
    let mut read = |count: u64| -> Result<Vec<Encoded>, StoredError> {
        (0..count)
            .map(|_| r.encoded().ok_or(StoredError::Truncated("vectors")))
            .collect()
    };
    let train = read(header.train_count)?;
    let validation = read(header.validation_count)?;
    if train.len() != header.train_labels.len()
        || validation.len() != header.validation_labels.len()
    {
        return Err(StoredError::Counts);
    }
    Ok(PreparedData {
        format_version: header.format_version,
        dataset_id: header.dataset_id,
        normalizer: header.normalizer,
        features: header.features,
        preprocessor: header.preprocessor,
        labels: header.labels,
        train,
        train_labels: header.train_labels,
        validation,
        validation_labels: header.validation_labels,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{Dataset, Example, FeatureMode, PrepareSettings};

    fn sample() -> PreparedData {
        let examples = (0..40)
            .map(|i| Example {
                text: if i % 2 == 0 {
                    "دادگاه حکم به پرداخت خسارت داد".into()
                } else {
                    "متهم به سرقت محکوم شد".into()
                },
                label: if i % 2 == 0 { "civil" } else { "criminal" }.into(),
                line: i + 1,
            })
            .collect();
        let settings = PrepareSettings {
            normalizer: NormalizerConfig::default(),
            features: FeatureConfig {
                mode: FeatureMode::Bag,
                char_ngrams: Some([2, 4]),
                char_buckets: 64,
                tfidf: true,
                ..FeatureConfig::default()
            },
            validation_fraction: 0.25,
            seed: 7,
        };
        let train = Dataset::from_examples("t", examples);
        let prepared = crate::prepare(train, None, &settings).unwrap();
        PreparedData {
            format_version: PREPARED_FORMAT,
            dataset_id: "d1".into(),
            normalizer: settings.normalizer,
            features: settings.features,
            preprocessor: prepared.preprocessor,
            labels: prepared.labels,
            train: prepared.sets.train,
            train_labels: prepared.sets.train_labels,
            validation: prepared.sets.validation,
            validation_labels: prepared.sets.validation_labels,
        }
    }

    #[test]
    fn a_prepared_dataset_round_trips_through_the_binary_form() {
        let prepared = sample();
        assert!(prepared.train.iter().any(|e| !e.weights.is_empty()));
        let bytes = encode(&prepared).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.dataset_id, "d1");
        assert_eq!(back.train, prepared.train);
        assert_eq!(back.validation, prepared.validation);
        assert_eq!(back.train_labels, prepared.train_labels);
        assert_eq!(back.validation_labels, prepared.validation_labels);
        assert_eq!(back.features, prepared.features);
        assert_eq!(back.labels.labels(), prepared.labels.labels());
    }

    #[test]
    fn bytes_that_are_not_the_form_are_typed_errors() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(
            decode(&bytes[..bytes.len() - 3]).unwrap_err(),
            StoredError::Truncated("vectors")
        );
        assert_eq!(decode(b"JSON").unwrap_err(), StoredError::Magic);
        assert_eq!(
            decode(b"LXPD\x01").unwrap_err(),
            StoredError::Truncated("header length")
        );
        let mut other = sample();
        other.format_version = PREPARED_FORMAT + 1;
        assert_eq!(
            decode(&encode(&other).unwrap()).unwrap_err(),
            StoredError::Version {
                found: PREPARED_FORMAT + 1
            }
        );
    }
}
