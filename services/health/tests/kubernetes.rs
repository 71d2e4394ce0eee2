//! The Kubernetes replacer against the API server's HTTP contract, and the `k8s/` manifests it
//! relies on.
//!
//! Each replacer test starts a small HTTP/1.1 server on a local port that answers like the
//! Kubernetes API server, points a real `kube::Client` at it (plain http, a bearer token) and
//! checks the exact request the replacer sent and how it read the answer. Nothing of ours is
//! mocked. The manifest tests read `k8s/*.yaml` with a YAML parser.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::sync::{Arc, Mutex};

use lexmesh_health::replace::kubernetes::KubernetesReplacer;
use lexmesh_health::replace::{ReplaceError, Replacer, Target};
use lexmesh_testkit::k8s::{manifests, object};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "lexmesh-test-token-7f3a";
const POD: &str = "trainer-6c9f7b8d4-x2k4p";

// ---------------------------------------------------------------------------------------------
// A fake Kubernetes API server.

/// One request as the fake API server received it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    /// The request target: path and query.
    target: String,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    fn query(&self) -> &str {
        self.target
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json_body(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

/// Answers every request with one canned response and records what it received.
struct FakeApiServer {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApiServer {
    async fn start(status: u16, content_type: &'static str, body: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = Arc::clone(&log);
                let body = body.clone();
                tokio::spawn(async move {
                    serve_one(stream, log, status, content_type, &body).await;
                });
            }
        });
        Self {
            url,
            received,
            task,
        }
    }

    /// A server that answers like the API server for a pod that exists: 200 and the pod, now
    /// terminating.
    async fn deleting(namespace: &str, pod: &str) -> Self {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod,
                "namespace": namespace,
                "uid": "0b7c6a52-5a8e-4d0e-9a43-3f1c2d9e8b11",
                "deletionTimestamp": "2026-05-01T10:00:40Z",
                "deletionGracePeriodSeconds": 40,
                "labels": {"app.kubernetes.io/component": "trainer"}
            },
            "spec": {"containers": [{"name": "trainer", "image": "lexmesh:latest"}]},
            "status": {"phase": "Running"}
        });
        Self::start(200, "application/json", pod.to_string()).await
    }

    /// A server that answers with a `Status` object, as the API server does for errors.
    async fn status(code: u16, reason: &str, message: &str) -> Self {
        let status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": {"name": POD, "kind": "pods"},
            "code": code
        });
        Self::start(code, "application/json", status.to_string()).await
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The one request the server received.
    fn only_request(&self) -> Received {
        let received = self.received();
        assert_eq!(
            received.len(),
            1,
            "expected exactly one request, got {received:#?}"
        );
        received.into_iter().next().unwrap()
    }

    /// A client for this server: plain http, a bearer token, as a pod's service account has.
    fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().unwrap());
        config.auth_info.token = Some(TOKEN.into());
        kube::Client::try_from(config).unwrap()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP/1.1 request, records it, answers and closes the connection.
async fn serve_one(
    mut stream: TcpStream,
    log: Arc<Mutex<Vec<Received>>>,
    status: u16,
    content_type: &str,
    body: &str,
) {
    let mut buf = Vec::new();
    let header_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..header_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap().split(' ');
    let method = request_line.next().unwrap().to_owned();
    let target = request_line.next().unwrap().to_owned();
    assert_eq!(request_line.next(), Some("HTTP/1.1"));
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut rest = buf[header_end + 4..].to_vec();
    let body_bytes = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        while find(&rest, b"0\r\n\r\n").is_none() {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed inside a chunked body");
            rest.extend_from_slice(&chunk[..n]);
        }
        dechunk(&rest)
    } else {
        let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
        while rest.len() < length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed inside the body");
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(length);
        rest
    };
    log.lock().unwrap().push(Received {
        method,
        target,
        headers,
        body: body_bytes,
    });
    let reason = match status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        _ => "Status",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await.unwrap();
    let _ = stream.shutdown().await;
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").unwrap();
        let size_field = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_field.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn target(namespace: Option<&str>) -> Target {
    Target {
        service: "trainer".into(),
        instance: POD.into(),
        host: POD.into(),
        pid: 1,
        namespace: namespace.map(str::to_owned),
    }
}

