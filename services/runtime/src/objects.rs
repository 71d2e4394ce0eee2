//! Files and folders in object stores: datasets, checkpoints and models travel through NATS,
//! never through a shared disk.

use std::path::{Path, PathBuf};

use async_nats::jetstream::object_store::{GetErrorKind, ObjectStore};
use futures::TryStreamExt;
use tokio::io::AsyncReadExt;

use crate::error::RuntimeError;

/// Stores `bytes` under `name`, replacing what was there.
pub async fn put_bytes(store: &ObjectStore, name: &str, bytes: &[u8]) -> Result<(), RuntimeError> {
    let mut reader = bytes;
    store
        .put(name, &mut reader)
        .await
        .map(|_| ())
        .map_err(RuntimeError::nats(format!("storing object {name}")))
}

/// Stores the file at `path` under `name`, streaming it (a model file can be hundreds of MB).
pub async fn put_file(store: &ObjectStore, name: &str, path: &Path) -> Result<u64, RuntimeError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(RuntimeError::io(format!("opening {}", path.display())))?;
    store
        .put(name, &mut file)
        .await
        .map(|info| info.size as u64)
        .map_err(RuntimeError::nats(format!("storing object {name}")))
}

/// Writes object `name` into the file at `path`, streaming; false when there is no such object.
pub async fn get_file(store: &ObjectStore, name: &str, path: &Path) -> Result<bool, RuntimeError> {
    let mut object = match store.get(name).await {
        Ok(o) => o,
        Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(RuntimeError::nats(format!("reading object {name}"))(e)),
    };
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(RuntimeError::io(format!("creating {}", parent.display())))?;
    }
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(RuntimeError::io(format!("creating {}", path.display())))?;
    tokio::io::copy(&mut object, &mut file)
        .await
        .map_err(RuntimeError::io(format!("reading object {name}")))?;
    Ok(true)
}

/// Reads object `name`; None when there is none.
pub async fn get_bytes(store: &ObjectStore, name: &str) -> Result<Option<Vec<u8>>, RuntimeError> {
    let mut object = match store.get(name).await {
        Ok(o) => o,
        Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RuntimeError::nats(format!("reading object {name}"))(e)),
    };
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(RuntimeError::io(format!("reading object {name}")))?;
    Ok(Some(bytes))
}

/// Names of the live objects whose name starts with `prefix`.
pub async fn list(store: &ObjectStore, prefix: &str) -> Result<Vec<(String, u64)>, RuntimeError> {
    let infos: Vec<_> = store
        .list()
        .await
        .map_err(RuntimeError::nats("listing objects"))?
        .try_collect()
        .await
        .map_err(RuntimeError::nats("listing objects"))?;
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
