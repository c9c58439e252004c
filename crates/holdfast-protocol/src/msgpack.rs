//! The two encodings of protocol v1, negotiated with `Sec-WebSocket-Protocol`, and the one
//! definition of MessagePack on the wire.
//!
//! A frame in MessagePack is the same frame object as in JSON (same field names, `type`
//! included), encoded as a MessagePack map with string keys. The only difference is binary
//! data: in MessagePack, `data` and `state` may hold raw bytes (`bin`). The JSON form of raw
//! bytes is an object with one key, [`BASE64_KEY`], whose value is the bytes in standard base64
//! with padding: `{"$base64": "AAEC"}`. The two forms are converted into each other at the
//! edge, so one value model ([`serde_json::Value`], with that marker object) serves both
//! encodings, the room stream and the history, and a JSON client (or SSE, long-polling, the
//! server API) sees binary data as the marker object.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::frames::ServerFrame;

/// The key of the JSON form of raw bytes: `{"$base64": "<standard base64>"}`.
pub const BASE64_KEY: &str = "$base64";

/// Deepest nesting accepted in a MessagePack frame (the same bound as JSON's).
pub const MAX_DEPTH: usize = 128;

/// A frame encoding, negotiated per WebSocket connection with `Sec-WebSocket-Protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// One JSON text message per frame (`holdfast.v1.json`, the default).
    #[default]
    Json,
    /// One MessagePack binary message per frame (`holdfast.v1.msgpack`).
    MsgPack,
}

impl Encoding {
    /// Every encoding, in the server's order of preference when a client offers several
    /// (the first one the client offers wins; see [`Encoding::negotiate`]).
    pub const ALL: [Encoding; 2] = [Encoding::Json, Encoding::MsgPack];

    /// The subprotocol name.
    pub const fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => "holdfast.v1.json",
            Encoding::MsgPack => "holdfast.v1.msgpack",
        }
    }

    /// The encoding named by one subprotocol token.
    pub fn from_subprotocol(name: &str) -> Option<Encoding> {
        Encoding::ALL
            .into_iter()
            .find(|e| e.subprotocol() == name.trim())
    }

    /// The encoding for a `Sec-WebSocket-Protocol` request header (comma-separated tokens):
    /// the first token the server speaks, and whether it was one offered (then the response
    /// names it). `None` (nothing offered, or nothing known) means JSON, without naming it.
    pub fn negotiate(header: Option<&str>) -> (Encoding, bool) {
        header
            .into_iter()
            .flat_map(|h| h.split(','))
            .find_map(Encoding::from_subprotocol)
            .map_or((Encoding::Json, false), |e| (e, true))
    }
}

/// Whether `v` is the JSON form of raw bytes, and the bytes when it is.
pub fn as_bytes(v: &Value) -> Option<Vec<u8>> {
    let Value::Object(m) = v else { return None };
    if m.len() != 1 {
        return None;
    }
    let Some(Value::String(b64)) = m.get(BASE64_KEY) else {
        return None;
    };
    STANDARD.decode(b64).ok()
}

/// The JSON form of raw bytes.
pub fn bytes_value(bytes: &[u8]) -> Value {
    let mut m = Map::new();
    m.insert(BASE64_KEY.to_owned(), Value::String(STANDARD.encode(bytes)));
    Value::Object(m)
}

/// A value serialised the MessagePack way: the JSON form of raw bytes becomes `bin`.
struct Packed<'a>(&'a Value);

impl Serialize for Packed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => {
                if let Some(bytes) = as_bytes(self.0) {
                    return s.serialize_bytes(&bytes);
                }
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, &Packed(v))?;
                }
                map.end()
            }
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&Packed(v))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

/// Why a MessagePack message could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgPackError(pub String);

impl fmt::Display for MsgPackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MsgPackError {}

/// Encodes a value (a whole frame, or any data) as MessagePack: maps with string keys, raw
/// bytes as `bin`.
pub fn value_to_msgpack(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = rmp_serde::Serializer::new(&mut out).with_struct_map();
    // Writing a JSON value into a Vec cannot fail: every key is a string.
    let _ = Packed(v).serialize(&mut ser);
    out
}

