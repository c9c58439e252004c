//! The room contract: every case holds on every backend.

use std::collections::BTreeSet;

use holdfast_protocol::{CloseCode, ErrorCode};
use serde_json::json;

use super::harness::*;

pub async fn first_member_holds_authority(b: Backend) {
    let env = Env::new(b, config()).await;
    let a = env.session("a");
    let (_, j) = env.join(&a, "r").await;
    assert_eq!(j["player_id"], "p1");
    assert_eq!(j["authority"], "p1");
    assert_eq!(j["seq"], 0);
    assert_eq!(j["member_count"], 1);
    assert_eq!(
        j["members"],
        json!([{"player_id":"p1","user_id":"a","status":"online"}])
    );
    assert_eq!(token(&j).len(), 64);
}

pub async fn a_second_member_is_announced_and_listed(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session_on(1, "b"));
    let (_, ja) = env.join(&a, "r").await;
    let (_, jb) = env.join_on(1, &x, "r").await;
    assert_eq!(jb["player_id"], "p2");
    // Presence is not part of the stream: a join does not move seq.
    assert_eq!(jb["seq"], 0);
    assert_eq!(jb["member_count"], 2);
    assert_eq!(jb["epoch"], ja["epoch"]);
    assert_eq!(jb["members"].as_array().unwrap().len(), 2);
    assert_eq!(presence(&a).await, vec![change("p2", "online")]);
    // Nothing about itself for the joiner: its own join is in its `joined`.
    quiet(&x).await;
}

pub async fn player_ids_are_never_reused(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x, c) = (env.session("a"), env.session("b"), env.session("c"));
    env.join(&a, "r").await;
    let (mx, _) = env.join(&x, "r").await;
    env.node(0).leave(&mx, &x, None).await.unwrap();
    let (_, jc) = env.join(&c, "r").await;
    assert_eq!(jc["player_id"], "p3");
}

pub async fn a_full_room_refuses_and_changes_nothing(b: Backend) {
    let mut cfg = config();
    cfg.limits.max_members_per_room = 2;
    let env = Env::new(b, cfg).await;
    let (a, x, c) = (env.session("a"), env.session("b"), env.session("c"));
    env.join(&a, "r").await;
    let (mx, _) = env.join(&x, "r").await;
    assert_eq!(presence(&a).await, vec![change("p2", "online")]);
    let e = env.node(0).join("r", &c, None).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::RoomFull);
    quiet(&a).await;
    env.node(0).leave(&mx, &x, None).await.unwrap();
    let (_, jc) = env.join(&c, "r").await;
    assert_eq!(jc["player_id"], "p3");
    assert_eq!(jc["member_count"], 2);
}

pub async fn a_fresh_join_replaces_an_away_membership_of_the_same_user(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    env.join(&a, "r").await;
    let (mx, _) = env.join(&x, "r").await;
    assert_eq!(presence(&a).await, vec![change("p2", "online")]);
    env.node(0).disconnect(&mx, &x).await;
    assert_eq!(presence(&a).await, vec![change("p2", "away")]);
    let x2 = env.session_on(1, "b");
    let (_, j) = env.join_on(1, &x2, "r").await;
    assert_eq!(j["player_id"], "p3");
    let players: Vec<_> = j["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["player_id"].clone())
        .collect();
    assert_eq!(players, vec![json!("p1"), json!("p3")]);
    assert_eq!(
        presence(&a).await,
        vec![change("p2", "left"), change("p3", "online")]
    );
}

pub async fn a_retried_join_of_the_same_session_converges(b: Backend) {
    let env = Env::new(b, config()).await;
    let a = env.session("a");
    let (m1, j1) = env.join(&a, "r").await;
    // The first reply was lost (the session never recorded the membership): the retry gets
    // the same membership, with a fresh token, and no second member.
    let (m2, j2) = env.join(&a, "r").await;
    assert_eq!(m1.player, m2.player);
    assert_eq!(j2["members"].as_array().unwrap().len(), 1);
    assert_ne!(token(&j1), token(&j2));
    assert_eq!(j2["seq"], 0);
}

pub async fn leave_replies_left_and_tells_the_others(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session_on(1, "b"));
    env.join(&a, "r").await;
    let (mx, _) = env.join_on(1, &x, "r").await;
    assert_eq!(presence(&a).await, vec![change("p2", "online")]);
    env.node(1).leave(&mx, &x, Some("l".into())).await.unwrap();
    let l = expect(&x, "left").await;
    assert_eq!((l["seq"].clone(), l["id"].clone()), (json!(0), json!("l")));
    assert_eq!(presence(&a).await, vec![change("p2", "left")]);
    quiet(&x).await;
}

pub async fn leave_passes_authority_to_the_longest_present(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x, c) = (env.session("a"), env.session("b"), env.session("c"));
    let (ma, _) = env.join(&a, "r").await;
    env.join(&x, "r").await;
    env.join(&c, "r").await;
    presence_until(&x, "p3", "online").await;
    env.node(0).leave(&ma, &a, None).await.unwrap();
    for s in [&x, &c] {
        // The departure is announced before the authority change it caused.
        assert!(presence(s).await.contains(&change("p1", "left")));
        let ac = expect(s, "authority_changed").await;
        assert_eq!(
            (ac["authority"].clone(), ac["seq"].clone()),
            (json!("p2"), json!(1))
        );
    }
}

pub async fn the_last_leave_drops_the_room(b: Backend) {
    let env = Env::new(b, config()).await;
    let a = env.session("a");
    let (m, j1) = env.join(&a, "r").await;
    env.node(0).leave(&m, &a, None).await.unwrap();
    expect(&a, "left").await;
    assert!(env.node(0).info("r").await.unwrap().is_none());
    let (_, j2) = env.join(&a, "r").await;
    assert_ne!(j1["epoch"], j2["epoch"]);
    assert_eq!(
        (j2["seq"].clone(), j2["player_id"].clone()),
        (json!(0), json!("p1"))
    );
}

