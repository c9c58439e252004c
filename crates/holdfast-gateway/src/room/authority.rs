//! The authority role: who holds it, and who takes it over. Every succession rule is here.

use holdfast_protocol::{AuthorityChanged, ServerFrame};

use super::state::RoomState;

impl RoomState {
    /// The longest-present connected member other than `except`.
    pub fn successor(&self, except: Option<&str>) -> Option<String> {
        self.members
            .iter()
            .find(|m| m.online() && Some(&*m.player) != except)
            .map(|m| m.player.to_string())
    }

    /// Whether the authority is held by a connected member.
    pub fn holder_online(&self) -> bool {
        self.authority
            .as_deref()
            .and_then(|a| self.find(a))
            .is_some_and(|i| self.members[i].online())
    }

    /// Sets the authority and emits `authority_changed`. Returns its seq.
    pub fn set_authority(&mut self, to: Option<String>) -> u64 {
        self.authority = to;
        let authority = self.authority.clone();
        self.emit(move |room, seq, epoch| {
            ServerFrame::AuthorityChanged(AuthorityChanged {
                room,
                seq,
                epoch,
                authority,
            })
        })
    }

    /// `player` is gone for good: if it held authority, the longest-present connected member
    /// takes it. Returns the seq of the `authority_changed` when one was emitted.
    pub fn succeed(&mut self, player: &str) -> Option<u64> {
        (self.authority.as_deref() == Some(player))
            .then(|| self.set_authority(self.successor(Some(player))))
    }
}
