//! The reconnection protocol over real sockets: tokens, replay, gaps, presence, dedupe.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// Drops a client's TCP connection abruptly (no close frame).
fn cut(c: Client) {
    drop(c);
}

fn reconnect_frame(joined: &Value, token: &str, last: u64) -> Value {
    json!({
        "type": "reconnect",
        "room": joined["room"],
        "player_id": joined["player_id"],
        "token": token,
        "last_sequence": last,
        "id": "rc",
    })
}

#[tokio::test]
async fn resume_replays_missed_events_and_rotates_the_token() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let (mut a, _) = Client::connect(addr, "alice").await;
    let (mut b, _) = Client::connect(addr, "bob").await;
    let ja = a.join("game").await;
    let jb = b.join("game").await;
    a.expect_presence("online").await;
    let token = jb["reconnection_token"].as_str().unwrap().to_owned();
    let last = jb["seq"].as_u64().unwrap();
    cut(b);
    let md = a.expect_presence("away").await;
    assert_eq!(md["player_id"], jb["player_id"]);
    for i in 0..5 {
        a.send(json!({"type":"publish","room":"game","data":i}))
            .await;
        a.expect("event").await;
    }
    let (mut b2, _) = Client::connect(addr, "bob").await;
    b2.send(reconnect_frame(&jb, &token, last)).await;
    let r = b2.expect("reconnected").await;
    assert_eq!(r["player_id"], jb["player_id"]);
    assert_eq!(r["recovered"], true);
    assert!(r.get("gap").is_none());
    assert_eq!(r["id"], "rc");
    let events = r["events"].as_array().unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    // Only room messages are replayed: the five events (presence is state, in `members`).
    assert_eq!(seqs, (last + 1..=last + 5).collect::<Vec<_>>());
    assert_eq!(events[4]["data"], 4);
    assert_ne!(r["reconnection_token"], token);
    assert_eq!(r["authority"], ja["player_id"]);
    let mr = a.expect_presence("online").await;
    assert_eq!(mr["player_id"], jb["player_id"]);
    assert_eq!(r["seq"], last + 5);
    // Live events continue right after the resume position.
    a.send(json!({"type":"publish","room":"game","data":"live"}))
        .await;
    let e = b2.expect("event").await;
    assert_eq!(e["seq"].as_u64().unwrap(), r["seq"].as_u64().unwrap() + 1);

    // The reply of a resume may be lost with its connection: the token used for it stays
    // redeemable until the token it issued is used.
    let r_token = r["reconnection_token"].as_str().unwrap().to_owned();
    cut(b2);
    a.expect("event").await;
    a.expect_presence("away").await;
    let (mut b3, _) = Client::connect(addr, "bob").await;
    b3.send(reconnect_frame(&jb, &token, last)).await;
    let r3 = b3.expect("reconnected").await;
    assert_eq!(r3["player_id"], jb["player_id"]);
    a.expect_presence("online").await;
    // Using the newest token spends every older one.
    let t3 = r3["reconnection_token"].as_str().unwrap().to_owned();
    assert_ne!(t3, r_token);
    cut(b3);
    a.expect_presence("away").await;
    let (mut b4, _) = Client::connect(addr, "bob").await;
    b4.send(reconnect_frame(&jb, &t3, r3["seq"].as_u64().unwrap()))
        .await;
    let r4 = b4.expect("reconnected").await;
    a.expect_presence("online").await;
    cut(b4);
    a.expect_presence("away").await;
    let (mut b5, _) = Client::connect(addr, "bob").await;
    for spent in [&token, &r_token] {
        b5.send(reconnect_frame(&jb, spent, last)).await;
        let f = b5.expect("reconnection_failed").await;
        assert_eq!(f["code"], "reconnection_token_invalid");
    }
    // The current token still works after those failed attempts.
    b5.send(reconnect_frame(
        &jb,
        r4["reconnection_token"].as_str().unwrap(),
        r4["seq"].as_u64().unwrap(),
    ))
    .await;
    assert_eq!(b5.expect("reconnected").await["recovered"], true);
    assert!(metric(addr, "holdfast_reconnection_completions_total").await >= 2.0);
    assert!(metric(addr, "holdfast_reconnection_validation_failures_total").await >= 1.0);
}

