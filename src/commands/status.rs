//! `lexmesh status`: one view of the mesh, from two services asked at once: the health service
//! (`lexmesh.api.health.instances`: each instance's state) and the metrics service
//! (`lexmesh.api.metrics.snapshot`: CPU, memory, latencies, error rates, training progress and
//! active alerts). Either may be missing: what the other says is shown, with a note. When
//! neither answers, the heartbeats heard for a little over one interval are shown, with their
//! health unknown; when there are none either, the command fails.
//!
//! Fetching ([`Overview::fetch`]) and rendering ([`render_view`], [`render_notes`]: data in,
//! text out) are apart, so that `lexmesh top` redraws the same view and the rendering is
//! tested without NATS.

use std::collections::BTreeMap;
use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use async_nats::RequestErrorKind;
use futures::StreamExt;
use lexmesh_protocol::alert::{Alert, AlertState};
use lexmesh_protocol::health::{HealthReport, InstanceHealth};
use lexmesh_protocol::heartbeat::Heartbeat;
use lexmesh_protocol::metrics::{LatencySummary, MetricsSnapshot, TrainingProgress, WorkerMetrics};
use lexmesh_protocol::status::RunningJob;
use lexmesh_protocol::time::now_ms;
use lexmesh_protocol::{ErrorReply, JobKind, Message, ProtocolError, decode, subjects};
use serde::Serialize;

use crate::cli::FormatArg;
use crate::cli_mesh::StatusArgs;
use crate::client;

/// How long heartbeats are collected when neither service answers.
const LISTEN: Duration = Duration::from_millis(2500);

/// The longest `status` waits for a service's answer (less when the configuration's request
/// timeout is shorter): both answer from memory, so a slow answer means a stuck service.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the command.
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = client::load_config(&args.mesh)?;
    let timeout = config.nats.request_timeout.min(STATUS_TIMEOUT);
    let overview = client::runtime()?.block_on(async {
        let nats = client::connect(&config).await?;
        let mut overview = Overview::fetch(&nats, timeout).await;
        if overview.answered_none() {
            overview.heartbeats = listen(&nats).await?;
            if overview.heartbeats.is_empty() {
                bail!(
                    "neither the health service ({}: {}) nor the metrics service ({}: {}) \
                     answered, and no instance sent a heartbeat within {LISTEN:?}: is the mesh \
                     running? (`lexmesh up` starts one)",
                    subjects::HEALTH_INSTANCES,
                    describe_err(&overview.health),
                    subjects::METRICS_SNAPSHOT,
                    describe_err(&overview.metrics),
                );
            }
        }
        anyhow::Ok(overview)
    })?;
    match args.format {
        FormatArg::Json => crate::render::print_line(&serde_json::to_string(&overview.json())?),
        FormatArg::Text => {
            crate::render::print_line(render_view(&overview, now_ms()).trim_end());
            for note in render_notes(&overview) {
                eprintln!("{note}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_err<T>(answer: &Result<T, Unavailable>) -> String {
    match answer {
        Ok(_) => "answered".into(),
        Err(why) => why.to_string(),
    }
}

/// Why a service gave no usable answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Unavailable {
    /// No instance of the service listens on its subject (not started, or all stopped).
    NoResponders,
    /// Nothing came back within this long.
    TimedOut(Duration),
    /// The service answered with an error reply.
    Refused(ProtocolError),
    /// The answer is not the expected message (another lexmesh version?).
    Unreadable(ProtocolError),
    /// The request itself failed (connection lost, ...).
    Failed(String),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoResponders => f.write_str("no responders"),
            Self::TimedOut(after) => write!(f, "no answer within {after:?}"),
            Self::Refused(error) => write!(f, "error reply {error}"),
            Self::Unreadable(error) => write!(f, "unreadable reply ({error})"),
            Self::Failed(reason) => write!(f, "request failed: {reason}"),
        }
    }
}

impl std::error::Error for Unavailable {}

/// What the two services said at one moment (and, when neither answered, the heartbeats
/// heard instead).
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    /// The health service's report.
    pub health: Result<HealthReport, Unavailable>,
    /// The metrics service's snapshot.
    pub metrics: Result<MetricsSnapshot, Unavailable>,
    /// Heartbeats heard when neither service answered (empty otherwise).
    pub heartbeats: Vec<Heartbeat>,
}

