//! Fallback transports for networks that block WebSockets: Server-Sent Events and
//! long-polling.
//!
//! A fallback session is an ordinary [`Session`] (same auth, single socket, rooms, replay,
//! dedupe, limits and drain) driven by its own task. Instead of a socket, the task writes into
//! an [`Outbox`]: a bounded ring of numbered frames that SSE streams and long-poll requests read
//! from. Client frames arrive by `POST /sse/send` (or `/poll/send`) and reach the task through
//! a bounded channel.
//!
//! Positions: every frame the session emits gets the next number `n` (1, 2, ...). SSE sends it
//! as the event id `<session_id>.<n>`, so a browser's automatic reconnect (with
//! `Last-Event-ID`) reattaches to the same session and gets what it missed. Long-polling
//! acknowledges with `after=n`. The ring keeps `fallback.replay_frames` frames; a client further
//! behind than that is closed with 4001 (slow consumer) and resumes its rooms with `reconnect`.
//!
//! Layout: [`outbox`] holds the numbered frames, [`sse`] the event-stream endpoint, [`poll`]
//! the long-polling and send endpoints.

mod outbox;
mod poll;
mod sse;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use holdfast_protocol::{CloseCode, ServerFrame, ServerShutdown};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::auth::{AuthError, Claims};
use crate::limits::{origin_allowed, ConnSlot, Refusal, Slot};
use crate::metrics::Transport;
use crate::node::{AdmitError, Node};
use crate::registry::SessionHandle;
use crate::room::encode;
use crate::session::Session;

use outbox::{close_outbox, push, Outbox};
pub use poll::{end, poll, send, PollQuery};
pub use sse::{sse, SseQuery};

/// Client frames waiting for a fallback session's task.
const INBOUND_QUEUE: usize = 256;
/// How long a closed session stays readable so a pending poll or stream can see its close.
const CLOSED_LINGER: Duration = Duration::from_secs(5);

/// How a fallback session ended, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Closed {
    /// The close code.
    pub code: u16,
    /// Its reason.
    pub reason: &'static str,
}

/// One fallback session as the HTTP handlers see it.
#[derive(Debug)]
pub struct FallbackSession {
    /// The session id (also the prefix of SSE event ids).
    pub id: Arc<str>,
    /// The authenticated user.
    pub user: Arc<str>,
    /// The session's handle, so an explicit end (`DELETE`) can close it at once.
    handle: Arc<SessionHandle>,
    /// Client frames to the session task; bounded, a full queue answers 429.
    inbound: mpsc::Sender<String>,
    /// The outbox; a std mutex held for in-memory work only.
    outbox: Mutex<Outbox>,
    /// Bumped (to the last position) whenever frames are added or the session closes, so
    /// streams and polls wake up.
    changed: watch::Sender<u64>,
}

/// The fallback sessions of a node.
#[derive(Debug, Default)]
pub struct FallbackSessions {
    /// session id → session. Bounded by `limits.max_connections` through admission.
    map: Mutex<HashMap<Arc<str>, Arc<FallbackSession>>>,
}

impl FallbackSessions {
    fn get(&self, id: &str) -> Option<Arc<FallbackSession>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn insert(&self, s: Arc<FallbackSession>) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(s.id.clone(), s);
    }

    fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// The pending slot of the request's connection, when it came through the accept loop.
pub(crate) type ConnExt = Option<Extension<Arc<ConnSlot>>>;

/// The checks every fallback request passes before anything else: the token, then the
/// browser origin.
async fn check_request(
    node: &Node,
    token: Option<&str>,
    headers: &HeaderMap,
) -> Result<Claims, Refusal> {
    let claims = request_claims(node, token, headers).await?;
    if !origin_allowed(&node.config().limits, headers) {
        return Err(Refusal(StatusCode::FORBIDDEN, "origin_not_allowed"));
    }
    Ok(claims)
}

/// The checks of a request that holds a stream or a poll open: the token and origin, then a
/// stream slot of its address.
async fn open_stream(
    node: &Node,
    token: Option<&str>,
    headers: &HeaderMap,
    ip: IpAddr,
) -> Result<(Claims, Slot), Refusal> {
    let claims = check_request(node, token, headers).await?;
    Ok((claims, admit_stream(node, ip)?))
}

/// Admits a stream or poll held open by `ip`: it counts against `limits.max_streams_per_ip`
/// (and the node's `limits.max_connections`) instead of the pending connections.
fn admit_stream(node: &Node, ip: IpAddr) -> Result<Slot, Refusal> {
    match node.admit_stream(ip) {
        Ok(s) => Ok(s),
        Err(AdmitError::NodeFull) => {
            Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, "max_connections"))
        }
        Err(AdmitError::IpFull) => {
            Err(Refusal(StatusCode::TOO_MANY_REQUESTS, "max_streams_per_ip"))
        }
    }
}

/// Counts a refusal (by its stable code) and turns it into the response.
fn refused(node: &Node, r: Refusal) -> Response {
    node.metrics()
        .upgrades_rejected
        .with_label_values(&[r.1])
        .inc();
    r.into_response()
}

async fn request_claims(
    node: &Node,
    token: Option<&str>,
    headers: &HeaderMap,
) -> Result<Claims, Refusal> {
    let token = token.map(str::to_owned).or_else(|| {
        let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        auth.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
    });
    let Some(token) = token else {
        return Err(Refusal(StatusCode::UNAUTHORIZED, "auth_failed"));
    };
    match node.inner.verifier.verify(&token).await {
        Ok(c) => Ok(c),
        Err(AuthError::Expired) => Err(Refusal(StatusCode::UNAUTHORIZED, "token_expired")),
        Err(AuthError::Invalid) => Err(Refusal(StatusCode::UNAUTHORIZED, "auth_failed")),
    }
}

