//! `GET /poll` and the send endpoints `POST /sse/send` and `POST /poll/send`.

use std::time::{Duration, Instant};

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::ws::Utf8Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use holdfast_protocol::CloseCode;
use serde::{Deserialize, Serialize};

use super::{check_request, open, open_stream, refused, Closed, ConnExt, FallbackSession};
use crate::auth::Claims;
use crate::limits::{check_content_length, read_body, Refusal};
use crate::node::Node;

/// Query of `GET /poll` and of the send endpoints.
#[derive(Debug, Deserialize)]
pub struct PollQuery {
    token: Option<String>,
    session: Option<String>,
    after: Option<u64>,
    /// The device id, for `session.single_socket = "device"` when the token names none.
    device: Option<String>,
}

/// One frame in a poll response.
#[derive(Debug, Serialize)]
struct PolledFrame {
    id: u64,
    frame: Box<serde_json::value::RawValue>,
}

/// A poll response.
#[derive(Debug, Serialize)]
struct PollResponse {
    session_id: String,
    frames: Vec<PolledFrame>,
    closed: Option<Closed>,
}

fn poll_body(fs: &FallbackSession, frames: Vec<(u64, Utf8Bytes)>) -> Response {
    let frames = frames
        .into_iter()
        .filter_map(|(id, text)| {
            serde_json::value::RawValue::from_string(text.as_str().to_owned())
                .ok()
                .map(|frame| PolledFrame { id, frame })
        })
        .collect::<Vec<_>>();
    let closed = if frames.is_empty() {
        fs.lock().closed
    } else {
        None
    };
    Json(PollResponse {
        session_id: fs.id.to_string(),
        frames,
        closed,
    })
    .into_response()
}

/// `GET /poll`: without `session`, opens a session and answers at once; with it, waits up to
/// `fallback.poll_timeout_ms` for frames after `after`. Every poll takes a stream slot of its
/// address; while it waits, its connection holds no pending slot, and takes one again before
/// returning to keep-alive (or closes after the answer when its address has no room).
pub async fn poll(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    conn: ConnExt,
    Query(q): Query<PollQuery>,
    headers: HeaderMap,
) -> Response {
    let (claims, slot) = match open_stream(&node, q.token.as_deref(), &headers, peer.ip()).await {
        Ok(x) => x,
        Err(r) => return refused(&node, r),
    };
    let conn = conn.map(|Extension(c)| c);
    if let Some(c) = &conn {
        c.release();
    }
    let mut resp = poll_admitted(&node, peer.ip(), claims, q).await;
    drop(slot);
    if let Some(c) = &conn {
        if !c.reacquire() {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    resp
}

async fn poll_admitted(node: &Node, ip: IpAddr, claims: Claims, q: PollQuery) -> Response {
    let Some(sid) = q.session else {
        let claims = claims.with_device(q.device.as_deref());
        let fs = match open(node, claims, ip, crate::metrics::Transport::LongPoll).await {
            Ok(fs) => fs,
            Err(r) => return refused(node, r),
        };
        // Let the session task queue `welcome` before answering.
        let mut rx = fs.changed.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|n| *n > 0)).await;
        let frames = fs.frames_after(0).unwrap_or_default();
        return poll_body(&fs, frames);
    };
    let Some(fs) = node.inner.fallback.get(&sid) else {
        return Refusal(StatusCode::NOT_FOUND, "unknown_session").into_response();
    };
    if *fs.user != *claims.sub {
        return refused(node, Refusal(StatusCode::UNAUTHORIZED, "auth_failed"));
    }
    let after = q.after.unwrap_or(0);
    {
        let mut ob = fs.lock();
        ob.last_seen = Instant::now();
        ob.acked = ob.acked.max(after);
    }
    let mut rx = fs.changed.subscribe();
    let wait = Duration::from_millis(node.config().fallback.poll_timeout_ms);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match fs.frames_after(after) {
            Err(()) => {
                return Json(PollResponse {
                    session_id: fs.id.to_string(),
                    frames: Vec::new(),
                    closed: Some(Closed {
                        code: CloseCode::SlowConsumer.code(),
                        reason: CloseCode::SlowConsumer.reason(),
                    }),
                })
                .into_response()
            }
            Ok(frames) if !frames.is_empty() => {
                fs.touch();
                return poll_body(&fs, frames);
            }
            Ok(_) => {}
        }
        if fs.lock().closed.is_some() {
            return poll_body(&fs, Vec::new());
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return poll_body(&fs, Vec::new()) },
            _ = tokio::time::sleep_until(deadline) => {
                fs.touch();
                return poll_body(&fs, Vec::new());
            }
        }
    }
}