/// The `--format json` output: `{"health": <HealthReport or null>, "metrics": <MetricsSnapshot
/// or null>}`, plus `"heartbeats"` when those were shown instead.
#[derive(Debug, Serialize)]
pub struct OverviewJson<'a> {
    /// The health service's report, or null.
    pub health: Option<&'a HealthReport>,
    /// The metrics service's snapshot, or null.
    pub metrics: Option<&'a MetricsSnapshot>,
    /// Heartbeats heard when neither service answered.
    #[serde(skip_serializing_if = "<[Heartbeat]>::is_empty")]
    pub heartbeats: &'a [Heartbeat],
}

impl Overview {
    /// Asks both services at once, each with `timeout`.
    pub async fn fetch(nats: &async_nats::Client, timeout: Duration) -> Self {
        let (health, metrics) = tokio::join!(
            ask::<HealthReport>(nats, subjects::HEALTH_INSTANCES, timeout),
            ask::<MetricsSnapshot>(nats, subjects::METRICS_SNAPSHOT, timeout),
        );
        Self {
            health,
            metrics,
            heartbeats: Vec::new(),
        }
    }

    /// Whether neither service answered.
    pub fn answered_none(&self) -> bool {
        self.health.is_err() && self.metrics.is_err()
    }

    /// The `--format json` form.
    pub fn json(&self) -> OverviewJson<'_> {
        OverviewJson {
            health: self.health.as_ref().ok(),
            metrics: self.metrics.as_ref().ok(),
            heartbeats: &self.heartbeats,
        }
    }
}

/// Asks `subject` (empty request) and reads the reply as `T` or as an error reply.
async fn ask<T: Message>(
    nats: &async_nats::Client,
    subject: &'static str,
    timeout: Duration,
) -> Result<T, Unavailable> {
    let request = async_nats::Request::new()
        .payload(bytes::Bytes::new())
        .timeout(Some(timeout));
    let reply = nats
        .send_request(subject, request)
        .await
        .map_err(|e| match e.kind() {
            RequestErrorKind::NoResponders => Unavailable::NoResponders,
            RequestErrorKind::TimedOut => Unavailable::TimedOut(timeout),
            _ => Unavailable::Failed(e.to_string()),
        })?;
    read_reply(&reply.payload)
}

/// A reply as `T`, or the error it carries.
fn read_reply<T: Message>(payload: &[u8]) -> Result<T, Unavailable> {
    decode::<T>(payload).map_err(
        |error| match serde_json::from_slice::<ErrorReply>(payload) {
            Ok(reply) => Unavailable::Refused(reply.into()),
            Err(_) => Unavailable::Unreadable(error),
        },
    )
}

async fn listen(nats: &async_nats::Client) -> anyhow::Result<Vec<Heartbeat>> {
    let mut heartbeats = nats.subscribe(subjects::ALL_HEARTBEATS).await?;
    let mut seen: BTreeMap<String, Heartbeat> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + LISTEN;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, heartbeats.next()).await {
        if let Ok(h) = decode::<Heartbeat>(&message.payload) {
            seen.insert(format!("{}/{}", h.service, h.instance), h);
        }
    }
    Ok(seen.into_values().collect())
}

// ---- rendering: data in, text out -----------------------------------------------------------

/// Columns of the instances table. HEALTH stays third: scripts pick it by position.
const INSTANCE_HEADER: &[&str] = &[
    "SERVICE",
    "INSTANCE",
    "HEALTH",
    "CPU",
    "MEMORY",
    "JOBS",
    "DONE/FAILED",
    "TICK-P95",
    "MSG-P95",
    "ERRORS",
    "UPTIME",
    "SEEN",
    "REASON",
];

/// Columns of the running-jobs table.
const JOB_HEADER: &[&str] = &[
    "JOB", "KIND", "INSTANCE", "ATTEMPT", "EPOCH", "PROGRESS", "LOSS", "ACC", "ETA",
];

/// Columns of the alerts table.
const ALERT_HEADER: &[&str] = &["ALERT", "WHERE", "VALUE", "THRESHOLD", "SINCE", "MESSAGE"];

