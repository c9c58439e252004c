//! The room store contract: what a backend provides so that the room rules
//! ([`crate::room::rules`], written once) can run on it. Two backends implement it: this
//! process ([`MemoryRooms`], the default) and a cluster's shared store (`holdfast-redis`).
//!
//! A backend provides only:
//! - **atomic application** of one room operation: read the room's state, run the rules on it,
//!   and, if they accepted, store the new state and append the emitted messages to the room's
//!   stream, all as one step with respect to every other operation on that room on any node
//!   (a compare-and-set that retries on conflict is fine: the rules are deterministic);
//! - **ordering**: one gapless `seq` per room (the state carries it), and delivery of every
//!   appended message to each node that has members in the room, by handing it to the node's
//!   [`Mirror`] (in any order; the mirror orders it and asks for missing ranges);
//! - a **bounded history** of recent messages, read back for replay and to fill ranges a node
//!   missed;
//! - the list of rooms with away members whose reconnection window passed.
//!
//! What an error means is part of the contract ([`StoreError`]): `Refused` and `Unavailable`
//! mean nothing was applied; `Unknown` means the operation may or may not have been applied.
//! Operations are safe to retry after `Unknown`: `join`, `leave`, `reconnect` and the away
//! transition converge on the same state, and `publish` with an `id` is deduplicated.

mod memory;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use memory::MemoryRooms;

/// Re-exported for the sessions that hold memberships.
pub use crate::room::{Membership, Resume};

use crate::room::fanout::Mirror;
use crate::room::rules::{Op, Outcome};
use crate::room::stream::Buffered;
use crate::room::RoomError;

/// A boxed future, as returned by [`RoomBackend`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a store gets from the node it serves, once, before the node accepts sessions.
#[derive(Debug, Clone)]
pub struct StoreContext {
    /// The node's id.
    pub node_id: Arc<str>,
    /// This start of the node: the prefix of its session ids (`<node_id>-<start>`, up to
    /// their last `-`), and the name of its liveness lease in a cluster.
    pub lease: Arc<str>,
    /// The node's configuration.
    pub config: Arc<crate::Config>,
    /// The node's metrics; a store registers its own metrics there too.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Cancelled when the node drains: background tasks stop.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The node's local delivery: the backend hands every message of a room's stream to it.
    pub mirror: Arc<Mirror>,
}

/// The result of an applied operation.
#[derive(Debug, Clone)]
pub struct Applied {
    /// What the rules decided.
    pub outcome: Outcome,
    /// The room's `seq` after the operation.
    pub seq: u64,
    /// The room's epoch.
    pub epoch: String,
    /// How many messages the operation appended to the stream.
    pub emitted: usize,
    /// The room's presence version after the operation.
    pub presence: u64,
    /// The messages of [`rules::replay_range`](crate::room::rules::replay_range) still held
    /// when the operation was applied (read before its own messages were appended).
    pub replay: Vec<Buffered>,
}

/// A page of room names and the cursor of the next page (`None` on the last).
pub type RoomPage = (Vec<String>, Option<String>);

/// Why an operation did not (or may not have) take effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The rules refused it: nothing was applied.
    Refused(RoomError),
    /// The store could not take it: nothing was applied.
    Unavailable,
    /// The store did not answer in time: it may or may not have been applied.
    Unknown,
}

impl From<RoomError> for StoreError {
    fn from(e: RoomError) -> StoreError {
        StoreError::Refused(e)
    }
}

/// A place where rooms live. See the module documentation for the contract.
pub trait RoomBackend: Send + Sync {
    /// Binds the backend to its node and starts its background work.
    fn attach(&self, ctx: StoreContext);
    /// Makes sure this node receives `room`'s stream from now on.
    fn subscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// This node no longer needs `room`'s stream.
    fn unsubscribe(&self, room: &str);
    /// Applies `op` to `room` atomically (see the module documentation).
    fn apply<'a>(&'a self, room: &'a str, op: &'a Op)
        -> BoxFuture<'a, Result<Applied, StoreError>>;
    /// The messages of `room`'s stream with `from <= seq <= to` still held, in order.
    fn history<'a>(
        &'a self,
        room: &'a str,
        from: u64,
        to: u64,
    ) -> BoxFuture<'a, Result<Vec<Buffered>, StoreError>>;
    /// Rooms with an away member whose window ended by `now` (Unix ms); a bounded batch.
    fn due(&self, now: u64) -> BoxFuture<'_, Vec<String>>;
    /// Up to `limit` room names starting with `prefix`, in a stable order, after `cursor` (an
    /// opaque value returned by the previous page; empty for the first). Returns the names and
    /// the next cursor (`None` on the last page).
    fn list<'a>(
        &'a self,
        prefix: &'a str,
        cursor: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<RoomPage, StoreError>>;
}
