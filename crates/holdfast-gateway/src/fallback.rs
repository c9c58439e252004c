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

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use holdfast_protocol::{CloseCode, ServerFrame, ServerShutdown};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::auth::{AuthError, Claims};
use crate::metrics::Transport;
use crate::node::{AdmitError, Node};
use crate::room::encode;
use crate::session::Session;

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

/// The numbered frames of one fallback session.
#[derive(Debug)]
struct Outbox {
    /// `(n, frame)`, oldest first, at most `fallback.replay_frames`.
    frames: VecDeque<(u64, Utf8Bytes)>,
    /// The last position handed out.
    last: u64,
    /// Positions up to this one were acknowledged by a poll and may be dropped.
    acked: u64,
    /// Set when the session ended.
    closed: Option<Closed>,
    /// When a client last polled, streamed or sent.
    last_seen: Instant,
    /// Generation of the attached SSE stream; an older stream ends when a newer one attaches.
    stream_gen: u64,
    /// Whether an SSE stream is attached.
    streaming: bool,
}

/// One fallback session as the HTTP handlers see it.
#[derive(Debug)]
pub struct FallbackSession {
    /// The session id (also the prefix of SSE event ids).
    pub id: Arc<str>,
    /// The authenticated user.
    pub user: Arc<str>,
    /// Client frames to the session task; bounded, a full queue answers 429.
    inbound: mpsc::Sender<String>,
    /// The outbox; a std mutex held for in-memory work only.
    outbox: Mutex<Outbox>,
    /// Bumped (to the last position) whenever frames are added or the session closes, so
    /// streams and polls wake up.
    changed: watch::Sender<u64>,
}

impl FallbackSession {
    fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        self.lock().last_seen = Instant::now();
    }

    /// Frames after position `after`, or `Err` when some of them were already dropped.
    fn frames_after(&self, after: u64) -> Result<Vec<(u64, Utf8Bytes)>, ()> {
        let ob = self.lock();
        let oldest = ob.frames.front().map(|(n, _)| *n).unwrap_or(ob.last + 1);
        if after + 1 < oldest {
            return Err(());
        }
        Ok(ob
            .frames
            .iter()
            .filter(|(n, _)| *n > after)
            .cloned()
            .collect())
    }
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

