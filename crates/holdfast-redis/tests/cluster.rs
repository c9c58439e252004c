//! Several gateway nodes on one real Redis.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn fanout_across_nodes_with_one_seq_per_room() {
    let redis = Redis::start();
    let n0 = node(&redis, config("n0")).await;
    let n1 = node(&redis, config("n1")).await;
    let (mut a, _) = Client::connect(n0.local_addr(), "alice").await;
    let (mut b, _) = Client::connect(n1.local_addr(), "bob").await;
    let ja = a.join_room("r").await;
    let jb = b.join_room("r").await;
    assert_eq!(jb["seq"], 0);
    assert_eq!(jb["epoch"], ja["epoch"]);
    assert_eq!(jb["members"].as_array().unwrap().len(), 2);
    assert_eq!(jb["authority"], ja["player_id"]);
    let mj = a.expect_presence("online").await;
    assert_eq!(mj["player_id"], jb["player_id"]);
    for i in 0..20 {
        a.send(json!({"type":"publish","room":"r","data":{"from":"a","i":i},"id":format!("a{i}")}))
            .await;
        b.send(json!({"type":"publish","room":"r","data":{"from":"b","i":i},"id":format!("b{i}")}))
            .await;
    }
    // Both members see the same 40 events, in the same gapless order.
    let mut seen = Vec::new();
    for c in [&mut a, &mut b] {
        let mut seqs = Vec::new();
        let mut datas = Vec::new();
        while seqs.len() < 40 {
            let v = c.recv().await;
            match v["type"].as_str().unwrap() {
                "event" => {
                    seqs.push(v["seq"].as_u64().unwrap());
                    datas.push(v["data"].clone());
                }
                "ack" => {}
                other => panic!("unexpected {other}: {v}"),
            }
        }
        assert_eq!(seqs, (1..41).collect::<Vec<u64>>());
        seen.push(datas);
    }
    assert_eq!(seen[0], seen[1]);
}

#[tokio::test]
async fn acks_follow_the_publishers_own_copy() {
    let redis = Redis::start();
    let n0 = node(&redis, config("n0")).await;
    let (mut a, _) = Client::connect(n0.local_addr(), "a").await;
    a.join_room("r").await;
    for i in 0..10 {
        a.send(json!({"type":"publish","room":"r","data":i,"id":format!("m{i}")}))
            .await;
        let e = a.expect("event").await;
        let ack = a.expect("ack").await;
        assert_eq!(ack["seq"], e["seq"]);
    }
    // A retried id is not delivered again: the original ack comes back.
    a.send(json!({"type":"publish","room":"r","data":0,"id":"m0"}))
        .await;
    let ack = a.expect("ack").await;
    assert_eq!(ack["seq"], 1);
}

