//! Redis broker and room store for Holdfast clusters.
//!
//! With `broker.url` set, every node of a cluster keeps its room state in Redis (one instance,
//! a Redis Cluster, or a master watched by Sentinel): a room has
//! one stream (one `seq` per room across the cluster, its bounded history, and its members,
//! authority, away state, reconnection token hashes and publish dedupe ids), so a member can
//! resume on any node with replay, and a user's newest connection wins on any node.
//!
//! # Layout
//! - [`connect`]: opens the command connection (auto-reconnecting) and returns the
//!   [`Cluster`]: the [`RedisBroker`] and the [`RedisRooms`] store to give to
//!   `holdfast_gateway::Gateway::start_with`.
//! - `store`: [`RedisRooms`], the room backend: load a room's state, run the gateway's room
//!   rules on it, commit with one compare-and-set script (`scripts`, `lua/commit.lua`) that
//!   also appends the emitted frames to the history (`XADD MAXLEN`) and publishes them.
//!   No room rule and no frame is written in Lua.
//! - `pubsub`: the node's pub/sub connection; room messages go to the gateway's mirror, which
//!   orders them and asks for missed ranges (read from the history).
//! - `sweep`: refreshes the TTL of rooms used by this node.
//! - `broker`: user ownership (single socket, directed messages).
//!
//! - `conn`: where Redis is (one instance, TLS, Cluster, Sentinel) and the command
//!   connection for each.
//!
//! # Keys (prefix `P`, room `R` in bucket `N` = [`bucket`], user `U`)
//! The layout is the same on every kind of Redis; on a Cluster each hash tag is one slot, and
//! every script touches keys of one tag only.
//! - `P:{bN}:r:R:st` hash: `v` (version `epoch:counter`, compared and set by every commit),
//!   `s` (the room's state as JSON: members, authority, seq, epoch, token hashes, tombstones)
//!   and `r` (the run id of the Redis that wrote it: a state another run wrote was restored
//!   from older data, and starts a new epoch before anything is appended);
//!   `P:{bN}:r:R:d` hash: publish dedupe windows by player; `P:{bN}:r:R:s` stream: history,
//!   entry id `<seq>-1`, trimmed to `reconnection.event_buffer_size`. All with a TTL
//!   refreshed while the room is used.
//! - `P:{bN}:away` sorted set: the bucket's rooms by their earliest away deadline;
//!   `P:{bN}:rooms` set: the bucket's rooms; `P:{bN}:n:<start>` sorted set: the bucket's
//!   rooms in which a node start placed members. All written by the room's commit.
//! - `P:u:{U}` hash: the node and session owning the user, the claim's time on Redis's clock
//!   (an older claim never displaces a newer one), and the ownership generation.
//! - `P:{g}:nodes`, `P:{g}:leases`: the cluster view and the node liveness leases.
//! - Channels: `P:{bN}:ch:R` (room stream; a shard channel on a Cluster), `P:ch:n:<node>`
//!   (kicks and directed messages).
//!
//! Pub/sub is at most once: a node that sees a room's seq jump fetches the missing range from
//! the history before delivering; when the range is gone (or the epoch changed because Redis
//! lost the stream), the affected sessions are closed with 1011 so their clients resume and are
//! told the exact gap. Nothing is delivered out of order or with a silent hole.

mod batch;
mod broker;
mod conn;
mod pubsub;
mod scripts;
mod store;
mod sweep;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use holdfast_gateway::broker::NodeSink;
use holdfast_gateway::store::StoreContext;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge};
use tokio::sync::mpsc;

pub use broker::RedisBroker;
pub use conn::{SentinelTarget, Target, Tls};
pub use store::RedisRooms;

/// How long a command may wait for Redis's answer; a user ownership claim that reaches Redis
/// later than this after it was sent is not applied.
pub(crate) const RESPONSE_TIMEOUT_MS: u64 = 2000;

