//! The test and bench harness of lexmesh: a private `nats-server` with JetStream per test,
//! `lexmesh serve` and `lexmesh up` processes on it, a client that speaks raw JSON only (as a
//! foreign system would), and the JSON Schemas of `schemas/` that every captured message is
//! checked against.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use lexmesh_testkit::{TRAIN, TestMesh, sample_train_job, small_settings};
//!
//! # async fn example() {
//! // The caller names the binary: only its own crate knows `CARGO_BIN_EXE_lexmesh`.
//! let mut mesh = TestMesh::start("target/debug/lexmesh").await;
//! mesh.start_all(&[]).await;
//! let mut watch = mesh.watch("job-1").await;
//! mesh.submit(TRAIN, &sample_train_job("job-1", "model-1", small_settings(2))).await;
//! let last = watch.until_final(Duration::from_secs(45)).await;
//! assert_eq!(last["event"], "completed");
//! # }
//! ```
//!
//! One file per concern:
//!
//! - [`server`]: [`NatsServer`], a private server on a free port in a temporary folder. The
//!   binary is found by [`lexmesh_runtime::nats_server::locate`]: `LEXMESH_NATS_SERVER`, then
//!   `.tools/nats/bin/nats-server` (installed by `scripts/setup-nats`), then a 2.10+ server on
//!   `PATH`. When none is found, [`NatsServer::start`] fails with a message that says how to
//!   install one; tests never skip silently.
//! - [`mesh`]: [`TestMesh`], a server, the service processes started on it, and the raw-JSON
//!   client (submit, request, status, job records, stream state).
//! - [`process`]: [`ChildProcess`] and [`ServiceProcess`], children with their output in a log
//!   file, killed on drop and their log printed when the test fails; waiting for a line of
//!   that log; signals.
//! - [`up`]: [`UpProcess`], `lexmesh up` with its output in files.
//! - [`events`]: [`EventWatch`] (pull job events one by one, each checked against its schema
//!   and its subject) and [`EventLog`] (every message of a subject, with its arrival time).
//! - [`heartbeats`]: [`Heartbeats`], the latest heartbeat of each instance.
//! - [`schemas`]: [`Schemas`], a validator for every `schemas/<name>.v1.json`.
//! - [`subjects`]: the subjects and names of the wire protocol, written out as strings on
//!   purpose: the tests check the documented protocol, not lexmesh's own types.
//! - [`fixtures`]: the sample data of `data/sample`, small settings, job builders.
//! - [`cli`]: running a command to completion and reading its output.
//! - [`wait`]: [`eventually`], polling until a condition holds.
//! - [`otlp`]: an OTLP trace receiver for the tracing tests.
//! - [`browser`]: [`Browser`], a headless Chromium on a page (the dashboard's tests).
//! - [`k8s`]: the `k8s/` manifests as JSON values.
//! - [`credentials`]: TLS certificates, nkey users and operator/account/user JWTs with their
//!   `.creds` file, made in the test for a server that asks for them.
//!
//! The harness fails the test (panics with a message that says what was expected) on any
//! broken expectation: that is its job. Paths of the repository (`schemas/`, `data/`) are
//! found from this crate's own folder, never from the current directory.

pub mod browser;
pub mod cli;
pub mod credentials;
pub mod error;
pub mod events;
pub mod fixtures;
pub mod heartbeats;
pub mod k8s;
pub mod mesh;
pub mod otlp;
pub mod process;
pub mod schemas;
pub mod server;
pub mod subjects;
pub mod up;
pub mod wait;

pub use browser::Browser;
pub use credentials::{
    Account, CertificateAuthority, CertifiedKey, NkeyUser, Operator, TestCertificates,
};
pub use error::TestkitError;
pub use events::{EventLog, EventWatch, is_final};
pub use fixtures::{
    inline, no_early_stop_job, read_json, repo_root, sample_path, sample_records, sample_subset,
    sample_train_job, small_bow_config, small_settings,
};
pub use heartbeats::{Heartbeat, Heartbeats};
pub use mesh::{
    JOB_TIMEOUT, MAX_PAYLOAD, MESH_STREAMS, READY_TIMEOUT, REQUEST_TIMEOUT, TestMesh,
    TestMeshBuilder,
};
pub use process::{ChildProcess, ServiceProcess, send_signal, try_send_signal};
pub use schemas::{Schemas, short};
pub use server::{NatsServer, NatsServerBuilder, ServerFlavor};
pub use subjects::{
    CLASSIFY, EVALUATE, JOBS_BUCKET, JOBS_STREAM, PREPARE, PREPROCESS, TRAIN, cancel_subject,
    status_subject,
};
pub use up::UpProcess;
pub use wait::eventually;
