//! Gateway configuration: every tunable with its default.
//!
//! The gateway library never reads the environment or files: the `holdfast` binary builds a
//! [`Config`] from TOML and `HOLDFAST_*` variables, and tests build one in code. [`Config::validate`]
//! names the offending key of an invalid configuration.

use serde::{Deserialize, Serialize};

/// The whole configuration of one gateway node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener, identity and drain.
    pub server: ServerConfig,
    /// Token verification.
    pub auth: AuthConfig,
    /// Calls to the application's HTTP hooks (join and connect decisions).
    pub hooks: HooksConfig,
    /// WebSocket ping/pong keepalive.
    pub heartbeat: HeartbeatConfig,
    /// Size, rate and count limits.
    pub limits: LimitsConfig,
    /// Per-user session policy.
    pub session: SessionConfig,
    /// Room resume after a dropped connection.
    pub reconnection: ReconnectionConfig,
    /// Options of every room (who may join, presence), unless a namespace overrides them.
    pub rooms: RoomsConfig,
    /// Room options by room-name prefix.
    pub namespaces: Vec<crate::room::options::NamespaceConfig>,
    /// SSE and long-polling transports.
    pub fallback: FallbackConfig,
    /// The cluster broker (used by the binary to pick one).
    pub broker: BrokerConfig,
    /// Log output (used by the binary).
    pub log: LogConfig,
    /// The internal listener: the server API for the application's backend, and `/metrics`.
    pub api: ApiConfig,
    /// Where `/metrics` is served.
    pub metrics: MetricsConfig,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the binary listens on.
    pub listen: String,
    /// This node's id, reported in `welcome`; random when empty.
    pub node_id: String,
    /// How long a drain waits for sessions to end before giving up.
    pub drain_timeout_secs: u64,
    /// How long a drain keeps sessions open after `/readyz` turns 503 and new sessions are
    /// refused, so load balancers stop routing here before sessions are told to reconnect.
    pub drain_delay_ms: u64,
    /// Reconnect hint sent in `server_shutdown`, in milliseconds.
    pub shutdown_reconnect_after_ms: u64,
    /// Development mode, asked for explicitly (`holdfast serve --dev`): without
    /// `auth.hmac_secret`, a random secret for the run and a printed token. Otherwise
    /// [`Config::check_production`] refuses unsafe settings.
    pub development: bool,
    /// Reverse proxies (addresses or CIDR networks) whose `X-Forwarded-For` is believed; the
    /// client address they report is the one per-IP limits and logs use.
    pub trusted_proxies: Vec<String>,
    /// TLS for the listener; off when `cert` and `key` are empty.
    pub tls: TlsConfig,
    /// Worker threads of the binary's runtime; 0 starts one per CPU core.
    pub worker_threads: usize,
}

/// `[server.tls]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// How often the files are checked for changes and reloaded; 0 reloads only on SIGHUP.
    pub reload_interval_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: String::new(),
            key: String::new(),
            reload_interval_secs: 30,
        }
    }
}

impl TlsConfig {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            node_id: String::new(),
            drain_timeout_secs: 30,
            drain_delay_ms: 0,
            shutdown_reconnect_after_ms: 1000,
            development: false,
            trusted_proxies: Vec::new(),
            tls: TlsConfig::default(),
            worker_threads: 0,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret shared with the application that mints tokens. Empty means development
    /// mode: the binary generates a random secret for the run and says so.
    pub hmac_secret: String,
    /// How long an unauthenticated connection may wait before sending `auth`.
    pub timeout_ms: u64,
    /// Clock skew tolerated when checking `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Further verification keys, chosen by the token header's `kid` (`[[auth.keys]]`).
    pub keys: Vec<KeyConfig>,
    /// A JWKS document (`http://` URL) with public keys chosen by `kid`. Empty: none.
    pub jwks_url: String,
    /// How long a fetched JWKS is used before it is fetched again in the background.
    pub jwks_cache_secs: u64,
    /// Least time between two fetches of the JWKS (a token with an unknown `kid` triggers one).
    pub jwks_min_refresh_secs: u64,
    /// Time limit of one JWKS fetch, connection included.
    pub jwks_timeout_ms: u64,
    /// Largest JWKS response accepted, in bytes.
    pub jwks_max_bytes: usize,
    /// Accepted `iss` values; empty: `iss` is not checked.
    pub issuer: Vec<String>,
    /// Accepted `aud` values; empty: `aud` is not checked.
    pub audience: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            hmac_secret: String::new(),
            timeout_ms: 10_000,
            leeway_secs: 0,
            keys: Vec::new(),
            jwks_url: String::new(),
            jwks_cache_secs: 300,
            jwks_min_refresh_secs: 30,
            jwks_timeout_ms: 5_000,
            jwks_max_bytes: 256 * 1024,
            issuer: Vec::new(),
            audience: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// Whether any real verification key is configured (a secret, a key or a JWKS).
    pub fn has_keys(&self) -> bool {
        !self.hmac_secret.is_empty() || !self.keys.is_empty() || !self.jwks_url.is_empty()
    }
}

