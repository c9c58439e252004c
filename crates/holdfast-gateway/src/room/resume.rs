//! Resume: the token check (current or previous token, constant-time), the expiry and
//! tombstone answers, the take-over of a half-open connection, authority given back, and the
//! replay position. Every backend resumes through this one function.

use holdfast_protocol::{ErrorCode, PresenceStatus};

use super::membership::listed;
use super::rules::{err, Outcome, Rules, Who};
use super::state::RoomState;
use super::RoomError;
use crate::tokens::{hashes_match, TokenHash};

#[allow(clippy::too_many_arguments)]
pub(super) fn resume(
    st: &mut RoomState,
    player: &str,
    who: &Who,
    presented: &TokenHash,
    next: &TokenHash,
    now: u64,
    last: u64,
    rules: &Rules,
) -> Result<Outcome, RoomError> {
    let Some(i) = st.find(player) else {
        let expired = st
            .tombstones
            .iter()
            .any(|t| t.player == player && hashes_match(presented, &t.token));
        return Err(if expired {
            err(
                ErrorCode::ReconnectionExpired,
                "the reconnection window has passed",
            )
        } else {
            err(
                ErrorCode::ReconnectionTokenInvalid,
                "unknown player or token",
            )
        });
    };
    let m = &st.members[i];
    // Both comparisons always run, so timing does not tell which token matched.
    let current = m.token.as_ref().is_some_and(|h| hashes_match(presented, h));
    let previous = m
        .prev_token
        .as_ref()
        .is_some_and(|h| hashes_match(presented, h));
    if !(current || previous) || m.user != who.user {
        return Err(err(
            ErrorCode::ReconnectionTokenInvalid,
            "the token is not valid for this user, room and player",
        ));
    }
    if m.away_until.is_some_and(|u| now >= u) {
        return Err(err(
            ErrorCode::ReconnectionExpired,
            "the reconnection window has passed",
        ));
    }
    if st
        .members
        .iter()
        .enumerate()
        .any(|(j, o)| j != i && o.on(&who.session))
    {
        return Err(err(
            ErrorCode::ReconnectionFailed,
            "this session is already in the room as another member",
        ));
    }
    let used = if current { m.token } else { m.prev_token };
    // A resume while the old socket still looks alive (half-open) wins over it; a retry on
    // the same session (its reply was lost) converges.
    let retry = m.on(&who.session);
    let kick = m.session.clone().filter(|s| *s != who.session);
    let restore = m.held_authority && rules.restore_authority;
    let replay_to = st.seq;
    let m = &mut st.members[i];
    m.session = Some(who.session.clone());
    m.node = Some(who.node.clone());
    m.away_until = None;
    m.held_authority = false;
    m.token = Some(*next);
    m.prev_token = used;
    if !retry {
        st.note_presence(i, PresenceStatus::Online);
    }
    st.kick = kick.map(|k| k.to_string());
    if restore && st.authority.is_none() {
        st.set_authority(Some(player.to_owned()));
    }
    Ok(Outcome::Resumed {
        members: listed(st, rules),
        count: st.members.len() as u64,
        authority: st.authority.clone(),
        replay_to,
        state: st.snapshot().filter(|s| s.seq > last),
        after: 0,
        foreign: None,
    })
}
