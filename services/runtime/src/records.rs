//! Job records in the `lexmesh_jobs` KV bucket, changed only by compare-and-set on the
//! revision, so two writers never silently overwrite each other; and cancel markers
//! (`<job>.cancel`) for jobs cancelled before a worker took them.

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use lexmesh_protocol::record::JobRecord;

use crate::error::RuntimeError;
use crate::events::within_attempt;

/// Attempts of a compare-and-set loop before giving up.
const CAS_ATTEMPTS: u32 = 16;

/// Reads a job record (None when absent or deleted).
pub async fn read(
    store: &kv::Store,
    job_id: &str,
) -> Result<Option<(JobRecord, u64)>, RuntimeError> {
    let entry = store
        .entry(job_id)
        .await
        .map_err(RuntimeError::nats(format!("reading job record {job_id}")))?;
    match entry {
        Some(e) if e.operation == Operation::Put => {
            let record = serde_json::from_slice(&e.value).map_err(|err| RuntimeError::Corrupt {
                what: format!("job record {job_id}"),
                reason: err.to_string(),
            })?;
            Ok(Some((record, e.revision)))
        }
        _ => Ok(None),
    }
}

/// Applies `change` to the record (None when absent) and writes the result with
/// compare-and-set, retrying on a concurrent change. `change` returning None leaves the
/// record as it is. Returns the record as written.
///
/// While the bucket does not answer (a cluster node lost, its leader being elected), reads and
/// writes are tried again for up to [`crate::events::STORE_PATIENCE`]. A write whose answer
/// was lost may have been stored: the next read tells (the record is then exactly the one
/// written), so `change` is never applied twice.
pub async fn update(
    store: &kv::Store,
    job_id: &str,
    mut change: impl FnMut(Option<JobRecord>) -> Option<JobRecord>,
) -> Result<Option<JobRecord>, RuntimeError> {
    let mut retry = crate::events::StoreRetry::new();
    let mut unanswered: Option<JobRecord> = None;
    let mut lost_races = 0;
    loop {
        let current = match within_attempt("reading a job record", read(store, job_id)).await {
            Ok(current) => current,
            Err(e) => match retry.next_pause() {
                Some(pause) if e.is_transient() => {
                    tracing::debug!(
                        job = job_id,
                        "job record not readable yet ({e}); again in {pause:?}"
                    );
                    retry.wait().await;
                    continue;
                }
                _ => return Err(e),
            },
        };
        if let Some(written) = unanswered.take()
            && current
                .as_ref()
                .is_some_and(|(record, _)| *record == written)
        {
            return Ok(Some(written));
        }
        let revision = current.as_ref().map(|(_, r)| *r);
        let Some(next) = change(current.map(|(r, _)| r)) else {
            return Ok(None);
        };
        let bytes = serde_json::to_vec(&next)
            .map_err(RuntimeError::encode(format!("job record {job_id}")))?
            .into();
        let write = async {
            match revision {
                Some(rev) => match store.update(job_id, bytes, rev).await {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
                    Err(e) => Err(RuntimeError::nats(format!("updating job record {job_id}"))(
                        e,
                    )),
                },
                None => match store.create(job_id, bytes).await {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(RuntimeError::nats(format!("creating job record {job_id}"))(
                        e,
                    )),
                },
            }
        };
        let outcome = within_attempt("writing a job record", write).await;
        match outcome {
            Ok(true) => return Ok(Some(next)),
            Ok(false) => {
                lost_races += 1;
                if lost_races >= CAS_ATTEMPTS {
                    return Err(RuntimeError::Contended {
                        what: format!("job record {job_id}"),
                        attempts: CAS_ATTEMPTS,
                    });
                }
            }
            Err(e) => match retry.next_pause() {
                Some(pause) => {
                    tracing::debug!(
                        job = job_id,
                        "job record not written yet ({e}); again in {pause:?}"
                    );
                    unanswered = Some(next);
                    retry.wait().await;
                }
                None => return Err(e),
            },
        }
    }
}

/// Every job record, newest change last.
pub async fn list(store: &kv::Store) -> Result<Vec<JobRecord>, RuntimeError> {
    use futures::TryStreamExt;
    let keys: Vec<String> = store
        .keys()
        .await
        .map_err(RuntimeError::nats("listing job records"))?
        .try_collect()
        .await
        .map_err(RuntimeError::nats("listing job records"))?;
    let mut records = Vec::new();
    for key in keys.iter().filter(|k| !k.contains('.')) {
        if let Some((record, _)) = read(store, key).await? {
            records.push(record);
        }
    }
    records.sort_by(|a, b| a.updated_ms.total_cmp(&b.updated_ms));
    Ok(records)
}

fn cancel_key(job_id: &str) -> String {
    format!("{job_id}.cancel")
}

/// Records that `job_id` is to be cancelled when a worker takes it.
pub async fn mark_cancelled(
    store: &kv::Store,
    job_id: &str,
    reason: &str,
) -> Result<(), RuntimeError> {
    store
        .put(cancel_key(job_id), reason.to_string().into())
        .await
        .map(|_| ())
        .map_err(RuntimeError::nats(format!(
            "recording the cancel of {job_id}"
        )))
}

/// Whether a cancel was recorded for `job_id`.
pub async fn is_marked_cancelled(store: &kv::Store, job_id: &str) -> Result<bool, RuntimeError> {
    let entry = store
        .entry(cancel_key(job_id))
        .await
        .map_err(RuntimeError::nats(format!(
            "reading the cancel marker of {job_id}"
        )))?;
    Ok(entry.is_some_and(|e| e.operation == Operation::Put))
}

/// How `instance`'s process last ended, when a supervisor wrote it down.
pub async fn instance_exit(
    store: &kv::Store,
    instance: &str,
) -> Result<Option<lexmesh_protocol::record::InstanceExit>, RuntimeError> {
    let Some(bytes) = store
        .get(instance)
        .await
        .map_err(RuntimeError::nats(format!(
            "reading the exit of {instance}"
        )))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RuntimeError::Corrupt {
            what: format!("the exit of {instance}"),
            reason: e.to_string(),
        })
}

/// Writes down how `exit.instance`'s process ended.
pub async fn write_instance_exit(
    store: &kv::Store,
    exit: &lexmesh_protocol::record::InstanceExit,
) -> Result<(), RuntimeError> {
    let bytes = serde_json::to_vec(exit).map_err(RuntimeError::encode(format!(
        "the exit of {}",
        exit.instance
    )))?;
    store
        .put(exit.instance.as_str(), bytes.into())
        .await
        .map(|_| ())
        .map_err(RuntimeError::nats(format!(
            "writing the exit of {}",
            exit.instance
        )))
}
