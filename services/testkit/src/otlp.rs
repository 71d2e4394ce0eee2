//! An OTLP/HTTP trace receiver for tests: what a collector would get from a lexmesh process.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let receiver = lexmesh_testkit::otlp::OtlpReceiver::start().expect("a receiver");
//! // Run a process with OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint() …
//! let spans = receiver.wait_for(|spans| spans.iter().any(|s| s.name == "train"), Duration::from_secs(10));
//! assert!(spans.iter().any(|s| s.name == "train"));
//! ```
//!
//! [`OtlpReceiver`] listens on a free port of 127.0.0.1 and answers `POST /v1/traces` with
//! `Content-Type: application/x-protobuf` (an `ExportTraceServiceRequest`, uncompressed) with
//! `200` and an empty `ExportTraceServiceResponse`; anything else gets a `4xx`. It is a small
//! HTTP/1.1 server on plain threads (keep-alive, `Content-Length` or chunked bodies), so it
//! works from sync and async tests alike and costs no HTTP server crate. It stops when dropped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;

use crate::TestkitError;

/// The largest request body accepted (the OTLP/HTTP recommendation).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// How often an idle connection looks whether the receiver was dropped.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// How long a request may take to arrive once it has begun.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One span as received, flattened for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// `service.name` of the span's resource (empty when absent).
    pub service_name: String,
    /// All attributes of the span's resource, values in string form.
    pub resource_attributes: BTreeMap<String, String>,
    /// Name of the instrumentation scope (the tracer).
    pub scope_name: String,
    /// The span's name.
    pub name: String,
    /// Trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// Span id, 16 lowercase hex digits.
    pub span_id: String,
    /// Parent span id in hex; empty for a root span.
    pub parent_span_id: String,
    /// Links as `(trace id, span id)` in hex.
    pub links: Vec<(String, String)>,
    /// The span's attributes, values in string form (see [`any_value_string`]).
    pub attributes: BTreeMap<String, String>,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
}

/// What the receiver has got so far.
#[derive(Debug, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    requests: usize,
}

#[derive(Debug, Default)]
struct Shared {
    received: Mutex<Received>,
    changed: Condvar,
    stopping: AtomicBool,
}

