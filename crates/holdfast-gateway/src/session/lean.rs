//! A WebSocket connection that holds no buffer while idle.
//!
//! The framing is the gateway's own (RFC 6455, server side). Reading: see [`super::frame`]: a
//! read goes into a scratch buffer on the stack, complete frames are parsed straight from it,
//! and only the bytes of an incomplete frame or message are kept, in a buffer that exists while
//! they do. Writing: text and binary messages are framed straight into [`LeanIo`]'s coalescing
//! buffer, which is released once a flush has written it; so are the control frames (pong,
//! close, ping), in order with the data. One flush is still one write in the common case.
//!
//! Bounds: the coalescing buffer holds what the session loop fed since its last flush (one
//! batch, at most `MAX_BATCH` frames taken from the session's queue, which is bounded in
//! bytes) and the control answers; past [`SOFT_LIMIT`] bytes `poll_ready` flushes before taking
//! more, and past the socket's `max_write` bytes a frame (data or control) is refused whole. A
//! client that keeps sending pings without reading the pongs fills the buffer and loses its
//! connection.
//!
//! The close handshake: a client's close is answered with a close frame carrying its code (1002
//! for a code that may not be sent), after which reads end and data is refused. After the
//! server's close, reads go on until the client's close or the end of the stream. After a
//! failed read the socket reads and discards (see [`LeanSocket::poll_discard`]).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::{
    close_code_allowed, Limits, Reader, WsError, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT,
    SCRATCH,
};

/// Coalesced bytes past which `poll_ready` writes them out before taking another frame.
const SOFT_LIMIT: usize = 16 * 1024;
/// Most bytes read and discarded after a failed read (see [`LeanSocket::poll_discard`]).
const MAX_DISCARD: usize = 1 << 20;
/// Most bytes of a close frame's reason (a control frame's payload is at most 125 bytes).
const MAX_CLOSE_REASON: usize = 123;

/// The settings of a WebSocket connection (see `upgrade::websocket_config`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SocketConfig {
    /// Largest inbound message, in bytes (larger ones fail the read: 1009).
    pub(crate) max_message: usize,
    /// Largest inbound frame, in bytes.
    pub(crate) max_frame: usize,
    /// Most bytes that may wait to be written.
    pub(crate) max_write: usize,
}

