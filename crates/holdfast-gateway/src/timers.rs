//! The node's session timers: one ordered queue of deadlines and one task that sleeps until the
//! earliest, instead of a timer in every session.
//!
//! An idle WebSocket session waits for its heartbeat (next ping or pong deadline) or its
//! token's expiry. A `tokio::time::Sleep` per session would keep 112 bytes in every session's
//! state; here a session keeps the millisecond of its earliest armed deadline and the node one
//! 16-byte entry per armed deadline. When a deadline comes, the session's handle is woken; the
//! session looks at the clock itself, so an entry that is no longer its deadline (a pong moved
//! it) only costs a wake-up.
//!
//! The task runs while deadlines are armed and ends when none is left (the next arm starts it
//! again), so a node without sessions keeps no task; it holds the queue weakly and ends with
//! the node.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::registry::SessionHandle;

/// Farthest ahead a deadline is armed, in milliseconds (see [`Timers::arm`]).
pub(crate) const MAX_AHEAD_MS: u64 = 60_000;

/// One armed deadline: the millisecond (since the queue's origin) and the session to wake.
struct Entry {
    at: u64,
    session: Arc<SessionHandle>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

#[derive(Default)]
struct Queue {
    /// Earliest first.
    heap: BinaryHeap<Reverse<Entry>>,
    /// Whether the task that fires the deadlines is running.
    running: bool,
}

/// The session deadlines of one node.
pub struct Timers {
    /// Deadlines are counted in milliseconds from here.
    origin: Instant,
    queue: Mutex<Queue>,
    /// Wakes the task when a deadline earlier than the one it sleeps for is armed (shared with
    /// the task, which holds the queue only weakly).
    earlier: Arc<Notify>,
}

impl Default for Timers {
    fn default() -> Self {
        Timers::new()
    }
}

impl Timers {
    /// An empty queue; its clock starts now.
    pub fn new() -> Timers {
        Timers {
            origin: Instant::now(),
            queue: Mutex::new(Queue::default()),
            earlier: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `at` in nanoseconds since the queue's origin (0 before it): 8 bytes where an `Instant` is
    /// 16, and exact, for what a session keeps in its state (its token's expiry, its
    /// heartbeat).
    pub(crate) fn nanos_at(&self, at: Instant) -> u64 {
        let ns = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// The current nanosecond (see [`Timers::nanos_at`]).
    pub(crate) fn nanos_now(&self) -> u64 {
        self.nanos_at(Instant::now())
    }

    /// The instant of nanosecond `at` (see [`Timers::nanos_at`]).
    pub(crate) fn instant_of_nanos(&self, at: u64) -> Instant {
        self.origin + Duration::from_nanos(at)
    }

    /// Nanosecond `at` in the queue's milliseconds, rounded up (a deadline never fires early).
    pub(crate) fn millis_of_nanos(at: u64) -> u64 {
        at.div_ceil(1_000_000)
    }

    /// `at` in the queue's milliseconds, rounded up.
    #[cfg(test)]
    fn millis_at(&self, at: Instant) -> u64 {
        Self::millis_of_nanos(self.nanos_at(at))
    }

    /// The current millisecond, rounded down: an entry at or before it has fired (or is
    /// being fired).
    pub(crate) fn millis_now(&self) -> u64 {
        let ms = Instant::now()
            .saturating_duration_since(self.origin)
            .as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// Wakes `session` at millisecond `at` (see [`Timers::millis_of_nanos`]), or after
    /// [`MAX_AHEAD_MS`] when `at` is farther: returns the millisecond armed. A session woken
    /// before its deadline arms the rest, so an entry never outlives its session by more than
    /// that, whatever the heartbeat and token lifetimes (the queue stays bounded by the
    /// sessions of the last minute). Must be called within the Tokio runtime: the task that
    /// fires deadlines is started here when it is not running.
    pub(crate) fn arm(self: &Arc<Self>, at: u64, session: &Arc<SessionHandle>) -> u64 {
        let at = at.min(self.millis_now().saturating_add(MAX_AHEAD_MS));
        let mut q = self.lock();
        let earlier = q.heap.peek().is_none_or(|Reverse(e)| at < e.at);
        q.heap.push(Reverse(Entry {
            at,
            session: session.clone(),
        }));
        if !q.running {
            q.running = true;
            drop(q);
            tokio::spawn(fire(Arc::downgrade(self)));
        } else if earlier {
            drop(q);
            self.earlier.notify_one();
        }
        at
    }

    /// Armed deadlines (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().heap.len()
    }

    /// Whether no deadline is armed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sleeps until the earliest deadline, wakes the sessions whose deadlines came, and so on
/// until none is armed.
async fn fire(timers: Weak<Timers>) {
    let mut due = Vec::new();
    let Some(earlier) = timers.upgrade().map(|t| t.earlier.clone()) else {
        return;
    };
    loop {
        let next = {
            let Some(t) = timers.upgrade() else { return };
            let mut q = t.lock();
            let Some(Reverse(first)) = q.heap.peek() else {
                q.running = false;
                return;
            };
            t.origin + Duration::from_millis(first.at)
        };
        // An earlier deadline armed since the lock was released left a permit: no wake is lost.
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = earlier.notified() => {}
        }
        let Some(t) = timers.upgrade() else { return };
        let now = t.millis_now();
        {
            let mut q = t.lock();
            while q.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
                if let Some(Reverse(e)) = q.heap.pop() {
                    due.push(e.session);
                }
            }
            // Memory follows the sessions down after a peak (a mass disconnect).
            let (len, cap) = (q.heap.len(), q.heap.capacity());
            if cap > 1024 && len < cap / 4 {
                q.heap.shrink_to(len * 2);
            }
        }
        for session in due.drain(..) {
            session.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::future::poll_fn;
    use std::task::Poll;

    fn handle(id: &str) -> Arc<SessionHandle> {
        SessionHandle::new(id.into(), "u".into(), 8, 1024, Arc::new(Metrics::new()))
    }

    /// Resolves once `h`'s task is woken (after registering).
    async fn woken(h: &SessionHandle) {
        let mut registered = false;
        poll_fn(|cx| {
            if registered {
                return Poll::Ready(());
            }
            registered = true;
            h.register(cx);
            Poll::Pending
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_wakes_its_session_at_its_millisecond_and_not_before() {
        let t = Arc::new(Timers::new());
        let (a, b) = (handle("a"), handle("b"));
        let start = Instant::now();
        t.arm(t.millis_at(start + Duration::from_millis(1_500)), &a);
        t.arm(t.millis_at(start + Duration::from_millis(500)), &b);
        woken(&b).await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        woken(&a).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1_500));
        assert!(t.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_armed_while_the_task_sleeps_is_not_late() {
        let t = Arc::new(Timers::new());
        let (a, b) = (handle("a"), handle("b"));
        let start = Instant::now();
        t.arm(t.millis_at(start + Duration::from_secs(60)), &a);
        tokio::time::sleep(Duration::from_millis(10)).await;
        t.arm(t.millis_at(start + Duration::from_millis(20)), &b);
        woken(&b).await;
        assert_eq!(start.elapsed(), Duration::from_millis(20));
        assert_eq!(t.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_ends_when_nothing_is_armed_and_starts_again() {
        let t = Arc::new(Timers::new());
        let a = handle("a");
        t.arm(t.millis_at(Instant::now() + Duration::from_millis(5)), &a);
        woken(&a).await;
        tokio::task::yield_now().await;
        assert!(!t.lock().running, "no deadline left: the task ended");
        let start = Instant::now();
        t.arm(t.millis_at(start + Duration::from_millis(7)), &a);
        woken(&a).await;
        assert_eq!(start.elapsed(), Duration::from_millis(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_far_deadline_is_armed_a_minute_ahead_at_most() {
        let t = Arc::new(Timers::new());
        let a = handle("a");
        let start = Instant::now();
        let armed = t.arm(t.millis_at(start + Duration::from_secs(3_600)), &a);
        assert_eq!(armed, t.millis_now() + MAX_AHEAD_MS);
        woken(&a).await;
        assert_eq!(start.elapsed(), Duration::from_millis(MAX_AHEAD_MS));
        assert!(t.is_empty(), "nothing of the session is held past a minute");
    }

    #[test]
    fn deadlines_round_up_to_the_millisecond() {
        let t = Timers::new();
        assert_eq!(t.millis_at(t.origin + Duration::from_millis(3)), 3);
        assert_eq!(t.millis_at(t.origin + Duration::from_micros(3_001)), 4);
        assert_eq!(t.millis_at(t.origin), 0);
    }
}
