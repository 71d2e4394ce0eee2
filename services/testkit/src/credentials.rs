//! Credentials made in the test for servers that ask for them, written into a folder of the
//! test: certificate authorities that issue a server certificate for this machine and client
//! certificates; nkey users; and an operator → account → user chain of JWTs with the user's
//! `.creds` file, for a server in operator mode. Every key is made fresh; nothing is read from
//! outside the test.
//!
//! ```no_run
//! use lexmesh_testkit::credentials::{NkeyUser, Operator, TestCertificates};
//!
//! let dir = tempfile::tempdir().unwrap();
//! // A CA, a server certificate for 127.0.0.1 and a client certificate, plus an unrelated CA
//! // with its own client certificate (the wrong one).
//! let certificates = TestCertificates::write(dir.path());
//! let mutual_tls = certificates.server_config(true); // nats-server's `tls { … verify: true }`
//!
//! let user = NkeyUser::new();
//! let nkey_auth = NkeyUser::server_config(&[&user]);
//!
//! let operator = Operator::new("lexmesh-test");
//! let account = operator.account("LEXMESH");
//! let creds = account.write_user_creds(dir.path(), "services");
//! let operator_mode = operator.server_config(&[&account]);
//! ```
#![allow(
    clippy::expect_used,
    reason = "a harness fails the test with a message when it cannot make its credentials"
)]

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Writes `content` to `path`.
///
/// # Panics
///
/// When the file cannot be written.
fn write(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A certificate and its private key, each a PEM file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedKey {
    /// The certificate (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PKCS #8 PEM).
    pub key_file: PathBuf,
}

/// A certificate authority: its self-signed certificate in a PEM file, and its key, which
/// issues server and client certificates into the same folder.
pub struct CertificateAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    cert_file: PathBuf,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new authority named `name`; its certificate is `<dir>/<name>-ca.pem`.
    ///
    /// # Panics
    ///
    /// When the key or certificate cannot be made or written.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("lexmesh test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("a CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("a self-signed CA");
        let cert_file = dir.join(format!("{name}-ca.pem"));
        write(&cert_file, &issuer.pem());
        Self {
            issuer,
            dir: dir.to_path_buf(),
            cert_file,
        }
    }

    /// The authority's certificate (PEM): what a client or server that trusts it is given.
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// A server certificate for this machine (`127.0.0.1`, `localhost`), as
    /// `<dir>/<name>.pem` and `<dir>/<name>-key.pem`.
    ///
    /// # Panics
    ///
    /// As [`new`](Self::new).
    pub fn issue_server(&self, name: &str) -> CertifiedKey {
        self.issue(
            name,
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with common name `name`, as `<dir>/<name>.pem` and
    /// `<dir>/<name>-key.pem`.
    ///
    /// # Panics
    ///
    /// As [`new`](Self::new).
    pub fn issue_client(&self, name: &str) -> CertifiedKey {
        self.issue(name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        name: &str,
        subject_alt_names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> CertifiedKey {
        let mut params = CertificateParams::new(subject_alt_names).expect("valid names");
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("a key");
        let certificate = params
            .signed_by(&key, &self.issuer)
            .expect("a certificate signed by the CA");
        let files = CertifiedKey {
            cert_file: self.dir.join(format!("{name}.pem")),
            key_file: self.dir.join(format!("{name}-key.pem")),
        };
        write(&files.cert_file, &certificate.pem());
        write(&files.key_file, &key.serialize_pem());
        files
    }
}

/// The certificates of a TLS test, in one folder: a CA with a server certificate for this
/// machine and a client certificate, and an unrelated CA with a client certificate of its own
/// (the wrong one, for the refusals).
#[derive(Debug, Clone)]
pub struct TestCertificates {
    /// The CA that signed `server` and `client`.
    pub ca_file: PathBuf,
    /// The server's certificate for `127.0.0.1` and `localhost`.
    pub server: CertifiedKey,
    /// A client certificate signed by `ca_file`.
    pub client: CertifiedKey,
    /// A CA that signed neither the server's nor `client`'s certificate.
    pub other_ca_file: PathBuf,
    /// A client certificate signed by `other_ca_file`.
    pub other_client: CertifiedKey,
}

impl TestCertificates {
    /// Makes the certificates and keys in `dir`.
    ///
    /// # Panics
    ///
    /// As [`CertificateAuthority::new`].
    pub fn write(dir: &Path) -> Self {
        let ca = CertificateAuthority::new(dir, "lexmesh");
        let other = CertificateAuthority::new(dir, "other");
        Self {
            server: ca.issue_server("server"),
            client: ca.issue_client("client"),
            ca_file: ca.cert_file().to_path_buf(),
            other_client: other.issue_client("other-client"),
            other_ca_file: other.cert_file().to_path_buf(),
        }
    }

    /// nats-server's `tls` block for this server certificate; with `verify`, every client must
    /// show a certificate signed by [`ca_file`](Self::ca_file) (mutual TLS).
    pub fn server_config(&self, verify: bool) -> String {
        format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: {verify}\n  timeout: 5\n}}\n",
            quoted(&self.server.cert_file),
            quoted(&self.server.key_file),
            quoted(&self.ca_file),
        )
    }
}

