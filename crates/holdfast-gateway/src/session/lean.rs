//! A WebSocket connection that holds no write buffer while idle.
//!
//! tungstenite keeps its output buffer at the capacity of the largest frame (or batch) it ever
//! wrote, for the life of the connection: one `joined` listing a big room, or one burst of
//! presence frames, and the connection keeps those kilobytes while idle. [`LeanSocket`] keeps
//! tungstenite for reading and for control frames (ping, pong, close: at most 125 bytes of
//! payload), and frames the session's text and binary messages itself, straight into
//! [`LeanIo`]'s coalescing buffer, which is released once a flush has written it. One flush is
//! still one write in the common case.
//!
//! Bounds: the coalescing buffer holds what the session loop fed since its last flush (one
//! batch, at most `MAX_BATCH` frames taken from the session's queue, which is bounded in
//! bytes); past [`SOFT_LIMIT`] bytes `poll_ready` flushes before taking more, and past the
//! socket's `max` bytes a frame (data or control) is refused, as tungstenite's
//! `max_write_buffer_size` did.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tungstenite::protocol::frame::CloseFrame as WsCloseFrame;
use tungstenite::Message as WsMessage;

/// Coalesced bytes past which `poll_ready` writes them out before taking another frame.
const SOFT_LIMIT: usize = 16 * 1024;
/// Most bytes read and discarded after a failed read (see [`LeanSocket::poll_discard`]).
const MAX_DISCARD: usize = 1 << 20;

/// The transport under tungstenite: reads pass through, writes are coalesced in a buffer that
/// exists only between a write and the flush that empties it.
pub(crate) struct LeanIo<T> {
    io: T,
    out: Vec<u8>,
    /// Bytes of `out` already written to `io`.
    sent: usize,
    /// Most bytes that may wait in `out`.
    max: usize,
}

impl<T> LeanIo<T> {
    /// `max`: the most bytes that may wait to be written; past it a write fails.
    pub(crate) fn new(io: T, max: usize) -> Self {
        LeanIo {
            io,
            out: Vec::new(),
            sent: 0,
            max,
        }
    }

    fn full_error() -> io::Error {
        io::Error::other("write buffer full")
    }

    fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Appends one unmasked server frame (FIN set) with `opcode` and `payload`.
    fn push_frame(&mut self, opcode: u8, payload: &[u8]) {
        let len = payload.len();
        self.out.reserve(len + 10);
        self.out.push(0x80 | opcode);
        if len < 126 {
            self.out.push(len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            self.out.push(126);
            self.out.extend_from_slice(&short.to_be_bytes());
        } else {
            self.out.push(127);
            self.out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.out.extend_from_slice(payload);
    }
}

impl<T: AsyncWrite + Unpin> LeanIo<T> {
    /// Writes out everything coalesced, then releases the buffer.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if self.out.capacity() > 0 {
            self.out = Vec::new();
        }
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for LeanIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LeanIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Only tungstenite's control frames come this way. They are taken whole or refused
        // (never partly, never later): a frame left in tungstenite's own buffer would be
        // overtaken by the data frames appended here directly. A client that keeps sending
        // pings without reading the pongs fills the buffer and loses its connection.
        let this = self.get_mut();
        if this.pending() + buf.len() > this.max {
            return Poll::Ready(Err(Self::full_error()));
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// A server-side WebSocket speaking axum's [`Message`], as the session loop expects.
pub(crate) struct LeanSocket<T> {
    ws: WebSocketStream<LeanIo<T>>,
    /// A close was sent or received, or the connection failed: data frames are refused.
    closed: bool,
    /// A read failed (a broken frame, or the connection): tungstenite reads no more.
    failed: bool,
    /// After a failed read, the server's close frame was sent: the write side is shut down
    /// once it is flushed.
    shut_pending: bool,
    /// Bytes read and discarded since the failure.
    discarded: usize,
}

impl<T> LeanSocket<T> {
    pub(crate) fn new(ws: WebSocketStream<LeanIo<T>>) -> Self {
        LeanSocket {
            ws,
            closed: false,
            failed: false,
            shut_pending: false,
            discarded: 0,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> LeanSocket<T> {
    /// After a failed read: reads what the client still sends and discards it, until the
    /// client's end of the stream (then `None`), or [`MAX_DISCARD`] bytes. tungstenite ends
    /// its stream at its first error, but a client usually goes on sending for a while (the
    /// rest of its frames, its close answer); a socket dropped with unread input is reset by
    /// the kernel, and a client whose write then fails may never read the close frame. The
    /// caller bounds the wait in time (the closing linger).
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<Option<<Self as Stream>::Item>> {
        let mut scratch = [0u8; 2048];
        while self.discarded < MAX_DISCARD {
            let mut buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(self.ws.get_mut()).poll_read(cx, &mut buf)) {
                Ok(()) if !buf.filled().is_empty() => self.discarded += buf.filled().len(),
                _ => return Poll::Ready(None),
            }
        }
        Poll::Ready(None)
    }

    fn push_data(&mut self, opcode: u8, payload: &[u8]) -> Result<(), tungstenite::Error> {
        if self.closed {
            return Err(tungstenite::Error::AlreadyClosed);
        }
        let io = self.ws.get_mut();
        if io.pending() + payload.len() > io.max {
            return Err(tungstenite::Error::Io(LeanIo::<T>::full_error()));
        }
        io.push_frame(opcode, payload);
        Ok(())
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Stream for LeanSocket<T> {
    type Item = Result<Message, tungstenite::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return this.poll_discard(cx);
        }
        loop {
            let msg = match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => {
                    this.closed = true;
                    this.failed = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Some(Ok(m)) => m,
            };
            let msg = match msg {
                WsMessage::Text(t) => match Utf8Bytes::try_from(bytes::Bytes::from(t)) {
                    Ok(t) => Message::Text(t),
                    Err(_) => {
                        this.closed = true;
                        return Poll::Ready(Some(Err(tungstenite::Error::Utf8(
                            "invalid UTF-8".into(),
                        ))));
                    }
                },
                WsMessage::Binary(b) => Message::Binary(b),
                WsMessage::Ping(b) => Message::Ping(b),
                WsMessage::Pong(b) => Message::Pong(b),
                WsMessage::Close(f) => {
                    this.closed = true;
                    Message::Close(f.map(|f| CloseFrame {
                        code: f.code.into(),
                        reason: Utf8Bytes::from(f.reason.as_str()),
                    }))
                }
                // Raw frames are never produced by a read.
                WsMessage::Frame(_) => continue,
            };
            return Poll::Ready(Some(Ok(msg)));
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Sink<Message> for LeanSocket<T> {
    type Error = tungstenite::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        if this.ws.get_ref().pending() >= SOFT_LIMIT {
            ready!(Pin::new(&mut this.ws).poll_flush(cx))?;
            ready!(Pin::new(this.ws.get_mut()).poll_flush(cx))?;
        }
        Pin::new(&mut this.ws).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        let this = self.get_mut();
        match item {
            Message::Text(t) => this.push_data(0x1, t.as_bytes()),
            Message::Binary(b) => this.push_data(0x2, &b),
            Message::Ping(b) => Pin::new(&mut this.ws).start_send(WsMessage::Ping(b)),
            Message::Pong(b) => Pin::new(&mut this.ws).start_send(WsMessage::Pong(b)),
            Message::Close(f) => {
                this.closed = true;
                // After a failed read no close answer can be recognised: the connection ends
                // from this side once the close frame is out (the client reads it, then the
                // end of the stream).
                this.shut_pending = this.failed;
                let f = f.map(|f| WsCloseFrame {
                    code: WsCloseCode::from(f.code),
                    reason: f.reason.as_str().to_owned().into(),
                });
                Pin::new(&mut this.ws).start_send(WsMessage::Close(f))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_flush(cx))?;
        // tungstenite skips its flush once the close handshake is over; what was coalesced
        // before the close still goes out.
        ready!(Pin::new(this.ws.get_mut()).poll_flush(cx))?;
        if this.shut_pending {
            ready!(Pin::new(this.ws.get_mut()).poll_shutdown(cx))?;
            this.shut_pending = false;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        this.closed = true;
        Pin::new(&mut this.ws).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures_util::{SinkExt, StreamExt};
    use tungstenite::protocol::{Role, WebSocketConfig};

    use super::*;

    /// A server socket over an in-memory pipe, and a plain tungstenite client on the other end.
    async fn pair() -> (
        LeanSocket<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let config = WebSocketConfig::default()
            .read_buffer_size(512)
            .write_buffer_size(0)
            .max_message_size(Some(1 << 20));
        let io = LeanIo::new(a, 1 << 20);
        let server = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        (LeanSocket::new(server), client)
    }

    #[tokio::test]
    async fn frames_reach_a_tungstenite_client_and_the_buffer_is_released() {
        let (mut server, mut client) = pair().await;
        let big = "x".repeat(70_000);
        for text in ["hello", &"y".repeat(300), &big] {
            server.feed(Message::Text(text.into())).await.unwrap();
        }
        server
            .feed(Message::Binary(vec![1u8, 2, 3].into()))
            .await
            .unwrap();
        server.flush().await.unwrap();
        assert_eq!(
            server.ws.get_ref().out.capacity(),
            0,
            "released after the flush"
        );
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            WsMessage::text("hello")
        );
        assert_eq!(client.next().await.unwrap().unwrap().len(), 300);
        assert_eq!(
            client.next().await.unwrap().unwrap().into_text().unwrap(),
            big
        );
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            WsMessage::binary(vec![1u8, 2, 3])
        );

        // Client frames, and a ping answered by tungstenite in order with the data.
        client.send(WsMessage::text("from client")).await.unwrap();
        client.send(WsMessage::Ping("p".into())).await.unwrap();
        client.send(WsMessage::text("after ping")).await.unwrap();
        match server.next().await.unwrap().unwrap() {
            Message::Text(t) => assert_eq!(t.as_str(), "from client"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            server.next().await.unwrap().unwrap(),
            Message::Ping(_)
        ));
        match server.next().await.unwrap().unwrap() {
            Message::Text(t) => assert_eq!(t.as_str(), "after ping"),
            other => panic!("unexpected {other:?}"),
        }
        server
            .send(Message::Text("after pong".into()))
            .await
            .unwrap();
        assert!(matches!(
            client.next().await.unwrap().unwrap(),
            WsMessage::Pong(_)
        ));
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            WsMessage::text("after pong")
        );

        // Close from the server: data is refused afterwards, the client sees the code.
        server
            .send(Message::Close(Some(CloseFrame {
                code: 4001,
                reason: Utf8Bytes::from_static("slow"),
            })))
            .await
            .unwrap();
        assert!(server.send(Message::Text("late".into())).await.is_err());
        match client.next().await.unwrap().unwrap() {
            WsMessage::Close(Some(f)) => assert_eq!(u16::from(f.code), 4001),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_client_close_is_answered() {
        let (mut server, mut client) = pair().await;
        client.close(None).await.unwrap();
        assert!(matches!(
            server.next().await.unwrap().unwrap(),
            Message::Close(None)
        ));
        server.flush().await.unwrap();
        assert!(matches!(
            client.next().await.unwrap().unwrap(),
            WsMessage::Close(_)
        ));
    }

    #[tokio::test]
    async fn more_than_the_bound_is_refused() {
        let (mut server, _client) = pair().await;
        server.ws.get_mut().max = 1_000;
        assert!(server
            .start_send_unpin(Message::Text("a".repeat(900).into()))
            .is_ok());
        assert!(server
            .start_send_unpin(Message::Text("b".repeat(200).into()))
            .is_err());
    }

    #[tokio::test]
    async fn pings_from_a_client_that_never_reads_hit_the_bound() {
        let (a, b) = tokio::io::duplex(256);
        let io = LeanIo::new(a, 2_000);
        let mut server =
            LeanSocket::new(WebSocketStream::from_raw_socket(io, Role::Server, None).await);
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let flood = tokio::spawn(async move {
            for _ in 0..200 {
                let ping = WsMessage::Ping(vec![0u8; 100].into());
                if client.send(ping).await.is_err() {
                    break;
                }
            }
        });
        let mut failed = false;
        for _ in 0..200 {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), server.next());
            match next.await {
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) => {
                    failed = true;
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(failed, "the pongs nobody reads are bounded");
        assert!(server.ws.get_ref().pending() <= 2_000);
        flood.abort();
    }

    #[test]
    fn frames_carry_the_three_length_forms() {
        let mut io = LeanIo::new((), usize::MAX);
        io.push_frame(0x1, b"hi");
        assert_eq!(io.out, b"\x81\x02hi");
        io.out.clear();
        io.push_frame(0x1, &[b'a'; 300]);
        assert_eq!(&io.out[..4], &[0x81, 126, 1, 44]);
        assert_eq!(io.out.len(), 304);
        io.out.clear();
        io.push_frame(0x2, &vec![0u8; 70_000]);
        assert_eq!(&io.out[..2], &[0x82, 127]);
        assert_eq!(&io.out[2..10], &70_000u64.to_be_bytes());
        assert_eq!(io.out.len(), 70_010);
    }
}