/// Decodes one MessagePack message into the value model (raw bytes become the JSON form).
/// Map keys must be strings; nesting is bounded by [`MAX_DEPTH`].
pub fn msgpack_to_value(bytes: &[u8]) -> Result<Value, MsgPackError> {
    // A reader over the slice: lengths read from the input never size an allocation up
    // front (a `bin` or `str` claiming 4 GiB reads what is there and fails).
    let mut rest: &[u8] = bytes;
    let v = {
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        Seed { depth: 0 }
            .deserialize(&mut de)
            .map_err(|e| MsgPackError(e.to_string()))?
    };
    if !rest.is_empty() {
        return Err(MsgPackError("trailing bytes after the message".into()));
    }
    Ok(v)
}

/// Encodes a server frame as MessagePack.
pub fn encode_msgpack(frame: &ServerFrame) -> Vec<u8> {
    // Frames are plain structs of strings, numbers and JSON values: this cannot fail.
    let v = serde_json::to_value(frame).unwrap_or(Value::Null);
    value_to_msgpack(&v)
}

/// Re-encodes one JSON frame text as MessagePack (how a room message, serialised once as JSON,
/// gets its one MessagePack encoding).
pub fn json_to_msgpack(text: &str) -> Result<Vec<u8>, MsgPackError> {
    let v: Value = serde_json::from_str(text).map_err(|e| MsgPackError(e.to_string()))?;
    Ok(value_to_msgpack(&v))
}

/// Decodes a MessagePack server frame (what a client does).
pub fn decode_server_frame(bytes: &[u8]) -> Result<ServerFrame, MsgPackError> {
    let v = msgpack_to_value(bytes)?;
    serde_json::from_value(v).map_err(|e| MsgPackError(e.to_string()))
}

/// Encodes any serialisable frame (a client frame, say) as MessagePack.
pub fn to_msgpack<T: Serialize>(frame: &T) -> Result<Vec<u8>, MsgPackError> {
    let v = serde_json::to_value(frame).map_err(|e| MsgPackError(e.to_string()))?;
    Ok(value_to_msgpack(&v))
}

struct Seed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.depth > MAX_DEPTH {
            return Err(de::Error::custom("nesting deeper than 128"));
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MessagePack value with string map keys")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // NaN and infinities have no JSON form: they become null, as serde_json does.
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(bytes_value(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // The length prefix is not trusted for the allocation.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element_seed(Seed {
            depth: self.depth + 1,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(Seed {
                depth: self.depth + 1,
            })?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn negotiation_takes_the_first_known_offer() {
        assert_eq!(Encoding::negotiate(None), (Encoding::Json, false));
        assert_eq!(
            Encoding::negotiate(Some("chat, holdfast.v1.msgpack")),
            (Encoding::MsgPack, true)
        );
        assert_eq!(
            Encoding::negotiate(Some("holdfast.v1.json,holdfast.v1.msgpack")),
            (Encoding::Json, true)
        );
        assert_eq!(Encoding::negotiate(Some("other")), (Encoding::Json, false));
    }

    #[test]
    fn bytes_round_trip_as_bin() {
        let v = json!({"type": "x", "data": {"$base64": "AAEC/w=="}, "n": [1, -2, 1.5, null]});
        let packed = value_to_msgpack(&v);
        // 0xc4 is bin 8: the bytes travel raw.
        assert!(packed.windows(6).any(|w| w == [0xc4, 4, 0, 1, 2, 0xff]));
        assert_eq!(msgpack_to_value(&packed).unwrap(), v);
        // A marker that is not valid base64, or has other keys, stays a map.
        let odd = json!({"a": {"$base64": "%%"}, "b": {"$base64": "AA==", "x": 1}});
        assert_eq!(msgpack_to_value(&value_to_msgpack(&odd)).unwrap(), odd);
    }

    #[test]
    fn hostile_input_is_refused() {
        // Non-string map key.
        assert!(msgpack_to_value(&[0x81, 0x01, 0x02]).is_err());
        // Truncated, and an array claiming 2^32-1 elements.
        assert!(msgpack_to_value(&[0x92, 0x01]).is_err());
        assert!(msgpack_to_value(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        // Too deep.
        let deep = vec![0x91u8; 200];
        assert!(msgpack_to_value(&deep).is_err());
        // Trailing bytes.
        assert!(msgpack_to_value(&[0xc0, 0xc0]).is_err());
    }
}
