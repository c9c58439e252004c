//! End-to-end tests: real clients against a real in-process gateway over 127.0.0.1 sockets,
//! with a TCP proxy in between where a test needs to break the network.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use holdfast_client::protocol::{CloseCode, Encoding, ErrorCode, PresenceStatus};
use holdfast_client::{
    Client, ClientConfig, ClientEvent, CloseError, ConnectError, RequestError, TokenRefresher,
};
use serde_json::json;
use support::{client_config, connect, gateway, token, url, Proxy};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn publish_is_acked_and_delivered_to_every_member() {
    let gw = gateway(|_| {}).await;
    let (alice, a_events) = connect(client_config(gw.local_addr(), "alice")).await;
    let (bob, b_events) = connect(client_config(gw.local_addr(), "bob")).await;
    a_events
        .wait_for(
            "connected",
            WAIT,
            |e| matches!(e, ClientEvent::Connected { user_id, .. } if user_id == "alice"),
        )
        .await;

    let a = alice.join("lobby").await.unwrap();
    assert_eq!(a.authority.as_deref(), Some(a.player_id.as_str()));
    let b = bob.join("lobby").await.unwrap();
    assert_eq!(b.members.len(), 2);
    a_events
        .wait_for(
            "bob joined",
            WAIT,
            |e| matches!(e, ClientEvent::Presence(p) if p.changes.iter().any(|c| c.player_id == b.player_id && c.status == PresenceStatus::Online)),
        )
        .await;

    let seq = alice.publish("lobby", json!({"n": 1})).await.unwrap();
    assert!(seq > b.seq);
    for events in [&a_events, &b_events] {
        events
            .wait_for("the event", WAIT, |e| {
                matches!(e, ClientEvent::Event(ev) if ev.seq == seq && ev.data == json!({"n": 1}))
            })
            .await;
    }

    bob.send("alice", json!("hi")).await.unwrap();
    a_events
        .wait_for(
            "the direct message",
            WAIT,
            |e| matches!(e, ClientEvent::Message(m) if m.from == "bob" && m.data == json!("hi")),
        )
        .await;
    let offline = bob.send("nobody", json!("?")).await;
    assert!(
        matches!(
            offline,
            Err(RequestError::Server {
                code: ErrorCode::UserOffline,
                ..
            })
        ),
        "{offline:?}"
    );
    let not_member = bob.publish("elsewhere", json!(1)).await;
    assert!(
        matches!(
            not_member,
            Err(RequestError::Server {
                code: ErrorCode::NotInRoom,
                ..
            })
        ),
        "{not_member:?}"
    );

    // The authority holder sets the room's state: everyone gets the `state_set`, and a member
    // that is not the holder is refused.
    let lobby = alice.room("lobby");
    assert_eq!(lobby.name(), "lobby");
    lobby.set_state(json!({"tick": 1})).await.unwrap();
    b_events
        .wait_for(
            "the state",
            WAIT,
            |e| matches!(e, ClientEvent::State(s) if s.state == json!({"tick": 1})),
        )
        .await;
    let refused = bob.set_state("lobby", json!({"tick": 2})).await;
    assert!(
        matches!(
            refused,
            Err(RequestError::Server {
                code: ErrorCode::NotAuthority,
                ..
            })
        ),
        "{refused:?}"
    );

    alice.leave("lobby").await.unwrap();
    b_events
        .wait_for(
            "alice left",
            WAIT,
            |e| matches!(e, ClientEvent::Presence(p) if p.changes.iter().any(|c| c.player_id == a.player_id && c.status == PresenceStatus::Left)),
        )
        .await;

    alice.close().await;
    a_events
        .wait_for("closed", WAIT, |e| {
            matches!(e, ClientEvent::Closed(CloseError::ClosedByApplication))
        })
        .await;
    let after = alice.publish("lobby", json!(2)).await;
    assert_eq!(
        after,
        Err(RequestError::Closed(CloseError::ClosedByApplication))
    );
    bob.close().await;
}

#[tokio::test]
async fn abrupt_cuts_mid_stream_lose_and_duplicate_nothing() {
    abrupt_cuts(Encoding::Json).await
}

#[tokio::test]
async fn abrupt_cuts_mid_stream_lose_and_duplicate_nothing_msgpack() {
    abrupt_cuts(Encoding::MsgPack).await
}

