//! The WebSocket handshake of `/ws`.
//!
//! The request is checked as RFC 6455 asks (GET, `Connection: upgrade`, `Upgrade: websocket`,
//! `Sec-WebSocket-Version: 13`, a key), answered with 101, and the session task is started on
//! the node's tracker. Once the HTTP connection hands over its stream, the stream is taken back
//! out of hyper's upgrade wrapper, so a session holds the accepted socket itself (no boxed I/O
//! object, no buffered-bytes wrapper) under a [`LeanSocket`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::OptionFuture;
use futures_util::FutureExt;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::reactor::{Adopted, Reactor, Stream};
use crate::session::{LeanSocket, SocketConfig};
use crate::tls::MaybeTls;

/// The stream a session runs on: the accepted connection itself, or (should hyper ever hand
/// over a different type) its upgrade wrapper. A plain connection is driven by the node's
/// [`Reactor`] (16 bytes here, and no registration with tokio's driver); the other kinds are
/// boxed, so the enum is 24 bytes.
pub(crate) enum SessionIo {
    /// The accepted plain TCP stream, out of hyper's hands, on the node's reactor.
    Plain(Stream),
    /// The accepted plain TCP stream, left with tokio's driver (the node has no reactor, or
    /// the reactor could not take it).
    Tokio(Box<TcpStream>),
    /// The accepted TLS stream, out of hyper's hands.
    Tls(Box<TlsStream<TcpStream>>),
    /// hyper's wrapper, kept as is (boxed: not the usual case, and larger).
    Wrapped(Box<TokioIo<Upgraded>>),
}

impl SessionIo {
    /// The session's stream for an accepted connection: a plain one moves to `reactor`.
    fn new(io: MaybeTls, reactor: Option<&Arc<Reactor>>) -> std::io::Result<SessionIo> {
        Ok(match (io, reactor) {
            (MaybeTls::Polled(s), _) => SessionIo::Plain(s),
            (MaybeTls::Plain(s), Some(reactor)) => match reactor.adopt(s)? {
                Adopted::Polled(s) => SessionIo::Plain(s),
                Adopted::Tokio(s) => SessionIo::Tokio(Box::new(s)),
            },
            (MaybeTls::Plain(s), None) => SessionIo::Tokio(Box::new(s)),
            (MaybeTls::Tls(s), _) => SessionIo::Tls(s),
        })
    }
}

/// The socket type of a WebSocket session.
pub(crate) type SessionSocket = LeanSocket<SessionIo>;

/// A valid WebSocket upgrade request.
pub(crate) struct Handshake {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

fn header_eq(headers: &HeaderMap, key: HeaderName, value: &str) -> bool {
    headers
        .get(&key)
        .is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

fn header_has_token(headers: &HeaderMap, key: HeaderName, token: &str) -> bool {
    headers.get_all(&key).iter().any(|h| {
        h.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err((
                StatusCode::METHOD_NOT_ALLOWED,
                "request method must be `GET`",
            ));
        }
        if !header_has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err((
                StatusCode::BAD_REQUEST,
                "Connection header did not include 'upgrade'",
            ));
        }
        if !header_eq(&parts.headers, header::UPGRADE, "websocket") {
            return Err((
                StatusCode::BAD_REQUEST,
                "`Upgrade` header did not include 'websocket'",
            ));
        }
        if !header_eq(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err((
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Version` header did not include '13'",
            ));
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return Err((
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Key` header missing",
            ));
        };
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err((
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket request couldn't be upgraded since no upgrade state was present",
            ));
        };
        Ok(Handshake { key, on_upgrade })
    }
}

impl Handshake {
    /// A handshake whose upgrade never comes, to measure the session task (tests).
    #[cfg(test)]
    pub(crate) fn for_tests() -> Handshake {
        let request = axum::http::Request::new(());
        Handshake {
            key: HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
            on_upgrade: hyper::upgrade::on(request),
        }
    }

