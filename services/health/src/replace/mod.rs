//! Replacing an instance: one interface, one implementation per place a worker can run.

use futures::future::BoxFuture;

#[cfg(feature = "kubernetes")]
pub mod kubernetes;

/// The instance to replace, as its heartbeats describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Service name (`trainer`, ...).
    pub service: String,
    /// Instance id.
    pub instance: String,
    /// Host name the instance runs on (the pod name on Kubernetes).
    pub host: String,
    /// Operating-system process id.
    pub pid: u32,
    /// Kubernetes namespace, when the instance runs in a pod that reported one.
    pub namespace: Option<String>,
}

/// Why a replacement did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    /// The replacer cannot reach the instance from here (another host, no pod name).
    #[error("cannot replace {instance} from here: {reason}")]
    OutOfReach {
        /// The instance.
        instance: String,
        /// Why.
        reason: String,
    },
    /// The platform refused (permissions, RBAC).
    #[error("not allowed to replace {instance}: {reason}")]
    Forbidden {
        /// The instance.
        instance: String,
        /// What the platform said.
        reason: String,
    },
    /// The platform could not be asked or failed.
    #[error("replacing {instance} failed: {reason}")]
    Failed {
        /// The instance.
        instance: String,
        /// What went wrong.
        reason: String,
    },
}

pub mod local;

pub use local::LocalReplacer;

/// Replaces an unhealthy instance. Returns a short description of what was done.
pub trait Replacer: Send + Sync {
    /// `local`, `kubernetes`, ...
    fn name(&self) -> &'static str;

    /// Whether a successful [`Replacer::replace`] returns only once the instance's process is
    /// gone (its connections closed). When not, the caller waits until any pull request the
    /// instance left with the server has expired before handing its jobs back, or JetStream
    /// could hand them to the dying instance again.
    fn confirms_exit(&self) -> bool {
        false
    }

    /// Replaces `target`: after this, the instance is gone or going, and whatever supervises
    /// it (a supervisor process, a Deployment) starts a new one.
    fn replace<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<String, ReplaceError>>;
}
