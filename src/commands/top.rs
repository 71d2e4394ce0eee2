//! `lexmesh top`: the `lexmesh status` view, asked for again and redrawn every `--interval`
//! until Ctrl-C (or `--count` frames). On a terminal each frame replaces the last (ANSI escapes,
//! cursor hidden meanwhile and shown again at the end); otherwise frames follow one another,
//! each under a timestamp line, so the output can be piped or logged. A service that does not
//! answer for a frame is noted in that frame; the next frame asks again.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lexmesh_protocol::time::now_ms;
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;

use crate::cli_mesh::TopArgs;
use crate::client;
use crate::commands::status::{Overview, render_notes, render_view};

/// The shortest `--interval`: the services answer from memory, but not more often than this.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// The longest a frame waits for a service (less when the interval or the configuration's
/// request timeout is shorter, but at least one second).
const MAX_WAIT: Duration = Duration::from_secs(5);

/// Moves the cursor home; each line then clears its rest and the last clears what is below, so
/// the previous frame disappears without the flicker of a full clear.
const HOME: &str = "\x1b[H";
const CLEAR_LINE_END: &str = "\x1b[K";
const CLEAR_BELOW: &str = "\x1b[J";
const HIDE_CURSOR: &str = "\x1b[?25l";
const SHOW_CURSOR: &str = "\x1b[?25h";

/// Why an `--interval` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntervalError {
    /// Not a duration (`500ms`, `2s`, `1.5s`, `1m`, or seconds as a bare number).
    Unreadable(String),
    /// Shorter than [`MIN_INTERVAL`].
    TooShort(Duration),
}

impl fmt::Display for IntervalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable(text) => write!(
                f,
                "`{text}` is not a duration (for example 500ms, 2s, 1.5s, 1m)"
            ),
            Self::TooShort(d) => write!(f, "{d:?} is shorter than the minimum of {MIN_INTERVAL:?}"),
        }
    }
}

impl std::error::Error for IntervalError {}

/// Reads `--interval`: a number with `ms`, `s` or `m` (seconds without a unit), at least
/// [`MIN_INTERVAL`].
pub fn parse_interval(text: &str) -> Result<Duration, IntervalError> {
    let unreadable = || IntervalError::Unreadable(text.to_string());
    let trimmed = text.trim();
    let (number, seconds_per_unit) = if let Some(n) = trimmed.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = trimmed.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = trimmed.strip_suffix('m') {
        (n, 60.0)
    } else {
        (trimmed, 1.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| unreadable())?;
    let interval =
        Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| unreadable())?;
    if interval < MIN_INTERVAL {
        return Err(IntervalError::TooShort(interval));
    }
    Ok(interval)
}

/// Where frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// A terminal: each frame is drawn over the last.
    Terminal,
    /// A pipe or file: frames follow one another, separated by a blank line.
    Log,
}

/// One frame: a header line (time, interval), the view, and the notes about the sources.
/// `first` is whether it is the first frame of the run (a log needs no blank line before it).
pub fn render_frame(
    overview: &Overview,
    now_ms: f64,
    interval: Duration,
    screen: Screen,
    first: bool,
) -> String {
    let mut lines = String::new();
    match screen {
        Screen::Terminal => lines.push_str(&format!(
            "lexmesh top  {}  every {interval:?}  (Ctrl-C quits)\n\n",
            utc_seconds(now_ms)
        )),
        Screen::Log => {
            if !first {
                lines.push('\n');
            }
            lines.push_str(&format!("=== {} ===\n", utc_seconds(now_ms)));
        }
    }
    lines.push_str(&render_view(overview, now_ms));
    lines.push('\n');
    for note in render_notes(overview) {
        lines.push_str(&note);
        lines.push('\n');
    }
    match screen {
        Screen::Log => lines,
        Screen::Terminal => {
            let mut frame = String::from(HOME);
            for line in lines.lines() {
                frame.push_str(line);
                frame.push_str(CLEAR_LINE_END);
                frame.push('\n');
            }
            frame.push_str(CLEAR_BELOW);
            frame
        }
    }
}

