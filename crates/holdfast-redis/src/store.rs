//! The Redis room backend: each operation loads the room's state, runs the gateway's room
//! rules on it, and commits the result with one compare-and-set script (retrying on a
//! conflict). Operations on one room from this node are serialised first, so conflicts only
//! arise between nodes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use holdfast_gateway::room::presence::PresenceNote;
use holdfast_gateway::room::rules::{self, Op, Outcome, Rules};
use holdfast_gateway::room::state::{Emitted, RoomState};
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
    /// room → this node's queue of operations for it.
    queues: Arc<Mutex<HashMap<String, Arc<Mutex<RoomQueue>>>>>,
    /// room → its away members as of this node's latest commit of it (for the gauge).
    pub(crate) away: Arc<Mutex<HashMap<String, usize>>>,
}

/// The operations on one room waiting on this node. One runner at a time takes everything
/// queued and commits it as one batch: in a storm of resumes, one load and one commit serve
/// all of a room's resumes on this node instead of one each.
#[derive(Default)]
struct RoomQueue {
    waiting: VecDeque<(Op, oneshot::Sender<Result<Applied, StoreError>>)>,
    running: bool,
}

/// Most operations committed in one batch.
const MAX_BATCH: usize = 128;

/// A room's state as loaded: its version (`epoch:counter`, empty when it does not exist).
struct Loaded {
    version: String,
    state: Option<RoomState>,
}

/// What one operation of a batch gave, before the commit's answer.
struct Step {
    outcome: Outcome,
    seq: u64,
    epoch: String,
    emitted: usize,
    presence: u64,
    /// The replay range asked for, inclusive.
    replay: Option<(u64, u64)>,
}

type BatchResult = Vec<Result<Applied, StoreError>>;