#[tokio::test]
async fn replay_beyond_the_buffer_reports_the_exact_gap() {
    let mut cfg = test_config();
    cfg.reconnection.event_buffer_size = 10;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let (mut a, _) = Client::connect(addr, "a").await;
    let (b, _) = Client::connect(addr, "b").await;
    let mut b = b;
    a.join("r").await;
    let jb = b.join("r").await;
    a.expect_presence("online").await;
    let last = jb["seq"].as_u64().unwrap(); // 0: presence does not move seq
    cut(b);
    a.expect_presence("away").await;
    for i in 0..30 {
        a.send(json!({"type":"publish","room":"r","data":i})).await;
        a.expect("event").await;
    } // 1..=30
    let (mut b2, _) = Client::connect(addr, "b").await;
    b2.send(reconnect_frame(
        &jb,
        jb["reconnection_token"].as_str().unwrap(),
        last,
    ))
    .await;
    let r = b2.expect("reconnected").await;
    assert_eq!(r["recovered"], false);
    assert_eq!(r["gap"]["from"], 1);
    assert_eq!(r["gap"]["to"], 20);
    assert_eq!(r["gap"]["epoch"], jb["epoch"]);
    let seqs: Vec<u64> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (21..=30).collect::<Vec<_>>());
    assert!(metric(addr, "holdfast_reconnection_events_evicted_total").await >= 20.0);
}

#[tokio::test]
async fn wrong_room_wrong_player_wrong_user_and_expired_window() {
    let mut cfg = test_config();
    cfg.reconnection.window_secs = 1;
    cfg.reconnection.sweep_interval_ms = 100;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let (mut a, _) = Client::connect(addr, "a").await;
    let (mut b, _) = Client::connect(addr, "b").await;
    a.join("r").await;
    a.join("other").await;
    let jb = b.join("r").await;
    let token = jb["reconnection_token"].as_str().unwrap().to_owned();
    cut(b);
    let (mut b2, _) = Client::connect(addr, "b").await;
    let mut wrong_room = reconnect_frame(&jb, &token, 0);
    wrong_room["room"] = json!("other");
    b2.send(wrong_room).await;
    assert_eq!(
        b2.expect("reconnection_failed").await["code"],
        "reconnection_token_invalid"
    );
    let mut gone_room = reconnect_frame(&jb, &token, 0);
    gone_room["room"] = json!("never-existed");
    b2.send(gone_room).await;
    assert_eq!(
        b2.expect("reconnection_failed").await["code"],
        "reconnection_failed"
    );
    let mut wrong_player = reconnect_frame(&jb, &token, 0);
    wrong_player["player_id"] = json!("p1");
    b2.send(wrong_player).await;
    assert_eq!(
        b2.expect("reconnection_failed").await["code"],
        "reconnection_token_invalid"
    );
    b2.send(reconnect_frame(&jb, "not-the-token", 0)).await;
    assert_eq!(
        b2.expect("reconnection_failed").await["code"],
        "reconnection_token_invalid"
    );
    // Another user presenting bob's token is refused.
    let (mut mallory, _) = Client::connect(addr, "mallory").await;
    mallory.send(reconnect_frame(&jb, &token, 0)).await;
    assert_eq!(
        mallory.expect("reconnection_failed").await["code"],
        "reconnection_token_invalid"
    );
    // After the window, the member has left and the token has expired.
    assert_eq!(a.until_presence("left").await["player_id"], jb["player_id"]);
    b2.send(reconnect_frame(&jb, &token, 0)).await;
    assert_eq!(
        b2.expect("reconnection_failed").await["code"],
        "reconnection_expired"
    );
}

#[tokio::test]
async fn presence_goes_away_then_back_without_flapping() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let (mut a, _) = Client::connect(addr, "a").await;
    let (mut b, _) = Client::connect(addr, "b").await;
    a.join("r").await;
    let jb = b.join("r").await;
    a.expect_presence("online").await;
    cut(b);
    a.expect_presence("away").await;
    // A newcomer sees bob as away, not gone.
    let (mut c, _) = Client::connect(addr, "c").await;
    let jc = c.join("r").await;
    let bob = jc["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == "b")
        .unwrap()
        .clone();
    assert_eq!(bob["status"], "away");
    a.expect_presence("online").await;
    let (mut b2, _) = Client::connect(addr, "b").await;
    b2.send(reconnect_frame(
        &jb,
        jb["reconnection_token"].as_str().unwrap(),
        jb["seq"].as_u64().unwrap(),
    ))
    .await;
    b2.expect("reconnected").await;
    // Others see exactly away → back: the same player comes back online, nobody leaves.
    for cl in [&mut a, &mut c] {
        let p = cl.expect("presence").await;
        assert_eq!(p["changes"].as_array().unwrap().len(), 1, "{p}");
        assert_eq!(p["changes"][0]["status"], "online");
        assert_eq!(p["changes"][0]["player_id"], jb["player_id"]);
    }
    assert_eq!(
        metric(addr, "holdfast_reconnection_sessions_active").await,
        0.0
    );
}

