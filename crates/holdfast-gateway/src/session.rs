//! One client session: the task that owns a WebSocket from authentication to close.
//!
//! The task is the only writer of its socket. Everything addressed to the session (room
//! messages, replies, direct messages) arrives through its bounded queue and is written in
//! batches: one flush (one write syscall in the common case) per batch of queued frames.
//! Writes are raced against the close signal and the drain, so a client that stopped reading
//! cannot pin its task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use holdfast_protocol::{
    parse_client_frame, Ack, ClientFrame, CloseCode, Direct, ErrorCode, ErrorFrame, Ping,
    ReconnectionFailed, Refreshed, ServerFrame, ServerShutdown, Welcome, PROTOCOL_VERSION,
};
use tokio::time::sleep_until;

use crate::auth::{unix_now, unix_now_ms, AuthError, Claims};
use crate::node::{Admission, Node};
use crate::registry::{Outbound, SessionHandle};
use crate::room::{encode, RoomError};
use crate::store::{Membership, Resume};

/// The rooms of one session.
#[derive(Default)]
struct Rooms(Vec<Membership>);

impl Rooms {
    fn get(&self, room: &str) -> Option<&Membership> {
        self.0.iter().find(|m| &*m.room == room)
    }
    fn contains_key(&self, room: &str) -> bool {
        self.get(room).is_some()
    }
    fn remove(&mut self, room: &str) -> Option<Membership> {
        let i = self.0.iter().position(|m| &*m.room == room)?;
        Some(self.0.swap_remove(i))
    }
    fn insert(&mut self, m: Membership) {
        // Most sessions are in one or two rooms: grow one slot at a time.
        self.0.reserve_exact(1);
        self.0.push(m);
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Most frames written per flush.
const MAX_BATCH: usize = 64;
/// How long a close or shutdown notice may take to write before the socket is dropped.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Frames tolerated before `auth` on a connection that must authenticate in-band.
const MAX_PRE_AUTH_FRAMES: u32 = 8;

/// How a session loop ended.
enum Ending {
    /// Close the socket with this code (a close frame is attempted).
    Close(CloseCode),
    /// The node is draining: `server_shutdown`, then 1001.
    Drain,
    /// The client closed, with its code (1005 when it gave none).
    ClientClosed(u16),
    /// The connection is gone without a close (1006).
    Lost,
}

/// An inbound token bucket: `rate` frames per second, bursts of `burst`.
struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            tokens: burst as f64,
            rate: rate as f64,
            burst: burst as f64,
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Runs a connection from upgrade to close. `pre_auth` holds the claims when the token came
/// with the upgrade request; otherwise the first frame must be `auth`.
pub(crate) async fn run(
    node: Node,
    mut ws: WebSocket,
    pre_auth: Option<Claims>,
    admission: Admission,
) {
    let metrics = node.inner.metrics.clone();
    metrics.connections_opened.inc();
    metrics.connections_active.inc();
    // The phases are boxed so the task keeps only the state of the phase it is in: an idle
    // session's task stays small.
    let code = match pre_auth {
        Some(c) => Ok(c),
        None => Box::pin(authenticate(&node, &mut ws)).await,
    };
    let code = match code {
        Ok(claims) => {
            let session = Box::pin(Session::start(node, claims)).await;
            Box::pin(session.run(&mut ws)).await
        }
        Err(code) => code,
    };
    drop(admission);
    metrics
        .close_total
        .with_label_values(&[&code.to_string()])
        .inc();
    metrics.connections_closed.inc();
    metrics.connections_active.dec();
}

/// Writes one text frame directly (before the session's queue exists).
async fn write_now(ws: &mut WebSocket, frame: &ServerFrame) {
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, ws.send(Message::Text(encode(frame)))).await;
}

/// Sends a close frame with `code`, bounded in time.
async fn close_with(ws: &mut WebSocket, code: CloseCode) {
    let frame = CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from_static(code.reason()),
    };
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, ws.send(Message::Close(Some(frame)))).await;
}

fn error_frame(code: ErrorCode, message: impl Into<String>, id: Option<String>) -> ServerFrame {
    ServerFrame::Error(ErrorFrame {
        code,
        message: message.into(),
        id,
    })
}

