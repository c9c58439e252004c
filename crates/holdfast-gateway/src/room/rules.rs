//! The room rules: every room operation, applied to a [`RoomState`]. This is the only place
//! where membership, authority, away and expiry, tombstones, token rotation and publish dedupe
//! are decided; every backend runs these functions and stores the result.
//!
//! Contract of [`apply`]: on `Err` the state is unchanged (every check comes before the first
//! change); on `Ok` the emitted messages are in `state.out`, in seq order.

use std::sync::Arc;

use holdfast_protocol::{ErrorCode, Event, Member, PresenceStatus, ServerFrame, StateSet};
use serde_json::value::RawValue;
use serde_json::Value;

use super::membership::{join, remove};
use super::options::{Namespaces, RoomOptions};
use super::resume::resume;
use super::state::{RoomState, Snapshot};
use super::RoomError;
use crate::tokens::TokenHash;

/// Settings the rules read, taken from the node's configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    /// `session.dedupe_window`.
    pub dedupe_window: usize,
    /// `reconnection.enabled`.
    pub reconnection: bool,
    /// `reconnection.restore_authority`.
    pub restore_authority: bool,
    /// Per-room options (`[rooms]`, `[[namespaces]]`).
    pub namespaces: Namespaces,
}

impl Rules {
    /// The rules of a node with `config`.
    pub fn from_config(config: &crate::Config) -> Rules {
        Rules {
            dedupe_window: config.session.dedupe_window,
            reconnection: config.reconnection.enabled,
            restore_authority: config.reconnection.restore_authority,
            namespaces: Namespaces::from_config(config),
        }
    }

    /// The options of room `name`.
    pub fn options(&self, name: &str) -> RoomOptions {
        self.namespaces.options(name)
    }
}

/// A session, as the rules see it.
#[derive(Debug, Clone)]
pub struct Who {
    /// Session id (unique in the cluster).
    pub session: Arc<str>,
    /// Its user.
    pub user: Arc<str>,
    /// Its node.
    pub node: Arc<str>,
}

/// One room operation.
#[derive(Debug, Clone)]
pub enum Op {
    /// Join as a new member. `token` is the hash of the token to hand out.
    Join {
        /// Who joins.
        who: Who,
        /// Hash of the new reconnection token (none when reconnection is off).
        token: Option<TokenHash>,
    },
    /// Leave for good.
    Leave {
        /// The member.
        player: String,
        /// Its session.
        session: String,
    },
    /// Publish an event.
    Publish {
        /// The publisher.
        player: String,
        /// Its session.
        session: String,
        /// Its user.
        user: String,
        /// The data.
        data: Value,
        /// The client's id, for dedupe.
        id: Option<String>,
        /// Trace context.
        traceparent: Option<String>,
        /// Server time (Unix ms).
        ts: u64,
    },
    /// Publish an event from the application's backend (no member sends it).
    ServerPublish {
        /// The data.
        data: Value,
        /// The backend's id, for dedupe (one window per room for the backend).
        id: Option<String>,
        /// Trace context.
        traceparent: Option<String>,
        /// Server time (Unix ms).
        ts: u64,
    },
    /// Replace the room's state: from the member holding authority, or from the
    /// application's backend (`member` is `None`).
    SetState {
        /// The member `(player, session)`, or none for the backend.
        member: Option<(String, String)>,
        /// The new state.
        state: Value,
    },
    /// Read the room without changing it.
    Inspect,
    /// Take authority.
    Claim {
        /// The claimant.
        player: String,
        /// Its session.
        session: String,
    },
    /// Give authority up.
    Release {
        /// The holder.
        player: String,
        /// Its session.
        session: String,
    },
    /// The member's session ended: it turns away (or leaves when reconnection is off).
    Away {
        /// The member.
        player: String,
        /// Its session.
        session: String,
        /// Now (Unix ms).
        now: u64,
    },
    /// Resume a membership on a new session.
    Resume {
        /// The player id held before.
        player: String,
        /// The new session.
        who: Who,
        /// Hash of the presented token.
        presented: TokenHash,
        /// Hash of the next token.
        next: TokenHash,
        /// The highest seq the client processed.
        last: u64,
        /// The epoch of `last`, when the client sent it.
        epoch: Option<String>,
        /// Now (Unix ms).
        now: u64,
    },
    /// End an away membership before its window passed (the user keeps too many away); a
    /// member that is connected again, or gone, is left as it is.
    Evict {
        /// The member.
        player: String,
    },
    /// A start of a node is gone (its liveness lease in the cluster passed): every member
    /// connected through one of its sessions turns away, as with [`Op::Away`].
    NodeGone {
        /// The node's start, as its session ids begin (`<node_id>-<start>`, up to their last
        /// `-`): a node restarted with the same id is another start.
        node: String,
        /// Now (Unix ms).
        now: u64,
    },
    /// Remove away members whose window passed.
    Expire {
        /// Now (Unix ms).
        now: u64,
    },
}