#[tokio::test]
async fn authority_is_kept_through_a_drop_and_lost_if_taken_over() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let (mut host, _) = Client::connect(addr, "host").await;
    let (mut guest, _) = Client::connect(addr, "guest").await;
    let jh = host.join("r").await;
    guest.join("r").await;
    assert_eq!(jh["authority"], jh["player_id"]);
    cut(host);
    guest.expect_presence("away").await;
    let (mut host2, _) = Client::connect(addr, "host").await;
    host2
        .send(reconnect_frame(
            &jh,
            jh["reconnection_token"].as_str().unwrap(),
            jh["seq"].as_u64().unwrap(),
        ))
        .await;
    let r = host2.expect("reconnected").await;
    assert_eq!(
        r["authority"], jh["player_id"],
        "the host keeps authority through a drop"
    );
    guest.expect_presence("online").await;

    // Now the host drops and the guest takes authority over while it is away.
    let token = r["reconnection_token"].as_str().unwrap().to_owned();
    let seq = r["seq"].as_u64().unwrap();
    cut(host2);
    guest.expect_presence("away").await;
    guest
        .send(json!({"type":"claim_authority","room":"r","id":"c"}))
        .await;
    let ac = guest.expect("authority_changed").await;
    let guest_player = ac["authority"].clone();
    assert_ne!(guest_player, jh["player_id"]);
    let (mut host3, _) = Client::connect(addr, "host").await;
    host3.send(reconnect_frame(&jh, &token, seq)).await;
    let r = host3.expect("reconnected").await;
    assert_eq!(r["authority"], guest_player, "taken over: not restored");
}

#[tokio::test]
async fn authority_passes_on_drop_when_restore_is_off() {
    let mut cfg = test_config();
    cfg.reconnection.restore_authority = false;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let (mut host, _) = Client::connect(addr, "host").await;
    let (mut guest, _) = Client::connect(addr, "guest").await;
    host.join("r").await;
    let jg = guest.join("r").await;
    cut(host);
    guest.expect_presence("away").await;
    assert_eq!(
        guest.expect("authority_changed").await["authority"],
        jg["player_id"]
    );
}

#[tokio::test]
async fn a_retried_publish_is_delivered_once_across_a_reconnect() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let (mut a, _) = Client::connect(addr, "a").await;
    let (mut b, _) = Client::connect(addr, "b").await;
    let ja = a.join("r").await;
    b.join("r").await;
    a.expect_presence("online").await;
    a.send(json!({"type":"publish","room":"r","data":"once","id":"m-1"}))
        .await;
    let e = b.expect("event").await;
    // The publisher drops before reading its ack, reconnects, and retries the same id.
    cut(a);
    b.expect_presence("away").await;
    let (mut a2, _) = Client::connect(addr, "a").await;
    a2.send(reconnect_frame(
        &ja,
        ja["reconnection_token"].as_str().unwrap(),
        ja["seq"].as_u64().unwrap(),
    ))
    .await;
    a2.expect("reconnected").await;
    b.expect_presence("online").await;
    a2.send(json!({"type":"publish","room":"r","data":"once","id":"m-1"}))
        .await;
    let ack = a2.expect("ack").await;
    assert_eq!(ack["seq"], e["seq"], "the retry gets the original ack");
    // Bob sees nothing new: the next frame is the next distinct publish.
    a2.send(json!({"type":"publish","room":"r","data":"next","id":"m-2"}))
        .await;
    assert_eq!(b.expect("event").await["data"], "next");
    assert_eq!(metric(addr, "holdfast_dedupe_hits_total").await, 1.0);
}

#[tokio::test]
async fn a_resume_while_the_old_socket_looks_alive_replaces_it() {
    let mut cfg = test_config();
    cfg.session.single_socket = holdfast_gateway::config::SingleSocket::Off;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let (mut old, _) = Client::connect(addr, "u").await;
    let j = old.join("r").await;
    // The old socket is half-open from the client's view; a new connection resumes.
    let (mut new, _) = Client::connect(addr, "u").await;
    new.send(reconnect_frame(
        &j,
        j["reconnection_token"].as_str().unwrap(),
        j["seq"].as_u64().unwrap(),
    ))
    .await;
    let r = new.expect("reconnected").await;
    assert_eq!(r["player_id"], j["player_id"]);
    assert_eq!(old.expect_close().await, 4000);
}

#[tokio::test]
async fn buffers_and_rooms_are_freed_when_nobody_can_resume() {
    let mut cfg = test_config();
    cfg.reconnection.window_secs = 1;
    cfg.reconnection.sweep_interval_ms = 100;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let (mut a, _) = Client::connect(addr, "a").await;
    a.join("temp").await;
    cut(a);
    assert!(
        eventually(|| async { metric(addr, "holdfast_reconnection_sessions_active").await == 1.0 })
            .await
    );
    assert!(eventually(|| async { metric(addr, "holdfast_rooms_active").await == 0.0 }).await);
    assert_eq!(metric(addr, "room_members").await, 0.0);
    assert_eq!(
        metric(addr, "holdfast_reconnection_sessions_active").await,
        0.0
    );
}

