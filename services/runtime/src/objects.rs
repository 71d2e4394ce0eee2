//! Files and folders in object stores: datasets, checkpoints and models travel through NATS,
//! never through a shared disk.
//!
//! Every transfer has a deadline proportional to its size ([`transfer_deadline`]): a stalled
//! read or write fails with [`RuntimeError::TimedOut`] instead of hanging its caller.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::object_store::{GetErrorKind, ObjectStore};
use futures::TryStreamExt;
use tokio::io::AsyncReadExt;

use crate::error::RuntimeError;

/// What any transfer may take besides its size: the round trips of a busy server.
const TRANSFER_ALLOWANCE: Duration = Duration::from_secs(10);

/// The slowest transfer rate that still counts as progress, in bytes per second (a local
/// server moves hundreds of MB/s; a busy one in another zone, tens).
const SLOWEST_RATE: f64 = 2.0 * 1024.0 * 1024.0;

/// The deadline of a transfer of `bytes`: [`TRANSFER_ALLOWANCE`] plus the time the bytes take
/// at [`SLOWEST_RATE`].
pub fn transfer_deadline(bytes: u64) -> Duration {
    TRANSFER_ALLOWANCE + Duration::from_secs_f64(bytes as f64 / SLOWEST_RATE)
}

/// `work`, or [`RuntimeError::TimedOut`] after `after`.
async fn within<T>(
    after: Duration,
    what: impl FnOnce() -> String,
    work: impl Future<Output = Result<T, RuntimeError>>,
) -> Result<T, RuntimeError> {
    tokio::time::timeout(after, work).await.unwrap_or_else(|_| {
        Err(RuntimeError::TimedOut {
            what: what(),
            after,
        })
    })
}

/// Stores `bytes` under `name`, replacing what was there.
pub async fn put_bytes(store: &ObjectStore, name: &str, bytes: &[u8]) -> Result<(), RuntimeError> {
    let mut reader = bytes;
    within(
        transfer_deadline(bytes.len() as u64),
        || format!("storing object {name}"),
        async {
            store
                .put(name, &mut reader)
                .await
                .map(|_| ())
                .map_err(RuntimeError::nats(format!("storing object {name}")))
        },
    )
    .await
}

/// Stores the file at `path` under `name`, streaming it (a model file can be hundreds of MB).
pub async fn put_file(store: &ObjectStore, name: &str, path: &Path) -> Result<u64, RuntimeError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(RuntimeError::io(format!("opening {}", path.display())))?;
    let size = file
        .metadata()
        .await
        .map_err(RuntimeError::io(format!("reading {}", path.display())))?
        .len();
    within(
        transfer_deadline(size),
        || format!("storing object {name}"),
        async {
            store
                .put(name, &mut file)
                .await
                .map(|info| info.size as u64)
                .map_err(RuntimeError::nats(format!("storing object {name}")))
        },
    )
    .await
}

/// Opens object `name` (None when there is none), within [`TRANSFER_ALLOWANCE`].
async fn open(
    store: &ObjectStore,
    name: &str,
) -> Result<Option<async_nats::jetstream::object_store::Object>, RuntimeError> {
    within(
        TRANSFER_ALLOWANCE,
        || format!("reading object {name}"),
        async {
            match store.get(name).await {
                Ok(o) => Ok(Some(o)),
                Err(e) if e.kind() == GetErrorKind::NotFound => Ok(None),
                Err(e) => Err(RuntimeError::nats(format!("reading object {name}"))(e)),
            }
        },
    )
    .await
}

/// Writes object `name` into the file at `path`, streaming; false when there is no such object.
pub async fn get_file(store: &ObjectStore, name: &str, path: &Path) -> Result<bool, RuntimeError> {
    let Some(mut object) = open(store, name).await? else {
        return Ok(false);
    };
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(RuntimeError::io(format!("creating {}", parent.display())))?;
    }
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(RuntimeError::io(format!("creating {}", path.display())))?;
    within(
        transfer_deadline(object.info.size as u64),
        || format!("reading object {name}"),
        async {
            tokio::io::copy(&mut object, &mut file)
                .await
                .map_err(RuntimeError::io(format!("reading object {name}")))
        },
    )
    .await?;
    Ok(true)
}

/// The most [`get_bytes`] reserves up front from an object's recorded size; a larger object
/// (or a size that lies) grows its buffer as it arrives.
const MAX_RESERVE: usize = 256 * 1024 * 1024;

