//! Prints `clients/ts/src/generated.ts`: the TypeScript client's protocol constants, generated
//! from this crate so that the two cannot drift.
//!
//! Run it from the repository root:
//!
//! ```text
//! cargo run -q -p holdfast-protocol --example gen_ts > clients/ts/src/generated.ts
//! ```
//!
//! The output lists the error codes, the close codes with whether a client should reconnect
//! after each, the client and server frame types, and the fields of every frame. The field
//! lists come from serialising one sample of every frame with every optional field set; the
//! samples are struct literals, so a field added to a frame fails to compile here until the
//! sample (and so the generated file) includes it. The TypeScript sources check their frame
//! interfaces against these lists at compile time, and `tests/ts_generated.rs` fails when the
//! committed file differs from this output.

use std::fmt::Write as _;

use holdfast_protocol::frames::{MAX_TOKEN_LEN, MAX_USER_LEN};
use holdfast_protocol::msgpack::{Encoding, BASE64_KEY};
use holdfast_protocol::{
    Ack, AuthorityChanged, ClientFrame, CloseCode, Direct, ErrorCode, ErrorFrame, Event, Gap,
    Joined, Left, Member, MemberStatus, MemberUpdate, Ping, Presence, PresenceStatus, Publish,
    Reconnect, Reconnected, ReconnectionFailed, RecoveredFrom, Refresh, Refreshed, RoomRequest,
    Send, ServerFrame, ServerShutdown, SetState, StateSet, Welcome, MAX_ID_LEN, MAX_ROOM_LEN,
    PROTOCOL_VERSION,
};
use serde_json::{json, Value};

fn main() {
    print!("{}", render());
}

