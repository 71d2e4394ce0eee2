//! The exposition as a Prometheus server reads it: reports and job events go in through
//! [`MetricsState`], `encode()` comes out and is read back with `prometheus-parse`.
//!
//! `prometheus-parse` skips the OpenMetrics-only lines (`# UNIT`, `# EOF`), reads gauges as
//! gauges, groups `_bucket` lines into histograms, and reads counters' `_total` samples as
//! untyped (their `# TYPE` names the family without `_total`); the counters' type lines are
//! checked on the text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use lexmesh_metrics::MetricsState;
use lexmesh_metrics::alerts::AlertConfig;
use lexmesh_protocol::event::{
    Accepted, Cancelled, Completed, EvaluateSummary, EvaluationSummary, Failed, JobEvent,
    JobResult, Progress, ProgressPhase,
};
use lexmesh_protocol::job::JobKind;
use lexmesh_protocol::metrics::{LatencySummary, WorkerMetrics};
use lexmesh_protocol::time::now_ms;
use lexmesh_protocol::{ErrorCode, event::TrainSummary};
use prometheus_parse::{HistogramCount, Sample, Scrape, Value};

const T0: f64 = 1_700_000_000_000.0;

fn report(service: &str, instance: &str, host: &str) -> WorkerMetrics {
    WorkerMetrics {
        service: service.into(),
        instance: instance.into(),
        version: "0.1.0".into(),
        pid: 7,
        host: host.into(),
        uptime_s: 90.5,
        cpu_percent: 42.5,
        cores: 2.0,
        control_cpu_percent: 1.0,
        cpu_throttled_percent: 0.0,
        rss_bytes: 300 * 1024 * 1024,
        active_jobs: 1,
        completed: 12,
        failed: 3,
        rejected: 0,
        running: vec![],
        last_activity_ms: T0 - 2_500.0,
        tick_lateness: LatencySummary {
            count: 60,
            mean_ms: 1.0,
            p95_ms: 4.0,
            max_ms: 25.0,
        },
        message_latency: LatencySummary {
            count: 5,
            mean_ms: 2.0,
            p95_ms: 8.0,
            max_ms: 9.0,
        },
        window_completed: 3,
        window_failed: 1,
        error_rate: 0.25,
        window_s: 60.0,
        interval_s: 5.0,
        timestamp_ms: T0,
    }
}

fn progress(job: &str, instance: &str, epoch: u32, percent: f64) -> JobEvent {
    JobEvent::Progress(Progress {
        job_id: job.into(),
        model_id: format!("model-{job}"),
        session_id: format!("s-{job}"),
        attempt: 1,
        instance: instance.into(),
        phase: ProgressPhase::Epoch,
        epoch,
        total_epochs: 4,
        batch: 10,
        total_batches: 10,
        loss: 0.75,
        accuracy: 0.625,
        validation_loss: Some(0.8),
        validation_accuracy: Some(0.6),
        validation_macro_f1: Some(0.5),
        completion_percentage: percent,
        estimated_time_remaining_s: 30.0,
        examples_per_sec: 500.0,
        resumed_from_epoch: None,
        resumed_from_batch: None,
        timestamp_ms: T0,
    })
}

fn evaluation() -> EvaluationSummary {
    EvaluationSummary {
        labels: vec!["a".into(), "b".into()],
        count: 2,
        accuracy: 1.0,
        macro_f1: 1.0,
        weighted_f1: 1.0,
        per_class: vec![],
        confusion_matrix: vec![vec![1, 0], vec![0, 1]],
    }
}

fn completed(job: &str, kind: JobKind, duration_s: f64) -> JobEvent {
    let result = match kind {
        JobKind::Train => JobResult::Train(TrainSummary {
            model_id: format!("model-{job}"),
            dataset_id: "d1".into(),
            best_epoch: 4,
            epochs_completed: 4,
            stop_reason: "completed".into(),
            validation: evaluation(),
        }),
        _ => JobResult::Evaluate(EvaluateSummary {
            model_id: "m1".into(),
            evaluation: evaluation(),
        }),
    };
    JobEvent::Completed(Completed {
        job_id: job.into(),
        kind,
        attempt: 1,
        instance: "trainer-a".into(),
        duration_s,
        result,
        timestamp_ms: T0,
    })
}

