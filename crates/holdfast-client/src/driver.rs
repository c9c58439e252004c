//! The connection task: owns the socket, the room memberships and the pending requests, and
//! reconnects and resumes when the connection is lost.
//!
//! # Life of the task
//! 1. [`Driver::serve`] runs one connection: it resumes every known room, sends the requests
//!    that waited for a connection, then loops over inbound frames, commands from the handles,
//!    the dead-connection deadline and the token-refresh timer.
//! 2. When the connection ends, [`Driver::on_connection_lost`] sorts the pending requests:
//!    publishes and leaves are kept to be resent (the gateway dedupes publishes by id), joins,
//!    sends and authority requests that were on the wire fail with
//!    [`RequestError::ConnectionLost`] because they may or may not have been applied.
//! 3. Unless the close code is terminal, [`Driver::reconnect`] waits (backoff with jitter, or
//!    the drain hint from `server_shutdown`), renews the token when it can, and connects again;
//!    commands keep being accepted meanwhile and wait for the next connection.
//! 4. When the client stops for good, [`Driver::finish`] fails what is still pending and sends
//!    [`ClientEvent::Closed`].
//!
//! A publish the gateway dropped for the rate limit (a `rate_limited` error) is resent after a
//! pause with the same id, so it is delayed, not lost; other requests get the error. When the
//! error names no frame, every publish still awaiting its ack is resent (the gateway dedupes
//! them by id).
//!
//! Room frames pass through each room's [`StreamPosition`], so replays never duplicate what the
//! application already has and losses surface as [`ClientEvent::Gap`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use holdfast_protocol::{
    Ack, ClientFrame, CloseCode, ErrorCode, ErrorFrame, Joined, Left, Publish, Reconnect,
    Reconnected, Refresh, RoomRequest, Send, ServerFrame, SetState, Welcome,
};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::Value;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::backoff::Backoff;
use crate::client::{Command, Membership, Reply, RoomAction};
use crate::config::{ClientConfig, TokenFuture, TokenRefresher};
use crate::error::{CloseError, RequestError};
use crate::event::ClientEvent;
use crate::position::{StreamPosition, Verdict};
use crate::transport::{self, close_parts, Ws};

/// How long to wait for the gateway's close frame after the client closed.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long to wait before retrying a token refresh that failed.
const REFRESH_RETRY: Duration = Duration::from_secs(1);

/// How long to wait before resending publishes the gateway dropped for the rate limit; long
/// enough for its token bucket to refill.
const RATE_LIMIT_RETRY: Duration = Duration::from_secs(1);

/// One room this client is a member of.
#[derive(Debug)]
struct Room {
    /// The member's id in the room, needed to resume it.
    player_id: String,
    /// The latest reconnection token; each is single-use, so it is replaced on every resume.
    token: Option<String>,
    /// The join token the room was joined with, presented again on resume.
    join_token: Option<String>,
    /// What the application has seen of the room's stream.
    position: StreamPosition,
    /// True once the membership is live on the current connection (joined, or resumed);
    /// publishes to a room that is not live wait, because the gateway would refuse them.
    live: bool,
}

/// A request waiting for its reply.
#[derive(Debug)]
struct Pending {
    /// Whether the request went out on the current connection.
    sent: bool,
    /// What it is and where its reply goes.
    kind: PendingKind,
}

#[derive(Debug)]
enum PendingKind {
    Join {
        room: String,
        token: Option<String>,
        reply: Reply<Membership>,
    },
    Leave {
        room: String,
        reply: Reply<()>,
    },
    Publish {
        room: String,
        data: Value,
        reply: Reply<u64>,
    },
    Send {
        to: String,
        data: Value,
        reply: Reply<()>,
    },
    Authority {
        room: String,
        action: RoomAction,
        reply: Reply<()>,
    },
    /// A `reconnect` for a room, sent when the connection opened; never resent.
    Resume {
        room: String,
    },
    /// A `refresh` on the live connection; never resent.
    Refresh,
}

/// How one connection ended.
enum Ended {
    /// The connection was lost or closed by the gateway.
    Dropped { code: Option<u16>, reason: String },
    /// The client stops for good.
    Stopped(CloseError),
}

/// What woke the connection loop.
enum Step {
    Inbound(Option<Result<Message, WsError>>),
    Close,
    Command(Option<Command>),
    Dead,
    StartRefresh,
    Refreshed(Result<String, String>),
    Retransmit,
}

