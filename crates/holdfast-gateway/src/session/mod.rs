//! One client session, from authentication to close.
//!
//! - [`core`]: the transport-neutral [`Session`]: frame handling, the rooms of a session, and
//!   its cleanup. The WebSocket loop and the fallback transports drive the same core.
//! - [`ws`]: the WebSocket loop, generic over a sink/stream of frames.
//! - [`lean`]: the WebSocket connection it runs on, with no buffer while idle.
//! - [`frame`]: the gateway's own RFC 6455 framing (server side): the frame reader and the
//!   connection's error type, with its close codes.
//! - [`auth`]: in-band authentication and its timeout.
//! - [`heartbeat`]: ping/pong as a deadline state machine.
//! - [`ratelimit`]: the inbound token bucket.
//! - [`budget`]: the per-user budgets those buckets live in, shared by a user's sessions.

mod auth;
mod budget;
mod core;
mod frame;
mod heartbeat;
mod lean;
mod ratelimit;
mod ws;

#[cfg(test)]
mod tests;

pub(crate) use self::budget::UserBudgets;
pub(crate) use self::core::Session;
pub(crate) use self::lean::{LeanSocket, SocketConfig};
pub(crate) use self::ws::{close_with, linger, read_close_code, run, Opening};
