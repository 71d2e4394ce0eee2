//! CPU work of a job off the async runtime, on a thread of its own whose name marks it as
//! compute ([`crate::metrics::COMPUTE_THREAD_PREFIXES`]): preparing a dataset, evaluating,
//! classifying, loading a model. Tokio's blocking pool would do the work as well, but its
//! threads are the control plane's, so a busy preprocessor would read as a runaway control
//! plane and raise the `cpu` alert.

/// Name of the threads [`run`] starts (a prefix the CPU meter counts as compute).
pub const THREAD_NAME: &str = "lexmesh-work";

/// Why [`run`] produced no value.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The operating system refused a thread.
    #[error("cannot start a compute thread: {0}")]
    Spawn(std::io::Error),
    /// The work panicked.
    #[error("the compute thread panicked")]
    Panicked,
}

/// Runs `work` on a new compute thread and waits for its result without blocking the runtime.
pub async fn run<T, F>(work: F) -> Result<T, ComputeError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(ComputeError::Spawn)?;
    rx.await.map_err(|_| ComputeError::Panicked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_a_named_thread_and_a_panic_is_an_error() {
        let name = run(|| std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        assert!(
            crate::metrics::COMPUTE_THREAD_PREFIXES
                .iter()
                .any(|p| THREAD_NAME.starts_with(p))
        );
        let panicked = run(|| -> u8 { panic!("boom") }).await;
        assert!(matches!(panicked, Err(ComputeError::Panicked)));
    }
}