/// One `[[auth.keys]]` entry: exactly one of `secret` (HS*) or `public_key` (PEM, RS*/PS*,
/// ES*, EdDSA).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyConfig {
    /// The `kid` tokens name this key with; empty: tokens without a `kid` may use it.
    pub kid: String,
    /// `HS256`, `HS384`, `HS512`, `RS256`, `RS384`, `RS512`, `PS256`, `PS384`, `PS512`,
    /// `ES256`, `ES384` or `EdDSA`.
    pub alg: String,
    /// The shared secret of an HS* key.
    pub secret: String,
    /// The PEM public key of an asymmetric key (the binary fills it from `public_key_file`).
    pub public_key: String,
    /// A file holding the PEM public key; read by the binary at start.
    pub public_key_file: String,
}

/// How a room's joins are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinMode {
    /// Any authenticated user may join.
    Open,
    /// The connection token's `rooms` claim, or a join token for the room, must allow it.
    Token,
    /// The application's `hooks.join_url` decides.
    Hook,
}

pub use crate::room::options::RoomsConfig;

/// `[hooks]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// `http://` URL POSTed `{user, room, session_id, node_id}` for rooms with `join = "hook"`.
    pub join_url: String,
    /// `http://` URL POSTed `{user, node_id}` after a connection's token is verified; empty:
    /// not called.
    pub connect_url: String,
    /// Time limit of one hook call, connection included; a late answer refuses.
    pub timeout_ms: u64,
    /// Most hook calls in flight on this node; a call beyond it is refused at once.
    pub max_concurrent: usize,
    /// Largest hook response accepted, in bytes; a larger one refuses.
    pub max_response_bytes: usize,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            join_url: String::new(),
            connect_url: String::new(),
            timeout_ms: 2_000,
            max_concurrent: 256,
            max_response_bytes: 64 * 1024,
        }
    }
}

