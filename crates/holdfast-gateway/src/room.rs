//! Rooms: members, the authority role, and the ordered stream of room messages.
//!
//! Each room has one lock over its whole state. Every room-scoped message is emitted under that
//! lock: the sequence number is allocated, the frame is serialised once, appended to the replay
//! ring, and `try_send` into each connected member's bounded queue, all before the lock is
//! released. That is what makes the per-room order on every socket equal to `seq` order, and a
//! member's `joined`/`reconnected` reply land exactly between the messages it must not see and
//! the ones it must. Fan-out never waits on a client: a full queue closes that session with the
//! slow-consumer code instead.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use holdfast_protocol::{
    Ack, AuthorityChanged, CloseCode, ErrorCode, Event, Gap, Joined, Left, Member, MemberChange,
    MemberStatus, Reconnected, ServerFrame,
};
use rand::RngCore;
use serde_json::Value;

use crate::auth::unix_now_ms;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::SessionHandle;
use crate::replay::{hash_token, new_token, token_matches, DedupeWindow, EventRing};

/// Serialises a server frame once; the bytes are then shared by every recipient.
pub fn encode(frame: &ServerFrame) -> Utf8Bytes {
    // Serialising these plain structs to a String cannot fail.
    Utf8Bytes::from(serde_json::to_string(frame).unwrap_or_default())
}

/// The serialised `ack` of a room operation (`seq` for a publish).
pub fn ack_frame(id: String, room: &str, seq: Option<u64>) -> Utf8Bytes {
    encode(&ServerFrame::Ack(Ack {
        id,
        room: Some(room.to_owned()),
        seq,
    }))
}

/// A refusal of a room operation: a stable code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomError {
    /// The code sent in `error` or `reconnection_failed`.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: &'static str,
}

impl RoomError {
    fn new(code: ErrorCode, message: &'static str) -> RoomError {
        RoomError { code, message }
    }
}

/// One member of a room.
#[derive(Debug)]
struct MemberEntry {
    /// Id within the room, kept across reconnects.
    player_id: Arc<str>,
    /// The member's user.
    user_id: Arc<str>,
    /// The connected session, or `None` while away.
    session: Option<Arc<SessionHandle>>,
    /// While away: when the reconnection window closes.
    away_until: Option<Instant>,
    /// SHA-256 of the current reconnection token; the token itself is never stored.
    token_hash: Option<[u8; 32]>,
    /// SHA-256 of the token whose resume issued the current one. It stays redeemable until the
    /// current token is used, so a client whose `reconnected` reply was lost with its
    /// connection can retry with the token it still holds.
    prev_token_hash: Option<[u8; 32]>,
    /// Whether the member held authority when it dropped (to restore it on resume).
    held_authority: bool,
    /// Recent publish ids of this member, kept across a resume.
    dedupe: DedupeWindow,
}

/// A member whose window expired, remembered so a late resume is told `reconnection_expired`
/// rather than `reconnection_token_invalid`.
#[derive(Debug)]
struct Tombstone {
    player_id: Arc<str>,
    token_hash: [u8; 32],
}

/// Most tombstones kept per room.
const MAX_TOMBSTONES: usize = 256;

/// The state of one room, behind the room's lock.
#[derive(Debug)]
struct RoomState {
    /// Set when the room was removed from the node's map; a late arrival must look it up again.
    closed: bool,
    /// The last allocated sequence number.
    seq: u64,
    /// The stream epoch: random per room incarnation, so a recreated room's positions never
    /// compare equal to an old one's.
    epoch: Arc<str>,
    /// Members in join order (the longest-present first), so authority hand-over is a scan.
    members: Vec<MemberEntry>,
    /// The player id holding authority.
    authority: Option<Arc<str>>,
    /// Counter for player ids.
    next_player: u64,
    /// Recent room messages for replay.
    ring: EventRing,
    /// Expired members, bounded.
    tombstones: VecDeque<Tombstone>,
}

