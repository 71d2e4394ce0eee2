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
//!   budgets select their workload's pods and never block a node drain.
//! - NATS is a three-node JetStream cluster: `nats-server -t` accepts the pods' `nats.conf`
//!   (with the permission file and the environment they get); the routes, ports, names and
//!   volumes agree with the StatefulSet and its headless Service; the services' `lexmesh.toml`
//!   names every node and keeps 3 copies; every Deployment logs in with the password the
//!   server expects. Three real servers run that `nats.conf` on loopback, form a cluster, and
//!   serve the services' user and a publisher as the permission sets say.
//!
//! Needs `scripts/setup-k8s-tests` (run by `scripts/test`), which makes `.tools/k8s-venv/`,
//! and a current nats-server (`scripts/setup-nats`).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lexmesh_protocol::names::{self, Service};
use lexmesh_runtime::nats_server::{self, ServerFlavor};
use lexmesh_runtime::nats_url::server_addresses;
use lexmesh_testkit::k8s::{k8s_dir, manifests, object, read_yaml, resources, secret_value};
use lexmesh_testkit::{ChildProcess, TRAIN, eventually};
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
/// configures no `accounts` (its `authorization` users are in it).
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

    // KEDA reaches NATS's monitoring port from its own namespace, through the headless
    // Service that names the StatefulSet's pods: in a cluster it looks for a consumer's leader
    // at `<server_name>.<endpoint>`, and the server name is the pod name.
    let statefulset = object(&all, "StatefulSet", "nats");
    let headless_name = str_of(&statefulset["spec"]["serviceName"], "serviceName");
    let headless = object(&all, "Service", headless_name);
    assert_eq!(headless["spec"]["clusterIP"], "None", "{headless_name}");
    let conf = nats_conf(&all);
    assert_eq!(conf_value(conf, "server_name"), "$POD_NAME");
    assert_eq!(
        conf_value(conf_block(conf, "cluster"), "no_advertise"),
        "true",
        "with advertised client addresses KEDA would ask those instead"
    );
    let monitor = service_port(headless, "monitor");
    let endpoint = format!(
        "{headless_name}.{}.svc.cluster.local:{monitor}",
        str_of(&headless["metadata"]["namespace"], "nats namespace"),
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
fn disruption_budgets_cover_nats_health_and_metrics_and_never_block_a_drain() {
    let all = manifests();
    let budgets: Vec<&(String, Value)> = all
        .iter()
        .filter(|(_, d)| d["kind"] == "PodDisruptionBudget")
        .collect();
    let names: BTreeSet<&str> = budgets
        .iter()
        .map(|(_, d)| str_of(&d["metadata"]["name"], "PodDisruptionBudget name"))
        .collect();
    assert_eq!(names, BTreeSet::from(["health", "metrics", "nats"]));

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
            "{name}: keep the budget beside its workload"
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
        if workload["kind"] == "StatefulSet" {
            // NATS: JetStream needs a majority of its nodes; a drain must never take more.
            assert!(
                allowed <= (replicas - 1) / 2,
                "{file}: {name} lets {allowed} of {replicas} NATS nodes go: JetStream loses \
                 its quorum"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// NATS: a three-node JetStream cluster, its users, and the services that log in to it.

/// The Secret with the NATS users' passwords, and the services' user (nats.yaml).
const NATS_AUTH_SECRET: &str = "lexmesh-nats-auth";
const SERVICES_USER: &str = "lexmesh";
const PUBLISHER_USER: &str = "publisher";

/// The container of the nats StatefulSet.
fn nats_container(all: &[(String, Value)]) -> &Value {
    let containers = object(all, "StatefulSet", "nats")["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("the nats StatefulSet has containers");
    assert_eq!(containers.len(), 1, "one container in the nats pods");
    &containers[0]
}

/// `nats.conf` of ConfigMap nats-config.
fn nats_conf(all: &[(String, Value)]) -> &str {
    str_of(
        &object(all, "ConfigMap", "nats-config")["data"]["nats.conf"],
        "nats.conf",
    )
}

/// The text between the braces of `name { … }` at the start of a line of nats.conf.
fn conf_block<'a>(conf: &'a str, name: &str) -> &'a str {
    let start = conf
        .lines()
        .find(|line| {
            let line = line.trim_start();
            line.strip_prefix(name)
                .is_some_and(|rest| rest.trim_start().starts_with('{'))
        })
        .unwrap_or_else(|| panic!("nats.conf has no `{name} {{` block:\n{conf}"));
    let offset = start.as_ptr() as usize - conf.as_ptr() as usize;
    let open = offset + start.find('{').unwrap();
    let mut depth = 0;
    for (i, c) in conf[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &conf[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("nats.conf: `{name}` block not closed")
}

/// The value of `key: value` (a line of its own, outside comments) in a nats.conf text.
fn conf_value<'a>(conf: &'a str, key: &str) -> &'a str {
    let values: Vec<&str> = conf
        .lines()
        .filter_map(|line| {
            line.trim()
                .strip_prefix(key)?
                .trim_start()
                .strip_prefix(':')
        })
        .map(str::trim)
        .collect();
    assert_eq!(
        values.len(),
        1,
        "nats.conf: `{key}:` once, found {values:?}"
    );
    values[0]
}

/// A duration of nats.conf such as `30s`, in seconds.
fn conf_seconds(conf: &str, key: &str) -> i64 {
    let value = conf_value(conf, key);
    value
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("nats.conf: {key} is `{value}`, expected whole seconds"))
}

/// A user of nats.conf's `authorization` block: name, the variable of its password, and the
/// variable of its permissions (both without `$`).
#[derive(Debug)]
struct ConfUser {
    user: String,
    password_var: String,
    permissions_var: String,
}

fn conf_users(conf: &str) -> Vec<ConfUser> {
    conf_block(conf, "authorization")
        .lines()
        .filter(|line| line.trim_start().starts_with('{'))
        .map(|line| {
            let fields: Vec<(&str, &str)> = line
                .trim()
                .trim_start_matches('{')
                .trim_end_matches('}')
                .split(',')
                .filter_map(|field| field.split_once(':'))
                .map(|(k, v)| (k.trim(), v.trim()))
                .collect();
            let field = |key: &str| {
                fields
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| *v)
                    .unwrap_or_else(|| panic!("nats.conf user line without {key}: {line}"))
            };
            let variable = |key: &str| {
                field(key)
                    .strip_prefix('$')
                    .unwrap_or_else(|| panic!("nats.conf: {key} is not a variable in {line}"))
                    .to_owned()
            };
            ConfUser {
                user: field("user").to_owned(),
                password_var: variable("password"),
                permissions_var: variable("permissions"),
            }
        })
        .collect()
}

/// The route URLs of nats.conf's `cluster` block: (scheme, host, port).
fn conf_routes(conf: &str) -> Vec<(String, String, u16)> {
    let cluster = conf_block(conf, "cluster");
    let start = cluster
        .find("routes")
        .expect("nats.conf: the cluster block lists routes");
    let list = &cluster[start..];
    let list = &list[list.find('[').expect("routes: [")..list.find(']').expect("routes: ]")];
    list.split([' ', '\n', ','])
        .filter(|token| token.contains("://"))
        .map(|url| {
            let (scheme, rest) = url.split_once("://").unwrap();
            let (host, port) = rest
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("route {url} names no port"));
            (
                scheme.to_owned(),
                host.to_owned(),
                port.parse()
                    .unwrap_or_else(|e| panic!("route {url}: port: {e}")),
            )
        })
        .collect()
}

