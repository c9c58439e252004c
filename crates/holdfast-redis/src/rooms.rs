//! The Redis room store and this node's local mirror of the rooms it has members in.
//!
//! Every room operation is one Lua script (see `scripts`). Room messages reach this node by
//! pub/sub, one channel per room, and are fanned out to local members in `seq` order from the
//! mirror: a message whose seq is not the next one is held while the missing range is fetched
//! from the room's history. A member's reply (`joined`, `reconnected`, a publish `ack`) is
//! queued at its position in the stream.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use holdfast_gateway::auth::unix_now_ms;
use holdfast_gateway::registry::SessionHandle;
use holdfast_gateway::replay::{hash_token, new_token};
use holdfast_gateway::room::{ack_frame, encode, RoomError};
use holdfast_gateway::store::{BoxFuture, Membership, Resume, RoomStore, StoreContext};
use holdfast_protocol::{
    CloseCode, ErrorCode, Event, Gap, Joined, Left, Member, Reconnected, ServerFrame,
};
use redis::Value as RValue;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::{Shared, SubCmd};

/// Frames held per room while waiting for a missing range.
const MAX_EARLY: usize = 4096;
/// Recently delivered frames kept per room, to catch up a member whose position was set a
/// moment after frames following it had already been delivered here.
const RECENT: usize = 256;
/// Sentinels used to cut a serialised event around its position.
const SEQ_SENTINEL: u64 = u64::MAX;
const EPOCH_SENTINEL: &str = "@@EPOCH@@";

/// A local member of a room.
struct Sub {
    session: Arc<SessionHandle>,
    player: Arc<str>,
    /// Messages after this seq are delivered to it.
    after: u64,
}

/// A message waiting for its turn.
struct Held {
    kick: Option<String>,
    text: Utf8Bytes,
}

/// This node's view of one room.
#[derive(Default)]
struct LocalRoom {
    /// The stream's epoch as last seen.
    epoch: Option<String>,
    /// The last seq fanned out here; `None` until a local member's position is known.
    delivered: Option<u64>,
    /// Local members.
    subs: Vec<Sub>,
    /// Messages ahead of `delivered + 1`, by seq; bounded by [`MAX_EARLY`].
    early: BTreeMap<u64, Held>,
    /// Recently delivered messages; bounded by [`RECENT`].
    recent: VecDeque<(u64, Utf8Bytes)>,
    /// Publish acks waiting for their event to be delivered here.
    acks: Vec<(u64, Arc<SessionHandle>, Utf8Bytes)>,
    /// A history fetch is under way.
    fetching: bool,
    /// Operations between subscribing and setting a position; the room is not dropped meanwhile.
    joining: u32,
    /// Set once the pub/sub subscription is confirmed.
    subscribed: bool,
}

impl LocalRoom {
    /// Closes every local member (their stream was lost or has a hole); they resume and are
    /// told exactly what they missed.
    fn fail_all(&mut self) {
        for s in self.subs.drain(..) {
            s.session.close(CloseCode::InternalError);
        }
        for (_, s, _) in self.acks.drain(..) {
            s.close(CloseCode::InternalError);
        }
        self.early.clear();
        self.recent.clear();
        self.delivered = None;
    }