/// `[heartbeat]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// Interval between WebSocket pings.
    pub ping_interval_ms: u64,
    /// How long a ping may stay unanswered before the session is closed with 4005.
    pub pong_timeout_ms: u64,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            ping_interval_ms: 10_000,
            pong_timeout_ms: 20_000,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest inbound message (and frame), in bytes; larger ones close the session with 1009.
    pub max_message_bytes: usize,
    /// Most concurrent WebSocket sessions on this node; further upgrades get HTTP 503.
    pub max_connections: usize,
    /// Most concurrent sessions from one IP address; further upgrades get HTTP 429.
    pub max_connections_per_ip: usize,
    /// Most rooms one session may be in.
    pub max_rooms_per_session: usize,
    /// Most memberships one user may keep away (after its sessions dropped) on this node;
    /// beyond it the oldest one ends (as if its window had passed). At least
    /// `max_rooms_per_session`, so one session's own drop never ends its own memberships.
    pub max_away_rooms_per_user: usize,
    /// Most members (connected or away) in one room.
    pub max_members_per_room: usize,
    /// Time allowed for a client to send the headers of each HTTP request (the upgrade
    /// request, or the next request on an idle keep-alive connection); then the connection is
    /// closed.
    pub handshake_timeout_ms: u64,
    /// Time allowed for a client to send a request body (`POST /sse/send`, `/poll/send`);
    /// slower bodies are answered 408 `body_timeout`.
    pub body_timeout_ms: u64,
    /// Most HTTP connections on this node that are not (yet) a session: handshakes, requests
    /// being read, idle keep-alive connections. Further connections are answered 503
    /// `max_pending_connections` and closed right after `accept`.
    pub max_pending_connections: usize,
    /// Most pending HTTP connections from one address (an IPv6 /64); further connections are
    /// answered 429 `max_pending_per_ip` and closed right after `accept`. At most half of
    /// `max_pending_connections`, so one address can never hold the whole pool.
    pub max_pending_per_ip: usize,
    /// Most SSE streams and long-poll requests held open at once from one address, new or
    /// reattached to an existing session; further ones get HTTP 429 `max_streams_per_ip`.
    pub max_streams_per_ip: usize,
    /// Inbound frames per second allowed per session (token bucket refill rate).
    pub rate_limit_per_sec: u32,
    /// Token bucket size: frames that may arrive in a burst.
    pub rate_limit_burst: u32,
    /// Consecutive rate-limited frames after which the session is closed with 4003.
    pub rate_limit_strikes: u32,
    /// Outbound queue bound per session, in messages.
    pub send_queue_messages: usize,
    /// Outbound queue bound per session, in bytes.
    pub send_queue_bytes: usize,
    /// Origins allowed to open browser WebSockets; empty allows every origin.
    pub allowed_origins: Vec<String>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: 64 * 1024,
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            max_rooms_per_session: 64,
            max_away_rooms_per_user: 256,
            max_members_per_room: 10_000,
            handshake_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            max_pending_connections: 4_096,
            max_pending_per_ip: 64,
            max_streams_per_ip: 1_000,
            rate_limit_per_sec: 100,
            rate_limit_burst: 200,
            rate_limit_strikes: 50,
            send_queue_messages: 1_024,
            send_queue_bytes: 4 * 1024 * 1024,
            allowed_origins: Vec::new(),
        }
    }
}

/// `[session]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Which earlier connections a new authenticated connection of a user closes with 4000.
    pub single_socket: SingleSocket,
    /// Live sessions one user may hold on a node when single socket allows several (`device`,
    /// `off`); a new session beyond it closes the user's oldest one with 4000.
    pub max_sessions_per_user: usize,
    /// Client message ids remembered per session for publish dedupe.
    pub dedupe_window: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            single_socket: SingleSocket::User,
            max_sessions_per_user: 16,
            dedupe_window: 256,
        }
    }
}

/// `session.single_socket`: the scope in which the newest connection wins.
///
/// Written as `"user"`, `"device"` or `"off"`; the booleans of earlier versions are still
/// read (`true` is `"user"`, `false` is `"off"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SingleSocket {
    /// One session per user: a new one replaces every other (on any node).
    User,
    /// One session per user and device id (the token's `device` claim or the `device` query
    /// parameter; connections without one share a device).
    Device,
    /// No replacement; `max_sessions_per_user` bounds the sessions of a user.
    Off,
}

impl<'de> Deserialize<'de> for SingleSocket {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The spellings accepted: the mode's name, or a boolean of earlier versions.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Flag(true) => Ok(SingleSocket::User),
            Raw::Flag(false) => Ok(SingleSocket::Off),
            Raw::Name(n) => match n.as_str() {
                "user" | "true" => Ok(SingleSocket::User),
                "device" => Ok(SingleSocket::Device),
                "off" | "false" => Ok(SingleSocket::Off),
                _ => Err(serde::de::Error::custom(format!(
                    "`{n}` is not a single socket mode: use \"user\", \"device\" or \"off\""
                ))),
            },
        }
    }
}

/// `[reconnection]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconnectionConfig {
    /// Whether members may resume after a drop.
    pub enabled: bool,
    /// How long a dropped member stays `away` and may resume.
    pub window_secs: u64,
    /// Room-scoped messages kept per room for replay.
    pub event_buffer_size: usize,
    /// Bytes of room messages kept per room for replay (the newest message is always kept).
    pub event_buffer_bytes: usize,
    /// Bytes of room messages kept for replay by all the rooms of a node (in-process rooms):
    /// beyond it, the room that appends evicts its oldest messages first (a later resume is
    /// told the exact gap).
    pub node_buffer_bytes: usize,
    /// Give authority back to a resuming member that held it, when nobody took it meanwhile.
    pub restore_authority: bool,
    /// How often expired memberships and buffers are swept.
    pub sweep_interval_ms: u64,
}

