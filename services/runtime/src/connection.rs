//! The NATS connection: URL(s), authentication, TLS, reconnects, and logged connection events.
//!
//! The settings are checked before the first attempt: a client certificate without its key (or
//! the reverse), a CA, certificate, key or creds file that cannot be read or holds nothing
//! usable, a key that is not the certificate's, an nkey seed that is not a user's, credentials
//! in `nats.url` beside another login. Each is a [`RuntimeError::Unusable`] naming the setting;
//! async-nats would ignore some of them and report the others only as a failed connection.
//! Credentials in `nats.url` are used ([`crate::nats_url`]), and the URLs in messages show
//! neither password nor token.
//!
//! A server that answers but refuses this client (a certificate one side does not trust,
//! credentials it does not accept) is a [`RuntimeError::Refused`] that says what was refused,
//! not a bare "cannot connect".
//!
//! Services ([`Patience::Retry`]) try again until they get in, and log every failed attempt with
//! its reason. async-nats' own retry (`retry_on_initial_connect`) reports only the kind of a
//! failed attempt in its events ("IO error" for a refused certificate), so the first connection
//! is retried here; once connected, async-nats reconnects on its own and each failed reconnect
//! is logged from its events, with what they say.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::rustls;
use async_nats::rustls::pki_types::pem::{self, PemObject};
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use async_nats::{Client, ClientError, ConnectErrorKind, ConnectOptions, Event, ServerError};

use crate::config::NatsConfig;
use crate::error::{Refusal, RuntimeError};
use crate::nats_url::{UrlCredentials, redacted, server_addresses, url_credentials};

/// Pause after the first failed first connection of a service; doubled after each further
/// failure up to [`RETRY_MAX_DELAY`].
const RETRY_FIRST_DELAY: Duration = Duration::from_millis(100);

/// Longest pause between two attempts of a service's first connection.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

/// How hard to try at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// Fail at once when nothing answers (command-line clients).
    FailFast,
    /// Keep retrying until the server comes (services: NATS may start after them).
    Retry,
}

