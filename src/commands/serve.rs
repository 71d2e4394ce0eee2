//! `lexmesh serve <service>`: runs one service until SIGTERM/SIGINT (what a container runs).

use std::process::ExitCode;

use anyhow::Context;
use lexmesh_protocol::names::Service;
use lexmesh_runtime::{Config, RuntimeError, ServiceRuntime, telemetry};

use crate::cli_mesh::{ServeArgs, ServiceArg};

/// Runs the command.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let service = match args.service {
        ServiceArg::Preprocessor => Service::Preprocessor,
        ServiceArg::Trainer => Service::Trainer,
        ServiceArg::Evaluator => Service::Evaluator,
        ServiceArg::Health => Service::Health,
        ServiceArg::Metrics => Service::Metrics,
    };
    let config = Config::load(args.mesh.config.as_deref())
        .map_err(|e| lexmesh_mesh::Unusable(e.to_string()))?;
    let instance = config
        .service
        .instance
        .clone()
        .unwrap_or_else(|| lexmesh_runtime::worker::default_instance_id(service));
    // Logs, and traces when the OTEL_* variables ask for them.
    let telemetry = telemetry::Telemetry::builder(&service.service_api_name())
        .instance_id(instance)
        .init();
    if matches!(service, Service::Trainer | Service::Evaluator) {
        // Once per process, before any compute thread exists: the default every libtorch
        // thread starts with (each training job sets its own share again on its thread). The
        // allocator is tuned in `main`, before the telemetry's threads.
        lexmesh_trainer::device::set_compute_threads(config.threads_per_job());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("lexmesh-async")
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async move {
        let mut runtime = ServiceRuntime::start(service, config)
            .await
            .map_err(unusable_settings)?;
        match service {
            Service::Preprocessor => lexmesh_mesh::preprocessor::start(&mut runtime).await?,
            Service::Trainer => lexmesh_mesh::trainer::start(&mut runtime),
            Service::Evaluator => lexmesh_mesh::evaluator::start(&mut runtime).await?,
            Service::Health => lexmesh_mesh::health::start(&mut runtime).await?,
            Service::Metrics => lexmesh_mesh::metrics::start(&mut runtime).await?,
        }
        runtime.run_until_shutdown().await?;
        anyhow::Ok(())
    });
    // The spans of the last jobs (an attempt handed back on SIGTERM) still go out.
    if let Err(e) = telemetry.shutdown() {
        tracing::warn!("the last spans may be lost: {e}");
    }
    served?;
    Ok(ExitCode::SUCCESS)
}

/// A configuration that cannot be read (an unknown key, a value out of range, an instance id
/// that is not a subject token) ends with [`lexmesh_mesh::Unusable::EXIT_CODE`]: a supervisor
/// that starts the service again gets the same error. A machine that does not allow a setting
/// (a scratch folder that cannot be created yet, say a volume still being mounted) exits 1 and
/// is restarted with backoff.
fn unusable_settings(error: RuntimeError) -> anyhow::Error {
    match error {
        RuntimeError::Config(_) => lexmesh_mesh::Unusable(error.to_string()).into(),
        other => other.into(),
    }
}
