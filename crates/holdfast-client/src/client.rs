//! The [`Client`] handle: a cheap, cloneable front for one connection task.
//!
//! Every method turns into a [`Command`] on a bounded channel to the task, carrying a oneshot
//! for the reply. The task owns the socket, the rooms and the pending requests; the handle owns
//! nothing but the channel ends, so cloning it is an `Arc` increment.

use std::sync::Arc;

use holdfast_protocol::Member;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::config::ClientConfig;
use crate::driver::Driver;
use crate::error::{CloseError, ConnectError, RequestError};
use crate::event::Events;
use crate::transport;

/// A room membership, as reported by `joined`.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    /// The room.
    pub room: String,
    /// This member's id in the room; it stays the same across resumes.
    pub player_id: String,
    /// Every member at the time of the join, this one included.
    pub members: Vec<Member>,
    /// Members, connected or away (the only figure when the room's presence mode is not
    /// `full`).
    pub member_count: u64,
    /// The player id holding authority.
    pub authority: Option<String>,
    /// The room's sequence number at the join; events follow from the next one.
    pub seq: u64,
    /// The room's stream epoch.
    pub epoch: String,
    /// The room's state at the join, when it has one; the messages after it (up to `seq`)
    /// arrive as events right after the join.
    pub state: Option<Value>,
    /// The `seq` of the `state_set` that set `state`.
    pub state_seq: Option<u64>,
}

/// The reply channel of one request.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, RequestError>>;

/// A request from a handle to the connection task.
/// A room request answered by a plain `ack`.
#[derive(Debug, Clone)]
pub(crate) enum RoomAction {
    /// `claim_authority`.
    Claim,
    /// `release_authority`.
    Release,
    /// `set_state`.
    SetState(Value),
}

#[derive(Debug)]
pub(crate) enum Command {
    /// `join`.
    Join {
        room: String,
        token: Option<String>,
        reply: Reply<Membership>,
    },
    /// `leave`.
    Leave { room: String, reply: Reply<()> },
    /// `publish`; the reply carries the event's `seq`.
    Publish {
        room: String,
        data: Value,
        reply: Reply<u64>,
    },
    /// `send` to one user.
    Send {
        to: String,
        data: Value,
        reply: Reply<()>,
    },
    /// `claim_authority` (`claim` true) or `release_authority`.
    Authority {
        room: String,
        action: RoomAction,
        reply: Reply<()>,
    },
}

/// A handle to one Holdfast connection that reconnects and resumes by itself.
///
/// Cloning is cheap; every clone drives the same connection. The connection closes when
/// [`Client::close`] is called or every clone has been dropped.
#[derive(Debug, Clone)]
pub struct Client {
    /// Bounded: a burst of requests waits here instead of growing the task's memory.
    commands: mpsc::Sender<Command>,
    /// A separate wake-up for `close`, so closing works even when the command channel is full.
    close: Arc<Notify>,
    /// Set once, by the task, to the reason it stopped; `watch` so `close` can wait for it.
    done: watch::Receiver<Option<CloseError>>,
    /// The per-room event streams ([`Room::events`]).
    room_streams: crate::event::RoomStreams,
}

impl Client {
    /// Connects, waits for `welcome`, and starts the connection task.
    ///
    /// Only this first connection reports failure directly; after it, drops are handled by
    /// reconnecting, and the application learns about them on the [`Events`] stream.
    pub async fn connect(config: ClientConfig) -> Result<(Client, Events), ConnectError> {
        let (ws, welcome) = transport::open(
            &config.url,
            &config.token,
            config.connect_timeout,
            config.tls.clone(),
            config.encoding,
        )
        .await?;
        let (commands_tx, commands_rx) = mpsc::channel(config.command_capacity.max(1));
        let (events_tx, events_rx) = mpsc::channel(config.event_capacity.max(1));
        let (done_tx, done_rx) = watch::channel(None);
        let close = Arc::new(Notify::new());
        let room_streams = crate::event::RoomStreams::new(config.event_capacity);
        let driver = Driver::new(
            config,
            commands_rx,
            close.clone(),
            events_tx,
            room_streams.clone(),
            done_tx,
        );
        tokio::spawn(driver.run(ws, welcome));
        let client = Client {
            commands: commands_tx,
            close,
            done: done_rx,
            room_streams,
        };
        Ok((client, Events::new(events_rx)))
    }

    /// Joins `room`.
    pub async fn join(&self, room: impl Into<String>) -> Result<Membership, RequestError> {
        let room = room.into();
        self.request(|reply| Command::Join {
            room,
            token: None,
            reply,
        })
        .await
    }

    /// Joins `room` with a join token from the application (a JWT for this user and exactly
    /// this room), for rooms whose join policy is `token` when the connection token's `rooms`
    /// claim does not cover the room. The token is kept to resume the room after a reconnect.
    /// A refusal is [`RequestError::Forbidden`].
    pub async fn join_with_token(
        &self,
        room: impl Into<String>,
        token: impl Into<String>,
    ) -> Result<Membership, RequestError> {
        let (room, token) = (room.into(), Some(token.into()));
        self.request(|reply| Command::Join { room, token, reply })
            .await
    }

    /// Leaves `room`. Leaving a room the gateway no longer knows this member in succeeds.
    pub async fn leave(&self, room: impl Into<String>) -> Result<(), RequestError> {
        let room = room.into();
        self.request(|reply| Command::Leave { room, reply }).await
    }