    fn fanout(&mut self, seq: u64, held: Held) {
        if let Some(k) = &held.kick {
            self.subs.retain(|s| {
                if &*s.session.id == k.as_str() {
                    s.session.close(CloseCode::Replaced);
                    false
                } else {
                    true
                }
            });
        }
        let now = Instant::now();
        for s in &self.subs {
            if s.after < seq {
                s.session.enqueue(held.text.clone(), Some(now));
            }
        }
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, held.text));
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
    fn drain_early(&mut self) {
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

    fn hold(&mut self, seq: u64, held: Held) {
        if self.early.len() < MAX_EARLY {
            self.early.insert(seq, held);
        }
    }

    /// Sets the position of a new local member at `seq` (its own `joined`/`reconnected` was
    /// queued just before). Returns false when it could not be caught up.
    fn add_sub(&mut self, session: Arc<SessionHandle>, player: Arc<str>, seq: u64) -> bool {
        match self.delivered {
            None => {
                // No message has arrived since the subscription yet: this member's messages
                // start after `seq`, and the first arrival sets the mirror's position.
                self.subs.push(Sub {
                    session,
                    player,
                    after: seq,
                });
                true
            }
            Some(d) if d > seq => {
                let oldest = self.recent.front().map(|(s, _)| *s).unwrap_or(d + 1);
                if oldest > seq + 1 {
                    return false;
                }
                let now = Instant::now();
                for (s, text) in &self.recent {
                    if *s > seq {
                        session.enqueue(text.clone(), Some(now));
                    }
                }
                self.subs.push(Sub {
                    session,
                    player,
                    after: d,
                });
                true
            }
            Some(_) => {
                self.subs.push(Sub {
                    session,
                    player,
                    after: seq,
                });
                true
            }
        }
    }

    /// Takes one message of the stream: delivers it when it is next, holds it otherwise.
    /// Returns the range to fetch from the history when a jump was seen.
    fn receive(&mut self, seq: u64, held: Held) -> Option<(u64, u64)> {
        if self.delivered.is_none() {
            // The first message since subscribing: every later one will arrive (pub/sub keeps
            // order), and every member placed here so far starts at or after the earliest
            // `after`. Start just before whichever comes first; a jump is fetched below.
            let earliest = self.subs.iter().map(|s| s.after).min().unwrap_or(seq - 1);
            self.delivered = Some(earliest.min(seq - 1));
        }
        match self.delivered {
            None => None,
            Some(d) if seq <= d => None,
            Some(d) if seq == d + 1 => {
                self.fanout(seq, held);
                self.drain_early();
                None
            }
            Some(d) => {
                self.hold(seq, held);
                if self.fetching {
                    None
                } else {
                    self.fetching = true;
                    Some((d + 1, seq - 1))
                }
            }
        }
    }

    fn remove_sub(&mut self, session: &Arc<SessionHandle>, player: &str) {
        self.subs
            .retain(|s| !(Arc::ptr_eq(&s.session, session) && &*s.player == player));
        self.acks.retain(|(_, s, _)| !Arc::ptr_eq(s, session));
    }
}

/// What the pub/sub task must do after handing a message to the mirror.
enum After {
    Nothing,
    /// Fetch `from..=to` of this room's history.
    Fetch(String, u64, u64),
}

/// The Redis implementation of the gateway's [`RoomStore`].
pub struct RedisRooms {
    shared: Arc<Shared>,
    /// room → local mirror. A std mutex held for in-memory work only, never across an await.
    mirror: Arc<Mutex<HashMap<String, LocalRoom>>>,
}

fn err(code: ErrorCode, message: &'static str) -> RoomError {
    RoomError { code, message }
}

fn unavailable() -> RoomError {
    err(
        ErrorCode::BrokerUnavailable,
        "the cluster store is unreachable; retry",
    )
}

fn lua_error(name: &str) -> RoomError {
    match name {
        "already_in_room" => err(ErrorCode::AlreadyInRoom, "already in the room"),
        "room_full" => err(ErrorCode::RoomFull, "the room is full"),
        "not_in_room" => err(ErrorCode::NotInRoom, "not a member of the room"),
        "authority_taken" => err(
            ErrorCode::AuthorityTaken,
            "another connected member holds authority",
        ),
        "not_authority" => err(
            ErrorCode::NotAuthority,
            "this member does not hold authority",
        ),
        "reconnection_expired" => err(
            ErrorCode::ReconnectionExpired,
            "the reconnection window has passed",
        ),
        "reconnection_token_invalid" => err(
            ErrorCode::ReconnectionTokenInvalid,
            "the token is not valid for this user, room and player",
        ),
        "reconnection_failed" => err(
            ErrorCode::ReconnectionFailed,
            "the room no longer exists or this session is already in it",
        ),
        _ => err(ErrorCode::Internal, "unexpected store reply"),
    }
}

fn text(v: &RValue) -> String {
    redis::from_redis_value::<String>(v).unwrap_or_default()
}

fn int(v: &RValue) -> u64 {
    redis::from_redis_value::<u64>(v).unwrap_or(0)
}

