//! Ping/pong as a deadline state machine.
//!
//! [`Heartbeat`] does no I/O and reads no clock: the session loop asks it when to wake up
//! ([`Heartbeat::deadline`]), and at that moment what to do ([`Heartbeat::poll`]): send a ping,
//! keep waiting, or give up on the peer. A pong ([`Heartbeat::on_pong`]) ends the wait and
//! schedules the next ping one interval after the previous one was sent.

use std::time::Duration;

use tokio::time::Instant;

/// What the session should do about the heartbeat at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Send a ping now (the pong deadline starts now).
    Ping,
    /// Nothing to do before this instant.
    Wait(Instant),
    /// The pong did not come in time: close with 4005.
    TimedOut,
}

/// The heartbeat of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Heartbeat {
    /// The ping interval, in milliseconds (it lives in every session's state: kept small).
    ping_every_ms: u32,
    /// The pong deadline after a ping, in milliseconds.
    pong_timeout_ms: u32,
    /// When the next ping is due (while no ping is outstanding).
    next_ping: Instant,
    /// When the outstanding ping was sent.
    ping_sent: Option<Instant>,
}

impl Heartbeat {
    /// A heartbeat whose first ping is due one interval after `now`.
    pub(crate) fn new(now: Instant, ping_every: Duration, pong_timeout: Duration) -> Heartbeat {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Heartbeat {
            ping_every_ms: ms(ping_every),
            pong_timeout_ms: ms(pong_timeout),
            next_ping: now + ping_every,
            ping_sent: None,
        }
    }

    fn ping_every(&self) -> Duration {
        Duration::from_millis(u64::from(self.ping_every_ms))
    }

    fn pong_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.pong_timeout_ms))
    }

    /// The next instant at which [`Heartbeat::poll`] has something to do: the pong deadline
    /// while a ping is outstanding, otherwise when the next ping is due.
    pub(crate) fn deadline(&self) -> Instant {
        match self.ping_sent {
            Some(sent) => sent + self.pong_timeout(),
            None => self.next_ping,
        }
    }

    /// When the session loop should next look at the heartbeat, after `now`:
    /// [`Heartbeat::deadline`] or, while a pong is awaited, the next ping's time when that is
    /// earlier and still ahead. A pong usually comes back within the interval: waking up for
    /// the next ping then serves both, so a session arms one wake-up per interval with the
    /// node's timers, not two.
    pub(crate) fn wake_at(&self, now: Instant) -> Instant {
        match self.ping_sent {
            Some(sent) if sent + self.ping_every() > now => {
                self.deadline().min(sent + self.ping_every())
            }
            _ => self.deadline(),
        }
    }

    /// What to do at `now`. Answering [`Beat::Ping`] records the ping as sent at `now`.
    pub(crate) fn poll(&mut self, now: Instant) -> Beat {
        match self.ping_sent {
            Some(sent) if now >= sent + self.pong_timeout() => Beat::TimedOut,
            Some(sent) => Beat::Wait(sent + self.pong_timeout()),
            None if now >= self.next_ping => {
                self.ping_sent = Some(now);
                Beat::Ping
            }
            None => Beat::Wait(self.next_ping),
        }
    }

    /// A pong arrived at `now`. Returns the round-trip time when a ping was outstanding (a pong
    /// nobody asked for changes nothing).
    pub(crate) fn on_pong(&mut self, now: Instant) -> Option<Duration> {
        let sent = self.ping_sent.take()?;
        self.next_ping = sent + self.ping_every();
        Some(now.saturating_duration_since(sent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_millis(100);
    const TIMEOUT: Duration = Duration::from_millis(250);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pings_every_interval_while_pongs_come_back() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, EVERY, TIMEOUT);
        assert_eq!(hb.deadline(), t0 + ms(100));
        assert_eq!(hb.poll(t0 + ms(50)), Beat::Wait(t0 + ms(100)));
        for n in 1..=5u64 {
            let sent = t0 + ms(100 * n);
            assert_eq!(hb.deadline(), sent);
            assert_eq!(hb.poll(sent), Beat::Ping);
            assert_eq!(hb.deadline(), sent + TIMEOUT);
            assert_eq!(hb.on_pong(sent + ms(7)), Some(ms(7)));
            // The cadence is kept from when the ping was sent, not when the pong came.
            assert_eq!(hb.deadline(), sent + EVERY);
        }
    }

    #[test]
    fn a_missing_pong_times_out_at_the_deadline() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, EVERY, TIMEOUT);
        assert_eq!(hb.poll(t0 + ms(100)), Beat::Ping);
        assert_eq!(hb.poll(t0 + ms(200)), Beat::Wait(t0 + ms(350)));
        assert_eq!(hb.poll(t0 + ms(349)), Beat::Wait(t0 + ms(350)));
        assert_eq!(hb.poll(t0 + ms(350)), Beat::TimedOut);
        assert_eq!(hb.poll(t0 + ms(900)), Beat::TimedOut);
    }

    #[test]
    fn a_late_timer_still_pings_once_and_from_the_actual_instant() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, EVERY, TIMEOUT);
        assert_eq!(hb.poll(t0 + ms(170)), Beat::Ping);
        assert_eq!(hb.deadline(), t0 + ms(420));
        assert_eq!(hb.on_pong(t0 + ms(180)), Some(ms(10)));
        assert_eq!(hb.deadline(), t0 + ms(270));
    }

    #[test]
    fn an_unrequested_pong_changes_nothing() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, EVERY, TIMEOUT);
        assert_eq!(hb.on_pong(t0 + ms(10)), None);
        assert_eq!(hb.deadline(), t0 + ms(100));
        assert_eq!(hb.poll(t0 + ms(100)), Beat::Ping);
        assert_eq!(hb.on_pong(t0 + ms(120)), Some(ms(20)));
        assert_eq!(hb.on_pong(t0 + ms(130)), None, "one pong per ping");
        assert_eq!(hb.deadline(), t0 + ms(200));
    }

    #[test]
    fn while_a_pong_is_awaited_the_wake_up_is_the_next_pings_time_when_earlier() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, ms(100), ms(250));
        assert_eq!(hb.wake_at(t0), t0 + ms(100));
        assert_eq!(hb.poll(t0 + ms(100)), Beat::Ping);
        // The pong deadline is at 350; the next ping would be due at 200.
        assert_eq!(hb.wake_at(t0 + ms(100)), t0 + ms(200));
        // Woken at 200 with no pong: keep waiting, until the deadline.
        assert_eq!(hb.poll(t0 + ms(200)), Beat::Wait(t0 + ms(350)));
        assert_eq!(hb.wake_at(t0 + ms(200)), t0 + ms(350));
        assert_eq!(hb.on_pong(t0 + ms(210)), Some(ms(110)));
        assert_eq!(hb.wake_at(t0 + ms(210)), t0 + ms(200));
        assert_eq!(hb.poll(t0 + ms(210)), Beat::Ping);
        // A timeout shorter than the interval: the deadline comes first.
        let mut hb = Heartbeat::new(t0, ms(100), ms(40));
        assert_eq!(hb.poll(t0 + ms(100)), Beat::Ping);
        assert_eq!(hb.wake_at(t0 + ms(100)), t0 + ms(140));
    }
}
