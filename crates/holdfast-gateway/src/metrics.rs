//! Prometheus metrics of one node.
//!
//! Every node owns its own [`prometheus::Registry`], so several nodes can run in one process
//! (tests do) without sharing counters. Names follow the seeds' observability checklist.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The metrics of one node.
pub struct Metrics {
    /// The registry `/metrics` renders; per node, never global.
    registry: Registry,
    /// Open WebSocket sessions.
    pub connections_active: IntGauge,
    /// Sessions opened (upgraded) since start.
    pub connections_opened: IntCounter,
    /// Sessions closed since start.
    pub connections_closed: IntCounter,
    /// Closes by close code.
    pub close_total: IntCounterVec,
    /// Upgrades refused before a session existed, by reason.
    pub upgrades_rejected: IntCounterVec,
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
    /// Time from a room emission to its write on each socket.
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
            connections_active: IntGauge::new("ws_connections_active", "Open WebSocket sessions")
                .expect("valid metric"),
            connections_opened: IntCounter::new(
                "ws_connections_opened_total",
                "WebSocket sessions opened",
            )
            .expect("valid metric"),
            connections_closed: IntCounter::new(
                "ws_connections_closed_total",
                "WebSocket sessions closed",
            )
            .expect("valid metric"),
            close_total: IntCounterVec::new(
                Opts::new("ws_close_total", "Session closes by close code"),
                &["code"],
            )
            .expect("valid metric"),
            upgrades_rejected: IntCounterVec::new(
                Opts::new(
                    "ws_upgrades_rejected_total",
                    "Upgrade requests refused, by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            heartbeat_rtt: Histogram::with_opts(
                HistogramOpts::new(
                    "ws_heartbeat_rtt_seconds",
                    "WebSocket ping to pong round trip",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ]),
            )
            .expect("valid metric"),
            messages_sent: IntCounter::new("ws_messages_sent_total", "Frames written to sockets")
                .expect("valid metric"),
            messages_failed: IntCounter::new(
                "ws_messages_failed_total",
                "Frames that could not be queued or written",
            )
            .expect("valid metric"),
            messages_received: IntCounter::new(
                "ws_messages_received_total",
                "Frames read from clients",
            )
            .expect("valid metric"),
            errors_total: IntCounterVec::new(
                Opts::new("ws_errors_total", "Error frames sent, by code"),
                &["code"],
            )
            .expect("valid metric"),
            send_buffer_bytes: IntGauge::new(
                "ws_send_buffer_bytes",
                "Bytes waiting in outbound session queues",
            )
            .expect("valid metric"),
            fanout_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "ws_fanout_lag_seconds",
                    "Time from a room emission to its socket write",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0,
                ]),
            )
            .expect("valid metric"),
            rooms_active: IntGauge::new("rooms_active", "Rooms with at least one member")
                .expect("valid metric"),
            room_members: IntGauge::new("room_members", "Room memberships, connected or away")
                .expect("valid metric"),
            reconnection_tokens_issued: IntCounter::new(
                "reconnection_tokens_issued_total",
                "Reconnection tokens handed out",
            )
            .expect("valid metric"),
            reconnection_sessions_active: IntGauge::new(
                "reconnection_sessions_active",
                "Members away and able to resume",
            )
            .expect("valid metric"),
            reconnection_completions: IntCounter::new(
                "reconnection_completions_total",
                "Successful resumes",
            )
            .expect("valid metric"),
            reconnection_validation_failures: IntCounter::new(
                "reconnection_validation_failures_total",
                "Refused resumes",
            )
            .expect("valid metric"),
            reconnection_events_buffered: IntCounter::new(
                "reconnection_events_buffered_total",
                "Room messages appended to replay buffers",
            )
            .expect("valid metric"),
            reconnection_events_evicted: IntCounter::new(
                "reconnection_events_evicted_total",
                "Room messages evicted from full replay buffers",
            )
            .expect("valid metric"),
            dedupe_hits: IntCounter::new(
                "dedupe_hits_total",
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
            Box::new(m.reconnection_validation_failures.clone()),
            Box::new(m.reconnection_events_buffered.clone()),
            Box::new(m.reconnection_events_evicted.clone()),
            Box::new(m.dedupe_hits.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }

    /// Registers another collector (a store's or broker's own metrics) in this node's registry.
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) -> prometheus::Result<()> {
        self.registry.register(c)
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
