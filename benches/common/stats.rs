//! The summaries the benches print, one definition for all of them: the median, and quantiles
//! by nearest rank. Each bench includes this file (`#[path = "common/stats.rs"] mod stats;`).
#![allow(dead_code, reason = "each bench uses the part it prints")]

/// The median of `values`: the middle one, or the mean of the two middle ones for an even
/// count. NaN when there are none.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.into_iter().collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The `q`-quantile of `values` by nearest rank: the smallest value with at least `q` of them
/// at or below it (`q = 1.0` is the largest). NaN when there are none.
pub fn quantile(values: impl IntoIterator<Item = f64>, q: f64) -> f64 {
    let mut sorted: Vec<f64> = values.into_iter().collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
