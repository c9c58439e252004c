//! The MessagePack subprotocol over real sockets, and room state: `welcome`, `joined` with the
//! state and the events after it, binary data both ways, and a `reconnected` past the replay
//! buffer recovered from the state snapshot.
#![allow(clippy::unwrap_used)]

mod support;

use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::msgpack::{msgpack_to_value, value_to_msgpack};
use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// A client speaking `holdfast.v1.msgpack`.
struct Packed {
    ws: Ws,
    /// The raw bytes of the last frame read.
    last: Vec<u8>,
}

impl Packed {
    async fn connect(addr: std::net::SocketAddr, user: &str) -> (Packed, Value) {
        let c = try_connect(
            addr,
            &format!("?token={}", token(user)),
            &[("sec-websocket-protocol", "holdfast.v1.msgpack")],
        )
        .await
        .unwrap();
        let mut p = Packed {
            ws: c.ws,
            last: Vec::new(),
        };
        let welcome = p.expect("welcome").await;
        (p, welcome)
    }

    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::binary(value_to_msgpack(&v)))
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("no error");
            match msg {
                Message::Binary(b) => {
                    self.last = b.to_vec();
                    return msgpack_to_value(&b).unwrap();
                }
                Message::Text(t) => panic!("a text frame on a msgpack connection: {t}"),
                _ => {}
            }
        }
    }

    /// The next frame of type `ty`, skipping presence.
    async fn expect(&mut self, ty: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == "presence" {
                continue;
            }
            assert_eq!(v["type"], ty, "{v}");
            return v;
        }
    }
}

fn has_bin(raw: &[u8], bytes: &[u8]) -> bool {
    let mut needle = vec![0xc4, bytes.len() as u8];
    needle.extend_from_slice(bytes);
    raw.windows(needle.len()).any(|w| w == needle.as_slice())
}