/// Every this often, both connections are checked with a bounded `PING`.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The bound of each health `PING`.
const PING_TIMEOUT: Duration = Duration::from_millis(1500);
/// Measurements of Redis's clock taken at start (see [`ClockSync`]).
const CLOCK_SAMPLES_AT_START: usize = 5;
/// Age past which the offset sample in use is replaced whatever its precision (clocks drift).
const CLOCK_SAMPLE_MAX_AGE_US: i64 = 60_000_000;

/// Redis's clock minus this host's, from the most precise recent `TIME` measurement. A sample
/// replaces the one in use only with a round trip as short, or once that one is a minute old:
/// a measurement delayed by a busy host would otherwise move the clock by half its delay, and
/// claim times from two nodes would no longer order two connections of one user made a few
/// milliseconds apart.
#[derive(Debug, Default)]
pub(crate) struct ClockSync {
    /// Redis's clock minus this host's (µs).
    offset_us: AtomicI64,
    /// The sample in use: its round trip and when it was taken (µs, this host's clock).
    best: Mutex<Option<(i64, i64)>>,
    /// The latest time answered (ms): answers never go backwards.
    issued: AtomicU64,
}

impl ClockSync {
    /// Takes one measurement: Redis answered `redis_us` between `before` and `after` (this
    /// host's clock, µs).
    pub(crate) fn sample(&self, redis_us: i64, before: i64, after: i64) {
        let rtt = after - before;
        let mut best = self.best.lock().unwrap_or_else(|e| e.into_inner());
        let replace = match *best {
            None => true,
            Some((b, at)) => rtt <= b || after - at > CLOCK_SAMPLE_MAX_AGE_US,
        };
        if replace {
            *best = Some((rtt, after));
            self.offset_us
                .store(redis_us - (before + after) / 2, Ordering::Relaxed);
        }
    }

    /// Redis's time (ms) when this host's clock reads `local_us`, never less than an earlier
    /// answer (a better sample may move the offset back).
    pub(crate) fn now_ms(&self, local_us: i64) -> u64 {
        let t = ((local_us + self.offset_us.load(Ordering::Relaxed)).max(0) / 1000) as u64;
        self.issued.fetch_max(t, Ordering::AcqRel).max(t)
    }
}

#[cfg(test)]
mod clock_tests {
    use super::ClockSync;

    #[test]
    fn the_most_precise_recent_sample_sets_the_clock() {
        let c = ClockSync::default();
        // Redis 5 ms ahead; answered within 200 µs.
        c.sample(1_000_005_100, 1_000_000_000, 1_000_000_200);
        assert_eq!(c.now_ms(2_000_000_000), 2_000_005);
        // A slow answer (a busy host: 80 ms) does not move it...
        c.sample(1_001_005_000, 1_000_920_000, 1_001_000_000);
        assert_eq!(c.now_ms(2_000_100_000), 2_000_105);
        // ...a sample as precise does...
        c.sample(1_002_007_100, 1_002_000_000, 1_002_000_200);
        assert_eq!(c.now_ms(2_000_200_000), 2_000_207);
        // ...and after a minute any sample does (the clocks may have drifted).
        c.sample(1_070_009_000, 1_070_000_000, 1_070_010_000);
        assert_eq!(c.now_ms(2_000_300_000), 2_000_304);
        // An offset moved back never makes a later answer smaller than an earlier one.
        c.sample(1_140_000_100, 1_140_000_000, 1_140_000_200);
        assert_eq!(c.now_ms(2_000_300_500), 2_000_304);
        assert_eq!(c.now_ms(2_000_310_000), 2_000_310);
    }
}

/// Now on this host's clock, in µs since the Unix epoch.
fn unix_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The Redis side of one node.
pub struct Cluster {
    /// Give to the gateway as its broker.
    pub broker: Arc<RedisBroker>,
    /// Give to the gateway as its room store.
    pub store: Arc<RedisRooms>,
}

