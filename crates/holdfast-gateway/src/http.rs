//! The HTTP surface of a node and its accept loop.
//!
//! Endpoints:
//! Before any request is read, an accepted connection takes a pending slot of its address
//! (`limits.max_pending_per_ip`, `limits.max_pending_connections`; 429/503 and closed at once
//! beyond), and each request has `limits.handshake_timeout_ms` to send its headers; see
//! [`crate::limits`].
//!
//! - `GET /ws`: the WebSocket endpoint. The token may come as `?token=` or
//!   `Authorization: Bearer`; without one, the first frame must be `auth`. Refusals before the
//!   upgrade: 503 while draining or when `limits.max_connections` is reached, 403 for a
//!   browser origin not in `limits.allowed_origins`, 429 when the peer address has
//!   `limits.max_connections_per_ip` sessions, 401 for an invalid or expired token.
//! - `GET /sse`, `POST /sse/send`, `GET /poll`, `POST /poll/send`: the fallback transports
//!   (see [`crate::fallback`]); same authentication and limits as `/ws`. `DELETE /sse` and
//!   `DELETE /poll` with `?session=` end a fallback session at once.
//! - `GET /metrics`: Prometheus text format (see [`crate::metrics::router`]), only when
//!   `metrics.public` is set (the internal listener always serves it, see [`crate::api`]).
//! - `GET /healthz`: 200 while the process serves requests.
//! - `GET /readyz`: 200 when the node accepts new sessions, 503 while draining or while the
//!   cluster broker is unreachable.
//! - `GET /demo`, `GET /demo/holdfast.js`: the demo page and the bundled TypeScript client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::auth::AuthError;
use crate::limits::{origin_allowed, raw_refusal, ConnSlot, Full};
use crate::metrics::Transport;
use crate::node::{AdmitError, Node};
use crate::proxy::TrustedProxies;
use crate::reactor::{Accepted, Reactor};
use crate::tls::{MaybeTls, TlsFiles};
use crate::upgrade::Handshake;
use crate::{fallback, session};
use opentelemetry::context::FutureExt as _;

