//! The connection registry: user → live sessions, with single-socket enforcement, and the
//! [`SessionHandle`] through which everything else reaches a session.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hashbrown::HashTable;
use holdfast_protocol::{CloseCode, Encoding, ServerFrame};

use crate::config::SingleSocket;
use crate::metrics::Metrics;
use crate::room::Shared;

/// A serialised frame in a session's encoding: a text (JSON) or binary (MessagePack) message.
/// For room messages the same bytes are shared by every member using that encoding.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A JSON frame, written as a text message.
    Text(Utf8Bytes),
    /// A MessagePack frame, written as a binary message.
    Binary(Bytes),
}

impl Payload {
    /// Its size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Text(t) => t.len(),
            Payload::Binary(b) => b.len(),
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame as a JSON value, whichever its encoding (for tests and tools).
    pub fn to_value(&self) -> Option<serde_json::Value> {
        match self {
            Payload::Text(t) => serde_json::from_str(t.as_str()).ok(),
            Payload::Binary(b) => holdfast_protocol::msgpack::msgpack_to_value(b).ok(),
        }
    }

    /// The WebSocket message carrying it.
    pub fn into_message(self) -> Message {
        match self {
            Payload::Text(t) => Message::Text(t),
            Payload::Binary(b) => Message::Binary(b),
        }
    }
}

/// One frame waiting in a session's outbound queue.
#[derive(Debug)]
pub struct Outbound {
    /// The serialised frame.
    pub payload: Payload,
    /// When a room message was emitted, to measure fan-out lag at write time.
    pub emitted: Option<Instant>,
}

/// The frames waiting for a session's task.
#[derive(Debug, Default)]
struct Queue {
    /// Oldest first. A `VecDeque` that allocates only while frames wait and is released once
    /// drained, so an idle session holds no queue memory.
    items: VecDeque<Outbound>,
    /// Bytes of the queued frames.
    bytes: usize,
    /// Set when the session task has finished: nothing more is accepted.
    closed: bool,
}

/// The part of a session that other tasks may touch: its identity, its bounded outbound queue
/// and its close signal. The session task owns the socket; nobody else writes to it.
#[derive(Debug)]
pub struct SessionHandle {
    /// Unique per node.
    pub id: Arc<str>,
    /// The authenticated user.
    pub user: Arc<str>,
    /// The encoding negotiated by the connection (always JSON on the fallback transports).
    pub encoding: Encoding,
    /// Bounded outbound queue: fan-out pushes without waiting and never waits on a client. A
    /// std mutex held for one push or pop, never across an await.
    queue: Mutex<Queue>,
    /// The session task's waker, woken when a frame is queued, a close is asked for or the node
    /// drains. One task waits on a handle: its session's own (see [`SessionHandle::poll_next`]).
    waker: AtomicWaker,
    /// Message bound of the queue.
    max_messages: u32,
    /// Byte bound of the queue.
    max_queued_bytes: usize,
    /// The first close reason asked for (its code), 0 while none was. Set with the first close
    /// request: from then on nothing more is queued, so a session that lost a frame never
    /// delivers a later one (no silent hole before its close).
    close: AtomicU16,
    /// When the session's token expires, in the node timers' nanoseconds (see
    /// [`crate::timers::Timers::nanos_at`]): set by the session when it starts and on each
    /// refresh, and kept here rather than in the session, which lives inline in its task's
    /// state (kept small).
    expiry: AtomicU64,
    /// Node metrics, to count queue failures and buffer bytes where they happen.
    metrics: Arc<Metrics>,
}