async fn abrupt_cuts(enc: Encoding) {
    let gw = gateway(|_| {}).await;
    let proxy = Proxy::start(gw.local_addr()).await;
    let (alice, a_events) = connect(client_config(proxy.addr(), "alice").with_encoding(enc)).await;
    let (bob, b_events) = connect(client_config(proxy.addr(), "bob").with_encoding(enc)).await;
    alice.join("r").await.unwrap();
    bob.join("r").await.unwrap();

    const N: u64 = 300;
    let publisher = alice.clone();
    let publishing = tokio::spawn(async move {
        let mut acks = Vec::new();
        for n in 0..N {
            let seq = publisher
                .publish("r", json!({ "n": n }))
                .await
                .unwrap_or_else(|e| panic!("publish {n}: {e}"));
            acks.push(seq);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        acks
    });
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        proxy.cut_all();
    }
    let acks = tokio::time::timeout(Duration::from_secs(30), publishing)
        .await
        .expect("publishing finishes")
        .expect("publisher task");
    assert!(
        acks.windows(2).all(|w| w[0] < w[1]),
        "acks in order: {acks:?}"
    );
    let last = *acks.last().unwrap();

    for (who, events) in [("alice", &a_events), ("bob", &b_events)] {
        events
            .wait_for(
                "the last event",
                WAIT,
                |e| matches!(e, ClientEvent::Event(ev) if ev.seq == last),
            )
            .await;
        let got = events.room_events("r");
        let expected: Vec<(u64, serde_json::Value)> = acks
            .iter()
            .enumerate()
            .map(|(n, seq)| (*seq, json!({ "n": n })))
            .collect();
        assert_eq!(
            got, expected,
            "{who} sees every event exactly once, in order"
        );
        let seqs = events.room_seqs("r");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{who}: {seqs:?}");
        let all = events.all();
        assert!(
            !all.iter().any(|e| matches!(e, ClientEvent::Gap { .. })),
            "{who}: no gap"
        );
        let resumed = all
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    ClientEvent::Resumed {
                        recovered: true,
                        ..
                    }
                )
            })
            .count();
        assert!(resumed >= 1, "{who} resumed at least once: {all:#?}");
        assert!(all.iter().all(|e| !matches!(
            e,
            ClientEvent::Disconnected {
                will_reconnect: false,
                ..
            }
        )));
    }
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn a_silent_connection_is_detected_and_resumed() {
    let gw = gateway(|_| {}).await;
    let proxy = Proxy::start(gw.local_addr()).await;
    let (alice, events) = connect(client_config(proxy.addr(), "alice")).await;
    alice.join("r").await.unwrap();

    let frozen_at = tokio::time::Instant::now();
    proxy.freeze_all();
    events
        .wait_for("a disconnect without code", WAIT, |e| {
            matches!(
                e,
                ClientEvent::Disconnected {
                    code: None,
                    will_reconnect: true,
                    ..
                }
            )
        })
        .await;
    let detected = frozen_at.elapsed();
    // The window is ping interval + pong timeout = 600 ms.
    assert!(detected >= Duration::from_millis(500), "{detected:?}");
    events
        .wait_for(
            "the resume",
            WAIT,
            |e| matches!(e, ClientEvent::Resumed { room, recovered: true, .. } if room == "r"),
        )
        .await;
    let seq = alice.publish("r", json!("after")).await.unwrap();
    events
        .wait_for(
            "own event",
            WAIT,
            |e| matches!(e, ClientEvent::Event(ev) if ev.seq == seq),
        )
        .await;
    alice.close().await;
}

#[tokio::test]
async fn authority_is_restored_on_resume() {
    authority_restored(Encoding::Json).await
}

#[tokio::test]
async fn authority_is_restored_on_resume_msgpack() {
    authority_restored(Encoding::MsgPack).await
}

