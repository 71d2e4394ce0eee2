//! `lexmesh`: train, evaluate and use Persian legal-text classifiers.
//!
//! The binary is a thin shell over the domain crates in `services/`: argument parsing
//! ([`cli`], [`cli_mesh`]), one module per command ([`commands`]), the progress display
//! ([`render`]) and the mesh client side ([`client`]). The services that `lexmesh serve` runs are
//! the `lexmesh-mesh` crate (`services/mesh`).

mod cli;
mod cli_mesh;
mod client;
mod commands;
mod render;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The allocator settings of the processes that train or run models, before any thread
    // exists (`device::tune_allocator`: one heap for every thread, freed memory kept for the
    // next batch); the other services and `up` (which only starts processes) keep glibc's.
    let computes = match &cli.command {
        cli::Command::Serve(args) => matches!(
            args.service,
            cli_mesh::ServiceArg::Trainer | cli_mesh::ServiceArg::Evaluator
        ),
        cli::Command::Up(_) => false,
        _ => true,
    };
    if computes {
        lexmesh_trainer::device::tune_allocator();
    }
    let result = match cli.command {
        cli::Command::Train(args) => commands::train::run(*args),
        cli::Command::Evaluate(args) => commands::evaluate::run(args),
        cli::Command::Predict(args) => commands::predict::run(args),
        cli::Command::Optimize(args) => commands::optimize::run(*args),
        cli::Command::Schemas(args) => commands::schemas::run(args),
        cli::Command::Up(args) => commands::up::run(args),
        cli::Command::Serve(args) => commands::serve::run(args),
        cli::Command::Submit(args) => commands::submit::run(*args),
        cli::Command::Watch(args) => commands::watch::run(args),
        cli::Command::Jobs(args) => commands::jobs::run(args),
        cli::Command::Trials(args) => commands::trials::run(args),
        cli::Command::Status(args) => commands::status::run(args),
        cli::Command::Top(args) => commands::top::run(args),
        cli::Command::Cancel(args) => commands::cancel::run(args),
        cli::Command::Models(args) => commands::models::run(args),
        cli::Command::Classify(args) => commands::classify::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<lexmesh_mesh::Unusable>().is_some() {
                ExitCode::from(lexmesh_mesh::Unusable::EXIT_CODE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
