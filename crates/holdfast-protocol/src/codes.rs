//! Stable error codes and close codes.
//!
//! Both lists are part of the public protocol: a code is never renamed or reused for another
//! meaning. docs/PROTOCOL.md documents each one, and the TypeScript client's constants are
//! generated from [`ErrorCode::ALL`] and [`CloseCode::ALL`] so they cannot drift.

use serde::{Deserialize, Serialize};

/// The `code` of an `error` (or `reconnection_failed`) server frame.
///
/// An error answers one client frame; the session continues after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON.
    BadJson,
    /// The frame's `type` is not one this server knows.
    UnknownType,
    /// The frame is JSON with a known type, but a field is missing, mistyped or out of range.
    InvalidFrame,
    /// A frame other than `auth` arrived before the connection was authenticated.
    NotAuthenticated,
    /// `auth` arrived on a connection that is already authenticated.
    AlreadyAuthenticated,
    /// The token is malformed, badly signed, or lacks `sub`/`exp`.
    AuthFailed,
    /// The token's `exp` is in the past.
    TokenExpired,
    /// `refresh` carried a token for a different user than the session's.
    TokenUserMismatch,
    /// The frame names a room this session has not joined.
    NotInRoom,
    /// `join` names a room this session is already in.
    AlreadyInRoom,
    /// `join` would exceed `limits.max_rooms_per_session`.
    TooManyRooms,
    /// `join` would exceed `limits.max_members_per_room`.
    RoomFull,
    /// The inbound rate limit was exceeded; the frame was dropped.
    RateLimited,
    /// `claim_authority` while another member holds authority.
    AuthorityTaken,
    /// `release_authority` by a member that does not hold authority.
    NotAuthority,
    /// `send` to a user with no live session.
    UserOffline,
    /// The node is draining and accepts no new joins.
    Draining,
    /// The reconnection token is unknown, already used, or bound to another user, room or player.
    ReconnectionTokenInvalid,
    /// The reconnection window of the token has passed.
    ReconnectionExpired,
    /// The reconnection could not complete for another reason (room gone, reconnection disabled,
    /// member still connected elsewhere is not one of them: that one wins).
    ReconnectionFailed,
    /// The broker could not accept the operation (for example Redis is unreachable); retry later.
    BrokerUnavailable,
    /// An unexpected server-side failure; the frame may be retried.
    Internal,
    /// The session's user may not do this: join (or resume) the room, or message the user. The
    /// same answer whether a `send` target is online or not.
    Forbidden,
}

impl ErrorCode {
    /// Every error code, in documentation order.
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::InvalidFrame,
        ErrorCode::NotAuthenticated,
        ErrorCode::AlreadyAuthenticated,
        ErrorCode::AuthFailed,
        ErrorCode::TokenExpired,
        ErrorCode::TokenUserMismatch,
        ErrorCode::NotInRoom,
        ErrorCode::AlreadyInRoom,
        ErrorCode::TooManyRooms,
        ErrorCode::RoomFull,
        ErrorCode::RateLimited,
        ErrorCode::AuthorityTaken,
        ErrorCode::NotAuthority,
        ErrorCode::UserOffline,
        ErrorCode::Draining,
        ErrorCode::ReconnectionTokenInvalid,
        ErrorCode::ReconnectionExpired,
        ErrorCode::ReconnectionFailed,
        ErrorCode::BrokerUnavailable,
        ErrorCode::Internal,
        ErrorCode::Forbidden,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidFrame => "invalid_frame",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::AlreadyAuthenticated => "already_authenticated",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenUserMismatch => "token_user_mismatch",
            ErrorCode::NotInRoom => "not_in_room",
            ErrorCode::AlreadyInRoom => "already_in_room",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::AuthorityTaken => "authority_taken",
            ErrorCode::NotAuthority => "not_authority",
            ErrorCode::UserOffline => "user_offline",
            ErrorCode::Draining => "draining",
            ErrorCode::ReconnectionTokenInvalid => "reconnection_token_invalid",
            ErrorCode::ReconnectionExpired => "reconnection_expired",
            ErrorCode::ReconnectionFailed => "reconnection_failed",
            ErrorCode::BrokerUnavailable => "broker_unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Forbidden => "forbidden",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A WebSocket close code sent by Holdfast.
///
/// Ranges: 1000-1011 are the standard codes of RFC 6455; 4000-4099 are Holdfast's own.
/// Within Holdfast's range, [`CloseCode::should_reconnect`] tells a client whether to reconnect
/// (after backoff) or to stop and surface the reason to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// 1000: the session ended normally (for example the client asked to close).
    Normal = 1000,
    /// 1001: the node is draining; reconnect (to any node) after the hint in `server_shutdown`.
    GoingAway = 1001,
    /// 1002: the peer broke the WebSocket protocol itself.
    ProtocolError = 1002,
    /// 1007: a text message that is not valid UTF-8.
    InvalidPayload = 1007,
    /// 1008: policy violation (for example a hostile stream of malformed frames).
    PolicyViolation = 1008,
    /// 1009: a message exceeded `limits.max_message_bytes`.
    MessageTooBig = 1009,
    /// 1011: an unexpected server error ended the session.
    InternalError = 1011,
    /// 4000: a newer connection of the same user replaced this one. Terminal.
    Replaced = 4000,
    /// 4001: the session's outbound queue overflowed (slow consumer). Reconnect and resume.
    SlowConsumer = 4001,
    /// 4002: the session's token expired without a `refresh`. Reconnect with a new token.
    TokenExpired = 4002,
    /// 4003: the client kept exceeding the inbound rate limit. Reconnect after backoff.
    RateLimited = 4003,
    /// 4004: no `auth` frame arrived within `auth.timeout_ms`.
    AuthTimeout = 4004,
    /// 4005: the client did not answer pings within `heartbeat.pong_timeout_ms`.
    HeartbeatTimeout = 4005,
    /// 4006: the in-band `auth` frame carried an invalid token. Terminal.
    AuthFailed = 4006,
    /// 4007: the application's backend closed the session (`POST /api/v1/disconnect`).
    /// Terminal: the backend decides when the user may come back.
    DisconnectedByServer = 4007,
}