    /// Answers 101 and returns the task that runs `session` on the upgraded socket, for the
    /// caller to spawn (on the node's tracker, at once, so the session is tracked from the
    /// moment the answer exists). The task is returned unboxed: spawned as it is, it lives in
    /// one allocation with its task header. A plain socket moves to `reactor` when one is given.
    pub(crate) fn accept<F, Fut>(
        self,
        config: SocketConfig,
        reactor: Option<Arc<Reactor>>,
        session: F,
        protocol: Option<&'static str>,
    ) -> (Response, impl Future<Output = ()> + Send + 'static)
    where
        F: FnOnce(SessionSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        // Two states, one after the other: the upgrade (ending with the socket) and then the
        // session. `then` keeps them in one enum (an `async` block would keep the session's
        // closure, and what it captured, beside the session all its life), so the task holds
        // only the session's state; the upgrade is boxed (and freed when it ends), so the
        // task is sized for the session, not for the larger upgrade state.
        let task = Box::pin(socket(self.on_upgrade, config, reactor))
            .then(move |socket| OptionFuture::from(socket.map(session)))
            .map(drop);
        let mut res = Response::new(Body::empty());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = res.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Some(p) = protocol {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
        }
        let res = match HeaderValue::from_str(&accept) {
            Ok(v) => {
                headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
                res
            }
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
        (res, task)
    }
}

/// The WebSocket settings of every WebSocket server of the gateway (the `/ws` sessions, and the
/// conformance echo server, which may only pass other limits): inbound messages and frames up
/// to `max_message_bytes` (larger ones fail the read with [`crate::session`]'s size error,
/// closed with 1009), and at most `max_write_bytes` waiting to be written. The socket holds no
/// read or write buffer while idle (see `session::lean`), so there is no buffer size to set.
pub(crate) fn websocket_config(max_message_bytes: usize, max_write_bytes: usize) -> SocketConfig {
    SocketConfig {
        max_message: max_message_bytes,
        max_frame: max_message_bytes,
        max_write: max_write_bytes,
    }
}

/// A server WebSocket over `io`, once the handshake is answered: `early` holds the bytes the
/// client sent past its request, already read by the HTTP layer (they are parsed first).
pub(crate) fn lean_socket<T: AsyncRead + AsyncWrite + Unpin>(
    io: T,
    early: Vec<u8>,
    config: SocketConfig,
) -> LeanSocket<T> {
    LeanSocket::new(io, early, config)
}

/// The session's socket, once hyper hands over the connection.
async fn socket(
    on_upgrade: OnUpgrade,
    config: SocketConfig,
    reactor: Option<Arc<Reactor>>,
) -> Option<SessionSocket> {
    let upgraded = on_upgrade.await.ok()?;
    let socket = match upgraded.downcast::<TokioIo<MaybeTls>>() {
        Ok(parts) => {
            let io = SessionIo::new(parts.io.into_inner(), reactor.as_ref()).ok()?;
            lean_socket(io, parts.read_buf.to_vec(), config)
        }
        Err(upgraded) => {
            let io = SessionIo::Wrapped(Box::new(TokioIo::new(upgraded)));
            lean_socket(io, Vec::new(), config)
        }
    };
    Some(socket)
}

impl AsyncRead for SessionIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SessionIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            SessionIo::Tokio(s) => Pin::new(&mut **s).poll_read(cx, buf),
            SessionIo::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            SessionIo::Wrapped(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for SessionIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SessionIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            SessionIo::Tokio(s) => Pin::new(&mut **s).poll_write(cx, buf),
            SessionIo::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            SessionIo::Wrapped(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SessionIo::Plain(s) => Pin::new(s).poll_flush(cx),
            SessionIo::Tokio(s) => Pin::new(&mut **s).poll_flush(cx),
            SessionIo::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            SessionIo::Wrapped(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SessionIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            SessionIo::Tokio(s) => Pin::new(&mut **s).poll_shutdown(cx),
            SessionIo::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            SessionIo::Wrapped(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
