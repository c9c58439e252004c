//! Client and server frames.
//!
//! Every frame is one object with a `type` field, in JSON or MessagePack (see [`crate::msgpack`]).
//! Optional fields are omitted when empty.
//! Room-scoped server frames carry `room`, `seq` (per room, gapless, increasing) and `epoch`
//! (changes when the room's stream was lost and restarted, so positions from another epoch are
//! not comparable).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codes::ErrorCode;
use crate::{MAX_ID_LEN, MAX_ROOM_LEN};

/// Longest token accepted in `auth`, `refresh`, `join` or `reconnect`, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest user id accepted as a `send` target, in bytes.
pub const MAX_USER_LEN: usize = 256;

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Authenticates a connection that did not carry a token in its upgrade request.
    Auth(Auth),
    /// Joins a room.
    Join(Join),
    /// Leaves a room.
    Leave(RoomRequest),
    /// Publishes `data` to every member of a room.
    Publish(Publish),
    /// Sends `data` directly to one user.
    Send(Send),
    /// Asks for the room's authority role.
    ClaimAuthority(RoomRequest),
    /// Gives up the room's authority role.
    ReleaseAuthority(RoomRequest),
    /// Resumes a room membership after a dropped connection.
    Reconnect(Reconnect),
    /// Replaces the session's token before it expires.
    Refresh(Refresh),
    /// Application-level ping, answered by `pong`.
    Ping(Ping),
    /// Replaces the room's state (the member holding authority only).
    SetState(SetState),
}

impl ClientFrame {
    /// Every value of `type` a client may send.
    pub const TYPES: [&'static str; 11] = [
        "auth",
        "join",
        "leave",
        "publish",
        "send",
        "claim_authority",
        "release_authority",
        "reconnect",
        "refresh",
        "ping",
        "set_state",
    ];

    /// The client-chosen `id` of the frame, if any.
    pub fn id(&self) -> Option<&str> {
        match self {
            ClientFrame::Auth(_) => None,
            ClientFrame::Join(f) => f.id.as_deref(),
            ClientFrame::Leave(f)
            | ClientFrame::ClaimAuthority(f)
            | ClientFrame::ReleaseAuthority(f) => f.id.as_deref(),
            ClientFrame::Publish(f) => f.id.as_deref(),
            ClientFrame::Send(f) => f.id.as_deref(),
            ClientFrame::Reconnect(f) => f.id.as_deref(),
            ClientFrame::Refresh(f) => f.id.as_deref(),
            ClientFrame::Ping(f) => f.id.as_deref(),
            ClientFrame::SetState(f) => f.id.as_deref(),
        }
    }

    /// Checks the bounds that serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(id) = self.id() {
            check_len("id", id, MAX_ID_LEN)?;
        }
        match self {
            ClientFrame::Auth(f) => check_len("token", &f.token, MAX_TOKEN_LEN),
            ClientFrame::Join(f) => {
                check_room(&f.room)?;
                match &f.token {
                    Some(t) => check_len("token", t, MAX_TOKEN_LEN),
                    None => Ok(()),
                }
            }
            ClientFrame::Leave(f)
            | ClientFrame::ClaimAuthority(f)
            | ClientFrame::ReleaseAuthority(f) => check_room(&f.room),
            ClientFrame::Publish(f) => {
                check_room(&f.room)?;
                if let Some(tp) = &f.traceparent {
                    check_len("traceparent", tp, 128)?;
                }
                Ok(())
            }
            ClientFrame::Send(f) => check_len("to", &f.to, MAX_USER_LEN),
            ClientFrame::Reconnect(f) => {
                check_room(&f.room)?;
                check_len("player_id", &f.player_id, MAX_ID_LEN)?;
                check_len("token", &f.token, MAX_TOKEN_LEN)?;
                if let Some(e) = &f.epoch {
                    check_len("epoch", e, MAX_ID_LEN)?;
                }
                match &f.join_token {
                    Some(t) => check_len("join_token", t, MAX_TOKEN_LEN),
                    None => Ok(()),
                }
            }
            ClientFrame::Refresh(f) => check_len("token", &f.token, MAX_TOKEN_LEN),
            ClientFrame::Ping(_) => Ok(()),
            ClientFrame::SetState(f) => check_room(&f.room),
        }
    }
}