impl SessionHandle {
    /// A handle with an empty queue bounded by `queue_messages` and `max_queued_bytes`, for a
    /// JSON session.
    pub fn new(
        id: Arc<str>,
        user: Arc<str>,
        queue_messages: usize,
        max_queued_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<SessionHandle> {
        Self::with_encoding(
            id,
            user,
            queue_messages,
            max_queued_bytes,
            metrics,
            Encoding::Json,
        )
    }

    /// Like [`SessionHandle::new`], for a session speaking `encoding`.
    pub fn with_encoding(
        id: Arc<str>,
        user: Arc<str>,
        queue_messages: usize,
        max_queued_bytes: usize,
        metrics: Arc<Metrics>,
        encoding: Encoding,
    ) -> Arc<SessionHandle> {
        Arc::new(SessionHandle {
            id,
            user,
            encoding,
            queue: Mutex::new(Queue::default()),
            waker: AtomicWaker::new(),
            max_messages: u32::try_from(queue_messages.max(1)).unwrap_or(u32::MAX),
            max_queued_bytes,
            close: AtomicU16::new(0),
            expiry: AtomicU64::new(u64::MAX),
            metrics,
        })
    }

    /// When the session's token expires (see [`SessionHandle::set_expiry`]).
    pub(crate) fn expiry(&self) -> u64 {
        self.expiry.load(Ordering::Relaxed)
    }

    /// Sets when the session's token expires, in the node timers' nanoseconds (never, until
    /// set).
    pub(crate) fn set_expiry(&self, at: u64) {
        self.expiry.store(at, Ordering::Relaxed);
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a JSON frame text (re-encoded for a MessagePack session). See
    /// [`SessionHandle::enqueue_payload`].
    pub fn enqueue(&self, text: Utf8Bytes, emitted: Option<Instant>) -> bool {
        match self.encoding {
            Encoding::Json => self.enqueue_payload(Payload::Text(text), emitted),
            Encoding::MsgPack => self.enqueue_shared(&Shared::new(text), emitted),
        }
    }

    /// Queues a room message in this session's encoding: its MessagePack form is built once
    /// and shared by every MessagePack member.
    pub fn enqueue_shared(&self, frame: &Shared, emitted: Option<Instant>) -> bool {
        self.enqueue_payload(frame.payload(self.encoding), emitted)
    }

    /// Queues a frame serialised in this session's encoding.
    pub fn enqueue_frame(&self, frame: &ServerFrame) -> bool {
        let payload = match self.encoding {
            Encoding::Json => Payload::Text(Utf8Bytes::from(holdfast_protocol::encode(frame))),
            Encoding::MsgPack => Payload::Binary(Bytes::from(
                holdfast_protocol::msgpack::encode_msgpack(frame),
            )),
        };
        self.enqueue_payload(payload, None)
    }

    /// Queues a frame without waiting. A full queue (by count or bytes) closes the session with
    /// the slow-consumer code and returns false; the frame is dropped, and the client learns
    /// what it missed when it resumes.
    pub fn enqueue_payload(&self, payload: Payload, emitted: Option<Instant>) -> bool {
        if self.close.load(Ordering::Acquire) != 0 {
            self.metrics.messages_failed.inc();
            return false;
        }
        let len = payload.len();
        let mut q = self.queue();
        if q.closed {
            drop(q);
            self.metrics.messages_failed.inc();
            return false;
        }
        if q.items.len() >= self.max_messages as usize || q.bytes + len > self.max_queued_bytes {
            drop(q);
            self.metrics.messages_failed.inc();
            self.close(CloseCode::SlowConsumer);
            return false;
        }
        q.items.push_back(Outbound { payload, emitted });
        q.bytes += len;
        drop(q);
        self.metrics.send_buffer_bytes.add(len as i64);
        self.waker.wake();
        true
    }

    /// Takes the oldest queued frame, if any.
    pub fn try_pop(&self) -> Option<Outbound> {
        let mut q = self.queue();
        let out = q.items.pop_front()?;
        q.bytes -= out.payload.len();
        if q.items.is_empty() {
            // Drained: give the memory back, so idle sessions hold no queue allocation.
            q.items = VecDeque::new();
        }
        drop(q);
        self.metrics.send_buffer_bytes.sub(out.payload.len() as i64);
        Some(out)
    }

    /// Waits for the next queued frame. Only the session's own task waits on its handle.
    pub async fn next(&self) -> Outbound {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next queued frame, or `Pending` with the task's waker registered: it is woken when a
    /// frame is queued (or a close asked for). Only the session's own task polls its handle: one
    /// waker is kept.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Outbound> {
        if let Some(out) = self.try_pop() {
            return Poll::Ready(out);
        }
        self.waker.register(cx.waker());
        match self.try_pop() {
            Some(out) => Poll::Ready(out),
            None => Poll::Pending,
        }
    }

    /// Whether frames are queued.
    pub fn has_queued(&self) -> bool {
        !self.queue().items.is_empty()
    }

    /// Registers the session task's waker, to be woken by whatever happens to the handle next.
    pub fn register(&self, cx: &mut Context<'_>) {
        self.waker.register(cx.waker());
    }

    /// Forgets the session task's waker: the task is busy with what woke it and looks at the
    /// handle again before it waits (so frames it queues itself meanwhile, its own replies,
    /// do not wake it for nothing).
    pub fn unregister(&self) {
        drop(self.waker.take());
    }

    /// Wakes the session task (the node drains: it looks at the drain token).
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Stops accepting frames and discards what is still queued (the session ended).
    pub fn shut_queue(&self) {
        let mut q = self.queue();
        q.closed = true;
        let bytes = q.bytes;
        q.items = VecDeque::new();
        q.bytes = 0;
        drop(q);
        self.metrics.send_buffer_bytes.sub(bytes as i64);
    }

    /// Asks the session to close with `code`. The first reason wins.
    pub fn close(&self, code: CloseCode) {
        let first = self
            .close
            .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.waker.wake();
        }
    }

    /// The close reason asked for, if any.
    pub fn close_requested(&self) -> Option<CloseCode> {
        CloseCode::from_code(self.close.load(Ordering::Acquire))
    }

    /// The close reason asked for, or `Pending` with the task's waker registered.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<CloseCode> {
        if let Some(code) = self.close_requested() {
            return Poll::Ready(code);
        }
        self.waker.register(cx.waker());
        match self.close_requested() {
            Some(code) => Poll::Ready(code),
            None => Poll::Pending,
        }
    }

