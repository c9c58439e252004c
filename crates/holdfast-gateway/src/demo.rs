//! The demo page: a room chat built on the TypeScript client, served by the gateway itself.
//!
//! Endpoints:
//! - `GET /demo`: the page (`assets/demo.html`). It takes `?token=` and `?room=` from its URL.
//! - `GET /demo/holdfast.js`: the bundled browser client (`assets/holdfast-client.js`, built
//!   from `clients/ts` by `npm run bundle`; a test in clients/ts fails when it is stale).
//!
//! Both are compiled into the binary, so the demo needs no files at run time.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::node::Node;

/// The demo page.
const DEMO_HTML: &str = include_str!("../assets/demo.html");
/// The bundled client the page imports.
const CLIENT_JS: &str = include_str!("../assets/holdfast-client.js");

/// The demo's routes, to be merged into the node's router.
pub(crate) fn router() -> Router<Node> {
    Router::new()
        .route("/demo", get(page))
        .route("/demo/holdfast.js", get(client))
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DEMO_HTML,
    )
}

async fn client() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CLIENT_JS,
    )
}