/// A room: its name and its locked state.
#[derive(Debug)]
pub struct Room {
    /// The room's name.
    pub name: Arc<str>,
    /// One std mutex for the whole state: held only for in-memory work and non-blocking
    /// `try_send`s, never across an await.
    state: Mutex<RoomState>,
}

/// Every room of a node.
#[derive(Debug)]
pub struct Rooms {
    /// name → room. A std mutex held only to look up, insert or remove; room work happens under
    /// the room's own lock, so no lock is ever held across rooms.
    map: Mutex<HashMap<Arc<str>, Arc<Room>>>,
    /// Limits and reconnection settings.
    config: Arc<Config>,
    /// Node metrics.
    metrics: Arc<Metrics>,
}

impl Room {
    fn lock(&self) -> MutexGuard<'_, RoomState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The room's current sequence number and epoch.
    pub fn position(&self) -> (u64, String) {
        let st = self.lock();
        (st.seq, st.epoch.to_string())
    }
}

fn random_epoch() -> Arc<str> {
    let mut b = [0u8; 4];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b).into()
}

impl RoomState {
    fn find(&self, player: &str) -> Option<usize> {
        self.members.iter().position(|m| &*m.player_id == player)
    }

    /// The index of `player` if it is connected through `session`.
    fn find_live(&self, player: &str, session: &Arc<SessionHandle>) -> Option<usize> {
        self.find(player).filter(|&i| {
            self.members[i]
                .session
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, session))
        })
    }

    fn member_list(&self) -> Vec<Member> {
        self.members
            .iter()
            .map(|m| Member {
                player_id: m.player_id.to_string(),
                user_id: m.user_id.to_string(),
                status: if m.session.is_some() {
                    MemberStatus::Online
                } else {
                    MemberStatus::Away
                },
            })
            .collect()
    }

    /// The longest-present connected member.
    fn successor(&self) -> Option<Arc<str>> {
        self.members
            .iter()
            .find(|m| m.session.is_some())
            .map(|m| m.player_id.clone())
    }

    /// Emits one room message: allocates its seq, serialises it once, buffers it for replay and
    /// queues it to every connected member except `skip`. Returns the seq.
    fn emit(
        &mut self,
        room: &str,
        rooms: &Rooms,
        skip: Option<&str>,
        make: impl FnOnce(String, u64, String) -> ServerFrame,
    ) -> u64 {
        self.seq += 1;
        let frame = make(room.to_owned(), self.seq, self.epoch.to_string());
        let text = encode(&frame);
        if rooms.config.reconnection.enabled {
            rooms.metrics.reconnection_events_buffered.inc();
            if self.ring.push(self.seq, text.clone()) {
                rooms.metrics.reconnection_events_evicted.inc();
            }
        }
        let now = Instant::now();
        for m in &self.members {
            if skip == Some(&*m.player_id) {
                continue;
            }
            if let Some(s) = &m.session {
                s.enqueue(text.clone(), Some(now));
            }
        }
        self.seq
    }

    fn emit_member(
        &mut self,
        room: &str,
        rooms: &Rooms,
        skip: Option<&str>,
        player: &Arc<str>,
        user: &Arc<str>,
        kind: fn(MemberChange) -> ServerFrame,
    ) -> u64 {
        let (p, u) = (player.to_string(), user.to_string());
        self.emit(room, rooms, skip, move |room, seq, epoch| {
            kind(MemberChange {
                room,
                seq,
                epoch,
                player_id: p,
                user_id: u,
            })
        })
    }

    fn emit_authority(&mut self, room: &str, rooms: &Rooms, skip: Option<&str>) -> u64 {
        let authority = self.authority.as_ref().map(|a| a.to_string());
        self.emit(room, rooms, skip, move |room, seq, epoch| {
            ServerFrame::AuthorityChanged(AuthorityChanged {
                room,
                seq,
                epoch,
                authority,
            })
        })
    }

    /// Removes member `idx` for good: `member_left` to the others, authority to the successor.
    fn remove_member(&mut self, idx: usize, room: &str, rooms: &Rooms) -> u64 {
        let m = self.members.remove(idx);
        rooms.metrics.room_members.dec();
        if m.session.is_none() {
            rooms.metrics.reconnection_sessions_active.dec();
        }
        let mut seq = self.emit_member(
            room,
            rooms,
            None,
            &m.player_id,
            &m.user_id,
            ServerFrame::MemberLeft,
        );
        if self.authority.as_deref() == Some(&*m.player_id) {
            self.authority = self.successor();
            seq = self.emit_authority(room, rooms, None);
        }
        if let Some(hash) = m.token_hash {
            if self.tombstones.len() >= MAX_TOMBSTONES {
                self.tombstones.pop_front();
            }
            self.tombstones.push_back(Tombstone {
                player_id: m.player_id,
                token_hash: hash,
            });
        }
        seq
    }

    /// Issues a fresh reconnection token for member `idx`, storing only its hash.
    fn issue_token(&mut self, idx: usize, rooms: &Rooms) -> Option<String> {
        if !rooms.config.reconnection.enabled {
            return None;
        }
        let token = new_token();
        self.members[idx].token_hash = Some(hash_token(&token));
        rooms.metrics.reconnection_tokens_issued.inc();
        Some(token)
    }
}

