//! Local delivery: this node's view of each room it has members in. Room messages reach the
//! view in any order (a cluster's pub/sub, or the memory backend directly) and are fanned out
//! to the local members in `seq` order; a member's reply (`joined`, `reconnected`, an `ack`) is
//! queued exactly at its position in the stream. Both backends use this one implementation.
//!
//! Fan-out never waits on a client: the same bytes are pushed into each member's bounded
//! queue, and a full queue closes that session with the slow-consumer code.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use holdfast_protocol::{encode, CloseCode, MemberUpdate, Presence, ServerFrame};

use opentelemetry::trace::{SpanKind, TraceContextExt};
use opentelemetry::{Context, KeyValue};

use super::presence::PresenceNote;
use super::Shared;
use crate::registry::SessionHandle;
use crate::telemetry::{self, parse_traceparent, Telemetry};

/// Messages held per room while waiting for a missing range.
const MAX_EARLY: usize = 4096;
/// Recently delivered messages kept per room to catch up a member placed a moment late.
const RECENT: usize = 256;
/// And their bytes.
const RECENT_BYTES: usize = 4 << 20;

/// A local member of a room.
struct Sub {
    session: Arc<SessionHandle>,
    player: Arc<str>,
    /// Messages after this seq are delivered to it.
    after: u64,
    /// Presence changes numbered after this one are news to it (earlier ones are in the list
    /// its reply carried).
    seen: u64,
}

/// A room message on its way to local members.
#[derive(Debug, Clone)]
pub struct Held {
    /// A session this message fences out (closed with 4000 before delivery).
    pub kick: Option<String>,
    /// The frame.
    pub text: Utf8Bytes,
}

/// What the caller must do after handing a message in.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing.
    Nothing,
    /// Fetch `from..=to` of the room's history and hand it in.
    Fetch(u64, u64),
    /// A message already delivered here arrived again with other contents: the stream went
    /// backwards. The local members were closed (they resume and learn what was rolled back).
    Forked(u64),
}

/// This node's view of one room.
#[derive(Default)]
pub struct LocalRoom {
    /// The room's name.
    name: Arc<str>,
    /// Presence changes not sent yet (at most one per player), with the room's presence
    /// version of each; the latest version; and the latest member count.
    pending: Vec<(u64, MemberUpdate)>,
    changes: u64,
    count: u64,
    /// Whether a `presence` frame is due.
    presence_due: bool,
    /// The stream's epoch as last seen.
    epoch: Option<String>,
    /// The last seq fanned out here; `None` until the first message since subscribing.
    delivered: Option<u64>,
    subs: Vec<Sub>,
    /// Messages ahead of `delivered + 1`, by seq; bounded by [`MAX_EARLY`].
    early: BTreeMap<u64, Held>,
    /// Recently delivered messages, bounded by [`RECENT`] and [`RECENT_BYTES`].
    recent: VecDeque<(u64, Shared)>,
    recent_bytes: usize,
    /// Replies waiting for the message at their position to be delivered here.
    acks: Vec<(u64, Arc<SessionHandle>, Utf8Bytes)>,
    /// A history fetch is under way.
    pub fetching: bool,
    /// Operations between entering and placing a member; the view is kept meanwhile.
    joining: u32,
    /// Set once the backend confirmed the subscription.
    pub subscribed: bool,
}

impl LocalRoom {
    /// The epoch as last seen.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The last seq delivered here.
    pub fn delivered(&self) -> Option<u64> {
        self.delivered
    }

    /// Where this view stands in the stream: the last seq delivered here or, before the first
    /// arrival since subscribing (or since the epoch changed), the earliest position a local
    /// member was placed at. Whatever came after it and was missed (published while the
    /// subscription was down) is fetched from there; with no local member, nothing is owed.
    pub fn position(&self) -> Option<u64> {
        self.delivered
            .or_else(|| self.subs.iter().map(|s| s.after).min())
    }