impl Shared {
    fn received(&self) -> MutexGuard<'_, Received> {
        // A panicking connection thread must not hide what was received before it.
        self.received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An OTLP/HTTP trace receiver on 127.0.0.1; see the [module documentation](self).
#[derive(Debug)]
pub struct OtlpReceiver {
    address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Starts a receiver on a free port of 127.0.0.1.
    ///
    /// # Errors
    ///
    /// When no port can be bound or the thread cannot be started.
    pub fn start() -> Result<OtlpReceiver, TestkitError> {
        let io_error = |context| move |source| TestkitError::Io { context, source };
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(io_error("cannot bind the OTLP receiver's port"))?;
        let address = listener
            .local_addr()
            .map_err(io_error("cannot read the OTLP receiver's address"))?;
        let shared = Arc::new(Shared::default());
        let acceptor = thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || accept(&listener, &shared)
            })
            .map_err(io_error("cannot start the OTLP receiver's thread"))?;
        Ok(OtlpReceiver {
            address,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The base URL for `OTEL_EXPORTER_OTLP_ENDPOINT`: `http://127.0.0.1:<port>` (exporters
    /// append `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The URL of the traces endpoint itself, for `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    pub fn traces_endpoint(&self) -> String {
        format!("{}/v1/traces", self.endpoint())
    }

    /// Every span received so far, in the order of arrival.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.received().spans.clone()
    }

    /// How many export requests were accepted so far.
    pub fn requests(&self) -> usize {
        self.shared.received().requests
    }

    /// Waits until `done` holds for the spans received so far, at most `timeout`; returns the
    /// spans at that moment (check them: after a timeout `done` does not hold).
    pub fn wait_for(
        &self,
        mut done: impl FnMut(&[ReceivedSpan]) -> bool,
        timeout: Duration,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        let mut received = self.shared.received();
        loop {
            if done(&received.spans) {
                return received.spans.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return received.spans.clone();
            }
            received = match self.shared.changed.wait_timeout(received, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept; it then sees `stopping`.
        let _ = TcpStream::connect(self.address);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(shared);
        // Connection threads end when the client closes or the receiver is dropped.
        let _ = thread::Builder::new()
            .name("otlp-connection".into())
            .spawn(move || {
                let _ = serve_connection(stream, &shared);
            });
    }
}

/// An HTTP request as far as the receiver cares.
struct HttpRequest {
    method: String,
    path: String,
    content_type: String,
    content_encoding: Option<String>,
    close: bool,
    body: Vec<u8>,
}

fn serve_connection(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        // Wait for the next request, looking now and then whether to stop.
        reader.get_ref().set_read_timeout(Some(IDLE_POLL))?;
        loop {
            if shared.stopping.load(Ordering::SeqCst) {
                return writer.shutdown(Shutdown::Both);
            }
            match reader.fill_buf() {
                Ok([]) => return Ok(()),
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        reader.get_ref().set_read_timeout(Some(REQUEST_TIMEOUT))?;
        let request = match read_request(&mut reader) {
            Ok(request) => request,
            Err(e) => {
                respond(&mut writer, 400, "text/plain", e.to_string().as_bytes())?;
                return Ok(());
            }
        };
        let close = request.close;
        let (status, content_type, body) = handle(request, shared);
        respond(&mut writer, status, content_type, &body)?;
        if close {
            return Ok(());
        }
    }
}

fn handle(request: HttpRequest, shared: &Shared) -> (u16, &'static str, Vec<u8>) {
    if request.path != "/v1/traces" {
        return (404, "text/plain", b"only /v1/traces is served".to_vec());
    }
    if request.method != "POST" {
        return (405, "text/plain", b"POST only".to_vec());
    }
    if !request
        .content_type
        .to_ascii_lowercase()
        .starts_with("application/x-protobuf")
    {
        return (415, "text/plain", b"application/x-protobuf only".to_vec());
    }
    if request
        .content_encoding
        .as_deref()
        .is_some_and(|e| !e.eq_ignore_ascii_case("identity"))
    {
        return (415, "text/plain", b"uncompressed bodies only".to_vec());
    }
    let export = match ExportTraceServiceRequest::decode(request.body.as_slice()) {
        Ok(export) => export,
        Err(e) => return (400, "text/plain", e.to_string().into_bytes()),
    };
    let spans = flatten(export);
    {
        let mut received = shared.received();
        received.requests += 1;
        received.spans.extend(spans);
    }
    shared.changed.notify_all();
    (
        200,
        "application/x-protobuf",
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn flatten(export: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in export.resource_spans {
        let resource_attributes = attributes(
            resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default(),
        );
        let service_name = resource_attributes
            .get("service.name")
            .cloned()
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            let scope_name = scope_spans.scope.map(|s| s.name).unwrap_or_default();
            for span in scope_spans.spans {
                spans.push(ReceivedSpan {
                    service_name: service_name.clone(),
                    resource_attributes: resource_attributes.clone(),
                    scope_name: scope_name.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    attributes: attributes(span.attributes),
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                });
            }
        }
    }
    spans
}

fn attributes(attributes: Vec<KeyValue>) -> BTreeMap<String, String> {
    attributes
        .into_iter()
        .map(|kv| {
            (
                kv.key,
                kv.value.as_ref().map(any_value_string).unwrap_or_default(),
            )
        })
        .collect()
}

/// The string form of an attribute value: strings as they are, numbers and booleans as Rust
/// prints them, bytes in hex, arrays as `[a, b]`, maps as `{k: v, …}`.
pub fn any_value_string(value: &AnyValue) -> String {
    match &value.value {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        // An index into a profile's string table: no string to show.
        Some(any_value::Value::StringValueStrindex(index)) => format!("strindex:{index}"),
        Some(any_value::Value::ArrayValue(array)) => format!(
            "[{}]",
            array
                .values
                .iter()
                .map(any_value_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(any_value::Value::KvlistValue(list)) => format!(
            "{{{}}}",
            list.values
                .iter()
                .map(|kv| format!(
                    "{}: {}",
                    kv.key,
                    kv.value.as_ref().map(any_value_string).unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn read_request(reader: &mut impl BufRead) -> io::Result<HttpRequest> {
    let request_line = read_line(reader)?;
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("bad request line `{request_line}`")));
    };
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let mut request = HttpRequest {
        method: method.to_owned(),
        path,
        content_type: String::new(),
        content_encoding: None,
        close: version == "HTTP/1.0",
        body: Vec::new(),
    };
    let mut content_length = None;
    let mut chunked = false;
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("bad header line `{line}`")));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let length = value
                    .parse::<usize>()
                    .map_err(|_| invalid(format!("bad content-length `{value}`")))?;
                content_length = Some(length);
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "content-type" => request.content_type = value.to_owned(),
            "content-encoding" => request.content_encoding = Some(value.to_owned()),
            "connection" => request.close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    request.body = if chunked {
        read_chunked(reader)?
    } else {
        let length = content_length.unwrap_or(0);
        if length > MAX_BODY {
            return Err(invalid(format!("body of {length} bytes is too large")));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    };
    Ok(request)
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size `{line}`")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("chunked body too large".into()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if !read_line(reader)?.is_empty() {
            return Err(invalid("chunk not followed by CRLF".into()));
        }
    }
}

/// One line without its CRLF; an error at the end of the stream.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    let mut limited = reader.by_ref().take(64 * 1024);
    if limited.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-request",
        ));
    }
    while line.ends_with(['\r', '\n']) {
        line.pop();
    }
    Ok(line)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn respond(
    writer: &mut impl Write,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        415 => "Unsupported Media Type",
        _ => "Error",
    };
    write!(
        writer,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    writer.write_all(body)?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::Link};

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..KeyValue::default()
        }
    }

