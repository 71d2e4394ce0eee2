//! A job's data: raw records (inline, or a file in the datasets object store) and the prepared
//! dataset the preprocessor stores as `prepared/<dataset_id>`, where the id is a content hash
//! of the records and of every setting that shapes preprocessing, so the same data with the
//! same settings is prepared once.

use std::path::Path;

use lexmesh_preprocessor::{
    DataError, Dataset, Encoded, FeatureConfig, FieldNames, LabelSet, NormalizerConfig,
    Preprocessor, content_id,
};
use lexmesh_protocol::event::PreparedSummary;
use lexmesh_protocol::{DatasetSource, ErrorCode, ProtocolError, names};
use lexmesh_runtime::{Mesh, compute, objects};
use lexmesh_trainer::ExperimentConfig;
use serde::{Deserialize, Serialize};

use super::{internal, unavailable};

/// Version of the stored prepared-dataset form (what [`encode_prepared`] writes). The dataset
/// id carries the version of the preparation itself
/// ([`lexmesh_preprocessor::prepare::PREPARE_VERSION`]).
pub const PREPARED_FORMAT: u32 = 2;

/// Records of a job, before preprocessing.
#[derive(Debug)]
pub struct RawData {
    /// Training records (for evaluation: the records to evaluate on).
    pub train: Dataset,
    /// Validation records, when given.
    pub validation: Option<Dataset>,
}

/// Reads inline records as the lines of a JSON Lines file ("inline train", record `i` as line
/// `i + 1`).
fn inline_dataset(
    name: &str,
    records: &[lexmesh_protocol::Record],
    fields: &FieldNames,
) -> Result<Dataset, ProtocolError> {
    Dataset::from_json_records(name, records.iter().map(|r| &r.0), fields)
        .map_err(|e| ProtocolError::new(ErrorCode::InvalidDataset, e.to_string()))
}

fn data_error(e: DataError, file: &Path, key: &str) -> ProtocolError {
    let text = e.to_string().replace(&file.display().to_string(), key);
    ProtocolError::new(ErrorCode::InvalidDataset, text)
}

async fn load_object(
    mesh: &Mesh,
    key: &str,
    fields: &FieldNames,
    work: &Path,
) -> Result<Dataset, ProtocolError> {
    let bytes = objects::get_bytes(&mesh.datasets, key)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::DatasetNotFound,
                format!("no object `{key}` in the {} store", names::DATASETS_STORE),
            )
        })?;
    let file_name = key.rsplit('/').next().unwrap_or("data.jsonl").to_string();
    let path = work.join(if file_name.contains('.') {
        file_name
    } else {
        format!("{file_name}.jsonl")
    });
    tokio::fs::write(&path, bytes)
        .await
        .map_err(|e| internal("writing a downloaded dataset", e))?;
    let fields = fields.clone();
    let key = key.to_string();
    compute::run(move || Dataset::load(&path, &fields).map_err(|e| data_error(e, &path, &key)))
        .await
        .map_err(|e| internal("reading a dataset", e))?
}

