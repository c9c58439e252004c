//! End-to-end behaviour of one node over real sockets.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use holdfast_gateway::auth;
use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn welcome_carries_identity_and_timings() {
    let gw = start(test_config()).await;
    let (_c, w) = Client::connect(gw.local_addr(), "alice").await;
    assert_eq!(w["user_id"], "alice");
    assert_eq!(w["node_id"], gw.node().id());
    assert_eq!(w["ping_interval_ms"], 10_000);
    assert_eq!(w["pong_timeout_ms"], 20_000);
    assert_eq!(w["protocol"], 1);
    assert!(w["session_id"].as_str().unwrap().len() > 3);
}

#[tokio::test]
async fn token_in_header_and_in_band() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let bearer = format!("Bearer {}", token("bob"));
    let mut c = try_connect(addr, "", &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(c.expect("welcome").await["user_id"], "bob");

    let mut c = try_connect(addr, "", &[]).await.unwrap();
    c.send(json!({"type":"join","room":"r","id":"j0"})).await;
    let e = c.expect_error("not_authenticated").await;
    assert_eq!(e["id"], "j0");
    c.send(json!({"type":"auth","token":token("carol")})).await;
    assert_eq!(c.expect("welcome").await["user_id"], "carol");
    c.send(json!({"type":"auth","token":token("carol")})).await;
    c.expect_error("already_authenticated").await;
}

#[tokio::test]
async fn bad_and_expired_tokens_are_refused() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let wrong = auth::mint_token("other-secret", "eve", Duration::from_secs(60));
    assert_eq!(
        try_connect(addr, &format!("?token={wrong}"), &[])
            .await
            .err(),
        Some(401)
    );
    let expired = auth::mint_token_until(SECRET, "eve", auth::unix_now() - 60);
    assert_eq!(
        try_connect(addr, &format!("?token={expired}"), &[])
            .await
            .err(),
        Some(401)
    );

    let mut c = try_connect(addr, "", &[]).await.unwrap();
    c.send(json!({"type":"auth","token":wrong})).await;
    c.expect_error("auth_failed").await;
    assert_eq!(c.expect_close().await, 4006);

    let mut c = try_connect(addr, "", &[]).await.unwrap();
    c.send(json!({"type":"auth","token":expired})).await;
    c.expect_error("token_expired").await;
    assert_eq!(c.expect_close().await, 4002);
}

#[tokio::test]
async fn join_leave_and_membership_notifications() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let (mut a, _) = Client::connect(addr, "alice").await;
    let (mut b, _) = Client::connect(addr, "bob").await;
    a.send(json!({"type":"join","room":"lobby","id":"j1"}))
        .await;
    let ja = a.expect("joined").await;
    assert_eq!(ja["id"], "j1");
    assert_eq!(ja["room"], "lobby");
    assert_eq!(ja["authority"], ja["player_id"]);
    assert_eq!(ja["seq"], 0);
    assert_eq!(ja["member_count"], 1);
    assert!(ja["reconnection_token"].as_str().unwrap().len() >= 32);
    assert!(!ja["epoch"].as_str().unwrap().is_empty());

    let jb = b.join("lobby").await;
    // Presence is not part of the room's stream: joins do not move `seq`.
    assert_eq!(jb["seq"], 0);
    assert_eq!(jb["members"].as_array().unwrap().len(), 2);
    assert_eq!(jb["authority"], ja["player_id"]);
    let mj = a.expect_presence("online").await;
    assert_eq!(mj["player_id"], jb["player_id"]);
    assert_eq!(mj["user_id"], "bob");

    b.send(json!({"type":"leave","room":"lobby","id":"l1"}))
        .await;
    let left = b.expect("left").await;
    assert_eq!(left["id"], "l1");
    assert_eq!(left["seq"], 0);
    let ml = a.expect_presence("left").await;
    assert_eq!(ml["player_id"], jb["player_id"]);

    b.send(json!({"type":"leave","room":"lobby","id":"l2"}))
        .await;
    assert_eq!(b.expect_error("not_in_room").await["id"], "l2");
    a.send(json!({"type":"join","room":"lobby","id":"j2"}))
        .await;
    assert_eq!(a.expect_error("already_in_room").await["id"], "j2");
}