    /// Closes every local member (their stream was lost or has a hole): they resume and are
    /// told exactly what they missed.
    pub fn fail_all(&mut self) {
        for s in self.subs.drain(..) {
            s.session.close(CloseCode::InternalError);
        }
        for (_, s, _) in self.acks.drain(..) {
            s.close(CloseCode::InternalError);
        }
        self.early.clear();
        self.recent.clear();
        self.recent_bytes = 0;
        self.delivered = None;
    }

    /// Takes note of the stream's epoch; a change means the stream was lost or recreated.
    pub fn see_epoch(&mut self, epoch: &str) {
        match self.epoch.as_deref() {
            Some(cur) if cur == epoch => {}
            Some(_) => {
                self.fail_all();
                self.epoch = Some(epoch.to_owned());
            }
            None => self.epoch = Some(epoch.to_owned()),
        }
    }

    /// Takes a presence note: fences out the session it names, and queues its changes for the
    /// next `presence` frame. Returns true when a frame is now due.
    pub fn presence(&mut self, note: &PresenceNote) -> bool {
        for k in &note.kicks {
            self.kick(k);
        }
        if note.announce {
            for c in &note.changes {
                self.pending.retain(|(_, p)| p.player_id != c.player_id);
                self.pending.push((note.version, c.clone()));
            }
            if note.version > self.changes {
                self.changes = note.version;
                self.count = note.count;
            }
            self.presence_due = true;
        }
        self.presence_due
    }

    /// Sends the due `presence` frame, serialised once, to every local member.
    pub fn flush_presence(&mut self) {
        if !self.presence_due {
            return;
        }
        self.presence_due = false;
        let pending = std::mem::take(&mut self.pending);
        let latest = self.changes;
        // Each member is sent the changes after the reply it got (earlier ones are in the list
        // that reply carried), when one of them is about another member. Members placed at the
        // same point share one serialisation: in the steady state that is every member.
        let mut frames: Vec<(u64, Option<Shared>)> = Vec::new();
        for s in self.subs.iter_mut() {
            let seen = s.seen;
            s.seen = seen.max(latest);
            let news = if pending.is_empty() {
                latest > seen
            } else {
                pending
                    .iter()
                    .any(|(n, c)| *n > seen && c.player_id != *s.player)
            };
            if !news {
                continue;
            }
            let text = match frames.iter().find(|(k, _)| *k == seen) {
                Some((_, t)) => t.clone(),
                None => {
                    let changes: Vec<MemberUpdate> = pending
                        .iter()
                        .filter(|(n, _)| *n > seen)
                        .map(|(_, c)| c.clone())
                        .collect();
                    let frame = ServerFrame::Presence(Presence {
                        room: self.name.to_string(),
                        changes,
                        count: self.count,
                    });
                    let t = Some(Shared::new(Utf8Bytes::from(encode(&frame))));
                    frames.push((seen, t.clone()));
                    t
                }
            };
            if let Some(t) = text {
                s.session.enqueue_shared(&t, None);
            }
        }
    }

    fn kick(&mut self, session: &str) {
        self.subs.retain(|s| {
            if &*s.session.id == session {
                s.session.close(CloseCode::Replaced);
                false
            } else {
                true
            }
        });
    }

    fn fanout(&mut self, seq: u64, held: Held) {
        // Presence changes made before this message reach members before it.
        self.flush_presence();
        if let Some(k) = &held.kick {
            self.kick(k);
        }
        let now = Instant::now();
        // Serialised once per encoding in use: the MessagePack form is built by the first
        // MessagePack member and shared by the others.
        let shared = Shared::new(held.text);
        for s in &self.subs {
            if s.after < seq {
                s.session.enqueue_shared(&shared, Some(now));
            }
        }
        self.recent_bytes += shared.json().len();
        self.recent.push_back((seq, shared));
        while self.recent.len() > RECENT || self.recent_bytes > RECENT_BYTES {
            match self.recent.pop_front() {
                Some((_, t)) => self.recent_bytes -= t.json().len(),
                None => break,
            }
        }
        self.delivered = Some(seq);
        self.release_acks();
    }

    fn release_acks(&mut self) {
        let Some(d) = self.delivered else { return };
        self.acks.retain(|(s, session, ack)| {
            if *s <= d {
                session.enqueue(ack.clone(), None);
                false
            } else {
                true
            }
        });
    }

