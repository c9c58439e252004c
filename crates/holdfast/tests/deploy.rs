//! The deploy kit run for real: `deploy/nginx.conf` and `deploy/haproxy.cfg` in front of two
//! `holdfast serve` processes on 127.0.0.1. Only the upstream addresses, the listen line (no
//! TLS termination here), and for HAProxy the health-check interval are substituted; every
//! other line is the shipped file.
//!
//! Needs `nginx` and `haproxy` (scripts/test installs them with apt-get when it runs as root);
//! set HOLDFAST_SKIP_PROXY_TESTS=1 to skip on a machine without them.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use holdfast_testkit::{free_port, http_get, token, try_connect, Ws};
use serde_json::{json, Value};
use support::{repo_root, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

fn find(bin: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
    ]
    .iter()
    .map(|d| Path::new(d).join(bin))
    .find(|p| p.exists())
}

/// The proxy binary, or `None` when the tests are skipped on purpose.
fn proxy(bin: &str) -> Option<PathBuf> {
    if std::env::var_os("HOLDFAST_SKIP_PROXY_TESTS").is_some() {
        eprintln!("HOLDFAST_SKIP_PROXY_TESTS set: not running the {bin} test");
        return None;
    }
    match find(bin) {
        Some(p) => Some(p),
        None => panic!(
            "{bin} is not installed: run scripts/test as root (it installs it), or \
             apt-get install {bin}, or set HOLDFAST_SKIP_PROXY_TESTS=1"
        ),
    }
}

/// A proxy process, killed on drop.
struct Proxy {
    child: Child,
    dir: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would orphan them).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_port(addr: SocketAddr, what: &str) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on {addr}");
}

/// The shipped file with its example upstreams replaced by `nodes`.
fn substitute(
    file: &str,
    server_line: impl Fn(usize, SocketAddr) -> String,
    nodes: &[SocketAddr],
) -> String {
    let text = std::fs::read_to_string(repo_root().join("deploy").join(file)).unwrap();
    let mut out = Vec::new();
    let mut replaced = false;
    for line in text.lines() {
        // Routes to the example's third node, which the test does not run.
        if line.contains(&format!("use-server n{} ", nodes.len() + 1)) {
            continue;
        }
        if line.contains("10.0.0.1") && line.trim_start().starts_with("server ") {
            if !replaced {
                for (i, n) in nodes.iter().enumerate() {
                    out.push(server_line(i, *n));
                }
                replaced = true;
            }
            continue;
        }
        out.push(line.to_owned());
    }
    assert!(replaced, "no upstream servers found in deploy/{file}");
    let mut text = out.join("\n") + "\n";
    // Addresses elsewhere in the file (the fallback-session routes) name the same nodes.
    for (i, n) in nodes.iter().enumerate() {
        text = text.replace(&format!("10.0.0.1{}:8080", i + 1), &n.to_string());
    }
    text
}

fn node_env(id: &str, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("HOLDFAST_SERVER__NODE_ID", id.to_owned()),
        (
            "HOLDFAST_SERVER__TRUSTED_PROXIES",
            "[\"127.0.0.1\"]".to_owned(),
        ),
        ("HOLDFAST_LOG__FORMAT", "json".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env
}

async fn ws_through(
    addr: SocketAddr,
    user: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, Value), u16> {
    let mut c = try_connect(addr, &format!("?token={}", token(user)), headers).await?;
    let welcome = read_frame(&mut c.ws).await.expect("welcome");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    Ok((c.ws, welcome))
}

/// The next JSON text frame; `Err(code)` when the connection closed (1006 without a close
/// frame).
async fn read_frame(ws: &mut Ws) -> Result<Value, u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Err(_) => panic!("no frame within 10 s"),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(f)))) => {
                return Err(f.map(|f| u16::from(f.code)).unwrap_or(1005))
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return Err(1006),
        }
    }
}

async fn until(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let f = read_frame(ws)
            .await
            .unwrap_or_else(|c| panic!("closed {c} waiting for {ty}"));
        if f["type"] == ty {
            return f;
        }
    }
}

/// A raw HTTP/1.1 request; returns the status and the socket for reading the rest.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: realtime.example.com\r\nContent-Type: application/json\r\n\
         X-Forwarded-For: 198.51.100.20\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The JSON object of a (possibly chunked) response body.
fn json_body(resp: &str) -> Value {
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    let start = body.find('{').unwrap();
    let end = body.rfind('}').unwrap();
    serde_json::from_str(&body[start..=end]).unwrap()
}

