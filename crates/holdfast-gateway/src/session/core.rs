//! The transport-neutral session core: what an authenticated session does with a client
//! frame, the rooms it is in, and its cleanup.
//!
//! The WebSocket loop ([`super::ws`]) and the fallback transports (`crate::fallback`) both
//! drive a [`Session`]; neither the core nor the frames it queues know which transport carries
//! them.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_protocol::{
    parse_client_frame, parse_client_message, Ack, ClientFrame, CloseCode, Direct, Encoding,
    ErrorCode, ErrorFrame, FrameError, Ping, ReconnectionFailed, Refreshed, ServerFrame, Welcome,
    PROTOCOL_VERSION,
};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::SpanKind;
use opentelemetry::{Context, KeyValue};

use super::budget::SharedBudget;
use crate::auth::{unix_now, unix_now_ms, AuthError, Claims};
use crate::config::SingleSocket;
use crate::node::{Node, NodeInner};
use crate::permissions;
use crate::registry::SessionHandle;
use crate::room::{encode, RoomError};
use crate::store::{Membership, Resume};
use crate::telemetry;

/// The rooms of one session: a boxed slice, reallocated on each join or leave (rare), so the
/// list costs 16 bytes in the session's state and holds no spare capacity.
#[derive(Default)]
struct Rooms(Box<[Membership]>);

impl Rooms {
    fn get(&self, room: &str) -> Option<&Membership> {
        self.0.iter().find(|m| &*m.room == room)
    }
    fn contains_key(&self, room: &str) -> bool {
        self.get(room).is_some()
    }
    fn remove(&mut self, room: &str) -> Option<Membership> {
        let i = self.0.iter().position(|m| &*m.room == room)?;
        let mut list = std::mem::take(&mut self.0).into_vec();
        let m = list.swap_remove(i);
        self.0 = list.into_boxed_slice();
        Some(m)
    }
    fn insert(&mut self, m: Membership) {
        let mut list = std::mem::take(&mut self.0).into_vec();
        list.reserve_exact(1);
        list.push(m);
        self.0 = list.into_boxed_slice();
    }
    /// Takes the last membership out.
    fn pop(&mut self) -> Option<Membership> {
        let mut list = std::mem::take(&mut self.0).into_vec();
        let m = list.pop();
        self.0 = list.into_boxed_slice();
        m
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// An `error` frame.
pub(crate) fn error_frame(
    code: ErrorCode,
    message: impl Into<String>,
    id: Option<String>,
) -> ServerFrame {
    ServerFrame::Error(ErrorFrame {
        code,
        message: message.into(),
        id,
    })
}

/// The span name of a room operation frame.
fn span_name(frame: &ClientFrame) -> Option<&'static str> {
    Some(match frame {
        ClientFrame::Join(_) => "room.join",
        ClientFrame::Leave(_) => "room.leave",
        ClientFrame::Publish(_) => "room.publish",
        ClientFrame::Reconnect(_) => "room.reconnect",
        ClientFrame::SetState(_) => "room.set_state",
        ClientFrame::ClaimAuthority(_) => "room.claim_authority",
        ClientFrame::ReleaseAuthority(_) => "room.release_authority",
        _ => return None,
    })
}

/// The tokio instant at which a token expiring at `exp` (Unix seconds) expires.
pub(crate) fn expiry_instant(exp: u64) -> tokio::time::Instant {
    // A far-future `exp` (up to u64::MAX) must not overflow the clock: cap it at ten years.
    const FAR: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
    let left = Duration::from_secs(exp.saturating_sub(unix_now())).min(FAR);
    let now = tokio::time::Instant::now();
    now.checked_add(left).unwrap_or(now + FAR)
}

/// The claims a session keeps for its permission checks: `None` when the token grants nothing
/// beyond its user and expiry.
fn grants(claims: Box<Claims>) -> Option<Box<Claims>> {
    let grants = claims.rooms.is_some() || claims.send.is_some() || claims.room.is_some();
    grants.then_some(claims)
}

/// An authenticated session, whatever its transport: the WebSocket loop ([`super::ws`]) and
/// the fallback transports (`crate::fallback`) drive the same core, so auth, single socket, rooms,
/// replay, dedupe and limits behave identically on every transport.
pub(crate) struct Session {
    pub(super) node: Node,
    /// What other tasks see of this session.
    pub(crate) handle: Arc<SessionHandle>,
    /// Rooms this session is in, bounded by `limits.max_rooms_per_session` (a short list: a
    /// scan is cheaper than a map and holds less memory per session).
    rooms: Rooms,
    /// The user's inbound budget on this node, shared with its other sessions.
    budget: Option<SharedBudget>,
    /// Consecutive rate-limited frames.
    strikes: u32,
    /// The token's grants (`rooms`, `send`, `room`), for permission checks (replaced by
    /// `refresh`); `None` when it grants none of them, the common case, which then holds no
    /// allocation. Boxed: the session lives inline in its task's state, which stays small.
    claims: Option<Box<Claims>>,
    /// Set once [`Session::finish`] completed; otherwise dropping the session cleans up (a
    /// panic or a cancelled task never leaves a ghost in the registry or the rooms).
    finished: bool,
    /// With tracing on, the (ended) connection span's context: the parent of the session's
    /// operation spans.
    pub(crate) trace: Option<Box<Context>>,
    /// The last error code replied (its position in `ErrorCode::ALL`, plus one), read by the
    /// operation's span.
    last_error: AtomicU8,
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let inner = self.node.inner.clone();
        self.release_budget();
        if inner.registry.remove(&self.handle) {
            inner
                .broker
                .release_user(&inner.id, &self.handle.user, &self.handle.id);
        }
        self.handle.shut_queue();
        let rooms = std::mem::take(&mut self.rooms.0).into_vec();
        if rooms.is_empty() {
            return;
        }
        let handle = self.handle.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for m in rooms {
                    inner.store.disconnect(&m, &handle).await;
                }
            });
        }
    }
}

