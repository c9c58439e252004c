//! Tests of the local delivery: ordering, catch-up, missed ranges.
#![allow(clippy::unwrap_used)]
use super::*;
use crate::metrics::Metrics;

fn session(id: &str) -> Arc<SessionHandle> {
    SessionHandle::new(
        id.into(),
        id.into(),
        1024,
        1 << 20,
        Arc::new(Metrics::new()),
    )
}

fn held(seq: u64) -> Held {
    Held {
        kick: None,
        text: Utf8Bytes::from(format!("{{\"seq\":{seq}}}")),
    }
}

fn drained(s: &SessionHandle) -> Vec<String> {
    std::iter::from_fn(|| {
        s.try_pop().map(|o| match o.payload {
            crate::registry::Payload::Text(t) => t.to_string(),
            crate::registry::Payload::Binary(b) => format!("{b:?}"),
        })
    })
    .collect()
}

/// Joins whose operations finished in one order may be placed in the other; nobody
/// misses a message after its own position, whatever has or has not arrived yet.
#[test]
fn members_placed_out_of_order_each_get_everything_after_their_position() {
    let mut lr = LocalRoom::default();
    let (x, y) = (session("x"), session("y"));
    assert!(lr.add_sub(y.clone(), "py".into(), 10, 0));
    assert!(lr.add_sub(x.clone(), "px".into(), 5, 0));
    for seq in 6..=12 {
        assert_eq!(lr.receive(seq, held(seq)), Next::Nothing);
    }
    let want = |r: std::ops::RangeInclusive<u64>| -> Vec<String> {
        r.map(|s| format!("{{\"seq\":{s}}}")).collect()
    };
    assert_eq!(drained(&x), want(6..=12));
    assert_eq!(drained(&y), want(11..=12));
    let z = session("z");
    assert!(lr.add_sub(z.clone(), "pz".into(), 9, 0));
    assert_eq!(drained(&z), want(10..=12));
}

#[test]
fn a_delivered_seq_with_other_contents_closes_the_members() {
    let mut lr = LocalRoom::default();
    let x = session("x");
    assert!(lr.add_sub(x.clone(), "px".into(), 1, 0));
    assert_eq!(lr.receive(2, held(2)), Next::Nothing);
    assert_eq!(lr.receive(3, held(3)), Next::Nothing);
    assert_eq!(
        lr.receive(2, held(2)),
        Next::Nothing,
        "the same message again"
    );
    assert_eq!(x.close_requested(), None);
    let other = Held {
        kick: None,
        text: Utf8Bytes::from("{\"seq\":2,\"other\":1}"),
    };
    assert_eq!(lr.receive(2, other), Next::Forked(2));
    assert_eq!(x.close_requested(), Some(CloseCode::InternalError));
    assert_eq!(lr.delivered(), None);
}

#[test]
fn a_jump_asks_for_the_missing_range_and_holds_what_came_early() {
    let mut lr = LocalRoom::default();
    let x = session("x");
    assert!(lr.add_sub(x.clone(), "px".into(), 1, 0));
    assert_eq!(lr.receive(2, held(2)), Next::Nothing);
    assert_eq!(lr.receive(5, held(5)), Next::Fetch(3, 4));
    assert_eq!(drained(&x).len(), 1);
    lr.fetching = false;
    assert_eq!(lr.receive(3, held(3)), Next::Nothing);
    assert_eq!(lr.receive(4, held(4)), Next::Nothing);
    assert_eq!(
        drained(&x),
        vec!["{\"seq\":3}", "{\"seq\":4}", "{\"seq\":5}"]
    );
}

#[test]
fn before_any_arrival_the_view_stands_where_its_earliest_member_was_placed() {
    // After an epoch change (or a new subscription) nothing has arrived yet: a message missed
    // meanwhile (the subscription was down) must still be fetched from the members' position,
    // or an ack waiting for it would never be released.
    let mut lr = LocalRoom::default();
    assert_eq!(lr.position(), None, "no member: nothing is owed");
    let x = session("x");
    let y = session("y");
    assert!(lr.add_sub(x.clone(), "px".into(), 34, 0));
    assert!(lr.add_sub(y.clone(), "py".into(), 36, 0));
    assert_eq!(lr.delivered(), None);
    assert_eq!(lr.position(), Some(34));
    // The fetched range arrives: delivered from the earliest position on.
    assert_eq!(lr.receive(35, held(35)), Next::Nothing);
    assert_eq!(lr.position(), Some(35));
    assert_eq!(drained(&x), vec!["{\"seq\":35}"]);
    assert!(drained(&y).is_empty());
}

/// After a rollback, a publish commits in the new epoch before this node's view has seen it:
/// the view's `delivered` (of the old epoch) says nothing about the new epoch's seqs, so the
/// ack waits for the publisher's own copy, never goes before it.
#[test]
fn an_ack_in_an_epoch_the_view_has_not_seen_waits_for_the_copy() {
    let mirror = Mirror::default();
    let x = session("x");
    mirror.enter("r");
    mirror.place(
        "r",
        Position {
            epoch: "old",
            seq: 0,
            presence: 0,
        },
        &x,
        &"px".into(),
        Utf8Bytes::from_static("joined"),
    );
    for seq in 1..=10 {
        mirror.receive("r", seq, Some("old"), held(seq));
    }
    assert_eq!(drained(&x).len(), 11);
    // Same epoch, already delivered: at once.
    mirror.reply_at("r", ("old", 9), &x, Utf8Bytes::from_static("ack-old"));
    assert_eq!(drained(&x), vec!["ack-old"]);
    // Seq 5 of the new epoch (based at 4): not delivered here, whatever `delivered` says.
    mirror.reply_at("r", ("new", 5), &x, Utf8Bytes::from_static("ack-new"));
    assert!(drained(&x).is_empty(), "no ack before the copy");
    // The copy arrives: the view moves to the new epoch, which closes its members so they
    // resume (and the retried publish is answered from the dedupe window, after its copy).
    mirror.receive("r", 5, Some("new"), held(5));
    assert_eq!(x.close_requested(), Some(CloseCode::InternalError));
    assert!(!drained(&x).contains(&"ack-new".to_owned()));
}
