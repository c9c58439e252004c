//! `GET /api/v1/nodes`: the cluster view, and the heartbeat that feeds it.
//!
//! Every node records its [`NodeStatus`] through the broker every [`HEARTBEAT`]; with Redis
//! that is a hash every node reads, with the in-memory broker the attached nodes are asked
//! directly. A node that drains says so at once and leaves the view when it stops.

use std::time::Duration;

use axum::extract::State;
use axum::Json;

use crate::broker::{NodeSink, NodeStatus};
use crate::node::Node;

/// How often a node records its status.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// `GET /api/v1/nodes`: `{"nodes": [{id, sessions, rooms, draining, updated_ms}]}`.
pub async fn nodes(State(node): State<Node>) -> Json<serde_json::Value> {
    let inner = &node.inner;
    let mut all = inner.broker.nodes().await.unwrap_or_default();
    // This node answers for itself with its current numbers, listed or not.
    all.retain(|n| n.id != *inner.id);
    all.push(inner.status());
    all.sort_by(|a, b| a.id.cmp(&b.id));
    Json(serde_json::json!({ "nodes": all }))
}

/// Records the node's status every [`HEARTBEAT`], and once more as soon as the drain starts.
/// Runs until aborted; the gateway's shutdown then removes the node from the view.
pub async fn heartbeat_loop(node: Node) {
    let inner = node.inner.clone();
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut announced_drain = false;
    loop {
        let draining = inner.drain.token().clone();
        tokio::select! {
            _ = tick.tick() => {}
            _ = draining.cancelled(), if !announced_drain => announced_drain = true,
        }
        let status: NodeStatus = inner.status();
        inner.broker.heartbeat(&status).await;
    }
}
