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
    /// The server answered but refused this client: the TLS handshake failed (a certificate
    /// one side does not trust) or the server refused the credentials. Trying again fails the
    /// same way until the configuration or the server changes.
    // The reason already holds the client's error text; the error is kept for its kind, not as
    // a `source`, so that a printed chain does not repeat it.
    #[error("NATS at {url} refused this client: {reason}")]
    Refused {
        /// The URL(s) tried.
        url: String,
        /// What was refused.
        refusal: Refusal,
        /// What was refused, with the client's error and the settings involved.
        reason: String,
        /// The client's error.
        error: async_nats::ConnectError,
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
    /// A value of lexmesh's own could not be encoded (a bug, not the data's fault).
    #[error("encoding {what}: {source}")]
    Encode {
        /// What was encoded.
        what: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// A compare-and-set write kept losing to concurrent writers.
    #[error("{what}: still changing after {attempts} compare-and-set attempts")]
    Contended {
        /// What was written.
        what: String,
        /// How many times it was tried.
        attempts: u32,
    },
    /// A setting of this instance cannot work (an invalid instance id, a scratch folder that
    /// cannot be written): starting again would fail the same way.
    #[error("{setting}: {reason}")]
    Unusable {
        /// The setting (`service.instance`, ...).
        setting: String,
        /// Why.
        reason: String,
    },
}

/// What a NATS server (or the TLS handshake with it) refused; see [`RuntimeError::Refused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This client does not trust the server's certificate (not signed by a CA of
    /// `nats.tls.ca_file`, or not for this host).
    ServerCertificate,
    /// The server refused this client's certificate, or asked for one and got none.
    ClientCertificate,
    /// The TLS handshake failed for another reason.
    TlsHandshake,
    /// The server refused the credentials (user and password, token, nkey or creds file).
    Authorization,
}

/// What kind of failure a [`RuntimeError`] is, for callers that decide what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeErrorKind {
    /// The broker, a store or a peer did not answer, answered with an error, or was busy:
    /// the same operation may well succeed later.
    Transient,
    /// Stored data is unreadable or lexmesh's own value could not be encoded: trying again
    /// reads or writes the same thing.
    Data,
    /// The configuration or the machine (files, settings) does not allow it.
    Setup,
}

impl RuntimeError {
    /// [`RuntimeError::Unusable`]: `setting` cannot work, for `reason`.
    pub(crate) fn unusable(setting: &str, reason: impl Into<String>) -> Self {
        Self::Unusable {
            setting: setting.into(),
            reason: reason.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> RuntimeErrorKind {
        match self {
            Self::Connect { .. } | Self::Nats { .. } | Self::TimedOut { .. } => {
                RuntimeErrorKind::Transient
            }
            Self::Contended { .. } => RuntimeErrorKind::Transient,
            Self::Corrupt { .. } | Self::Encode { .. } => RuntimeErrorKind::Data,
            Self::Config(_) | Self::Io { .. } | Self::Unusable { .. } | Self::Refused { .. } => {
                RuntimeErrorKind::Setup
            }
        }
    }

    /// Whether the same operation may succeed later ([`RuntimeErrorKind::Transient`]).
    pub fn is_transient(&self) -> bool {
        self.kind() == RuntimeErrorKind::Transient
    }

    /// Wraps a JSON encoding error with what was encoded.
    pub fn encode(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> Self {
        let what = what.into();
        move |source| Self::Encode { what, source }
    }

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

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::*;

    #[test]
    fn broker_failures_and_lost_races_are_transient_the_rest_is_not() {
        let nats = RuntimeError::nats("publishing")(std::io::Error::other("closed"));
        assert_eq!(nats.kind(), RuntimeErrorKind::Transient);
        let contended = RuntimeError::Contended {
            what: "job record j1".into(),
            attempts: 8,
        };
        assert!(contended.is_transient());
        assert_eq!(
            contended.to_string(),
            "job record j1: still changing after 8 compare-and-set attempts"
        );
        let corrupt = RuntimeError::Corrupt {
            what: "job record j1".into(),
            reason: "expected value at line 1".into(),
        };
        assert_eq!(corrupt.kind(), RuntimeErrorKind::Data);
        let json_error = serde_json::from_str::<u8>("x").err();
        let encode = RuntimeError::encode("an event")(json_error.expect("not a number"));
        assert_eq!(encode.kind(), RuntimeErrorKind::Data);
        let unusable = RuntimeError::Unusable {
            setting: "service.work_dir".into(),
            reason: "read-only".into(),
        };
        assert_eq!(unusable.kind(), RuntimeErrorKind::Setup);
        assert!(!RuntimeError::io("writing")(std::io::Error::other("full")).is_transient());
    }
}
