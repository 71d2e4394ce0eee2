//! Logs and traces of a lexmesh process: the global `tracing` subscriber, OpenTelemetry export
//! over OTLP when the standard `OTEL_*` variables ask for it, and W3C trace context in NATS
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

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, IsTerminal};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, Key, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response, ResponseBodyTooLarge};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::{EnvResourceDetector, Resource, ResourceDetector};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::sync::oneshot;
use tracing::Span;
use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The log filter used when neither `LEXMESH_LOG` nor `RUST_LOG` is set.
pub const DEFAULT_LOG_FILTER: &str = "info,async_nats=warn";

/// The W3C header that carries the trace id, the parent span id and the sampling flag.
pub const TRACEPARENT: &str = "traceparent";

/// The W3C header that carries vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";

/// The instrumentation scope of lexmesh's spans.
const SCOPE: &str = "lexmesh";

/// The OTLP/HTTP path of traces, appended to `OTEL_EXPORTER_OTLP_ENDPOINT`.
const TRACES_PATH: &str = "v1/traces";

/// The specification's default export timeout.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Telemetry::shutdown`] waits for the last batch to be delivered.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest collector response read (the same limit as the SDK's own clients).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Idle keep-alive connections to the collector are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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
        let provider = match &export {
            ExportSettings::Off => None,
            ExportSettings::Unsupported(reason) => {
                problem = Some(reason.clone());
                None
            }
            ExportSettings::Otlp(target) => match build_provider(
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
        };

        let recording = Arc::new(AtomicBool::new(true));
        let otel_layer = provider.as_ref().map(|provider| {
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
// Configuration from the environment.

/// What the `OTEL_*` variables ask for.
#[derive(Debug, Clone, PartialEq)]
enum ExportSettings {
    /// Tracing is not configured (or disabled): install nothing.
    Off,
    /// Tracing is configured in a way lexmesh cannot export; the reason, for a warning.
    Unsupported(String),
    /// Export over OTLP/HTTP protobuf.
    Otlp(OtlpTarget),
}

/// Where and how to export.
#[derive(Debug, Clone, PartialEq)]
struct OtlpTarget {
    /// The full URL of the traces endpoint (`…/v1/traces`).
    endpoint: String,
    /// Whether the endpoint is `https`.
    tls: bool,
    /// Timeout of one export request.
    timeout: Duration,
    /// Settings that are ignored, for warnings.
    warnings: Vec<String>,
}

impl ExportSettings {
    /// Reads the settings through `var` (the environment, or a map in tests); unset and empty
    /// variables are the same.
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Self::Off;
        }
        let endpoint = match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(endpoint) => endpoint,
            None => match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(base) => format!("{}/{TRACES_PATH}", base.trim_end_matches('/')),
                None => return Self::Off,
            },
        };
        if let Some(exporters) = var("OTEL_TRACES_EXPORTER") {
            let exporters: Vec<String> = exporters
                .split(',')
                .map(|e| e.trim().to_ascii_lowercase())
                .collect();
            if exporters.iter().any(|e| e == "none") {
                return Self::Off;
            }
            if !exporters.iter().any(|e| e == "otlp") {
                return Self::Unsupported(format!(
                    "OTEL_TRACES_EXPORTER={}: lexmesh exports traces over OTLP only; set it to \
                     `otlp` (or `none`). Traces are not exported.",
                    exporters.join(",")
                ));
            }
        }
        for protocol_var in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(protocol) = var(protocol_var) {
                if protocol != "http/protobuf" {
                    return Self::Unsupported(format!(
                        "{protocol_var}={protocol}: lexmesh exports traces over OTLP \
                         `http/protobuf` only (usually port 4318); set it to http/protobuf. \
                         Traces are not exported."
                    ));
                }
                break;
            }
        }
        let tls = match endpoint.parse::<http::Uri>() {
            Ok(uri) if uri.host().is_some() && uri.scheme_str() == Some("http") => false,
            Ok(uri) if uri.host().is_some() && uri.scheme_str() == Some("https") => true,
            _ => {
                return Self::Unsupported(format!(
                    "OTLP traces endpoint `{endpoint}` is not an http:// or https:// URL. \
                     Traces are not exported."
                ));
            }
        };
        let timeout = [
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ]
        .into_iter()
        .find_map(|name| var(name)?.parse::<u64>().ok())
        .map_or(DEFAULT_EXPORT_TIMEOUT, Duration::from_millis);
        let mut warnings = Vec::new();
        for compression_var in [
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ] {
            if let Some(compression) = var(compression_var) {
                if !compression.eq_ignore_ascii_case("none") {
                    warnings.push(format!(
                        "{compression_var}={compression}: lexmesh does not compress OTLP \
                         exports; traces are sent uncompressed."
                    ));
                }
                break;
            }
        }
        Self::Otlp(OtlpTarget {
            endpoint,
            tls,
            timeout,
            warnings,
        })
    }
}

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("cannot start the export thread: {0}")]
    Thread(#[source] io::Error),
    #[error("no root certificates for the https endpoint: {0}")]
    RootCertificates(#[source] io::Error),
    #[error("cannot configure TLS: {0}")]
    Tls(#[source] rustls::Error),
    #[error("{0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

fn build_provider(
    target: &OtlpTarget,
    default_service_name: &str,
    instance_id: Option<&str>,
) -> Result<SdkTracerProvider, SetupError> {
    let client = ExportClient::start(target)?;
    let exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(target.endpoint.clone())
        .with_timeout(target.timeout)
        .build()
        .map_err(SetupError::Exporter)?;
    Ok(SdkTracerProvider::builder()
        .with_resource(resource(default_service_name, instance_id))
        // Reads OTEL_BSP_* itself; the sampler (OTEL_TRACES_SAMPLER[_ARG]) comes from the
        // builder's default configuration.
        .with_batch_exporter(exporter)
        .build())
}

/// The resource: the SDK's detectors (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, SDK
/// attributes), the default service name when the environment names none, the instance id.
fn resource(default_service_name: &str, instance_id: Option<&str>) -> Resource {
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || EnvResourceDetector::new()
            .detect()
            .get(&Key::from_static_str("service.name"))
            .is_some();
    let mut builder = Resource::builder();
    if !named_by_env {
        builder = builder.with_service_name(default_service_name.to_owned());
    }
    if let Some(id) = instance_id {
        builder = builder.with_attribute(KeyValue::new("service.instance.id", id.to_owned()));
    }
    builder.build()
}

// ---------------------------------------------------------------------------------------------
// The HTTP client of the exporter.

/// The OTLP/HTTP client: hyper (already built for kube) on a one-thread tokio runtime of its
/// own. The SDK's batch thread drives an export with a plain `block_on`, where a client that
/// needs the caller's tokio reactor would panic or hang; this one only awaits a task of its own
/// runtime, which works from any thread, inside the service's runtime or after it ended.
#[derive(Clone)]
struct ExportClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: Arc<ExportRuntime>,
    timeout: Duration,
}

/// The export runtime's handle; dropping the last one ends its thread.
struct ExportRuntime {
    handle: tokio::runtime::Handle,
    _stop: oneshot::Sender<()>,
}

impl std::fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ExportClient {
    fn start(target: &OtlpTarget) -> Result<Self, SetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(SetupError::Tls)?;
        let tls = if target.tls {
            tls.with_native_roots()
                .map_err(SetupError::RootCertificates)?
                .with_no_client_auth()
        } else {
            // Never used for an http:// endpoint; the connector type wants one.
            tls.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        };
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SetupError::Thread)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("lexmesh-otlp".into())
            .spawn(move || {
                // Runs the requests until the last client is dropped.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(SetupError::Thread)?;
        Ok(Self {
            client,
            runtime: Arc::new(ExportRuntime {
                handle,
                _stop: stop,
            }),
            timeout: target.timeout,
        })
    }

    async fn send(self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let Self {
            client,
            runtime,
            timeout,
        } = self;
        let exchange = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| -> HttpError {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Box::new(ResponseBodyTooLarge::new())
                    } else {
                        e
                    }
                })?
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        let task = runtime.handle.spawn(async move {
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| -> HttpError {
                    Box::new(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from the OTLP endpoint within {timeout:?}"),
                    ))
                })?
        });
        task.await?
    }
}