/// `yyyy-mm-dd hh:mm:ss UTC` of a wire timestamp.
fn utc_seconds(ms: f64) -> String {
    let (y, mo, d, h, mi, s) = client::utc_parts((ms / 1000.0).floor() as i64);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// Hides the cursor while it lives, shows it again when dropped (also on an early return).
struct HiddenCursor;

impl HiddenCursor {
    fn hide() -> Self {
        let mut out = std::io::stdout().lock();
        let _ = out
            .write_all(HIDE_CURSOR.as_bytes())
            .and_then(|()| out.flush());
        Self
    }
}

impl Drop for HiddenCursor {
    fn drop(&mut self) {
        let mut out = std::io::stdout().lock();
        let _ = out
            .write_all(SHOW_CURSOR.as_bytes())
            .and_then(|()| out.flush());
    }
}

/// Runs the command.
pub fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    let config = client::load_config(&args.mesh)?;
    let interval = args.interval;
    let wait = config
        .nats
        .request_timeout
        .min(interval.max(Duration::from_secs(1)))
        .min(MAX_WAIT);
    let screen = if std::io::stdout().is_terminal() {
        Screen::Terminal
    } else {
        Screen::Log
    };
    // Set before the cursor is hidden, so that Ctrl-C always ends the loop (and the guard
    // shows the cursor again) instead of killing the process.
    let stop = Arc::new(Notify::new());
    let on_ctrl_c = Arc::clone(&stop);
    ctrlc::set_handler(move || on_ctrl_c.notify_one()).context("handling Ctrl-C")?;

    client::runtime()?.block_on(async {
        let nats = client::connect(&config).await?;
        let _cursor = (screen == Screen::Terminal).then(HiddenCursor::hide);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut shown: u64 = 0;
        loop {
            tokio::select! {
                () = stop.notified() => break,
                _ = ticks.tick() => {}
            }
            let overview = tokio::select! {
                () = stop.notified() => break,
                overview = Overview::fetch(&nats, wait) => overview,
            };
            let frame = render_frame(&overview, now_ms(), interval, screen, shown == 0);
            let mut out = std::io::stdout().lock();
            if out
                .write_all(frame.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                // The reader went away (`| head`): nothing more to show.
                break;
            }
            shown += 1;
            if args.count.is_some_and(|count| shown >= count) {
                break;
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use lexmesh_protocol::metrics::MetricsSnapshot;

    use super::*;
    use crate::commands::status::Unavailable;

    /// 2024-05-01 12:00:00 UTC.
    const NOW: f64 = 1_714_564_800_000.0;

    #[test]
    fn intervals_are_read_with_units_and_a_minimum() {
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_interval("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_interval("200ms"), Ok(MIN_INTERVAL));
        assert_eq!(
            parse_interval("199ms"),
            Err(IntervalError::TooShort(Duration::from_millis(199)))
        );
        assert_eq!(
            parse_interval("0"),
            Err(IntervalError::TooShort(Duration::ZERO))
        );
        for bad in ["", "fast", "-1s", "2h", "NaNs", "infs"] {
            assert_eq!(
                parse_interval(bad),
                Err(IntervalError::Unreadable(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(
            IntervalError::TooShort(Duration::from_millis(100)).to_string(),
            "100ms is shorter than the minimum of 200ms"
        );
    }

    fn metrics_only() -> Overview {
        Overview {
            health: Err(Unavailable::NoResponders),
            metrics: Ok(MetricsSnapshot {
                instances: Vec::new(),
                training: Vec::new(),
                alerts: Vec::new(),
                source: "metrics-1".into(),
                timestamp_ms: NOW,
            }),
            heartbeats: Vec::new(),
        }
    }

    #[test]
    fn logged_frames_follow_one_another_under_a_timestamp() {
        let o = metrics_only();
        let first = render_frame(&o, NOW, Duration::from_secs(2), Screen::Log, true);
        assert_eq!(
            first,
            "=== 2024-05-01 12:00:00 UTC ===\n\
             no instances (no heartbeat or metrics report heard yet)\n\n\
             no running jobs\n\n\
             no active alerts\n\n\
             health unavailable (lexmesh.api.health.instances: no responders): health states \
             not shown\n\
             metrics from metrics-1\n"
        );
        assert!(!first.contains('\x1b'));
        let next = render_frame(
            &o,
            NOW + 2_000.0,
            Duration::from_secs(2),
            Screen::Log,
            false,
        );
        assert!(
            next.starts_with("\n=== 2024-05-01 12:00:02 UTC ===\n"),
            "{next}"
        );
    }

    #[test]
    fn terminal_frames_draw_over_the_last() {
        let o = metrics_only();
        let frame = render_frame(&o, NOW, Duration::from_millis(500), Screen::Terminal, true);
        assert!(frame.starts_with("\x1b[Hlexmesh top  2024-05-01 12:00:00 UTC  every 500ms"));
        assert!(
            frame.ends_with("metrics from metrics-1\x1b[K\n\x1b[J"),
            "{frame:?}"
        );
        // Every line clears what the previous frame left to its right.
        assert!(
            frame
                .lines()
                .all(|l| l.ends_with(CLEAR_LINE_END) || l == CLEAR_BELOW)
        );
    }
}
