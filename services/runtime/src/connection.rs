//! The NATS connection: URL(s), authentication, TLS, reconnects, and logged connection events.

use async_nats::{Client, ConnectOptions, Event};

use crate::config::NatsConfig;
use crate::error::RuntimeError;

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
pub async fn connect(
    config: &NatsConfig,
    name: &str,
    patience: Patience,
) -> Result<Client, RuntimeError> {
    let mut options = ConnectOptions::new()
        .name(name)
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                Event::Connected => tracing::info!("connected to NATS"),
                Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
                other => tracing::debug!("NATS event: {other}"),
            }
        });
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(seed) = &config.nkey_seed {
        options = options.nkey(seed.clone());
    }
    if let Some(path) = &config.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(RuntimeError::io(format!(
                "reading credentials file {}",
                path.display()
            )))?;
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
    if patience == Patience::Retry {
        options = options.retry_on_initial_connect();
    }
    let client = options
        .connect(config.url.as_str())
        .await
        .map_err(|source| RuntimeError::Connect {
            url: config.url.clone(),
            source,
        })?;
    if patience == Patience::FailFast {
        client
            .flush()
            .await
            .map_err(RuntimeError::nats("flushing the first connection"))?;
    }
    Ok(client)
}
