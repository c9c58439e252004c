//! Load generator and side-by-side benchmark for Holdfast and peer servers.
//!
//! # Layout
//! - [`target`]: the servers under test, the loopback-only endpoint check, and each one's frames.
//! - [`token`]: HS256 tokens for many synthetic users.
//! - [`net`]: source-address spreading and the file descriptor limit.
//! - [`conn`]: opening one connection, through the target's handshake.
//! - [`load`]: one process's share of a run and the scenarios (idle, fanout, echo, churn, storm).
//! - [`driver`]: splitting a run into shares, child processes, server sampling, merging.
//! - [`probe`]: the server's RSS and CPU time, read from `/proc`.
//! - [`hist`]: latency histograms and percentiles.
//! - [`report`]: the JSON result, the end-of-run table, and comparisons.
//! - [`peer`]: the plain tokio-tungstenite broadcast server used as a baseline.
//!
//! Architecture invariant: the tool only ever connects to 127.0.0.0/8; [`target::Endpoint`] is
//! the only way to name a destination and refuses anything else.

#![forbid(unsafe_code)]

pub mod conn;
pub mod driver;
pub mod hist;
pub mod load;
pub mod net;
pub mod peer;
pub mod probe;
pub mod report;
pub mod target;
pub mod token;