#[tokio::test]
async fn reconnection_disabled_means_leave_on_drop() {
    let mut cfg = test_config();
    cfg.reconnection.enabled = false;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let (mut a, _) = Client::connect(addr, "a").await;
    let (mut b, _) = Client::connect(addr, "b").await;
    a.join("r").await;
    let jb = b.join("r").await;
    assert!(jb.get("reconnection_token").is_none());
    cut(b);
    // Joined and gone within one presence interval: coalesced into `left`.
    assert_eq!(
        a.expect_presence("left").await["player_id"],
        jb["player_id"]
    );
    let (mut b2, _) = Client::connect(addr, "b").await;
    b2.send(reconnect_frame(&jb, "x", 0)).await;
    assert_eq!(
        b2.expect("reconnection_failed").await["code"],
        "reconnection_failed"
    );
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn the_node_replay_budget_is_paid_by_the_room_that_fills_it() {
    let mut cfg = test_config();
    // Far below the per-room bounds (100 messages, 1 MiB): the node's budget decides.
    cfg.reconnection.node_buffer_bytes = 6_000;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let (mut loud, _) = Client::connect(addr, "loud").await;
    let (mut calm, _) = Client::connect(addr, "calm").await;
    let (lurker, _) = Client::connect(addr, "lurker").await;
    let (quiet_member, _) = Client::connect(addr, "quiet").await;
    let mut lurker = lurker;
    let mut quiet_member = quiet_member;
    loud.join("noisy").await;
    let jl = lurker.join("noisy").await;
    calm.join("calm").await;
    let jq = quiet_member.join("calm").await;
    cut(lurker);
    cut(quiet_member);
    for i in 0..5 {
        calm.send(json!({"type":"publish","room":"calm","data":{"i":i}}))
            .await;
        calm.until("event").await;
    }
    let blob = "x".repeat(300);
    for i in 0..60 {
        loud.send(json!({"type":"publish","room":"noisy","data":{"i":i,"blob":blob}}))
            .await;
        loud.until("event").await;
    }
    // The room that filled the budget lost its oldest messages: an exact gap.
    let (mut l2, _) = Client::connect(addr, "lurker").await;
    l2.send(reconnect_frame(
        &jl,
        jl["reconnection_token"].as_str().unwrap(),
        0,
    ))
    .await;
    let r = l2.expect("reconnected").await;
    assert_eq!(r["recovered"], false, "{r}");
    let events = r["events"].as_array().unwrap();
    assert_eq!(r["gap"]["from"], 1);
    assert_eq!(
        r["gap"]["to"].as_u64().unwrap() + 1,
        events[0]["seq"].as_u64().unwrap()
    );
    assert!(events.len() < 60);
    // The quiet room kept everything.
    let (mut q2, _) = Client::connect(addr, "quiet").await;
    q2.send(reconnect_frame(
        &jq,
        jq["reconnection_token"].as_str().unwrap(),
        0,
    ))
    .await;
    let r = q2.expect("reconnected").await;
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(r["events"].as_array().unwrap().len(), 5);
}

/// A user cannot keep more rooms alive while away than its share: the oldest away membership
/// ends (as if its window passed) when a newer one would exceed the bound.
#[tokio::test]
async fn a_user_keeps_a_bounded_number_of_rooms_away() {
    let mut cfg = test_config();
    cfg.limits.max_rooms_per_session = 2;
    cfg.limits.max_away_rooms_per_user = 2;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let (mut watcher, _) = Client::connect(addr, "watcher").await;
    let (mut w2, _) = Client::connect(addr, "watcher2").await;
    watcher.join("r1").await;
    watcher.join("r2").await;
    w2.join("r3").await;
    w2.join("r4").await;
    let (mut s1, _) = Client::connect(addr, "roamer").await;
    let j1 = s1.join("r1").await;
    s1.join("r2").await;
    cut(s1);
    watcher.until_presence("away").await;
    let (mut s2, _) = Client::connect(addr, "roamer").await;
    s2.join("r3").await;
    s2.join("r4").await;
    cut(s2);
    // r1 and r2 were the oldest: they end for good.
    assert_eq!(watcher.until_presence("left").await["user_id"], "roamer");
    let (mut s3, _) = Client::connect(addr, "roamer").await;
    s3.send(reconnect_frame(
        &j1,
        j1["reconnection_token"].as_str().unwrap(),
        0,
    ))
    .await;
    let f = s3.expect("reconnection_failed").await;
    assert_eq!(f["code"], "reconnection_expired");
}