pub async fn a_retried_leave_converges(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    env.join(&a, "r").await;
    let (mx, _) = env.join(&x, "r").await;
    env.node(0).leave(&mx, &x, None).await.unwrap();
    expect(&x, "left").await;
    env.node(0).leave(&mx, &x, None).await.unwrap();
    expect(&x, "left").await;
    assert_eq!(
        env.node(0).info("r").await.unwrap().unwrap().members.len(),
        1
    );
}

pub async fn leave_through_another_session_is_refused(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, other) = (env.session("a"), env.session("a"));
    let (m, _) = env.join(&a, "r").await;
    let e = env.node(0).leave(&m, &other, None).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::NotInRoom);
    assert_eq!(
        env.node(0).info("r").await.unwrap().unwrap().members.len(),
        1
    );
}

pub async fn publish_reaches_everyone_in_order_and_acks_after_the_own_copy(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session_on(1, "b"));
    let (ma, _) = env.join(&a, "r").await;
    env.join_on(1, &x, "r").await;
    presence(&a).await;
    for i in 0..5 {
        env.publish(&ma, &a, data(i), &format!("m{i}")).await;
    }
    for i in 0..5u64 {
        let e = expect(&a, "event").await;
        assert_eq!(
            (e["seq"].clone(), e["data"]["n"].clone()),
            (json!(1 + i), json!(i))
        );
        assert_eq!(e["from"], "p1");
        assert_eq!(e["user_id"], "a");
        let k = expect(&a, "ack").await;
        assert_eq!(
            (k["seq"].clone(), k["id"].clone()),
            (json!(1 + i), json!(format!("m{i}")))
        );
        assert_eq!(expect(&x, "event").await["seq"], 1 + i);
    }
}

pub async fn publish_by_a_non_member_is_refused(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    let (ma, _) = env.join(&a, "r").await;
    let e = env
        .node(0)
        .publish(&ma, &x, data(1), None, None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotInRoom);
    quiet(&a).await;
}

pub async fn a_repeated_publish_id_returns_the_original_ack(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    let (ma, _) = env.join(&a, "r").await;
    env.join(&x, "r").await;
    presence(&a).await;
    env.publish(&ma, &a, data(1), "x").await;
    env.publish(&ma, &a, data(2), "x").await;
    assert_eq!(expect(&a, "event").await["seq"], 1);
    assert_eq!(expect(&a, "ack").await["seq"], 1);
    assert_eq!(expect(&a, "ack").await["seq"], 1);
    assert_eq!(expect(&x, "event").await["data"]["n"], 1);
    quiet(&x).await;
}

pub async fn dedupe_survives_a_resume(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    env.join(&a, "r").await;
    let (mx, jx) = env.join(&x, "r").await;
    env.publish(&mx, &x, data(1), "once").await;
    expect(&x, "event").await;
    expect(&x, "ack").await;
    env.node(0).disconnect(&mx, &x).await;
    let x2 = env.session_on(1, "b");
    let (m2, _) = env.resume(1, &x2, "r", "p2", &token(&jx), 1).await.unwrap();
    env.node(1)
        .publish(&m2, &x2, data(2), Some("once".into()), None)
        .await
        .unwrap();
    assert_eq!(expect(&x2, "ack").await["seq"], 1);
    quiet(&x2).await;
}

pub async fn the_dedupe_window_is_bounded(b: Backend) {
    let mut cfg = config();
    cfg.session.dedupe_window = 4;
    let env = Env::new(b, cfg).await;
    let a = env.session("a");
    let (ma, _) = env.join(&a, "r").await;
    for i in 0..5 {
        env.publish(&ma, &a, data(i), &format!("id{i}")).await;
        expect(&a, "event").await;
        expect(&a, "ack").await;
    }
    // id0 was forgotten: a new event; id4 is remembered: its original seq.
    env.publish(&ma, &a, data(9), "id0").await;
    assert_eq!(expect(&a, "event").await["seq"], 6);
    expect(&a, "ack").await;
    env.publish(&ma, &a, data(9), "id4").await;
    assert_eq!(expect(&a, "ack").await["seq"], 5);
}

pub async fn a_claim_while_the_holder_is_online_is_refused(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    env.join(&a, "r").await;
    let (mx, _) = env.join(&x, "r").await;
    let e = env
        .node(0)
        .claim_authority(&mx, &x, Some("c".into()))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::AuthorityTaken);
    quiet(&x).await;
}

pub async fn a_claim_while_the_holder_is_away_takes_authority(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session_on(1, "b"));
    let (ma, _) = env.join(&a, "r").await;
    let (mx, _) = env.join_on(1, &x, "r").await;
    env.node(0).disconnect(&ma, &a).await;
    assert_eq!(presence(&x).await, vec![change("p1", "away")]);
    env.node(1)
        .claim_authority(&mx, &x, Some("c".into()))
        .await
        .unwrap();
    assert_eq!(expect(&x, "authority_changed").await["authority"], "p2");
    assert_eq!(expect(&x, "ack").await["id"], "c");
}

pub async fn a_claim_by_the_holder_is_acknowledged_without_a_change(b: Backend) {
    let env = Env::new(b, config()).await;
    let a = env.session("a");
    let (ma, _) = env.join(&a, "r").await;
    env.node(0)
        .claim_authority(&ma, &a, Some("c".into()))
        .await
        .unwrap();
    assert_eq!(expect(&a, "ack").await["id"], "c");
    quiet(&a).await;
}

pub async fn a_release_by_a_non_holder_is_refused(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    env.join(&a, "r").await;
    let (mx, _) = env.join(&x, "r").await;
    let e = env
        .node(0)
        .release_authority(&mx, &x, None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotAuthority);
}

pub async fn a_release_passes_authority_to_the_next_connected_member(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x, c) = (env.session("a"), env.session("b"), env.session("c"));
    let (ma, _) = env.join(&a, "r").await;
    let (mx, _) = env.join(&x, "r").await;
    env.join(&c, "r").await;
    env.node(0).disconnect(&mx, &x).await;
    env.node(0)
        .release_authority(&ma, &a, Some("rel".into()))
        .await
        .unwrap();
    assert_eq!(presence(&c).await, vec![change("p2", "away")]);
    // p2 is away: authority skips it.
    assert_eq!(expect(&c, "authority_changed").await["authority"], "p3");
}

