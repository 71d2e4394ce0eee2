//! `lexmesh schemas`: writes (or checks) the JSON Schema of every mesh message.

use std::process::ExitCode;

use anyhow::Context;

use lexmesh_protocol::schema;

use crate::cli::SchemasArgs;

/// Runs the command.
pub fn run(args: SchemasArgs) -> anyhow::Result<ExitCode> {
    if args.check {
        let stale = schema::stale_files(&args.out)
            .with_context(|| format!("reading {}", args.out.display()))?;
        if stale.is_empty() {
            println!(
                "{}: all {} schemas up to date",
                args.out.display(),
                schema::all().len()
            );
            return Ok(ExitCode::SUCCESS);
        }
        for name in &stale {
            eprintln!("stale: {}", args.out.join(name).display());
        }
        return Ok(ExitCode::FAILURE);
    }
    let written = schema::write_all(&args.out)
        .with_context(|| format!("writing into {}", args.out.display()))?;
    for path in &written {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