/// Waits for an `auth` frame within `auth.timeout_ms`. On failure the socket is already
/// closed and the close code is returned.
async fn authenticate(node: &Node, ws: &mut WebSocket) -> Result<Claims, u16> {
    let inner = &node.inner;
    let deadline = tokio::time::sleep(Duration::from_millis(inner.config.auth.timeout_ms));
    tokio::pin!(deadline);
    let mut frames = 0u32;
    loop {
        tokio::select! {
            _ = &mut deadline => {
                close_with(ws, CloseCode::AuthTimeout).await;
                return Err(CloseCode::AuthTimeout.code());
            }
            _ = inner.drain.token().cancelled() => {
                close_with(ws, CloseCode::GoingAway).await;
                return Err(CloseCode::GoingAway.code());
            }
            msg = ws.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(f))) => return Err(f.map(|f| f.code).unwrap_or(1005)),
                    Some(Ok(Message::Binary(_))) => Utf8Bytes::from_static("binary"),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        if is_too_big(e) {
                            close_with(ws, CloseCode::MessageTooBig).await;
                            return Err(CloseCode::MessageTooBig.code());
                        }
                        return Err(1006);
                    }
                    None => return Err(1006),
                };
                inner.metrics.messages_received.inc();
                frames += 1;
                let reply = match parse_client_frame(&text) {
                    Ok(ClientFrame::Auth(a)) => match inner.verifier.verify(&a.token) {
                        Ok(claims) => return Ok(claims),
                        Err(AuthError::Expired) => {
                            write_now(ws, &error_frame(ErrorCode::TokenExpired, "token expired", None)).await;
                            close_with(ws, CloseCode::TokenExpired).await;
                            return Err(CloseCode::TokenExpired.code());
                        }
                        Err(AuthError::Invalid) => {
                            write_now(ws, &error_frame(ErrorCode::AuthFailed, "invalid token", None)).await;
                            close_with(ws, CloseCode::AuthFailed).await;
                            return Err(CloseCode::AuthFailed.code());
                        }
                    },
                    Ok(other) => error_frame(
                        ErrorCode::NotAuthenticated,
                        "send `auth` first",
                        other.id().map(str::to_owned),
                    ),
                    Err(e) => error_frame(e.code, e.message, e.id),
                };
                write_now(ws, &reply).await;
                if frames >= MAX_PRE_AUTH_FRAMES {
                    close_with(ws, CloseCode::PolicyViolation).await;
                    return Err(CloseCode::PolicyViolation.code());
                }
            }
        }
    }
}

