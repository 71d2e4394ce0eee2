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
    stat_cpu_seconds(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Name prefixes of the threads that do an instance's compute work: training threads (and the
/// libtorch/OpenMP workers they start, which inherit their creator's name on Linux), the
/// checkpoint writer and the threads of [`crate::compute`] (preparing datasets, evaluating,
/// classifying). Every other thread is the control plane: the async runtime, NATS I/O,
/// reports and heartbeats.
pub const COMPUTE_THREAD_PREFIXES: [&str; 3] = ["lexmesh-train", "lexmesh-ckpt", "lexmesh-work"];

/// CPU seconds of each live control-plane thread of this process (all but the compute threads),
/// by thread id.
fn control_thread_cpu_seconds() -> std::collections::HashMap<u32, f64> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return std::collections::HashMap::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
            if COMPUTE_THREAD_PREFIXES.iter().any(|p| name.starts_with(p)) {
                return None;
            }
            Some((tid, stat_cpu_seconds(&stat)?))
        })
        .collect()
}

/// utime + stime of a `/proc/.../stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// Microseconds this process's cgroup (v2) has been throttled by its CPU quota, from
/// `cpu.stat`; `None` outside a cgroup v2 hierarchy or without a quota controller.
pub fn cgroup_throttled_usec() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let candidates = [
        format!("/sys/fs/cgroup{path}/cpu.stat"),
        "/sys/fs/cgroup/cpu.stat".to_string(),
    ];
    candidates.iter().find_map(|file| {
        let stat = std::fs::read_to_string(file).ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("throttled_usec "))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// One CPU reading of an instance.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuReading {
    /// Process CPU in percent of the cores the instance may use (100 = all of them busy).
    pub percent_of_cores: f64,
    /// CPU of the control-plane threads (everything but compute threads), in percent of one
    /// core.
    pub control_percent: f64,
    /// Share of the span the cgroup was throttled by its CPU quota, percent (0 without one).
    pub throttled_percent: f64,
}

/// CPU use of the process between two readings, measured against the cores the instance may
/// use, with its control plane's share apart (see [`COMPUTE_THREAD_PREFIXES`]).
#[derive(Debug)]
pub struct CpuMeter {
    cores: f64,
    last: Option<CpuSample>,
    reading: CpuReading,
}

#[derive(Debug)]
struct CpuSample {
    at: Instant,
    process: f64,
    /// Control-plane threads' CPU seconds by thread id.
    control: std::collections::HashMap<u32, f64>,
    throttled_usec: Option<u64>,
}

impl CpuSample {
    fn take(at: Instant) -> Option<Self> {
        Some(Self {
            at,
            process: process_cpu_seconds()?,
            control: control_thread_cpu_seconds(),
            throttled_usec: cgroup_throttled_usec(),
        })
    }
}

/// Shortest span a CPU reading is computed over: shorter ones are too coarse at 10 ms ticks.
const MIN_CPU_SPAN: Duration = Duration::from_millis(250);

impl CpuMeter {
    /// A meter for an instance that may use `cores` cores, whose first reading starts now.
    pub fn new(cores: usize) -> Self {
        Self {
            cores: cores.max(1) as f64,
            last: CpuSample::take(Instant::now()),
            reading: CpuReading::default(),
        }
    }

    /// The cores the figures are measured against.
    pub fn cores(&self) -> f64 {
        self.cores
    }