/// Metrics of the Redis connection, registered in the node's registry.
pub(crate) struct RedisMetrics {
    /// 1 while the pub/sub connection is up.
    pub connected: IntGauge,
    /// Script round trips.
    pub op_seconds: Histogram,
    /// From an event's publication to its arrival on this node.
    pub pubsub_lag: Histogram,
    /// History fetches after a skipped seq or a reconnection.
    pub resyncs: IntCounter,
    /// Operations that failed because Redis could not be reached.
    pub errors: IntCounter,
    /// Room commits retried because another node changed the room first.
    pub conflicts: IntCounter,
    /// Rooms whose state another Redis run had written (restored from older data): each
    /// started a new epoch.
    pub rollbacks: IntCounter,
    /// Room messages that arrived again with other contents (a stream that went backwards).
    pub forks: IntCounter,
}

impl RedisMetrics {
    fn new() -> RedisMetrics {
        RedisMetrics {
            connected: IntGauge::new(
                "holdfast_redis_connected",
                "1 while the pub/sub connection is up",
            )
            .expect("valid metric"),
            op_seconds: Histogram::with_opts(
                HistogramOpts::new("holdfast_redis_op_seconds", "Redis script round trips")
                    .buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
                    ]),
            )
            .expect("valid metric"),
            pubsub_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "holdfast_redis_pubsub_lag_seconds",
                    "Room event publication to arrival on this node",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
                ]),
            )
            .expect("valid metric"),
            resyncs: IntCounter::new(
                "holdfast_redis_resyncs_total",
                "History fetches after a skipped seq or a reconnection",
            )
            .expect("valid metric"),
            errors: IntCounter::new(
                "holdfast_redis_errors_total",
                "Redis operations that failed",
            )
            .expect("valid metric"),
            conflicts: IntCounter::new(
                "holdfast_redis_room_conflicts_total",
                "Room commits retried because another node changed the room first",
            )
            .expect("valid metric"),
            rollbacks: IntCounter::new(
                "holdfast_redis_room_rollbacks_total",
                "Rooms found restored from older data by another Redis run; each started a new epoch",
            )
            .expect("valid metric"),
            forks: IntCounter::new(
                "holdfast_redis_stream_forks_total",
                "Room messages seen again with other contents (a stream that went backwards)",
            )
            .expect("valid metric"),
        }
    }

    fn register(&self, m: &holdfast_gateway::metrics::Metrics) {
        let _ = m.register(Box::new(self.connected.clone()));
        let _ = m.register(Box::new(self.op_seconds.clone()));
        let _ = m.register(Box::new(self.pubsub_lag.clone()));
        let _ = m.register(Box::new(self.resyncs.clone()));
        let _ = m.register(Box::new(self.errors.clone()));
        let _ = m.register(Box::new(self.conflicts.clone()));
        let _ = m.register(Box::new(self.rollbacks.clone()));
        let _ = m.register(Box::new(self.forks.clone()));
    }
}

/// A subscription request to the pub/sub task.
pub(crate) enum SubCmd {
    Subscribe(String, tokio::sync::oneshot::Sender<bool>),
    Unsubscribe(String),
}

/// State shared by the broker and the store of one node.
pub(crate) struct Shared {
    /// Where Redis is, to open the pub/sub connection (again).
    pub target: conn::Target,
    /// TLS settings for `rediss://`.
    pub tls: conn::Tls,
    /// The command connection; reconnects by itself. Cloning it is cheap.
    pub conn: conn::Conn,
    /// Key prefix, so several clusters (or tests) can share one Redis.
    pub prefix: String,
    /// The scripts.
    pub scripts: scripts::Scripts,
    /// Whether the pub/sub connection is up and answered its last `PING`.
    pub healthy: AtomicBool,
    /// Whether the command connection answered its last `PING`.
    pub commands_ok: AtomicBool,
    /// Redis's clock as this node measured it with `TIME`.
    clock: ClockSync,
    /// The node's context, set at attach.
    pub ctx: OnceLock<StoreContext>,
    /// The node, for kicks and directed messages, set at attach.
    pub sink: OnceLock<Weak<dyn NodeSink>>,
    /// Commands to the pub/sub task; bounded.
    pub sub_tx: mpsc::Sender<SubCmd>,
    /// Taken by the pub/sub task when it starts.
    pub sub_rx: Mutex<Option<mpsc::Receiver<SubCmd>>>,
    /// Redis metrics.
    pub metrics: RedisMetrics,
    /// session id → its ownership claim's time (ms, on Redis's clock), for this node's live
    /// sessions that claimed their user (bounded by them: removed at release). After a pub/sub
    /// reconnect an ownership record older than a local session's claim (Redis came back
    /// with older data) is claimed again instead of closing the newer session.
    pub claimed: Mutex<std::collections::HashMap<String, u64>>,
}