/// Reads object `name`; None when there is none. The buffer is sized from the object's info,
/// so reading it holds one copy of its bytes, not the up to twice as many a buffer that grows
/// by doubling holds while it copies.
pub async fn get_bytes(store: &ObjectStore, name: &str) -> Result<Option<Vec<u8>>, RuntimeError> {
    let Some(mut object) = open(store, name).await? else {
        return Ok(None);
    };
    let mut bytes = Vec::with_capacity(object.info.size.min(MAX_RESERVE));
    within(
        transfer_deadline(object.info.size as u64),
        || format!("reading object {name}"),
        async {
            object
                .read_to_end(&mut bytes)
                .await
                .map_err(RuntimeError::io(format!("reading object {name}")))
        },
    )
    .await?;
    Ok(Some(bytes))
}

/// Names of the live objects whose name starts with `prefix`.
pub async fn list(store: &ObjectStore, prefix: &str) -> Result<Vec<(String, u64)>, RuntimeError> {
    let infos: Vec<_> = within(TRANSFER_ALLOWANCE, || "listing objects".into(), async {
        store
            .list()
            .await
            .map_err(RuntimeError::nats("listing objects"))?
            .try_collect()
            .await
            .map_err(RuntimeError::nats("listing objects"))
    })
    .await?;
    let mut names: Vec<(String, u64)> = infos
        .into_iter()
        .filter(|i| !i.deleted && i.name.starts_with(prefix))
        .map(|i| (i.name, i.size as u64))
        .collect();
    names.sort();
    Ok(names)
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in
            std::fs::read_dir(&d).map_err(RuntimeError::io(format!("listing {}", d.display())))?
        {
            let path = entry
                .map_err(RuntimeError::io(format!("listing {}", d.display())))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Uploads every file under `dir` as `<prefix>/<relative path>`, the files named in `last`
/// after all others (a pointer or manifest that must only appear once the rest is there), then
/// deletes objects under the prefix that no longer exist locally. Returns (name, size) of each
/// uploaded file.
pub async fn sync_dir(
    store: &ObjectStore,
    prefix: &str,
    dir: &Path,
    last: &[&str],
) -> Result<Vec<(String, u64)>, RuntimeError> {
    let mut files = files_under(dir)?;
    files.sort_by_key(|f| {
        let rel = f
            .strip_prefix(dir)
            .unwrap_or(f)
            .to_string_lossy()
            .into_owned();
        (last.contains(&rel.as_str()), rel)
    });
    let mut uploaded = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(dir)
            .unwrap_or(file)
            .to_string_lossy()
            .into_owned();
        let name = format!("{prefix}/{rel}");
        let size = put_file(store, &name, file).await?;
        uploaded.push((rel, size));
    }
    let wanted: Vec<String> = uploaded
        .iter()
        .map(|(r, _)| format!("{prefix}/{r}"))
        .collect();
    for (name, _) in list(store, &format!("{prefix}/")).await? {
        if !wanted.contains(&name) {
            store
                .delete(&name)
                .await
                .map_err(RuntimeError::nats(format!("deleting object {name}")))?;
        }
    }
    Ok(uploaded)
}

/// Downloads every object under `<prefix>/` into `dir`, keeping relative paths. Returns how
/// many files were written (0: nothing stored under the prefix).
pub async fn download_dir(
    store: &ObjectStore,
    prefix: &str,
    dir: &Path,
) -> Result<usize, RuntimeError> {
    let mut count = 0;
    for (name, _) in list(store, &format!("{prefix}/")).await? {
        let rel = &name[prefix.len() + 1..];
        if rel.split('/').any(|part| part == ".." || part.is_empty()) {
            return Err(RuntimeError::Corrupt {
                what: format!("object {name}"),
                reason: "unsafe path".into(),
            });
        }
        if get_file(store, &name, &dir.join(rel)).await? {
            count += 1;
        }
    }
    Ok(count)
}

/// Deletes every object whose name starts with `prefix/`; returns how many.
pub async fn delete_under(store: &ObjectStore, prefix: &str) -> Result<usize, RuntimeError> {
    let names = list(store, &format!("{prefix}/")).await?;
    for (name, _) in &names {
        store
            .delete(name)
            .await
            .map_err(RuntimeError::nats(format!("deleting object {name}")))?;
    }
    Ok(names.len())
}
