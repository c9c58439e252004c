//! User ownership through Redis: newest connection wins on any node, and directed messages go
//! to the owning node only. Also the server API's cluster operations: disconnecting a user on
//! the node that owns it, locating a user, and the cluster view.
//!
//! The cluster view is the hash `P:{g}:nodes` (node id -> [`NodeStatus`] as JSON). Each node
//! rewrites its field every few seconds; a field older than [`NODE_STALE_MS`] is a node that
//! died without saying so and is removed by the next reader. The hash itself expires when no
//! node refreshes it for a minute.

use std::sync::{Arc, Weak};

use axum::extract::ws::Utf8Bytes;
use holdfast_gateway::broker::{Broker, NodeSink, NodeStatus};
use holdfast_gateway::store::BoxFuture;
use redis::Script;

use crate::Shared;

/// A node whose status is older than this is gone from the cluster view.
pub const NODE_STALE_MS: u64 = 15_000;

/// A node's liveness lease: refreshed by every heartbeat, and when it passes (on Redis's
/// clock) the other nodes turn the node's members away.
pub const LEASE_MS: u64 = NODE_STALE_MS;

/// Lifetime of the whole `P:{g}:nodes` hash, refreshed by every heartbeat.
const NODES_TTL_MS: u64 = 60_000;

/// Tells the node owning a user to close that session with `disconnected_by_server`. KEYS 1
/// the user's ownership hash. ARGV 1 node channel prefix, 2 user. Returns the receivers.
const DISCONNECT: &str = r"
local o = redis.call('HMGET', KEYS[1], 'n', 's')
if not o[1] or not o[2] then return 0 end
return redis.call('PUBLISH', ARGV[1] .. o[1], 'disconnect ' .. o[2] .. ' ' .. ARGV[2])
";

/// The Redis implementation of the gateway's [`Broker`].
pub struct RedisBroker {
    shared: Arc<Shared>,
    /// Compiled once (hashed for EVALSHA).
    disconnect: Script,
}

impl RedisBroker {
    pub(crate) fn new(shared: Arc<Shared>) -> RedisBroker {
        RedisBroker {
            shared,
            disconnect: Script::new(DISCONNECT),
        }
    }
}

impl Broker for RedisBroker {
    fn attach(&self, node: Weak<dyn NodeSink>) {
        let _ = self.shared.sink.set(node);
    }