pub async fn a_release_with_nobody_else_leaves_no_authority(b: Backend) {
    let env = Env::new(b, config()).await;
    let a = env.session("a");
    let (ma, _) = env.join(&a, "r").await;
    env.node(0).release_authority(&ma, &a, None).await.unwrap();
    assert_eq!(
        expect(&a, "authority_changed").await["authority"],
        json!(null)
    );
    let info = env.node(0).info("r").await.unwrap().unwrap();
    assert_eq!(info.authority, None);
}

pub async fn a_dropped_member_is_listed_away(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session_on(1, "b"));
    let (ma, _) = env.join(&a, "r").await;
    env.join_on(1, &x, "r").await;
    env.node(0).disconnect(&ma, &a).await;
    assert_eq!(presence(&x).await, vec![change("p1", "away")]);
    let info = env.node(1).info("r").await.unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&info.members).unwrap()[0]["status"],
        "away"
    );
    assert_eq!(info.authority.as_deref(), Some("p1"));
}

pub async fn an_away_holder_gets_authority_back_on_resume(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    let (ma, ja) = env.join(&a, "r").await;
    env.join(&x, "r").await;
    env.node(0).disconnect(&ma, &a).await;
    let a2 = env.session_on(1, "a");
    let (_, r) = env.resume(1, &a2, "r", "p1", &token(&ja), 0).await.unwrap();
    assert_eq!(r["authority"], "p1");
    assert_eq!(r["recovered"], true);
    presence_until(&x, "p1", "online").await;
    quiet(&x).await;
}

pub async fn without_restore_authority_passes_at_the_drop(b: Backend) {
    let mut cfg = config();
    cfg.reconnection.restore_authority = false;
    let env = Env::new(b, cfg).await;
    let (a, x) = (env.session("a"), env.session("b"));
    let (ma, ja) = env.join(&a, "r").await;
    env.join(&x, "r").await;
    env.node(0).disconnect(&ma, &a).await;
    assert_eq!(presence(&x).await, vec![change("p1", "away")]);
    assert_eq!(expect(&x, "authority_changed").await["authority"], "p2");
    let a2 = env.session("a");
    let (_, r) = env.resume(0, &a2, "r", "p1", &token(&ja), 0).await.unwrap();
    assert_eq!(r["authority"], "p2");
}

pub async fn claimed_authority_is_not_given_back(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    let (ma, ja) = env.join(&a, "r").await;
    let (mx, _) = env.join(&x, "r").await;
    env.node(0).disconnect(&ma, &a).await;
    env.node(0).claim_authority(&mx, &x, None).await.unwrap();
    let a2 = env.session("a");
    let (_, r) = env.resume(0, &a2, "r", "p1", &token(&ja), 0).await.unwrap();
    assert_eq!(r["authority"], "p2");
    // The replay holds the claim (presence is not replayed: `members` says who is there).
    let types: Vec<_> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(types, vec![json!("authority_changed")]);
}

pub async fn a_resume_replays_what_was_missed_as_sent(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    let (ma, _) = env.join(&a, "r").await;
    let (mx, jx) = env.join(&x, "r").await;
    assert_eq!(presence(&a).await, vec![change("p2", "online")]);
    env.node(0).disconnect(&mx, &x).await;
    assert_eq!(presence(&a).await, vec![change("p2", "away")]);
    let mut sent = Vec::new();
    for i in 0..5 {
        env.publish(&ma, &a, data(i), &format!("m{i}")).await;
        sent.push(expect(&a, "event").await);
        expect(&a, "ack").await;
    }
    let x2 = env.session_on(1, "b");
    let (_, r) = env
        .resume(1, &x2, "r", "p2", &token(&jx), seq(&jx))
        .await
        .unwrap();
    assert_eq!(r["recovered"], true);
    assert!(r.get("gap").is_none());
    let events = r["events"].as_array().unwrap();
    assert_eq!(&events[..], &sent[..]);
    assert_eq!(r["seq"], 5);
    assert_eq!(r["member_count"], 2);
    assert_eq!(r["player_id"], "p2");
    assert_eq!(r["id"], "r");
    assert_eq!(presence(&a).await, vec![change("p2", "online")]);
    // Live messages continue after the resume's position.
    env.publish(&ma, &a, data(9), "after").await;
    assert_eq!(expect(&x2, "event").await["seq"], 6);
}

