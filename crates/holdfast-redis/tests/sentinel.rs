//! Gateway nodes on a master watched by Redis Sentinel (`redis+sentinel://`): a failover is
//! followed, and every member learns exactly what it lost (here: nothing, in a new epoch).
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn a_sentinel_failover_is_followed_and_reported_exactly() {
    let s = RedisSentinel::start();
    let n0 = node_at(&s.url(), config("n0")).await;
    let n1 = node_at(&s.url(), config("n1")).await;
    let (mut a, _) = Client::connect(n0.local_addr(), "a").await;
    let (mut b, _) = Client::connect(n1.local_addr(), "b").await;
    let ja = a.join("r").await;
    b.send(json!({"type":"join","room":"r"})).await;
    let jb = b.until("joined").await;
    let e1 = ja["epoch"].as_str().unwrap().to_owned();
    for i in 1..=3 {
        a.send(json!({"type":"publish","room":"r","data":i})).await;
    }
    for c in [&mut a, &mut b] {
        let mut seqs = Vec::new();
        while seqs.len() < 3 {
            let v = c.recv().await;
            if v["type"] == "event" {
                seqs.push(v["seq"].as_u64().unwrap());
            }
        }
        assert_eq!(seqs, vec![1, 2, 3]);
    }
    s.sync();
    s.failover();
    // The new master's data was written by another Redis run: the members resume.
    assert_eq!(a.expect_close().await, 1011);
    assert_eq!(b.expect_close().await, 1011);
    let mut resumed = Vec::new();
    for (addr, user, j) in [(n0.local_addr(), "a", &ja), (n1.local_addr(), "b", &jb)] {
        let (mut c, _) = Client::connect(addr, user).await;
        c.send(
            json!({"type":"reconnect","room":"r","player_id":j["player_id"],
            "token":j["reconnection_token"],"last_sequence":3,"epoch":e1}),
        )
        .await;
        let r = c.until("reconnected").await;
        assert_ne!(r["epoch"], e1, "a new epoch: {r}");
        assert_eq!(r["seq"], 3, "the replica had every write: {r}");
        assert!(r.get("rolled_back").is_none(), "nothing was lost: {r}");
        assert_eq!(r["events"], json!([]), "{r}");
        resumed.push((c, r));
    }
    assert_eq!(resumed[0].1["epoch"], resumed[1].1["epoch"]);
    let e2 = resumed[0].1["epoch"].clone();
    resumed[0]
        .0
        .send(json!({"type":"publish","room":"r","data":"after"}))
        .await;
    for (c, _) in &mut resumed {
        let e = c.until("event").await;
        assert_eq!(
            (&e["seq"], &e["epoch"], &e["data"]),
            (&json!(4), &e2, &json!("after"))
        );
    }
}
