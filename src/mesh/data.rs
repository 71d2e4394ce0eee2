//! A job's data: raw records (inline, or a file in the datasets object store) and the prepared
//! dataset the preprocessor stores as `prepared/<dataset_id>`, where the id is a content hash
//! of the records and of every setting that shapes preprocessing, so the same data with the
//! same settings is prepared once.

use std::path::Path;

use lexmesh_preprocessor::{
    DataError, Dataset, Encoded, FeatureConfig, FieldNames, LabelSet, NormalizerConfig,
    Preprocessor, stratified_split,
};
use lexmesh_protocol::event::PreparedSummary;
use lexmesh_protocol::{DatasetSource, ErrorCode, ProtocolError, names};
use lexmesh_runtime::{Mesh, objects};
use lexmesh_trainer::ExperimentConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{internal, unavailable};

/// Version of the stored prepared-dataset format.
pub const PREPARED_FORMAT: u32 = 1;

/// Records of a job, before preprocessing.
#[derive(Debug)]
pub struct RawData {
    /// Training records (for evaluation: the records to evaluate on).
    pub train: Dataset,
    /// Validation records, when given.
    pub validation: Option<Dataset>,
}

fn examples(records: &[lexmesh_protocol::Record]) -> Vec<lexmesh_preprocessor::Example> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| lexmesh_preprocessor::Example {
            text: r.text.clone(),
            label: r.label.clone(),
            line: i + 1,
        })
        .collect()
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
    tokio::task::spawn_blocking(move || {
        Dataset::load(&path, &fields).map_err(|e| data_error(e, &path, &key))
    })
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
        DatasetSource::Inline { train, validation } => Ok(RawData {
            train: Dataset::from_examples("inline train", examples(train)),
            validation: validation
                .as_ref()
                .map(|v| Dataset::from_examples("inline validation", examples(v))),
        }),
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// The id of the prepared form of `raw` under `experiment`: a hash of the records and of the
/// settings that shape preprocessing and the validation split.
pub fn dataset_id(raw: &RawData, experiment: &ExperimentConfig) -> Result<String, ProtocolError> {
    let mut hash = Sha256::new();
    hash.update(PREPARED_FORMAT.to_le_bytes());
    let settings = serde_json::to_vec(&(
        &experiment.normalizer,
        &experiment.features,
        experiment.training.validation_fraction,
        experiment.training.seed,
    ))
    .map_err(|e| internal("hashing settings", e))?;
    hash.update(&settings);
    for (part, data) in [(b'T', Some(&raw.train)), (b'V', raw.validation.as_ref())] {
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

/// Fits preprocessing on the training records and vectorises both sets (CPU work: call it on a
/// blocking thread).
pub fn prepare(
    raw: RawData,
    experiment: &ExperimentConfig,
    dataset_id: String,
) -> Result<PreparedData, ProtocolError> {
    let invalid = |e: DataError| ProtocolError::new(ErrorCode::InvalidDataset, e.to_string());
    if raw.train.is_empty() {
        return Err(ProtocolError::new(
            ErrorCode::EmptyDataset,
            "the dataset holds no records",
        ));
    }
    let labels = raw.train.training_labels().map_err(invalid)?;
    let (train, validation) = match raw.validation {
        Some(v) => (raw.train, v),
        None => {
            let t = &experiment.training;
            let (train, validation, _) =
                stratified_split(&raw.train, t.validation_fraction, t.seed).map_err(invalid)?;
            (train, validation)
        }
    };
    let train_labels = labels.encode(&train).map_err(invalid)?;
    let validation_labels = labels.encode(&validation).map_err(invalid)?;
    let train_texts: Vec<&str> = train.examples.iter().map(|e| e.text.as_str()).collect();
    let validation_texts: Vec<&str> = validation
        .examples
        .iter()
        .map(|e| e.text.as_str())
        .collect();
    let preprocessor = Preprocessor::fit(
        &train_texts,
        experiment.normalizer.clone(),
        experiment.features.clone(),
    )
    .map_err(invalid)?;
    Ok(PreparedData {
        format_version: PREPARED_FORMAT,
        dataset_id,
        normalizer: experiment.normalizer.clone(),
        features: experiment.features.clone(),
        train: preprocessor.encode_all(&train_texts),
        validation: preprocessor.encode_all(&validation_texts),
        preprocessor,
        labels,
        train_labels,
        validation_labels,
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
    tokio::task::spawn_blocking(move || {
        serde_json::from_slice::<PreparedData>(&bytes)
            .map_err(|e| internal(&format!("prepared dataset {id} is unreadable"), e))
    })
    .await
    .map_err(|e| internal("decoding a prepared dataset", e))?
    .map(Some)
}

/// Stores a prepared dataset under its id.
pub async fn store_prepared(mesh: &Mesh, data: &PreparedData) -> Result<(), ProtocolError> {
    let bytes = serde_json::to_vec(data).map_err(|e| internal("encoding a prepared dataset", e))?;
    objects::put_bytes(
        &mesh.datasets,
        &names::prepared_dataset(&data.dataset_id),
        &bytes,
    )
    .await
    .map_err(unavailable)
}