/// The three sections of the view (instances, running jobs, active alerts), separated by a
/// blank line; `now_ms` is the time ages are measured against.
pub fn render_view(overview: &Overview, now_ms: f64) -> String {
    let sections = [
        instances_section(overview, now_ms),
        jobs_section(overview),
        alerts_section(overview, now_ms),
    ];
    sections.join("\n")
}

/// One line per fact about the sources: who answered, who did not and why.
pub fn render_notes(overview: &Overview) -> Vec<String> {
    let mut notes = Vec::new();
    match &overview.health {
        Ok(report) => notes.push(format!(
            "as seen by {}{}",
            report.observer,
            if report.leader { " (leader)" } else { "" }
        )),
        Err(why) => notes.push(format!(
            "health unavailable ({}: {why}): health states not shown",
            subjects::HEALTH_INSTANCES
        )),
    }
    match &overview.metrics {
        Ok(snapshot) => notes.push(format!("metrics from {}", snapshot.source)),
        Err(why) => notes.push(format!(
            "metrics unavailable ({}: {why}): CPU, latencies, training figures and alerts not shown",
            subjects::METRICS_SNAPSHOT
        )),
    }
    if !overview.heartbeats.is_empty() {
        notes.push("neither service answered: health unknown, heartbeats shown".into());
    }
    notes
}

/// What is known of one instance, from each source.
#[derive(Default)]
struct InstanceSources<'a> {
    health: Option<&'a InstanceHealth>,
    heartbeat: Option<&'a Heartbeat>,
    metrics: Option<&'a WorkerMetrics>,
}

fn instances_section(overview: &Overview, now_ms: f64) -> String {
    let mut by_instance: BTreeMap<(&str, &str), InstanceSources<'_>> = BTreeMap::new();
    let mut health_age_offset_s = 0.0;
    if let Ok(report) = &overview.health {
        // `heartbeat_age_s` was measured when the report was made.
        health_age_offset_s = ((now_ms - report.timestamp_ms) / 1000.0).max(0.0);
        for i in &report.instances {
            by_instance
                .entry((i.service.as_str(), i.instance.as_str()))
                .or_default()
                .health = Some(i);
        }
    }
    if let Ok(snapshot) = &overview.metrics {
        for m in &snapshot.instances {
            by_instance
                .entry((m.service.as_str(), m.instance.as_str()))
                .or_default()
                .metrics = Some(m);
        }
    }
    for h in &overview.heartbeats {
        by_instance
            .entry((h.service.as_str(), h.instance.as_str()))
            .or_default()
            .heartbeat = Some(h);
    }
    if by_instance.is_empty() {
        return if overview.answered_none() {
            "no instances known (neither the health nor the metrics service answered)\n".into()
        } else {
            "no instances (no heartbeat or metrics report heard yet)\n".into()
        };
    }
    let rows: Vec<Vec<String>> = by_instance
        .iter()
        .map(|((service, instance), s)| {
            instance_row(service, instance, s, now_ms, health_age_offset_s)
        })
        .collect();
    table(INSTANCE_HEADER, &rows)
}