#[tokio::test]
async fn single_socket_and_direct_send_across_nodes() {
    let redis = Redis::start();
    let n0 = node(&redis, config("n0")).await;
    let n1 = node(&redis, config("n1")).await;
    let (mut old, _) = Client::connect(n0.local_addr(), "u").await;
    let (mut new, _) = Client::connect(n1.local_addr(), "u").await;
    assert_eq!(old.expect_close().await, 4000);
    let (mut other, _) = Client::connect(n0.local_addr(), "sender").await;
    // Ownership is recorded asynchronously; retry until it is there.
    let mut delivered = false;
    for i in 0..50 {
        other
            .send(json!({"type":"send","to":"u","data":i,"id":format!("d{i}")}))
            .await;
        let r = other.recv().await;
        if r["type"] == "ack" {
            delivered = true;
            assert_eq!(new.expect("message").await["from"], "sender");
            break;
        }
        assert_eq!(r["code"], "user_offline");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(delivered);
    other
        .send(json!({"type":"send","to":"nobody","data":1,"id":"x"}))
        .await;
    assert_eq!(other.expect("error").await["code"], "user_offline");
}

#[tokio::test]
async fn resume_on_another_node_with_replay() {
    let redis = Redis::start();
    let n0 = node(&redis, config("n0")).await;
    let n1 = node(&redis, config("n1")).await;
    let (mut a, _) = Client::connect(n0.local_addr(), "a").await;
    let (mut b, _) = Client::connect(n1.local_addr(), "b").await;
    a.join_room("r").await;
    let jb = b.join_room("r").await;
    a.expect_presence("online").await;
    drop(b); // cut, no close frame
    a.expect_presence("away").await;
    for i in 0..5 {
        a.send(json!({"type":"publish","room":"r","data":i})).await;
        a.expect("event").await;
    }
    // Bob comes back on the other node.
    let (mut b2, _) = Client::connect(n0.local_addr(), "b").await;
    b2.send(
        json!({"type":"reconnect","room":"r","player_id":jb["player_id"],
        "token":jb["reconnection_token"],"last_sequence":jb["seq"]}),
    )
    .await;
    let r = b2.expect("reconnected").await;
    assert_eq!(r["recovered"], true, "{r}");
    let seqs: Vec<u64> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(r["player_id"], jb["player_id"]);
    assert_eq!(r["seq"], 5);
    assert_eq!(
        a.expect_presence("online").await["player_id"],
        jb["player_id"]
    );
    a.send(json!({"type":"publish","room":"r","data":"live"}))
        .await;
    let e = b2.expect("event").await;
    assert_eq!(e["seq"].as_u64().unwrap(), r["seq"].as_u64().unwrap() + 1);
}

#[tokio::test]
async fn gap_is_exact_when_history_was_trimmed() {
    let redis = Redis::start();
    let mut cfg = config("n0");
    cfg.reconnection.event_buffer_size = 5;
    let n0 = node(&redis, cfg).await;
    let (mut a, _) = Client::connect(n0.local_addr(), "a").await;
    let (mut b, _) = Client::connect(n0.local_addr(), "b").await;
    a.join_room("r").await;
    let jb = b.join_room("r").await;
    a.expect_presence("online").await;
    drop(b);
    a.expect_presence("away").await;
    for i in 0..10 {
        a.send(json!({"type":"publish","room":"r","data":i})).await;
        a.expect("event").await;
    } // 1..=10
    let (mut b2, _) = Client::connect(n0.local_addr(), "b").await;
    b2.send(
        json!({"type":"reconnect","room":"r","player_id":jb["player_id"],
        "token":jb["reconnection_token"],"last_sequence":0}),
    )
    .await;
    let r = b2.expect("reconnected").await;
    assert_eq!(r["recovered"], false);
    assert_eq!(r["gap"]["from"], 1);
    assert_eq!(r["gap"]["to"], 5);
    let seqs: Vec<u64> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![6, 7, 8, 9, 10]);
}

#[tokio::test]
async fn presence_expiry_and_authority_hand_over_across_nodes() {
    let redis = Redis::start();
    let mut c0 = config("n0");
    c0.reconnection.window_secs = 1;
    let mut c1 = config("n1");
    c1.reconnection.window_secs = 1;
    let n0 = node(&redis, c0).await;
    let n1 = node(&redis, c1).await;
    let (mut host, _) = Client::connect(n0.local_addr(), "host").await;
    let (mut guest, _) = Client::connect(n1.local_addr(), "guest").await;
    let jh = host.join_room("r").await;
    let jg = guest.join_room("r").await;
    assert_eq!(jg["authority"], jh["player_id"]);
    drop(host);
    assert_eq!(
        guest.expect_presence("away").await["player_id"],
        jh["player_id"]
    );
    // The window passes: the host leaves for good and authority passes to the guest.
    assert_eq!(
        guest.expect_presence("left").await["player_id"],
        jh["player_id"]
    );
    assert_eq!(
        guest.expect("authority_changed").await["authority"],
        jg["player_id"]
    );
    let (mut late, _) = Client::connect(n0.local_addr(), "host").await;
    late.send(
        json!({"type":"reconnect","room":"r","player_id":jh["player_id"],
        "token":jh["reconnection_token"],"last_sequence":2}),
    )
    .await;
    assert_eq!(
        late.expect("reconnection_failed").await["code"],
        "reconnection_expired"
    );
}

