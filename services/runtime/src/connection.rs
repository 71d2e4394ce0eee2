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

/// The servers of `nats.url`: one URL, or several separated by commas (the nodes of a
/// cluster; the client picks one and fails over to the others).
pub fn server_addresses(url: &str) -> Result<Vec<async_nats::ServerAddr>, RuntimeError> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| RuntimeError::Unusable {
                    setting: "nats.url".into(),
                    reason: format!("`{u}` is not a NATS server URL: {e}"),
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|servers| {
            if servers.is_empty() {
                Err(RuntimeError::Unusable {
                    setting: "nats.url".into(),
                    reason: "no server URL".into(),
                })
            } else {
                Ok(servers)
            }
        })
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
        .connect(server_addresses(&config.url)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_separated_url_names_every_server() {
        let servers =
            server_addresses("nats://127.0.0.1:4222, nats://10.0.0.2:4223,tls://n3:4224").unwrap();
        let ports: Vec<u16> = servers.iter().map(async_nats::ServerAddr::port).collect();
        assert_eq!(ports, [4222, 4223, 4224]);
        assert!(servers[2].tls_required());
        assert!(server_addresses("nats://a:4222,nats://b:port").is_err());
        assert!(server_addresses(" , ").is_err());
    }
}
