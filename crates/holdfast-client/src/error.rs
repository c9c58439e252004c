//! The client's errors: one enum per operation, plus the terminal reason the client stopped.
//!
//! [`ConnectError`] answers [`crate::Client::connect`]; [`RequestError`] answers a request made
//! through the handle (`join`, `publish`, ...); [`CloseError`] says why the client stopped for
//! good and is carried by [`crate::ClientEvent::Closed`]. Errors are `Clone` so the same terminal
//! reason can be handed to every pending request and to the event stream.

use holdfast_protocol::{CloseCode, ErrorCode};

/// Why the client stopped and will not reconnect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseError {
    /// The application called [`crate::Client::close`] or dropped every handle.
    #[error("the client was closed by the application")]
    ClosedByApplication,
    /// The gateway refused the token at the WebSocket upgrade.
    #[error("the gateway refused the token (HTTP {status})")]
    Unauthorized {
        /// The HTTP status of the refused upgrade (401, or 403).
        status: u16,
    },
    /// The gateway closed the session with a code after which reconnecting does not help
    /// (for example 4000, another connection of the same user replaced this one).
    #[error("the gateway closed the session for good with code {code} ({reason})")]
    Terminal {
        /// The WebSocket close code.
        code: u16,
        /// The close frame's reason text.
        reason: String,
    },
    /// The gateway's URL cannot be used.
    #[error("invalid gateway URL: {0}")]
    InvalidUrl(String),
}

impl CloseError {
    /// The Holdfast close code behind this error, when there is one.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            CloseError::Terminal { code, .. } => CloseCode::from_code(*code),
            _ => None,
        }
    }
}

/// Why the first connection could not be established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The gateway's URL cannot be used.
    #[error("invalid gateway URL: {0}")]
    InvalidUrl(String),
    /// The token cannot be put in an HTTP header.
    #[error("the token contains characters not allowed in an HTTP header")]
    InvalidToken,
    /// The gateway refused the token at the upgrade.
    #[error("the gateway refused the token (HTTP {status})")]
    Unauthorized {
        /// 401 or 403.
        status: u16,
    },
    /// The gateway answered the upgrade with another HTTP status (for example 503 while
    /// draining).
    #[error("the gateway refused the upgrade (HTTP {status})")]
    Rejected {
        /// The HTTP status.
        status: u16,
    },
    /// The TCP connection or the WebSocket handshake failed.
    #[error("transport error: {0}")]
    Transport(String),
    /// The connection closed before `welcome`.
    #[error("the gateway closed the connection before welcome (code {code:?}, {reason})")]
    Closed {
        /// The close code, when a close frame arrived.
        code: Option<u16>,
        /// The close frame's reason text, or a description of the drop.
        reason: String,
    },
    /// The first frame was not `welcome`.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No `welcome` arrived within the connect timeout.
    #[error("timed out waiting for welcome")]
    Timeout,
}

impl ConnectError {
    /// The terminal reason behind this error when retrying cannot help, `None` when a later
    /// attempt may succeed.
    pub fn terminal(&self) -> Option<CloseError> {
        match self {
            ConnectError::InvalidUrl(url) => Some(CloseError::InvalidUrl(url.clone())),
            ConnectError::InvalidToken => Some(CloseError::Unauthorized { status: 401 }),
            ConnectError::Unauthorized { status } => {
                Some(CloseError::Unauthorized { status: *status })
            }
            ConnectError::Closed {
                code: Some(code),
                reason,
            } if CloseCode::from_code(*code).is_some_and(|c| !c.should_reconnect()) => {
                Some(CloseError::Terminal {
                    code: *code,
                    reason: reason.clone(),
                })
            }
            _ => None,
        }
    }
}

/// Why a request made through the handle failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The gateway refused the request with an `error` frame.
    #[error("the gateway refused the request: {code}: {message}")]
    Server {
        /// The stable error code.
        code: ErrorCode,
        /// The gateway's explanation.
        message: String,
    },
    /// The gateway refused the request with `forbidden`: the user may not join the room (or
    /// resume it), publish there, or message that user. The session continues.
    #[error("forbidden: {message}")]
    Forbidden {
        /// The gateway's explanation.
        message: String,
    },
    /// The connection dropped after the request was sent and before its reply; the request
    /// may or may not have been applied. Publishes never fail this way: they are resent.
    #[error("the connection dropped before the reply; the request may have been applied")]
    ConnectionLost,
    /// The room of a pending publish could not be resumed after a reconnect.
    #[error("the room could not be resumed: {code}: {message}")]
    RoomLost {
        /// The code of `reconnection_failed`.
        code: ErrorCode,
        /// The gateway's explanation.
        message: String,
    },
    /// The gateway's reply did not have the expected shape.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The client has stopped.
    #[error("the client is closed: {0}")]
    Closed(CloseError),
}

impl RequestError {
    /// The error for an `error` frame: [`RequestError::Forbidden`] for `forbidden`,
    /// [`RequestError::Server`] otherwise.
    pub fn from_server(code: ErrorCode, message: String) -> RequestError {
        if code == ErrorCode::Forbidden {
            RequestError::Forbidden { message }
        } else {
            RequestError::Server { code, message }
        }
    }

    /// Whether the gateway refused the operation as not permitted (including a room that could
    /// not be resumed because the user may no longer join it).
    pub fn is_forbidden(&self) -> bool {
        match self {
            RequestError::Forbidden { .. } => true,
            RequestError::RoomLost { code, .. } => *code == ErrorCode::Forbidden,
            _ => false,
        }
    }

    /// The stable error code behind this error, when the gateway sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RequestError::Forbidden { .. } => Some(ErrorCode::Forbidden),
            RequestError::Server { code, .. } | RequestError::RoomLost { code, .. } => Some(*code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hopeless_connect_errors_are_terminal() {
        let closed = |code| ConnectError::Closed {
            code: Some(code),
            reason: "r".into(),
        };
        assert_eq!(
            ConnectError::Unauthorized { status: 401 }.terminal(),
            Some(CloseError::Unauthorized { status: 401 })
        );
        assert_eq!(
            closed(4000).terminal().and_then(|e| e.close_code()),
            Some(CloseCode::Replaced)
        );
        assert!(closed(4006).terminal().is_some());
        assert!(closed(1001).terminal().is_none(), "drain: reconnect");
        assert!(
            closed(4001).terminal().is_none(),
            "slow consumer: reconnect"
        );
        assert!(
            closed(4999).terminal().is_none(),
            "unknown codes: reconnect"
        );
        assert!(ConnectError::Rejected { status: 503 }.terminal().is_none());
        assert!(ConnectError::Timeout.terminal().is_none());
        assert!(ConnectError::Transport("reset".into()).terminal().is_none());
    }
}
