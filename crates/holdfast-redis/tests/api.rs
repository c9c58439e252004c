//! The server API on a two-node cluster over a real Redis: a backend speaks to one node, the
//! effect is the same on every node.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use holdfast_gateway::{Config, Gateway, Listeners};
use holdfast_testkit::http_request;
use serde_json::{json, Value};
use support::*;

const KEY: &str = "backend-key-0123456789";

fn api_config(node: &str) -> Config {
    let mut c = config(node);
    c.api.keys = vec!["old-key-0123456789abcdef".into(), KEY.into()];
    c
}

async fn api_node(redis: &Redis, cfg: Config) -> Gateway {
    let cluster = holdfast_redis::connect(&redis.url(), "t").await.unwrap();
    let listeners = Listeners {
        public: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        api: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
    };
    let gw = Gateway::start_with(cfg, listeners, cluster.broker, Some(cluster.store))
        .await
        .unwrap();
    assert!(eventually(|| async { http_status(gw.local_addr(), "/readyz").await == 200 }).await);
    gw
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (status, text) = http_request(addr, method, path, Some(KEY), body.as_deref()).await;
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, v)
}

/// Waits until the cluster knows `user`'s session (ownership is recorded asynchronously).
async fn owned(api: SocketAddr, user: &str) {
    let path = format!("/api/v1/users/{user}");
    assert!(
        eventually(|| async { call(api, "GET", &path, None).await.1["online"] == true }).await,
        "{user} never showed up online"
    );
}

