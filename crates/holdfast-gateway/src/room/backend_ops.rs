//! What the application's backend (the server API) and the node's own timers ask of rooms:
//! backend publishes and states, reads (a room, its history, the list of rooms), and the
//! sweeps that end expired or orphaned memberships. Same rules, same backends as the sessions'
//! operations in [`super::service`].

use serde_json::Value;

use super::rules::{Op, Outcome};
use super::service::{room_error, unexpected, RoomInfo, RoomService};
use super::RoomError;
use crate::auth::unix_now_ms;

impl RoomService {
    /// Replaces the room's state from the application's backend. Returns the `state_set`'s
    /// `(seq, epoch)`, or `None` when nobody is in the room (nothing is kept).
    pub async fn server_set_state(
        &self,
        room: &str,
        state: Value,
    ) -> Result<Option<(u64, String)>, RoomError> {
        let op = Op::SetState {
            member: None,
            state,
        };
        let a = self.backend.apply(room, &op).await.map_err(room_error)?;
        match a.outcome {
            Outcome::StateSet { seq: 0 } => Ok(None),
            Outcome::StateSet { seq } => Ok(Some((seq, a.epoch))),
            _ => Err(unexpected()),
        }
    }

    /// Publishes `data` from the application's backend: an `event` with `from: "server"`, in
    /// the room's seq order, deduplicated by `id` like a member's publish. Returns the event's
    /// `(seq, epoch)`, or `None` when nobody is in the room (nothing is delivered or kept).
    pub async fn server_publish(
        &self,
        room: &str,
        data: Value,
        id: Option<String>,
        traceparent: Option<String>,
    ) -> Result<Option<(u64, String)>, RoomError> {
        let op = Op::ServerPublish {
            data,
            id,
            traceparent,
            ts: unix_now_ms(),
        };
        let a = self.backend.apply(room, &op).await.map_err(room_error)?;
        match a.outcome {
            Outcome::Published { seq: 0, .. } => Ok(None),
            Outcome::Published { seq, duplicate } => {
                if duplicate {
                    self.metrics.dedupe_hits.inc();
                }
                Ok(Some((seq, a.epoch)))
            }
            _ => Err(unexpected()),
        }
    }

    /// The room as it is now, or `None` when nobody is in it.
    pub async fn info(&self, room: &str) -> Result<Option<RoomInfo>, RoomError> {
        let a = self
            .backend
            .apply(room, &Op::Inspect)
            .await
            .map_err(room_error)?;
        match a.outcome {
            Outcome::Info { .. } if a.epoch.is_empty() => Ok(None),
            Outcome::Info { members, authority } => Ok(Some(RoomInfo {
                members,
                authority,
                seq: a.seq,
                epoch: a.epoch,
            })),
            _ => Err(unexpected()),
        }
    }

    /// The room messages with `from <= seq <= to` the room still holds, in order, as sent.
    pub async fn history(
        &self,
        room: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<super::stream::Buffered>, RoomError> {
        self.backend
            .history(room, from, to)
            .await
            .map_err(room_error)
    }

    /// A page of room names starting with `prefix` (see [`RoomBackend::list`]).
    pub async fn list(
        &self,
        prefix: &str,
        cursor: &str,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), RoomError> {
        self.backend
            .list(prefix, cursor, limit)
            .await
            .map_err(room_error)
    }

    /// Removes away members whose window passed, in every room the backend reports.
    pub async fn sweep(&self, now: u64) {
        for room in self.backend.due(now).await {
            let _ = self.backend.apply(&room, &Op::Expire { now }).await;
        }
        // Entries older than the longest window are expired memberships: forget them.
        let longest = self
            .config
            .namespaces
            .iter()
            .filter_map(|n| n.reconnection_window_secs)
            .chain([self.config.reconnection.window_secs])
            .max()
            .unwrap_or(0)
            .saturating_mul(1000);
        let mut away = self.away.lock().unwrap_or_else(|e| e.into_inner());
        away.retain(|_, list| {
            list.retain(|(_, _, at)| now.saturating_sub(*at) <= longest);
            !list.is_empty()
        });
    }

    /// Node `node` is gone: its members in `room` turn away (see [`Op::NodeGone`]). Returns
    /// how many did. A cluster backend calls this for the rooms of a node whose liveness lease
    /// passed.
    pub async fn node_gone(&self, room: &str, node: &str, now: u64) -> Result<usize, RoomError> {
        let op = Op::NodeGone {
            node: node.to_owned(),
            now,
        };
        match self
            .backend
            .apply(room, &op)
            .await
            .map_err(room_error)?
            .outcome
        {
            Outcome::NodeGone(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }
}
