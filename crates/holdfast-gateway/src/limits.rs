//! Admission: what one peer address may hold on a node, before and after it authenticates.
//!
//! Three counts, each bounded node-wide and per address:
//! - **pending connections**: accepted TCP connections that are not (yet) a session: a request
//!   being read, a handshake in progress, an idle keep-alive connection
//!   (`limits.max_pending_connections`, `limits.max_pending_per_ip`). Checked right after
//!   `accept`, so an address over its share is refused at once and cannot hold the node-wide
//!   pool;
//! - **sessions**: WebSocket, SSE and long-polling sessions (`limits.max_connections`,
//!   `limits.max_connections_per_ip`);
//! - **streams**: SSE streams and long-poll requests held open, including reattached ones
//!   (`limits.max_connections`, `limits.max_streams_per_ip`). An open stream or poll does not
//!   hold a pending slot.
//!
//! Plus the checks on a request itself: the browser origin and the body (size announced and
//! read, and the time to read it).
//!
//! Addresses are counted by [`peer_key`]: an IPv4 address, or the /64 prefix of an IPv6 one (a
//! single host usually owns a whole /64).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::config::LimitsConfig;

/// The key an address is counted under: IPv4 as is (also when mapped into IPv6), IPv6 by its
/// /64 prefix.
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Which bound refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The node-wide bound.
    Node,
    /// The bound for one address.
    Ip,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Entries are removed at zero, so the map holds at most `total` keys.
    per_ip: HashMap<IpAddr, usize>,
}

/// A count bounded node-wide and per address.
#[derive(Debug)]
pub struct CountLimit {
    node_cap: usize,
    ip_cap: usize,
    counts: Mutex<Counts>,
}

impl CountLimit {
    /// A limit of `node_cap` in all and `ip_cap` per address.
    pub fn new(node_cap: usize, ip_cap: usize) -> Arc<CountLimit> {
        Arc::new(CountLimit {
            node_cap,
            ip_cap,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one slot for `ip`, or says which bound is reached.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        self.acquire(ip, self.ip_cap)
    }

    /// Takes one slot for `ip` bounded by the node-wide cap only (a trusted proxy, which
    /// carries many clients).
    pub fn try_acquire_shared(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        self.acquire(ip, usize::MAX)
    }

    fn acquire(self: &Arc<Self>, ip: IpAddr, ip_cap: usize) -> Result<Slot, Full> {
        let key = peer_key(ip);
        let mut c = self.lock();
        if c.total >= self.node_cap {
            return Err(Full::Node);
        }
        let n = c.per_ip.get(&key).copied().unwrap_or(0);
        if n >= ip_cap {
            return Err(Full::Ip);
        }
        c.per_ip.insert(key, n + 1);
        c.total += 1;
        Ok(Slot {
            limit: self.clone(),
            key: Key::of(key),
        })
    }

    /// Slots held in all.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// Slots held by one address.
    pub fn for_ip(&self, ip: IpAddr) -> usize {
        self.lock().per_ip.get(&peer_key(ip)).copied().unwrap_or(0)
    }

    fn release(&self, key: IpAddr) {
        let mut c = self.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&key);
            }
        }
    }
}

/// One held slot; released when dropped.
#[derive(Debug)]
pub struct Slot {
    limit: Arc<CountLimit>,
    key: Key,
}

impl Slot {
    /// The address the slot was taken for (as counted: see [`peer_key`]).
    pub(crate) fn ip(&self) -> IpAddr {
        self.key.ip()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limit.release(self.key.ip());
    }
}

/// A [`peer_key`] as a slot keeps it: an IPv4 address or the /64 prefix of an IPv6 one, 9
/// bytes where an `IpAddr` takes 17 (a slot lives in every session's task, which stays small).
#[derive(Debug, Clone, Copy)]
enum Key {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl Key {
    /// `key`, a [`peer_key`] (an IPv6 one has nothing past its /64 prefix).
    fn of(key: IpAddr) -> Key {
        match key {
            IpAddr::V4(v4) => Key::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                Key::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
            }
        }
    }

    fn ip(self) -> IpAddr {
        match self {
            Key::V4(o) => IpAddr::from(o),
            Key::V6(p) => {
                let mut o = [0u8; 16];
                o[..8].copy_from_slice(&p);
                IpAddr::from(o)
            }
        }
    }
}

/// The pending slot of one HTTP connection, shared by its connection task and its requests:
/// a request that turns into a long-lived stream or poll gives the slot back, and takes it
/// again (if the address still has room) before the connection returns to keep-alive.
#[derive(Debug)]
pub struct ConnSlot {
    limit: Arc<CountLimit>,
    ip: IpAddr,
    slot: Mutex<Option<Slot>>,
}

