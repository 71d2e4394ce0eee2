//! `lexmesh`: train, evaluate and use Persian legal-text classifiers.
//!
//! The binary is a thin shell over the domain crates in `services/`: argument parsing
//! ([`cli`]), one module per command ([`commands`]) and the progress display ([`render`]).

mod cli;
mod commands;
mod render;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Train(args) => commands::train::run(*args),
        cli::Command::Evaluate(args) => commands::evaluate::run(args),
        cli::Command::Predict(args) => commands::predict::run(args),
        cli::Command::Schemas(args) => commands::schemas::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
