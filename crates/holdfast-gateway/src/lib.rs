//! The Holdfast gateway library.
//!
//! # Layout
//! - [`config`]: every tunable and its default; validation names the offending key.
//! - [`auth`]: JWT verification with secrets, public keys and a JWKS (and minting for
//!   development and tests).
//! - [`permissions`]: who may join a room, publish, or message a user; every decision in one
//!   place.
//! - [`hooks`]: the bounded calls to the application's join and connect hooks.
//! - [`outbound`]: the bounded HTTP client those calls (and JWKS fetches) use.
//! - [`node`]: one gateway node: the shared state of its listener, sessions and sweeper.
//! - [`registry`]: user → live session, single-socket enforcement, and the session handle with
//!   its bounded outbound queue.
//! - [`room`]: members, authority, the ordered per-room stream, replay, presence and local
//!   fan-out; the room rules are written once there, in [`room::rules`].
//! - [`store`]: the room store contract, and the in-process backend.
//! - [`tokens`]: reconnection tokens (only their hashes are stored).
//! - [`dedupe`]: the per-member publish dedupe window.
//! - [`session`]: the task that owns one WebSocket from authentication to close.
//! - [`broker`]: the cross-node seam, with the embedded in-memory broker.
//! - [`fallback`]: the SSE and long-polling transports, driving the same session core.
//! - [`echo`]: a WebSocket echo server on the `/ws` layer, for conformance tests and fuzzing.
//! - [`drain`]: the explicit shutdown: readiness off, notice, 1001, bounded wait.
//! - [`limits`]: admission: pending connections, sessions and streams per address, origin
//!   and body checks.
//! - [`metrics`]: the node's Prometheus metrics.
//! - [`http`]: the endpoints and the accept loop.
//! - [`api`]: the internal listener: the server API for the application's backend, and
//!   `/metrics`.
//!
//! Entry points take their listener and their shutdown from the caller, so the binary passes
//! OS signals and a real port while tests pass `127.0.0.1:0`; there is no process-global
//! state, so several nodes can run in one process.

mod admin;
pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod dedupe;
mod demo;
pub mod drain;
pub mod echo;
pub mod fallback;
pub mod hooks;
pub mod http;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod outbound;
pub mod permissions;
mod process;
pub mod proxy;
pub mod reactor;
pub mod registry;
pub mod room;
mod session;
pub mod store;
pub mod telemetry;
pub mod timers;
pub mod tls;
pub mod tokens;
mod upgrade;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use broker::{Broker, MemoryBroker};
pub use config::{Config, ConfigError};
pub use drain::DrainOutcome;
pub use node::Node;

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No verification key reached the library: `auth.hmac_secret`, `auth.keys` and
    /// `auth.jwks_url` are all empty (the binary sets a random secret in development mode); the
    /// library never runs with a guessable secret.
    #[error("no verification key: auth.hmac_secret, auth.keys and auth.jwks_url are empty")]
    NoSecret,
    /// The listener's address could not be read.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    /// The TLS certificate or key could not be loaded.
    #[error("server.tls: {0}")]
    Tls(#[from] tls::TlsError),
}

/// The listeners of a node, bound by the caller (the binary from `server.listen` and
/// `api.listen`, tests on `127.0.0.1:0`).
pub struct Listeners {
    /// Clients: WebSocket, fallback transports, health.
    pub public: TcpListener,
    /// The internal listener (server API, `/metrics`); `None` serves no API.
    pub api: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(public: TcpListener) -> Listeners {
        Listeners { public, api: None }
    }
}

/// A running gateway node.
pub struct Gateway {
    node: Node,
    addr: SocketAddr,
    api_addr: Option<SocketAddr>,
    accept: JoinHandle<()>,
    api: Option<JoinHandle<()>>,
    sweeper: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    tls: Option<Arc<tls::TlsFiles>>,
}

impl Gateway {
    /// Starts a node on `listener` with the embedded in-memory broker.
    pub async fn start(
        config: Config,
        listener: impl Into<Listeners>,
    ) -> Result<Gateway, StartError> {
        Gateway::start_with_broker(config, listener, MemoryBroker::new()).await
    }

    /// Starts a node on `listener` attached to `broker` (share one [`MemoryBroker`] between
    /// several nodes to run a cluster in one process).
    pub async fn start_with_broker(
        config: Config,
        listener: impl Into<Listeners>,
        broker: Arc<dyn Broker>,
    ) -> Result<Gateway, StartError> {
        Gateway::start_with(config, listener, broker, None).await
    }