/// A path as a quoted string of nats-server's configuration.
fn quoted(path: &Path) -> String {
    serde_json::to_string(&path.to_string_lossy()).expect("a string encodes")
}

/// A user who signs in with an nkey: the seed (`SU…`, the client's secret) and the public key
/// (`U…`, what the server knows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NkeyUser {
    /// The seed, `SU…`.
    pub seed: String,
    /// The public key, `U…`.
    pub public_key: String,
}

impl NkeyUser {
    /// A fresh user key.
    ///
    /// # Panics
    ///
    /// Never for a freshly made key pair.
    pub fn new() -> Self {
        let key = nkeys::KeyPair::new_user();
        Self {
            seed: key.seed().expect("a fresh key pair has its seed"),
            public_key: key.public_key(),
        }
    }

    /// nats-server's `authorization` block that lets in these users (and nobody else).
    pub fn server_config(users: &[&NkeyUser]) -> String {
        let users = users
            .iter()
            .map(|user| format!("    {{ nkey: {} }}\n", user.public_key))
            .collect::<String>();
        format!("authorization {{\n  users = [\n{users}  ]\n}}\n")
    }
}

impl Default for NkeyUser {
    fn default() -> Self {
        Self::new()
    }
}

/// An operator of decentralized JWT authentication, with its system account: the root that a
/// server in operator mode trusts, and that signs the accounts it knows.
pub struct Operator {
    key: nkeys::KeyPair,
    jwt: String,
    system: Account,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("public_key", &self.key.public_key())
            .finish_non_exhaustive()
    }
}

impl Operator {
    /// A new operator named `name`, with a system account `SYS` it signed.
    pub fn new(name: &str) -> Self {
        let key = nkeys::KeyPair::new_operator();
        let system_key = nkeys::KeyPair::new_account();
        let system = Account::signed(&key, system_key, "SYS", false);
        let jwt = encode_jwt(
            &key,
            &key.public_key(),
            name,
            json!({
                "type": "operator",
                "version": 2,
                "system_account": system.public_key(),
            }),
        );
        Self { key, jwt, system }
    }

    /// The operator's (self-signed) JWT.
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// An account named `name` signed by this operator, with JetStream (no limits).
    pub fn account(&self, name: &str) -> Account {
        Account::signed(&self.key, nkeys::KeyPair::new_account(), name, true)
    }

    /// nats-server's configuration for operator mode: this operator trusted, its system
    /// account, and `accounts` known from the start (`resolver: MEMORY`). The server then lets
    /// in only users whose JWT one of these accounts signed.
    pub fn server_config(&self, accounts: &[&Account]) -> String {
        let preload = std::iter::once(&self.system)
            .chain(accounts.iter().copied())
            .map(|account| format!("  {}: \"{}\"\n", account.public_key(), account.jwt()))
            .collect::<String>();
        format!(
            "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n{preload}}}\n",
            self.jwt,
            self.system.public_key(),
        )
    }
}

/// An account signed by an [`Operator`]; it signs the JWTs of its users.
pub struct Account {
    key: nkeys::KeyPair,
    jwt: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("public_key", &self.key.public_key())
            .finish_non_exhaustive()
    }
}

