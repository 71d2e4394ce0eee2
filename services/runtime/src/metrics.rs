//! What an instance measures about itself for its metrics reports: CPU use of the process,
//! how late the async runtime's periodic tick fires, message latency, and job outcomes over a
//! sliding window. [`crate::worker::Worker`] owns one [`Measurements`]; the reporter task
//! (`service.rs`) turns it into a [`lexmesh_protocol::metrics::WorkerMetrics`] every interval.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use lexmesh_protocol::metrics::LatencySummary;

/// Most samples a window keeps, whatever its length (bounds memory when a busy instance
/// receives many messages).
const MAX_SAMPLES: usize = 20_000;

/// Durations with the time they were measured, over a sliding window.
#[derive(Debug)]
pub struct SampleWindow {
    window: Duration,
    samples: VecDeque<(Instant, f64)>,
}

impl SampleWindow {
    /// An empty window of `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            samples: VecDeque::new(),
        }
    }

    /// Adds a sample (milliseconds) measured at `at`.
    pub fn push(&mut self, at: Instant, ms: f64) {
        if !ms.is_finite() {
            return;
        }
        self.samples.push_back((at, ms.max(0.0)));
        if self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.prune(at);
    }

    fn prune(&mut self, now: Instant) {
        while let Some((t, _)) = self.samples.front() {
            if now.saturating_duration_since(*t) > self.window {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// Count, mean, 95th percentile and maximum of the samples within the window at `now`.
    pub fn summary(&mut self, now: Instant) -> LatencySummary {
        self.prune(now);
        if self.samples.is_empty() {
            return LatencySummary::default();
        }
        let mut values: Vec<f64> = self.samples.iter().map(|(_, v)| *v).collect();
        values.sort_by(f64::total_cmp);
        let count = values.len();
        let mean = values.iter().sum::<f64>() / count as f64;
        // Nearest rank: the smallest value with at least 95 % of the samples at or below it.
        let rank = ((0.95 * count as f64).ceil() as usize).clamp(1, count);
        LatencySummary {
            count: count as u64,
            mean_ms: mean,
            p95_ms: values[rank - 1],
            max_ms: values[count - 1],
        }
    }
}

/// Jobs that ended within a sliding window, and whether they succeeded.
#[derive(Debug)]
pub struct OutcomeWindow {
    window: Duration,
    outcomes: VecDeque<(Instant, bool)>,
}

impl OutcomeWindow {
    /// An empty window of `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            outcomes: VecDeque::new(),
        }
    }

    /// Notes one job that ended at `at`.
    pub fn push(&mut self, at: Instant, succeeded: bool) {
        self.outcomes.push_back((at, succeeded));
        if self.outcomes.len() > MAX_SAMPLES {
            self.outcomes.pop_front();
        }
    }

    /// (succeeded, failed, failed / (succeeded + failed)) within the window at `now`.
    pub fn counts(&mut self, now: Instant) -> (u64, u64, f64) {
        while let Some((t, _)) = self.outcomes.front() {
            if now.saturating_duration_since(*t) > self.window {
                self.outcomes.pop_front();
            } else {
                break;
            }
        }
        let failed = self.outcomes.iter().filter(|(_, ok)| !ok).count() as u64;
        let succeeded = self.outcomes.len() as u64 - failed;
        let rate = if self.outcomes.is_empty() {
            0.0
        } else {
            failed as f64 / self.outcomes.len() as f64
        };
        (succeeded, failed, rate)
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times. Linux's USER_HZ is 100 on every
/// architecture lexmesh builds for (it is fixed in the kernel ABI, independent of CONFIG_HZ).
const USER_HZ: f64 = 100.0;

/// CPU time of this process (user + system), from `/proc/self/stat`; `None` where it cannot
/// be read.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// CPU use of the process between two readings, in percent of one core.
#[derive(Debug)]
pub struct CpuMeter {
    last: Option<(Instant, f64)>,
    percent: f64,
}

/// Shortest span a CPU reading is computed over: shorter ones are too coarse at 10 ms ticks.
const MIN_CPU_SPAN: Duration = Duration::from_millis(250);

impl CpuMeter {
    /// A meter whose first reading starts now.
    pub fn new() -> Self {
        Self {
            last: process_cpu_seconds().map(|s| (Instant::now(), s)),
            percent: 0.0,
        }
    }

    /// CPU percent since the previous reading (at least 250 ms ago; the previous figure
    /// otherwise).
    pub fn read(&mut self, now: Instant) -> f64 {
        let Some(cpu) = process_cpu_seconds() else {
            return 0.0;
        };
        match self.last {
            Some((then, before)) => {
                let span = now.saturating_duration_since(then);
                if span >= MIN_CPU_SPAN {
                    self.percent = ((cpu - before) / span.as_secs_f64() * 100.0).max(0.0);
                    self.last = Some((now, cpu));
                }
            }
            None => self.last = Some((now, cpu)),
        }
        self.percent
    }
}

impl Default for CpuMeter {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything an instance measures, behind the worker's lock.
#[derive(Debug)]
pub struct Measurements {
    /// How late the runtime's periodic tick fired.
    pub ticks: SampleWindow,
    /// Publish-to-receipt latency of received messages.
    pub latency: SampleWindow,
    /// Jobs that ended.
    pub outcomes: OutcomeWindow,
    /// CPU use.
    pub cpu: CpuMeter,
    /// Last job activity (ms since the Unix epoch).
    pub last_activity_ms: f64,
}

impl Measurements {
    /// Empty measurements over `window`.
    pub fn new(window: Duration, now_ms: f64) -> Self {
        Self {
            ticks: SampleWindow::new(window),
            latency: SampleWindow::new(window),
            outcomes: OutcomeWindow::new(window),
            cpu: CpuMeter::new(),
            last_activity_ms: now_ms,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn summary_over_the_window_only() {
        let start = Instant::now();
        let mut w = SampleWindow::new(Duration::from_secs(10));
        assert_eq!(w.summary(start), LatencySummary::default());
        w.push(start, 500.0);
        for i in 1..=100 {
            w.push(start + Duration::from_secs(5), f64::from(i));
        }
        let s = w.summary(start + Duration::from_secs(5));
        assert_eq!(s.count, 101);
        assert_eq!(s.max_ms, 500.0);
        // Nearest rank: the 96th of 101 sorted samples.
        assert_eq!(s.p95_ms, 96.0);
        // The old 500 ms sample leaves the window; the others stay.
        let s = w.summary(start + Duration::from_secs(11));
        assert_eq!(s.count, 100);
        assert_eq!(s.max_ms, 100.0);
        assert_eq!(s.p95_ms, 95.0);
        assert!((s.mean_ms - 50.5).abs() < 1e-9);
        assert_eq!(w.summary(start + Duration::from_secs(16)).count, 0);
    }

    #[test]
    fn window_is_bounded_and_ignores_nonsense() {
        let start = Instant::now();
        let mut w = SampleWindow::new(Duration::from_secs(3600));
        for i in 0..(MAX_SAMPLES + 10) {
            w.push(start, i as f64);
        }
        w.push(start, f64::NAN);
        w.push(start, -3.0);
        let s = w.summary(start);
        assert_eq!(s.count as usize, MAX_SAMPLES);
        assert_eq!(s.max_ms, (MAX_SAMPLES + 9) as f64);
    }

    #[test]
    fn error_rate_over_the_window() {
        let start = Instant::now();
        let mut o = OutcomeWindow::new(Duration::from_secs(60));
        assert_eq!(o.counts(start), (0, 0, 0.0));
        o.push(start, false);
        for _ in 0..3 {
            o.push(start + Duration::from_secs(30), true);
        }
        assert_eq!(o.counts(start + Duration::from_secs(30)), (3, 1, 0.25));
        assert_eq!(o.counts(start + Duration::from_secs(61)), (3, 0, 0.0));
    }

    #[test]
    fn cpu_of_a_busy_loop_shows() {
        let mut meter = CpuMeter::new();
        let t0 = Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < Duration::from_millis(400) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let percent = meter.read(Instant::now());
        // One thread spun for the whole span: close to 100 % of a core (other test threads may
        // add some; a shared machine may steal some).
        assert!(percent > 40.0 && percent < 250.0, "{percent}");
        assert!(process_cpu_seconds().unwrap() > 0.0);
    }
}
