//! The Kubernetes manifests in `k8s/`, checked offline against the schemas a cluster checks
//! them against, and against each other and lexmesh's own names.
//!
//! - Every manifest the kustomization lists is validated by kubernetes-validate (the
//!   Kubernetes API's OpenAPI schemas of each release, shipped inside the package) for every
//!   Kubernetes version in [`KUBERNETES_VERSIONS`], with `--strict`: an unknown field is an
//!   error, as it is for `kubectl apply` (server-side field validation is strict by default).
//! - `keda.yaml`, which is applied on its own, is validated against KEDA's `ScaledObject` as
//!   cloudcoil-models-keda 2.16.1.0 has it: pydantic models generated from the CRDs of KEDA
//!   2.16.1 (types, required fields, bounds), plus a check that no field is unknown to them.
//!   That package does not ship the CRD file itself; it is the closest to KEDA's own schema
//!   that a package registry offers.
//! - The kustomization lists every manifest but the ones left out on purpose; KEDA scales
//!   each worker on the lag of exactly the consumers its service creates; the disruption
//!   budgets select their Deployment's pods and never block a node drain.
//!
//! Needs `scripts/setup-k8s-tests` (run by `scripts/test`), which makes `.tools/k8s-venv/`.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lexmesh_protocol::names::{self, Service};
use lexmesh_testkit::k8s::{k8s_dir, manifests, object, read_yaml, resources};
use serde_json::Value;

/// The Kubernetes versions the manifests are claimed valid for: the newest three minor
/// versions whose schemas the pinned kubernetes-validate (1.37.0) ships. k8s/README.md names
/// them too.
const KUBERNETES_VERSIONS: [&str; 3] = ["1.35", "1.36", "1.37"];

/// Manifests in `k8s/` that the kustomization leaves out on purpose.
const OUTSIDE_KUSTOMIZATION: [&str; 1] = [
    // Its ScaledObjects need KEDA's CRDs, which not every cluster has: `kubectl apply -k k8s/`
    // would fail on them. It is applied on its own after KEDA is installed.
    "keda.yaml",
];

/// The NATS account the services live in: the server's global account, as nats.yaml
/// configures no `accounts`.
const NATS_ACCOUNT: &str = "$G";

/// Validates each document of a file against cloudcoil-models-keda's models, and reports
/// fields the models do not know.
const KEDA_CHECK: &str = r#"
import sys, yaml, pydantic
from cloudcoil.models.keda import v1alpha1

def unknown(given, kept, path):
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                yield f"{path}.{key}: unknown field"
            else:
                yield from unknown(value, kept[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (g, k) in enumerate(zip(given, kept)):
            yield from unknown(g, k, f"{path}[{i}]")

problems = []
with open(sys.argv[1]) as f:
    documents = [d for d in yaml.safe_load_all(f) if d is not None]
for n, document in enumerate(documents, 1):
    kind = document.get("kind")
    name = f"document {n} ({kind} {(document.get('metadata') or {}).get('name')})"
    model = getattr(v1alpha1, str(kind), None)
    if document.get("apiVersion") != "keda.sh/v1alpha1" or not isinstance(model, type):
        problems.append(f"{name}: not a keda.sh/v1alpha1 kind")
        continue
    try:
        parsed = model.model_validate(document)
    except pydantic.ValidationError as e:
        problems.append(f"{name}: {e}")
        continue
    kept = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    problems += [f"{name}: {p}" for p in unknown(document, kept, "")]
print("\n".join(problems))
sys.exit(1 if problems else 0)
"#;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A program of `.tools/k8s-venv/bin/`; a missing one fails the test with what to run.
fn venv_tool(name: &str) -> PathBuf {
    let path = root().join(".tools/k8s-venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-k8s-tests (scripts/test does), which installs \
         kubernetes-validate and KEDA's models into .tools/k8s-venv/",
        path.display()
    );
    path
}

fn run(command: &mut Command) -> Output {
    command
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {value}"))
}

fn int_of(value: &Value, what: &str) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: expected an integer, got {value}"))
}

#[test]
fn the_kustomization_lists_every_manifest_but_the_ones_left_out() {
    let mut on_disk: Vec<String> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .collect();
    for left_out in OUTSIDE_KUSTOMIZATION {
        assert!(
            on_disk.iter().any(|f| f == left_out),
            "k8s/{left_out} is gone: drop it from OUTSIDE_KUSTOMIZATION"
        );
    }
    on_disk.retain(|f| f != "kustomization.yaml" && !OUTSIDE_KUSTOMIZATION.contains(&f.as_str()));
    on_disk.sort();

    let listed = resources();
    let mut sorted = listed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        listed.len(),
        "a resource listed twice: {listed:?}"
    );
    assert_eq!(
        sorted, on_disk,
        "kustomization.yaml `resources` must list every manifest in k8s/ except {:?}",
        OUTSIDE_KUSTOMIZATION
    );
}