fn random_epoch() -> String {
    use rand::RngCore;
    let mut b = [0u8; 4];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl RedisRooms {
    pub(crate) fn new(shared: Arc<Shared>) -> RedisRooms {
        RedisRooms {
            shared,
            mirror: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn ctx(&self) -> Result<&StoreContext, RoomError> {
        self.shared
            .ctx
            .get()
            .ok_or(err(ErrorCode::Internal, "store not attached"))
    }

    fn mirror(&self) -> MutexGuard<'_, HashMap<String, LocalRoom>> {
        self.mirror.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a room script with the common arguments followed by `extra`.
    async fn call(
        &self,
        script: &redis::Script,
        room: &str,
        extra: &[&str],
    ) -> Result<Vec<RValue>, RoomError> {
        let ctx = self.ctx()?;
        let sh = &self.shared;
        let ttl = (ctx.config.reconnection.window_secs * 2).max(3600);
        let mut inv = script.prepare_invoke();
        inv.key(sh.room_key(room, "m"))
            .key(sh.room_key(room, "p"))
            .key(sh.room_key(room, "s"))
            .key(sh.away_key())
            .key(sh.room_key(room, "t"))
            .arg(serde_json::to_string(room).unwrap_or_default())
            .arg(random_epoch())
            .arg(ctx.config.reconnection.event_buffer_size)
            .arg(sh.room_channel(room))
            .arg(unix_now_ms())
            .arg(room)
            .arg(ttl);
        for a in extra {
            inv.arg(*a);
        }
        let started = Instant::now();
        let mut conn = sh.conn.clone();
        let r: redis::RedisResult<Vec<RValue>> = inv.invoke_async(&mut conn).await;
        sh.metrics
            .op_seconds
            .observe(started.elapsed().as_secs_f64());
        match r {
            Ok(v) => {
                if v.first().map(text).as_deref() == Some("err") {
                    return Err(lua_error(&v.get(1).map(text).unwrap_or_default()));
                }
                Ok(v)
            }
            Err(e) => {
                sh.metrics.errors.inc();
                tracing::warn!(error = %e, room, "room operation failed in Redis");
                Err(unavailable())
            }
        }
    }

    /// Makes sure this node is subscribed to the room's channel, and counts an operation that
    /// will set a member's position (so the mirror is not dropped meanwhile).
    async fn enter(&self, room: &str) -> Result<(), RoomError> {
        let need = {
            let mut m = self.mirror();
            let lr = m.entry(room.to_owned()).or_default();
            lr.joining += 1;
            !lr.subscribed
        };
        if need {
            let (tx, rx) = oneshot::channel();
            let ok = self
                .shared
                .sub_tx
                .send(SubCmd::Subscribe(room.to_owned(), tx))
                .await
                .is_ok()
                && tokio::time::timeout(Duration::from_secs(5), rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(false);
            if !ok {
                self.leave_mirror(room, None);
                return Err(unavailable());
            }
            if let Some(lr) = self.mirror().get_mut(room) {
                lr.subscribed = true;
            }
        }
        Ok(())
    }

    /// Ends an `enter` (and removes `sub` when given); drops the room when nobody local is left.
    fn leave_mirror(&self, room: &str, sub: Option<(&Arc<SessionHandle>, &str)>) {
        let mut m = self.mirror();
        let Some(lr) = m.get_mut(room) else { return };
        if let Some((s, p)) = sub {
            lr.remove_sub(s, p);
        } else {
            lr.joining = lr.joining.saturating_sub(1);
        }
        if lr.subs.is_empty() && lr.joining == 0 {
            m.remove(room);
            let _ = self
                .shared
                .sub_tx
                .try_send(SubCmd::Unsubscribe(room.to_owned()));
        }
    }

    /// Sets a new member's position after its script returned `seq` in `epoch`, queueing
    /// `reply` first.
    fn place(
        &self,
        room: &str,
        epoch: &str,
        seq: u64,
        session: &Arc<SessionHandle>,
        player: &Arc<str>,
        reply: Utf8Bytes,
    ) {
        let mut m = self.mirror();
        let Some(lr) = m.get_mut(room) else {
            session.close(CloseCode::InternalError);
            return;
        };
        lr.joining = lr.joining.saturating_sub(1);
        if lr.epoch.as_deref() != Some(epoch) {
            if lr.epoch.is_some() {
                lr.fail_all();
            }
            lr.epoch = Some(epoch.to_owned());
        }
        session.enqueue(reply, None);
        if !lr.add_sub(session.clone(), player.clone(), seq) {
            session.close(CloseCode::InternalError);
        }
    }

    /// Hands one pub/sub message to the mirror.
    fn on_room_message(&self, room: &str, payload: &str) -> After {
        let mut parts = payload.splitn(4, ' ');
        let (Some(seq), Some(epoch), Some(kick), Some(frame)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return After::Nothing;
        };
        let Ok(seq) = seq.parse::<u64>() else {
            return After::Nothing;
        };
        if frame.starts_with("{\"type\":\"event\"") {
            if let Some(ts) = frame
                .split("\"ts\":")
                .nth(1)
                .and_then(|r| r.split([',', '}']).next())
                .and_then(|t| t.parse::<u64>().ok())
            {
                let lag = unix_now_ms().saturating_sub(ts) as f64 / 1000.0;
                self.shared.metrics.pubsub_lag.observe(lag);
            }
        }
        let held = Held {
            kick: (kick != "-").then(|| kick.to_owned()),
            text: Utf8Bytes::from(frame.to_owned()),
        };
        self.accept(room, seq, Some(epoch), held)
    }

    fn accept(&self, room: &str, seq: u64, epoch: Option<&str>, held: Held) -> After {
        let mut m = self.mirror();
        let Some(lr) = m.get_mut(room) else {
            return After::Nothing;
        };
        if let Some(e) = epoch {
            match lr.epoch.as_deref() {
                Some(cur) if cur != e => {
                    // Redis lost this room's stream: everyone local resumes and learns it.
                    lr.fail_all();
                    lr.epoch = Some(e.to_owned());
                }
                None => lr.epoch = Some(e.to_owned()),
                _ => {}
            }
        }
        match lr.receive(seq, held) {
            Some((from, to)) => After::Fetch(room.to_owned(), from, to),
            None => After::Nothing,
        }
    }

    /// Fetches `from..=to` from the room's history and delivers it; a range that is gone
    /// closes the room's local members (they resume and get the exact gap).
    async fn fetch(&self, room: &str, from: u64, to: u64) {
        self.shared.metrics.resyncs.inc();
        let mut conn = self.shared.conn.clone();
        let key = self.shared.room_key(room, "s");
        let end = if to == u64::MAX {
            "+".to_owned()
        } else {
            format!("{to}-1")
        };
        let r: redis::RedisResult<Vec<(String, HashMap<String, String>)>> = redis::cmd("XRANGE")
            .arg(&key)
            .arg(format!("{from}-1"))
            .arg(&end)
            .query_async(&mut conn)
            .await;
        let entries = r.unwrap_or_default();
        for (id, fields) in entries {
            let Some(seq) = id.split('-').next().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            let Some(f) = fields.get("f") else { continue };
            let kick = fields.get("k").filter(|k| k.as_str() != "-").cloned();
            let held = Held {
                kick,
                text: Utf8Bytes::from(f.clone()),
            };
            let _ = self.accept(room, seq, None, held);
        }
        let mut m = self.mirror();
        if let Some(lr) = m.get_mut(room) {
            lr.fetching = false;
            let behind = match lr.delivered {
                Some(d) => to != u64::MAX && d < to,
                None => false,
            };
            if behind {
                tracing::warn!(
                    room,
                    from,
                    to,
                    "room history no longer holds a missed range"
                );
                lr.fail_all();
            }
            lr.drain_early();
        }
    }

    /// After the pub/sub connection came back: close local sessions whose user was claimed by
    /// a newer connection meanwhile (the kick may have been lost), check each room's epoch and
    /// fetch what was published meanwhile.
    async fn resync_all(&self) {
        self.fence_sessions().await;
        let rooms: Vec<(String, Option<String>, Option<u64>)> = self
            .mirror()
            .iter()
            .map(|(k, v)| (k.clone(), v.epoch.clone(), v.delivered))
            .collect();
        for (room, epoch, delivered) in rooms {
            let mut conn = self.shared.conn.clone();
            let current: redis::RedisResult<Option<String>> = redis::cmd("HGET")
                .arg(self.shared.room_key(&room, "m"))
                .arg("epoch")
                .query_async(&mut conn)
                .await;
            let current = current.ok().flatten();
            if current.is_none() || current != epoch {
                if let Some(lr) = self.mirror().get_mut(&room) {
                    lr.fail_all();
                    lr.epoch = current;
                }
                continue;
            }
            if let Some(d) = delivered {
                self.fetch(&room, d + 1, u64::MAX).await;
            }
        }
    }

    /// Closes local sessions that no longer own their user in Redis.
    async fn fence_sessions(&self) {
        let Some(sink) = self.shared.sink.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        let sessions = sink.sessions();
        for chunk in sessions.chunks(512) {
            let mut pipe = redis::pipe();
            for (user, _) in chunk {
                pipe.cmd("HGET").arg(self.shared.user_key(user)).arg("s");
            }
            let mut conn = self.shared.conn.clone();
            let owners: redis::RedisResult<Vec<Option<String>>> = pipe.query_async(&mut conn).await;
            let Ok(owners) = owners else { return };
            for ((user, session), owner) in chunk.iter().zip(owners) {
                if owner.is_some_and(|o| *o != **session) {
                    sink.close_user(user, Some(session), CloseCode::Replaced);
                }
            }
        }
    }

    /// Handles a message on this node's own channel.
    fn on_node_message(&self, payload: &str) {
        let Some(sink) = self.shared.sink.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        if let Some(rest) = payload.strip_prefix("kick ") {
            if let Some((session, user)) = rest.split_once(' ') {
                sink.close_user(user, Some(session), CloseCode::Replaced);
            }
        } else if let Some(rest) = payload.strip_prefix("direct ") {
            let Some((len, rest)) = rest.split_once(' ') else {
                return;
            };
            let Ok(len) = len.parse::<usize>() else {
                return;
            };
            if rest.len() >= len && rest.is_char_boundary(len) {
                let (user, frame) = rest.split_at(len);
                sink.deliver_direct(user, Utf8Bytes::from(frame.to_owned()));
            }
        }
    }
}

/// The pub/sub task: one connection per node, room channels added and removed on demand,
/// reconnecting with backoff, resubscribing and resyncing after an outage.
async fn pubsub_task(store: Arc<RedisRooms>, mut cmds: mpsc::Receiver<SubCmd>) {
    let Some(ctx) = store.shared.ctx.get().cloned() else {
        return;
    };
    let node_channel = format!("{}{}", store.shared.node_channel_prefix(), ctx.node_id);
    let room_prefix = format!("{}:ch:r:", store.shared.prefix);
    let mut delay = Duration::from_millis(100);
    let mut first = true;
    loop {
        let conn = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            c = store.shared.client.get_async_pubsub() => c,
        };
        let (mut sink, mut stream) = match conn {
            Ok(c) => c.split(),
            Err(e) => {
                store.shared.set_healthy(false);
                tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "Redis pub/sub connection failed; retrying");
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut channels = vec![node_channel.clone()];
        channels.extend(store.mirror().keys().map(|r| store.shared.room_channel(r)));
        if sink.subscribe(&channels).await.is_err() {
            continue;
        }
        delay = Duration::from_millis(100);
        store.shared.set_healthy(true);
        if !first {
            tracing::info!("Redis pub/sub reconnected; resyncing rooms");
            store.resync_all().await;
        }
        first = false;
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(SubCmd::Subscribe(room, ack)) => {
                        let ok = sink.subscribe(store.shared.room_channel(&room)).await.is_ok();
                        let _ = ack.send(ok);
                    }
                    Some(SubCmd::Unsubscribe(room)) => {
                        let _ = sink.unsubscribe(store.shared.room_channel(&room)).await;
                    }
                },
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    let channel = msg.get_channel_name();
                    let payload = String::from_utf8_lossy(msg.get_payload_bytes());
                    if channel == node_channel {
                        store.on_node_message(&payload);
                    } else if let Some(room) = channel.strip_prefix(&room_prefix) {
                        if let After::Fetch(room, from, to) = store.on_room_message(room, &payload) {
                            store.fetch(&room, from, to).await;
                        }
                    }
                }
            }
        }
        store.shared.set_healthy(false);
        tracing::warn!("Redis pub/sub connection lost; reconnecting");
    }
}

