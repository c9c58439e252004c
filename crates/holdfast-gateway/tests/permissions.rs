//! Room permissions, direct-message permissions and hooks over real sockets, with the
//! application's hook endpoints served by a local HTTP server.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use holdfast_gateway::config::JoinMode;
use holdfast_testkit::{token_with, HttpStub, StubReply, StubRequest};
use serde_json::{json, Value};
use support::*;

/// A gateway with a secret and `rooms.join` left unset: the default is `token`.
fn token_config() -> holdfast_gateway::Config {
    let mut c = test_config();
    c.rooms.join = None;
    c
}

async fn ping_pong(c: &mut Client, id: &str) {
    c.send(json!({"type": "ping", "id": id})).await;
    let pong = c.expect("pong").await;
    assert_eq!(pong["id"], id);
}

#[tokio::test]
async fn token_policy_needs_a_rooms_claim_a_pattern_or_a_join_token() {
    let gw = start(token_config()).await;
    let addr = gw.local_addr();

    // Only `sub`/`exp`: every join is forbidden, and the session goes on.
    let (mut plain, _) = Client::connect(addr, "ann").await;
    plain
        .send(json!({"type": "join", "room": "lobby", "id": "j1"}))
        .await;
    let e = plain.expect_error("forbidden").await;
    assert_eq!(e["id"], "j1");
    ping_pong(&mut plain, "still-here").await;
    // Publishing to a room it could not join is `not_in_room`, as before.
    plain
        .send(json!({"type": "publish", "room": "lobby", "data": 1, "id": "p1"}))
        .await;
    plain.expect_error("not_in_room").await;

    // An exact name and a prefix pattern.
    let t = token_with(json!({"sub": "bea", "rooms": ["lobby", "game-*"]}));
    let (mut bea, _) = Client::connect_with_token(addr, &t).await;
    bea.join("lobby").await;
    bea.join("game-42").await;
    bea.send(json!({"type": "join", "room": "gam", "id": "j2"}))
        .await;
    bea.expect_error("forbidden").await;

    // A join token for exactly this room and this user.
    let jt = token_with(json!({"sub": "ann", "room": "dm-ann-bea"}));
    plain
        .send(json!({"type": "join", "room": "dm-ann-bea", "token": jt, "id": "j3"}))
        .await;
    let joined = plain.until("joined").await;
    assert_eq!(joined["room"], "dm-ann-bea");
    // The same token names another room than this one, or is another user's.
    plain
        .send(json!({"type": "join", "room": "dm-other", "token": jt, "id": "j4"}))
        .await;
    assert_eq!(plain.expect_error("forbidden").await["id"], "j4");
    let other_user = token_with(json!({"sub": "eve", "room": "lobby"}));
    plain
        .send(json!({"type": "join", "room": "lobby", "token": other_user, "id": "j5"}))
        .await;
    let e = plain.expect_error("forbidden").await;
    assert_eq!(e["id"], "j5");
    // A join token signed with another secret.
    let forged = holdfast_gateway::auth::SigningKey::new("HS256", b"not-the-secret", None)
        .and_then(|k| {
            k.sign(&json!({"sub": "ann", "room": "lobby", "exp": holdfast_gateway::auth::unix_now() + 60}))
        })
        .unwrap();
    plain
        .send(json!({"type": "join", "room": "lobby", "token": forged, "id": "j6"}))
        .await;
    plain.expect_error("forbidden").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn send_needs_the_send_claim_whether_the_target_is_online_or_not() {
    let gw = start(token_config()).await;
    let addr = gw.local_addr();
    let (mut bob, _) = Client::connect(addr, "bob").await;
    let (mut ann, _) = Client::connect(addr, "ann").await;
    // No `send` claim: forbidden for an online and an offline target alike.
    ann.send(json!({"type": "send", "to": "bob", "data": 1, "id": "s1"}))
        .await;
    assert_eq!(ann.expect_error("forbidden").await["id"], "s1");
    ann.send(json!({"type": "send", "to": "nobody", "data": 1, "id": "s2"}))
        .await;
    assert_eq!(ann.expect_error("forbidden").await["id"], "s2");

    let t = token_with(json!({"sub": "cy", "send": ["bob", "support-*"]}));
    let (mut cy, _) = Client::connect_with_token(addr, &t).await;
    cy.send(json!({"type": "send", "to": "bob", "data": "hi", "id": "s3"}))
        .await;
    assert_eq!(cy.expect("ack").await["id"], "s3");
    assert_eq!(bob.expect("message").await["from"], "cy");
    cy.send(json!({"type": "send", "to": "support-7", "data": 1, "id": "s4"}))
        .await;
    cy.expect_error("user_offline").await;
    cy.send(json!({"type": "send", "to": "carol", "data": 1, "id": "s5"}))
        .await;
    cy.expect_error("forbidden").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn reconnect_rechecks_the_join_policy() {
    let gw = start(token_config()).await;
    let addr = gw.local_addr();
    let jt = token_with(json!({"sub": "dan", "room": "private-1"}));
    let (mut dan, _) = Client::connect(addr, "dan").await;
    dan.send(json!({"type": "join", "room": "private-1", "token": jt}))
        .await;
    let joined = dan.expect("joined").await;
    let (player, rtoken) = (
        joined["player_id"].clone(),
        joined["reconnection_token"].clone(),
    );
    drop(dan);

    // A new connection whose token does not allow the room, resuming without the join token.
    let (mut again, _) = Client::connect(addr, "dan").await;
    again
        .send(
            json!({"type": "reconnect", "room": "private-1", "player_id": player,
            "token": rtoken, "last_sequence": 0, "id": "r1"}),
        )
        .await;
    let failed = again.expect("reconnection_failed").await;
    assert_eq!(failed["code"], "forbidden", "{failed}");
    // With the join token it resumes (the reconnection token was not spent by the refusal).
    again
        .send(
            json!({"type": "reconnect", "room": "private-1", "player_id": player,
            "token": rtoken, "last_sequence": 0, "join_token": jt, "id": "r2"}),
        )
        .await;
    let v = again.until("reconnected").await;
    assert_eq!(v["room"], "private-1");
    gw.shutdown().await;
}

/// A join hook: `vip-*` rooms are admitted, `slow-*` rooms hang for ten seconds, a `bad-json`
/// room gets a non-JSON body, everything else `{"allow": false}`.
async fn join_hook() -> HttpStub {
    HttpStub::start(|req: StubRequest| -> StubReply {
        Box::pin(async move {
            let v: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
            let room = v["room"].as_str().unwrap_or("");
            assert!(
                v["user"].is_string() && v["session_id"].is_string() && v["node_id"].is_string()
            );
            if room.starts_with("vip-") {
                (
                    200,
                    json!({"allow": true, "data": {"role": "guest"}}).to_string(),
                )
            } else if room.starts_with("slow-") {
                tokio::time::sleep(Duration::from_secs(10)).await;
                (200, json!({"allow": true}).to_string())
            } else if room == "bad-json" {
                (200, "yes".into())
            } else if room == "error" {
                (500, "{}".into())
            } else {
                (200, json!({"allow": false}).to_string())
            }
        })
    })
    .await
}

#[tokio::test]
async fn join_hook_admits_refuses_and_times_out_without_stalling_the_node() {
    let hook = join_hook().await;
    let mut c = test_config();
    c.rooms.join = Some(JoinMode::Hook);
    c.hooks.join_url = hook.url("/join");
    c.hooks.timeout_ms = 700;
    let gw = start(c).await;
    let addr = gw.local_addr();
    let (mut ann, _) = Client::connect(addr, "ann").await;
    let (mut bob, _) = Client::connect(addr, "bob").await;

    ann.join("vip-lounge").await;
    for room in ["secret", "bad-json", "error"] {
        ann.send(json!({"type": "join", "room": room, "id": room}))
            .await;
        assert_eq!(ann.expect_error("forbidden").await["id"], room);
    }

    // The hook hangs: ann waits, bob is answered meanwhile, then ann is refused.
    let started = Instant::now();
    ann.send(json!({"type": "join", "room": "slow-1", "id": "slow"}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..5 {
        let t = Instant::now();
        ping_pong(&mut bob, &format!("p{i}")).await;
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "bob waited {:?}",
            t.elapsed()
        );
    }
    let (mut carol, _) = Client::connect(addr, "carol").await;
    carol.join("vip-2").await;
    let e = ann.expect_error("forbidden").await;
    assert_eq!(e["id"], "slow");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(650) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    ping_pong(&mut ann, "after").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn hook_calls_beyond_the_concurrency_bound_are_refused_at_once() {
    let hook = join_hook().await;
    let mut c = test_config();
    c.rooms.join = Some(JoinMode::Hook);
    c.hooks.join_url = hook.url("/join");
    c.hooks.timeout_ms = 1_500;
    c.hooks.max_concurrent = 1;
    let gw = start(c).await;
    let addr = gw.local_addr();
    let (mut ann, _) = Client::connect(addr, "ann").await;
    let (mut bob, _) = Client::connect(addr, "bob").await;
    ann.send(json!({"type": "join", "room": "slow-1", "id": "a"}))
        .await;
    assert!(eventually(|| async { hook.hits() == 1 }).await);
    let t = Instant::now();
    bob.send(json!({"type": "join", "room": "vip-1", "id": "b"}))
        .await;
    assert_eq!(bob.expect_error("forbidden").await["id"], "b");
    assert!(t.elapsed() < Duration::from_millis(500));
    ann.expect_error("forbidden").await;
    // The slot is free again.
    bob.join("vip-1").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn connect_hook_refuses_at_the_upgrade_and_after_in_band_auth() {
    let hook = HttpStub::start(|req: StubRequest| -> StubReply {
        Box::pin(async move {
            let v: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
            let allow = v["user"] != "mallory" && v["node_id"].is_string();
            (200, json!({ "allow": allow }).to_string())
        })
    })
    .await;
    let mut c = test_config();
    c.hooks.connect_url = hook.url("/connect");
    let gw = start(c).await;
    let addr = gw.local_addr();
    Client::connect(addr, "ann").await;
    let status = try_connect(addr, &format!("?token={}", token("mallory")), &[])
        .await
        .err();
    assert_eq!(status, Some(403));
    let mut raw = try_connect(addr, "", &[]).await.unwrap();
    raw.send(json!({"type": "auth", "token": token("mallory")}))
        .await;
    raw.expect_error("forbidden").await;
    assert_eq!(raw.expect_close().await, 4006);
    gw.shutdown().await;
}