    /// Delivers held messages that are now next in line.
    pub fn drain_early(&mut self) {
        while let Some(d) = self.delivered {
            let Some((&seq, _)) = self.early.first_key_value() else {
                break;
            };
            if seq <= d {
                self.early.pop_first();
            } else if seq == d + 1 {
                if let Some((seq, held)) = self.early.pop_first() {
                    self.fanout(seq, held);
                }
            } else {
                break;
            }
        }
    }

    /// Sets the position of a new local member at `seq` (its reply was queued just before).
    /// Returns false when it could not be caught up.
    pub fn add_sub(
        &mut self,
        session: Arc<SessionHandle>,
        player: Arc<str>,
        seq: u64,
        presence: u64,
    ) -> bool {
        // A member placed again (a retried operation) is not delivered to twice.
        self.subs
            .retain(|s| !(Arc::ptr_eq(&s.session, &session) && s.player == player));
        let after = match self.delivered {
            Some(d) if d > seq => {
                let oldest = self.recent.front().map_or(d + 1, |(s, _)| *s);
                if oldest > seq + 1 {
                    return false;
                }
                let now = Instant::now();
                for (s, text) in &self.recent {
                    if *s > seq {
                        session.enqueue_shared(text, Some(now));
                    }
                }
                d
            }
            // Nothing arrived since subscribing yet (the first arrival sets the view's
            // position), or nothing after this member's position.
            _ => seq,
        };
        // Grown by a quarter, not doubled (see `membership::join`).
        if self.subs.len() == self.subs.capacity() {
            self.subs.reserve_exact((self.subs.len() / 4).max(4));
        }
        self.subs.push(Sub {
            session,
            player,
            after,
            seen: presence,
        });
        true
    }

    /// Takes one message of the stream: delivers it when it is next, holds it otherwise.
    pub fn receive(&mut self, seq: u64, held: Held) -> Next {
        if self.delivered.is_none() {
            // The first message since subscribing: every later one will arrive in order, and
            // every member placed here so far starts at or after the earliest `after`.
            let earliest = self
                .subs
                .iter()
                .map(|s| s.after)
                .min()
                .unwrap_or(seq.saturating_sub(1));
            self.delivered = Some(earliest.min(seq.saturating_sub(1)));
        }
        match self.delivered {
            None => Next::Nothing,
            Some(d) if seq <= d => {
                let forked = self
                    .recent
                    .iter()
                    .find(|(s, _)| *s == seq)
                    .is_some_and(|(_, t)| *t.json() != held.text);
                if forked {
                    self.fail_all();
                    Next::Forked(seq)
                } else {
                    Next::Nothing
                }
            }
            Some(d) if seq == d + 1 => {
                self.fanout(seq, held);
                self.drain_early();
                Next::Nothing
            }
            Some(d) => {
                if self.early.len() < MAX_EARLY {
                    self.early.insert(seq, held);
                }
                if self.fetching {
                    Next::Nothing
                } else {
                    self.fetching = true;
                    Next::Fetch(d + 1, seq - 1)
                }
            }
        }
    }

    fn remove_sub(&mut self, session: &Arc<SessionHandle>, player: &str) {
        self.subs
            .retain(|s| !(Arc::ptr_eq(&s.session, session) && &*s.player == player));
        self.acks.retain(|(_, s, _)| !Arc::ptr_eq(s, session));
    }

    fn is_unused(&self) -> bool {
        self.subs.is_empty() && self.joining == 0
    }
}

/// This node's views of its rooms. The map lock is held only to find, add or remove a view;
/// each view has its own lock, so no lock spans two rooms.
#[derive(Default)]
pub struct Mirror {
    rooms: Mutex<HashMap<Arc<str>, Arc<Mutex<LocalRoom>>>>,
    /// Rooms with a `presence` frame due (bounded by the rooms with a view).
    due: Mutex<Vec<Arc<str>>>,
    /// With tracing on, a message carrying a `traceparent` is delivered in a `deliver` span.
    telemetry: Telemetry,
    /// The node's id, recorded on `deliver` spans.
    node: Arc<str>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("rooms", &self.len())
            .finish()
    }
}

