//! The HTTP surface of a node and its accept loop.
//!
//! Endpoints:
//! - `GET /ws`: the WebSocket endpoint. The token may come as `?token=` or
//!   `Authorization: Bearer`; without one, the first frame must be `auth`. Refusals before the
//!   upgrade: 503 while draining or when `limits.max_connections` is reached, 403 for a
//!   browser origin not in `limits.allowed_origins`, 429 when the peer address has
//!   `limits.max_connections_per_ip` sessions, 401 for an invalid or expired token.
//! - `GET /sse`, `POST /sse/send`, `GET /poll`, `POST /poll/send`: the fallback transports
//!   (see [`crate::fallback`]); same authentication and limits as `/ws`.
//! - `GET /metrics`: Prometheus text format (see [`crate::metrics::router`]), when
//!   `metrics.public` is on.
//! - `GET /healthz`: 200 while the process serves requests.
//! - `GET /readyz`: 200 when the node accepts new sessions, 503 while draining or while the
//!   cluster broker is unreachable.
//! - `GET /demo`, `GET /demo/holdfast.js`: the demo page and the bundled TypeScript client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::AuthError;
use crate::node::{AdmitError, Node};
use crate::proxy::TrustedProxies;
use crate::tls::TlsFiles;
use crate::{fallback, session};

/// Most HTTP connections that have not (yet) become WebSocket sessions. Bounds what a flood of
/// idle TCP connections can hold; each one also has `limits.handshake_timeout_ms` to send its
/// request.
const MAX_PENDING_HTTP: usize = 4096;

/// The node's routes.
pub fn router(node: Node) -> Router {
    let mut r = Router::new().route("/ws", get(ws_upgrade));
    if node.config().fallback.enabled {
        r = r
            .route("/sse", get(fallback::sse))
            .route("/sse/send", post(fallback::send))
            .route("/poll", get(fallback::poll))
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
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if node.is_draining() {
        return reject(&node, StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    let limits = &node.config().limits;
    if !limits.allowed_origins.is_empty() {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let allowed = origin
                .to_str()
                .is_ok_and(|o| limits.allowed_origins.iter().any(|a| a == o));
            if !allowed {
                return reject(&node, StatusCode::FORBIDDEN, "origin_not_allowed");
            }
        }
    }
    let claims = match request_token(query.as_deref(), &headers) {
        None => None,
        Some(token) => match node.inner.verifier.verify(&token) {
            Ok(c) => Some(c),
            Err(e) => {
                let reason = match e {
                    AuthError::Expired => "token_expired",
                    AuthError::Invalid => "auth_failed",
                };
                let (inner, ws) = (&node.inner, crate::metrics::Transport::WebSocket);
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
    let write_buffer = 16 * 1024;
    // The largest frame the server writes is a `reconnected` carrying a full replay buffer.
    let max_write = write_buffer
        + limits.send_queue_bytes
        + (node.config().reconnection.event_buffer_size + 2) * (max + 1024);
    // Held until the session task starts, so a drain cannot finish between the 101 response
    // and the session being tracked.
    let tracker_token = node.inner.drain.tracker().token();
    let session_node = node.clone();
    upgrade
        // Small: it is allocated for every connection, idle or not, and grows on demand for a
        // larger frame. Client frames are mostly a few hundred bytes.
        .read_buffer_size(512)
        .write_buffer_size(write_buffer)
        .max_write_buffer_size(max_write)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let _tracked = tracker_token;
            session::run(session_node, socket, claims, admission).await;
        })
}

/// Accepts connections until the drain starts, serving each on its own tracked task (over TLS
/// when `tls` is given).
pub async fn accept_loop(listener: TcpListener, node: Node, tls: Option<Arc<TlsFiles>>) {
    let router = router(node.clone());
    let proxies =
        Arc::new(TrustedProxies::parse(&node.config().server.trusted_proxies).unwrap_or_default());
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HTTP));
    let cancel = node.inner.drain.token().clone();
    let handshake_timeout = Duration::from_millis(node.config().limits.handshake_timeout_ms);
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = pending.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
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
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let cancel = cancel.clone();
        let (tls, proxies) = (tls.clone(), proxies.clone());
        node.inner.drain.tracker().spawn(async move {
            let _permit = permit;
            let Ok(stream) = crate::tls::accept(tls.as_deref(), stream, handshake_timeout).await
            else {
                return;
            };
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let client = proxies.client_addr(peer, req.headers());
                    req.extensions_mut().insert(ConnectInfo(client));
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
        });
    }
}