impl ConnSlot {
    /// A connection holding `slot`.
    pub fn new(limit: Arc<CountLimit>, ip: IpAddr, slot: Slot) -> Arc<ConnSlot> {
        Arc::new(ConnSlot {
            limit,
            ip,
            slot: Mutex::new(Some(slot)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Slot>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives the pending slot back (the connection now carries an admitted stream or poll).
    pub fn release(&self) {
        let slot = self.lock().take();
        drop(slot);
    }

    /// Takes a pending slot again; false when the address (or node) has no room, in which case
    /// the connection must close after its response.
    pub fn reacquire(&self) -> bool {
        let mut held = self.lock();
        if held.is_some() {
            return true;
        }
        match self.limit.try_acquire(self.ip) {
            Ok(s) => {
                *held = Some(s);
                true
            }
            Err(_) => false,
        }
    }
}

/// An HTTP refusal: a status and a stable code, sent as the body (`<code>\n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal(pub StatusCode, pub &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

/// The raw HTTP answer written to a connection refused right after `accept`, before any of its
/// request was read. The connection is closed after it.
pub fn raw_refusal(full: Full) -> &'static [u8] {
    match full {
        Full::Ip => {
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain; charset=utf-8\r\n\
              content-length: 19\r\nconnection: close\r\n\r\nmax_pending_per_ip\n"
        }
        Full::Node => {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
              content-length: 24\r\nconnection: close\r\n\r\nmax_pending_connections\n"
        }
    }
}

/// Whether a browser `Origin` is allowed (no `Origin`, or an empty allow-list, allows).
pub fn origin_allowed(limits: &LimitsConfig, headers: &HeaderMap) -> bool {
    if limits.allowed_origins.is_empty() {
        return true;
    }
    match headers.get(header::ORIGIN) {
        None => true,
        Some(origin) => origin
            .to_str()
            .is_ok_and(|o| limits.allowed_origins.iter().any(|a| a == o)),
    }
}

/// Refuses a body whose announced `Content-Length` is over `max` (413) or unreadable (400),
/// before anything of it is read.
pub fn check_content_length(headers: &HeaderMap, max: usize) -> Result<(), Refusal> {
    let Some(v) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(());
    };
    match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
        Some(n) if n <= max as u64 => Ok(()),
        Some(_) => Err(Refusal(StatusCode::PAYLOAD_TOO_LARGE, "message_too_big")),
        None => Err(Refusal(StatusCode::BAD_REQUEST, "bad_body")),
    }
}

/// Reads a request body of at most `max` bytes within `timeout`: 413 `message_too_big` as
/// soon as more arrives, 408 `body_timeout` when the client is too slow, 400 `bad_body` when
/// the connection fails mid-body.
pub async fn read_body(body: Body, max: usize, timeout: Duration) -> Result<Bytes, Refusal> {
    let read = async move {
        let mut stream = body.into_data_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| Refusal(StatusCode::BAD_REQUEST, "bad_body"))?;
            if buf.len() + chunk.len() > max {
                return Err(Refusal(StatusCode::PAYLOAD_TOO_LARGE, "message_too_big"));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(Refusal(StatusCode::REQUEST_TIMEOUT, "body_timeout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn per_address_and_node_bounds_are_enforced_and_released() {
        let limit = CountLimit::new(3, 2);
        let a1 = limit.try_acquire(v4(1)).expect("first");
        let _a2 = limit.try_acquire(v4(1)).expect("second");
        assert_eq!(limit.try_acquire(v4(1)).err(), Some(Full::Ip));
        let _b1 = limit.try_acquire(v4(2)).expect("other address");
        assert_eq!(limit.try_acquire(v4(3)).err(), Some(Full::Node));
        drop(a1);
        assert_eq!(limit.for_ip(v4(1)), 1);
        let _a3 = limit.try_acquire(v4(1)).expect("room again");
        assert_eq!(limit.total(), 3);
    }

    #[test]
    fn empty_entries_are_removed() {
        let limit = CountLimit::new(10, 10);
        for i in 0..5 {
            drop(limit.try_acquire(v4(i)).expect("slot"));
        }
        assert_eq!(limit.total(), 0);
        assert!(limit.lock().per_ip.is_empty());
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        assert_eq!(peer_key(a), peer_key(b));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(peer_key(mapped), "10.0.0.1".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn a_slot_gives_back_the_key_it_was_counted_under() {
        let limit = CountLimit::new(10, 10);
        for ip in ["10.0.0.1", "2001:db8:1:2:aaaa::1", "::1", "::ffff:10.0.0.2"] {
            let ip: IpAddr = ip.parse().expect("ip");
            let slot = limit.try_acquire(ip).expect("slot");
            assert_eq!(slot.ip(), peer_key(ip));
            assert_eq!(limit.for_ip(ip), 1);
            drop(slot);
            assert_eq!(limit.for_ip(ip), 0);
        }
        assert_eq!(limit.total(), 0);
    }

    #[test]
    fn a_released_connection_slot_is_taken_again_only_with_room() {
        let limit = CountLimit::new(10, 1);
        let slot = limit.try_acquire(v4(1)).expect("slot");
        let conn = ConnSlot::new(limit.clone(), v4(1), slot);
        conn.release();
        assert_eq!(limit.for_ip(v4(1)), 0);
        let other = limit.try_acquire(v4(1)).expect("freed");
        assert!(!conn.reacquire());
        drop(other);
        assert!(conn.reacquire());
        assert!(conn.reacquire());
        assert_eq!(limit.for_ip(v4(1)), 1);
        drop(conn);
        assert_eq!(limit.total(), 0);
    }

    #[test]
    fn raw_refusals_announce_their_length() {
        for full in [Full::Ip, Full::Node] {
            let raw = std::str::from_utf8(raw_refusal(full)).expect("ascii");
            let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.parse().ok())
                .expect("length");
            assert_eq!(len, body.len(), "{raw}");
        }
    }

    #[test]
    fn content_length_over_the_limit_is_refused_before_reading() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, "2000000".parse().expect("value"));
        assert_eq!(
            check_content_length(&h, 65_536),
            Err(Refusal(StatusCode::PAYLOAD_TOO_LARGE, "message_too_big"))
        );
        h.insert(header::CONTENT_LENGTH, "12".parse().expect("value"));
        assert_eq!(check_content_length(&h, 65_536), Ok(()));
        h.insert(header::CONTENT_LENGTH, "x".parse().expect("value"));
        assert_eq!(
            check_content_length(&h, 65_536).map_err(|r| r.1),
            Err("bad_body")
        );
    }
}
