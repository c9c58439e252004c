//! RFC 6455 framing, server side: the reader of client frames and the one error type of the
//! gateway's WebSocket connection.
//!
//! The reader holds no buffer while the connection is idle. The socket reads into a scratch
//! buffer that is not the connection's (an array on the stack of the read call, see
//! [`SCRATCH`]) and hands the bytes to [`Reader::feed`], which parses the complete frames
//! straight from it. Only what is left over is kept per connection, in a buffer allocated while
//! it is not empty: the bytes of a frame not yet complete, the frames that followed the one a
//! message was returned for, and the fragments of a message not yet complete. A frame whose
//! rest is larger than the scratch buffer is read directly into that buffer, each read taking
//! at most as many bytes as the frame already has there (at least [`SCRATCH`], at most
//! [`DIRECT_CHUNK`]): the buffer grows with what arrived, never on the strength of a length
//! field.
//!
//! Every check is made as early as the bytes allow: the reserved bits, the opcode, the mask
//! bit, the fragmentation of control frames and the order of data frames on a frame's first
//! two bytes; the frame's and the message's size once the length field is complete (a length
//! over the limit, up to 2^64 - 1, fails there, before any of its payload arrives); the UTF-8
//! of a fragmented text message on every fragment (a prefix that can no longer be valid fails
//! the message at once), of a single-frame text message once the frame is complete.

use std::io;
use std::ops::Range;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use holdfast_protocol::CloseCode;

/// Bytes of the stack buffer one read goes into.
pub(crate) const SCRATCH: usize = 4096;
/// Most bytes added at once to a connection's buffer for a frame read directly into it.
const DIRECT_CHUNK: usize = 64 * 1024;
/// A complete frame at least this large, at the end of the connection's buffer, is handed out
/// without a copy (the buffer becomes the message).
const ZERO_COPY_MIN: usize = 4096;

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Why a WebSocket connection failed: a broken frame, a message too large, or the connection
/// itself. [`WsError::close_code`] is the one mapping of these to close codes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WsError {
    /// A frame breaks RFC 6455 (unmasked, reserved bits or opcodes, an oversized or fragmented
    /// control frame, a continuation out of place, a one-byte close payload).
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    /// A text message, or a close frame's reason, is not UTF-8.
    #[error("invalid UTF-8 in a text message or a close reason")]
    Utf8,
    /// A frame or a message over the configured limit (in bytes).
    #[error("WebSocket message or frame over {0} bytes")]
    TooBig(usize),
    /// A message was given to a socket that is closing or closed.
    #[error("the WebSocket is closed")]
    Closed,
    /// The connection failed (or the write buffer is full).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl WsError {
    /// The close code to answer this error with: 1009 for a message or frame over the limit,
    /// 1007 for text that is not UTF-8, 1002 for any other broken frame, and `None` when the
    /// connection itself failed (nothing can be sent then).
    pub(crate) fn close_code(&self) -> Option<CloseCode> {
        match self {
            WsError::TooBig(_) => Some(CloseCode::MessageTooBig),
            WsError::Utf8 => Some(CloseCode::InvalidPayload),
            WsError::Protocol(_) => Some(CloseCode::ProtocolError),
            WsError::Closed | WsError::Io(_) => None,
        }
    }
}

/// The size limits of inbound frames and messages, in bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// (`u32`: the reader lives in every connection's state; larger limits are clamped.)
    pub(crate) max_message: u32,
    pub(crate) max_frame: u32,
}

/// Whether a client's close code may be echoed (RFC 6455 §7.4): 1000-1003, 1007-1013 and the
/// registered and private ranges 3000-4999. Anything else is answered with 1002.
pub(crate) fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// A frame's header, once complete.
#[derive(Debug)]
struct Head {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Bytes of the header (2 to 14).
    len_header: usize,
    /// Bytes of the payload (at most the limits).
    len: usize,
}

impl Head {
    /// Where the payload lies, for a frame starting at `at`.
    fn payload(&self, at: usize) -> Range<usize> {
        // Cannot overflow: `at` is within a buffer, the header is at most 14 bytes and `len`
        // at most a limit the buffer's bytes are checked against first.
        let start = at.saturating_add(self.len_header);
        start..start.saturating_add(self.len)
    }
}