impl HttpClient for ExportClient {
    // What `#[async_trait]` makes of `async fn send_bytes`, written out to spare a dependency.
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.clone().send(request))
    }
}

// ---------------------------------------------------------------------------------------------
// Trace context in NATS headers and in the environment.

/// Writes the context of the current span into `headers` (`traceparent`, and `tracestate`
/// when present). A no-op when tracing is off.
pub fn inject_current(headers: &mut HeaderMap) {
    inject(&Span::current(), headers);
}

/// Writes the context of `span` into `headers` (`traceparent`, and `tracestate` when
/// present). A no-op when tracing is off or the span is disabled.
///
/// This starts the span's OpenTelemetry side: set its parent
/// ([`set_parent_from_headers`]) before.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    inject_context(&span.context(), headers);
}

/// The headers that carry a trace on to the next message: the context of `span` when spans
/// are exported; otherwise the `traceparent` and `tracestate` of `incoming`, unchanged, so that
/// a caller's trace passes through a process that exports nothing. Empty when neither has one.
pub fn outgoing_headers(span: &Span, incoming: Option<&HeaderMap>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    inject(span, &mut headers);
    if headers.is_empty() {
        return trace_headers(incoming);
    }
    headers
}

/// The `traceparent` and `tracestate` of `incoming`, copied as they are (empty when it has
/// neither).
pub fn trace_headers(incoming: Option<&HeaderMap>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in [TRACEPARENT, TRACESTATE] {
        if let Some(value) = incoming.and_then(|h| h.get(name)) {
            headers.insert(name, value.as_str());
        }
    }
    headers
}