#[tokio::test]
async fn msgpack_session_gets_state_events_and_a_snapshot_resume() {
    let mut config = test_config();
    config.reconnection.event_buffer_size = 3;
    let gw = start(config).await;
    let addr = gw.local_addr();

    // The subprotocol is echoed only when asked for.
    let (mut bob, welcome) = Packed::connect(addr, "bob").await;
    assert_eq!(welcome["user_id"], "bob");
    assert_eq!(welcome["protocol"], 1);

    let (mut alice, _) = Client::connect(addr, "alice").await;
    let ja = alice.join("game").await;
    assert!(ja.get("state").is_none());
    // Only the authority may set the state (alice joined first).
    alice
        .send(json!({"type": "set_state", "room": "game", "state": {"tick": 1, "map": {"$base64": "AAEC"}}, "id": "s1"}))
        .await;
    let set = alice.expect("state_set").await;
    assert_eq!(set["state"]["tick"], 1);
    let ack = alice.expect("ack").await;
    assert_eq!(ack["seq"], set["seq"]);
    for i in 0..2 {
        alice
            .send(json!({"type": "publish", "room": "game", "data": {"input": i}}))
            .await;
        alice.expect("event").await;
    }

    // joined carries the state (raw bytes as bin) and the events after it.
    bob.send(json!({"type": "join", "room": "game", "id": "j"}))
        .await;
    let jb = bob.expect("joined").await;
    alice.expect_presence("online").await;
    assert!(has_bin(&bob.last, &[0, 1, 2]), "state bytes travel as bin");
    assert_eq!(jb["state"]["map"], json!({"$base64": "AAEC"}));
    assert_eq!(jb["state_seq"], set["seq"]);
    let seqs: Vec<u64> = jb["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let s1 = set["seq"].as_u64().unwrap();
    assert_eq!(seqs, vec![s1 + 1, s1 + 2]);
    assert_eq!(jb["seq"], s1 + 2);

    // set_state from a member without authority is refused.
    bob.send(json!({"type": "set_state", "room": "game", "state": 1, "id": "x"}))
        .await;
    let e = bob.expect("error").await;
    assert_eq!(e["code"], "not_authority");

    // Binary data from a msgpack member: bin for msgpack members, base64 marker for JSON ones.
    bob.send(json!({"type": "publish", "room": "game", "data": {"$base64": "/wA="}, "id": "b1"}))
        .await;
    let own = bob.expect("event").await;
    assert!(has_bin(&bob.last, &[0xff, 0]));
    assert_eq!(own["data"], json!({"$base64": "/wA="}));
    bob.expect("ack").await;
    let seen = alice.expect("event").await;
    assert_eq!(seen["data"], json!({"$base64": "/wA="}));
    let last = own["seq"].as_u64().unwrap();
    let token = jb["reconnection_token"].as_str().unwrap().to_owned();

    // bob drops; more than the buffer (3) happens, the state is set again, two events follow.
    drop(bob);
    alice.expect_presence("away").await;
    for i in 0..5 {
        alice
            .send(json!({"type": "publish", "room": "game", "data": i}))
            .await;
        alice.expect("event").await;
    }
    alice
        .send(json!({"type": "set_state", "room": "game", "state": {"tick": 2}}))
        .await;
    let set2 = alice.expect("state_set").await;
    let s2 = set2["seq"].as_u64().unwrap();
    for i in 0..2 {
        alice
            .send(json!({"type": "publish", "room": "game", "data": {"after": i}}))
            .await;
        alice.expect("event").await;
    }

    let (mut bob2, _) = Packed::connect(addr, "bob").await;
    bob2.send(json!({
        "type": "reconnect", "room": "game", "player_id": jb["player_id"],
        "token": token, "last_sequence": last, "id": "rc",
    }))
    .await;
    let r = bob2.expect("reconnected").await;
    assert_eq!(r["recovered"], true);
    assert_eq!(r["recovered_from"], "snapshot");
    assert_eq!(r["gap"]["from"], last + 1);
    assert_eq!(r["gap"]["to"], s2 - 1);
    let events = r["events"].as_array().unwrap();
    assert_eq!(events[0]["type"], "state_set");
    assert_eq!(events[0]["state"]["tick"], 2);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![s2, s2 + 1, s2 + 2]);

    // Live frames keep coming in MessagePack.
    alice
        .send(json!({"type": "publish", "room": "game", "data": "live"}))
        .await;
    let live = bob2.expect("event").await;
    assert_eq!(live["seq"], s2 + 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn state_is_bounded_and_can_be_disabled() {
    let mut config = test_config();
    config.rooms.state_bytes = 32;
    config
        .namespaces
        .push(holdfast_gateway::room::options::NamespaceConfig {
            prefix: "nostate-".into(),
            state_bytes: Some(0),
            ..Default::default()
        });
    let gw = start(config).await;
    let (mut a, _) = Client::connect(gw.local_addr(), "alice").await;
    a.join("big").await;
    a.send(json!({"type": "set_state", "room": "big", "state": "x".repeat(64), "id": "1"}))
        .await;
    assert_eq!(a.expect_error("invalid_frame").await["id"], "1");
    a.join("nostate-1").await;
    a.send(json!({"type": "set_state", "room": "nostate-1", "state": 1, "id": "2"}))
        .await;
    assert_eq!(a.expect_error("forbidden").await["id"], "2");
    // A JSON client sending a binary frame without the subprotocol is told so.
    a.ws.send(Message::binary(vec![0x80])).await.unwrap();
    a.expect_error("invalid_frame").await;
    gw.shutdown().await;
}

/// A raw HTTP/1.1 request with a binary body; returns the status and the body text.
async fn post_bytes(
    addr: std::net::SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

const API_KEY: &str = "a-long-random-key-for-the-backend";

#[tokio::test]
async fn the_server_api_takes_messagepack_bodies_with_binary_data() {
    let mut config = test_config();
    config.api.keys = vec![API_KEY.into()];
    let listeners = holdfast_gateway::Listeners {
        public: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        api: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
    };
    let gw = holdfast_gateway::Gateway::start(config, listeners)
        .await
        .unwrap();
    let api = gw.api_addr().unwrap();
    let (mut bob, _) = Packed::connect(gw.local_addr(), "bob").await;
    bob.send(json!({"type": "join", "room": "game", "id": "j"}))
        .await;
    bob.expect("joined").await;
    let (mut alice, _) = Client::connect(gw.local_addr(), "alice").await;
    alice.join("game").await;

    let body = value_to_msgpack(
        &json!({"room": "game", "data": {"frame": {"$base64": "AQID"}}, "id": "api-1"}),
    );
    let (status, answer) = post_bytes(api, "/api/v1/publish", "application/msgpack", &body).await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["delivered"], true);

    // The MessagePack member gets the bytes as `bin`, the JSON member in their JSON form.
    let e = bob.expect("event").await;
    assert_eq!(e["data"]["frame"], json!({"$base64": "AQID"}));
    assert!(has_bin(&bob.last, &[1, 2, 3]));
    let e = alice.expect("event").await;
    assert_eq!(e["data"]["frame"], json!({"$base64": "AQID"}));

    // A body that is not MessagePack, or a request that is not valid, is a 400 that says so.
    let (status, answer) =
        post_bytes(api, "/api/v1/publish", "application/msgpack", b"\xc1junk").await;
    assert_eq!(status, 400);
    assert!(answer.contains("invalid MessagePack body"), "{answer}");
    let body = value_to_msgpack(&json!({"room": "game", "nope": 1}));
    let (status, answer) = post_bytes(api, "/api/v1/publish", "application/x-msgpack", &body).await;
    assert_eq!(status, 400);
    assert!(answer.contains("bad_request"), "{answer}");
    gw.shutdown().await;
}
