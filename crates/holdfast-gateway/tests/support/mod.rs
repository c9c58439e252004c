//! Test support: a gateway on 127.0.0.1:0; the WebSocket client and probes come from
//! `holdfast-testkit`.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

pub use holdfast_testkit::{
    eventually, http_get, metric, token, try_connect, Client, Ws, SECRET, WAIT,
};

use holdfast_gateway::{Config, Gateway};

/// A configuration with short timings for tests.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.auth.hmac_secret = SECRET.into();
    // Open rooms, as most tests exercise rooms, not permissions (tests/permissions.rs does).
    c.rooms.join = Some(holdfast_gateway::config::JoinMode::Open);
    c.server.drain_timeout_secs = 5;
    c
}

pub async fn start(config: Config) -> Gateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Gateway::start(config, listener).await.unwrap()
}
