//! Trained models in the `lexmesh_models` object store: every file of the model folder as
//! `<model>/<file>`, then `<model>/manifest.json`. A model without a manifest is incomplete
//! and treated as absent.

use std::path::Path;

use lexmesh_protocol::record::{ModelFile, ModelManifest};
use lexmesh_protocol::{ErrorCode, ProtocolError, names};
use lexmesh_runtime::{Mesh, objects};

use super::{internal, unavailable};

/// Uploads the model folder and then its manifest (`files` is filled in here).
pub async fn store(
    mesh: &Mesh,
    dir: &Path,
    mut manifest: ModelManifest,
) -> Result<ModelManifest, ProtocolError> {
    // Drop an older manifest first: readers never see a manifest over half-replaced files.
    let manifest_name = names::model_manifest(&manifest.model_id);
    let _ = mesh.models.delete(&manifest_name).await;
    let uploaded = objects::sync_dir(&mesh.models, &manifest.model_id, dir, &[])
        .await
        .map_err(unavailable)?;
    manifest.files = uploaded
        .into_iter()
        .map(|(name, bytes)| ModelFile { name, bytes })
        .collect();
    let body =
        serde_json::to_vec_pretty(&manifest).map_err(|e| internal("encoding a manifest", e))?;
    objects::put_bytes(&mesh.models, &manifest_name, &body)
        .await
        .map_err(unavailable)?;
    Ok(manifest)
}

/// The manifest of `model_id`, if the model is stored completely.
pub async fn manifest(mesh: &Mesh, model_id: &str) -> Result<Option<ModelManifest>, ProtocolError> {
    let Some(bytes) = objects::get_bytes(&mesh.models, &names::model_manifest(model_id))
        .await
        .map_err(unavailable)?
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

/// Downloads the files `manifest` lists into `dir`.
pub async fn fetch(mesh: &Mesh, manifest: &ModelManifest, dir: &Path) -> Result<(), ProtocolError> {
    for file in &manifest.files {
        let name = names::model_file(&manifest.model_id, &file.name);
        let found = objects::get_file(&mesh.models, &name, &dir.join(&file.name))
            .await
            .map_err(unavailable)?;
        if !found {
            return Err(internal(
                "reading a model",
                format!("object {name} is missing"),
            ));
        }
    }
    Ok(())
}