/// Reads the raw records of `source` (not a prepared dataset). `work` is a scratch folder.
pub async fn load_raw(
    mesh: &Mesh,
    source: &DatasetSource,
    work: &Path,
) -> Result<RawData, ProtocolError> {
    match source {
        DatasetSource::Inline(inline) => {
            let fields = FieldNames {
                text: inline.text_field.clone(),
                label: inline.label_field.clone(),
            };
            Ok(RawData {
                train: inline_dataset("inline train", &inline.train, &fields)?,
                validation: inline
                    .validation
                    .as_ref()
                    .map(|v| inline_dataset("inline validation", v, &fields))
                    .transpose()?,
            })
        }
        DatasetSource::Object {
            key,
            validation_key,
            text_field,
            label_field,
        } => {
            let fields = FieldNames {
                text: text_field.clone(),
                label: label_field.clone(),
            };
            let train = load_object(mesh, key, &fields, work).await?;
            let validation = match validation_key {
                Some(k) => Some(load_object(mesh, k, &fields, work).await?),
                None => None,
            };
            Ok(RawData { train, validation })
        }
        DatasetSource::Prepared { .. } => Err(ProtocolError::new(
            ErrorCode::InvalidValue,
            "this job needs raw records, not a prepared dataset",
        )),
    }
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

impl PreparedData {
    /// What a preprocess job reports.
    pub fn summary(&self, reused: bool) -> PreparedSummary {
        PreparedSummary {
            dataset_id: self.dataset_id.clone(),
            labels: self.labels.labels().to_vec(),
            train_examples: self.train.len() as u64,
            validation_examples: self.validation.len() as u64,
            feature_space: self.preprocessor.feature_space() as u64,
            reused,
        }
    }
}

/// The id of the prepared form of `raw` under `experiment` ([`content_id`]: the same as
/// `lexmesh train` computes for the same records and settings).
pub fn dataset_id(raw: &RawData, experiment: &ExperimentConfig) -> Result<String, ProtocolError> {
    content_id(
        &experiment.prepare_settings(),
        &raw.train,
        raw.validation.as_ref(),
    )
    .map_err(|e| internal("hashing a dataset", e))
}

/// Prepares `raw` the one way ([`lexmesh_preprocessor::prepare`]; CPU work: call it on a
/// compute thread).
pub fn prepare(
    raw: RawData,
    experiment: &ExperimentConfig,
    dataset_id: String,
) -> Result<PreparedData, ProtocolError> {
    if raw.train.is_empty() {
        return Err(ProtocolError::new(
            ErrorCode::EmptyDataset,
            "the dataset holds no records",
        ));
    }
    let settings = experiment.prepare_settings();
    let prepared = lexmesh_preprocessor::prepare(raw.train, raw.validation, &settings)
        .map_err(|e| ProtocolError::new(ErrorCode::InvalidDataset, e.to_string()))?;
    Ok(PreparedData {
        format_version: PREPARED_FORMAT,
        dataset_id,
        normalizer: settings.normalizer,
        features: settings.features,
        preprocessor: prepared.preprocessor,
        labels: prepared.labels,
        train: prepared.sets.train,
        train_labels: prepared.sets.train_labels,
        validation: prepared.sets.validation,
        validation_labels: prepared.sets.validation_labels,
    })
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

/// Binary form: `LXPD`, header length (u64 LE), the JSON header, then every vector as
/// `u32 n, n × u32 ids, u32 m, m × f32 weights` (little-endian). JSON numbers for millions of
/// ids and weights took several times the memory and time.
pub fn encode_prepared(data: &PreparedData) -> Result<Vec<u8>, ProtocolError> {
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
    let header =
        serde_json::to_vec(&header).map_err(|e| internal("encoding a prepared dataset", e))?;
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

/// Reads the form written by [`encode_prepared`].
pub fn decode_prepared(bytes: &[u8]) -> Result<PreparedData, String> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4) != Some(MAGIC.as_slice()) {
        return Err("not a prepared dataset (bad magic)".into());
    }
    let header_len = r.u64().ok_or("truncated header length")? as usize;
    let header: PreparedHeader =
        serde_json::from_slice(r.take(header_len).ok_or("truncated header")?)
            .map_err(|e| format!("header: {e}"))?;
    if header.format_version != PREPARED_FORMAT {
        return Err(format!(
            "format version {} is not {PREPARED_FORMAT}",
            header.format_version
        ));
    }
    let mut read = |count: u64| -> Result<Vec<Encoded>, String> {
        (0..count)
            .map(|_| r.encoded().ok_or_else(|| "truncated vectors".to_string()))
            .collect()
    };
    let train = read(header.train_count)?;
    let validation = read(header.validation_count)?;
    if train.len() != header.train_labels.len()
        || validation.len() != header.validation_labels.len()
    {
        return Err("vector and label counts differ".into());
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

/// Reads a prepared dataset; None when there is none with that id.
pub async fn fetch_prepared(mesh: &Mesh, id: &str) -> Result<Option<PreparedData>, ProtocolError> {
    let Some(bytes) = objects::get_bytes(&mesh.datasets, &names::prepared_dataset(id))
        .await
        .map_err(unavailable)?
    else {
        return Ok(None);
    };
    let id = id.to_string();
    compute::run(move || {
        decode_prepared(&bytes)
            .map_err(|e| internal(&format!("prepared dataset {id} is unreadable"), e))
    })
    .await
    .map_err(|e| internal("decoding a prepared dataset", e))?
    .map(Some)
}

/// Stores a prepared dataset under its id.
pub async fn store_prepared(mesh: &Mesh, data: &PreparedData) -> Result<(), ProtocolError> {
    let bytes = encode_prepared(data)?;
    objects::put_bytes(
        &mesh.datasets,
        &names::prepared_dataset(&data.dataset_id),
        &bytes,
    )
    .await
    .map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(records: &[(&str, &str)]) -> RawData {
        let examples = records
            .iter()
            .enumerate()
            .map(|(i, (t, l))| lexmesh_preprocessor::Example {
                text: t.to_string(),
                label: l.to_string(),
                line: i + 1,
            })
            .collect();
        RawData {
            train: Dataset::from_examples("t", examples),
            validation: None,
        }
    }

    fn sample() -> RawData {
        let mut records = Vec::new();
        for i in 0..20 {
            records.push((
                "دادگاه حکم به پرداخت خسارت داد",
                if i % 2 == 0 { "civil" } else { "criminal" },
            ));
            records.push(("متهم به سرقت محکوم شد", "criminal"));
        }
        raw(&records)
    }

    #[test]
    fn prepared_datasets_round_trip_through_the_binary_form() {
        let experiment = ExperimentConfig::default();
        let data = sample();
        let id = dataset_id(&data, &experiment).unwrap();
        let prepared = prepare(data, &experiment, id).unwrap();
        assert!(prepared.train.iter().any(|e| !e.weights.is_empty()));
        let bytes = encode_prepared(&prepared).unwrap();
        let back = decode_prepared(&bytes).unwrap();
        assert_eq!(back.train, prepared.train);
        assert_eq!(back.validation, prepared.validation);
        assert_eq!(back.train_labels, prepared.train_labels);
        assert_eq!(back.features, prepared.features);
        assert!(decode_prepared(&bytes[..bytes.len() - 3]).is_err());
        assert!(decode_prepared(b"JSON").is_err());
    }

    #[test]
    fn the_id_follows_records_and_settings() {
        let experiment = ExperimentConfig::default();
        let a = dataset_id(&sample(), &experiment).unwrap();
        assert_eq!(a, dataset_id(&sample(), &experiment).unwrap());
        let mut other = experiment.clone();
        other.features.char_buckets += 1;
        assert_ne!(a, dataset_id(&sample(), &other).unwrap());
        let mut fewer = sample();
        fewer.train.examples.pop();
        assert_ne!(a, dataset_id(&fewer, &experiment).unwrap());
    }

    #[test]
    fn empty_and_single_class_data_are_typed_errors() {
        let experiment = ExperimentConfig::default();
        let e = prepare(raw(&[]), &experiment, "x".into()).unwrap_err();
        assert_eq!(e.code, ErrorCode::EmptyDataset);
        let e = prepare(raw(&[("a b", "x"), ("c d", "x")]), &experiment, "x".into()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidDataset);
    }
}