#[tokio::test]
async fn authority_claim_release_and_hand_over() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let (mut a, _) = Client::connect(addr, "a").await;
    let (mut b, _) = Client::connect(addr, "b").await;
    let (mut c, _) = Client::connect(addr, "c").await;
    let pa = a.join("g").await["player_id"].clone();
    let pb = b.join("g").await["player_id"].clone();
    a.expect_presence("online").await;
    let pc = c.join("g").await["player_id"].clone();
    a.expect_presence("online").await;
    b.expect_presence("online").await;

    b.send(json!({"type":"claim_authority","room":"g","id":"c1"}))
        .await;
    assert_eq!(b.expect_error("authority_taken").await["id"], "c1");
    b.send(json!({"type":"release_authority","room":"g","id":"r1"}))
        .await;
    b.expect_error("not_authority").await;

    a.send(json!({"type":"release_authority","room":"g","id":"r2"}))
        .await;
    for cl in [&mut a, &mut b, &mut c] {
        let ac = cl.expect("authority_changed").await;
        assert_eq!(
            ac["authority"], pb,
            "longest-present other member takes over"
        );
    }
    a.expect("ack").await;

    // The holder leaves: authority passes to the longest-present remaining member (a).
    b.send(json!({"type":"leave","room":"g"})).await;
    b.expect("left").await;
    for cl in [&mut a, &mut c] {
        cl.expect_presence("left").await;
        let ac = cl.expect("authority_changed").await;
        assert_eq!(ac["authority"], pa);
    }
    let _ = pc;
}

#[tokio::test]
async fn publish_fans_out_with_gapless_seq_and_acks() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let (mut a, _) = Client::connect(addr, "a").await;
    let (mut b, _) = Client::connect(addr, "b").await;
    let ja = a.join("r").await;
    b.join("r").await;
    a.expect_presence("online").await;
    for i in 0..50 {
        a.send(
            json!({"type":"publish","room":"r","data":{"n":i},"id":format!("m{i}"),
            "traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}),
        )
        .await;
    }
    for i in 0..50u64 {
        let e = b.expect("event").await;
        assert_eq!(e["seq"], 1 + i);
        assert_eq!(e["data"]["n"], i);
        assert_eq!(e["from"], ja["player_id"]);
        assert_eq!(e["user_id"], "a");
        assert_eq!(e["epoch"], ja["epoch"]);
        assert_eq!(e["id"], format!("m{i}"));
        assert!(e["traceparent"].as_str().unwrap().starts_with("00-"));
    }
    for i in 0..50 {
        let e = a.expect("event").await;
        assert_eq!(e["data"]["n"], i);
        let ack = a.expect("ack").await;
        assert_eq!(ack["id"], format!("m{i}"));
        assert_eq!(ack["seq"], e["seq"]);
    }
    a.send(json!({"type":"publish","room":"elsewhere","data":1,"id":"x"}))
        .await;
    assert_eq!(a.expect_error("not_in_room").await["id"], "x");
}

#[tokio::test]
async fn direct_send_reaches_one_user() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let (mut a, _) = Client::connect(addr, "a").await;
    let (mut b, _) = Client::connect(addr, "b").await;
    a.send(json!({"type":"send","to":"b","data":{"hi":true},"id":"s1"}))
        .await;
    let m = b.expect("message").await;
    assert_eq!(m["from"], "a");
    assert_eq!(m["data"]["hi"], true);
    assert_eq!(a.expect("ack").await["id"], "s1");
    a.send(json!({"type":"send","to":"nobody","data":1,"id":"s2"}))
        .await;
    assert_eq!(a.expect_error("user_offline").await["id"], "s2");
}

#[tokio::test]
async fn every_bad_frame_gets_its_code_and_the_session_continues() {
    let mut cfg = test_config();
    cfg.limits.max_rooms_per_session = 2;
    cfg.limits.max_members_per_room = 1;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let (mut a, _) = Client::connect(addr, "a").await;
    let (mut other, _) = Client::connect(addr, "other").await;
    a.send_text("{not json").await;
    a.expect_error("bad_json").await;
    a.send_text("[1,2,3]").await;
    a.expect_error("invalid_frame").await;
    a.send(json!({"type":"teleport","id":"t1"})).await;
    assert_eq!(a.expect_error("unknown_type").await["id"], "t1");
    a.send(json!({"type":"publish","room":"r","id":"p1"})).await;
    assert_eq!(a.expect_error("invalid_frame").await["id"], "p1");
    a.send(json!({"type":"join","room":"","id":"e1"})).await;
    a.expect_error("invalid_frame").await;
    a.send(json!({"type":"join","room":"x".repeat(500)})).await;
    a.expect_error("invalid_frame").await;
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    a.send_text(&deep).await;
    a.expect_error("bad_json").await;
    a.ws.send(Message::Binary(vec![0u8, 159, 146, 150].into()))
        .await
        .unwrap();
    a.expect_error("invalid_frame").await;
    a.join("r1").await;
    a.join("r2").await;
    a.send(json!({"type":"join","room":"r3","id":"j3"})).await;
    assert_eq!(a.expect_error("too_many_rooms").await["id"], "j3");
    other
        .send(json!({"type":"join","room":"r1","id":"full"}))
        .await;
    assert_eq!(other.expect_error("room_full").await["id"], "full");
    a.send(json!({"type":"claim_authority","room":"nope"}))
        .await;
    a.expect_error("not_in_room").await;
    // Still alive and serving.
    a.send(json!({"type":"ping","id":"alive"})).await;
    assert_eq!(a.expect("pong").await["id"], "alive");
    other.send(json!({"type":"ping"})).await;
    other.expect("pong").await;
    let errors = metric(addr, "holdfast_errors_total{code=\"bad_json\"}").await;
    assert_eq!(errors, 2.0);
}