    /// CPU since the previous reading (at least 250 ms ago; the previous figures otherwise).
    pub fn read(&mut self, now: Instant) -> CpuReading {
        // Too soon after the previous sample: keep it and its figures (and read nothing).
        if self
            .last
            .as_ref()
            .is_some_and(|last| now.saturating_duration_since(last.at) < MIN_CPU_SPAN)
        {
            return self.reading;
        }
        let Some(sample) = CpuSample::take(now) else {
            return CpuReading::default();
        };
        let Some(last) = &self.last else {
            self.last = Some(sample);
            return self.reading;
        };
        let span = now.saturating_duration_since(last.at).as_secs_f64();
        // A thread that started within the span counts with all its time; one that ended
        // within it is missing (its last moments are lost, never double-counted).
        let control: f64 = sample
            .control
            .iter()
            .map(|(tid, secs)| (secs - last.control.get(tid).copied().unwrap_or(0.0)).max(0.0))
            .sum();
        let throttled = match (sample.throttled_usec, last.throttled_usec) {
            (Some(now_us), Some(then_us)) => now_us.saturating_sub(then_us) as f64 / 1e6,
            _ => 0.0,
        };
        self.reading = CpuReading {
            percent_of_cores: ((sample.process - last.process) / span / self.cores * 100.0)
                .max(0.0),
            control_percent: (control / span * 100.0).max(0.0),
            throttled_percent: (throttled / span * 100.0).clamp(0.0, 100.0),
        };
        self.last = Some(sample);
        self.reading
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
    /// Empty measurements over `window` of an instance that may use `cores` cores.
    pub fn new(window: Duration, now_ms: f64, cores: usize) -> Self {
        Self {
            ticks: SampleWindow::new(window),
            latency: SampleWindow::new(window),
            outcomes: OutcomeWindow::new(window),
            cpu: CpuMeter::new(cores),
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

    /// CPU seconds the calling thread has used.
    fn thread_cpu_seconds() -> f64 {
        stat_cpu_seconds(&std::fs::read_to_string("/proc/thread-self/stat").unwrap()).unwrap()
    }

    /// Spins on the calling thread until it has used `cpu` of CPU time (however long a busy
    /// machine makes that take).
    fn spin_cpu(cpu: Duration) {
        let until = thread_cpu_seconds() + cpu.as_secs_f64();
        let mut x = 0u64;
        while thread_cpu_seconds() < until {
            for _ in 0..10_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
    }

    /// CPU seconds a reading accounts for over `span` on `cores` cores: (process, control
    /// plane).
    fn cpu_seconds_of(r: &CpuReading, span: Duration, cores: f64) -> (f64, f64) {
        let s = span.as_secs_f64();
        (
            r.percent_of_cores / 100.0 * cores * s,
            r.control_percent / 100.0 * s,
        )
    }

    #[test]
    fn cpu_is_measured_against_the_instance_cores_and_compute_threads_are_apart() {
        // A control-plane thread (this test's own) uses 400 ms of CPU: the reading accounts
        // for it in both figures (ticks are 10 ms; other test threads may add a little).
        let started = Instant::now();
        let mut meter = CpuMeter::new(2);
        spin_cpu(Duration::from_millis(400));
        let now = Instant::now();
        let r = meter.read(now);
        let (process, control) = cpu_seconds_of(&r, now - started, 2.0);
        assert!((0.37..0.8).contains(&process), "{process} s: {r:?}");
        assert!((0.37..0.8).contains(&control), "{control} s: {r:?}");
        // Measured against 2 cores: the share of the cores is half the share of one core.
        assert!(
            (r.percent_of_cores * 2.0 - r.control_percent).abs() <= 0.25 * r.control_percent,
            "{r:?}"
        );
        assert!((0.0..=100.0).contains(&r.throttled_percent), "{r:?}");

        // A compute thread uses 300 ms of CPU while this thread waits: the process was busy,
        // its control plane was not.
        let started = Instant::now();
        let mut meter = CpuMeter::new(1);
        let worker = std::thread::Builder::new()
            .name("lexmesh-train".into())
            .spawn(|| spin_cpu(Duration::from_millis(300)))
            .unwrap();
        worker.join().unwrap();
        std::thread::sleep(MIN_CPU_SPAN);
        let now = Instant::now();
        let r = meter.read(now);
        let (process, control) = cpu_seconds_of(&r, now - started, 1.0);
        assert!(
            process >= 0.27,
            "the compute thread's CPU counts: {process} s: {r:?}"
        );
        assert!(
            control < 0.1,
            "a busy compute thread is not control-plane CPU: {control} s: {r:?}"
        );
        assert!(process_cpu_seconds().unwrap() > 0.0);
    }
}