/// What an operation did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `join`: the new (or, for a retried join of the same session, existing) member.
    Joined {
        /// Its player id (shared with the member record where the room lives in this process).
        player: std::sync::Arc<str>,
        /// Every member now (empty unless the presence mode is `full`).
        members: Vec<Member>,
        /// Members now.
        count: u64,
        /// The authority now.
        authority: Option<String>,
        /// The room's state, when it has one.
        state: Option<Snapshot>,
    },
    /// `leave` (also when the member was already gone).
    Left,
    /// `publish`: `duplicate` when the id was seen; `seq` is the event's.
    Published {
        /// The event's seq (the original one for a duplicate).
        seq: u64,
        /// Whether nothing was emitted because the id was seen.
        duplicate: bool,
    },
    /// `claim_authority` / `release_authority`.
    Authority,
    /// The member turned away (or left, or was not there any more).
    Away,
    /// `reconnect`.
    Resumed {
        /// Every member now (empty unless the presence mode is `full`).
        members: Vec<Member>,
        /// Members now.
        count: u64,
        /// The authority now.
        authority: Option<String>,
        /// The stream position before this resume's own messages: replay ends here.
        replay_to: u64,
        /// Replay starts after this seq: the client's `last`, or, when its position belongs
        /// to another epoch (or lies ahead of the stream), the seq the current epoch took
        /// over at.
        after: u64,
        /// The client's position was not in the current epoch: its messages `from..=to` of
        /// its epoch were rolled back (empty when `from > to`).
        foreign: Option<(u64, u64)>,
        /// The room's state, when it was set after the position the member resumes from.
        state: Option<Snapshot>,
    },
    /// `set_state`: the `state_set`'s seq (0 when nobody is in the room: nothing is kept).
    StateSet {
        /// Its seq.
        seq: u64,
    },
    /// Expired members removed.
    Expired(usize),
    /// Members of a gone node turned away (or removed when reconnection is off).
    NodeGone(usize),
    /// `Inspect`: the room as it is.
    Info {
        /// Every member.
        members: Vec<Member>,
        /// The authority.
        authority: Option<String>,
    },
}

/// The `from` of an event published by the application's backend (player ids are `p<n>`, so
/// it never names a member); its `user_id` is empty.
pub const SERVER_FROM: &str = "server";
/// The dedupe window key of the backend's publishes (not a valid player id).
pub const SERVER_DEDUPE: &str = "@server";

pub(super) fn err(code: ErrorCode, message: &'static str) -> RoomError {
    RoomError { code, message }
}

pub(super) fn not_in_room() -> RoomError {
    err(ErrorCode::NotInRoom, "not a member of the room")
}

