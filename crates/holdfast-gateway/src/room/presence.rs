//! Presence: who joined, dropped, came back or left. Presence is state, not part of the room's
//! stream: changes carry no seq, are never replayed (a resuming member gets the current list),
//! and are coalesced per room before they are sent (see [`super::fanout`]), so a storm of drops
//! and resumes neither evicts events from the replay buffer nor floods the members.

use holdfast_protocol::{MemberUpdate, PresenceStatus};
use serde::{Deserialize, Serialize};

use super::options::PresenceMode;
use super::state::RoomState;

/// The presence part of an operation's result, handed to every node with members in the room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceNote {
    /// The changes (empty unless the room's presence mode is `full`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<MemberUpdate>,
    /// Members after the operation.
    pub count: u64,
    /// Whether members are told (`false` when the presence mode is `off`).
    #[serde(default)]
    pub announce: bool,
    /// The room's presence version after these changes (members whose reply was taken at or
    /// after it already have them).
    #[serde(default)]
    pub version: u64,
    /// Sessions fenced out of the room: closed with 4000 where they are connected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kicks: Vec<String>,
}

impl PresenceNote {
    /// Folds a later note of the same room into this one (several operations committed
    /// together): each player's latest change, the latest count and version, every kick.
    pub fn merge(&mut self, later: PresenceNote) {
        for c in later.changes {
            self.changes.retain(|x| x.player_id != c.player_id);
            self.changes.push(c);
        }
        self.count = later.count;
        self.version = self.version.max(later.version);
        self.announce |= later.announce;
        self.kicks.extend(later.kicks);
    }
}

impl RoomState {
    /// Records that member `idx` now has `status`.
    pub fn note_presence(&mut self, idx: usize, status: PresenceStatus) {
        let (player_id, user_id) = (
            self.members[idx].player.to_string(),
            self.members[idx].user.to_string(),
        );
        self.note_presence_of(player_id, user_id, status);
    }

    /// Records a presence change for a member record no longer in the list.
    pub fn note_presence_of(&mut self, player_id: String, user_id: String, status: PresenceStatus) {
        self.changes.retain(|c| c.player_id != player_id);
        self.changes.push(MemberUpdate {
            player_id,
            user_id,
            status,
        });
    }

    /// Takes the presence result of the operation just applied, for a room in `mode`.
    pub fn take_presence(&mut self, mode: PresenceMode) -> Option<PresenceNote> {
        let changes = std::mem::take(&mut self.changes);
        if !changes.is_empty() {
            self.presence_version += 1;
        }
        let kicks: Vec<String> = self.kick.take().into_iter().collect();
        let announce = !changes.is_empty() && mode != PresenceMode::Off;
        if !announce && kicks.is_empty() {
            return None;
        }
        Some(PresenceNote {
            changes: if mode == PresenceMode::Full {
                changes
            } else {
                Vec::new()
            },
            count: self.members.len() as u64,
            announce,
            version: self.presence_version,
            kicks,
        })
    }
}
