//! Where room state lives: in this process ([`Rooms`], the default), or in an external store
//! shared by a cluster ([`RoomStore`], implemented by `holdfast-redis`).
//!
//! Contract of every store, whatever its backing:
//! - Each room has one stream: `seq` is allocated, the message appended to the room's bounded
//!   history and handed to subscribers atomically, so one room has one gapless sequence across
//!   the whole cluster.
//! - A member's reply (`joined`, `reconnected`, the `ack` of a publish) is queued to its session
//!   exactly at its position in the stream: after every earlier room message, before every later
//!   one.
//! - Failures are reported as a [`RoomError`] with a stable code (`broker_unavailable` when the
//!   store cannot be reached); nothing is delivered silently out of order or with a hole.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::registry::SessionHandle;
use crate::room::{ResumeRequest, Room, RoomError, Rooms};

/// A boxed future, as returned by [`RoomStore`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A session's membership of one room.
#[derive(Debug, Clone)]
pub struct Membership {
    /// The room's name.
    pub room: Arc<str>,
    /// The member's player id.
    pub player: Arc<str>,
    /// The in-process room, for the memory store (saves a lookup per publish).
    pub local: Option<Arc<Room>>,
}

/// What `reconnect` asked for, owned.
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
    /// The frame id to echo.
    pub id: Option<String>,
}

/// What a store gets from the node it serves, once, before the node accepts sessions.
#[derive(Debug, Clone)]
pub struct StoreContext {
    /// The node's id.
    pub node_id: Arc<str>,
    /// The node's configuration.
    pub config: Arc<crate::Config>,
    /// The node's metrics; a store registers its own metrics there too.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Cancelled when the node drains: background tasks stop.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Room state kept outside the process, shared by the nodes of a cluster.
pub trait RoomStore: Send + Sync {
    /// Binds the store to its node (config, metrics, shutdown) and starts its background work.
    fn attach(&self, ctx: StoreContext);
    /// Joins `session` to `room`; queues `joined` to it at its position.
    fn join(
        &self,
        room: String,
        session: Arc<SessionHandle>,
        id: Option<String>,
    ) -> BoxFuture<'_, Result<Membership, RoomError>>;
    /// Leaves for good; queues `left`.
    fn leave(
        &self,
        m: Membership,
        session: Arc<SessionHandle>,
        id: Option<String>,
    ) -> BoxFuture<'_, Result<(), RoomError>>;
    /// Publishes to every member; queues `ack` (when `id` is set) after the sender's own copy.
    fn publish(
        &self,
        m: Membership,
        session: Arc<SessionHandle>,
        data: Value,
        id: Option<String>,
        traceparent: Option<String>,
    ) -> BoxFuture<'_, Result<(), RoomError>>;
    /// Claims authority.
    fn claim_authority(
        &self,
        m: Membership,
        session: Arc<SessionHandle>,
        id: Option<String>,
    ) -> BoxFuture<'_, Result<(), RoomError>>;
    /// Releases authority.
    fn release_authority(
        &self,
        m: Membership,
        session: Arc<SessionHandle>,
        id: Option<String>,
    ) -> BoxFuture<'_, Result<(), RoomError>>;
    /// The session ended: the member turns away (or leaves when reconnection is off).
    fn disconnect(&self, m: Membership, session: Arc<SessionHandle>) -> BoxFuture<'_, ()>;
    /// Resumes a membership; queues `reconnected` at its position.
    fn reconnect(
        &self,
        req: Resume,
        session: Arc<SessionHandle>,
    ) -> BoxFuture<'_, Result<Membership, RoomError>>;
}

/// The room state of a node.
pub enum Store {
    /// In this process.
    Memory(Rooms),
    /// Shared by a cluster.
    External(Arc<dyn RoomStore>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Memory(r) => f.debug_tuple("Memory").field(r).finish(),
            Store::External(_) => f.write_str("External"),
        }
    }
}

fn local(m: &Membership) -> Result<&Arc<Room>, RoomError> {
    m.local.as_ref().ok_or(RoomError {
        code: holdfast_protocol::ErrorCode::Internal,
        message: "membership of another store",
    })
}

impl Store {
    /// See [`RoomStore::join`].
    pub async fn join(
        &self,
        room: &str,
        session: &Arc<SessionHandle>,
        id: Option<String>,
    ) -> Result<Membership, RoomError> {
        match self {
            Store::Memory(rooms) => rooms.join(room, session, id).map(|(r, player)| Membership {
                room: r.name.clone(),
                player,
                local: Some(r),
            }),
            Store::External(s) => s.join(room.to_owned(), session.clone(), id).await,
        }
    }

    /// See [`RoomStore::leave`].
    pub async fn leave(
        &self,
        m: &Membership,
        session: &Arc<SessionHandle>,
        id: Option<String>,
    ) -> Result<(), RoomError> {
        match self {
            Store::Memory(rooms) => rooms.leave(local(m)?, &m.player, session, id),
            Store::External(s) => s.leave(m.clone(), session.clone(), id).await,
        }
    }

    /// See [`RoomStore::publish`].
    pub async fn publish(
        &self,
        m: &Membership,
        session: &Arc<SessionHandle>,
        data: Value,
        id: Option<String>,
        traceparent: Option<String>,
    ) -> Result<(), RoomError> {
        match self {
            Store::Memory(rooms) => {
                rooms.publish(local(m)?, &m.player, session, data, id, traceparent)
            }
            Store::External(s) => {
                s.publish(m.clone(), session.clone(), data, id, traceparent)
                    .await
            }
        }
    }

    /// See [`RoomStore::claim_authority`].
    pub async fn claim_authority(
        &self,
        m: &Membership,
        session: &Arc<SessionHandle>,
        id: Option<String>,
    ) -> Result<(), RoomError> {
        match self {
            Store::Memory(rooms) => rooms.claim_authority(local(m)?, &m.player, session, id),
            Store::External(s) => s.claim_authority(m.clone(), session.clone(), id).await,
        }
    }

    /// See [`RoomStore::release_authority`].
    pub async fn release_authority(
        &self,
        m: &Membership,
        session: &Arc<SessionHandle>,
        id: Option<String>,
    ) -> Result<(), RoomError> {
        match self {
            Store::Memory(rooms) => rooms.release_authority(local(m)?, &m.player, session, id),
            Store::External(s) => s.release_authority(m.clone(), session.clone(), id).await,
        }
    }

    /// See [`RoomStore::disconnect`].
    pub async fn disconnect(&self, m: &Membership, session: &Arc<SessionHandle>) {
        match self {
            Store::Memory(rooms) => {
                if let Some(r) = &m.local {
                    rooms.disconnect(r, &m.player, session);
                }
            }
            Store::External(s) => s.disconnect(m.clone(), session.clone()).await,
        }
    }

    /// See [`RoomStore::reconnect`].
    pub async fn reconnect(
        &self,
        req: Resume,
        session: &Arc<SessionHandle>,
    ) -> Result<Membership, RoomError> {
        match self {
            Store::Memory(rooms) => {
                let player: Arc<str> = req.player_id.as_str().into();
                let r = rooms.reconnect(
                    ResumeRequest {
                        room: &req.room,
                        player_id: &req.player_id,
                        token: &req.token,
                        last_sequence: req.last_sequence,
                        id: req.id.clone(),
                    },
                    session,
                )?;
                Ok(Membership {
                    room: r.name.clone(),
                    player,
                    local: Some(r),
                })
            }
            Store::External(s) => s.reconnect(req, session.clone()).await,
        }
    }
}
