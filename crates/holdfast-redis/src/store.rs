//! The Redis room backend: the operations on one room from this node wait in the room's
//! queue, and everything waiting is applied as one batch (`batch`: load, run the room rules,
//! compare-and-set), retried on a conflict. So conflicts only arise between nodes, and a storm
//! of resumes costs a few commits per room.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use holdfast_gateway::room::rules::{Op, Rules};
use holdfast_gateway::room::stream::Buffered;
use holdfast_gateway::store::{
    Applied, BoxFuture, RoomBackend, RoomPage, StoreContext, StoreError,
};
use tokio::sync::oneshot;

use crate::batch::{Attempt, BatchResult};
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

/// Most rooms one sweep of away deadlines returns.
const MAX_DUE: usize = 100;

/// Most bucket reads of one page of the room list.
const LIST_STEPS: usize = 512;

/// Most operations committed in one batch.
const MAX_BATCH: usize = 128;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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

    pub(crate) fn ctx(&self) -> Result<&StoreContext, StoreError> {
        self.shared.ctx.get().ok_or(StoreError::Unavailable)
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
            // Each bucket has a set of its rooms; the cursor is `<bucket>:<SSCAN cursor>`. A
            // page may hold fewer than `limit` names. A listed room whose keys expired is
            // forgotten here.
            let (mut b, mut cur) = cursor
                .split_once(':')
                .and_then(|(b, c)| Some((b.parse::<u16>().ok()?, c.parse::<u64>().ok()?)))
                .unwrap_or((0, 0));
            let sh = &self.shared;
            let mut conn = sh.conn.clone();
            let mut names = Vec::new();
            for _ in 0..LIST_STEPS {
                if b >= crate::BUCKETS {
                    break;
                }
                let key = sh.rooms_key(b);
                let (next, found): (u64, Vec<String>) = redis::cmd("SSCAN")
                    .arg(&key)
                    .arg(cur)
                    .arg("COUNT")
                    .arg(limit.max(10) * 4)
                    .query_async(&mut conn)
                    .await
                    .map_err(|_| StoreError::Unavailable)?;
                let found: Vec<String> = found
                    .into_iter()
                    .filter(|r| r.starts_with(prefix))
                    .collect();
                if !found.is_empty() {
                    let mut pipe = redis::pipe();
                    for r in &found {
                        pipe.cmd("EXISTS").arg(sh.room_key(r, "st"));
                    }
                    let exists: Vec<bool> = pipe
                        .query_async(&mut conn)
                        .await
                        .map_err(|_| StoreError::Unavailable)?;
                    let (live, gone): (Vec<_>, Vec<_>) =
                        found.into_iter().zip(exists).partition(|(_, e)| *e);
                    if !gone.is_empty() {
                        let gone: Vec<String> = gone.into_iter().map(|(r, _)| r).collect();
                        let _: redis::RedisResult<i64> = redis::cmd("SREM")
                            .arg(&key)
                            .arg(gone)
                            .query_async(&mut conn)
                            .await;
                    }
                    names.extend(live.into_iter().map(|(r, _)| r));
                }
                cur = next;
                if cur == 0 {
                    b += 1;
                }
                if names.len() >= limit {
                    break;
                }
            }
            names.sort();
            let next = (b < crate::BUCKETS).then(|| format!("{b}:{cur}"));
            Ok((names, next))
        })
    }

    fn due(&self, now: u64) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move {
            let groups = (0..crate::BUCKETS)
                .map(|b| {
                    let mut p = redis::pipe();
                    p.cmd("ZRANGEBYSCORE")
                        .arg(self.shared.away_key(b))
                        .arg("-inf")
                        .arg(now)
                        .arg("LIMIT")
                        .arg(0)
                        .arg(MAX_DUE);
                    p
                })
                .collect();
            let mut due = Vec::new();
            for v in self.shared.query_groups(groups).await.into_iter().flatten() {
                for x in v {
                    let rooms: Vec<String> = redis::from_redis_value(&x).unwrap_or_default();
                    due.extend(rooms);
                }
                if due.len() >= MAX_DUE {
                    break;
                }
            }
            due.truncate(MAX_DUE);
            due
        })
    }
}