/// How one commit attempt ended.
enum Attempt {
    /// Committed (or nothing to commit).
    Done(BatchResult),
    /// Another node changed the room first.
    Conflict,
    /// The state was written by another run of Redis (restored from older data): retry with
    /// a new epoch for this run id.
    Rebase(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RedisRooms {
    pub(crate) fn new(shared: Arc<Shared>) -> RedisRooms {
        RedisRooms {
            shared,
            queues: Arc::new(Mutex::new(HashMap::new())),
            away: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn handle(&self) -> RedisRooms {
        RedisRooms {
            shared: self.shared.clone(),
            queues: self.queues.clone(),
            away: self.away.clone(),
        }
    }

    fn ctx(&self) -> Result<&StoreContext, StoreError> {
        self.shared.ctx.get().ok_or(StoreError::Unavailable)
    }

    async fn load(&self, room: &str, dedupe_of: &[&str]) -> Result<Loaded, StoreError> {
        let sh = &self.shared;
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(sh.room_key(room, "st"))
            .arg("v")
            .arg("s");
        if !dedupe_of.is_empty() {
            pipe.cmd("HMGET").arg(sh.room_key(room, "d")).arg(dedupe_of);
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
        if let Some(st) = state.as_mut() {
            st.name = room.to_owned();
            let windows: Vec<Option<String>> = v
                .get(1)
                .and_then(|x| redis::from_redis_value(x).ok())
                .unwrap_or_default();
            for (p, raw) in dedupe_of.iter().zip(windows) {
                if let Some(w) = raw.and_then(|raw| serde_json::from_str(&raw).ok()) {
                    st.dedupe.insert((*p).to_owned(), w);
                }
            }
        }
        Ok(Loaded {
            version: version.unwrap_or_default(),
            state,
        })
    }

    /// One load → rules → commit attempt for a batch of operations on one room. On a conflict
    /// or a rebase nothing was applied: the caller retries the whole batch. `rebase_for`: the
    /// run id of the Redis that must see this room start a new epoch (see
    /// [`Attempt::Rebase`]).
    async fn attempt(
        &self,
        room: &str,
        ops: &[Op],
        rules: &Rules,
        rebase_for: Option<&str>,
    ) -> Result<Attempt, StoreError> {
        let ctx = self.ctx()?;
        let mut publishers: Vec<&str> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Publish { player, .. } => Some(player.as_str()),
                Op::ServerPublish { .. } => Some(rules::SERVER_DEDUPE),
                _ => None,
            })
            .collect();
        publishers.sort_unstable();
        publishers.dedup();
        let loaded = self.load(room, &publishers).await?;
        let opts = rules.options(room);
        let mut st = loaded.state;
        if let (Some(state), Some(_)) = (st.as_mut(), rebase_for) {
            let epoch = random_epoch();
            tracing::warn!(
                room,
                seq = state.seq,
                old_epoch = %state.epoch,
                new_epoch = %epoch,
                "room state was written by another Redis run (restored from older data); starting a new epoch"
            );
            self.shared.metrics.rollbacks.inc();
            state.rebase(epoch);
        }
        let seq_before = st.as_ref().map_or(0, |s| s.seq);
        let base = st.as_ref().map_or(0, |s| s.base);
        let mut steps: Vec<Result<Step, StoreError>> = Vec::with_capacity(ops.len());
        let mut frames: Vec<Emitted> = Vec::new();
        let mut note: Option<PresenceNote> = None;
        let mut changed = rebase_for.is_some();
        // Nodes that place members in the room with this commit: the room joins their sets.
        let mut placing: Vec<&str> = Vec::new();
        for op in ops {
            let state = match st.as_mut() {
                Some(state) => state,
                None if rules::creates(op) => st.insert(RoomState::new(room, random_epoch())),
                None => {
                    steps.push(match rules::on_missing(op) {
                        Ok(outcome) => Ok(Step {
                            outcome,
                            seq: 0,
                            epoch: String::new(),
                            emitted: 0,
                            presence: 0,
                            replay: None,
                        }),
                        Err(e) => Err(StoreError::Refused(e)),
                    });
                    continue;
                }
            };
            let outcome = match rules::apply(state, op, rules) {
                Ok(o) => o,
                Err(e) => {
                    steps.push(Err(StoreError::Refused(e)));
                    continue;
                }
            };
            if let Op::Join { who, .. } | Op::Resume { who, .. } = op {
                let start = rules::start_of(&who.session);
                if !placing.contains(&start) {
                    placing.push(start);
                }
            }
            let out = std::mem::take(&mut state.out);
            // Every membership change records a presence change, whatever the presence mode.
            let membership = !state.changes.is_empty() || state.kick.is_some();
            if let Some(n) = state.take_presence(opts.presence) {
                match note.as_mut() {
                    Some(all) => all.merge(n),
                    None => note = Some(n),
                }
            }
            changed |= !out.is_empty()
                || membership
                || !state.dedupe_dirty.is_empty()
                || matches!(op, Op::Join { .. } | Op::Resume { .. });
            steps.push(Ok(Step {
                replay: rules::replay_range(op, &outcome),
                outcome,
                seq: state.seq,
                epoch: state.epoch.clone(),
                emitted: out.len(),
                presence: state.presence_version,
            }));
            frames.extend(out);
            if state.is_empty() {
                // The room is dropped with this operation: the rest of the batch waits for the
                // next commit (one commit never both drops and recreates a room).
                st = None;
                break;
            }
        }
        let finish = |steps: Vec<Result<Step, StoreError>>, held: &[Buffered]| -> BatchResult {
            steps
                .into_iter()
                .map(|r| {
                    r.map(|s| {
                        let replay = s
                            .replay
                            .map(|(from, to)| {
                                held.iter()
                                    .filter(|b| b.seq >= from && b.seq <= to.min(seq_before))
                                    .cloned()
                                    .chain(
                                        frames
                                            .iter()
                                            .filter(|f| f.seq > seq_before && f.seq <= to)
                                            .map(|f| Buffered {
                                                seq: f.seq,
                                                text: f.text.clone(),
                                            }),
                                    )
                                    .collect()
                            })
                            .unwrap_or_default();
                        Applied {
                            outcome: s.outcome,
                            seq: s.seq,
                            epoch: s.epoch,
                            emitted: s.emitted,
                            presence: s.presence,
                            replay,
                        }
                    })
                })
                .collect()
        };
        if !changed {
            // Nothing changed (refusals, a repeated claim, a duplicate publish, a read).
            return Ok(Attempt::Done(finish(steps, &[])));
        }
        // The replay ranges of the batch's resumes, as far as the stream held them before.
        let (from, to) = steps
            .iter()
            .filter_map(|s| s.as_ref().ok().and_then(|s| s.replay))
            .filter(|(from, _)| *from <= seq_before)
            .fold((u64::MAX, 0), |(a, b), (f, t)| {
                (a.min(f), b.max(t.min(seq_before)))
            });
        let replay = (to > 0).then_some((from, to));
        let counter = loaded
            .version
            .rsplit_once(':')
            .and_then(|(_, c)| c.parse::<u64>().ok())
            .unwrap_or(0);
        let (epoch, body, next_due, mut dirty, dedupe) = match st.as_mut() {
            Some(state) => (
                state.epoch.clone(),
                serde_json::to_string(&*state).unwrap_or_default(),
                state.members.iter().filter_map(|m| m.away_until).min(),
                std::mem::take(&mut state.dedupe_dirty),
                std::mem::take(&mut state.dedupe),
            ),
            None => (
                steps
                    .iter()
                    .rev()
                    .find_map(|s| s.as_ref().ok().map(|s| s.epoch.clone()))
                    .unwrap_or_default(),
                String::new(),
                None,
                Vec::new(),
                HashMap::new(),
            ),
        };
        let away_now = st
            .as_ref()
            .map_or(0, |s| s.members.iter().filter(|m| !m.online()).count());
        let version = format!("{epoch}:{}", counter + 1);
        let rc = &ctx.config.reconnection;
        let ttl = (rc.window_secs * 2).max(3600);
        let sh = &self.shared;
        let mut inv = sh.scripts.commit.prepare_invoke();
        inv.key(sh.room_key(room, "st"))
            .key(sh.room_key(room, "d"))
            .key(sh.room_key(room, "s"))
            .key(sh.away_key());
        if st.is_some() {
            for n in &placing {
                inv.key(sh.node_rooms_key(n));
            }
        }
        inv.arg(&loaded.version)
            .arg(&version)
            .arg(&body)
            .arg(ttl)
            .arg(opts.history_size)
            .arg(sh.room_channel(room))
            .arg(room)
            .arg(next_due.map(|d| d.to_string()).unwrap_or_default())
            .arg(replay.map_or(0, |r| r.0))
            .arg(replay.map_or(0, |r| r.1))
            .arg(&epoch)
            .arg(
                note.as_ref()
                    .map(|n| serde_json::to_string(n).unwrap_or_default())
                    .unwrap_or_default(),
            )
            .arg(rebase_for.unwrap_or(""))
            .arg(base);
        dirty.sort();
        dirty.dedup();
        inv.arg(dirty.len());
        for p in &dirty {
            let w = dedupe
                .get(p)
                .map(|w| serde_json::to_string(w).unwrap_or_default())
                .unwrap_or_default();
            inv.arg(p).arg(w);
        }
        for e in &frames {
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
        {
            let mut away = lock(&self.away);
            if away_now == 0 {
                away.remove(room);
            } else {
                away.insert(room.to_owned(), away_now);
            }
        }
        if rc.enabled {
            ctx.metrics
                .reconnection_events_buffered
                .inc_by(frames.len() as u64);
        }
        Ok(Attempt::Done(finish(steps, &held)))
    }

    /// Applies a batch, retrying the whole batch on a version conflict. The result may cover
    /// only the first operations (when one of them dropped the room); the rest are retried.
    async fn apply_batch(&self, room: &str, ops: &[Op]) -> BatchResult {
        let rules = match self.ctx() {
            Ok(ctx) => Rules::from_config(&ctx.config),
            Err(e) => return ops.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut rebase_for: Option<String> = None;
        for attempt in 0..MAX_ATTEMPTS {
            match self.attempt(room, ops, &rules, rebase_for.as_deref()).await {
                Ok(Attempt::Done(results)) => return results,
                Ok(Attempt::Rebase(run)) => rebase_for = Some(run),
                Ok(Attempt::Conflict) => {
                    // Whoever changed the room first may have started the new epoch.
                    rebase_for = None;
                    self.shared.metrics.conflicts.inc();
                    let jitter = rand::random_range(0..=u64::from(attempt.min(20)));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(e) => return ops.iter().map(|_| Err(e.clone())).collect(),
            }
        }
        ops.iter().map(|_| Err(StoreError::Unavailable)).collect()
    }

    /// Runs `room`'s queue until it is empty: everything waiting is committed as one batch.
    async fn run_queue(self, room: String, queue: Arc<Mutex<RoomQueue>>) {
        loop {
            let batch: Vec<(Op, oneshot::Sender<Result<Applied, StoreError>>)> = {
                let mut q = lock(&queue);
                if q.waiting.is_empty() {
                    q.running = false;
                    break;
                }
                let n = q.waiting.len().min(MAX_BATCH);
                q.waiting.drain(..n).collect()
            };
            let ops: Vec<Op> = batch.iter().map(|(op, _)| op.clone()).collect();
            let results = self.apply_batch(&room, &ops).await;
            let done = results.len();
            let mut batch = batch.into_iter();
            for result in results {
                if let Some((_, reply)) = batch.next() {
                    let _ = reply.send(result);
                }
            }
            if done < ops.len() {
                let mut q = lock(&queue);
                for item in batch.rev() {
                    q.waiting.push_front(item);
                }
            }
        }
        let mut queues = lock(&self.queues);
        if queues.get(&room).is_some_and(|q| {
            let q = lock(q);
            !q.running && q.waiting.is_empty()
        }) {
            queues.remove(&room);
        }
    }

    /// Applies `op` to `room` through this node's queue for the room.
    pub(crate) async fn apply_room(&self, room: &str, op: &Op) -> Result<Applied, StoreError> {
        self.apply_op(room, op).await
    }

    async fn apply_op(&self, room: &str, op: &Op) -> Result<Applied, StoreError> {
        let (tx, rx) = oneshot::channel();
        let queue = lock(&self.queues)
            .entry(room.to_owned())
            .or_default()
            .clone();
        let lead = {
            let mut q = lock(&queue);
            q.waiting.push_back((op.clone(), tx));
            !std::mem::replace(&mut q.running, true)
        };
        if lead {
            tokio::spawn(self.handle().run_queue(room.to_owned(), queue));
        }
        rx.await.unwrap_or(Err(StoreError::Unavailable))
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
        let me = Arc::new(self.handle());
        if let Some(rx) = rx {
            tokio::spawn(crate::pubsub::pubsub_task(me.clone(), rx));
            tokio::spawn(crate::sweep::sweep_task(me.clone()));
            tokio::spawn(crate::sweep::lease_task(me));
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
