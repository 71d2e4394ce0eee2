//! `lexmesh up --auth`: the users of the nats-server that `up` starts. Two users with the
//! permission sets of `k8s/nats-permissions.conf` (compiled in, the same file the Kubernetes
//! server includes): `lexmesh`, for the services and the command line (everything), and
//! `publisher`, for other systems (submit jobs, follow their events and records, classify,
//! cancel; nothing else).
//!
//! The passwords are made once, at random, and kept in `<data dir>/users/` (readable by the
//! owner only), so the mesh keeps them across restarts of `up`:
//!
//! - `passwords.toml`: both passwords;
//! - `services.toml`: a lexmesh configuration file with the server's URL and the `lexmesh`
//!   user, for the command line (`lexmesh jobs --config <data dir>/users/services.toml`);
//! - `publisher.url`: `nats://publisher:<password>@<host>:<port>`, the URL another system
//!   connects with (the NATS clients of Go, Python and JavaScript, the `nats` CLI and lexmesh's
//!   command line read credentials from the URL; async-nats takes them as user and password).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// The permission sets (`LEXMESH_SERVICES`, `LEXMESH_PUBLISHER`) as nats-server configuration.
pub const PERMISSIONS: &str = include_str!("../../k8s/nats-permissions.conf");

/// The services' user.
pub const SERVICES_USER: &str = "lexmesh";

/// Other systems' user.
pub const PUBLISHER_USER: &str = "publisher";

/// Characters of a password (no quoting needed in a config file or a URL).
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

/// Length of a made password (about 140 bits).
const PASSWORD_LENGTH: usize = 24;

/// The two passwords, as kept in `passwords.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Passwords {
    /// Of the `lexmesh` user.
    pub services: String,
    /// Of the `publisher` user.
    pub publisher: String,
}

/// The users of a server `up` starts, and where their files are.
#[derive(Debug, Clone)]
pub struct LocalUsers {
    /// `<data dir>/users`.
    pub dir: PathBuf,
    /// Both passwords.
    pub passwords: Passwords,
}

impl LocalUsers {
    /// Reads the passwords kept in `<data_dir>/users/passwords.toml`, or makes and keeps new
    /// ones when there is no such file.
    ///
    /// # Errors
    ///
    /// When the folder or file cannot be read or written, or the file is not two passwords.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = data_dir.join("users");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
        let path = dir.join("passwords.toml");
        let passwords = match fs::read_to_string(&path) {
            Ok(text) => {
                let passwords: Passwords = toml::from_str(&text)
                    .with_context(|| format!("reading the passwords in {}", path.display()))?;
                for (user, password) in [
                    (SERVICES_USER, &passwords.services),
                    (PUBLISHER_USER, &passwords.publisher),
                ] {
                    if password.is_empty() || !password.bytes().all(|b| ALPHABET.contains(&b)) {
                        bail!(
                            "{}: the password of `{user}` must be letters and digits (delete \
                             the file to make new ones)",
                            path.display()
                        );
                    }
                }
                passwords
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let passwords = Passwords {
                    services: password(),
                    publisher: password(),
                };
                write_private(&path, &toml::to_string(&passwords)?)?;
                passwords
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Self { dir, passwords })
    }

    /// The nats-server configuration: the permission sets and the two users.
    pub fn server_config(&self) -> String {
        format!(
            "{PERMISSIONS}\n\
             authorization {{\n  \
               users = [\n    \
                 {{ user: {SERVICES_USER}, password: \"{}\", permissions: $LEXMESH_SERVICES }}\n    \
                 {{ user: {PUBLISHER_USER}, password: \"{}\", permissions: $LEXMESH_PUBLISHER }}\n  \
               ]\n\
             }}\n",
            self.passwords.services, self.passwords.publisher
        )
    }

    /// Writes `services.toml` and `publisher.url` for the server at `url`
    /// (`nats://host:port`); returns their paths.
    ///
    /// # Errors
    ///
    /// When a file cannot be written.
    pub fn write_client_files(&self, url: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let services = self.dir.join("services.toml");
        let config = format!(
            "# The `{SERVICES_USER}` user of the nats-server that `lexmesh up --auth` started: \
             the command line's\n# configuration (`lexmesh jobs --config {}`). Written by \
             `lexmesh up`.\n[nats]\nurl = \"{url}\"\nuser = \"{SERVICES_USER}\"\npassword = \
             \"{}\"\n",
            services.display(),
            self.passwords.services
        );
        write_private(&services, &config)?;
        let publisher = self.dir.join("publisher.url");
        let address = url.split_once("://").map_or(url, |(_, rest)| rest);
        write_private(
            &publisher,
            &format!(
                "nats://{PUBLISHER_USER}:{}@{address}\n",
                self.passwords.publisher
            ),
        )?;
        Ok((services, publisher))
    }
}

/// A new random password.
fn password() -> String {
    let mut rng = rand::rng();
    (0..PASSWORD_LENGTH)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Writes `text` to `path`, readable and writable by the owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // An existing file keeps its mode through `open`.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn passwords_are_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = LocalUsers::load_or_create(dir.path()).unwrap();
        let again = LocalUsers::load_or_create(dir.path()).unwrap();
        assert_eq!(first.passwords, again.passwords);
        assert_ne!(first.passwords.services, first.passwords.publisher);
        assert_eq!(first.passwords.services.len(), PASSWORD_LENGTH);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&first.dir), 0o700);
        assert_eq!(mode(&first.dir.join("passwords.toml")), 0o600);
        let (services, publisher) = first.write_client_files("nats://127.0.0.1:4333").unwrap();
        assert_eq!(mode(&services), 0o600);
        assert_eq!(mode(&publisher), 0o600);
        assert_eq!(
            fs::read_to_string(&publisher).unwrap().trim(),
            format!(
                "nats://publisher:{}@127.0.0.1:4333",
                first.passwords.publisher
            )
        );
        let config: toml::Value = toml::from_str(&fs::read_to_string(&services).unwrap()).unwrap();
        assert_eq!(config["nats"]["user"].as_str(), Some(SERVICES_USER));
        assert_eq!(
            config["nats"]["password"].as_str(),
            Some(first.passwords.services.as_str())
        );
        let text = first.server_config();
        assert!(text.contains(&format!("password: \"{}\"", first.passwords.publisher)));
        assert!(text.contains("LEXMESH_PUBLISHER = {"));
    }

    #[test]
    fn a_damaged_password_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        fs::create_dir_all(&users).unwrap();
        fs::write(
            users.join("passwords.toml"),
            "services = \"a\\\"b\"\npublisher = \"x\"\n",
        )
        .unwrap();
        let e = LocalUsers::load_or_create(dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("letters and digits"), "{e:#}");
        fs::write(users.join("passwords.toml"), "services = 1\n").unwrap();
        assert!(LocalUsers::load_or_create(dir.path()).is_err());
        assert!(
            fs::read_to_string(users.join("passwords.toml"))
                .unwrap()
                .contains("services = 1")
        );
    }
}
