//! The connection registry: user → live session, with single-socket enforcement, and the
//! [`SessionHandle`] through which everything else reaches a session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use holdfast_protocol::CloseCode;
use tokio::sync::{mpsc, Notify};

use crate::metrics::Metrics;

/// One frame waiting in a session's outbound queue.
#[derive(Debug)]
pub struct Outbound {
    /// The serialised frame; for room messages the same bytes are shared by every member.
    pub text: Utf8Bytes,
    /// When a room message was emitted, to measure fan-out lag at write time.
    pub emitted: Option<Instant>,
}

/// The part of a session that other tasks may touch: its identity, its bounded outbound queue
/// and its close signal. The session task owns the socket; nobody else writes to it.
#[derive(Debug)]
pub struct SessionHandle {
    /// Unique per node.
    pub id: Arc<str>,
    /// The authenticated user.
    pub user: Arc<str>,
    /// Bounded queue to the session task: fan-out `try_send`s and never waits on a client.
    tx: mpsc::Sender<Outbound>,
    /// Bytes currently queued, bounded by `limits.send_queue_bytes`; atomic because producers
    /// on many tasks add while the session task subtracts.
    queued_bytes: AtomicUsize,
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
    /// A handle and the receiving end of its queue.
    pub fn new(
        id: Arc<str>,
        user: Arc<str>,
        queue_messages: usize,
        max_queued_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> (Arc<SessionHandle>, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(queue_messages.max(1));
        let handle = Arc::new(SessionHandle {
            id,
            user,
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes,
            closing: AtomicBool::new(false),
            close: Mutex::new(None),
            close_notify: Notify::new(),
            metrics,
        });
        (handle, rx)
    }

    /// Queues a frame without waiting. A full queue (by count or bytes) closes the session with
    /// the slow-consumer code and returns false; the frame is dropped, and the client learns
    /// what it missed when it resumes.
    pub fn enqueue(&self, text: Utf8Bytes, emitted: Option<Instant>) -> bool {
        if self.closing.load(Ordering::Acquire) {
            self.metrics.messages_failed.inc();
            return false;
        }
        let len = text.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > self.max_queued_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.metrics.messages_failed.inc();
            self.close(CloseCode::SlowConsumer);
            return false;
        }
        match self.tx.try_send(Outbound { text, emitted }) {
            Ok(()) => {
                self.metrics.send_buffer_bytes.add(len as i64);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                self.metrics.messages_failed.inc();
                self.close(CloseCode::SlowConsumer);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                self.metrics.messages_failed.inc();
                false
            }
        }
    }

    /// Called by the session task for each frame it takes off the queue.
    pub fn dequeued(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        self.metrics.send_buffer_bytes.sub(len as i64);
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

    /// Whether the session task has gone (its queue receiver dropped).
    pub fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }
}

/// user → live session of this node.
#[derive(Debug, Default)]
pub struct Registry {
    /// Keyed by user id; one entry per user with single socket on, otherwise the newest
    /// session. A std mutex: held for map operations only, never across an await.
    sessions: Mutex<HashMap<Arc<str>, Arc<SessionHandle>>>,
}

impl Registry {
    /// Registers `session` as its user's live session and returns the previous one, if any.
    pub fn insert(&self, session: Arc<SessionHandle>) -> Option<Arc<SessionHandle>> {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(session.user.clone(), session)
    }

    /// Removes `session` if it is still its user's registered one; returns whether it was.
    pub fn remove(&self, session: &Arc<SessionHandle>) -> bool {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .get(&session.user)
            .is_some_and(|current| Arc::ptr_eq(current, session))
        {
            map.remove(&session.user);
            return true;
        }
        false
    }

    /// Every registered session (a snapshot).
    pub fn sessions(&self) -> Vec<Arc<SessionHandle>> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }

    /// The live session of `user`, if any.
    pub fn get(&self, user: &str) -> Option<Arc<SessionHandle>> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(user).cloned()
    }

    /// Number of registered users.
    pub fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether no user is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