    /// Starts a node on `listener` with `broker` and, when given, an external room store shared
    /// by a cluster (as `holdfast-redis` provides).
    pub async fn start_with(
        config: Config,
        listeners: impl Into<Listeners>,
        broker: Arc<dyn Broker>,
        store: Option<Arc<dyn store::RoomBackend>>,
    ) -> Result<Gateway, StartError> {
        config.validate()?;
        if !config.auth.has_keys() {
            return Err(StartError::NoSecret);
        }
        let Listeners { public, api } = listeners.into();
        let addr = public.local_addr()?;
        let api_addr = api.as_ref().map(TcpListener::local_addr).transpose()?;
        if api.is_some() && config.api.keys.is_empty() {
            tracing::warn!("api.keys is empty: the server API refuses every request");
        }
        let tls = tls::TlsFiles::from_config(&config.server.tls)?;
        let node = Node::new(config, broker, store);
        if let Some(files) = &tls {
            let every = node.config().server.tls.reload_interval_secs;
            if every > 0 {
                let stop = node.inner.drain.token().clone();
                tokio::spawn(files.clone().watch(Duration::from_secs(every), stop));
            }
        }
        let accept = tokio::spawn(http::accept_loop(public, node.clone(), tls.clone()));
        let api = api.map(|l| tokio::spawn(api::serve(l, node.clone())));
        let sweeper = tokio::spawn(sweep_loop(node.clone()));
        tokio::spawn(presence_loop(node.clone()));
        let heartbeat = tokio::spawn(api::nodes::heartbeat_loop(node.clone()));
        Ok(Gateway {
            node,
            addr,
            api_addr,
            accept,
            api,
            sweeper,
            heartbeat,
            tls,
        })
    }

    /// The address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the internal listener (server API, `/metrics`), when it has one.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Reads the TLS certificate and key again (the binary does on SIGHUP). Without TLS there
    /// is nothing to do.
    pub fn reload_tls(&self) -> Result<(), tls::TlsError> {
        match &self.tls {
            Some(files) => files.reload(),
            None => Ok(()),
        }
    }

    /// Drains the node: readiness off and upgrades refused, then (after
    /// `server.drain_delay_ms`, open sessions untouched meanwhile) `server_shutdown` and 1001 to
    /// every session, then waits up to `server.drain_timeout_secs` for them to end.
    pub async fn shutdown(self) -> DrainOutcome {
        let grace = Duration::from_secs(self.node.config().server.drain_timeout_secs);
        self.node.metrics().draining.set(1);
        let delay = Duration::from_millis(self.node.config().server.drain_delay_ms);
        if !delay.is_zero() {
            self.node.inner.drain.mark_unready();
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "unready; sessions stay open for the drain delay"
            );
            tokio::time::sleep(delay).await;
        }
        let inner = &self.node.inner;
        let outcome = inner.drain.run(grace, || inner.registry.wake_all()).await;
        let _ = self.accept.await;
        if let Some(api) = self.api {
            let _ = api.await;
        }
        self.sweeper.abort();
        self.heartbeat.abort();
        let inner = &self.node.inner;
        inner.broker.forget_node(&inner.id).await;
        inner.telemetry.shutdown(Duration::from_secs(5)).await;
        outcome
    }
}

/// Runs a node until `shutdown` resolves, then drains it. This is what `holdfast serve` does.
pub async fn serve(
    config: Config,
    listener: impl Into<Listeners>,
    shutdown: impl Future<Output = ()>,
) -> Result<DrainOutcome, StartError> {
    serve_with(config, listener, MemoryBroker::new(), None, shutdown).await
}

/// Like [`serve`], with a given broker and room store (a cluster's).
pub async fn serve_with(
    config: Config,
    listener: impl Into<Listeners>,
    broker: Arc<dyn Broker>,
    store: Option<Arc<dyn store::RoomBackend>>,
    shutdown: impl Future<Output = ()>,
) -> Result<DrainOutcome, StartError> {
    serve_with_reload(
        config,
        listener,
        broker,
        store,
        shutdown,
        Arc::new(Notify::new()),
    )
    .await
}

/// Like [`serve_with`]; each notification of `reload` reads the TLS files again (the binary
/// notifies it on SIGHUP).
pub async fn serve_with_reload(
    config: Config,
    listener: impl Into<Listeners>,
    broker: Arc<dyn Broker>,
    store: Option<Arc<dyn store::RoomBackend>>,
    shutdown: impl Future<Output = ()>,
    reload: Arc<Notify>,
) -> Result<DrainOutcome, StartError> {
    let gateway = Gateway::start_with(config, listener, broker, store).await?;
    let tls = gateway.tls.is_some();
    tracing::info!(addr = %gateway.local_addr(), node = gateway.node().id(), tls, "holdfast listening");
    if let Some(api) = gateway.api_addr() {
        tracing::info!(addr = %api, "internal listener (server API, /metrics)");
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = reload.notified() => {
                if let Err(e) = gateway.reload_tls() {
                    tracing::warn!(error = %e, "TLS reload failed; keeping the previous certificate");
                }
            }
        }
    }
    tracing::info!("draining");
    let outcome = gateway.shutdown().await;
    tracing::info!(?outcome, "drained");
    Ok(outcome)
}

/// Sends the coalesced presence changes of every room on a timer, until the drain starts.
async fn presence_loop(node: Node) {
    let every = Duration::from_millis(node.config().rooms.presence_interval_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = node.inner.drain.token().cancelled() => break,
            _ = tick.tick() => node.inner.store.mirror().flush_presence(),
        }
    }
}

/// Expires away members and frees empty rooms on a timer, until the drain starts.
async fn sweep_loop(node: Node) {
    let every = Duration::from_millis(node.config().reconnection.sweep_interval_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = node.inner.drain.token().cancelled() => break,
            _ = tick.tick() => {
                node.inner.auth_log.flush();
                node.inner.store.sweep(auth::unix_now_ms()).await;
            }
        }
    }
}