impl Account {
    fn signed(operator: &nkeys::KeyPair, key: nkeys::KeyPair, name: &str, jetstream: bool) -> Self {
        // -1 is "no limit"; JetStream is enabled by giving the account storage.
        let mut limits = json!({
            "subs": -1, "data": -1, "payload": -1,
            "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
        });
        if jetstream {
            for limit in ["mem_storage", "disk_storage", "streams", "consumer"] {
                limits[limit] = json!(-1);
            }
        }
        let jwt = encode_jwt(
            operator,
            &key.public_key(),
            name,
            json!({
                "type": "account",
                "version": 2,
                "limits": limits,
                "default_permissions": {"pub": {}, "sub": {}},
            }),
        );
        Self { key, jwt }
    }

    /// The account's public key (`A…`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The account's JWT, signed by its operator.
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// The `.creds` file of a new user named `name` of this account (its JWT, signed by the
    /// account, and its seed), as `nsc` writes one.
    pub fn user_creds(&self, name: &str) -> String {
        let user = nkeys::KeyPair::new_user();
        let jwt = encode_jwt(
            &self.key,
            &user.public_key(),
            name,
            json!({
                "type": "user",
                "version": 2,
                "pub": {}, "sub": {},
                "subs": -1, "data": -1, "payload": -1,
            }),
        );
        let seed = user.seed().expect("a fresh key pair has its seed");
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        )
    }

    /// Writes [`user_creds`](Self::user_creds) to `<dir>/<name>.creds`; returns its path.
    ///
    /// # Panics
    ///
    /// When the file cannot be written.
    pub fn write_user_creds(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.creds"));
        write(&path, &self.user_creds(name));
        path
    }
}

/// A JWT of the nats-io/jwt v2 format: `base64url(header).base64url(claims).base64url(sig)`,
/// signed with the issuer's ed25519 nkey. `jti` is a hash of the other claims, as the Go
/// library makes it.
fn encode_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let issued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut claims = json!({
        "iat": issued_at,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    claims["jti"] = json!(BASE32_NOPAD.encode(&Sha256::digest(claims.to_string())));
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let signed = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes()),
    );
    let signature = issuer
        .sign(signed.as_bytes())
        .expect("an nkey with its seed signs");
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn decode_part(jwt: &str, part: usize) -> Value {
        let text = jwt.split('.').nth(part).unwrap();
        serde_json::from_slice(&BASE64URL_NOPAD.decode(text.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn a_jwt_is_signed_by_its_issuer_and_names_its_subject() {
        let operator = Operator::new("op");
        let account = operator.account("acc");
        let jwt = account.jwt();
        assert_eq!(decode_part(jwt, 0)["alg"], "ed25519-nkey");
        let claims = decode_part(jwt, 1);
        assert_eq!(claims["sub"], account.public_key());
        assert_eq!(claims["iss"], operator.key.public_key());
        assert_eq!(claims["nats"]["limits"]["disk_storage"], -1);
        let (signed, signature) = jwt.rsplit_once('.').unwrap();
        let signature = BASE64URL_NOPAD.decode(signature.as_bytes()).unwrap();
        let issuer = nkeys::KeyPair::from_public_key(&operator.key.public_key()).unwrap();
        issuer.verify(signed.as_bytes(), &signature).unwrap();
        assert!(
            nkeys::KeyPair::from_public_key(&account.public_key())
                .unwrap()
                .verify(signed.as_bytes(), &signature)
                .is_err()
        );
    }

    #[test]
    fn a_creds_file_holds_a_user_jwt_of_the_account_and_its_seed() {
        let account = Operator::new("op").account("acc");
        let creds = account.user_creds("u");
        let mut lines = creds.lines();
        assert_eq!(lines.next(), Some("-----BEGIN NATS USER JWT-----"));
        let jwt = lines.next().unwrap();
        let claims = decode_part(jwt, 1);
        assert_eq!(claims["iss"], account.public_key());
        assert_eq!(claims["nats"]["type"], "user");
        let seed = creds.lines().find(|l| l.starts_with("SU")).unwrap();
        let user = nkeys::KeyPair::from_seed(seed).unwrap();
        assert_eq!(claims["sub"], user.public_key());
    }
}
