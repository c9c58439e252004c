//! Drain: the explicit shutdown of a node.
//!
//! Order matters and is the same as linkerd's: readiness turns false first (so load balancers
//! stop sending), new upgrades are refused, every session is told `server_shutdown` and closed
//! with 1001, then the node waits for its tracked session tasks up to a grace period and warns
//! when the grace expires.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shutdown state shared by the listener, the HTTP handlers and every session.
#[derive(Debug, Default)]
pub struct Drain {
    /// Set first, so `/readyz` fails before anything else changes.
    draining: AtomicBool,
    /// Cancelled when sessions must send `server_shutdown` and close with 1001.
    token: CancellationToken,
    /// Every session task and HTTP connection task, so the drain can wait for them. axum's own
    /// graceful shutdown does not wait for upgraded WebSocket tasks, hence our own tracker.
    tracker: TaskTracker,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every tracked task ended within the grace period.
    Complete,
    /// The grace period expired with tasks still running (they are abandoned).
    GraceExpired,
}

impl Drain {
    /// A node that is not draining.
    pub fn new() -> Drain {
        Drain::default()
    }

    /// Whether a drain has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The token sessions watch to start their shutdown.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The tracker every session and connection task is spawned on.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Turns readiness off and refuses new sessions, leaving open ones alone: the first step
    /// of a drain, so load balancers can take the node out before its sessions are told.
    pub fn mark_unready(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Runs the drain: readiness off, sessions told, bounded wait. `wake` is called once the
    /// token is cancelled, to wake the session tasks that do not wait on the token itself (a
    /// WebSocket session looks at the token whenever its task is woken; the registry wakes
    /// them, see `Registry::wake_all`).
    pub async fn run(&self, grace: Duration, wake: impl FnOnce()) -> DrainOutcome {
        self.draining.store(true, Ordering::Release);
        self.token.cancel();
        wake();
        self.tracker.close();
        match tokio::time::timeout(grace, self.tracker.wait()).await {
            Ok(()) => DrainOutcome::Complete,
            Err(_) => {
                tracing::warn!(
                    remaining = self.tracker.len(),
                    grace_secs = grace.as_secs_f64(),
                    "drain grace period expired with sessions still open"
                );
                DrainOutcome::GraceExpired
            }
        }
    }
}
