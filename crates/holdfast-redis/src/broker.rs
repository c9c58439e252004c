//! User ownership through Redis: newest connection wins on any node, and directed messages go
//! to the owning node only.

use std::sync::{Arc, Weak};

use axum::extract::ws::Utf8Bytes;
use holdfast_gateway::broker::{Broker, NodeSink};
use holdfast_gateway::store::BoxFuture;

use crate::Shared;

/// The Redis implementation of the gateway's [`Broker`].
pub struct RedisBroker {
    shared: Arc<Shared>,
}

impl RedisBroker {
    pub(crate) fn new(shared: Arc<Shared>) -> RedisBroker {
        RedisBroker { shared }
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
            let r: redis::RedisResult<i64> = shared
                .scripts
                .claim_user
                .key(shared.user_key(user))
                .arg(from)
                .arg(session)
                .arg(shared.node_channel_prefix())
                .arg(user)
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = r {
                shared.metrics.errors.inc();
                tracing::warn!(error = %e, "could not record user ownership in Redis");
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
        self.shared
            .healthy
            .load(std::sync::atomic::Ordering::Acquire)
    }
}
