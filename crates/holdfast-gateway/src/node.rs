//! The node: everything one gateway process holds, shared by its listener, HTTP handlers,
//! sessions and sweeper.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use holdfast_protocol::CloseCode;
use rand::RngCore;

use crate::auth::Verifier;
use crate::broker::{Broker, NodeSink, NodeStatus};
use crate::config::Config;
use crate::drain::Drain;
use crate::limits::{CountLimit, Full, Slot};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::room::fanout::Mirror;
use crate::room::RoomService;
use crate::store::{MemoryRooms, RoomBackend, StoreContext};

/// A cheap, cloneable reference to one node.
#[derive(Clone)]
pub struct Node {
    /// Shared by every task of the node; an `Arc` because sessions outlive any one handler.
    pub(crate) inner: Arc<NodeInner>,
}

/// The node's state.
pub struct NodeInner {
    /// The node's id, reported in `welcome` and used by the broker.
    pub id: Arc<str>,
    /// Immutable after start.
    pub config: Arc<Config>,
    /// Token checks with the node's keys.
    pub verifier: Verifier,
    /// The application's join and connect hooks.
    pub hooks: crate::hooks::Hooks,
    /// This node's tracer (off unless `config.tracing` names an endpoint).
    pub telemetry: crate::telemetry::Telemetry,
    /// This node's metrics (never process-global).
    pub metrics: Arc<Metrics>,
    /// user → session.
    pub registry: Registry,
    /// Room operations, over the room backend (this process, or a cluster's store).
    pub store: RoomService,
    /// Shutdown state and the tracker of every session task.
    pub drain: Drain,
    /// The cross-node seam.
    pub broker: Arc<dyn Broker>,
    /// Open sessions, bounded by `limits.max_connections` and, per peer address,
    /// `limits.max_connections_per_ip`.
    sessions: Arc<CountLimit>,
    /// HTTP connections that are not (yet) a session, bounded by
    /// `limits.max_pending_connections` and `limits.max_pending_per_ip`.
    pub(crate) pending: Arc<CountLimit>,
    /// SSE streams and long-polls held open, bounded by `limits.max_connections` and
    /// `limits.max_streams_per_ip`.
    streams: Arc<CountLimit>,
    /// Inbound frame and `send` budgets per user, shared by the user's sessions.
    pub(crate) budgets: crate::session::UserBudgets,
    /// The WebSocket sessions' heartbeat and expiry deadlines.
    pub(crate) timers: Arc<crate::timers::Timers>,
    /// The plain WebSocket sessions' socket readiness (`None` if no epoll instance could be
    /// made: the sockets then stay with tokio's driver).
    pub(crate) reactor: Option<Arc<crate::reactor::Reactor>>,
    /// Sessions on the SSE and long-polling transports.
    pub fallback: crate::fallback::FallbackSessions,
    /// Rate-limited auth-failure log lines.
    pub auth_log: crate::logs::AuthFailureLog,
    /// Source of session ids.
    next_session: AtomicU64,
    /// Random per start of the node, so session ids are not reused when a node restarts with
    /// the same `server.node_id` (a kick or a room membership names a session by its id).
    /// Decimal digits, so a session id still reads `<node_id>-<digits>...`.
    incarnation: String,
}

/// Why a new session was refused before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitError {
    /// `limits.max_connections` reached.
    NodeFull,
    /// `limits.max_connections_per_ip` reached for this address.
    IpFull,
}

impl From<Full> for AdmitError {
    fn from(f: Full) -> AdmitError {
        match f {
            Full::Node => AdmitError::NodeFull,
            Full::Ip => AdmitError::IpFull,
        }
    }
}

/// A session slot; releases its counts when dropped.
pub struct Admission {
    slot: Slot,
}

impl Admission {
    /// The client address the slot was taken for.
    pub(crate) fn ip(&self) -> IpAddr {
        self.slot.ip()
    }
}

