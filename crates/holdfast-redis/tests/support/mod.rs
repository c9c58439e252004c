//! Test support: gateway nodes on a real `redis-server` of the test's own; the server, the
//! WebSocket client and the probes come from `holdfast-testkit`.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use std::time::Duration;

pub use holdfast_testkit::{
    eventually, free_port, http_status, token, Client, Redis, RedisCluster, RedisSentinel, SECRET,
    WAIT,
};

use holdfast_gateway::{Config, Gateway};

pub fn config(node: &str) -> Config {
    let mut c = Config::default();
    c.auth.hmac_secret = SECRET.into();
    c.rooms.join = Some(holdfast_gateway::config::JoinMode::Open);
    c.server.node_id = node.into();
    c.server.drain_timeout_secs = 5;
    c.reconnection.sweep_interval_ms = 100;
    c
}

pub async fn node(redis: &Redis, cfg: Config) -> Gateway {
    let cluster = holdfast_redis::connect(&redis.url(), "t").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = Gateway::start_with(cfg, listener, cluster.broker, Some(cluster.store))
        .await
        .unwrap();
    // Wait for the pub/sub connection.
    for _ in 0..200 {
        if http_status(gw.local_addr(), "/readyz").await == 200 {
            return gw;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("node not ready");
}

/// A gateway node on the Redis (or Redis Cluster) at `url`.
pub async fn node_at(url: &str, cfg: Config) -> Gateway {
    let cluster = holdfast_redis::connect(url, "t").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = Gateway::start_with(cfg, listener, cluster.broker, Some(cluster.store))
        .await
        .unwrap();
    for _ in 0..500 {
        if http_status(gw.local_addr(), "/readyz").await == 200 {
            return gw;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("node not ready");
}