/// A position of another epoch (the stream was rolled back or restarted since) is never
/// reported as recovered: the client is told which of its messages the stream no longer has,
/// and replay starts where the current epoch took over.
pub async fn a_resume_from_another_epoch_reports_the_rollback(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    let (ma, ja) = env.join(&a, "r").await;
    let (mx, jx) = env.join(&x, "r").await;
    env.node(0).disconnect(&mx, &x).await;
    for i in 0..3 {
        env.publish(&ma, &a, data(i), &format!("m{i}")).await;
    }
    let epoch = ja["epoch"].as_str().unwrap();
    // The same epoch: recovered as usual.
    let x2 = env.session_on(1, "b");
    let (mx2, r) = env
        .resume_in(1, &x2, "r", ("p2", &token(&jx)), 0, Some(epoch))
        .await
        .unwrap();
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(r["events"].as_array().unwrap().len(), 3);
    assert!(r.get("rolled_back").is_none());
    env.node(1).disconnect(&mx2, &x2).await;
    // Seqs 2..=5 of another epoch: none of them is this stream's.
    let x3 = env.session_on(1, "b");
    let (mx3, r2) = env
        .resume_in(1, &x3, "r", ("p2", &token(&r)), 5, Some("older"))
        .await
        .unwrap();
    assert_eq!(r2["recovered"], false, "{r2}");
    assert_eq!(r2["epoch"], epoch);
    assert_eq!(
        r2["rolled_back"],
        json!({"from": 1, "to": 5, "epoch": "older"})
    );
    let seqs: Vec<u64> = r2["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3], "the whole current epoch is replayed");
    env.node(1).disconnect(&mx3, &x3).await;
    // Without an epoch, a position ahead of the stream can only be a rollback.
    let x4 = env.session_on(1, "b");
    let (_, r3) = env
        .resume_in(1, &x4, "r", ("p2", &token(&r2)), 9, None)
        .await
        .unwrap();
    assert_eq!(r3["recovered"], false, "{r3}");
    assert_eq!(r3["rolled_back"]["to"], 9);
    // A token the stream does not know, from another epoch: the membership was lost with the
    // rollback, so the answer is `reconnection_failed` (join again), not a bad token.
    let x5 = env.session_on(1, "b");
    let e = env
        .resume_in(1, &x5, "r", ("p2", &"0".repeat(64)), 2, Some("older"))
        .await
        .unwrap_err();
    assert_eq!(e, ErrorCode::ReconnectionFailed);
}

pub async fn a_resume_with_nothing_missed_is_recovered_and_empty(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    env.join(&a, "r").await;
    let (mx, jx) = env.join(&x, "r").await;
    env.node(0).disconnect(&mx, &x).await;
    let x2 = env.session("b");
    let (_, r) = env.resume(0, &x2, "r", "p2", &token(&jx), 0).await.unwrap();
    assert_eq!(r["recovered"], true);
    assert_eq!(r["events"], json!([]));
}

pub async fn a_resume_beyond_the_buffer_reports_the_exact_gap(b: Backend) {
    let mut cfg = config();
    cfg.reconnection.event_buffer_size = 10;
    let env = Env::new(b, cfg).await;
    let (a, x) = (env.session("a"), env.session("b"));
    let (ma, _) = env.join(&a, "r").await;
    let (mx, jx) = env.join(&x, "r").await;
    env.node(0).disconnect(&mx, &x).await;
    for i in 0..30 {
        env.publish(&ma, &a, data(i), &format!("m{i}")).await; // 1..=30
    }
    let x2 = env.session_on(1, "b");
    let (_, r) = env.resume(1, &x2, "r", "p2", &token(&jx), 0).await.unwrap();
    assert_eq!(r["recovered"], false);
    assert_eq!(
        (r["gap"]["from"].clone(), r["gap"]["to"].clone()),
        (json!(1), json!(20))
    );
    assert_eq!(r["gap"]["epoch"], jx["epoch"]);
    let seqs: Vec<u64> = r["events"].as_array().unwrap().iter().map(seq).collect();
    assert_eq!(seqs, (21..=30).collect::<Vec<_>>());
    // The history holds exactly what was replayed.
    let held = env.node(0).history("r", 1, 40).await.unwrap();
    let seqs: Vec<u64> = held.iter().map(|b| b.seq).collect();
    assert_eq!(seqs, (21..=30).collect::<Vec<_>>());
}

pub async fn a_resume_rotates_the_token_and_spends_the_old_one(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    env.join(&a, "r").await;
    let (mx, j) = env.join(&x, "r").await;
    env.node(0).disconnect(&mx, &x).await;
    let x2 = env.session("b");
    let (m2, r1) = env.resume(0, &x2, "r", "p2", &token(&j), 0).await.unwrap();
    assert_ne!(token(&r1), token(&j));
    env.node(0).disconnect(&m2, &x2).await;
    let x3 = env.session("b");
    let (m3, _) = env.resume(0, &x3, "r", "p2", &token(&r1), 0).await.unwrap();
    env.node(0).disconnect(&m3, &x3).await;
    // The first token was spent when the second one was used.
    let x4 = env.session("b");
    let e = env
        .resume(0, &x4, "r", "p2", &token(&j), 0)
        .await
        .unwrap_err();
    assert_eq!(e, ErrorCode::ReconnectionTokenInvalid);
}

pub async fn the_previous_token_works_until_its_successor_is_used(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    env.join(&a, "r").await;
    let (mx, j) = env.join(&x, "r").await;
    env.node(0).disconnect(&mx, &x).await;
    let x2 = env.session("b");
    let (m2, _lost) = env.resume(0, &x2, "r", "p2", &token(&j), 0).await.unwrap();
    env.node(0).disconnect(&m2, &x2).await;
    // The reply carrying the new token was lost: the client retries with the one it holds.
    let x3 = env.session("b");
    let (_, r) = env.resume(0, &x3, "r", "p2", &token(&j), 0).await.unwrap();
    assert_eq!(r["recovered"], true);
}

pub async fn a_resume_by_another_user_is_refused(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    env.join(&a, "r").await;
    let (mx, j) = env.join(&x, "r").await;
    env.node(0).disconnect(&mx, &x).await;
    let evil = env.session("mallory");
    let e = env
        .resume(0, &evil, "r", "p2", &token(&j), 0)
        .await
        .unwrap_err();
    assert_eq!(e, ErrorCode::ReconnectionTokenInvalid);
}

pub async fn a_resume_of_an_unknown_player_is_refused(b: Backend) {
    let env = Env::new(b, config()).await;
    let a = env.session("a");
    let (_, j) = env.join(&a, "r").await;
    let x = env.session("a");
    let e = env
        .resume(0, &x, "r", "p9", &token(&j), 0)
        .await
        .unwrap_err();
    assert_eq!(e, ErrorCode::ReconnectionTokenInvalid);
}

pub async fn a_failed_resume_consumes_nothing(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    env.join(&a, "r").await;
    let (mx, j) = env.join(&x, "r").await;
    env.node(0).disconnect(&mx, &x).await;
    let x2 = env.session("b");
    let bad = "0".repeat(64);
    assert_eq!(
        env.resume(0, &x2, "r", "p2", &bad, 0).await.unwrap_err(),
        ErrorCode::ReconnectionTokenInvalid
    );
    let (_, r) = env.resume(0, &x2, "r", "p2", &token(&j), 0).await.unwrap();
    assert_eq!(r["player_id"], "p2");
}

pub async fn a_late_resume_is_told_the_window_expired(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    env.join(&a, "r").await;
    let (mx, j) = env.join(&x, "r").await;
    env.node(0).disconnect(&mx, &x).await;
    let window = env.config.reconnection.window_secs * 1000;
    env.node(1).sweep(now() + window + 1).await;
    presence_until(&a, "p2", "left").await;
    let x2 = env.session("b");
    let e = env
        .resume(0, &x2, "r", "p2", &token(&j), 0)
        .await
        .unwrap_err();
    assert_eq!(e, ErrorCode::ReconnectionExpired);
}

pub async fn a_resume_while_the_old_socket_looks_alive_replaces_it(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    env.join(&a, "r").await;
    let (_, j) = env.join(&x, "r").await;
    // No disconnect: the old connection is half-open.
    let x2 = env.session_on(1, "b");
    let (_, r) = env
        .resume(1, &x2, "r", "p2", &token(&j), seq(&j))
        .await
        .unwrap();
    assert_eq!(r["recovered"], true);
    assert_eq!(closed(&x).await, CloseCode::Replaced);
    assert!(x2.close_requested().is_none());
}

pub async fn a_retried_resume_on_the_same_session_converges(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    env.join(&a, "r").await;
    let (mx, j) = env.join(&x, "r").await;
    env.node(0).disconnect(&mx, &x).await;
    let x2 = env.session("b");
    let (_, r1) = env.resume(0, &x2, "r", "p2", &token(&j), 0).await.unwrap();
    // The reply was lost but the session lives on: the client retries on it.
    let (_, r2) = env.resume(0, &x2, "r", "p2", &token(&j), 0).await.unwrap();
    assert_eq!(r2["player_id"], "p2");
    assert_ne!(token(&r1), token(&r2));
    assert!(x2.close_requested().is_none());
}

pub async fn a_resume_into_a_dropped_room_fails(b: Backend) {
    let env = Env::new(b, config()).await;
    let a = env.session("a");
    let (ma, j) = env.join(&a, "r").await;
    env.node(0).leave(&ma, &a, None).await.unwrap();
    let a2 = env.session("a");
    let e = env
        .resume(0, &a2, "r", "p1", &token(&j), 1)
        .await
        .unwrap_err();
    assert_eq!(e, ErrorCode::ReconnectionFailed);
}

pub async fn expiry_removes_the_member_and_passes_authority(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    let (ma, _) = env.join(&a, "r").await;
    env.join(&x, "r").await;
    env.node(0).disconnect(&ma, &a).await;
    assert_eq!(presence(&x).await, vec![change("p1", "away")]);
    env.node(0)
        .sweep(now() + env.config.reconnection.window_secs * 1000 + 1)
        .await;
    assert_eq!(presence(&x).await, vec![change("p1", "left")]);
    assert_eq!(expect(&x, "authority_changed").await["authority"], "p2");
}

/// A node that died without a word (its lease passed): its members turn away through the room
/// rules, authority passes as for a drop, and they can resume elsewhere. (The memory backend
/// has one node: every member is on it.)
pub async fn a_gone_nodes_members_turn_away_and_can_resume(b: Backend) {
    let mut cfg = config();
    cfg.reconnection.restore_authority = false;
    let env = Env::new(b, cfg).await;
    let (a, x) = (env.session_on(1, "a"), env.session_on(0, "b"));
    let (_, ja) = env.join_on(1, &a, "r").await;
    env.join_on(0, &x, "r").await;
    assert_eq!(env.node(0).node_gone("r", "elsewhere", now()).await, Ok(0));
    assert_eq!(
        env.node(0).node_gone("r", &env.node_id(1), now()).await,
        Ok(if b != Backend::Memory { 1 } else { 2 })
    );
    // Applied again, it changes nothing.
    assert_eq!(
        env.node(0).node_gone("r", &env.node_id(1), now()).await,
        Ok(0)
    );
    // Authority passes at the drop (on the memory backend, on to nobody as p2 drops too).
    let mut authority = presence_and_authority(&x, "away").await;
    if authority.is_empty() {
        authority.push(expect(&x, "authority_changed").await["authority"].to_string());
    }
    assert_eq!(authority.first().map(String::as_str), Some("\"p2\""));
    let info = env.node(0).info("r").await.unwrap().unwrap();
    assert_eq!(info.members.len(), 2);
    if b != Backend::Memory {
        assert_eq!(info.authority.as_deref(), Some("p2"));
    }
    let back = env.session_on(0, "a");
    env.resume(0, &back, "r", "p1", &token(&ja), 0)
        .await
        .unwrap();
    presence_and_authority(&x, "online").await;
    assert_eq!(env.node(0).node_gone("r", "nobody", now()).await, Ok(0));
    assert_eq!(env.node(0).node_gone("gone-room", "n1", now()).await, Ok(0));
}

/// Reads `s`'s frames until a presence change says p1 is `status`; returns the authorities
/// announced on the way (as JSON).
async fn presence_and_authority(
    s: &holdfast_gateway::registry::SessionHandle,
    status: &str,
) -> Vec<String> {
    let mut authority = Vec::new();
    for _ in 0..100 {
        let v = recv(s).await;
        match v["type"].as_str() {
            Some("authority_changed") => authority.push(v["authority"].to_string()),
            Some("presence") => {
                let changes = v["changes"].as_array().cloned().unwrap_or_default();
                if changes
                    .iter()
                    .any(|c| c["player_id"] == "p1" && c["status"] == status)
                {
                    return authority;
                }
            }
            _ => panic!("unexpected {v}"),
        }
    }
    panic!("no presence change p1 {status}");
}

pub async fn the_sweep_expires_only_members_whose_window_passed(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x, c) = (env.session("a"), env.session("b"), env.session("c"));
    env.join(&a, "r").await;
    let (mx, _) = env.join(&x, "r").await;
    env.join(&c, "r").await;
    env.node(0).disconnect(&mx, &x).await;
    env.node(0).sweep(now() + 1000).await;
    let info = env.node(0).info("r").await.unwrap().unwrap();
    assert_eq!(info.members.len(), 3);
    env.node(0)
        .sweep(now() + env.config.reconnection.window_secs * 1000 + 1)
        .await;
    let info = env.node(0).info("r").await.unwrap().unwrap();
    assert_eq!(info.members.len(), 2);
}