#[tokio::test]
async fn single_socket_newest_wins() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let (mut old, _) = Client::connect(addr, "alice").await;
    let (mut new, _) = Client::connect(addr, "alice").await;
    assert_eq!(old.expect_close().await, 4000);
    new.send(json!({"type":"ping"})).await;
    new.expect("pong").await;
    // Direct messages go to the new socket.
    let (mut b, _) = Client::connect(addr, "bob").await;
    b.send(json!({"type":"send","to":"alice","data":"hi"}))
        .await;
    assert_eq!(new.expect("message").await["data"], "hi");
    assert!(
        eventually(|| async {
            metric(
                addr,
                "holdfast_close_total{code=\"4000\",transport=\"websocket\"}",
            )
            .await
                == 1.0
        })
        .await
    );
}

#[tokio::test]
async fn single_socket_off_keeps_both() {
    let mut cfg = test_config();
    cfg.session.single_socket = holdfast_gateway::config::SingleSocket::Off;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let (mut one, _) = Client::connect(addr, "alice").await;
    let (mut two, _) = Client::connect(addr, "alice").await;
    one.send(json!({"type":"ping","id":"1"})).await;
    assert_eq!(one.expect("pong").await["id"], "1");
    two.send(json!({"type":"ping","id":"2"})).await;
    assert_eq!(two.expect("pong").await["id"], "2");
}

#[tokio::test]
async fn single_socket_device_replaces_per_device_and_off_caps_sessions() {
    use holdfast_gateway::config::SingleSocket;
    let mut cfg = test_config();
    cfg.session.single_socket = SingleSocket::Device;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let on = |device: &str| format!("{}&device={device}", token("alice"));
    let (mut phone, _) = Client::connect_with_token(addr, &on("phone")).await;
    let (mut laptop, _) = Client::connect_with_token(addr, &on("laptop")).await;
    // A `device` claim in the token counts as the parameter does.
    let claimed = holdfast_testkit::token_with(json!({"sub": "alice", "device": "phone"}));
    let (mut phone2, _) = Client::connect_with_token(addr, &claimed).await;
    assert_eq!(phone.expect_close().await, 4000);
    for (c, id) in [(&mut laptop, "l"), (&mut phone2, "p")] {
        c.send(json!({"type":"ping","id":id})).await;
        assert_eq!(c.expect("pong").await["id"], id);
    }
    // A direct message reaches every device.
    let (mut b, _) = Client::connect(addr, "bob").await;
    b.send(json!({"type":"send","to":"alice","data":"hi"}))
        .await;
    assert_eq!(laptop.expect("message").await["data"], "hi");
    assert_eq!(phone2.expect("message").await["data"], "hi");

    let mut cfg = test_config();
    cfg.session.single_socket = SingleSocket::Off;
    cfg.session.max_sessions_per_user = 2;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let (mut one, _) = Client::connect(addr, "carol").await;
    let (mut two, _) = Client::connect(addr, "carol").await;
    let (mut three, _) = Client::connect(addr, "carol").await;
    // Beyond the cap the oldest session gives way.
    assert_eq!(one.expect_close().await, 4000);
    for (c, id) in [(&mut two, "2"), (&mut three, "3")] {
        c.send(json!({"type":"ping","id":id})).await;
        assert_eq!(c.expect("pong").await["id"], id);
    }
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let mut cfg = test_config();
    cfg.limits.max_message_bytes = 1024;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let (mut a, w) = Client::connect(addr, "a").await;
    assert_eq!(w["max_message_bytes"], 1024);
    let (mut b, _) = Client::connect(addr, "b").await;
    a.send(json!({"type":"publish","room":"r","data":"x".repeat(4096)}))
        .await;
    assert_eq!(a.expect_close().await, 1009);
    b.send(json!({"type":"ping","id":"b"})).await;
    assert_eq!(b.expect("pong").await["id"], "b");
}