    fn claim_user<'a>(
        &'a self,
        from: &'a str,
        user: &'a str,
        session: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut conn = shared.conn.clone();
            // On Redis's clock, so claims from different nodes compare.
            let at = shared.redis_now_ms();
            let r: redis::RedisResult<i64> = shared
                .scripts
                .claim_user
                .key(shared.user_key(user))
                .arg(from)
                .arg(session)
                .arg(shared.node_channel_prefix())
                .arg(user)
                .arg(at)
                .arg(at + crate::RESPONSE_TIMEOUT_MS)
                .invoke_async(&mut conn)
                .await;
            match r {
                Ok(-1) => tracing::warn!(
                    user,
                    "user ownership claim reached Redis too late; not applied"
                ),
                Ok(-2) => {
                    tracing::info!(user, "a newer session owns the user; this one is replaced")
                }
                Ok(_) => {}
                Err(e) => {
                    shared.metrics.errors.inc();
                    tracing::warn!(error = %e, "could not record user ownership in Redis");
                }
            }
        })
    }

    fn release_user(&self, _from: &str, user: &str, session: &str) {
        let shared = self.shared.clone();
        let (user, session) = (user.to_owned(), session.to_owned());
        tokio::spawn(async move {
            let mut conn = shared.conn.clone();
            let r: redis::RedisResult<i64> = shared
                .scripts
                .release_user
                .key(shared.user_key(&user))
                .arg(&session)
                .invoke_async(&mut conn)
                .await;
            if r.is_err() {
                shared.metrics.errors.inc();
            }
        });
    }

    fn route_direct<'a>(
        &'a self,
        _from: &'a str,
        user: &'a str,
        text: Utf8Bytes,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut conn = shared.conn.clone();
            let r: redis::RedisResult<i64> = shared
                .scripts
                .direct
                .key(shared.user_key(user))
                .arg(shared.node_channel_prefix())
                .arg(user)
                .arg(text.as_str())
                .invoke_async(&mut conn)
                .await;
            match r {
                Ok(n) => n > 0,
                Err(_) => {
                    shared.metrics.errors.inc();
                    false
                }
            }
        })
    }

    fn is_healthy(&self) -> bool {
        self.shared.is_healthy()
    }

    fn disconnect_user<'a>(&'a self, _from: &'a str, user: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut conn = shared.conn.clone();
            let r: redis::RedisResult<i64> = self
                .disconnect
                .key(shared.user_key(user))
                .arg(shared.node_channel_prefix())
                .arg(user)
                .invoke_async(&mut conn)
                .await;
            match r {
                Ok(n) => n > 0,
                Err(_) => {
                    shared.metrics.errors.inc();
                    false
                }
            }
        })
    }

    fn locate_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Option<(String, String)>> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut conn = shared.conn.clone();
            let r: redis::RedisResult<(Option<String>, Option<String>)> = redis::cmd("HMGET")
                .arg(shared.user_key(user))
                .arg("n")
                .arg("s")
                .query_async(&mut conn)
                .await;
            match r {
                Ok((Some(node), Some(session))) => Some((node, session)),
                Ok(_) => None,
                Err(_) => {
                    shared.metrics.errors.inc();
                    None
                }
            }
        })
    }

    fn heartbeat<'a>(&'a self, status: &'a NodeStatus) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Ok(json) = serde_json::to_string(status) else {
                return;
            };
            let key = self.shared.nodes_key();
            let lease = self
                .shared
                .ctx
                .get()
                .map_or_else(|| status.id.clone(), |c| c.lease.to_string());
            let mut conn = self.shared.conn.clone();
            let r: redis::RedisResult<()> = redis::pipe()
                .cmd("HSET")
                .arg(&key)
                .arg(&status.id)
                .arg(json)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(NODES_TTL_MS)
                .ignore()
                .cmd("ZADD")
                .arg(self.shared.leases_key())
                .arg(self.shared.redis_now_ms() + LEASE_MS)
                .arg(&lease)
                .ignore()
                .query_async(&mut conn)
                .await;
            if r.is_err() {
                self.shared.metrics.errors.inc();
            }
        })
    }

    fn forget_node<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.shared.conn.clone();
            let r: redis::RedisResult<i64> = redis::cmd("HDEL")
                .arg(self.shared.nodes_key())
                .arg(id)
                .query_async(&mut conn)
                .await;
            if r.is_err() {
                self.shared.metrics.errors.inc();
            }
        })
    }

    fn nodes(&self) -> BoxFuture<'_, Option<Vec<NodeStatus>>> {
        Box::pin(async move {
            let key = self.shared.nodes_key();
            let mut conn = self.shared.conn.clone();
            let r: redis::RedisResult<Vec<(String, String)>> =
                redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await;
            let Ok(fields) = r else {
                self.shared.metrics.errors.inc();
                return None;
            };
            let now = holdfast_gateway::auth::unix_now_ms();
            let mut live = Vec::new();
            let mut stale = Vec::new();
            for (id, json) in fields {
                match serde_json::from_str::<NodeStatus>(&json) {
                    Ok(s) if now.saturating_sub(s.updated_ms) <= NODE_STALE_MS => live.push(s),
                    _ => stale.push(id),
                }
            }
            if !stale.is_empty() {
                let _: redis::RedisResult<i64> = redis::cmd("HDEL")
                    .arg(&key)
                    .arg(&stale)
                    .query_async(&mut conn)
                    .await;
            }
            live.sort_by(|a, b| a.id.cmp(&b.id));
            Some(live)
        })
    }
}