/// Checks the request is the pod deletion the API documents: `DELETE
/// /api/v1/namespaces/{namespace}/pods/{name}` with the bearer token and a JSON
/// `DeleteOptions` body.
fn assert_pod_delete(request: &Received, namespace: &str, pod: &str) {
    assert_eq!(request.method, "DELETE");
    assert_eq!(
        request.path(),
        format!("/api/v1/namespaces/{namespace}/pods/{pod}")
    );
    assert_eq!(
        request.query(),
        "",
        "no query parameters: {}",
        request.target
    );
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
}

// ---------------------------------------------------------------------------------------------
// The replacer.

#[tokio::test]
async fn deletes_the_pod_in_the_namespace_the_target_reported() {
    let server = FakeApiServer::deleting("lexmesh-a", POD).await;
    let replacer = KubernetesReplacer::with_client(server.client(), "elsewhere".into());

    let done = replacer.replace(&target(Some("lexmesh-a"))).await.unwrap();

    let request = server.only_request();
    assert_pod_delete(&request, "lexmesh-a", POD);
    // No options: the pod keeps its own terminationGracePeriodSeconds (40 s for the trainer).
    assert_eq!(request.json_body(), json!({}));
    assert!(done.contains(&format!("lexmesh-a/{POD}")), "{done}");
}

#[tokio::test]
async fn a_target_without_a_namespace_is_looked_for_in_the_default_namespace() {
    let server = FakeApiServer::deleting("lexmesh", POD).await;
    let replacer = KubernetesReplacer::with_client(server.client(), "lexmesh".into());
    assert_eq!(replacer.default_namespace(), "lexmesh");

    replacer.replace(&target(None)).await.unwrap();
    // A blank namespace in a heartbeat counts as none.
    replacer.replace(&target(Some(""))).await.unwrap();

    let received = server.received();
    assert_eq!(received.len(), 2, "{received:#?}");
    for request in &received {
        assert_pod_delete(request, "lexmesh", POD);
    }
}

#[tokio::test]
async fn a_grace_period_goes_into_the_delete_options() {
    let server = FakeApiServer::deleting("lexmesh", POD).await;
    let replacer = KubernetesReplacer::with_client(server.client(), "lexmesh".into())
        .with_grace_period(Some(5));

    replacer.replace(&target(Some("lexmesh"))).await.unwrap();

    let request = server.only_request();
    assert_pod_delete(&request, "lexmesh", POD);
    assert_eq!(request.json_body(), json!({"gracePeriodSeconds": 5}));
}

#[tokio::test]
async fn a_pod_already_gone_counts_as_replaced() {
    let server = FakeApiServer::status(404, "NotFound", &format!("pods \"{POD}\" not found")).await;
    let replacer = KubernetesReplacer::with_client(server.client(), "lexmesh".into());

    let done = replacer.replace(&target(Some("lexmesh"))).await.unwrap();

    assert_pod_delete(&server.only_request(), "lexmesh", POD);
    assert!(done.contains("pod already gone"), "{done}");
}

#[tokio::test]
async fn forbidden_says_which_rbac_permission_is_missing() {
    let message = format!(
        "pods \"{POD}\" is forbidden: User \"system:serviceaccount:lexmesh:lexmesh-health\" \
         cannot delete resource \"pods\" in API group \"\" in the namespace \"lexmesh\""
    );
    let server = FakeApiServer::status(403, "Forbidden", &message).await;
    let replacer = KubernetesReplacer::with_client(server.client(), "lexmesh".into());

    let error = replacer
        .replace(&target(Some("lexmesh")))
        .await
        .unwrap_err();

    assert_pod_delete(&server.only_request(), "lexmesh", POD);
    let ReplaceError::Forbidden { instance, reason } = &error else {
        panic!("expected Forbidden, got {error:?}");
    };
    assert_eq!(instance, POD);
    for needed in [
        "RBAC",
        "`delete`",
        "`pods`",
        "namespace lexmesh",
        "cannot delete",
    ] {
        assert!(reason.contains(needed), "{needed:?} missing from: {reason}");
    }
}

#[tokio::test]
async fn a_server_error_is_a_failure() {
    let server = FakeApiServer::status(500, "InternalError", "etcdserver: request timed out").await;
    let replacer = KubernetesReplacer::with_client(server.client(), "lexmesh".into());

    let error = replacer
        .replace(&target(Some("lexmesh")))
        .await
        .unwrap_err();

    assert_pod_delete(&server.only_request(), "lexmesh", POD);
    let ReplaceError::Failed { instance, reason } = &error else {
        panic!("expected Failed, got {error:?}");
    };
    assert_eq!(instance, POD);
    assert!(reason.contains("500"), "{reason}");
    assert!(reason.contains("etcdserver: request timed out"), "{reason}");
}

