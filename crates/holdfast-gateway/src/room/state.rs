//! The state of one room, as every backend stores it: members, authority, the stream position,
//! reconnection token hashes, away deadlines and tombstones. Plain data (serialisable, so a
//! cluster store can keep it), changed only by the rules in [`super::rules`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use holdfast_protocol::{encode, Member, MemberStatus, MemberUpdate, ServerFrame};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::dedupe::DedupeWindow;
use crate::tokens::TokenHash;

/// Most tombstones kept per room; the oldest is forgotten first.
pub const MAX_TOMBSTONES: usize = 256;

/// One member of a room.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberRecord {
    /// Id within the room (`p1`, `p2`, ...), kept across reconnects (shared with the member's
    /// session and the room's local view on the member's own node).
    pub player: Arc<str>,
    /// The member's user (shared with the session's handle on the member's own node).
    pub user: Arc<str>,
    /// The connected session's id, `None` while away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Arc<str>>,
    /// The node holding the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Arc<str>>,
    /// While away: when the reconnection window closes (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away_until: Option<u64>,
    /// Hash of the current reconnection token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenHash>,
    /// Hash of the token whose resume issued the current one: it stays redeemable until the
    /// current one is used, because the reply that carried the current one may have been lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_token: Option<TokenHash>,
    /// Whether the member held authority when it dropped (to restore it on resume).
    #[serde(default)]
    pub held_authority: bool,
}

impl MemberRecord {
    /// Whether the member is connected.
    pub fn online(&self) -> bool {
        self.session.is_some()
    }

    /// Whether the member is connected through session `id`.
    pub fn on(&self, session: &str) -> bool {
        self.session.as_deref() == Some(session)
    }
}

/// A member whose window expired, kept so a late resume is told `reconnection_expired`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tombstone {
    /// The expired player id.
    pub player: String,
    /// Its last token hash.
    pub token: TokenHash,
}

/// One room message produced by an operation, ready to be appended to the room's stream and
/// fanned out.
#[derive(Debug, Clone)]
pub struct Emitted {
    /// Its sequence number.
    pub seq: u64,
    /// Its serialised frame.
    pub text: Utf8Bytes,
}

/// The state of one room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomState {
    /// The stream epoch: random per room incarnation.
    pub epoch: String,
    /// The last allocated sequence number.
    pub seq: u64,
    /// The seq at which this epoch took over from the previous one (0 for a new room): after
    /// a rollback the new epoch shares the stream up to `base` with the old one, and numbers
    /// after `base` are its own.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub base: u64,
    /// Counter for player ids.
    pub next_player: u64,
    /// The player id holding authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Members in join order: the longest-present first, so succession is a scan.
    pub members: Vec<MemberRecord>,
    /// The room's publish token bucket: tokens left, and when it was last taken from (Unix
    /// ms; 0 before the first publish).
    #[serde(default)]
    pub rate_tokens: f64,
    #[serde(default)]
    pub rate_at: u64,
    /// Counts the operations that changed the membership (the version of its presence).
    #[serde(default)]
    pub presence_version: u64,
    /// Expired members, bounded by [`MAX_TOMBSTONES`].
    #[serde(default)]
    pub tombstones: VecDeque<Tombstone>,
    /// The room's latest state (`set_state`), as JSON text, bounded by the room's
    /// `state_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Box<RawValue>>,
    /// The seq of the `state_set` that set `state`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub state_seq: u64,
    /// Publish dedupe windows by player. Kept apart from the rest by stores that load them
    /// only for the publisher.
    #[serde(skip)]
    pub dedupe: HashMap<String, DedupeWindow>,
    /// Players whose dedupe window changed in this operation.
    #[serde(skip)]
    pub dedupe_dirty: Vec<String>,
    /// Messages emitted by the operation being applied.
    #[serde(skip)]
    pub out: Vec<Emitted>,
    /// Presence changes made by the operation being applied (not part of the stream).
    #[serde(skip)]
    pub changes: Vec<MemberUpdate>,
    /// A session the operation fenced out of the room (its membership moved on).
    #[serde(skip)]
    pub kick: Option<String>,
    /// The room's name, for the frames.
    #[serde(skip)]
    pub name: String,
}

impl RoomState {
    /// A new room incarnation with `epoch`.
    pub fn new(name: &str, epoch: String) -> RoomState {
        RoomState {
            epoch,
            seq: 0,
            base: 0,
            next_player: 0,
            authority: None,
            members: Vec::new(),
            presence_version: 0,
            rate_tokens: 0.0,
            rate_at: 0,
            tombstones: VecDeque::new(),
            state: None,
            state_seq: 0,
            dedupe: HashMap::new(),
            dedupe_dirty: Vec::new(),
            out: Vec::new(),
            changes: Vec::new(),
            kick: None,
            name: name.to_owned(),
        }
    }

    /// The index of `player`.
    pub fn find(&self, player: &str) -> Option<usize> {
        self.members.iter().position(|m| &*m.player == player)
    }

    /// The index of `player` if it is connected through `session`.
    pub fn find_live(&self, player: &str, session: &str) -> Option<usize> {
        self.find(player).filter(|&i| self.members[i].on(session))
    }

    /// Whether nobody, connected or away, is left (the room is then dropped).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member list as sent in `joined` and `reconnected`.
    pub fn member_list(&self) -> Vec<Member> {
        self.members
            .iter()
            .map(|m| Member {
                player_id: m.player.to_string(),
                user_id: m.user.to_string(),
                status: if m.online() {
                    MemberStatus::Online
                } else {
                    MemberStatus::Away
                },
            })
            .collect()
    }

    /// Emits one room message: allocates its seq and serialises it once. Returns the seq.
    pub fn emit(&mut self, make: impl FnOnce(String, u64, String) -> ServerFrame) -> u64 {
        self.seq += 1;
        let frame = make(self.name.clone(), self.seq, self.epoch.clone());
        self.out.push(Emitted {
            seq: self.seq,
            text: Utf8Bytes::from(encode(&frame)),
        });
        self.seq
    }

    /// The room's state and its seq, when it has one.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let raw = self.state.as_ref()?;
        let state = serde_json::from_str(raw.get()).ok()?;
        Some(Snapshot {
            seq: self.state_seq,
            state,
            upto: self.seq,
        })
    }

    /// Starts epoch `epoch` at the current seq: the store found this state restored from an
    /// older copy (its stream may have gone backwards), so positions after `seq` in the old
    /// epoch are not this stream's.
    pub fn rebase(&mut self, epoch: String) {
        self.epoch = epoch;
        self.base = self.seq;
    }

    /// Remembers an expired member's last token.
    pub fn bury(&mut self, player: String, token: TokenHash) {
        while self.tombstones.len() >= MAX_TOMBSTONES {
            self.tombstones.pop_front();
        }
        self.tombstones.push_back(Tombstone { player, token });
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A room's state as an operation's outcome carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The seq of the `state_set` that set it.
    pub seq: u64,
    /// The state.
    pub state: serde_json::Value,
    /// The room's seq when it was read (the messages in `(seq, upto]` came after it).
    pub upto: u64,
}
