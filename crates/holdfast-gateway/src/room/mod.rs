//! Rooms: members, the authority role, and the ordered stream of room messages.
//!
//! - [`state`]: the state of one room (plain, serialisable data).
//! - [`rules`]: every room operation, applied to a state: the one place where the room rules
//!   live, whatever the backend.
//! - [`membership`]: join, leave and the member list; [`resume`]: the resume rule.
//! - [`authority`]: who holds authority and who takes it over.
//! - [`presence`]: the frames that announce membership changes.
//! - [`stream`]: the replay ring and the gap arithmetic of a resume.
//! - [`fanout`]: local delivery in `seq` order and replies at the member's position.
//! - [`options`]: `[rooms]` and `[[namespaces]]`: presence mode, limits and history by prefix.
//! - `backend_ops`: what the application's backend and the node's timers ask of rooms.
//! - [`service`]: what sessions call: frame → operation → reply.

pub mod authority;
mod backend_ops;
pub mod fanout;
pub mod membership;
pub mod options;
pub mod presence;
pub mod resume;
pub mod rules;
pub mod service;
pub mod state;
pub mod stream;

use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use holdfast_protocol::{Encoding, ErrorCode, ServerFrame};

use crate::registry::Payload;

pub use service::{RoomInfo, RoomService};

/// Serialises a server frame once; the bytes are then shared by every recipient.
pub fn encode(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(holdfast_protocol::encode(frame))
}

/// A frame serialised once as JSON, with its MessagePack form built on first use and then
/// shared: fan-out serialises each message once per encoding in use, not once per member.
#[derive(Debug, Clone)]
pub struct Shared(Arc<SharedInner>);

#[derive(Debug)]
struct SharedInner {
    json: Utf8Bytes,
    msgpack: OnceLock<Option<Bytes>>,
}

impl Shared {
    /// Wraps a JSON frame text.
    pub fn new(json: Utf8Bytes) -> Shared {
        Shared(Arc::new(SharedInner {
            json,
            msgpack: OnceLock::new(),
        }))
    }

    /// The JSON text.
    pub fn json(&self) -> &Utf8Bytes {
        &self.0.json
    }

    /// The frame in `encoding` (a JSON text that could not be re-encoded, which the server
    /// never produces, is sent as it is).
    pub fn payload(&self, encoding: Encoding) -> Payload {
        if encoding == Encoding::MsgPack {
            let packed = self.0.msgpack.get_or_init(|| {
                holdfast_protocol::msgpack::json_to_msgpack(self.0.json.as_str())
                    .ok()
                    .map(Bytes::from)
            });
            if let Some(b) = packed {
                return Payload::Binary(b.clone());
            }
        }
        Payload::Text(self.0.json.clone())
    }
}

/// A refusal of a room operation: a stable code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomError {
    /// The code sent in `error` or `reconnection_failed`.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: &'static str,
}

/// A session's membership of one room.
#[derive(Debug, Clone)]
pub struct Membership {
    /// The room's name.
    pub room: Arc<str>,
    /// The member's player id.
    pub player: Arc<str>,
}

/// What `reconnect` asked for.
#[derive(Debug, Clone)]
pub struct Resume {
    /// The room.
    pub room: String,
    /// The player id held before the drop.
    pub player_id: String,
    /// The latest reconnection token.
    pub token: String,
    /// The highest seq the client processed.
    pub last_sequence: u64,
    /// The epoch of `last_sequence`, when the client sent it.
    pub epoch: Option<String>,
    /// The frame id to echo.
    pub id: Option<String>,
}