/// Rooms are spread over this many buckets; each bucket is one hash tag, so on a Redis Cluster
/// a bucket's keys live on one shard and a room's commit (its own keys, and its bucket's away
/// index, room index and node room sets) runs there. Part of the key layout: changing it
/// moves every room.
pub const BUCKETS: u16 = 256;

/// The bucket of `room`: FNV-1a (32 bits) of its name, modulo [`BUCKETS`].
pub fn bucket(room: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in room.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % u32::from(BUCKETS)) as u16
}

impl Shared {
    /// The hash-tagged head of bucket `b`'s keys: `P:{bN}`.
    pub fn bucket_head(&self, b: u16) -> String {
        format!("{}:{{b{b}}}", self.prefix)
    }
    pub fn room_key(&self, room: &str, part: &str) -> String {
        format!("{}:r:{room}:{part}", self.bucket_head(bucket(room)))
    }
    /// The room's channel; on a cluster a shard channel in the room's slot.
    pub fn room_channel(&self, room: &str) -> String {
        format!("{}:ch:{room}", self.bucket_head(bucket(room)))
    }
    /// The room named by a room channel.
    pub fn room_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        let rest = channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{b")?;
        let (_, rest) = rest.split_once('}')?;
        rest.strip_prefix(":ch:")
    }
    pub fn node_channel_prefix(&self) -> String {
        format!("{}:ch:n:", self.prefix)
    }
    pub fn user_key(&self, user: &str) -> String {
        format!("{}:u:{{{user}}}", self.prefix)
    }
    /// The rooms of bucket `b` in which node start `lease` placed members (joins and resumes
    /// it committed), by the time of the placement (ms, on the shard's clock).
    pub fn node_rooms_key(&self, b: u16, lease: &str) -> String {
        format!("{}:n:{lease}", self.bucket_head(b))
    }
    /// The rooms of bucket `b` (a set, for listing).
    pub fn rooms_key(&self, b: u16) -> String {
        format!("{}:rooms", self.bucket_head(b))
    }
    /// The rooms of bucket `b` by their earliest away deadline.
    pub fn away_key(&self, b: u16) -> String {
        format!("{}:away", self.bucket_head(b))
    }
    /// The nodes' liveness leases: node start by lease deadline (ms, Redis's clock).
    pub fn leases_key(&self) -> String {
        format!("{}:{{g}}:leases", self.prefix)
    }
    /// The cluster view: node id -> status JSON.
    pub fn nodes_key(&self) -> String {
        format!("{}:{{g}}:nodes", self.prefix)
    }
    /// `SPUBLISH` (a shard channel) on a cluster, `PUBLISH` on one instance.
    pub fn publish_command(&self) -> &'static str {
        if self.target.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }
    pub fn set_healthy(&self, up: bool) {
        self.healthy.store(up, Ordering::Release);
        self.publish_health();
    }
    fn publish_health(&self) {
        self.metrics.connected.set(i64::from(self.is_healthy()));
    }
    /// Both connections answer: the node can serve room operations.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && self.commands_ok.load(Ordering::Acquire)
    }
    /// Now on Redis's clock (ms), as last measured; never less than an earlier answer, so a
    /// better measurement cannot make a later claim of this node look older than an earlier one.
    pub fn redis_now_ms(&self) -> u64 {
        self.clock.now_ms(unix_now_us())
    }
    /// Checks the command connection with a bounded `PING` and measures the clock offset.
    async fn check_commands(&self) {
        let mut conn = self.conn.clone();
        let before = unix_now_us();
        let r = tokio::time::timeout(
            PING_TIMEOUT,
            redis::pipe()
                .cmd("PING")
                .ignore()
                .cmd("TIME")
                .query_async::<((String, String),)>(&mut conn),
        )
        .await;
        let after = unix_now_us();
        let ok = match r {
            Ok(Ok(((secs, micros),))) => {
                if let (Ok(s), Ok(us)) = (secs.parse::<i64>(), micros.parse::<i64>()) {
                    self.clock.sample(s * 1_000_000 + us, before, after);
                }
                true
            }
            _ => false,
        };
        if ok != self.commands_ok.swap(ok, Ordering::AcqRel) && !ok {
            tracing::warn!("Redis command connection does not answer PING; not ready");
        }
        self.publish_health();
    }
}

