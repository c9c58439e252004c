//! The broker: how nodes of one cluster reach each other's sessions.
//!
//! Contract of every [`Broker`]:
//! - **Newest wins, everywhere.** [`Broker::claim_user`] tells every other node that `user` now
//!   has a session elsewhere; each closes its own session of that user with `replaced` (4000).
//! - **Directed messages go to the owner only.** [`Broker::route_direct`] hands a frame to the
//!   node holding the user's session, not to every node.
//! - **At most once.** A message for a node that is gone is dropped; the sender learns it from
//!   the return value where the broker can know it.
//!
//! [`MemoryBroker`] is the embedded default: it connects the nodes of one process (one node in
//! production, several in tests). Room streams stay node-local with it.

use std::sync::{Arc, Mutex, Weak};

use axum::extract::ws::Utf8Bytes;
use holdfast_protocol::CloseCode;

/// What a broker needs from a node to deliver to it.
pub trait NodeSink: Send + Sync {
    /// The node's id.
    fn node_id(&self) -> &str;
    /// Closes this node's session of `user`, if any, with `code`.
    fn close_user(&self, user: &str, code: CloseCode);
    /// Queues a directed frame to this node's session of `user`; false when there is none.
    fn deliver_direct(&self, user: &str, text: Utf8Bytes) -> bool;
}

/// The cross-node seam of a gateway.
pub trait Broker: Send + Sync {
    /// Registers a node so it can be reached. The broker keeps a weak reference only.
    fn attach(&self, node: Weak<dyn NodeSink>);
    /// `user` now has a session on node `from`: every other node closes its session of `user`.
    fn claim_user(&self, from: &str, user: &str);
    /// Delivers a directed frame to the node (other than `from`) that holds `user`'s session.
    /// Returns whether some node took it.
    fn route_direct(&self, from: &str, user: &str, text: Utf8Bytes) -> bool;
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
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.retain(|n| n.strong_count() > 0);
        nodes
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|n| n.node_id() != from)
            .collect()
    }
}

impl Broker for MemoryBroker {
    fn attach(&self, node: Weak<dyn NodeSink>) {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(node);
    }

    fn claim_user(&self, from: &str, user: &str) {
        for node in self.others(from) {
            node.close_user(user, CloseCode::Replaced);
        }
    }

    fn route_direct(&self, from: &str, user: &str, text: Utf8Bytes) -> bool {
        self.others(from)
            .into_iter()
            .any(|node| node.deliver_direct(user, text.clone()))
    }
}
