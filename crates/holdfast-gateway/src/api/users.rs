//! `POST /api/v1/send`, `POST /api/v1/disconnect`, `GET /api/v1/users/{user}`: a user's
//! session, wherever it lives in the cluster.
//!
//! A message from the backend reaches the user as a `message` frame with an empty `from` (a
//! user id is never empty, so it names no user). A user with no live session is not an error:
//! the answer says `delivered: false` (`disconnected: false`), as for a publish into an empty
//! room. Both are at most once: a node that vanishes meanwhile delivers nothing.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use holdfast_protocol::{CloseCode, Direct, ServerFrame, MAX_USER_LEN};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{check_data, check_name, ApiError, ApiJson};
use crate::auth::unix_now_ms;
use crate::broker::NodeSink;
use crate::node::Node;

/// Longest `reason` of a disconnect.
const MAX_REASON_LEN: usize = 256;

/// The body of `POST /api/v1/send`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The user.
    pub user: String,
    /// The message's data.
    pub data: Value,
}

/// The body of `POST /api/v1/disconnect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectRequest {
    /// The user.
    pub user: String,
    /// The close code; only 4007 (`disconnected_by_server`, the default) for now.
    #[serde(default)]
    pub code: Option<u16>,
    /// Why, for the node's log (the close frame carries the code's own reason).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Where a user's session is.
#[derive(Debug, Serialize)]
pub struct UserView {
    /// The user.
    pub user: String,
    /// Whether the user has a live session.
    pub online: bool,
    /// The node holding it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The session's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// `POST /api/v1/send`: `{"delivered": bool}`.
pub async fn send(
    State(node): State<Node>,
    ApiJson(req): ApiJson<SendRequest>,
) -> Result<Json<Value>, ApiError> {
    check_name("user", &req.user, MAX_USER_LEN)?;
    check_data(&node, &req.data)?;
    let text = crate::room::encode(&ServerFrame::Message(Direct {
        from: String::new(),
        ts: unix_now_ms(),
        data: req.data,
    }));
    let inner = &node.inner;
    let delivered = inner.registry.deliver(&req.user, &text)
        || inner.broker.route_direct(&inner.id, &req.user, text).await;
    Ok(Json(serde_json::json!({ "delivered": delivered })))
}

/// `POST /api/v1/disconnect`: `{"disconnected": bool}`; the session closes with 4007.
pub async fn disconnect(
    State(node): State<Node>,
    ApiJson(req): ApiJson<DisconnectRequest>,
) -> Result<Json<Value>, ApiError> {
    check_name("user", &req.user, MAX_USER_LEN)?;
    let code = CloseCode::DisconnectedByServer;
    if req.code.is_some_and(|c| c != code.code()) {
        return Err(ApiError::bad_request(format!(
            "`code` must be {} (disconnected_by_server)",
            code.code()
        )));
    }
    if req
        .reason
        .as_ref()
        .is_some_and(|r| r.len() > MAX_REASON_LEN)
    {
        return Err(ApiError::bad_request(format!(
            "`reason` is longer than {MAX_REASON_LEN} bytes"
        )));
    }
    let inner = &node.inner;
    let disconnected = if inner.close_user(&req.user, None, code) {
        true
    } else {
        inner.broker.disconnect_user(&inner.id, &req.user).await
    };
    tracing::info!(
        user = %req.user,
        reason = req.reason.as_deref().unwrap_or(""),
        disconnected,
        "user disconnected by the server API"
    );
    Ok(Json(serde_json::json!({ "disconnected": disconnected })))
}

/// `GET /api/v1/users/{user}`.
pub async fn user(
    State(node): State<Node>,
    user: Result<Path<String>, PathRejection>,
) -> Result<Json<UserView>, ApiError> {
    let Path(user) = user.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_name("user", &user, MAX_USER_LEN)?;
    let inner = &node.inner;
    let found = match inner.session_of(&user) {
        Some(s) => Some((inner.id.to_string(), s.to_string())),
        None => inner.broker.locate_user(&user).await,
    };
    Ok(Json(UserView {
        user,
        online: found.is_some(),
        node: found.as_ref().map(|(n, _)| n.clone()),
        session: found.map(|(_, s)| s),
    }))
}
