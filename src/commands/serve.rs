//! `lexmesh serve <service>`: runs one service until SIGTERM/SIGINT (what a container runs).

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use lexmesh_protocol::names::Service;
use lexmesh_runtime::{Config, ServiceRuntime};

use crate::cli_mesh::{ServeArgs, ServiceArg};
use crate::mesh;

/// Runs the command.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let config = Config::load(args.mesh.config.as_deref())?;
    let service = match args.service {
        ServiceArg::Preprocessor => Service::Preprocessor,
        ServiceArg::Trainer => Service::Trainer,
        ServiceArg::Evaluator => Service::Evaluator,
        ServiceArg::Health => Service::Health,
    };
    if service == Service::Trainer {
        // Once per process, before any training thread exists.
        lexmesh_trainer::device::tune_allocator();
        if config.service.compute_threads > 0 {
            lexmesh_trainer::device::set_compute_threads(config.service.compute_threads);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("lexmesh-async")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut runtime = ServiceRuntime::start(service, config).await?;
        match service {
            Service::Preprocessor => mesh::preprocessor::start(&mut runtime).await?,
            Service::Trainer => mesh::trainer::start(&mut runtime),
            Service::Evaluator => mesh::evaluator::start(&mut runtime).await?,
            Service::Health => mesh::health::start(&mut runtime).await?,
        }
        runtime.run_until_shutdown().await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr; `LEXMESH_LOG` (or `RUST_LOG`) sets the filter, default `info`.
pub fn init_logging() {
    let filter = std::env::var("LEXMESH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,async_nats=warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
