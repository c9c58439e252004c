//! The admin page: a small operator console served on the internal listener only.
//!
//! `GET /admin` answers `assets/admin.html`, compiled into the binary. The page itself holds
//! no data and needs no key: it asks the operator for one of the `api.keys` once, keeps it in
//! the tab's `sessionStorage`, and sends it as a bearer key on every call, which goes through
//! the authenticated server API (`/api/v1/*`) and `/metrics` of the same listener. Since the
//! server API answers for the whole cluster, the page works the same on any node.
//!
//! The public listener never serves it (see [`crate::http`]).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::node::Node;

/// The admin page.
const ADMIN_HTML: &str = include_str!("../assets/admin.html");

/// The admin page's route, to be merged into the internal listener's router.
pub(crate) fn router() -> Router<Node> {
    Router::new().route("/admin", get(page))
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // Inline script and style only; no other origin, and never in a frame.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                 base-uri 'none'; form-action 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        ADMIN_HTML,
    )
}