/// The complete text of `generated.ts`.
pub fn render() -> String {
    let mut out = String::new();
    out.push_str(
        "// This file is generated from the holdfast-protocol crate by\n\
         // `cargo run -q -p holdfast-protocol --example gen_ts > clients/ts/src/generated.ts`.\n\
         // Do not edit it by hand: crates/holdfast-protocol/tests/ts_generated.rs fails when it\n\
         // differs from the generator's output.\n\n",
    );
    let _ = writeln!(
        out,
        "/** The protocol version announced in `welcome`. */\nexport const PROTOCOL_VERSION = {PROTOCOL_VERSION};"
    );
    let _ = writeln!(
        out,
        "/** Longest client message `id`, in bytes. */\nexport const MAX_ID_LEN = {MAX_ID_LEN};"
    );
    let _ = writeln!(
        out,
        "/** Longest room name, in bytes. */\nexport const MAX_ROOM_LEN = {MAX_ROOM_LEN};"
    );
    let _ = writeln!(
        out,
        "/** Longest token, in bytes. */\nexport const MAX_TOKEN_LEN = {MAX_TOKEN_LEN};"
    );
    let _ = writeln!(
        out,
        "/** Longest user id accepted as a `send` target, in bytes. */\nexport const MAX_USER_LEN = {MAX_USER_LEN};"
    );
    let _ = writeln!(
        out,
        "/** `Sec-WebSocket-Protocol` of JSON frames (text messages; the default). */\nexport const SUBPROTOCOL_JSON = {:?};",
        Encoding::Json.subprotocol()
    );
    let _ = writeln!(
        out,
        "/** `Sec-WebSocket-Protocol` of MessagePack frames (binary messages). */\nexport const SUBPROTOCOL_MSGPACK = {:?};",
        Encoding::MsgPack.subprotocol()
    );
    let _ = writeln!(
        out,
        "/** The key of the JSON form of raw bytes: `{{\"$base64\": \"...\"}}`. */\nexport const BASE64_KEY = {BASE64_KEY:?};\n"
    );

    out.push_str("/** Every `code` of an `error` or `reconnection_failed` frame. */\n");
    out.push_str("export const ERROR_CODES = [\n");
    for code in ErrorCode::ALL {
        let _ = writeln!(out, "  {:?},", code.as_str());
    }
    out.push_str(
        "] as const;\n\n/** The `code` of an `error` or `reconnection_failed` frame. */\n",
    );
    out.push_str("export type ErrorCode = (typeof ERROR_CODES)[number];\n\n");

    out.push_str(
        "/** The close codes a Holdfast gateway sends, by name. */\nexport const CloseCode = {\n",
    );
    for code in CloseCode::ALL {
        let _ = writeln!(out, "  {}: {},", pascal(code.reason()), code.code());
    }
    out.push_str("} as const;\n\n/** A close code a Holdfast gateway sends. */\n");
    out.push_str("export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];\n\n");

    out.push_str(
        "/** Each close code's reason text and whether a client should reconnect after it. */\n\
         export const CLOSE_CODES: Readonly<Record<CloseCode, { readonly reason: string; readonly reconnect: boolean }>> = {\n",
    );
    for code in CloseCode::ALL {
        let _ = writeln!(
            out,
            "  {}: {{ reason: {:?}, reconnect: {} }},",
            code.code(),
            code.reason(),
            code.should_reconnect()
        );
    }
    out.push_str("};\n\n");
    out.push_str(
        "/**\n * Whether a client should reconnect (after backoff) when the gateway closed with `code`.\n\
         * Returns `undefined` for a code the gateway does not send (for example 1006, a connection\n\
         * lost without a close frame), which a client treats as a transient failure.\n */\n\
         export function shouldReconnect(code: number): boolean | undefined {\n\
         \x20 return (CLOSE_CODES as Record<number, { reconnect: boolean } | undefined>)[code]?.reconnect;\n\
         }\n\n",
    );

    out.push_str("/** Every `type` a client may send. */\nexport const CLIENT_FRAME_TYPES = [\n");
    for ty in ClientFrame::TYPES {
        let _ = writeln!(out, "  {ty:?},");
    }
    out.push_str("] as const;\n\n/** The `type` of a client frame. */\n");
    out.push_str("export type ClientFrameType = (typeof CLIENT_FRAME_TYPES)[number];\n\n");

    let servers = server_samples();
    out.push_str("/** Every `type` the server sends. */\nexport const SERVER_FRAME_TYPES = [\n");
    for (ty, _) in &servers {
        let _ = writeln!(out, "  {ty:?},");
    }
    out.push_str("] as const;\n\n/** The `type` of a server frame. */\n");
    out.push_str("export type ServerFrameType = (typeof SERVER_FRAME_TYPES)[number];\n\n");

    out.push_str(
        "/** The fields of every client frame (besides `type`), optional ones included. */\n\
         export const CLIENT_FRAME_FIELDS = {\n",
    );
    for (ty, fields) in client_samples() {
        let _ = writeln!(out, "  {ty}: {},", list(&fields));
    }
    out.push_str("} as const;\n\n");
    out.push_str(
        "/** The fields of every server frame (besides `type`), optional ones included. */\n\
         export const SERVER_FRAME_FIELDS = {\n",
    );
    for (ty, fields) in &servers {
        let _ = writeln!(out, "  {ty}: {},", list(fields));
    }
    out.push_str("} as const;\n");
    out
}

/// `going_away` → `GoingAway`.
fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect()
}

fn list(fields: &[String]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| format!("{f:?}")).collect();
    format!("[{}] as const", quoted.join(", "))
}

