//! How a client connects: the gateway URL, the token and how to renew it, and the limits of the
//! client's queues.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;

/// A future that yields a fresh token, or a description of why none could be had.
pub(crate) type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// An application callback that produces a fresh token.
///
/// The client calls it before every reconnection attempt (so a reconnect never presents an
/// expired token) and shortly before the current token's `expires_at`, to send `refresh` on the
/// live connection. It may return a cached token while that one is still valid.
#[derive(Clone)]
pub struct TokenRefresher {
    /// Shared because the connection task keeps it for its whole life and the configuration
    /// may be cloned; `Fn` because it is called many times.
    refresh: Arc<dyn Fn() -> TokenFuture + Send + Sync>,
}

impl TokenRefresher {
    /// Wraps an async closure returning a token or an error.
    pub fn new<F, Fut, E>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: fmt::Display,
    {
        TokenRefresher {
            refresh: Arc::new(move || {
                let fut = f();
                Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
            }),
        }
    }

    pub(crate) fn fetch(&self) -> TokenFuture {
        (self.refresh)()
    }
}

impl fmt::Debug for TokenRefresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenRefresher")
    }
}

/// Everything [`crate::Client::connect`] needs.
#[derive(Clone)]
pub struct ClientConfig {
    /// The gateway's WebSocket URL, for example `ws://127.0.0.1:8080/ws`.
    pub url: String,
    /// The signed token presented in the upgrade request (`Authorization: Bearer`).
    pub token: String,
    /// Renews the token for reconnects and before it expires; without one, an expired token
    /// ends the client with close code 4002.
    pub refresher: Option<TokenRefresher>,
    /// The delay policy between reconnection attempts.
    pub backoff: Backoff,
    /// How long one connection attempt may take, from TCP connect to `welcome`.
    pub connect_timeout: Duration,
    /// Capacity of the event stream; when it is full the connection stops reading.
    pub event_capacity: usize,
    /// Capacity of the channel from the handles to the connection task; when it is full,
    /// requests wait.
    pub command_capacity: usize,
    /// Most requests awaiting a reply at once; further requests wait until replies arrive.
    pub max_in_flight: usize,
    /// TLS settings for `wss://` URLs; `None` trusts the system's root certificates.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The frame encoding asked for with `Sec-WebSocket-Protocol`: JSON text (the default) or
    /// MessagePack binary messages.
    pub encoding: holdfast_protocol::Encoding,
}

impl ClientConfig {
    /// A configuration with the default backoff and capacities.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        ClientConfig {
            url: url.into(),
            token: token.into(),
            refresher: None,
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(10),
            event_capacity: 1024,
            command_capacity: 64,
            max_in_flight: 1024,
            tls: None,
            encoding: holdfast_protocol::Encoding::Json,
        }
    }

    /// Speaks `encoding` (`Encoding::MsgPack` for binary MessagePack frames).
    pub fn with_encoding(mut self, encoding: holdfast_protocol::Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Sets the token refresher.
    pub fn with_refresher(mut self, refresher: TokenRefresher) -> Self {
        self.refresher = Some(refresher);
        self
    }

    /// Uses `tls` for `wss://` connections (for example, to trust a private CA).
    pub fn with_tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the reconnection backoff.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a credential: it is never printed.
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("refresher", &self.refresher.is_some())
            .field("backoff", &self.backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("event_capacity", &self.event_capacity)
            .field("command_capacity", &self.command_capacity)
            .field("max_in_flight", &self.max_in_flight)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}
