//! The Redis room backend: each operation loads the room's state, runs the gateway's room
//! rules on it, and commits the result with one compare-and-set script (retrying on a
//! conflict). Operations on one room from this node are serialised first, so conflicts only
//! arise between nodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use holdfast_gateway::room::rules::{self, Op, Rules};
use holdfast_gateway::room::state::RoomState;
use holdfast_gateway::room::stream::Buffered;
use holdfast_gateway::store::{
    Applied, BoxFuture, RoomBackend, RoomPage, StoreContext, StoreError,
};
use holdfast_gateway::tokens::random_epoch;
use redis::Value as RValue;
use tokio::sync::oneshot;

use crate::{Shared, SubCmd};

/// Most attempts of one operation when other nodes keep changing the room first.
const MAX_ATTEMPTS: u32 = 64;

/// The Redis implementation of the gateway's [`RoomBackend`].
pub struct RedisRooms {
    pub(crate) shared: Arc<Shared>,
    /// room → this node's queue for it: one operation at a time per room per node.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// How one commit attempt ended.
enum Attempt {
    /// Committed (or nothing to commit).
    Done(Applied),
    /// Another node changed the room first.
    Conflict,
    /// The state was written by another run of Redis (restored from older data): retry with
    /// a new epoch for this run id.
    Rebase(String),
}

/// A room's state as loaded: its version (`epoch:counter`, empty when it does not exist).
struct Loaded {
    version: String,
    state: Option<RoomState>,
}

impl RedisRooms {
    pub(crate) fn new(shared: Arc<Shared>) -> RedisRooms {
        RedisRooms {
            shared,
            turns: Mutex::new(HashMap::new()),
        }
    }

    fn turns(&self) -> MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ctx(&self) -> Result<&StoreContext, StoreError> {
        self.shared.ctx.get().ok_or(StoreError::Unavailable)
    }

    async fn load(&self, room: &str, dedupe_of: Option<&str>) -> Result<Loaded, StoreError> {
        let sh = &self.shared;
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(sh.room_key(room, "st"))
            .arg("v")
            .arg("s");
        if let Some(p) = dedupe_of {
            pipe.cmd("HGET").arg(sh.room_key(room, "d")).arg(p);
        }
        let mut conn = sh.conn.clone();
        let r: redis::RedisResult<Vec<RValue>> = pipe.query_async(&mut conn).await;
        let v = r.map_err(|e| {
            sh.metrics.errors.inc();
            tracing::warn!(error = %e, room, "loading a room from Redis failed");
            StoreError::Unavailable
        })?;
        let (version, state): (Option<String>, Option<String>) = v
            .first()
            .and_then(|x| redis::from_redis_value(x).ok())
            .unwrap_or((None, None));
        let mut state = match state {
            Some(s) => Some(serde_json::from_str::<RoomState>(&s).map_err(|e| {
                tracing::error!(error = %e, room, "unreadable room state in Redis");
                StoreError::Unavailable
            })?),
            None => None,
        };
        if let (Some(st), Some(p)) = (state.as_mut(), dedupe_of) {
            st.name = room.to_owned();
            let raw: Option<String> = v.get(1).and_then(|x| redis::from_redis_value(x).ok());
            if let Some(w) = raw.and_then(|raw| serde_json::from_str(&raw).ok()) {
                st.dedupe.insert(p.to_owned(), w);
            }
        } else if let Some(st) = state.as_mut() {
            st.name = room.to_owned();
        }
        Ok(Loaded {
            version: version.unwrap_or_default(),
            state,
        })
    }