#[tokio::test]
async fn a_backend_publishes_on_one_node_and_both_nodes_deliver_in_seq_order() {
    let redis = Redis::start();
    let n0 = api_node(&redis, api_config("n0")).await;
    let n1 = api_node(&redis, api_config("n1")).await;
    let api = n0.api_addr().unwrap();
    let (mut a, _) = Client::connect(n0.local_addr(), "alice").await;
    let (mut b, _) = Client::connect(n1.local_addr(), "bob").await;
    a.join("game").await;
    b.join("game").await;
    a.expect_presence("online").await;
    // The backend's publishes are interleaved with a member's; everyone sees one order.
    let mut published = Vec::new();
    for i in 0..10 {
        let (status, r) = call(
            api,
            "POST",
            "/api/v1/publish",
            Some(json!({"room":"game","data":{"tick":i},"id":format!("t{i}")})),
        )
        .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["delivered"], true);
        published.push(r["seq"].as_u64().unwrap());
        b.send(json!({"type":"publish","room":"game","data":{"move":i}}))
            .await;
    }
    for c in [&mut a, &mut b] {
        let mut seqs = Vec::new();
        let mut server = Vec::new();
        while seqs.len() < 20 {
            let e = c.expect("event").await;
            let seq = e["seq"].as_u64().unwrap();
            seqs.push(seq);
            if e["from"] == "server" {
                assert_eq!(e["user_id"], "");
                server.push(seq);
            }
        }
        assert_eq!(seqs, (1..21).collect::<Vec<u64>>());
        assert_eq!(server, published);
    }
    // A retried id is not published again: the original seq comes back.
    let (_, r) = call(
        api,
        "POST",
        "/api/v1/publish",
        Some(json!({"room":"game","data":{"tick":0},"id":"t0"})),
    )
    .await;
    assert_eq!(r["seq"].as_u64(), Some(published[0]));
    // Broadcast: a result per room; an empty room keeps nothing.
    let (status, r) = call(
        api,
        "POST",
        "/api/v1/broadcast",
        Some(json!({"rooms":["game","empty"],"data":"hello"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(r["results"][0]["room"], "game");
    assert_eq!(r["results"][0]["delivered"], true);
    assert_eq!(r["results"][1], json!({"room":"empty","delivered":false}));
    for c in [&mut a, &mut b] {
        assert_eq!(c.expect("event").await["data"], "hello");
    }
    // The room as the other node reads it.
    let (status, room) = call(n1.api_addr().unwrap(), "GET", "/api/v1/rooms/game", None).await;
    assert_eq!(status, 200);
    assert_eq!(room["member_count"], 2);
    assert_eq!(room["seq"], 21);
    let (_, list) = call(api, "GET", "/api/v1/rooms?prefix=ga", None).await;
    assert_eq!(list["rooms"], json!(["game"]));
}

#[tokio::test]
async fn disconnect_on_one_node_closes_the_user_on_the_other_with_4007() {
    let redis = Redis::start();
    let n0 = api_node(&redis, api_config("n0")).await;
    let n1 = api_node(&redis, api_config("n1")).await;
    let api1 = n1.api_addr().unwrap();
    let (mut u, _) = Client::connect(n0.local_addr(), "mallory").await;
    owned(api1, "mallory").await;
    let (_, view) = call(api1, "GET", "/api/v1/users/mallory", None).await;
    assert_eq!(view["node"], "n0");
    assert!(view["session"].as_str().unwrap().starts_with("n0-"));
    // A message from the backend through the other node.
    let (_, r) = call(
        api1,
        "POST",
        "/api/v1/send",
        Some(json!({"user":"mallory","data":{"notice":1}})),
    )
    .await;
    assert_eq!(r["delivered"], true);
    let m = u.expect("message").await;
    assert_eq!(
        (m["from"].clone(), m["data"].clone()),
        (json!(""), json!({"notice":1}))
    );
    let (status, r) = call(
        api1,
        "POST",
        "/api/v1/disconnect",
        Some(json!({"user":"mallory","reason":"banned"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(r["disconnected"], true);
    assert_eq!(u.expect_close().await, 4007);
    assert!(
        eventually(|| async {
            call(api1, "GET", "/api/v1/users/mallory", None).await.1["online"] == false
        })
        .await
    );
    let (_, r) = call(
        api1,
        "POST",
        "/api/v1/disconnect",
        Some(json!({"user":"mallory"})),
    )
    .await;
    assert_eq!(r["disconnected"], false);
    let (_, r) = call(
        api1,
        "POST",
        "/api/v1/send",
        Some(json!({"user":"mallory","data":1})),
    )
    .await;
    assert_eq!(r["delivered"], false);
}

#[tokio::test]
async fn history_returns_exactly_what_a_gap_names_and_what_follows_it() {
    let redis = Redis::start();
    let mut c0 = api_config("n0");
    c0.reconnection.event_buffer_size = 5;
    let mut c1 = api_config("n1");
    c1.reconnection.event_buffer_size = 5;
    let n0 = api_node(&redis, c0).await;
    let n1 = api_node(&redis, c1).await;
    let api = n0.api_addr().unwrap();
    let (mut a, _) = Client::connect(n0.local_addr(), "a").await;
    let (b, _) = Client::connect(n1.local_addr(), "b").await;
    let mut b = b;
    a.join("r").await;
    let jb = b.join("r").await;
    a.expect_presence("online").await;
    drop(b); // cut, no close frame
    a.expect_presence("away").await;
    let mut live = Vec::new();
    for i in 0..12 {
        let (_, r) = call(
            api,
            "POST",
            "/api/v1/publish",
            Some(json!({"room":"r","data":i})),
        )
        .await;
        assert_eq!(r["delivered"], true);
        live.push(a.expect("event").await);
    } // 1..=12
      // The history holds the newest five, exactly as they were delivered.
    let (status, h) = call(
        n1.api_addr().unwrap(),
        "GET",
        "/api/v1/rooms/r/history",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["events"].as_array().unwrap(), &live[7..].to_vec());
    // Bob resumes on the other node: the replay misses part of what he lost.
    let (mut b2, _) = Client::connect(n1.local_addr(), "b").await;
    b2.send(
        json!({"type":"reconnect","room":"r","player_id":jb["player_id"],
        "token":jb["reconnection_token"],"last_sequence":jb["seq"]}),
    )
    .await;
    let r = b2.expect("reconnected").await;
    assert_eq!(r["recovered"], false);
    let (from, to) = (
        r["gap"]["from"].as_u64().unwrap(),
        r["gap"]["to"].as_u64().unwrap(),
    );
    assert_eq!((from, to), (1, 7));
    // What the gap names is no longer held: the history says so by returning none of it...
    let (_, g) = call(
        api,
        "GET",
        &format!("/api/v1/rooms/r/history?from={from}&to={to}"),
        None,
    )
    .await;
    assert_eq!(g["events"], json!([]));
    // The range after it, in the gap's epoch; a stream of another epoch holds none of it.
    let epoch = r["gap"]["epoch"].as_str().unwrap();
    let (_, same) = call(
        api,
        "GET",
        &format!("/api/v1/rooms/r/history?from=10&to=10&epoch={epoch}"),
        None,
    )
    .await;
    assert_eq!(same["events"][0]["seq"], 10);
    let (_, other) = call(
        api,
        "GET",
        "/api/v1/rooms/r/history?from=10&to=10&epoch=0000",
        None,
    )
    .await;
    assert_eq!(other["events"], json!([]));
    // ...and the range after it is the replay, frame for frame.
    let (_, after) = call(
        api,
        "GET",
        &format!("/api/v1/rooms/r/history?from={}&to=12", to + 1),
        None,
    )
    .await;
    let after = after["events"].as_array().unwrap().clone();
    let replay = r["events"].as_array().unwrap();
    assert_eq!(replay.len(), 5);
    assert_eq!(after[..], replay[..]);
    // A range that is still held comes back exactly, and `limit` keeps the oldest.
    let (_, some) = call(
        api,
        "GET",
        "/api/v1/rooms/r/history?from=9&to=11&limit=2",
        None,
    )
    .await;
    let seqs: Vec<u64> = some["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![9, 10]);
}

#[tokio::test]
async fn nodes_lists_the_cluster_and_a_drained_node_leaves_it() {
    let redis = Redis::start();
    let n0 = api_node(&redis, api_config("n0")).await;
    let n1 = api_node(&redis, api_config("n1")).await;
    let api = n0.api_addr().unwrap();
    let (_c, _) = Client::connect(n1.local_addr(), "someone").await;
    let ids = |v: &Value| -> Vec<String> {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        eventually(|| async {
            ids(&call(api, "GET", "/api/v1/nodes", None).await.1) == ["n0", "n1"]
        })
        .await
    );
    n1.shutdown().await;
    assert!(
        eventually(|| async { ids(&call(api, "GET", "/api/v1/nodes", None).await.1) == ["n0"] })
            .await
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn requests_without_the_key_with_a_wrong_key_or_on_the_public_listener_are_refused() {
    let redis = Redis::start();
    let n0 = api_node(&redis, api_config("n0")).await;
    let api = n0.api_addr().unwrap();
    let body = r#"{"room":"r","data":1}"#;
    let (s, r) = http_request(api, "POST", "/api/v1/publish", None, Some(body)).await;
    assert_eq!(s, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&r).unwrap()["code"],
        "unauthorized"
    );
    let (s, _) = http_request(
        api,
        "POST",
        "/api/v1/publish",
        Some("backend-key-0123456780"),
        Some(body),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = http_request(
        api,
        "GET",
        "/api/v1/nodes",
        Some("old-key-0123456789abcdef"),
        None,
    )
    .await;
    assert_eq!(s, 200, "a second key is accepted while keys rotate");
    let (s, _) = http_request(
        n0.local_addr(),
        "POST",
        "/api/v1/publish",
        Some(KEY),
        Some(body),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = http_request(n0.local_addr(), "GET", "/api/v1/nodes", Some(KEY), None).await;
    assert_eq!(s, 404);
    assert_eq!(http_status(api, "/metrics").await, 200);
}
