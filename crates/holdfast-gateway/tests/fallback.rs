//! The SSE and long-polling transports over real HTTP connections.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::Request;
use serde_json::{json, Value};
use support::*;
use tokio::net::TcpStream;

/// Sends one HTTP/1.1 request on a fresh connection and returns the response.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> hyper::Response<Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    sender.send_request(req).await.unwrap()
}

async fn body_json(resp: hyper::Response<Incoming>) -> Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// A parsed SSE stream.
struct SseReader {
    body: Incoming,
    buf: String,
}

#[derive(Debug, Default)]
struct SseMessage {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

impl SseReader {
    async fn next(&mut self) -> Option<SseMessage> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut m = SseMessage::default();
                for line in block.lines() {
                    if let Some(v) = line
                        .strip_prefix("id: ")
                        .or_else(|| line.strip_prefix("id:"))
                    {
                        m.id = Some(v.to_owned());
                    } else if let Some(v) = line
                        .strip_prefix("event: ")
                        .or_else(|| line.strip_prefix("event:"))
                    {
                        m.event = Some(v.to_owned());
                    } else if let Some(v) = line
                        .strip_prefix("data: ")
                        .or_else(|| line.strip_prefix("data:"))
                    {
                        m.data.push_str(v);
                    }
                }
                if m.data.is_empty() && m.event.is_none() {
                    continue; // keep-alive comment
                }
                return Some(m);
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    async fn frame(&mut self) -> (String, Value) {
        let m = self.next().await.expect("an SSE message");
        assert!(
            m.event.is_none(),
            "unexpected event {:?}: {}",
            m.event,
            m.data
        );
        (m.id.unwrap(), serde_json::from_str(&m.data).unwrap())
    }

    async fn until(&mut self, ty: &str) -> (String, Value) {
        for _ in 0..1000 {
            let (id, v) = self.frame().await;
            if v["type"] == ty {
                return (id, v);
            }
        }
        panic!("no {ty}");
    }
}

async fn open_sse(addr: SocketAddr, user: &str, last_event_id: Option<&str>) -> SseReader {
    let path = format!("/sse?token={}", token(user));
    let mut headers = vec![("accept", "text/event-stream")];
    if let Some(l) = last_event_id {
        headers.push(("last-event-id", l));
    }
    let resp = request(addr, "GET", &path, &headers, "").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    SseReader {
        body: resp.into_body(),
        buf: String::new(),
    }
}

async fn post_frames(
    addr: SocketAddr,
    endpoint: &str,
    user: &str,
    session: &str,
    body: Value,
) -> u16 {
    let path = format!("{endpoint}?session={session}");
    let bearer = format!("Bearer {}", token(user));
    request(
        addr,
        "POST",
        &path,
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        &body.to_string(),
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test]
async fn sse_session_chats_with_a_websocket_member_and_resumes_by_last_event_id() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let mut sse = open_sse(addr, "sam", None).await;
    let (id1, welcome) = sse.frame().await;
    assert_eq!(welcome["type"], "welcome");
    let sid = welcome["session_id"].as_str().unwrap().to_owned();
    assert_eq!(id1, format!("{sid}.1"));

    let (mut ws, _) = Client::connect(addr, "wendy").await;
    ws.join("chat").await;
    assert_eq!(
        post_frames(addr, "/sse/send", "sam", &sid, json!([{"type":"join","room":"chat"},{"type":"publish","room":"chat","data":"hi from sse","id":"s1"}])).await,
        202
    );
    let (_, joined) = sse.frame().await;
    assert_eq!(joined["type"], "joined");
    let (_, ev) = sse.frame().await;
    assert_eq!(ev["data"], "hi from sse");
    let (_, ack) = sse.frame().await;
    assert_eq!(ack["type"], "ack");
    ws.expect_presence("online").await;
    assert_eq!(ws.expect("event").await["data"], "hi from sse");

    // The stream drops; messages published meanwhile are replayed from Last-Event-ID.
    let (last_id, _) = (format!("{sid}.4"), ());
    drop(sse);
    ws.send(json!({"type":"publish","room":"chat","data":"while away"}))
        .await;
    ws.expect("event").await;
    let mut sse = open_sse(addr, "sam", Some(&last_id)).await;
    let (id, ev) = sse.frame().await;
    assert_eq!(id, format!("{sid}.5"), "same session, next position");
    assert_eq!(ev["data"], "while away");

    // Errors come back on the stream like on a WebSocket.
    assert_eq!(
        post_frames(addr, "/sse/send", "sam", &sid, json!({"type":"nope"})).await,
        202
    );
    let (_, err) = sse.frame().await;
    assert_eq!(err["code"], "unknown_type");
    // Another user cannot post into this session.
    assert_eq!(
        post_frames(addr, "/sse/send", "mallory", &sid, json!({"type":"ping"})).await,
        401
    );
    assert_eq!(
        post_frames(addr, "/sse/send", "sam", "no-such", json!({"type":"ping"})).await,
        404
    );
}

#[tokio::test]
async fn single_socket_spans_transports() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let mut sse = open_sse(addr, "dual", None).await;
    sse.frame().await;
    let (_ws, _) = Client::connect(addr, "dual").await;
    let m = sse.next().await.unwrap();
    assert_eq!(m.event.as_deref(), Some("close"));
    let closed: Value = serde_json::from_str(&m.data).unwrap();
    assert_eq!(closed["code"], 4000);
    assert!(
        sse.next().await.is_none(),
        "the stream ends after the close"
    );
}

