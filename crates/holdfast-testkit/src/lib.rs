//! Test helpers shared by the Holdfast crates (a dev-dependency only, never published):
//!
//! - [`Client`]: a WebSocket test client speaking JSON frames to a gateway over a real socket;
//! - [`free_port`]: a port nobody listens on right now;
//! - [`Redis`]: a `redis-server` of the test's own on a free port, killed on drop;
//! - small HTTP probes ([`http_get`], [`http_status`], [`http_request`], [`metric`]) and
//!   [`eventually`];
//! - [`HttpStub`]: a tiny HTTP server standing in for the application (JWKS, hooks);
//! - [`token_with`]: a token carrying any claims;
//! - [`OtlpReceiver`]: an OTLP/HTTP trace receiver decoding what nodes export.
//!
//! Every helper panics with a message on failure: they are for tests.

mod client;
mod otlp;
mod redis;
mod stub;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use client::{try_connect, Client, Ws};
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use redis::{Redis, RedisCluster, RedisSentinel};
pub use stub::{HttpStub, StubReply, StubRequest};

/// The secret test gateways sign tokens with.
pub const SECRET: &str = "test-secret";
/// Upper bound for any single expected frame or response in a test.
pub const WAIT: Duration = Duration::from_secs(5);

/// A token for `user` signed with [`SECRET`], valid for ten minutes.
pub fn token(user: &str) -> String {
    holdfast_gateway::auth::mint_token(SECRET, user, Duration::from_secs(600))
}

/// A token signed with [`SECRET`] carrying `claims` (a JSON object; `exp` is added when
/// missing, ten minutes ahead).
pub fn token_with(mut claims: serde_json::Value) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = serde_json::json!(holdfast_gateway::auth::unix_now() + 600);
    }
    holdfast_gateway::auth::SigningKey::new("HS256", SECRET.as_bytes(), None)
        .and_then(|k| k.sign(&claims))
        .expect("sign a test token")
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// `GET path` over a fresh connection; the status (0 when the request failed) and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// `method path` with an optional bearer `key` and JSON `body`, over a fresh connection; the
/// status (0 when the request failed) and the body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(k) = key {
        req.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    let body = body.unwrap_or("");
    if method != "GET" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let head_end = text.find("\r\n\r\n").map_or(text.len(), |i| i + 4);
    let (head, rest) = text.split_at(head_end);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    (status, body)
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The status of `GET path` (0 when the request failed).
pub async fn http_status(addr: SocketAddr, path: &str) -> u16 {
    http_get(addr, path).await.0
}

/// The value of one metric line (`name` including labels) from `/metrics`; 0 when absent.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `f` every 50 ms until it holds; false after ten seconds.
pub async fn eventually<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
