//! Replacing an instance that runs in a Kubernetes pod: delete the pod, and let its controller
//! (the Deployment's ReplicaSet) start a new one.
//!
//! The pod is `target.host` (a pod's host name is its name) in `target.namespace`, or, when the
//! instance did not report one, in the replacer's own namespace. The deletion is graceful: the
//! pod gets its `terminationGracePeriodSeconds` (40 s for the trainer, which checkpoints and
//! hands its job back on SIGTERM) unless [`KubernetesReplacer::with_grace_period`] says
//! otherwise.
//!
//! The service account needs `delete` on `pods` in that namespace (`k8s/rbac.yaml` grants
//! `get`, `list`, `delete`).

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};

use super::{ReplaceError, Replacer, Target};

/// Where a pod finds the namespace it runs in when `POD_NAMESPACE` is not set.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How long [`KubernetesReplacer::in_cluster`] waits for one API-server response.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Replaces an instance by deleting its pod through the Kubernetes API.
#[derive(Clone)]
pub struct KubernetesReplacer {
    client: kube::Client,
    default_namespace: String,
    grace_period: Option<u32>,
}

impl std::fmt::Debug for KubernetesReplacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesReplacer")
            .field("default_namespace", &self.default_namespace)
            .field("grace_period", &self.grace_period)
            .finish_non_exhaustive()
    }
}

impl KubernetesReplacer {
    /// A replacer for the cluster this process runs in: the client configuration is inferred
    /// like `kube::Client::try_default` does (the pod's service account in a cluster, else
    /// `KUBECONFIG` / `~/.kube/config`), with a 30 s limit on each API-server response. The
    /// default namespace is [`own_namespace`].
    pub async fn in_cluster() -> Result<Self, kube::Error> {
        let mut config = kube::Config::infer()
            .await
            .map_err(kube::Error::InferConfig)?;
        config.read_timeout = Some(READ_TIMEOUT);
        let client = kube::Client::try_from(config)?;
        Ok(Self::with_client(client, own_namespace()))
    }

    /// A replacer that uses `client`, deleting pods of targets that report no namespace in
    /// `default_namespace`.
    pub fn with_client(client: kube::Client, default_namespace: String) -> Self {
        Self {
            client,
            default_namespace,
            grace_period: None,
        }
    }

    /// Asks for this grace period (seconds; 0 = kill at once) instead of the pod's own
    /// `terminationGracePeriodSeconds`. `None` (the default) keeps the pod's.
    #[must_use]
    pub fn with_grace_period(mut self, seconds: Option<u32>) -> Self {
        self.grace_period = seconds;
        self
    }

    /// The namespace used for targets that report none.
    pub fn default_namespace(&self) -> &str {
        &self.default_namespace
    }

    async fn delete_pod(&self, target: &Target) -> Result<String, ReplaceError> {
        let pod = target.host.trim();
        if pod.is_empty() {
            return Err(ReplaceError::OutOfReach {
                instance: target.instance.clone(),
                reason: "its heartbeats name no host, so there is no pod to delete".into(),
            });
        }
        let namespace = target
            .namespace
            .as_deref()
            .map(str::trim)
            .filter(|ns| !ns.is_empty())
            .unwrap_or(&self.default_namespace);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: self.grace_period,
            ..DeleteParams::default()
        };
        match pods.delete(pod, &params).await {
            Ok(_) => Ok(format!(
                "deleted pod {namespace}/{pod}; its Deployment starts a new one"
            )),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Ok(format!("pod already gone: {namespace}/{pod}"))
            }
            Err(kube::Error::Api(status)) if status.code == 403 => Err(ReplaceError::Forbidden {
                instance: target.instance.clone(),
                reason: format!(
                    "deleting pod {namespace}/{pod} was forbidden ({}); the health service's \
                     service account needs RBAC permission to `delete` `pods` in namespace \
                     {namespace} (a Role with resources [pods], verbs [get, list, delete], and a \
                     RoleBinding to the account; see k8s/rbac.yaml)",
                    status.message
                ),
            }),
            Err(kube::Error::Api(status)) => Err(ReplaceError::Failed {
                instance: target.instance.clone(),
                reason: format!(
                    "deleting pod {namespace}/{pod}: the API server answered {} {}: {}",
                    status.code, status.reason, status.message
                ),
            }),
            Err(e) => Err(ReplaceError::Failed {
                instance: target.instance.clone(),
                reason: format!("deleting pod {namespace}/{pod}: {e}"),
            }),
        }
    }
}

impl Replacer for KubernetesReplacer {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn replace<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<String, ReplaceError>> {
        Box::pin(self.delete_pod(target))
    }
}

/// The namespace this process runs in: `POD_NAMESPACE` (set from the downward API), else the
/// service account's namespace file, else `default`.
pub fn own_namespace() -> String {
    pick_namespace(
        std::env::var("POD_NAMESPACE").ok(),
        std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE_FILE).ok(),
    )
}

/// The first non-blank of `from_env` and `from_file`, trimmed, else `default`.
fn pick_namespace(from_env: Option<String>, from_file: Option<String>) -> String {
    [from_env, from_file]
        .into_iter()
        .flatten()
        .map(|ns| ns.trim().to_owned())
        .find(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

#[cfg(test)]
mod tests {
    use super::pick_namespace;

    #[test]
    fn namespace_comes_from_the_environment_then_the_file_then_default() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(pick_namespace(s("lexmesh"), s("other\n")), "lexmesh");
        assert_eq!(pick_namespace(None, s("lexmesh\n")), "lexmesh");
        assert_eq!(pick_namespace(s("  "), s("lexmesh")), "lexmesh");
        assert_eq!(pick_namespace(None, s("")), "default");
        assert_eq!(pick_namespace(None, None), "default");
    }
}
