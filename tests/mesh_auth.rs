//! Encrypted and authenticated connections on a real nats-server, with credentials made in the
//! test (`lexmesh_testkit::credentials`): server TLS, mutual TLS, an nkey user, and the creds
//! file of a user of a server in operator mode (JWTs, JetStream on the account).
//!
//! In each, the `[nats]` section of one configuration file is all the mesh gets: `lexmesh up
//! --config FILE` runs a preprocessor and a trainer against the already running server, and
//! `lexmesh submit train --config FILE --watch` runs a job to `completed`. Then the wrong
//! credentials: the command line exits 1 and says what the server refused (TLS handshake,
//! authorization), a setting that cannot work is named before connecting, and a service with a
//! refused certificate says so in its log at every attempt.
//!
//! Every child process runs in the test's temporary folder with a timeout, killed when the test
//! ends; every `LEXMESH_*__*` and `NATS_URL` variable of the test's own environment is removed
//! from it.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lexmesh_testkit::cli::Ran;
use lexmesh_testkit::{
    ChildProcess, NatsServer, NkeyUser, Operator, TestCertificates, eventually, sample_train_job,
    small_settings,
};
use tempfile::TempDir;

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

/// A command that is refused (or stops at its configuration) at once.
const REFUSED: Duration = Duration::from_secs(30);

/// `lexmesh up` starting its replicas, and a one-epoch job on the sample run by them.
const JOB: Duration = Duration::from_secs(180);

/// One server with its credentials, and the test's folder: configurations, logs, work folders.
struct Scenario {
    // Declared first: dropped (killed) before the server and the folder go.
    up: Option<ChildProcess>,
    server: NatsServer,
    dir: TempDir,
}

