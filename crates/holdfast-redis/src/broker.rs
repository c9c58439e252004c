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

use crate::Shared;

/// A node whose status is older than this is gone from the cluster view.
pub const NODE_STALE_MS: u64 = 15_000;

/// A node's liveness lease: refreshed by every heartbeat, and when it passes (on Redis's
/// clock) the other nodes turn the node's members away.
pub const LEASE_MS: u64 = NODE_STALE_MS;

/// Lifetime of the whole `P:{g}:nodes` hash, refreshed by every heartbeat.
const NODES_TTL_MS: u64 = 60_000;

/// The Redis implementation of the gateway's [`Broker`].
pub struct RedisBroker {
    shared: Arc<Shared>,
}

/// Claims `user` for `session` of node `from` at `at` (ms, Redis's clock) with the fenced
/// ownership script, and remembers the claim's time for the session unless a newer session
/// owns the user. Returns the script's answer (see `lua/claim_user.lua`).
pub(crate) async fn claim(
    shared: &Shared,
    from: &str,
    user: &str,
    session: &str,
    at: u64,
) -> Option<i64> {
    // Recorded before the claim is sent: a fence check that runs meanwhile (the pub/sub
    // connection came back) must see this live session's claim time, or it would take the
    // older record in Redis for a newer owner and close the session.
    shared
        .claimed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(session.to_owned(), at);
    let mut conn = shared.conn.clone();
    let r: redis::RedisResult<i64> = shared
        .scripts
        .claim_user
        .key(shared.user_key(user))
        .arg(from)
        .arg(session)
        .arg(shared.node_channel_prefix())
        .arg(user)
        .arg(at)
        .arg(shared.redis_now_ms() + crate::RESPONSE_TIMEOUT_MS)
        .invoke_async(&mut conn)
        .await;
    if matches!(r, Ok(-2)) {
        // A newer session owns the user: this one is closed. Otherwise (applied, or not known
        // to be: a timeout, a late arrival) the session is live here and its claim time is
        // what a later check compares ownership records with.
        shared
            .claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(session);
    }
    match r {
        Ok(-1) => tracing::warn!(
            user,
            "user ownership claim reached Redis too late; not applied"
        ),
        Ok(-2) => tracing::info!(user, "a newer session owns the user; this one is replaced"),
        Ok(_) => {}
        Err(ref e) => {
            shared.metrics.errors.inc();
            tracing::warn!(error = %e, "could not record user ownership in Redis");
        }
    }
    r.ok()
}

impl RedisBroker {
    pub(crate) fn new(shared: Arc<Shared>) -> RedisBroker {
        RedisBroker { shared }
    }
}

impl RedisBroker {
    /// Publishes `msg(session)` on the channel of the node owning `user` (at most once);
    /// whether a node received it. On a cluster the node channels are shard channels, so the
    /// count of receivers is exact there too.
    async fn to_owner(&self, user: &str, msg: impl FnOnce(&str) -> String) -> bool {
        let shared = &self.shared;
        let Some((node, session)) = self.locate_user(user).await else {
            return false;
        };
        let mut conn = shared.conn.clone();
        let r: redis::RedisResult<i64> = redis::cmd(shared.publish_command())
            .arg(format!("{}{node}", shared.node_channel_prefix()))
            .arg(msg(&session))
            .query_async(&mut conn)
            .await;
        match r {
            Ok(n) => n > 0,
            Err(_) => {
                shared.metrics.errors.inc();
                false
            }
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
            // On Redis's clock, so claims from different nodes compare.
            let at = shared.redis_now_ms();
            claim(shared, from, user, session, at).await;
        })
    }

    fn release_user(&self, _from: &str, user: &str, session: &str) {
        let shared = self.shared.clone();
        shared
            .claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(session);
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
            let msg = format!("direct {} {user}{}", user.len(), text.as_str());
            self.to_owner(user, |_| msg).await
        })
    }

    fn is_healthy(&self) -> bool {
        self.shared.is_healthy()
    }

    fn disconnect_user<'a>(&'a self, _from: &'a str, user: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            self.to_owner(user, |session| format!("disconnect {session} {user}"))
                .await
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
