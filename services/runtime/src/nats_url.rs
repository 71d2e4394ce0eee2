//! `nats.url`: the servers it names, the credentials it may carry, and how it is shown.
//!
//! One URL or several separated by commas (the nodes of a cluster). Like the Go, Python and
//! JavaScript NATS clients and the `nats` CLI, lexmesh takes credentials from the URL:
//! `nats://user:password@host:4222` logs in as that user, `nats://token@host:4222` with that
//! token (percent-encoded characters are decoded). async-nats 0.51 parses them but sends
//! nothing, so [`url_credentials`] reads them and the connection passes them on. The password
//! or token never appears in a message: [`redacted`] replaces it with `***`.

use async_nats::ServerAddr;

use crate::error::RuntimeError;

/// Credentials written in `nats.url`.
#[derive(Clone, PartialEq, Eq)]
pub enum UrlCredentials {
    /// `user:password@`.
    UserPassword {
        /// The user name.
        user: String,
        /// Its password.
        password: String,
    },
    /// `token@`: a user name without a password is a token, as in the other NATS clients.
    Token(String),
}

impl std::fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UserPassword { user, .. } => write!(f, "UserPassword({user:?}, ***)"),
            Self::Token(_) => write!(f, "Token(***)"),
        }
    }
}

fn unusable(reason: impl Into<String>) -> RuntimeError {
    RuntimeError::unusable("nats.url", reason)
}

/// The servers of `nats.url`: one URL, or several separated by commas (the nodes of a
/// cluster; the client picks one and fails over to the others).
///
/// # Errors
///
/// [`RuntimeError::Unusable`] when a part is not a NATS server URL, or there is none.
pub fn server_addresses(url: &str) -> Result<Vec<ServerAddr>, RuntimeError> {
    let servers = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<ServerAddr>()
                .map_err(|e| unusable(format!("`{}` is not a NATS server URL: {e}", redacted(u))))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(unusable("no server URL"));
    }
    Ok(servers)
}

/// The credentials the URLs of `nats.url` carry, decoded; None when none carries any.
///
/// # Errors
///
/// [`RuntimeError::Unusable`] when the URLs are not NATS server URLs, when some carry
/// credentials and others do not or carry others (which login would a failover use?), or when
/// a part is not valid UTF-8 once decoded.
pub fn url_credentials(url: &str) -> Result<Option<UrlCredentials>, RuntimeError> {
    let mut found: Option<Option<UrlCredentials>> = None;
    for server in server_addresses(url)? {
        let these = match (server.username(), server.password()) {
            (None, _) => None,
            (Some(user), Some(password)) => Some(UrlCredentials::UserPassword {
                user: decoded(user, "user name")?,
                password: decoded(password, "password")?,
            }),
            (Some(token), None) => Some(UrlCredentials::Token(decoded(token, "token")?)),
        };
        match &found {
            None => found = Some(these),
            Some(first) if *first == these => {}
            Some(_) => {
                return Err(unusable(format!(
                    "its servers carry different credentials ({}): write the same ones in \
                     every URL, or set them once in nats.user / nats.password / nats.token",
                    redacted(url)
                )));
            }
        }
    }
    Ok(found.flatten())
}

fn decoded(part: &str, what: &str) -> Result<String, RuntimeError> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| unusable(format!("its {what} is not UTF-8 once percent-decoded")))
}

/// `url` (one URL or a comma-separated list) with every password and token replaced by `***`,
/// for messages and logs: `nats://user:***@host:4222`, `nats://***@host:4222`.
pub fn redacted(url: &str) -> String {
    url.split(',')
        .map(|part| {
            let (scheme, rest) = match part.find("://") {
                Some(i) => part.split_at(i + 3),
                None => ("", part),
            };
            // The userinfo ends at the last '@' before the path (a password may hold '@' that
            // was not percent-encoded).
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let Some(at) = rest[..authority_end].rfind('@') else {
                return part.to_string();
            };
            let userinfo = &rest[..at];
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_string(),
            };
            format!("{scheme}{shown}{}", &rest[at..])
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn a_comma_separated_url_names_every_server() {
        let servers =
            server_addresses("nats://127.0.0.1:4222, nats://10.0.0.2:4223,tls://n3:4224").unwrap();
        let ports: Vec<u16> = servers.iter().map(ServerAddr::port).collect();
        assert_eq!(ports, [4222, 4223, 4224]);
        assert!(servers[2].tls_required());
        assert!(server_addresses("nats://a:4222,nats://b:port").is_err());
        assert!(server_addresses(" , ").is_err());
    }

    #[test]
    fn credentials_are_read_from_the_url_and_decoded() {
        assert_eq!(url_credentials("nats://127.0.0.1:4222").unwrap(), None);
        assert_eq!(
            url_credentials("nats://publisher:p%40ss%2Fw0rd@127.0.0.1:4222").unwrap(),
            Some(UrlCredentials::UserPassword {
                user: "publisher".into(),
                password: "p@ss/w0rd".into(),
            })
        );
        assert_eq!(
            url_credentials("nats://t0ken@a:4222, nats://t0ken@b:4222").unwrap(),
            Some(UrlCredentials::Token("t0ken".into()))
        );
    }

    #[test]
    fn servers_with_different_credentials_are_refused_without_showing_them() {
        for url in [
            "nats://u:s3cret1@a:4222,nats://u:s3cret2@b:4222",
            "nats://u:s3cret1@a:4222,nats://b:4222",
            "nats://a:4222,nats://u:s3cret1@b:4222",
        ] {
            let error = url_credentials(url).unwrap_err().to_string();
            assert!(error.contains("different credentials"), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
        let error = url_credentials("nats://u:%FF@a:4222")
            .unwrap_err()
            .to_string();
        assert!(error.contains("not UTF-8"), "{error}");
    }

    #[test]
    fn redacted_urls_keep_the_user_and_hide_the_secret() {
        assert_eq!(
            redacted("nats://publisher:s3cret@127.0.0.1:4222"),
            "nats://publisher:***@127.0.0.1:4222"
        );
        assert_eq!(redacted("tls://t0ken@host:4222/"), "tls://***@host:4222/");
        assert_eq!(
            redacted("nats://u:p@ss@a:1, nats://b:2"),
            "nats://u:***@a:1, nats://b:2"
        );
        assert_eq!(redacted("u:pw@127.0.0.1:4222"), "u:***@127.0.0.1:4222");
        assert_eq!(redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        let error = server_addresses("nats://u:s3cret@h:port")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }
}
