//! Shared plumbing of every lexmesh service, one file per concern:
//!
//! - [`compute`]: a job's CPU work on a named compute thread, off the async runtime.
//! - [`config`]: figment configuration (defaults < `lexmesh.toml` < `LEXMESH_*__*`).
//! - [`connection`]: NATS connection with auth, TLS and reconnects.
//! - [`nats_url`]: the servers of `nats.url`, the credentials it carries, and how it is shown.
//! - [`mesh`]: streams, consumers, the jobs bucket and object stores (created when missing).
//! - [`records`]: job records with compare-and-set, cancel markers.
//! - [`cancel`]: cancelling a job from outside (the running instance, else a marker).
//! - [`objects`]: folders to and from object stores.
//! - [`worker`]: what an instance knows about itself (running jobs, counters, memory).
//! - [`metrics`]: what it measures for its metrics reports (CPU, tick lateness, message
//!   latency, error rate over a window).
//! - [`events`]: publishing job events.
//! - [`job_loop`]: the shared job-consumer loop ([`job_loop::JobHandler`]).
//! - [`lost`]: which attempts lost with their worker count against a job.
//! - [`settle`]: what follows an attempt (record, event, dead letter, ack, counters).
//! - [`service`]: a running instance: service API, status, heartbeats, cancel, shutdown.
//! - [`nats_server`]: finding and starting a local `nats-server` (for `lexmesh up` and tests).
//! - [`telemetry`]: logs, OpenTelemetry traces over OTLP (`OTEL_*`), trace context in headers.
//! - [`lease`]: the leader lease that lets one replica of a service act (health, metrics).
//! - [`alerts`]: building and publishing alerts on `lexmesh.alerts.<kind>`.

pub mod alerts;
pub mod cancel;
pub mod compute;
pub mod config;
pub mod connection;
pub mod error;
pub mod events;
pub mod job_loop;
pub mod lease;
pub mod lost;
pub mod mesh;
pub mod metrics;
pub mod nats_server;
pub mod nats_url;
pub mod objects;
pub mod records;
pub mod service;
pub mod settle;
pub mod telemetry;
pub mod worker;

pub use config::Config;
pub use error::RuntimeError;
pub use job_loop::{Claim, JobContext, JobHandler, JobOutcome};
pub use mesh::Mesh;
pub use service::ServiceRuntime;
pub use worker::Worker;