/// An HTTP refusal: status and a stable reason, as for `/ws` upgrades.
#[derive(Debug, Clone, Copy)]
struct Refusal(StatusCode, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

fn request_claims(
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
    match node.inner.verifier.verify(&token) {
        Ok(c) => Ok(c),
        Err(AuthError::Expired) => Err(Refusal(StatusCode::UNAUTHORIZED, "token_expired")),
        Err(AuthError::Invalid) => Err(Refusal(StatusCode::UNAUTHORIZED, "auth_failed")),
    }
}

/// Logs (rate-limited) and answers a refused credential.
fn refused(node: &Node, peer: std::net::SocketAddr, transport: Transport, r: Refusal) -> Response {
    let inner = &node.inner;
    inner
        .auth_log
        .record(&inner.metrics, peer.ip(), transport, r.1);
    r.into_response()
}

/// Creates a fallback session and its task.
async fn open(
    node: &Node,
    claims: Claims,
    peer: std::net::IpAddr,
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
    let session = Session::start(node.clone(), claims).await;
    let (inbound, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
    let (changed, _) = watch::channel(0);
    let fs = Arc::new(FallbackSession {
        id: session.handle.id.clone(),
        user: session.handle.user.clone(),
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

/// Appends a frame to the outbox. Returns false when a frame the client has not acknowledged
/// would be dropped (the session must close as a slow consumer).
fn push(fs: &FallbackSession, text: Utf8Bytes, capacity: usize) -> bool {
    let mut ob = fs.lock();
    ob.last += 1;
    let n = ob.last;
    ob.frames.push_back((n, text));
    let mut ok = true;
    while ob.frames.len() > capacity {
        if let Some((old, _)) = ob.frames.pop_front() {
            // A streamed frame counts as delivered unless the stream reconnects from before it;
            // a polled frame must have been acknowledged.
            if old > ob.acked && !ob.streaming {
                ok = false;
            }
        }
    }
    drop(ob);
    fs.changed.send_replace(n);
    ok
}

fn close_outbox(fs: &FallbackSession, code: CloseCode) {
    let mut ob = fs.lock();
    ob.closed = Some(Closed {
        code: code.code(),
        reason: code.reason(),
    });
    let last = ob.last;
    drop(ob);
    fs.changed.send_replace(last);
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
        let expiry = tokio::time::sleep_until(session.expiry);
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
                if !push(fs, out.text, capacity) {
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
        push(fs, out.text, capacity);
    }
    close_outbox(fs, code);
    session.finish().await;
    code
}

/// Query of `GET /sse`.
#[derive(Debug, Deserialize)]
pub struct SseQuery {
    token: Option<String>,
    last_event_id: Option<String>,
}

fn parse_event_id(s: &str) -> Option<(&str, u64)> {
    let (sid, n) = s.rsplit_once('.')?;
    Some((sid, n.parse().ok()?))
}

/// `GET /sse`: opens (or, with `Last-Event-ID`, reattaches to) a session and streams its
/// frames.
pub async fn sse(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Query(q): Query<SseQuery>,
    headers: HeaderMap,
) -> Response {
    let claims = match request_claims(&node, q.token.as_deref(), &headers) {
        Ok(c) => c,
        Err(r) => return refused(&node, peer, Transport::Sse, r),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(q.last_event_id);
    let mut start = None;
    if let Some(id) = resume.as_deref() {
        if let Some((sid, n)) = parse_event_id(id) {
            if let Some(fs) = node.inner.fallback.get(sid) {
                if *fs.user == *claims.sub && fs.lock().closed.is_none() {
                    start = Some((fs, n));
                }
            }
        }
    }
    let (fs, after) = match start {
        Some(x) => x,
        None => match open(&node, claims, peer.ip(), Transport::Sse).await {
            Ok(fs) => (fs, 0),
            Err(r) => return r.into_response(),
        },
    };
    let gen = {
        let mut ob = fs.lock();
        ob.stream_gen += 1;
        ob.streaming = true;
        ob.last_seen = Instant::now();
        ob.stream_gen
    };
    let state = StreamState {
        rx: fs.changed.subscribe(),
        fs,
        next: after,
        gen,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, next_sse_batch);
    let ka = Duration::from_millis(node.config().heartbeat.ping_interval_ms);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(ka).text("ka"))
        .into_response()
}

/// Per-stream state of an SSE response.
struct StreamState {
    fs: Arc<FallbackSession>,
    rx: watch::Receiver<u64>,
    /// The last position sent on this stream.
    next: u64,
    gen: u64,
    done: bool,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        let mut ob = self.fs.lock();
        if ob.stream_gen == self.gen {
            ob.streaming = false;
            ob.last_seen = Instant::now();
        }
    }
}

/// Yields the next SSE event(s) as one chunk: pending frames, or the close, or waits.
async fn next_sse_batch(
    mut st: StreamState,
) -> Option<(Result<SseEvent, Infallible>, StreamState)> {
    loop {
        if st.done {
            return None;
        }
        if st.fs.lock().stream_gen != st.gen {
            return None;
        }
        match st.fs.frames_after(st.next) {
            Err(()) => {
                st.done = true;
                let closed = Closed {
                    code: CloseCode::SlowConsumer.code(),
                    reason: CloseCode::SlowConsumer.reason(),
                };
                let ev = SseEvent::default()
                    .event("close")
                    .data(serde_json::to_string(&closed).unwrap_or_default());
                return Some((Ok(ev), st));
            }
            Ok(frames) => {
                if let Some((n, text)) = frames.into_iter().next() {
                    st.next = n;
                    let ev = SseEvent::default()
                        .id(format!("{}.{n}", st.fs.id))
                        .data(text.as_str());
                    return Some((Ok(ev), st));
                }
            }
        }
        let closed = st.fs.lock().closed;
        if let Some(closed) = closed {
            st.done = true;
            let ev = SseEvent::default()
                .event("close")
                .data(serde_json::to_string(&closed).unwrap_or_default());
            return Some((Ok(ev), st));
        }
        if st.rx.changed().await.is_err() {
            return None;
        }
    }
}

/// Query of `GET /poll` and of the send endpoints.
#[derive(Debug, Deserialize)]
pub struct PollQuery {
    token: Option<String>,
    session: Option<String>,
    after: Option<u64>,
}

/// One frame in a poll response.
#[derive(Debug, Serialize)]
struct PolledFrame {
    id: u64,
    frame: Box<serde_json::value::RawValue>,
}

/// A poll response.
#[derive(Debug, Serialize)]
struct PollResponse {
    session_id: String,
    frames: Vec<PolledFrame>,
    closed: Option<Closed>,
}

fn poll_body(fs: &FallbackSession, frames: Vec<(u64, Utf8Bytes)>) -> Response {
    let frames = frames
        .into_iter()
        .filter_map(|(id, text)| {
            serde_json::value::RawValue::from_string(text.as_str().to_owned())
                .ok()
                .map(|frame| PolledFrame { id, frame })
        })
        .collect::<Vec<_>>();
    let closed = if frames.is_empty() {
        fs.lock().closed
    } else {
        None
    };
    Json(PollResponse {
        session_id: fs.id.to_string(),
        frames,
        closed,
    })
    .into_response()
}

/// `GET /poll`: without `session`, opens a session and answers at once; with it, waits up to
/// `fallback.poll_timeout_ms` for frames after `after`.
pub async fn poll(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Query(q): Query<PollQuery>,
    headers: HeaderMap,
) -> Response {
    let claims = match request_claims(&node, q.token.as_deref(), &headers) {
        Ok(c) => c,
        Err(r) => return refused(&node, peer, Transport::LongPoll, r),
    };
    let Some(sid) = q.session else {
        let fs = match open(&node, claims, peer.ip(), Transport::LongPoll).await {
            Ok(fs) => fs,
            Err(r) => return r.into_response(),
        };
        // Let the session task queue `welcome` before answering.
        let mut rx = fs.changed.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|n| *n > 0)).await;
        let frames = fs.frames_after(0).unwrap_or_default();
        return poll_body(&fs, frames);
    };
    let Some(fs) = node.inner.fallback.get(&sid) else {
        return (StatusCode::NOT_FOUND, "unknown_session\n").into_response();
    };
    if *fs.user != *claims.sub {
        return (StatusCode::UNAUTHORIZED, "auth_failed\n").into_response();
    }
    let after = q.after.unwrap_or(0);
    {
        let mut ob = fs.lock();
        ob.last_seen = Instant::now();
        ob.acked = ob.acked.max(after);
    }
    let mut rx = fs.changed.subscribe();
    let wait = Duration::from_millis(node.config().fallback.poll_timeout_ms);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match fs.frames_after(after) {
            Err(()) => {
                return Json(PollResponse {
                    session_id: fs.id.to_string(),
                    frames: Vec::new(),
                    closed: Some(Closed {
                        code: CloseCode::SlowConsumer.code(),
                        reason: CloseCode::SlowConsumer.reason(),
                    }),
                })
                .into_response()
            }
            Ok(frames) if !frames.is_empty() => {
                fs.touch();
                return poll_body(&fs, frames);
            }
            Ok(_) => {}
        }
        if fs.lock().closed.is_some() {
            return poll_body(&fs, Vec::new());
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return poll_body(&fs, Vec::new()) },
            _ = tokio::time::sleep_until(deadline) => {
                fs.touch();
                return poll_body(&fs, Vec::new());
            }
        }
    }
}