/// How one node reaches Redis.
#[derive(Debug, Clone)]
pub struct Options {
    /// `broker.url`: `redis://`, `rediss://`, `redis+cluster://` or `rediss+cluster://`
    /// (see [`Target::parse`]).
    pub url: String,
    /// `broker.key_prefix`.
    pub prefix: String,
    /// TLS settings for `rediss://`.
    pub tls: Tls,
}

impl Options {
    pub fn new(url: &str, prefix: &str) -> Options {
        Options {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            tls: Tls::default(),
        }
    }
}

/// Opens a connection to Redis at `url` for one node. Fails when Redis cannot be reached now;
/// see [`connect_with_retry`].
pub async fn connect(url: &str, prefix: &str) -> Result<Cluster, redis::RedisError> {
    connect_with(&Options::new(url, prefix)).await
}

/// Like [`connect`], with every option.
pub async fn connect_with(opts: &Options) -> Result<Cluster, redis::RedisError> {
    let target = Target::parse(&opts.url).map_err(|e| {
        redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "broker.url", e))
    })?;
    let conn = conn::open(&target, &opts.tls).await?;
    let (sub_tx, sub_rx) = mpsc::channel(1024);
    let shared = Arc::new(Shared {
        target,
        tls: opts.tls.clone(),
        conn,
        prefix: opts.prefix.clone(),
        scripts: scripts::Scripts::new(),
        healthy: AtomicBool::new(false),
        commands_ok: AtomicBool::new(true),
        clock: ClockSync::default(),
        ctx: OnceLock::new(),
        sink: OnceLock::new(),
        sub_tx,
        sub_rx: Mutex::new(Some(sub_rx)),
        metrics: RedisMetrics::new(),
        claimed: Mutex::default(),
    });
    // A few samples, so the first claim times already rest on the most precise of them.
    for _ in 0..CLOCK_SAMPLES_AT_START {
        shared.check_commands().await;
    }
    Ok(Cluster {
        broker: Arc::new(RedisBroker::new(shared.clone())),
        store: Arc::new(RedisRooms::new(shared)),
    })
}

/// Connects, retrying with exponential backoff (100 ms doubling to 5 s) and a logged error
/// naming the URL on each failure, for at most `give_up_after`.
pub async fn connect_with_retry(
    opts: &Options,
    give_up_after: Duration,
) -> Result<Cluster, redis::RedisError> {
    let url = opts.url.as_str();
    let deadline = tokio::time::Instant::now() + give_up_after;
    let mut delay = Duration::from_millis(100);
    loop {
        match connect_with(opts).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                if tokio::time::Instant::now() + delay > deadline {
                    tracing::error!(url = %redact_url(url), error = %e, "cannot reach Redis; giving up");
                    return Err(e);
                }
                tracing::error!(url = %redact_url(url), error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach Redis; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The URL with its credentials (`user:password@`) replaced, for logs and printed config.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}(redacted)@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Checks the command connection every [`HEALTH_INTERVAL`] until the node shuts down (the
/// pub/sub task checks its own connection).
pub(crate) async fn health_task(
    shared: Arc<Shared>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                shared.follow_master().await;
                shared.check_commands().await;
            }
        }
    }
}