/// Checks a room name: like [`check_len`], and no control characters (a room name is used in
/// keys, channel names and logs, where a newline or NUL would be read as a separator).
fn check_room(value: &str) -> Result<(), String> {
    check_len("room", value, MAX_ROOM_LEN)?;
    if value.chars().any(char::is_control) {
        return Err("field `room` must not contain control characters".into());
    }
    Ok(())
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("field `{field}` must not be empty"));
    }
    if value.len() > max {
        return Err(format!("field `{field}` is longer than {max} bytes"));
    }
    Ok(())
}

/// `auth`: the token, when it was not in the upgrade request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// A signed token (HS256 JWT with `sub` and `exp`).
    pub token: String,
}

/// `join`: enter a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// The room's name.
    pub room: String,
    /// A join token for this room: a JWT with `sub` (the session's user) and `room` (exactly
    /// this room), signed like connection tokens. Needed only where the room's join policy is
    /// `token` and the connection token's `rooms` claim does not cover the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Client-chosen id echoed in the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A frame that names one room: `leave`, `claim_authority`, `release_authority`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRequest {
    /// The room's name.
    pub room: String,
    /// Client-chosen id echoed in the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `publish`: data for every member of a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    /// The room's name; the sender must be a member.
    pub room: String,
    /// Any JSON value; Holdfast never inspects it.
    pub data: Value,
    /// Client message id: echoed in `ack`, and remembered so a retried publish is delivered once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// W3C trace context, carried into the `event` envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// `send`: data for one user, wherever they are connected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Send {
    /// The target user's id.
    pub to: String,
    /// Any JSON value.
    pub data: Value,
    /// Client message id echoed in `ack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `reconnect`: resume a room membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconnect {
    /// The room to resume.
    pub room: String,
    /// The player id the member had in the room.
    pub player_id: String,
    /// The latest reconnection token received for this membership.
    pub token: String,
    /// The highest room `seq` the client has processed.
    pub last_sequence: u64,
    /// The stream epoch `last_sequence` belongs to (the `epoch` of the last room frame the
    /// client processed). Lets the server tell a position of an older incarnation of the
    /// stream (rolled back or restarted) from one of the current stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The join token the membership was admitted with, when it was (see [`Join::token`]): the
    /// room's join policy is checked again on resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    /// Client-chosen id echoed in the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `refresh`: a new token for the same user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refresh {
    /// The new token.
    pub token: String,
    /// Client-chosen id echoed in `refreshed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `ping`: an application-level liveness probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Client-chosen id echoed in `pong`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `set_state`: replaces the room's state; only the member holding authority may.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetState {
    /// The room's name; the sender must be a member holding authority.
    pub room: String,
    /// Any JSON value (raw bytes in MessagePack), bounded by the room's `state_bytes`.
    pub state: Value,
    /// Client message id, echoed in `ack` (with the `state_set`'s `seq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The connection is authenticated.
    Welcome(Welcome),
    /// The session joined a room.
    Joined(Joined),
    /// The session left a room.
    Left(Left),
    /// A room event published by a member.
    Event(Event),
    /// Members joined, dropped, came back or left (coalesced; not part of the room's seq).
    Presence(Presence),
    /// The room's authority changed hands (or was released).
    AuthorityChanged(AuthorityChanged),
    /// A client frame with an `id` was applied.
    Ack(Ack),
    /// Data sent directly to this user by another user.
    Message(Direct),
    /// The session's token was replaced.
    Refreshed(Refreshed),
    /// A `reconnect` succeeded.
    Reconnected(Reconnected),
    /// A `reconnect` failed.
    ReconnectionFailed(ReconnectionFailed),
    /// A client frame was refused; the session continues.
    Error(ErrorFrame),
    /// Reply to `ping`.
    Pong(Ping),
    /// The node is draining; a close 1001 follows.
    ServerShutdown(ServerShutdown),
    /// The room's state was replaced (a room message, with its own `seq`).
    StateSet(StateSet),
}

