//! A cluster of `holdfast serve` processes on a real Redis behind a load-balancing proxy,
//! driven by the Rust client: rolling restarts and node crashes lose and duplicate nothing.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holdfast_client::{Backoff, Client, ClientConfig, ClientEvent, Events};
use holdfast_testkit::{free_port, Redis};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const SECRET: &str = "cluster-cli-secret";
const API_KEY: &str = "cluster-cli-api-key-0123";

/// One `holdfast serve` process on a fixed port, restartable.
struct NodeProc {
    name: String,
    port: u16,
    /// The internal listener's port: every process needs its own.
    api_port: u16,
    redis: u16,
    child: Option<Child>,
}

impl NodeProc {
    async fn start(name: &str, redis: u16) -> NodeProc {
        let mut n = NodeProc {
            name: name.into(),
            port: free_port(),
            api_port: free_port(),
            redis,
            child: None,
        };
        n.spawn().await;
        n
    }

    fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    async fn spawn(&mut self) {
        let child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .env("HOLDFAST_AUTH__HMAC_SECRET", SECRET)
            .env("HOLDFAST_ROOMS__JOIN", "open")
            .env(
                "HOLDFAST_BROKER__URL",
                format!("redis://127.0.0.1:{}/", self.redis),
            )
            .env("HOLDFAST_SERVER__NODE_ID", &self.name)
            .env(
                "HOLDFAST_API__LISTEN",
                format!("127.0.0.1:{}", self.api_port),
            )
            .env("HOLDFAST_API__KEYS", format!("[\"{API_KEY}\"]"))
            .env("HOLDFAST_SERVER__SHUTDOWN_RECONNECT_AFTER_MS", "50")
            .env("HOLDFAST_SERVER__DRAIN_TIMEOUT_SECS", "5")
            .env("HOLDFAST_LIMITS__RATE_LIMIT_PER_SEC", "10000")
            .env("HOLDFAST_LIMITS__RATE_LIMIT_BURST", "10000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..400 {
            if ready(self.addr()).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("node {} did not become ready", self.name);
    }

    /// SIGTERM: drain, then exit 0.
    async fn terminate(&mut self) {
        let mut child = self.child.take().unwrap();
        let pid = child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(
            status.success(),
            "{} drained and exited 0: {status}",
            self.name
        );
    }

    /// SIGKILL: the node dies without telling anyone.
    async fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().await.unwrap();
    }
}

async fn ready(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    let req = "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.1 200")
}

