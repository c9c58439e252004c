//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) in batches.
//!
//! Each node owns its tracer provider (never process-global, so several nodes in one process
//! report under their own names). Tracing is off unless [`TracingConfig::endpoint`] is set; the
//! `holdfast` binary fills it from the standard `OTEL_*` variables. Off, [`Telemetry::tracer`]
//! is `None` and every instrumented path costs one branch.
//!
//! Export never blocks the node: finished spans go into a bounded queue (dropped when full),
//! a background thread sends them in batches, each request bounded by a timeout. The HTTP
//! request itself runs on the node's tokio runtime through the node's outbound client, so no
//! second runtime or TLS stack is started.
//!
//! Trace context travels as W3C `traceparent` strings: the upgrade request's header, a
//! `publish` frame's field or the server API's, the `event` frames a publish emits (so every
//! receiving node, through any backend, continues the trace), and the header of hook calls.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer};
use opentelemetry_sdk::Resource;

/// Longest attribute value recorded from client input (room names, routes); longer values
/// are cut at a character boundary.
pub const MAX_ATTRIBUTE_LEN: usize = 128;

/// How spans are sampled (`OTEL_TRACES_SAMPLER`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum TraceSampler {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio` with its ratio.
    Ratio(f64),
    /// `parentbased_always_on` (the default): a span follows its parent's decision.
    #[default]
    ParentAlwaysOn,
    /// `parentbased_always_off`.
    ParentAlwaysOff,
    /// `parentbased_traceidratio` with its ratio.
    ParentRatio(f64),
}

impl TraceSampler {
    fn sampler(self) -> Sampler {
        match self {
            TraceSampler::AlwaysOn => Sampler::AlwaysOn,
            TraceSampler::AlwaysOff => Sampler::AlwaysOff,
            TraceSampler::Ratio(r) => Sampler::TraceIdRatioBased(r),
            TraceSampler::ParentAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            TraceSampler::ParentAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            TraceSampler::ParentRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

/// Where and how traces are exported. Not part of the TOML file: the binary builds it from
/// the `OTEL_*` variables (docs/OPERATIONS.md, "Tracing").
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The full OTLP/HTTP traces URL (e.g. `http://127.0.0.1:4318/v1/traces`); empty turns
    /// tracing off.
    pub endpoint: String,
    /// `service.name` of the resource.
    pub service_name: String,
    /// The sampler.
    pub sampler: TraceSampler,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Vec<(String, String)>,
    /// Time limit of one export request.
    pub timeout_ms: u64,
    /// Finished spans waiting for export; more are dropped.
    pub max_queue_size: usize,
    /// Spans per export request.
    pub max_export_batch_size: usize,
    /// How long a batch waits to fill.
    pub scheduled_delay_ms: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            endpoint: String::new(),
            service_name: "holdfast".into(),
            sampler: TraceSampler::default(),
            headers: Vec::new(),
            timeout_ms: 10_000,
            max_queue_size: 2048,
            max_export_batch_size: 512,
            scheduled_delay_ms: 5000,
        }
    }
}

impl TracingConfig {
    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        !self.endpoint.is_empty()
    }
}

/// One node's tracer, or nothing when tracing is off. Cheap to clone.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

/// Runs the exporter's requests on the node's runtime with the node's outbound client.
struct RuntimeClient {
    client: crate::outbound::HttpClient,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl std::fmt::Debug for RuntimeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeClient")
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RuntimeClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        // The request runs on the node's runtime; this is the export thread (never a runtime
        // thread), which waits for the answer, bounded even when that runtime is stopped or
        // busy dropping the node.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let headers: Vec<(String, String)> = parts
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
                .collect();
            let reply = client
                .post(&parts.uri.to_string(), &headers, body, timeout, 64 << 10)
                .await;
            let _ = tx.send(reply);
        });
        let reply = rx
            .recv_timeout(timeout + Duration::from_secs(1))
            .map_err(|_| "the export request did not complete")?;
        let reply = reply.map_err(|e| e.to_string())?;
        let resp = http::Response::builder()
            .status(reply.status)
            .body(reply.body)?;
        Ok(resp)
    }
}

impl Telemetry {
    /// The tracer of `node_id` for `config`; off when no endpoint is set, when the exporter
    /// cannot be built (logged) or outside a tokio runtime.
    pub fn new(config: &TracingConfig, node_id: &str) -> Telemetry {
        if !config.enabled() {
            return Telemetry::default();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Telemetry::default();
        };
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let client = RuntimeClient {
            client: crate::outbound::HttpClient::new(),
            runtime,
            timeout,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.endpoint.clone())
            .with_timeout(timeout)
            .with_headers(config.headers.iter().cloned().collect())
            .with_http_client(client)
            .build();
        let exporter = match exporter {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build the OTLP exporter; tracing is off");
                return Telemetry::default();
            }
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(config.max_queue_size.max(1))
            .with_max_export_batch_size(
                config
                    .max_export_batch_size
                    .clamp(1, config.max_queue_size.max(1)),
            )
            .with_scheduled_delay(Duration::from_millis(config.scheduled_delay_ms))
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attributes([
                KeyValue::new("service.instance.id", node_id.to_owned()),
                KeyValue::new("holdfast.node_id", node_id.to_owned()),
            ])
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(config.sampler.sampler())
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("holdfast");
        Telemetry {
            inner: Some(Arc::new(Inner { tracer, provider })),
        }
    }

    /// The tracer, when tracing is on.
    #[inline]
    pub fn tracer(&self) -> Option<&SdkTracer> {
        self.inner.as_ref().map(|i| &i.tracer)
    }

