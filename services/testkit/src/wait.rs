//! Polling until a condition holds.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 100 ms until it returns Some (at most `timeout`; then fails with
/// `what`).
///
/// # Panics
///
/// When `check` returns None for longer than `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