#[tokio::test]
async fn an_error_that_is_not_a_status_object_is_a_failure() {
    // A proxy in front of the API server answers in plain text.
    let server = FakeApiServer::start(502, "text/plain", "upstream connect error".into()).await;
    let replacer = KubernetesReplacer::with_client(server.client(), "lexmesh".into());

    let error = replacer
        .replace(&target(Some("lexmesh")))
        .await
        .unwrap_err();

    assert_pod_delete(&server.only_request(), "lexmesh", POD);
    let ReplaceError::Failed { reason, .. } = &error else {
        panic!("expected Failed, got {error:?}");
    };
    assert!(reason.contains("502"), "{reason}");
}

#[tokio::test]
async fn an_unreachable_api_server_is_a_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut config = kube::Config::new(url.parse().unwrap());
    config.auth_info.token = Some(TOKEN.into());
    let client = kube::Client::try_from(config).unwrap();
    let replacer = KubernetesReplacer::with_client(client, "lexmesh".into());

    let error = replacer
        .replace(&target(Some("lexmesh")))
        .await
        .unwrap_err();

    assert!(
        matches!(error, ReplaceError::Failed { .. }),
        "expected Failed, got {error:?}"
    );
}

#[tokio::test]
async fn a_target_without_a_host_is_out_of_reach_and_nothing_is_sent() {
    let server = FakeApiServer::deleting("lexmesh", POD).await;
    let replacer = KubernetesReplacer::with_client(server.client(), "lexmesh".into());
    let mut nameless = target(Some("lexmesh"));
    nameless.host = String::new();

    let error = replacer.replace(&nameless).await.unwrap_err();

    assert!(
        matches!(error, ReplaceError::OutOfReach { .. }),
        "expected OutOfReach, got {error:?}"
    );
    assert!(server.received().is_empty());
    assert_eq!(replacer.name(), "kubernetes");
}

// ---------------------------------------------------------------------------------------------
// The manifests.

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected a list, got {value}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// The `env` entry `name` of a container.
fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name} in {}", container["name"]))
}

#[test]
fn every_manifest_parses_and_lives_in_the_lexmesh_namespace() {
    let all = manifests();
    let mut found: Vec<String> = all
        .iter()
        .map(|(_, d)| {
            format!(
                "{} {}",
                d["kind"].as_str().unwrap_or("?"),
                d["metadata"]["name"]
            )
        })
        .collect();
    found.sort();
    let mut expected = [
        "Namespace \"lexmesh\"",
        "Secret \"lexmesh-nats-auth\"",
        "ConfigMap \"nats-config\"",
        "ConfigMap \"nats-permissions\"",
        "Service \"nats\"",
        "Service \"nats-headless\"",
        "StatefulSet \"nats\"",
        "PodDisruptionBudget \"nats\"",
        "ConfigMap \"lexmesh-config\"",
        "ServiceAccount \"lexmesh-health\"",
        "Role \"lexmesh-health-pods\"",
        "RoleBinding \"lexmesh-health-pods\"",
        "Deployment \"preprocessor\"",
        "Deployment \"trainer\"",
        "Deployment \"evaluator\"",
        "Deployment \"health\"",
        "PodDisruptionBudget \"health\"",
        "Deployment \"metrics\"",
        "PodDisruptionBudget \"metrics\"",
        "Service \"metrics\"",
    ];
    expected.sort_unstable();
    assert_eq!(found, expected);
    for (file, document) in &all {
        let kind = document["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no kind"));
        assert!(
            document["apiVersion"].is_string(),
            "{file}: {kind} has no apiVersion"
        );
        assert!(
            document["metadata"]["name"].is_string(),
            "{file}: {kind} has no name"
        );
        if kind != "Namespace" {
            assert_eq!(
                document["metadata"]["namespace"], "lexmesh",
                "{file}: {kind} {}",
                document["metadata"]["name"]
            );
        }
    }
}

/// Reads `document` as the Kubernetes API type `T` and checks its `apiVersion`.
fn typed<T>(file: &str, document: &Value)
where
    T: k8s_openapi::Resource + serde::de::DeserializeOwned,
{
    assert_eq!(
        document["apiVersion"],
        T::API_VERSION,
        "{file}: {}",
        T::KIND
    );
    if let Err(e) = serde_json::from_value::<T>(document.clone()) {
        panic!("{file}: not a valid {}: {e}", T::KIND);
    }
}

