//! Keeps the keys of rooms with local members alive: their TTL is refreshed while the room is
//! used here. (Away members are expired by the gateway's sweep, through the room rules.)
//!
//! Also the node liveness sweep: every start of a node refreshes a lease with its heartbeat
//! (`P:{g}:leases`, `<node_id>-<start>` by deadline on Redis's clock). A start whose lease
//! passed died without draining (a crash, `kill -9`, a partition longer than the lease, or a
//! restart under the same node id): any other node applies [`Op::NodeGone`] to every room in
//! its room sets (`P:{bN}:n:<start>`, one per bucket, filled by the commits of its joins and
//! resumes), so its members turn away through the room rules, can resume within the window and
//! expire after it. The same task keeps the node's room gauges.

use std::sync::Arc;
use std::time::Duration;

use holdfast_gateway::room::rules::Op;
use holdfast_gateway::store::StoreError;
use redis::Script;

use crate::store::RedisRooms;

/// How often a node looks for expired leases.
const LEASE_SWEEP: Duration = Duration::from_secs(1);

/// Most expired nodes handled per sweep, and most rooms per node.
const MAX_GONE_NODES: isize = 16;
const MAX_ROOMS_PER_NODE: usize = 1000;

/// Forgets a dead node's handled rooms of one bucket, except those placed again after its
/// lease passed (it came back). KEYS 1 the node's room set of the bucket. ARGV 1 the lease's
/// deadline (ms); then the handled rooms. Returns the rooms left.
const FORGET_ROOMS: &str = r"
for i = 2, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) <= tonumber(ARGV[1]) then redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return redis.call('ZCARD', KEYS[1])
";

/// Forgets a dead node once none of its rooms is left, unless its lease was refreshed
/// meanwhile. KEYS 1 leases. ARGV 1 node, 2 now (ms, Redis's clock).
const FORGET_NODE: &str = r"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
";

/// One pipeline per bucket, each from `f`.
fn per_bucket(f: impl Fn(u16, &mut redis::Pipeline)) -> Vec<redis::Pipeline> {
    (0..crate::BUCKETS)
        .map(|b| {
            let mut p = redis::pipe();
            f(b, &mut p);
            p
        })
        .collect()
}

/// Each bucket's rooms in `key_of(bucket)` (a sorted set); `None` when a read failed.
async fn rooms_by_bucket(
    store: &RedisRooms,
    key_of: impl Fn(u16) -> String,
) -> Option<Vec<Vec<String>>> {
    let groups = per_bucket(|b, p| {
        p.cmd("ZRANGE").arg(key_of(b)).arg(0).arg(-1);
    });
    store
        .shared
        .query_groups(groups)
        .await
        .into_iter()
        .map(|v| {
            let v = v?;
            redis::from_redis_value(v.first()?).ok()
        })
        .collect()
}

/// Refreshes the TTL of the rooms with local members every 30 s until the node drains, and
/// drops from this node's room set the rooms it has no member in any more.
pub(crate) async fn sweep_task(store: Arc<RedisRooms>) {
    let Some(ctx) = store.shared.ctx.get().cloned() else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ttl = (ctx.config.reconnection.window_secs * 2).max(3600);
        let sh = &store.shared;
        // Read the sets before the mirror: a room joined meanwhile is in the mirror.
        let listed = rooms_by_bucket(&store, |b| sh.node_rooms_key(b, &ctx.lease)).await;
        let rooms = ctx.mirror.rooms();
        let mut groups = Vec::new();
        if let Some(listed) = listed {
            for (b, listed) in (0u16..).zip(listed) {
                if listed.is_empty() {
                    continue;
                }
                let unused: Vec<&String> = listed
                    .iter()
                    .filter(|r| !rooms.iter().any(|l| &**l == r.as_str()))
                    .collect();
                let key = sh.node_rooms_key(b, &ctx.lease);
                let mut p = redis::pipe();
                for chunk in unused.chunks(256) {
                    p.cmd("ZREM").arg(&key).arg(chunk);
                }
                p.cmd("EXPIRE").arg(&key).arg(ttl);
                groups.push(p);
            }
        }
        // The keys of the rooms with local members, a pipeline per bucket.
        let mut by_bucket: std::collections::BTreeMap<u16, redis::Pipeline> = Default::default();
        for r in rooms.iter() {
            let p = by_bucket
                .entry(crate::bucket(r))
                .or_insert_with(redis::pipe);
            for part in ["st", "d", "s"] {
                p.cmd("EXPIRE").arg(sh.room_key(r, part)).arg(ttl);
            }
        }
        groups.extend(by_bucket.into_values());
        for chunk in groups.chunks(64) {
            let _ = sh.query_groups(chunk.to_vec()).await;
        }
    }
}