#[test]
fn every_kustomized_manifest_is_valid_for_each_supported_kubernetes_version() {
    let validate = venv_tool("kubernetes-validate");
    let mut failures = Vec::new();
    for file in resources() {
        let documents = read_yaml(&file).len();
        assert!(documents > 0, "k8s/{file} holds no object");
        let mut command = Command::new(&validate);
        command.arg("--strict");
        for version in KUBERNETES_VERSIONS {
            command.args(["--kubernetes-version", version]);
        }
        let output = run(command.arg(k8s_dir().join(&file)));
        let report = text(&output);
        // Success is a zero exit and one `INFO … passed … against version V` line per object
        // and version. Anything else counts: the tool only warns, exit 0, for a kind it has no
        // schema for, and falls back silently to an older schema for a version it lacks.
        let passed_for = |version: &str| {
            report
                .lines()
                .filter(|line| {
                    line.starts_with("INFO ")
                        && line.contains(" passed for resource ")
                        && line.ends_with(&format!(" against version {version}"))
                })
                .count()
        };
        let all_passed = KUBERNETES_VERSIONS
            .iter()
            .all(|version| passed_for(version) == documents);
        let lines = report.lines().filter(|l| !l.trim().is_empty()).count();
        if !output.status.success() || !all_passed || lines != documents * KUBERNETES_VERSIONS.len()
        {
            failures.push(format!(
                "k8s/{file} ({documents} objects; {}):\n{report}",
                output.status
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "kubernetes-validate --strict for Kubernetes {KUBERNETES_VERSIONS:?} found problems:\n\n{}",
        failures.join("\n")
    );
}

#[test]
fn keda_yaml_is_valid_for_kedas_scaled_object_schema() {
    let path = k8s_dir().join("keda.yaml");
    let output = run(Command::new(venv_tool("python"))
        .args(["-c", KEDA_CHECK])
        .arg(&path));
    assert!(
        output.status.success(),
        "{} does not match KEDA's keda.sh/v1alpha1 schema (cloudcoil-models-keda):\n{}",
        path.display(),
        text(&output)
    );
}

/// Jobs one replica of `deployment` runs at once: `LEXMESH_JOBS__CONCURRENCY` in its pod, else
/// `jobs.concurrency` of the `lexmesh.toml` it mounts.
fn concurrency(all: &[(String, Value)], deployment: &Value) -> u32 {
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let from_env = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "LEXMESH_JOBS__CONCURRENCY");
    if let Some(env) = from_env {
        return str_of(&env["value"], "LEXMESH_JOBS__CONCURRENCY")
            .parse()
            .unwrap();
    }
    let toml = str_of(
        &object(all, "ConfigMap", "lexmesh-config")["data"]["lexmesh.toml"],
        "lexmesh.toml",
    );
    let config: lexmesh_runtime::Config = toml::from_str(toml).unwrap();
    config.jobs.concurrency
}

#[test]
fn keda_scales_each_worker_on_the_lag_of_its_own_consumers() {
    let all = manifests();
    let scaled: Vec<Value> = read_yaml("keda.yaml");
    let names: BTreeSet<&str> = scaled
        .iter()
        .map(|d| str_of(&d["metadata"]["name"], "ScaledObject name"))
        .collect();
    assert_eq!(names, BTreeSet::from(["evaluator", "trainer"]));

    // KEDA reaches NATS's monitoring port from its own namespace, through Service `nats`.
    let nats = object(&all, "Service", "nats");
    let monitor = nats["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "monitor")
        .expect("Service nats has a `monitor` port");
    let endpoint = format!(
        "nats.{}.svc.cluster.local:{}",
        str_of(&nats["metadata"]["namespace"], "nats namespace"),
        monitor["port"]
    );

    for object_ in &scaled {
        let name = str_of(&object_["metadata"]["name"], "name");
        assert_eq!(object_["kind"], "ScaledObject", "{name}");
        assert_eq!(object_["metadata"]["namespace"], "lexmesh", "{name}");
        let spec = &object_["spec"];
        let target = &spec["scaleTargetRef"];
        assert_eq!(target["apiVersion"], "apps/v1", "{name}");
        assert_eq!(target["kind"], "Deployment", "{name}");
        let deployment_name = str_of(&target["name"], "scaleTargetRef.name");
        let deployment = object(&all, "Deployment", deployment_name);

        // One autoscaler per Deployment: KEDA makes its own HPA.
        for (file, hpa) in all
            .iter()
            .filter(|(_, d)| d["kind"] == "HorizontalPodAutoscaler")
        {
            assert_ne!(
                hpa["spec"]["scaleTargetRef"]["name"], deployment_name,
                "{file}: a HorizontalPodAutoscaler targets {deployment_name}, which KEDA scales"
            );
        }

        let min = int_of(&spec["minReplicaCount"], "minReplicaCount");
        let max = int_of(&spec["maxReplicaCount"], "maxReplicaCount");
        let replicas = int_of(&deployment["spec"]["replicas"], "replicas");
        assert!(1 <= min && min <= max, "{name}: replicas {min}..{max}");
        assert!(
            (min..=max).contains(&replicas),
            "{name}: the Deployment starts at {replicas}, outside {min}..{max}"
        );

        // The consumers are exactly the ones the service's replicas share.
        let service: Service = deployment_name.parse().unwrap();
        let expected: BTreeSet<String> = service
            .job_kinds()
            .iter()
            .map(|kind| names::consumer(*kind))
            .collect();
        let triggers = spec["triggers"].as_array().unwrap();
        let consumers: BTreeSet<String> = triggers
            .iter()
            .map(|t| str_of(&t["metadata"]["consumer"], "consumer").to_owned())
            .collect();
        assert_eq!(consumers, expected, "{name}: consumers");
        assert_eq!(consumers.len(), triggers.len(), "{name}: a consumer twice");

        let per_replica = concurrency(&all, deployment);
        for trigger in triggers {
            let metadata = &trigger["metadata"];
            assert_eq!(trigger["type"], "nats-jetstream", "{name}");
            assert_eq!(metadata["natsServerMonitoringEndpoint"], endpoint, "{name}");
            assert_eq!(metadata["account"], NATS_ACCOUNT, "{name}");
            assert_eq!(metadata["stream"], names::JOBS_STREAM, "{name}");
            // Lag = jobs waiting + jobs running: one replica per `jobs.concurrency` of them.
            let lag: u32 = str_of(&metadata["lagThreshold"], "lagThreshold")
                .parse()
                .unwrap();
            assert_eq!(lag, per_replica, "{name}: lagThreshold vs jobs.concurrency");
            let activation: u32 = str_of(
                &metadata["activationLagThreshold"],
                "activationLagThreshold",
            )
            .parse()
            .unwrap();
            assert!(activation <= lag, "{name}: activationLagThreshold");
        }
    }
}

#[test]
fn disruption_budgets_cover_health_and_metrics_and_never_block_a_drain() {
    let all = manifests();
    let budgets: Vec<&(String, Value)> = all
        .iter()
        .filter(|(_, d)| d["kind"] == "PodDisruptionBudget")
        .collect();
    let names: BTreeSet<&str> = budgets
        .iter()
        .map(|(_, d)| str_of(&d["metadata"]["name"], "PodDisruptionBudget name"))
        .collect();
    assert_eq!(names, BTreeSet::from(["health", "metrics"]));

    for (file, budget) in budgets {
        let name = str_of(&budget["metadata"]["name"], "name");
        assert_eq!(budget["apiVersion"], "policy/v1", "{file}: {name}");
        let selector = budget["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap_or_else(|| panic!("{file}: {name} selects by matchLabels"));
        // Exactly one workload's pods, and that one in the budget's own file.
        let selected: Vec<&(String, Value)> = all
            .iter()
            .filter(|(_, d)| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
            .filter(|(_, d)| {
                let labels = &d["spec"]["template"]["metadata"]["labels"];
                selector.iter().all(|(k, v)| &labels[k] == v)
            })
            .collect();
        assert_eq!(
            selected.len(),
            1,
            "{file}: {name} selects {} workloads",
            selected.len()
        );
        let (workload_file, workload) = selected[0];
        assert_eq!(
            workload_file, file,
            "{name}: keep the budget beside its Deployment"
        );
        let replicas = int_of(&workload["spec"]["replicas"], "replicas");
        // At its starting size the workload may lose a pod to a drain: a budget that allows
        // no disruption at all would hang every node drain.
        let spec = &budget["spec"];
        let allowed = match (spec.get("minAvailable"), spec.get("maxUnavailable")) {
            (Some(min), None) => replicas - int_of(min, "minAvailable (no percentages)"),
            (None, Some(max)) => int_of(max, "maxUnavailable (no percentages)"),
            _ => panic!("{file}: {name} sets one of minAvailable and maxUnavailable"),
        };
        assert!(
            allowed >= 1,
            "{file}: {name} allows no disruption at {replicas} replicas: node drains would hang"
        );
    }
}
