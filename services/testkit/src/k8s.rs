//! The `k8s/` manifests as JSON values, for the tests that check them.
#![allow(
    clippy::expect_used,
    reason = "a harness fails the test with a message when a manifest cannot be read"
)]

use std::path::PathBuf;

use serde_json::Value;

use crate::fixtures::repo_root;

/// The `k8s/` folder of the repository.
pub fn k8s_dir() -> PathBuf {
    repo_root().join("k8s")
}

/// Every document of `k8s/<file>` (empty documents left out).
///
/// # Panics
///
/// When the file cannot be read or is not YAML.
pub fn read_yaml(file: &str) -> Vec<Value> {
    let path = k8s_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let documents: Vec<Value> = serde_saphyr::from_str_multiple(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    documents.into_iter().filter(|d| !d.is_null()).collect()
}

/// The files `kustomization.yaml` lists under `resources`.
///
/// # Panics
///
/// When it is not one document listing file names.
pub fn resources() -> Vec<String> {
    let kustomization = read_yaml("kustomization.yaml");
    assert_eq!(kustomization.len(), 1, "kustomization.yaml: one document");
    kustomization[0]["resources"]
        .as_array()
        .expect("kustomization.yaml lists resources")
        .iter()
        .map(|r| r.as_str().expect("a resource is a file name").to_owned())
        .collect()
}

/// Every document of every manifest the kustomization lists, with its file.
///
/// # Panics
///
/// As [`read_yaml`] and [`resources`].
pub fn manifests() -> Vec<(String, Value)> {
    resources()
        .into_iter()
        .flat_map(|file| read_yaml(&file).into_iter().map(move |d| (file.clone(), d)))
        .collect()
}

/// The one object of this kind and name.
///
/// # Panics
///
/// When there is not exactly one.
pub fn object<'a>(all: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = all
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} {name}, found {}",
        found.len()
    );
    found[0]
}
