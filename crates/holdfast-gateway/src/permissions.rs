//! Who may do what: every permission decision of the gateway, in one place.
//!
//! The session core calls these for `join`, `reconnect`, `publish` and `send`, and the
//! transports call [`check_connect`] once per new session, so WebSocket, SSE and long-polling
//! enforce the same rules. A refusal is answered with the `forbidden` error code and the
//! session continues.
//!
//! - Joining (and resuming) a room follows the room's [`JoinPolicy`] ([`join_policy`]):
//!   `open` admits every authenticated user; `token` admits when the connection token's
//!   `rooms` claim lists the room (exactly, or by a prefix pattern ending in `*`) or when the
//!   `join` carries a join token (`sub` = the session's user, `room` = exactly this room)
//!   signed with any verification key; `hook` asks `hooks.join_url` ([`crate::hooks`]).
//! - Direct messages follow the token's `send` claim (`true`, `false`, or a list of user ids
//!   and prefix patterns). Without the claim, sending is allowed only when the default join
//!   policy is `open`. The answer never depends on whether the target is online.

use crate::auth::{Claims, SendClaim};
use crate::config::{Config, JoinMode};
use crate::hooks::HookOutcome;
use crate::node::Node;

/// How joins of one room are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinPolicy {
    /// Every authenticated user may join.
    Open,
    /// The `rooms` claim or a join token must allow it.
    Token,
    /// The application's join hook decides.
    Hook,
}

impl From<JoinMode> for JoinPolicy {
    fn from(m: JoinMode) -> JoinPolicy {
        match m {
            JoinMode::Open => JoinPolicy::Open,
            JoinMode::Token => JoinPolicy::Token,
            JoinMode::Hook => JoinPolicy::Hook,
        }
    }
}

/// The default rooms' policy: `rooms.join`, or when unset `token` as soon as a verification
/// key is configured (`open` without one).
fn default_policy(config: &Config) -> JoinPolicy {
    match config.rooms.join {
        Some(mode) => mode.into(),
        None if config.auth.has_keys() => JoinPolicy::Token,
        None => JoinPolicy::Open,
    }
}

/// The join policy of `room`: its namespace's `join` (longest matching prefix), or the
/// default `[rooms]` one.
pub fn join_policy(config: &Config, room: &str) -> JoinPolicy {
    match config.namespace_of(room).and_then(|n| n.join) {
        Some(mode) => mode.into(),
        None => default_policy(config),
    }
}

/// Whether `name` matches `pattern`: equal, or `pattern` ends in `*` and `name` starts with
/// what precedes it (`*` alone matches everything).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Whether the token's `rooms` claim lets its holder join `room`.
pub fn claims_allow_room(claims: &Claims, room: &str) -> bool {
    claims
        .rooms
        .as_deref()
        .is_some_and(|list| list.iter().any(|p| pattern_matches(p, room)))
}

/// Whether a session with `claims` may send a direct message to `to`.
pub fn may_send(config: &Config, claims: &Claims, to: &str) -> bool {
    match &claims.send {
        Some(SendClaim::All(allowed)) => *allowed,
        Some(SendClaim::Users(list)) => list.iter().any(|p| pattern_matches(p, to)),
        None => default_policy(config) == JoinPolicy::Open,
    }
}

/// Whether a member may publish in `room`. Every member may for now; per-room publish rules
/// plug in here.
pub fn may_publish(config: &Config, claims: &Claims, room: &str) -> bool {
    let _ = (config, claims, room);
    true
}

/// A refusal; the message goes to the client with `forbidden`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden(pub &'static str);

/// Decides whether the session (`claims`, `session_id`) may join or resume `room`, with the
/// join token it presented, if any.
pub(crate) async fn check_join(
    node: &Node,
    claims: &Claims,
    session_id: &str,
    room: &str,
    join_token: Option<&str>,
) -> Result<(), Forbidden> {
    let inner = &node.inner;
    match join_policy(&inner.config, room) {
        JoinPolicy::Open => Ok(()),
        JoinPolicy::Token => {
            if claims_allow_room(claims, room) {
                return Ok(());
            }
            let Some(token) = join_token else {
                return Err(Forbidden("the token does not allow this room"));
            };
            match inner.verifier.verify(token).await {
                Ok(t) if t.sub == claims.sub && t.room.as_deref() == Some(room) => Ok(()),
                Ok(_) => Err(Forbidden("the join token is for another user or room")),
                Err(_) => Err(Forbidden("the join token is invalid or expired")),
            }
        }
        JoinPolicy::Hook => {
            match inner
                .hooks
                .join(&claims.sub, room, session_id, &inner.id)
                .await
            {
                // The hook's `data` is accepted but not used yet.
                HookOutcome::Allow(_) => Ok(()),
                HookOutcome::Deny(_) => Err(Forbidden("the application refused the join")),
            }
        }
    }
}

/// Asks the connect hook, when one is configured, whether a verified token's user may open a
/// session.
pub(crate) async fn check_connect(node: &Node, claims: &Claims) -> Result<(), Forbidden> {
    let inner = &node.inner;
    match inner.hooks.connect(&claims.sub, &inner.id).await {
        HookOutcome::Allow(_) => Ok(()),
        HookOutcome::Deny(_) => Err(Forbidden("the application refused the connection")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_claims() {
        assert!(pattern_matches("lobby", "lobby"));
        assert!(!pattern_matches("lobby", "lobby2"));
        assert!(pattern_matches("game-*", "game-42"));
        assert!(pattern_matches("game-*", "game-"));
        assert!(!pattern_matches("game-*", "gam"));
        assert!(pattern_matches("*", "anything"));
        let c = Claims {
            sub: "u".into(),
            rooms: Some(vec!["lobby".into(), "team-7/*".into()]),
            ..Claims::default()
        };
        assert!(claims_allow_room(&c, "team-7/chat"));
        assert!(!claims_allow_room(&c, "team-8/chat"));
        assert!(!claims_allow_room(&Claims::default(), "lobby"));
    }

    #[test]
    fn default_policy_follows_the_keys() {
        let mut c = Config::default();
        assert_eq!(join_policy(&c, "r"), JoinPolicy::Open);
        c.auth.hmac_secret = "s".into();
        assert_eq!(join_policy(&c, "r"), JoinPolicy::Token);
        c.rooms.join = Some(JoinMode::Open);
        assert_eq!(join_policy(&c, "r"), JoinPolicy::Open);
        c.rooms.join = Some(JoinMode::Hook);
        assert_eq!(join_policy(&c, "r"), JoinPolicy::Hook);
    }

    #[test]
    fn send_follows_the_claim_then_the_default_policy() {
        let mut c = Config::default();
        c.auth.hmac_secret = "s".into();
        let none = Claims::default();
        assert!(!may_send(&c, &none, "bob"));
        let list = Claims {
            send: Some(SendClaim::Users(vec!["bob".into(), "support-*".into()])),
            ..Claims::default()
        };
        assert!(may_send(&c, &list, "bob"));
        assert!(may_send(&c, &list, "support-3"));
        assert!(!may_send(&c, &list, "carol"));
        let all = Claims {
            send: Some(SendClaim::All(true)),
            ..Claims::default()
        };
        assert!(may_send(&c, &all, "carol"));
        c.rooms.join = Some(JoinMode::Open);
        assert!(may_send(&c, &none, "bob"));
    }
}
