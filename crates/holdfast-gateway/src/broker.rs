//! The broker: how nodes of one cluster reach each other's sessions.
//!
//! Contract of every [`Broker`]:
//! - **Newest wins, everywhere.** [`Broker::claim_user`] tells every other node that `user` now
//!   has a session elsewhere; each closes its own session of that user with `replaced` (4000).
//! - **Directed messages go to the owner only.** [`Broker::route_direct`] hands a frame to the
//!   node holding the user's session, not to every node.
//! - **At most once.** A message for a node that is gone is dropped; the sender learns it from
//!   the return value where the broker can know it.
//! - **The server API reaches every node.** [`Broker::disconnect_user`] closes a user's session
//!   on whichever node holds it, [`Broker::locate_user`] says where that is, and
//!   [`Broker::heartbeat`] / [`Broker::nodes`] give the cluster view. The defaults suit a broker
//!   that connects no other node.
//!
//! [`MemoryBroker`] is the embedded default: it connects the nodes of one process (one node in
//! production, several in tests). Room streams stay node-local with it.

use std::sync::{Arc, Mutex, Weak};

use axum::extract::ws::Utf8Bytes;
use holdfast_protocol::CloseCode;

use crate::store::BoxFuture;

/// One node as the cluster view (`GET /api/v1/nodes`) shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub id: String,
    /// Open sessions (every transport).
    pub sessions: u64,
    /// Rooms with at least one member on this node.
    pub rooms: u64,
    /// Whether the node is draining.
    pub draining: bool,
    /// When this status was taken, Unix milliseconds.
    pub updated_ms: u64,
}

/// What a broker needs from a node to deliver to it.
pub trait NodeSink: Send + Sync {
    /// The node's id.
    fn node_id(&self) -> &str;
    /// Closes this node's session of `user` with `code`: any session of the user, or only the
    /// one with id `session` when given. Returns whether a session was asked to close.
    fn close_user(&self, user: &str, session: Option<&str>, code: CloseCode) -> bool;
    /// The id of this node's session of `user`, if it has one.
    fn session_of(&self, user: &str) -> Option<std::sync::Arc<str>>;
    /// This node's status for the cluster view.
    fn status(&self) -> NodeStatus;
    /// Queues a directed frame to this node's session of `user`; false when there is none.
    fn deliver_direct(&self, user: &str, text: Utf8Bytes) -> bool;
    /// `(user, session id)` of every session registered on this node, so a broker that may have
    /// missed kicks (after an outage) can check who still owns each user.
    fn sessions(&self) -> Vec<(std::sync::Arc<str>, std::sync::Arc<str>)>;
}

/// The cross-node seam of a gateway.
pub trait Broker: Send + Sync {
    /// Registers a node so it can be reached. The broker keeps a weak reference only.
    fn attach(&self, node: Weak<dyn NodeSink>);
    /// `user` now has session `session` on node `from`: every other node closes its session of
    /// `user` with `replaced`. Resolves once the claim is recorded; the newest claim wins.
    fn claim_user<'a>(
        &'a self,
        from: &'a str,
        user: &'a str,
        session: &'a str,
    ) -> BoxFuture<'a, ()>;
    /// Session `session` of `user` on node `from` ended; forget its ownership if it still holds it.
    fn release_user(&self, from: &str, user: &str, session: &str) {
        let _ = (from, user, session);
    }
    /// Delivers a directed frame to the node (other than `from`) that holds `user`'s session.
    /// Resolves to whether some node took it.
    fn route_direct<'a>(
        &'a self,
        from: &'a str,
        user: &'a str,
        text: Utf8Bytes,
    ) -> BoxFuture<'a, bool>;
    /// Whether the broker can currently reach the rest of the cluster (`/readyz` reports it).
    fn is_healthy(&self) -> bool {
        true
    }
    /// Closes `user`'s session held by a node other than `from` with
    /// [`CloseCode::DisconnectedByServer`]. Resolves to whether some node holds it (at most
    /// once: a node that vanished meanwhile closes nothing).
    fn disconnect_user<'a>(&'a self, from: &'a str, user: &'a str) -> BoxFuture<'a, bool> {
        let _ = (from, user);
        Box::pin(std::future::ready(false))
    }
    /// `(node, session)` of `user`'s session on another node, as far as the broker knows.
    fn locate_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Option<(String, String)>> {
        let _ = user;
        Box::pin(std::future::ready(None))
    }
    /// Records this node's status so other nodes list it; called every few seconds. An entry
    /// not refreshed for a while disappears from [`Broker::nodes`].
    fn heartbeat<'a>(&'a self, status: &'a NodeStatus) -> BoxFuture<'a, ()> {
        let _ = status;
        Box::pin(std::future::ready(()))
    }
    /// The node `id` stopped: remove it from the cluster view at once.
    fn forget_node<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()> {
        let _ = id;
        Box::pin(std::future::ready(()))
    }
    /// Every live node of the cluster, or `None` when the broker connects no other node (the
    /// caller then shows itself alone).
    fn nodes(&self) -> BoxFuture<'_, Option<Vec<NodeStatus>>> {
        Box::pin(std::future::ready(None))
    }
}

/// The in-process broker: nodes of one process reach each other by direct calls.
#[derive(Default)]
pub struct MemoryBroker {
    /// Attached nodes, weakly held so a dropped node is simply skipped (and pruned). A std
    /// mutex: held only to copy the list.
    nodes: Mutex<Vec<Weak<dyn NodeSink>>>,
}

impl MemoryBroker {
    /// A broker with no nodes.
    pub fn new() -> Arc<MemoryBroker> {
        Arc::new(MemoryBroker::default())
    }

    fn others(&self, from: &str) -> Vec<Arc<dyn NodeSink>> {
        self.all()
            .into_iter()
            .filter(|n| n.node_id() != from)
            .collect()
    }

    fn all(&self) -> Vec<Arc<dyn NodeSink>> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.retain(|n| n.strong_count() > 0);
        nodes.iter().filter_map(Weak::upgrade).collect()
    }
}

impl Broker for MemoryBroker {
    fn attach(&self, node: Weak<dyn NodeSink>) {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(node);
    }

    fn claim_user<'a>(
        &'a self,
        from: &'a str,
        user: &'a str,
        _session: &'a str,
    ) -> BoxFuture<'a, ()> {
        for node in self.others(from) {
            node.close_user(user, None, CloseCode::Replaced);
        }
        Box::pin(std::future::ready(()))
    }

    fn route_direct<'a>(
        &'a self,
        from: &'a str,
        user: &'a str,
        text: Utf8Bytes,
    ) -> BoxFuture<'a, bool> {
        let delivered = self
            .others(from)
            .into_iter()
            .any(|node| node.deliver_direct(user, text.clone()));
        Box::pin(std::future::ready(delivered))
    }

    fn disconnect_user<'a>(&'a self, from: &'a str, user: &'a str) -> BoxFuture<'a, bool> {
        let mut closed = false;
        for node in self.others(from) {
            closed |= node.close_user(user, None, CloseCode::DisconnectedByServer);
        }
        Box::pin(std::future::ready(closed))
    }

    fn locate_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Option<(String, String)>> {
        let found = self.all().into_iter().find_map(|node| {
            node.session_of(user)
                .map(|s| (node.node_id().to_owned(), s.to_string()))
        });
        Box::pin(std::future::ready(found))
    }

    fn nodes(&self) -> BoxFuture<'_, Option<Vec<NodeStatus>>> {
        let all = self.all().iter().map(|n| n.status()).collect();
        Box::pin(std::future::ready(Some(all)))
    }
}