#[tokio::test]
async fn slow_consumer_is_closed_while_others_keep_receiving() {
    let mut cfg = test_config();
    cfg.limits.send_queue_messages = 32;
    cfg.limits.send_queue_bytes = 1024 * 1024;
    cfg.limits.rate_limit_per_sec = 100_000;
    cfg.limits.rate_limit_burst = 100_000;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let (mut publisher, _) = Client::connect(addr, "pub").await;
    let (mut fast, _) = Client::connect(addr, "fast").await;
    let (mut slow, _) = Client::connect(addr, "slow").await;
    publisher.join("r").await;
    fast.join("r").await;
    slow.join("r").await;
    let payload = "y".repeat(30_000);
    let total = 600u64;
    let reader = tokio::spawn(async move {
        // Every room message (events; the slow member's drop is presence, outside the stream).
        let mut seqs = Vec::new();
        let mut events = 0;
        while events < total {
            let v = fast.recv().await;
            if let Some(seq) = v["seq"].as_u64() {
                seqs.push(seq);
            }
            if v["type"] == "event" {
                events += 1;
            }
        }
        seqs
    });
    let drain_pub = tokio::spawn(async move {
        for i in 0..total {
            publisher
                .send(json!({"type":"publish","room":"r","data":{"i":i,"p":payload}}))
                .await;
            tokio::time::sleep(Duration::from_millis(2)).await;
            // Keep the publisher's own socket drained.
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(0), publisher.ws.next()).await
            {
            }
        }
        publisher
    });
    let seqs = reader.await.unwrap();
    let _publisher = drain_pub.await.unwrap();
    for w in seqs.windows(2) {
        assert_eq!(w[0] + 1, w[1], "the fast member saw every event in order");
    }
    assert!(
        eventually(|| async {
            metric(
                addr,
                "holdfast_close_total{code=\"4001\",transport=\"websocket\"}",
            )
            .await
                == 1.0
        })
        .await
    );
    // A consumer that stopped reading cannot read the close frame either unless its buffers had
    // room for it: it sees 4001 or the connection ends (1006). The server recorded 4001 above.
    let code = slow.expect_close().await;
    assert!(code == 4001 || code == 1006, "{code}");
}

#[tokio::test]
async fn rate_limit_errors_then_closes() {
    let mut cfg = test_config();
    cfg.limits.rate_limit_per_sec = 1;
    cfg.limits.rate_limit_burst = 5;
    cfg.limits.rate_limit_strikes = 10;
    let gw = start(cfg).await;
    let (mut a, _) = Client::connect(gw.local_addr(), "a").await;
    for i in 0..5 {
        a.send(json!({"type":"ping","id":format!("{i}")})).await;
        a.expect("pong").await;
    }
    a.send(json!({"type":"ping","id":"over"})).await;
    assert_eq!(a.expect_error("rate_limited").await["id"], "over");
    for _ in 0..20 {
        a.send(json!({"type":"ping"})).await;
    }
    assert_eq!(a.expect_close().await, 4003);
}

