//! Holdfast client: one WebSocket connection that reconnects, resumes its rooms, and hands the
//! application every room event exactly once, in order, or a precise gap.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use holdfast_client::{Client, ClientConfig, ClientEvent};
//!
//! let (client, mut events) =
//!     Client::connect(ClientConfig::new("ws://127.0.0.1:8080/ws", "a-signed-jwt")).await?;
//! tokio::spawn(async move {
//!     while let Some(event) = events.recv().await {
//!         if let ClientEvent::Event(e) = event {
//!             println!("{} #{}: {}", e.room, e.seq, e.data);
//!         }
//!     }
//! });
//! client.join("lobby").await?;
//! let seq = client.publish("lobby", serde_json::json!({"hello": "world"})).await?;
//! println!("published as #{seq}");
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`client`]: the [`Client`] handle, cheap to clone, which talks to the connection task over a
//!   bounded channel and gets replies on oneshots.
//! - `driver`: the connection task; owns the socket, the rooms and the pending requests, detects
//!   dead connections, reconnects, resumes and resends.
//! - `transport`: opens one WebSocket connection and waits for `welcome`.
//! - `position`: per-room stream positions that drop duplicates and detect gaps.
//! - [`backoff`]: the validated exponential [`Backoff`] with jitter.
//! - [`config`]: [`ClientConfig`] and the [`TokenRefresher`] callback.
//! - [`event`]: the [`ClientEvent`]s the application receives on [`Events`].
//! - [`error`]: one error enum per operation, and the terminal [`CloseError`].
//!
//! # Guarantees
//! - Per room, the application sees frames in strictly increasing `seq` order, each at most
//!   once; a range the gateway could no longer replay arrives as one [`ClientEvent::Gap`].
//! - A publish is answered by its `seq` exactly once. If the connection drops before the ack,
//!   it is resent with the same id after the room is resumed, and the gateway delivers it once.
//! - The client stops retrying only on terminal close codes (see
//!   [`holdfast_protocol::CloseCode::should_reconnect`]), a refused token at the upgrade, or
//!   [`Client::close`]; it then emits [`ClientEvent::Closed`] with the reason.
//! - Every queue is bounded: the command channel, the number of requests in flight, and the
//!   event stream (which pushes back on the socket when the application falls behind).

#![forbid(unsafe_code)]

pub mod backoff;
pub mod client;
pub mod config;
mod driver;
pub mod error;
pub mod event;
mod position;
mod transport;

pub use backoff::{Backoff, BackoffError};
pub use client::{Client, Membership, Room};
pub use config::{ClientConfig, TokenRefresher};
pub use error::{CloseError, ConnectError, RequestError};
pub use event::{ClientEvent, Events};
pub use holdfast_protocol as protocol;
