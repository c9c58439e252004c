//! The token bucket behind the inbound rate limits (see `super::budget`): 16 bytes, with the
//! rate and burst kept once by its owner and time in milliseconds from the owner's origin.

/// An inbound token bucket; `rate` tokens per second up to `burst`, given on every call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    tokens: f32,
    /// Milliseconds since the owner's origin at the last refill.
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub(crate) fn new(burst: u32, now_ms: u64) -> TokenBucket {
        TokenBucket {
            tokens: burst as f32,
            last_ms: now_ms,
        }
    }

    /// Takes one token at `now_ms`; false when the bucket is empty (the frame is over the
    /// limit).
    pub(crate) fn take(&mut self, now_ms: u64, rate: u32, burst: u32) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens =
            (f64::from(self.tokens) + elapsed * f64::from(rate)).min(f64::from(burst)) as f32;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let mut b = TokenBucket::new(3, 0);
        assert!(b.take(0, 10, 3));
        assert!(b.take(0, 10, 3));
        assert!(b.take(0, 10, 3));
        assert!(!b.take(0, 10, 3), "the burst is spent");
        assert!(!b.take(50, 10, 3), "half a token");
        assert!(b.take(100, 10, 3), "one token per 100 ms");
        assert!(!b.take(100, 10, 3));
    }

    #[test]
    fn never_holds_more_than_the_burst() {
        let mut b = TokenBucket::new(2, 0);
        assert!(b.take(60_000, 1000, 2));
        assert!(b.take(60_000, 1000, 2));
        assert!(!b.take(60_000, 1000, 2));
    }

    #[test]
    fn is_small() {
        assert!(std::mem::size_of::<TokenBucket>() <= 16);
    }
}
