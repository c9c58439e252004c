//! The harness of the room contract suite: the same case runs against the memory backend and
//! against a real Redis (its own `redis-server`, two nodes on it), through the room service
//! that sessions use, with in-memory session handles (no sockets).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holdfast_gateway::metrics::Metrics;
use holdfast_gateway::registry::SessionHandle;
use holdfast_gateway::room::fanout::Mirror;
use holdfast_gateway::room::{Membership, Resume, RoomService};
use holdfast_gateway::store::{MemoryRooms, RoomBackend, StoreContext};
use holdfast_gateway::Config;
use holdfast_protocol::{CloseCode, ErrorCode};
use holdfast_testkit::{Redis, RedisCluster};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Which backend a case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
    /// A 3-master Redis Cluster, two nodes on it.
    RedisCluster,
}

/// One or two nodes over one backend.
pub struct Env {
    nodes: Vec<RoomService>,
    metrics: Arc<Metrics>,
    next: AtomicU64,
    shutdown: CancellationToken,
    _redis: Option<Box<dyn std::any::Any + Send + Sync>>,
    pub config: Config,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn config() -> Config {
    let mut c = Config::default();
    c.auth.hmac_secret = "contract".into();
    c
}

impl Env {
    pub async fn new(backend: Backend, config: Config) -> Env {
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::new());
        let cfg = Arc::new(config.clone());
        let ctx = |i: usize| StoreContext {
            node_id: format!("n{i}").into(),
            lease: format!("n{i}").into(),
            config: cfg.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            mirror: Arc::new(Mirror::default()),
        };
        let (nodes, redis) = match backend {
            Backend::Memory => {
                let b: Arc<dyn RoomBackend> = Arc::new(MemoryRooms::new());
                (vec![RoomService::new(b, ctx(0))], None)
            }
            Backend::Redis | Backend::RedisCluster => {
                let (url, server): (String, Box<dyn std::any::Any + Send + Sync>) =
                    if backend == Backend::Redis {
                        let redis = Redis::start();
                        (redis.url(), Box::new(redis))
                    } else {
                        let cluster = RedisCluster::start(3);
                        (cluster.url(), Box::new(cluster))
                    };
                let mut nodes = Vec::new();
                for i in 0..2 {
                    let c = holdfast_redis::connect(&url, "hf").await.unwrap();
                    let b: Arc<dyn RoomBackend> = c.store;
                    nodes.push(RoomService::new(b, ctx(i)));
                }
                // The pub/sub connections come up in the background.
                tokio::time::sleep(Duration::from_millis(50)).await;
                (nodes, Some(server))
            }
        };
        // Presence changes go out on a timer, as the gateway's presence loop does.
        for n in &nodes {
            let mirror = n.mirror().clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(10)) => mirror.flush_presence(),
                    }
                }
            });
        }
        Env {
            nodes,
            metrics,
            next: AtomicU64::new(1),
            shutdown,
            _redis: redis,
            config,
        }
    }

    /// Node `i` (the memory backend has one node: every index names it).
    pub fn node(&self, i: usize) -> &RoomService {
        &self.nodes[i % self.nodes.len()]
    }

    /// The id of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        format!("n{}", i % self.nodes.len())
    }

    /// A new session of `user` on node `node`.
    pub fn session_on(&self, node: usize, user: &str) -> Arc<SessionHandle> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let node = node % self.nodes.len();
        SessionHandle::new(
            format!("n{node}-s{n}").into(),
            user.into(),
            4096,
            16 << 20,
            self.metrics.clone(),
        )
    }

    /// A new session of `user` on node 0.
    pub fn session(&self, user: &str) -> Arc<SessionHandle> {
        self.session_on(0, user)
    }

    /// `s` joins `room` on node `node`; returns the membership and its `joined`.
    pub async fn join_on(
        &self,
        node: usize,
        s: &Arc<SessionHandle>,
        room: &str,
    ) -> (Membership, Value) {
        let m = self.node(node).join(room, s, None).await.unwrap();
        let j = expect(s, "joined").await;
        (m, j)
    }

    pub async fn join(&self, s: &Arc<SessionHandle>, room: &str) -> (Membership, Value) {
        self.join_on(0, s, room).await
    }

    pub async fn publish(&self, m: &Membership, s: &Arc<SessionHandle>, data: Value, id: &str) {
        self.node(0)
            .publish(m, s, data, Some(id.into()), None)
            .await
            .unwrap();
    }

    /// Resumes `player` of `joined` (or of the last `reconnected`) in `room` on `s`.
    pub async fn resume(
        &self,
        node: usize,
        s: &Arc<SessionHandle>,
        room: &str,
        player: &str,
        token: &str,
        last: u64,
    ) -> Result<(Membership, Value), ErrorCode> {
        self.resume_in(node, s, room, (player, token), last, None)
            .await
    }

    /// Like [`Env::resume`], with the epoch of `last` as the client sends it.
    pub async fn resume_in(
        &self,
        node: usize,
        s: &Arc<SessionHandle>,
        room: &str,
        (player, token): (&str, &str),
        last: u64,
        epoch: Option<&str>,
    ) -> Result<(Membership, Value), ErrorCode> {
        let req = Resume {
            room: room.into(),
            player_id: player.into(),
            token: token.into(),
            last_sequence: last,
            epoch: epoch.map(str::to_owned),
            id: Some("r".into()),
        };
        match self.node(node).reconnect(req, s).await {
            Ok(m) => Ok((m, expect(s, "reconnected").await)),
            Err(e) => Err(e.code),
        }
    }
}