/// Expires away members whose window passed (any node may do it; the script is idempotent)
/// and refreshes the TTL of rooms with local members.
async fn sweep_task(store: Arc<RedisRooms>) {
    let Some(ctx) = store.shared.ctx.get().cloned() else {
        return;
    };
    let every = Duration::from_millis(ctx.config.reconnection.sweep_interval_ms);
    let mut tick = tokio::time::interval(every);
    let mut last_touch = Instant::now();
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut conn = store.shared.conn.clone();
        let due: redis::RedisResult<Vec<String>> = redis::cmd("ZRANGEBYSCORE")
            .arg(store.shared.away_key())
            .arg("-inf")
            .arg(unix_now_ms())
            .arg("LIMIT")
            .arg(0)
            .arg(100)
            .query_async(&mut conn)
            .await;
        for entry in due.unwrap_or_default() {
            if let Some((room, player)) = entry.split_once('\n') {
                let _ = store
                    .call(&store.shared.scripts.expire, room, &[player])
                    .await;
            }
        }
        if last_touch.elapsed() >= Duration::from_secs(30) {
            last_touch = Instant::now();
            let ttl = (ctx.config.reconnection.window_secs * 2).max(3600);
            let rooms: Vec<String> = store.mirror().keys().cloned().collect();
            let mut pipe = redis::pipe();
            for r in &rooms {
                for part in ["m", "p", "s", "t"] {
                    pipe.cmd("EXPIRE")
                        .arg(store.shared.room_key(r, part))
                        .arg(ttl)
                        .ignore();
                }
            }
            let _: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        }
    }
}

