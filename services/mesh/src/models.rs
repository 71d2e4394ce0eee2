//! Trained models in the `lexmesh_models` object store: every file of the model folder as
//! `<model>/<job>-a<attempt>/<file>`, then `<model>/manifest.json`, which names that folder.
//! A model without a manifest is incomplete and treated as absent. A manifest may also name
//! another model's files (`source_model_id`): a search registers its best trial's model under
//! its own id that way, without a copy. Each training attempt
//! uploads into its own folder, and only the attempt that completed the job (compare-and-set
//! on the job record) writes the manifest, so two racing attempts never mix their files.

use std::path::Path;

use lexmesh_protocol::record::{ModelFile, ModelManifest};
use lexmesh_protocol::{ErrorCode, ProtocolError, names};
use lexmesh_runtime::{Mesh, objects};

use super::{internal, runtime_error};

/// Uploads the model folder under `<model>/<folder>/`, where no other attempt writes; the
/// model is not visible until [`publish_manifest`]. Returns the manifest to publish.
pub async fn upload(
    mesh: &Mesh,
    dir: &Path,
    folder: &str,
    mut manifest: ModelManifest,
) -> Result<ModelManifest, ProtocolError> {
    let prefix = names::model_file(&manifest.model_id, folder);
    let uploaded = objects::sync_dir(&mesh.models, &prefix, dir, &[])
        .await
        .map_err(runtime_error)?;
    manifest.folder = folder.to_string();
    manifest.files = uploaded
        .into_iter()
        .map(|(name, bytes)| ModelFile { name, bytes })
        .collect();
    Ok(manifest)
}

/// Writes the manifest, which makes the model visible, then deletes the files of the model's
/// previous version (another folder).
pub async fn publish_manifest(mesh: &Mesh, new: &ModelManifest) -> Result<(), ProtocolError> {
    let previous = manifest(mesh, &new.model_id).await.ok().flatten();
    // A manifest that points at another model's files (a search's registration) owns none of
    // them: there is nothing of the previous version to delete.
    let previous = previous.filter(|p| p.source_model_id.is_none());
    let body = serde_json::to_vec_pretty(new).map_err(|e| internal("encoding a manifest", e))?;
    objects::put_bytes(&mesh.models, &names::model_manifest(&new.model_id), &body)
        .await
        .map_err(runtime_error)?;
    if let Some(previous) = previous
        && previous.folder != new.folder
    {
        let old = if previous.folder.is_empty() {
            None
        } else {
            Some(names::model_file(&previous.model_id, &previous.folder))
        };
        match old {
            Some(old) => {
                if let Err(e) = objects::delete_under(&mesh.models, &old).await {
                    tracing::warn!("the previous version's files ({old}) were not deleted: {e}");
                }
            }
            // A model stored before folders existed: its files sit directly under <model>/,
            // and are overwritten by nothing; delete them one by one.
            None => {
                for file in &previous.files {
                    let _ = mesh
                        .models
                        .delete(&names::model_file(&previous.model_id, &file.name))
                        .await;
                }
            }
        }
    }
    Ok(())
}

/// Deletes the files an attempt uploaded but may not publish (it lost the completion race).
pub async fn discard_upload(mesh: &Mesh, model_id: &str, folder: &str) {
    let prefix = names::model_file(model_id, folder);
    if let Err(e) = objects::delete_under(&mesh.models, &prefix).await {
        tracing::warn!("the discarded model files ({prefix}) were not deleted: {e}");
    }
}

/// The manifest of `model_id`, if the model is stored completely.
pub async fn manifest(mesh: &Mesh, model_id: &str) -> Result<Option<ModelManifest>, ProtocolError> {
    let Some(bytes) = objects::get_bytes(&mesh.models, &names::model_manifest(model_id))
        .await
        .map_err(runtime_error)?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| internal(&format!("manifest of model {model_id}"), e))
}

/// The manifest of `model_id`; `model_not_found` when the model is not stored completely.
pub async fn require_manifest(mesh: &Mesh, model_id: &str) -> Result<ModelManifest, ProtocolError> {
    manifest(mesh, model_id).await?.ok_or_else(|| {
        ProtocolError::new(
            ErrorCode::ModelNotFound,
            format!("no stored model `{model_id}`"),
        )
    })
}

/// Registers the stored model `source` under `model_id` as well: a manifest under
/// `model_id` that names `source`'s files where they are (nothing is copied). Writing it
/// again is harmless.
pub async fn register(
    mesh: &Mesh,
    model_id: &str,
    source: &ModelManifest,
) -> Result<ModelManifest, ProtocolError> {
    let registered = ModelManifest {
        model_id: model_id.to_string(),
        source_model_id: Some(
            source
                .source_model_id
                .clone()
                .unwrap_or_else(|| source.model_id.clone()),
        ),
        created_ms: lexmesh_protocol::time::now_ms(),
        ..source.clone()
    };
    publish_manifest(mesh, &registered).await?;
    Ok(registered)
}

/// Downloads the files `manifest` lists into `dir`.
pub async fn fetch(mesh: &Mesh, manifest: &ModelManifest, dir: &Path) -> Result<(), ProtocolError> {
    let owner = manifest
        .source_model_id
        .as_deref()
        .unwrap_or(&manifest.model_id);
    for file in &manifest.files {
        let name = if manifest.folder.is_empty() {
            names::model_file(owner, &file.name)
        } else {
            names::model_file(owner, &format!("{}/{}", manifest.folder, file.name))
        };
        let found = objects::get_file(&mesh.models, &name, &dir.join(&file.name))
            .await
            .map_err(runtime_error)?;
        if !found {
            return Err(internal(
                "reading a model",
                format!("object {name} is missing"),
            ));
        }
    }
    Ok(())
}