/// The transport with a coalescing write buffer that exists only between a write and the
/// flush that empties it.
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

    /// Appends a control frame whole, or refuses it past the bound (never partly, never later:
    /// it keeps its place among the data frames).
    fn push_control(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        if payload.len() > 125 {
            return Err(io::Error::other("control frame over 125 bytes"));
        }
        if self.pending() + payload.len() + 2 > self.max {
            return Err(Self::full_error());
        }
        self.push_frame(opcode, payload);
        Ok(())
    }

    /// Appends a close frame with `code` and `reason` (cut to fit a control frame, on a
    /// character boundary), or nothing but the opcode without a code.
    fn push_close(&mut self, frame: Option<(u16, &str)>) -> io::Result<()> {
        let mut payload = [0u8; 2 + MAX_CLOSE_REASON];
        let len = match frame {
            None => 0,
            Some((code, reason)) => {
                let mut cut = reason.len().min(MAX_CLOSE_REASON);
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                let reason = reason.as_bytes().get(..cut).unwrap_or_default();
                payload[..2].copy_from_slice(&code.to_be_bytes());
                payload[2..2 + cut].copy_from_slice(reason);
                2 + cut
            }
        };
        self.push_control(OP_CLOSE, payload.get(..len).unwrap_or_default())
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

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Reads from `io` into `buf`: the number of bytes read, 0 at the end of the stream.
fn poll_read_into<T: AsyncRead + Unpin>(
    io: &mut T,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut buf = ReadBuf::new(buf);
    ready!(Pin::new(io).poll_read(cx, &mut buf))?;
    Poll::Ready(Ok(buf.filled().len()))
}

/// A server-side WebSocket speaking axum's [`Message`], as the session loop expects.
pub(crate) struct LeanSocket<T> {
    io: LeanIo<T>,
    reader: Reader,
    /// A close was sent or received, or the connection failed: data frames are refused.
    closed: bool,
    /// The server's close frame was queued.
    close_sent: bool,
    /// The client's close frame was received (and answered).
    close_received: bool,
    /// Reads are over: the close handshake is done, or the stream ended.
    ended: bool,
    /// A read failed (a broken frame, or the connection): frames are no longer parsed.
    failed: bool,
    /// After a failed read, the server's close frame was sent: the write side is shut down
    /// once it is flushed.
    shut_pending: bool,
    /// Bytes read and discarded since the failure.
    discarded: usize,
}

impl<T> LeanSocket<T> {
    /// A server WebSocket over `io` (the handshake done); `early` holds the bytes the client
    /// sent past its request, read before: they are parsed first.
    pub(crate) fn new(io: T, early: Vec<u8>, config: SocketConfig) -> Self {
        let limits = Limits {
            max_message: config.max_message,
            max_frame: config.max_frame,
        };
        LeanSocket {
            io: LeanIo::new(io, config.max_write),
            reader: Reader::new(limits, early),
            closed: false,
            close_sent: false,
            close_received: false,
            ended: false,
            failed: false,
            shut_pending: false,
            discarded: 0,
        }
    }

    /// Marks the read side failed (nothing more is parsed) and returns `e`.
    fn fail(&mut self, e: WsError) -> WsError {
        self.closed = true;
        self.failed = true;
        self.reader.clear();
        e
    }

    fn push_data(&mut self, opcode: u8, payload: &[u8]) -> Result<(), WsError> {
        if self.closed {
            return Err(WsError::Closed);
        }
        if self.io.pending() + payload.len() > self.io.max {
            return Err(WsError::Io(LeanIo::<T>::full_error()));
        }
        self.io.push_frame(opcode, payload);
        Ok(())
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> LeanSocket<T> {
    /// After a failed read: reads what the client still sends and discards it, until the
    /// client's end of the stream (then `None`), or [`MAX_DISCARD`] bytes. A client usually
    /// goes on sending for a while after the frame that failed (the rest of its frames, its
    /// close answer); a socket dropped with unread input is reset by the kernel, and a client
    /// whose write then fails may never read the close frame. The caller bounds the wait in
    /// time (the closing linger).
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<Option<<Self as Stream>::Item>> {
        let mut scratch = [0u8; 2048];
        while self.discarded < MAX_DISCARD {
            match ready!(poll_read_into(&mut self.io.io, cx, &mut scratch)) {
                Ok(n) if n > 0 => self.discarded += n,
                _ => return Poll::Ready(None),
            }
        }
        Poll::Ready(None)
    }

    /// A message read: answers pings and the client's close (the answer is written out if the
    /// socket takes it now, else by the next read or flush).
    fn deliver(
        &mut self,
        cx: &mut Context<'_>,
        msg: Message,
    ) -> Poll<Option<Result<Message, WsError>>> {
        let msg = match msg {
            Message::Ping(payload) => {
                // No pong once a close was sent or received.
                if !self.closed {
                    if let Err(e) = self.io.push_control(OP_PONG, &payload) {
                        return Poll::Ready(Some(Err(self.fail(e.into()))));
                    }
                    let _ = self.io.poll_write_out(cx);
                }
                Message::Ping(payload)
            }
            Message::Close(frame) => {
                self.ended = true;
                if self.close_sent {
                    // The answer to the server's close: the handshake is done.
                    Message::Close(frame)
                } else {
                    self.closed = true;
                    self.close_received = true;
                    let frame = match frame {
                        Some(f) if !close_code_allowed(f.code) => Some(CloseFrame {
                            code: 1002,
                            reason: Utf8Bytes::from_static("Protocol violation"),
                        }),
                        other => other,
                    };
                    let answer = frame.as_ref().map(|f| (f.code, f.reason.as_str()));
                    if let Err(e) = self.io.push_close(answer) {
                        return Poll::Ready(Some(Err(self.fail(e.into()))));
                    }
                    let _ = self.io.poll_write_out(cx);
                    Message::Close(frame)
                }
            }
            other => other,
        };
        Poll::Ready(Some(Ok(msg)))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Stream for LeanSocket<T> {
    type Item = Result<Message, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return this.poll_discard(cx);
        }
        if this.ended {
            return Poll::Ready(None);
        }
        // Answers queued by earlier reads go out first; a write that would block is retried by
        // the next read or flush.
        if this.io.pending() > 0 {
            if let Poll::Ready(Err(e)) = this.io.poll_write_out(cx) {
                return Poll::Ready(Some(Err(this.fail(e.into()))));
            }
        }
        loop {
            match this.reader.next_buffered() {
                Ok(Some(msg)) => return this.deliver(cx, msg),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
            }
            let io = &mut this.io.io;
            let read = match this.reader.read_direct(|buf| poll_read_into(io, cx, buf)) {
                Some(read) => ready!(read).map(|n| (n, None)),
                None => {
                    let mut scratch = [0u8; SCRATCH];
                    match ready!(poll_read_into(io, cx, &mut scratch)) {
                        Ok(0) => Ok((0, None)),
                        Ok(n) => Ok((n, Some(this.reader.feed(&mut scratch[..n])))),
                        Err(e) => Err(e),
                    }
                }
            };
            match read {
                Err(e) => return Poll::Ready(Some(Err(this.fail(e.into())))),
                Ok((0, _)) => {
                    // The end of the stream (without a close: the connection is lost).
                    this.ended = true;
                    this.closed = true;
                    this.reader.clear();
                    return Poll::Ready(None);
                }
                Ok((_, None)) | Ok((_, Some(Ok(None)))) => {}
                Ok((_, Some(Ok(Some(msg))))) => return this.deliver(cx, msg),
                Ok((_, Some(Err(e)))) => return Poll::Ready(Some(Err(this.fail(e)))),
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Sink<Message> for LeanSocket<T> {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        if this.io.pending() >= SOFT_LIMIT {
            ready!(this.io.poll_flush(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        let this = self.get_mut();
        match item {
            Message::Text(t) => this.push_data(OP_TEXT, t.as_bytes()),
            Message::Binary(b) => this.push_data(OP_BINARY, &b),
            Message::Ping(_) | Message::Pong(_) if this.closed => Err(WsError::Closed),
            Message::Ping(b) => Ok(this.io.push_control(OP_PING, &b)?),
            Message::Pong(b) => Ok(this.io.push_control(OP_PONG, &b)?),
            Message::Close(f) => {
                // One close frame per connection: after the client's close (answered by the
                // socket) or the server's own, nothing more is sent.
                if this.close_sent || this.close_received {
                    return Ok(());
                }
                this.closed = true;
                this.close_sent = true;
                // After a failed read no close answer can be recognised: the connection ends
                // from this side once the close frame is out (the client reads it, then the
                // end of the stream).
                this.shut_pending = this.failed;
                let f = f.as_ref().map(|f| (f.code, f.reason.as_str()));
                Ok(this.io.push_close(f)?)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        ready!(this.io.poll_flush(cx))?;
        if this.shut_pending {
            ready!(this.io.poll_shutdown(cx))?;
            this.shut_pending = false;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        if !this.close_sent && !this.close_received {
            this.closed = true;
            this.close_sent = true;
            this.io.push_close(None)?;
        }
        ready!(this.io.poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_tungstenite::WebSocketStream;
    use tungstenite::protocol::Role;
    use tungstenite::Message as WsMessage;

    use super::*;

    fn config(max_write: usize) -> SocketConfig {
        SocketConfig {
            max_message: 1 << 20,
            max_frame: 1 << 20,
            max_write,
        }
    }

    /// A server socket over an in-memory pipe, and a plain tungstenite client on the other end.
    async fn pair() -> (LeanSocket<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let server = LeanSocket::new(a, Vec::new(), config(1 << 20));
        let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        (server, client)
    }

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        out
    }

    fn text(m: Option<Result<Message, WsError>>) -> String {
        match m {
            Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
            other => panic!("unexpected {other:?}"),
        }
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
        assert_eq!(server.io.out.capacity(), 0, "released after the flush");
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

        // Client frames, and a ping answered in order with the data.
        client.send(WsMessage::text("from client")).await.unwrap();
        client.send(WsMessage::Ping("p".into())).await.unwrap();
        client.send(WsMessage::text("after ping")).await.unwrap();
        assert_eq!(text(server.next().await), "from client");
        assert!(matches!(
            server.next().await.unwrap().unwrap(),
            Message::Ping(_)
        ));
        assert_eq!(text(server.next().await), "after ping");
        assert_eq!(server.reader.held(), 0, "nothing held while idle");
        server
            .send(Message::Text("after pong".into()))
            .await
            .unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            WsMessage::Pong("p".into())
        );
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
        assert!(server.next().await.is_none(), "reads end after the close");
        assert!(server.send(Message::Text("late".into())).await.is_err());
    }

    #[tokio::test]
    async fn a_close_code_is_echoed_and_a_forbidden_one_answered_with_1002() {
        for (code, answer) in [(4001u16, 4001u16), (1000, 1000), (5000, 1002), (1005, 1002)] {
            let (a, mut b) = tokio::io::duplex(4096);
            let mut server = LeanSocket::new(a, Vec::new(), config(4096));
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(b"bye");
            b.write_all(&frame(0x88, &payload)).await.unwrap();
            match server.next().await.unwrap().unwrap() {
                Message::Close(Some(f)) => assert_eq!(f.code, answer),
                other => panic!("unexpected {other:?}"),
            }
            server.flush().await.unwrap();
            let mut got = [0u8; 4];
            b.read_exact(&mut got).await.unwrap();
            assert_eq!(&got[..2], &[0x88, got[1]]);
            assert_eq!(u16::from_be_bytes([got[2], got[3]]), answer, "{code}");
        }
    }

    #[tokio::test]
    async fn after_the_servers_close_reads_go_on_until_the_clients_close() {
        let (mut server, client) = pair().await;
        server
            .send(Message::Close(Some(CloseFrame {
                code: 1001,
                reason: Utf8Bytes::from_static(""),
            })))
            .await
            .unwrap();
        let mut raw = client.into_inner();
        raw.write_all(&frame(0x81, b"late")).await.unwrap();
        raw.write_all(&frame(0x89, b"no pong")).await.unwrap();
        raw.write_all(&frame(0x88, &1001u16.to_be_bytes()))
            .await
            .unwrap();
        assert_eq!(text(server.next().await), "late");
        assert!(matches!(
            server.next().await.unwrap().unwrap(),
            Message::Ping(_)
        ));
        assert!(matches!(
            server.next().await.unwrap().unwrap(),
            Message::Close(Some(_))
        ));
        assert!(server.next().await.is_none());
        server.flush().await.unwrap();
        // Only the server's close went out: no pong after it, no second close.
        let mut got = [0u8; 4];
        raw.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0x88, 2, 0x03, 0xe9]);
        drop(server);
        let mut rest = Vec::new();
        raw.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[tokio::test]
    async fn after_a_broken_frame_the_close_goes_out_and_the_rest_is_discarded() {
        let (a, mut b) = tokio::io::duplex(4096);
        let mut server = LeanSocket::new(a, Vec::new(), config(4096));
        // Unmasked.
        b.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
        let e = server.next().await.unwrap().unwrap_err();
        assert_eq!(
            e.close_code(),
            Some(holdfast_protocol::CloseCode::ProtocolError)
        );
        server
            .send(Message::Close(Some(CloseFrame {
                code: 1002,
                reason: Utf8Bytes::from_static(""),
            })))
            .await
            .unwrap();
        b.write_all(&frame(0x81, b"ignored")).await.unwrap();
        b.shutdown().await.unwrap();
        assert!(server.next().await.is_none());
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, [0x88, 2, 0x03, 0xea], "the close, then the end");
    }

    #[tokio::test]
    async fn the_early_bytes_are_read_first() {
        let (a, mut b) = tokio::io::duplex(4096);
        let mut bytes = frame(0x81, b"first");
        let second = frame(0x82, &[7u8; 300]);
        bytes.extend_from_slice(&second);
        // The request's leftover: the first frame and part of the second.
        let early = bytes[..bytes.len() - 100].to_vec();
        let mut server = LeanSocket::new(a, early, config(4096));
        assert_eq!(text(server.next().await), "first");
        b.write_all(&bytes[bytes.len() - 100..]).await.unwrap();
        match server.next().await.unwrap().unwrap() {
            Message::Binary(b) => assert_eq!(&b[..], &[7u8; 300][..]),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(server.reader.held(), 0);
    }

    /// The same frames, whatever the size of each read: one byte at a time through the pipe.
    #[tokio::test]
    async fn frames_arriving_a_byte_at_a_time() {
        let (a, mut b) = tokio::io::duplex(1);
        let mut server = LeanSocket::new(a, Vec::new(), config(1 << 20));
        let big = "é".repeat(3_000);
        let mut bytes = frame(0x01, "frag".as_bytes());
        bytes.extend(frame(0x89, b"ping"));
        bytes.extend(frame(0x80, "ment".as_bytes()));
        bytes.extend(frame(0x81, big.as_bytes()));
        bytes.extend(frame(0x82, &[]));
        let writer = tokio::spawn(async move {
            for byte in bytes {
                b.write_all(&[byte]).await.unwrap();
            }
            b
        });
        assert!(matches!(
            server.next().await.unwrap().unwrap(),
            Message::Ping(p) if &p[..] == b"ping"
        ));
        assert_eq!(text(server.next().await), "fragment");
        assert_eq!(text(server.next().await), big);
        assert!(matches!(
            server.next().await.unwrap().unwrap(),
            Message::Binary(b) if b.is_empty()
        ));
        let mut b = writer.await.unwrap();
        let mut pong = [0u8; 6];
        // The pipe holds one byte: the pong is read while it is written.
        let (flushed, read) = tokio::join!(server.flush(), b.read_exact(&mut pong));
        flushed.unwrap();
        read.unwrap();
        assert_eq!(&pong, b"\x8a\x04ping");
    }

    #[tokio::test]
    async fn a_large_message_is_read_whole() {
        let (mut server, mut client) = pair().await;
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let send = tokio::spawn(async move {
            client.send(WsMessage::binary(big.clone())).await.unwrap();
            (client, big)
        });
        let got = server.next().await.unwrap().unwrap();
        let (_client, big) = send.await.unwrap();
        assert_eq!(got, Message::Binary(big.into()));
        assert_eq!(server.reader.held(), 0);
    }

    #[tokio::test]
    async fn more_than_the_bound_is_refused() {
        let (mut server, _client) = pair().await;
        server.io.max = 1_000;
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
        let mut server = LeanSocket::new(a, Vec::new(), config(2_000));
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
        assert!(server.io.pending() <= 2_000);
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

    #[test]
    fn a_close_reason_is_cut_on_a_character_boundary() {
        let mut io = LeanIo::new((), usize::MAX);
        io.push_close(Some((1000, &"é".repeat(100)))).unwrap();
        assert_eq!(io.out[1], 2 + 122);
        assert!(std::str::from_utf8(&io.out[4..]).is_ok());
    }

    #[test]
    fn the_socket_is_small() {
        let size = std::mem::size_of::<LeanSocket<crate::upgrade::SessionIo>>();
        eprintln!("LeanSocket<SessionIo>: {size} B");
        // Measured at 128 bytes (376 with tungstenite's context inside).
        assert!(size <= 160, "{size} B");
    }
}
