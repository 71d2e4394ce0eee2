//! `lexmesh cancel`: ask the instance running a job to stop it; when no instance answers,
//! record the cancel in the jobs bucket so a worker drops the job when it takes it.

use std::process::ExitCode;

use lexmesh_runtime::cancel::{CancelError, cancel, describe};

use crate::cli_mesh::CancelArgs;
use crate::client;
use crate::render::print_line;

/// Why, as written into logs and the cancel marker.
const REASON: &str = "cancelled with `lexmesh cancel`";

/// Runs the command.
pub fn run(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let job_id = args.job_id.as_str();
    if !lexmesh_protocol::valid_id(job_id) {
        anyhow::bail!("{}", CancelError::InvalidId(job_id.to_string()));
    }
    client::runtime()?.block_on(async {
        let mesh = client::open_mesh(&args.mesh).await?;
        match cancel(&mesh, job_id, REASON).await {
            Ok(done) => {
                print_line(&describe(job_id, &done));
                Ok(ExitCode::SUCCESS)
            }
            Err(refused @ CancelError::Refused { .. }) => {
                eprintln!("error: {refused}");
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e.into()),
        }
    })
}
