//! The server API: how the application's backend speaks to Holdfast, on the node's internal
//! listener (`api.listen`, default `127.0.0.1:8081`), never on the public one.
//!
//! Every `/api/v1` request needs `Authorization: Bearer <key>` with one of `api.keys`
//! (compared in constant time; several keys so one can be rotated). Bodies are JSON, or
//! MessagePack with `Content-Type: application/msgpack` (binary `data` as `bin`); answers are
//! JSON; every error is `{code, message}` with the protocol's stable error codes plus
//! `unauthorized` (401), `not_found` (404) and `bad_request` (400, 408, 413). The description
//! of record is docs/api/openapi.yaml.
//!
//! Endpoints:
//! - `POST /api/v1/publish`: an `event` from the server in a room ([`publish`]).
//! - `POST /api/v1/broadcast`: the same event in several rooms, a result per room.
//! - `POST /api/v1/send`: a `message` to a user's session on any node ([`users`]).
//! - `POST /api/v1/disconnect`: closes a user's session on any node with 4007.
//! - `GET /api/v1/users/{user}`: whether the user is online, on which node, which session.
//! - `GET /api/v1/rooms/{room}`: members, authority, seq, epoch ([`rooms`]).
//! - `GET /api/v1/rooms/{room}/history`: the room messages still held, exactly as sent.
//! - `GET /api/v1/rooms`: room names by prefix, paged.
//! - `GET /api/v1/nodes`: the cluster view ([`nodes`]).
//! - `GET /metrics`: Prometheus text format, without a key (for the scraper).
//! - `GET /healthz`: 200 while the process serves requests, without a key.
//! - `GET /admin`: the admin page, without a key; its every data call is one of the above
//!   (see [`crate::admin`]).
//!
//! Bounds: `api.max_connections` connections at once, `limits.handshake_timeout_ms` for the
//! headers, `limits.body_timeout_ms` and `api.max_body_bytes` for the body, `limit`
//! parameters capped at [`MAX_LIMIT`], `api.max_broadcast_rooms` rooms per broadcast. The
//! listener stops accepting when the node drains.

pub mod nodes;
pub mod publish;
pub mod rooms;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use holdfast_protocol::ErrorCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::node::Node;
use crate::room::RoomError;

/// Largest `limit` a listing or history request may ask for.
pub const MAX_LIMIT: usize = 1_000;
/// `limit` when a request gives none.
pub const DEFAULT_LIMIT: usize = 100;

/// An API error: an HTTP status and the `{code, message}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable code: a protocol error code, or `unauthorized`, `not_found`, `bad_request`.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl ApiError {
    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }

    fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "a valid `Authorization: Bearer <key>` header is required".into(),
        }
    }

    /// The error a room operation failed with: 503 when the store is unreachable (retry),
    /// 500 for an unexpected failure, 409 for a refusal by the room rules.
    pub fn room(e: RoomError) -> ApiError {
        let status = match e.code {
            ErrorCode::BrokerUnavailable | ErrorCode::Draining => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::CONFLICT,
        };
        ApiError {
            status,
            code: e.code.as_str(),
            message: e.message.into(),
        }
    }

    /// The `{code, message}` body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code, "message": self.message})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// A JSON body read within `limits.body_timeout_ms` and `api.max_body_bytes`, parsed strictly
/// (unknown fields are refused by the request types).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Node> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, node: &Node) -> Result<Self, ApiError> {
        let limit = node.config().api.max_body_bytes;
        let wait = Duration::from_millis(node.config().limits.body_timeout_ms);
        let msgpack = is_msgpack(req.headers());
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let bytes = match tokio::time::timeout(wait, read_body(req.into_body(), limit)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ApiError {
                    status: StatusCode::REQUEST_TIMEOUT,
                    code: "bad_request",
                    message: "the request body did not arrive within limits.body_timeout_ms".into(),
                })
            }
        };
        if msgpack {
            // The same request types: MessagePack decodes into the JSON value model (raw
            // `bin` data becomes `{"$base64": …}`, which rooms deliver as bytes).
            let value = holdfast_protocol::msgpack::msgpack_to_value(&bytes)
                .map_err(|e| ApiError::bad_request(format!("invalid MessagePack body: {e}")))?;
            return serde_json::from_value(value)
                .map(ApiJson)
                .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")));
        }
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Whether the body is MessagePack (`Content-Type: application/msgpack`, or the
/// `application/x-msgpack` and `application/vnd.msgpack` spellings); anything else is read as
/// JSON.
fn is_msgpack(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .is_some_and(|t| {
            matches!(
                t.as_str(),
                "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack"
            )
        })
}

fn too_large(limit: usize) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "bad_request",
        message: format!("the request body is larger than api.max_body_bytes ({limit})"),
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::bad_request("the request body could not be read"))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Checks a name field: not empty, at most `max` bytes, no control characters.
pub(crate) fn check_name(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::bad_request(format!(
            "`{field}` must not be empty"
        )));
    }
    if value.len() > max {
        return Err(ApiError::bad_request(format!(
            "`{field}` is longer than {max} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "`{field}` must not contain control characters"
        )));
    }
    Ok(())
}

/// Checks that `data` fits in a client's message bound once serialised.
pub(crate) fn check_data(node: &Node, data: &serde_json::Value) -> Result<(), ApiError> {
    let max = node.config().limits.max_message_bytes;
    let len = serde_json::to_vec(data)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if len > max {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "bad_request",
            message: format!("`data` is larger than limits.max_message_bytes ({max})"),
        });
    }
    Ok(())
}