pub async fn tombstones_are_bounded_oldest_first(b: Backend) {
    let env = Env::new(b, config()).await;
    let keep = env.session("keeper");
    env.join(&keep, "r").await;
    let mut tokens = Vec::new();
    for i in 0..260 {
        let s = env.session(&format!("u{i}"));
        let (m, j) = env.join(&s, "r").await;
        env.node(0).disconnect(&m, &s).await;
        tokens.push((
            j["player_id"].as_str().unwrap().to_owned(),
            token(&j),
            format!("u{i}"),
        ));
    }
    env.node(0)
        .sweep(now() + env.config.reconnection.window_secs * 1000 + 1)
        .await;
    let (p, t, u) = &tokens[0];
    let s = env.session(u);
    assert_eq!(
        env.resume(0, &s, "r", p, t, 0).await.unwrap_err(),
        ErrorCode::ReconnectionTokenInvalid
    );
    let (p, t, u) = &tokens[259];
    let s = env.session(u);
    assert_eq!(
        env.resume(0, &s, "r", p, t, 0).await.unwrap_err(),
        ErrorCode::ReconnectionExpired
    );
}

pub async fn concurrent_joins_get_distinct_players_and_gapless_positions(b: Backend) {
    let env = Env::new(b, config()).await;
    let sessions: Vec<_> = (0..40)
        .map(|i| env.session_on(i, &format!("u{i}")))
        .collect();
    let joins = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| env.node(i).join("r", s, None));
    let results = futures_util::future::join_all(joins).await;
    let players: BTreeSet<String> = results
        .into_iter()
        .map(|m| m.unwrap().player.to_string())
        .collect();
    assert_eq!(players.len(), 40);
    // Each join saw the room at a distinct size: no two joins overlapped.
    let mut counts = BTreeSet::new();
    for s in &sessions {
        let j = expect(s, "joined").await;
        assert_eq!(j["seq"], 0);
        counts.insert(j["member_count"].as_u64().unwrap());
    }
    assert_eq!(counts, (1..=40).collect::<BTreeSet<u64>>());
    let info = env.node(0).info("r").await.unwrap().unwrap();
    assert_eq!(info.members.len(), 40);
}