#[tokio::test]
async fn long_polling_session_with_acknowledged_positions() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let first = body_json(
        request(
            addr,
            "GET",
            &format!("/poll?token={}", token("pat")),
            &[],
            "",
        )
        .await,
    )
    .await;
    let sid = first["session_id"].as_str().unwrap().to_owned();
    assert_eq!(first["frames"][0]["id"], 1);
    assert_eq!(first["frames"][0]["frame"]["type"], "welcome");
    assert_eq!(
        post_frames(
            addr,
            "/poll/send",
            "pat",
            &sid,
            json!({"type":"join","room":"r","id":"j"})
        )
        .await,
        202
    );
    let path = format!("/poll?token={}&session={sid}&after=1", token("pat"));
    let r = body_json(request(addr, "GET", &path, &[], "").await).await;
    assert_eq!(r["frames"][0]["id"], 2);
    assert_eq!(r["frames"][0]["frame"]["type"], "joined");

    // A poll waits for the next frame.
    let (mut ws, _) = Client::connect(addr, "wes").await;
    let waiting = tokio::spawn(async move {
        let path = format!("/poll?token={}&session={sid}&after=2", token("pat"));
        body_json(request(addr, "GET", &path, &[], "").await).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws.join("r").await;
    let r = waiting.await.unwrap();
    assert_eq!(r["frames"][0]["frame"]["type"], "presence");
    assert_eq!(r["frames"][0]["frame"]["changes"][0]["status"], "online");
    assert!(r["closed"].is_null());
}

#[tokio::test]
async fn fallback_sessions_expire_when_the_client_stops_polling() {
    let mut cfg = test_config();
    cfg.fallback.session_timeout_ms = 300;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let (mut ws, _) = Client::connect(addr, "watcher").await;
    ws.join("r").await;
    let first = body_json(
        request(
            addr,
            "GET",
            &format!("/poll?token={}", token("gone")),
            &[],
            "",
        )
        .await,
    )
    .await;
    let sid = first["session_id"].as_str().unwrap().to_owned();
    post_frames(
        addr,
        "/poll/send",
        "gone",
        &sid,
        json!({"type":"join","room":"r"}),
    )
    .await;
    ws.expect_presence("online").await;
    // No more polls: the session ends and the member turns away like a dropped WebSocket.
    assert_eq!(ws.expect_presence("away").await["user_id"], "gone");
    assert!(
        eventually(|| async {
            metric(
                addr,
                "holdfast_close_total{code=\"4005\",transport=\"longpoll\"}",
            )
            .await
                == 1.0
        })
        .await
    );
    // The long-poll session is counted as such, never as a WebSocket.
    let opened = "holdfast_connections_opened_total{transport=\"longpoll\"}";
    assert_eq!(metric(addr, opened).await, 1.0);
    let ws_closed = "holdfast_close_total{code=\"4005\",transport=\"websocket\"}";
    assert_eq!(metric(addr, ws_closed).await, 0.0);
}

#[tokio::test]
async fn delete_ends_a_fallback_session_at_once() {
    let mut cfg = test_config();
    cfg.fallback.session_timeout_ms = 60_000;
    let gw = start(cfg).await;
    let addr = gw.local_addr();
    let (mut ws, _) = Client::connect(addr, "watcher").await;
    ws.join("r").await;
    let mut sse = open_sse(addr, "leaver", None).await;
    let (_, welcome) = sse.frame().await;
    let sid = welcome["session_id"].as_str().unwrap().to_owned();
    post_frames(
        addr,
        "/sse/send",
        "leaver",
        &sid,
        json!({"type":"join","room":"r"}),
    )
    .await;
    ws.expect_presence("online").await;
    let bearer = format!("Bearer {}", token("leaver"));
    let auth = [("authorization", bearer.as_str())];
    let path = format!("/sse?session={sid}");
    // Another user may not end it.
    let other = format!("Bearer {}", token("mallory"));
    let resp = request(addr, "DELETE", &path, &[("authorization", &other)], "").await;
    assert_eq!(resp.status(), 401);
    let resp = request(addr, "DELETE", &path, &auth, "").await;
    assert_eq!(resp.status(), 204);
    // The stream ends with close 1000, and the member turns away without waiting for the
    // session timeout.
    loop {
        let m = sse.next().await.expect("the close event");
        if m.event.as_deref() == Some("close") {
            assert_eq!(
                serde_json::from_str::<Value>(&m.data).unwrap()["code"],
                1000
            );
            break;
        }
    }
    assert_eq!(ws.expect_presence("away").await["user_id"], "leaver");
    let closed = "holdfast_close_total{code=\"1000\",transport=\"sse\"}";
    assert!(eventually(|| async { metric(addr, closed).await == 1.0 }).await);
    let resp = request(addr, "DELETE", "/poll?session=nope", &auth, "").await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn drain_reaches_fallback_sessions() {
    let gw = start(test_config()).await;
    let addr = gw.local_addr();
    let mut sse = open_sse(addr, "d", None).await;
    sse.frame().await;
    let drain = tokio::spawn(gw.shutdown());
    let (_, notice) = sse.until("server_shutdown").await;
    assert_eq!(notice["reconnect_after_ms"], 1000);
    let m = sse.next().await.unwrap();
    assert_eq!(m.event.as_deref(), Some("close"));
    assert!(m.data.contains("1001"));
    assert_eq!(
        drain.await.unwrap(),
        holdfast_gateway::DrainOutcome::Complete
    );
}
