//! Room options: the `[rooms]` defaults and the `[[namespaces]]` that override them for rooms
//! whose name starts with a prefix (the longest matching prefix wins).

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError, JoinMode};

/// How much of a room's membership its members see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceMode {
    /// `joined`/`reconnected` list every member; `presence` frames name each change.
    #[default]
    Full,
    /// Only the member count: in `joined`/`reconnected` and in `presence` frames. A join or a
    /// resume costs O(1) in the room's size.
    Count,
    /// No `presence` frames; `joined`/`reconnected` carry the member count only.
    Off,
}

/// `[rooms]`: options of every room unless a namespace overrides them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// Who may join: `open`, `token` or `hook`. Unset: `token` when a verification key is
    /// configured (the binary sets `open` in development mode, with a warning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinMode>,
    /// Presence mode.
    pub presence: PresenceMode,
    /// Presence changes are coalesced and sent at most this often per room (and before the
    /// room's next event), in milliseconds.
    pub presence_interval_ms: u64,
    /// Largest room state (`set_state`, `POST /api/v1/rooms/{room}/state`), in bytes of its
    /// JSON form; 0 disables room state.
    pub state_bytes: usize,
    /// Whether members may `publish` (otherwise only the application's backend does, through
    /// the server API: a live dashboard).
    pub client_publish: bool,
    /// Whether the room has an authority role (otherwise nobody holds it and claims are
    /// refused).
    pub authority: bool,
    /// Most member publishes per second in one room (a token bucket with one second of
    /// burst), so one busy room cannot flood its members or the broker; 0: no limit.
    pub publish_rate_per_sec: u32,
}

/// Largest accepted `state_bytes`.
pub const MAX_STATE_BYTES: usize = 16 * 1024 * 1024;

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            join: None,
            presence: PresenceMode::Full,
            presence_interval_ms: 50,
            state_bytes: 64 * 1024,
            client_publish: true,
            authority: true,
            publish_rate_per_sec: 0,
        }
    }
}

/// `[[namespaces]]`: options for rooms whose name starts with `prefix`. Unset keys take the
/// defaults (`[rooms]`, `limits.max_members_per_room`, `reconnection.*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Room-name prefix (non-empty).
    pub prefix: String,
    /// Who may join (see `[rooms] join`).
    pub join: Option<JoinMode>,
    /// Presence mode.
    pub presence: Option<PresenceMode>,
    /// Most members (connected or away).
    pub max_members: Option<usize>,
    /// Room messages kept for replay.
    pub history_size: Option<usize>,
    /// Bytes of room messages kept for replay.
    pub history_bytes: Option<usize>,
    /// How long a dropped member may resume.
    pub reconnection_window_secs: Option<u64>,
    /// Largest room state, in bytes; 0 disables room state.
    pub state_bytes: Option<usize>,
    /// Whether members may publish.
    pub client_publish: Option<bool>,
    /// Whether the room has an authority role.
    pub authority: Option<bool>,
    /// Most member publishes per second in one room; 0: no limit.
    pub publish_rate_per_sec: Option<u32>,
}

/// The options in force for one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomOptions {
    /// Presence mode.
    pub presence: PresenceMode,
    /// Most members.
    pub max_members: usize,
    /// Room messages kept for replay.
    pub history_size: usize,
    /// Bytes kept for replay.
    pub history_bytes: usize,
    /// Reconnection window, in ms.
    pub window_ms: u64,
    /// Largest room state, in bytes (0: no room state).
    pub state_bytes: usize,
    /// Whether members may publish.
    pub client_publish: bool,
    /// Whether the room has an authority role.
    pub authority: bool,
    /// Most member publishes per second; 0: no limit.
    pub publish_rate_per_sec: u32,
}

impl Config {
    /// The namespace whose prefix is the longest one `room` starts with.
    pub fn namespace_of(&self, room: &str) -> Option<&NamespaceConfig> {
        self.namespaces
            .iter()
            .filter(|n| room.starts_with(n.prefix.as_str()))
            .max_by_key(|n| n.prefix.len())
    }
}

/// Resolves room options by name.
#[derive(Debug, Clone)]
pub struct Namespaces {
    default: RoomOptions,
    /// Longest prefix first.
    by_prefix: Vec<(String, RoomOptions)>,
}