pub async fn concurrent_publishes_are_gapless_and_the_same_for_everyone(b: Backend) {
    let env = Env::new(b, config()).await;
    let ss: Vec<_> = (0..3)
        .map(|i| env.session_on(i, &format!("u{i}")))
        .collect();
    let mut ms = Vec::new();
    for (i, s) in ss.iter().enumerate() {
        ms.push(env.join_on(i, s, "r").await.0);
    }
    let mut last = Vec::new();
    for s in &ss {
        let mut l = 0;
        while let Some(o) = s.try_pop() {
            let v: serde_json::Value = o.payload.to_value().unwrap();
            // A `presence` frame (flushed on the node's tick, so sometimes already here) has
            // no seq.
            if let Some(q) = v["seq"].as_u64() {
                l = q;
            }
        }
        last.push(l);
    }
    let pubs = (0..60).map(|k| {
        let i = k % 3;
        env.node(i)
            .publish(&ms[i], &ss[i], data(k as u64), None, None)
    });
    for r in futures_util::future::join_all(pubs).await {
        r.unwrap();
    }
    let mut seen: Vec<Vec<(u64, serde_json::Value)>> = Vec::new();
    for (i, s) in ss.iter().enumerate() {
        let mut got = Vec::new();
        while got.len() < 60 {
            let v = recv(s).await;
            if v["type"] == "event" {
                got.push((seq(&v), v["data"].clone()));
            } else {
                assert_eq!(v["type"], "presence", "{v}");
            }
        }
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        for w in seqs.windows(2) {
            assert!(w[1] > w[0], "in order");
        }
        assert!(seqs[0] > last[i]);
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1], seen[2]);
}

pub async fn an_authority_race_has_exactly_one_winner(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x, c) = (
        env.session("a"),
        env.session_on(0, "b"),
        env.session_on(1, "c"),
    );
    let (ma, _) = env.join(&a, "r").await;
    let (mx, _) = env.join(&x, "r").await;
    let (mc, _) = env.join_on(1, &c, "r").await;
    env.node(0).disconnect(&ma, &a).await;
    let (r1, r2) = tokio::join!(
        env.node(0).claim_authority(&mx, &x, None),
        env.node(1).claim_authority(&mc, &c, None)
    );
    assert!(r1.is_ok() != r2.is_ok(), "{r1:?} {r2:?}");
    let loser = r1.err().or(r2.err()).unwrap();
    assert_eq!(loser.code, ErrorCode::AuthorityTaken);
}

pub async fn without_reconnection_a_drop_is_a_leave(b: Backend) {
    let mut cfg = config();
    cfg.reconnection.enabled = false;
    let env = Env::new(b, cfg).await;
    let (a, x) = (env.session("a"), env.session("b"));
    env.join(&a, "r").await;
    let (mx, j) = env.join(&x, "r").await;
    assert!(j.get("reconnection_token").is_none());
    env.node(0).disconnect(&mx, &x).await;
    presence_until(&a, "p2", "left").await;
    let x2 = env.session("b");
    assert_eq!(
        env.resume(0, &x2, "r", "p2", &"0".repeat(64), 0)
            .await
            .unwrap_err(),
        ErrorCode::ReconnectionFailed
    );
}

pub async fn a_server_publish_is_in_order_and_deduplicated(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session_on(1, "b"));
    let (ma, _) = env.join(&a, "r").await;
    env.join_on(1, &x, "r").await;
    presence(&a).await;
    env.publish(&ma, &a, data(1), "m").await;
    let (s1, e1) = env
        .node(1)
        .server_publish("r", data(2), Some("k".into()), None)
        .await
        .unwrap()
        .unwrap();
    let (s2, _) = env
        .node(0)
        .server_publish("r", data(3), Some("k".into()), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s1, s2), (2, 2));
    for s in [&a, &x] {
        assert_eq!(expect(s, "event").await["seq"], 1);
        if std::ptr::eq(s.as_ref(), a.as_ref()) {
            expect(s, "ack").await;
        }
        let e = expect(s, "event").await;
        assert_eq!(
            (e["seq"].clone(), e["from"].clone(), e["epoch"].clone()),
            (json!(2), json!("server"), json!(e1))
        );
        quiet(s).await;
    }
    assert!(env
        .node(0)
        .server_publish("nobody-here", data(1), None, None)
        .await
        .unwrap()
        .is_none());
}