/// Applies `op` to `st` under `rules`. See the module documentation for the contract.
pub fn apply(st: &mut RoomState, op: &Op, rules: &Rules) -> Result<Outcome, RoomError> {
    match op {
        Op::Join { who, token } => join(st, who, *token, rules),
        Op::Leave { player, session } => {
            match st.find(player) {
                // Already gone: a retried leave whose reply was lost converges.
                None => Ok(Outcome::Left),
                Some(i) if !st.members[i].on(session) => Err(not_in_room()),
                Some(i) => {
                    remove(st, i);
                    Ok(Outcome::Left)
                }
            }
        }
        Op::Publish {
            player,
            session,
            user,
            data,
            id,
            traceparent,
            ts,
        } => {
            st.find_live(player, session).ok_or_else(not_in_room)?;
            let opts = rules.options(&st.name);
            if !opts.client_publish {
                return Err(err(
                    ErrorCode::Forbidden,
                    "members may not publish in this room (the application's backend does)",
                ));
            }
            if let Some(dup) = seen(st, player, id) {
                return Ok(dup);
            }
            if opts.publish_rate_per_sec > 0 {
                // A token bucket per room: `rate` tokens a second, one second of burst.
                let rate = f64::from(opts.publish_rate_per_sec);
                let elapsed = ts.saturating_sub(st.rate_at) as f64 / 1000.0;
                let tokens = if st.rate_at == 0 {
                    rate
                } else {
                    (st.rate_tokens + elapsed * rate).min(rate)
                };
                if tokens < 1.0 {
                    return Err(err(
                        ErrorCode::RateLimited,
                        "the room's publish rate is exceeded; retry later",
                    ));
                }
                st.rate_tokens = tokens - 1.0;
                st.rate_at = *ts;
            }
            Ok(emit_event(
                st,
                player,
                (player.clone(), user.clone()),
                (data, id, traceparent, *ts),
                rules,
            ))
        }
        Op::ServerPublish {
            data,
            id,
            traceparent,
            ts,
        } => {
            if let Some(dup) = seen(st, SERVER_DEDUPE, id) {
                return Ok(dup);
            }
            Ok(emit_event(
                st,
                SERVER_DEDUPE,
                (SERVER_FROM.to_owned(), String::new()),
                (data, id, traceparent, *ts),
                rules,
            ))
        }
        Op::SetState { member, state } => set_state(st, member.as_ref(), state, rules),
        Op::Inspect => Ok(Outcome::Info {
            members: st.member_list(),
            authority: st.authority.clone(),
        }),
        Op::Claim { player, session } => {
            st.find_live(player, session).ok_or_else(not_in_room)?;
            if !rules.options(&st.name).authority {
                return Err(err(ErrorCode::Forbidden, "this room has no authority role"));
            }
            if st.authority.as_deref() == Some(player) {
                return Ok(Outcome::Authority);
            }
            if st.holder_online() {
                return Err(err(
                    ErrorCode::AuthorityTaken,
                    "another connected member holds authority",
                ));
            }
            // The holder is away (or there is none): the claim takes authority over, and the
            // away holder will not get it back on resume.
            if let Some(prev) = st.authority.as_deref().and_then(|a| st.find(a)) {
                st.members[prev].held_authority = false;
            }
            st.set_authority(Some(player.clone()));
            Ok(Outcome::Authority)
        }
        Op::Release { player, session } => {
            st.find_live(player, session).ok_or_else(not_in_room)?;
            if st.authority.as_deref() != Some(player) {
                return Err(err(
                    ErrorCode::NotAuthority,
                    "this member does not hold authority",
                ));
            }
            st.set_authority(st.successor(Some(player)));
            Ok(Outcome::Authority)
        }
        Op::Away {
            player,
            session,
            now,
        } => {
            if let Some(i) = st.find_live(player, session) {
                turn_away(st, i, *now, rules);
            }
            Ok(Outcome::Away)
        }
        Op::NodeGone { node, now } => {
            let mut n = 0;
            // Each step turns one member away (or removes it): bounded by the member count.
            for _ in 0..st.members.len() {
                let Some(i) = st
                    .members
                    .iter()
                    .position(|m| m.session.as_deref().is_some_and(|s| started_by(s, node)))
                else {
                    break;
                };
                turn_away(st, i, *now, rules);
                n += 1;
            }
            Ok(Outcome::NodeGone(n))
        }
        Op::Resume {
            player,
            who,
            presented,
            next,
            last,
            epoch,
            now,
        } => {
            // A position of another epoch, or one ahead of the stream (only a rollback that
            // went unnoticed does that), is not comparable: the client's messages after the
            // seq the current epoch took over at are not this stream's.
            let other_epoch = epoch.as_deref().is_some_and(|e| e != st.epoch);
            let foreign = other_epoch || *last > st.seq;
            let pos = foreign.then(|| (*last).min(st.base));
            match resume(st, player, who, presented, next, *now, *last, rules) {
                Ok(Outcome::Resumed {
                    members,
                    count,
                    authority,
                    replay_to,
                    state,
                    ..
                }) => Ok(Outcome::Resumed {
                    members,
                    count,
                    authority,
                    replay_to,
                    state,
                    after: pos.unwrap_or(*last),
                    foreign: pos.map(|p| (p + 1, *last)),
                }),
                // The membership or its token may simply be older than the client's: the
                // room came back from older data. The client joins again.
                Err(e) if other_epoch && e.code == ErrorCode::ReconnectionTokenInvalid => Err(err(
                    ErrorCode::ReconnectionFailed,
                    "the room's stream was rolled back and no longer holds this membership",
                )),
                other => other,
            }
        }
        Op::Evict { player } => {
            if let Some(i) = st.find(player).filter(|&i| !st.members[i].online()) {
                remove(st, i);
            }
            Ok(Outcome::Left)
        }
        Op::Expire { now } => {
            let mut n = 0;
            while let Some(i) = st
                .members
                .iter()
                .position(|m| m.away_until.is_some_and(|u| *now >= u))
            {
                remove(st, i);
                n += 1;
            }
            Ok(Outcome::Expired(n))
        }
    }
}

