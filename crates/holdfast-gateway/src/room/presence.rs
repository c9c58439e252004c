//! Presence: the frames that tell members who joined, dropped, came back or left.

use holdfast_protocol::{MemberChange, ServerFrame};

use super::state::RoomState;

/// What happened to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// A new member (`member_joined`).
    Joined,
    /// Gone for good (`member_left`).
    Left,
    /// Dropped, within its reconnection window (`member_disconnected`).
    Away,
    /// Resumed (`member_reconnected`).
    Back,
}

impl RoomState {
    /// Emits the presence change of member `idx`. Returns its seq.
    pub fn emit_presence(&mut self, idx: usize, what: Presence, kick: Option<String>) -> u64 {
        let (player_id, user_id) = (
            self.members[idx].player.clone(),
            self.members[idx].user.clone(),
        );
        self.emit_presence_of(player_id, user_id, what, kick)
    }

    /// Emits a presence change for a member record no longer in the list.
    pub fn emit_presence_of(
        &mut self,
        player_id: String,
        user_id: String,
        what: Presence,
        kick: Option<String>,
    ) -> u64 {
        self.emit(kick, move |room, seq, epoch| {
            let change = MemberChange {
                room,
                seq,
                epoch,
                player_id,
                user_id,
            };
            match what {
                Presence::Joined => ServerFrame::MemberJoined(change),
                Presence::Left => ServerFrame::MemberLeft(change),
                Presence::Away => ServerFrame::MemberDisconnected(change),
                Presence::Back => ServerFrame::MemberReconnected(change),
            }
        })
    }
}
