//! The wire encoding of server frames: one JSON text per frame (and its MessagePack form, see
//! [`crate::msgpack`]).
//!
//! Every server frame is serialised here, once per message, and the same text is then shared by
//! every recipient. A `reconnected` reply carries the missed room frames exactly as they were
//! sent (their stored text), spliced in without parsing them again; so does a `joined` that
//! carries the room's state and the messages after it.

use serde_json::Value;

use crate::frames::{Ack, Joined, Reconnected, ServerFrame};
use crate::msgpack::{value_to_msgpack, Encoding};

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

/// Serialises a `joined` reply whose `events` are the given frame texts, in order
/// (`reply.events` is ignored; see [`encode_reconnected`]).
pub fn encode_joined<S: AsRef<str>>(reply: &Joined, events: &[S]) -> String {
    let mut head = reply.clone();
    head.events = Vec::new();
    let text = encode(&ServerFrame::Joined(head));
    if events.is_empty() || !text.ends_with('}') {
        return text;
    }
    // `events` is omitted when empty: it is appended as the last field.
    let extra: usize = events.iter().map(|e| e.as_ref().len() + 1).sum();
    let mut out = String::with_capacity(text.len() + extra + 12);
    out.push_str(&text[..text.len() - 1]);
    out.push_str(",\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e.as_ref());
    }
    out.push_str("]}");
    out
}

/// Serialises `frame` (a `joined` or `reconnected`, with empty `events`) in `encoding`, with
/// `events` set to the given stored frame texts. In MessagePack the stored texts are decoded
/// once and re-encoded inside the reply.
pub fn encode_with_events<S: AsRef<str>>(
    encoding: Encoding,
    frame: &ServerFrame,
    events: &[S],
) -> Vec<u8> {
    match (encoding, frame) {
        (Encoding::Json, ServerFrame::Joined(j)) => encode_joined(j, events).into_bytes(),
        (Encoding::Json, ServerFrame::Reconnected(r)) => encode_reconnected(r, events).into_bytes(),
        (Encoding::Json, f) => encode(f).into_bytes(),
        (Encoding::MsgPack, f) => {
            let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                let list: Vec<Value> = events
                    .iter()
                    .filter_map(|e| serde_json::from_str(e.as_ref()).ok())
                    .collect();
                if !list.is_empty() || m.contains_key("events") {
                    m.insert("events".to_owned(), Value::Array(list));
                }
            }
            value_to_msgpack(&v)
        }
    }
}

/// Serialises a server frame in `encoding`.
pub fn encode_as(encoding: Encoding, frame: &ServerFrame) -> Vec<u8> {
    match encoding {
        Encoding::Json => encode(frame).into_bytes(),
        Encoding::MsgPack => crate::msgpack::encode_msgpack(frame),
    }
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
            recovered_from: None,
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

#[cfg(test)]
mod joined_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::frames::{Event, Joined};
    use crate::msgpack::decode_server_frame;

    #[test]
    fn joined_carries_state_and_events_in_both_encodings() {
        let ev = ServerFrame::Event(Event {
            room: "r".into(),
            seq: 4,
            epoch: "e".into(),
            ts: 1,
            from: "p1".into(),
            user_id: "u".into(),
            data: serde_json::json!({"$base64": "AQI="}),
            id: None,
            traceparent: None,
        });
        let texts = vec![encode(&ev)];
        let j = Joined {
            room: "r".into(),
            player_id: "p2".into(),
            members: vec![],
            member_count: 2,
            authority: Some("p1".into()),
            seq: 4,
            epoch: "e".into(),
            reconnection_token: None,
            state: Some(serde_json::json!({"events": [], "hp": 3})),
            state_seq: Some(3),
            events: vec![],
            gap: None,
            id: None,
        };
        let frame = ServerFrame::Joined(j.clone());
        let json = encode_with_events(Encoding::Json, &frame, &texts);
        let back: ServerFrame = serde_json::from_slice(&json).unwrap();
        let mp = encode_with_events(Encoding::MsgPack, &frame, &texts);
        assert_eq!(decode_server_frame(&mp).unwrap(), back);
        let ServerFrame::Joined(b) = back else {
            panic!("not joined")
        };
        assert_eq!(b.events, vec![ev]);
        assert_eq!(b.state, j.state);
        let plain = encode_with_events::<&str>(Encoding::Json, &frame, &[]);
        assert_eq!(plain, encode(&frame).into_bytes());
    }
}