    /// One load → rules → commit attempt. `rebase_for`: the run id of the Redis that must
    /// see this room start a new epoch (see [`Attempt::Rebase`]).
    async fn attempt(
        &self,
        room: &str,
        op: &Op,
        rules: &Rules,
        rebase_for: Option<&str>,
    ) -> Result<Attempt, StoreError> {
        let ctx = self.ctx()?;
        let dedupe_of = match op {
            Op::Publish { player, .. } => Some(player.as_str()),
            Op::ServerPublish { .. } => Some(rules::SERVER_DEDUPE),
            _ => None,
        };
        let loaded = self.load(room, dedupe_of).await?;
        let mut st = match loaded.state {
            Some(st) => st,
            None if rules::creates(op) => RoomState::new(room, random_epoch()),
            None => {
                let outcome = rules::on_missing(op)?;
                return Ok(Attempt::Done(Applied {
                    outcome,
                    seq: 0,
                    epoch: String::new(),
                    emitted: 0,
                    presence: 0,
                    replay: Vec::new(),
                }));
            }
        };
        if rebase_for.is_some() {
            let epoch = random_epoch();
            tracing::warn!(
                room,
                seq = st.seq,
                old_epoch = %st.epoch,
                new_epoch = %epoch,
                "room state was written by another Redis run (restored from older data); starting a new epoch"
            );
            self.shared.metrics.rollbacks.inc();
            st.rebase(epoch);
        }
        let outcome = rules::apply(&mut st, op, rules)?;
        let out = std::mem::take(&mut st.out);
        let opts = rules.options(room);
        // Every membership change records a presence change, whatever the presence mode.
        let membership_changed = !st.changes.is_empty() || st.kick.is_some();
        let note = st.take_presence(opts.presence);
        if out.is_empty()
            && !membership_changed
            && st.dedupe_dirty.is_empty()
            && !matches!(op, Op::Join { .. } | Op::Resume { .. })
            && !loaded.version.is_empty()
            && rebase_for.is_none()
        {
            // Nothing changed (a no-op such as a repeated claim or a duplicate publish).
            return Ok(Attempt::Done(Applied {
                outcome,
                seq: st.seq,
                epoch: st.epoch,
                emitted: 0,
                presence: 0,
                replay: Vec::new(),
            }));
        }
        let counter = loaded
            .version
            .rsplit_once(':')
            .and_then(|(_, c)| c.parse::<u64>().ok())
            .unwrap_or(0);
        let version = format!("{}:{}", st.epoch, counter + 1);
        let body = if st.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&st).unwrap_or_default()
        };
        let next_due = st.members.iter().filter_map(|m| m.away_until).min();
        let replay = rules::replay_range(op, &outcome);
        let rc = &ctx.config.reconnection;
        let ttl = (rc.window_secs * 2).max(3600);
        let sh = &self.shared;
        let mut inv = sh.scripts.commit.prepare_invoke();
        inv.key(sh.room_key(room, "st"))
            .key(sh.room_key(room, "d"))
            .key(sh.room_key(room, "s"))
            .key(sh.away_key())
            .arg(&loaded.version)
            .arg(&version)
            .arg(&body)
            .arg(ttl)
            .arg(opts.history_size)
            .arg(sh.room_channel(room))
            .arg(room)
            .arg(next_due.map(|d| d.to_string()).unwrap_or_default())
            .arg(replay.map_or(0, |r| r.0))
            .arg(replay.map_or(0, |r| r.1))
            .arg(&st.epoch)
            .arg(
                note.as_ref()
                    .map(|n| serde_json::to_string(n).unwrap_or_default())
                    .unwrap_or_default(),
            )
            .arg(rebase_for.unwrap_or(""))
            .arg(st.base);
        let mut dirty = std::mem::take(&mut st.dedupe_dirty);
        dirty.sort();
        dirty.dedup();
        inv.arg(dirty.len());
        for p in &dirty {
            let w = st
                .dedupe
                .get(p)
                .map(|w| serde_json::to_string(w).unwrap_or_default())
                .unwrap_or_default();
            inv.arg(p).arg(w);
        }
        for e in &out {
            inv.arg(e.seq).arg(e.text.as_str());
        }
        let started = Instant::now();
        let mut conn = sh.conn.clone();
        let r: redis::RedisResult<Vec<RValue>> = inv.invoke_async(&mut conn).await;
        sh.metrics
            .op_seconds
            .observe(started.elapsed().as_secs_f64());
        let v = match r {
            Ok(v) => v,
            Err(e) => {
                sh.metrics.errors.inc();
                tracing::warn!(error = %e, room, "room commit failed in Redis");
                return Err(StoreError::Unknown);
            }
        };
        let status: String = v
            .first()
            .and_then(|x| redis::from_redis_value(x).ok())
            .unwrap_or_default();
        match status.as_str() {
            "conflict" => return Ok(Attempt::Conflict),
            "rebase" => {
                let run: String = v
                    .get(1)
                    .and_then(|x| redis::from_redis_value(x).ok())
                    .unwrap_or_default();
                return Ok(Attempt::Rebase(run));
            }
            _ => {}
        }
        let mut held = Vec::new();
        for pair in v[1..].chunks(2) {
            let (Some(id), Some(f)) = (pair.first(), pair.get(1)) else {
                continue;
            };
            let id: String = redis::from_redis_value(id).unwrap_or_default();
            let f: String = redis::from_redis_value(f).unwrap_or_default();
            if let Some(seq) = id.split('-').next().and_then(|s| s.parse::<u64>().ok()) {
                held.push(Buffered {
                    seq,
                    text: Utf8Bytes::from(f),
                });
            }
        }
        if rc.enabled {
            ctx.metrics
                .reconnection_events_buffered
                .inc_by(out.len() as u64);
        }
        Ok(Attempt::Done(Applied {
            outcome,
            seq: st.seq,
            epoch: st.epoch,
            emitted: out.len(),
            presence: st.presence_version,
            replay: held,
        }))
    }

    async fn apply_op(&self, room: &str, op: &Op) -> Result<Applied, StoreError> {
        let rules = Rules::from_config(&self.ctx()?.config);
        let turn = self.turns().entry(room.to_owned()).or_default().clone();
        let result = {
            let _held = turn.lock().await;
            let mut result = Err(StoreError::Unavailable);
            let mut rebase_for: Option<String> = None;
            for attempt in 0..MAX_ATTEMPTS {
                match self.attempt(room, op, &rules, rebase_for.as_deref()).await {
                    Ok(Attempt::Done(a)) => {
                        result = Ok(a);
                        break;
                    }
                    Ok(Attempt::Rebase(run)) => rebase_for = Some(run),
                    Ok(Attempt::Conflict) => {
                        // Whoever changed the room first may have started the new epoch.
                        rebase_for = None;
                        self.shared.metrics.conflicts.inc();
                        let jitter = rand::random_range(0..=u64::from(attempt.min(20)));
                        tokio::time::sleep(Duration::from_millis(jitter)).await;
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            result
        };
        drop(turn);
        let mut turns = self.turns();
        if turns.get(room).is_some_and(|t| Arc::strong_count(t) == 1) {
            turns.remove(room);
        }
        result
    }

    /// The history of `room` in `from..=to` (`to` = `u64::MAX` for everything after `from`).
    pub(crate) async fn read_history(
        &self,
        room: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<Buffered>, StoreError> {
        let end = if to == u64::MAX {
            "+".to_owned()
        } else {
            format!("{to}-1")
        };
        let mut conn = self.shared.conn.clone();
        let r: redis::RedisResult<Vec<(String, HashMap<String, String>)>> = redis::cmd("XRANGE")
            .arg(self.shared.room_key(room, "s"))
            .arg(format!("{from}-1"))
            .arg(&end)
            .query_async(&mut conn)
            .await;
        let entries = r.map_err(|_| StoreError::Unavailable)?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, mut fields)| {
                let seq = id.split('-').next()?.parse::<u64>().ok()?;
                let f = fields.remove("f")?;
                Some(Buffered {
                    seq,
                    text: Utf8Bytes::from(f),
                })
            })
            .collect())
    }
}