impl Session {
    /// Registers the session (closing the sessions it replaces under `session.single_socket`) and
    /// queues `welcome`.
    pub(crate) async fn start(node: Node, claims: Box<Claims>, encoding: Encoding) -> Session {
        let inner = &node.inner;
        let limits = &inner.config.limits;
        let handle = SessionHandle::with_encoding(
            node.next_session_id(),
            claims.sub.as_str().into(),
            limits.send_queue_messages,
            limits.send_queue_bytes,
            inner.metrics.clone(),
            encoding,
        );
        let session_cfg = &inner.config.session;
        let replaced = inner.registry.insert(
            handle.clone(),
            claims.device.as_deref(),
            session_cfg.single_socket,
            session_cfg.max_sessions_per_user,
        );
        for old in replaced {
            old.close(CloseCode::Replaced);
        }
        // Only the `user` scope spans the cluster; `device` and `off` apply per node.
        if session_cfg.single_socket == SingleSocket::User {
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
        handle.set_expiry(inner.timers.nanos_at(expiry_instant(claims.exp)));
        handle.enqueue_frame(&welcome);
        tracing::debug!(session = %handle.id, user = %handle.user, "session started");
        Session {
            budget: Some(inner.budgets.acquire(&handle.user, Instant::now())),
            strikes: 0,
            claims: grants(claims),
            rooms: Rooms::default(),
            handle,
            node,
            finished: false,
            trace: None,
            last_error: AtomicU8::new(0),
        }
    }

    /// Leaves the registry and turns room memberships away (or removes them), then discards
    /// whatever was still queued.
    pub(crate) async fn finish(&mut self) {
        let inner = self.node.inner.clone();
        // One at a time, so a cancelled finish leaves the rest to `Drop`.
        while let Some(m) = self.rooms.pop() {
            inner.store.disconnect(&m, &self.handle).await;
        }
        self.release_budget();
        if inner.registry.remove(&self.handle) {
            inner
                .broker
                .release_user(&inner.id, &self.handle.user, &self.handle.id);
        }
        self.handle.shut_queue();
        self.finished = true;
    }

    /// The token's grants for the permission checks that read no more than them (`sub` is
    /// empty when the token granted nothing).
    fn grants(&self) -> &Claims {
        static NONE: Claims = Claims {
            sub: String::new(),
            exp: 0,
            rooms: None,
            send: None,
            room: None,
            device: None,
        };
        self.claims.as_deref().unwrap_or(&NONE)
    }

    /// Gives the user's budget back (once).
    fn release_budget(&mut self) {
        if let Some(budget) = self.budget.take() {
            let inner = &self.node.inner;
            inner
                .budgets
                .release(&self.handle.user, budget, Instant::now());
        }
    }

    /// Takes a token from the user's frame budget (`send == false`) or `send` budget.
    fn spend(&self, send: bool) -> bool {
        let Some(budget) = &self.budget else {
            return false;
        };
        self.node.inner.budgets.spend(budget, send, Instant::now())
    }

    fn reply(&self, frame: &ServerFrame) {
        self.handle.enqueue_frame(frame);
    }

    pub(super) fn reply_error(
        &self,
        code: ErrorCode,
        message: impl Into<String>,
        id: Option<String>,
    ) {
        self.note_error(code);
        self.node
            .inner
            .metrics
            .errors_total
            .with_label_values(&[code.as_str()])
            .inc();
        self.reply(&error_frame(code, message, id));
    }

    fn note_error(&self, code: ErrorCode) {
        let i = ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0);
        self.last_error.store(i as u8 + 1, Ordering::Relaxed);
    }