/// Splits a serialised event at its position fields: what follows `"epoch":"..."`, without the
/// closing brace, which the publish script appends after its own `seq` and `epoch`.
fn event_suffix(frame: &ServerFrame) -> Option<String> {
    let text = serde_json::to_string(frame).ok()?;
    let marker = format!("\"epoch\":\"{EPOCH_SENTINEL}\"");
    let at = text.find(&marker)? + marker.len();
    let rest = text.get(at..)?;
    Some(rest.strip_suffix('}')?.to_owned())
}

impl RoomStore for RedisRooms {
    fn attach(&self, ctx: StoreContext) {
        self.shared.metrics.register(&ctx.metrics);
        let _ = self.shared.ctx.set(ctx);
        let rx = self
            .shared
            .sub_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let me = Arc::new(RedisRooms {
            shared: self.shared.clone(),
            mirror: self.mirror.clone(),
        });
        if let Some(rx) = rx {
            tokio::spawn(pubsub_task(me.clone(), rx));
            tokio::spawn(sweep_task(me));
        }
    }

    fn join(
        &self,
        room: String,
        session: Arc<SessionHandle>,
        id: Option<String>,
    ) -> BoxFuture<'_, Result<Membership, RoomError>> {
        Box::pin(async move {
            let ctx = self.ctx()?.clone();
            self.enter(&room).await?;
            let token = ctx.config.reconnection.enabled.then(new_token);
            let th = token
                .as_deref()
                .map(|t| hex::encode(hash_token(t)))
                .unwrap_or_default();
            let max = ctx.config.limits.max_members_per_room.to_string();
            let r = self
                .call(
                    &self.shared.scripts.join,
                    &room,
                    &[&session.user, &session.id, &ctx.node_id, &max, &th],
                )
                .await;
            let v = match r {
                Ok(v) => v,
                Err(e) => {
                    self.leave_mirror(&room, None);
                    return Err(e);
                }
            };
            let seq = v.get(1).map(int).unwrap_or(0);
            let epoch = v.get(2).map(text).unwrap_or_default();
            let player: Arc<str> = v.get(3).map(text).unwrap_or_default().into();
            let members: Vec<Member> =
                serde_json::from_str(&v.get(4).map(text).unwrap_or_default()).unwrap_or_default();
            let authority: Option<String> =
                serde_json::from_str(&v.get(5).map(text).unwrap_or_default()).unwrap_or_default();
            if token.is_some() {
                ctx.metrics.reconnection_tokens_issued.inc();
            }
            let joined = encode(&ServerFrame::Joined(Joined {
                room: room.clone(),
                player_id: player.to_string(),
                members,
                authority,
                seq,
                epoch: epoch.clone(),
                reconnection_token: token,
                id,
            }));
            self.place(&room, &epoch, seq, &session, &player, joined);
            Ok(Membership {
                room: room.into(),
                player,
                local: None,
            })
        })
    }

    fn leave(
        &self,
        m: Membership,
        session: Arc<SessionHandle>,
        id: Option<String>,
    ) -> BoxFuture<'_, Result<(), RoomError>> {
        Box::pin(async move {
            self.leave_mirror(&m.room, Some((&session, &m.player)));
            let v = self
                .call(
                    &self.shared.scripts.leave,
                    &m.room,
                    &[&m.player, &session.id],
                )
                .await?;
            let left = ServerFrame::Left(Left {
                room: m.room.to_string(),
                seq: v.get(1).map(int).unwrap_or(0),
                epoch: v.get(2).map(text).unwrap_or_default(),
                id,
            });
            session.enqueue(encode(&left), None);
            Ok(())
        })
    }

    fn publish(
        &self,
        m: Membership,
        session: Arc<SessionHandle>,
        data: Value,
        id: Option<String>,
        traceparent: Option<String>,
    ) -> BoxFuture<'_, Result<(), RoomError>> {
        Box::pin(async move {
            let ctx = self.ctx()?.clone();
            let frame = ServerFrame::Event(Event {
                room: m.room.to_string(),
                seq: SEQ_SENTINEL,
                epoch: EPOCH_SENTINEL.into(),
                ts: unix_now_ms(),
                from: m.player.to_string(),
                user_id: session.user.to_string(),
                data,
                id: id.clone(),
                traceparent,
            });
            let suffix = event_suffix(&frame).ok_or(err(ErrorCode::Internal, "cannot encode"))?;
            let window = ctx.config.session.dedupe_window.to_string();
            let v = self
                .call(
                    &self.shared.scripts.publish,
                    &m.room,
                    &[
                        &m.player,
                        &session.id,
                        id.as_deref().unwrap_or(""),
                        &suffix,
                        &window,
                    ],
                )
                .await?;
            let dup = v.first().map(text).as_deref() == Some("dup");
            let seq = v.get(1).map(int).unwrap_or(0);
            if dup {
                ctx.metrics.dedupe_hits.inc();
            }
            if let Some(id) = id {
                let ack = ack_frame(id, &m.room, Some(seq));
                let mut mirror = self.mirror();
                match mirror.get_mut(&*m.room) {
                    Some(lr) if !dup && lr.delivered.is_none_or(|d| d < seq) => {
                        lr.acks.push((seq, session.clone(), ack));
                    }
                    _ => {
                        session.enqueue(ack, None);
                    }
                }
            }
            Ok(())
        })
    }

    fn claim_authority(
        &self,
        m: Membership,
        session: Arc<SessionHandle>,
        id: Option<String>,
    ) -> BoxFuture<'_, Result<(), RoomError>> {
        Box::pin(async move {
            let v = self
                .call(
                    &self.shared.scripts.claim,
                    &m.room,
                    &[&m.player, &session.id],
                )
                .await?;
            self.ack_at(&m, &session, id, v.get(1).map(int).unwrap_or(0));
            Ok(())
        })
    }

    fn release_authority(
        &self,
        m: Membership,
        session: Arc<SessionHandle>,
        id: Option<String>,
    ) -> BoxFuture<'_, Result<(), RoomError>> {
        Box::pin(async move {
            let v = self
                .call(
                    &self.shared.scripts.release,
                    &m.room,
                    &[&m.player, &session.id],
                )
                .await?;
            self.ack_at(&m, &session, id, v.get(1).map(int).unwrap_or(0));
            Ok(())
        })
    }

    fn disconnect(&self, m: Membership, session: Arc<SessionHandle>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.leave_mirror(&m.room, Some((&session, &m.player)));
            let Ok(ctx) = self.ctx().cloned() else { return };
            let rc = &ctx.config.reconnection;
            let until = unix_now_ms() + rc.window_secs * 1000;
            let _ = self
                .call(
                    &self.shared.scripts.away,
                    &m.room,
                    &[
                        &m.player,
                        &session.id,
                        &until.to_string(),
                        if rc.restore_authority { "1" } else { "0" },
                        if rc.enabled { "1" } else { "0" },
                    ],
                )
                .await;
        })
    }

    fn reconnect(
        &self,
        req: Resume,
        session: Arc<SessionHandle>,
    ) -> BoxFuture<'_, Result<Membership, RoomError>> {
        Box::pin(async move {
            let ctx = self.ctx()?.clone();
            if !ctx.config.reconnection.enabled {
                ctx.metrics.reconnection_validation_failures.inc();
                return Err(err(
                    ErrorCode::ReconnectionFailed,
                    "reconnection is disabled",
                ));
            }
            self.enter(&req.room).await?;
            let token = new_token();
            let presented = hex::encode(hash_token(&req.token));
            let next = hex::encode(hash_token(&token));
            let last = req.last_sequence.to_string();
            let restore = if ctx.config.reconnection.restore_authority {
                "1"
            } else {
                "0"
            };
            let r = self
                .call(
                    &self.shared.scripts.resume,
                    &req.room,
                    &[
                        &req.player_id,
                        &session.user,
                        &presented,
                        &next,
                        &session.id,
                        &ctx.node_id,
                        &last,
                        restore,
                    ],
                )
                .await;
            let v = match r {
                Ok(v) => v,
                Err(e) => {
                    self.leave_mirror(&req.room, None);
                    if e.code != ErrorCode::BrokerUnavailable {
                        ctx.metrics.reconnection_validation_failures.inc();
                    }
                    return Err(e);
                }
            };
            let seq = v.get(1).map(int).unwrap_or(0);
            let epoch = v.get(2).map(text).unwrap_or_default();
            let members: Vec<Member> =
                serde_json::from_str(&v.get(3).map(text).unwrap_or_default()).unwrap_or_default();
            let authority: Option<String> =
                serde_json::from_str(&v.get(4).map(text).unwrap_or_default()).unwrap_or_default();
            let current = v.get(5).map(int).unwrap_or(0);
            let first = v.get(6).map(int).unwrap_or(0);
            let events: Vec<ServerFrame> = v
                .iter()
                .skip(7)
                .filter_map(|f| serde_json::from_str(&text(f)).ok())
                .collect();
            let wanted = req.last_sequence + 1;
            let gap = if req.last_sequence >= current {
                None
            } else if events.is_empty() {
                Some((wanted, current))
            } else if first > wanted {
                Some((wanted, first - 1))
            } else {
                None
            };
            let player: Arc<str> = req.player_id.as_str().into();
            let frame = encode(&ServerFrame::Reconnected(Reconnected {
                room: req.room.clone(),
                player_id: req.player_id.clone(),
                events,
                recovered: gap.is_none(),
                gap: gap.map(|(from, to)| Gap {
                    from,
                    to,
                    epoch: epoch.clone(),
                }),
                members,
                authority,
                seq,
                epoch: epoch.clone(),
                reconnection_token: token,
                id: req.id.clone(),
            }));
            ctx.metrics.reconnection_completions.inc();
            ctx.metrics.reconnection_tokens_issued.inc();
            self.place(&req.room, &epoch, seq, &session, &player, frame);
            Ok(Membership {
                room: req.room.into(),
                player,
                local: None,
            })
        })
    }
}