impl Default for ReconnectionConfig {
    fn default() -> Self {
        ReconnectionConfig {
            enabled: true,
            window_secs: 300,
            event_buffer_size: 100,
            event_buffer_bytes: 1 << 20,
            node_buffer_bytes: 256 << 20,
            restore_authority: true,
            sweep_interval_ms: 1_000,
        }
    }
}

/// `[fallback]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    /// Whether `/sse` and `/poll` are served.
    pub enabled: bool,
    /// A fallback session with no attached stream and no poll for this long ends (its room
    /// memberships turn away, as when a WebSocket drops).
    pub session_timeout_ms: u64,
    /// How long a long-poll request waits for frames before answering empty.
    pub poll_timeout_ms: u64,
    /// Frames kept per fallback session for `Last-Event-ID` replay and unacknowledged polls.
    /// A client further behind than this is closed with 4001 and resumes its rooms.
    pub replay_frames: usize,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            enabled: true,
            session_timeout_ms: 30_000,
            poll_timeout_ms: 25_000,
            replay_frames: 256,
        }
    }
}

/// `[broker]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Redis URL (`redis://host:port/db`). Empty: the embedded in-memory broker (one node).
    pub url: String,
    /// Prefix of every Redis key and channel, so several clusters can share one Redis.
    pub key_prefix: String,
    /// How long `serve` keeps retrying an unreachable Redis at start before giving up.
    pub connect_timeout_secs: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            url: String::new(),
            key_prefix: "holdfast".into(),
            connect_timeout_secs: 60,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: String,
    /// A tracing filter directive, e.g. `info` or `holdfast_gateway=debug`.
    pub level: String,
    /// Most authentication-failure lines per second; the rest are counted in one summary.
    pub auth_failures_per_sec: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "human".into(),
            level: "info".into(),
            auth_failures_per_sec: 10,
        }
    }
}

/// `[api]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the internal listener (server API and `/metrics`); empty disables it. Never
    /// expose it to the Internet: it is for the application's backend and the scraper.
    pub listen: String,
    /// Keys accepted in `Authorization: Bearer <key>`; several, so a key can be rotated
    /// without downtime. Empty: every API request is refused (401).
    pub keys: Vec<String>,
    /// Largest request body, in bytes; larger ones are answered 413.
    pub max_body_bytes: usize,
    /// Most connections the internal listener holds at once; further ones wait in the
    /// kernel's accept queue.
    pub max_connections: usize,
    /// Most rooms in one `POST /api/v1/broadcast`.
    pub max_broadcast_rooms: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8081".into(),
            keys: Vec::new(),
            max_body_bytes: 1 << 20,
            max_connections: 256,
            max_broadcast_rooms: 1_000,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether the public listener serves `/metrics` too (the internal listener always does).
    pub public: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { public: true }
    }
}

/// Shortest accepted API key, in bytes: a key is a bearer secret and must not be guessable.
pub const MIN_API_KEY_LEN: usize = 16;