fn failed(job: &str, retrying: bool) -> JobEvent {
    JobEvent::Failed(Failed {
        job_id: job.into(),
        kind: JobKind::Train,
        attempt: 1,
        instance: "trainer-a".into(),
        code: ErrorCode::TrainingFailed,
        reason: "diverged".into(),
        retrying,
        timestamp_ms: T0,
    })
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The samples of `metric`.
fn samples<'a>(scrape: &'a Scrape, metric: &str) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .collect()
}

/// The one sample of `metric` whose labels are exactly `labels`.
fn sample<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> &'a Sample {
    let want: HashMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let found: Vec<&Sample> = samples(scrape, metric)
        .into_iter()
        .filter(|s| *s.labels == want)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{metric} {labels:?}: {:?}",
        samples(scrape, metric)
    );
    found[0]
}

fn gauge(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(scrape, metric, labels).value {
        Value::Gauge(v) => v,
        ref other => panic!("{metric} is not a gauge: {other:?}"),
    }
}

/// A counter's `_total` sample (untyped to `prometheus-parse`).
fn total(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(scrape, metric, labels).value {
        Value::Untyped(v) | Value::Counter(v) => v,
        ref other => panic!("{metric} is not a counter: {other:?}"),
    }
}

fn histogram(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<HistogramCount> {
    match &sample(scrape, metric, labels).value {
        Value::Histogram(buckets) => buckets.clone(),
        other => panic!("{metric} is not a histogram: {other:?}"),
    }
}

/// The cumulative count of the bucket with upper bound `le`.
fn bucket(buckets: &[HistogramCount], le: f64) -> f64 {
    buckets
        .iter()
        .find(|b| b.less_than == le)
        .map(|b| b.count)
        .unwrap_or_else(|| panic!("no bucket le={le} in {buckets:?}"))
}

fn state() -> MetricsState {
    MetricsState::new(AlertConfig::default(), "metrics-1".into())
}

const A: [(&str, &str); 3] = [
    ("service", "trainer"),
    ("instance", "trainer-a"),
    ("host", "pod-a"),
];

#[test]
fn instance_series_carry_the_latest_report() {
    let mut s = state();
    s.on_report(report("trainer", "trainer-a", "pod-a"));
    let mut quiet = report("evaluator", "evaluator-b", "pod-b");
    quiet.message_latency = LatencySummary::default();
    quiet.window_completed = 0;
    quiet.window_failed = 0;
    quiet.error_rate = 0.0;
    s.on_report(quiet);

    let text = s.encode().unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let scrape = parse(&text);

    assert_eq!(gauge(&scrape, "lexmesh_instance_cpu_percent", &A), 42.5);
    assert_eq!(
        gauge(&scrape, "lexmesh_instance_memory_rss_bytes", &A),
        300.0 * 1024.0 * 1024.0
    );
    assert_eq!(gauge(&scrape, "lexmesh_instance_active_jobs", &A), 1.0);
    assert_eq!(gauge(&scrape, "lexmesh_instance_uptime_seconds", &A), 90.5);
    assert_eq!(
        gauge(
            &scrape,
            "lexmesh_instance_last_activity_timestamp_seconds",
            &A
        ),
        (T0 - 2_500.0) / 1000.0
    );
    assert_eq!(
        gauge(&scrape, "lexmesh_instance_tick_lateness_p95_seconds", &A),
        0.004
    );
    assert_eq!(
        gauge(&scrape, "lexmesh_instance_tick_lateness_max_seconds", &A),
        0.025
    );
    assert_eq!(
        gauge(&scrape, "lexmesh_instance_message_latency_p95_seconds", &A),
        0.008
    );
    assert_eq!(gauge(&scrape, "lexmesh_instance_error_rate", &A), 0.25);
    assert_eq!(
        total(&scrape, "lexmesh_instance_jobs_completed_total", &A),
        12.0
    );
    assert_eq!(
        total(&scrape, "lexmesh_instance_jobs_failed_total", &A),
        3.0
    );
    assert!(text.contains("# TYPE lexmesh_instance_jobs_completed counter\n"));
    assert!(text.contains("# TYPE lexmesh_instance_jobs_failed counter\n"));

    // Every per-instance series has exactly the service, instance and host labels.
    for sample in scrape
        .samples
        .iter()
        .filter(|s| s.metric.starts_with("lexmesh_instance_"))
    {
        let mut keys: Vec<&str> = sample.labels.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["host", "instance", "service"], "{sample:?}");
    }

    // The quiet instance has its figures, but no window figures without anything measured.
    let b = [
        ("service", "evaluator"),
        ("instance", "evaluator-b"),
        ("host", "pod-b"),
    ];
    assert_eq!(gauge(&scrape, "lexmesh_instance_cpu_percent", &b), 42.5);
    assert_eq!(
        gauge(&scrape, "lexmesh_instance_tick_lateness_p95_seconds", &b),
        0.004
    );
    assert_eq!(
        samples(&scrape, "lexmesh_instance_message_latency_p95_seconds").len(),
        1
    );
    assert_eq!(samples(&scrape, "lexmesh_instance_error_rate").len(), 1);
}