impl RedisRooms {
    /// Queues an `ack` for an authority change at its position (or at once when nothing was
    /// emitted).
    fn ack_at(&self, m: &Membership, session: &Arc<SessionHandle>, id: Option<String>, seq: u64) {
        let Some(id) = id else { return };
        let ack = ack_frame(id, &m.room, None);
        let mut mirror = self.mirror();
        match mirror.get_mut(&*m.room) {
            Some(lr) if seq > 0 && lr.delivered.is_none_or(|d| d < seq) => {
                lr.acks.push((seq, session.clone(), ack));
            }
            _ => {
                session.enqueue(ack, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use holdfast_gateway::metrics::Metrics;

    fn session(id: &str) -> Arc<SessionHandle> {
        SessionHandle::new(
            id.into(),
            id.into(),
            1024,
            1 << 20,
            Arc::new(Metrics::new()),
        )
    }

    fn held(seq: u64) -> Held {
        Held {
            kick: None,
            text: Utf8Bytes::from(format!("{{\"seq\":{seq}}}")),
        }
    }

    fn drained(s: &SessionHandle) -> Vec<String> {
        std::iter::from_fn(|| s.try_pop().map(|o| o.text.to_string())).collect()
    }

    /// Joins whose scripts returned in one order may be placed in the other; nobody misses a
    /// message after its own position, whatever has or has not arrived yet.
    #[test]
    fn members_placed_out_of_order_each_get_everything_after_their_position() {
        let mut lr = LocalRoom::default();
        let (x, y) = (session("x"), session("y"));
        // y's join (seq 10) is placed before x's (seq 5); nothing has arrived yet.
        assert!(lr.add_sub(y.clone(), "py".into(), 10));
        assert!(lr.add_sub(x.clone(), "px".into(), 5));
        for seq in 6..=12 {
            assert_eq!(lr.receive(seq, held(seq)), None);
        }
        let want = |r: std::ops::RangeInclusive<u64>| -> Vec<String> {
            r.map(|s| format!("{{\"seq\":{s}}}")).collect()
        };
        assert_eq!(drained(&x), want(6..=12));
        assert_eq!(drained(&y), want(11..=12));
        // A member placed after messages arrived catches up from the recent ones.
        let z = session("z");
        assert!(lr.add_sub(z.clone(), "pz".into(), 9));
        assert_eq!(drained(&z), want(10..=12));
    }

    #[test]
    fn a_jump_asks_for_the_missing_range_and_holds_what_came_early() {
        let mut lr = LocalRoom::default();
        let x = session("x");
        assert!(lr.add_sub(x.clone(), "px".into(), 1));
        assert_eq!(lr.receive(2, held(2)), None);
        assert_eq!(lr.receive(5, held(5)), Some((3, 4)));
        assert_eq!(drained(&x).len(), 1);
        lr.fetching = false;
        assert_eq!(lr.receive(3, held(3)), None);
        assert_eq!(lr.receive(4, held(4)), None);
        assert_eq!(
            drained(&x),
            vec!["{\"seq\":3}", "{\"seq\":4}", "{\"seq\":5}"]
        );
    }
}
