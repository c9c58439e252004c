//! Ping/pong as a deadline state machine.
//!
//! [`Heartbeat`] does no I/O and reads no clock: the session loop asks it when to wake up
//! ([`Heartbeat::deadline`]), and at that moment what to do ([`Heartbeat::poll`]): send a ping,
//! keep waiting, or give up on the peer. A pong ([`Heartbeat::on_pong`]) ends the wait and
//! schedules the next ping one interval after the previous one was sent.

use std::time::Duration;

/// What the session should do about the heartbeat at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Send a ping now (the pong deadline starts now).
    Ping,
    /// Nothing to do before this time.
    Wait(u64),
    /// The pong did not come in time: close with 4005.
    TimedOut,
}

/// The heartbeat's settings: the ping interval and the pong deadline, in nanoseconds. Made
/// from the node's configuration at each use, so the heartbeat kept by every session holds
/// only its phase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cadence {
    ping_every: u64,
    pong_timeout: u64,
}

impl Cadence {
    pub(crate) fn new(ping_every: Duration, pong_timeout: Duration) -> Cadence {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Cadence {
            ping_every: ns(ping_every),
            pong_timeout: ns(pong_timeout),
        }
    }
}

/// The heartbeat of one connection. Times are nanoseconds on the caller's clock (the session
/// loop's is the node timers', [`crate::timers::Timers::nanos_at`]), below 2^63: the heartbeat
/// lives in every session's state, where an `Instant` would take 16 bytes.
#[derive(Debug, Clone)]
pub(crate) struct Heartbeat {
    /// When the next ping is due or, with [`PINGED`] set, when the outstanding ping was sent:
    /// the two never coexist, so one word holds either.
    at: u64,
}

/// The bit of [`Heartbeat::at`] set while a ping is outstanding.
const PINGED: u64 = 1 << 63;

/// `t + d`, kept below [`PINGED`].
fn after(t: u64, d: u64) -> u64 {
    t.saturating_add(d).min(PINGED - 1)
}

impl Heartbeat {
    /// A heartbeat whose first ping is due one interval after `now`.
    pub(crate) fn new(now: u64, cadence: &Cadence) -> Heartbeat {
        Heartbeat {
            at: after(now, cadence.ping_every),
        }
    }

    /// When the outstanding ping was sent, if one is.
    fn ping_sent(&self) -> Option<u64> {
        (self.at & PINGED != 0).then_some(self.at & !PINGED)
    }

    /// The next time at which [`Heartbeat::poll`] has something to do: the pong deadline while
    /// a ping is outstanding, otherwise when the next ping is due.
    pub(crate) fn deadline(&self, cadence: &Cadence) -> u64 {
        match self.ping_sent() {
            Some(sent) => after(sent, cadence.pong_timeout),
            None => self.at,
        }
    }

    /// When the session loop should next look at the heartbeat, after `now`:
    /// [`Heartbeat::deadline`] or, while a pong is awaited, the next ping's time when that is
    /// earlier and still ahead. A pong usually comes back within the interval: waking up for
    /// the next ping then serves both, so a session arms one wake-up per interval with the
    /// node's timers, not two.
    pub(crate) fn wake_at(&self, now: u64, cadence: &Cadence) -> u64 {
        match self.ping_sent() {
            Some(sent) if after(sent, cadence.ping_every) > now => {
                self.deadline(cadence).min(after(sent, cadence.ping_every))
            }
            _ => self.deadline(cadence),
        }
    }

    /// What to do at `now`. Answering [`Beat::Ping`] records the ping as sent at `now`.
    pub(crate) fn poll(&mut self, now: u64, cadence: &Cadence) -> Beat {
        match self.ping_sent() {
            Some(_) if now >= self.deadline(cadence) => Beat::TimedOut,
            Some(_) => Beat::Wait(self.deadline(cadence)),
            None if now >= self.at => {
                self.at = now.min(PINGED - 1) | PINGED;
                Beat::Ping
            }
            None => Beat::Wait(self.at),
        }
    }