/// A configuration value out of range, naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{key}` {message}")]
pub struct ConfigError {
    /// Dotted key, e.g. `heartbeat.pong_timeout_ms`.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl Config {
    /// Checks every value, naming the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(key: &'static str, v: u64) -> Result<(), ConfigError> {
            if v == 0 {
                return Err(ConfigError {
                    key,
                    message: "must be greater than 0".into(),
                });
            }
            Ok(())
        }
        if !valid_listen(&self.server.listen) {
            return Err(ConfigError {
                key: "server.listen",
                message: format!(
                    "must be host:port (e.g. 127.0.0.1:8080 or [::]:8080), got {:?}",
                    self.server.listen
                ),
            });
        }
        if let Some(bad) = self
            .server
            .trusted_proxies
            .iter()
            .find(|p| crate::proxy::Cidr::parse(p).is_none())
        {
            return Err(ConfigError {
                key: "server.trusted_proxies",
                message: format!("{bad:?} is not an IP address or CIDR network"),
            });
        }
        if self.server.worker_threads > 1024 {
            return Err(ConfigError {
                key: "server.worker_threads",
                message: "must be at most 1024 (0: one per CPU core)".into(),
            });
        }
        if self.server.tls.cert.is_empty() != self.server.tls.key.is_empty() {
            return Err(ConfigError {
                key: "server.tls",
                message: "needs both `cert` and `key` (or neither)".into(),
            });
        }
        positive("server.drain_timeout_secs", self.server.drain_timeout_secs)?;
        crate::room::options::validate(self)?;
        positive("auth.timeout_ms", self.auth.timeout_ms)?;
        positive(
            "heartbeat.ping_interval_ms",
            self.heartbeat.ping_interval_ms,
        )?;
        positive("heartbeat.pong_timeout_ms", self.heartbeat.pong_timeout_ms)?;
        if self.heartbeat.pong_timeout_ms < self.heartbeat.ping_interval_ms {
            return Err(ConfigError {
                key: "heartbeat.pong_timeout_ms",
                message: "must be at least heartbeat.ping_interval_ms".into(),
            });
        }
        if self.limits.max_message_bytes < 256 {
            return Err(ConfigError {
                key: "limits.max_message_bytes",
                message: "must be at least 256".into(),
            });
        }
        positive("limits.max_connections", self.limits.max_connections as u64)?;
        positive(
            "limits.max_connections_per_ip",
            self.limits.max_connections_per_ip as u64,
        )?;
        positive(
            "limits.max_rooms_per_session",
            self.limits.max_rooms_per_session as u64,
        )?;
        positive(
            "limits.max_members_per_room",
            self.limits.max_members_per_room as u64,
        )?;
        positive(
            "limits.handshake_timeout_ms",
            self.limits.handshake_timeout_ms,
        )?;
        positive("limits.body_timeout_ms", self.limits.body_timeout_ms)?;
        // A pending connection holds its slot for up to these times.
        for (key, v) in [
            (
                "limits.handshake_timeout_ms",
                self.limits.handshake_timeout_ms,
            ),
            ("limits.body_timeout_ms", self.limits.body_timeout_ms),
        ] {
            if v > 60_000 {
                return Err(ConfigError {
                    key,
                    message: "must be at most 60000".into(),
                });
            }
        }
        positive(
            "limits.max_pending_connections",
            self.limits.max_pending_connections as u64,
        )?;
        positive(
            "limits.max_pending_per_ip",
            self.limits.max_pending_per_ip as u64,
        )?;
        if self.limits.max_pending_per_ip > self.limits.max_pending_connections / 2 {
            return Err(ConfigError {
                key: "limits.max_pending_per_ip",
                message: "must be at most half of limits.max_pending_connections, so one \
                          address cannot hold the whole pool"
                    .into(),
            });
        }
        positive(
            "limits.max_streams_per_ip",
            self.limits.max_streams_per_ip as u64,
        )?;
        positive(
            "limits.rate_limit_per_sec",
            self.limits.rate_limit_per_sec.into(),
        )?;
        positive(
            "limits.rate_limit_burst",
            self.limits.rate_limit_burst.into(),
        )?;
        positive(
            "limits.rate_limit_strikes",
            self.limits.rate_limit_strikes.into(),
        )?;
        positive(
            "limits.send_queue_messages",
            self.limits.send_queue_messages as u64,
        )?;
        if self.limits.send_queue_bytes < self.limits.max_message_bytes {
            return Err(ConfigError {
                key: "limits.send_queue_bytes",
                message: "must be at least limits.max_message_bytes".into(),
            });
        }
        positive("session.dedupe_window", self.session.dedupe_window as u64)?;
        positive(
            "session.max_sessions_per_user",
            self.session.max_sessions_per_user as u64,
        )?;
        positive("reconnection.window_secs", self.reconnection.window_secs)?;
        positive(
            "reconnection.event_buffer_size",
            self.reconnection.event_buffer_size as u64,
        )?;
        positive(
            "reconnection.event_buffer_bytes",
            self.reconnection.event_buffer_bytes as u64,
        )?;
        positive(
            "reconnection.node_buffer_bytes",
            self.reconnection.node_buffer_bytes as u64,
        )?;
        if self.reconnection.event_buffer_size > 100_000 {
            return Err(ConfigError {
                key: "reconnection.event_buffer_size",
                message: "must be at most 100000".into(),
            });
        }
        positive(
            "reconnection.sweep_interval_ms",
            self.reconnection.sweep_interval_ms,
        )?;
        positive(
            "fallback.session_timeout_ms",
            self.fallback.session_timeout_ms,
        )?;
        positive("fallback.poll_timeout_ms", self.fallback.poll_timeout_ms)?;
        if self.fallback.replay_frames < 16 || self.fallback.replay_frames > 100_000 {
            return Err(ConfigError {
                key: "fallback.replay_frames",
                message: "must be between 16 and 100000".into(),
            });
        }
        self.validate_auth()?;
        let url = &self.broker.url;
        if !(url.is_empty() || url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(ConfigError {
                key: "broker.url",
                message: "must start with redis:// (or be empty for the in-memory broker)".into(),
            });
        }
        if self.broker.key_prefix.is_empty() || self.broker.key_prefix.contains(char::is_whitespace)
        {
            return Err(ConfigError {
                key: "broker.key_prefix",
                message: "must be non-empty without spaces".into(),
            });
        }
        if self
            .api
            .keys
            .iter()
            .any(|k| k.trim().len() < MIN_API_KEY_LEN)
        {
            return Err(ConfigError {
                key: "api.keys",
                message: format!("every key must have at least {MIN_API_KEY_LEN} characters"),
            });
        }
        if self.api.max_body_bytes < self.limits.max_message_bytes {
            return Err(ConfigError {
                key: "api.max_body_bytes",
                message: "must be at least limits.max_message_bytes".into(),
            });
        }
        if self.api.max_body_bytes > 64 << 20 {
            return Err(ConfigError {
                key: "api.max_body_bytes",
                message: "must be at most 67108864".into(),
            });
        }
        positive("api.max_connections", self.api.max_connections as u64)?;
        positive(
            "api.max_broadcast_rooms",
            self.api.max_broadcast_rooms as u64,
        )?;
        if !matches!(self.log.format.as_str(), "human" | "json") {
            return Err(ConfigError {
                key: "log.format",
                message: "must be `human` or `json`".into(),
            });
        }
        Ok(())
    }
}