/// The fragments of a data message not yet complete.
#[derive(Default)]
struct Fragments {
    data: Vec<u8>,
    /// `OP_TEXT` or `OP_BINARY` while a message is in progress, 0 otherwise.
    kind: u8,
    /// Bytes of `data` known to be complete UTF-8 characters (text only).
    valid: usize,
}

/// What a connection keeps between reads, allocated only while there is something to keep.
#[derive(Default)]
struct Pending {
    /// Bytes read but not parsed yet, from `start`.
    buf: Vec<u8>,
    start: usize,
    frag: Fragments,
}

impl Pending {
    fn unparsed(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }
}

/// The frame reader of one connection.
pub(crate) struct Reader {
    pending: Option<Box<Pending>>,
    limits: Limits,
}

impl Reader {
    /// A reader whose first bytes are `early` (bytes read before the socket existed).
    pub(crate) fn new(limits: Limits, early: Vec<u8>) -> Self {
        let pending = (!early.is_empty()).then(|| {
            Box::new(Pending {
                buf: early,
                ..Pending::default()
            })
        });
        Reader { pending, limits }
    }

    /// Bytes held for this connection (buffered input and fragments), for tests.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.pending
            .as_ref()
            .map_or(0, |p| p.buf.capacity() + p.frag.data.capacity())
    }

    /// Drops whatever is buffered (the connection failed or ended).
    pub(crate) fn clear(&mut self) {
        self.pending = None;
    }

    /// The next message out of the bytes already buffered; `Ok(None)` when more bytes are
    /// needed.
    pub(crate) fn next_buffered(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            let limits = self.limits;
            let Some(p) = self.pending.as_deref_mut() else {
                return Ok(None);
            };
            let Pending { buf, start, frag } = p;
            let at = *start;
            let Some(head) = parse_head(buf.get(at..).unwrap_or_default(), limits, Some(frag))?
            else {
                return Ok(None);
            };
            let range = head.payload(at);
            if buf.len() < range.end {
                return Ok(None);
            }
            unmask(buf.get_mut(range.clone()).unwrap_or_default(), head.mask);
            let single = head.fin && matches!(head.opcode, OP_TEXT | OP_BINARY);
            let msg = if single && head.len >= ZERO_COPY_MIN && range.end == buf.len() {
                // A large frame at the end of the buffer: the buffer becomes the message.
                let whole = Bytes::from(std::mem::take(buf)).slice(range);
                *start = 0;
                Some(data_message(head.opcode, whole)?)
            } else {
                let msg = on_frame(frag, &head, buf.get(range.clone()).unwrap_or_default())?;
                *start = range.end;
                msg
            };
            self.release();
            if msg.is_some() {
                return Ok(msg);
            }
        }
    }

    /// Takes `input`, freshly read: returns the first message it completes, keeping what
    /// follows for the next calls ([`Reader::next_buffered`]). `Ok(None)`: all of it was
    /// taken, and more bytes are needed. The payloads are unmasked in place.
    pub(crate) fn feed(&mut self, input: &mut [u8]) -> Result<Option<Message>, WsError> {
        if let Some(p) = self.pending.as_deref_mut() {
            if !p.unparsed().is_empty() {
                // What was parsed goes first, so the buffer holds only what is not.
                if p.start > 0 {
                    p.buf.drain(..p.start);
                    p.start = 0;
                }
                p.buf.extend_from_slice(input);
                return self.next_buffered();
            }
        }
        let mut at = 0;
        loop {
            let frag = self.pending.as_deref().map(|p| &p.frag);
            let rest = input.get(at..).unwrap_or_default();
            let Some(head) = parse_head(rest, self.limits, frag)? else {
                break;
            };
            let range = head.payload(at);
            if input.len() < range.end {
                break;
            }
            let payload = input.get_mut(range.clone()).unwrap_or_default();
            unmask(payload, head.mask);
            let fragment = head.opcode == OP_CONTINUATION
                || (!head.fin && matches!(head.opcode, OP_TEXT | OP_BINARY));
            let msg = if fragment {
                let p = self.pending.get_or_insert_with(Box::default);
                on_frame(&mut p.frag, &head, payload)?
            } else {
                // A whole message or a control frame: the fragments are not touched.
                on_frame(&mut Fragments::default(), &head, payload)?
            };
            at = range.end;
            if msg.is_some() {
                self.keep(input.get(at..).unwrap_or_default());
                return Ok(msg);
            }
        }
        self.keep(input.get(at..).unwrap_or_default());
        Ok(None)
    }

    /// When the buffer holds the head of a frame whose rest is larger than the scratch buffer:
    /// reads (with `read`) up to [`DIRECT_CHUNK`] bytes of it straight into the buffer and
    /// returns what `read` returned. `None`: read into the scratch buffer instead.
    pub(crate) fn read_direct(
        &mut self,
        read: impl FnOnce(&mut [u8]) -> std::task::Poll<io::Result<usize>>,
    ) -> Option<std::task::Poll<io::Result<usize>>> {
        let limits = self.limits;
        let p = self.pending.as_deref_mut()?;
        let head = parse_head(p.unparsed(), limits, Some(&p.frag)).ok()??;
        let need = head.payload(p.start).end.checked_sub(p.buf.len())?;
        if need < SCRATCH {
            return None;
        }
        if p.start > 0 {
            p.buf.drain(..p.start);
            p.start = 0;
        }
        // At most as much room as the frame's bytes already there (and at least the scratch
        // buffer's size): what the connection holds grows with what arrived, not with what
        // the length field announced.
        let old = p.buf.len();
        let room = need.min(DIRECT_CHUNK).min(old.max(SCRATCH));
        p.buf.resize(old + room, 0);
        let polled = read(p.buf.get_mut(old..).unwrap_or_default());
        let n = match &polled {
            std::task::Poll::Ready(Ok(n)) => *n,
            _ => 0,
        };
        p.buf.truncate(old + n);
        Some(polled)
    }

    /// Keeps `rest` (unparsed bytes) for the next call; the buffer is released when empty.
    fn keep(&mut self, rest: &[u8]) {
        if !rest.is_empty() {
            let p = self.pending.get_or_insert_with(Box::default);
            if p.start > 0 {
                p.buf.drain(..p.start);
                p.start = 0;
            }
            p.buf.extend_from_slice(rest);
        }
        self.release();
    }

    /// Frees what is no longer needed: the input buffer once parsed, the whole state once no
    /// message is in progress either.
    fn release(&mut self) {
        let Some(p) = self.pending.as_deref_mut() else {
            return;
        };
        if p.start >= p.buf.len() {
            p.buf = Vec::new();
            p.start = 0;
        }
        if p.buf.is_empty() && p.frag.kind == 0 {
            self.pending = None;
        }
    }
}

