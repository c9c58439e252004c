//! The room service: what a session calls for every room frame. It turns a frame into a rules
//! [`Op`], has the backend apply it, and builds the reply (`joined`, `left`, `reconnected`,
//! `ack`) from the typed outcome, queued at the member's position in the stream. The same code
//! runs on every backend.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use holdfast_protocol::wire::encode_joined;
use holdfast_protocol::{
    ack_frame, encode, encode_reconnected, ErrorCode, Gap, Joined, Left, Reconnected,
    RecoveredFrom, ServerFrame, StateSet,
};
use serde_json::Value;

use super::fanout::{Mirror, Position};
use super::rules::{Op, Outcome, Who};
use super::stream::replay;
use super::{Membership, Resume, RoomError};
use crate::auth::unix_now_ms;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::SessionHandle;
use crate::store::{Applied, RoomBackend, StoreContext, StoreError};
use crate::tokens::{hash_token, new_token};

/// Attempts of a background retry (leave, away) after the store failed.
const RETRIES: u32 = 6;

/// A room as the application's backend reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomInfo {
    /// Every member, with its status.
    pub members: Vec<holdfast_protocol::Member>,
    /// The player id holding authority.
    pub authority: Option<String>,
    /// The room's current seq.
    pub seq: u64,
    /// The room's epoch.
    pub epoch: String,
}

/// An away membership of a user: its room, its player id, and when it turned away (Unix ms).
type AwayEntry = (Arc<str>, Arc<str>, u64);

/// Room operations of one node, over its backend.
pub struct RoomService {
    pub(super) backend: Arc<dyn RoomBackend>,
    pub(super) mirror: Arc<Mirror>,
    pub(super) config: Arc<Config>,
    pub(super) metrics: Arc<Metrics>,
    node: Arc<str>,
    shutdown: tokio_util::sync::CancellationToken,
    /// Away memberships by user on this node, oldest first, with when they turned away:
    /// bounded per user by `limits.max_away_rooms_per_user`, pruned by the sweep.
    pub(super) away: std::sync::Mutex<HashMap<Arc<str>, VecDeque<AwayEntry>>>,
}

fn unavailable() -> RoomError {
    RoomError {
        code: ErrorCode::BrokerUnavailable,
        message: "the room store is unreachable; retry",
    }
}

pub(super) fn room_error(e: StoreError) -> RoomError {
    match e {
        StoreError::Refused(e) => e,
        StoreError::Unavailable | StoreError::Unknown => unavailable(),
    }
}

