//! Opening one WebSocket connection to the gateway and waiting for its `welcome`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::{ClientFrame, ServerFrame, Welcome};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::error::ConnectError;

/// One open WebSocket connection.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `url` with `token` as a bearer credential and waits for `welcome`, all within
/// `timeout`.
pub(crate) async fn open(
    url: &str,
    token: &str,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(Ws, Welcome), ConnectError> {
    tokio::time::timeout(timeout, open_inner(url, token, tls))
        .await
        .map_err(|_| ConnectError::Timeout)?
}

async fn open_inner(
    url: &str,
    token: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(Ws, Welcome), ConnectError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| ConnectError::InvalidUrl(e.to_string()))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ConnectError::InvalidToken)?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    let connector = tls.map(Connector::Rustls);
    let (mut ws, _response) =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector)
            .await
            .map_err(upgrade_error)?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return match serde_json::from_str::<ServerFrame>(&text) {
                    Ok(ServerFrame::Welcome(welcome)) => Ok((ws, welcome)),
                    Ok(other) => Err(ConnectError::Protocol(format!(
                        "expected welcome, got {}",
                        frame_type(&other)
                    ))),
                    Err(e) => Err(ConnectError::Protocol(format!("unreadable frame: {e}"))),
                };
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = close_parts(frame.as_ref());
                return Err(ConnectError::Closed { code, reason });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ConnectError::Transport(e.to_string())),
            None => {
                return Err(ConnectError::Closed {
                    code: None,
                    reason: "connection ended before welcome".into(),
                })
            }
        }
    }
}

fn upgrade_error(e: WsError) -> ConnectError {
    match e {
        WsError::Http(response) => {
            let status = response.status().as_u16();
            if status == 401 || status == 403 {
                ConnectError::Unauthorized { status }
            } else {
                ConnectError::Rejected { status }
            }
        }
        WsError::Url(e) => ConnectError::InvalidUrl(e.to_string()),
        other => ConnectError::Transport(other.to_string()),
    }
}

/// The code and reason of a close frame, if it had one.
pub(crate) fn close_parts(frame: Option<&CloseFrame>) -> (Option<u16>, String) {
    match frame {
        Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
        None => (None, "closed without a code".into()),
    }
}

/// Writes one client frame as a text message.
pub(crate) async fn write(ws: &mut Ws, frame: &ClientFrame) -> Result<(), WsError> {
    // Serialising these plain structs cannot fail; if it ever did, the frame is skipped
    // rather than tearing the connection down.
    match serde_json::to_string(frame) {
        Ok(text) => ws.send(Message::text(text)).await,
        Err(e) => {
            tracing::error!(error = %e, "could not serialise a client frame");
            Ok(())
        }
    }
}

/// The wire name of a server frame, for logs and errors.
pub(crate) fn frame_type(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Welcome(_) => "welcome",
        ServerFrame::Joined(_) => "joined",
        ServerFrame::Left(_) => "left",
        ServerFrame::Event(_) => "event",
        ServerFrame::Presence(_) => "presence",
        ServerFrame::AuthorityChanged(_) => "authority_changed",
        ServerFrame::Ack(_) => "ack",
        ServerFrame::Message(_) => "message",
        ServerFrame::Refreshed(_) => "refreshed",
        ServerFrame::Reconnected(_) => "reconnected",
        ServerFrame::ReconnectionFailed(_) => "reconnection_failed",
        ServerFrame::Error(_) => "error",
        ServerFrame::Pong(_) => "pong",
        ServerFrame::ServerShutdown(_) => "server_shutdown",
    }
}
