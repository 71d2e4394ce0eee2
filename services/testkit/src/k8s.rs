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

/// Every document of every manifest the kustomization lists, with its file, and the
/// ConfigMaps its `configMapGenerator` makes (file `kustomization.yaml`, see
/// [`generated_config_maps`]).
///
/// # Panics
///
/// As [`read_yaml`], [`resources`] and [`generated_config_maps`].
pub fn manifests() -> Vec<(String, Value)> {
    resources()
        .into_iter()
        .flat_map(|file| read_yaml(&file).into_iter().map(move |d| (file.clone(), d)))
        .chain(
            generated_config_maps()
                .into_iter()
                .map(|d| ("kustomization.yaml".to_owned(), d)),
        )
        .collect()
}

/// The ConfigMaps of the kustomization's `configMapGenerator`, as kustomize makes them: each
/// listed file (`path`, or `key=path`) under `data`, in the generator's namespace (else the
/// kustomization's), with the generator's `options.labels`. Labels the kustomization adds to
/// every object are left out, as [`manifests`] leaves them out of the other objects.
///
/// # Panics
///
/// When a generator uses what this does not model: `literals`, `envs`, `behavior`, or a name
/// with kustomize's content hash (every generator must set `disableNameSuffixHash: true`, so
/// the manifests can name the ConfigMap as it is).
pub fn generated_config_maps() -> Vec<Value> {
    let kustomization = read_yaml("kustomization.yaml");
    let kustomization = &kustomization[0];
    let generators = match kustomization.get("configMapGenerator") {
        Some(generators) => generators
            .as_array()
            .expect("kustomization.yaml: configMapGenerator is a list")
            .clone(),
        None => return Vec::new(),
    };
    generators
        .iter()
        .map(|generator| {
            let name = generator["name"]
                .as_str()
                .expect("kustomization.yaml: a configMapGenerator has a name");
            for unmodelled in ["literals", "envs", "behavior"] {
                assert!(
                    generator.get(unmodelled).is_none(),
                    "kustomization.yaml: configMapGenerator {name} uses `{unmodelled}`, which \
                     lexmesh_testkit::k8s does not model"
                );
            }
            let options = &generator["options"];
            assert_eq!(
                options["disableNameSuffixHash"], true,
                "kustomization.yaml: configMapGenerator {name} needs \
                 `options.disableNameSuffixHash: true` (the manifests name it without a hash)"
            );
            let mut data = serde_json::Map::new();
            for entry in generator["files"]
                .as_array()
                .expect("kustomization.yaml: a configMapGenerator lists files")
            {
                let entry = entry.as_str().expect("a generator's file is a string");
                let (key, file) = match entry.split_once('=') {
                    Some((key, file)) => (key, file),
                    None => (entry.rsplit('/').next().unwrap_or(entry), entry),
                };
                let path = k8s_dir().join(file);
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                data.insert(key.to_owned(), Value::String(text));
            }
            let namespace = generator
                .get("namespace")
                .or_else(|| kustomization.get("namespace"))
                .cloned()
                .unwrap_or(Value::Null);
            let mut metadata = serde_json::Map::new();
            metadata.insert("name".to_owned(), Value::String(name.to_owned()));
            if !namespace.is_null() {
                metadata.insert("namespace".to_owned(), namespace);
            }
            if let Some(labels) = options.get("labels") {
                metadata.insert("labels".to_owned(), labels.clone());
            }
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata,
                "data": data,
            })
        })
        .collect()
}

/// The value of `key` in the Secret `name` of `all` (its `stringData`, as the manifests here
/// write it).
///
/// # Panics
///
/// When there is not exactly one such Secret, or it has no such key in `stringData`.
pub fn secret_value<'a>(all: &'a [(String, Value)], name: &str, key: &str) -> &'a str {
    object(all, "Secret", name)["stringData"][key]
        .as_str()
        .unwrap_or_else(|| panic!("Secret {name} has no `{key}` in stringData"))
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