/// Whether session id `session` belongs to node start `start` (see [`Op::NodeGone`]).
pub fn started_by(session: &str, start: &str) -> bool {
    session.rsplit_once('-').is_some_and(|(p, _)| p == start)
}

/// The node start of session id `session` (see [`Op::NodeGone`]).
pub fn start_of(session: &str) -> &str {
    session.rsplit_once('-').map_or(session, |(p, _)| p)
}

/// Member `i` (connected) lost its session: it turns away until its window closes, or leaves
/// when reconnection is off. Authority is kept for its return or passed on, per
/// `reconnection.restore_authority`.
fn turn_away(st: &mut RoomState, i: usize, now: u64, rules: &Rules) {
    if !rules.reconnection {
        remove(st, i);
        return;
    }
    let player = st.members[i].player.clone();
    let held = st.authority.as_deref() == Some(&*player);
    let window = rules.options(&st.name).window_ms;
    let m = &mut st.members[i];
    m.session = None;
    m.node = None;
    m.away_until = Some(now.saturating_add(window));
    m.held_authority = held;
    st.note_presence(i, PresenceStatus::Away);
    if held && !rules.restore_authority {
        st.set_authority(st.successor(Some(&player)));
    }
}

/// Replaces the room's state and emits `state_set`.
fn set_state(
    st: &mut RoomState,
    member: Option<&(String, String)>,
    state: &Value,
    rules: &Rules,
) -> Result<Outcome, RoomError> {
    if let Some((player, session)) = member {
        st.find_live(player, session).ok_or_else(not_in_room)?;
        if st.authority.as_deref() != Some(player.as_str()) {
            return Err(err(
                ErrorCode::NotAuthority,
                "only the member holding authority may set the room's state",
            ));
        }
    }
    let max = rules.options(&st.name).state_bytes;
    if max == 0 {
        return Err(err(
            ErrorCode::Forbidden,
            "room state is disabled for this room",
        ));
    }
    let text = serde_json::to_string(state)
        .map_err(|_| err(ErrorCode::InvalidFrame, "the state is not serialisable"))?;
    if text.len() > max {
        return Err(err(
            ErrorCode::InvalidFrame,
            "the state is larger than the room's state_bytes",
        ));
    }
    let raw = RawValue::from_string(text)
        .map_err(|_| err(ErrorCode::InvalidFrame, "the state is not serialisable"))?;
    let state = state.clone();
    let seq = st.emit(move |room, seq, epoch| {
        ServerFrame::StateSet(StateSet {
            room,
            seq,
            epoch,
            state,
        })
    });
    st.state = Some(raw);
    st.state_seq = seq;
    Ok(Outcome::StateSet { seq })
}

