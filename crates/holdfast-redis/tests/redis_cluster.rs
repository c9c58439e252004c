//! Gateway nodes on a real 3-master Redis Cluster (`redis+cluster://`): rooms spread over the
//! shards, fan-out with one seq per room, single socket across nodes, and a shard master
//! restart that loses its rooms and says so.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;

use serde_json::json;
use support::*;

/// The index of the master holding `room`'s keys (a key of another slot answers `MOVED`).
async fn shard_of(cluster: &RedisCluster, room: &str) -> usize {
    let key = format!("t:{{b{}}}:r:{room}:st", holdfast_redis::bucket(room));
    for (i, port) in cluster.ports.iter().enumerate() {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let r: redis::RedisResult<i64> =
            redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await;
        if r.is_ok() {
            return i;
        }
    }
    panic!("no master holds {key}");
}

/// Collects the events of every room until each has `n`, skipping other frames.
async fn events_by_room(
    c: &mut Client,
    rooms: usize,
    n: usize,
) -> HashMap<String, Vec<(u64, serde_json::Value)>> {
    let mut got: HashMap<String, Vec<(u64, serde_json::Value)>> = HashMap::new();
    while got.len() < rooms || got.values().any(|v| v.len() < n) {
        let v = c.recv().await;
        if v["type"] == "event" {
            got.entry(v["room"].as_str().unwrap().to_owned())
                .or_default()
                .push((v["seq"].as_u64().unwrap(), v["data"].clone()));
        }
    }
    got
}

#[tokio::test]
async fn rooms_fan_out_across_nodes_exactly_once_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let n0 = node_at(&cluster.url(), config("n0")).await;
    let n1 = node_at(&cluster.url(), config("n1")).await;
    let (mut a, _) = Client::connect(n0.local_addr(), "a").await;
    let (mut b, _) = Client::connect(n1.local_addr(), "b").await;
    let rooms: Vec<String> = (0..12).map(|i| format!("room-{i}")).collect();
    for r in &rooms {
        a.send(json!({"type":"join","room":r})).await;
        a.until("joined").await;
        b.send(json!({"type":"join","room":r})).await;
        b.until("joined").await;
    }
    let mut shards = Vec::new();
    for r in &rooms {
        shards.push(shard_of(&cluster, r).await);
    }
    shards.sort_unstable();
    shards.dedup();
    assert_eq!(shards, vec![0, 1, 2], "the rooms spread over every shard");
    for i in 0..10 {
        for r in &rooms {
            a.send(
                json!({"type":"publish","room":r,"data":{"from":"a","i":i},"id":format!("a{i}")}),
            )
            .await;
            b.send(
                json!({"type":"publish","room":r,"data":{"from":"b","i":i},"id":format!("b{i}")}),
            )
            .await;
        }
    }
    let seen_a = events_by_room(&mut a, rooms.len(), 20).await;
    let seen_b = events_by_room(&mut b, rooms.len(), 20).await;
    for r in &rooms {
        let (ea, eb) = (&seen_a[r], &seen_b[r]);
        let seqs: Vec<u64> = ea.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (1..=20).collect::<Vec<u64>>(),
            "room {r}: gapless, once, in order"
        );
        assert_eq!(ea, eb, "room {r}: the same events for both members");
    }
    // Nothing more arrives: every event came exactly once.
    a.send(json!({"type":"publish","room":"room-0","data":"last","id":"last"}))
        .await;
    let v = a.until("event").await;
    assert_eq!(
        (v["room"].as_str(), v["seq"].as_u64()),
        (Some("room-0"), Some(21))
    );
}

#[tokio::test]
async fn single_socket_and_direct_send_across_nodes_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let n0 = node_at(&cluster.url(), config("n0")).await;
    let n1 = node_at(&cluster.url(), config("n1")).await;
    let (mut old, _) = Client::connect(n0.local_addr(), "u").await;
    let (mut new, _) = Client::connect(n1.local_addr(), "u").await;
    assert_eq!(old.expect_close().await, 4000);
    let (mut other, _) = Client::connect(n0.local_addr(), "sender").await;
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
}

/// A shard master restarts without its data: the members of its rooms are closed with 1011
/// and told on resume that the membership is gone (`reconnection_failed`); the rooms of the
/// other shards lose nothing and resume with everything recovered.
#[tokio::test]
async fn a_shard_master_restart_reports_the_loss_of_its_rooms_exactly() {
    let mut cluster = RedisCluster::start(3);
    let n0 = node_at(&cluster.url(), config("n0")).await;
    let n1 = node_at(&cluster.url(), config("n1")).await;
    // Two rooms on different shards.
    let lost = "lost".to_owned();
    let mut kept = None;
    let (mut a, _) = Client::connect(n0.local_addr(), "a").await;
    let (mut b, _) = Client::connect(n1.local_addr(), "b").await;
    let ja_lost = a.join(&lost).await;
    let shard = shard_of(&cluster, &lost).await;
    for i in 0..50 {
        let r = format!("kept-{i}");
        a.join(&r).await;
        if shard_of(&cluster, &r).await != shard {
            kept = Some((r, i));
            break;
        }
        a.send(json!({"type":"leave","room":r})).await;
        a.until("left").await;
    }
    let (kept, _) = kept.expect("a room on another shard");
    b.send(json!({"type":"join","room":lost})).await;
    let jb_lost = b.until("joined").await;
    b.send(json!({"type":"join","room":kept})).await;
    let jb_kept = b.until("joined").await;
    for r in [&lost, &kept] {
        for i in 1..=3 {
            a.send(json!({"type":"publish","room":r,"data":i})).await;
        }
    }
    let seen = events_by_room(&mut b, 2, 3).await;
    assert_eq!(seen[&kept].last().unwrap().0, 3);
    cluster.restart(shard);
    // Both members are closed so that they resume and learn the loss.
    assert_eq!(a.expect_close().await, 1011);
    assert_eq!(b.expect_close().await, 1011);
    let (mut b2, _) = Client::connect(n0.local_addr(), "b").await;
    b2.send(
        json!({"type":"reconnect","room":kept,"player_id":jb_kept["player_id"],
        "token":jb_kept["reconnection_token"],"last_sequence":3,"epoch":jb_kept["epoch"]}),
    )
    .await;
    let r = b2.until("reconnected").await;
    assert_eq!(r["recovered"], true, "the kept room lost nothing: {r}");
    assert_eq!(r["events"], json!([]), "{r}");
    b2.send(
        json!({"type":"reconnect","room":lost,"player_id":jb_lost["player_id"],
        "token":jb_lost["reconnection_token"],"last_sequence":3,"epoch":jb_lost["epoch"]}),
    )
    .await;
    assert_eq!(
        b2.until("reconnection_failed").await["code"],
        "reconnection_failed"
    );
    let _ = ja_lost;
    // The lost room starts afresh; both rooms carry on.
    let j = b2.join(&lost).await;
    assert_eq!(j["seq"], 0);
    b2.send(json!({"type":"publish","room":kept,"data":"on"}))
        .await;
    let e = b2.until("event").await;
    assert_eq!(
        (e["room"].as_str(), e["seq"].as_u64()),
        (Some(kept.as_str()), Some(4))
    );
}