/// Parses a frame's header from `b` (the frame's first bytes) and checks it, given the message
/// in progress (`frag`). `Ok(None)`: the header is not complete yet. Each check is made as soon
/// as its bytes are there.
fn parse_head(b: &[u8], limits: Limits, frag: Option<&Fragments>) -> Result<Option<Head>, WsError> {
    let (Some(&b0), Some(&b1)) = (b.first(), b.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol("reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    let in_progress = frag.is_some_and(|f| f.kind != 0);
    let so_far = frag.map_or(0, |f| f.data.len());
    match opcode {
        OP_CONTINUATION if !in_progress => {
            return Err(WsError::Protocol("continuation frame without a message"))
        }
        OP_TEXT | OP_BINARY if in_progress => {
            return Err(WsError::Protocol("data frame inside a fragmented message"))
        }
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin {
                return Err(WsError::Protocol("fragmented control frame"));
            }
            if b1 & 0x7f > 125 {
                return Err(WsError::Protocol("control frame over 125 bytes"));
            }
        }
        _ => return Err(WsError::Protocol("reserved opcode")),
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Protocol("unmasked frame from the client"));
    }
    let (len, at): (u64, usize) = match b1 & 0x7f {
        126 => match b.get(2..4) {
            Some(&[x, y]) => (u64::from(u16::from_be_bytes([x, y])), 4),
            _ => return Ok(None),
        },
        127 => match b.get(2..10) {
            Some(x) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(x);
                (u64::from_be_bytes(n), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let (max_frame, max_message) = (limits.max_frame as usize, limits.max_message as usize);
    let len = usize::try_from(len).map_err(|_| WsError::TooBig(max_frame))?;
    if len > max_frame {
        return Err(WsError::TooBig(max_frame));
    }
    if opcode <= OP_BINARY && so_far.saturating_add(len) > max_message {
        return Err(WsError::TooBig(max_message));
    }
    let Some(&[m0, m1, m2, m3]) = b.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Head {
        fin,
        opcode,
        mask: [m0, m1, m2, m3],
        len_header: at + 4,
        len,
    }))
}

/// Handles one complete frame (its payload unmasked): a message when it completes one.
fn on_frame(frag: &mut Fragments, head: &Head, payload: &[u8]) -> Result<Option<Message>, WsError> {
    match head.opcode {
        OP_TEXT | OP_BINARY if head.fin => {
            data_message(head.opcode, Bytes::copy_from_slice(payload)).map(Some)
        }
        OP_TEXT | OP_BINARY | OP_CONTINUATION => {
            if head.opcode != OP_CONTINUATION {
                *frag = Fragments {
                    data: Vec::new(),
                    kind: head.opcode,
                    valid: 0,
                };
            }
            frag.data.extend_from_slice(payload);
            if frag.kind == OP_TEXT {
                check_utf8_prefix(frag, head.fin)?;
            }
            if !head.fin {
                return Ok(None);
            }
            let done = std::mem::take(frag);
            data_message(done.kind, Bytes::from(done.data)).map(Some)
        }
        OP_PING => Ok(Some(Message::Ping(Bytes::copy_from_slice(payload)))),
        OP_PONG => Ok(Some(Message::Pong(Bytes::copy_from_slice(payload)))),
        OP_CLOSE => close_frame(payload).map(|f| Some(Message::Close(f))),
        _ => Err(WsError::Protocol("reserved opcode")),
    }
}

/// A complete text or binary message.
fn data_message(opcode: u8, payload: Bytes) -> Result<Message, WsError> {
    if opcode == OP_TEXT {
        Utf8Bytes::try_from(payload)
            .map(Message::Text)
            .map_err(|_| WsError::Utf8)
    } else {
        Ok(Message::Binary(payload))
    }
}

/// Checks the fragments of a text message received so far: they must be UTF-8 but for a last
/// character still incomplete (none once the message is complete).
fn check_utf8_prefix(frag: &mut Fragments, fin: bool) -> Result<(), WsError> {
    let unchecked = frag.data.get(frag.valid..).unwrap_or_default();
    match std::str::from_utf8(unchecked) {
        Ok(_) => frag.valid = frag.data.len(),
        Err(e) if e.error_len().is_none() && !fin => frag.valid += e.valid_up_to(),
        Err(_) => return Err(WsError::Utf8),
    }
    Ok(())
}

/// A client's close frame: no payload, or a code and a UTF-8 reason.
fn close_frame(payload: &[u8]) -> Result<Option<CloseFrame>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::Protocol("close frame with a one-byte payload")),
        [hi, lo, reason @ ..] => {
            let reason = std::str::from_utf8(reason).map_err(|_| WsError::Utf8)?;
            Ok(Some(CloseFrame {
                code: u16::from_be_bytes([*hi, *lo]),
                reason: Utf8Bytes::from(reason),
            }))
        }
    }
}

/// Unmasks (or masks) `payload` with `key`, in place.
pub(crate) fn unmask(payload: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so at key byte 0.
    for (b, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *b ^= k;
    }
}

/// A masked client frame with a first byte (FIN, RSV, opcode) of `first`, for the tests of
/// the reader and of the socket.
#[cfg(test)]
pub(crate) fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0xa1, 0x02, 0xf3, 0x44];
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

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