impl Config {
    /// What `serve` checks on top of [`Config::validate`] unless `server.development` is set:
    /// no setting that is only safe on a developer's machine.
    pub fn check_production(&self) -> Result<(), ConfigError> {
        if !self.auth.has_keys() && !self.broker.url.is_empty() {
            return Err(ConfigError {
                key: "auth.hmac_secret",
                message: "is empty: the nodes of a cluster must share one secret, even in \
                          development mode"
                    .into(),
            });
        }
        if self.server.development {
            return Ok(());
        }
        if !self.auth.has_keys() {
            return Err(ConfigError {
                key: "auth.hmac_secret",
                message: "is empty (and no auth.keys or auth.jwks_url): set it (HOLDFAST_AUTH__HMAC_SECRET, or [auth] hmac_secret \
                          in the config file), or ask for development mode with \
                          `holdfast serve --dev` (a random secret for this run only)"
                    .into(),
            });
        }
        if !self.auth.hmac_secret.is_empty() && self.auth.hmac_secret.trim().is_empty() {
            return Err(ConfigError {
                key: "auth.hmac_secret",
                message: "is blank".into(),
            });
        }
        Ok(())
    }

    /// The `[auth]`, `[rooms]` and `[hooks]` checks.
    fn validate_auth(&self) -> Result<(), ConfigError> {
        fn err(key: &'static str, message: &str) -> Result<(), ConfigError> {
            Err(ConfigError {
                key,
                message: message.into(),
            })
        }
        fn http_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
            if !url.is_empty() && !url.starts_with("http://") {
                return err(key, "must be an http:// URL (or empty)");
            }
            Ok(())
        }
        for k in &self.auth.keys {
            if let Err(m) = crate::auth::check_key_config(k) {
                return err("auth.keys", &m);
            }
        }
        http_url("auth.jwks_url", &self.auth.jwks_url)?;
        if self.auth.jwks_min_refresh_secs == 0 {
            return err("auth.jwks_min_refresh_secs", "must be greater than 0");
        }
        if self.auth.jwks_timeout_ms == 0 {
            return err("auth.jwks_timeout_ms", "must be greater than 0");
        }
        if self.auth.jwks_max_bytes < 1024 {
            return err("auth.jwks_max_bytes", "must be at least 1024");
        }
        http_url("hooks.join_url", &self.hooks.join_url)?;
        http_url("hooks.connect_url", &self.hooks.connect_url)?;
        if self.hooks.timeout_ms == 0 {
            return err("hooks.timeout_ms", "must be greater than 0");
        }
        if self.hooks.max_concurrent == 0 {
            return err("hooks.max_concurrent", "must be greater than 0");
        }
        if self.hooks.max_response_bytes < 64 {
            return err("hooks.max_response_bytes", "must be at least 64");
        }
        if self.rooms.join == Some(JoinMode::Hook) && self.hooks.join_url.is_empty() {
            return err("hooks.join_url", "is required by rooms.join = \"hook\"");
        }
        Ok(())
    }
}