impl RoomService {
    /// Attaches `backend` to the node described by `ctx` and serves rooms from it.
    pub fn new(backend: Arc<dyn RoomBackend>, ctx: StoreContext) -> RoomService {
        backend.attach(ctx.clone());
        RoomService {
            backend,
            mirror: ctx.mirror,
            config: ctx.config,
            metrics: ctx.metrics,
            node: ctx.node_id,
            shutdown: ctx.shutdown,
            away: Default::default(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn RoomBackend> {
        &self.backend
    }

    /// This node's local delivery.
    pub fn mirror(&self) -> &Arc<Mirror> {
        &self.mirror
    }

    fn who(&self, session: &SessionHandle) -> Who {
        Who {
            session: session.id.clone(),
            user: session.user.clone(),
            node: self.node.clone(),
        }
    }

    /// Prepares local delivery of `room` before an operation that places a member.
    async fn enter(&self, room: &str) -> Result<(), RoomError> {
        if self.mirror.enter(room) {
            if let Err(e) = self.backend.subscribe(room).await {
                self.exit(room);
                return Err(room_error(e));
            }
            self.mirror.with(room, |v| v.subscribed = true);
        }
        Ok(())
    }

    fn exit(&self, room: &str) {
        if self.mirror.exit(room) {
            self.backend.unsubscribe(room);
        }
    }

    fn unplace(&self, m: &Membership, session: &Arc<SessionHandle>) {
        if self.mirror.remove(&m.room, session, &m.player) {
            self.backend.unsubscribe(&m.room);
        }
    }

    /// Joins `session` to `room`; queues `joined` to it (others get `member_joined`).
    pub async fn join(
        &self,
        room: &str,
        session: &Arc<SessionHandle>,
        id: Option<String>,
    ) -> Result<Membership, RoomError> {
        self.enter(room).await?;
        let token = self.config.reconnection.enabled.then(new_token);
        let op = Op::Join {
            who: self.who(session),
            token: token.as_deref().map(hash_token),
        };
        let a = match self.backend.apply(room, &op).await {
            Ok(a) => a,
            Err(e) => {
                self.exit(room);
                return Err(room_error(e));
            }
        };
        let Outcome::Joined {
            player,
            members,
            count,
            authority,
            state,
        } = a.outcome
        else {
            self.exit(room);
            return Err(unexpected());
        };
        if token.is_some() {
            self.metrics.reconnection_tokens_issued.inc();
        }
        // With a state, the member gets it and the messages after it (the changes to apply
        // on top), or the exact range of them the room no longer holds.
        let (state_seq, state, r) = match state {
            Some(s) => (Some(s.seq), Some(s.state), replay(s.seq, s.upto, a.replay)),
            None => (None, None, Default::default()),
        };
        let joined = Joined {
            room: room.to_owned(),
            player_id: player.to_string(),
            members,
            member_count: count,
            authority,
            seq: a.seq,
            epoch: a.epoch.clone(),
            reconnection_token: token,
            state,
            state_seq,
            events: Vec::new(),
            gap: r.gap.map(|(from, to)| Gap {
                from,
                to,
                epoch: a.epoch.clone(),
            }),
            id,
        };
        let events: Vec<&str> = r.events.iter().map(|b| b.text.as_str()).collect();
        let joined = Utf8Bytes::from(encode_joined(&joined, &events));
        let name = self.mirror.place(
            room,
            Position {
                epoch: &a.epoch,
                seq: a.seq,
                presence: a.presence,
            },
            session,
            &player,
            joined,
        );
        Ok(Membership {
            room: name.unwrap_or_else(|| room.into()),
            player,
        })
    }

    /// Leaves for good; queues `left`. When the store fails, the leave is retried in the
    /// background (it is idempotent), so no member is left behind.
    pub async fn leave(
        &self,
        m: &Membership,
        session: &Arc<SessionHandle>,
        id: Option<String>,
    ) -> Result<(), RoomError> {
        self.unplace(m, session);
        let op = Op::Leave {
            player: m.player.to_string(),
            session: session.id.to_string(),
        };
        match self.backend.apply(&m.room, &op).await {
            Ok(a) => {
                let left = ServerFrame::Left(Left {
                    room: m.room.to_string(),
                    seq: a.seq,
                    epoch: a.epoch,
                    id,
                });
                session.enqueue(text(&left), None);
                Ok(())
            }
            Err(StoreError::Refused(e)) => Err(e),
            Err(_) => {
                self.retry_later(m.room.to_string(), op);
                Err(unavailable())
            }
        }
    }

    /// Publishes `data`; the publisher gets `ack` (when `id` is set) after its own copy.
    pub async fn publish(
        &self,
        m: &Membership,
        session: &Arc<SessionHandle>,
        data: Value,
        id: Option<String>,
        traceparent: Option<String>,
    ) -> Result<(), RoomError> {
        let op = Op::Publish {
            player: m.player.to_string(),
            session: session.id.to_string(),
            user: session.user.to_string(),
            data,
            id: id.clone(),
            traceparent,
            ts: unix_now_ms(),
        };
        let a = self.backend.apply(&m.room, &op).await.map_err(room_error)?;
        let Outcome::Published { seq, duplicate } = a.outcome else {
            return Err(unexpected());
        };
        if duplicate {
            self.metrics.dedupe_hits.inc();
        }
        self.ack_at(m, session, id, (&a.epoch, seq), Some(seq));
        Ok(())
    }

    /// Takes authority when nobody connected holds it.
    pub async fn claim_authority(
        &self,
        m: &Membership,
        session: &Arc<SessionHandle>,
        id: Option<String>,
    ) -> Result<(), RoomError> {
        let op = Op::Claim {
            player: m.player.to_string(),
            session: session.id.to_string(),
        };
        self.authority(m, session, id, op).await
    }

    /// Gives authority up; it passes to the longest-present other connected member.
    pub async fn release_authority(
        &self,
        m: &Membership,
        session: &Arc<SessionHandle>,
        id: Option<String>,
    ) -> Result<(), RoomError> {
        let op = Op::Release {
            player: m.player.to_string(),
            session: session.id.to_string(),
        };
        self.authority(m, session, id, op).await
    }

    async fn authority(
        &self,
        m: &Membership,
        session: &Arc<SessionHandle>,
        id: Option<String>,
        op: Op,
    ) -> Result<(), RoomError> {
        let a = self.backend.apply(&m.room, &op).await.map_err(room_error)?;
        self.ack_authority(m, session, id, &a);
        Ok(())
    }

    /// Queues the `ack` of frame `id` once the room message `at` (epoch, seq) was delivered to
    /// `session` (at once when its seq is 0).
    fn ack_at(
        &self,
        m: &Membership,
        session: &Arc<SessionHandle>,
        id: Option<String>,
        at: (&str, u64),
        seq: Option<u64>,
    ) {
        if let Some(id) = id {
            let ack = text(&ack_frame(id, Some(&m.room), seq));
            self.mirror.reply_at(&m.room, at, session, ack);
        }
    }

    fn ack_authority(
        &self,
        m: &Membership,
        session: &Arc<SessionHandle>,
        id: Option<String>,
        a: &Applied,
    ) {
        let at = if a.emitted > 0 { a.seq } else { 0 };
        self.ack_at(m, session, id, (&a.epoch, at), None);
    }

    /// The session ended: the member turns away for the reconnection window (or leaves when
    /// reconnection is off). Retried in the background when the store fails.
    pub async fn disconnect(&self, m: &Membership, session: &Arc<SessionHandle>) {
        self.unplace(m, session);
        let op = Op::Away {
            player: m.player.to_string(),
            session: session.id.to_string(),
            now: unix_now_ms(),
        };
        if self.backend.apply(&m.room, &op).await.is_err() {
            self.retry_later(m.room.to_string(), op);
            return;
        }
        if !self.config.reconnection.enabled {
            return;
        }
        // One user cannot keep more than its share of rooms (and their replay memory) alive
        // while away: past the bound, its oldest away membership ends.
        let cap = self
            .config
            .limits
            .max_away_rooms_per_user
            .max(self.config.limits.max_rooms_per_session);
        let evict: Vec<AwayEntry> = {
            let mut away = self.away.lock().unwrap_or_else(|e| e.into_inner());
            let list = away.entry(session.user.clone()).or_default();
            list.retain(|(r, p, _)| !(*r == m.room && *p == m.player));
            list.push_back((m.room.clone(), m.player.clone(), unix_now_ms()));
            let over = list.len().saturating_sub(cap);
            list.drain(..over).collect()
        };
        for (room, player, _) in evict {
            let op = Op::Evict {
                player: player.to_string(),
            };
            if self.backend.apply(&room, &op).await.is_err() {
                self.retry_later(room.to_string(), op);
            }
        }
    }

    /// Forgets an away membership that came back.
    fn back(&self, user: &str, room: &str, player: &str) {
        let mut away = self.away.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = away.get_mut(user) {
            list.retain(|(r, p, _)| !(&**r == room && &**p == player));
            if list.is_empty() {
                away.remove(user);
            }
        }
    }

    /// Resumes a membership on `session`: checks the token, replays what was missed (or
    /// reports the exact gap), rotates the token; others get `member_reconnected`.
    pub async fn reconnect(
        &self,
        req: Resume,
        session: &Arc<SessionHandle>,
    ) -> Result<Membership, RoomError> {
        if !self.config.reconnection.enabled {
            self.metrics.reconnection_validation_failures.inc();
            return Err(RoomError {
                code: ErrorCode::ReconnectionFailed,
                message: "reconnection is disabled",
            });
        }
        self.enter(&req.room).await?;
        let token = new_token();
        let op = Op::Resume {
            player: req.player_id.clone(),
            who: self.who(session),
            presented: hash_token(&req.token),
            next: hash_token(&token),
            last: req.last_sequence,
            epoch: req.epoch.clone(),
            now: unix_now_ms(),
        };
        let a = match self.backend.apply(&req.room, &op).await {
            Ok(a) => a,
            Err(e) => {
                self.exit(&req.room);
                if matches!(e, StoreError::Refused(_)) {
                    self.metrics.reconnection_validation_failures.inc();
                }
                return Err(room_error(e));
            }
        };
        let Outcome::Resumed {
            members,
            count,
            authority,
            replay_to,
            state,
            after,
            foreign,
        } = a.outcome
        else {
            self.exit(&req.room);
            return Err(unexpected());
        };
        let held = a.replay;
        let mut r = replay(after, replay_to, held);
        if foreign.is_some() {
            self.metrics.reconnection_rollbacks.inc();
        }
        // Past the buffer: when the room's state was set after the member's position and every
        // message after the state is still held, the member gets the state (as its
        // `state_set`) and those messages; the gap before the state is still reported.
        let mut snapshot = None;
        if let (Some((_, to)), Some(s)) = (r.gap, state) {
            if s.seq >= to && s.seq <= replay_to {
                let frame = ServerFrame::StateSet(StateSet {
                    room: req.room.clone(),
                    seq: s.seq,
                    epoch: a.epoch.clone(),
                    state: s.state,
                });
                r.events.retain(|b| b.seq > s.seq);
                r.gap = (s.seq > after + 1).then_some((after + 1, s.seq - 1));
                snapshot = Some(encode(&frame));
            }
        }
        let recovered_from = snapshot.is_some().then_some(RecoveredFrom::Snapshot);
        let reply = Reconnected {
            room: req.room.clone(),
            player_id: req.player_id.clone(),
            events: Vec::new(),
            // A position from another epoch is never reported as recovered.
            recovered: (r.gap.is_none() || snapshot.is_some()) && foreign.is_none(),
            gap: r.gap.map(|(from, to)| Gap {
                from,
                to,
                epoch: a.epoch.clone(),
            }),
            rolled_back: foreign
                .filter(|(from, to)| from <= to)
                .map(|(from, to)| Gap {
                    from,
                    to,
                    epoch: req.epoch.clone().unwrap_or_else(|| a.epoch.clone()),
                }),
            members,
            member_count: count,
            authority,
            // This resume's own messages are not sent to this member: it continues after them.
            seq: a.seq,
            epoch: a.epoch.clone(),
            reconnection_token: token,
            recovered_from,
            id: req.id,
        };
        let events: Vec<&str> = snapshot
            .iter()
            .map(String::as_str)
            .chain(r.events.iter().map(|b| b.text.as_str()))
            .collect();
        let frame = Utf8Bytes::from(encode_reconnected(&reply, &events));
        self.metrics.reconnection_completions.inc();
        self.back(&session.user, &req.room, &req.player_id);
        self.metrics.reconnection_tokens_issued.inc();
        let player: Arc<str> = req.player_id.as_str().into();
        let name = self.mirror.place(
            &req.room,
            Position {
                epoch: &a.epoch,
                seq: a.seq,
                presence: a.presence,
            },
            session,
            &player,
            frame,
        );
        Ok(Membership {
            room: name.unwrap_or_else(|| req.room.as_str().into()),
            player,
        })
    }

    /// Replaces the room's state (the member must hold authority); the setter gets `ack` (when
    /// `id` is set) after its own copy of `state_set`.
    pub async fn set_state(
        &self,
        m: &Membership,
        session: &Arc<SessionHandle>,
        state: Value,
        id: Option<String>,
    ) -> Result<(), RoomError> {
        let op = Op::SetState {
            member: Some((m.player.to_string(), session.id.to_string())),
            state,
        };
        let a = self.backend.apply(&m.room, &op).await.map_err(room_error)?;
        let Outcome::StateSet { seq } = a.outcome else {
            return Err(unexpected());
        };
        self.ack_at(m, session, id, (&a.epoch, seq), Some(seq));
        Ok(())
    }

    /// Retries an idempotent operation in the background with backoff, a bounded number of
    /// times, until the node drains.
    fn retry_later(&self, room: String, op: Op) {
        let backend = self.backend.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            for _ in 0..RETRIES {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                match backend.apply(&room, &op).await {
                    Ok(_) | Err(StoreError::Refused(_)) => return,
                    Err(_) => delay = (delay * 2).min(Duration::from_secs(5)),
                }
            }
            tracing::warn!(
                room,
                "room operation still failing after retries; giving up"
            );
        });
    }
}

pub(super) fn unexpected() -> RoomError {
    RoomError {
        code: ErrorCode::Internal,
        message: "unexpected store outcome",
    }
}

fn text(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(encode(frame))
}
