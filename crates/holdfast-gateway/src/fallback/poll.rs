//! `GET /poll` and the send endpoints `POST /sse/send` and `POST /poll/send`.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use holdfast_protocol::CloseCode;
use serde::{Deserialize, Serialize};

use super::{open, request_claims, Closed, FallbackSession};
use crate::node::Node;

/// Query of `GET /poll` and of the send endpoints.
#[derive(Debug, Deserialize)]
pub struct PollQuery {
    token: Option<String>,
    session: Option<String>,
    after: Option<u64>,
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
/// `fallback.poll_timeout_ms` for frames after `after`.
pub async fn poll(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Query(q): Query<PollQuery>,
    headers: HeaderMap,
) -> Response {
    let claims = match request_claims(&node, q.token.as_deref(), &headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let Some(sid) = q.session else {
        let fs = match open(&node, claims, peer.ip()).await {
            Ok(fs) => fs,
            Err(r) => return r.into_response(),
        };
        // Let the session task queue `welcome` before answering.
        let mut rx = fs.changed.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|n| *n > 0)).await;
        let frames = fs.frames_after(0).unwrap_or_default();
        return poll_body(&fs, frames);
    };
    let Some(fs) = node.inner.fallback.get(&sid) else {
        return (StatusCode::NOT_FOUND, "unknown_session\n").into_response();
    };
    if *fs.user != *claims.sub {
        return (StatusCode::UNAUTHORIZED, "auth_failed\n").into_response();
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
pub async fn send(
    State(node): State<Node>,
    Query(q): Query<PollQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let claims = match request_claims(&node, q.token.as_deref(), &headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let Some(fs) = q
        .session
        .as_deref()
        .and_then(|s| node.inner.fallback.get(s))
    else {
        return (StatusCode::NOT_FOUND, "unknown_session\n").into_response();
    };
    if *fs.user != *claims.sub {
        return (StatusCode::UNAUTHORIZED, "auth_failed\n").into_response();
    }
    if body.len() > node.config().limits.max_message_bytes {
        return (StatusCode::PAYLOAD_TOO_LARGE, "message_too_big\n").into_response();
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "body must be UTF-8 JSON\n").into_response();
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
            return (StatusCode::TOO_MANY_REQUESTS, "rate_limited\n").into_response();
        }
    }
    StatusCode::ACCEPTED.into_response()
}
