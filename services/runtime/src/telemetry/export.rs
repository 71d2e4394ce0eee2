//! The OTLP/HTTP exporter (feature `otlp`): the SDK's tracer provider with a batch exporter,
//! the resource of the process, and the HTTP client the exporter sends through.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use opentelemetry::{Key, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response, ResponseBodyTooLarge};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::resource::{EnvResourceDetector, Resource, ResourceDetector};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::sync::oneshot;

use super::settings::OtlpTarget;

/// The largest collector response read (the same limit as the SDK's own clients).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Idle keep-alive connections to the collector are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub(super) enum SetupError {
    #[error("cannot start the export thread: {0}")]
    Thread(#[source] io::Error),
    #[error("no root certificates for the https endpoint: {0}")]
    RootCertificates(#[source] io::Error),
    #[error("cannot configure TLS: {0}")]
    Tls(#[source] rustls::Error),
    #[error("{0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

pub(super) fn build_provider(
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

/// The OTLP/HTTP client: hyper on a one-thread tokio runtime of its
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
