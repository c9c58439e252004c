//! Gateway configuration: every tunable with its default.
//!
//! The gateway library never reads the environment or files: the `holdfast` binary builds a
//! [`Config`] from TOML and `HOLDFAST_*` variables, and tests build one in code. [`Config::validate`]
//! names the offending key of an invalid configuration.

use serde::{Deserialize, Serialize};

mod auth;
mod connections;
mod server;

pub use auth::*;
pub use connections::*;
pub use server::*;

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
    /// OpenTelemetry trace export; not read from the file (the binary fills it from the
    /// `OTEL_*` variables).
    #[serde(skip)]
    pub tracing: crate::telemetry::TracingConfig,
}

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
            "limits.send_rate_per_sec",
            self.limits.send_rate_per_sec.into(),
        )?;
        positive("limits.send_rate_burst", self.limits.send_rate_burst.into())?;
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
        let schemes = [
            "redis://",
            "rediss://",
            "redis+cluster://",
            "rediss+cluster://",
            "redis+sentinel://",
            "rediss+sentinel://",
        ];
        if !(url.is_empty() || schemes.iter().any(|s| url.starts_with(s))) {
            return Err(ConfigError {
                key: "broker.url",
                message: "must start with redis://, rediss:// (TLS), redis+cluster:// or \
                          rediss+cluster:// (Redis Cluster seed nodes host:port,host:port), \
                          redis+sentinel:// or rediss+sentinel:// (sentinels \
                          host:port,host:port/<master name>), or be empty for the in-memory broker"
                    .into(),
            });
        }
        if url.contains("+cluster://") {
            let hosts = url
                .split_once("://")
                .map(|(_, r)| r.rsplit_once('@').map_or(r, |(_, h)| h))
                .and_then(|r| r.split(['/', '?']).next())
                .unwrap_or("");
            if hosts.split(',').all(|h| h.trim().is_empty()) {
                return Err(ConfigError {
                    key: "broker.url",
                    message: "a cluster URL names at least one seed node host:port".into(),
                });
            }
        }
        if url.contains("+sentinel://") {
            let rest = url.split_once("://").map_or("", |(_, r)| r);
            let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            let named = rest.split_once('/').is_some_and(|(hosts, master)| {
                !hosts.trim().is_empty() && !master.split('/').next().unwrap_or("").is_empty()
            });
            if !named {
                return Err(ConfigError {
                    key: "broker.url",
                    message: "a sentinel URL names the sentinels and the master: \
                              redis+sentinel://host:port,host:port/<master name>"
                        .into(),
                });
            }
        }
        if !self.broker.tls_ca_file.is_empty() && !url.starts_with("rediss") {
            return Err(ConfigError {
                key: "broker.tls_ca_file",
                message: "only applies to a rediss://, rediss+cluster:// or rediss+sentinel:// \
                          broker.url"
                    .into(),
            });
        }
        if self.broker.key_prefix.is_empty()
            || self
                .broker
                .key_prefix
                .contains(|c: char| c.is_whitespace() || c == '{' || c == '}')
        {
            return Err(ConfigError {
                key: "broker.key_prefix",
                message: "must be non-empty without spaces or braces".into(),
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
mod tests;
