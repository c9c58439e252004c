//! Per-user inbound budgets: one user's sessions on this node, on every transport, share one
//! frame budget and one budget for `send` (directed messages), so opening more sessions or
//! reconnecting never buys a user more than the configured rates.
//!
//! A user's budget lives while one of its sessions does, and for as long after the last one
//! ended as its buckets need to refill; after that a fresh budget is the same thing, so the entry
//! is dropped. The entries kept for users without a session are bounded (`max_idle`): past the
//! bound the oldest is dropped early, which only gives that user a full bucket back.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
#[cfg(test)]
use std::time::Duration;
use std::time::Instant;

use super::ratelimit::TokenBucket;
use crate::config::LimitsConfig;

/// The buckets of one user (small: one is held per connected user).
pub(crate) struct Budget {
    /// Every inbound frame takes one token.
    frames: TokenBucket,
    /// Every `send` takes one token (besides its frame token).
    sends: TokenBucket,
    /// When its last session ended (ms from the origin), while it has none.
    released: Option<u64>,
}

/// A user's shared budget, as a session holds it.
pub(crate) type SharedBudget = Arc<Mutex<Budget>>;

#[derive(Default)]
struct Table {
    users: HashMap<Arc<str>, SharedBudget>,
    /// Users whose last session ended, oldest first, with when it ended (ms from the origin;
    /// a user may appear more than once; only its latest release counts).
    idle: VecDeque<(u64, Arc<str>)>,
}

/// The node's per-user budgets.
pub(crate) struct UserBudgets {
    table: Mutex<Table>,
    /// Time zero of the buckets' millisecond clock.
    origin: Instant,
    frames: (u32, u32),
    sends: (u32, u32),
    /// How long an unused budget takes to refill completely, in ms.
    refill_ms: u64,
    /// Bound on the budgets kept for users without a session.
    max_idle: usize,
}

fn refill_ms((rate, burst): (u32, u32)) -> u64 {
    (u64::from(burst) * 1000).div_ceil(u64::from(rate.max(1)))
}

