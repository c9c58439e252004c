//! The outbox of a fallback session: a bounded ring of numbered frames.

use std::collections::VecDeque;
use std::sync::MutexGuard;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use holdfast_protocol::CloseCode;

use super::{Closed, FallbackSession};

/// The numbered frames of one fallback session.
#[derive(Debug)]
pub(super) struct Outbox {
    /// `(n, frame)`, oldest first, at most `fallback.replay_frames`.
    pub(super) frames: VecDeque<(u64, Utf8Bytes)>,
    /// The last position handed out.
    pub(super) last: u64,
    /// Positions up to this one were acknowledged by a poll and may be dropped.
    pub(super) acked: u64,
    /// Set when the session ended.
    pub(super) closed: Option<Closed>,
    /// When a client last polled, streamed or sent.
    pub(super) last_seen: Instant,
    /// Generation of the attached SSE stream; an older stream ends when a newer one attaches.
    pub(super) stream_gen: u64,
    /// Whether an SSE stream is attached.
    pub(super) streaming: bool,
}

impl FallbackSession {
    pub(super) fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn touch(&self) {
        self.lock().last_seen = Instant::now();
    }

    /// Frames after position `after`, or `Err` when some of them were already dropped.
    pub(super) fn frames_after(&self, after: u64) -> Result<Vec<(u64, Utf8Bytes)>, ()> {
        let ob = self.lock();
        let oldest = ob.frames.front().map(|(n, _)| *n).unwrap_or(ob.last + 1);
        if after + 1 < oldest {
            return Err(());
        }
        Ok(ob
            .frames
            .iter()
            .filter(|(n, _)| *n > after)
            .cloned()
            .collect())
    }
}

/// Appends a frame to the outbox. Returns false when a frame the client has not acknowledged
/// would be dropped (the session must close as a slow consumer).
pub(super) fn push(fs: &FallbackSession, text: Utf8Bytes, capacity: usize) -> bool {
    let mut ob = fs.lock();
    ob.last += 1;
    let n = ob.last;
    ob.frames.push_back((n, text));
    let mut ok = true;
    while ob.frames.len() > capacity {
        if let Some((old, _)) = ob.frames.pop_front() {
            // A streamed frame counts as delivered unless the stream reconnects from before it;
            // a polled frame must have been acknowledged.
            if old > ob.acked && !ob.streaming {
                ok = false;
            }
        }
    }
    drop(ob);
    fs.changed.send_replace(n);
    ok
}

pub(super) fn close_outbox(fs: &FallbackSession, code: CloseCode) {
    let mut ob = fs.lock();
    ob.closed = Some(Closed {
        code: code.code(),
        reason: code.reason(),
    });
    let last = ob.last;
    drop(ob);
    fs.changed.send_replace(last);
}
