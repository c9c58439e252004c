//! `GET /sse`: Server-Sent Events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use holdfast_protocol::CloseCode;
use serde::Deserialize;
use tokio::sync::watch;

use super::{open, open_stream, refused, Closed, ConnExt, FallbackSession};
use crate::limits::Slot;
use crate::node::Node;

/// Query of `GET /sse`.
#[derive(Debug, Deserialize)]
pub struct SseQuery {
    token: Option<String>,
    last_event_id: Option<String>,
    /// The device id, for `session.single_socket = "device"` when the token names none.
    device: Option<String>,
}

fn parse_event_id(s: &str) -> Option<(&str, u64)> {
    let (sid, n) = s.rsplit_once('.')?;
    Some((sid, n.parse().ok()?))
}

/// `GET /sse`: opens (or, with `Last-Event-ID`, reattaches to) a session and streams its
/// frames. Every stream, new or reattached, takes a stream slot of its address; the connection
/// gives its pending slot back and closes when the stream ends.
pub async fn sse(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    conn: ConnExt,
    Query(q): Query<SseQuery>,
    headers: HeaderMap,
) -> Response {
    let (claims, slot) = match open_stream(&node, q.token.as_deref(), &headers, peer.ip()).await {
        Ok(x) => x,
        Err(r) => return refused(&node, r),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(q.last_event_id);
    let mut start = None;
    if let Some(id) = resume.as_deref() {
        if let Some((sid, n)) = parse_event_id(id) {
            if let Some(fs) = node.inner.fallback.get(sid) {
                if *fs.user == *claims.sub && fs.lock().closed.is_none() {
                    start = Some((fs, n));
                }
            }
        }
    }
    let (fs, after) = match start {
        Some(x) => x,
        None => match open(
            &node,
            claims.with_device(q.device.as_deref()),
            peer.ip(),
            crate::metrics::Transport::Sse,
        )
        .await
        {
            Ok(fs) => (fs, 0),
            Err(r) => return refused(&node, r),
        },
    };
    let gen = {
        let mut ob = fs.lock();
        ob.stream_gen += 1;
        ob.streaming = true;
        ob.last_seen = Instant::now();
        ob.stream_gen
    };
    // An older stream of the session wakes up, sees the newer generation and ends.
    fs.changed.send_modify(|_| {});
    let state = StreamState {
        rx: fs.changed.subscribe(),
        fs,
        next: after,
        gen,
        done: false,
        _slot: slot,
    };
    if let Some(Extension(c)) = conn {
        c.release();
    }
    let stream = futures_util::stream::unfold(state, next_sse_batch);
    let ka = Duration::from_millis(node.config().heartbeat.ping_interval_ms);
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(ka).text("ka"))
        .into_response();
    // The connection no longer holds a pending slot: it ends with the stream.
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Per-stream state of an SSE response.
struct StreamState {
    fs: Arc<FallbackSession>,
    rx: watch::Receiver<u64>,
    /// The last position sent on this stream.
    next: u64,
    gen: u64,
    done: bool,
    /// The stream's admission, held while the stream is open.
    _slot: Slot,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        let mut ob = self.fs.lock();
        if ob.stream_gen == self.gen {
            ob.streaming = false;
            ob.last_seen = Instant::now();
        }
    }
}

/// Yields the next SSE event(s) as one chunk: pending frames, or the close, or waits.
async fn next_sse_batch(
    mut st: StreamState,
) -> Option<(Result<SseEvent, Infallible>, StreamState)> {
    loop {
        if st.done {
            return None;
        }
        if st.fs.lock().stream_gen != st.gen {
            return None;
        }
        match st.fs.frames_after(st.next) {
            Err(()) => {
                st.done = true;
                let closed = Closed {
                    code: CloseCode::SlowConsumer.code(),
                    reason: CloseCode::SlowConsumer.reason(),
                };
                let ev = SseEvent::default()
                    .event("close")
                    .data(serde_json::to_string(&closed).unwrap_or_default());
                return Some((Ok(ev), st));
            }
            Ok(frames) => {
                if let Some((n, text)) = frames.into_iter().next() {
                    st.next = n;
                    let ev = SseEvent::default()
                        .id(format!("{}.{n}", st.fs.id))
                        .data(text.as_str());
                    return Some((Ok(ev), st));
                }
            }
        }
        let closed = st.fs.lock().closed;
        if let Some(closed) = closed {
            st.done = true;
            let ev = SseEvent::default()
                .event("close")
                .data(serde_json::to_string(&closed).unwrap_or_default());
            return Some((Ok(ev), st));
        }
        if st.rx.changed().await.is_err() {
            return None;
        }
    }
}