impl Namespaces {
    /// The namespaces of `config`.
    pub fn from_config(config: &Config) -> Namespaces {
        let default = RoomOptions {
            presence: config.rooms.presence,
            max_members: config.limits.max_members_per_room,
            history_size: config.reconnection.event_buffer_size,
            history_bytes: config.reconnection.event_buffer_bytes,
            window_ms: config.reconnection.window_secs.saturating_mul(1000),
            state_bytes: config.rooms.state_bytes,
            client_publish: config.rooms.client_publish,
            authority: config.rooms.authority,
            publish_rate_per_sec: config.rooms.publish_rate_per_sec,
        };
        let mut by_prefix: Vec<(String, RoomOptions)> = config
            .namespaces
            .iter()
            .map(|n| {
                (
                    n.prefix.clone(),
                    RoomOptions {
                        presence: n.presence.unwrap_or(default.presence),
                        max_members: n.max_members.unwrap_or(default.max_members),
                        history_size: n.history_size.unwrap_or(default.history_size),
                        history_bytes: n.history_bytes.unwrap_or(default.history_bytes),
                        window_ms: n
                            .reconnection_window_secs
                            .map_or(default.window_ms, |s| s.saturating_mul(1000)),
                        state_bytes: n.state_bytes.unwrap_or(default.state_bytes),
                        client_publish: n.client_publish.unwrap_or(default.client_publish),
                        authority: n.authority.unwrap_or(default.authority),
                        publish_rate_per_sec: n
                            .publish_rate_per_sec
                            .unwrap_or(default.publish_rate_per_sec),
                    },
                )
            })
            .collect();
        by_prefix.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Namespaces { default, by_prefix }
    }

    /// The options of room `name`.
    pub fn options(&self, name: &str) -> RoomOptions {
        self.by_prefix
            .iter()
            .find(|(p, _)| name.starts_with(p.as_str()))
            .map_or(self.default, |(_, o)| *o)
    }
}

/// Checks `[rooms]` and `[[namespaces]]`.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    let bad = |key: &'static str, message: String| Err(ConfigError { key, message });
    if config.rooms.presence_interval_ms == 0 || config.rooms.presence_interval_ms > 10_000 {
        return bad(
            "rooms.presence_interval_ms",
            "must be between 1 and 10000".into(),
        );
    }
    if config.rooms.state_bytes > MAX_STATE_BYTES {
        return bad(
            "rooms.state_bytes",
            format!("must be at most {MAX_STATE_BYTES}"),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for n in &config.namespaces {
        if n.prefix.is_empty() {
            return bad("namespaces.prefix", "must not be empty".into());
        }
        if !seen.insert(n.prefix.as_str()) {
            return bad(
                "namespaces.prefix",
                format!("`{}` is given twice", n.prefix),
            );
        }
        let zero = n.max_members == Some(0)
            || n.history_size == Some(0)
            || n.history_bytes == Some(0)
            || n.reconnection_window_secs == Some(0);
        if zero {
            return bad(
                "namespaces",
                format!("namespace `{}`: values must be greater than 0", n.prefix),
            );
        }
        if n.state_bytes.is_some_and(|b| b > MAX_STATE_BYTES) {
            return bad(
                "namespaces.state_bytes",
                format!(
                    "namespace `{}`: must be at most {MAX_STATE_BYTES}",
                    n.prefix
                ),
            );
        }
        if n.history_size.is_some_and(|h| h > 100_000) {
            return bad(
                "namespaces.history_size",
                format!("namespace `{}`: must be at most 100000", n.prefix),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_wins() {
        let mut c = Config {
            namespaces: vec![
                NamespaceConfig {
                    prefix: "game:".into(),
                    max_members: Some(8),
                    ..Default::default()
                },
                NamespaceConfig {
                    prefix: "game:big:".into(),
                    presence: Some(PresenceMode::Count),
                    ..Default::default()
                },
            ],
            ..Config::default()
        };
        validate(&c).unwrap_or_else(|e| panic!("{e}"));
        let ns = Namespaces::from_config(&c);
        assert_eq!(ns.options("game:1").max_members, 8);
        assert_eq!(ns.options("game:big:1").presence, PresenceMode::Count);
        assert_eq!(ns.options("game:big:1").max_members, 10_000);
        assert_eq!(ns.options("chat").presence, PresenceMode::Full);
        c.namespaces.push(NamespaceConfig {
            prefix: "game:".into(),
            ..Default::default()
        });
        assert!(validate(&c).is_err());
    }
}
