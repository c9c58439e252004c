//! Opening one benchmark connection: TCP from a chosen source address, the WebSocket upgrade,
//! then whatever the target needs before the connection counts as established (Holdfast:
//! `welcome` and `joined`; socket.io: the Engine.IO open and namespace connect packets).

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::net::connect_from;
use crate::target::{Endpoint, Target};

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// How long the TCP connect, upgrade and handshake frames may take together.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The fields of a Holdfast server frame the tool looks at. Parsed leniently (unknown fields
/// and missing optionals are fine) so a tool run never fails on an additive protocol change.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Envelope {
    /// The frame's `type`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Room sequence number of room-scoped frames.
    #[serde(default)]
    pub seq: Option<u64>,
    /// Room of room-scoped frames.
    #[serde(default)]
    pub room: Option<String>,
    /// `joined`, `reconnected`: this member's id.
    #[serde(default)]
    pub player_id: Option<String>,
    /// `joined`, `reconnected`: the next reconnection token.
    #[serde(default)]
    pub reconnection_token: Option<String>,
    /// `reconnected`: the replayed frames.
    #[serde(default)]
    pub events: Vec<Envelope>,
    /// `reconnected`: whether nothing was lost.
    #[serde(default)]
    pub recovered: Option<bool>,
    /// `reconnected`: the range that could not be replayed.
    #[serde(default)]
    pub gap: Option<GapRange>,
    /// `event`, `message`: the payload.
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    /// `welcome`: the server's heartbeat period.
    #[serde(default)]
    pub ping_interval_ms: Option<u64>,
    /// `error`, `reconnection_failed`: the explanation.
    #[serde(default)]
    pub message: Option<String>,
    /// `error`, `reconnection_failed`: the code.
    #[serde(default)]
    pub code: Option<serde_json::Value>,
}

impl Envelope {
    /// The send time stamped into the payload of an `event`, if any.
    pub fn stamp(&self) -> Option<u64> {
        self.data.as_ref()?.get("bt")?.as_u64()
    }
}

/// A lost sequence range reported in `reconnected`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct GapRange {
    /// First lost sequence number.
    pub from: u64,
    /// Last lost sequence number.
    pub to: u64,
}

/// What the server said when the connection joined its room.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    /// Holdfast: the member id in the room (needed to reconnect).
    pub player_id: String,
    /// Holdfast: the latest reconnection token.
    pub reconnection_token: Option<String>,
    /// Holdfast: the room sequence number at join.
    pub seq: u64,
    /// Holdfast: the heartbeat period announced in `welcome`.
    pub ping_interval_ms: Option<u64>,
}

/// Everything needed to open connections to one target.
#[derive(Debug, Clone)]
pub struct Dialer {
    /// Which protocol to speak.
    pub target: Target,
    /// Where to connect.
    pub endpoint: Endpoint,
    /// More nodes of the same cluster: each user connects to one of `endpoint` and these.
    pub extra: Vec<Endpoint>,
}

impl Dialer {
    /// The node a user connects to: spread by a hash of the user id.
    fn pick(&self, user: &str) -> &Endpoint {
        if self.extra.is_empty() {
            return &self.endpoint;
        }
        let h = user
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        match (h % (self.extra.len() as u64 + 1)) as usize {
            0 => &self.endpoint,
            i => &self.extra[i - 1],
        }
    }

    /// Opens a connection from `source` as `user` (with `token`) and joins `room`.
    pub async fn open(
        &self,
        source: Ipv4Addr,
        user: &str,
        token: &str,
        room: &str,
    ) -> anyhow::Result<(Ws, Membership)> {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let mut ws = self
            .upgrade(self.pick(user), source, room, token, deadline)
            .await?;
        let membership = match self.target {
            Target::Holdfast => {
                let welcome = expect_frame(&mut ws, deadline, "welcome").await?;
                let join = format!(r#"{{"type":"join","room":"{room}","id":"j-{user}"}}"#);
                ws.send(Message::text(join)).await?;
                let joined = expect_frame(&mut ws, deadline, "joined").await?;
                Membership {
                    player_id: joined.player_id.unwrap_or_default(),
                    reconnection_token: joined.reconnection_token,
                    seq: joined.seq.unwrap_or(0),
                    ping_interval_ms: welcome.ping_interval_ms,
                }
            }
            Target::Socketio => {
                expect_text(&mut ws, deadline, |t| t.starts_with('0')).await?;
                ws.send(Message::text("40")).await?;
                expect_text(&mut ws, deadline, |t| t.starts_with("40")).await?;
                Membership::default()
            }
            Target::Ws | Target::Tungstenite => Membership::default(),
        };
        Ok((ws, membership))
    }

    /// Opens a Holdfast connection and resumes a membership with `reconnect`. Returns the new
    /// socket and the `reconnected` frame.
    pub async fn resume(
        &self,
        source: Ipv4Addr,
        token: &str,
        room: &str,
        player_id: &str,
        reconnection_token: &str,
        last_sequence: u64,
    ) -> anyhow::Result<(Ws, Envelope)> {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let mut ws = self
            .upgrade(self.pick(player_id), source, room, token, deadline)
            .await?;
        expect_frame(&mut ws, deadline, "welcome").await?;
        let frame = serde_json::json!({
            "type": "reconnect",
            "room": room,
            "player_id": player_id,
            "token": reconnection_token,
            "last_sequence": last_sequence,
        });
        ws.send(Message::text(frame.to_string())).await?;
        let reply = expect_frame(&mut ws, deadline, "reconnected").await?;
        Ok((ws, reply))
    }

    async fn upgrade(
        &self,
        endpoint: &Endpoint,
        source: Ipv4Addr,
        room: &str,
        token: &str,
        deadline: Instant,
    ) -> anyhow::Result<Ws> {
        let url = self.target.connect_url(endpoint, room, token);
        let open = async {
            let tcp = connect_from(source, endpoint.socket_addr())
                .await
                .context("tcp connect")?;
            let (ws, _) =
                tokio_tungstenite::client_async_with_config(url, tcp, Some(client_config()))
                    .await
                    .context("websocket upgrade")?;
            anyhow::Ok(ws)
        };
        timeout_at(deadline, open)
            .await
            .context("connect timed out")?
    }
}

/// Small buffers: the load generator holds thousands of sockets and only reads small frames.
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

/// Reads frames until a Holdfast frame of type `kind`; an `error` or `reconnection_failed`
/// frame, a close or the deadline fails.
async fn expect_frame(ws: &mut Ws, deadline: Instant, kind: &str) -> anyhow::Result<Envelope> {
    loop {
        let text = next_text(ws, deadline).await?;
        let frame: Envelope = match serde_json::from_str(&text) {
            Ok(f) => f,
            Err(_) => continue,
        };
        if frame.kind == kind {
            return Ok(frame);
        }
        if frame.kind == "error" || frame.kind == "reconnection_failed" {
            bail!(
                "server refused ({}): {:?} {}",
                frame.kind,
                frame.code,
                frame.message.unwrap_or_default()
            );
        }
    }
}

async fn expect_text(
    ws: &mut Ws,
    deadline: Instant,
    want: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    loop {
        let text = next_text(ws, deadline).await?;
        if want(&text) {
            return Ok(text);
        }
    }
}

/// The next text frame before `deadline`.
pub async fn next_text(ws: &mut Ws, deadline: Instant) -> anyhow::Result<String> {
    loop {
        let msg = timeout_at(deadline, ws.next())
            .await
            .context("timed out waiting for the server")?;
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => bail!("closed by server: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection closed"),
        }
    }
}
