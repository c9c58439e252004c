//! Opening one WebSocket connection to the gateway and waiting for its `welcome`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::{ClientFrame, Encoding, ServerFrame, Welcome};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
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
    encoding: Encoding,
) -> Result<(Ws, Welcome), ConnectError> {
    tokio::time::timeout(timeout, open_inner(url, token, tls, encoding))
        .await
        .map_err(|_| ConnectError::Timeout)?
}

async fn open_inner(
    url: &str,
    token: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    encoding: Encoding,
) -> Result<(Ws, Welcome), ConnectError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| ConnectError::InvalidUrl(e.to_string()))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ConnectError::InvalidToken)?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    if encoding != Encoding::Json {
        request.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(encoding.subprotocol()),
        );
    }
    let connector = tls.map(Connector::Rustls);
    let (mut ws, response) =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector)
            .await
            .map_err(upgrade_error)?;
    if encoding != Encoding::Json {
        let agreed = response
            .headers()
            .get(SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok());
        if agreed != Some(encoding.subprotocol()) {
            return Err(ConnectError::Protocol(format!(
                "the gateway does not speak {}",
                encoding.subprotocol()
            )));
        }
    }
    loop {
        match ws.next().await {
            Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                let Some(decoded) = decode(encoding, msg) else {
                    continue;
                };
                return match decoded {
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

/// Decodes one data message in `encoding`; `None` for a message of the other kind.
pub(crate) fn decode(encoding: Encoding, msg: Message) -> Option<Result<ServerFrame, String>> {
    match (encoding, msg) {
        (Encoding::Json, Message::Text(text)) => {
            Some(serde_json::from_str(&text).map_err(|e| e.to_string()))
        }
        (Encoding::MsgPack, Message::Binary(bytes)) => {
            Some(holdfast_protocol::msgpack::decode_server_frame(&bytes).map_err(|e| e.to_string()))
        }
        _ => None,
    }
}

/// Writes one client frame as a text (JSON) or binary (MessagePack) message.
pub(crate) async fn write(
    ws: &mut Ws,
    encoding: Encoding,
    frame: &ClientFrame,
) -> Result<(), WsError> {
    // Serialising these plain structs cannot fail; if it ever did, the frame is skipped
    // rather than tearing the connection down.
    let encoded = match encoding {
        Encoding::Json => serde_json::to_string(frame)
            .map(Message::text)
            .map_err(|e| e.to_string()),
        Encoding::MsgPack => holdfast_protocol::msgpack::to_msgpack(frame)
            .map(Message::binary)
            .map_err(|e| e.to_string()),
    };
    match encoded {
        Ok(msg) => ws.send(msg).await,
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
        ServerFrame::StateSet(_) => "state_set",
    }
}
