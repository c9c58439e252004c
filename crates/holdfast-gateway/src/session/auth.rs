//! In-band authentication: a connection that brought no token with its upgrade must send
//! `auth` first, within `auth.timeout_ms`.

use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, Stream, StreamExt};
use holdfast_protocol::{parse_client_message, ClientFrame, CloseCode, Encoding, ErrorCode};

use super::core::error_frame;
use super::ws::{close_with, linger, read_close_code, write_now};
use crate::auth::{AuthError, Claims};
use crate::node::Node;

/// Frames tolerated before `auth` on a connection that must authenticate in-band.
const MAX_PRE_AUTH_FRAMES: u32 = 8;

/// Waits for an `auth` frame within `auth.timeout_ms`. On failure the socket is already
/// closed and the close code is returned.
pub(super) async fn authenticate<S, E>(
    node: &Node,
    ws: &mut S,
    encoding: Encoding,
) -> Result<Claims, u16>
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
    E: std::error::Error + 'static,
{
    let inner = &node.inner;
    let deadline = tokio::time::sleep(Duration::from_millis(inner.config.auth.timeout_ms));
    tokio::pin!(deadline);
    let mut frames = 0u32;
    loop {
        tokio::select! {
            _ = &mut deadline => {
                close_with(ws, CloseCode::AuthTimeout).await;
                return Err(CloseCode::AuthTimeout.code());
            }
            _ = inner.drain.token().cancelled() => {
                close_with(ws, CloseCode::GoingAway).await;
                return Err(CloseCode::GoingAway.code());
            }
            msg = ws.next() => {
                let parsed = match msg {
                    Some(Ok(Message::Text(t))) if encoding == Encoding::Json => {
                        parse_client_message(Encoding::Json, t.as_bytes())
                    }
                    Some(Ok(Message::Binary(b))) if encoding == Encoding::MsgPack => {
                        parse_client_message(Encoding::MsgPack, &b)
                    }
                    Some(Ok(Message::Close(f))) => return Err(f.map(|f| f.code).unwrap_or(1005)),
                    // A message of the other kind than the negotiated encoding.
                    Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                        parse_client_message(encoding, b"\xff")
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        // As in the session loop: a broken or oversized frame is answered
                        // with its close code.
                        let Some(code) = read_close_code(&e) else { return Err(1006) };
                        close_with(ws, code).await;
                        linger(ws).await;
                        return Err(code.code());
                    }
                    None => return Err(1006),
                };
                inner.metrics.messages_received.inc();
                frames += 1;
                let reply = match parsed {
                    Ok(ClientFrame::Auth(a)) => match inner.verifier.verify(&a.token).await {
                        Ok(claims) => {
                            if let Err(f) = crate::permissions::check_connect(node, &claims).await {
                                write_now(ws, encoding, &error_frame(ErrorCode::Forbidden, f.0, None)).await;
                                close_with(ws, CloseCode::AuthFailed).await;
                                return Err(CloseCode::AuthFailed.code());
                            }
                            return Ok(claims);
                        }
                        Err(AuthError::Expired) => {
                            write_now(ws, encoding, &error_frame(ErrorCode::TokenExpired, "token expired", None)).await;
                            close_with(ws, CloseCode::TokenExpired).await;
                            return Err(CloseCode::TokenExpired.code());
                        }
                        Err(AuthError::Invalid) => {
                            write_now(ws, encoding, &error_frame(ErrorCode::AuthFailed, "invalid token", None)).await;
                            close_with(ws, CloseCode::AuthFailed).await;
                            return Err(CloseCode::AuthFailed.code());
                        }
                    },
                    Ok(other) => error_frame(
                        ErrorCode::NotAuthenticated,
                        "send `auth` first",
                        other.id().map(str::to_owned),
                    ),
                    Err(e) => error_frame(e.code, e.message, e.id),
                };
                write_now(ws, encoding, &reply).await;
                if frames >= MAX_PRE_AUTH_FRAMES {
                    close_with(ws, CloseCode::PolicyViolation).await;
                    return Err(CloseCode::PolicyViolation.code());
                }
            }
        }
    }
}