/// The state of the connection task.
pub(crate) struct Driver {
    /// Where to connect.
    url: String,
    /// The latest token, presented on every (re)connection.
    token: String,
    /// Renews the token; see [`TokenRefresher`].
    refresher: Option<TokenRefresher>,
    /// The delay policy between reconnection attempts.
    backoff: Backoff,
    /// Bound on one connection attempt.
    connect_timeout: Duration,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The frame encoding of every connection.
    encoding: holdfast_protocol::Encoding,
    /// Bound on `pending`; the command branch is disabled while it is reached.
    max_in_flight: usize,
    /// Requests from the handles.
    commands: mpsc::Receiver<Command>,
    /// Woken by [`crate::Client::close`].
    close: Arc<Notify>,
    /// The application's event stream.
    events: mpsc::Sender<ClientEvent>,
    /// The per-room streams, fed besides `events`.
    room_streams: crate::event::RoomStreams,
    /// Where the terminal reason is published for the handles.
    done: watch::Sender<Option<CloseError>>,
    /// Random per-client prefix of request ids, so ids stay unique across clients of one user.
    id_prefix: String,
    /// The next request number; request ids are `id_prefix` followed by it.
    next_order: u64,
    /// Room memberships, resumed after every reconnect.
    rooms: HashMap<String, Room>,
    /// Requests awaiting replies, in the order they were made (a `BTreeMap` so resends keep
    /// that order).
    pending: BTreeMap<u64, Pending>,
    /// Reconnection attempts since the last connection that stayed up; drives the backoff.
    failures: u32,
    /// The current token's expiry, Unix seconds, from `welcome` or `refreshed`.
    expires_at: u64,
    /// When to renew the token on the live connection.
    refresh_at: Option<Instant>,
    /// The reconnect delay suggested by `server_shutdown` on the current connection.
    shutdown_hint: Option<Duration>,
    /// When to resend the unacknowledged publishes after a `rate_limited` error.
    retransmit_at: Option<Instant>,
}

impl Driver {
    pub(crate) fn new(
        config: ClientConfig,
        commands: mpsc::Receiver<Command>,
        close: Arc<Notify>,
        events: mpsc::Sender<ClientEvent>,
        room_streams: crate::event::RoomStreams,
        done: watch::Sender<Option<CloseError>>,
    ) -> Self {
        let id_prefix = format!("{}-", Alphanumeric.sample_string(&mut rand::rng(), 8));
        Driver {
            url: config.url,
            token: config.token,
            refresher: config.refresher,
            backoff: config.backoff,
            connect_timeout: config.connect_timeout,
            tls: config.tls.clone(),
            encoding: config.encoding,
            max_in_flight: config.max_in_flight.max(1),
            commands,
            close,
            events,
            room_streams,
            done,
            id_prefix,
            next_order: 0,
            rooms: HashMap::new(),
            pending: BTreeMap::new(),
            failures: 0,
            expires_at: 0,
            refresh_at: None,
            shutdown_hint: None,
            retransmit_at: None,
        }
    }

    /// Runs the client from its first, already welcomed, connection until it stops for good.
    pub(crate) async fn run(mut self, ws: Ws, welcome: Welcome) {
        let mut ws = ws;
        let mut welcome = welcome;
        let reason = loop {
            let started = Instant::now();
            let stable_after = idle_window(&welcome).unwrap_or(Duration::from_secs(10));
            let (code, reason) = match self.serve(ws, welcome).await {
                Ended::Stopped(reason) => break reason,
                Ended::Dropped { code, reason } => (code, reason),
            };
            if started.elapsed() >= stable_after {
                self.failures = 0;
            }
            self.on_connection_lost();
            let terminal = self.terminal(code, &reason);
            tracing::info!(?code, %reason, will_reconnect = terminal.is_none(), "disconnected");
            self.emit(ClientEvent::Disconnected {
                code,
                reason,
                will_reconnect: terminal.is_none(),
            })
            .await;
            if let Some(terminal) = terminal {
                break terminal;
            }
            match self.reconnect().await {
                Ok((next_ws, next_welcome)) => {
                    ws = next_ws;
                    welcome = next_welcome;
                }
                Err(reason) => break reason,
            }
        };
        self.finish(reason).await;
    }

    /// Whether a close with `code` ends the client, and with which reason.
    fn terminal(&self, code: Option<u16>, reason: &str) -> Option<CloseError> {
        let known = CloseCode::from_code(code?)?;
        let retry = match known {
            // An expired token is curable when the application can supply a new one.
            CloseCode::TokenExpired => self.refresher.is_some(),
            other => other.should_reconnect(),
        };
        (!retry).then(|| CloseError::Terminal {
            code: known.code(),
            reason: reason.to_owned(),
        })
    }