    /// A pong arrived at `now`. Returns the round-trip time when a ping was outstanding (a pong
    /// nobody asked for changes nothing).
    pub(crate) fn on_pong(&mut self, now: u64, cadence: &Cadence) -> Option<Duration> {
        let sent = self.ping_sent()?;
        self.at = after(sent, cadence.ping_every);
        Some(Duration::from_nanos(now.saturating_sub(sent)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_millis(100);
    const TIMEOUT: Duration = Duration::from_millis(250);

    /// `n` milliseconds, in the heartbeat's nanoseconds.
    fn ms(n: u64) -> u64 {
        n * 1_000_000
    }

    /// A round trip of `n` milliseconds.
    fn rtt(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// An arbitrary start, not on a millisecond.
    const T0: u64 = 5_000_000_123;

    #[test]
    fn pings_every_interval_while_pongs_come_back() {
        let t0 = T0;
        let c = &Cadence::new(EVERY, TIMEOUT);
        let mut hb = Heartbeat::new(t0, c);
        assert_eq!(hb.deadline(c), t0 + ms(100));
        assert_eq!(hb.poll(t0 + ms(50), c), Beat::Wait(t0 + ms(100)));
        for n in 1..=5u64 {
            let sent = t0 + ms(100 * n);
            assert_eq!(hb.deadline(c), sent);
            assert_eq!(hb.poll(sent, c), Beat::Ping);
            assert_eq!(hb.deadline(c), sent + ms(250));
            assert_eq!(hb.on_pong(sent + ms(7), c), Some(rtt(7)));
            // The cadence is kept from when the ping was sent, not when the pong came.
            assert_eq!(hb.deadline(c), sent + ms(100));
        }
    }

    #[test]
    fn a_missing_pong_times_out_at_the_deadline() {
        let t0 = T0;
        let c = &Cadence::new(EVERY, TIMEOUT);
        let mut hb = Heartbeat::new(t0, c);
        assert_eq!(hb.poll(t0 + ms(100), c), Beat::Ping);
        assert_eq!(hb.poll(t0 + ms(200), c), Beat::Wait(t0 + ms(350)));
        assert_eq!(hb.poll(t0 + ms(349), c), Beat::Wait(t0 + ms(350)));
        assert_eq!(hb.poll(t0 + ms(350), c), Beat::TimedOut);
        assert_eq!(hb.poll(t0 + ms(900), c), Beat::TimedOut);
    }

    #[test]
    fn a_late_timer_still_pings_once_and_from_the_actual_instant() {
        let t0 = T0;
        let c = &Cadence::new(EVERY, TIMEOUT);
        let mut hb = Heartbeat::new(t0, c);
        assert_eq!(hb.poll(t0 + ms(170), c), Beat::Ping);
        assert_eq!(hb.deadline(c), t0 + ms(420));
        assert_eq!(hb.on_pong(t0 + ms(180), c), Some(rtt(10)));
        assert_eq!(hb.deadline(c), t0 + ms(270));
    }

    #[test]
    fn an_unrequested_pong_changes_nothing() {
        let t0 = T0;
        let c = &Cadence::new(EVERY, TIMEOUT);
        let mut hb = Heartbeat::new(t0, c);
        assert_eq!(hb.on_pong(t0 + ms(10), c), None);
        assert_eq!(hb.deadline(c), t0 + ms(100));
        assert_eq!(hb.poll(t0 + ms(100), c), Beat::Ping);
        assert_eq!(hb.on_pong(t0 + ms(120), c), Some(rtt(20)));
        assert_eq!(hb.on_pong(t0 + ms(130), c), None, "one pong per ping");
        assert_eq!(hb.deadline(c), t0 + ms(200));
    }

    #[test]
    fn while_a_pong_is_awaited_the_wake_up_is_the_next_pings_time_when_earlier() {
        let t0 = T0;
        let c = &Cadence::new(EVERY, TIMEOUT);
        let mut hb = Heartbeat::new(t0, c);
        assert_eq!(hb.wake_at(t0, c), t0 + ms(100));
        assert_eq!(hb.poll(t0 + ms(100), c), Beat::Ping);
        // The pong deadline is at 350; the next ping would be due at 200.
        assert_eq!(hb.wake_at(t0 + ms(100), c), t0 + ms(200));
        // Woken at 200 with no pong: keep waiting, until the deadline.
        assert_eq!(hb.poll(t0 + ms(200), c), Beat::Wait(t0 + ms(350)));
        assert_eq!(hb.wake_at(t0 + ms(200), c), t0 + ms(350));
        assert_eq!(hb.on_pong(t0 + ms(210), c), Some(rtt(110)));
        assert_eq!(hb.wake_at(t0 + ms(210), c), t0 + ms(200));
        assert_eq!(hb.poll(t0 + ms(210), c), Beat::Ping);
        // A timeout shorter than the interval: the deadline comes first.
        let c = &Cadence::new(EVERY, Duration::from_millis(40));
        let mut hb = Heartbeat::new(t0, c);
        assert_eq!(hb.poll(t0 + ms(100), c), Beat::Ping);
        assert_eq!(hb.wake_at(t0 + ms(100), c), t0 + ms(140));
    }
}
