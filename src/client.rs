//! The client side of the mesh, shared by `submit`, `watch`, `jobs`, `cancel`, `models` and
//! `classify`: configuration and connection, the tokio runtime of the synchronous `run`
//! functions, submitting a job, following a job's events, and the small text helpers (tables,
//! UTC times, sizes) their output shares.

use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use lexmesh_protocol::record::{JobRecord, JobStatus};
use lexmesh_protocol::{JobEvent, JobKind, names, subjects};
use lexmesh_runtime::connection::{self, Patience};
use lexmesh_runtime::{Config, Mesh, records, telemetry};
use tracing::Instrument;

use crate::cli_mesh::MeshOptions;

/// Name the command-line client announces to the server.
const CLIENT_NAME: &str = "lexmesh-cli";

/// Consecutive errors of an event subscription before `watch` gives up.
const MAX_EVENT_ERRORS: usize = 5;

/// The multi-threaded runtime (two workers) that drives a command's async part.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .context("starting the async runtime")
}

/// Reads the configuration (`--config`, `./lexmesh.toml`, `NATS_URL`, `LEXMESH_*__*`).
pub fn load_config(options: &MeshOptions) -> anyhow::Result<Config> {
    Ok(Config::load(options.config.as_deref())?)
}

/// Connects to NATS, failing at once when nothing answers.
pub async fn connect(config: &Config) -> anyhow::Result<async_nats::Client> {
    match connection::connect(&config.nats, CLIENT_NAME, Patience::FailFast).await {
        Ok(client) => Ok(client),
        // Nothing answered: the hint helps. A refusal or a setting that cannot work says what
        // is wrong on its own.
        Err(e @ lexmesh_runtime::RuntimeError::Connect { .. }) => {
            Err(anyhow::Error::new(e).context("is the mesh running? (`lexmesh up` starts one)"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Loads the configuration, connects and opens every stream, bucket and store of the mesh.
pub async fn open_mesh(options: &MeshOptions) -> anyhow::Result<Mesh> {
    let config = load_config(options)?;
    let client = connect(&config).await?;
    Mesh::open(client, config.nats.replicas, config.nats.jetstream_timeout)
        .await
        .context("opening the mesh's streams and stores (is JetStream enabled on the server?)")
}

/// What the jobs stream said about a submitted job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    /// Sequence of the job message in the jobs stream.
    pub sequence: u64,
    /// The server already had a job with this id in its duplicate window and dropped this one.
    pub duplicate: bool,
}

/// Publishes a job (already encoded) to `lexmesh.jobs.<kind>` with `Nats-Msg-Id` = the job id
/// and waits for the stream's acknowledgement. A new job also gets a `queued` record, so
/// `jobs` and `cancel` know it before a worker takes it.
///
/// The job's trace starts here: a `submit` span (exported when the `OTEL_*` variables ask for
/// it), a child of the `TRACEPARENT` environment variable when one is set, whose context
/// travels in the message's `traceparent` header. Without export, a `TRACEPARENT` given is
/// passed on as is, so the services still join the caller's trace.
pub async fn submit(
    mesh: &Mesh,
    kind: JobKind,
    job_id: &str,
    payload: Vec<u8>,
) -> anyhow::Result<Submitted> {
    let span = tracing::info_span!(
        "submit",
        otel.name = %format!("submit {} {job_id}", kind.name()),
        otel.kind = "producer",
        job_id,
        kind = kind.name(),
    );
    let outer = telemetry::context_from_env();
    telemetry::set_parent(&span, outer.clone());
    let mut headers = async_nats::HeaderMap::new();
    telemetry::inject(&span, &mut headers);
    if headers.is_empty() {
        // Not exporting: the caller's context goes on unchanged.
        telemetry::inject_context(&outer, &mut headers);
    }
    // The server's limit, read from its INFO: say so plainly instead of the client's error.
    let max_payload = mesh.client.server_info().max_payload;
    if max_payload > 0 && payload.len() > max_payload {
        anyhow::bail!(
            "job {job_id} is {} bytes, over this server's max_payload of {max_payload} bytes; \
             put the records in a file and submit it with --data (uploaded to the datasets \
             store) instead of inline",
            payload.len()
        );
    }
    async move {
        let message = PublishMessage::build()
            .payload(payload.into())
            .headers(headers)
            .message_id(job_id);
        let ack = mesh
            .js
            .send_publish(subjects::jobs(kind), message)
            .await
            .with_context(|| format!("publishing job {job_id}"))?
            .await
            .with_context(|| format!("storing job {job_id} in the jobs stream"))?;
        if !ack.duplicate {
            let now = lexmesh_protocol::time::now_ms();
            // Only when absent: a worker may already have taken the job and written its own.
            records::update(&mesh.jobs, job_id, |current| match current {
                Some(_) => None,
                None => Some(JobRecord::new(job_id, kind, JobStatus::Queued, 0, now)),
            })
            .await
            .with_context(|| format!("recording job {job_id} as queued"))?;
        }
        Ok(Submitted {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
    .instrument(span)
    .await
}

/// The events of one job, replayed from the first and then live, until a final one.
pub struct EventFollower {
    job_id: String,
    messages: pull::Ordered,
    pending_at_start: u64,
    finished: bool,
}

impl EventFollower {
    /// Subscribes to `lexmesh.events.<job>.>` with an ordered consumer on `LEXMESH_EVENTS`.
    pub async fn open(mesh: &Mesh, job_id: &str) -> anyhow::Result<Self> {
        if !lexmesh_protocol::valid_id(job_id) {
            bail!("`{job_id}` is not a job id (1 to 64 of A-Z a-z 0-9 _ -)");
        }
        let stream = mesh
            .js
            .get_stream(names::EVENTS_STREAM)
            .await
            .context("opening the events stream")?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: subjects::events_of(job_id),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .with_context(|| format!("subscribing to the events of {job_id}"))?;
        let pending_at_start = consumer.cached_info().num_pending;
        let messages = consumer
            .messages()
            .await
            .with_context(|| format!("reading the events of {job_id}"))?;
        Ok(Self {
            job_id: job_id.to_string(),
            messages,
            pending_at_start,
            finished: false,
        })
    }

    /// Events stored before the subscription started (0: the job has said nothing yet).
    pub fn pending_at_start(&self) -> u64 {
        self.pending_at_start
    }

    /// The next event; None after the final one. An event that cannot be decoded is skipped
    /// with a warning; a few errors of the subscription in a row end it with an error.
    pub async fn next(&mut self) -> Option<anyhow::Result<JobEvent>> {
        if self.finished {
            return None;
        }
        let mut errors = 0;
        loop {
            match self.messages.next().await {
                None => {
                    self.finished = true;
                    return Some(Err(anyhow::anyhow!(
                        "the event subscription of {} ended before the job did",
                        self.job_id
                    )));
                }
                Some(Err(error)) => {
                    errors += 1;
                    if errors >= MAX_EVENT_ERRORS {
                        self.finished = true;
                        return Some(Err(anyhow::Error::new(error)
                            .context(format!("following the events of {}", self.job_id))));
                    }
                    eprintln!("warning: events of {}: {error}", self.job_id);
                }
                Some(Ok(message)) => match lexmesh_protocol::decode::<JobEvent>(&message.payload) {
                    Ok(event) => {
                        self.finished = event.is_final();
                        return Some(Ok(event));
                    }
                    Err(error) => eprintln!(
                        "warning: skipped an unreadable event on {}: {error}",
                        message.subject
                    ),
                },
            }
        }
    }
}

/// Prints rows under a header, each column as wide as its widest cell (by characters).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    for line in table_lines(header, rows) {
        crate::render::print_line(&line);
    }
}

/// Rows under a header, each column as wide as its widest cell (by characters), one line each,
/// trailing spaces trimmed.
pub fn table_lines(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.trim_end().to_string()
    };
    let mut lines = vec![line(header.to_vec())];
    lines.extend(
        rows.iter()
            .map(|row| line(row.iter().map(String::as_str).collect())),
    );
    lines
}

/// A UTC date and time: (year, month, day, hour, minute, second).
pub type UtcParts = (i64, u32, u32, u32, u32, u32);

/// Splits seconds since the Unix epoch into a UTC date and time (proleptic Gregorian).
pub fn utc_parts(unix_seconds: i64) -> UtcParts {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400) as u32;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs / 3600, secs / 60 % 60, secs % 60)
}

/// `yyyy-mm-dd hh:mm` (UTC) of a wire timestamp (ms since the Unix epoch).
pub fn format_utc_ms(ms: f64) -> String {
    let (y, mo, d, h, mi, _) = utc_parts((ms / 1000.0).floor() as i64);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}")
}

/// A byte count for people: `512 B`, `1.5 KiB`, `12.0 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration for people: `45s`, `3m12s`, `1h05m`.
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, secs / 60 % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_right() {
        assert_eq!(utc_parts(0), (1970, 1, 1, 0, 0, 0));
        // 2000-02-29 12:34:56 UTC, a leap day.
        assert_eq!(utc_parts(951_827_696), (2000, 2, 29, 12, 34, 56));
        // 2024-12-31 23:59:59 UTC.
        assert_eq!(utc_parts(1_735_689_599), (2024, 12, 31, 23, 59, 59));
        assert_eq!(utc_parts(-1), (1969, 12, 31, 23, 59, 59));
        assert_eq!(format_utc_ms(951_827_696_789.0), "2000-02-29 12:34");
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(12 * 1024 * 1024), "12.0 MiB");
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(format_duration(Duration::from_secs(3900)), "1h05m");
    }

    #[test]
    fn tables_align_by_characters() {
        let rows = vec![
            vec!["a".to_string(), "حقوقی".to_string(), "x".to_string()],
            vec!["long-id".to_string(), "b".to_string(), String::new()],
        ];
        let lines = table_lines(&["ID", "LABEL", "NOTE"], &rows);
        assert_eq!(lines[0], "ID       LABEL  NOTE");
        assert_eq!(lines[1], "a        حقوقی  x");
        assert_eq!(lines[2], "long-id  b");
    }
}