#[tokio::test]
async fn origin_and_connection_limits_refuse_upgrades() {
    let mut cfg = test_config();
    cfg.limits.allowed_origins = vec!["https://app.example".into()];
    cfg.limits.max_connections_per_ip = 2;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let q = format!("?token={}", token("o"));
    assert_eq!(
        try_connect(addr, &q, &[("origin", "https://evil.example")])
            .await
            .err(),
        Some(403)
    );
    let _a = try_connect(addr, &q, &[("origin", "https://app.example")])
        .await
        .unwrap();
    let _b = try_connect(addr, &format!("?token={}", token("p")), &[])
        .await
        .unwrap();
    assert_eq!(
        try_connect(addr, &format!("?token={}", token("q")), &[])
            .await
            .err(),
        Some(429)
    );

    let mut cfg = test_config();
    cfg.limits.max_connections = 1;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let _one = try_connect(addr, &format!("?token={}", token("x")), &[])
        .await
        .unwrap();
    assert_eq!(
        try_connect(addr, &format!("?token={}", token("y")), &[])
            .await
            .err(),
        Some(503)
    );
    assert_eq!(
        metric(
            addr,
            "holdfast_upgrades_rejected_total{reason=\"max_connections\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn drain_notifies_closes_1001_and_completes() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let (mut a, _) = Client::connect(addr, "a").await;
    let (mut b, _) = Client::connect(addr, "b").await;
    a.join("r").await;
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    let node = gw.node().clone();
    let drain = tokio::spawn(gw.shutdown());
    let notice = a.until("server_shutdown").await;
    assert_eq!(notice["reconnect_after_ms"], 1000);
    assert_eq!(a.expect_close().await, 1001);
    b.until("server_shutdown").await;
    assert_eq!(b.expect_close().await, 1001);
    assert!(node.is_draining());
    assert_eq!(
        drain.await.unwrap(),
        holdfast_gateway::DrainOutcome::Complete
    );
    assert_eq!(node.open_sessions(), 0);
    // The listener is gone after the drain.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn drain_grace_expires_when_a_session_does_not_close() {
    let mut cfg = test_config();
    cfg.server.drain_timeout_secs = 1;
    cfg.limits.send_queue_messages = 100_000;
    cfg.limits.send_queue_bytes = 512 * 1024 * 1024;
    cfg.limits.rate_limit_per_sec = 100_000;
    cfg.limits.rate_limit_burst = 100_000;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    // A member that never reads: once its socket buffers are full, its session cannot even
    // write the shutdown notice, so it outlives the grace period.
    let (_stuck, _) = Client::connect(addr, "stuck").await;
    let (mut publisher, _) = Client::connect(addr, "pub").await;
    let mut stuck = _stuck;
    stuck.join("r").await;
    publisher.join("r").await;
    let big = "z".repeat(60_000);
    for _ in 0..400 {
        publisher
            .send(json!({"type":"publish","room":"r","data":big}))
            .await;
        // Keep the publisher's own socket drained (it receives its own events).
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(1), publisher.ws.next()).await
        {}
    }
    // Let the fan-out fill the stuck member's socket.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let outcome = gw.shutdown().await;
    assert_eq!(outcome, holdfast_gateway::DrainOutcome::GraceExpired);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the wait is bounded"
    );
    drop(stuck);
}

#[tokio::test]
async fn a_client_that_sends_no_request_is_dropped_after_the_handshake_timeout() {
    use tokio::io::AsyncReadExt;
    let mut cfg = test_config();
    cfg.limits.handshake_timeout_ms = 200;
    let gw = start(cfg).await;
    let mut s = tokio::net::TcpStream::connect(gw.local_addr())
        .await
        .unwrap();
    // Half a request line, then silence.
    tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /ws HT")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("the server gives up within the timeout");
    // Closed (0 bytes) or answered with an error status, but not left hanging.
    if let Ok(n) = read {
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            n == 0 || text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 4"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn metrics_are_present_and_moving() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let (_, body) = http_get(addr, "/metrics").await;
    for name in [
        "holdfast_connections_active{transport=\"websocket\"}",
        "holdfast_connections_active{transport=\"sse\"}",
        "holdfast_connections_active{transport=\"longpoll\"}",
        "holdfast_connections_opened_total",
        "holdfast_connections_closed_total",
        "holdfast_heartbeat_rtt_seconds",
        "holdfast_messages_sent_total",
        "holdfast_messages_failed_total",
        "holdfast_send_buffer_bytes",
        "holdfast_fanout_lag_seconds",
        "holdfast_rooms_active",
        "holdfast_room_members",
        "holdfast_reconnection_tokens_issued_total",
        "holdfast_process_open_fds",
        "holdfast_process_max_fds",
        "holdfast_process_cpu_seconds_total",
        "holdfast_process_resident_memory_bytes",
    ] {
        assert!(body.contains(name), "missing {name}");
    }
    let (mut a, _) = Client::connect(addr, "a").await;
    a.join("r").await;
    a.send(json!({"type":"publish","room":"r","data":1})).await;
    a.expect("event").await;
    assert_eq!(
        metric(addr, "holdfast_connections_active{transport=\"websocket\"}").await,
        1.0
    );
    assert_eq!(metric(addr, "holdfast_rooms_active").await, 1.0);
    assert_eq!(metric(addr, "holdfast_room_members").await, 1.0);
    assert!(metric(addr, "holdfast_messages_sent_total").await >= 3.0);
    assert!(metric(addr, "holdfast_fanout_lag_seconds_count").await >= 1.0);
    a.close().await;
    assert!(
        eventually(|| async {
            metric(addr, "holdfast_connections_active{transport=\"websocket\"}").await == 0.0
        })
        .await
    );
    assert_eq!(
        metric(
            addr,
            "holdfast_connections_closed_total{transport=\"websocket\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            addr,
            "holdfast_close_total{code=\"1000\",transport=\"websocket\"}"
        )
        .await,
        1.0
    );
    assert_eq!(metric(addr, "holdfast_send_buffer_bytes").await, 0.0);
}