/// A TCP load balancer: each connection goes to the next backend that accepts it.
async fn load_balancer(backends: Vec<SocketAddr>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let backends = backends.clone();
            let next = next.clone();
            tokio::spawn(async move {
                for _ in 0..backends.len() {
                    let i = next.fetch_add(1, Ordering::Relaxed) % backends.len();
                    if let Ok(mut outbound) = TcpStream::connect(backends[i]).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn client(lb: SocketAddr, user: &str) -> (Client, Events) {
    let token = holdfast_gateway::auth::mint_token(SECRET, user, Duration::from_secs(600));
    let cfg = ClientConfig::new(format!("ws://{lb}/ws"), token).with_backoff(
        Backoff::new(Duration::from_millis(20), Duration::from_millis(300), 1.0).unwrap(),
    );
    Client::connect(cfg).await.unwrap()
}

type Seen = Arc<std::sync::Mutex<Vec<(u64, serde_json::Value, bool)>>>;

/// Collects the room events (and counts the connections) of one client in a background task.
fn collect(mut events: Events) -> (Seen, Arc<AtomicUsize>) {
    let seen: Seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let out = seen.clone();
    let count = connections.clone();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            match e {
                ClientEvent::Connected { .. } => {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                ClientEvent::Event(ev) => out.lock().unwrap().push((ev.seq, ev.data, false)),
                ClientEvent::Gap { from, .. } => {
                    out.lock().unwrap().push((from, json!(null), true))
                }
                _ => {}
            }
        }
    });
    (seen, connections)
}

async fn publish_until(client: Client, stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut acks = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && n < 5_000 {
        let seq = tokio::time::timeout(
            Duration::from_secs(20),
            client.publish("r", json!({"n": n})),
        )
        .await
        .expect("publish answered in time")
        .unwrap_or_else(|e| panic!("publish {n}: {e}"));
        acks.push(seq);
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    acks
}

async fn assert_exactly_once(
    name: &str,
    seen: &std::sync::Mutex<Vec<(u64, serde_json::Value, bool)>>,
    acks: &[u64],
) {
    let last = *acks.last().unwrap();
    for _ in 0..400 {
        if seen.lock().unwrap().iter().any(|(s, _, _)| *s >= last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.iter().any(|(_, _, gap)| *gap), "{name}: no gap");
    let got: Vec<(u64, serde_json::Value)> = seen
        .into_iter()
        .filter(|(s, _, _)| acks.contains(s))
        .map(|(s, d, _)| (s, d))
        .collect();
    let expected: Vec<(u64, serde_json::Value)> = acks
        .iter()
        .enumerate()
        .map(|(n, s)| (*s, json!({"n": n})))
        .collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "{name}: every event exactly once"
    );
    assert_eq!(got, expected, "{name}: in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_three_nodes_loses_and_duplicates_nothing() {
    let redis = Redis::start();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(NodeProc::start(&format!("n{i}"), redis.port).await);
    }
    let lb = load_balancer(nodes.iter().map(NodeProc::addr).collect()).await;
    let (publisher, pub_events) = client(lb, "publisher").await;
    publisher.join("r").await.unwrap();
    let (_pub_seen, pub_connections) = collect(pub_events);
    let mut subscribers = Vec::new();
    for i in 0..3 {
        let (c, ev) = client(lb, &format!("sub{i}")).await;
        c.join("r").await.unwrap();
        subscribers.push((c, collect(ev)));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(publish_until(publisher.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for node in nodes.iter_mut() {
        node.terminate().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        node.spawn().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let acks = publishing.await.unwrap();
    assert!(acks.len() > 50, "published throughout: {}", acks.len());
    assert!(acks.windows(2).all(|w| w[0] < w[1]));
    for (i, (_, (seen, connections))) in subscribers.iter().enumerate() {
        assert_exactly_once(&format!("sub{i}"), seen, &acks).await;
        assert!(
            connections.load(Ordering::Relaxed) >= 2,
            "sub{i} was moved to another node at least once"
        );
    }
    assert!(pub_connections.load(Ordering::Relaxed) >= 2);
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_after_kill_9() {
    let redis = Redis::start();
    let mut a = NodeProc::start("a", redis.port).await;
    let b = NodeProc::start("b", redis.port).await;
    // The load balancer sends the first connection to `a`, the second to `b`.
    let lb = load_balancer(vec![a.addr(), b.addr()]).await;
    let (victim, victim_events) = client(lb, "victim").await;
    let (publisher, _pe) = client(lb, "publisher").await;
    victim.join("r").await.unwrap();
    publisher.join("r").await.unwrap();
    let (seen, connections) = collect(victim_events);
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(publish_until(publisher.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let acks = publishing.await.unwrap();
    assert_exactly_once("victim", &seen, &acks).await;
    assert!(
        connections.load(Ordering::Relaxed) >= 2,
        "the victim reconnected"
    );
    drop(b);
    drop(redis);
}

/// A node killed with SIGKILL says nothing: its liveness lease passes and the surviving node
/// turns its members away (presence `away`), so they can resume within the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_members_turn_away_when_its_lease_passes() {
    killed_nodes_members_turn_away(false).await;
}

/// The same when the killed node comes straight back with the same `server.node_id`: the
/// restart is another start of the node, so the old start's members do not stay online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_the_same_id_does_not_keep_its_old_members_online() {
    killed_nodes_members_turn_away(true).await;
}

async fn killed_nodes_members_turn_away(restart: bool) {
    use holdfast_testkit::Client as Raw;
    let redis = Redis::start();
    let mut a = NodeProc::start("a", redis.port).await;
    let b = NodeProc::start("b", redis.port).await;
    let sign = |u: &str| holdfast_gateway::auth::mint_token(SECRET, u, Duration::from_secs(600));
    let (mut victim, _) = Raw::connect_with_token(a.addr(), &sign("victim")).await;
    let (mut watcher, _) = Raw::connect_with_token(b.addr(), &sign("watcher")).await;
    let jv = victim.join("r").await;
    watcher.join("r").await;
    let killed = std::time::Instant::now();
    a.kill().await;
    if restart {
        a.spawn().await;
    }
    // Within the lease (15 s) and one sweep.
    let mut away = None;
    for i in 0..100 {
        // Application pings keep the watcher's reads within their wait.
        watcher
            .send(json!({"type":"ping","id":i.to_string()}))
            .await;
        loop {
            let v = watcher.recv().await;
            if v["type"] == "pong" {
                break;
            }
            let changes = v["changes"].as_array().cloned().unwrap_or_default();
            away = away.or(changes.into_iter().find(|c| c["status"] == "away"));
        }
        if away.is_some() || killed.elapsed() > Duration::from_secs(25) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let away = away.expect("the dead node's member turned away");
    assert_eq!(away["player_id"], jv["player_id"]);
    assert!(killed.elapsed() < Duration::from_secs(25));
    drop(victim);
    // The member resumes on the surviving node.
    let (mut back, _) = Raw::connect_with_token(b.addr(), &sign("victim")).await;
    back.send(
        json!({"type":"reconnect","room":"r","player_id":jv["player_id"],
        "token":jv["reconnection_token"],"last_sequence":0}),
    )
    .await;
    back.until("reconnected").await;
    assert_eq!(
        watcher.until_presence("online").await["player_id"],
        jv["player_id"]
    );
    drop(b);
    drop(redis);
}

#[test]
fn unreachable_redis_at_start_is_a_clear_error() {
    let port = free_port();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .env("HOLDFAST_AUTH__HMAC_SECRET", SECRET)
        .env("HOLDFAST_BROKER__URL", format!("redis://127.0.0.1:{port}/"))
        .env("HOLDFAST_BROKER__CONNECT_TIMEOUT_SECS", "1")
        .env("HOLDFAST_API__LISTEN", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach Redis at redis://127.0.0.1"),
        "{err}"
    );
    assert!(
        err.contains("cannot reach Redis; "),
        "the failure is logged: {err}"
    );
}