    /// Publishes `data` to `room` and returns the event's sequence number once acknowledged.
    ///
    /// The publish gets a unique id. If the connection drops before the `ack`, it is resent
    /// with the same id once the room is resumed, and the gateway delivers it once. A publish
    /// the gateway drops for its rate limit is resent after a pause, so under a sustained flood
    /// publishes slow down (up to the in-flight bound) rather than fail.
    pub async fn publish(&self, room: impl Into<String>, data: Value) -> Result<u64, RequestError> {
        let room = room.into();
        self.request(|reply| Command::Publish { room, data, reply })
            .await
    }

    /// Sends `data` directly to user `to`. Unlike a publish, a send whose reply was lost to a
    /// drop fails with [`RequestError::ConnectionLost`] rather than being resent.
    pub async fn send(&self, to: impl Into<String>, data: Value) -> Result<(), RequestError> {
        let to = to.into();
        self.request(|reply| Command::Send { to, data, reply })
            .await
    }

    /// Asks for the authority role in `room`.
    pub async fn claim_authority(&self, room: impl Into<String>) -> Result<(), RequestError> {
        let room = room.into();
        self.request(|reply| Command::Authority {
            room,
            action: RoomAction::Claim,
            reply,
        })
        .await
    }

    /// Replaces `room`'s state (the member must hold authority); resolves once the gateway
    /// acknowledged it. Every member, this one included, then receives the `state_set`
    /// ([`crate::ClientEvent::State`]). Like a publish, a set whose reply was lost to a drop is
    /// resent once the room is resumed.
    pub async fn set_state(
        &self,
        room: impl Into<String>,
        state: Value,
    ) -> Result<(), RequestError> {
        let room = room.into();
        self.request(|reply| Command::Authority {
            room,
            action: RoomAction::SetState(state),
            reply,
        })
        .await
    }

    /// Gives up the authority role in `room`.
    pub async fn release_authority(&self, room: impl Into<String>) -> Result<(), RequestError> {
        let room = room.into();
        self.request(|reply| Command::Authority {
            room,
            action: RoomAction::Release,
            reply,
        })
        .await
    }

    /// Closes the connection (close code 1000) and waits for the task to stop. Pending
    /// requests fail with [`CloseError::ClosedByApplication`].
    pub async fn close(&self) {
        self.close.notify_one();
        let mut done = self.done.clone();
        // An error here means the task is gone, which is what we wait for anyway.
        let _ = done.wait_for(Option::is_some).await;
    }

    /// Why the client stopped, or `None` while it is running (or reconnecting).
    pub fn close_reason(&self) -> Option<CloseError> {
        self.done.borrow().clone()
    }

    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, RequestError> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(make(tx)).await.is_err() {
            return Err(self.closed_error());
        }
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(self.closed_error()),
        }
    }

    fn closed_error(&self) -> RequestError {
        RequestError::Closed(
            self.close_reason()
                .unwrap_or(CloseError::ClosedByApplication),
        )
    }
}

/// A handle to one room of a [`Client`]: the room's requests without repeating its name, and
/// [`Room::events`], a stream of the room's events alone. Cheap to clone; it shares the
/// client's connection. Every event still arrives on the client's own [`crate::Events`] stream
/// too (drop that stream if only room streams are read).
#[derive(Debug, Clone)]
pub struct Room {
    client: Client,
    name: String,
}

impl Client {
    /// A handle to `room` (joining is still [`Room::join`]).
    pub fn room(&self, room: impl Into<String>) -> Room {
        Room {
            client: self.clone(),
            name: room.into(),
        }
    }
}

impl Room {
    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new stream of this room's events: its [`ClientEvent::Event`]s, states, presence,
    /// authority changes, resumes, gaps and rollbacks, in the same order and with the same
    /// exactly-once guarantee as the client's stream. Bounded like it (`event_capacity`):
    /// while a room stream is full the connection waits, so read every stream you open, or
    /// drop it. It ends when the client stops. Open it before joining to see every event.
    ///
    /// [`ClientEvent::Event`]: crate::ClientEvent::Event
    pub fn events(&self) -> crate::Events {
        self.client.room_streams.open(&self.name)
    }

    /// Joins the room (see [`Client::join`]).
    pub async fn join(&self) -> Result<Membership, RequestError> {
        self.client.join(self.name.clone()).await
    }

    /// Joins the room with a join token (see [`Client::join_with_token`]).
    pub async fn join_with_token(
        &self,
        token: impl Into<String>,
    ) -> Result<Membership, RequestError> {
        self.client.join_with_token(self.name.clone(), token).await
    }

    /// Leaves the room (see [`Client::leave`]).
    pub async fn leave(&self) -> Result<(), RequestError> {
        self.client.leave(self.name.clone()).await
    }

    /// Publishes to the room (see [`Client::publish`]).
    pub async fn publish(&self, data: Value) -> Result<u64, RequestError> {
        self.client.publish(self.name.clone(), data).await
    }

    /// Replaces the room's state (see [`Client::set_state`]).
    pub async fn set_state(&self, state: Value) -> Result<(), RequestError> {
        self.client.set_state(self.name.clone(), state).await
    }

    /// Claims the authority role (see [`Client::claim_authority`]).
    pub async fn claim_authority(&self) -> Result<(), RequestError> {
        self.client.claim_authority(self.name.clone()).await
    }

    /// Releases the authority role (see [`Client::release_authority`]).
    pub async fn release_authority(&self) -> Result<(), RequestError> {
        self.client.release_authority(self.name.clone()).await
    }
}
