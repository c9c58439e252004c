//! The session driven through an in-memory connection under paused time: heartbeat, in-band
//! auth timeout, token expiry and refresh, with no socket and no real sleep.
#![allow(clippy::unwrap_used)]

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, Stream};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::auth::{mint_token, unix_now, Claims};
use crate::{Config, MemoryBroker, Node};

const SECRET: &str = "session-test-secret";
/// Bound on any wait in these tests (virtual time: it costs nothing).
const WAIT: Duration = Duration::from_secs(3600);

/// The server's end of an in-memory connection: a stream of what the peer sent and a sink of
/// what the server writes.
struct Conn {
    incoming: UnboundedReceiver<Result<Message, io::Error>>,
    outgoing: UnboundedSender<Message>,
}

impl Stream for Conn {
    type Item = Result<Message, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl Sink<Message> for Conn {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> io::Result<()> {
        self.outgoing
            .send(item)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The test's end of the connection.
struct Peer {
    to_server: UnboundedSender<Result<Message, io::Error>>,
    from_server: UnboundedReceiver<Message>,
    /// When the connection was opened.
    opened: Instant,
    task: JoinHandle<()>,
}

impl Peer {
    /// The next frame the server wrote.
    async fn next(&mut self) -> Message {
        tokio::time::timeout(WAIT, self.from_server.recv())
            .await
            .expect("a frame within the wait")
            .expect("the server end is open")
    }

    /// The next frame, which must be a JSON text frame.
    async fn text(&mut self) -> Value {
        match self.next().await {
            Message::Text(t) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next frame, which must be a text frame of this `type`.
    async fn expect(&mut self, ty: &str) -> Value {
        let v = self.text().await;
        assert_eq!(v["type"], ty, "expected `{ty}`, got {v}");
        v
    }

    /// The next frame, which must be a close frame; returns its code.
    async fn expect_close(&mut self) -> u16 {
        match self.next().await {
            Message::Close(Some(f)) => f.code,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// The next frame, which must be a ping.
    async fn expect_ping(&mut self) {
        match self.next().await {
            Message::Ping(_) => {}
            other => panic!("expected a ping, got {other:?}"),
        }
    }

    fn send(&self, msg: Message) {
        self.to_server.send(Ok(msg)).unwrap();
    }

    fn send_json(&self, v: Value) {
        self.send(Message::Text(v.to_string().into()));
    }

    fn pong(&self) {
        self.send(Message::Pong(bytes::Bytes::new()));
    }

    /// Virtual time since the connection was opened.
    fn elapsed(&self) -> Duration {
        self.opened.elapsed()
    }

    /// Waits for the session task to end.
    async fn finished(self) {
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the session ends")
            .unwrap();
    }
}

fn node(tweak: impl FnOnce(&mut Config)) -> Node {
    let mut config = Config::default();
    config.auth.hmac_secret = SECRET.into();
    // These tests exercise rooms, not permissions.
    config.rooms.join = Some(crate::config::JoinMode::Open);
    tweak(&mut config);
    Node::new(config, MemoryBroker::new(), None)
}

fn claims(user: &str, ttl_secs: u64) -> Claims {
    Claims {
        sub: user.into(),
        exp: unix_now() + ttl_secs,
        ..Claims::default()
    }
}

/// Opens a connection to `node` through an in-memory pair; `pre_auth` as if the token came
/// with the upgrade.
fn open(node: &Node, pre_auth: Option<Claims>) -> Peer {
    let (to_server, incoming) = unbounded_channel();
    let (outgoing, from_server) = unbounded_channel();
    let admission = node.admit(IpAddr::from([127, 0, 0, 1])).unwrap();
    let conn = Conn { incoming, outgoing };
    let opened = Instant::now();
    let opening = Box::new(super::Opening {
        pre_auth,
        ..super::Opening::new(node.clone())
    });
    let task = tokio::spawn(super::run(
        conn,
        opening,
        admission,
        holdfast_protocol::Encoding::Json,
    ));
    Peer {
        to_server,
        from_server,
        opened,
        task,
    }
}

fn closes(node: &Node, code: &str) -> u64 {
    node.metrics()
        .close_total
        .with_label_values(&["websocket", code])
        .get()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(start_paused = true)]
async fn pings_every_interval_while_pongs_come_back() {
    let node = node(|c| {
        c.heartbeat.ping_interval_ms = 10_000;
        c.heartbeat.pong_timeout_ms = 20_000;
    });
    let mut peer = open(&node, Some(claims("ann", 3600)));
    peer.expect("welcome").await;
    for n in 1..=6 {
        peer.expect_ping().await;
        assert_eq!(
            peer.elapsed(),
            secs(10 * n),
            "ping {n} is one interval after the last"
        );
        peer.pong();
    }
    // The session is still alive and answers frames (read in order, after the last pong).
    peer.send_json(json!({"type":"ping","id":"p"}));
    assert_eq!(peer.expect("pong").await["id"], "p");
    assert_eq!(node.metrics().heartbeat_rtt.get_sample_count(), 6);
    assert_eq!(closes(&node, "4005"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_missing_pong_closes_with_4005_at_the_deadline() {
    let node = node(|c| {
        c.heartbeat.ping_interval_ms = 10_000;
        c.heartbeat.pong_timeout_ms = 20_000;
    });
    let mut peer = open(&node, Some(claims("zed", 3600)));
    peer.expect("welcome").await;
    peer.expect_ping().await;
    assert_eq!(peer.elapsed(), secs(10));
    // Text frames are not a pong: they do not keep the connection alive.
    tokio::time::sleep(secs(5)).await;
    peer.send_json(json!({"type":"ping","id":"app-level"}));
    peer.expect("pong").await;
    assert_eq!(peer.expect_close().await, 4005);
    assert_eq!(peer.elapsed(), secs(30), "pong_timeout after the ping");
    peer.finished().await;
    assert_eq!(closes(&node, "4005"), 1);
    assert_eq!(node.metrics().heartbeat_rtt.get_sample_count(), 0);
    assert_eq!(node.open_sessions(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_pong_resets_the_deadline_and_keeps_the_cadence() {
    let node = node(|c| {
        c.heartbeat.ping_interval_ms = 10_000;
        c.heartbeat.pong_timeout_ms = 4_000;
    });
    let mut peer = open(&node, Some(claims("pat", 3600)));
    peer.expect("welcome").await;
    peer.expect_ping().await;
    // A late pong, just inside the deadline.
    tokio::time::sleep(Duration::from_millis(3_900)).await;
    peer.pong();
    // The next ping is due one interval after the previous ping was sent.
    peer.expect_ping().await;
    assert_eq!(peer.elapsed(), secs(20));
    // This one is never answered: the deadline runs from the new ping.
    assert_eq!(peer.expect_close().await, 4005);
    assert_eq!(peer.elapsed(), secs(24));
    peer.finished().await;
    assert_eq!(node.metrics().heartbeat_rtt.get_sample_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn in_band_auth_times_out_with_4004() {
    let node = node(|c| c.auth.timeout_ms = 5_000);
    let mut peer = open(&node, None);
    // Frames before `auth` are answered but do not extend the deadline.
    tokio::time::sleep(secs(2)).await;
    peer.send_json(json!({"type":"join","room":"r","id":"j"}));
    let e = peer.expect("error").await;
    assert_eq!(e["code"], "not_authenticated");
    assert_eq!(e["id"], "j");
    assert_eq!(peer.expect_close().await, 4004);
    assert_eq!(peer.elapsed(), secs(5));
    peer.finished().await;
    assert_eq!(closes(&node, "4004"), 1);
    assert_eq!(node.open_sessions(), 0);
}

#[tokio::test(start_paused = true)]
async fn in_band_auth_in_time_starts_the_session() {
    let node = node(|c| c.auth.timeout_ms = 5_000);
    let mut peer = open(&node, None);
    tokio::time::sleep(Duration::from_millis(4_900)).await;
    peer.send_json(json!({"type":"auth","token":mint_token(SECRET, "amy", secs(600))}));
    assert_eq!(peer.expect("welcome").await["user_id"], "amy");
    // Past the auth deadline, the session goes on.
    tokio::time::sleep(secs(5)).await;
    peer.send_json(json!({"type":"ping","id":"still"}));
    assert_eq!(peer.expect("pong").await["id"], "still");
    assert_eq!(closes(&node, "4004"), 0);
}

/// Heartbeat far away, so only the token matters.
fn quiet_heartbeat(c: &mut Config) {
    c.heartbeat.ping_interval_ms = 100_000_000;
    c.heartbeat.pong_timeout_ms = 200_000_000;
}

#[tokio::test(start_paused = true)]
async fn the_session_closes_with_4002_when_its_token_expires() {
    let node = node(quiet_heartbeat);
    let mut peer = open(&node, Some(claims("tim", 100)));
    assert_eq!(peer.expect("welcome").await["user_id"], "tim");
    assert_eq!(peer.expect_close().await, 4002);
    // `exp` has a one-second resolution against the wall clock.
    let at = peer.elapsed();
    assert!(at >= secs(99) && at <= secs(100), "closed at {at:?}");
    peer.finished().await;
    assert_eq!(closes(&node, "4002"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_extends_the_session_past_its_first_token() {
    let node = node(quiet_heartbeat);
    let mut peer = open(&node, Some(claims("tom", 100)));
    peer.expect("welcome").await;
    tokio::time::sleep(secs(50)).await;
    // Another user's token is refused and changes nothing.
    peer.send_json(
        json!({"type":"refresh","token":mint_token(SECRET, "eve", secs(600)),"id":"r0"}),
    );
    let e = peer.expect("error").await;
    assert_eq!(e["code"], "token_user_mismatch");
    assert_eq!(e["id"], "r0");
    peer.send_json(
        json!({"type":"refresh","token":mint_token(SECRET, "tom", secs(600)),"id":"r1"}),
    );
    let r = peer.expect("refreshed").await;
    assert_eq!(r["id"], "r1");
    assert!(r["expires_at"].as_u64().unwrap() >= unix_now() + 599);
    // Well past the first token's expiry, the session is alive.
    tokio::time::sleep(secs(100)).await;
    peer.send_json(json!({"type":"ping","id":"still-here"}));
    assert_eq!(peer.expect("pong").await["id"], "still-here");
    // It ends when the new token does.
    assert_eq!(peer.expect_close().await, 4002);
    let at = peer.elapsed();
    assert!(at >= secs(649) && at <= secs(650), "closed at {at:?}");
    peer.finished().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_close_and_a_lost_connection_are_recorded() {
    let node = node(|_| {});
    let mut peer = open(&node, Some(claims("cy", 3600)));
    peer.expect("welcome").await;
    peer.send(Message::Close(Some(axum::extract::ws::CloseFrame {
        code: 1000,
        reason: "bye".into(),
    })));
    peer.finished().await;
    assert_eq!(closes(&node, "1000"), 1);

    let mut peer = open(&node, Some(claims("cy", 3600)));
    peer.expect("welcome").await;
    peer.to_server
        .send(Err(io::Error::from(io::ErrorKind::ConnectionReset)))
        .unwrap();
    peer.finished().await;
    assert_eq!(closes(&node, "1006"), 1);
    assert_eq!(node.open_sessions(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_drain_sends_the_notice_then_1001() {
    let node = node(|c| c.server.shutdown_reconnect_after_ms = 250);
    let mut peer = open(&node, Some(claims("dan", 3600)));
    peer.expect("welcome").await;
    // What the drain does to its sessions (`Drain::run`): the token, then a wake-up.
    node.inner.drain.token().cancel();
    node.inner.registry.wake_all();
    let notice = peer.expect("server_shutdown").await;
    assert_eq!(notice["reconnect_after_ms"], 250);
    assert_eq!(peer.expect_close().await, 1001);
    peer.finished().await;
    assert_eq!(closes(&node, "1001"), 1);
}

#[tokio::test(start_paused = true)]
async fn too_many_frames_before_auth_is_a_policy_violation() {
    let node = node(|_| {});
    let mut peer = open(&node, None);
    for n in 0..8 {
        peer.send(Message::Binary(bytes::Bytes::from_static(b"\x00")));
        let e = peer.expect("error").await;
        assert_ne!(e["code"], Value::Null, "frame {n}: {e}");
    }
    assert_eq!(peer.expect_close().await, 1008);
    peer.finished().await;
}

#[test]
fn an_oversized_frame_is_recognised_through_the_error_chain() {
    use super::frame::WsError;
    use super::ws::read_close_code;
    use holdfast_protocol::CloseCode;
    assert_eq!(
        read_close_code(&WsError::TooBig(1)),
        Some(CloseCode::MessageTooBig)
    );
    assert_eq!(
        read_close_code(&axum::Error::new(WsError::TooBig(1))),
        Some(CloseCode::MessageTooBig)
    );
    assert_eq!(
        read_close_code(&WsError::Utf8),
        Some(CloseCode::InvalidPayload)
    );
    assert_eq!(
        read_close_code(&axum::Error::new(WsError::Protocol("unmasked"))),
        Some(CloseCode::ProtocolError)
    );
    assert_eq!(read_close_code(&axum::Error::new(WsError::Closed)), None);
    assert_eq!(
        read_close_code(&WsError::Io(io::ErrorKind::ConnectionReset.into())),
        None
    );
    assert_eq!(
        read_close_code(&io::Error::from(io::ErrorKind::ConnectionReset)),
        None
    );
}

/// Sends an application-level ping and reads the answer: `pong`, or the error that dropped it.
async fn ping(peer: &mut Peer, n: u32) -> Value {
    peer.send_json(json!({"type": "ping", "id": format!("p{n}")}));
    peer.text().await
}

#[tokio::test(start_paused = true)]
async fn a_users_sessions_share_one_frame_budget_and_a_reconnect_does_not_refill_it() {
    let node = node(|c| {
        c.session.single_socket = crate::config::SingleSocket::Off;
        c.limits.rate_limit_per_sec = 1;
        c.limits.rate_limit_burst = 4;
        c.limits.rate_limit_strikes = 100;
    });
    let mut a = open(&node, Some(claims("alice", 3600)));
    a.expect("welcome").await;
    let mut b = open(&node, Some(claims("alice", 3600)));
    b.expect("welcome").await;
    for n in 0..2 {
        assert_eq!(ping(&mut a, n).await["type"], "pong");
        assert_eq!(ping(&mut b, n).await["type"], "pong");
    }
    // Four frames between the two sessions spent the user's burst.
    let over = ping(&mut a, 9).await;
    assert_eq!(over["code"], "rate_limited", "{over}");
    assert_eq!(over["id"], "p9");
    assert_eq!(ping(&mut b, 9).await["code"], "rate_limited");

    // Another user is not affected.
    let mut carol = open(&node, Some(claims("carol", 3600)));
    carol.expect("welcome").await;
    assert_eq!(ping(&mut carol, 0).await["type"], "pong");

    // Closing both sessions and coming back at once does not buy a fresh budget.
    for peer in [a, b] {
        peer.send(Message::Close(None));
        peer.finished().await;
    }
    let mut again = open(&node, Some(claims("alice", 3600)));
    again.expect("welcome").await;
    assert_eq!(ping(&mut again, 0).await["code"], "rate_limited");
}

#[tokio::test(start_paused = true)]
async fn send_is_rate_limited_per_sender() {
    let node = node(|c| {
        c.limits.send_rate_per_sec = 1;
        c.limits.send_rate_burst = 2;
    });
    let mut a = open(&node, Some(claims("alice", 3600)));
    a.expect("welcome").await;
    let mut bob = open(&node, Some(claims("bob", 3600)));
    bob.expect("welcome").await;
    for n in 0..2 {
        a.send_json(json!({"type": "send", "to": "bob", "data": n, "id": format!("s{n}")}));
        assert_eq!(a.expect("ack").await["id"], format!("s{n}"));
        assert_eq!(bob.expect("message").await["data"], n);
    }
    a.send_json(json!({"type": "send", "to": "bob", "data": 2, "id": "s2"}));
    let e = a.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("rate_limited"), Some("s2"))
    );
    // Other frames still pass: the frame budget is separate.
    assert_eq!(ping(&mut a, 0).await["type"], "pong");
    // Another sender has its own budget.
    bob.send_json(json!({"type": "send", "to": "alice", "data": "hi", "id": "b0"}));
    assert_eq!(bob.expect("ack").await["id"], "b0");
}

/// What an idle connection's task holds: the session loop's state and the connection task's
/// own state, both without the transient states of frame handling, auth or close (boxed, and
/// freed when done). A regression here costs memory on every connection.
#[tokio::test(start_paused = true)]
async fn the_session_futures_stay_small() {
    let node = node(|_| {});
    let (_to_server, incoming) = unbounded_channel();
    let (outgoing, _from_server) = unbounded_channel();
    let mut conn = Conn { incoming, outgoing };
    let admission = node.admit(IpAddr::from([127, 0, 0, 1])).unwrap();
    let mut session = crate::session::Session::start(
        node.clone(),
        Box::new(claims("size", 3600)),
        holdfast_protocol::Encoding::Json,
    )
    .await;
    let drive = super::ws::drive(&mut session, &mut conn);
    let drive_size = std::mem::size_of_val(&drive);
    drop(drive);
    let (_to_server, incoming) = unbounded_channel();
    let (outgoing, _from_server) = unbounded_channel();
    let run = super::run(
        Conn { incoming, outgoing },
        Box::new(super::Opening::new(node.clone())),
        admission,
        holdfast_protocol::Encoding::Json,
    );
    let run_size = std::mem::size_of_val(&run);
    eprintln!("drive {drive_size} B, run {run_size} B");
    // The real task, as `/ws` spawns it on the node's tracker.
    let (_to_server, _) = unbounded_channel::<()>();
    let admission = node.admit(IpAddr::from([127, 0, 0, 1])).unwrap();
    let (_, task) = crate::http::session_task(
        crate::upgrade::Handshake::for_tests(),
        crate::upgrade::websocket_config(1024, 1024),
        super::Opening::new(node.clone()),
        admission,
        holdfast_protocol::Encoding::Json,
        None,
    );
    let task = node.inner.drain.tracker().track_future(task);
    let task_size = std::mem::size_of_val(&task);
    eprintln!("task {task_size} B");
    // Measured at 48, 176 and 280 bytes. `run` holds `drive` inline (and the session, which
    // `drive` borrows); the real socket adds its own size (104 bytes) to `run` once; tokio's
    // task cell adds about 104 bytes to the task and is rounded up to a multiple of 128: 280
    // bytes make a 384-byte cell, 288 a 512-byte one.
    assert!(drive_size <= 56, "drive {drive_size} B");
    assert!(run_size <= 184, "run {run_size} B");
    assert!(task_size <= 280, "task {task_size} B");
}
