//! The operator's log lines: one `info` line when a session starts and one when it ends, and
//! rate-limited `info` lines for rejected credentials.
//!
//! Session lines carry the session id, user, peer address (the client's, after
//! `server.trusted_proxies`), transport and, at the end, the close code and duration. Auth
//! failures are logged at most `log.auth_failures_per_sec` times per second per node; the rest
//! are counted and reported in one summary line, so a credential flood cannot fill a disk.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::{Metrics, Transport};

/// Logs the start of a session.
pub(crate) fn session_started(id: &str, user: &str, peer: IpAddr, transport: Transport) {
    tracing::info!(
        session = id,
        user,
        peer = %peer,
        transport = transport.as_str(),
        "session started"
    );
}

/// Logs the end of a session with its close code and how long it lasted.
pub(crate) fn session_ended(
    id: &str,
    user: &str,
    peer: IpAddr,
    transport: Transport,
    code: u16,
    duration: Duration,
) {
    tracing::info!(
        session = id,
        user,
        peer = %peer,
        transport = transport.as_str(),
        code,
        duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        "session ended"
    );
}

/// The current one-second window of auth-failure lines.
#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// Rate-limited logging of rejected credentials, one per node.
#[derive(Debug)]
pub struct AuthFailureLog {
    per_sec: u32,
    window: Mutex<Window>,
}

impl AuthFailureLog {
    /// At most `per_sec` lines per second (0 logs none, only the summaries).
    pub fn new(per_sec: u32) -> AuthFailureLog {
        AuthFailureLog {
            per_sec,
            window: Mutex::new(Window {
                started: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Counts a rejected credential and logs it unless this second's budget is spent.
    pub fn record(&self, metrics: &Metrics, peer: IpAddr, transport: Transport, reason: &str) {
        metrics
            .auth_failures
            .with_label_values(&[transport.as_str(), reason])
            .inc();
        let now = Instant::now();
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let summary = Self::roll(&mut w, now);
        let log = w.logged < self.per_sec;
        if log {
            w.logged += 1;
        } else {
            w.suppressed += 1;
        }
        drop(w);
        if let Some(n) = summary {
            Self::summarize(n);
        }
        if log {
            tracing::info!(
                peer = %peer,
                transport = transport.as_str(),
                reason,
                "authentication failed"
            );
        }
    }

    /// Emits the summary of a finished window, if it suppressed anything. Called on a timer so
    /// the summary appears even when the flood stops.
    pub fn flush(&self) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let summary = Self::roll(&mut w, Instant::now());
        drop(w);
        if let Some(n) = summary {
            Self::summarize(n);
        }
    }

    /// Starts a new window when a second has passed; returns what the old one suppressed.
    fn roll(w: &mut Window, now: Instant) -> Option<u64> {
        if now.duration_since(w.started) < Duration::from_secs(1) {
            return None;
        }
        let suppressed = w.suppressed;
        *w = Window {
            started: now,
            logged: 0,
            suppressed: 0,
        };
        (suppressed > 0).then_some(suppressed)
    }

    fn summarize(n: u64) {
        tracing::info!(
            suppressed = n,
            "authentication failures not logged individually (rate limit); see \
             holdfast_auth_failures_total"
        );
    }
}

/// The auth-failure reason of a close code with which in-band authentication ended, if it was
/// a credential problem.
pub(crate) fn auth_close_reason(code: u16) -> Option<&'static str> {
    use holdfast_protocol::CloseCode;
    if code == CloseCode::AuthFailed.code() {
        Some("auth_failed")
    } else if code == CloseCode::TokenExpired.code() {
        Some("token_expired")
    } else if code == CloseCode::AuthTimeout.code() {
        Some("auth_timeout")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_up_to_the_budget_then_counted() {
        let m = Metrics::new();
        let log = AuthFailureLog::new(3);
        let peer = IpAddr::from([127, 0, 0, 1]);
        for _ in 0..100 {
            log.record(&m, peer, Transport::WebSocket, "auth_failed");
        }
        let w = log.window.lock().expect("lock");
        assert_eq!(w.logged, 3);
        assert_eq!(w.suppressed, 97);
        drop(w);
        assert_eq!(
            m.auth_failures
                .with_label_values(&["websocket", "auth_failed"])
                .get(),
            100
        );
        // A window that has ended reports its count and starts over.
        let mut w = log.window.lock().expect("lock");
        let later = w.started + Duration::from_secs(2);
        assert_eq!(AuthFailureLog::roll(&mut w, later), Some(97));
        assert_eq!(w.logged, 0);
    }
}
