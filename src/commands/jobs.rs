//! `lexmesh jobs`: the job records of the `lexmesh_jobs` bucket, as a table or a JSON array.

use std::process::ExitCode;

use lexmesh_protocol::JobResult;
use lexmesh_protocol::record::JobRecord;
use lexmesh_runtime::records;

use crate::cli::FormatArg;
use crate::cli_mesh::JobsArgs;
use crate::client;

/// Runs the command.
pub fn run(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let jobs = client::runtime()?.block_on(async {
        let mesh = client::open_mesh(&args.mesh).await?;
        anyhow::Ok(records::list(&mesh.jobs).await?)
    })?;
    match args.format {
        FormatArg::Json => crate::render::print_line(&serde_json::to_string(&jobs)?),
        FormatArg::Text if jobs.is_empty() => eprintln!("no jobs"),
        FormatArg::Text => {
            let rows: Vec<Vec<String>> = jobs.iter().map(row).collect();
            client::print_table(
                &[
                    "JOB", "KIND", "STATUS", "ATTEMPTS", "OWNER", "EPOCHS", "METRIC", "ERROR",
                    "UPDATED",
                ],
                &rows,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn row(job: &JobRecord) -> Vec<String> {
    vec![
        job.job_id.clone(),
        job.kind.name().to_string(),
        job.status.as_str().to_string(),
        job.attempts.to_string(),
        job.owner.clone().unwrap_or_else(|| "-".into()),
        epochs(job),
        metric(job.result.as_ref()),
        job.error
            .as_ref()
            .map_or_else(|| "-".into(), |e| e.code.to_string()),
        client::format_utc_ms(job.updated_ms),
    ]
}

fn epochs(job: &JobRecord) -> String {
    match (job.epochs_completed, job.total_epochs) {
        (Some(done), Some(total)) => format!("{done}/{total}"),
        (Some(done), None) => done.to_string(),
        (None, Some(total)) => format!("0/{total}"),
        (None, None) => "-".into(),
    }
}

/// The headline figure of a result.
fn metric(result: Option<&JobResult>) -> String {
    match result {
        Some(JobResult::Train(t)) => format!("macro-F1 {:.4}", t.validation.macro_f1),
        Some(JobResult::Evaluate(e)) => format!("macro-F1 {:.4}", e.evaluation.macro_f1),
        Some(JobResult::Preprocess(p)) => {
            format!("{} examples", p.train_examples + p.validation_examples)
        }
        Some(JobResult::Optimize(o)) => format!(
            "macro-F1 {:.4} ({})",
            o.best_trial.score.macro_f1, o.best_trial.trial_id
        ),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lexmesh_protocol::JobKind;
    use lexmesh_protocol::error::{ErrorBody, ErrorCode};
    use lexmesh_protocol::record::JobStatus;

    #[test]
    fn rows_show_status_progress_and_error() {
        let job = JobRecord {
            job_id: "j1".into(),
            kind: JobKind::Train,
            status: JobStatus::Retrying,
            attempts: 2,
            owner: Some("trainer-1".into()),
            model_id: None,
            epochs_completed: Some(3),
            total_epochs: Some(10),
            created_ms: 0.0,
            updated_ms: 60_000.0,
            result: None,
            error: Some(ErrorBody {
                code: ErrorCode::Unavailable,
                reason: "later".into(),
            }),
            stream_sequence: None,
            history: Vec::new(),
        };
        assert_eq!(
            row(&job),
            [
                "j1",
                "train",
                "retrying",
                "2",
                "trainer-1",
                "3/10",
                "-",
                "unavailable",
                "1970-01-01 00:01"
            ]
        );
    }
}