/// Connects with the configured authentication and TLS. The client reconnects on its own
/// after a disconnect; connection events are logged.
///
/// # Errors
///
/// [`RuntimeError::Unusable`] when a setting cannot work (checked before connecting). With
/// [`Patience::FailFast`], also [`RuntimeError::Refused`] when the server refuses this client
/// and [`RuntimeError::Connect`] when nothing answers; [`Patience::Retry`] logs those and tries
/// again.
pub async fn connect(
    config: &NatsConfig,
    name: &str,
    patience: Patience,
) -> Result<Client, RuntimeError> {
    let servers = server_addresses(&config.url)?;
    let creds = check_settings(config)?;
    if patience == Patience::FailFast {
        let client = options(config, name, creds.as_deref())?
            .connect(servers)
            .await
            .map_err(|error| connect_error(config, error))?;
        client
            .flush()
            .await
            .map_err(RuntimeError::nats("flushing the first connection"))?;
        return Ok(client);
    }
    let mut failures = 0;
    loop {
        match options(config, name, creds.as_deref())?
            .connect(servers.clone())
            .await
        {
            Ok(client) => return Ok(client),
            Err(error) => {
                failures += 1;
                let delay = retry_delay(failures);
                match connect_error(config, error) {
                    refused @ RuntimeError::Refused { .. } => {
                        tracing::error!("{refused}; trying again in {delay:?}");
                    }
                    other => tracing::warn!("{other}; trying again in {delay:?}"),
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Closes a connection without losing what was published on it: waits (at most `within`) until
/// the server has received everything sent so far, then drains. async-nats' `drain` only queues
/// the request and returns; a process that exits right after it can lose its last messages — a
/// stopping trainer's nak among them, and the job it hands back then waits out the consumer's
/// `ack_wait` instead of going to another replica at once.
pub async fn close(client: &Client, within: Duration) {
    match tokio::time::timeout(within, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!("flushing the connection failed: {e}; its last messages may be lost");
        }
        Err(_) => tracing::warn!(
            "the server did not confirm the last messages within {within:?}; they may be lost"
        ),
    }
    if let Err(e) = client.drain().await {
        tracing::debug!("drain: {e}");
    }
}

/// The pause after the `failures`-th failed first connection of a service.
fn retry_delay(failures: u32) -> Duration {
    RETRY_FIRST_DELAY
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(RETRY_MAX_DELAY)
}

/// The client options of one attempt (async-nats takes them by value).
fn options(
    config: &NatsConfig,
    name: &str,
    creds: Option<&str>,
) -> Result<ConnectOptions, RuntimeError> {
    let mut options = ConnectOptions::new()
        .name(name)
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .max_reconnects(None)
        .event_callback(|event| async move { log_event(event) });
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    // async-nats sends none of the credentials a URL carries.
    match url_credentials(&config.url)? {
        Some(UrlCredentials::UserPassword { user, password }) => {
            options = options.user_and_password(user, password);
        }
        Some(UrlCredentials::Token(token)) => options = options.token(token),
        None => {}
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(seed) = &config.nkey_seed {
        options = options.nkey(seed.clone());
    }
    if let (Some(creds), Some(path)) = (creds, &config.creds_file) {
        options = options.credentials(creds).map_err(|e| {
            RuntimeError::unusable("nats.creds_file", format!("{}: {e}", path.display()))
        })?;
    }
    if let Some(ca) = &config.tls.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if config.tls.required {
        options = options.require_tls(true);
    }
    Ok(options)
}

/// Logs a connection event. A failed reconnect is an event that names only the kind of
/// failure ("authorization violation", "IO error"); it is logged as a warning all the same, so
/// that an operator sees each one.
fn log_event(event: Event) {
    match event {
        Event::Connected => tracing::info!("connected to NATS"),
        Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
        Event::ClientError(ClientError::Other(kind)) => {
            tracing::warn!("reconnecting to NATS failed: {kind}");
        }
        Event::ServerError(ServerError::AuthorizationViolation) => {
            tracing::error!("NATS refused this client: authorization violation");
        }
        Event::ClientError(_) | Event::ServerError(_) | Event::SlowConsumer(_) => {
            tracing::warn!("NATS: {event}");
        }
        other => tracing::debug!("NATS event: {other}"),
    }
}

/// Checks the authentication and TLS settings that async-nats would take on trust; returns the
/// text of the creds file, read once for every attempt.
fn check_settings(config: &NatsConfig) -> Result<Option<String>, RuntimeError> {
    if url_credentials(&config.url)?.is_some() {
        let others = [
            ("nats.user", config.user.is_some()),
            ("nats.password", config.password.is_some()),
            ("nats.token", config.token.is_some()),
            ("nats.nkey_seed", config.nkey_seed.is_some()),
            ("nats.creds_file", config.creds_file.is_some()),
        ];
        if let Some((setting, _)) = others.iter().find(|(_, set)| *set) {
            return Err(RuntimeError::unusable(
                "nats.url",
                format!("it carries credentials and {setting} is set too: give the login one way"),
            ));
        }
    }
    let tls = &config.tls;
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), None) => {
            return Err(RuntimeError::unusable(
                "nats.tls.key_file",
                format!(
                    "not set, but nats.tls.cert_file ({}) is: a client certificate needs its \
                     private key",
                    cert.display()
                ),
            ));
        }
        (None, Some(key)) => {
            return Err(RuntimeError::unusable(
                "nats.tls.cert_file",
                format!(
                    "not set, but nats.tls.key_file ({}) is: a private key needs its client \
                     certificate",
                    key.display()
                ),
            ));
        }
        (Some(cert), Some(key)) => check_client_certificate(cert, key)?,
        (None, None) => {}
    }
    if let Some(ca) = &tls.ca_file {
        read_certificates("nats.tls.ca_file", ca)?;
    }
    if let Some(seed) = &config.nkey_seed {
        // The seed is a secret: the messages never show it.
        let key = nkeys::KeyPair::from_seed(seed.trim()).map_err(|e| {
            RuntimeError::unusable(
                "nats.nkey_seed",
                format!("not an nkey seed (a user's starts with SU): {e}"),
            )
        })?;
        if key.key_pair_type() != nkeys::KeyPairType::User {
            return Err(RuntimeError::unusable(
                "nats.nkey_seed",
                format!(
                    "the seed of {:?} key, not of a user (a user's starts with SU)",
                    key.key_pair_type()
                ),
            ));
        }
    }
    config
        .creds_file
        .as_deref()
        .map(|path| {
            let creds = std::fs::read_to_string(path).map_err(|e| {
                RuntimeError::unusable(
                    "nats.creds_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            // Parses the JWT and the seed the way every attempt will.
            ConnectOptions::new().credentials(&creds).map_err(|e| {
                RuntimeError::unusable("nats.creds_file", format!("{}: {e}", path.display()))
            })?;
            Ok(creds)
        })
        .transpose()
}

/// The certificates of a PEM file; at least one.
fn read_certificates(
    setting: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, RuntimeError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|e| RuntimeError::unusable(setting, pem_problem(path, &e)))?;
    if certificates.is_empty() {
        return Err(RuntimeError::unusable(
            setting,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certificates)
}

fn pem_problem(path: &Path, error: &pem::Error) -> String {
    match error {
        pem::Error::Io(e) => format!("cannot read {}: {e}", path.display()),
        pem::Error::NoItemsFound => format!("{} holds no PEM private key", path.display()),
        other => format!("{} is not valid PEM: {other}", path.display()),
    }
}

/// The client certificate can be read, its key too, and the key is the certificate's.
fn check_client_certificate(cert: &Path, key: &Path) -> Result<(), RuntimeError> {
    let chain = read_certificates("nats.tls.cert_file", cert)?;
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| RuntimeError::unusable("nats.tls.key_file", pem_problem(key, &e)))?;
    // The provider async-nats itself uses (its default feature `ring`).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RuntimeError::unusable("nats.tls", format!("no TLS version to offer: {e}")))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain, private_key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => RuntimeError::unusable(
                "nats.tls.key_file",
                format!(
                    "{} is not the private key of the certificate in nats.tls.cert_file ({}): {e}",
                    key.display(),
                    cert.display()
                ),
            ),
            other => RuntimeError::unusable(
                "nats.tls.key_file",
                format!(
                    "{} with the certificate of {} cannot be used: {other}",
                    key.display(),
                    cert.display()
                ),
            ),
        })?;
    Ok(())
}

/// A failed connection as [`RuntimeError::Refused`] when the server refused this client, as
/// [`RuntimeError::Connect`] otherwise.
fn connect_error(config: &NatsConfig, error: async_nats::ConnectError) -> RuntimeError {
    match refusal(&error) {
        Some((refusal, detail)) => RuntimeError::Refused {
            url: redacted(&config.url),
            refusal,
            reason: refusal_reason(config, refusal, &detail),
            error,
        },
        None => RuntimeError::Connect {
            url: redacted(&config.url),
            source: error,
        },
    }
}

/// What the server or the TLS handshake refused, with the client's words for it. An
/// authorization violation is a kind of async-nats' error; a failed TLS handshake is an I/O
/// error whose inner error is rustls'.
pub fn refusal(error: &async_nats::ConnectError) -> Option<(Refusal, String)> {
    if error.kind() == ConnectErrorKind::AuthorizationViolation {
        return Some((Refusal::Authorization, "authorization violation".into()));
    }
    let tls = tls_error(error)?;
    use rustls::AlertDescription as Alert;
    let refusal = match tls {
        rustls::Error::InvalidCertificate(_) => Refusal::ServerCertificate,
        rustls::Error::AlertReceived(
            Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::UnknownCA
            | Alert::AccessDenied
            | Alert::NoCertificate
            | Alert::CertificateRequired,
        ) => Refusal::ClientCertificate,
        _ => Refusal::TlsHandshake,
    };
    Some((refusal, tls.to_string()))
}

/// The rustls error inside an error's chain (rustls' errors reach async-nats as the inner error
/// of an `io::Error`, which `source()` skips).
fn tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        next = error.source();
    }
    None
}