#[test]
fn every_object_reads_as_its_kubernetes_api_type() {
    use k8s_openapi::api::{apps, autoscaling, core, policy, rbac};
    for (file, document) in &manifests() {
        match document["kind"].as_str().unwrap() {
            "Namespace" => typed::<core::v1::Namespace>(file, document),
            "ConfigMap" => typed::<core::v1::ConfigMap>(file, document),
            "Secret" => typed::<core::v1::Secret>(file, document),
            "Service" => typed::<core::v1::Service>(file, document),
            "ServiceAccount" => typed::<core::v1::ServiceAccount>(file, document),
            "StatefulSet" => typed::<apps::v1::StatefulSet>(file, document),
            "Deployment" => typed::<apps::v1::Deployment>(file, document),
            "Role" => typed::<rbac::v1::Role>(file, document),
            "RoleBinding" => typed::<rbac::v1::RoleBinding>(file, document),
            "HorizontalPodAutoscaler" => {
                typed::<autoscaling::v2::HorizontalPodAutoscaler>(file, document)
            }
            "PodDisruptionBudget" => typed::<policy::v1::PodDisruptionBudget>(file, document),
            other => panic!("{file}: no check for kind {other}"),
        }
    }
}

#[test]
fn the_health_service_account_may_get_list_and_delete_pods() {
    let all = manifests();
    object(&all, "ServiceAccount", "lexmesh-health");
    let bindings: Vec<&Value> = all
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == "RoleBinding")
        .filter(|d| {
            d["subjects"].as_array().into_iter().flatten().any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == "lexmesh-health"
                    && s["namespace"] == "lexmesh"
            })
        })
        .collect();
    assert_eq!(bindings.len(), 1, "one RoleBinding for lexmesh-health");
    let role_ref = &bindings[0]["roleRef"];
    assert_eq!(role_ref["kind"], "Role");
    assert_eq!(role_ref["apiGroup"], "rbac.authorization.k8s.io");
    let role = object(&all, "Role", role_ref["name"].as_str().unwrap());
    let rules = role["rules"].as_array().unwrap();
    let pod_rule = rules
        .iter()
        .find(|rule| {
            strings(&rule["apiGroups"]).contains(&"")
                && strings(&rule["resources"]).contains(&"pods")
        })
        .expect("a rule on core pods");
    let verbs = strings(&pod_rule["verbs"]);
    for verb in ["get", "list", "delete"] {
        assert!(verbs.contains(&verb), "pods: {verb} missing from {verbs:?}");
    }
    // Nothing beyond that: no wildcard, no other resources.
    for rule in rules {
        assert_eq!(strings(&rule["resources"]), ["pods"]);
        assert!(!strings(&rule["verbs"]).contains(&"*"));
    }
}

