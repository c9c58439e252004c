//! `[heartbeat]`, `[limits]`, `[session]`, `[reconnection]` and `[fallback]`: what one
//! connection and one session may do, and for how long.

use serde::{Deserialize, Serialize};

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
    /// Inbound frames per second allowed per user on this node (token bucket refill rate),
    /// shared by the user's sessions on every transport; a reconnect does not refill it.
    pub rate_limit_per_sec: u32,
    /// Token bucket size: frames that may arrive in a burst.
    pub rate_limit_burst: u32,
    /// `send` frames (directed messages) per second allowed per sending user on this node.
    pub send_rate_per_sec: u32,
    /// Burst of `send` frames.
    pub send_rate_burst: u32,
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
            send_rate_per_sec: 20,
            send_rate_burst: 40,
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
