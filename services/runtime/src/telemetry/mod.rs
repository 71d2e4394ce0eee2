//! Logs and traces of a lexmesh process: the global `tracing` subscriber, OpenTelemetry export
//! over OTLP when the standard `OTEL_*` variables ask for it (in a build with the `otlp`
//! feature), and W3C trace context in NATS
//! headers so that one trace follows a job across the mesh.
//!
//! [`init`] installs, once per process, an [`EnvFilter`] (`LEXMESH_LOG`, else `RUST_LOG`, else
//! `info,async_nats=warn`), a formatter to stderr (colours only on a terminal) and, only when
//! tracing is configured, a `tracing-opentelemetry` layer whose spans are exported in batches
//! over OTLP/HTTP (protobuf). Tracing is configured when
//!
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   (`/v1/traces` is appended) is set and not empty,
//! - `OTEL_SDK_DISABLED` is not `true`, and
//! - `OTEL_TRACES_EXPORTER` is not `none` (when set, it must name `otlp`).
//!
//! Otherwise nothing of OpenTelemetry is installed: no exporter, no layer, no thread, no cost.
//! The other standard variables are honoured: `OTEL_SERVICE_NAME` (default: the name given to
//! [`init`]), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`
//! (read by the SDK; default `parentbased_always_on`), `OTEL_BSP_SCHEDULE_DELAY`,
//! `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_EXPORT_TIMEOUT` (read
//! by the SDK), `OTEL_EXPORTER_OTLP[_TRACES]_HEADERS` and `OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT`.
//! `OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL` must be `http/protobuf` (the default of the
//! specification): for `grpc`, `http/json` or anything else [`init`] logs one warning saying so
//! and does not export (it never fails: the process still logs). `OTEL_EXPORTER_OTLP_COMPRESSION`
//! is not supported: a warning, and traces go uncompressed. `https://` endpoints are verified
//! against the system's root certificates.
//!
//! Export runs on the SDK's batch thread; the HTTP requests run on a small runtime of their own
//! (one thread), never on the service's runtime, so export and [`Telemetry::shutdown`] work from
//! inside a tokio runtime, from plain threads, and after the service's runtime has ended.
//!
//! ```no_run
//! use lexmesh_runtime::telemetry;
//!
//! let telemetry = telemetry::Telemetry::builder("lexmesh-trainer")
//!     .instance_id("trainer-host-42")
//!     .init();
//! // ... run the service; on SIGTERM return here ...
//! if let Err(e) = telemetry.shutdown() {
//!     eprintln!("last spans not delivered: {e}");
//! }
//! ```
//!
//! In a service, the span of a job takes its parent from the message that carried the job, and
//! the events it publishes carry the job span on:
//!
//! ```no_run
//! # fn demo(message: &async_nats::Message) {
//! use lexmesh_runtime::telemetry;
//!
//! let span = tracing::info_span!("train", job_id = "j1");
//! telemetry::set_parent_from_headers(&span, message.headers.as_ref());
//! let mut headers = async_nats::HeaderMap::new();
//! telemetry::inject(&span, &mut headers); // publish the event with these headers
//! # }
//! ```
//!
//! All the helpers are silent no-ops while tracing is off (no valid span context): nothing is
//! written, nothing panics.
//!
//! One file per concern: [`settings`](self) reads the `OTEL_*` variables, `export` (feature
//! `otlp`) is the exporter and its HTTP client, [`propagation`] carries trace context in NATS
//! headers and the environment.

#[cfg(feature = "otlp")]
mod export;
mod propagation;
mod settings;

use std::io::{self, IsTerminal};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use propagation::{
    add_link, context_from_env, extract, inject, inject_context, inject_current, outgoing_headers,
    set_parent, set_parent_from_headers, trace_headers, traceparent,
};
use settings::ExportSettings;

/// The log filter used when neither `LEXMESH_LOG` nor `RUST_LOG` is set.
pub const DEFAULT_LOG_FILTER: &str = "info,async_nats=warn";