#[tokio::test]
async fn redis_outage_reports_not_ready_and_errors_then_recovers() {
    let mut redis = Redis::start();
    let n0 = node(&redis, config("n0")).await;
    let addr = n0.local_addr();
    let (mut a, _) = Client::connect(addr, "a").await;
    a.join_room("r").await;
    redis.stop();
    assert!(eventually(|| async { http_status(addr, "/readyz").await == 503 }).await);
    a.send(json!({"type":"publish","room":"r","data":1,"id":"p"}))
        .await;
    let e = a.until("error").await;
    assert_eq!(e["code"], "broker_unavailable");
    assert_eq!(e["id"], "p");
    // Redis comes back empty: the room's stream is gone, so the member is told (closed with
    // 1011 to resume), never left silently on a dead stream.
    redis.restart();
    assert!(eventually(|| async { http_status(addr, "/readyz").await == 200 }).await);
    assert_eq!(a.expect_close().await, 1011);
    let (mut b, _) = Client::connect(addr, "b").await;
    let j = b.join_room("r").await;
    assert_eq!(j["seq"], 0, "a fresh stream");
    assert_eq!(
        j["member_count"], 1,
        "with a new epoch and only the new member"
    );
}

#[tokio::test]
async fn unreachable_redis_at_start_is_a_clear_error_after_retries() {
    let port = free_port();
    let started = std::time::Instant::now();
    let r = holdfast_redis::connect_with_retry(
        &holdfast_redis::Options::new(&format!("redis://127.0.0.1:{port}/"), "t"),
        std::time::Duration::from_millis(700),
    )
    .await;
    let e = r.err().expect("no Redis there");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "it retried"
    );
    assert!(!e.to_string().is_empty());
}

trait JoinExt {
    async fn join_room(&mut self, room: &str) -> serde_json::Value;
}

impl JoinExt for Client {
    async fn join_room(&mut self, room: &str) -> serde_json::Value {
        self.send(json!({"type":"join","room":room})).await;
        self.expect_reply("joined").await
    }
}