impl ServerFrame {
    /// The room sequence number of a room-scoped frame.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ServerFrame::Event(e) => Some(e.seq),
            ServerFrame::AuthorityChanged(a) => Some(a.seq),
            ServerFrame::Joined(j) => Some(j.seq),
            ServerFrame::Left(l) => Some(l.seq),
            ServerFrame::StateSet(s) => Some(s.seq),
            _ => None,
        }
    }

    /// The room of a room-scoped frame.
    pub fn room(&self) -> Option<&str> {
        match self {
            ServerFrame::Event(e) => Some(&e.room),
            ServerFrame::Presence(p) => Some(&p.room),
            ServerFrame::AuthorityChanged(a) => Some(&a.room),
            ServerFrame::Joined(j) => Some(&j.room),
            ServerFrame::Left(l) => Some(&l.room),
            ServerFrame::Reconnected(r) => Some(&r.room),
            ServerFrame::ReconnectionFailed(r) => Some(&r.room),
            ServerFrame::StateSet(s) => Some(&s.room),
            _ => None,
        }
    }
}

/// `welcome`: the session's identity and timing parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Protocol version.
    pub protocol: u32,
    /// The authenticated user (the token's `sub`).
    pub user_id: String,
    /// This connection's id, unique per node.
    pub session_id: String,
    /// The node holding the connection.
    pub node_id: String,
    /// How often the server sends WebSocket pings.
    pub ping_interval_ms: u64,
    /// How long the server waits for a pong before closing with 4005.
    pub pong_timeout_ms: u64,
    /// Largest message the server accepts, in bytes.
    pub max_message_bytes: usize,
    /// When the token expires (Unix seconds); send `refresh` before then.
    pub expires_at: u64,
}

/// One member of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's id within the room; kept across reconnects.
    pub player_id: String,
    /// The member's user id.
    pub user_id: String,
    /// Whether the member is connected.
    pub status: MemberStatus,
}

/// Whether a member is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Connected.
    Online,
    /// Dropped, within its reconnection window.
    Away,
}

/// `joined`: the reply to `join`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Joined {
    /// The room.
    pub room: String,
    /// This member's id in the room.
    pub player_id: String,
    /// Every member, this one included (absent when the room's presence mode is not `full`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
    /// Members, connected or away, this one included.
    #[serde(default)]
    pub member_count: u64,
    /// The player id holding authority, if any.
    pub authority: Option<String>,
    /// The room's current sequence number: the member receives every room message after it.
    pub seq: u64,
    /// The room's stream epoch.
    pub epoch: String,
    /// Token to resume this membership after a drop (absent when reconnection is disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnection_token: Option<String>,
    /// The room's latest state, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
    /// The `seq` of the `state_set` that set `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_seq: Option<u64>,
    /// The room messages after `state_seq` up to `seq`, in order, as first sent (the
    /// incremental changes to apply on top of `state`); empty without a state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<ServerFrame>,
    /// Messages after `state_seq` the room no longer holds (`events` then starts after `to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Gap>,
    /// The `id` of the `join` frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `left`: the reply to `leave`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    /// The room.
    pub room: String,
    /// The room's sequence number when the member left.
    pub seq: u64,
    /// The room's stream epoch.
    pub epoch: String,
    /// The `id` of the `leave` frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `event`: data published to a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The room.
    pub room: String,
    /// Position in the room's stream.
    pub seq: u64,
    /// The room's stream epoch.
    pub epoch: String,
    /// Server time of publication, Unix milliseconds.
    pub ts: u64,
    /// The publisher's player id.
    pub from: String,
    /// The publisher's user id.
    pub user_id: String,
    /// The published data.
    pub data: Value,
    /// The publisher's client message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// W3C trace context given by the publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// `presence`: changes of the room's membership since the last `presence` (or since this