#[test]
fn the_health_deployment_replaces_pods_with_that_account() {
    let all = manifests();
    let health = object(&all, "Deployment", "health");
    assert_eq!(health["spec"]["replicas"], 2);
    let pod = &health["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "lexmesh-health");
    assert_ne!(pod["automountServiceAccountToken"], false);
    let container = &pod["containers"][0];
    assert_eq!(
        env(container, "LEXMESH_HEALTH__REPLACER")["value"],
        "kubernetes"
    );
    assert_eq!(
        env(container, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
}

#[test]
fn every_service_runs_the_image_with_its_pod_name_as_instance_id() {
    let all = manifests();
    for service in ["preprocessor", "trainer", "evaluator", "health", "metrics"] {
        let deployment = object(&all, "Deployment", service);
        let pod = &deployment["spec"]["template"]["spec"];
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{service}");
        let container = &containers[0];
        assert_eq!(container["image"], "lexmesh:latest", "{service}");
        assert_eq!(
            strings(&container["args"]),
            ["serve", service, "--config", "/etc/lexmesh/lexmesh.toml"],
            "{service}"
        );
        for (name, field) in [
            ("POD_NAMESPACE", "metadata.namespace"),
            ("POD_NAME", "metadata.name"),
            ("LEXMESH_SERVICE__INSTANCE", "metadata.name"),
        ] {
            assert_eq!(
                env(container, name)["valueFrom"]["fieldRef"]["fieldPath"],
                field,
                "{service}: {name}"
            );
        }
        // The health service replaces workers; a liveness probe would fight it.
        assert!(container["livenessProbe"].is_null(), "{service}");
        let limits = &container["resources"]["limits"];
        let requests = &container["resources"]["requests"];
        assert!(
            limits["memory"].is_string() && requests["memory"].is_string(),
            "{service}"
        );
        let mounts = container["volumeMounts"].as_array().unwrap();
        let config = mounts.iter().find(|m| m["name"] == "config").unwrap();
        assert_eq!(config["mountPath"], "/etc/lexmesh");
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "config")
            .unwrap();
        assert_eq!(volume["configMap"]["name"], "lexmesh-config");
        if service != "health" {
            assert_eq!(pod["automountServiceAccountToken"], false, "{service}");
        }
    }
}

#[test]
fn prometheus_finds_the_metrics_endpoint() {
    let all = manifests();
    let deployment = object(&all, "Deployment", "metrics");
    let template = &deployment["spec"]["template"];
    let container = &template["spec"]["containers"][0];
    let port = &container["ports"][0];
    assert_eq!(port["name"], "metrics");
    assert_eq!(port["containerPort"], 9464);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/metrics");
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9464");
    let service = object(&all, "Service", "metrics");
    assert_eq!(service["spec"]["ports"][0]["port"], 9464);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    // The configuration listens where the probe and the Service look.
    let config = object(&all, "ConfigMap", "lexmesh-config");
    let toml: toml::Table = config["data"]["lexmesh.toml"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(toml["metrics"]["listen"].as_str(), Some("0.0.0.0:9464"));
}

#[test]
fn the_trainer_has_room_to_checkpoint_and_no_second_autoscaler() {
    let all = manifests();
    let trainer = object(&all, "Deployment", "trainer");
    assert_eq!(trainer["spec"]["replicas"], 2);
    let pod = &trainer["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 40);
    let resources = &pod["containers"][0]["resources"];
    assert_eq!(resources["limits"]["memory"], "768Mi");
    assert_eq!(resources["requests"]["memory"], "512Mi");
    assert_eq!(resources["requests"]["cpu"], "2");
    // The old system's budget, checked by the health service, stays under the limit.
    let budget: u64 = env(&pod["containers"][0], "LEXMESH_SERVICE__MEMORY_BUDGET_MB")["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(budget, 512);
    assert!(budget < 768, "budget {budget} MiB");

    // KEDA scales the trainer on its consumer's lag (k8s/keda.yaml, checked by
    // tests/k8s_manifests.rs); a HorizontalPodAutoscaler of our own would fight it.
    assert!(
        all.iter()
            .all(|(_, d)| d["kind"] != "HorizontalPodAutoscaler"),
        "an autoscaler besides KEDA's"
    );
}

#[test]
fn nats_runs_a_jetstream_cluster_with_8_mib_messages_and_the_services_find_it() {
    let all = manifests();
    let nats = object(&all, "StatefulSet", "nats");
    assert_eq!(nats["spec"]["replicas"], 3);
    let container = &nats["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nats:2.10-alpine");
    // The NATS Helm chart's probes: ready once the server runs (a node must not wait for the
    // cluster to become ready), restarted only when JetStream is off.
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"],
        "/healthz?js-server-only=true"
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"],
        "/healthz?js-enabled-only=true"
    );
    assert_eq!(container["startupProbe"]["httpGet"]["path"], "/healthz");
    let claims = nats["spec"]["volumeClaimTemplates"].as_array().unwrap();
    assert_eq!(claims[0]["metadata"]["name"], "data");

    let conf = object(&all, "ConfigMap", "nats-config")["data"]["nats.conf"]
        .as_str()
        .unwrap();
    assert!(conf.contains("max_payload: 8MB"), "{conf}");
    assert!(conf.contains("store_dir: /data"), "{conf}");
    assert!(conf.contains("include \"nats-permissions.conf\""), "{conf}");
    let permissions =
        object(&all, "ConfigMap", "nats-permissions")["data"]["nats-permissions.conf"]
            .as_str()
            .unwrap();
    assert!(
        permissions.contains("LEXMESH_PUBLISHER = {"),
        "{permissions}"
    );

    let service = object(&all, "Service", "nats");
    let ports: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert!(ports.iter().any(|p| p["port"] == 4222));
    assert!(ports.iter().any(|p| p["port"] == 8222));

    let lexmesh_toml = object(&all, "ConfigMap", "lexmesh-config")["data"]["lexmesh.toml"]
        .as_str()
        .unwrap();
    let config: toml::Table = lexmesh_toml.parse().unwrap();
    assert_eq!(
        config["nats"]["url"].as_str(),
        Some(
            "nats://nats-0.nats-headless:4222,nats://nats-1.nats-headless:4222,\
             nats://nats-2.nats-headless:4222"
        )
    );
    assert_eq!(config["nats"]["replicas"].as_integer(), Some(3));
}