    /// Waits, then connects again until a connection is welcomed or a terminal error occurs.
    async fn reconnect(&mut self) -> Result<(Ws, Welcome), CloseError> {
        let mut delay = match self.shutdown_hint.take() {
            Some(hint) => {
                self.failures = 0;
                self.backoff.jitter_hint(hint)
            }
            None => self.backoff.delay(self.failures),
        };
        loop {
            tracing::debug!(?delay, attempt = self.failures, "reconnecting");
            self.offline(tokio::time::sleep(delay)).await?;
            self.failures = self.failures.saturating_add(1);
            delay = self.backoff.delay(self.failures);
            if let Some(refresher) = self.refresher.clone() {
                match self.offline(refresher.fetch()).await? {
                    Ok(token) => self.token = token,
                    Err(e) => {
                        tracing::warn!(error = %e, "token refresh failed; retrying later");
                        continue;
                    }
                }
            }
            let (url, token, timeout, tls, encoding) = (
                self.url.clone(),
                self.token.clone(),
                self.connect_timeout,
                self.tls.clone(),
                self.encoding,
            );
            let attempt =
                async move { transport::open(&url, &token, timeout, tls, encoding).await };
            match self.offline(attempt).await? {
                Ok(connection) => return Ok(connection),
                Err(e) => {
                    if let Some(terminal) = e.terminal() {
                        return Err(terminal);
                    }
                    tracing::debug!(error = %e, "reconnection attempt failed");
                }
            }
        }
    }

    /// Drives `fut` to completion while there is no connection, queueing the commands that
    /// arrive meanwhile. Fails when the application closes the client.
    async fn offline<F: std::future::Future>(&mut self, fut: F) -> Result<F::Output, CloseError> {
        tokio::pin!(fut);
        loop {
            let can_accept = self.pending.len() < self.max_in_flight;
            tokio::select! {
                out = &mut fut => return Ok(out),
                () = self.close.notified() => return Err(CloseError::ClosedByApplication),
                cmd = self.commands.recv(), if can_accept => match cmd {
                    Some(cmd) => {
                        self.accept(cmd);
                    }
                    None => return Err(CloseError::ClosedByApplication),
                },
            }
        }
    }