impl Node {
    /// Builds a node and attaches it to `broker`. Without an external `store`, rooms live in
    /// this process.
    pub fn new(
        config: Config,
        broker: Arc<dyn Broker>,
        store: Option<Arc<dyn RoomBackend>>,
    ) -> Node {
        let id: Arc<str> = if config.server.node_id.is_empty() {
            let mut b = [0u8; 4];
            rand::rng().fill_bytes(&mut b);
            format!("node-{}", hex::encode(b)).into()
        } else {
            config.server.node_id.as_str().into()
        };
        // Digits only: proxies route fallback sessions by `<node_id>-<digit>`.
        let incarnation = rand::random::<u32>().to_string();
        let config = Arc::new(config);
        let telemetry = crate::telemetry::Telemetry::new(&config.tracing, &id);
        let metrics = Arc::new(Metrics::new());
        let drain = Drain::new();
        let backend: Arc<dyn RoomBackend> = store.unwrap_or_else(|| Arc::new(MemoryRooms::new()));
        let rooms = RoomService::new(
            backend,
            StoreContext {
                node_id: id.clone(),
                lease: format!("{id}-{incarnation}").into(),
                config: config.clone(),
                metrics: metrics.clone(),
                shutdown: drain.token().clone(),
                mirror: Arc::new(Mirror::new(telemetry.clone(), id.clone())),
            },
        );
        let auth_log = crate::logs::AuthFailureLog::new(config.log.auth_failures_per_sec);
        let inner = Arc::new(NodeInner {
            id,
            verifier: Verifier::from_config(&config.auth),
            hooks: crate::hooks::Hooks::new(&config.hooks, telemetry.clone()),
            telemetry,
            store: rooms,
            sessions: CountLimit::new(
                config.limits.max_connections,
                config.limits.max_connections_per_ip,
            ),
            pending: CountLimit::new(
                config.limits.max_pending_connections,
                config.limits.max_pending_per_ip,
            ),
            streams: CountLimit::new(
                config.limits.max_connections,
                config.limits.max_streams_per_ip,
            ),
            budgets: crate::session::UserBudgets::new(&config.limits),
            timers: Arc::new(crate::timers::Timers::new()),
            reactor: crate::reactor::Reactor::shared(),
            config,
            metrics,
            registry: Registry::default(),
            drain,
            broker: broker.clone(),
            fallback: Default::default(),
            auth_log,
            next_session: AtomicU64::new(1),
            incarnation,
        });
        let weak = Arc::downgrade(&inner);
        broker.attach(weak);
        Node { inner }
    }

    /// The node's tracer.
    pub fn telemetry(&self) -> &crate::telemetry::Telemetry {
        &self.inner.telemetry
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Whether the node is draining.
    pub fn is_draining(&self) -> bool {
        self.inner.drain.is_draining()
    }

    /// Number of open sessions (WebSocket, SSE and long-polling).
    pub fn open_sessions(&self) -> usize {
        self.inner.sessions.total()
    }

    /// Number of HTTP connections that are not (yet) a session.
    pub fn pending_connections(&self) -> usize {
        self.inner.pending.total()
    }

    /// Number of SSE streams and long-polls held open.
    pub fn open_streams(&self) -> usize {
        self.inner.streams.total()
    }

    /// Takes a session slot for a peer, or says which limit is reached.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Admission, AdmitError> {
        let slot = self.inner.sessions.try_acquire(ip)?;
        Ok(Admission { slot })
    }

    /// Takes a slot for an SSE stream or a long-poll, or says which limit is reached.
    pub(crate) fn admit_stream(&self, ip: IpAddr) -> Result<Slot, AdmitError> {
        Ok(self.inner.streams.try_acquire(ip)?)
    }

    /// A fresh session id, unique in the cluster and across restarts of this node.
    pub(crate) fn next_session_id(&self) -> Arc<str> {
        let n = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        format!("{}-{}-{n}", self.inner.id, self.inner.incarnation).into()
    }
}

impl NodeSink for NodeInner {
    fn node_id(&self) -> &str {
        &self.id
    }

    fn close_user(&self, user: &str, session: Option<&str>, code: CloseCode) -> bool {
        let mut closed = false;
        for s in self.registry.all(user) {
            if session.is_none_or(|id| *s.id == *id) {
                s.close(code);
                closed = true;
            }
        }
        closed
    }

    fn session_of(&self, user: &str) -> Option<Arc<str>> {
        self.registry.get(user).map(|s| s.id.clone())
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            id: self.id.to_string(),
            sessions: self.sessions.total() as u64,
            rooms: self.store.mirror().len() as u64,
            draining: self.drain.is_draining(),
            updated_ms: crate::auth::unix_now_ms(),
        }
    }

    fn sessions(&self) -> Vec<(Arc<str>, Arc<str>)> {
        self.registry
            .sessions()
            .into_iter()
            .map(|s| (s.user.clone(), s.id.clone()))
            .collect()
    }

    fn deliver_direct(&self, user: &str, text: Utf8Bytes) -> bool {
        self.registry.deliver(user, &text)
    }
}