fn instance_row(
    service: &str,
    instance: &str,
    s: &InstanceSources<'_>,
    now_ms: f64,
    health_age_offset_s: f64,
) -> Vec<String> {
    let dash = || "-".to_string();
    let m = s.metrics;
    let health = match (s.health, s.heartbeat) {
        (Some(h), _) => h.state.name().to_string(),
        (None, Some(hb)) if hb.stopping => "stopping".into(),
        (None, Some(_)) => "?".into(),
        (None, None) => dash(),
    };
    let rss = m
        .map(|m| m.rss_bytes)
        .or(s.health.map(|h| h.rss_bytes))
        .or(s.heartbeat.map(|h| h.rss_bytes));
    let jobs = m
        .map(|m| m.active_jobs as usize)
        .or(s.health.map(|h| h.running.len()))
        .or(s.heartbeat.map(|h| h.running.len()));
    // The youngest of: the last heartbeat (health service or heard directly), the last report.
    let ages = [
        s.health.map(|h| h.heartbeat_age_s + health_age_offset_s),
        s.heartbeat.map(|h| (now_ms - h.timestamp_ms) / 1000.0),
        m.map(|m| (now_ms - m.timestamp_ms) / 1000.0),
    ];
    let seen = ages.into_iter().flatten().reduce(f64::min);
    vec![
        service.to_string(),
        instance.to_string(),
        health,
        m.map_or_else(dash, |m| format!("{:.1}%", m.cpu_percent)),
        rss.map_or_else(dash, client::format_bytes),
        jobs.map_or_else(dash, |n| n.to_string()),
        m.map_or_else(dash, |m| format!("{}/{}", m.completed, m.failed)),
        m.map_or_else(dash, |m| p95(&m.tick_lateness)),
        m.map_or_else(dash, |m| p95(&m.message_latency)),
        m.map_or_else(dash, |m| format!("{:.1}%", m.error_rate * 100.0)),
        m.map_or_else(dash, |m| seconds(m.uptime_s)),
        seen.map_or_else(dash, seconds),
        s.health
            .map(|h| h.reason.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(dash),
    ]
}

/// A p95 in milliseconds; `-` without samples.
fn p95(summary: &LatencySummary) -> String {
    if summary.count == 0 {
        "-".into()
    } else {
        format!("{:.1}ms", summary.p95_ms)
    }
}

/// Seconds for people (negative clock skew counts as 0).
fn seconds(s: f64) -> String {
    let s = if s.is_finite() { s.max(0.0) } else { 0.0 };
    client::format_duration(Duration::from_secs_f64(s))
}

/// One running job, merged from the instances' running lists and the training progress.
struct JobView<'a> {
    kind: Option<JobKind>,
    instance: &'a str,
    attempt: u32,
    epoch: Option<u32>,
    total_epochs: Option<u32>,
    percent: Option<f64>,
    training: Option<&'a TrainingProgress>,
}

fn jobs_section(overview: &Overview) -> String {
    let mut jobs: BTreeMap<&str, JobView<'_>> = BTreeMap::new();
    let mut running: Vec<(&str, &RunningJob)> = Vec::new();
    if let Ok(snapshot) = &overview.metrics {
        for m in &snapshot.instances {
            running.extend(m.running.iter().map(|j| (m.instance.as_str(), j)));
        }
    }
    if let Ok(report) = &overview.health {
        for i in &report.instances {
            running.extend(i.running.iter().map(|j| (i.instance.as_str(), j)));
        }
    }
    for h in &overview.heartbeats {
        running.extend(h.running.iter().map(|j| (h.instance.as_str(), j)));
    }
    // The first source to list a job wins: the metrics report is the freshest. Instance and
    // attempt stay those of the instance's own list (where the job runs now); the training
    // progress adds loss, accuracy and ETA, and its epoch and percent win.
    for (instance, j) in running {
        jobs.entry(j.job_id.as_str()).or_insert(JobView {
            kind: Some(j.kind),
            instance,
            attempt: j.attempt,
            epoch: j.epoch,
            total_epochs: j.total_epochs,
            percent: j.completion_percentage,
            training: None,
        });
    }
    if let Ok(snapshot) = &overview.metrics {
        for t in &snapshot.training {
            let view = jobs.entry(t.job_id.as_str()).or_insert(JobView {
                kind: Some(JobKind::Train),
                instance: t.instance.as_str(),
                attempt: t.attempt,
                epoch: None,
                total_epochs: None,
                percent: None,
                training: None,
            });
            view.training = Some(t);
        }
    }
    if jobs.is_empty() {
        return "no running jobs\n".into();
    }
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|(job_id, v)| {
            let t = v.training;
            let epoch = t.map(|t| t.epoch).or(v.epoch);
            let total = t.map(|t| t.total_epochs).or(v.total_epochs);
            let percent = t.map(|t| t.completion_percentage).or(v.percent);
            vec![
                (*job_id).to_string(),
                v.kind.map_or_else(dash, |k| k.name().to_string()),
                v.instance.to_string(),
                v.attempt.to_string(),
                match (epoch, total) {
                    (Some(e), Some(t)) => format!("{e}/{t}"),
                    (Some(e), None) => e.to_string(),
                    _ => dash(),
                },
                percent.map_or_else(dash, |p| format!("{p:.0}%")),
                t.map_or_else(dash, |t| format!("{:.4}", t.loss)),
                t.map_or_else(dash, |t| format!("{:.3}", t.accuracy)),
                t.and_then(|t| t.eta_s).map_or_else(dash, seconds),
            ]
        })
        .collect();
    table(JOB_HEADER, &rows)
}