/// The `port` of the Service's port named `name`.
fn service_port(service: &Value, name: &str) -> i64 {
    let port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "Service {} has no port named {name}",
                service["metadata"]["name"]
            )
        });
    assert_eq!(port["targetPort"], name, "port {name}: targetPort by name");
    int_of(&port["port"], "port")
}

/// The `containerPort` of the container's port named `name`.
fn container_port(container: &Value, name: &str) -> i64 {
    let port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("container {} has no port {name}", container["name"]));
    int_of(&port["containerPort"], "containerPort")
}

/// The environment a container gets in pod `pod`, as Kubernetes resolves it: plain `value`s,
/// `fieldRef`s of the pod's name and namespace, `secretKeyRef`s from the Secret manifests.
fn pod_env(all: &[(String, Value)], container: &Value, pod: &str) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let name = str_of(&entry["name"], "env name").to_owned();
            let from = &entry["valueFrom"];
            let value = if let Some(value) = entry["value"].as_str() {
                value.to_owned()
            } else if let Some(field) = from["fieldRef"]["fieldPath"].as_str() {
                match field {
                    "metadata.name" => pod.to_owned(),
                    "metadata.namespace" => "lexmesh".to_owned(),
                    other => panic!("{name}: fieldRef {other} is not resolved here"),
                }
            } else if from["secretKeyRef"].is_object() {
                let reference = &from["secretKeyRef"];
                secret_value(
                    all,
                    str_of(&reference["name"], "secretKeyRef.name"),
                    str_of(&reference["key"], "secretKeyRef.key"),
                )
                .to_owned()
            } else {
                panic!("{name}: an env entry this test does not resolve: {entry}")
            };
            (name, value)
        })
        .collect()
}

