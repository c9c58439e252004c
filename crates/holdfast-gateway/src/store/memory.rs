//! The in-process backend: each room's state, its replay ring and its lock, in this process.
//! Messages are handed to the node's mirror while the room's lock is held, so they arrive in
//! `seq` order.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::{Applied, BoxFuture, RoomBackend, RoomPage, StoreContext, StoreError};
use crate::room::fanout::Held;
use crate::room::rules::{self, Op, Rules};
use crate::room::state::RoomState;
use crate::room::stream::{Buffered, EventRing};
use crate::tokens::random_epoch;

/// One room in this process.
struct MemRoom {
    /// `None` once the room was dropped: a late arrival looks it up again.
    state: Option<RoomState>,
    ring: EventRing,
}

/// Rooms kept in this process.
#[derive(Default)]
pub struct MemoryRooms {
    /// name → room. Locked only to look up, insert or remove; room work happens under the
    /// room's own lock (lock order: room → map).
    rooms: Mutex<HashMap<Arc<str>, Arc<Mutex<MemRoom>>>>,
    ctx: OnceLock<(StoreContext, Rules)>,
    /// Bytes held by every room's replay ring, bounded by `reconnection.node_buffer_bytes`.
    buffered: std::sync::atomic::AtomicUsize,
}

impl MemoryRooms {
    /// An empty store.
    pub fn new() -> MemoryRooms {
        MemoryRooms::default()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Mutex<MemRoom>>>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of rooms.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether there is no room.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by every room's replay ring.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    fn account(&self, before: usize, after: usize) {
        if after >= before {
            self.buffered.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.buffered.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    fn apply_now(&self, room: &str, op: &Op) -> Result<Applied, StoreError> {
        let Some((ctx, rules)) = self.ctx.get() else {
            return Err(StoreError::Unavailable);
        };
        let rc = &ctx.config.reconnection;
        // A room found in the map may be dropped by a concurrent last leave before we lock
        // it; it is then gone from the map and the next lookup finds or creates a fresh one.
        for _ in 0..4 {
            let entry = {
                let mut map = self.map();
                match map.get(room) {
                    Some(r) => r.clone(),
                    None if rules::creates(op) => {
                        let o = rules.options(room);
                        let r = Arc::new(Mutex::new(MemRoom {
                            state: Some(RoomState::new(room, random_epoch())),
                            ring: EventRing::new(o.history_size, o.history_bytes),
                        }));
                        map.insert(room.into(), r.clone());
                        ctx.metrics.rooms_active.inc();
                        r
                    }
                    None => {
                        return rules::on_missing(op).map_err(StoreError::Refused).map(|o| {
                            Applied {
                                outcome: o,
                                seq: 0,
                                epoch: String::new(),
                                emitted: 0,
                                presence: 0,
                                replay: Vec::new(),
                            }
                        })
                    }
                }
            };
            let mut r = entry.lock().unwrap_or_else(|e| e.into_inner());
            let MemRoom { state, ring } = &mut *r;
            let Some(st) = state.as_mut() else { continue };
            let (members, away) = counts(st);
            let outcome = rules::apply(st, op, rules)?;
            st.dedupe_dirty.clear();
            let out = std::mem::take(&mut st.out);
            let note = st.take_presence(rules.options(room).presence);
            let (members2, away2) = counts(st);
            ctx.metrics
                .room_members
                .add(members2 as i64 - members as i64);
            ctx.metrics
                .reconnection_sessions_active
                .add(away2 as i64 - away as i64);
            let replay = rules::replay_range(op, &outcome)
                .map(|(from, to)| ring.range(from, to))
                .unwrap_or_default();
            let applied = Applied {
                replay,
                outcome,
                seq: st.seq,
                epoch: st.epoch.clone(),
                emitted: out.len(),
                presence: st.presence_version,
            };
            if let Some(note) = &note {
                ctx.mirror.presence(room, Some(&st.epoch), note);
            }
            for e in out {
                if rc.enabled {
                    ctx.metrics.reconnection_events_buffered.inc();
                    let before = ring.bytes();
                    let mut evicted = ring.push(e.seq, e.text.clone()) as u64;
                    self.account(before, ring.bytes());
                    // Over the node's budget: this room gives back its oldest messages first.
                    while self.buffered.load(Ordering::Relaxed) > rc.node_buffer_bytes {
                        let Some(freed) = ring.evict_oldest() else {
                            break;
                        };
                        self.buffered.fetch_sub(freed, Ordering::Relaxed);
                        evicted += 1;
                    }
                    ctx.metrics.reconnection_events_evicted.inc_by(evicted);
                }
                ctx.mirror.receive(
                    room,
                    e.seq,
                    Some(&st.epoch),
                    Held {
                        kick: None,
                        text: e.text,
                    },
                );
            }
            if st.is_empty() {
                *state = None;
                self.account(ring.bytes(), 0);
                ring.clear();
                let mut map = self.map();
                if map.get(room).is_some_and(|x| Arc::ptr_eq(x, &entry)) {
                    map.remove(room);
                    ctx.metrics.rooms_active.dec();
                }
            }
            return Ok(applied);
        }
        Err(StoreError::Unavailable)
    }
}

fn counts(st: &RoomState) -> (usize, usize) {
    let away = st.members.iter().filter(|m| !m.online()).count();
    (st.members.len(), away)
}

impl RoomBackend for MemoryRooms {
    fn attach(&self, ctx: StoreContext) {
        let rules = Rules::from_config(&ctx.config);
        let _ = self.ctx.set((ctx, rules));
    }

    fn subscribe<'a>(&'a self, _room: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe(&self, _room: &str) {}

    fn apply<'a>(
        &'a self,
        room: &'a str,
        op: &'a Op,
    ) -> BoxFuture<'a, Result<Applied, StoreError>> {
        let r = self.apply_now(room, op);
        Box::pin(async move { r })
    }

    fn history<'a>(
        &'a self,
        room: &'a str,
        from: u64,
        to: u64,
    ) -> BoxFuture<'a, Result<Vec<Buffered>, StoreError>> {
        let held = self
            .map()
            .get(room)
            .cloned()
            .map(|r| {
                r.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .ring
                    .range(from, to)
            })
            .unwrap_or_default();
        Box::pin(async move { Ok(held) })
    }

    fn list<'a>(
        &'a self,
        prefix: &'a str,
        cursor: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<RoomPage, StoreError>> {
        let mut names: Vec<String> = self
            .map()
            .keys()
            .filter(|k| k.starts_with(prefix) && (cursor.is_empty() || &***k > cursor))
            .map(|k| k.to_string())
            .collect();
        names.sort();
        let next = (names.len() > limit).then(|| names[limit - 1].clone());
        names.truncate(limit);
        Box::pin(async move { Ok((names, next.filter(|_| limit > 0))) })
    }

    fn due(&self, now: u64) -> BoxFuture<'_, Vec<String>> {
        let rooms: Vec<(Arc<str>, Arc<Mutex<MemRoom>>)> = self
            .map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let due = rooms
            .into_iter()
            .filter(|(_, r)| {
                r.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .state
                    .as_ref()
                    .is_some_and(|st| {
                        st.members
                            .iter()
                            .any(|m| m.away_until.is_some_and(|u| now >= u))
                    })
            })
            .map(|(k, _)| k.to_string())
            .collect();
        Box::pin(async move { due })
    }
}