/// The node's routes.
pub fn router(node: Node) -> Router {
    let mut r = Router::new().route("/ws", get(ws_upgrade));
    if node.config().fallback.enabled {
        r = r
            .route("/sse", get(fallback::sse).delete(fallback::end))
            .route("/sse/send", post(fallback::send))
            .route("/poll", get(fallback::poll).delete(fallback::end))
            .route("/poll/send", post(fallback::send));
    }
    if node.config().metrics.public {
        r = r.merge(crate::metrics::router(node.clone()));
    }
    r.route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::demo::router())
        .with_state(node)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(node): State<Node>) -> Response {
    if node.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if !node.inner.broker.is_healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, "broker unavailable\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

fn reject(node: &Node, status: StatusCode, reason: &'static str) -> Response {
    node.metrics()
        .upgrades_rejected
        .with_label_values(&[reason])
        .inc();
    (status, format!("{reason}\n")).into_response()
}

/// The token from `?token=` or `Authorization: Bearer`.
/// The query parameters of `/ws` read besides the token.
#[derive(Debug, Default, serde::Deserialize)]
struct WsQuery {
    /// The device id, for `session.single_socket = "device"` when the token names none.
    device: Option<String>,
}

fn request_token(query: Option<&str>, headers: &HeaderMap) -> Option<String> {
    if let Some(q) = query {
        for pair in q.split('&') {
            if let Some(v) = pair.strip_prefix("token=") {
                if !v.is_empty() {
                    return Some(v.to_owned());
                }
            }
        }
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

async fn ws_upgrade(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    ws_query: Result<Query<WsQuery>, QueryRejection>,
    headers: HeaderMap,
    upgrade: Handshake,
) -> Response {
    if node.is_draining() {
        return reject(&node, StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    let limits = &node.config().limits;
    if !origin_allowed(limits, &headers) {
        return reject(&node, StatusCode::FORBIDDEN, "origin_not_allowed");
    }
    // With tracing on, the connection's span: a child of the request's `traceparent`.
    let tp = headers.get("traceparent").and_then(|v| v.to_str().ok());
    let trace = crate::telemetry::connection_span(&node, tp, peer.ip(), Transport::WebSocket);
    let claims = match request_token(query.as_deref(), &headers) {
        None => None,
        Some(token) => match node.inner.verifier.verify(&token).await {
            Ok(c) => {
                let connect = crate::permissions::check_connect(&node, &c);
                let allowed = match &trace {
                    Some(cx) => connect.with_context(cx.clone()).await,
                    None => connect.await,
                };
                if allowed.is_err() {
                    return reject(&node, StatusCode::FORBIDDEN, "forbidden");
                }
                Some(c)
            }
            Err(e) => {
                let reason = match e {
                    AuthError::Expired => "token_expired",
                    AuthError::Invalid => "auth_failed",
                };
                let (inner, ws) = (&node.inner, Transport::WebSocket);
                inner.auth_log.record(&inner.metrics, peer.ip(), ws, reason);
                return reject(&node, StatusCode::UNAUTHORIZED, reason);
            }
        },
    };
    let admission = match node.admit(peer.ip()) {
        Ok(a) => a,
        Err(AdmitError::NodeFull) => {
            return reject(&node, StatusCode::SERVICE_UNAVAILABLE, "max_connections")
        }
        Err(AdmitError::IpFull) => {
            return reject(
                &node,
                StatusCode::TOO_MANY_REQUESTS,
                "max_connections_per_ip",
            )
        }
    };
    let max = limits.max_message_bytes;
    // The largest frame the server writes is a `reconnected` carrying a full replay buffer.
    let max_write = 16 * 1024
        + limits.send_queue_bytes
        + (node.config().reconnection.event_buffer_size + 2) * (max + 1024);
    // `Sec-WebSocket-Protocol`: the first subprotocol offered that the server speaks; JSON
    // when none is offered (or none is known), and then none is named in the response.
    let offered = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    let (encoding, named) = holdfast_protocol::Encoding::negotiate(offered);
    let device = ws_query.map(|Query(q)| q).unwrap_or_default().device;
    let config = crate::upgrade::websocket_config(max, max_write);
    let opening = session::Opening {
        node: node.clone(),
        pre_auth: claims,
        device,
        trace,
    };
    let protocol = named.then(|| encoding.subprotocol());
    let (response, task) = session_task(upgrade, config, opening, admission, encoding, protocol);
    // The session task is spawned on the node's tracker with the answer, so a drain cannot
    // finish between the 101 response and the session being tracked.
    node.inner.drain.tracker().spawn(task);
    response
}

/// The 101 answer to `upgrade`, and the task that runs the WebSocket session on the upgraded
/// socket (for the caller to spawn at once).
pub(crate) fn session_task(
    upgrade: Handshake,
    config: crate::session::SocketConfig,
    opening: session::Opening,
    admission: crate::node::Admission,
    encoding: holdfast_protocol::Encoding,
    protocol: Option<&'static str>,
) -> (
    Response,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let reactor = opening.node.inner.reactor.clone();
    let session = move |socket| session::run(socket, Box::new(opening), admission, encoding);
    upgrade.accept(config, reactor, session, protocol)
}

/// Accepts connections until the drain starts, serving each on its own tracked task (over TLS
/// when `tls` is given).
///
/// Every accepted connection first takes a pending slot for its address (see
/// [`crate::limits`]): over `limits.max_pending_per_ip` (or the node's
/// `limits.max_pending_connections`) it is answered 429 (503) and closed at once, so the
/// listener never stops accepting and one address cannot hold the node-wide pool. The slot is
/// given back when the connection becomes a WebSocket session, an SSE stream or a long-poll.
pub async fn accept_loop(listener: TcpListener, node: Node, tls: Option<Arc<TlsFiles>>) {
    let router = router(node.clone());
    let proxies =
        Arc::new(TrustedProxies::parse(&node.config().server.trusted_proxies).unwrap_or_default());
    let cancel = node.inner.drain.token().clone();
    let handshake_timeout = Duration::from_millis(node.config().limits.handshake_timeout_ms);
    let listener = Incoming::new(listener, tls.is_none(), node.inner.reactor.as_ref());
    let mut listener = match listener {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the listener could not move to the reactor");
            return;
        }
    };
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // A trusted proxy carries many clients: only the node-wide bound applies to it.
        let slot = if proxies.trusts(peer.ip()) {
            node.inner.pending.try_acquire_shared(peer.ip())
        } else {
            node.inner.pending.try_acquire(peer.ip())
        };
        let slot = match slot {
            Ok(s) => s,
            Err(full) => {
                refuse_at_accept(&node, stream, full);
                continue;
            }
        };
        let conn_slot = ConnSlot::new(node.inner.pending.clone(), peer.ip(), slot);
        let _ = match &stream {
            Accepted::Polled(s) => s.set_nodelay(true),
            Accepted::Tokio(s) => s.set_nodelay(true),
        };
        let router = router.clone();
        let cancel = cancel.clone();
        let (tls, proxies) = (tls.clone(), proxies.clone());
        let node_reactor = node.inner.reactor.clone();
        // Boxed: the HTTP connection's state (about 2.3 KB, freed at the upgrade) is then a
        // plain allocation, which the next connection's takes again, where a task cell of that
        // size is 128-byte aligned and its freed space too small for the next aligned one: a
        // hole would stay behind every upgraded connection.
        node.inner.drain.tracker().spawn(Box::pin(async move {
            let req_slot = conn_slot.clone();
            let stream = match stream {
                // Accepted on the reactor: there is no TLS.
                Accepted::Polled(s) => MaybeTls::Polled(s),
                Accepted::Tokio(s) => {
                    let reactor = node_reactor.as_ref();
                    let tls = tls.as_deref();
                    match crate::tls::accept(tls, s, handshake_timeout, reactor).await {
                        Ok(s) => s,
                        Err(_) => return,
                    }
                }
            };
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let client = proxies.client_addr(peer, req.headers());
                    req.extensions_mut().insert(ConnectInfo(client));
                    req.extensions_mut().insert(req_slot.clone());
                    let router = router.clone();
                    async move { tower::ServiceExt::oneshot(router, req).await }
                },
            );
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(handshake_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
            drop(conn_slot);
        }));
    }
}

/// Answers a connection over its address's (or the node's) pending bound and closes it,
/// without waiting for the client: the answer is written only if the socket takes it at once.
fn refuse_at_accept(node: &Node, stream: Accepted, full: Full) {
    let reason = match full {
        Full::Ip => "max_pending_per_ip",
        Full::Node => "max_pending_connections",
    };
    node.metrics()
        .upgrades_rejected
        .with_label_values(&[reason])
        .inc();
    let _ = match &stream {
        Accepted::Polled(s) => s.try_write(raw_refusal(full)),
        Accepted::Tokio(s) => s.try_write(raw_refusal(full)),
    };
    drop(stream);
}

/// The listener: on the node's reactor when the connections are plain (each accepted stream
/// is then registered with the reactor at once, and never with tokio's driver), or tokio's.
enum Incoming {
    Polled(crate::reactor::Listener),
    Tokio(TcpListener),
}

impl Incoming {
    /// An error when tokio could not let go of the listener (it is then lost).
    fn new(
        listener: TcpListener,
        plain: bool,
        reactor: Option<&Arc<Reactor>>,
    ) -> std::io::Result<Incoming> {
        let Some(reactor) = reactor.filter(|_| plain) else {
            return Ok(Incoming::Tokio(listener));
        };
        Ok(match reactor.listen(listener)? {
            Ok(l) => Incoming::Polled(l),
            Err(l) => Incoming::Tokio(l),
        })
    }

    async fn accept(&mut self) -> std::io::Result<(Accepted, SocketAddr)> {
        match self {
            Incoming::Polled(l) => l.accept().await,
            Incoming::Tokio(l) => l.accept().await.map(|(s, a)| (Accepted::Tokio(s), a)),
        }
    }
}