    /// Whether the session may join (or resume) `room`; `join_token` as presented.
    async fn may_join(&self, room: &str, join_token: Option<&str>) -> Result<(), &'static str> {
        let id = &self.handle.id;
        let claims = match &self.claims {
            Some(c) => std::borrow::Cow::Borrowed(&**c),
            None => std::borrow::Cow::Owned(Claims {
                sub: self.handle.user.to_string(),
                ..Claims::default()
            }),
        };
        permissions::check_join(&self.node, &claims, id, room, join_token)
            .await
            .map_err(|f| f.0)
    }

    fn room_error(&self, e: RoomError, id: Option<String>) {
        self.reply_error(e.code, e.message, id);
    }

    /// A room operation of a member failed: replies the error. When the store no longer
    /// knows the membership the session holds (cluster mode: lost with the broker's data,
    /// turned away after this node was taken for gone, or resumed elsewhere), the session is
    /// closed with 1011 at once (the queued error may not be written) so the client resumes
    /// and learns what is left of it.
    fn member_error(&self, e: RoomError, id: Option<String>) -> Option<CloseCode> {
        let lost = e.code == ErrorCode::NotInRoom;
        self.room_error(e, id);
        if lost {
            tracing::info!(
                session = %self.handle.id,
                "the membership is gone from the room store; closing so the client resumes"
            );
            return Some(CloseCode::InternalError);
        }
        None
    }

    /// Handles one text frame; returns a close code when the session must end.
    pub(crate) async fn on_text(&mut self, text: &str) -> Option<CloseCode> {
        self.on_parsed(parse_client_frame(text)).await
    }

    /// Handles one binary frame (MessagePack sessions); returns a close code when the session
    /// must end.
    pub(crate) async fn on_message(&mut self, bytes: &[u8]) -> Option<CloseCode> {
        self.on_parsed(parse_client_message(self.handle.encoding, bytes))
            .await
    }

    /// Handles a binary frame on a JSON session: refused like any invalid frame, and counted
    /// against the inbound rate limit like every other frame.
    pub(crate) async fn on_unexpected_binary(&mut self) -> Option<CloseCode> {
        self.on_parsed(Err(FrameError {
            code: ErrorCode::InvalidFrame,
            message: "binary frames need the holdfast.v1.msgpack subprotocol; send JSON text"
                .into(),
            id: None,
        }))
        .await
    }

    async fn on_parsed(&mut self, parsed: Result<ClientFrame, FrameError>) -> Option<CloseCode> {
        let inner = self.node.inner.clone();
        inner.metrics.messages_received.inc();
        if !self.spend(false) {
            self.strikes += 1;
            if self.strikes >= inner.config.limits.rate_limit_strikes {
                return Some(CloseCode::RateLimited);
            }
            // The id is still read, so the client knows which frame to retry.
            let id = match parsed {
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
        let frame = match parsed {
            Ok(f) => f,
            Err(e) => {
                self.reply_error(e.code, e.message, e.id);
                return None;
            }
        };
        if inner.telemetry.enabled() {
            if let Some(name) = span_name(&frame) {
                return self.traced(name, inner, frame).await;
            }
        }
        self.handle(inner, frame).await
    }

    /// Handles a room operation in a span named `name` (a child of a publish's
    /// `traceparent`, else of the connection's span), with the room and the outcome.
    async fn traced(
        &mut self,
        name: &'static str,
        inner: Arc<NodeInner>,
        frame: ClientFrame,
    ) -> Option<CloseCode> {
        let base = self.trace.as_deref().cloned().unwrap_or_default();
        let (room, tp) = match &frame {
            ClientFrame::Join(r) => (r.room.as_str(), None),
            ClientFrame::Leave(r) => (r.room.as_str(), None),
            ClientFrame::Publish(p) => (p.room.as_str(), p.traceparent.as_deref()),
            ClientFrame::Reconnect(r) => (r.room.as_str(), None),
            ClientFrame::SetState(f) => (f.room.as_str(), None),
            ClientFrame::ClaimAuthority(r) | ClientFrame::ReleaseAuthority(r) => {
                (r.room.as_str(), None)
            }
            _ => ("", None),
        };
        let parent = telemetry::parent_from(tp, &base);
        let attributes = vec![
            KeyValue::new("holdfast.room", telemetry::bounded(room)),
            KeyValue::new("holdfast.session_id", self.handle.id.to_string()),
            KeyValue::new("holdfast.node_id", self.node.inner.id.to_string()),
        ];
        let Some(cx) = inner
            .telemetry
            .start(name, SpanKind::Server, &parent, attributes)
        else {
            return self.handle(inner, frame).await;
        };
        self.last_error.store(0, Ordering::Relaxed);
        let close = self.handle(inner, frame).with_context(cx.clone()).await;
        let code = match self.last_error.swap(0, Ordering::Relaxed) {
            0 => None,
            i => ErrorCode::ALL.get(usize::from(i) - 1).copied(),
        };
        match code {
            None => telemetry::end(&cx, "ok", false),
            Some(c) => telemetry::end(&cx, c.as_str(), true),
        }
        close
    }

    async fn handle(&mut self, inner: Arc<NodeInner>, frame: ClientFrame) -> Option<CloseCode> {
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
                } else if let Err(why) = self.may_join(&r.room, r.token.as_deref()).await {
                    self.reply_error(ErrorCode::Forbidden, why, r.id);
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
                Some(_) if !permissions::may_publish(&inner.config, self.grants(), &p.room) => {
                    self.reply_error(ErrorCode::Forbidden, "publishing here is not allowed", p.id)
                }
                Some(m) => {
                    // With tracing on, receivers continue the publish's span.
                    let traceparent = match inner.telemetry.enabled() {
                        true => telemetry::traceparent_of(&Context::current()).or(p.traceparent),
                        false => p.traceparent,
                    };
                    let r = inner
                        .store
                        .publish(m, &self.handle, p.data, p.id.clone(), traceparent)
                        .await;
                    if let Err(e) = r {
                        if let Some(code) = self.member_error(e, p.id) {
                            return Some(code);
                        }
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
                        if let Some(code) = self.member_error(e, r.id) {
                            return Some(code);
                        }
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
                        if let Some(code) = self.member_error(e, r.id) {
                            return Some(code);
                        }
                    }
                }
            },
            ClientFrame::Send(s) if !permissions::may_send(&inner.config, self.grants(), &s.to) => {
                self.reply_error(ErrorCode::Forbidden, "you may not message this user", s.id)
            }
            ClientFrame::Send(s) if !self.spend(true) => self.reply_error(
                ErrorCode::RateLimited,
                "send rate limit exceeded; message dropped",
                s.id,
            ),
            ClientFrame::Send(s) => {
                let text = encode(&ServerFrame::Message(Direct {
                    from: self.handle.user.to_string(),
                    ts: unix_now_ms(),
                    data: s.data,
                }));
                let delivered = inner.registry.deliver(&s.to, &text)
                    || inner.broker.route_direct(&inner.id, &s.to, text).await;
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
                } else if let Err(why) = self.may_join(&r.room, r.join_token.as_deref()).await {
                    inner.metrics.reconnection_validation_failures.inc();
                    self.reply(&failed(ErrorCode::Forbidden, why));
                } else {
                    let req = Resume {
                        room: r.room.clone(),
                        player_id: r.player_id.clone(),
                        token: r.token.clone(),
                        last_sequence: r.last_sequence,
                        epoch: r.epoch.clone(),
                        id: r.id.clone(),
                    };
                    match inner.store.reconnect(req, &self.handle).await {
                        Ok(m) => {
                            self.rooms.insert(m);
                        }
                        Err(e) => {
                            self.note_error(e.code);
                            self.reply(&failed(e.code, e.message));
                        }
                    }
                }
            }
            ClientFrame::Refresh(r) => match inner.verifier.verify(&r.token).await {
                Ok(claims) if *claims.sub == *self.handle.user => {
                    let expiry = inner.timers.nanos_at(expiry_instant(claims.exp));
                    self.handle.set_expiry(expiry);
                    self.reply(&ServerFrame::Refreshed(Refreshed {
                        expires_at: claims.exp,
                        id: r.id,
                    }));
                    self.claims = grants(Box::new(claims));
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
            ClientFrame::SetState(f) => match self.rooms.get(f.room.as_str()) {
                None => self.reply_error(ErrorCode::NotInRoom, "not a member of the room", f.id),
                Some(m) => {
                    let res = inner
                        .store
                        .set_state(m, &self.handle, f.state, f.id.clone())
                        .await;
                    if let Err(e) = res {
                        if let Some(code) = self.member_error(e, f.id) {
                            return Some(code);
                        }
                    }
                }
            },
        }
        None
    }
}