#[tokio::test]
async fn a_kick_lost_during_an_outage_is_applied_after_reconnecting() {
    let redis = Redis::start();
    let n0 = node(&redis, config("n0")).await;
    let (mut u, w) = Client::connect(n0.local_addr(), "u").await;
    let session = w["session_id"].as_str().unwrap().to_owned();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let owner: Option<String> = redis::cmd("HGET")
        .arg("t:u:{u}")
        .arg("s")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(owner.as_deref(), Some(session.as_str()));
    // A newer connection elsewhere claimed the user, and its kick never reached this node.
    let _: () = redis::cmd("HSET")
        .arg("t:u:{u}")
        .arg("s")
        .arg("elsewhere-1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(u.expect_close().await, 4000);
}

#[tokio::test]
async fn many_members_joining_one_room_at_once_all_get_their_place() {
    let redis = Redis::start();
    let n0 = node(&redis, config("n0")).await;
    let n1 = node(&redis, config("n1")).await;
    // Everyone connects first, then all joins go out at once, so many joins of the same room
    // are in flight on one node together.
    let mut clients = Vec::new();
    for i in 0..120 {
        let addr = if i % 4 == 0 {
            n1.local_addr()
        } else {
            n0.local_addr()
        };
        clients.push(Client::connect(addr, &format!("u{i}")).await.0);
    }
    for c in clients.iter_mut() {
        c.send(json!({"type":"join","room":"crowd"})).await;
    }
    let mut placed = Vec::new();
    for mut c in clients {
        let j = c.expect("joined").await;
        placed.push((c, j["seq"].as_u64().unwrap()));
    }
    let mut clients = placed;
    let (publisher, _) = &mut clients[0];
    publisher
        .send(json!({"type":"publish","room":"crowd","data":"all here?"}))
        .await;
    // Every member gets the event right after its own position (presence frames aside).
    for (c, joined_at) in clients.iter_mut() {
        assert_eq!(*joined_at, 0);
        loop {
            let v = c.recv().await;
            if v["type"] == "presence" {
                continue;
            }
            assert_eq!(v["type"], "event", "{v}");
            assert_eq!(v["seq"], 1);
            assert_eq!(v["data"], "all here?");
            break;
        }
    }
}

#[tokio::test]
async fn a_publish_costs_one_redis_round_trip() {
    let redis = Redis::start();
    let n0 = node(&redis, config("n0")).await;
    let (mut a, _) = Client::connect(n0.local_addr(), "a").await;
    a.join_room("r").await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    for i in 0..100 {
        a.send(json!({"type":"publish","room":"r","data":i,"id":format!("m{i}")}))
            .await;
        a.expect("event").await;
        a.expect("ack").await;
    }
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Successful calls of a command issued by clients (commands run inside scripts are counted
    // under their own names, so only the script commands are looked at).
    let calls = |name: &str| -> u64 {
        let Some(line) = info
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{name}:")))
        else {
            return 0;
        };
        let field = |key: &str| -> u64 {
            line.split([':', ','])
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        field("calls") - field("failed_calls")
    };
    // One script per publish, and the publish path issues nothing else of its own.
    assert_eq!(calls("evalsha") + calls("eval"), 100, "{info}");
}

/// Collects `n` events (skipping acks and presence), as `(seq, epoch, data)`.
async fn events(c: &mut Client, n: usize) -> Vec<(u64, String, serde_json::Value)> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = c.recv().await;
        if v["type"] == "event" {
            out.push((
                v["seq"].as_u64().unwrap(),
                v["epoch"].as_str().unwrap().to_owned(),
                v["data"].clone(),
            ));
        }
    }
    out
}

/// Redis comes back from a snapshot older than what clients saw (a crash between snapshots,
/// a lagging replica): the stream must not go backwards silently. The room starts a new
/// epoch, and each member learns exactly which of its messages were rolled back.
#[tokio::test]
async fn redis_back_with_older_data_starts_a_new_epoch_and_reports_the_rollback() {
    let mut redis = Redis::start_with_snapshots();
    let n0 = node(&redis, config("n0")).await;
    let n1 = node(&redis, config("n1")).await;
    let (mut a, _) = Client::connect(n0.local_addr(), "a").await;
    let (mut b, _) = Client::connect(n1.local_addr(), "b").await;
    let ja = a.join_room("r").await;
    let jb = b.join_room("r").await;
    let e1 = ja["epoch"].as_str().unwrap().to_owned();
    for i in 1..=3 {
        a.send(json!({"type":"publish","room":"r","data":i})).await;
    }
    assert_eq!(events(&mut b, 3).await.last().unwrap().0, 3);
    events(&mut a, 3).await;
    // The snapshot holds the room at seq 3; seqs 4..=6 are acknowledged and delivered, then
    // lost with the crash.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
    for i in 4..=6 {
        a.send(json!({"type":"publish","room":"r","data":i})).await;
    }
    assert_eq!(events(&mut b, 3).await.last().unwrap().0, 6);
    events(&mut a, 3).await;
    redis.restart();
    // Both members are closed so that they resume.
    assert_eq!(a.expect_close().await, 1011);
    assert_eq!(b.expect_close().await, 1011);
    let mut resumed = Vec::new();
    for (addr, user, j) in [(n0.local_addr(), "a", &ja), (n1.local_addr(), "b", &jb)] {
        let (mut c, _) = Client::connect(addr, user).await;
        c.send(
            json!({"type":"reconnect","room":"r","player_id":j["player_id"],
            "token":j["reconnection_token"],"last_sequence":6,"epoch":e1}),
        )
        .await;
        let r = c.expect("reconnected").await;
        assert_eq!(r["recovered"], false, "{r}");
        assert_ne!(r["epoch"], e1, "a new epoch: {r}");
        assert_eq!(
            r["rolled_back"],
            json!({"from":4,"to":6,"epoch":e1}),
            "exactly what was rolled back: {r}"
        );
        assert_eq!(r["events"], json!([]), "{r}");
        resumed.push((c, r));
    }
    assert_eq!(resumed[0].1["epoch"], resumed[1].1["epoch"]);
    let e2 = resumed[0].1["epoch"].as_str().unwrap().to_owned();
    // New messages take seq 4 on in the new epoch, the same for everyone.
    resumed[0]
        .0
        .send(json!({"type":"publish","room":"r","data":"new"}))
        .await;
    for (c, _) in &mut resumed {
        let got = events(c, 1).await;
        assert_eq!(got, vec![(4, e2.clone(), json!("new"))]);
    }
}

/// Redis came back with older data and no commit has noticed it yet: a resume whose token was
/// issued after the snapshot is refused with `reconnection_failed` (the membership's token was
/// lost with the rollback: join again), never `reconnection_token_invalid`, even though the
/// refusal itself changes nothing. Found by the chaos suite.
#[tokio::test]
async fn a_resume_refused_on_restored_data_says_the_membership_was_rolled_back() {
    let mut redis = Redis::start_with_snapshots();
    let n0 = node(&redis, config("n0")).await;
    let (mut u, _) = Client::connect(n0.local_addr(), "u").await;
    let j = u.join_room("r").await;
    let e1 = j["epoch"].as_str().unwrap().to_owned();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
    // After the snapshot: the member resumes on a new connection (its token rotates), then
    // goes away.
    drop(u);
    let (mut u2, _) = Client::connect(n0.local_addr(), "u").await;
    u2.send(
        json!({"type":"reconnect","room":"r","player_id":j["player_id"],
        "token":j["reconnection_token"],"last_sequence":0,"epoch":e1}),
    )
    .await;
    let r = u2.expect("reconnected").await;
    let rotated = r["reconnection_token"].as_str().unwrap().to_owned();
    drop(u2);
    // Wait until the member is away in Redis (the session's end was committed).
    let key = state_key(&mut conn, "r").await;
    let mut away = false;
    for _ in 0..200 {
        let s = room_state(&mut conn, &key).await;
        if s["members"][0]["away_until"].is_u64() {
            away = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(away, "the member went away");
    redis.restart();
    let (mut back, _) = Client::connect(n0.local_addr(), "u").await;
    back.send(
        json!({"type":"reconnect","room":"r","player_id":j["player_id"],
        "token":rotated,"last_sequence":0,"epoch":e1}),
    )
    .await;
    let f = back.until("reconnection_failed").await;
    assert_eq!(f["code"], "reconnection_failed", "{f}");
    let joined = back.join_room("r").await;
    assert_ne!(
        joined["epoch"], e1,
        "the restored room went on in a new epoch"
    );
}

/// A node restarted with the same `server.node_id` never hands out a session id it used
/// before: rooms and kicks name sessions by id.
#[tokio::test]
async fn session_ids_are_unique_across_restarts_of_a_node() {
    let redis = Redis::start();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let n = node(&redis, config("n0")).await;
        let (_, w) = Client::connect(n.local_addr(), "u").await;
        ids.push(w["session_id"].as_str().unwrap().to_owned());
        n.shutdown().await;
    }
    assert_ne!(ids[0], ids[1]);
}

/// A claim of a user that reaches Redis after a newer session of the same user owns it (it
/// was delayed by a partition or a stall) never closes the newer session: the late one loses.
#[tokio::test]
async fn a_late_ownership_claim_never_evicts_a_newer_session() {
    let redis = Redis::start();
    let n0 = node(&redis, config("n0")).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // A newer session of `u` on another node owns the user (claimed a moment from now on
    // Redis's clock, so every claim n0 makes now is older).
    let (secs, _): (String, String) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let later = secs.parse::<u64>().unwrap() * 1000 + 60_000;
    set_owner(&mut conn, "n9-x-1", later).await;
    let (mut old, _) = Client::connect(n0.local_addr(), "u").await;
    assert_eq!(
        old.expect_close().await,
        4000,
        "the older session is the one replaced"
    );
    let owner: Option<String> = redis::cmd("HGET")
        .arg("t:u:{u}")
        .arg("s")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(owner.as_deref(), Some("n9-x-1"));
}

/// `/readyz` and `holdfast_redis_connected` follow a bounded PING on both connections: a
/// Redis that stops answering (here: paused) makes the node not ready within seconds.
#[tokio::test]
async fn readiness_follows_a_bounded_ping_of_redis() {
    let redis = Redis::start();
    let n0 = node(&redis, config("n0")).await;
    let addr = n0.local_addr();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(6000)
        .arg("ALL")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(eventually(|| async { http_status(addr, "/readyz").await == 503 }).await);
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(eventually(|| async { http_status(addr, "/readyz").await == 200 }).await);
}

/// Redis lost its data (FLUSHALL stands for a restart without persistence): a member's next
/// room operation closes the session with 1011, so the client resumes and is told
/// `reconnection_failed` (then joins again), never a bare `not_in_room`.
#[tokio::test]
async fn a_membership_lost_with_the_data_closes_the_session_so_it_resumes() {
    let redis = Redis::start();
    let n0 = node(&redis, config("n0")).await;
    let (mut u, _) = Client::connect(n0.local_addr(), "u").await;
    let j = u.join_room("r").await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    u.send(json!({"type":"publish","room":"r","data":1,"id":"a"}))
        .await;
    assert_eq!(u.expect_close().await, 1011);
    let (mut back, _) = Client::connect(n0.local_addr(), "u").await;
    back.send(
        json!({"type":"reconnect","room":"r","player_id":j["player_id"],
        "token":j["reconnection_token"],"last_sequence":0,"epoch":j["epoch"]}),
    )
    .await;
    assert_eq!(
        back.until("reconnection_failed").await["code"],
        "reconnection_failed"
    );
    back.join_room("r").await;
}

/// In cluster mode the room gauges are the node's own: rooms with a local member, local
/// members, and away members of those rooms.
#[tokio::test]
async fn room_gauges_count_the_nodes_own_rooms_and_members() {
    use holdfast_testkit::metric;
    let redis = Redis::start();
    let n0 = node(&redis, config("n0")).await;
    let n1 = node(&redis, config("n1")).await;
    let (a0, a1) = (n0.local_addr(), n1.local_addr());
    let (mut a, _) = Client::connect(a0, "a").await;
    let (mut b, _) = Client::connect(a0, "b").await;
    let (mut c, _) = Client::connect(a1, "c").await;
    a.join_room("r").await;
    b.join_room("r").await;
    c.join_room("r").await;
    a.join_room("s").await;
    let gauges = |addr| async move {
        (
            metric(addr, "holdfast_rooms_active").await,
            metric(addr, "holdfast_room_members").await,
            metric(addr, "holdfast_reconnection_sessions_active").await,
        )
    };
    assert!(eventually(|| async { gauges(a0).await == (2.0, 3.0, 0.0) }).await);
    assert!(eventually(|| async { gauges(a1).await == (1.0, 1.0, 0.0) }).await);
    // b drops: away in a room n0 has a view of.
    drop(b);
    assert!(eventually(|| async { gauges(a0).await == (2.0, 2.0, 1.0) }).await);
}

/// A node whose own lease lapsed (cut off from Redis for longer than it) closes its room
/// sessions with 1011 when it sees it, since the other nodes turned its members away; they
/// resume.
#[tokio::test]
async fn a_node_whose_lease_lapsed_closes_its_room_sessions_so_they_resume() {
    let redis = Redis::start();
    let n0 = node(&redis, config("n0")).await;
    let (mut u, _) = Client::connect(n0.local_addr(), "u").await;
    let j = u.join_room("r").await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut lease = None;
    for _ in 0..100 {
        let all: Vec<String> = redis::cmd("ZRANGE")
            .arg("t:{g}:leases")
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
        lease = all.into_iter().find(|l| l.starts_with("n0-"));
        if lease.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let lease = lease.expect("the node holds a lease");
    // Seen alive at least once by the node's own sweep.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let _: () = redis::cmd("ZADD")
        .arg("t:{g}:leases")
        .arg(1)
        .arg(&lease)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(u.expect_close().await, 1011);
    let (mut back, _) = Client::connect(n0.local_addr(), "u").await;
    back.send(
        json!({"type":"reconnect","room":"r","player_id":j["player_id"],
        "token":j["reconnection_token"],"last_sequence":0,"epoch":j["epoch"]}),
    )
    .await;
    back.until("reconnected").await;
}

/// A TCP proxy to `upstream` that delivers every chunk `delay` after it was read, in order
/// (a node with a slower link to Redis than the others).
async fn latency_proxy(upstream: u16, delay: std::time::Duration) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        delay: std::time::Duration,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(1024);
        tokio::spawn(async move {
            while let Some((at, data)) = rx.recv().await {
                tokio::time::sleep_until(at + delay).await;
                if to.write_all(&data).await.is_err() {
                    return;
                }
            }
        });
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || tx
                    .send((tokio::time::Instant::now(), buf[..n].to_vec()))
                    .await
                    .is_err()
            {
                return;
            }
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            tokio::spawn(pipe(dr, uw, delay));
            tokio::spawn(pipe(ur, dw, delay));
        }
    });
    port
}

