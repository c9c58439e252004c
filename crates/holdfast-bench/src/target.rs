//! The servers the tool can load, the loopback-only endpoint they listen on, and the frames each
//! one expects.
//!
//! Holdfast speaks its own protocol (`holdfast-protocol`). The peers speak a minimal room
//! broadcast variant: a socket joins the room named by the `room` query parameter, and a text
//! frame `{"room":R,"data":D}` is broadcast verbatim to every socket of room `R`, the sender
//! included; a frame without `room` is echoed back to its sender only. The socket.io peer carries
//! the same objects inside Engine.IO v4 / Socket.IO v5 packets (`42["pub",{..}]`).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which server is under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The Holdfast gateway, full protocol with authentication and room joins.
    Holdfast,
    /// The Node `ws` peer in `bench/peers/ws-server.js`.
    Ws,
    /// The socket.io peer in `bench/peers/socketio-server.js`.
    Socketio,
    /// The plain tokio-tungstenite peer (`holdfast-bench peer-tungstenite`).
    Tungstenite,
}

impl Target {
    /// The endpoint a target listens on when `--url` is not given.
    pub fn default_url(self) -> &'static str {
        match self {
            Target::Holdfast => "ws://127.0.0.1:8080/ws",
            Target::Ws => "ws://127.0.0.1:9001/ws",
            Target::Socketio => "ws://127.0.0.1:9002/socket.io/",
            Target::Tungstenite => "ws://127.0.0.1:9003/ws",
        }
    }

    /// The URL one connection opens: Holdfast authenticates with a token in the query and joins
    /// rooms with frames; peers join their one room through the query.
    pub fn connect_url(self, endpoint: &Endpoint, room: &str, token: &str) -> String {
        match self {
            Target::Holdfast => format!("ws://{}{}?token={token}", endpoint.addr, endpoint.path),
            Target::Ws | Target::Tungstenite => {
                format!("ws://{}{}?room={room}", endpoint.addr, endpoint.path)
            }
            Target::Socketio => format!(
                "ws://{}{}?EIO=4&transport=websocket&room={room}",
                endpoint.addr, endpoint.path
            ),
        }
    }

    /// A frame publishing `data` (a JSON object) to `room`.
    pub fn publish_frame(self, room: &str, data: &str) -> String {
        match self {
            Target::Holdfast => format!(r#"{{"type":"publish","room":"{room}","data":{data}}}"#),
            Target::Ws | Target::Tungstenite => format!(r#"{{"room":"{room}","data":{data}}}"#),
            Target::Socketio => format!(r#"42["pub",{{"room":"{room}","data":{data}}}]"#),
        }
    }

    /// A frame the server sends straight back to this connection only.
    pub fn echo_frame(self, user: &str, data: &str) -> String {
        match self {
            Target::Holdfast => format!(r#"{{"type":"send","to":"{user}","data":{data}}}"#),
            Target::Ws | Target::Tungstenite => format!(r#"{{"data":{data}}}"#),
            Target::Socketio => format!(r#"42["echo",{{"data":{data}}}]"#),
        }
    }

    /// Whether the target understands `reconnect` and can resume a room stream.
    pub fn resumes(self) -> bool {
        matches!(self, Target::Holdfast)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Holdfast => "holdfast",
            Target::Ws => "ws",
            Target::Socketio => "socketio",
            Target::Tungstenite => "tungstenite",
        })
    }
}

/// Why a target URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    /// Only plain `ws://` is supported: TLS would measure the cipher, not the gateway.
    Scheme(String),
    /// The host is not an IPv4 address in 127.0.0.0/8 (or `localhost`).
    NotLoopback(String),
    /// The authority could not be read as `host:port`.
    Malformed(String),
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::Scheme(url) => write!(f, "`{url}`: only ws:// URLs are supported"),
            EndpointError::NotLoopback(host) => write!(
                f,
                "refusing to load `{host}`: holdfast-bench only targets loopback addresses \
                 (127.0.0.0/8 or localhost)"
            ),
            EndpointError::Malformed(url) => write!(f, "`{url}` is not ws://HOST:PORT/PATH"),
        }
    }
}

impl std::error::Error for EndpointError {}

/// A validated loopback WebSocket endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The address to connect to; always in 127.0.0.0/8.
    pub addr: SocketAddrV4,
    /// The request path, starting with `/`.
    pub path: String,
}