fn alerts_section(overview: &Overview, now_ms: f64) -> String {
    let snapshot = match &overview.metrics {
        Ok(snapshot) => snapshot,
        Err(_) => return "alerts unknown (the metrics service did not answer)\n".into(),
    };
    let active: Vec<&Alert> = snapshot
        .alerts
        .iter()
        .filter(|a| a.state == AlertState::Raised)
        .collect();
    if active.is_empty() {
        return "no active alerts\n".into();
    }
    let rows: Vec<Vec<String>> = active
        .iter()
        .map(|a| {
            vec![
                a.kind.to_string(),
                match (a.service.is_empty(), a.instance.is_empty()) {
                    (false, false) => format!("{}/{}", a.service, a.instance),
                    (false, true) => a.service.clone(),
                    (true, false) => a.instance.clone(),
                    (true, true) => "-".into(),
                },
                number(a.value),
                number(a.threshold),
                seconds((now_ms - a.timestamp_ms) / 1000.0),
                a.message.clone(),
            ]
        })
        .collect();
    table(ALERT_HEADER, &rows)
}

/// A measured value: whole numbers without decimals, others with up to three.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Rows under a header (see [`crate::client::table_lines`]), one line each (the last ends with
/// a newline).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    for line in crate::client::table_lines(header, rows) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use lexmesh_protocol::ErrorCode;
    use lexmesh_protocol::health::HealthState;

    use super::*;
    use lexmesh_protocol::alert::AlertKind;

    /// The time the fixtures are looked at: 2024-05-01 12:00:00 UTC.
    const NOW: f64 = 1_714_564_800_000.0;

    fn running(job_id: &str, kind: JobKind, epoch: Option<(u32, u32, f64)>) -> RunningJob {
        RunningJob {
            job_id: job_id.into(),
            kind,
            attempt: 1,
            started_ms: NOW - 60_000.0,
            last_progress_ms: NOW - 1_000.0,
            epoch: epoch.map(|e| e.0),
            total_epochs: epoch.map(|e| e.1),
            completion_percentage: epoch.map(|e| e.2),
            ack_subject: None,
        }
    }

    fn instance_health(service: &str, instance: &str, state: HealthState) -> InstanceHealth {
        InstanceHealth {
            service: service.into(),
            instance: instance.into(),
            host: "host".into(),
            pid: 100,
            state,
            reason: "heartbeats on time, jobs progressing".into(),
            since_ms: NOW - 600_000.0,
            heartbeat_age_s: 2.0,
            rss_bytes: 100 << 20,
            memory_budget_bytes: 1 << 30,
            running: Vec::new(),
            replacements: 0,
        }
    }

    fn health_report(instances: Vec<InstanceHealth>) -> HealthReport {
        HealthReport {
            observer: "health-1".into(),
            leader: true,
            instances,
            timestamp_ms: NOW - 1_000.0,
        }
    }

    fn latency(count: u64, p95_ms: f64) -> LatencySummary {
        LatencySummary {
            count,
            mean_ms: p95_ms / 2.0,
            p95_ms,
            max_ms: p95_ms * 2.0,
        }
    }

    fn worker(service: &str, instance: &str) -> WorkerMetrics {
        WorkerMetrics {
            service: service.into(),
            instance: instance.into(),
            version: "0.1.0".into(),
            pid: 100,
            host: "host".into(),
            uptime_s: 3_725.0,
            cpu_percent: 153.25,
            cores: 2.0,
            control_cpu_percent: 1.0,
            cpu_throttled_percent: 0.0,
            rss_bytes: 256 << 20,
            active_jobs: 0,
            completed: 12,
            failed: 1,
            rejected: 0,
            running: Vec::new(),
            last_activity_ms: NOW - 5_000.0,
            tick_lateness: latency(120, 1.24),
            message_latency: latency(0, 0.0),
            window_completed: 3,
            window_failed: 1,
            error_rate: 0.25,
            window_s: 60.0,
            interval_s: 5.0,
            timestamp_ms: NOW - 4_000.0,
        }
    }

    fn progress(job_id: &str, instance: &str) -> TrainingProgress {
        TrainingProgress {
            job_id: job_id.into(),
            model_id: format!("{job_id}-model"),
            instance: instance.into(),
            attempt: 2,
            epoch: 3,
            total_epochs: 10,
            completion_percentage: 27.5,
            loss: 0.412_345,
            accuracy: 0.8765,
            eta_s: Some(192.0),
            updated_ms: NOW - 1_000.0,
        }
    }

    fn alert(kind: AlertKind, state: AlertState) -> Alert {
        Alert {
            kind,
            state,
            service: "trainer".into(),
            instance: "trainer-1".into(),
            value: 0.5,
            threshold: 0.2,
            message: "error rate 50% above 20%".into(),
            source: "metrics-1".into(),
            timestamp_ms: NOW - 90_000.0,
        }
    }

    fn snapshot(
        instances: Vec<WorkerMetrics>,
        training: Vec<TrainingProgress>,
        alerts: Vec<Alert>,
    ) -> MetricsSnapshot {
        MetricsSnapshot {
            instances,
            training,
            alerts,
            source: "metrics-1".into(),
            timestamp_ms: NOW - 500.0,
        }
    }

    fn overview(
        health: Result<HealthReport, Unavailable>,
        metrics: Result<MetricsSnapshot, Unavailable>,
    ) -> Overview {
        Overview {
            health,
            metrics,
            heartbeats: Vec::new(),
        }
    }

    /// The whitespace-separated cells of the line starting with `first`.
    fn cells<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|c| c.first() == Some(&first))
            .unwrap_or_else(|| panic!("no line starting with {first} in\n{text}"))
    }

    /// Both sources, one instance known to each only, a training job known to both.
    fn full() -> Overview {
        let mut trainer_health = instance_health("trainer", "trainer-1", HealthState::Healthy);
        trainer_health.running = vec![running("job-a", JobKind::Train, Some((2, 10, 15.0)))];
        let mut trainer = worker("trainer", "trainer-1");
        trainer.active_jobs = 1;
        trainer.message_latency = latency(7, 3.456);
        trainer.running = vec![running("job-a", JobKind::Train, Some((3, 10, 27.5)))];
        let mut stalled = instance_health("trainer", "trainer-2", HealthState::Stalled);
        stalled.reason = "job job-b made no progress for 61.0s".into();
        stalled.running = vec![running("job-b", JobKind::Train, Some((1, 5, 3.0)))];
        overview(
            Ok(health_report(vec![
                instance_health("health", "health-1", HealthState::Healthy),
                trainer_health,
                stalled,
            ])),
            Ok(snapshot(
                vec![trainer, worker("evaluator", "evaluator-1")],
                vec![progress("job-a", "trainer-1")],
                vec![
                    alert(AlertKind::ErrorRate, AlertState::Raised),
                    alert(AlertKind::Memory, AlertState::Cleared),
                ],
            )),
        )
    }

    #[test]
    fn the_view_merges_both_sources() {
        let view = render_view(&full(), NOW);
        println!("{view}");
        let expected = "\
SERVICE    INSTANCE     HEALTH   CPU     MEMORY     JOBS  DONE/FAILED  TICK-P95  MSG-P95  ERRORS  UPTIME  SEEN  REASON
evaluator  evaluator-1  -        153.2%  256.0 MiB  0     12/1         1.2ms     -        25.0%   1h02m   4s    -
health     health-1     healthy  -       100.0 MiB  0     -            -         -        -       -       3s    heartbeats on time, jobs progressing
trainer    trainer-1    healthy  153.2%  256.0 MiB  1     12/1         1.2ms     3.5ms    25.0%   1h02m   3s    heartbeats on time, jobs progressing
trainer    trainer-2    stalled  -       100.0 MiB  1     -            -         -        -       -       3s    job job-b made no progress for 61.0s

JOB    KIND   INSTANCE   ATTEMPT  EPOCH  PROGRESS  LOSS    ACC    ETA
job-a  train  trainer-1  1        3/10   28%       0.4123  0.876  3m12s
job-b  train  trainer-2  1        1/5    3%        -       -      -

ALERT       WHERE              VALUE  THRESHOLD  SINCE  MESSAGE
error_rate  trainer/trainer-1  0.5    0.2        1m30s  error rate 50% above 20%
";
        assert_eq!(view, expected);
        // HEALTH stays the third column: scripts (and tests/cli_mesh.rs) count healthy lines.
        let healthy = view
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("healthy"))
            .count();
        assert_eq!(healthy, 2);
    }

    #[test]
    fn running_jobs_come_from_every_source_once() {
        let mut o = full();
        // A training job the instances have not listed yet still shows, as a train job.
        if let Ok(s) = &mut o.metrics {
            s.training.push(progress("job-c", "trainer-3"));
        }
        let view = render_view(&o, NOW);
        assert_eq!(view.lines().filter(|l| l.starts_with("job-a")).count(), 1);
        let c = cells(&view, "job-c");
        assert_eq!(&c[..6], ["job-c", "train", "trainer-3", "2", "3/10", "28%"]);
        // Without metrics, the health service's running lists are all there is.
        o.metrics = Err(Unavailable::NoResponders);
        let view = render_view(&o, NOW);
        let a = cells(&view, "job-a");
        assert_eq!(
            a,
            [
                "job-a",
                "train",
                "trainer-1",
                "1",
                "2/10",
                "15%",
                "-",
                "-",
                "-"
            ]
        );
        assert!(!view.contains("job-c"), "{view}");
    }

    #[test]
    fn without_metrics_the_health_part_is_shown_with_a_note() {
        let mut o = full();
        o.metrics = Err(Unavailable::TimedOut(Duration::from_secs(5)));
        let view = render_view(&o, NOW);
        let t = cells(&view, "trainer");
        assert_eq!(
            &t[..7],
            ["trainer", "trainer-1", "healthy", "-", "100.0", "MiB", "1"]
        );
        assert!(!view.contains("evaluator-1"), "{view}");
        assert!(
            view.contains("alerts unknown (the metrics service did not answer)"),
            "{view}"
        );
        let notes = render_notes(&o);
        assert_eq!(notes[0], "as seen by health-1 (leader)");
        assert_eq!(
            notes[1],
            "metrics unavailable (lexmesh.api.metrics.snapshot: no answer within 5s): CPU, \
             latencies, training figures and alerts not shown"
        );
        assert_eq!(notes.len(), 2);
    }

    #[test]
    fn without_health_the_metrics_part_is_shown_with_a_note() {
        let mut o = full();
        o.health = Err(Unavailable::NoResponders);
        let view = render_view(&o, NOW);
        let t = cells(&view, "evaluator");
        assert_eq!(&t[..4], ["evaluator", "evaluator-1", "-", "153.2%"]);
        let t = cells(&view, "trainer");
        assert_eq!(&t[..4], ["trainer", "trainer-1", "-", "153.2%"]);
        assert!(!view.contains("health-1"), "{view}");
        assert!(view.contains("error_rate"), "{view}");
        let notes = render_notes(&o);
        assert_eq!(
            notes[0],
            "health unavailable (lexmesh.api.health.instances: no responders): health states \
             not shown"
        );
        assert_eq!(notes[1], "metrics from metrics-1");
    }

    #[test]
    fn nothing_answered_says_so() {
        let o = overview(
            Err(Unavailable::NoResponders),
            Err(Unavailable::NoResponders),
        );
        assert!(o.answered_none());
        let view = render_view(&o, NOW);
        assert_eq!(
            view,
            "no instances known (neither the health nor the metrics service answered)\n\n\
             no running jobs\n\n\
             alerts unknown (the metrics service did not answer)\n"
        );
        let empty = overview(
            Ok(health_report(Vec::new())),
            Ok(snapshot(vec![], vec![], vec![])),
        );
        assert_eq!(
            render_view(&empty, NOW),
            "no instances (no heartbeat or metrics report heard yet)\n\n\
             no running jobs\n\n\
             no active alerts\n"
        );
    }

    #[test]
    fn only_raised_alerts_are_active() {
        let cleared = overview(
            Err(Unavailable::NoResponders),
            Ok(snapshot(
                vec![],
                vec![],
                vec![alert(AlertKind::Memory, AlertState::Cleared)],
            )),
        );
        assert!(render_view(&cleared, NOW).ends_with("no active alerts\n"));
        let mut service_wide = alert(AlertKind::CrashLoop, AlertState::Raised);
        service_wide.instance = String::new();
        service_wide.value = 5.0;
        service_wide.threshold = 3.0;
        service_wide.timestamp_ms = NOW + 2_000.0; // a clock ahead of ours
        let raised = overview(
            Err(Unavailable::NoResponders),
            Ok(snapshot(vec![], vec![], vec![service_wide])),
        );
        let view = render_view(&raised, NOW);
        assert_eq!(
            cells(&view, "crash_loop")[..5],
            ["crash_loop", "trainer", "5", "3", "0s"]
        );
    }

    #[test]
    fn heartbeats_stand_in_when_neither_service_answers() {
        let heartbeat = |instance: &str, stopping: bool| Heartbeat {
            service: "trainer".into(),
            instance: instance.into(),
            protocol_version: 1,
            pid: 7,
            host: "host".into(),
            namespace: None,
            service_id: "id".into(),
            stopping,
            running: vec![running(&format!("{instance}-job"), JobKind::Train, None)],
            rss_bytes: 2048,
            memory_budget_bytes: 1 << 30,
            interval_s: 1.0,
            timestamp_ms: NOW - 1_500.0,
        };
        let mut o = overview(
            Err(Unavailable::NoResponders),
            Err(Unavailable::NoResponders),
        );
        o.heartbeats = vec![heartbeat("trainer-1", false), heartbeat("trainer-2", true)];
        let view = render_view(&o, NOW);
        assert_eq!(
            cells(&view, "trainer"),
            [
                "trainer",
                "trainer-1",
                "?",
                "-",
                "2.0",
                "KiB",
                "1",
                "-",
                "-",
                "-",
                "-",
                "-",
                "1s",
                "-"
            ]
        );
        assert!(view.contains("trainer-2  stopping"), "{view}");
        assert_eq!(
            cells(&view, "trainer-1-job")[..3],
            ["trainer-1-job", "train", "trainer-1"]
        );
        let notes = render_notes(&o);
        assert_eq!(
            notes.last().map(String::as_str),
            Some("neither service answered: health unknown, heartbeats shown")
        );
        let json = serde_json::to_value(o.json()).unwrap();
        assert!(json["health"].is_null() && json["metrics"].is_null());
        assert_eq!(json["heartbeats"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn json_has_both_reports_or_null() {
        let mut o = full();
        o.health = Err(Unavailable::NoResponders);
        let json = serde_json::to_value(o.json()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["health", "metrics"]);
        assert!(json["health"].is_null());
        let back: MetricsSnapshot = serde_json::from_value(json["metrics"].clone()).unwrap();
        assert_eq!(Ok(back), o.metrics);
    }

    #[test]
    fn replies_are_read_as_the_message_or_the_error() {
        let report = health_report(vec![]);
        let bytes = serde_json::to_vec(&report).unwrap();
        assert_eq!(read_reply::<HealthReport>(&bytes), Ok(report));
        let refusal = br#"{"error":{"code":"internal","reason":"store unavailable"}}"#;
        assert_eq!(
            read_reply::<HealthReport>(refusal),
            Err(Unavailable::Refused(ProtocolError::new(
                ErrorCode::Internal,
                "store unavailable"
            )))
        );
        let why = read_reply::<MetricsSnapshot>(b"{\"instances\":3}").unwrap_err();
        assert!(matches!(why, Unavailable::Unreadable(_)), "{why:?}");
        assert_eq!(
            Unavailable::Refused(ProtocolError::new(ErrorCode::Internal, "x")).to_string(),
            "error reply internal: x"
        );
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(5.0), "5");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(1.0 / 3.0), "0.333");
        assert_eq!(number(1_073_741_824.0), "1073741824");
        assert_eq!(seconds(-3.0), "0s");
        assert_eq!(seconds(f64::NAN), "0s");
        assert_eq!(p95(&latency(0, 9.0)), "-");
    }
}