    /// Whether tracing is on.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Exports what is queued (bounded by `within`) and stops the export thread.
    pub async fn shutdown(&self, within: Duration) {
        let Some(inner) = self.inner.clone() else {
            return;
        };
        // Off the runtime's threads: the export requests need them to run meanwhile.
        let _ =
            tokio::task::spawn_blocking(move || inner.provider.shutdown_with_timeout(within)).await;
    }

    /// Starts a span named `name` of `kind` under `parent`, returning the context holding it.
    pub fn start(
        &self,
        name: &'static str,
        kind: SpanKind,
        parent: &Context,
        attributes: Vec<KeyValue>,
    ) -> Option<Context> {
        let tracer = self.tracer()?;
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(tracer, parent);
        Some(parent.with_span(span))
    }
}

/// The `connection` span of a new session on `transport` from `peer`, under `traceparent`
/// (the WebSocket upgrade request's header); `None` when tracing is off.
pub(crate) fn connection_span(
    node: &crate::node::Node,
    traceparent: Option<&str>,
    peer: std::net::IpAddr,
    transport: crate::metrics::Transport,
) -> Option<Context> {
    if !node.telemetry().enabled() {
        return None;
    }
    let parent = parent_from(traceparent, &Context::new());
    let attributes = vec![
        KeyValue::new("holdfast.node_id", node.id().to_owned()),
        KeyValue::new("network.peer.address", peer.to_string()),
        KeyValue::new("holdfast.transport", transport.as_str()),
    ];
    node.telemetry()
        .start("connection", SpanKind::Server, &parent, attributes)
}

/// Ends a session's `connection` span once the session started, recording who it is, and
/// returns what the session keeps of it: its id, as the parent of the session's operations.
/// (A span held open for the connection's life would reach the collector only at its close
/// and hold memory per connection.)
pub(crate) fn connection_started(cx: Context, session_id: &str, user: &str) -> Context {
    let span = cx.span();
    span.set_attributes([
        KeyValue::new("holdfast.session_id", session_id.to_owned()),
        KeyValue::new("enduser.id", bounded(user)),
    ]);
    end(&cx, "ok", false);
    Context::new().with_remote_span_context(span.span_context().clone())
}

/// A value recorded from client input, cut to [`MAX_ATTRIBUTE_LEN`] bytes.
pub fn bounded(s: &str) -> String {
    if s.len() <= MAX_ATTRIBUTE_LEN {
        return s.to_owned();
    }
    let mut end = MAX_ATTRIBUTE_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The remote span context of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), when
/// it is one (an all-zero id or another version's layout is not).
pub fn parse_traceparent(tp: &str) -> Option<SpanContext> {
    let tp = tp.trim();
    let mut parts = tp.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    if flags.len() != 2 || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(version) || !hex(trace) || !hex(span) || !hex(flags) {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let cx = SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    cx.is_valid().then_some(cx)
}

/// The `traceparent` of a span context.
pub fn traceparent(cx: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        cx.trace_id(),
        cx.span_id(),
        cx.trace_flags().to_u8()
    )
}

/// The context to start a span under: the remote parent `tp` when it parses, else `base`.
pub fn parent_from(tp: Option<&str>, base: &Context) -> Context {
    match tp.and_then(parse_traceparent) {
        Some(sc) => base.with_remote_span_context(sc),
        None => base.clone(),
    }
}

/// The `traceparent` carried by a serialised `event` frame, without parsing the frame: it is
/// the frame's last field, so only the frame's tail is looked at (a `traceparent` inside the
/// published data is not taken for it).
pub fn traceparent_in(frame: &str) -> Option<&str> {
    const KEY: &str = "\"traceparent\":\"";
    let body = frame.strip_suffix("\"}")?;
    let mut start = body.len().saturating_sub(KEY.len() + 128);
    while !body.is_char_boundary(start) {
        start += 1;
    }
    let (_, tp) = body[start..].rsplit_once(KEY)?;
    (!tp.contains('"')).then_some(tp)
}

/// The `traceparent` of the span in `cx`, when it is sampled (only then is it exported, so
/// only then is it worth continuing elsewhere).
pub fn traceparent_of(cx: &Context) -> Option<String> {
    let span = cx.span();
    let sc = span.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| traceparent(sc))
}

/// Ends the span in `cx` with `outcome` (`ok`, an error code, a hook's decision) as its
/// `holdfast.outcome`; `failed` marks the span's status as an error.
pub fn end(cx: &Context, outcome: impl Into<Cow<'static, str>>, failed: bool) {
    let span = cx.span();
    let outcome = outcome.into();
    if failed {
        span.set_status(opentelemetry::trace::Status::error(outcome.clone()));
    }
    span.set_attribute(KeyValue::new("holdfast.outcome", outcome));
    span.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let sc = parse_traceparent(tp).expect("valid");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(traceparent(&sc), tp);
        for bad in [
            "",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn finds_the_traceparent_of_a_frame() {
        let f = r#"{"type":"event","room":"r","ts":1,"traceparent":"00-ab-cd-01"}"#;
        assert_eq!(traceparent_in(f), Some("00-ab-cd-01"));
        assert_eq!(traceparent_in(r#"{"type":"event"}"#), None);
        let inside = r#"{"type":"event","data":{"traceparent":"00-ab-cd-01"}}"#;
        assert_eq!(traceparent_in(inside), None);
    }

    #[test]
    fn bounded_cuts_at_a_char_boundary() {
        let long = "é".repeat(100);
        let b = bounded(&long);
        assert!(b.len() <= MAX_ATTRIBUTE_LEN && long.starts_with(&b));
        assert_eq!(bounded("lobby"), "lobby");
    }

    #[test]
    fn off_without_an_endpoint() {
        let t = Telemetry::new(&TracingConfig::default(), "n");
        assert!(!t.enabled());
    }
}