/// Whether a read error is tungstenite's message/frame size limit.
fn is_too_big(e: axum::Error) -> bool {
    let inner = e.into_inner();
    matches!(
        inner.downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}

pub(crate) fn expiry_instant(exp: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(exp.saturating_sub(unix_now()))
}

/// An authenticated session, whatever its transport: the WebSocket loop below and the
/// fallback transports (`crate::fallback`) drive the same core, so auth, single socket, rooms,
/// replay, dedupe and limits behave identically on every transport.
pub(crate) struct Session {
    node: Node,
    /// What other tasks see of this session.
    pub(crate) handle: Arc<SessionHandle>,
    /// Rooms this session is in, bounded by `limits.max_rooms_per_session` (a short list: a
    /// scan is cheaper than a map and holds less memory per session).
    rooms: Rooms,
    /// Inbound rate limit.
    bucket: TokenBucket,
    /// Consecutive rate-limited frames.
    strikes: u32,
    /// When the token expires.
    pub(crate) expiry: tokio::time::Instant,
}

impl Session {
    /// Registers the session (closing the user's previous one when single socket is on) and
    /// queues `welcome`.
    pub(crate) async fn start(node: Node, claims: Claims) -> Session {
        let inner = &node.inner;
        let limits = &inner.config.limits;
        let handle = SessionHandle::new(
            node.next_session_id(),
            claims.sub.as_str().into(),
            limits.send_queue_messages,
            limits.send_queue_bytes,
            inner.metrics.clone(),
        );
        let previous = inner.registry.insert(handle.clone());
        if inner.config.session.single_socket {
            if let Some(old) = previous {
                old.close(CloseCode::Replaced);
            }
            inner
                .broker
                .claim_user(&inner.id, &handle.user, &handle.id)
                .await;
        }
        let welcome = ServerFrame::Welcome(Welcome {
            protocol: PROTOCOL_VERSION,
            user_id: claims.sub.clone(),
            session_id: handle.id.to_string(),
            node_id: inner.id.to_string(),
            ping_interval_ms: inner.config.heartbeat.ping_interval_ms,
            pong_timeout_ms: inner.config.heartbeat.pong_timeout_ms,
            max_message_bytes: limits.max_message_bytes,
            expires_at: claims.exp,
        });
        handle.enqueue(encode(&welcome), None);
        tracing::debug!(session = %handle.id, user = %handle.user, "session started");
        Session {
            bucket: TokenBucket::new(limits.rate_limit_per_sec, limits.rate_limit_burst),
            strikes: 0,
            expiry: expiry_instant(claims.exp),
            rooms: Rooms::default(),
            handle,
            node,
        }
    }

    /// The session loop; returns the close code to record.
    async fn run(mut self, ws: &mut WebSocket) -> u16 {
        let inner = self.node.inner.clone();
        let hb = &inner.config.heartbeat;
        let ping_every = Duration::from_millis(hb.ping_interval_ms);
        let pong_timeout = Duration::from_millis(hb.pong_timeout_ms);
        // One timer serves the ping cadence, the pong deadline and the token expiry, so an idle
        // session holds no timer allocation of its own.
        let mut next_ping = tokio::time::Instant::now() + ping_every;
        let mut ping_sent: Option<tokio::time::Instant> = None;
        let handle = self.handle.clone();
        let ending = loop {
            let timer = match ping_sent {
                Some(sent) => sent + pong_timeout,
                None => next_ping,
            }
            .min(self.expiry);
            tokio::select! {
                biased;
                code = handle.closed() => break Ending::Close(code),
                _ = inner.drain.token().cancelled() => break Ending::Drain,
                out = handle.next() => {
                    // Boxed: the write state exists only while a batch is being written.
                    let write = Box::pin(write_batch(ws, out, &handle, &inner.metrics));
                    tokio::select! {
                        r = write => {
                            if r.is_err() { break Ending::Lost }
                        }
                        code = handle.closed() => break Ending::Close(code),
                        _ = inner.drain.token().cancelled() => break Ending::Drain,
                    }
                }
                _ = sleep_until(timer) => {
                    let now = tokio::time::Instant::now();
                    if now >= self.expiry {
                        break Ending::Close(CloseCode::TokenExpired);
                    }
                    match ping_sent {
                        Some(sent) if now >= sent + pong_timeout => {
                            break Ending::Close(CloseCode::HeartbeatTimeout);
                        }
                        Some(_) => {}
                        None if now >= next_ping => {
                            ping_sent = Some(now);
                            let send = Box::pin(ws.send(Message::Ping(bytes::Bytes::new())));
                            tokio::select! {
                                r = send => if r.is_err() { break Ending::Lost },
                                code = handle.closed() => break Ending::Close(code),
                                _ = inner.drain.token().cancelled() => break Ending::Drain,
                            }
                        }
                        None => {}
                    }
                }
                msg = ws.recv() => match msg {
                    None => break Ending::Lost,
                    Some(Err(e)) => {
                        if is_too_big(e) {
                            break Ending::Close(CloseCode::MessageTooBig);
                        }
                        break Ending::Lost;
                    }
                    Some(Ok(Message::Text(text))) => {
                        // Boxed for the same reason: frame handling state is transient.
                        if let Some(code) = Box::pin(self.on_text(&text)).await {
                            break Ending::Close(code);
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        inner.metrics.messages_received.inc();
                        self.reply_error(ErrorCode::InvalidFrame, "binary frames are not supported; send JSON text", None);
                    }
                    Some(Ok(Message::Pong(_))) => {
                        if let Some(sent) = ping_sent.take() {
                            inner.metrics.heartbeat_rtt.observe(sent.elapsed().as_secs_f64());
                            next_ping = sent + ping_every;
                        }
                    }
                    Some(Ok(Message::Ping(_))) => {}
                    Some(Ok(Message::Close(frame))) => {
                        break Ending::ClientClosed(frame.map(|f| f.code).unwrap_or(1005));
                    }
                }
            }
        };
        let code = Box::pin(async {
            match ending {
                Ending::Close(code) => {
                    close_with(ws, code).await;
                    code.code()
                }
                Ending::Drain => {
                    let notice = ServerFrame::ServerShutdown(ServerShutdown {
                        reason: "node draining".into(),
                        reconnect_after_ms: inner.config.server.shutdown_reconnect_after_ms,
                    });
                    write_now(ws, &notice).await;
                    close_with(ws, CloseCode::GoingAway).await;
                    CloseCode::GoingAway.code()
                }
                Ending::ClientClosed(code) => {
                    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, ws.flush()).await;
                    code
                }
                Ending::Lost => 1006,
            }
        })
        .await;
        Box::pin(self.finish()).await;
        tracing::debug!(session = %handle.id, code, "session ended");
        code
    }

    /// Leaves the registry and turns room memberships away (or removes them), then discards
    /// whatever was still queued.
    pub(crate) async fn finish(mut self) {
        let inner = self.node.inner.clone();
        for m in self.rooms.0.drain(..) {
            inner.store.disconnect(&m, &self.handle).await;
        }
        if inner.registry.remove(&self.handle) {
            inner
                .broker
                .release_user(&inner.id, &self.handle.user, &self.handle.id);
        }
        self.handle.shut_queue();
    }

    fn reply(&self, frame: &ServerFrame) {
        self.handle.enqueue(encode(frame), None);
    }

    fn reply_error(&self, code: ErrorCode, message: impl Into<String>, id: Option<String>) {
        self.node
            .inner
            .metrics
            .errors_total
            .with_label_values(&[code.as_str()])
            .inc();
        self.reply(&error_frame(code, message, id));
    }

    fn room_error(&self, e: RoomError, id: Option<String>) {
        self.reply_error(e.code, e.message, id);
    }

    /// Handles one text frame; returns a close code when the session must end.
    pub(crate) async fn on_text(&mut self, text: &str) -> Option<CloseCode> {
        let inner = self.node.inner.clone();
        inner.metrics.messages_received.inc();
        if !self.bucket.take(Instant::now()) {
            self.strikes += 1;
            if self.strikes >= inner.config.limits.rate_limit_strikes {
                return Some(CloseCode::RateLimited);
            }
            // The id is still read, so the client knows which frame to retry.
            let id = match parse_client_frame(text) {
                Ok(f) => f.id().map(str::to_owned),
                Err(e) => e.id,
            };
            self.reply_error(
                ErrorCode::RateLimited,
                "rate limit exceeded; frame dropped",
                id,
            );
            return None;
        }
        self.strikes = 0;
        let frame = match parse_client_frame(text) {
            Ok(f) => f,
            Err(e) => {
                self.reply_error(e.code, e.message, e.id);
                return None;
            }
        };
        match frame {
            ClientFrame::Auth(_) => self.reply_error(
                ErrorCode::AlreadyAuthenticated,
                "this connection is already authenticated",
                None,
            ),
            ClientFrame::Join(r) => {
                if inner.drain.is_draining() {
                    self.reply_error(ErrorCode::Draining, "the node is draining", r.id);
                } else if self.rooms.contains_key(r.room.as_str()) {
                    self.reply_error(ErrorCode::AlreadyInRoom, "already in the room", r.id);
                } else if self.rooms.len() >= inner.config.limits.max_rooms_per_session {
                    self.reply_error(
                        ErrorCode::TooManyRooms,
                        "too many rooms for one session",
                        r.id,
                    );
                } else {
                    match inner.store.join(&r.room, &self.handle, r.id.clone()).await {
                        Ok(m) => {
                            self.rooms.insert(m);
                        }
                        Err(e) => self.room_error(e, r.id),
                    }
                }
            }
            ClientFrame::Leave(r) => match self.rooms.remove(r.room.as_str()) {
                None => self.reply_error(ErrorCode::NotInRoom, "not a member of the room", r.id),
                Some(m) => {
                    if let Err(e) = inner.store.leave(&m, &self.handle, r.id.clone()).await {
                        self.room_error(e, r.id);
                    }
                }
            },
            ClientFrame::Publish(p) => match self.rooms.get(p.room.as_str()) {
                None => self.reply_error(ErrorCode::NotInRoom, "not a member of the room", p.id),
                Some(m) => {
                    let r = inner
                        .store
                        .publish(m, &self.handle, p.data, p.id.clone(), p.traceparent)
                        .await;
                    if let Err(e) = r {
                        self.room_error(e, p.id);
                    }
                }
            },
            ClientFrame::ClaimAuthority(r) => match self.rooms.get(r.room.as_str()) {
                None => self.reply_error(ErrorCode::NotInRoom, "not a member of the room", r.id),
                Some(m) => {
                    let res = inner
                        .store
                        .claim_authority(m, &self.handle, r.id.clone())
                        .await;
                    if let Err(e) = res {
                        self.room_error(e, r.id);
                    }
                }
            },
            ClientFrame::ReleaseAuthority(r) => match self.rooms.get(r.room.as_str()) {
                None => self.reply_error(ErrorCode::NotInRoom, "not a member of the room", r.id),
                Some(m) => {
                    let res = inner
                        .store
                        .release_authority(m, &self.handle, r.id.clone())
                        .await;
                    if let Err(e) = res {
                        self.room_error(e, r.id);
                    }
                }
            },
            ClientFrame::Send(s) => {
                let text = encode(&ServerFrame::Message(Direct {
                    from: self.handle.user.to_string(),
                    ts: unix_now_ms(),
                    data: s.data,
                }));
                let delivered = match inner.registry.get(&s.to) {
                    Some(target) => target.enqueue(text, None),
                    None => inner.broker.route_direct(&inner.id, &s.to, text).await,
                };
                if !delivered {
                    self.reply_error(ErrorCode::UserOffline, "the user has no live session", s.id);
                } else if let Some(id) = s.id {
                    self.reply(&ServerFrame::Ack(Ack {
                        id,
                        room: None,
                        seq: None,
                    }));
                }
            }
            ClientFrame::Reconnect(r) => {
                let failed = |code, message: &str| {
                    ServerFrame::ReconnectionFailed(ReconnectionFailed {
                        room: r.room.clone(),
                        code,
                        message: message.to_owned(),
                        id: r.id.clone(),
                    })
                };
                if self.rooms.contains_key(r.room.as_str()) {
                    inner.metrics.reconnection_validation_failures.inc();
                    self.reply(&failed(
                        ErrorCode::ReconnectionFailed,
                        "this session is already in the room",
                    ));
                } else if self.rooms.len() >= inner.config.limits.max_rooms_per_session {
                    inner.metrics.reconnection_validation_failures.inc();
                    self.reply(&failed(
                        ErrorCode::TooManyRooms,
                        "too many rooms for one session",
                    ));
                } else {
                    let req = Resume {
                        room: r.room.clone(),
                        player_id: r.player_id.clone(),
                        token: r.token.clone(),
                        last_sequence: r.last_sequence,
                        id: r.id.clone(),
                    };
                    match inner.store.reconnect(req, &self.handle).await {
                        Ok(m) => {
                            self.rooms.insert(m);
                        }
                        Err(e) => self.reply(&failed(e.code, e.message)),
                    }
                }
            }
            ClientFrame::Refresh(r) => match inner.verifier.verify(&r.token) {
                Ok(claims) if *claims.sub == *self.handle.user => {
                    self.expiry = expiry_instant(claims.exp);
                    self.reply(&ServerFrame::Refreshed(Refreshed {
                        expires_at: claims.exp,
                        id: r.id,
                    }));
                }
                Ok(_) => self.reply_error(
                    ErrorCode::TokenUserMismatch,
                    "the token is for another user",
                    r.id,
                ),
                Err(AuthError::Expired) => {
                    self.reply_error(ErrorCode::TokenExpired, "token expired", r.id)
                }
                Err(AuthError::Invalid) => {
                    self.reply_error(ErrorCode::AuthFailed, "invalid token", r.id)
                }
            },
            ClientFrame::Ping(p) => self.reply(&ServerFrame::Pong(Ping { id: p.id })),
        }
        None
    }
}

/// Writes `first` and whatever else is queued (up to [`MAX_BATCH`]) with a single flush.
async fn write_batch(
    ws: &mut WebSocket,
    first: Outbound,
    handle: &SessionHandle,
    metrics: &crate::metrics::Metrics,
) -> Result<(), axum::Error> {
    let mut n = 0u64;
    let mut out = first;
    loop {
        // Fan-out lag is taken as the frame goes to the socket's write buffer; the flush below
        // follows within the same batch.
        if let Some(t) = out.emitted {
            metrics.fanout_lag.observe(t.elapsed().as_secs_f64());
        }
        ws.feed(Message::Text(out.text)).await?;
        n += 1;
        if n >= MAX_BATCH as u64 {
            break;
        }
        match handle.try_pop() {
            Some(next) => out = next,
            None => break,
        }
    }
    ws.flush().await?;
    metrics.messages_sent.inc_by(n);
    Ok(())
}
