//! A job's data: raw records (inline, or a file in the datasets object store) and the prepared
//! dataset the preprocessor stores as `prepared/<dataset_id>`, where the id is a content hash
//! of the records and of every setting that shapes preprocessing, so the same data with the
//! same settings is prepared once.

use std::path::Path;

use lexmesh_preprocessor::{DataError, Dataset, FieldNames, content_id, stored};
use lexmesh_protocol::event::PreparedSummary;
use lexmesh_protocol::{
    DatasetSource, ErrorCode, ErrorReply, PreprocessJob, ProtocolError, names, subjects,
};
use lexmesh_runtime::{JobContext, Mesh, compute, objects};
use lexmesh_trainer::ExperimentConfig;

use super::{internal, runtime_error};

pub use lexmesh_preprocessor::stored::{PREPARED_FORMAT, PreparedData};

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
        .map_err(runtime_error)?
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

/// What a preprocess job reports about a prepared dataset.
pub fn prepared_summary(data: &PreparedData, reused: bool) -> PreparedSummary {
    PreparedSummary {
        dataset_id: data.dataset_id.clone(),
        labels: data.labels.labels().to_vec(),
        train_examples: data.train.len() as u64,
        validation_examples: data.validation.len() as u64,
        feature_space: data.preprocessor.feature_space() as u64,
        reused,
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

/// Reads a prepared dataset; None when there is none with that id.
pub async fn fetch_prepared(mesh: &Mesh, id: &str) -> Result<Option<PreparedData>, ProtocolError> {
    let Some(bytes) = objects::get_bytes(&mesh.datasets, &names::prepared_dataset(id))
        .await
        .map_err(runtime_error)?
    else {
        return Ok(None);
    };
    let id = id.to_string();
    compute::run(move || {
        stored::decode(&bytes)
            .map_err(|e| internal(&format!("prepared dataset {id} is unreadable"), e))
    })
    .await
    .map_err(|e| internal("decoding a prepared dataset", e))?
    .map(Some)
}

/// Stores a prepared dataset under its id.
pub async fn store_prepared(mesh: &Mesh, data: &PreparedData) -> Result<(), ProtocolError> {
    let bytes = stored::encode(data).map_err(|e| internal("encoding a prepared dataset", e))?;
    objects::put_bytes(
        &mesh.datasets,
        &names::prepared_dataset(&data.dataset_id),
        &bytes,
    )
    .await
    .map_err(runtime_error)
}

/// Why a prepare request got no summary.
#[derive(Debug)]
enum PrepareFailure {
    /// No preprocessor is subscribed (none started yet, or all being replaced): the request
    /// may be sent again later.
    NoPreprocessor(ProtocolError),
    /// Any other failure (timed out, refused, the preprocessor's own error).
    Failed(ProtocolError),
}

impl From<ProtocolError> for PrepareFailure {
    fn from(error: ProtocolError) -> Self {
        Self::Failed(error)
    }
}

/// Asks a preprocessor to prepare `request`'s dataset with its settings (`prepare`: answered
/// from the datasets store when the same records and settings were prepared before), with the
/// job's trace.
async fn request_prepare(
    ctx: &JobContext,
    request: &PreprocessJob,
) -> Result<PreparedSummary, PrepareFailure> {
    let body =
        serde_json::to_vec(request).map_err(|e| internal("encoding a prepare request", e))?;
    let timeout = ctx.worker.config.nats.request_timeout;
    // The request carries the job's trace, so the preprocessing is part of it.
    let reply = tokio::time::timeout(
        timeout,
        ctx.mesh()
            .client
            .request_with_headers(subjects::PREPARE, ctx.trace_headers(), body.into()),
    )
    .await
    .map_err(|_| {
        PrepareFailure::Failed(ProtocolError::new(
            ErrorCode::Unavailable,
            format!("no preprocessor answered within {timeout:?}"),
        ))
    })?
    .map_err(|e| {
        if e.kind() == async_nats::RequestErrorKind::NoResponders {
            PrepareFailure::NoPreprocessor(ProtocolError::new(
                ErrorCode::Unavailable,
                "no preprocessor is running to prepare the data",
            ))
        } else {
            PrepareFailure::Failed(ProtocolError::new(
                ErrorCode::Unavailable,
                format!("prepare request: {e}"),
            ))
        }
    })?;
    if let Ok(error) = serde_json::from_slice::<ErrorReply>(&reply.payload) {
        return Err(PrepareFailure::Failed(error.into()));
    }
    Ok(serde_json::from_slice(&reply.payload)
        .map_err(|e| internal("the preprocessor's reply is unreadable", e))?)
}

/// Sends the prepare request; while no preprocessor is running (none started yet, or the only
/// one being replaced) sends it again, with pauses from 0.25 s doubling up to 5 s, for up to
/// `jobs.wait_for_service`. Waiting is no failed attempt: the job's retries are kept for
/// failures. None when the job is cancelled or the instance shuts down meanwhile.
pub async fn prepare_when_a_preprocessor_answers(
    ctx: &JobContext,
    request: &PreprocessJob,
) -> Result<Option<PreparedSummary>, ProtocolError> {
    let patience = ctx.worker.config.jobs.wait_for_service;
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(250);
    let mut waiting = false;
    loop {
        match request_prepare(ctx, request).await {
            Ok(summary) => {
                if waiting {
                    tracing::info!(job = %ctx.job_id, "a preprocessor answered after {:.1?}", started.elapsed());
                }
                return Ok(Some(summary));
            }
            Err(PrepareFailure::Failed(error)) => return Err(error),
            Err(PrepareFailure::NoPreprocessor(error)) => {
                if started.elapsed() >= patience {
                    return Err(ProtocolError::new(
                        error.code,
                        format!("{} (waited {patience:?} for one)", error.reason),
                    ));
                }
                if !waiting {
                    tracing::warn!(job = %ctx.job_id, "no preprocessor is running; waiting up to {patience:?} for one");
                    waiting = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = ctx.cancel.cancelled() => return Ok(None),
                    () = ctx.shutdown().cancelled() => return Ok(None),
                }
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
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