impl Scenario {
    /// A server with `server_config` (TLS, users, operator mode) added to its configuration.
    fn start(dir: TempDir, server_config: String) -> Self {
        let server = NatsServer::builder()
            .extra_config(server_config)
            .start()
            .unwrap_or_else(|e| panic!("start a private nats-server: {e}"));
        Self {
            up: None,
            server,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `<name>.toml`: the server's URL (with `scheme` in place of `nats`) and `nats`, more
    /// keys of the `[nats]` section. Returns its path.
    fn config(&self, name: &str, scheme: &str, nats: &str) -> String {
        let url = self.server.url().replacen("nats", scheme, 1);
        let path = self.path(&format!("{name}.toml"));
        std::fs::write(
            &path,
            format!("[nats]\nurl = \"{url}\"\nconnect_timeout = \"5s\"\n{nats}"),
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    }

    /// `lexmesh <args>` in the test's folder, with a clean mesh environment.
    fn lexmesh(&self, args: &[&str]) -> Command {
        let mut command = Command::new(LEXMESH);
        command.args(args).current_dir(self.dir.path());
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if (name.starts_with("LEXMESH_") && name.contains("__")) || name == "NATS_URL" {
                command.env_remove(&key);
            }
        }
        command
            .env("LEXMESH_SERVICE__WORK_DIR", self.path("work"))
            .env("LEXMESH_SERVICE__COMPUTE_THREADS", "1")
            .env("LEXMESH_METRICS__LISTEN", "127.0.0.1:0")
            .env("LEXMESH_LOG", "info");
        command
    }

    /// Runs `lexmesh <args>` to its end (at most `timeout`, which fails the test).
    async fn run(&self, args: &[&str], timeout: Duration) -> Ran {
        let what = format!("lexmesh {}", args.join(" "));
        let mut command = tokio::process::Command::from(self.lexmesh(args));
        command
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        let output = tokio::time::timeout(timeout, command.output())
            .await
            .unwrap_or_else(|_| panic!("`{what}` did not finish within {timeout:?}"))
            .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
        Ran::from_output(what, &output)
    }

    /// Starts `lexmesh up --config <config>` with a preprocessor and a trainer (what a train
    /// job needs), on the running server; its output in `up.log`.
    fn up(&mut self, config: &str) {
        std::fs::create_dir_all(self.path("work")).unwrap();
        let mut command = self.lexmesh(&[
            "up",
            "--config",
            config,
            "--replicas",
            "evaluator=0,health=0,metrics=0",
        ]);
        let up = ChildProcess::spawn("lexmesh up", &mut command, self.path("up.log")).unwrap();
        self.up = Some(up);
    }

    /// Submits a one-epoch train job with `config` and follows it: it completes.
    async fn run_job(&self, config: &str, job_id: &str) {
        let job = sample_train_job(job_id, &format!("{job_id}-model"), small_settings(1));
        let file = self.path(&format!("{job_id}.json"));
        std::fs::write(&file, job.to_string()).unwrap();
        let file = file.to_string_lossy().into_owned();
        let ran = self
            .run(
                &[
                    "submit", "train", "--config", config, "--json", &file, "--watch",
                ],
                JOB,
            )
            .await;
        assert!(
            ran.code == Some(0) && ran.stdout.contains(&format!("job {job_id} completed")),
            "{}",
            ran.describe()
        );
    }

    /// Runs `lexmesh jobs --config <config>`: it exits 1; returns its stderr.
    async fn refused(&self, config: &str) -> String {
        let ran = self.run(&["jobs", "--config", config], REFUSED).await;
        assert_eq!(ran.code, Some(1), "{}", ran.describe());
        ran.stderr
    }
}

/// The `[nats.tls]` section of a configuration.
fn tls_section(ca: &Path, client: Option<(&Path, &Path)>) -> String {
    let mut section = format!("[nats.tls]\nca_file = {}\n", quoted(ca));
    if let Some((cert, key)) = client {
        section.push_str(&format!(
            "cert_file = {}\nkey_file = {}\n",
            quoted(cert),
            quoted(key)
        ));
    }
    section
}

/// A path as a TOML string.
fn quoted(path: &Path) -> String {
    serde_json::to_string(&path.to_string_lossy()).unwrap()
}

/// Fails unless `text` contains every one of `wanted`.
fn assert_says(text: &str, wanted: &[&str]) {
    for word in wanted {
        assert!(text.contains(word), "expected `{word}` in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_mesh_runs_a_job_and_a_client_that_trusts_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = TestCertificates::write(dir.path());
    let mut scenario = Scenario::start(dir, certificates.server_config(false));
    // `tls://` asks for TLS from the first byte; the server asks for it anyway.
    let config = scenario.config("services", "tls", &tls_section(&certificates.ca_file, None));
    scenario.up(&config);
    scenario.run_job(&config, "tls-1").await;

    // Trusting a CA that did not sign the server's certificate: refused in the handshake.
    let other_ca = scenario.config(
        "other-ca",
        "tls",
        &tls_section(&certificates.other_ca_file, None),
    );
    let stderr = scenario.refused(&other_ca).await;
    assert_says(
        &stderr,
        &[
            "TLS handshake failed",
            "the server's certificate is not trusted",
            "nats.tls.ca_file",
            "other-ca.pem",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_tls_only_a_certificate_of_the_ca_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = TestCertificates::write(dir.path());
    let mut scenario = Scenario::start(dir, certificates.server_config(true));
    let client = &certificates.client;
    let config = scenario.config(
        "services",
        "nats",
        &tls_section(
            &certificates.ca_file,
            Some((&client.cert_file, &client.key_file)),
        ),
    );
    scenario.up(&config);
    scenario.run_job(&config, "mtls-1").await;

    // A client certificate of another CA.
    let other = &certificates.other_client;
    let wrong_client = scenario.config(
        "other-client",
        "nats",
        &tls_section(
            &certificates.ca_file,
            Some((&other.cert_file, &other.key_file)),
        ),
    );
    let stderr = scenario.refused(&wrong_client).await;
    assert_says(
        &stderr,
        &[
            "TLS handshake failed",
            "the server refused the client certificate",
            "other-client.pem",
        ],
    );

    // No client certificate at all.
    let no_client = scenario.config(
        "no-client",
        "nats",
        &tls_section(&certificates.ca_file, None),
    );
    let stderr = scenario.refused(&no_client).await;
    assert_says(
        &stderr,
        &[
            "TLS handshake failed",
            "the server requires a client certificate",
            "nats.tls.cert_file",
        ],
    );

    // A certificate without its key, and a key that is not the certificate's: named before
    // connecting.
    let no_key = scenario.config(
        "no-key",
        "nats",
        &format!(
            "{}cert_file = {}\n",
            tls_section(&certificates.ca_file, None),
            quoted(&client.cert_file)
        ),
    );
    let stderr = scenario.refused(&no_key).await;
    assert_says(&stderr, &["nats.tls.key_file", "not set", "client.pem"]);
    let wrong_key = scenario.config(
        "wrong-key",
        "nats",
        &tls_section(
            &certificates.ca_file,
            Some((&client.cert_file, &other.key_file)),
        ),
    );
    let stderr = scenario.refused(&wrong_key).await;
    assert_says(
        &stderr,
        &["nats.tls.key_file", "is not the private key", "client.pem"],
    );

    // A service with the other CA's certificate keeps trying, and says why at every attempt.
    let mut command = scenario.lexmesh(&["serve", "trainer", "--config", &wrong_client]);
    let mut service = ChildProcess::spawn(
        "lexmesh serve trainer (other client)",
        &mut command,
        scenario.path("refused-trainer.log"),
    )
    .unwrap();
    let log = service.log_path().to_path_buf();
    eventually(
        "two refused attempts in the log of a trainer with the other CA's certificate",
        Duration::from_secs(60),
        || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).ok()?;
                let refusals = text
                    .lines()
                    .filter(|line| {
                        line.contains("ERROR")
                            && line.contains("the server refused the client certificate")
                    })
                    .count();
                (refusals >= 2).then_some(())
            }
        },
    )
    .await;
    assert!(service.is_running(), "{}", service.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_user_runs_a_job_and_another_key_is_not_authorized() {
    let dir = tempfile::tempdir().unwrap();
    let user = NkeyUser::new();
    let mut scenario = Scenario::start(dir, NkeyUser::server_config(&[&user]));
    let config = scenario.config(
        "services",
        "nats",
        &format!("nkey_seed = \"{}\"\n", user.seed),
    );
    scenario.up(&config);
    scenario.run_job(&config, "nkey-1").await;

    let stranger = NkeyUser::new();
    let wrong = scenario.config(
        "stranger",
        "nats",
        &format!("nkey_seed = \"{}\"\n", stranger.seed),
    );
    let stderr = scenario.refused(&wrong).await;
    assert_says(&stderr, &["authorization violation", "nats.nkey_seed"]);
    assert!(
        !stderr.contains(&stranger.seed),
        "the seed is a secret: {stderr}"
    );

    // A seed that is not one is named before connecting (and not shown).
    let broken_seed = &user.seed[..user.seed.len() - 2];
    let broken = scenario.config(
        "broken",
        "nats",
        &format!("nkey_seed = \"{broken_seed}\"\n"),
    );
    let stderr = scenario.refused(&broken).await;
    assert_says(&stderr, &["nats.nkey_seed", "not an nkey seed"]);
    assert!(
        !stderr.contains(broken_seed),
        "the seed is a secret: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_of_the_operator_runs_a_job_and_one_of_another_operator_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let operator = Operator::new("lexmesh-test");
    let account = operator.account("LEXMESH");
    let creds = account.write_user_creds(dir.path(), "services");
    // A user of an account of another operator, unknown to the server.
    let intruder = Operator::new("other")
        .account("LEXMESH")
        .write_user_creds(dir.path(), "intruder");
    let mut scenario = Scenario::start(dir, operator.server_config(&[&account]));
    let config = scenario.config(
        "services",
        "nats",
        &format!("creds_file = {}\n", quoted(&creds)),
    );
    scenario.up(&config);
    scenario.run_job(&config, "creds-1").await;

    let wrong = scenario.config(
        "intruder",
        "nats",
        &format!("creds_file = {}\n", quoted(&intruder)),
    );
    let stderr = scenario.refused(&wrong).await;
    assert_says(
        &stderr,
        &[
            "authorization violation",
            "nats.creds_file",
            "intruder.creds",
        ],
    );
}
