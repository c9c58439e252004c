//! Membership: joining (a retried join converges; a fresh join replaces an away membership
//! of the same user), leaving for good (presence `left`, authority to the successor, a
//! tombstone for the token), and the member list a reply carries.

use holdfast_protocol::{ErrorCode, Member, PresenceStatus};

use super::options::PresenceMode;
use super::rules::{err, Outcome, Rules, Who};
use super::state::{MemberRecord, RoomState};
use super::RoomError;
use crate::tokens::TokenHash;

pub(super) fn join(
    st: &mut RoomState,
    who: &Who,
    token: Option<TokenHash>,
    rules: &Rules,
) -> Result<Outcome, RoomError> {
    if let Some(i) = st.members.iter().position(|m| m.on(&who.session)) {
        // The same session joined before and did not get the reply: the retry converges on
        // the existing membership, with a fresh token (the earlier one was never seen).
        st.members[i].token = token;
        st.members[i].prev_token = None;
        return Ok(Outcome::Joined {
            player: st.members[i].player.clone(),
            members: listed(st, rules),
            count: st.members.len() as u64,
            authority: st.authority.clone(),
            state: st.snapshot(),
        });
    }
    let replaced = st
        .members
        .iter()
        .position(|m| !m.online() && m.user == who.user);
    // A fresh join replaces an away membership of the same user (the client chose not to
    // resume it), so that one does not count against the limit.
    let count = st.members.len() - usize::from(replaced.is_some());
    if count >= rules.options(&st.name).max_members {
        return Err(err(ErrorCode::RoomFull, "the room is full"));
    }
    if let Some(i) = replaced {
        remove(st, i);
    }
    st.next_player += 1;
    let player: std::sync::Arc<str> = format!("p{}", st.next_player).into();
    // Grown by a quarter rather than doubled: a room's member list lives as long as the room,
    // and doubling would leave up to half of it unused.
    if st.members.len() == st.members.capacity() {
        st.members.reserve_exact((st.members.len() / 4).max(4));
    }
    st.members.push(MemberRecord {
        player: player.clone(),
        user: who.user.clone(),
        session: Some(who.session.clone()),
        node: Some(who.node.clone()),
        away_until: None,
        token,
        prev_token: None,
        held_authority: false,
    });
    if st.authority.is_none() && rules.options(&st.name).authority {
        st.authority = Some(player.to_string());
    }
    let i = st.members.len() - 1;
    st.note_presence(i, PresenceStatus::Online);
    Ok(Outcome::Joined {
        player,
        members: listed(st, rules),
        count: st.members.len() as u64,
        authority: st.authority.clone(),
        state: st.snapshot(),
    })
}

/// The member list a reply carries: the whole list in presence mode `full`, none otherwise
/// (so a join or resume in a large room costs O(1) in its size).
pub(super) fn listed(st: &RoomState, rules: &Rules) -> Vec<Member> {
    if rules.options(&st.name).presence == PresenceMode::Full {
        st.member_list()
    } else {
        Vec::new()
    }
}

/// Removes member `i` for good: presence `left`, authority to the successor, a tombstone for
/// its token.
pub(super) fn remove(st: &mut RoomState, i: usize) {
    let m = st.members.remove(i);
    st.dedupe.remove(&*m.player);
    st.dedupe_dirty.push(m.player.to_string());
    st.note_presence_of(
        m.player.to_string(),
        m.user.to_string(),
        PresenceStatus::Left,
    );
    st.succeed(&m.player);
    if let Some(token) = m.token {
        st.bury(m.player.to_string(), token);
    }
}
