//! Errors of the runtime: each says what it was doing and keeps its source.

use crate::config::ConfigError;

/// A failure of service plumbing (not of a job: jobs fail with a
/// [`lexmesh_protocol::ProtocolError`]).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The configuration could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Nothing answered at the configured URL.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The URL(s) tried.
        url: String,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// A NATS operation failed.
    #[error("{what}: {source}")]
    Nats {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A local file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An operation did not end within its deadline.
    #[error("{what}: no answer within {after:?}")]
    TimedOut {
        /// What was being done.
        what: String,
        /// The deadline it had.
        after: std::time::Duration,
    },
    /// Stored data could not be read back.
    #[error("{what}: {reason}")]
    Corrupt {
        /// What was read.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl RuntimeError {
    /// Wraps a NATS error with what was being done.
    pub fn nats<E: std::error::Error + Send + Sync + 'static>(
        what: impl Into<String>,
    ) -> impl FnOnce(E) -> Self {
        let what = what.into();
        move |source| Self::Nats {
            what,
            source: Box::new(source),
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
