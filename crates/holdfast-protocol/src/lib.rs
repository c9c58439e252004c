//! Holdfast wire protocol, version 1.
//!
//! This crate is the single source of truth for what travels on the wire between a Holdfast
//! gateway and its clients. It does no I/O, so the gateway, the Rust client, the benchmark tool
//! and the TypeScript type generator can all depend on it.
//!
//! # Layout
//! - [`frames`]: the one enum of client frames and the one enum of server frames.
//! - [`codes`]: stable error codes ([`ErrorCode`]) and close codes ([`CloseCode`]) with their
//!   documented ranges and whether a client should reconnect after each.
//! - [`wire`]: the one encoding of server frames ([`encode`], [`ack_frame`], and
//!   [`encode_reconnected`], which carries stored frame texts without parsing them again).
//! - [`parse_client_frame`]: turns raw text into a [`ClientFrame`] or a precise [`ErrorCode`],
//!   keeping the offending frame's `id` so the error can name it.

pub mod codes;
pub mod frames;
pub mod msgpack;
pub mod wire;

pub use codes::{CloseCode, ErrorCode};
pub use frames::*;
pub use msgpack::Encoding;
pub use wire::{ack_frame, encode, encode_reconnected};

/// The protocol version spoken by this crate, announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest client message `id` accepted, in bytes. Ids are remembered for dedupe, so they are
/// bounded like every other client-controlled key.
pub const MAX_ID_LEN: usize = 64;

/// Longest room name accepted, in bytes.
pub const MAX_ROOM_LEN: usize = 128;

/// A client frame that could not be turned into a [`ClientFrame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// The stable code to report.
    pub code: ErrorCode,
    /// A human-readable explanation (never includes message contents).
    pub message: String,
    /// The `id` of the offending frame when one could be read.
    pub id: Option<String>,
}

/// Parses one text frame from a client.
///
/// Malformed JSON, a frame that is not an object, an unknown `type`, and missing or mistyped
/// fields each map to their own [`ErrorCode`]. The frame's `id`, when it is a string, is kept
/// in the error so the client can match the error to its request.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    // A well-formed frame is read in one pass, straight from the text; whatever that pass
    // refuses goes through the steps below, which name the precise error.
    if let Ok(frame) = serde_json::from_str::<ClientFrame>(text) {
        if frame.validate().is_ok() {
            return Ok(frame);
        }
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| FrameError {
        code: ErrorCode::BadJson,
        message: format!("frame is not valid JSON: {e}"),
        id: None,
    })?;
    parse_client_value(value)
}

/// Parses one binary (MessagePack) frame from a client: like [`parse_client_frame`], with
/// `bad_json` for a message that is not valid MessagePack (same code, one meaning: the frame
/// could not be decoded in the connection's encoding).
pub fn parse_client_msgpack(bytes: &[u8]) -> Result<ClientFrame, FrameError> {
    let value = msgpack::msgpack_to_value(bytes).map_err(|e| FrameError {
        code: ErrorCode::BadJson,
        message: format!("frame is not valid MessagePack: {e}"),
        id: None,
    })?;
    parse_client_value(value)
}

/// Parses one client frame in `encoding`.
pub fn parse_client_message(encoding: Encoding, bytes: &[u8]) -> Result<ClientFrame, FrameError> {
    match encoding {
        Encoding::MsgPack => parse_client_msgpack(bytes),
        Encoding::Json => match std::str::from_utf8(bytes) {
            Ok(text) => parse_client_frame(text),
            Err(_) => Err(FrameError {
                code: ErrorCode::BadJson,
                message: "frame is not UTF-8".into(),
                id: None,
            }),
        },
    }
}

fn parse_client_value(value: serde_json::Value) -> Result<ClientFrame, FrameError> {
    let obj = value.as_object().ok_or_else(|| FrameError {
        code: ErrorCode::InvalidFrame,
        message: "frame must be a JSON object".into(),
        id: None,
    })?;
    let id = obj
        .get("id")
        .and_then(|v| v.as_str())
        .filter(|s| s.len() <= MAX_ID_LEN)
        .map(str::to_owned);
    let ty = match obj.get("type") {
        Some(serde_json::Value::String(t)) => t.as_str(),
        Some(_) => {
            return Err(FrameError {
                code: ErrorCode::InvalidFrame,
                message: "field `type` must be a string".into(),
                id,
            })
        }
        None => {
            return Err(FrameError {
                code: ErrorCode::InvalidFrame,
                message: "missing field `type`".into(),
                id,
            })
        }
    };
    let Some(ty) = ClientFrame::TYPES.iter().copied().find(|t| *t == ty) else {
        return Err(FrameError {
            code: ErrorCode::UnknownType,
            message: format!("unknown frame type `{}`", truncate(ty, 32)),
            id,
        });
    };
    let frame: ClientFrame = serde_json::from_value(value).map_err(|e| FrameError {
        code: ErrorCode::InvalidFrame,
        message: format!("invalid `{ty}` frame: {e}"),
        id: id.clone(),
    })?;
    frame.validate().map_err(|message| FrameError {
        code: ErrorCode::InvalidFrame,
        message,
        id,
    })?;
    Ok(frame)
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_have_precise_codes() {
        let cases = [
            ("{", ErrorCode::BadJson, None),
            ("[1,2]", ErrorCode::InvalidFrame, None),
            (r#"{"id":"a"}"#, ErrorCode::InvalidFrame, Some("a")),
            (r#"{"type":7,"id":"b"}"#, ErrorCode::InvalidFrame, Some("b")),
            (
                r#"{"type":"nope","id":"c"}"#,
                ErrorCode::UnknownType,
                Some("c"),
            ),
            (
                r#"{"type":"join","id":"d"}"#,
                ErrorCode::InvalidFrame,
                Some("d"),
            ),
            (
                r#"{"type":"join","room":"","id":"e"}"#,
                ErrorCode::InvalidFrame,
                Some("e"),
            ),
            (
                r#"{"type":"publish","room":"r","id":"f"}"#,
                ErrorCode::InvalidFrame,
                Some("f"),
            ),
        ];
        for (text, code, id) in cases {
            let err = parse_client_frame(text).expect_err(text);
            assert_eq!(err.code, code, "{text}");
            assert_eq!(err.id.as_deref(), id, "{text}");
        }
    }

    #[test]
    fn parses_every_client_type() {
        let ok = [
            r#"{"type":"auth","token":"t"}"#,
            r#"{"type":"join","room":"r"}"#,
            r#"{"type":"leave","room":"r","id":"1"}"#,
            r#"{"type":"publish","room":"r","data":{"x":1},"id":"2"}"#,
            r#"{"type":"send","to":"u","data":"hi"}"#,
            r#"{"type":"claim_authority","room":"r"}"#,
            r#"{"type":"release_authority","room":"r"}"#,
            r#"{"type":"reconnect","room":"r","player_id":"p1","token":"t","last_sequence":3}"#,
            r#"{"type":"refresh","token":"t"}"#,
            r#"{"type":"ping"}"#,
        ];
        for text in ok {
            parse_client_frame(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        }
    }

    #[test]
    fn server_frames_serialise_with_type_tag() {
        let f = ServerFrame::Error(ErrorFrame {
            code: ErrorCode::NotInRoom,
            message: "x".into(),
            id: Some("9".into()),
        });
        let s = serde_json::to_string(&f).expect("serialise");
        assert_eq!(
            s,
            r#"{"type":"error","code":"not_in_room","message":"x","id":"9"}"#
        );
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 8), "abc");
    }
}
