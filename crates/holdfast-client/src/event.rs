//! What the application receives: [`ClientEvent`]s on a bounded [`Events`] stream.
//!
//! Room frames arrive exactly once and in `seq` order per room, across reconnects: replays that
//! overlap what was already delivered are dropped, and a range that was lost for good arrives as
//! one [`ClientEvent::Gap`] in its place.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use holdfast_protocol::{AuthorityChanged, Direct, ErrorCode, Event, Member, Presence, StateSet};
use tokio::sync::mpsc;

use crate::error::CloseError;

/// One thing that happened, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A connection is established and authenticated (the first one, or after a reconnect).
    Connected {
        /// The authenticated user.
        user_id: String,
        /// The connection's id on its node.
        session_id: String,
        /// The node holding the connection.
        node_id: String,
    },
    /// The connection was lost or closed.
    Disconnected {
        /// The WebSocket close code, or `None` when the connection dropped without one (or was
        /// found dead by the heartbeat check).
        code: Option<u16>,
        /// The close reason, or a description of the drop.
        reason: String,
        /// Whether the client will reconnect and resume; when false, [`ClientEvent::Closed`]
        /// follows.
        will_reconnect: bool,
    },
    /// The node is draining; a disconnect follows, and the client reconnects after the delay
    /// (plus jitter).
    ServerShutdown {
        /// The gateway's reason, for logs.
        reason: String,
        /// The gateway's suggested delay before reconnecting.
        reconnect_after: Duration,
    },
    /// A room membership was resumed after a reconnect. Replayed frames (and a [`ClientEvent::Gap`]
    /// when some were lost) follow.
    Resumed {
        /// The room.
        room: String,
        /// True when nothing was lost, or the room's state covers what was (`from_snapshot`).
        recovered: bool,
        /// Whether the room's state snapshot was used.
        from_snapshot: bool,
        /// The member missed more than the room's buffer and recovered from the room's state:
        /// a [`ClientEvent::State`] follows (after a [`ClientEvent::Gap`] naming the messages
        /// it supersedes), then the events after it.
        /// Every member now (empty unless the room's presence mode is `full`).
        members: Vec<Member>,
        /// Members now.
        member_count: u64,
        /// The player id holding authority now.
        authority: Option<String>,
    },
    /// A room membership could not be resumed; the application is no longer in the room.
    ResumeFailed {
        /// The room.
        room: String,
        /// Why.
        code: ErrorCode,
        /// The gateway's explanation.
        message: String,
    },
    /// Room frames `from..=to` of `epoch` were lost and will not be delivered.
    Gap {
        /// The room.
        room: String,
        /// First lost sequence number.
        from: u64,
        /// Last lost sequence number.
        to: u64,
        /// The epoch the numbers belong to.
        epoch: String,
    },
    /// Room frames `from..=to` of `epoch` that were delivered were rolled back: the room's
    /// stream (Redis came back with older data) no longer has them, and frames with these
    /// numbers in the room's new epoch are other messages.
    RolledBack {
        /// The room.
        room: String,
        /// First rolled-back sequence number.
        from: u64,
        /// Last rolled-back sequence number.
        to: u64,
        /// The epoch the numbers belong to.
        epoch: String,
    },
    /// Data published to a room.
    Event(Event),
    /// The room's state was replaced (in the room's `seq` order, like events).
    State(StateSet),
    /// Members of a room joined, dropped, came back or left (coalesced; apply each change as an
    /// idempotent update of the member list).
    Presence(Presence),
    /// A room's authority changed hands.
    AuthorityChanged(AuthorityChanged),
    /// Data sent directly to this user.
    Message(Direct),
    /// The client stopped for good; no event follows.
    Closed(CloseError),
}

impl ClientEvent {
    /// The room the event belongs to, for the room events.
    pub fn room(&self) -> Option<&str> {
        match self {
            ClientEvent::Resumed { room, .. }
            | ClientEvent::ResumeFailed { room, .. }
            | ClientEvent::Gap { room, .. }
            | ClientEvent::RolledBack { room, .. } => Some(room),
            ClientEvent::Event(e) => Some(&e.room),
            ClientEvent::State(s) => Some(&s.room),
            ClientEvent::Presence(p) => Some(&p.room),
            ClientEvent::AuthorityChanged(a) => Some(&a.room),
            ClientEvent::Connected { .. }
            | ClientEvent::Disconnected { .. }
            | ClientEvent::ServerShutdown { .. }
            | ClientEvent::Message(_)
            | ClientEvent::Closed(_) => None,
        }
    }
}

/// The per-room streams opened with [`crate::Room::events`], shared by the handles (which
/// open them) and the connection task (which feeds them).
#[derive(Debug, Clone, Default)]
pub(crate) struct RoomStreams {
    /// room → the senders of its open streams. A std mutex held for a map operation only.
    subscribers: Arc<Mutex<HashMap<String, Vec<mpsc::Sender<ClientEvent>>>>>,
    /// Bound of each stream, `ClientConfig::event_capacity`.
    capacity: usize,
    /// Set when the client stopped: no stream opens after that (it would never end).
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl RoomStreams {
    pub(crate) fn new(capacity: usize) -> Self {
        RoomStreams {
            capacity: capacity.max(1),
            ..RoomStreams::default()
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<mpsc::Sender<ClientEvent>>>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new stream of `room`'s events.
    pub(crate) fn open(&self, room: &str) -> Events {
        let (tx, rx) = mpsc::channel(self.capacity);
        if !self.closed.load(std::sync::atomic::Ordering::Acquire) {
            self.map().entry(room.to_owned()).or_default().push(tx);
        }
        Events::new(rx)
    }

    /// Hands `event` to every open stream of its room, waiting while one is full (the same
    /// back-pressure as the client's own stream); streams the application dropped are
    /// forgotten.
    pub(crate) async fn deliver(&self, event: &ClientEvent) {
        let Some(room) = event.room() else { return };
        let senders = match self.map().get(room) {
            Some(list) => list.clone(),
            None => return,
        };
        let mut gone = false;
        for tx in &senders {
            gone |= tx.send(event.clone()).await.is_err();
        }
        if gone {
            let mut map = self.map();
            if let Some(list) = map.get_mut(room) {
                list.retain(|tx| !tx.is_closed());
                if list.is_empty() {
                    map.remove(room);
                }
            }
        }
    }

    /// The client stopped: every room stream ends once drained.
    pub(crate) fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.map().clear();
    }
}

/// The bounded stream of [`ClientEvent`]s.
///
/// The connection task waits when the stream is full, which stops it reading from the socket:
/// a slow reader slows the connection down (and may eventually be disconnected by the gateway as
/// a slow consumer, then resume) rather than losing events. Read it from its own task, not from
/// the task that awaits requests on the handle.
#[derive(Debug)]
pub struct Events {
    /// Bounded so that a stalled application pushes back on the connection instead of growing
    /// memory without limit.
    rx: mpsc::Receiver<ClientEvent>,
}

impl Events {
    pub(crate) fn new(rx: mpsc::Receiver<ClientEvent>) -> Self {
        Events { rx }
    }

    /// The next event; `None` after [`ClientEvent::Closed`] has been received.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        self.rx.recv().await
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<ClientEvent> {
        self.rx.try_recv().ok()
    }
}

impl futures_util::Stream for Events {
    type Item = ClientEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        self.rx.poll_recv(cx)
    }
}