/// The node's room gauges in cluster mode, per node: rooms with a local member view, local
/// members, and away members of those rooms as of this node's latest commit of each.
fn gauges(store: &RedisRooms, ctx: &holdfast_gateway::store::StoreContext) {
    let rooms = ctx.mirror.rooms();
    let away: usize = {
        let mut away = store.away.lock().unwrap_or_else(|e| e.into_inner());
        away.retain(|r, _| rooms.iter().any(|l| **l == **r));
        away.values().sum()
    };
    let m = &ctx.metrics;
    m.rooms_active.set(rooms.len() as i64);
    m.room_members.set(ctx.mirror.members() as i64);
    m.reconnection_sessions_active.set(away as i64);
}

/// Turns away the members of nodes whose lease passed, every [`LEASE_SWEEP`], until the node
/// drains.
pub(crate) async fn lease_task(store: Arc<RedisRooms>) {
    let Some(ctx) = store.shared.ctx.get().cloned() else {
        return;
    };
    let forget_rooms = Script::new(FORGET_ROOMS);
    let forget_node = Script::new(FORGET_NODE);
    let me = ctx.lease.clone();
    let mut tick = tokio::time::interval(LEASE_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether this node's own lease was seen alive since it was last found lapsed.
    let mut held = false;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        gauges(&store, &ctx);
        let sh = &store.shared;
        let now = sh.redis_now_ms();
        let mut conn = sh.conn.clone();
        let own: redis::RedisResult<Option<f64>> = redis::cmd("ZSCORE")
            .arg(sh.leases_key())
            .arg(&*me)
            .query_async(&mut conn)
            .await;
        match own {
            Ok(Some(deadline)) if deadline > now as f64 => held = true,
            Ok(_) if held => {
                // This node was cut off for longer than its lease: the others take it for
                // dead and turn its members away. Its sessions resume to find them again.
                held = false;
                tracing::warn!(
                    "this node's liveness lease lapsed; closing its room sessions so they resume"
                );
                for room in ctx.mirror.rooms() {
                    ctx.mirror.with(&room, |lr| lr.fail_all());
                }
            }
            _ => {}
        }
        let gone: Vec<(String, f64)> = match redis::cmd("ZRANGEBYSCORE")
            .arg(sh.leases_key())
            .arg("-inf")
            .arg(now)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(MAX_GONE_NODES)
            .query_async(&mut conn)
            .await
        {
            Ok(g) => g,
            Err(_) => continue,
        };
        for (node, deadline) in gone.into_iter().filter(|(n, _)| **n != *me) {
            let Some(listed) = rooms_by_bucket(&store, |b| sh.node_rooms_key(b, &node)).await
            else {
                continue;
            };
            let op = Op::NodeGone {
                node: node.clone(),
                now: holdfast_gateway::auth::unix_now_ms(),
            };
            let mut budget = MAX_ROOMS_PER_NODE;
            let mut left = 0usize;
            let mut turned = 0usize;
            for (b, rooms) in (0u16..).zip(listed) {
                if rooms.is_empty() {
                    continue;
                }
                let take = rooms.len().min(budget);
                budget -= take;
                let mut handled = Vec::with_capacity(take);
                for room in rooms.into_iter().take(take) {
                    match store.apply_room(&room, &op).await {
                        Ok(_) | Err(StoreError::Refused(_)) => handled.push(room),
                        Err(_) => {}
                    }
                }
                turned += handled.len();
                let mut inv = forget_rooms.prepare_invoke();
                inv.key(sh.node_rooms_key(b, &node)).arg(deadline as u64);
                for r in &handled {
                    inv.arg(r);
                }
                let remaining: redis::RedisResult<i64> = inv.invoke_async(&mut conn).await;
                // Rooms not handled (failed, or past the budget) stay for the next sweep.
                left += remaining.map_or(1, |n| n.max(0) as usize);
            }
            tracing::info!(
                node,
                rooms = turned,
                "a node's liveness lease passed; its members turned away"
            );
            if left == 0 {
                let _: redis::RedisResult<i64> = forget_node
                    .key(sh.leases_key())
                    .arg(&node)
                    .arg(now)
                    .invoke_async(&mut conn)
                    .await;
            }
        }
    }
}