/// The `secretKeyRef` (Secret, key) of the container's variable `name`.
fn secret_ref<'a>(container: &'a Value, name: &str) -> (&'a str, &'a str) {
    let entry = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("container {} has no env {name}", container["name"]));
    let reference = &entry["valueFrom"]["secretKeyRef"];
    (
        str_of(&reference["name"], &format!("{name}: secretKeyRef.name")),
        str_of(&reference["key"], &format!("{name}: secretKeyRef.key")),
    )
}

/// Writes the nats pods' configuration folder into `dir` as the pods see it (every key of
/// every ConfigMap the volume mounted there projects) and returns the path of the file the
/// container's `--config` names, inside `dir`.
fn write_nats_config(all: &[(String, Value)], dir: &Path) -> PathBuf {
    let container = nats_container(all);
    let args = container["args"].as_array().unwrap();
    let config = args
        .iter()
        .position(|a| a == "--config")
        .map(|i| str_of(&args[i + 1], "--config"))
        .expect("the nats container runs with --config");
    let (folder, file) = config.rsplit_once('/').unwrap();
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == folder)
        .unwrap_or_else(|| panic!("no volume mounted at {folder}"));
    let pod = &object(all, "StatefulSet", "nats")["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {}", mount["name"]));
    let config_maps: Vec<&str> = match volume["projected"]["sources"].as_array() {
        Some(sources) => sources
            .iter()
            .map(|s| str_of(&s["configMap"]["name"], "a projected source's configMap"))
            .collect(),
        None => vec![str_of(&volume["configMap"]["name"], "configMap volume")],
    };
    for name in config_maps {
        let data = object(all, "ConfigMap", name)["data"].as_object().unwrap();
        for (key, text) in data {
            std::fs::write(dir.join(key), str_of(text, key)).unwrap();
        }
    }
    dir.join(file)
}

#[test]
fn nats_server_accepts_the_nats_conf_of_the_pods() {
    let all = manifests();
    let binary = nats_server::locate(ServerFlavor::Current).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let conf = write_nats_config(&all, dir.path());
    let env = pod_env(&all, nats_container(&all), "nats-0");
    let test = |env: &[(String, String)]| {
        run(Command::new(&binary)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("-t")
            .arg("-c")
            .arg(&conf))
    };
    let output = test(&env);
    assert!(
        output.status.success() && text(&output).contains("is valid"),
        "{} -t refuses k8s nats.conf (with {:?} from the container's env):\n{}",
        binary.display(),
        env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        text(&output)
    );
    // Each variable of the container is one nats.conf reads: without it the server refuses
    // the configuration (so none is left over, and none is missing from the container).
    for (left_out, _) in &env {
        let fewer: Vec<(String, String)> =
            env.iter().filter(|(k, _)| k != left_out).cloned().collect();
        let output = test(&fewer);
        assert!(
            !output.status.success() && text(&output).contains(left_out.as_str()),
            "nats.conf does not need the container's {left_out}:\n{}",
            text(&output)
        );
    }
}

