//! `lexmesh status`: every service instance with its health, memory and running jobs, as the
//! health service sees it (`lexmesh.api.health.instances`). Without a health service, the
//! heartbeats heard for a little over one interval are shown, with their health unknown.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use lexmesh_protocol::health::{HealthReport, InstanceHealth};
use lexmesh_protocol::heartbeat::Heartbeat;
use lexmesh_protocol::status::RunningJob;
use lexmesh_protocol::time::now_ms;
use lexmesh_protocol::{decode, subjects};

use crate::cli::FormatArg;
use crate::cli_mesh::StatusArgs;
use crate::client;

/// How long heartbeats are collected when no health service answers.
const LISTEN: Duration = Duration::from_millis(2500);

/// Runs the command.
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = client::load_config(&args.mesh)?;
    let report = client::runtime()?.block_on(async {
        let nats = client::connect(&config).await?;
        let asked = tokio::time::timeout(
            config.nats.request_timeout,
            nats.request(subjects::HEALTH_INSTANCES, bytes::Bytes::new()),
        )
        .await;
        let report = match asked {
            Ok(Ok(reply)) => Some(decode::<HealthReport>(&reply.payload)?),
            _ => None,
        };
        let report = match report {
            Some(r) => Status::Health(r),
            None => Status::Heartbeats(listen(&nats).await?),
        };
        anyhow::Ok(report)
    })?;
    match (args.format, report) {
        (FormatArg::Json, Status::Health(r)) => {
            crate::render::print_line(&serde_json::to_string(&r)?);
        }
        (FormatArg::Json, Status::Heartbeats(h)) => {
            crate::render::print_line(&serde_json::to_string(&h)?);
        }
        (FormatArg::Text, Status::Health(r)) => {
            let rows: Vec<Vec<String>> = r.instances.iter().map(row).collect();
            if rows.is_empty() {
                eprintln!("no instances (the health service has heard no heartbeat yet)");
            } else {
                client::print_table(HEADER, &rows);
            }
            eprintln!(
                "as seen by {}{}",
                r.observer,
                if r.leader { " (leader)" } else { "" }
            );
        }
        (FormatArg::Text, Status::Heartbeats(h)) => {
            let rows: Vec<Vec<String>> = h.iter().map(heartbeat_row).collect();
            if rows.is_empty() {
                eprintln!("no instances answered (no heartbeat within {LISTEN:?})");
            } else {
                client::print_table(HEADER, &rows);
            }
            eprintln!("no health service answered: health unknown, heartbeats shown");
        }
    }
    Ok(ExitCode::SUCCESS)
}

enum Status {
    Health(HealthReport),
    Heartbeats(Vec<Heartbeat>),
}

const HEADER: &[&str] = &[
    "SERVICE", "INSTANCE", "HEALTH", "SINCE", "PID", "MEMORY", "BUDGET", "JOBS", "REASON",
];

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

fn jobs(running: &[RunningJob]) -> String {
    if running.is_empty() {
        return "-".into();
    }
    running
        .iter()
        .map(
            |j| match (j.epoch, j.total_epochs, j.completion_percentage) {
                (Some(e), Some(t), Some(p)) => format!("{} {e}/{t} {p:.0}%", j.job_id),
                _ => j.job_id.clone(),
            },
        )
        .collect::<Vec<_>>()
        .join(", ")
}

fn row(i: &InstanceHealth) -> Vec<String> {
    vec![
        i.service.clone(),
        i.instance.clone(),
        i.state.name().to_string(),
        client::format_duration(Duration::from_secs_f64(
            ((now_ms() - i.since_ms) / 1000.0).max(0.0),
        )),
        i.pid.to_string(),
        client::format_bytes(i.rss_bytes),
        client::format_bytes(i.memory_budget_bytes),
        jobs(&i.running),
        i.reason.clone(),
    ]
}

fn heartbeat_row(h: &Heartbeat) -> Vec<String> {
    vec![
        h.service.clone(),
        h.instance.clone(),
        if h.stopping { "stopping" } else { "?" }.into(),
        "-".into(),
        h.pid.to_string(),
        client::format_bytes(h.rss_bytes),
        client::format_bytes(h.memory_budget_bytes),
        jobs(&h.running),
        "-".into(),
    ]
}