/// `host:port` with a numeric port and a non-empty host (IPv6 in brackets).
fn valid_listen(s: &str) -> bool {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    port.parse::<u16>().is_ok()
        && !host.is_empty()
        && !host.contains(':')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_socket_reads_modes_and_the_old_booleans() {
        let read = |v: &str| serde_json::from_str::<SingleSocket>(v);
        assert_eq!(read("true").expect("a mode"), SingleSocket::User);
        assert_eq!(read("false").expect("a mode"), SingleSocket::Off);
        assert_eq!(read("\"user\"").expect("a mode"), SingleSocket::User);
        assert_eq!(read("\"device\"").expect("a mode"), SingleSocket::Device);
        assert_eq!(read("\"off\"").expect("a mode"), SingleSocket::Off);
        // Environment variables arrive as strings.
        assert_eq!(read("\"false\"").expect("a mode"), SingleSocket::Off);
        assert!(read("\"tab\"").is_err());
    }

    #[test]
    fn defaults_are_valid_and_match_the_documentation() {
        let c = Config::default();
        c.validate().expect("defaults validate");
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.heartbeat.ping_interval_ms, 10_000);
        assert_eq!(c.heartbeat.pong_timeout_ms, 20_000);
        assert_eq!(c.limits.max_message_bytes, 65_536);
        assert_eq!(c.session.single_socket, SingleSocket::User);
        assert_eq!(c.reconnection.window_secs, 300);
        assert_eq!(c.reconnection.event_buffer_size, 100);
    }

    #[test]
    fn invalid_values_name_their_key() {
        let mut c = Config::default();
        c.heartbeat.pong_timeout_ms = 5;
        assert_eq!(
            c.validate().expect_err("invalid").key,
            "heartbeat.pong_timeout_ms"
        );
        let mut c = Config::default();
        c.log.format = "xml".into();
        assert_eq!(c.validate().expect_err("invalid").key, "log.format");
        let mut c = Config::default();
        c.limits.body_timeout_ms = 120_000;
        assert_eq!(
            c.validate().expect_err("invalid").key,
            "limits.body_timeout_ms"
        );
    }

    #[test]
    fn production_requires_a_secret_unless_development_is_asked_for() {
        let mut c = Config::default();
        assert_eq!(
            c.check_production().expect_err("no secret").key,
            "auth.hmac_secret"
        );
        c.server.development = true;
        c.check_production().expect("development mode");
        c.server.development = false;
        c.auth.hmac_secret = "s3cret".into();
        c.check_production().expect("a secret");
    }

    #[test]
    fn listen_proxies_and_tls_are_checked() {
        for bad in [
            "not-an-address",
            "127.0.0.1",
            ":8080",
            "host:port",
            "::1:80",
        ] {
            let mut c = Config::default();
            c.server.listen = bad.into();
            assert_eq!(c.validate().expect_err(bad).key, "server.listen", "{bad}");
        }
        for good in [
            "0.0.0.0:80",
            "[::]:8080",
            "localhost:8080",
            "gw-1.internal:443",
        ] {
            let mut c = Config::default();
            c.server.listen = good.into();
            c.validate().expect(good);
        }
        let mut c = Config::default();
        c.server.trusted_proxies = vec!["10.0.0.0/8".into(), "nope".into()];
        assert_eq!(
            c.validate().expect_err("invalid").key,
            "server.trusted_proxies"
        );
        let mut c = Config::default();
        c.server.tls.cert = "/etc/cert.pem".into();
        assert_eq!(c.validate().expect_err("invalid").key, "server.tls");
    }
}
