//! `POST /api/v1/publish` and `POST /api/v1/broadcast`: events from the application's backend.
//!
//! The event reaches members as an `event` frame with `from: "server"` and an empty `user_id`,
//! in the room's `seq` order, kept in the room's history like any other, and deduplicated by
//! `id` as a member's publish is (a retried `id` answers the original `seq`).
//!
//! A room with nobody in it (connected or away) keeps nothing: the answer is 200
//! `{"delivered": false}` and no `seq` is spent. Publishing into a room that just emptied is a
//! normal race for a backend, not a mistake of its request, so it is not an error.

use axum::extract::State;
use axum::Json;
use futures_util::StreamExt;
use holdfast_protocol::{MAX_ID_LEN, MAX_ROOM_LEN};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{check_data, check_name, ApiError, ApiJson};
use crate::node::Node;

/// Rooms of one broadcast published at once.
const BROADCAST_CONCURRENCY: usize = 16;
/// Longest `traceparent` accepted (a W3C trace context is 55 characters).
const MAX_TRACEPARENT_LEN: usize = 128;

/// The body of `POST /api/v1/publish`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The room.
    pub room: String,
    /// The event's data, any JSON value.
    pub data: Value,
    /// Idempotency key, deduplicated per room like a client message id.
    #[serde(default)]
    pub id: Option<String>,
    /// W3C trace context passed through to the event.
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// The body of `POST /api/v1/broadcast`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastRequest {
    /// The rooms, each published to once (in the given order).
    pub rooms: Vec<String>,
    /// The event's data.
    pub data: Value,
    /// Idempotency key, deduplicated in each room.
    #[serde(default)]
    pub id: Option<String>,
}

/// The outcome of a publish into one room.
#[derive(Debug, Serialize)]
pub struct Published {
    /// Whether the room had members, so the event was delivered and kept.
    pub delivered: bool,
    /// The event's seq.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The room's epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// One room's line of a broadcast's answer: the outcome, or the error for that room.
#[derive(Debug, Serialize)]
pub struct RoomResult {
    /// The room.
    pub room: String,
    /// The outcome (absent after an error).
    #[serde(flatten)]
    pub published: Option<Published>,
    /// `{code, message}` when this room failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

fn check_id(id: Option<&str>) -> Result<(), ApiError> {
    match id {
        Some(id) => check_name("id", id, MAX_ID_LEN),
        None => Ok(()),
    }
}

async fn publish_one(
    node: &Node,
    room: &str,
    data: Value,
    id: Option<String>,
    traceparent: Option<String>,
) -> Result<Published, ApiError> {
    use opentelemetry::context::FutureExt as _;
    let store = &node.inner.store;
    let r = match node.telemetry().enabled() {
        false => store.server_publish(room, data, id, traceparent).await,
        // With tracing on, a `room.publish` span under the body's `traceparent` (else the
        // request's span), which the receivers continue.
        true => {
            let parent = crate::telemetry::parent_from(
                traceparent.as_deref(),
                &opentelemetry::Context::current(),
            );
            let attributes = vec![
                opentelemetry::KeyValue::new("holdfast.room", crate::telemetry::bounded(room)),
                opentelemetry::KeyValue::new("holdfast.node_id", node.id().to_owned()),
            ];
            let kind = opentelemetry::trace::SpanKind::Internal;
            match node
                .telemetry()
                .start("room.publish", kind, &parent, attributes)
            {
                None => store.server_publish(room, data, id, traceparent).await,
                Some(cx) => {
                    let tp = crate::telemetry::traceparent_of(&cx).or(traceparent);
                    let r = store
                        .server_publish(room, data, id, tp)
                        .with_context(cx.clone())
                        .await;
                    match &r {
                        Ok(_) => crate::telemetry::end(&cx, "ok", false),
                        Err(e) => crate::telemetry::end(&cx, e.code.as_str(), true),
                    }
                    r
                }
            }
        }
    };
    let r = r.map_err(ApiError::room)?;
    Ok(match r {
        Some((seq, epoch)) => Published {
            delivered: true,
            seq: Some(seq),
            epoch: Some(epoch),
        },
        None => Published {
            delivered: false,
            seq: None,
            epoch: None,
        },
    })
}

/// `POST /api/v1/publish`.
pub async fn publish(
    State(node): State<Node>,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<Json<Published>, ApiError> {
    check_name("room", &req.room, MAX_ROOM_LEN)?;
    check_id(req.id.as_deref())?;
    if let Some(t) = &req.traceparent {
        check_name("traceparent", t, MAX_TRACEPARENT_LEN)?;
    }
    check_data(&node, &req.data)?;
    publish_one(&node, &req.room, req.data, req.id, req.traceparent)
        .await
        .map(Json)
}

/// `POST /api/v1/broadcast`: `{"results": [...]}`, one line per room, in the given order.
pub async fn broadcast(
    State(node): State<Node>,
    ApiJson(req): ApiJson<BroadcastRequest>,
) -> Result<Json<Value>, ApiError> {
    let max = node.config().api.max_broadcast_rooms;
    if req.rooms.is_empty() || req.rooms.len() > max {
        return Err(ApiError::bad_request(format!(
            "`rooms` must list between 1 and {max} rooms (api.max_broadcast_rooms)"
        )));
    }
    for room in &req.rooms {
        check_name("rooms[]", room, MAX_ROOM_LEN)?;
    }
    check_id(req.id.as_deref())?;
    check_data(&node, &req.data)?;
    let results: Vec<RoomResult> = futures_util::stream::iter(req.rooms)
        .map(|room| {
            let (node, data, id) = (node.clone(), req.data.clone(), req.id.clone());
            async move {
                match publish_one(&node, &room, data, id, None).await {
                    Ok(p) => RoomResult {
                        room,
                        published: Some(p),
                        error: None,
                    },
                    Err(e) => RoomResult {
                        room,
                        published: None,
                        error: Some(e.body()),
                    },
                }
            }
        })
        .buffered(BROADCAST_CONCURRENCY)
        .collect()
        .await;
    Ok(Json(serde_json::json!({ "results": results })))
}
