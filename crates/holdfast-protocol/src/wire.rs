//! The wire encoding of server frames: one JSON text per frame.
//!
//! Every server frame is serialised here, once per message, and the same text is then shared by
//! every recipient. A `reconnected` reply carries the missed room frames exactly as they were
//! sent (their stored text), spliced in without parsing them again.

use crate::frames::{Ack, Reconnected, ServerFrame};

/// Serialises a server frame.
pub fn encode(frame: &ServerFrame) -> String {
    // The frames are plain structs of strings, numbers and JSON values: serialising them to a
    // String cannot fail.
    serde_json::to_string(frame).unwrap_or_default()
}

/// The `ack` of a client frame; `room` and `seq` for room operations (`seq` for a publish).
pub fn ack_frame(id: String, room: Option<&str>, seq: Option<u64>) -> ServerFrame {
    ServerFrame::Ack(Ack {
        id,
        room: room.map(str::to_owned),
        seq,
    })
}

/// Serialises a `reconnected` reply whose `events` are the given frame texts, in order.
///
/// `reply.events` is ignored (pass it empty): the missed frames are the exact texts the members
/// received, written into the array as they are. Each text must be one serialised server frame.
pub fn encode_reconnected<S: AsRef<str>>(reply: &Reconnected, events: &[S]) -> String {
    let mut head = reply.clone();
    head.events = Vec::new();
    let text = encode(&ServerFrame::Reconnected(head));
    // Inside a JSON string every quote is escaped, so the unescaped `"events":[]` can only be
    // the field itself; `room` and `player_id`, the only fields before it, are strings.
    const FIELD: &str = "\"events\":[]";
    let Some(at) = text.find(FIELD) else {
        return text;
    };
    let extra: usize = events.iter().map(|e| e.as_ref().len() + 1).sum();
    let mut out = String::with_capacity(text.len() + extra);
    out.push_str(&text[..at]);
    out.push_str("\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e.as_ref());
    }
    out.push(']');
    out.push_str(&text[at + FIELD.len()..]);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::frames::{Event, Gap};

    fn event(seq: u64) -> ServerFrame {
        ServerFrame::Event(Event {
            room: "r\"events\":[]".into(),
            seq,
            epoch: "e".into(),
            ts: 1,
            from: "p1".into(),
            user_id: "u".into(),
            data: serde_json::json!({"events": [], "x": "\"events\":[]"}),
            id: None,
            traceparent: None,
        })
    }

    #[test]
    fn reconnected_carries_the_stored_texts_and_parses_back() {
        let texts: Vec<String> = (3..=5).map(|s| encode(&event(s))).collect();
        let reply = Reconnected {
            room: "r\"events\":[]".into(),
            player_id: "p1".into(),
            events: vec![],
            recovered: false,
            gap: Some(Gap {
                from: 1,
                to: 2,
                epoch: "e".into(),
            }),
            rolled_back: None,
            members: vec![],
            member_count: 0,
            authority: None,
            seq: 5,
            epoch: "e".into(),
            reconnection_token: "t".into(),
            id: Some("x".into()),
        };
        let text = encode_reconnected(&reply, &texts);
        let back: ServerFrame = serde_json::from_str(&text).unwrap();
        let ServerFrame::Reconnected(r) = back else {
            panic!("not reconnected")
        };
        assert_eq!(r.events, vec![event(3), event(4), event(5)]);
        assert_eq!(r.room, reply.room);
        assert_eq!(r.gap, reply.gap);
        let none = encode_reconnected::<&str>(&reply, &[]);
        let ServerFrame::Reconnected(r) = serde_json::from_str(&none).unwrap() else {
            panic!("not reconnected")
        };
        assert!(r.events.is_empty());
    }
}