#[test]
fn nats_is_a_three_node_cluster_routed_through_its_headless_service() {
    let all = manifests();
    let nats = object(&all, "StatefulSet", "nats");
    let spec = &nats["spec"];
    let replicas = int_of(&spec["replicas"], "replicas");
    assert_eq!(
        replicas, 3,
        "three nodes: JetStream keeps working with one down"
    );
    // All nodes start at once: one alone cannot elect a meta leader.
    assert_eq!(spec["podManagementPolicy"], "Parallel");

    // The headless Service names the pods, lists them before they are ready (the routes of
    // a first start), and carries the cluster port.
    let headless_name = str_of(&spec["serviceName"], "serviceName");
    let headless = object(&all, "Service", headless_name);
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    let container = nats_container(&all);
    let cluster_port = container_port(container, "cluster");
    assert_eq!(service_port(headless, "cluster"), cluster_port);

    let conf = nats_conf(&all);
    let cluster = conf_block(conf, "cluster");
    assert_eq!(conf_value(cluster, "port"), cluster_port.to_string());
    let namespace = str_of(&nats["metadata"]["namespace"], "namespace");
    let routes = conf_routes(conf);
    let mut hosts: Vec<String> = Vec::new();
    for (scheme, host, port) in &routes {
        assert!(
            scheme == "nats-route" || scheme == "nats",
            "route scheme {scheme}"
        );
        assert_eq!(i64::from(*port), cluster_port, "route to {host}");
        // A pod of this StatefulSet through its headless Service, short or in full.
        let short = host
            .strip_suffix(&format!(".{namespace}.svc.cluster.local"))
            .unwrap_or(host);
        hosts.push(short.to_owned());
    }
    hosts.sort();
    let expected: Vec<String> = (0..replicas)
        .map(|i| format!("nats-{i}.{headless_name}"))
        .collect();
    assert_eq!(hosts, expected, "one route to every node");

    // The node's name is its pod's, stable across restarts with its volume.
    assert_eq!(conf_value(conf, "server_name"), "$POD_NAME");
    let env = pod_env(&all, container, "nats-1");
    assert!(env.contains(&("POD_NAME".to_owned(), "nats-1".to_owned())));
    // JetStream's files on the volume of the claim template.
    let claim = str_of(
        &spec["volumeClaimTemplates"][0]["metadata"]["name"],
        "claim name",
    );
    let data_mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == claim)
        .expect("the claim is mounted");
    assert_eq!(
        conf_value(conf_block(conf, "jetstream"), "store_dir"),
        str_of(&data_mount["mountPath"], "mountPath")
    );

    // Stopping a node: lame duck mode through the pid file nats.conf writes, on a volume,
    // and within the grace period.
    let pid_file = conf_value(conf, "pid_file");
    let pre_stop: Vec<&str> = container["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .expect("a preStop hook")
        .iter()
        .map(|a| str_of(a, "preStop"))
        .collect();
    assert_eq!(pre_stop.last(), Some(&format!("ldm={pid_file}").as_str()));
    let (pid_folder, _) = pid_file.rsplit_once('/').unwrap();
    assert!(
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == pid_folder),
        "{pid_folder} is a volume"
    );
    let lame_duck =
        conf_seconds(conf, "lame_duck_grace_period") + conf_seconds(conf, "lame_duck_duration");
    let grace = int_of(
        &spec["template"]["spec"]["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    assert!(
        lame_duck < grace,
        "lame duck mode ({lame_duck} s) must end within the grace period ({grace} s)"
    );

    // Probes that suit a cluster: ready once the server runs (not once the cluster has
    // formed, which needs the other nodes), restarted only when JetStream is off.
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"],
        "/healthz?js-server-only=true"
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"],
        "/healthz?js-enabled-only=true"
    );
    assert!(container["startupProbe"]["httpGet"]["path"].is_string());

    // The nodes on different machines where possible.
    let pod_labels = spec["template"]["metadata"]["labels"].as_object().unwrap();
    let terms = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .expect("a preferred pod anti-affinity");
    assert!(
        terms.iter().any(|t| {
            let term = &t["podAffinityTerm"];
            term["topologyKey"] == "kubernetes.io/hostname"
                && term["labelSelector"]["matchLabels"]
                    .as_object()
                    .is_some_and(|m| m.iter().all(|(k, v)| pod_labels.get(k) == Some(v)))
        }),
        "anti-affinity on kubernetes.io/hostname against the other nats pods"
    );
}

