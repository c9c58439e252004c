//! Replay state: the bounded per-room ring of recent room messages, reconnection tokens, and the
//! per-member publish dedupe window.
//!
//! All three are plain data structures with no locking and no I/O; the room that owns them holds
//! its lock while using them.

use std::collections::VecDeque;

use axum::extract::ws::Utf8Bytes;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// One room message kept for replay: its sequence number and its serialised frame.
#[derive(Debug, Clone)]
pub struct Buffered {
    /// The message's room sequence number.
    pub seq: u64,
    /// The frame exactly as it was sent to members, shared with their queues.
    pub text: Utf8Bytes,
}

/// A bounded ring of the most recent room messages, oldest evicted first.
///
/// Invariant: sequence numbers in the ring are consecutive and increasing, and the last one is
/// the room's current sequence number (the room pushes every message it emits).
#[derive(Debug)]
pub struct EventRing {
    /// The messages, oldest at the front. A `VecDeque` because eviction is from the front and
    /// appends at the back, both O(1).
    items: VecDeque<Buffered>,
    /// Most messages kept.
    capacity: usize,
}

impl EventRing {
    /// An empty ring keeping at most `capacity` messages (at least one).
    pub fn new(capacity: usize) -> EventRing {
        EventRing {
            items: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Appends a message; returns true when the oldest one was evicted to make room.
    pub fn push(&mut self, seq: u64, text: Utf8Bytes) -> bool {
        let evicted = if self.items.len() >= self.capacity {
            self.items.pop_front();
            true
        } else {
            false
        };
        self.items.push_back(Buffered { seq, text });
        evicted
    }

    /// Number of messages held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the ring holds nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The oldest sequence number held.
    pub fn oldest(&self) -> Option<u64> {
        self.items.front().map(|b| b.seq)
    }

    /// The messages after `last_seq` that are still held, and the range that is not, given the
    /// room's current sequence number `current`.
    pub fn since(&self, last_seq: u64, current: u64) -> (Vec<Buffered>, Option<(u64, u64)>) {
        if last_seq >= current {
            return (Vec::new(), None);
        }
        let wanted_from = last_seq + 1;
        match self.oldest() {
            Some(oldest) if oldest <= wanted_from => {
                let skip = (wanted_from - oldest) as usize;
                (self.items.iter().skip(skip).cloned().collect(), None)
            }
            Some(oldest) => (
                self.items.iter().cloned().collect(),
                Some((wanted_from, oldest - 1)),
            ),
            None => (Vec::new(), Some((wanted_from, current))),
        }
    }
}

/// A fresh reconnection token: 32 random bytes, hex encoded.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The stored form of a token: its SHA-256. Tokens themselves are never kept.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares a presented token with a stored hash in constant time.
pub fn token_matches(token: &str, stored: &[u8; 32]) -> bool {
    hash_token(token).ct_eq(stored).into()
}

/// The recent client message ids of one member, with the `seq` each publish got, so a retried
/// publish is answered with its original ack instead of being delivered again.
#[derive(Debug, Default)]
pub struct DedupeWindow {
    /// `(id, seq)` pairs, oldest first; bounded by the window size given to [`DedupeWindow::insert`].
    recent: VecDeque<(Box<str>, u64)>,
}

impl DedupeWindow {
    /// The seq a publish with this id got, if it is still remembered.
    pub fn lookup(&self, id: &str) -> Option<u64> {
        self.recent
            .iter()
            .rev()
            .find(|(k, _)| &**k == id)
            .map(|(_, s)| *s)
    }

    /// Remembers `id` → `seq`, forgetting the oldest id beyond `window`.
    pub fn insert(&mut self, id: &str, seq: u64, window: usize) {
        while self.recent.len() >= window.max(1) {
            self.recent.pop_front();
        }
        self.recent.push_back((id.into(), seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(seq: u64) -> Utf8Bytes {
        Utf8Bytes::from(format!("m{seq}"))
    }

    #[test]
    fn tokens_hash_and_compare() {
        let t = new_token();
        assert_eq!(t.len(), 64);
        let h = hash_token(&t);
        assert!(token_matches(&t, &h));
        assert!(!token_matches(&new_token(), &h));
    }

    #[test]
    fn dedupe_window_is_bounded() {
        let mut d = DedupeWindow::default();
        for i in 0..10u64 {
            d.insert(&format!("id{i}"), i, 4);
        }
        assert_eq!(d.lookup("id9"), Some(9));
        assert_eq!(d.lookup("id6"), Some(6));
        assert_eq!(d.lookup("id5"), None);
    }

    proptest! {
        /// Any sequence of pushes and reads: order kept, bound held, gap exactly right.
        #[test]
        fn ring_keeps_order_bound_and_reports_exact_gaps(
            capacity in 1usize..20,
            pushes in 0u64..60,
            reads in proptest::collection::vec(0u64..70, 1..10),
        ) {
            let mut ring = EventRing::new(capacity);
            for seq in 1..=pushes {
                ring.push(seq, text(seq));
                prop_assert!(ring.len() <= capacity);
            }
            let current = pushes;
            for last in reads {
                let (events, gap) = ring.since(last, current);
                // Replayed seqs are consecutive, after `last`, and end at `current`.
                for w in events.windows(2) {
                    prop_assert_eq!(w[0].seq + 1, w[1].seq);
                }
                if last >= current {
                    prop_assert!(events.is_empty());
                    prop_assert!(gap.is_none());
                    continue;
                }
                if let Some(e) = events.last() {
                    prop_assert_eq!(e.seq, current);
                }
                for e in &events {
                    prop_assert!(e.seq > last);
                    prop_assert_eq!(e.text.as_str(), format!("m{}", e.seq));
                }
                // Everything in (last, current] is either replayed or inside the gap, exactly once.
                let first_replayed = events.first().map(|e| e.seq).unwrap_or(current + 1);
                match gap {
                    Some((from, to)) => {
                        prop_assert_eq!(from, last + 1);
                        prop_assert_eq!(to + 1, first_replayed);
                    }
                    None => prop_assert_eq!(first_replayed, last + 1),
                }
            }
        }
    }
}