/// The W3C header that carries the trace id, the parent span id and the sampling flag.
pub const TRACEPARENT: &str = "traceparent";

/// The W3C header that carries vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";

/// The instrumentation scope of lexmesh's spans.
const SCOPE: &str = "lexmesh";

/// How long [`Telemetry::shutdown`] waits for the last batch to be delivered.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs the global subscriber (logs, and traces when configured); see the
/// [module documentation](self). Same as `Telemetry::builder(default_service_name).init()`.
///
/// `default_service_name` (e.g. `lexmesh-trainer`) is the `service.name` of the spans unless
/// `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names one.
pub fn init(default_service_name: &str) -> Telemetry {
    Telemetry::builder(default_service_name).init()
}

/// Options of [`Telemetry`]; get one from [`Telemetry::builder`].
#[derive(Debug, Clone)]
pub struct TelemetryBuilder {
    default_service_name: String,
    instance_id: Option<String>,
    default_log_filter: String,
}

impl TelemetryBuilder {
    /// The `service.instance.id` resource attribute of every span of this process (the
    /// instance id the service uses on the mesh). It wins over one in
    /// `OTEL_RESOURCE_ATTRIBUTES`, which all replicas of a deployment would share.
    pub fn instance_id(mut self, instance_id: impl Into<String>) -> Self {
        self.instance_id = Some(instance_id.into());
        self
    }

    /// The log filter used when neither `LEXMESH_LOG` nor `RUST_LOG` is set (default
    /// [`DEFAULT_LOG_FILTER`]; a command-line tool may want only warnings).
    pub fn default_log_filter(mut self, directives: &str) -> Self {
        directives.clone_into(&mut self.default_log_filter);
        self
    }

    /// Installs the global subscriber and, when tracing is configured, the exporter; see the
    /// [module documentation](self).
    ///
    /// Never fails: a configuration that cannot be exported (an unsupported protocol, a bad
    /// endpoint, no root certificates for `https`) is logged as one warning and tracing stays
    /// off. When a global subscriber was installed already (a second call, a test harness), it
    /// is kept, a warning is logged, and nothing is exported.
    pub fn init(self) -> Telemetry {
        let export = ExportSettings::from_lookup(|name| std::env::var(name).ok());
        let mut problem = None;
        let provider: Option<SdkTracerProvider> = match &export {
            ExportSettings::Off => None,
            ExportSettings::Unsupported(reason) => {
                problem = Some(reason.clone());
                None
            }
            #[cfg(feature = "otlp")]
            ExportSettings::Otlp(target) => match export::build_provider(
                target,
                &self.default_service_name,
                self.instance_id.as_deref(),
            ) {
                Ok(provider) => Some(provider),
                Err(e) => {
                    problem = Some(format!("OpenTelemetry traces are not exported: {e}"));
                    None
                }
            },
            #[cfg(not(feature = "otlp"))]
            ExportSettings::Otlp(target) => {
                problem = Some(format!(
                    "OpenTelemetry traces of {} are not exported to {}: this lexmesh was \
                     built without the `otlp` feature (cargo build --release --features otlp)",
                    self.default_service_name, target.endpoint
                ));
                None
            }
        };

        let recording = Arc::new(AtomicBool::new(true));
        let otel_layer = provider.as_ref().map(|provider| {
            use opentelemetry::trace::TracerProvider as _;
            let recording = Arc::clone(&recording);
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(SCOPE))
                // Spans at info and above, whatever the log filter says (a CLI that logs only
                // warnings still exports its spans); off after shutdown: spans begun later
                // are not handed to a stopped SDK.
                .with_filter(tracing_subscriber::filter::filter_fn(move |meta| {
                    *meta.level() <= tracing::Level::INFO && recording.load(Ordering::Relaxed)
                }))
        });
        let installed = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(io::stderr().is_terminal())
                    .with_writer(io::stderr)
                    .with_filter(log_filter(&self.default_log_filter)),
            )
            .with(otel_layer)
            .try_init()
            .is_ok();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

        let provider = match provider {
            Some(provider) if !installed => {
                let _ = provider.shutdown();
                tracing::warn!(
                    "a global tracing subscriber was installed already; OpenTelemetry traces \
                     are not exported by this one"
                );
                None
            }
            provider => provider,
        };
        if let Some(problem) = problem {
            tracing::warn!("{problem}");
        }
        if let (Some(_), ExportSettings::Otlp(target)) = (&provider, &export) {
            for warning in &target.warnings {
                tracing::warn!("{warning}");
            }
            tracing::info!(endpoint = %target.endpoint, "exporting traces over OTLP");
        }
        Telemetry {
            provider,
            recording,
        }
    }
}

