//! Keeps the keys of rooms with local members alive: their TTL is refreshed while the room is
//! used here. (Away members are expired by the gateway's sweep, through the room rules.)
//!
//! Also the node liveness sweep: every start of a node refreshes a lease with its heartbeat
//! (`P:leases`, `<node_id>-<start>` by deadline on Redis's clock). A start whose lease passed
//! died without draining (a crash, `kill -9`, a partition longer than the lease, or a restart
//! under the same node id): any other node applies [`Op::NodeGone`] to every room in its room
//! set (`P:n:{start}:rooms`, filled by the commits of its joins and resumes), so its members
//! turn away through the room rules, can resume within the window and expire after it. The
//! same task keeps the node's room gauges.

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

/// Forgets a dead node's handled rooms, and the node once none is left, unless its lease was
/// refreshed meanwhile (it came back). KEYS 1 leases, 2 the node's room set. ARGV 1 node,
/// 2 now (ms, Redis's clock); then the handled rooms.
const FORGET: &str = r"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) > tonumber(ARGV[2]) then return 0 end
for i = 3, #ARGV do redis.call('SREM', KEYS[2], ARGV[i]) end
if redis.call('SCARD', KEYS[2]) == 0 then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 1
";

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
        let mine = store.shared.node_rooms_key(&ctx.lease);
        let mut conn = store.shared.conn.clone();
        // Read the set before the mirror: a room joined meanwhile is in the mirror.
        let listed: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&mine)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        let rooms = ctx.mirror.rooms();
        let unused: Vec<&String> = listed
            .iter()
            .filter(|r| !rooms.iter().any(|l| &**l == r.as_str()))
            .collect();
        for chunk in unused.chunks(256) {
            let _: redis::RedisResult<i64> = redis::cmd("SREM")
                .arg(&mine)
                .arg(chunk)
                .query_async(&mut conn)
                .await;
        }
        if !rooms.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("EXPIRE")
                .arg(&mine)
                .arg(ttl)
                .query_async(&mut conn)
                .await;
        }
        for chunk in rooms.chunks(256) {
            let mut pipe = redis::pipe();
            for r in chunk {
                for part in ["st", "d", "s"] {
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
    let forget = Script::new(FORGET);
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
        let gone: Vec<String> = match redis::cmd("ZRANGEBYSCORE")
            .arg(sh.leases_key())
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(MAX_GONE_NODES)
            .query_async(&mut conn)
            .await
        {
            Ok(g) => g,
            Err(_) => continue,
        };
        for node in gone.into_iter().filter(|n| **n != *me) {
            let key = sh.node_rooms_key(&node);
            let mut rooms: Vec<String> = match redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut conn)
                .await
            {
                Ok(r) => r,
                Err(_) => continue,
            };
            rooms.truncate(MAX_ROOMS_PER_NODE);
            let op = Op::NodeGone {
                node: node.clone(),
                now: holdfast_gateway::auth::unix_now_ms(),
            };
            let mut handled = Vec::with_capacity(rooms.len());
            for room in rooms {
                match store.apply_room(&room, &op).await {
                    Ok(_) | Err(StoreError::Refused(_)) => handled.push(room),
                    Err(_) => {}
                }
            }
            tracing::info!(
                node,
                rooms = handled.len(),
                "a node's liveness lease passed; its members turned away"
            );
            let mut inv = forget.prepare_invoke();
            inv.key(sh.leases_key()).key(&key).arg(&node).arg(now);
            for r in &handled {
                inv.arg(r);
            }
            let _: redis::RedisResult<i64> = inv.invoke_async(&mut conn).await;
        }
    }
}
