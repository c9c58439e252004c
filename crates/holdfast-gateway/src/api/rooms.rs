//! `GET /api/v1/rooms/{room}`, `GET /api/v1/rooms/{room}/history`, `GET /api/v1/rooms`: what
//! the room store holds, from any node.
//!
//! History answers the room messages still held with `from <= seq <= to`, in order, exactly as
//! they were sent to members (the stored frames are copied into the answer, never parsed and
//! serialised again). Asked for the range a `gap` names, it returns exactly those messages when
//! the room still holds them; when it does not, fewer (the `seq` of each says which).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use holdfast_protocol::{Member, MAX_ROOM_LEN};
use serde::{Deserialize, Serialize};

use super::{check_limit, check_name, ApiError};
use crate::node::Node;

/// Longest `prefix` or `cursor` of a listing.
const MAX_CURSOR_LEN: usize = 1_024;

/// A room as `GET /api/v1/rooms/{room}` shows it.
#[derive(Debug, Serialize)]
pub struct RoomView {
    /// The room.
    pub room: String,
    /// Number of members, connected or away.
    pub member_count: usize,
    /// Every member with its status.
    pub members: Vec<Member>,
    /// The player id holding authority (null when nobody does).
    pub authority: Option<String>,
    /// The room's current seq.
    pub seq: u64,
    /// The room's epoch.
    pub epoch: String,
}

/// The query of a history request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// First seq (default 1).
    pub from: Option<u64>,
    /// Last seq (default: the newest).
    pub to: Option<u64>,
    /// Most messages answered (default 100, at most 1,000); the oldest come first.
    pub limit: Option<usize>,
    /// The epoch the range belongs to (a `gap`'s): when the room's stream has another epoch
    /// now, none of the range is held, and the answer is empty.
    pub epoch: Option<String>,
}

/// The query of a room listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only names starting with this.
    #[serde(default)]
    pub prefix: String,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: String,
    /// Page size (default 100, at most 1,000).
    pub limit: Option<usize>,
}

fn room_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(room) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_name("room", &room, MAX_ROOM_LEN)?;
    Ok(room)
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// `GET /api/v1/rooms/{room}`: 404 `not_found` when nobody is in the room.
pub async fn room(
    State(node): State<Node>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<RoomView>, ApiError> {
    let room = room_path(path)?;
    let info = node
        .inner
        .store
        .info(&room)
        .await
        .map_err(ApiError::room)?
        .ok_or_else(|| ApiError::not_found("nobody is in the room"))?;
    Ok(Json(RoomView {
        room,
        member_count: info.members.len(),
        members: info.members,
        authority: info.authority,
        seq: info.seq,
        epoch: info.epoch,
    }))
}

/// `GET /api/v1/rooms/{room}/history`: `{"room", "events": [frames as sent]}`.
pub async fn history(
    State(node): State<Node>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let room = room_path(path)?;
    let q = query(q)?;
    let limit = check_limit(q.limit)?;
    let from = q.from.unwrap_or(1);
    let to = q.to.unwrap_or(u64::MAX);
    if from > to {
        return Err(ApiError::bad_request(
            "`from` must not be greater than `to`",
        ));
    }
    let store = &node.inner.store;
    if let Some(epoch) = &q.epoch {
        let current = store.info(&room).await.map_err(ApiError::room)?;
        if current.is_none_or(|i| i.epoch != *epoch) {
            return Ok(history_body(&room, &[]));
        }
    }
    let held = store
        .history(&room, from, to)
        .await
        .map_err(ApiError::room)?;
    Ok(history_body(&room, &held[..held.len().min(limit)]))
}

/// `{"room": ..., "events": [...]}` with the stored frames copied in as they are.
fn history_body(room: &str, events: &[crate::room::stream::Buffered]) -> Response {
    let room_json = serde_json::to_string(room).unwrap_or_else(|_| "\"\"".into());
    let size = room_json.len() + 32 + events.iter().map(|b| b.text.len() + 1).sum::<usize>();
    let mut body = String::with_capacity(size);
    body.push_str("{\"room\":");
    body.push_str(&room_json);
    body.push_str(",\"events\":[");
    for (i, b) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(b.text.as_str());
    }
    body.push_str("]}");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /api/v1/rooms`: `{"rooms": [names], "next_cursor": string|null}`.
pub async fn list(
    State(node): State<Node>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query(q)?;
    let limit = check_limit(q.limit)?;
    if q.prefix.len() > MAX_ROOM_LEN {
        return Err(ApiError::bad_request(format!(
            "`prefix` is longer than {MAX_ROOM_LEN} bytes"
        )));
    }
    if q.cursor.len() > MAX_CURSOR_LEN {
        return Err(ApiError::bad_request(
            "`cursor` is not one this API returned",
        ));
    }
    let (rooms, next) = node
        .inner
        .store
        .list(&q.prefix, &q.cursor, limit)
        .await
        .map_err(ApiError::room)?;
    Ok(Json(
        serde_json::json!({ "rooms": rooms, "next_cursor": next }),
    ))
}

/// The body of `POST /api/v1/rooms/{room}/state`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateRequest {
    /// The new state: any JSON value (raw bytes as `{"$base64": "..."}`), at most the room's
    /// `state_bytes` once serialised.
    pub state: serde_json::Value,
}

/// `POST /api/v1/rooms/{room}/state`: replaces the room's state; members get `state_set` in
/// the room's `seq` order. Like a publish, a room with nobody in it keeps nothing
/// (`{"delivered": false}`).
pub async fn set_state(
    State(node): State<Node>,
    path: Result<Path<String>, PathRejection>,
    super::ApiJson(req): super::ApiJson<StateRequest>,
) -> Result<Json<super::publish::Published>, ApiError> {
    let room = room_path(path)?;
    let r = node
        .inner
        .store
        .server_set_state(&room, req.state)
        .await
        .map_err(ApiError::room)?;
    Ok(Json(match r {
        Some((seq, epoch)) => super::publish::Published {
            delivered: true,
            seq: Some(seq),
            epoch: Some(epoch),
        },
        None => super::publish::Published {
            delivered: false,
            seq: None,
            epoch: None,
        },
    }))
}
