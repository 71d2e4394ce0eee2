//! `lexmesh trials JOB`: the trials of a hyperparameter search, read from its state in the
//! `lexmesh_searches` bucket: a table (trial, settings, epochs run, best macro-F1, status) or,
//! with `--format json`, one JSON array. Also the text helpers `watch` shows a search with.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::bail;
use lexmesh_mesh::search::state;
use lexmesh_mesh::search::wire;
use lexmesh_protocol::event::{LeaderboardEntry, TrialScore, TrialStatus, TrialStopReason};
use lexmesh_search::Experiment;
use serde::Serialize;

use crate::cli::FormatArg;
use crate::cli_mesh::TrialsArgs;
use crate::client;

/// One trial as `lexmesh trials --format json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrialRow {
    /// The trial (its train job's id).
    pub trial_id: String,
    /// Its index in the search.
    pub index: u32,
    /// The values it tries.
    pub configuration: BTreeMap<String, serde_json::Value>,
    /// The last epoch it reported.
    pub epochs_run: u32,
    /// Its best validation score.
    pub best: Option<TrialScore>,
    /// Where it is.
    pub status: TrialStatus,
    /// Why it was stopped, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<TrialStopReason>,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs the command.
pub fn run(args: TrialsArgs) -> anyhow::Result<ExitCode> {
    if !lexmesh_protocol::valid_id(&args.job_id) {
        bail!(
            "`{}` is not a job id (1 to 64 of A-Z a-z 0-9 _ -)",
            args.job_id
        );
    }
    let saved = client::runtime()?.block_on(async {
        let mesh = client::open_mesh(&args.mesh).await?;
        anyhow::Ok(state::read(&mesh.searches, &args.job_id).await?)
    })?;
    let Some(saved) = saved else {
        bail!(
            "no search {} is known (an optimize job's trials are listed once its coordinator \
             has started it)",
            args.job_id
        );
    };
    let rows = rows(&saved.experiment);
    match args.format {
        FormatArg::Json => crate::render::print_line(&serde_json::to_string(&rows)?),
        FormatArg::Text => {
            print_rows(&rows);
            let phase = saved.experiment.phase();
            match phase.reason() {
                Some(reason) => eprintln!(
                    "search {}: {} ({}), best model registered as {}",
                    args.job_id,
                    if saved.experiment.is_finished() {
                        "over"
                    } else {
                        "ending"
                    },
                    serde_json::to_value(wire::end_reason(reason))?
                        .as_str()
                        .unwrap_or("?"),
                    saved.model_id
                ),
                None => eprintln!("search {}: running", args.job_id),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The trials of a search, by index.
pub fn rows(experiment: &Experiment) -> Vec<TrialRow> {
    experiment
        .trials()
        .iter()
        .map(|t| TrialRow {
            trial_id: t.id.clone(),
            index: t.index,
            configuration: t.configuration.clone(),
            epochs_run: t.epochs_run(),
            best: t.best.map(wire::score),
            status: wire::status(t.status),
            stop_reason: t.stop_reason.as_ref().map(wire::stop_reason),
            error: t.error.clone(),
        })
        .collect()
}

/// The trials as a table on stdout.
pub fn print_rows(rows: &[TrialRow]) {
    let cells: Vec<Vec<String>> = rows.iter().map(cells).collect();
    client::print_table(
        &["TRIAL", "SETTINGS", "EPOCHS", "BEST MACRO-F1", "STATUS"],
        &cells,
    );
}

fn cells(row: &TrialRow) -> Vec<String> {
    vec![
        row.trial_id.clone(),
        configuration_text(&row.configuration),
        row.epochs_run.to_string(),
        row.best
            .map_or_else(|| "-".into(), |b| format!("{:.4}", b.macro_f1)),
        row.status.as_str().to_string(),
    ]
}

/// A trial's values as `name=value` pairs.
pub fn configuration_text(configuration: &BTreeMap<String, serde_json::Value>) -> String {
    configuration
        .iter()
        .map(|(name, value)| format!("{name}={}", value_text(value)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A setting's value, numbers to four significant places.
fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if x != 0.0 && x.abs() < 1e-3 {
                format!("{x:.3e}")
            } else {
                format!("{x:.4}")
            }
        }
        other => other.to_string(),
    }
}

/// Why a trial stopped, in words.
pub fn stop_reason_text(reason: &TrialStopReason) -> String {
    match reason {
        TrialStopReason::Rung {
            milestone,
            value,
            cutoff,
        } => format!(
            "macro-F1 {value:.4} below the cutoff {cutoff:.4} of the rung at epoch {milestone}"
        ),
        TrialStopReason::SearchEnded { reason } => format!(
            "the search ended ({})",
            serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
        TrialStopReason::External => "its train job was cancelled".into(),
    }
}

/// A leaderboard as table lines.
pub fn leaderboard_lines(entries: &[LeaderboardEntry]) -> Vec<String> {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.rank.to_string(),
                e.trial_id.clone(),
                e.best
                    .map_or_else(|| "-".into(), |b| format!("{:.4}", b.macro_f1)),
                e.epochs_run.to_string(),
                e.status.as_str().to_string(),
            ]
        })
        .collect();
    client::table_lines(
        &["RANK", "TRIAL", "BEST MACRO-F1", "EPOCHS", "STATUS"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_read_well() {
        let configuration: BTreeMap<String, serde_json::Value> = serde_json::from_value(json!({
            "learning_rate": 0.000123,
            "dropout": 0.25,
            "embedding_dim": 64,
            "model": "cnn",
        }))
        .unwrap_or_default();
        assert_eq!(
            configuration_text(&configuration),
            "dropout=0.2500 embedding_dim=64 learning_rate=1.230e-4 model=cnn"
        );
        let reason = TrialStopReason::Rung {
            milestone: 3.0,
            value: 0.5,
            cutoff: 0.61,
        };
        assert_eq!(
            stop_reason_text(&reason),
            "macro-F1 0.5000 below the cutoff 0.6100 of the rung at epoch 3"
        );
    }
}