/// Writes the span context of `cx` into `headers`; a no-op when it has no valid span.
pub fn inject_context(cx: &Context, headers: &mut HeaderMap) {
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(cx, &mut NatsHeaders(headers));
    }
}

/// The trace context carried by `headers`; an empty context (no valid span) when there are no
/// headers or no valid `traceparent`.
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(headers) => TraceContextPropagator::new().extract(&NatsHeaderReader(headers)),
        None => Context::new(),
    }
}

/// Makes the span context carried by `headers` the parent of `span`, so that it joins the
/// sender's trace. Call it before the span is entered (or handed to [`inject`] or
/// [`traceparent`]): the parent of a started span cannot change.
///
/// Returns whether the parent was set; `false` (and nothing done) when tracing is off, the
/// span is disabled, or the headers carry no valid context.
pub fn set_parent_from_headers(span: &Span, headers: Option<&HeaderMap>) -> bool {
    set_parent(span, extract(headers))
}

/// Makes the span context of `cx` the parent of `span` (see [`set_parent_from_headers`]);
/// returns whether the parent was set.
pub fn set_parent(span: &Span, cx: Context) -> bool {
    if !cx.span().span_context().is_valid() {
        return false;
    }
    match span.set_parent(cx) {
        Ok(()) => true,
        Err(SetParentError::AlreadyStarted) => {
            tracing::debug!("trace parent not set: the span had started already");
            false
        }
        Err(_) => false,
    }
}

