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

/// A close was sent or received, or the connection failed: data frames are refused.
const CLOSED: u8 = 1;
/// The server's close frame was queued.
const CLOSE_SENT: u8 = 1 << 1;
/// The client's close frame was received (and answered).
const CLOSE_RECEIVED: u8 = 1 << 2;
/// Reads are over: the close handshake is done, or the stream ended.
const ENDED: u8 = 1 << 3;
/// A read failed (a broken frame, or the connection): frames are no longer parsed.
const FAILED: u8 = 1 << 4;
/// After a failed read, the server's close frame was sent: the write side is shut down once
/// it is flushed.
const SHUT_PENDING: u8 = 1 << 5;

/// A socket's state bits, one byte (the socket lives in every connection's state).
#[derive(Clone, Copy, Default)]
struct Flags(u8);

impl Flags {
    fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }

    fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.0 |= flag;
        } else {
            self.0 &= !flag;
        }
    }
}

/// A server-side WebSocket speaking axum's [`Message`], as the session loop expects.
pub(crate) struct LeanSocket<T> {
    io: LeanIo<T>,
    reader: Reader,
    /// The close handshake's and the read side's state (see [`Flags`]).
    flags: Flags,
    /// Bytes read and discarded since the failure (at most [`MAX_DISCARD`]).
    discarded: u32,
}

impl<T> LeanSocket<T> {
    /// A server WebSocket over `io` (the handshake done); `early` holds the bytes the client
    /// sent past its request, read before: they are parsed first.
    pub(crate) fn new(io: T, early: Vec<u8>, config: SocketConfig) -> Self {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let limits = Limits {
            max_message: clamp(config.max_message),
            max_frame: clamp(config.max_frame),
        };
        LeanSocket {
            io: LeanIo::new(io, config.max_write),
            reader: Reader::new(limits, early),
            flags: Flags::default(),
            discarded: 0,
        }
    }

    /// Marks the read side failed (nothing more is parsed) and returns `e`.
    fn fail(&mut self, e: WsError) -> WsError {
        self.flags.set(CLOSED, true);
        self.flags.set(FAILED, true);
        self.reader.clear();
        e
    }

    fn push_data(&mut self, opcode: u8, payload: &[u8]) -> Result<(), WsError> {
        if self.flags.has(CLOSED) {
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
        while (self.discarded as usize) < MAX_DISCARD {
            match ready!(poll_read_into(&mut self.io.io, cx, &mut scratch)) {
                Ok(n) if n > 0 => {
                    let n = u32::try_from(n).unwrap_or(u32::MAX);
                    self.discarded = self.discarded.saturating_add(n);
                }
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
                if !self.flags.has(CLOSED) {
                    if let Err(e) = self.io.push_control(OP_PONG, &payload) {
                        return Poll::Ready(Some(Err(self.fail(e.into()))));
                    }
                    let _ = self.io.poll_write_out(cx);
                }
                Message::Ping(payload)
            }
            Message::Close(frame) => {
                self.flags.set(ENDED, true);
                if self.flags.has(CLOSE_SENT) {
                    // The answer to the server's close: the handshake is done.
                    Message::Close(frame)
                } else {
                    self.flags.set(CLOSED, true);
                    self.flags.set(CLOSE_RECEIVED, true);
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
        if this.flags.has(FAILED) {
            return this.poll_discard(cx);
        }
        if this.flags.has(ENDED) {
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
                    this.flags.set(ENDED, true);
                    this.flags.set(CLOSED, true);
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
            Message::Ping(_) | Message::Pong(_) if this.flags.has(CLOSED) => Err(WsError::Closed),
            Message::Ping(b) => Ok(this.io.push_control(OP_PING, &b)?),
            Message::Pong(b) => Ok(this.io.push_control(OP_PONG, &b)?),
            Message::Close(f) => {
                // One close frame per connection: after the client's close (answered by the
                // socket) or the server's own, nothing more is sent.
                if this.flags.has(CLOSE_SENT) || this.flags.has(CLOSE_RECEIVED) {
                    return Ok(());
                }
                this.flags.set(CLOSED, true);
                this.flags.set(CLOSE_SENT, true);
                // After a failed read no close answer can be recognised: the connection ends
                // from this side once the close frame is out (the client reads it, then the
                // end of the stream).
                this.flags.set(SHUT_PENDING, this.flags.has(FAILED));
                let f = f.as_ref().map(|f| (f.code, f.reason.as_str()));
                Ok(this.io.push_close(f)?)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        ready!(this.io.poll_flush(cx))?;
        if this.flags.has(SHUT_PENDING) {
            ready!(this.io.poll_shutdown(cx))?;
            this.flags.set(SHUT_PENDING, false);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        if !this.flags.has(CLOSE_SENT) && !this.flags.has(CLOSE_RECEIVED) {
            this.flags.set(CLOSED, true);
            this.flags.set(CLOSE_SENT, true);
            this.io.push_close(None)?;
        }
        ready!(this.io.poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
#[path = "lean_tests.rs"]
mod tests;
