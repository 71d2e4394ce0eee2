//! `lexmesh cancel`: ask the instance running a job to stop it; when no instance answers,
//! record the cancel in the jobs bucket so a worker drops the job when it takes it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::RequestErrorKind;
use lexmesh_protocol::control::{CancelOutcome, CancelReply, CancelRequest};
use lexmesh_protocol::{ErrorReply, subjects};
use lexmesh_runtime::records;

use crate::cli_mesh::CancelArgs;
use crate::client;
use crate::render::print_line;

/// How long the instance running the job has to answer.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// Why, as written into logs and the cancel marker.
const REASON: &str = "cancelled with `lexmesh cancel`";

/// Runs the command.
pub fn run(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let job_id = args.job_id.as_str();
    if !lexmesh_protocol::valid_id(job_id) {
        bail!("`{job_id}` is not a job id (1 to 64 of A-Z a-z 0-9 _ -)");
    }
    client::runtime()?.block_on(async {
        let mesh = client::open_mesh(&args.mesh).await?;
        let request = serde_json::to_vec(&CancelRequest {
            job_id: job_id.to_string(),
            reason: Some(REASON.into()),
        })?;
        let answer = mesh
            .client
            .send_request(
                subjects::cancel(job_id),
                async_nats::Request::new()
                    .payload(request.into())
                    .timeout(Some(CANCEL_TIMEOUT)),
            )
            .await;
        match answer {
            Ok(reply) => {
                if let Ok(error) = serde_json::from_slice::<ErrorReply>(&reply.payload) {
                    eprintln!(
                        "error: cancel of {job_id} refused: {}: {}",
                        error.error.code, error.error.reason
                    );
                    return Ok(ExitCode::FAILURE);
                }
                let reply: CancelReply = serde_json::from_slice(&reply.payload)
                    .context("reading the reply to the cancel request")?;
                print_line(&describe(&reply));
                Ok(ExitCode::SUCCESS)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    RequestErrorKind::NoResponders | RequestErrorKind::TimedOut
                ) =>
            {
                // Nobody runs it: the marker makes a worker drop it when it comes.
                records::mark_cancelled(&mesh.jobs, job_id, REASON).await?;
                match records::read(&mesh.jobs, job_id).await? {
                    Some((record, _)) if record.status.is_final() => {
                        print_line(&format!(
                            "{job_id}: already finished ({})",
                            record.status.as_str()
                        ));
                        Ok(ExitCode::SUCCESS)
                    }
                    Some(_) => {
                        print_line(&format!(
                            "{job_id}: recorded (no running instance answered; the job is dropped \
                             when a worker takes it)"
                        ));
                        Ok(ExitCode::SUCCESS)
                    }
                    None => bail!(
                        "no such job {job_id} (the cancel is recorded anyway, should a job with \
                         this id be submitted)"
                    ),
                }
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("cancelling {job_id}"))),
        }
    })
}

fn describe(reply: &CancelReply) -> String {
    match reply.outcome {
        CancelOutcome::Cancelling => format!(
            "{}: cancelling (on {}; it stops within one batch)",
            reply.job_id, reply.instance
        ),
        CancelOutcome::Recorded => format!(
            "{}: recorded (the job is dropped when a worker takes it)",
            reply.job_id
        ),
        CancelOutcome::AlreadyFinished => format!("{}: already finished", reply.job_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_described() {
        let reply = CancelReply {
            job_id: "j1".into(),
            outcome: CancelOutcome::Cancelling,
            instance: "trainer-1".into(),
        };
        assert!(describe(&reply).contains("cancelling (on trainer-1"));
        let done = CancelReply {
            outcome: CancelOutcome::AlreadyFinished,
            ..reply
        };
        assert_eq!(describe(&done), "j1: already finished");
    }
}