/// The `type` and the other keys of one serialised frame.
fn describe(value: Value) -> (String, Vec<String>) {
    let Value::Object(map) = value else {
        panic!("a frame must serialise to an object");
    };
    let ty = map
        .get("type")
        .and_then(Value::as_str)
        .expect("a frame has a string type")
        .to_owned();
    // Sorted explicitly: the map's own order depends on serde_json's `preserve_order` feature,
    // which another crate of the workspace may turn on.
    let mut fields: Vec<String> = map.keys().filter(|k| *k != "type").cloned().collect();
    fields.sort();
    (ty, fields)
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

fn room_request() -> RoomRequest {
    RoomRequest {
        room: "r".into(),
        id: some("1"),
    }
}

/// The position of a client frame's variant in the enum. The match is exhaustive, so a new
/// variant fails to compile here until it gets a sample.
fn client_variant(frame: &ClientFrame) -> usize {
    match frame {
        ClientFrame::Auth(_) => 0,
        ClientFrame::Join(_) => 1,
        ClientFrame::Leave(_) => 2,
        ClientFrame::Publish(_) => 3,
        ClientFrame::Send(_) => 4,
        ClientFrame::ClaimAuthority(_) => 5,
        ClientFrame::ReleaseAuthority(_) => 6,
        ClientFrame::Reconnect(_) => 7,
        ClientFrame::Refresh(_) => 8,
        ClientFrame::Ping(_) => 9,
        ClientFrame::SetState(_) => 10,
    }
}

/// The position of a server frame's variant in the enum; exhaustive like [`client_variant`].
fn server_variant(frame: &ServerFrame) -> usize {
    match frame {
        ServerFrame::Welcome(_) => 0,
        ServerFrame::Joined(_) => 1,
        ServerFrame::Left(_) => 2,
        ServerFrame::Event(_) => 3,
        ServerFrame::Presence(_) => 4,
        ServerFrame::AuthorityChanged(_) => 5,
        ServerFrame::Ack(_) => 6,
        ServerFrame::Message(_) => 7,
        ServerFrame::Refreshed(_) => 8,
        ServerFrame::Reconnected(_) => 9,
        ServerFrame::ReconnectionFailed(_) => 10,
        ServerFrame::Error(_) => 11,
        ServerFrame::Pong(_) => 12,
        ServerFrame::ServerShutdown(_) => 13,
        ServerFrame::StateSet(_) => 14,
    }
}

/// One sample of every client frame, in enum order, with every optional field set.
fn client_samples() -> Vec<(String, Vec<String>)> {
    let samples = vec![
        ClientFrame::Auth(holdfast_protocol::Auth { token: "t".into() }),
        ClientFrame::Join(holdfast_protocol::Join {
            room: "r".into(),
            token: some("t"),
            id: some("1"),
        }),
        ClientFrame::Leave(room_request()),
        ClientFrame::Publish(Publish {
            room: "r".into(),
            data: json!({}),
            id: some("1"),
            traceparent: some("00"),
        }),
        ClientFrame::Send(Send {
            to: "u".into(),
            data: json!({}),
            id: some("1"),
        }),
        ClientFrame::ClaimAuthority(room_request()),
        ClientFrame::ReleaseAuthority(room_request()),
        ClientFrame::Reconnect(Reconnect {
            room: "r".into(),
            player_id: "p".into(),
            token: "t".into(),
            last_sequence: 1,
            epoch: some("e"),
            join_token: some("t"),
            id: some("1"),
        }),
        ClientFrame::Refresh(Refresh {
            token: "t".into(),
            id: some("1"),
        }),
        ClientFrame::Ping(Ping { id: some("1") }),
        ClientFrame::SetState(SetState {
            room: "r".into(),
            state: json!({}),
            id: some("1"),
        }),
    ];
    let order: Vec<usize> = samples.iter().map(client_variant).collect();
    assert_eq!(
        order,
        (0..samples.len()).collect::<Vec<_>>(),
        "one sample per variant, in order"
    );
    assert_eq!(samples.len(), ClientFrame::TYPES.len());
    samples
        .into_iter()
        .map(|f| describe(serde_json::to_value(f).expect("serialise")))
        .collect()
}

/// One sample of every server frame, in enum order, with every optional field set.
fn server_samples() -> Vec<(String, Vec<String>)> {
    let members = || {
        vec![Member {
            player_id: "p".into(),
            user_id: "u".into(),
            status: MemberStatus::Online,
        }]
    };
    let samples = vec![
        ServerFrame::Welcome(Welcome {
            protocol: PROTOCOL_VERSION,
            user_id: "u".into(),
            session_id: "s".into(),
            node_id: "n".into(),
            ping_interval_ms: 1,
            pong_timeout_ms: 1,
            max_message_bytes: 1,
            expires_at: 1,
        }),
        ServerFrame::Joined(Joined {
            room: "r".into(),
            player_id: "p".into(),
            members: members(),
            member_count: 1,
            authority: some("p"),
            seq: 1,
            epoch: "e".into(),
            reconnection_token: some("t"),
            state: Some(json!({})),
            state_seq: Some(1),
            events: vec![ServerFrame::Pong(Ping { id: None })],
            gap: Some(Gap {
                from: 1,
                to: 1,
                epoch: "e".into(),
            }),
            id: some("1"),
        }),
        ServerFrame::Left(Left {
            room: "r".into(),
            seq: 1,
            epoch: "e".into(),
            id: some("1"),
        }),
        ServerFrame::Event(Event {
            room: "r".into(),
            seq: 1,
            epoch: "e".into(),
            ts: 1,
            from: "p".into(),
            user_id: "u".into(),
            data: json!({}),
            id: some("1"),
            traceparent: some("00"),
        }),
        ServerFrame::Presence(Presence {
            room: "r".into(),
            changes: vec![MemberUpdate {
                player_id: "p".into(),
                user_id: "u".into(),
                status: PresenceStatus::Online,
            }],
            count: 1,
        }),
        ServerFrame::AuthorityChanged(AuthorityChanged {
            room: "r".into(),
            seq: 1,
            epoch: "e".into(),
            authority: some("p"),
        }),
        ServerFrame::Ack(Ack {
            id: "1".into(),
            room: some("r"),
            seq: Some(1),
        }),
        ServerFrame::Message(Direct {
            from: "u".into(),
            ts: 1,
            data: json!({}),
        }),
        ServerFrame::Refreshed(Refreshed {
            expires_at: 1,
            id: some("1"),
        }),
        ServerFrame::Reconnected(Reconnected {
            room: "r".into(),
            player_id: "p".into(),
            events: Vec::new(),
            recovered: false,
            gap: Some(Gap {
                from: 1,
                to: 1,
                epoch: "e".into(),
            }),
            rolled_back: Some(Gap {
                from: 2,
                to: 3,
                epoch: "d".into(),
            }),
            members: members(),
            member_count: 1,
            authority: some("p"),
            seq: 1,
            epoch: "e".into(),
            reconnection_token: "t".into(),
            recovered_from: Some(RecoveredFrom::Snapshot),
            id: some("1"),
        }),
        ServerFrame::ReconnectionFailed(ReconnectionFailed {
            room: "r".into(),
            code: ErrorCode::ReconnectionFailed,
            message: "m".into(),
            id: some("1"),
        }),
        ServerFrame::Error(ErrorFrame {
            code: ErrorCode::Internal,
            message: "m".into(),
            id: some("1"),
        }),
        ServerFrame::Pong(Ping { id: some("1") }),
        ServerFrame::ServerShutdown(ServerShutdown {
            reason: "r".into(),
            reconnect_after_ms: 1,
        }),
        ServerFrame::StateSet(StateSet {
            room: "r".into(),
            seq: 1,
            epoch: "e".into(),
            state: json!({}),
        }),
    ];
    let order: Vec<usize> = samples.iter().map(server_variant).collect();
    assert_eq!(
        order,
        (0..samples.len()).collect::<Vec<_>>(),
        "one sample per variant, in order"
    );
    samples
        .into_iter()
        .map(|f| describe(serde_json::to_value(f).expect("serialise")))
        .collect()
}