    fn export() -> ExportTraceServiceRequest {
        let span = |name: &str, id: u8, parent: Vec<u8>| Span {
            name: name.into(),
            trace_id: vec![0xab; 16],
            span_id: vec![id; 8],
            parent_span_id: parent,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![
                string("job_id", "j1"),
                KeyValue {
                    key: "attempt".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(2)),
                    }),
                    ..KeyValue::default()
                },
            ],
            links: vec![Link {
                trace_id: vec![0xcd; 16],
                span_id: vec![0x0e; 8],
                ..Link::default()
            }],
            ..Span::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string("service.name", "lexmesh-test")],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span("parent", 1, Vec::new()), span("child", 2, vec![1; 8])],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    /// Sends one request over `stream` and reads the status line and body of the answer.
    fn exchange(stream: &mut TcpStream, request: &[u8]) -> (String, Vec<u8>) {
        stream.write_all(request).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let status = read_line(&mut reader).unwrap();
        let mut length = 0;
        loop {
            let line = read_line(&mut reader).unwrap();
            if line.is_empty() {
                break;
            }
            if let Some(value) = line.strip_prefix("Content-Length: ") {
                length = value.parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (status, body)
    }

    fn post(body: &[u8], content_type: &str) -> Vec<u8> {
        let mut request = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    }

    #[test]
    fn receives_spans_over_keep_alive_connections() {
        let receiver = OtlpReceiver::start().unwrap();
        assert!(receiver.endpoint().starts_with("http://127.0.0.1:"));
        let mut stream = TcpStream::connect(receiver.address).unwrap();
        let body = export().encode_to_vec();

        let (status, answer) = exchange(&mut stream, &post(&body, "application/x-protobuf"));
        assert_eq!(status, "HTTP/1.1 200 OK");
        ExportTraceServiceResponse::decode(answer.as_slice()).unwrap();

        // The same connection again, chunked this time.
        let mut chunked = b"POST /v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf\r\n\
                            Transfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        let (first, second) = body.split_at(body.len() / 2);
        for chunk in [first, second] {
            chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend_from_slice(chunk);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let (status, _) = exchange(&mut stream, &chunked);
        assert_eq!(status, "HTTP/1.1 200 OK");

        let spans = receiver.wait_for(|spans| spans.len() == 4, Duration::from_secs(5));
        assert_eq!(spans.len(), 4);
        assert_eq!(receiver.requests(), 2);
        let parent = &spans[0];
        assert_eq!(parent.service_name, "lexmesh-test");
        assert_eq!(parent.name, "parent");
        assert_eq!(parent.trace_id, "ab".repeat(16));
        assert_eq!(parent.span_id, "01".repeat(8));
        assert_eq!(parent.parent_span_id, "");
        assert_eq!(parent.links, vec![("cd".repeat(16), "0e".repeat(8))]);
        assert_eq!(parent.attributes["job_id"], "j1");
        assert_eq!(parent.attributes["attempt"], "2");
        assert_eq!((parent.start_unix_nano, parent.end_unix_nano), (1, 2));
        assert_eq!(spans[1].parent_span_id, parent.span_id);
    }

    #[test]
    fn refuses_what_is_not_otlp_protobuf() {
        let receiver = OtlpReceiver::start().unwrap();
        let mut stream = TcpStream::connect(receiver.address).unwrap();
        let (status, _) = exchange(&mut stream, &post(b"{}", "application/json"));
        assert_eq!(status, "HTTP/1.1 415 Unsupported Media Type");
        let (status, _) = exchange(
            &mut stream,
            &post(b"\xff\xff\xff", "application/x-protobuf"),
        );
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        let (status, _) = exchange(&mut stream, b"GET /v1/metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        assert!(receiver.spans().is_empty());
        assert_eq!(receiver.requests(), 0);
    }

    #[test]
    fn wait_for_returns_at_the_timeout() {
        let receiver = OtlpReceiver::start().unwrap();
        let started = Instant::now();
        let spans = receiver.wait_for(|spans| !spans.is_empty(), Duration::from_millis(200));
        assert!(spans.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