/// Nodes that find the same room restored by another run of Redis (each first told `rebase`
/// by the commit script) start one new epoch between them: a node that reloads the room after
/// another already rebased it for this run does not start a second one. A second epoch
/// starting one seq later would hide the first one's messages from every resume (its
/// `rolled_back` and replay would count from the later base). Found by the chaos suite
/// (`redis-old-snapshot`).
#[tokio::test]
async fn nodes_racing_on_a_restored_room_start_one_new_epoch() {
    const ROOMS: usize = 8;
    let redis = Redis::start();
    let n0 = node(&redis, config("n0")).await;
    // n1 reaches Redis through a 20 ms link: told `rebase` together with n0, it reloads the
    // room only after n0 committed the new epoch.
    let port = redis
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let slow = latency_proxy(port.parse().unwrap(), std::time::Duration::from_millis(20)).await;
    let cluster = holdfast_redis::connect(&format!("redis://127.0.0.1:{slow}/"), "t")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let n1 = holdfast_gateway::Gateway::start_with(
        config("n1"),
        listener,
        cluster.broker,
        Some(cluster.store),
    )
    .await
    .unwrap();
    assert!(eventually(|| async { http_status(n1.local_addr(), "/readyz").await == 200 }).await);
    // One member per node in each room (a session closed for one room's new epoch must not
    // keep the other rooms from committing).
    let rooms: Vec<String> = (0..ROOMS).map(|i| format!("r{i}")).collect();
    let mut members = Vec::new();
    for r in &rooms {
        let (mut a, _) = Client::connect(n0.local_addr(), &format!("a-{r}")).await;
        let (mut b, _) = Client::connect(n1.local_addr(), &format!("b-{r}")).await;
        a.join_room(r).await;
        b.join_room(r).await;
        members.push([a, b]);
    }
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut before = Vec::new();
    for r in &rooms {
        let key = state_key(&mut conn, r).await;
        let s = room_state(&mut conn, &key).await;
        before.push((s["seq"].as_u64().unwrap(), s["epoch"].clone()));
        // As if restored from a snapshot another run of Redis wrote.
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg("r")
            .arg("0000000000000000000000000000000000000000")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // Both nodes commit into every room at once: writes are held back until both loaded the
    // room and sent their commit, so each is first told `rebase`.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(5000)
        .arg("WRITE")
        .query_async(&mut conn)
        .await
        .unwrap();
    for (r, m) in rooms.iter().zip(members.iter_mut()) {
        for (i, c) in m.iter_mut().enumerate() {
            c.send(json!({"type":"publish","room":r,"data":i,"id":"x"}))
                .await;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut seen = Vec::new();
    for (r, (seq0, epoch0)) in rooms.iter().zip(&before) {
        let key = state_key(&mut conn, r).await;
        let mut s = serde_json::Value::Null;
        for _ in 0..200 {
            s = room_state(&mut conn, &key).await;
            if s["seq"].as_u64().unwrap() >= seq0 + 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_ne!(&s["epoch"], epoch0, "{r}: a new epoch: {s}");
        seen.push((r.clone(), s["base"].as_u64().unwrap_or(0), *seq0));
    }
    let rebased_twice: Vec<_> = seen.iter().filter(|(_, base, seq0)| base != seq0).collect();
    assert!(
        rebased_twice.is_empty(),
        "the new epoch starts where the restored stream ended, once: {rebased_twice:?}"
    );
}

/// Redis came back with an ownership record older than a live session's claim (restored from
/// a snapshot taken before the user moved here): after the pub/sub reconnect, the node claims
/// the user again for its session instead of closing it with 4000, a code that tells the
/// client never to reconnect. Found by the chaos suite (`redis-old-snapshot-after-reconnect`).
#[tokio::test]
async fn a_restored_older_ownership_record_does_not_close_the_newer_session() {
    let redis = Redis::start();
    let n0 = node(&redis, config("n0")).await;
    let (mut u, welcome) = Client::connect(n0.local_addr(), "u").await;
    let session = welcome["session_id"].as_str().unwrap().to_owned();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (secs, _): (String, String) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let earlier = secs.parse::<u64>().unwrap() * 1000 - 60_000;
    // As restored: the user's session of a minute ago, on another node.
    set_owner(&mut conn, "n9-x-1", earlier).await;
    // The node's pub/sub connection drops and comes back, as after a Redis restart.
    drop_pubsub(&mut conn).await;
    let owned = eventually(|| {
        let client = client.clone();
        let session = session.clone();
        async move {
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let owner: Option<String> = redis::cmd("HGET")
                .arg("t:u:{u}")
                .arg("s")
                .query_async(&mut conn)
                .await
                .unwrap();
            owner.as_deref() == Some(session.as_str())
        }
    })
    .await;
    assert!(owned, "the live session owns the user again");
    u.send(json!({"type":"ping","id":"still-here"})).await;
    assert_eq!(u.until("pong").await["id"], "still-here");

    // A record newer than the session still closes it (a kick that was lost).
    let later = secs.parse::<u64>().unwrap() * 1000 + 60_000;
    set_owner(&mut conn, "n9-x-2", later).await;
    drop_pubsub(&mut conn).await;
    assert_eq!(u.expect_close().await, 4000);
}

/// Writes user `u`'s ownership record as if session `session` of node `n9` claimed it at `at`
/// (ms, Redis's clock).
/// The key of `room`'s state hash, wherever its bucket put it.
async fn state_key(conn: &mut redis::aio::MultiplexedConnection, room: &str) -> String {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("t:*:r:{room}:st"))
        .query_async(conn)
        .await
        .unwrap();
    let [key] = keys.as_slice() else {
        panic!("one state key for {room}: {keys:?}")
    };
    key.clone()
}

/// The room state (JSON) held in the state hash `key`.
async fn room_state(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> serde_json::Value {
    let raw: Option<String> = redis::cmd("HGET")
        .arg(key)
        .arg("s")
        .query_async(conn)
        .await
        .unwrap();
    serde_json::from_str(&raw.unwrap()).unwrap()
}

async fn set_owner(conn: &mut redis::aio::MultiplexedConnection, session: &str, at: u64) {
    let _: () = redis::cmd("HSET")
        .arg("t:u:{u}")
        .arg("n")
        .arg("n9")
        .arg("s")
        .arg(session)
        .arg("t")
        .arg(at)
        .query_async(conn)
        .await
        .unwrap();
}

/// Drops every pub/sub connection, as a Redis restart does; the nodes reconnect.
async fn drop_pubsub(conn: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(conn)
        .await
        .unwrap();
}
