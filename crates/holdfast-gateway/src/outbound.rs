//! Bounded outbound HTTP calls: JWKS fetches, hooks and trace export.
//!
//! Every call has a time limit covering connection, request and the whole response body, and
//! a response size limit; a call that exceeds either fails. Only `http://` URLs are supported
//! (put a TLS-terminating proxy or a sidecar in front of an `https://` endpoint).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why an outbound call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The URL or request could not be built.
    #[error("bad request: {0}")]
    Request(String),
    /// Connection, request or body read failed (the response body may have been too large).
    #[error("transport: {0}")]
    Transport(String),
    /// The time limit passed.
    #[error("timed out")]
    Timeout,
}

/// A response: its status and its (size-bounded) body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The body, at most the call's byte limit.
    pub body: Bytes,
}

/// An HTTP/1 client with a connection pool, owned by one node (never process-global).
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

impl HttpClient {
    /// A client keeping a few idle connections per host for 30 s.
    pub fn new() -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(16)
            .build(connector);
        HttpClient { client }
    }

    /// `GET url`, bounded by `timeout` and `max_bytes`.
    pub async fn get(
        &self,
        url: &str,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Reply, CallError> {
        let req = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| CallError::Request(e.to_string()))?;
        self.call(req, timeout, max_bytes).await
    }

    /// `POST url` with a JSON body (and a `traceparent` header when given), bounded by
    /// `timeout` and `max_bytes`.
    pub async fn post_json(
        &self,
        url: &str,
        body: Vec<u8>,
        traceparent: Option<&str>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Reply, CallError> {
        let mut req = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json");
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Request(e.to_string()))?;
        self.call(req, timeout, max_bytes).await
    }

    /// `POST url` with `body` and `headers` (the trace exporter's requests), bounded by
    /// `timeout` and `max_bytes`.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Reply, CallError> {
        let mut req = http::Request::post(url);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| CallError::Request(e.to_string()))?;
        self.call(req, timeout, max_bytes).await
    }

    async fn call(
        &self,
        req: http::Request<Full<Bytes>>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Reply, CallError> {
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| CallError::Transport(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), max_bytes)
                .collect()
                .await
                .map_err(|e| CallError::Transport(e.to_string()))?
                .to_bytes();
            Ok(Reply { status, body })
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout),
        }
    }
}
