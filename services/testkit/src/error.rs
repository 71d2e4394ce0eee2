//! The errors of the test kit.

use std::io;

use lexmesh_runtime::nats_server::NatsServerError;

/// Errors of the test kit.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// Finding, starting or stopping the server failed (the message says how to install a
    /// server when none was found).
    #[error(transparent)]
    Server(#[from] NatsServerError),
    /// An I/O error of the test kit itself (temporary folder, free port).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A child process could not be started (or its log file not created).
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// The process, as the test kit names it.
        name: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}