#[test]
fn counters_follow_the_workers_totals_and_a_restart_resets_them() {
    let mut s = state();
    let mut r = report("trainer", "trainer-a", "pod-a");
    s.on_report(r.clone());
    r.completed = 20;
    s.on_report(r.clone());
    let scrape = parse(&s.encode().unwrap());
    assert_eq!(
        total(&scrape, "lexmesh_instance_jobs_completed_total", &A),
        20.0
    );
    // A restarted process counts from 0 again: Prometheus sees a counter reset.
    r.pid = 8;
    r.completed = 1;
    s.on_report(r);
    let scrape = parse(&s.encode().unwrap());
    assert_eq!(
        total(&scrape, "lexmesh_instance_jobs_completed_total", &A),
        1.0
    );
}

#[test]
fn job_events_are_counted_timed_and_tracked() {
    let mut s = state();
    let received = T0 + 3.0;
    s.on_event(
        &JobEvent::Accepted(Accepted {
            job_id: "j1".into(),
            kind: JobKind::Train,
            attempt: 1,
            instance: "trainer-a".into(),
            timestamp_ms: T0,
        }),
        received,
    );
    s.on_event(&progress("j1", "trainer-a", 2, 50.0), received);
    s.on_event(&progress("j2", "trainer-a", 1, 12.5), received);
    s.on_event(&completed("j1", JobKind::Train, 90.0), T0 + 2_000.0);
    s.on_event(&completed("e1", JobKind::Evaluate, 0.3), received);
    s.on_event(&failed("j3", true), received);
    s.on_event(&failed("j3", false), received);
    s.on_event(
        &JobEvent::Cancelled(Cancelled {
            job_id: "j4".into(),
            kind: JobKind::Train,
            attempt: 1,
            instance: "trainer-a".into(),
            epochs_completed: 0,
            timestamp_ms: T0,
        }),
        // Received "before" it was published (clock skew): latency 0.
        T0 - 50.0,
    );

    let text = s.encode().unwrap();
    let scrape = parse(&text);
    assert!(text.contains("# TYPE lexmesh_jobs counter\n"), "{text}");
    for (kind, outcome, n) in [
        ("train", "completed", 1.0),
        ("evaluate", "completed", 1.0),
        ("train", "retrying", 1.0),
        ("train", "failed", 1.0),
        ("train", "cancelled", 1.0),
    ] {
        assert_eq!(
            total(
                &scrape,
                "lexmesh_jobs_total",
                &[("kind", kind), ("outcome", outcome)]
            ),
            n
        );
    }
    assert_eq!(samples(&scrape, "lexmesh_jobs_total").len(), 5);

    // Job durations: 90 s for the training, 0.3 s for the evaluation.
    let train = histogram(
        &scrape,
        "lexmesh_job_duration_seconds",
        &[("kind", "train")],
    );
    assert_eq!(bucket(&train, 60.0), 0.0);
    assert_eq!(bucket(&train, 120.0), 1.0);
    assert_eq!(bucket(&train, 7200.0), 1.0);
    assert_eq!(bucket(&train, f64::INFINITY), 1.0);
    let evaluate = histogram(
        &scrape,
        "lexmesh_job_duration_seconds",
        &[("kind", "evaluate")],
    );
    assert_eq!(bucket(&evaluate, 0.1), 0.0);
    assert_eq!(bucket(&evaluate, 0.5), 1.0);
    assert_eq!(
        total(
            &scrape,
            "lexmesh_job_duration_seconds_sum",
            &[("kind", "train")]
        ),
        90.0
    );

    // Event latency: 3 ms for most, 2 s for j1's completion, 0 for the skewed cancellation.
    let accepted = histogram(
        &scrape,
        "lexmesh_event_latency_seconds",
        &[("event", "accepted")],
    );
    assert_eq!(bucket(&accepted, 0.0005), 0.0);
    assert_eq!(bucket(&accepted, 0.005), 1.0);
    let progress = histogram(
        &scrape,
        "lexmesh_event_latency_seconds",
        &[("event", "progress")],
    );
    assert_eq!(bucket(&progress, f64::INFINITY), 2.0);
    let completed = histogram(
        &scrape,
        "lexmesh_event_latency_seconds",
        &[("event", "completed")],
    );
    assert_eq!(bucket(&completed, 0.005), 1.0);
    assert_eq!(bucket(&completed, 1.0), 1.0);
    assert_eq!(bucket(&completed, 2.5), 2.0);
    let cancelled = histogram(
        &scrape,
        "lexmesh_event_latency_seconds",
        &[("event", "cancelled")],
    );
    assert_eq!(bucket(&cancelled, 0.0005), 1.0);
    assert_eq!(
        total(
            &scrape,
            "lexmesh_event_latency_seconds_count",
            &[("event", "failed")]
        ),
        2.0
    );

    // Only j2 is still training: j1 completed.
    let j2 = [
        ("job_id", "j2"),
        ("model_id", "model-j2"),
        ("instance", "trainer-a"),
    ];
    assert_eq!(gauge(&scrape, "lexmesh_training_epoch", &j2), 1.0);
    assert_eq!(gauge(&scrape, "lexmesh_training_total_epochs", &j2), 4.0);
    assert_eq!(gauge(&scrape, "lexmesh_training_loss", &j2), 0.75);
    assert_eq!(gauge(&scrape, "lexmesh_training_accuracy", &j2), 0.625);
    assert_eq!(
        gauge(&scrape, "lexmesh_training_completion_ratio", &j2),
        0.125
    );
    for name in [
        "lexmesh_training_epoch",
        "lexmesh_training_total_epochs",
        "lexmesh_training_loss",
        "lexmesh_training_accuracy",
        "lexmesh_training_completion_ratio",
    ] {
        assert_eq!(samples(&scrape, name).len(), 1, "{name}");
    }
}