pub async fn inspect_reports_members_authority_and_position(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    env.join(&a, "r").await;
    let (_, j) = env.join(&x, "r").await;
    let info = env.node(1).info("r").await.unwrap().unwrap();
    assert_eq!(info.members.len(), 2);
    assert_eq!(info.authority.as_deref(), Some("p1"));
    assert_eq!(
        (info.seq, info.epoch.as_str()),
        (0, j["epoch"].as_str().unwrap())
    );
    assert!(env.node(0).info("none").await.unwrap().is_none());
}

pub async fn rooms_are_listed_by_prefix(b: Backend) {
    let env = Env::new(b, config()).await;
    let a = env.session("a");
    for r in ["game:1", "game:2", "chat:1"] {
        env.join(&a, r).await;
    }
    let mut all = Vec::new();
    let mut cursor = String::new();
    for _ in 0..100 {
        let (names, next) = env.node(1).list("game:", &cursor, 1).await.unwrap();
        all.extend(names);
        match next {
            Some(c) => cursor = c,
            None => break,
        }
    }
    all.sort();
    all.dedup();
    assert_eq!(all, vec!["game:1".to_owned(), "game:2".to_owned()]);
}

pub async fn room_names_are_any_text(b: Backend) {
    let env = Env::new(b, config()).await;
    let a = env.session("a");
    let room = "salle \"é\" 🎲 {x}:y";
    let (ma, j) = env.join(&a, room).await;
    assert_eq!(j["room"], room);
    env.publish(&ma, &a, data(1), "m").await;
    assert_eq!(expect(&a, "event").await["room"], room);
}

pub async fn rooms_are_independent(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x) = (env.session("a"), env.session("b"));
    let (m1, _) = env.join(&a, "one").await;
    env.join(&x, "two").await;
    env.publish(&m1, &a, data(1), "m").await;
    expect(&a, "event").await;
    quiet(&x).await;
    let (_, j) = env.join(&x, "one").await;
    assert_eq!(j["seq"], 1);
}

/// A storm in one room: every member of a room of 100 drops at once and resumes while events
/// keep being published. Presence is not part of the stream, so the drops and resumes push no
/// event out of the replay buffer: every member gets every event exactly once, in order.
pub async fn a_whole_room_drops_and_resumes_while_events_flow_and_loses_nothing(b: Backend) {
    let env = Env::new(b, config()).await;
    let publisher = env.session("publisher");
    let (mp, _) = env.join(&publisher, "storm").await;
    let mut members = Vec::new();
    for i in 0..100 {
        let s = env.session_on(i, &format!("u{i}"));
        let (m, j) = env.join_on(i, &s, "storm").await;
        members.push((s, m, j));
    }
    let mut sent = 0u64;
    for _ in 0..10 {
        {
            sent += 1;
            env.publish(&mp, &publisher, data(sent), &format!("e{sent}"))
                .await;
        }
    }
    // Everyone drops at once (their last processed position is where they joined, plus what
    // they read before the drop: nothing).
    for (i, (s, m, _)) in members.iter().enumerate() {
        env.node(i).disconnect(m, s).await;
    }
    for _ in 0..20 {
        {
            sent += 1;
            env.publish(&mp, &publisher, data(sent), &format!("e{sent}"))
                .await;
        }
    }
    // They come back one by one, on either node, while events keep flowing.
    let mut resumed = Vec::new();
    for (i, (_, _, j)) in members.iter().enumerate() {
        let s = env.session_on(i + 1, &format!("u{i}"));
        let player = j["player_id"].as_str().unwrap();
        let (_, r) = env
            .resume(i + 1, &s, "storm", player, &token(j), seq(j))
            .await
            .unwrap();
        assert_eq!(r["recovered"], true, "{r}");
        assert!(r.get("gap").is_none());
        resumed.push((s, r));
        if i % 10 == 0 {
            {
                sent += 1;
                env.publish(&mp, &publisher, data(sent), &format!("e{sent}"))
                    .await;
            }
        }
    }
    let total = sent;
    // Each member: the replay plus what arrived live covers 1..=total exactly once, in order.
    for (s, r) in &resumed {
        let mut seqs: Vec<u64> = r["events"].as_array().unwrap().iter().map(seq).collect();
        while seqs.last().copied().unwrap_or(0) < total {
            let v = recv(s).await;
            match v["type"].as_str().unwrap() {
                "event" => seqs.push(seq(&v)),
                "presence" => {}
                other => panic!("unexpected {other}: {v}"),
            }
        }
        assert_eq!(seqs, (1..=total).collect::<Vec<u64>>());
    }
}