#[test]
fn the_services_config_names_every_nats_node_and_keeps_three_copies() {
    let all = manifests();
    let toml = str_of(
        &object(&all, "ConfigMap", "lexmesh-config")["data"]["lexmesh.toml"],
        "lexmesh.toml",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lexmesh.toml");
    std::fs::write(&path, toml).unwrap();
    // The services' own loader (unknown keys are errors).
    let config = lexmesh_runtime::Config::load(Some(&path))
        .unwrap_or_else(|e| panic!("k8s/config.yaml's lexmesh.toml: {e}"));

    let nats = object(&all, "StatefulSet", "nats");
    let nodes = int_of(&nats["spec"]["replicas"], "replicas");
    assert_eq!(
        i64::try_from(config.nats.replicas).unwrap(),
        nodes,
        "a copy of every stream, bucket and store on each NATS node"
    );

    let headless_name = str_of(&nats["spec"]["serviceName"], "serviceName");
    let client_port = service_port(object(&all, "Service", headless_name), "client");
    let servers = server_addresses(&config.nats.url)
        .unwrap_or_else(|e| panic!("nats.url {}: {e}", config.nats.url));
    let mut named: Vec<String> = servers
        .iter()
        .map(|s| format!("{}:{}", s.host(), s.port()))
        .collect();
    named.sort();
    let expected: Vec<String> = (0..nodes)
        .map(|i| format!("nats-{i}.{headless_name}:{client_port}"))
        .collect();
    assert_eq!(named, expected, "nats.url lists every node");
    // The login comes from each Deployment (LEXMESH_NATS__*), never from this shared file.
    assert!(config.nats.user.is_none() && config.nats.password.is_none());
}

#[test]
fn every_service_logs_in_as_the_services_user_with_the_password_nats_expects() {
    let all = manifests();
    let users = conf_users(nats_conf(&all));
    let named: Vec<(&str, &str)> = users
        .iter()
        .map(|u| (u.user.as_str(), u.permissions_var.as_str()))
        .collect();
    assert_eq!(
        named,
        [
            (SERVICES_USER, "LEXMESH_SERVICES"),
            (PUBLISHER_USER, "LEXMESH_PUBLISHER")
        ],
        "nats.conf's users and their permission sets (k8s/nats-permissions.conf)"
    );
    let nats = nats_container(&all);
    // Each password: a variable of the nats container, from a key of the Secret.
    for user in &users {
        let (secret, key) = secret_ref(nats, &user.password_var);
        assert_eq!(secret, NATS_AUTH_SECRET, "{}", user.user);
        assert!(
            !secret_value(&all, secret, key).is_empty(),
            "{secret}/{key}"
        );
    }
    let services_password = secret_ref(nats, &users[0].password_var);

    let deployments: Vec<&Value> = all
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == "Deployment")
        .collect();
    let names: BTreeSet<&str> = deployments
        .iter()
        .map(|d| str_of(&d["metadata"]["name"], "name"))
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["evaluator", "health", "metrics", "preprocessor", "trainer"])
    );
    for deployment in deployments {
        let name = str_of(&deployment["metadata"]["name"], "name");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let env = pod_env(&all, container, &format!("{name}-0"));
        let value = |key: &str| {
            env.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{name}: no {key}"))
        };
        assert_eq!(value("LEXMESH_NATS__USER"), SERVICES_USER, "{name}");
        assert_eq!(
            secret_ref(container, "LEXMESH_NATS__PASSWORD"),
            services_password,
            "{name}: the password nats-server has for {SERVICES_USER}"
        );
    }
}

