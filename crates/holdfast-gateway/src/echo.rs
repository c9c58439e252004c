//! A WebSocket echo server on the gateway's own WebSocket layer, for conformance testing
//! (`scripts/autobahn/run` drives it with the Autobahn|Testsuite) and fuzzing.
//!
//! It is not part of a node: no authentication, no rooms, no protocol. What it shares with
//! `/ws` is everything below the session: the handshake ([`crate::upgrade`]), the WebSocket
//! settings ([`crate::upgrade::websocket_config`], with only the size limits as parameters),
//! the lean socket (the gateway's own framing, reading and writing), the
//! mapping of read errors to close codes (1002, 1007, 1009) and the closing sequence (close
//! frame, then a bounded linger for the client's answer). Each text and binary message is sent
//! back as it came; pings are answered by the socket.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::Message;
use axum::extract::State;
use axum::response::Response;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::session::{close_with, linger, read_close_code, LeanSocket};
use crate::tls::MaybeTls;
use crate::upgrade::{lean_socket, websocket_config, Handshake};

/// How long the answer to a client's close may take to write.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The size limits of an echo server: the only settings that may differ from `/ws`.
#[derive(Clone, Copy, Debug)]
pub struct EchoLimits {
    /// Largest inbound message and frame, in bytes (`/ws`: `limits.max_message_bytes`).
    pub max_message_bytes: usize,
}

impl EchoLimits {
    /// Bytes that may wait to be written: one echoed message and a little more.
    fn max_write_bytes(self) -> usize {
        self.max_message_bytes
            .saturating_mul(2)
            .saturating_add(16 * 1024)
    }
}

impl Default for EchoLimits {
    /// The `/ws` defaults.
    fn default() -> Self {
        EchoLimits {
            max_message_bytes: crate::config::Config::default().limits.max_message_bytes,
        }
    }
}

/// Serves the echo on every path of `listener`, until the task is dropped.
pub async fn serve(listener: TcpListener, limits: EchoLimits) {
    // Plain sockets on an epoll instance of the server's own, as `/ws` sessions are.
    let state = Echo {
        limits,
        reactor: crate::reactor::Reactor::shared(),
    };
    let router = Router::new().fallback(upgrade).with_state(state);
    loop {
        let (stream, _peer): (_, SocketAddr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                tower::ServiceExt::oneshot(router.clone(), req)
            });
            // The `/ws` stream type, so the upgrade hands the socket over the same way.
            let io = TokioIo::new(MaybeTls::Plain(stream));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .with_upgrades();
            let _ = conn.await;
        });
    }
}

/// The echo server's state.
#[derive(Clone)]
struct Echo {
    limits: EchoLimits,
    reactor: Option<std::sync::Arc<crate::reactor::Reactor>>,
}

async fn upgrade(State(echo): State<Echo>, handshake: Handshake) -> Response {
    let limits = echo.limits;
    let config = websocket_config(limits.max_message_bytes, limits.max_write_bytes());
    let (response, task) = handshake.accept(config, echo.reactor, run, None);
    tokio::spawn(task);
    response
}

/// Runs the echo over `io`, a connection whose handshake is done: `early` holds bytes the
/// client sent past its request. Returns once the connection is closed.
pub async fn echo_stream<T: AsyncRead + AsyncWrite + Unpin>(
    io: T,
    early: Vec<u8>,
    limits: EchoLimits,
) {
    let config = websocket_config(limits.max_message_bytes, limits.max_write_bytes());
    run(lean_socket(io, early, config)).await;
}

async fn run<T: AsyncRead + AsyncWrite + Unpin>(mut ws: LeanSocket<T>) {
    loop {
        match ws.next().await {
            None => return,
            Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                if ws.send(msg).await.is_err() {
                    return;
                }
            }
            Some(Ok(Message::Close(_))) => {
                // The socket queued its answer; write it out, then drop the connection.
                let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, ws.flush()).await;
                return;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Err(e)) => {
                if let Some(code) = read_close_code(&e) {
                    close_with(&mut ws, code).await;
                    linger(&mut ws).await;
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A masked text frame comes back (unmasked), then an unmasked frame is answered with a
    /// close frame with 1002 and the server's end of the stream.
    #[tokio::test]
    async fn echoes_and_closes_a_broken_frame_with_its_code() {
        let (mut client, server) = tokio::io::duplex(4096);
        let session = tokio::spawn(echo_stream(server, Vec::new(), EchoLimits::default()));
        let key = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | 5];
        frame.extend_from_slice(&key);
        frame.extend(b"hello".iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        client.write_all(&frame).await.unwrap();
        let mut echoed = [0u8; 7];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"\x81\x05hello");

        client.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(
            &rest[..4],
            &[0x88, rest[1], 0x03, 0xea],
            "close 1002: {rest:?}"
        );
        session.await.unwrap();
    }
}
