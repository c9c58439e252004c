//! The connection registry: user → live sessions, with single-socket enforcement, and the
//! [`SessionHandle`] through which everything else reaches a session.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use holdfast_protocol::{CloseCode, Encoding, ServerFrame};
use tokio::sync::Notify;

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
    /// Wakes the session task when frames are queued (a stored permit, so no wake is lost).
    ready: Notify,
    /// Message bound of the queue.
    max_messages: usize,
    /// Byte bound of the queue.
    max_queued_bytes: usize,
    /// Set with the first close request: from then on nothing more is queued, so a session that
    /// lost a frame never delivers a later one (no silent hole before its close).
    closing: AtomicBool,
    /// The first close reason asked for; a std mutex because it is held for a store only.
    close: Mutex<Option<CloseCode>>,
    /// Wakes the session task when a close is asked for, even while it is blocked writing.
    close_notify: Notify,
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
            ready: Notify::new(),
            max_messages: queue_messages.max(1),
            max_queued_bytes,
            closing: AtomicBool::new(false),
            close: Mutex::new(None),
            close_notify: Notify::new(),
            metrics,
        })
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
        if self.closing.load(Ordering::Acquire) {
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
        if q.items.len() >= self.max_messages || q.bytes + len > self.max_queued_bytes {
            drop(q);
            self.metrics.messages_failed.inc();
            self.close(CloseCode::SlowConsumer);
            return false;
        }
        q.items.push_back(Outbound { payload, emitted });
        q.bytes += len;
        drop(q);
        self.metrics.send_buffer_bytes.add(len as i64);
        self.ready.notify_one();
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

    /// Waits for the next queued frame.
    pub async fn next(&self) -> Outbound {
        loop {
            if let Some(out) = self.try_pop() {
                return out;
            }
            self.ready.notified().await;
        }
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
        let mut slot = self.close.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(code);
            self.closing.store(true, Ordering::Release);
            drop(slot);
            self.close_notify.notify_one();
        }
    }

    /// The close reason asked for, if any.
    pub fn close_requested(&self) -> Option<CloseCode> {
        *self.close.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once a close has been asked for.
    pub async fn closed(&self) -> CloseCode {
        loop {
            if let Some(code) = self.close_requested() {
                return code;
            }
            self.close_notify.notified().await;
        }
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

/// A user's sessions on this node: one in the common case, held inline (no allocation).
type Sessions = smallvec::SmallVec<[Entry; 1]>;

/// user → live sessions of this node.
#[derive(Debug, Default)]
pub struct Registry {
    /// Keyed by user id; each user's sessions oldest first: one with single socket `user`,
    /// one per device with `device`, up to `session.max_sessions_per_user`. A std mutex: held
    /// for map operations only, never across an await.
    sessions: Mutex<HashMap<Arc<str>, Sessions>>,
}

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Sessions>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut map = self.map();
        let list = map.entry(session.user.clone()).or_default();
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
        let mut map = self.map();
        let Some(list) = map.get_mut(&session.user) else {
            return false;
        };
        let before = list.len();
        list.retain(|e| !Arc::ptr_eq(&e.session, session));
        let removed = list.len() != before;
        if list.is_empty() {
            map.remove(&session.user);
        }
        removed
    }

    /// Every registered session (a snapshot).
    pub fn sessions(&self) -> Vec<Arc<SessionHandle>> {
        let map = self.map();
        map.values()
            .flat_map(|list| list.iter().map(|e| e.session.clone()))
            .collect()
    }

    /// The newest live session of `user`, if any.
    pub fn get(&self, user: &str) -> Option<Arc<SessionHandle>> {
        let map = self.map();
        map.get(user)?.last().map(|e| e.session.clone())
    }

    /// Every live session of `user`, oldest first.
    pub fn all(&self, user: &str) -> Vec<Arc<SessionHandle>> {
        let map = self.map();
        map.get(user)
            .map(|list| list.iter().map(|e| e.session.clone()).collect())
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
