//! Test support: an in-process gateway, tokens, a TCP proxy that can cut or freeze every
//! connection, and a recorder that collects a client's events.

#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_client::{Backoff, Client, ClientConfig, ClientEvent, Events};
use holdfast_gateway::{Config, Gateway};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A WebSocket opened without the client, to drive raw protocol steps.
pub use holdfast_testkit::Ws as RawWs;
/// The secret every test gateway signs tokens with, and a token for a user signed with it.
pub use holdfast_testkit::{token, SECRET};

/// A gateway configuration with fast heartbeats and generous limits, adjusted by `tweak`.
pub fn config(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    config.auth.hmac_secret = SECRET.into();
    config.rooms.join = Some(holdfast_gateway::config::JoinMode::Open);
    config.heartbeat.ping_interval_ms = 200;
    config.heartbeat.pong_timeout_ms = 400;
    config.reconnection.window_secs = 30;
    config.reconnection.event_buffer_size = 100;
    config.limits.rate_limit_per_sec = 10_000;
    config.limits.rate_limit_burst = 10_000;
    tweak(&mut config);
    config
}

/// Starts a gateway on 127.0.0.1:0.
pub async fn gateway(tweak: impl FnOnce(&mut Config)) -> Gateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Gateway::start(config(tweak), listener)
        .await
        .expect("gateway starts")
}

/// The WebSocket URL of a gateway or proxy address.
pub fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

/// A client configuration for `user` at `addr` with a short backoff.
pub fn client_config(addr: SocketAddr, user: &str) -> ClientConfig {
    let backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(200), 1.0)
        .expect("valid backoff");
    ClientConfig::new(url(addr), token(user)).with_backoff(backoff)
}

/// Connects a client and starts recording its events.
pub async fn connect(config: ClientConfig) -> (Client, Recorder) {
    let (client, events) = Client::connect(config).await.expect("client connects");
    (client, Recorder::start(events))
}

/// Control of one proxied connection.
#[derive(Default)]
struct Ctl {
    /// Drops both TCP streams at once, without any WebSocket close frame.
    cut: Notify,
    /// Stops forwarding but keeps both sockets open, so only a heartbeat can notice.
    freeze: Notify,
}

/// A TCP proxy on 127.0.0.1 in front of a gateway.
pub struct Proxy {
    addr: SocketAddr,
    /// Where new connections are forwarded; switchable to move clients to another gateway.
    target: Arc<Mutex<SocketAddr>>,
    /// Every connection accepted so far; finished ones are harmless to notify.
    conns: Arc<Mutex<Vec<Arc<Ctl>>>>,
    /// While true, new connections are accepted and dropped at once.
    refusing: Arc<Mutex<bool>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let target = Arc::new(Mutex::new(target));
        let conns: Arc<Mutex<Vec<Arc<Ctl>>>> = Arc::default();
        let refusing = Arc::new(Mutex::new(false));
        let accept = tokio::spawn(accept_loop(
            listener,
            target.clone(),
            conns.clone(),
            refusing.clone(),
        ));
        Proxy {
            addr,
            target,
            conns,
            refusing,
            accept,
        }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forwards new connections to `target` from now on.
    pub fn set_target(&self, target: SocketAddr) {
        *self.target.lock().expect("lock") = target;
    }

    /// Refuses (accepts and drops) new connections while `refusing` is true.
    pub fn set_refusing(&self, refusing: bool) {
        *self.refusing.lock().expect("lock") = refusing;
    }

    /// Drops every live connection abruptly.
    pub fn cut_all(&self) {
        let conns = std::mem::take(&mut *self.conns.lock().expect("lock"));
        for c in conns {
            c.cut.notify_one();
        }
    }

    /// Stops forwarding on every live connection while keeping its sockets open.
    pub fn freeze_all(&self) {
        for c in self.conns.lock().expect("lock").iter() {
            c.freeze.notify_one();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: Arc<Mutex<SocketAddr>>,
    conns: Arc<Mutex<Vec<Arc<Ctl>>>>,
    refusing: Arc<Mutex<bool>>,
) {
    while let Ok((inbound, _)) = listener.accept().await {
        if *refusing.lock().expect("lock") {
            drop(inbound);
            continue;
        }
        let to = *target.lock().expect("lock");
        let ctl = Arc::new(Ctl::default());
        conns.lock().expect("lock").push(ctl.clone());
        tokio::spawn(forward(inbound, to, ctl));
    }
}

async fn forward(mut inbound: TcpStream, to: SocketAddr, ctl: Arc<Ctl>) {
    let Ok(mut outbound) = TcpStream::connect(to).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        () = ctl.cut.notified() => {}
        () = ctl.freeze.notified() => {
            // Hold both sockets open, forwarding nothing, until cut.
            ctl.cut.notified().await;
        }
    }
}

/// Collects a client's events in the background.
#[derive(Clone)]
pub struct Recorder {
    events: Arc<Mutex<Vec<ClientEvent>>>,
    changed: Arc<Notify>,
}

impl Recorder {
    fn start(mut events: Events) -> Recorder {
        let recorder = Recorder {
            events: Arc::default(),
            changed: Arc::new(Notify::new()),
        };
        let r = recorder.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                r.events.lock().expect("lock").push(event);
                r.changed.notify_waiters();
            }
        });
        recorder
    }

    /// A copy of every event so far.
    pub fn all(&self) -> Vec<ClientEvent> {
        self.events.lock().expect("lock").clone()
    }

    /// Waits until `pred` holds for the events so far, or panics after `timeout` with `what`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[ClientEvent]) -> bool,
    ) -> Vec<ClientEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            {
                let events = self.events.lock().expect("lock");
                if pred(&events) {
                    return events.clone();
                }
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => {
                    let events = self.events.lock().expect("lock");
                    panic!("timed out waiting for {what}; events: {:#?}", *events);
                }
            }
        }
    }

    /// Waits for an event matching `pred` and returns it.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&ClientEvent) -> bool,
    ) -> ClientEvent {
        let events = self
            .wait_until(what, timeout, |events| events.iter().any(&pred))
            .await;
        events
            .into_iter()
            .find(|e| pred(e))
            .expect("found by wait_until")
    }

    /// The data of every room event received for `room`, with its seq.
    pub fn room_events(&self, room: &str) -> Vec<(u64, serde_json::Value)> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Event(e) if e.room == room => Some((e.seq, e.data)),
                _ => None,
            })
            .collect()
    }

    /// The sequence numbers of every room frame received for `room`, in arrival order.
    pub fn room_seqs(&self, room: &str) -> Vec<u64> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Event(e) if e.room == room => Some(e.seq),
                ClientEvent::AuthorityChanged(a) if a.room == room => Some(a.seq),
                _ => None,
            })
            .collect()
    }
}
