//! Timestamps on the wire: milliseconds since the Unix epoch as a fractional number, which
//! JavaScript's `Date.now()` understands and which keeps microseconds for latency figures.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}