    /// Runs one welcomed connection until it ends.
    async fn serve(&mut self, mut ws: Ws, welcome: Welcome) -> Ended {
        self.shutdown_hint = None;
        self.expires_at = welcome.expires_at;
        self.refresh_at = self.refresh_deadline();
        let idle = idle_window(&welcome);
        tracing::info!(session = %welcome.session_id, node = %welcome.node_id, "connected");
        self.emit(ClientEvent::Connected {
            user_id: welcome.user_id,
            session_id: welcome.session_id,
            node_id: welcome.node_id,
        })
        .await;
        if let Err(e) = self.on_connected(&mut ws).await {
            return dropped(e);
        }
        let mut deadline = idle.map(|d| Instant::now() + d);
        let mut refreshing: Option<TokenFuture> = None;
        loop {
            let can_accept = self.pending.len() < self.max_in_flight;
            let refresh_due = self.refresh_at.filter(|_| refreshing.is_none());
            let step = tokio::select! {
                msg = ws.next() => Step::Inbound(msg),
                () = self.close.notified() => Step::Close,
                cmd = self.commands.recv(), if can_accept => Step::Command(cmd),
                () = sleep_until_opt(deadline) => Step::Dead,
                () = sleep_until_opt(refresh_due) => Step::StartRefresh,
                token = poll_opt(&mut refreshing) => Step::Refreshed(token),
                () = sleep_until_opt(self.retransmit_at) => Step::Retransmit,
            };
            let result = match step {
                Step::Inbound(Some(Ok(msg))) => {
                    deadline = idle.map(|d| Instant::now() + d);
                    match msg {
                        Message::Text(_) | Message::Binary(_) => {
                            match transport::decode(self.encoding, msg) {
                                Some(Ok(frame)) => self.on_frame(&mut ws, frame).await,
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "ignoring an unreadable frame from the gateway");
                                    Ok(())
                                }
                                None => Ok(()),
                            }
                        }
                        Message::Close(frame) => {
                            let (code, reason) = close_parts(frame.as_ref());
                            return Ended::Dropped { code, reason };
                        }
                        _ => Ok(()),
                    }
                }
                Step::Inbound(Some(Err(e))) => Err(e),
                Step::Inbound(None) => {
                    return Ended::Dropped {
                        code: None,
                        reason: "the connection ended without a close frame".into(),
                    }
                }
                Step::Close | Step::Command(None) => {
                    close_gracefully(&mut ws).await;
                    return Ended::Stopped(CloseError::ClosedByApplication);
                }
                Step::Command(Some(cmd)) => {
                    let order = self.accept(cmd);
                    if self.sendable(order) {
                        self.send_pending(&mut ws, order).await
                    } else {
                        Ok(())
                    }
                }
                Step::Dead => {
                    return Ended::Dropped {
                        code: None,
                        reason: format!(
                            "no traffic from the gateway for {:?}",
                            idle.unwrap_or_default()
                        ),
                    }
                }
                Step::StartRefresh => {
                    self.refresh_at = None;
                    refreshing = self.refresher.as_ref().map(TokenRefresher::fetch);
                    Ok(())
                }
                Step::Refreshed(token) => {
                    refreshing = None;
                    self.on_token(&mut ws, token).await
                }
                Step::Retransmit => {
                    self.retransmit_at = None;
                    self.flush(&mut ws).await
                }
            };
            if let Err(e) = result {
                return dropped(e);
            }
        }
    }

    /// Resumes every room on a new connection and sends the requests that were waiting.
    async fn on_connected(&mut self, ws: &mut Ws) -> Result<(), WsError> {
        let mut names: Vec<String> = self.rooms.keys().cloned().collect();
        names.sort();
        for name in names {
            let Some(room) = self.rooms.get(&name) else {
                continue;
            };
            let (player_id, last_sequence) = (room.player_id.clone(), room.position.seq());
            let epoch = Some(room.position.epoch().to_owned()).filter(|e| !e.is_empty());
            let join_token = room.join_token.clone();
            let Some(token) = room.token.clone() else {
                self.lose_room(
                    &name,
                    ErrorCode::ReconnectionFailed,
                    "the gateway issued no reconnection token".into(),
                )
                .await;
                continue;
            };
            let order = self.next_order();
            let frame = ClientFrame::Reconnect(Reconnect {
                room: name.clone(),
                player_id,
                token,
                last_sequence,
                epoch,
                join_token,
                id: Some(self.id_for(order)),
            });
            self.pending.insert(
                order,
                Pending {
                    sent: true,
                    kind: PendingKind::Resume { room: name },
                },
            );
            transport::write(ws, self.encoding, &frame).await?;
        }
        self.flush(ws).await
    }

    /// Sends, in order, every pending request that is unsent and may go out now.
    async fn flush(&mut self, ws: &mut Ws) -> Result<(), WsError> {
        let orders: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.sent)
            .map(|(order, _)| *order)
            .collect();
        for order in orders {
            if self.sendable(order) {
                self.send_pending(ws, order).await?;
            }
        }
        Ok(())
    }

    /// Whether pending request `order` can be sent on the current connection: room requests
    /// other than `leave` wait until their room is live again.
    fn sendable(&self, order: u64) -> bool {
        let room = match self.pending.get(&order).map(|p| &p.kind) {
            Some(PendingKind::Publish { room, .. } | PendingKind::Authority { room, .. }) => room,
            Some(_) => return true,
            None => return false,
        };
        match self.rooms.get(room) {
            Some(r) => r.live,
            None => true,
        }
    }

    /// Writes pending request `order` and marks it sent.
    async fn send_pending(&mut self, ws: &mut Ws, order: u64) -> Result<(), WsError> {
        let id = Some(self.id_for(order));
        let Some(pending) = self.pending.get_mut(&order) else {
            return Ok(());
        };
        let frame = match &pending.kind {
            PendingKind::Join { room, token, .. } => ClientFrame::Join(holdfast_protocol::Join {
                room: room.clone(),
                token: token.clone(),
                id,
            }),
            PendingKind::Leave { room, .. } => ClientFrame::Leave(RoomRequest {
                room: room.clone(),
                id,
            }),
            PendingKind::Publish { room, data, .. } => ClientFrame::Publish(Publish {
                room: room.clone(),
                data: data.clone(),
                id,
                traceparent: None,
            }),
            PendingKind::Send { to, data, .. } => ClientFrame::Send(Send {
                to: to.clone(),
                data: data.clone(),
                id,
            }),
            PendingKind::Authority { room, action, .. } => {
                let request = RoomRequest {
                    room: room.clone(),
                    id,
                };
                match action {
                    RoomAction::Claim => ClientFrame::ClaimAuthority(request),
                    RoomAction::Release => ClientFrame::ReleaseAuthority(request),
                    RoomAction::SetState(state) => ClientFrame::SetState(SetState {
                        room: request.room,
                        state: state.clone(),
                        id: request.id,
                    }),
                }
            }
            // These are written when they are created and never resent.
            PendingKind::Resume { .. } | PendingKind::Refresh => return Ok(()),
        };
        pending.sent = true;
        transport::write(ws, self.encoding, &frame).await
    }

    /// Records a command as a pending request (not yet sent) and returns its number.
    fn accept(&mut self, cmd: Command) -> u64 {
        let kind = match cmd {
            Command::Join { room, token, reply } => PendingKind::Join { room, token, reply },
            Command::Leave { room, reply } => PendingKind::Leave { room, reply },
            Command::Publish { room, data, reply } => PendingKind::Publish { room, data, reply },
            Command::Send { to, data, reply } => PendingKind::Send { to, data, reply },
            Command::Authority {
                room,
                action,
                reply,
            } => PendingKind::Authority {
                room,
                action,
                reply,
            },
        };
        let order = self.next_order();
        self.pending.insert(order, Pending { sent: false, kind });
        order
    }

    fn next_order(&mut self) -> u64 {
        self.next_order += 1;
        self.next_order
    }

    fn id_for(&self, order: u64) -> String {
        format!("{}{order}", self.id_prefix)
    }

    /// Removes and returns the pending request a reply's `id` names.
    fn take(&mut self, id: Option<&str>) -> Option<PendingKind> {
        let order = self.order_of(id?)?;
        self.pending.remove(&order).map(|p| p.kind)
    }

    /// The request number inside one of this client's request ids.
    fn order_of(&self, id: &str) -> Option<u64> {
        id.strip_prefix(&self.id_prefix)?.parse().ok()
    }

    /// Handles one text frame from the gateway.
    async fn on_frame(&mut self, ws: &mut Ws, frame: ServerFrame) -> Result<(), WsError> {
        match frame {
            ServerFrame::Welcome(_) => tracing::warn!("ignoring a second welcome"),
            ServerFrame::Joined(joined) => {
                for event in self.on_joined(joined) {
                    self.emit(event).await;
                }
            }
            ServerFrame::Left(left) => self.on_left(left),
            // Presence is state, outside the room's stream: no position to track.
            ServerFrame::Presence(p) => {
                if self.rooms.contains_key(&p.room) {
                    self.emit(ClientEvent::Presence(p)).await;
                }
            }
            ServerFrame::Event(_) | ServerFrame::AuthorityChanged(_) | ServerFrame::StateSet(_) => {
                let mut out = Vec::with_capacity(2);
                self.judge(frame, &mut out);
                for event in out {
                    self.emit(event).await;
                }
            }
            ServerFrame::Ack(ack) => self.on_ack(ack),
            ServerFrame::Message(direct) => self.emit(ClientEvent::Message(direct)).await,
            ServerFrame::Refreshed(refreshed) => {
                self.take(refreshed.id.as_deref());
                self.expires_at = refreshed.expires_at;
                self.refresh_at = self.refresh_deadline();
            }
            ServerFrame::Reconnected(resumed) => self.on_reconnected(ws, resumed).await?,
            ServerFrame::ReconnectionFailed(failed) => {
                self.take(failed.id.as_deref());
                tracing::warn!(room = %failed.room, code = %failed.code, "resume failed");
                self.lose_room(&failed.room, failed.code, failed.message)
                    .await;
            }
            ServerFrame::Error(error) => self.on_error(error).await,
            ServerFrame::Pong(_) => {}
            ServerFrame::ServerShutdown(shutdown) => {
                let after = Duration::from_millis(shutdown.reconnect_after_ms);
                tracing::info!(reason = %shutdown.reason, ?after, "the gateway is draining");
                self.shutdown_hint = Some(after);
                self.emit(ClientEvent::ServerShutdown {
                    reason: shutdown.reason,
                    reconnect_after: after,
                })
                .await;
            }
        }
        Ok(())
    }

    /// Passes one room frame through its room's position: appends what the application
    /// should see (a gap first, when frames were lost) to `out`.
    fn judge(&mut self, frame: ServerFrame, out: &mut Vec<ClientEvent>) {
        let (Some(room), Some(seq), Some(epoch)) = (frame.room(), frame.seq(), epoch_of(&frame))
        else {
            out.extend(to_event(frame));
            return;
        };
        let Some(state) = self.rooms.get_mut(room) else {
            // A frame for a room this client does not track (it raced a leave): the
            // application still sees it rather than losing it silently.
            out.extend(to_event(frame));
            return;
        };
        match state.position.observe(seq, epoch) {
            Verdict::Deliver | Verdict::NewEpoch => {}
            Verdict::Duplicate => {
                tracing::debug!(room, seq, "dropping a duplicate");
                return;
            }
            Verdict::Gap { from, to } => {
                tracing::warn!(room, from, to, "frames missing from the room's stream");
                out.push(ClientEvent::Gap {
                    room: room.to_owned(),
                    from,
                    to,
                    epoch: epoch.to_owned(),
                });
            }
        }
        out.extend(to_event(frame));
    }

    fn on_joined(&mut self, joined: Joined) -> Vec<ClientEvent> {
        let (reply, join_token) = match self.take(joined.id.as_deref()) {
            Some(PendingKind::Join { reply, token, .. }) => (Some(reply), token),
            Some(other) => {
                tracing::warn!(?other, "joined answered another request");
                (None, None)
            }
            None => (None, None),
        };
        self.rooms.insert(
            joined.room.clone(),
            Room {
                player_id: joined.player_id.clone(),
                token: joined.reconnection_token,
                join_token,
                position: StreamPosition::new(joined.seq, joined.epoch.clone()),
                live: true,
            },
        );
        // The messages after the room's state (before this member's position): delivered
        // right after the join, with the range the room no longer held as a gap.
        let mut out = Vec::new();
        if let Some(gap) = joined.gap {
            out.push(ClientEvent::Gap {
                room: joined.room.clone(),
                from: gap.from,
                to: gap.to,
                epoch: gap.epoch,
            });
        }
        out.extend(joined.events.into_iter().filter_map(to_event));
        if let Some(reply) = reply {
            let _ = reply.send(Ok(Membership {
                room: joined.room,
                player_id: joined.player_id,
                members: joined.members,
                member_count: joined.member_count,
                authority: joined.authority,
                seq: joined.seq,
                epoch: joined.epoch,
                state: joined.state,
                state_seq: joined.state_seq,
            }));
        }
        out
    }

    fn on_left(&mut self, left: Left) {
        self.rooms.remove(&left.room);
        if let Some(PendingKind::Leave { reply, .. }) = self.take(left.id.as_deref()) {
            let _ = reply.send(Ok(()));
        }
    }

    fn on_ack(&mut self, ack: Ack) {
        match self.take(Some(&ack.id)) {
            Some(PendingKind::Publish { reply, .. }) => {
                let result = ack
                    .seq
                    .ok_or_else(|| RequestError::Protocol("publish ack without seq".into()));
                let _ = reply.send(result);
            }
            Some(
                PendingKind::Send { reply, .. }
                | PendingKind::Authority { reply, .. }
                | PendingKind::Leave { reply, .. },
            ) => {
                let _ = reply.send(Ok(()));
            }
            Some(PendingKind::Join { reply, .. }) => {
                let _ = reply.send(Err(RequestError::Protocol("join answered by ack".into())));
            }
            Some(PendingKind::Resume { .. } | PendingKind::Refresh) | None => {}
        }
    }

    async fn on_error(&mut self, error: ErrorFrame) {
        let server = || RequestError::from_server(error.code, error.message.clone());
        match self.take(error.id.as_deref()) {
            Some(PendingKind::Join { reply, .. }) => {
                let _ = reply.send(Err(server()));
            }
            Some(PendingKind::Leave { room, reply }) => {
                // Leaving a room the gateway no longer has this member in is a success.
                let result = if error.code == ErrorCode::NotInRoom {
                    self.rooms.remove(&room);
                    Ok(())
                } else {
                    Err(server())
                };
                let _ = reply.send(result);
            }
            Some(PendingKind::Publish { room, data, reply }) => {
                if error.code == ErrorCode::RateLimited {
                    // The frame was dropped unread: send it again after a pause.
                    self.retry_publish(error.id.as_deref(), room, data, reply);
                } else {
                    let _ = reply.send(Err(server()));
                }
            }
            Some(PendingKind::Send { reply, .. } | PendingKind::Authority { reply, .. }) => {
                let _ = reply.send(Err(server()));
            }
            Some(PendingKind::Resume { room }) => {
                self.lose_room(&room, error.code, error.message).await;
            }
            Some(PendingKind::Refresh) => {
                tracing::warn!(code = %error.code, message = %error.message, "refresh refused");
            }
            None if error.code == ErrorCode::RateLimited => {
                // The dropped frame is unknown: resend every publish still awaiting its ack.
                tracing::warn!("the gateway dropped an unnamed frame for the rate limit");
                for pending in self.pending.values_mut() {
                    if matches!(pending.kind, PendingKind::Publish { .. }) {
                        pending.sent = false;
                    }
                }
                self.schedule_retransmit();
            }
            None => {
                tracing::warn!(code = %error.code, message = %error.message, "gateway error");
            }
        }
    }

    /// Puts a rate-limited publish back, unsent and under its original id, and schedules the
    /// resend.
    fn retry_publish(&mut self, id: Option<&str>, room: String, data: Value, reply: Reply<u64>) {
        let Some(order) = id.and_then(|id| self.order_of(id)) else {
            return;
        };
        tracing::debug!(order, "publish rate-limited; resending later");
        self.pending.insert(
            order,
            Pending {
                sent: false,
                kind: PendingKind::Publish { room, data, reply },
            },
        );
        self.schedule_retransmit();
    }

    fn schedule_retransmit(&mut self) {
        if self.retransmit_at.is_none() {
            self.retransmit_at = Some(Instant::now() + RATE_LIMIT_RETRY);
        }
    }

    /// Applies a successful resume: rotates the token, reports a gap, replays what was missed
    /// (minus what the application already has), then sends the requests that waited for the
    /// room.
    async fn on_reconnected(&mut self, ws: &mut Ws, resumed: Reconnected) -> Result<(), WsError> {
        self.take(resumed.id.as_deref());
        let Reconnected {
            room: name,
            player_id,
            events,
            recovered,
            gap,
            rolled_back,
            members,
            member_count,
            authority,
            seq,
            epoch,
            reconnection_token,
            recovered_from,
            id: _,
        } = resumed;
        let Some(room) = self.rooms.get_mut(&name) else {
            tracing::warn!(room = %name, "resumed a room this client does not track");
            return Ok(());
        };
        room.player_id = player_id;
        room.token = Some(reconnection_token);
        room.live = true;
        let mut out = vec![ClientEvent::Resumed {
            room: name.clone(),
            recovered,
            from_snapshot: recovered_from.is_some(),
            members,
            member_count,
            authority,
        }];
        if let Some(rb) = rolled_back {
            tracing::warn!(room = %name, from = rb.from, to = rb.to, "the gateway reports rolled-back frames");
            out.push(ClientEvent::RolledBack {
                room: name.clone(),
                from: rb.from,
                to: rb.to,
                epoch: rb.epoch,
            });
        }
        if let Some(gap) = gap {
            if let Some((from, to)) = room.position.skip_gap(gap.from, gap.to, &gap.epoch) {
                tracing::warn!(room = %name, from, to, "the gateway reports lost frames");
                out.push(ClientEvent::Gap {
                    room: name.clone(),
                    from,
                    to,
                    epoch: gap.epoch,
                });
            }
        }
        for frame in events {
            self.judge(frame, &mut out);
        }
        if let Some(room) = self.rooms.get_mut(&name) {
            // The resume's own messages (an authority_changed that gave authority back) are
            // not sent to the resuming member; its position continues after them.
            if let Some((from, to)) = room.position.catch_up(seq, &epoch) {
                tracing::debug!(room = %name, from, to, "skipping this member's own resume frames");
            }
        }
        for event in out {
            self.emit(event).await;
        }
        self.flush(ws).await
    }

    /// Forgets a room that could not be resumed and fails the requests that waited for it.
    async fn lose_room(&mut self, name: &str, code: ErrorCode, message: String) {
        if self.rooms.remove(name).is_none() {
            return;
        }
        let waiting: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                matches!(&p.kind,
                    PendingKind::Publish { room, .. } | PendingKind::Authority { room, .. }
                    if room == name)
            })
            .map(|(order, _)| *order)
            .collect();
        let lost = || RequestError::RoomLost {
            code,
            message: message.clone(),
        };
        for order in waiting {
            match self.pending.remove(&order).map(|p| p.kind) {
                Some(PendingKind::Publish { reply, .. }) => {
                    let _ = reply.send(Err(lost()));
                }
                Some(PendingKind::Authority { reply, .. }) => {
                    let _ = reply.send(Err(lost()));
                }
                _ => {}
            }
        }
        self.emit(ClientEvent::ResumeFailed {
            room: name.to_owned(),
            code,
            message,
        })
        .await;
    }

    /// A renewed token from the refresher: keep it for reconnects and send `refresh`.
    async fn on_token(
        &mut self,
        ws: &mut Ws,
        token: Result<String, String>,
    ) -> Result<(), WsError> {
        match token {
            Ok(token) => {
                self.token = token.clone();
                let order = self.next_order();
                let id = Some(self.id_for(order));
                self.pending.insert(
                    order,
                    Pending {
                        sent: true,
                        kind: PendingKind::Refresh,
                    },
                );
                transport::write(
                    ws,
                    self.encoding,
                    &ClientFrame::Refresh(Refresh { token, id }),
                )
                .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "token refresh failed; retrying");
                self.refresh_at = Some(Instant::now() + REFRESH_RETRY);
                Ok(())
            }
        }
    }

    /// When to renew the token: a fifth of its remaining life before it expires (between one
    /// second and one minute), and only when there is a refresher and an expiry.
    fn refresh_deadline(&self) -> Option<Instant> {
        self.refresher.as_ref()?;
        if self.expires_at == 0 {
            return None;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let remaining = self.expires_at.saturating_sub(now);
        let lead = (remaining / 5).clamp(1, 60);
        Some(Instant::now() + Duration::from_secs(remaining.saturating_sub(lead)))
    }

    /// Sorts the pending requests after the connection was lost.
    fn on_connection_lost(&mut self) {
        for room in self.rooms.values_mut() {
            room.live = false;
        }
        self.refresh_at = None;
        self.retransmit_at = None;
        let orders: Vec<u64> = self.pending.keys().copied().collect();
        for order in orders {
            let Some(pending) = self.pending.get_mut(&order) else {
                continue;
            };
            match &pending.kind {
                // Publishes are resent with the same id (the gateway dedupes them); a leave is
                // idempotent.
                PendingKind::Publish { .. } | PendingKind::Leave { .. } => pending.sent = false,
                PendingKind::Resume { .. } | PendingKind::Refresh => {
                    self.pending.remove(&order);
                }
                PendingKind::Join { .. }
                | PendingKind::Send { .. }
                | PendingKind::Authority { .. }
                    if pending.sent =>
                {
                    match self.pending.remove(&order).map(|p| p.kind) {
                        Some(PendingKind::Join { reply, .. }) => {
                            let _ = reply.send(Err(RequestError::ConnectionLost));
                        }
                        Some(
                            PendingKind::Send { reply, .. } | PendingKind::Authority { reply, .. },
                        ) => {
                            let _ = reply.send(Err(RequestError::ConnectionLost));
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }

    /// Stops for good: publishes the reason, fails everything pending, and tells the
    /// application.
    async fn finish(mut self, reason: CloseError) {
        tracing::info!(%reason, "client closed");
        self.done.send_replace(Some(reason.clone()));
        let failed = || RequestError::Closed(reason.clone());
        for (_, pending) in std::mem::take(&mut self.pending) {
            fail(pending.kind, failed());
        }
        self.commands.close();
        while let Ok(cmd) = self.commands.try_recv() {
            let order = self.accept(cmd);
            if let Some(pending) = self.pending.remove(&order) {
                fail(pending.kind, failed());
            }
        }
        self.room_streams.close();
        self.emit(ClientEvent::Closed(reason)).await;
    }

    /// Hands an event to the application (its room's streams first, then the client's stream),
    /// waiting while a stream is full. An application that dropped a stream simply gets no
    /// events on it.
    async fn emit(&self, event: ClientEvent) {
        self.room_streams.deliver(&event).await;
        let _ = self.events.send(event).await;
    }
}

/// Answers a request with `error`.
fn fail(kind: PendingKind, error: RequestError) {
    match kind {
        PendingKind::Join { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        PendingKind::Publish { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        PendingKind::Leave { reply, .. }
        | PendingKind::Send { reply, .. }
        | PendingKind::Authority { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        PendingKind::Resume { .. } | PendingKind::Refresh => {}
    }
}

fn dropped(e: WsError) -> Ended {
    Ended::Dropped {
        code: None,
        reason: e.to_string(),
    }
}

/// How long the connection may stay silent before it is presumed dead: the gateway pings every
/// `ping_interval_ms`, and gives up on a pong after `pong_timeout_ms`, so silence for both
/// means the path is gone. `None` when the gateway does not ping.
fn idle_window(welcome: &Welcome) -> Option<Duration> {
    (welcome.ping_interval_ms > 0).then(|| {
        Duration::from_millis(
            welcome
                .ping_interval_ms
                .saturating_add(welcome.pong_timeout_ms),
        )
    })
}

/// Sends close 1000 and waits briefly for the gateway's close frame.
async fn close_gracefully(ws: &mut Ws) {
    let frame = CloseFrame {
        code: WsCloseCode::Normal,
        reason: "".into(),
    };
    if ws.close(Some(frame)).await.is_ok() {
        let drain = async { while let Some(Ok(_)) = ws.next().await {} };
        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn poll_opt(fut: &mut Option<TokenFuture>) -> Result<String, String> {
    match fut {
        Some(fut) => fut.await,
        None => std::future::pending().await,
    }
}

/// The epoch of a room-scoped frame.
fn epoch_of(frame: &ServerFrame) -> Option<&str> {
    match frame {
        ServerFrame::Event(e) => Some(&e.epoch),
        ServerFrame::AuthorityChanged(a) => Some(&a.epoch),
        ServerFrame::Joined(j) => Some(&j.epoch),
        ServerFrame::Left(l) => Some(&l.epoch),
        ServerFrame::StateSet(s) => Some(&s.epoch),
        _ => None,
    }
}

/// The application event for a room frame or direct message.
fn to_event(frame: ServerFrame) -> Option<ClientEvent> {
    Some(match frame {
        ServerFrame::Event(e) => ClientEvent::Event(e),
        ServerFrame::Presence(p) => ClientEvent::Presence(p),
        ServerFrame::AuthorityChanged(a) => ClientEvent::AuthorityChanged(a),
        ServerFrame::Message(m) => ClientEvent::Message(m),
        ServerFrame::StateSet(s) => ClientEvent::State(s),
        other => {
            tracing::debug!(
                kind = transport::frame_type(&other),
                "not an application event"
            );
            return None;
        }
    })
}
