//! `[server]` (with TLS), `[broker]`, `[log]`, `[api]` and `[metrics]`: the process, its
//! listeners and what it talks to.

use serde::{Deserialize, Serialize};

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

/// `[broker]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Redis URL. `redis://[user:pass@]host:port[/db]` for one instance, `rediss://...` for one
    /// instance over TLS, `redis+cluster://[user:pass@]host:port,host:port` (or
    /// `rediss+cluster://`) for a Redis Cluster given by one or more seed nodes. Empty: the
    /// embedded in-memory broker (one node).
    pub url: String,
    /// A PEM file of CA certificates to trust for `rediss://` besides the system's (a private
    /// CA or a self-signed server certificate). Empty: the system's roots only.
    pub tls_ca_file: String,
    /// Prefix of every Redis key and channel, so several clusters can share one Redis.
    pub key_prefix: String,
    /// How long `serve` keeps retrying an unreachable Redis at start before giving up.
    pub connect_timeout_secs: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            url: String::new(),
            tls_ca_file: String::new(),
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
