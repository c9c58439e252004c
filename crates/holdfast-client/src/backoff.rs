//! Exponential backoff with jitter, used between reconnection attempts.
//!
//! The delay before attempt `n` (counting from zero) is drawn from
//! `[cap * (1 - jitter), cap]`, where `cap = min(max, min * 2^n)`. With the default full jitter
//! (`jitter = 1.0`) this is the "full jitter" scheme: a uniform draw from `[0, cap]`, which
//! spreads a herd of clients dropped at the same instant over the whole window instead of
//! letting them retry in lockstep.

use std::time::Duration;

use rand::Rng;

/// Why a [`Backoff`] could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackoffError {
    /// `min` was zero, so the exponential growth would never start.
    #[error("backoff minimum must be greater than zero")]
    ZeroMin,
    /// `max` was below `min`.
    #[error("backoff maximum {max:?} is below the minimum {min:?}")]
    MaxBelowMin {
        /// The requested minimum.
        min: Duration,
        /// The requested maximum.
        max: Duration,
    },
    /// `jitter` was outside `[0, 1]` (or not a number).
    #[error("backoff jitter {0} is outside [0, 1]")]
    JitterOutOfRange(f64),
}

/// A validated exponential backoff policy.
///
/// The fields are private so that every value in circulation has passed [`Backoff::new`]; the
/// TypeScript client uses the same defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The cap of the first attempt; each further attempt doubles it.
    min: Duration,
    /// The largest cap, reached after enough failed attempts.
    max: Duration,
    /// The fraction of the cap that is randomised: 0 is none, 1 is full jitter.
    jitter: f64,
}

impl Default for Backoff {
    /// 250 ms, doubling up to 30 s, with full jitter.
    fn default() -> Self {
        Backoff {
            min: Self::DEFAULT_MIN,
            max: Self::DEFAULT_MAX,
            jitter: Self::DEFAULT_JITTER,
        }
    }
}

impl Backoff {
    /// The default cap of the first attempt.
    pub const DEFAULT_MIN: Duration = Duration::from_millis(250);
    /// The default largest cap.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(30);
    /// The default jitter: full.
    pub const DEFAULT_JITTER: f64 = 1.0;

    /// Builds a policy, checking that `min > 0`, `max >= min` and `jitter` is in `[0, 1]`.
    pub fn new(min: Duration, max: Duration, jitter: f64) -> Result<Backoff, BackoffError> {
        if min.is_zero() {
            return Err(BackoffError::ZeroMin);
        }
        if max < min {
            return Err(BackoffError::MaxBelowMin { min, max });
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(BackoffError::JitterOutOfRange(jitter));
        }
        Ok(Backoff { min, max, jitter })
    }

    /// The cap of the first attempt.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The largest cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The randomised fraction of each delay.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The upper bound of the delay before attempt `attempt` (counting from zero).
    pub fn cap(&self, attempt: u32) -> Duration {
        // Doubling past 2^31 overflows nothing here because the result is clamped to `max`
        // as soon as it exceeds it; `checked_mul` covers the remaining overflow.
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.min
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// A random delay before attempt `attempt`, drawn with the thread's random generator.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, &mut rand::rng())
    }

    /// A random delay before attempt `attempt`, drawn from `rng`.
    pub fn delay_with<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let cap = self.cap(attempt);
        let fixed = cap.mul_f64(1.0 - self.jitter);
        let spread = cap.saturating_sub(fixed);
        if spread.is_zero() {
            return fixed;
        }
        fixed + spread.mul_f64(rng.random_range(0.0..=1.0))
    }

    /// Adds jitter to a delay the server suggested (`server_shutdown`'s `reconnect_after_ms`).
    ///
    /// The result is in `[hint, hint + spread * jitter]`, where the spread is the hint itself
    /// (or [`Backoff::min`] when the hint is zero), so a drained node's clients do not all come
    /// back in the same millisecond.
    pub fn jitter_hint(&self, hint: Duration) -> Duration {
        let spread = if hint.is_zero() { self.min } else { hint }.mul_f64(self.jitter);
        hint + spread.mul_f64(rand::rng().random_range(0.0..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn defaults_match_the_documented_policy() {
        let b = Backoff::default();
        assert_eq!(b.min(), ms(250));
        assert_eq!(b.max(), Duration::from_secs(30));
        assert!((b.jitter() - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn construction_is_validated() {
        assert_eq!(Backoff::new(ms(0), ms(10), 0.5), Err(BackoffError::ZeroMin));
        assert_eq!(
            Backoff::new(ms(10), ms(5), 0.5),
            Err(BackoffError::MaxBelowMin {
                min: ms(10),
                max: ms(5)
            })
        );
        assert!(matches!(
            Backoff::new(ms(1), ms(5), 1.5),
            Err(BackoffError::JitterOutOfRange(_))
        ));
        assert!(matches!(
            Backoff::new(ms(1), ms(5), -0.1),
            Err(BackoffError::JitterOutOfRange(_))
        ));
        assert!(matches!(
            Backoff::new(ms(1), ms(5), f64::NAN),
            Err(BackoffError::JitterOutOfRange(_))
        ));
        assert!(Backoff::new(ms(5), ms(5), 0.0).is_ok());
        assert!(Backoff::new(ms(5), ms(5), 1.0).is_ok());
    }

    #[test]
    fn cap_doubles_then_saturates() {
        let b = Backoff::new(ms(100), ms(1000), 0.0).expect("valid");
        let caps: Vec<_> = (0..6).map(|n| b.cap(n)).collect();
        assert_eq!(
            caps,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(b.cap(u32::MAX), ms(1000));
    }

    #[test]
    fn no_jitter_is_deterministic() {
        let b = Backoff::new(ms(100), ms(1000), 0.0).expect("valid");
        let mut rng = StdRng::seed_from_u64(7);
        for n in 0..10 {
            assert_eq!(b.delay_with(n, &mut rng), b.cap(n));
        }
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_window() {
        let b = Backoff::new(ms(1000), ms(1000), 1.0).expect("valid");
        let mut rng = StdRng::seed_from_u64(42);
        let delays: Vec<_> = (0..2000).map(|_| b.delay_with(0, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= ms(1000)));
        assert!(delays.iter().any(|d| *d < ms(100)), "low end reached");
        assert!(delays.iter().any(|d| *d > ms(900)), "high end reached");
    }

    #[test]
    fn server_hint_gets_bounded_jitter() {
        let b = Backoff::default();
        for _ in 0..200 {
            let d = b.jitter_hint(ms(400));
            assert!(d >= ms(400) && d <= ms(800), "{d:?}");
            let z = b.jitter_hint(ms(0));
            assert!(z <= b.min(), "{z:?}");
        }
    }

    proptest! {
        #[test]
        fn delay_stays_within_bounds(
            min_ms in 1u64..10_000,
            extra_ms in 0u64..100_000,
            jitter in 0.0f64..=1.0,
            attempt in 0u32..100,
            seed in any::<u64>(),
        ) {
            let b = Backoff::new(ms(min_ms), ms(min_ms + extra_ms), jitter).expect("valid");
            let mut rng = StdRng::seed_from_u64(seed);
            let cap = b.cap(attempt);
            let d = b.delay_with(attempt, &mut rng);
            prop_assert!(cap >= b.min() && cap <= b.max());
            prop_assert!(d <= cap);
            // The fixed share of the cap is never randomised away (1 ms of float slack).
            prop_assert!(d + ms(1) >= cap.mul_f64(1.0 - jitter));
        }
    }
}