impl RoomBackend for RedisRooms {
    fn attach(&self, ctx: StoreContext) {
        self.shared.metrics.register(&ctx.metrics);
        let _ = self.shared.ctx.set(ctx);
        let rx = self
            .shared
            .sub_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let me = Arc::new(RedisRooms::new(self.shared.clone()));
        if let Some(rx) = rx {
            tokio::spawn(crate::pubsub::pubsub_task(me.clone(), rx));
            tokio::spawn(crate::sweep::sweep_task(me));
            if let Some(ctx) = self.shared.ctx.get() {
                tokio::spawn(crate::health_task(
                    self.shared.clone(),
                    ctx.shutdown.clone(),
                ));
            }
        }
    }

    fn subscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
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
            if ok {
                Ok(())
            } else {
                Err(StoreError::Unavailable)
            }
        })
    }

    fn unsubscribe(&self, room: &str) {
        let _ = self
            .shared
            .sub_tx
            .try_send(SubCmd::Unsubscribe(room.to_owned()));
    }

    fn apply<'a>(
        &'a self,
        room: &'a str,
        op: &'a Op,
    ) -> BoxFuture<'a, Result<Applied, StoreError>> {
        Box::pin(self.apply_op(room, op))
    }

    fn history<'a>(
        &'a self,
        room: &'a str,
        from: u64,
        to: u64,
    ) -> BoxFuture<'a, Result<Vec<Buffered>, StoreError>> {
        Box::pin(self.read_history(room, from, to))
    }

    fn list<'a>(
        &'a self,
        prefix: &'a str,
        cursor: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<RoomPage, StoreError>> {
        Box::pin(async move {
            // Room keys are `P:r:{<room>}:st`; SCAN walks them in the server's order, and the
            // cursor is SCAN's own. A page may hold fewer than `limit` names.
            let head = format!("{}:r:{{", self.shared.prefix);
            let mut conn = self.shared.conn.clone();
            let mut cur: u64 = cursor.parse().unwrap_or(0);
            let mut names = Vec::new();
            for _ in 0..64 {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cur)
                    .arg("MATCH")
                    .arg(format!("{head}*}}:st"))
                    .arg("COUNT")
                    .arg(limit.max(10) * 4)
                    .query_async(&mut conn)
                    .await
                    .map_err(|_| StoreError::Unavailable)?;
                names.extend(
                    keys.iter()
                        .filter_map(|k| k.strip_prefix(&head)?.strip_suffix("}:st"))
                        .filter(|r| r.starts_with(prefix))
                        .map(str::to_owned),
                );
                cur = next;
                if cur == 0 || names.len() >= limit {
                    break;
                }
            }
            names.sort();
            let next = (cur != 0).then(|| cur.to_string());
            Ok((names, next))
        })
    }

    fn due(&self, now: u64) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move {
            let mut conn = self.shared.conn.clone();
            let due: redis::RedisResult<Vec<String>> = redis::cmd("ZRANGEBYSCORE")
                .arg(self.shared.away_key())
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(100)
                .query_async(&mut conn)
                .await;
            due.unwrap_or_default()
        })
    }
}