/// The W3C `traceparent` of `span` (`00-<trace id>-<span id>-<flags>`), to keep in a record and
/// link to later with [`add_link`]; `None` when tracing is off or the span is disabled.
///
/// This starts the span's OpenTelemetry side: set its parent before.
pub fn traceparent(span: &Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Adds to `span` a link to the span given by a W3C `traceparent` string (e.g. a redelivered
/// attempt's new span, linked to the original attempt's span). Works before and after the span
/// started. A no-op when tracing is off, the span is disabled, or `traceparent` is not valid.
pub fn add_link(span: &Span, traceparent: &str) {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let linked = TraceContextPropagator::new().extract(&carrier);
    let linked = linked.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// The trace context given by the `TRACEPARENT` and `TRACESTATE` environment variables (the
/// OpenTelemetry convention for processes started by a traced parent), so that a CLI run can
/// join an outer trace with [`set_parent`]; an empty context when they are unset or invalid.
pub fn context_from_env() -> Context {
    let mut carrier = HashMap::new();
    for (var, header) in [("TRACEPARENT", TRACEPARENT), ("TRACESTATE", TRACESTATE)] {
        if let Ok(value) = std::env::var(var) {
            carrier.insert(header.to_owned(), value);
        }
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// NATS headers as an OpenTelemetry injector; invalid names or values are skipped, never a
/// panic (async-nats' `insert` panics on them).
struct NatsHeaders<'a>(&'a mut HeaderMap);

impl Injector for NatsHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (key.parse::<HeaderName>(), value.parse::<HeaderValue>()) {
            self.0.insert(name, value);
        }
    }
}

/// NATS headers as an OpenTelemetry extractor. Names are matched exactly first, then without
/// regard to case (W3C names are lowercase, but a hand-written publisher may capitalise).
struct NatsHeaderReader<'a>(&'a HeaderMap);

impl Extractor for NatsHeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let exact = key
            .parse::<HeaderName>()
            .ok()
            .and_then(|name| self.0.get(name));
        exact
            .or_else(|| {
                self.0
                    .iter()
                    .find(|(name, _)| AsRef::<str>::as_ref(*name).eq_ignore_ascii_case(key))
                    .and_then(|(_, values)| values.first())
            })
            .map(HeaderValue::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .map(|(name, _)| AsRef::<str>::as_ref(name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn settings(vars: &[(&str, &str)]) -> ExportSettings {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ExportSettings::from_lookup(|name| vars.get(name).cloned())
    }

    fn otlp(endpoint: &str, tls: bool, timeout_ms: u64) -> ExportSettings {
        ExportSettings::Otlp(OtlpTarget {
            endpoint: endpoint.into(),
            tls,
            timeout: Duration::from_millis(timeout_ms),
            warnings: Vec::new(),
        })
    }

    #[test]
    fn off_unless_an_endpoint_is_given() {
        assert_eq!(settings(&[]), ExportSettings::Off);
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]),
            ExportSettings::Off
        );
        assert_eq!(
            settings(&[
                ("OTEL_SERVICE_NAME", "x"),
                ("OTEL_TRACES_SAMPLER", "always_on")
            ]),
            ExportSettings::Off
        );
    }

    #[test]
    fn endpoint_per_specification() {
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]),
            otlp("http://collector:4318/v1/traces", false, 10_000)
        );
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example/base/")]),
            otlp("https://otel.example/base/v1/traces", true, 10_000)
        );
        // The signal's own endpoint is used as is, and wins.
        assert_eq!(
            settings(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://traces:9999/custom"
                ),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]),
            otlp("http://traces:9999/custom", false, 2_500)
        );
        assert_eq!(
            settings(&[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://traces:9999/custom"
                ),
                ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]),
            otlp("http://traces:9999/custom", false, 700)
        );
    }

    #[test]
    fn disabled_by_the_sdk_switch_or_the_none_exporter() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(
            settings(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]),
            ExportSettings::Off
        );
        assert_eq!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
            ExportSettings::Off
        );
        assert!(matches!(
            settings(&[endpoint, ("OTEL_SDK_DISABLED", "false")]),
            ExportSettings::Otlp(_)
        ));
        assert!(matches!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "otlp")]),
            ExportSettings::Otlp(_)
        ));
        assert!(matches!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]),
            ExportSettings::Unsupported(_)
        ));
    }

    #[test]
    fn only_http_protobuf_is_exported() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert!(matches!(
            settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]),
            ExportSettings::Otlp(_)
        ));
        let ExportSettings::Unsupported(reason) =
            settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
        else {
            panic!("grpc is not supported");
        };
        assert!(
            reason.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
            "{reason}"
        );
        // The signal's own protocol wins over the general one.
        assert!(matches!(
            settings(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ]),
            ExportSettings::Otlp(_)
        ));
        assert!(matches!(
            settings(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
            ]),
            ExportSettings::Unsupported(_)
        ));
        assert!(matches!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]),
            ExportSettings::Unsupported(_)
        ));
    }

    #[test]
    fn compression_is_ignored_with_a_warning() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let ExportSettings::Otlp(target) =
            settings(&[endpoint, ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")])
        else {
            panic!("exported uncompressed");
        };
        assert_eq!(target.warnings.len(), 1);
        assert!(target.warnings[0].contains("OTEL_EXPORTER_OTLP_COMPRESSION=gzip"));
        let ExportSettings::Otlp(target) =
            settings(&[endpoint, ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none")])
        else {
            panic!("exported");
        };
        assert!(target.warnings.is_empty());
    }

    // No subscriber is installed in these unit tests: tracing is off.

    #[test]
    fn helpers_are_no_ops_when_tracing_is_off() {
        let span = tracing::info_span!("job");
        let mut headers = HeaderMap::new();
        inject(&span, &mut headers);
        inject_current(&mut headers);
        assert!(headers.is_empty());
        assert_eq!(traceparent(&span), None);
        add_link(&span, PARENT);
        add_link(&span, "not a traceparent");

        let mut incoming = HeaderMap::new();
        incoming.insert(TRACEPARENT, PARENT);
        assert!(!set_parent_from_headers(&span, Some(&incoming)));
        assert!(!set_parent_from_headers(&span, None));
    }

    #[test]
    fn extract_reads_w3c_headers() {
        assert!(!extract(None).span().span_context().is_valid());
        assert!(
            !extract(Some(&HeaderMap::new()))
                .span()
                .span_context()
                .is_valid()
        );

        let mut headers = HeaderMap::new();
        headers.insert("Traceparent", PARENT);
        headers.insert(TRACESTATE, "vendor=value");
        let cx = extract(Some(&headers));
        let span = cx.span();
        let remote = span.span_context();
        assert!(remote.is_valid() && remote.is_remote() && remote.is_sampled());
        assert_eq!(
            remote.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(remote.span_id().to_string(), "b7ad6b7169203331");
        assert_eq!(remote.trace_state().header(), "vendor=value");

        // Back into headers, unchanged.
        let mut out = HeaderMap::new();
        inject_context(&cx, &mut out);
        assert_eq!(out.get(TRACEPARENT).map(HeaderValue::as_str), Some(PARENT));
        assert_eq!(
            out.get(TRACESTATE).map(HeaderValue::as_str),
            Some("vendor=value")
        );

        let mut bad = HeaderMap::new();
        bad.insert(TRACEPARENT, "00-garbage");
        assert!(!extract(Some(&bad)).span().span_context().is_valid());
    }
}