pub async fn the_authority_sets_the_state_and_a_joiner_gets_it_with_the_events_after(b: Backend) {
    let env = Env::new(b, config()).await;
    let (a, x, y) = (
        env.session("a"),
        env.session_on(1, "b"),
        env.session_on(1, "c"),
    );
    let (ma, _) = env.join(&a, "r").await;
    let (mx, _) = env.join_on(1, &x, "r").await;
    presence(&a).await;
    env.publish(&ma, &a, data(1), "m1").await; // 1
    let state = json!({"tick": 7, "blob": {"$base64": "AAE="}});
    env.node(0)
        .set_state(&ma, &a, state.clone(), Some("s".into()))
        .await
        .unwrap(); // 2
    env.publish(&ma, &a, data(3), "m3").await; // 3
                                               // Not the authority: refused, nothing emitted.
    let e = env
        .node(1)
        .set_state(&mx, &x, json!(0), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, holdfast_protocol::ErrorCode::NotAuthority);
    for s in [&a, &x] {
        assert_eq!(expect(s, "event").await["seq"], 1);
        if std::ptr::eq(s.as_ref(), a.as_ref()) {
            expect(s, "ack").await;
        }
        let set = expect(s, "state_set").await;
        assert_eq!(
            (set["seq"].clone(), set["state"].clone()),
            (json!(2), state.clone())
        );
        if std::ptr::eq(s.as_ref(), a.as_ref()) {
            assert_eq!(expect(s, "ack").await["seq"], 2);
        }
        assert_eq!(expect(s, "event").await["seq"], 3);
    }
    // A joiner on the other node gets the state and the events after it.
    let (_, jy) = env.join_on(1, &y, "r").await;
    assert_eq!(jy["state"], state);
    assert_eq!(jy["state_seq"], 2);
    assert_eq!(jy["seq"], 3);
    let seqs: Vec<u64> = jy["events"].as_array().unwrap().iter().map(seq).collect();
    assert_eq!(seqs, vec![3]);
    assert!(jy.get("gap").is_none());
    // The backend sets it too; a room nobody is in keeps nothing.
    let (s4, _) = env
        .node(1)
        .server_set_state("r", json!({"tick": 8}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s4, 4);
    assert_eq!(expect(&y, "state_set").await["state"]["tick"], 8);
    assert!(env
        .node(0)
        .server_set_state("nobody-here", json!(1))
        .await
        .unwrap()
        .is_none());
}

pub async fn a_resume_past_the_buffer_recovers_from_the_state(b: Backend) {
    let mut cfg = config();
    cfg.reconnection.event_buffer_size = 5;
    let env = Env::new(b, cfg).await;
    let (a, x) = (env.session("a"), env.session("b"));
    let (ma, _) = env.join(&a, "r").await;
    let (mx, jx) = env.join(&x, "r").await;
    env.node(0).disconnect(&mx, &x).await;
    for i in 0..20 {
        env.publish(&ma, &a, data(i), &format!("m{i}")).await; // 1..=20
    }
    env.node(0)
        .set_state(&ma, &a, json!({"tick": 21}), None)
        .await
        .unwrap(); // 21
    for i in 22..=23 {
        env.publish(&ma, &a, data(i), &format!("m{i}")).await;
    }
    let x2 = env.session_on(1, "b");
    let (_, r) = env.resume(1, &x2, "r", "p2", &token(&jx), 0).await.unwrap();
    assert_eq!(r["recovered"], true);
    assert_eq!(r["recovered_from"], "snapshot");
    assert_eq!(
        (r["gap"]["from"].clone(), r["gap"]["to"].clone()),
        (json!(1), json!(20))
    );
    let events = r["events"].as_array().unwrap();
    assert_eq!(events[0]["type"], "state_set");
    assert_eq!(events[0]["state"]["tick"], 21);
    let seqs: Vec<u64> = events.iter().map(seq).collect();
    assert_eq!(seqs, vec![21, 22, 23]);

    // When the events after the state are no longer all held, the state does not cover
    // the loss: the plain gap is reported.
    env.node(1).disconnect(&mx, &x2).await;
    env.node(0)
        .set_state(&ma, &a, json!({"tick": 24}), None)
        .await
        .unwrap(); // 24
    for i in 25..=35 {
        env.publish(&ma, &a, data(i), &format!("m{i}")).await;
    }
    let x3 = env.session("b");
    let (_, r) = env.resume(0, &x3, "r", "p2", &token(&r), 23).await.unwrap();
    assert_eq!(r["recovered"], false);
    assert!(r.get("recovered_from").is_none());
    assert_eq!(
        (r["gap"]["from"].clone(), r["gap"]["to"].clone()),
        (json!(24), json!(30))
    );
}

fn namespaced(ns: holdfast_gateway::room::options::NamespaceConfig) -> holdfast_gateway::Config {
    let mut cfg = config();
    cfg.namespaces = vec![ns];
    cfg
}

pub async fn a_room_without_client_publish_takes_events_from_the_backend_only(b: Backend) {
    let env = Env::new(
        b,
        namespaced(holdfast_gateway::room::options::NamespaceConfig {
            prefix: "dash:".into(),
            client_publish: Some(false),
            ..Default::default()
        }),
    )
    .await;
    let a = env.session("a");
    let (m, _) = env.join(&a, "dash:cpu").await;
    let e = env
        .node(0)
        .publish(&m, &a, data(1), Some("x".into()), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    let (seq, _) = env
        .node(1)
        .server_publish("dash:cpu", data(2), None, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seq, 1);
    assert_eq!(expect(&a, "event").await["from"], "server");
    // Other rooms are not affected.
    let (m2, _) = env.join(&a, "chat").await;
    env.publish(&m2, &a, data(3), "y").await;
    assert_eq!(expect(&a, "event").await["room"], "chat");
}

pub async fn a_room_without_authority_has_no_holder_and_refuses_claims(b: Backend) {
    let env = Env::new(
        b,
        namespaced(holdfast_gateway::room::options::NamespaceConfig {
            prefix: "lobby".into(),
            authority: Some(false),
            ..Default::default()
        }),
    )
    .await;
    let a = env.session("a");
    let (m, j) = env.join(&a, "lobby").await;
    assert_eq!(j["authority"], json!(null));
    let e = env.node(0).claim_authority(&m, &a, None).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
}

pub async fn a_room_publish_rate_is_a_token_bucket(b: Backend) {
    let env = Env::new(
        b,
        namespaced(holdfast_gateway::room::options::NamespaceConfig {
            prefix: "busy".into(),
            publish_rate_per_sec: Some(5),
            ..Default::default()
        }),
    )
    .await;
    let (a, x) = (env.session("a"), env.session("b"));
    let (ma, _) = env.join(&a, "busy").await;
    let (mx, _) = env.join(&x, "busy").await;
    let publishes = (0..8u64).map(|i| {
        let (m, s) = if i % 2 == 0 { (&ma, &a) } else { (&mx, &x) };
        env.node(0).publish(m, s, data(i), None, None)
    });
    let mut refused = 0;
    for r in futures_util::future::join_all(publishes).await {
        if let Err(e) = r {
            assert_eq!(e.code, ErrorCode::RateLimited);
            refused += 1;
        }
    }
    // One second of burst: 5 taken, the rest refused (one may refill meanwhile).
    assert!((2..=3).contains(&refused), "{refused} refused");
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    env.node(0)
        .publish(&ma, &a, data(9), None, None)
        .await
        .unwrap();
}