/// A `limit` parameter: [`DEFAULT_LIMIT`] when absent, 1..=[`MAX_LIMIT`] otherwise.
pub(crate) fn check_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        ))),
    }
}

/// The hashes of the accepted keys: comparing fixed-size digests in constant time does not
/// reveal a key's length or its first differing byte.
struct Keys(Vec<[u8; 32]>);

impl Keys {
    fn new(keys: &[String]) -> Keys {
        Keys(keys.iter().map(|k| digest(k.trim())).collect())
    }

    /// Whether `presented` is one of the keys; every key is compared, whatever matches.
    fn accepts(&self, presented: &str) -> bool {
        let d = digest(presented);
        let mut ok = subtle::Choice::from(0);
        for k in &self.0 {
            ok |= k.ct_eq(&d);
        }
        bool::from(ok)
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

async fn authenticate(State(keys): State<Arc<Keys>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(key) if !key.is_empty() && keys.accepts(key) => next.run(req).await,
        _ => ApiError::unauthorized().into_response(),
    }
}

/// With tracing on, each server API call is an `api.request` span under the request's
/// `traceparent` header, with its method, route (the template, so bounded) and status.
async fn trace_request(State(node): State<Node>, req: Request, next: Next) -> Response {
    use opentelemetry::context::FutureExt as _;
    use opentelemetry::trace::TraceContextExt as _;
    use opentelemetry::KeyValue;
    if !node.telemetry().enabled() {
        return next.run(req).await;
    }
    let tp = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    let parent = crate::telemetry::parent_from(tp, &opentelemetry::Context::new());
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("other", |m| m.as_str())
        .to_owned();
    let attributes = vec![
        KeyValue::new("http.request.method", req.method().as_str().to_owned()),
        KeyValue::new("http.route", route),
        KeyValue::new("holdfast.node_id", node.id().to_owned()),
    ];
    let kind = opentelemetry::trace::SpanKind::Server;
    let Some(cx) = node
        .telemetry()
        .start("api.request", kind, &parent, attributes)
    else {
        return next.run(req).await;
    };
    let res = next.run(req).with_context(cx.clone()).await;
    let status = res.status();
    cx.span().set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    let outcome = if status.is_success() { "ok" } else { "error" };
    crate::telemetry::end(&cx, outcome, status.is_server_error());
    res
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// The internal listener's routes.
pub fn router(node: Node) -> Router {
    let keys = Arc::new(Keys::new(&node.config().api.keys));
    let api = Router::new()
        .route("/api/v1/publish", post(publish::publish))
        .route("/api/v1/broadcast", post(publish::broadcast))
        .route("/api/v1/send", post(users::send))
        .route("/api/v1/disconnect", post(users::disconnect))
        .route("/api/v1/users/{user}", get(users::user))
        .route("/api/v1/rooms", get(rooms::list))
        .route("/api/v1/rooms/{room}", get(rooms::room))
        .route("/api/v1/rooms/{room}/history", get(rooms::history))
        .route("/api/v1/rooms/{room}/state", post(rooms::set_state))
        .route("/api/v1/nodes", get(nodes::nodes))
        .route("/api/v1/{*rest}", axum::routing::any(unknown_route))
        .layer(axum::middleware::from_fn_with_state(keys, authenticate))
        .route_layer(axum::middleware::from_fn_with_state(
            node.clone(),
            trace_request,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(api)
        .merge(crate::metrics::router(node.clone()))
        .merge(crate::admin::router())
        .fallback(unknown_route)
        .with_state(node)
}

/// Serves the internal listener until the node drains; connections in flight then get a
/// graceful shutdown of at most five seconds.
pub async fn serve(listener: TcpListener, node: Node) {
    let router = router(node.clone());
    let cancel = node.inner.drain.token().clone();
    let header_timeout = Duration::from_millis(node.config().limits.handshake_timeout_ms);
    // Bounds the connections held at once; a connection waits in the accept queue for a permit.
    let permits = Arc::new(Semaphore::new(node.config().api.max_connections));
    // The API's own tracker: the drain waits for sessions, not for API callers.
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, _peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "api accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let router = router.clone();
                    async move { tower::ServiceExt::oneshot(router, req).await }
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(6), tracker.wait()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_configured_key_is_accepted_and_nothing_else() {
        let keys = Keys::new(&[
            "first-key-0123456789".into(),
            " second-key-0123456789 ".into(),
        ]);
        assert!(keys.accepts("first-key-0123456789"));
        assert!(keys.accepts("second-key-0123456789"));
        assert!(!keys.accepts("first-key-012345678"));
        assert!(!keys.accepts(""));
        assert!(!Keys::new(&[]).accepts("first-key-0123456789"));
    }

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(check_limit(None), Ok(DEFAULT_LIMIT));
        assert_eq!(check_limit(Some(MAX_LIMIT)), Ok(MAX_LIMIT));
        assert!(check_limit(Some(0)).is_err());
        assert!(check_limit(Some(MAX_LIMIT + 1)).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("room", "lobby", 128).is_ok());
        assert!(check_name("room", "", 128).is_err());
        assert!(check_name("room", "a\nb", 128).is_err());
        assert!(check_name("room", &"x".repeat(129), 128).is_err());
    }
}