/// What was refused, in words that name the settings involved.
fn refusal_reason(config: &NatsConfig, refusal: Refusal, detail: &str) -> String {
    let tls = &config.tls;
    match refusal {
        Refusal::ServerCertificate => match &tls.ca_file {
            Some(ca) => format!(
                "TLS handshake failed: the server's certificate is not trusted ({detail}); \
                 nats.tls.ca_file ({}) must hold the CA that signed it",
                ca.display()
            ),
            None => format!(
                "TLS handshake failed: the server's certificate is not trusted ({detail}); \
                 set nats.tls.ca_file to the CA that signed it"
            ),
        },
        Refusal::ClientCertificate => match &tls.cert_file {
            Some(cert) => format!(
                "TLS handshake failed: the server refused the client certificate of \
                 nats.tls.cert_file ({}) ({detail})",
                cert.display()
            ),
            None => format!(
                "TLS handshake failed: the server requires a client certificate ({detail}); \
                 set nats.tls.cert_file and nats.tls.key_file"
            ),
        },
        Refusal::TlsHandshake => format!("TLS handshake failed: {detail}"),
        Refusal::Authorization => {
            let credentials = if let Some(path) = &config.creds_file {
                format!("the user of nats.creds_file ({})", path.display())
            } else if config.nkey_seed.is_some() {
                "the nkey of nats.nkey_seed".into()
            } else if let Some(user) = &config.user {
                format!("user `{user}` with nats.password")
            } else if config.token.is_some() {
                "nats.token".into()
            } else if let Ok(Some(from_url)) = url_credentials(&config.url) {
                match from_url {
                    UrlCredentials::UserPassword { user, .. } => {
                        format!("user `{user}` with the password of nats.url")
                    }
                    UrlCredentials::Token(_) => "the token of nats.url".into(),
                }
            } else {
                "a client without credentials (set nats.user and nats.password, nats.token, \
                 nats.nkey_seed or nats.creds_file)"
                    .into()
            };
            format!("{detail}: the server does not accept {credentials}")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::PathBuf;

    use super::*;

    fn setting_of(error: RuntimeError) -> (String, String) {
        match error {
            RuntimeError::Unusable { setting, reason } => (setting, reason),
            other => panic!("not Unusable: {other}"),
        }
    }

    fn with(change: impl FnOnce(&mut NatsConfig)) -> NatsConfig {
        let mut config = NatsConfig::default();
        change(&mut config);
        config
    }

    #[test]
    fn a_client_certificate_and_its_key_go_together() {
        let cert_only = with(|c| c.tls.cert_file = Some(PathBuf::from("/x/client.pem")));
        let (setting, reason) = setting_of(check_settings(&cert_only).unwrap_err());
        assert_eq!(setting, "nats.tls.key_file");
        assert!(
            reason.contains("not set") && reason.contains("/x/client.pem"),
            "{reason}"
        );
        let key_only = with(|c| c.tls.key_file = Some(PathBuf::from("/x/client-key.pem")));
        let (setting, reason) = setting_of(check_settings(&key_only).unwrap_err());
        assert_eq!(setting, "nats.tls.cert_file");
        assert!(reason.contains("/x/client-key.pem"), "{reason}");
        assert!(check_settings(&NatsConfig::default()).unwrap().is_none());
    }

    #[test]
    fn files_that_cannot_be_read_or_hold_nothing_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing-ca.pem");
        let config = with(|c| c.tls.ca_file = Some(missing.clone()));
        let (setting, reason) = setting_of(check_settings(&config).unwrap_err());
        assert_eq!(setting, "nats.tls.ca_file");
        assert!(
            reason.contains("cannot read") && reason.contains("missing-ca.pem"),
            "{reason}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let config = with(|c| c.tls.ca_file = Some(empty.clone()));
        let (setting, reason) = setting_of(check_settings(&config).unwrap_err());
        assert_eq!(setting, "nats.tls.ca_file");
        assert!(reason.contains("holds no PEM certificate"), "{reason}");

        let config = with(|c| {
            c.tls.cert_file = Some(empty.clone());
            c.tls.key_file = Some(empty.clone());
        });
        let (setting, _) = setting_of(check_settings(&config).unwrap_err());
        assert_eq!(setting, "nats.tls.cert_file");

        let config = with(|c| c.creds_file = Some(dir.path().join("missing.creds")));
        let (setting, reason) = setting_of(check_settings(&config).unwrap_err());
        assert_eq!(setting, "nats.creds_file");
        assert!(reason.contains("missing.creds"), "{reason}");
        let config = with(|c| c.creds_file = Some(empty.clone()));
        let (setting, reason) = setting_of(check_settings(&config).unwrap_err());
        assert_eq!(setting, "nats.creds_file");
        assert!(reason.contains("empty.pem"), "{reason}");
    }

    #[test]
    fn an_nkey_seed_must_be_a_users_and_is_never_shown() {
        let user = nkeys::KeyPair::new_user().seed().unwrap();
        assert!(check_settings(&with(|c| c.nkey_seed = Some(user.clone()))).is_ok());
        let broken = user[..user.len() - 2].to_string();
        let (setting, reason) =
            setting_of(check_settings(&with(|c| c.nkey_seed = Some(broken.clone()))).unwrap_err());
        assert_eq!(setting, "nats.nkey_seed");
        assert!(
            reason.contains("not an nkey seed") && !reason.contains(&broken),
            "{reason}"
        );
        let account = nkeys::KeyPair::new_account().seed().unwrap();
        let (setting, reason) =
            setting_of(check_settings(&with(|c| c.nkey_seed = Some(account.clone()))).unwrap_err());
        assert_eq!(setting, "nats.nkey_seed");
        assert!(
            reason.contains("not of a user") && !reason.contains(&account),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn a_setting_that_cannot_work_stops_even_a_patient_service_before_connecting() {
        let config = with(|c| {
            c.url = "nats://127.0.0.1:1".into();
            c.tls.cert_file = Some(PathBuf::from("/x/client.pem"));
        });
        let error = tokio::time::timeout(
            Duration::from_secs(5),
            connect(&config, "test", Patience::Retry),
        )
        .await
        .expect("no attempt is made")
        .unwrap_err();
        assert_eq!(setting_of(error).0, "nats.tls.key_file");
    }

    fn tls_failure(error: rustls::Error) -> async_nats::ConnectError {
        async_nats::ConnectError::with_source(
            ConnectErrorKind::Io,
            std::io::Error::new(std::io::ErrorKind::InvalidData, error),
        )
    }

    #[test]
    fn refusals_are_told_apart_from_silence() {
        use rustls::{AlertDescription, CertificateError};
        let cases = [
            (
                tls_failure(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                )),
                Some(Refusal::ServerCertificate),
            ),
            (
                tls_failure(rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
                Some(Refusal::ClientCertificate),
            ),
            (
                tls_failure(rustls::Error::AlertReceived(
                    AlertDescription::CertificateRequired,
                )),
                Some(Refusal::ClientCertificate),
            ),
            (
                tls_failure(rustls::Error::AlertReceived(
                    AlertDescription::HandshakeFailure,
                )),
                Some(Refusal::TlsHandshake),
            ),
            (
                async_nats::ConnectError::new(ConnectErrorKind::AuthorizationViolation),
                Some(Refusal::Authorization),
            ),
            (
                async_nats::ConnectError::with_source(
                    ConnectErrorKind::Io,
                    std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                ),
                None,
            ),
            (
                async_nats::ConnectError::new(ConnectErrorKind::TimedOut),
                None,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(refusal(&error).map(|(r, _)| r), expected, "{error}");
        }
    }

    #[test]
    fn a_refusal_names_the_settings_involved() {
        let creds = with(|c| c.creds_file = Some(PathBuf::from("/x/services.creds")));
        let reason = refusal_reason(&creds, Refusal::Authorization, "authorization violation");
        assert!(
            reason.contains("nats.creds_file (/x/services.creds)"),
            "{reason}"
        );
        let nobody = refusal_reason(
            &NatsConfig::default(),
            Refusal::Authorization,
            "authorization violation",
        );
        assert!(nobody.contains("without credentials"), "{nobody}");
        let no_ca = refusal_reason(&NatsConfig::default(), Refusal::ServerCertificate, "x");
        assert!(
            no_ca.starts_with("TLS handshake failed") && no_ca.contains("set nats.tls.ca_file")
        );
        let error = connect_error(
            &creds,
            async_nats::ConnectError::new(ConnectErrorKind::AuthorizationViolation),
        );
        assert!(matches!(
            error,
            RuntimeError::Refused {
                refusal: Refusal::Authorization,
                ..
            }
        ));
        assert_eq!(error.kind(), crate::error::RuntimeErrorKind::Setup);
    }

    #[test]
    fn a_service_retries_soon_then_every_two_seconds() {
        let delays: Vec<u128> = (1..=8).map(|n| retry_delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX_DELAY);
    }
}