/// Creates a fallback session and its task.
async fn open(
    node: &Node,
    claims: Claims,
    peer: IpAddr,
    transport: Transport,
) -> Result<Arc<FallbackSession>, Refusal> {
    if node.is_draining() {
        return Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, "draining"));
    }
    let admission = match node.admit(peer) {
        Ok(a) => a,
        Err(AdmitError::NodeFull) => {
            return Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, "max_connections"))
        }
        Err(AdmitError::IpFull) => {
            return Err(Refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "max_connections_per_ip",
            ))
        }
    };
    // With tracing on, the session's `connection` span (a new trace: these requests carry no
    // trace context the session could continue).
    let trace = crate::telemetry::connection_span(node, None, peer, transport);
    let connect = crate::permissions::check_connect(node, &claims);
    let allowed = match &trace {
        Some(cx) => {
            use opentelemetry::context::FutureExt as _;
            connect.with_context(cx.clone()).await
        }
        None => connect.await,
    };
    if allowed.is_err() {
        if let Some(cx) = &trace {
            crate::telemetry::end(cx, "refused", false);
        }
        return Err(Refusal(StatusCode::FORBIDDEN, "forbidden"));
    }
    let mut session = Session::start(
        node.clone(),
        Box::new(claims),
        holdfast_protocol::Encoding::Json,
    )
    .await;
    if let Some(cx) = trace {
        let (id, user) = (session.handle.id.clone(), session.handle.user.clone());
        session.trace = Some(Box::new(crate::telemetry::connection_started(
            cx, &id, &user,
        )));
    }
    let (inbound, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
    let (changed, _) = watch::channel(0);
    let fs = Arc::new(FallbackSession {
        id: session.handle.id.clone(),
        user: session.handle.user.clone(),
        handle: session.handle.clone(),
        inbound,
        outbox: Mutex::new(Outbox {
            frames: VecDeque::new(),
            last: 0,
            acked: 0,
            closed: None,
            last_seen: Instant::now(),
            stream_gen: 0,
            streaming: false,
        }),
        changed,
    });
    node.inner.fallback.insert(fs.clone());
    let metrics = node.inner.metrics.clone();
    metrics.session_opened(transport);
    crate::logs::session_started(&fs.id, &fs.user, peer, transport);
    let started = Instant::now();
    let task_node = node.clone();
    let task_fs = fs.clone();
    node.inner.drain.tracker().spawn(async move {
        let code = drive(&task_node, session, &task_fs, inbound_rx)
            .await
            .code();
        drop(admission);
        metrics.session_closed(transport, code);
        let (id, user) = (&task_fs.id, &task_fs.user);
        crate::logs::session_ended(id, user, peer, transport, code, started.elapsed());
        let cancel = task_node.inner.drain.token().clone();
        tokio::select! {
            _ = tokio::time::sleep(CLOSED_LINGER) => {}
            _ = cancel.cancelled() => {}
        }
        task_node.inner.fallback.remove(&task_fs.id);
    });
    Ok(fs)
}

/// The task of one fallback session; returns its close code.
async fn drive(
    node: &Node,
    mut session: Session,
    fs: &FallbackSession,
    mut inbound: mpsc::Receiver<String>,
) -> CloseCode {
    let inner = node.inner.clone();
    let cfg = &inner.config.fallback;
    let capacity = cfg.replay_frames;
    let idle = Duration::from_millis(cfg.session_timeout_ms);
    let mut check =
        tokio::time::interval(Duration::from_millis((cfg.session_timeout_ms / 4).max(10)));
    let handle = session.handle.clone();
    let code = loop {
        let expiry = tokio::time::sleep_until(inner.timers.instant_of_nanos(handle.expiry()));
        tokio::select! {
            biased;
            code = handle.closed() => break code,
            _ = inner.drain.token().cancelled() => {
                let notice = ServerFrame::ServerShutdown(ServerShutdown {
                    reason: "node draining".into(),
                    reconnect_after_ms: inner.config.server.shutdown_reconnect_after_ms,
                });
                push(fs, encode(&notice), capacity);
                break CloseCode::GoingAway;
            }
            _ = expiry => break CloseCode::TokenExpired,
            out = handle.next() => {
                if let Some(t) = out.emitted {
                    inner.metrics.fanout_lag.observe(t.elapsed().as_secs_f64());
                }
                inner.metrics.messages_sent.inc();
                if !push(fs, fallback_text(out.payload), capacity) {
                    break CloseCode::SlowConsumer;
                }
            }
            text = inbound.recv() => {
                let Some(text) = text else { break CloseCode::InternalError };
                if let Some(code) = session.on_text(&text).await {
                    break code;
                }
            }
            _ = check.tick() => {
                let ob = fs.lock();
                if !ob.streaming && ob.last_seen.elapsed() >= idle {
                    break CloseCode::HeartbeatTimeout;
                }
            }
        }
    };
    // Frames already queued before the close are still handed to the client.
    while let Some(out) = handle.try_pop() {
        push(fs, fallback_text(out.payload), capacity);
    }
    close_outbox(fs, code);
    session.finish().await;
    code
}

/// A fallback session is always JSON: its queue holds text frames only.
fn fallback_text(p: crate::registry::Payload) -> axum::extract::ws::Utf8Bytes {
    match p {
        crate::registry::Payload::Text(t) => t,
        crate::registry::Payload::Binary(_) => axum::extract::ws::Utf8Bytes::from_static(""),
    }
}