/// member's `joined`/`reconnected`), coalesced. Presence is state, not part of the room's
/// stream: it carries no `seq`, is not replayed, and a resuming member gets the current list in
/// `reconnected` instead. Apply each change as an idempotent update of the member list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The room.
    pub room: String,
    /// The changes, oldest first; at most one per player (its latest status). Empty when the
    /// room's presence mode is `count`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<MemberUpdate>,
    /// Members (connected or away) after these changes.
    pub count: u64,
}

/// One member's new status in a `presence` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberUpdate {
    /// The member.
    pub player_id: String,
    /// Its user id.
    pub user_id: String,
    /// `online` (joined, or came back), `away` (dropped, may resume) or `left` (gone for good).
    pub status: PresenceStatus,
}

/// A member's status in a [`MemberUpdate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// Joined, or came back.
    Online,
    /// Dropped, within its reconnection window.
    Away,
    /// Left, or its reconnection window expired.
    Left,
}

/// `authority_changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorityChanged {
    /// The room.
    pub room: String,
    /// Position in the room's stream.
    pub seq: u64,
    /// The room's stream epoch.
    pub epoch: String,
    /// The new holder, or none when authority was released with nobody to take it.
    pub authority: Option<String>,
}

/// `ack`: a client frame with an `id` was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The frame's `id`.
    pub id: String,
    /// For `publish`: the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// For `publish`: the event's sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `message`: data sent directly to this user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Direct {
    /// The sender's user id.
    pub from: String,
    /// Server time, Unix milliseconds.
    pub ts: u64,
    /// The data.
    pub data: Value,
}

/// `refreshed`: the reply to `refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refreshed {
    /// The new expiry, Unix seconds.
    pub expires_at: u64,
    /// The `id` of the `refresh` frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The sequence range a reconnecting client missed and can no longer be replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// First lost sequence number (inclusive).
    pub from: u64,
    /// Last lost sequence number (inclusive).
    pub to: u64,
    /// The epoch these numbers belong to.
    pub epoch: String,
}

/// `reconnected`: the reply to a successful `reconnect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reconnected {
    /// The room.
    pub room: String,
    /// The member's (unchanged) player id.
    pub player_id: String,
    /// Missed room messages (events and authority changes), in `seq` order, as first sent.
    pub events: Vec<ServerFrame>,
    /// True when nothing was lost.
    pub recovered: bool,
    /// The lost range, when `recovered` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Gap>,
    /// Messages the client processed that the room's stream no longer has: `from..=to` of
    /// the epoch the client sent (`epoch` in `reconnect`), rolled back when the broker came
    /// back with older data. The current epoch continues the stream after `from - 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<Gap>,
    /// Every member now (absent when the room's presence mode is not `full`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
    /// Members, connected or away, now.
    #[serde(default)]
    pub member_count: u64,
    /// The authority now.
    pub authority: Option<String>,
    /// The room's sequence number now: live messages continue after it.
    pub seq: u64,
    /// The room's stream epoch now.
    pub epoch: String,
    /// The next reconnection token (the one used is spent).
    pub reconnection_token: String,
    /// `snapshot` when the member missed more than the room's buffer holds and `events` starts
    /// with the room's latest `state_set` instead: the state covers every message before it
    /// (reported in `gap`), and `recovered` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_from: Option<RecoveredFrom>,
    /// The `id` of the `reconnect` frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// How a resume that missed more than the buffer recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveredFrom {
    /// From the room's state snapshot and the events after it.
    Snapshot,
}

/// `state_set`: the room's state was replaced. A room message: sequenced, kept for replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSet {
    /// The room.
    pub room: String,
    /// Position in the room's stream.
    pub seq: u64,
    /// The room's stream epoch.
    pub epoch: String,
    /// The new state.
    pub state: Value,
}

/// `reconnection_failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconnectionFailed {
    /// The room named in `reconnect`.
    pub room: String,
    /// Why.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// The `id` of the `reconnect` frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `error`: a client frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// The `id` of the offending frame, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `server_shutdown`: the node is draining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerShutdown {
    /// Why (for logs).
    pub reason: String,
    /// Suggested delay before reconnecting (to any node), in milliseconds; clients add jitter.
    pub reconnect_after_ms: u64,
}