/// `POST /sse/send` and `POST /poll/send`: one client frame, or a JSON array of them.
///
/// The token, the origin and the session are checked from the headers alone, and an announced
/// body over `limits.max_message_bytes` is refused, before anything of the body is read; it is
/// then read with that limit within `limits.body_timeout_ms`.
pub async fn send(
    State(node): State<Node>,
    Query(q): Query<PollQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let fs = match owned_session(&node, &q, &headers).await {
        Ok(fs) => fs,
        Err(r) => return r,
    };
    let limits = &node.config().limits;
    if let Err(r) = check_content_length(&headers, limits.max_message_bytes) {
        return r.into_response();
    }
    let timeout = Duration::from_millis(limits.body_timeout_ms);
    let body = match read_body(body, limits.max_message_bytes, timeout).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return Refusal(StatusCode::BAD_REQUEST, "bad_body").into_response();
    };
    let frames: Vec<String> = if text.trim_start().starts_with('[') {
        match serde_json::from_str::<Vec<Box<serde_json::value::RawValue>>>(text) {
            Ok(items) => items.into_iter().map(|r| r.get().to_owned()).collect(),
            // Not an array of values: hand it to the session, which answers `bad_json` or
            // `invalid_frame` like on a WebSocket.
            Err(_) => vec![text.to_owned()],
        }
    } else {
        vec![text.to_owned()]
    };
    fs.touch();
    for f in frames {
        if fs.inbound.try_send(f).is_err() {
            return Refusal(StatusCode::TOO_MANY_REQUESTS, "rate_limited").into_response();
        }
    }
    StatusCode::ACCEPTED.into_response()
}

/// The fallback session a send or an end names, once the request's token is checked and
/// names the session's user: 401 (with the auth log) for a bad token or another user's
/// session, 404 for an unknown session.
async fn owned_session(
    node: &Node,
    q: &PollQuery,
    headers: &HeaderMap,
) -> Result<std::sync::Arc<FallbackSession>, Response> {
    let claims = check_request(node, q.token.as_deref(), headers)
        .await
        .map_err(|r| refused(node, r))?;
    let fs = q
        .session
        .as_deref()
        .and_then(|s| node.inner.fallback.get(s))
        .ok_or_else(|| Refusal(StatusCode::NOT_FOUND, "unknown_session").into_response())?;
    if *fs.user != *claims.sub {
        return Err(refused(
            node,
            Refusal(StatusCode::UNAUTHORIZED, "auth_failed"),
        ));
    }
    Ok(fs)
}

/// `DELETE /sse?session=<id>` and `DELETE /poll?session=<id>`: the client ends its session at
/// once, as a WebSocket client closing with 1000 does (its memberships turn away and may be
/// resumed within the reconnection window). 204 when it ended, 404 when it did not exist.
pub async fn end(
    State(node): State<Node>,
    Query(q): Query<PollQuery>,
    headers: HeaderMap,
) -> Response {
    let fs = match owned_session(&node, &q, &headers).await {
        Ok(fs) => fs,
        Err(r) => return r,
    };
    fs.handle.close(CloseCode::Normal);
    StatusCode::NO_CONTENT.into_response()
}