async fn authority_restored(enc: Encoding) {
    let gw = gateway(|c| c.reconnection.restore_authority = true).await;
    let proxy = Proxy::start(gw.local_addr()).await;
    let (alice, a_events) = connect(client_config(proxy.addr(), "alice").with_encoding(enc)).await;
    let (bob, b_events) = connect(client_config(gw.local_addr(), "bob").with_encoding(enc)).await;
    let a = alice.join("game").await.unwrap();
    assert_eq!(a.authority.as_deref(), Some(a.player_id.as_str()));
    bob.join("game").await.unwrap();

    proxy.cut_all();
    let resumed = a_events
        .wait_for("the resume", WAIT, |e| {
            matches!(e, ClientEvent::Resumed { .. })
        })
        .await;
    let ClientEvent::Resumed {
        authority, members, ..
    } = resumed
    else {
        unreachable!()
    };
    assert_eq!(authority.as_deref(), Some(a.player_id.as_str()));
    assert_eq!(members.len(), 2);
    b_events
        .wait_for(
            "alice back",
            WAIT,
            |e| matches!(e, ClientEvent::Presence(p) if p.changes.iter().any(|c| c.player_id == a.player_id && c.status == PresenceStatus::Online)),
        )
        .await;
    assert!(
        !b_events
            .all()
            .iter()
            .any(|e| matches!(e, ClientEvent::AuthorityChanged(_))),
        "authority never left alice: {:#?}",
        b_events.all()
    );

    // The restored authority is real: alice can release it, and bob then holds it.
    alice.release_authority("game").await.unwrap();
    let claimed = alice.claim_authority("game").await;
    assert!(
        matches!(
            claimed,
            Err(RequestError::Server {
                code: ErrorCode::AuthorityTaken,
                ..
            })
        ),
        "{claimed:?}"
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn a_lost_range_is_reported_as_one_gap() {
    lost_range(Encoding::Json).await
}

#[tokio::test]
async fn a_lost_range_is_reported_as_one_gap_msgpack() {
    lost_range(Encoding::MsgPack).await
}

async fn lost_range(enc: Encoding) {
    let gw = gateway(|c| c.reconnection.event_buffer_size = 5).await;
    let proxy = Proxy::start(gw.local_addr()).await;
    let (alice, a_events) =
        connect(client_config(gw.local_addr(), "alice").with_encoding(enc)).await;
    let (bob, b_events) = connect(client_config(proxy.addr(), "bob").with_encoding(enc)).await;
    alice.join("r").await.unwrap();
    let b = bob.join("r").await.unwrap();
    let first = alice.publish("r", json!(0)).await.unwrap();
    b_events
        .wait_for(
            "the first event",
            WAIT,
            |e| matches!(e, ClientEvent::Event(ev) if ev.seq == first),
        )
        .await;

    proxy.set_refusing(true);
    proxy.cut_all();
    a_events
        .wait_for(
            "bob away",
            WAIT,
            |e| matches!(e, ClientEvent::Presence(p) if p.changes.iter().any(|c| c.player_id == b.player_id && c.status == PresenceStatus::Away)),
        )
        .await;
    let mut acks = vec![first];
    for n in 1..=20 {
        acks.push(alice.publish("r", json!(n)).await.unwrap());
    }
    proxy.set_refusing(false);
    let last = *acks.last().unwrap();
    b_events
        .wait_for(
            "the last event",
            WAIT,
            |e| matches!(e, ClientEvent::Event(ev) if ev.seq == last),
        )
        .await;

    let all = b_events.all();
    let gaps: Vec<_> = all
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Gap { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(gaps.len(), 1, "{all:#?}");
    let (from, to) = gaps[0];
    assert_eq!(from, first + 1, "the gap starts right after what bob saw");
    assert!(
        all.iter().any(|e| matches!(
            e,
            ClientEvent::Resumed {
                recovered: false,
                ..
            }
        )),
        "{all:#?}"
    );
    // Everything after the gap arrives, once and in order.
    let seqs = b_events.room_seqs("r");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let after: Vec<u64> = seqs.iter().copied().filter(|s| *s > to).collect();
    let expected: Vec<u64> = (to + 1..=last).collect();
    assert_eq!(after, expected, "{all:#?}");
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn server_shutdown_is_honoured_and_the_client_moves_on() {
    let gw1 = gateway(|c| {
        c.server.shutdown_reconnect_after_ms = 300;
        c.server.drain_timeout_secs = 2;
    })
    .await;
    let gw2 = gateway(|_| {}).await;
    let proxy = Proxy::start(gw1.local_addr()).await;
    let (alice, events) = connect(client_config(proxy.addr(), "alice")).await;
    alice.join("r").await.unwrap();

    proxy.set_target(gw2.local_addr());
    let started = tokio::time::Instant::now();
    let draining = tokio::spawn(gw1.shutdown());
    let shutdown = events
        .wait_for("server_shutdown", WAIT, |e| {
            matches!(e, ClientEvent::ServerShutdown { .. })
        })
        .await;
    assert!(matches!(
        shutdown,
        ClientEvent::ServerShutdown { reconnect_after, .. } if reconnect_after == Duration::from_millis(300)
    ));
    events
        .wait_for("disconnect 1001", WAIT, |e| {
            matches!(
                e,
                ClientEvent::Disconnected {
                    code: Some(1001),
                    will_reconnect: true,
                    ..
                }
            )
        })
        .await;
    events
        .wait_until("a second connection", WAIT, |all| {
            all.iter()
                .filter(|e| matches!(e, ClientEvent::Connected { .. }))
                .count()
                == 2
        })
        .await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    // The room lived on the drained node only, so it cannot be resumed on the other one.
    events
        .wait_for(
            "resume failed",
            WAIT,
            |e| matches!(e, ClientEvent::ResumeFailed { room, .. } if room == "r"),
        )
        .await;
    tokio::time::timeout(WAIT, draining)
        .await
        .expect("drain finishes")
        .expect("drain task");
    alice.join("r").await.unwrap();
    alice.publish("r", json!("on the new node")).await.unwrap();
    alice.close().await;
}

#[tokio::test]
async fn a_replaced_connection_stops_retrying() {
    let gw = gateway(|_| {}).await;
    let (first, events) = connect(client_config(gw.local_addr(), "alice")).await;
    first.join("r").await.unwrap();
    let (second, _second_events) = connect(client_config(gw.local_addr(), "alice")).await;

    events
        .wait_for("disconnect 4000", WAIT, |e| {
            matches!(
                e,
                ClientEvent::Disconnected {
                    code: Some(4000),
                    will_reconnect: false,
                    ..
                }
            )
        })
        .await;
    let closed = events
        .wait_for("closed", WAIT, |e| matches!(e, ClientEvent::Closed(_)))
        .await;
    let ClientEvent::Closed(reason) = closed else {
        unreachable!()
    };
    assert_eq!(reason.close_code(), Some(CloseCode::Replaced));
    assert_eq!(first.close_reason(), Some(reason.clone()));
    assert_eq!(
        first.publish("r", json!(1)).await,
        Err(RequestError::Closed(reason))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connects = events
        .all()
        .iter()
        .filter(|e| matches!(e, ClientEvent::Connected { .. }))
        .count();
    assert_eq!(connects, 1, "no reconnection after a terminal code");
    second.close().await;
}

#[tokio::test]
async fn a_refused_token_is_a_typed_error() {
    let gw = gateway(|_| {}).await;
    let bad = Client::connect(ClientConfig::new(url(gw.local_addr()), "not-a-token")).await;
    assert_eq!(bad.err(), Some(ConnectError::Unauthorized { status: 401 }));
    let expired = holdfast_gateway::auth::mint_token_until(support::SECRET, "alice", 1);
    let old = Client::connect(ClientConfig::new(url(gw.local_addr()), expired)).await;
    let err = old.expect_err("refused");
    assert_eq!(err, ConnectError::Unauthorized { status: 401 });
    assert_eq!(
        err.terminal(),
        Some(CloseError::Unauthorized { status: 401 })
    );
}

#[tokio::test]
async fn an_expiring_token_is_refreshed_in_place() {
    let gw = gateway(|c| c.auth.leeway_secs = 0).await;
    let short =
        holdfast_gateway::auth::mint_token(support::SECRET, "alice", Duration::from_secs(2));
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let refresher = TokenRefresher::new(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, std::convert::Infallible>(token("alice")) }
    });
    let config = client_config(gw.local_addr(), "alice");
    let config = ClientConfig {
        token: short,
        ..config
    }
    .with_refresher(refresher);
    let (alice, events) = connect(config).await;
    alice.join("r").await.unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let all = events.all();
    assert!(
        !all.iter()
            .any(|e| matches!(e, ClientEvent::Disconnected { .. })),
        "the session outlived its first token: {all:#?}"
    );
    alice.publish("r", json!("still here")).await.unwrap();
    alice.close().await;
}

#[tokio::test]
async fn an_expired_token_without_refresher_is_terminal() {
    let gw = gateway(|c| c.auth.leeway_secs = 0).await;
    let short =
        holdfast_gateway::auth::mint_token(support::SECRET, "alice", Duration::from_secs(1));
    let config = ClientConfig {
        token: short,
        ..client_config(gw.local_addr(), "alice")
    };
    let (_alice, events) = connect(config).await;
    let closed = events
        .wait_for("closed", WAIT, |e| matches!(e, ClientEvent::Closed(_)))
        .await;
    assert!(
        matches!(&closed, ClientEvent::Closed(e) if e.close_code() == Some(CloseCode::TokenExpired)),
        "{closed:?}"
    );
}

#[tokio::test]
async fn rate_limited_publishes_are_resent_not_lost() {
    let gw = gateway(|c| {
        c.limits.rate_limit_per_sec = 20;
        c.limits.rate_limit_burst = 10;
        c.limits.rate_limit_strikes = 1_000;
    })
    .await;
    let (alice, events) = connect(client_config(gw.local_addr(), "alice")).await;
    alice.join("r").await.unwrap();
    let publishes = (0..30).map(|n| {
        let alice = alice.clone();
        async move { alice.publish("r", json!(n)).await }
    });
    let acks = tokio::time::timeout(
        Duration::from_secs(15),
        futures_util::future::join_all(publishes),
    )
    .await
    .expect("every publish is acknowledged");
    let mut seqs: Vec<u64> = acks.into_iter().map(Result::unwrap).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 30, "one seq per publish");
    let last = *seqs.last().unwrap();
    events
        .wait_for(
            "the last event",
            WAIT,
            |e| matches!(e, ClientEvent::Event(ev) if ev.seq == last),
        )
        .await;
    let mut data: Vec<i64> = events
        .room_events("r")
        .into_iter()
        .map(|(_, d)| d.as_i64().unwrap())
        .collect();
    assert_eq!(data.len(), 30, "each publish delivered once");
    data.sort_unstable();
    assert_eq!(data, (0..30).collect::<Vec<_>>());
    alice.close().await;
}

/// Raw protocol steps: when the reply to a `reconnect` is lost with its connection, the token
/// the client still holds stays redeemable, so the membership is not lost.
#[tokio::test]
async fn a_resume_whose_reply_was_lost_can_be_retried() {
    use futures_util::{SinkExt, StreamExt};
    use holdfast_client::protocol::ServerFrame;
    use tokio_tungstenite::tungstenite::Message;

    async fn open(addr: std::net::SocketAddr) -> support::RawWs {
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={}", token("alice")))
                .await
                .unwrap();
        ws
    }
    async fn next_frame(ws: &mut support::RawWs) -> ServerFrame {
        loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                _ => continue,
            }
        }
    }

    let gw = gateway(|_| {}).await;
    let mut ws = open(gw.local_addr()).await;
    next_frame(&mut ws).await; // welcome
    ws.send(Message::text(r#"{"type":"join","room":"r","id":"j"}"#))
        .await
        .unwrap();
    let ServerFrame::Joined(joined) = next_frame(&mut ws).await else {
        panic!("expected joined")
    };
    let spent = joined.reconnection_token.unwrap();
    drop(ws);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The resume succeeds on the gateway, but the connection dies before the client reads it.
    let reconnect = json!({
        "type": "reconnect", "room": "r", "player_id": joined.player_id,
        "token": spent, "last_sequence": joined.seq, "id": "x",
    })
    .to_string();
    let mut ws = open(gw.local_addr()).await;
    next_frame(&mut ws).await;
    ws.send(Message::text(reconnect.clone())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(ws);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The client only knows the token it sent; trying again with it must not lose the room.
    let mut ws = open(gw.local_addr()).await;
    next_frame(&mut ws).await;
    ws.send(Message::text(reconnect)).await.unwrap();
    let reply = next_frame(&mut ws).await;
    assert!(
        matches!(reply, ServerFrame::Reconnected(_)),
        "{}",
        serde_json::to_string(&reply).unwrap()
    );
}

#[tokio::test]
async fn reconnects_present_a_fresh_token() {
    let gw = gateway(|_| {}).await;
    let proxy = Proxy::start(gw.local_addr()).await;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let refresher = TokenRefresher::new(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, std::convert::Infallible>(token("alice")) }
    });
    let (alice, events) =
        connect(client_config(proxy.addr(), "alice").with_refresher(refresher)).await;
    alice.join("r").await.unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    proxy.cut_all();
    events
        .wait_for("the resume", WAIT, |e| {
            matches!(e, ClientEvent::Resumed { .. })
        })
        .await;
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    alice.close().await;
}

#[tokio::test]
async fn forbidden_is_a_typed_error_and_a_join_token_survives_a_reconnect() {
    // Rooms need a token (the default once a secret is configured).
    let gw = gateway(|c| c.rooms.join = None).await;
    let proxy = Proxy::start(gw.local_addr()).await;
    let (ann, events) = connect(client_config(proxy.addr(), "ann")).await;
    let err = ann.join("private").await.unwrap_err();
    assert!(matches!(err, RequestError::Forbidden { .. }), "{err:?}");
    assert!(err.is_forbidden());
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    let err = ann.send("bob", json!(1)).await.unwrap_err();
    assert!(err.is_forbidden(), "{err:?}");

    let join_token = holdfast_testkit::token_with(json!({"sub": "ann", "room": "private"}));
    ann.join_with_token("private", join_token).await.unwrap();
    proxy.cut_all();
    events
        .wait_for(
            "resumed",
            WAIT,
            |e| matches!(e, ClientEvent::Resumed { room, .. } if room == "private"),
        )
        .await;
    ann.publish("private", json!({"n": 1})).await.unwrap();
}

/// The next event of a room stream, within the wait.
async fn next_of(events: &mut holdfast_client::Events) -> Option<ClientEvent> {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("a room event in time")
}

#[tokio::test]
async fn room_handles_have_event_streams_of_their_own() {
    let gw = gateway(|_| {}).await;
    let proxy = Proxy::start(gw.local_addr()).await;
    // The application reads room streams only: the client's own stream is dropped.
    let (ann, all) = Client::connect(client_config(proxy.addr(), "ann"))
        .await
        .unwrap();
    drop(all);
    let (bob, _bob_events) = connect(client_config(gw.local_addr(), "bob")).await;
    let (red, blue) = (ann.room("red"), ann.room("blue"));
    let (mut red_events, mut blue_events) = (red.events(), blue.events());
    red.join().await.unwrap();
    blue.join().await.unwrap();
    bob.join("red").await.unwrap();
    bob.join("blue").await.unwrap();

    // Each stream gets its own room's events, in order, and nothing of the other room.
    let mut expect = Vec::new();
    for n in 0..5 {
        let room = if n % 2 == 0 { "red" } else { "blue" };
        let seq = bob.publish(room, json!({"n": n})).await.unwrap();
        expect.push((room, seq, n));
    }
    for (stream, name) in [(&mut red_events, "red"), (&mut blue_events, "blue")] {
        let want: Vec<(u64, i32)> = expect
            .iter()
            .filter(|(r, ..)| *r == name)
            .map(|(_, s, n)| (*s, *n))
            .collect();
        let mut got = Vec::new();
        while got.len() < want.len() {
            match next_of(stream).await.expect("open") {
                ClientEvent::Event(e) => {
                    assert_eq!(e.room, name);
                    got.push((e.seq, e.data["n"].as_i64().unwrap() as i32));
                }
                other => assert_eq!(other.room(), Some(name), "{other:?}"),
            }
        }
        assert_eq!(got, want, "{name}");
    }

    // A cut: each room stream sees its own resume, then the events published meanwhile.
    proxy.cut_all();
    let seq = bob.publish("red", json!({"n": "after"})).await.unwrap();
    let mut resumed = false;
    loop {
        match next_of(&mut red_events).await.expect("open") {
            ClientEvent::Resumed { room, .. } => {
                assert_eq!(room, "red");
                resumed = true;
            }
            ClientEvent::Event(e) if e.seq == seq => break,
            other => assert_eq!(other.room(), Some("red"), "{other:?}"),
        }
    }
    assert!(resumed, "the red stream saw the resume");

    // A stream opened twice gets the events twice, once per stream; a dropped one is forgotten.
    let mut again = red.events();
    drop(blue_events);
    let seq = bob.publish("red", json!({"n": "twice"})).await.unwrap();
    bob.publish("blue", json!({"n": "nobody reads"}))
        .await
        .unwrap();
    for stream in [&mut red_events, &mut again] {
        loop {
            if let ClientEvent::Event(e) = next_of(stream).await.expect("open") {
                if e.seq == seq {
                    break;
                }
            }
        }
    }

    // The streams end when the client stops.
    ann.close().await;
    while next_of(&mut red_events).await.is_some() {}
    while next_of(&mut again).await.is_some() {}
    assert!(ann.room("red").events().recv().await.is_none());
    bob.close().await;
}