/// The next frame queued to `s`, waiting up to 5 s.
pub async fn recv(s: &SessionHandle) -> Value {
    for _ in 0..2500 {
        if let Some(o) = s.try_pop() {
            return o.payload.to_value().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("no frame for session {} within 5 s", s.id);
}

/// The next frame, which must be of type `ty`.
pub async fn expect(s: &SessionHandle, ty: &str) -> Value {
    let v = recv(s).await;
    assert_eq!(v["type"], ty, "expected {ty}, got {v}");
    v
}

/// The changes of the next frame, which must be `presence`, as (player, status) pairs.
pub async fn presence(s: &SessionHandle) -> Vec<(String, String)> {
    let v = expect(s, "presence").await;
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["player_id"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Reads `presence` frames (only) until one says `player` is now `status`.
pub async fn presence_until(s: &SessionHandle, player: &str, status: &str) {
    for _ in 0..100 {
        let changes = presence(s).await;
        if changes.iter().any(|(p, st)| p == player && st == status) {
            return;
        }
    }
    panic!("no presence change {player} {status}");
}

/// `(player, status)` as owned strings.
pub fn change(player: &str, status: &str) -> (String, String) {
    (player.to_owned(), status.to_owned())
}

/// Asserts that nothing more reaches `s` for a moment.
pub async fn quiet(s: &SessionHandle) {
    tokio::time::sleep(Duration::from_millis(150)).await;
    if let Some(o) = s.try_pop() {
        panic!(
            "unexpected frame for {}: {}",
            s.id,
            o.payload.to_value().unwrap_or_default()
        );
    }
}

/// Waits until a close was asked for `s`.
pub async fn closed(s: &SessionHandle) -> CloseCode {
    tokio::time::timeout(Duration::from_secs(5), s.closed())
        .await
        .expect("closed within 5 s")
}

pub fn token(v: &Value) -> String {
    v["reconnection_token"].as_str().unwrap().to_owned()
}

pub fn seq(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap()
}

pub fn data(i: u64) -> Value {
    json!({ "n": i })
}

/// Now, in Unix ms.
pub fn now() -> u64 {
    holdfast_gateway::auth::unix_now_ms()
}
