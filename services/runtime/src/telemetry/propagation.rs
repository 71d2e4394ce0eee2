//! W3C trace context (`traceparent`, `tracestate`) in NATS headers and in the environment, so
//! that one trace follows a job across the mesh. Every helper is a silent no-op while tracing
//! is off (no valid span context).

use std::collections::HashMap;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};

use super::{TRACEPARENT, TRACESTATE};

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