/// What `reconnect` asked for.
#[derive(Debug)]
pub struct ResumeRequest<'a> {
    /// The room.
    pub room: &'a str,
    /// The player id held before the drop.
    pub player_id: &'a str,
    /// The latest reconnection token.
    pub token: &'a str,
    /// The highest seq the client processed.
    pub last_sequence: u64,
    /// The frame id to echo.
    pub id: Option<String>,
}

impl Rooms {
    /// An empty set of rooms.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Rooms {
        Rooms {
            map: Mutex::new(HashMap::new()),
            config,
            metrics,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Room>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The room called `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Room>> {
        self.map().get(name).cloned()
    }

    /// Number of rooms.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether there are no rooms.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get_or_create(&self, name: &str) -> Arc<Room> {
        let mut map = self.map();
        if let Some(r) = map.get(name) {
            return r.clone();
        }
        let name: Arc<str> = name.into();
        let room = Arc::new(Room {
            name: name.clone(),
            state: Mutex::new(RoomState {
                closed: false,
                seq: 0,
                epoch: random_epoch(),
                members: Vec::new(),
                authority: None,
                next_player: 0,
                ring: EventRing::new(self.config.reconnection.event_buffer_size),
                tombstones: VecDeque::new(),
            }),
        });
        map.insert(name, room.clone());
        self.metrics.rooms_active.inc();
        room
    }

    /// Removes `room` from the map if it has no members left. Called with the room's lock held:
    /// the lock order is always room → map, and the map lock is never held while taking a
    /// room lock.
    fn remove_if_empty(&self, room: &Room, st: &mut RoomState) {
        if st.members.is_empty() && !st.closed {
            st.closed = true;
            let mut map = self.map();
            if map
                .get(&room.name)
                .is_some_and(|r| std::ptr::eq(Arc::as_ptr(r), room))
            {
                map.remove(&room.name);
                self.metrics.rooms_active.dec();
            }
        }
    }

    /// Joins `session` to room `name`; queues `joined` to the joiner and `member_joined` to the
    /// others. Returns the room and the new player id.
    pub fn join(
        &self,
        name: &str,
        session: &Arc<SessionHandle>,
        id: Option<String>,
    ) -> Result<(Arc<Room>, Arc<str>), RoomError> {
        // A room found in the map may be closed by a concurrent last leave before we lock it;
        // then it is gone from the map and the next lookup creates a fresh one.
        for _ in 0..4 {
            let room = self.get_or_create(name);
            let mut st = room.lock();
            if st.closed {
                continue;
            }
            if st
                .members
                .iter()
                .any(|m| m.session.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)))
            {
                return Err(RoomError::new(
                    ErrorCode::AlreadyInRoom,
                    "this session is already in the room",
                ));
            }
            // A fresh join replaces an away membership of the same user: the client chose not
            // to resume it.
            if let Some(idx) = st
                .members
                .iter()
                .position(|m| m.session.is_none() && m.user_id == session.user)
            {
                st.remove_member(idx, &room.name, self);
            }
            if st.members.len() >= self.config.limits.max_members_per_room {
                return Err(RoomError::new(ErrorCode::RoomFull, "the room is full"));
            }
            st.next_player += 1;
            let player_id: Arc<str> = format!("p{}", st.next_player).into();
            st.members.push(MemberEntry {
                player_id: player_id.clone(),
                user_id: session.user.clone(),
                session: Some(session.clone()),
                away_until: None,
                token_hash: None,
                prev_token_hash: None,
                held_authority: false,
                dedupe: DedupeWindow::default(),
            });
            self.metrics.room_members.inc();
            let idx = st.members.len() - 1;
            let token = st.issue_token(idx, self);
            let became_authority = st.authority.is_none();
            if became_authority {
                st.authority = Some(player_id.clone());
            }
            let seq = st.emit_member(
                &room.name,
                self,
                Some(&player_id),
                &player_id,
                &session.user,
                ServerFrame::MemberJoined,
            );
            let joined = ServerFrame::Joined(Joined {
                room: room.name.to_string(),
                player_id: player_id.to_string(),
                members: st.member_list(),
                authority: st.authority.as_ref().map(|a| a.to_string()),
                seq,
                epoch: st.epoch.to_string(),
                reconnection_token: token,
                id,
            });
            session.enqueue(encode(&joined), None);
            drop(st);
            return Ok((room, player_id));
        }
        Err(RoomError::new(
            ErrorCode::Internal,
            "the room was being closed; retry",
        ))
    }

    /// Leaves the room for good.
    pub fn leave(
        &self,
        room: &Arc<Room>,
        player: &str,
        session: &Arc<SessionHandle>,
        id: Option<String>,
    ) -> Result<(), RoomError> {
        let mut st = room.lock();
        let idx = st.find_live(player, session).ok_or(RoomError::new(
            ErrorCode::NotInRoom,
            "not a member of the room",
        ))?;
        let seq = st.remove_member(idx, &room.name, self);
        let left = ServerFrame::Left(Left {
            room: room.name.to_string(),
            seq,
            epoch: st.epoch.to_string(),
            id,
        });
        session.enqueue(encode(&left), None);
        self.remove_if_empty(room, &mut st);
        Ok(())
    }

    /// Publishes `data` to every member; the sender gets `ack` after its own copy of the event.
    /// A publish whose `id` this member used recently is not delivered again: the original
    /// ack is repeated.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &self,
        room: &Arc<Room>,
        player: &str,
        session: &Arc<SessionHandle>,
        data: Value,
        id: Option<String>,
        traceparent: Option<String>,
    ) -> Result<(), RoomError> {
        let mut st = room.lock();
        let idx = st.find_live(player, session).ok_or(RoomError::new(
            ErrorCode::NotInRoom,
            "not a member of the room",
        ))?;
        if let Some(id) = &id {
            if let Some(seq) = st.members[idx].dedupe.lookup(id) {
                self.metrics.dedupe_hits.inc();
                session.enqueue(ack_frame(id.clone(), &room.name, Some(seq)), None);
                return Ok(());
            }
        }
        let from = st.members[idx].player_id.to_string();
        let user_id = session.user.to_string();
        let event_id = id.clone();
        let seq = st.emit(&room.name, self, None, move |room, seq, epoch| {
            ServerFrame::Event(Event {
                room,
                seq,
                epoch,
                ts: unix_now_ms(),
                from,
                user_id,
                data,
                id: event_id,
                traceparent,
            })
        });
        if let Some(id) = id {
            st.members[idx]
                .dedupe
                .insert(&id, seq, self.config.session.dedupe_window);
            session.enqueue(ack_frame(id, &room.name, Some(seq)), None);
        }
        Ok(())
    }

    /// Takes the authority role when nobody connected holds it.
    pub fn claim_authority(
        &self,
        room: &Arc<Room>,
        player: &str,
        session: &Arc<SessionHandle>,
        id: Option<String>,
    ) -> Result<(), RoomError> {
        let mut st = room.lock();
        st.find_live(player, session).ok_or(RoomError::new(
            ErrorCode::NotInRoom,
            "not a member of the room",
        ))?;
        let holder_online = st
            .authority
            .as_ref()
            .and_then(|a| st.find(a))
            .is_some_and(|i| st.members[i].session.is_some());
        if st.authority.as_deref() != Some(player) {
            if holder_online {
                return Err(RoomError::new(
                    ErrorCode::AuthorityTaken,
                    "another connected member holds authority",
                ));
            }
            // The holder is away (or there is none): the claim takes authority over.
            if let Some(prev) = st.authority.as_ref().and_then(|a| st.find(a)) {
                st.members[prev].held_authority = false;
            }
            st.authority = Some(player.into());
            st.emit_authority(&room.name, self, None);
        }
        if let Some(id) = id {
            session.enqueue(ack_frame(id, &room.name, None), None);
        }
        Ok(())
    }

    /// Gives up the authority role; it passes to the longest-present other connected member.
    pub fn release_authority(
        &self,
        room: &Arc<Room>,
        player: &str,
        session: &Arc<SessionHandle>,
        id: Option<String>,
    ) -> Result<(), RoomError> {
        let mut st = room.lock();
        st.find_live(player, session).ok_or(RoomError::new(
            ErrorCode::NotInRoom,
            "not a member of the room",
        ))?;
        if st.authority.as_deref() != Some(player) {
            return Err(RoomError::new(
                ErrorCode::NotAuthority,
                "this member does not hold authority",
            ));
        }
        st.authority = st
            .members
            .iter()
            .find(|m| m.session.is_some() && &*m.player_id != player)
            .map(|m| m.player_id.clone());
        st.emit_authority(&room.name, self, None);
        if let Some(id) = id {
            session.enqueue(ack_frame(id, &room.name, None), None);
        }
        Ok(())
    }

    /// The session of this member ended. With reconnection on, the member turns away for the
    /// window (others get `member_disconnected`); otherwise it leaves.
    pub fn disconnect(&self, room: &Arc<Room>, player: &str, session: &Arc<SessionHandle>) {
        let mut st = room.lock();
        let Some(idx) = st.find_live(player, session) else {
            return;
        };
        if !self.config.reconnection.enabled {
            st.remove_member(idx, &room.name, self);
            self.remove_if_empty(room, &mut st);
            return;
        }
        let window = Duration::from_secs(self.config.reconnection.window_secs);
        let held = st.authority.as_deref() == Some(player);
        {
            let m = &mut st.members[idx];
            m.session = None;
            m.away_until = Some(Instant::now() + window);
            m.held_authority = held;
        }
        self.metrics.reconnection_sessions_active.inc();
        let (p, u) = (
            st.members[idx].player_id.clone(),
            st.members[idx].user_id.clone(),
        );
        st.emit_member(
            &room.name,
            self,
            None,
            &p,
            &u,
            ServerFrame::MemberDisconnected,
        );
        if held && !self.config.reconnection.restore_authority {
            st.authority = st.successor();
            st.emit_authority(&room.name, self, None);
        }
    }

    /// Resumes a membership on `session`: validates the token, replays what was missed (or
    /// reports the exact gap), rotates the token, and tells the others `member_reconnected`.
    /// A failed attempt consumes nothing.
    pub fn reconnect(
        &self,
        req: ResumeRequest<'_>,
        session: &Arc<SessionHandle>,
    ) -> Result<Arc<Room>, RoomError> {
        let fail = |code, message| {
            self.metrics.reconnection_validation_failures.inc();
            Err(RoomError::new(code, message))
        };
        if !self.config.reconnection.enabled {
            return fail(ErrorCode::ReconnectionFailed, "reconnection is disabled");
        }
        let Some(room) = self.get(req.room) else {
            return fail(ErrorCode::ReconnectionFailed, "the room no longer exists");
        };
        let mut st = room.lock();
        if st.closed {
            return fail(ErrorCode::ReconnectionFailed, "the room no longer exists");
        }
        let Some(idx) = st.find(req.player_id) else {
            let expired = st
                .tombstones
                .iter()
                .any(|t| &*t.player_id == req.player_id && token_matches(req.token, &t.token_hash));
            return if expired {
                fail(
                    ErrorCode::ReconnectionExpired,
                    "the reconnection window has passed",
                )
            } else {
                fail(
                    ErrorCode::ReconnectionTokenInvalid,
                    "unknown player or token",
                )
            };
        };
        let m = &st.members[idx];
        // Both comparisons always run, so timing does not tell which token matched.
        let current = m
            .token_hash
            .as_ref()
            .is_some_and(|h| token_matches(req.token, h));
        let previous = m
            .prev_token_hash
            .as_ref()
            .is_some_and(|h| token_matches(req.token, h));
        let used_hash = if current {
            m.token_hash
        } else {
            m.prev_token_hash
        };
        if !(current || previous) || m.user_id != session.user {
            return fail(
                ErrorCode::ReconnectionTokenInvalid,
                "the token is not valid for this user, room and player",
            );
        }
        if let Some(until) = m.away_until {
            if Instant::now() >= until {
                return fail(
                    ErrorCode::ReconnectionExpired,
                    "the reconnection window has passed",
                );
            }
        }
        if st
            .members
            .iter()
            .any(|m| m.session.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)))
        {
            return fail(
                ErrorCode::ReconnectionFailed,
                "this session is already in the room",
            );
        }
        // A resume while the old socket still looks alive (half-open) wins over it.
        if let Some(old) = st.members[idx].session.take() {
            old.close(CloseCode::Replaced);
        } else {
            self.metrics.reconnection_sessions_active.dec();
        }
        let restore = st.members[idx].held_authority && self.config.reconnection.restore_authority;
        {
            let m = &mut st.members[idx];
            m.session = Some(session.clone());
            m.away_until = None;
            m.held_authority = false;
        }
        let token = st.issue_token(idx, self).unwrap_or_default();
        st.members[idx].prev_token_hash = used_hash;
        let (p, u) = (
            st.members[idx].player_id.clone(),
            st.members[idx].user_id.clone(),
        );
        // Replay is computed before this resume's own messages are emitted.
        let current = st.seq;
        let (buffered, gap) = st.ring.since(req.last_sequence, current);
        let mut seq = st.emit_member(
            &room.name,
            self,
            Some(&p),
            &p,
            &u,
            ServerFrame::MemberReconnected,
        );
        if restore && st.authority.is_none() {
            st.authority = Some(p.clone());
            seq = st.emit_authority(&room.name, self, Some(&p));
        }
        let events: Vec<ServerFrame> = buffered
            .iter()
            .filter_map(|b| serde_json::from_str(b.text.as_str()).ok())
            .collect();
        let epoch = st.epoch.to_string();
        let frame = ServerFrame::Reconnected(Reconnected {
            room: room.name.to_string(),
            player_id: p.to_string(),
            events,
            recovered: gap.is_none(),
            gap: gap.map(|(from, to)| Gap {
                from,
                to,
                epoch: epoch.clone(),
            }),
            members: st.member_list(),
            authority: st.authority.as_ref().map(|a| a.to_string()),
            // The messages this resume itself emitted (member_reconnected and perhaps
            // authority_changed) are not sent to this member; its position starts after them.
            seq,
            epoch,
            reconnection_token: token,
            id: req.id,
        });
        session.enqueue(encode(&frame), None);
        self.metrics.reconnection_completions.inc();
        drop(st);
        Ok(room)
    }

    /// Expires away members whose window has passed and frees empty rooms. Each room is locked
    /// on its own; the map lock is held only to copy the list of rooms.
    pub fn sweep(&self, now: Instant) {
        let rooms: Vec<Arc<Room>> = self.map().values().cloned().collect();
        for room in rooms {
            let mut st = room.lock();
            while let Some(idx) = st
                .members
                .iter()
                .position(|m| m.away_until.is_some_and(|u| now >= u))
            {
                st.remove_member(idx, &room.name, self);
            }
            self.remove_if_empty(&room, &mut st);
        }
    }
}