/// The installed telemetry of a process; keep it until the process ends.
///
/// Bind it to a name (`let telemetry = init(…)`): `let _ = init(…)` drops it at once, which
/// stops export.
///
/// [`shutdown`](Self::shutdown) (or dropping it) delivers the spans still queued and stops
/// export, so the spans of a process that ends on SIGTERM are not lost. Logging goes on after
/// that; spans begun later are not exported.
#[derive(Debug)]
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    recording: Arc<AtomicBool>,
}

impl Telemetry {
    /// Options for [`init`]: the default service name and the instance id.
    pub fn builder(default_service_name: &str) -> TelemetryBuilder {
        TelemetryBuilder {
            default_service_name: default_service_name.to_owned(),
            instance_id: None,
            default_log_filter: DEFAULT_LOG_FILTER.to_owned(),
        }
    }

    /// Whether spans are exported (tracing is configured and its exporter was set up).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans ended so far now, without waiting for the next batch.
    ///
    /// # Errors
    ///
    /// When the export fails or times out; a no-op `Ok` when not exporting.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        match &self.provider {
            Some(provider) => provider.force_flush().map_err(TelemetryError::Flush),
            None => Ok(()),
        }
    }

    /// Exports the spans still queued and shuts the exporter down, waiting at most 5 s.
    /// Callable from inside a tokio runtime (it blocks the calling thread for the export, which
    /// runs on a thread of its own) and after the runtime has ended.
    ///
    /// # Errors
    ///
    /// When the last export fails or does not finish in time; a no-op `Ok` when not exporting.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        self.shutdown_provider()
    }

    fn shutdown_provider(&mut self) -> Result<(), TelemetryError> {
        self.recording.store(false, Ordering::Relaxed);
        match self.provider.take() {
            Some(provider) => provider
                .shutdown_with_timeout(SHUTDOWN_TIMEOUT)
                .map_err(TelemetryError::Shutdown),
            None => Ok(()),
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown_provider() {
            tracing::warn!("the last spans may be lost: {e}");
        }
    }
}

/// Errors of [`Telemetry::flush`] and [`Telemetry::shutdown`].
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// Exporting the spans ended so far failed or timed out.
    #[error("flushing OpenTelemetry spans: {0}")]
    Flush(#[source] OTelSdkError),
    /// Exporting the last spans or stopping the exporter failed or timed out.
    #[error("shutting OpenTelemetry export down: {0}")]
    Shutdown(#[source] OTelSdkError),
}

/// The log filter: `LEXMESH_LOG`, else `RUST_LOG`, else `default`.
fn log_filter(default: &str) -> EnvFilter {
    let directives = std::env::var("LEXMESH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.into());
    EnvFilter::new(directives)
}

/// Whether the `OTEL_*` variables ask for trace export (an endpoint is set, and the SDK and
/// the exporter are not switched off), so that a command-line tool installs [`Telemetry`] only
/// then.
pub fn requested() -> bool {
    !matches!(
        ExportSettings::from_lookup(|name| std::env::var(name).ok()),
        ExportSettings::Off
    )
}

// ---------------------------------------------------------------------------------------------