impl Endpoint {
    /// The socket address to connect to.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::V4(self.addr)
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| EndpointError::Scheme(url.to_owned()))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = path.split('?').next().unwrap_or("/");
        let path = if path.is_empty() { "/" } else { path };
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| EndpointError::Malformed(url.to_owned()))?;
        let port: u16 = port
            .parse()
            .map_err(|_| EndpointError::Malformed(url.to_owned()))?;
        let ip = if host.eq_ignore_ascii_case("localhost") {
            Ipv4Addr::LOCALHOST
        } else {
            host.parse::<Ipv4Addr>()
                .map_err(|_| EndpointError::NotLoopback(host.to_owned()))?
        };
        if !ip.is_loopback() {
            return Err(EndpointError::NotLoopback(host.to_owned()));
        }
        Ok(Endpoint {
            addr: SocketAddrV4::new(ip, port),
            path: path.to_owned(),
        })
    }
}

/// The marker that precedes the send timestamp in every measured payload.
const STAMP: &str = "\"bt\":";

/// A JSON object of about `size` bytes carrying the send time in nanoseconds since the epoch.
pub fn stamped_payload(sent_ns: u64, size: usize) -> String {
    let head = format!("{{{STAMP}{sent_ns},\"p\":\"");
    let pad = size.saturating_sub(head.len() + 2);
    let mut out = String::with_capacity(head.len() + pad + 2);
    out.push_str(&head);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}");
    out
}

/// The send time carried by a frame built from [`stamped_payload`], whatever envelope the
/// server wrapped around it. Scanning for the marker keeps the receive path cheap: the load
/// generator must not become the bottleneck it is measuring.
pub fn read_stamp(frame: &str) -> Option<u64> {
    let at = frame.find(STAMP)? + STAMP.len();
    let digits = frame[at..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold((0u64, 0usize), |(v, n), b| {
            (v.wrapping_mul(10).wrapping_add(u64::from(b - b'0')), n + 1)
        });
    (digits.1 > 0).then_some(digits.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn loopback_urls_are_accepted() {
        let e: Endpoint = "ws://127.0.0.1:8080/ws".parse().unwrap();
        assert_eq!(e.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(e.path, "/ws");
        let e: Endpoint = "ws://127.3.2.1:9".parse().unwrap();
        assert_eq!(e.path, "/");
        let e: Endpoint = "ws://localhost:9002/socket.io/?x=1".parse().unwrap();
        assert_eq!(e.addr.ip(), &Ipv4Addr::LOCALHOST);
        assert_eq!(e.path, "/socket.io/");
    }

    #[test]
    fn other_hosts_are_refused() {
        for url in [
            "ws://10.0.0.1:80/ws",
            "ws://example.com:80/",
            "ws://0.0.0.0:8080/",
            "ws://[::1]:8080/",
            "ws://128.0.0.1:8080/",
        ] {
            let err = url.parse::<Endpoint>().unwrap_err();
            assert!(
                matches!(err, EndpointError::NotLoopback(_)),
                "{url}: {err:?}"
            );
            assert!(err.to_string().contains("loopback"));
        }
        assert!(matches!(
            "wss://127.0.0.1:1/".parse::<Endpoint>(),
            Err(EndpointError::Scheme(_))
        ));
        assert!(matches!(
            "ws://127.0.0.1/".parse::<Endpoint>(),
            Err(EndpointError::Malformed(_))
        ));
    }

    #[test]
    fn stamps_survive_every_envelope() {
        let data = stamped_payload(1_700_000_000_123_456_789, 64);
        assert!(data.len() >= 60 && data.len() <= 64, "{}", data.len());
        let _: serde_json::Value = serde_json::from_str(&data).unwrap();
        for target in [
            Target::Holdfast,
            Target::Ws,
            Target::Socketio,
            Target::Tungstenite,
        ] {
            let frame = target.publish_frame("r1", &data);
            assert_eq!(read_stamp(&frame), Some(1_700_000_000_123_456_789));
        }
        assert_eq!(read_stamp(r#"{"type":"ack","id":"m1"}"#), None);
    }

    #[test]
    fn holdfast_frames_parse_as_protocol_frames() {
        use holdfast_protocol::ClientFrame;
        let data = stamped_payload(5, 32);
        let f: ClientFrame =
            serde_json::from_str(&Target::Holdfast.publish_frame("r1", &data)).unwrap();
        assert!(matches!(f, ClientFrame::Publish(p) if p.room == "r1"));
        let f: ClientFrame =
            serde_json::from_str(&Target::Holdfast.echo_frame("u1", &data)).unwrap();
        assert!(matches!(f, ClientFrame::Send(s) if s.to == "u1"));
    }
}
