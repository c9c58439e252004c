//! Prometheus metrics of one node.
//!
//! Every node owns its own [`prometheus::Registry`], so several nodes can run in one process
//! (tests do) without sharing counters. Every name starts with `holdfast_`; every label has a
//! small, fixed set of values (transports, close codes folded into known ranges, error codes,
//! refusal reasons), so a hostile client cannot grow the series count.
//!
//! [`render`] is the `/metrics` handler body; [`router`] mounts it on any axum router, so the
//! endpoint can live on whichever listener the operator chooses (`metrics.public` keeps it on
//! the public one).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::node::Node;

/// How a session reaches the node: the value of every `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `GET /ws`.
    WebSocket,
    /// `GET /sse` with `POST /sse/send`.
    Sse,
    /// `GET /poll` with `POST /poll/send`.
    LongPoll,
}

impl Transport {
    /// The label value (and the `transport` field of log lines).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Sse => "sse",
            Transport::LongPoll => "longpoll",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `code` label of a close: the standard range (1000-1015) and Holdfast's own range
/// (4000-4099) as numbers, anything else a client may send as `other`.
pub fn close_code_label(code: u16) -> String {
    if (1000..=1015).contains(&code) || (4000..=4099).contains(&code) {
        code.to_string()
    } else {
        "other".to_owned()
    }
}

/// The metrics of one node.
pub struct Metrics {
    /// The registry `/metrics` renders; per node, never global.
    registry: Registry,
    /// Open sessions, by transport.
    pub connections_active: IntGaugeVec,
    /// Sessions opened since start, by transport.
    pub connections_opened: IntCounterVec,
    /// Sessions closed since start, by transport.
    pub connections_closed: IntCounterVec,
    /// Closes by transport and close code (see [`close_code_label`]).
    pub close_total: IntCounterVec,
    /// Upgrades refused before a session existed, by reason.
    pub upgrades_rejected: IntCounterVec,
    /// Rejected credentials, by transport and reason.
    pub auth_failures: IntCounterVec,
    /// 1 while the node drains.
    pub draining: IntGauge,
    /// Ping to pong round trip.
    pub heartbeat_rtt: Histogram,
    /// Frames written to sockets.
    pub messages_sent: IntCounter,
    /// Frames that could not be queued or written.
    pub messages_failed: IntCounter,
    /// Frames read from clients.
    pub messages_received: IntCounter,
    /// `error` frames sent, by code.
    pub errors_total: IntCounterVec,
    /// Bytes waiting in all outbound queues.
    pub send_buffer_bytes: IntGauge,
    /// Time from a room emission until its frame was written and flushed to a WebSocket (or
    /// entered a fallback session's outbox).
    pub fanout_lag: Histogram,
    /// Rooms with at least one member.
    pub rooms_active: IntGauge,
    /// Memberships (connected or away) across rooms.
    pub room_members: IntGauge,
    /// Reconnection tokens handed out.
    pub reconnection_tokens_issued: IntCounter,
    /// Members currently away and able to resume.
    pub reconnection_sessions_active: IntGauge,
    /// Successful resumes.
    pub reconnection_completions: IntCounter,
    /// Resumes from a position of another epoch (the stream was rolled back or restarted).
    pub reconnection_rollbacks: IntCounter,
    /// Refused resumes.
    pub reconnection_validation_failures: IntCounter,
    /// Room messages appended to replay buffers.
    pub reconnection_events_buffered: IntCounter,
    /// Room messages evicted from full replay buffers.
    pub reconnection_events_evicted: IntCounter,
    /// Publishes answered from the dedupe window instead of delivered again.
    pub dedupe_hits: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            connections_active: IntGaugeVec::new(
                Opts::new("holdfast_connections_active", "Open sessions, by transport"),
                &["transport"],
            )
            .expect("valid metric"),
            connections_opened: IntCounterVec::new(
                Opts::new(
                    "holdfast_connections_opened_total",
                    "Sessions opened, by transport",
                ),
                &["transport"],
            )
            .expect("valid metric"),
            connections_closed: IntCounterVec::new(
                Opts::new(
                    "holdfast_connections_closed_total",
                    "Sessions closed, by transport",
                ),
                &["transport"],
            )
            .expect("valid metric"),
            close_total: IntCounterVec::new(
                Opts::new(
                    "holdfast_close_total",
                    "Session closes by transport and close code",
                ),
                &["transport", "code"],
            )
            .expect("valid metric"),
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "holdfast_auth_failures_total",
                    "Rejected credentials, by transport and reason",
                ),
                &["transport", "reason"],
            )
            .expect("valid metric"),
            draining: IntGauge::new("holdfast_draining", "1 while the node drains")
                .expect("valid metric"),
            upgrades_rejected: IntCounterVec::new(
                Opts::new(
                    "holdfast_upgrades_rejected_total",
                    "Upgrade requests refused, by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            heartbeat_rtt: Histogram::with_opts(
                HistogramOpts::new(
                    "holdfast_heartbeat_rtt_seconds",
                    "WebSocket ping to pong round trip",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ]),
            )
            .expect("valid metric"),
            messages_sent: IntCounter::new(
                "holdfast_messages_sent_total",
                "Frames written to sockets",
            )
            .expect("valid metric"),
            messages_failed: IntCounter::new(
                "holdfast_messages_failed_total",
                "Frames that could not be queued or written",
            )
            .expect("valid metric"),
            messages_received: IntCounter::new(
                "holdfast_messages_received_total",
                "Frames read from clients",
            )
            .expect("valid metric"),
            errors_total: IntCounterVec::new(
                Opts::new("holdfast_errors_total", "Error frames sent, by code"),
                &["code"],
            )
            .expect("valid metric"),
            send_buffer_bytes: IntGauge::new(
                "holdfast_send_buffer_bytes",
                "Bytes waiting in outbound session queues",
            )
            .expect("valid metric"),
            fanout_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "holdfast_fanout_lag_seconds",
                    "Time from a room emission until its frame is flushed to the client connection",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0,
                ]),
            )
            .expect("valid metric"),
            rooms_active: IntGauge::new("holdfast_rooms_active", "Rooms with at least one member")
                .expect("valid metric"),
            room_members: IntGauge::new(
                "holdfast_room_members",
                "Room memberships, connected or away",
            )
            .expect("valid metric"),
            reconnection_tokens_issued: IntCounter::new(
                "holdfast_reconnection_tokens_issued_total",
                "Reconnection tokens handed out",
            )
            .expect("valid metric"),
            reconnection_sessions_active: IntGauge::new(
                "holdfast_reconnection_sessions_active",
                "Members away and able to resume",
            )
            .expect("valid metric"),
            reconnection_completions: IntCounter::new(
                "holdfast_reconnection_completions_total",
                "Successful resumes",
            )
            .expect("valid metric"),
            reconnection_rollbacks: IntCounter::new(
                "holdfast_reconnection_rollbacks_total",
                "Resumes from a position of another epoch (the stream was rolled back or restarted)",
            )
            .expect("valid metric"),
            reconnection_validation_failures: IntCounter::new(
                "holdfast_reconnection_validation_failures_total",
                "Refused resumes",
            )
            .expect("valid metric"),
            reconnection_events_buffered: IntCounter::new(
                "holdfast_reconnection_events_buffered_total",
                "Room messages appended to replay buffers",
            )
            .expect("valid metric"),
            reconnection_events_evicted: IntCounter::new(
                "holdfast_reconnection_events_evicted_total",
                "Room messages evicted from full replay buffers",
            )
            .expect("valid metric"),
            dedupe_hits: IntCounter::new(
                "holdfast_dedupe_hits_total",
                "Publishes answered from the dedupe window instead of delivered again",
            )
            .expect("valid metric"),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.connections_active.clone()),
            Box::new(m.connections_opened.clone()),
            Box::new(m.connections_closed.clone()),
            Box::new(m.close_total.clone()),
            Box::new(m.upgrades_rejected.clone()),
            Box::new(m.auth_failures.clone()),
            Box::new(m.draining.clone()),
            Box::new(crate::process::ProcessCollector::new()),
            Box::new(build_info()),
            Box::new(m.heartbeat_rtt.clone()),
            Box::new(m.messages_sent.clone()),
            Box::new(m.messages_failed.clone()),
            Box::new(m.messages_received.clone()),
            Box::new(m.errors_total.clone()),
            Box::new(m.send_buffer_bytes.clone()),
            Box::new(m.fanout_lag.clone()),
            Box::new(m.rooms_active.clone()),
            Box::new(m.room_members.clone()),
            Box::new(m.reconnection_tokens_issued.clone()),
            Box::new(m.reconnection_sessions_active.clone()),
            Box::new(m.reconnection_completions.clone()),
            Box::new(m.reconnection_rollbacks.clone()),
            Box::new(m.reconnection_validation_failures.clone()),
            Box::new(m.reconnection_events_buffered.clone()),
            Box::new(m.reconnection_events_evicted.clone()),
            Box::new(m.dedupe_hits.clone()),
        ];
        // Every transport's series exist from the start, so dashboards and alerts see zeros
        // rather than gaps.
        for t in [Transport::WebSocket, Transport::Sse, Transport::LongPoll] {
            let t = [t.as_str()];
            m.connections_active.with_label_values(&t);
            m.connections_opened.with_label_values(&t);
            m.connections_closed.with_label_values(&t);
        }
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }

    /// Registers another collector (a store's or broker's own metrics) in this node's registry.
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) -> prometheus::Result<()> {
        self.registry.register(c)
    }

    /// Counts a session that started on `transport`.
    pub fn session_opened(&self, transport: Transport) {
        let t = [transport.as_str()];
        self.connections_opened.with_label_values(&t).inc();
        self.connections_active.with_label_values(&t).inc();
    }

    /// Counts a session on `transport` that ended with close `code`.
    pub fn session_closed(&self, transport: Transport, code: u16) {
        let t = [transport.as_str()];
        self.close_total
            .with_label_values(&[transport.as_str(), &close_code_label(code)])
            .inc();
        self.connections_closed.with_label_values(&t).inc();
        self.connections_active.with_label_values(&t).dec();
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// `holdfast_build_info{version}`: always 1, carries the running version.
fn build_info() -> IntGaugeVec {
    let g = IntGaugeVec::new(
        Opts::new(
            "holdfast_build_info",
            "Always 1; the version label is the running build",
        ),
        &["version"],
    )
    .expect("valid metric");
    g.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    g
}

/// The `/metrics` response of `node`: the Prometheus text exposition format 0.0.4.
pub async fn render(State(node): State<Node>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        node.metrics().render(),
    )
}

/// A router serving `GET /metrics` for `node`, to merge into any listener's routes.
pub fn router<S: Clone + Send + Sync + 'static>(node: Node) -> Router<S> {
    Router::new()
        .route("/metrics", get(render))
        .with_state(node)
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