    /// Resolves once a close has been asked for. Only the session's own task waits on its
    /// handle.
    pub async fn closed(&self) -> CloseCode {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await
    }
}

/// One registered session and the device it connects from.
#[derive(Debug)]
struct Entry {
    /// The device id (token claim or query parameter); `None` for connections without one,
    /// which count as one device.
    device: Option<Arc<str>>,
    session: Arc<SessionHandle>,
}

/// A user's sessions on this node (never empty): one in the common case, held inline (no
/// allocation).
type Sessions = smallvec::SmallVec<[Entry; 1]>;

/// The user every session of `list` belongs to.
fn user_of(list: &Sessions) -> &str {
    list.first().map_or("", |e| &e.session.user)
}

/// user → live sessions of this node.
#[derive(Debug, Default)]
pub struct Registry {
    /// Each user's sessions oldest first, found by the user id their handles hold (the table
    /// keeps no key of its own: 33 bytes a user, where a map keyed by the id takes 49): one
    /// with single socket `user`, one per device with `device`, up to
    /// `session.max_sessions_per_user`. A std mutex: held for table operations only, never
    /// across an await.
    sessions: Mutex<HashTable<Sessions>>,
    hasher: RandomState,
}

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashTable<Sessions>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hash(&self, user: &str) -> u64 {
        self.hasher.hash_one(user)
    }

    /// Registers `session` (from `device`) and returns the sessions it replaces under `scope`,
    /// for the caller to close: every other session of the user (`User`), the one of the same
    /// device (`Device`), and the oldest ones beyond `max_per_user`.
    pub fn insert(
        &self,
        session: Arc<SessionHandle>,
        device: Option<&str>,
        scope: SingleSocket,
        max_per_user: usize,
    ) -> Vec<Arc<SessionHandle>> {
        let device: Option<Arc<str>> = device.map(Into::into);
        let hash = self.hash(&session.user);
        let mut map = self.map();
        let list = map
            .entry(
                hash,
                |list| user_of(list) == &*session.user,
                |list| self.hash(user_of(list)),
            )
            .or_insert_with(Sessions::new)
            .into_mut();
        let mut replaced = Vec::new();
        list.retain(|e| {
            let keep = match scope {
                SingleSocket::User => false,
                SingleSocket::Device => e.device != device,
                SingleSocket::Off => true,
            };
            if !keep {
                replaced.push(e.session.clone());
            }
            keep
        });
        while list.len() >= max_per_user.max(1) {
            replaced.push(list.remove(0).session);
        }
        list.push(Entry { device, session });
        replaced
    }

    /// Removes `session`; returns whether it was registered.
    pub fn remove(&self, session: &Arc<SessionHandle>) -> bool {
        let hash = self.hash(&session.user);
        let mut map = self.map();
        let Ok(mut found) = map.find_entry(hash, |list| user_of(list) == &*session.user) else {
            return false;
        };
        let list = found.get_mut();
        let before = list.len();
        list.retain(|e| !Arc::ptr_eq(&e.session, session));
        let removed = list.len() != before;
        if list.is_empty() {
            found.remove();
        }
        removed
    }

    /// Every registered session (a snapshot).
    pub fn sessions(&self) -> Vec<Arc<SessionHandle>> {
        let map = self.map();
        map.iter()
            .flat_map(|list| list.iter().map(|e| e.session.clone()))
            .collect()
    }

    /// The sessions of `user`, under the lock.
    fn with_user<R>(&self, user: &str, f: impl FnOnce(&Sessions) -> R) -> Option<R> {
        let hash = self.hash(user);
        let map = self.map();
        map.find(hash, |list| user_of(list) == user).map(f)
    }

    /// The newest live session of `user`, if any.
    pub fn get(&self, user: &str) -> Option<Arc<SessionHandle>> {
        self.with_user(user, |list| list.last().map(|e| e.session.clone()))
            .flatten()
    }

    /// Every live session of `user`, oldest first.
    pub fn all(&self, user: &str) -> Vec<Arc<SessionHandle>> {
        self.with_user(user, |list| {
            list.iter().map(|e| e.session.clone()).collect()
        })
        .unwrap_or_default()
    }

    /// Queues a directed frame to every live session of `user`; returns whether one took it.
    pub fn deliver(&self, user: &str, text: &Utf8Bytes) -> bool {
        let mut delivered = false;
        for s in self.all(user) {
            delivered |= s.enqueue(text.clone(), None);
        }
        delivered
    }

    /// Wakes every registered session's task (the node drains).
    pub fn wake_all(&self) {
        let map = self.map();
        for e in map.iter().flatten() {
            e.session.wake();
        }
    }

    /// Number of registered users.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no user is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(id: &str, user: &str) -> Arc<SessionHandle> {
        SessionHandle::new(id.into(), user.into(), 8, 1024, Arc::new(Metrics::new()))
    }

    fn ids(list: &[Arc<SessionHandle>]) -> Vec<&str> {
        list.iter().map(|s| &*s.id).collect()
    }

    #[test]
    fn user_scope_replaces_every_other_session() {
        let r = Registry::default();
        assert!(r
            .insert(handle("a", "u"), Some("d1"), SingleSocket::User, 16)
            .is_empty());
        let out = r.insert(handle("b", "u"), Some("d2"), SingleSocket::User, 16);
        assert_eq!(ids(&out), ["a"]);
        assert_eq!(ids(&r.all("u")), ["b"]);
    }

    #[test]
    fn device_scope_replaces_the_same_device_only() {
        let r = Registry::default();
        r.insert(handle("a", "u"), Some("phone"), SingleSocket::Device, 16);
        r.insert(handle("b", "u"), Some("laptop"), SingleSocket::Device, 16);
        r.insert(handle("c", "u"), None, SingleSocket::Device, 16);
        let out = r.insert(handle("d", "u"), Some("phone"), SingleSocket::Device, 16);
        assert_eq!(ids(&out), ["a"]);
        let out = r.insert(handle("e", "u"), None, SingleSocket::Device, 16);
        assert_eq!(ids(&out), ["c"]);
        assert_eq!(ids(&r.all("u")), ["b", "d", "e"]);
        assert_eq!(r.get("u").map(|s| s.id.clone()).as_deref(), Some("e"));
    }

    #[test]
    fn off_keeps_sessions_up_to_the_cap() {
        let r = Registry::default();
        for id in ["a", "b", "c"] {
            assert!(r
                .insert(handle(id, "u"), None, SingleSocket::Off, 3)
                .is_empty());
        }
        let out = r.insert(handle("d", "u"), None, SingleSocket::Off, 3);
        assert_eq!(ids(&out), ["a"]);
        let b = r.all("u").remove(0);
        assert!(r.remove(&b));
        assert!(!r.remove(&b));
        assert_eq!(ids(&r.all("u")), ["c", "d"]);
        assert_eq!(r.len(), 1);
        assert_eq!(r.sessions().len(), 2);
    }
}
