//! A WebSocket test client over a real socket, speaking JSON frames.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{token, WAIT};

/// A raw client WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A test client over a real socket.
pub struct Client {
    /// The socket, for steps the helpers do not cover.
    pub ws: Ws,
    /// Presence changes read but not yet asked for (a `presence` frame may carry several).
    changes: std::collections::VecDeque<Value>,
}

/// Opens `ws://addr/ws{query}` with extra request `headers`; the status when the upgrade was
/// refused.
pub async fn try_connect(
    addr: SocketAddr,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Client, u16> {
    let mut req = format!("ws://{addr}/ws{query}")
        .into_client_request()
        .expect("a valid request");
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).expect("a valid header name");
        req.headers_mut()
            .insert(name, v.parse().expect("a valid header value"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(Client {
            ws,
            changes: Default::default(),
        }),
        Err(WsError::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect failed: {e}"),
    }
}

impl Client {
    /// Connects as `user` with a [`token`] in the query and reads `welcome`.
    pub async fn connect(addr: SocketAddr, user: &str) -> (Client, Value) {
        let mut c = try_connect(addr, &format!("?token={}", token(user)), &[])
            .await
            .expect("upgrade accepted");
        let welcome = c.expect("welcome").await;
        (c, welcome)
    }

    /// Connects with `token` in the query and reads `welcome`.
    pub async fn connect_with_token(addr: SocketAddr, token: &str) -> (Client, Value) {
        let mut c = try_connect(addr, &format!("?token={token}"), &[])
            .await
            .expect("upgrade accepted");
        let welcome = c.expect("welcome").await;
        (c, welcome)
    }

    /// Sends a JSON frame.
    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, s: &str) {
        self.ws
            .send(Message::Text(s.to_owned().into()))
            .await
            .expect("send");
    }

    /// The next JSON frame (pings are answered by tungstenite while reading).
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the wait")
                .expect("stream open")
                .expect("frame ok");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("a JSON frame"),
                Message::Close(f) => panic!("closed unexpectedly: {f:?}"),
                _ => continue,
            }
        }
    }

    /// The next frame, which must have this `type`.
    pub async fn expect(&mut self, ty: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], ty, "expected `{ty}`, got {v}");
        v
    }

    /// The next frame other than `presence` (flushed on the node's tick, so it may come
    /// before a reply), which must have this `type`.
    pub async fn expect_reply(&mut self, ty: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] != "presence" {
                assert_eq!(v["type"], ty, "expected `{ty}`, got {v}");
                return v;
            }
        }
    }

    /// Skips frames until one of type `ty`.
    pub async fn until(&mut self, ty: &str) -> Value {
        for _ in 0..10_000 {
            let v = self.recv().await;
            if v["type"] == ty {
                return v;
            }
        }
        panic!("no `{ty}` frame");
    }

    /// The next presence change with `status` (`online`, `away` or `left`), from `presence`
    /// frames; earlier changes with another status are passed over. Any other frame type in
    /// between fails the test.
    pub async fn expect_presence(&mut self, status: &str) -> Value {
        self.presence_change(status, false).await
    }

    /// Like [`Client::expect_presence`], skipping frames of other types.
    pub async fn until_presence(&mut self, status: &str) -> Value {
        self.presence_change(status, true).await
    }

    async fn presence_change(&mut self, status: &str, skip_others: bool) -> Value {
        for _ in 0..10_000 {
            if let Some(i) = self.changes.iter().position(|c| c["status"] == status) {
                self.changes.drain(..i);
                if let Some(c) = self.changes.pop_front() {
                    return c;
                }
            }
            self.changes.clear();
            let v = self.recv().await;
            if v["type"] == "presence" {
                self.changes
                    .extend(v["changes"].as_array().cloned().unwrap_or_default());
            } else if !skip_others {
                panic!("expected a presence change `{status}`, got {v}");
            }
        }
        panic!("no presence change `{status}`");
    }

    /// An `error` frame with this code.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.expect("error").await;
        assert_eq!(v["code"], code, "{v}");
        v
    }

    /// Reads until the close frame and returns its code (skipping any other frames); 1006 when
    /// the connection ended without one.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close within the wait");
            match msg {
                Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                Some(Ok(Message::Close(None))) => return 1005,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return 1006,
            }
        }
    }

    /// Joins `room` and returns the `joined` frame.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type":"join","room":room})).await;
        self.expect_reply("joined").await
    }

    /// Closes with 1000.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: WsCloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
    }
}