impl UserBudgets {
    /// Budgets at the rates of `limits`.
    pub(crate) fn new(limits: &LimitsConfig) -> UserBudgets {
        let frames = (limits.rate_limit_per_sec, limits.rate_limit_burst);
        let sends = (limits.send_rate_per_sec, limits.send_rate_burst);
        UserBudgets {
            table: Mutex::new(Table::default()),
            origin: Instant::now(),
            frames,
            sends,
            refill_ms: refill_ms(frames).max(refill_ms(sends)),
            max_idle: limits.max_connections.max(1),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes a token from the user's frame budget (`send == false`) or `send` budget at `now`.
    pub(crate) fn spend(&self, budget: &SharedBudget, send: bool, now: Instant) -> bool {
        let now = self.ms(now);
        let mut b = budget.lock().unwrap_or_else(|e| e.into_inner());
        if send {
            b.sends.take(now, self.sends.0, self.sends.1)
        } else {
            b.frames.take(now, self.frames.0, self.frames.1)
        }
    }

    /// The budget of `user`, shared with its other sessions (and with its sessions that ended
    /// less than a refill time ago).
    pub(crate) fn acquire(&self, user: &Arc<str>, now: Instant) -> SharedBudget {
        let now = self.ms(now);
        let mut t = self.table();
        self.purge(&mut t, now);
        let budget = t.users.entry(user.clone()).or_insert_with(|| {
            Arc::new(Mutex::new(Budget {
                frames: TokenBucket::new(self.frames.1, now),
                sends: TokenBucket::new(self.sends.1, now),
                released: None,
            }))
        });
        budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .released
            .take();
        budget.clone()
    }

    /// A session of `user` ended and gives its budget back.
    pub(crate) fn release(&self, user: &Arc<str>, budget: SharedBudget, now: Instant) {
        drop(budget);
        let now = self.ms(now);
        let mut t = self.table();
        let Some(entry) = t.users.get(user) else {
            return;
        };
        // Only the table holds it: the user has no session left on this node.
        if Arc::strong_count(entry) == 1 {
            entry.lock().unwrap_or_else(|e| e.into_inner()).released = Some(now);
            t.idle.push_back((now, user.clone()));
        }
        self.purge(&mut t, now);
    }

    /// Drops the budgets that have refilled since their user's last session ended, and the
    /// oldest ones past `max_idle`.
    fn purge(&self, t: &mut Table, now: u64) {
        while let Some((at, _)) = t.idle.front() {
            let over = t.idle.len() > self.max_idle;
            if !over && now.saturating_sub(*at) < self.refill_ms {
                break;
            }
            let Some((_, user)) = t.idle.pop_front() else {
                break;
            };
            let unused = t.users.get(&user).is_some_and(|b| {
                Arc::strong_count(b) == 1
                    && b.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .released
                        .is_some_and(|r| over || now.saturating_sub(r) >= self.refill_ms)
            });
            if unused {
                t.users.remove(&user);
            }
        }
    }

    /// Users with a budget held (live or refilling), for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().users.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn budgets(rate: u32, burst: u32, max_connections: usize) -> UserBudgets {
        UserBudgets::new(&LimitsConfig {
            rate_limit_per_sec: rate,
            rate_limit_burst: burst,
            send_rate_per_sec: rate,
            send_rate_burst: burst,
            max_connections,
            ..LimitsConfig::default()
        })
    }

    fn take(budgets: &UserBudgets, b: &SharedBudget, now: Instant) -> bool {
        budgets.spend(b, false, now)
    }

    #[test]
    fn sessions_of_one_user_share_the_budget() {
        let budgets = budgets(10, 4, 100);
        let now = Instant::now();
        let user: Arc<str> = "u".into();
        let a = budgets.acquire(&user, now);
        let b = budgets.acquire(&user, now);
        assert!(
            take(&budgets, &a, now)
                && take(&budgets, &b, now)
                && take(&budgets, &a, now)
                && take(&budgets, &b, now)
        );
        assert!(
            !take(&budgets, &a, now) && !take(&budgets, &b, now),
            "four frames between them"
        );
        let other = budgets.acquire(&"v".into(), now);
        assert!(
            take(&budgets, &other, now),
            "another user has a budget of its own"
        );
    }

    #[test]
    fn a_reconnect_inside_the_refill_time_does_not_refill() {
        let budgets = budgets(10, 4, 100);
        let t0 = Instant::now();
        let user: Arc<str> = "u".into();
        let a = budgets.acquire(&user, t0);
        for _ in 0..4 {
            assert!(take(&budgets, &a, t0));
        }
        budgets.release(&user, a, t0);
        let b = budgets.acquire(&user, t0 + Duration::from_millis(100));
        assert!(
            take(&budgets, &b, t0 + Duration::from_millis(100)),
            "one token refilled"
        );
        assert!(
            !take(&budgets, &b, t0 + Duration::from_millis(100)),
            "only one"
        );
        budgets.release(&user, b, t0 + Duration::from_millis(100));
        // Once refilled (4 tokens at 10/s: 400 ms) the entry is dropped.
        let later = t0 + Duration::from_secs(1);
        let _v = budgets.acquire(&"v".into(), later);
        assert_eq!(budgets.len(), 1, "u's refilled budget was dropped");
    }

    #[test]
    fn budgets_of_users_without_a_session_are_bounded() {
        let budgets = budgets(1, 1000, 3);
        let now = Instant::now();
        for n in 0..50 {
            let user: Arc<str> = format!("u{n}").into();
            let b = budgets.acquire(&user, now);
            budgets.release(&user, b, now);
        }
        assert!(budgets.len() <= 4, "{} kept", budgets.len());
        let t = budgets.table();
        assert!(t.idle.len() <= 3);
    }

    #[test]
    fn a_live_session_keeps_its_budget_past_the_bound() {
        let budgets = budgets(1, 1000, 1);
        let now = Instant::now();
        let live: Arc<str> = "live".into();
        let held = budgets.acquire(&live, now);
        assert!(take(&budgets, &held, now));
        for n in 0..10 {
            let user: Arc<str> = format!("u{n}").into();
            let b = budgets.acquire(&user, now);
            budgets.release(&user, b, now);
        }
        let again = budgets.acquire(&live, now);
        assert!(Arc::ptr_eq(&held, &again));
    }
}