/// `POST /sse/send` and `POST /poll/send`: one client frame, or a JSON array of them.
pub async fn send(
    State(node): State<Node>,
    Query(q): Query<PollQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let claims = match request_claims(&node, q.token.as_deref(), &headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let Some(fs) = q
        .session
        .as_deref()
        .and_then(|s| node.inner.fallback.get(s))
    else {
        return (StatusCode::NOT_FOUND, "unknown_session\n").into_response();
    };
    if *fs.user != *claims.sub {
        return (StatusCode::UNAUTHORIZED, "auth_failed\n").into_response();
    }
    if body.len() > node.config().limits.max_message_bytes {
        return (StatusCode::PAYLOAD_TOO_LARGE, "message_too_big\n").into_response();
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "body must be UTF-8 JSON\n").into_response();
    };
    let frames: Vec<String> = if text.trim_start().starts_with('[') {
        match serde_json::from_str::<Vec<Box<serde_json::value::RawValue>>>(text) {
            Ok(items) => items.into_iter().map(|r| r.get().to_owned()).collect(),
            // Not an array of values: hand it to the session, which answers `bad_json` or
            // `invalid_frame` like on a WebSocket.
            Err(_) => vec![text.to_owned()],
        }
    } else {
        vec![text.to_owned()]
    };
    fs.touch();
    for f in frames {
        if fs.inbound.try_send(f).is_err() {
            return (StatusCode::TOO_MANY_REQUESTS, "rate_limited\n").into_response();
        }
    }
    StatusCode::ACCEPTED.into_response()
}