#[tokio::test]
async fn nginx_carries_websocket_sse_and_long_polling_with_the_client_address() {
    let Some(nginx) = proxy("nginx") else { return };
    let a = Node::start(&node_env(
        "n1",
        &[("HOLDFAST_LIMITS__MAX_CONNECTIONS_PER_IP", "1")],
    ))
    .await;
    let b = Node::start(&node_env(
        "n2",
        &[("HOLDFAST_LIMITS__MAX_CONNECTIONS_PER_IP", "1")],
    ))
    .await;
    let port = free_port();
    let conf = substitute(
        "nginx.conf",
        |_, n| format!("        server {n} max_fails=0;"),
        &[a.addr, b.addr],
    )
    .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port};"))
    .lines()
    .filter(|l| !l.contains("ssl_certificate"))
    .collect::<Vec<_>>()
    .join("\n");
    let dir = std::env::temp_dir().join(format!("holdfast-nginx-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let globals = format!(
        "daemon off; pid {0}/nginx.pid; error_log {0}/logs/error.log warn;",
        dir.display()
    );
    let check = Command::new(&nginx)
        .args([
            "-t",
            "-p",
            dir.to_str().unwrap(),
            "-c",
            conf_path.to_str().unwrap(),
            "-g",
            &globals,
        ])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(&nginx)
        .args([
            "-p",
            dir.to_str().unwrap(),
            "-c",
            conf_path.to_str().unwrap(),
            "-g",
            &globals,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _nginx = Proxy { child, dir };
    wait_port(addr, "nginx").await;

    // WebSocket: a room across both nodes' sessions. Four clients whose forwarded addresses
    // differ all get in although each node allows one session per address: nginx passed the
    // client address and the nodes used it (without it, all four would be 127.0.0.1).
    let mut clients = Vec::new();
    for i in 1..=4 {
        let ip = format!("203.0.113.{i}");
        let (ws, welcome) = ws_through(addr, &format!("u{i}"), &[("x-forwarded-for", &ip)])
            .await
            .unwrap_or_else(|s| panic!("client {ip} refused with {s}"));
        clients.push((ws, welcome));
    }
    let nodes: std::collections::BTreeSet<_> = clients
        .iter()
        .map(|(_, w)| w["node_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(nodes.len(), 2, "least_conn spreads sessions: {nodes:?}");
    let (ws, _) = &mut clients[0];
    ws.send(Message::text(
        json!({"type":"join","room":"lobby"}).to_string(),
    ))
    .await
    .unwrap();
    until(ws, "joined").await;
    ws.send(Message::text(
        json!({"type":"publish","room":"lobby","data":"hi","id":"m1"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(until(ws, "event").await["data"], "hi");
    // The log line of the session shows the client's address, not nginx's.
    let seen = |n: &Node| {
        n.lines()
            .iter()
            .any(|l| l.contains("session started") && l.contains("\"peer\":\"203.0.113.1\""))
    };
    for _ in 0..40 {
        if seen(&a) || seen(&b) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen(&a) || seen(&b),
        "no session line with the forwarded address"
    );

    // SSE: the welcome arrives while the stream stays open (no buffering), and a frame sent
    // with /sse/send comes back on the stream.
    let mut sse = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /sse?token={} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\
         X-Forwarded-For: 198.51.100.10\r\n\r\n",
        token("sse-user")
    );
    sse.write_all(req.as_bytes()).await.unwrap();
    let mut seen_text = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen_text.contains("\"welcome\"") {
        assert!(
            Instant::now() < deadline,
            "no SSE welcome through nginx: {seen_text}"
        );
        let n = tokio::time::timeout(Duration::from_secs(5), sse.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "SSE stream ended: {seen_text}");
        seen_text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen_text.starts_with("HTTP/1.1 200"), "{seen_text}");
    let data = seen_text
        .lines()
        .find(|l| l.starts_with("data:") && l.contains("welcome"))
        .unwrap();
    let welcome: Value = serde_json::from_str(data.trim_start_matches("data:").trim()).unwrap();
    let sid = welcome["session_id"].as_str().unwrap().to_owned();
    let (status, _) = http(
        addr,
        "POST",
        &format!("/sse/send?session={sid}&token={}", token("sse-user")),
        &json!({"type":"join","room":"lobby"}).to_string(),
    )
    .await;
    assert!((200..300).contains(&status), "sse send: {status}");
    while !seen_text.contains("\"joined\"") {
        assert!(
            Instant::now() < deadline + Duration::from_secs(5),
            "no joined on the SSE stream"
        );
        let n = tokio::time::timeout(Duration::from_secs(5), sse.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        seen_text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }

    // Long-polling: open, send a join, poll for the reply.
    let (status, resp) = http(addr, "GET", &format!("/poll?token={}", token("poller")), "").await;
    assert_eq!(status, 200, "{resp}");
    let opened = json_body(&resp);
    let sid = opened["session_id"].as_str().unwrap().to_owned();
    let last = opened["frames"].as_array().unwrap().len();
    let (status, _) = http(
        addr,
        "POST",
        &format!("/poll/send?session={sid}&token={}", token("poller")),
        &json!({"type":"join","room":"lobby"}).to_string(),
    )
    .await;
    assert!((200..300).contains(&status));
    let (status, resp) = http(
        addr,
        "GET",
        &format!("/poll?session={sid}&after={last}&token={}", token("poller")),
        "",
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert!(resp.contains("\"joined\""), "{resp}");

    // /metrics is not served to the public through the proxy.
    assert_eq!(http_get(addr, "/metrics").await.0, 404);
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
}

/// One client under load: publishes into its own room every 20 ms and reads its acks until
/// the connection ends. Returns (node, acks after `mark`, saw server_shutdown, close code).
async fn loaded_client(
    mut ws: Ws,
    node: String,
    room: String,
    mark: tokio::sync::watch::Receiver<bool>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (String, u32, bool, Option<u16>) {
    ws.send(Message::text(
        json!({"type":"join","room":room}).to_string(),
    ))
    .await
    .unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut n, mut acks_after, mut shutdown) = (0u64, 0u32, false);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if *stop.borrow() {
                    return (node, acks_after, shutdown, None);
                }
                n += 1;
                let frame = json!({"type":"publish","room":room,"data":n,"id":format!("m{n}")});
                if ws.send(Message::text(frame.to_string())).await.is_err() {
                    // The close frame may still be in the read buffer.
                    let code = loop {
                        match read_frame(&mut ws).await {
                            Ok(f) => if f["type"] == "server_shutdown" { shutdown = true },
                            Err(c) => break c,
                        }
                    };
                    return (node, acks_after, shutdown, Some(code));
                }
            }
            f = read_frame(&mut ws) => match f {
                Ok(f) => {
                    if f["type"] == "ack" && *mark.borrow() {
                        acks_after += 1;
                    }
                    if f["type"] == "server_shutdown" {
                        shutdown = true;
                    }
                }
                Err(code) => return (node, acks_after, shutdown, Some(code)),
            }
        }
    }
}

#[tokio::test]
async fn haproxy_stops_routing_to_a_draining_node_without_cutting_its_sessions() {
    let Some(haproxy) = proxy("haproxy") else {
        return;
    };
    let drain = [
        ("HOLDFAST_SERVER__DRAIN_DELAY_MS", "3000"),
        ("HOLDFAST_SERVER__DRAIN_TIMEOUT_SECS", "5"),
    ];
    let a = Node::start(&node_env("n1", &drain)).await;
    let b = Node::start(&node_env("n2", &drain)).await;
    let port = free_port();
    let conf = substitute(
        "haproxy.cfg",
        |i, n| format!("    server n{} {n} check", i + 1),
        &[a.addr, b.addr],
    )
    .replace(
        "bind :443 ssl crt /etc/ssl/realtime.pem",
        &format!("bind 127.0.0.1:{port}"),
    )
    // Faster checks than production so the test takes seconds; fall/rise are the shipped ones.
    .replace("inter 2s", "inter 200ms")
    // This machine's descriptor limit is lower than production's.
    .replace("maxconn 200000", "maxconn 4000");
    let dir = std::env::temp_dir().join(format!("holdfast-haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf_path = dir.join("haproxy.cfg");
    std::fs::write(&conf_path, &conf).unwrap();
    let check = Command::new(&haproxy)
        .args(["-c", "-f", conf_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy -c: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(&haproxy)
        .args(["-db", "-f", conf_path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _haproxy = Proxy { child, dir };
    wait_port(addr, "haproxy").await;
    // Both servers up (rise 2).
    tokio::time::sleep(Duration::from_millis(700)).await;

    let (mark_tx, mark) = tokio::sync::watch::channel(false);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (ws, welcome) = ws_through(addr, &format!("load{i}"), &[]).await.unwrap();
        let node = welcome["node_id"].as_str().unwrap().to_owned();
        tasks.push(tokio::spawn(loaded_client(
            ws,
            node,
            format!("room{i}"),
            mark.clone(),
            stop.clone(),
        )));
    }

    // Drain node A: it turns unready at once and keeps its sessions for 3 s.
    a.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(http_get(a.addr, "/readyz").await.0, 503);
    // fall 3 × inter 200 ms: HAProxy has marked A down well before 1.5 s.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    mark_tx.send_replace(true);
    // New sessions now all go to B.
    for i in 0..6 {
        let (ws, welcome) = ws_through(addr, &format!("late{i}"), &[]).await.unwrap();
        assert_eq!(
            welcome["node_id"], "n2",
            "a new session went to the draining node"
        );
        drop(ws);
    }
    // Past the drain delay and the close.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop_tx.send_replace(true);
    let mut on_a = 0;
    for t in tasks {
        let (node, acks_after, shutdown, code) = t.await.unwrap();
        if node == "n1" {
            on_a += 1;
            // Still served after HAProxy marked the node down, then told and closed by the
            // node itself: 1001 after server_shutdown, never a cut.
            assert!(
                acks_after > 0,
                "a session on the draining node was cut early"
            );
            assert!(shutdown, "no server_shutdown on a draining node's session");
            assert_eq!(
                code,
                Some(1001),
                "a draining node's session ended with {code:?}"
            );
        } else {
            assert_eq!(
                code, None,
                "a session on the healthy node ended with {code:?}"
            );
            assert!(acks_after > 0);
        }
    }
    assert!(
        (5..=15).contains(&on_a),
        "leastconn spread: {on_a} of 20 on A"
    );
    drop(b);
}
