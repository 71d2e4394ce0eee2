//! Cancelling a job from outside (`lexmesh cancel`, the dashboard): ask the instance running it
//! on `lexmesh.control.<job>.cancel`; when no instance answers, record the cancel in the jobs
//! bucket so that a worker drops the job when it takes it.

use std::time::Duration;

use async_nats::RequestErrorKind;
use lexmesh_protocol::control::{CancelOutcome, CancelReply, CancelRequest};
use lexmesh_protocol::{ErrorReply, subjects};

use crate::error::RuntimeError;
use crate::mesh::Mesh;
use crate::records;

/// How long the instance running the job has to answer.
pub const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// What a cancel did.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancelled {
    /// The running instance answered (it stops the job within one batch, or says it had
    /// already finished).
    Answered(CancelReply),
    /// No instance runs it: the cancel is recorded; `finished` when the job had ended already.
    Recorded {
        /// The job had ended already.
        finished: bool,
    },
}

/// Why a cancel was not done.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// Not a job id.
    #[error("`{0}` is not a job id (1 to 64 of A-Z a-z 0-9 _ -)")]
    InvalidId(String),
    /// The instance running the job refused (its error reply).
    #[error("cancel of {job_id} refused: {code}: {reason}")]
    Refused {
        /// The job.
        job_id: String,
        /// The error code of the reply.
        code: lexmesh_protocol::ErrorCode,
        /// Its reason.
        reason: String,
    },
    /// No job has this id (the cancel is recorded anyway, for a job submitted later).
    #[error(
        "no such job {0} (the cancel is recorded anyway, should a job with this id be submitted)"
    )]
    NoSuchJob(String),
    /// The broker or the jobs bucket failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Cancels `job_id`, saying `reason` to the instance and in the cancel marker.
pub async fn cancel(mesh: &Mesh, job_id: &str, reason: &str) -> Result<Cancelled, CancelError> {
    if !lexmesh_protocol::valid_id(job_id) {
        return Err(CancelError::InvalidId(job_id.to_string()));
    }
    let request = serde_json::to_vec(&CancelRequest {
        job_id: job_id.to_string(),
        reason: Some(reason.into()),
    })
    .map_err(RuntimeError::encode("a cancel request"))?;
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
                return Err(CancelError::Refused {
                    job_id: job_id.to_string(),
                    code: error.error.code,
                    reason: error.error.reason,
                });
            }
            let reply: CancelReply =
                serde_json::from_slice(&reply.payload).map_err(|e| RuntimeError::Corrupt {
                    what: format!("the reply to the cancel of {job_id}"),
                    reason: e.to_string(),
                })?;
            Ok(Cancelled::Answered(reply))
        }
        Err(e)
            if matches!(
                e.kind(),
                RequestErrorKind::NoResponders | RequestErrorKind::TimedOut
            ) =>
        {
            // Nobody runs it: the marker makes a worker drop it when it comes.
            records::mark_cancelled(&mesh.jobs, job_id, reason).await?;
            match records::read(&mesh.jobs, job_id).await? {
                Some((record, _)) => Ok(Cancelled::Recorded {
                    finished: record.status.is_final(),
                }),
                None => Err(CancelError::NoSuchJob(job_id.to_string())),
            }
        }
        Err(e) => Err(RuntimeError::nats(format!("cancelling {job_id}"))(e).into()),
    }
}

/// One line that says what a cancel did.
pub fn describe(job_id: &str, cancelled: &Cancelled) -> String {
    match cancelled {
        Cancelled::Answered(reply) => match reply.outcome {
            CancelOutcome::Cancelling => format!(
                "{}: cancelling (on {}; it stops within one batch)",
                reply.job_id, reply.instance
            ),
            CancelOutcome::Recorded => format!(
                "{}: recorded (the job is dropped when a worker takes it)",
                reply.job_id
            ),
            CancelOutcome::AlreadyFinished => format!("{}: already finished", reply.job_id),
        },
        Cancelled::Recorded { finished: true } => format!("{job_id}: already finished"),
        Cancelled::Recorded { finished: false } => format!(
            "{job_id}: recorded (no running instance answered; the job is dropped when a \
             worker takes it)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_described() {
        let reply = CancelReply {
            job_id: "j1".into(),
            outcome: CancelOutcome::Cancelling,
            instance: "trainer-1".into(),
        };
        let answered = |outcome| {
            describe(
                "j1",
                &Cancelled::Answered(CancelReply {
                    outcome,
                    ..reply.clone()
                }),
            )
        };
        assert!(answered(CancelOutcome::Cancelling).contains("cancelling (on trainer-1"));
        assert!(answered(CancelOutcome::Recorded).contains("recorded (the job is dropped"));
        assert_eq!(
            answered(CancelOutcome::AlreadyFinished),
            "j1: already finished"
        );
        assert_eq!(
            describe("j1", &Cancelled::Recorded { finished: true }),
            "j1: already finished"
        );
        assert!(describe("j1", &Cancelled::Recorded { finished: false }).contains("no running"));
    }
}