#[test]
fn a_forgotten_instance_disappears() {
    let mut s = state();
    let mut hot = report("trainer", "trainer-a", "pod-a");
    hot.rss_bytes = 900 * 1024 * 1024;
    hot.window_failed = 0;
    hot.error_rate = 0.0;
    s.on_report(hot.clone());
    assert_eq!(s.on_report(hot).len(), 1, "memory alert raised");
    s.on_report(report("evaluator", "evaluator-b", "pod-b"));
    s.on_event(&progress("j1", "trainer-a", 1, 10.0), T0);
    s.on_event(&progress("j2", "evaluator-b", 1, 10.0), T0);
    s.on_event(&completed("e1", JobKind::Evaluate, 0.3), T0);

    let before = parse(&s.encode().unwrap());
    assert_eq!(samples(&before, "lexmesh_instance_cpu_percent").len(), 2);
    assert_eq!(samples(&before, "lexmesh_training_epoch").len(), 2);

    // Both were heard just now; after forget_after of silence they go.
    let now = now_ms();
    assert!(s.expire(now, 60_000.0).is_empty());
    let cleared = s.expire(now + 61_000.0, 60_000.0);
    assert_eq!(cleared.len(), 1);
    assert_eq!(
        (cleared[0].kind.as_str(), cleared[0].instance.as_str()),
        ("memory", "trainer-a")
    );

    let text = s.encode().unwrap();
    let after = parse(&text);
    assert!(!text.contains("trainer-a"), "{text}");
    assert!(!text.contains("evaluator-b"), "{text}");
    for sample in &after.samples {
        assert!(
            !sample.metric.starts_with("lexmesh_instance_")
                && !sample.metric.starts_with("lexmesh_training_"),
            "left over: {sample:?}"
        );
    }
    // What events counted stays: counters do not go back.
    assert_eq!(
        total(
            &after,
            "lexmesh_jobs_total",
            &[("kind", "evaluate"), ("outcome", "completed")]
        ),
        1.0
    );
    // The families are still described, so dashboards see them as empty, not unknown.
    assert!(text.contains("# TYPE lexmesh_instance_cpu_percent gauge\n"));
}