/// Where a member's reply put it: the stream's epoch and seq, and the room's presence version.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    /// The stream's epoch.
    pub epoch: &'a str,
    /// The member receives every room message after this seq.
    pub seq: u64,
    /// The member's reply reflected the membership up to this presence version.
    pub presence: u64,
}

/// A locked view of one room.
pub type RoomView<'a> = MutexGuard<'a, LocalRoom>;

fn lock(room: &Mutex<LocalRoom>) -> RoomView<'_> {
    room.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mirror {
    /// A mirror tracing its deliveries with `telemetry` (the default has tracing off).
    pub fn new(telemetry: Telemetry, node: Arc<str>) -> Mirror {
        Mirror {
            telemetry,
            node,
            ..Mirror::default()
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Mutex<LocalRoom>>>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The view of `room`, if this node has one.
    pub fn get(&self, room: &str) -> Option<Arc<Mutex<LocalRoom>>> {
        self.map().get(room).cloned()
    }

    /// Runs `f` on the view of `room`, if there is one.
    pub fn with<R>(&self, room: &str, f: impl FnOnce(&mut LocalRoom) -> R) -> Option<R> {
        let view = self.get(room)?;
        let mut v = lock(&view);
        Some(f(&mut v))
    }

    /// The rooms with a view here.
    pub fn rooms(&self) -> Vec<Arc<str>> {
        self.map().keys().cloned().collect()
    }

    /// The local members (sessions placed in a room here), over every view.
    pub fn members(&self) -> usize {
        let views: Vec<Arc<Mutex<LocalRoom>>> = self.map().values().cloned().collect();
        views.iter().map(|v| lock(v).subs.len()).sum()
    }

    /// Number of views.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether there is no view.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts an operation that will place a member in `room`, creating the view. Returns
    /// whether the backend must still subscribe.
    pub fn enter(&self, room: &str) -> bool {
        let view = self
            .map()
            .entry(room.into())
            .or_insert_with(|| {
                Arc::new(Mutex::new(LocalRoom {
                    name: room.into(),
                    ..LocalRoom::default()
                }))
            })
            .clone();
        let mut v = lock(&view);
        v.joining += 1;
        !v.subscribed
    }

    /// Ends an `enter` without placing anyone. Returns true when the view was dropped (the
    /// backend unsubscribes).
    pub fn exit(&self, room: &str) -> bool {
        self.release(room, |v| v.joining = v.joining.saturating_sub(1))
    }

    /// Removes a local member. Returns true when the view was dropped.
    pub fn remove(&self, room: &str, session: &Arc<SessionHandle>, player: &str) -> bool {
        self.release(room, |v| v.remove_sub(session, player))
    }

    fn release(&self, room: &str, f: impl FnOnce(&mut LocalRoom)) -> bool {
        let mut map = self.map();
        let Some(view) = map.get(room).cloned() else {
            return false;
        };
        let mut v = lock(&view);
        f(&mut v);
        if v.is_unused() {
            drop(v);
            map.remove(room);
            return true;
        }
        false
    }

    /// Places a new member at `seq` in `epoch`, queueing `reply` first, and ends its `enter`.
    /// Returns the view's name, for the session to share (`None`: there was no view, and the
    /// session is closed).
    pub fn place(
        &self,
        room: &str,
        at: Position<'_>,
        session: &Arc<SessionHandle>,
        player: &Arc<str>,
        reply: Utf8Bytes,
    ) -> Option<Arc<str>> {
        let Position {
            epoch,
            seq,
            presence,
        } = at;
        let Some(view) = self.get(room) else {
            session.close(CloseCode::InternalError);
            return None;
        };
        let mut v = lock(&view);
        v.joining = v.joining.saturating_sub(1);
        v.see_epoch(epoch);
        session.enqueue(reply, None);
        if !v.add_sub(session.clone(), player.clone(), seq, presence) {
            session.close(CloseCode::InternalError);
        }
        Some(v.name.clone())
    }

    /// Queues `reply` to `session` once the message `at` (epoch, seq) was delivered here (at
    /// once when it was, or when its seq is 0).
    pub fn reply_at(
        &self,
        room: &str,
        at: (&str, u64),
        session: &Arc<SessionHandle>,
        reply: Utf8Bytes,
    ) {
        let (epoch, seq) = at;
        if let Some(view) = self.get(room) {
            let mut v = lock(&view);
            // Already delivered here, or before this member's own position (its reply
            // covered it): at once. Positions of another epoch than the view's are not
            // comparable (the view has not seen the new epoch yet, after a rollback): the
            // reply waits for the message itself, whose arrival moves the view to its epoch.
            let same_epoch = v.epoch.as_deref() == Some(epoch);
            let placed_after = same_epoch
                && v.subs
                    .iter()
                    .any(|s| Arc::ptr_eq(&s.session, session) && s.after >= seq);
            let delivered = same_epoch && v.delivered.is_some_and(|d| d >= seq);
            if seq > 0 && !placed_after && !delivered {
                v.acks.push((seq, session.clone(), reply));
                return;
            }
        }
        session.enqueue(reply, None);
    }

    /// Hands a presence note of `room` to its view; the changes go out with the next
    /// [`Mirror::flush_presence`] or before the room's next message, whichever comes first.
    pub fn presence(&self, room: &str, epoch: Option<&str>, note: &PresenceNote) {
        let Some(view) = self.get(room) else { return };
        let mut v = lock(&view);
        if let Some(e) = epoch {
            v.see_epoch(e);
        }
        if v.presence(note) {
            drop(v);
            let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
            if !due.iter().any(|r| &**r == room) {
                due.push(room.into());
            }
        }
    }

    /// Sends every due `presence` frame (one per room, whatever the number of changes).
    pub fn flush_presence(&self) {
        let due = std::mem::take(&mut *self.due.lock().unwrap_or_else(|e| e.into_inner()));
        for room in due {
            if let Some(view) = self.get(&room) {
                lock(&view).flush_presence();
            }
        }
    }

    /// Hands one message of `room`'s stream to its view.
    pub fn receive(&self, room: &str, seq: u64, epoch: Option<&str>, held: Held) -> Next {
        let Some(view) = self.get(room) else {
            return Next::Nothing;
        };
        let mut v = lock(&view);
        if let Some(e) = epoch {
            v.see_epoch(e);
        }
        if self.telemetry.enabled() {
            return self.receive_traced(room, seq, v, held);
        }
        v.receive(seq, held)
    }

    /// [`Mirror::receive`] with tracing on: a message whose frame carries a `traceparent` (the
    /// publish's span) is handed in within a `deliver` span, a child of the publish.
    fn receive_traced(&self, room: &str, seq: u64, mut v: RoomView<'_>, held: Held) -> Next {
        let Some(parent) = telemetry::traceparent_in(&held.text).and_then(parse_traceparent) else {
            return v.receive(seq, held);
        };
        let parent_cx = Context::new().with_remote_span_context(parent);
        let attributes = vec![
            KeyValue::new("holdfast.room", telemetry::bounded(room)),
            KeyValue::new("holdfast.seq", seq as i64),
            KeyValue::new("holdfast.node_id", self.node.to_string()),
        ];
        let Some(cx) = self
            .telemetry
            .start("deliver", SpanKind::Consumer, &parent_cx, attributes)
        else {
            return v.receive(seq, held);
        };
        let before = v.delivered;
        let next = v.receive(seq, held);
        let span = cx.span();
        span.set_attribute(KeyValue::new("holdfast.recipients", v.subs.len() as i64));
        let outcome = if v.delivered.is_some_and(|d| d >= seq) && before.is_none_or(|b| b < seq) {
            "delivered"
        } else if matches!(next, Next::Fetch(..)) || v.early.contains_key(&seq) {
            "held"
        } else {
            "duplicate"
        };
        telemetry::end(&cx, outcome, matches!(next, Next::Forked(_)));
        next
    }
}

#[cfg(test)]
#[path = "fanout_tests.rs"]
mod tests;
