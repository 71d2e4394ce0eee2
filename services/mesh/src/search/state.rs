//! A search's state in the `lexmesh_searches` KV bucket (key = optimize job id): the whole
//! [`Experiment`] and where in the events stream its coordinator stopped reading. Written only
//! by compare-and-set on the entry's revision, so two coordinators of one search (one taken
//! for dead that was only slow) never overwrite each other silently: the one that loses reads
//! the other's state and goes on from there.

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use futures::TryStreamExt;
use lexmesh_protocol::ExperimentSettings;
use lexmesh_protocol::time::now_ms;
use lexmesh_runtime::RuntimeError;
use lexmesh_search::Experiment;
use serde::{Deserialize, Serialize};

/// What the KV bucket holds for one search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchState {
    /// The search: spec, trials, rungs, phase.
    pub experiment: Experiment,
    /// The settings every trial shares (a trial's settings are these with its configuration
    /// on top).
    pub base: ExperimentSettings,
    /// The id the best trial's model is registered under.
    pub model_id: String,
    /// Sequence in the events stream of the last trial event the state has taken; a
    /// coordinator that takes the search over reads on from the next one.
    pub events_cursor: u64,
    /// When the search began (ms since the Unix epoch).
    pub created_ms: f64,
    /// Last change.
    pub updated_ms: f64,
}

/// Whether a compare-and-set write happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written; the entry's new revision.
    At(u64),
    /// Another writer changed (or created) the entry first.
    Conflict,
}

/// One search's entry in the bucket.
#[derive(Clone)]
pub struct StateStore {
    kv: kv::Store,
    key: String,
}

impl StateStore {
    /// The entry of the search `job_id`.
    pub fn new(kv: kv::Store, job_id: &str) -> Self {
        Self {
            kv,
            key: job_id.to_string(),
        }
    }

    /// The saved state and its revision, if any.
    pub async fn load(&self) -> Result<Option<(SearchState, u64)>, RuntimeError> {
        read_entry(&self.kv, &self.key).await
    }

    /// Creates the entry; `Conflict` when it exists already.
    pub async fn create(&self, state: &SearchState) -> Result<Written, RuntimeError> {
        let bytes = encode(state, &self.key)?;
        match self.kv.create(&self.key, bytes.into()).await {
            Ok(revision) => Ok(Written::At(revision)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(Written::Conflict),
            Err(e) => Err(RuntimeError::nats(format!("creating search {}", self.key))(
                e,
            )),
        }
    }

    /// Replaces the entry if it is still at `revision` (its `updated_ms` set to now).
    pub async fn save(
        &self,
        state: &mut SearchState,
        revision: u64,
    ) -> Result<Written, RuntimeError> {
        state.updated_ms = now_ms();
        let bytes = encode(state, &self.key)?;
        match self.kv.update(&self.key, bytes.into(), revision).await {
            Ok(revision) => Ok(Written::At(revision)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(Written::Conflict),
            Err(e) => Err(RuntimeError::nats(format!("saving search {}", self.key))(e)),
        }
    }
}

fn encode(state: &SearchState, key: &str) -> Result<Vec<u8>, RuntimeError> {
    serde_json::to_vec(state).map_err(RuntimeError::encode(format!("search {key}")))
}

async fn read_entry(kv: &kv::Store, key: &str) -> Result<Option<(SearchState, u64)>, RuntimeError> {
    let entry = kv
        .entry(key)
        .await
        .map_err(RuntimeError::nats(format!("reading search {key}")))?;
    match entry {
        Some(e) if e.operation == Operation::Put => {
            let state = serde_json::from_slice(&e.value).map_err(|err| RuntimeError::Corrupt {
                what: format!("search {key}"),
                reason: err.to_string(),
            })?;
            Ok(Some((state, e.revision)))
        }
        _ => Ok(None),
    }
}

/// The saved state of the search `job_id`, if any.
pub async fn read(kv: &kv::Store, job_id: &str) -> Result<Option<SearchState>, RuntimeError> {
    Ok(read_entry(kv, job_id).await?.map(|(state, _)| state))
}

/// The ids of every search in the bucket.
pub async fn list(kv: &kv::Store) -> Result<Vec<String>, RuntimeError> {
    kv.keys()
        .await
        .map_err(RuntimeError::nats("listing searches"))?
        .try_collect()
        .await
        .map_err(RuntimeError::nats("listing searches"))
}