/// GET `path` of a nats-server monitoring port: the body, or None when it does not answer.
fn monitor_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_owned())
}

/// Three real nats-servers run the pods' nats.conf as it is, but on loopback: each on its own
/// ports (command-line flags, which override the file), its store in a folder of its own and
/// its routes' pod names replaced by the other nodes' addresses. Each gets the environment
/// its pod would (pod name, passwords from the Secret).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pods_nats_conf_forms_a_jetstream_cluster_for_the_services_and_the_publisher() {
    let all = manifests();
    let binary = nats_server::locate(ServerFlavor::Current).unwrap_or_else(|e| panic!("{e}"));
    let statefulset = object(&all, "StatefulSet", "nats");
    let nodes = usize::try_from(int_of(&statefulset["spec"]["replicas"], "replicas")).unwrap();
    let container = nats_container(&all);
    let free = || nats_server::free_port().unwrap();
    // (client, monitoring, cluster) port of each node.
    let ports: Vec<(u16, u16, u16)> = (0..nodes).map(|_| (free(), free(), free())).collect();
    let routes = conf_routes(nats_conf(&all));
    let store_dir = conf_value(conf_block(nats_conf(&all), "jetstream"), "store_dir").to_owned();

    let dir = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    for (n, (client, monitor, cluster)) in ports.iter().enumerate() {
        let pod = format!("nats-{n}");
        let node_dir = dir.path().join(&pod);
        std::fs::create_dir_all(node_dir.join("data")).unwrap();
        let conf_path = write_nats_config(&all, &node_dir);
        let mut conf = std::fs::read_to_string(&conf_path).unwrap();
        let stores = format!("store_dir: {store_dir}");
        assert_eq!(conf.matches(&stores).count(), 1, "{stores}");
        conf = conf.replace(
            &stores,
            &format!("store_dir: {}", node_dir.join("data").display()),
        );
        for (_, host, port) in &routes {
            let target = routes_target(host, &ports);
            let route = format!("{host}:{port}");
            assert_eq!(conf.matches(&route).count(), 1, "{route}");
            conf = conf.replace(&route, &format!("127.0.0.1:{target}"));
        }
        std::fs::write(&conf_path, conf).unwrap();
        let mut command = Command::new(&binary);
        command
            .env_clear()
            .envs(pod_env(&all, container, &pod))
            .arg("-c")
            .arg(&conf_path)
            .args(["-a", "127.0.0.1", "-p", &client.to_string()])
            .args(["-m", &monitor.to_string()])
            .args(["--cluster", &format!("nats://127.0.0.1:{cluster}")])
            .arg("-P")
            .arg(node_dir.join("nats.pid"));
        servers.push(ChildProcess::spawn(&pod, &mut command, node_dir.join("log")).unwrap());
    }

    // Every node healthy (JetStream included) and agreeing on a meta leader of all nodes.
    eventually(
        "a JetStream cluster of the three nodes with a meta leader",
        Duration::from_secs(20),
        || {
            for server in servers.iter_mut() {
                assert!(server.is_running(), "{} exited", server.name());
            }
            let ready = ports.iter().all(|(_, monitor, _)| {
                monitor_get(*monitor, "/healthz").is_some()
                    && monitor_get(*monitor, "/jsz")
                        .and_then(|body| serde_json::from_str::<Value>(&body).ok())
                        .is_some_and(|jsz| {
                            let meta = &jsz["meta_cluster"];
                            meta["cluster_size"] == nodes
                                && meta["leader"].as_str().is_some_and(|l| !l.is_empty())
                        })
            });
            std::future::ready(ready.then_some(()))
        },
    )
    .await;
    let urls: Vec<String> = ports
        .iter()
        .map(|(client, _, _)| format!("nats://127.0.0.1:{client}"))
        .collect();

    // The services: a trainer's environment (its user and password from the Secret) and the
    // shared lexmesh.toml (3 copies), with the pod names of nats.url replaced by the nodes
    // here. The command line opens the mesh as a service does, creating every stream,
    // bucket and store.
    let toml_path = dir.path().join("lexmesh.toml");
    std::fs::write(
        &toml_path,
        str_of(
            &object(&all, "ConfigMap", "lexmesh-config")["data"]["lexmesh.toml"],
            "lexmesh.toml",
        ),
    )
    .unwrap();
    let trainer =
        &object(&all, "Deployment", "trainer")["spec"]["template"]["spec"]["containers"][0];
    let trainer_env = pod_env(&all, trainer, "trainer-0");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let output = run(Command::new(env!("CARGO_BIN_EXE_lexmesh"))
            .args(["jobs", "--format", "json", "--config"])
            .arg(&toml_path)
            .envs(trainer_env.iter().map(|(k, v)| (k, v)))
            .env("LEXMESH_NATS__URL", urls.join(",")));
        if output.status.success() {
            assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "[]");
            break;
        }
        // A cluster just formed may not place three copies at once; a refused login is final.
        assert!(
            Instant::now() < deadline && !text(&output).to_lowercase().contains("authorization"),
            "`lexmesh jobs` as a trainer on the cluster failed:\n{}",
            text(&output)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let env = |key: &str| {
        trainer_env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let services = async_nats::ConnectOptions::with_user_and_password(
        env("LEXMESH_NATS__USER"),
        env("LEXMESH_NATS__PASSWORD"),
    )
    .connect(server_addresses(&urls.join(",")).unwrap())
    .await
    .expect("the services' user logs in");
    let js = async_nats::jetstream::new(services.clone());
    for stream in [
        names::JOBS_STREAM.to_owned(),
        format!("KV_{}", names::JOBS_BUCKET),
    ] {
        let info = js
            .get_stream(&stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.config.num_replicas, nodes, "{stream}: copies");
        let cluster = info.cluster.expect("a clustered stream");
        assert_eq!(
            cluster.replicas.len() + 1,
            nodes,
            "{stream}: a leader and its followers"
        );
    }

    // The publisher: may submit a job (stored, three times over), may not forge a heartbeat.
    let users = conf_users(nats_conf(&all));
    let publisher = users.iter().find(|u| u.user == PUBLISHER_USER).unwrap();
    let (secret, key) = secret_ref(container, &publisher.password_var);
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = errors.clone();
    let client = async_nats::ConnectOptions::with_user_and_password(
        PUBLISHER_USER.to_owned(),
        secret_value(&all, secret, key).to_owned(),
    )
    .event_callback(move |event| {
        let seen = seen.clone();
        async move {
            if let async_nats::Event::ServerError(error) = event {
                seen.lock().unwrap().push(error.to_string());
            }
        }
    })
    .connect(server_addresses(&urls.join(",")).unwrap())
    .await
    .expect("the publisher logs in");
    let ack = async_nats::jetstream::new(client.clone())
        .publish(TRAIN, "{}".into())
        .await
        .expect("the publisher may publish a job")
        .await
        .expect("the jobs stream stores it");
    assert_eq!(ack.stream, names::JOBS_STREAM);
    let forged = "lexmesh.heartbeat.trainer.forged";
    client.publish(forged, "{}".into()).await.unwrap();
    client.flush().await.unwrap();
    eventually(
        "the cluster refusing the publisher a heartbeat",
        Duration::from_secs(10),
        || {
            let refused =
                errors.lock().unwrap().iter().any(|e| {
                    e.to_lowercase().contains("permissions violation") && e.contains(forged)
                });
            std::future::ready(refused.then_some(()))
        },
    )
    .await;
    drop(servers);
}

/// The cluster port (of `ports`) of the node a route names: `nats-<n>.…`.
fn routes_target(host: &str, ports: &[(u16, u16, u16)]) -> u16 {
    let n: usize = host
        .split('.')
        .next()
        .and_then(|pod| pod.strip_prefix("nats-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("route host {host} is not a nats pod"));
    ports
        .get(n)
        .unwrap_or_else(|| panic!("route to {host}: there is no such node"))
        .2
}