impl CloseCode {
    /// Every close code, in documentation order.
    pub const ALL: [CloseCode; 15] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::PolicyViolation,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::Replaced,
        CloseCode::SlowConsumer,
        CloseCode::TokenExpired,
        CloseCode::RateLimited,
        CloseCode::AuthTimeout,
        CloseCode::HeartbeatTimeout,
        CloseCode::AuthFailed,
        CloseCode::DisconnectedByServer,
    ];

    /// The numeric code sent in the close frame.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// Maps a numeric code back to a Holdfast close code.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// A short machine-readable reason, sent as the close frame's reason text.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going_away",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::InvalidPayload => "invalid_payload",
            CloseCode::PolicyViolation => "policy_violation",
            CloseCode::MessageTooBig => "message_too_big",
            CloseCode::InternalError => "internal_error",
            CloseCode::Replaced => "replaced",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::RateLimited => "rate_limited",
            CloseCode::AuthTimeout => "auth_timeout",
            CloseCode::HeartbeatTimeout => "heartbeat_timeout",
            CloseCode::AuthFailed => "auth_failed",
            CloseCode::DisconnectedByServer => "disconnected_by_server",
        }
    }

    /// Whether a client should reconnect (with backoff) after this close.
    ///
    /// `false` means the condition will not go away by itself: another connection took over
    /// (`Replaced`), the credentials are bad (`AuthFailed`, `PolicyViolation`), the token must be
    /// renewed first (`TokenExpired`), the client sends what the server refuses
    /// (`MessageTooBig`, `ProtocolError`), or the application's backend removed the user
    /// (`DisconnectedByServer`: reconnecting by itself would undo a kick or a ban).
    pub fn should_reconnect(self) -> bool {
        match self {
            CloseCode::GoingAway
            | CloseCode::InternalError
            | CloseCode::SlowConsumer
            | CloseCode::RateLimited
            | CloseCode::AuthTimeout
            | CloseCode::HeartbeatTimeout => true,
            CloseCode::Normal
            | CloseCode::ProtocolError
            | CloseCode::InvalidPayload
            | CloseCode::PolicyViolation
            | CloseCode::MessageTooBig
            | CloseCode::Replaced
            | CloseCode::TokenExpired
            | CloseCode::AuthFailed
            | CloseCode::DisconnectedByServer => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_round_trip_and_live_in_their_ranges() {
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
            let n = c.code();
            assert!(
                (1000..=1011).contains(&n) || (4000..=4099).contains(&n),
                "{n}"
            );
        }
        assert_eq!(CloseCode::from_code(4999), None);
    }

    #[test]
    fn error_codes_serialise_as_their_wire_names() {
        for c in ErrorCode::ALL {
            let json = serde_json::to_string(&c).expect("serialise");
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
    }

    #[test]
    fn terminal_codes_do_not_reconnect() {
        assert!(!CloseCode::Replaced.should_reconnect());
        assert!(!CloseCode::AuthFailed.should_reconnect());
        assert!(!CloseCode::DisconnectedByServer.should_reconnect());
        assert!(CloseCode::GoingAway.should_reconnect());
        assert!(CloseCode::SlowConsumer.should_reconnect());
    }
}