/// The original answer to a publish whose `id` is still in `key`'s dedupe window.
fn seen(st: &RoomState, key: &str, id: &Option<String>) -> Option<Outcome> {
    let seq = st.dedupe.get(key)?.lookup(id.as_deref()?)?;
    Some(Outcome::Published {
        seq,
        duplicate: true,
    })
}

/// Emits an `event` from `(from, user_id)` and remembers its id in `key`'s dedupe window.
fn emit_event(
    st: &mut RoomState,
    key: &str,
    (from, user_id): (String, String),
    (data, id, traceparent, ts): (&Value, &Option<String>, &Option<String>, u64),
    rules: &Rules,
) -> Outcome {
    let (data, event_id, traceparent) = (data.clone(), id.clone(), traceparent.clone());
    let seq = st.emit(move |room, seq, epoch| {
        ServerFrame::Event(Event {
            room,
            seq,
            epoch,
            ts,
            from,
            user_id,
            data,
            id: event_id,
            traceparent,
        })
    });
    if let Some(id) = id {
        st.dedupe
            .entry(key.to_owned())
            .or_default()
            .insert(id, seq, rules.dedupe_window);
        st.dedupe_dirty.push(key.to_owned());
    }
    Outcome::Published {
        seq,
        duplicate: false,
    }
}

/// The range of the stream a backend must read for `op`, before appending what it emitted:
/// for a resume, the messages the member missed.
pub fn replay_range(op: &Op, outcome: &Outcome) -> Option<(u64, u64)> {
    match (op, outcome) {
        (
            Op::Resume { .. },
            Outcome::Resumed {
                replay_to, after, ..
            },
        ) if after < replay_to => Some((after + 1, *replay_to)),
        // A join into a room with a state: the messages after the state.
        (Op::Join { .. }, Outcome::Joined { state: Some(s), .. }) if s.seq < s.upto => {
            Some((s.seq + 1, s.upto))
        }
        _ => None,
    }
}

/// Whether `op` creates the room when it does not exist (only a join does).
pub fn creates(op: &Op) -> bool {
    matches!(op, Op::Join { .. })
}

/// The outcome of `op` on a room that does not exist (see [`creates`]).
pub fn on_missing(op: &Op) -> Result<Outcome, RoomError> {
    match op {
        Op::Join { .. } => Err(err(ErrorCode::Internal, "the room was not created")),
        // Already gone: a retried leave converges.
        Op::Leave { .. } | Op::Evict { .. } => Ok(Outcome::Left),
        Op::Away { .. } => Ok(Outcome::Away),
        Op::Expire { .. } => Ok(Outcome::Expired(0)),
        Op::NodeGone { .. } => Ok(Outcome::NodeGone(0)),
        Op::Publish { .. } | Op::Claim { .. } | Op::Release { .. } => Err(not_in_room()),
        Op::SetState {
            member: Some(_), ..
        } => Err(not_in_room()),
        // Like a backend publish: nobody is in the room, nothing is kept.
        Op::SetState { member: None, .. } => Ok(Outcome::StateSet { seq: 0 }),
        // A room nobody is in holds no stream: nothing to deliver or to read (seq 0).
        Op::ServerPublish { .. } => Ok(Outcome::Published {
            seq: 0,
            duplicate: false,
        }),
        Op::Inspect => Ok(Outcome::Info {
            members: Vec::new(),
            authority: None,
        }),
        Op::Resume { .. } => Err(err(
            ErrorCode::ReconnectionFailed,
            "the room no longer exists",
        )),
    }
}
