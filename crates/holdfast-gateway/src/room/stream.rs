//! A room's stream position and replay: the bounded ring of recent room messages (the memory
//! backend's history), and the one gap arithmetic every backend's resume goes through.

use std::collections::VecDeque;

use axum::extract::ws::Utf8Bytes;

/// One room message kept for replay: its sequence number and its serialised frame, exactly as
/// it was sent to members (shared bytes, not a copy).
#[derive(Debug, Clone)]
pub struct Buffered {
    /// The message's room sequence number.
    pub seq: u64,
    /// The frame as sent.
    pub text: Utf8Bytes,
}

/// A bounded ring of the most recent room messages, oldest evicted first, bounded both by count
/// and by bytes.
///
/// Invariant: sequence numbers in the ring are consecutive and increasing.
#[derive(Debug)]
pub struct EventRing {
    items: VecDeque<Buffered>,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
}

impl EventRing {
    /// An empty ring keeping at most `capacity` messages (at least one) and `max_bytes` bytes
    /// (the newest message is always kept).
    pub fn new(capacity: usize, max_bytes: usize) -> EventRing {
        EventRing {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            max_bytes,
            bytes: 0,
        }
    }

    /// Appends a message; returns how many old ones were evicted to make room.
    pub fn push(&mut self, seq: u64, text: Utf8Bytes) -> usize {
        if self.items.back().is_some_and(|b| b.seq + 1 != seq) {
            // Not the next one: what was held no longer leads up to it.
            let n = self.items.len();
            self.clear();
            self.push(seq, text);
            return n;
        }
        self.bytes += text.len();
        self.items.push_back(Buffered { seq, text });
        let mut evicted = 0;
        while self.items.len() > self.capacity
            || (self.bytes > self.max_bytes && self.items.len() > 1)
        {
            if let Some(b) = self.items.pop_front() {
                self.bytes -= b.text.len();
                evicted += 1;
            }
        }
        evicted
    }

    /// Evicts the oldest message unless it is the only one; returns the bytes freed.
    pub fn evict_oldest(&mut self) -> Option<usize> {
        if self.items.len() <= 1 {
            return None;
        }
        let b = self.items.pop_front()?;
        self.bytes -= b.text.len();
        Some(b.text.len())
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
    }

    /// Number of messages held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the ring holds nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The held messages with `from <= seq <= to`, in order.
    pub fn range(&self, from: u64, to: u64) -> Vec<Buffered> {
        let Some(first) = self.items.front().map(|b| b.seq) else {
            return Vec::new();
        };
        let skip = from.saturating_sub(first) as usize;
        self.items
            .iter()
            .skip(skip)
            .take_while(|b| b.seq <= to)
            .filter(|b| b.seq >= from)
            .cloned()
            .collect()
    }
}

/// What a resume replays: the missed messages still held, and the exact range that is not.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Consecutive messages ending at the resume's position, in order.
    pub events: Vec<Buffered>,
    /// The lost range `(from, to)`, inclusive, when something was missed and not replayed.
    pub gap: Option<(u64, u64)>,
}

/// The replay for a member that processed up to `last` when the room's stream stood at
/// `current`, from the messages a backend still holds in `(last, current]` (`held`, in any
/// state: missing, out of order, or with holes).
///
/// Only the longest run of consecutive messages that ends at `current` is replayed; everything
/// before it from `last + 1` on is the gap. So a message that cannot be replayed is always
/// reported in the gap, never silently skipped.
pub fn replay(last: u64, current: u64, mut held: Vec<Buffered>) -> Replay {
    if last >= current {
        return Replay::default();
    }
    held.retain(|b| b.seq > last && b.seq <= current);
    held.sort_by_key(|b| b.seq);
    held.dedup_by_key(|b| b.seq);
    // The run that ends at `current`.
    let mut start = held.len();
    let mut want = current;
    while start > 0 && held[start - 1].seq == want {
        start -= 1;
        want -= 1;
    }
    let events = held.split_off(start);
    let first = events.first().map_or(current + 1, |b| b.seq);
    let gap = (first > last + 1).then_some((last + 1, first - 1));
    Replay { events, gap }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(seq: u64) -> Utf8Bytes {
        Utf8Bytes::from(format!("m{seq}"))
    }

    #[test]
    fn ring_is_bounded_in_bytes() {
        let mut ring = EventRing::new(100, 10);
        for seq in 1..=9 {
            ring.push(seq, text(seq));
        }
        assert!(ring.bytes() <= 10);
        assert_eq!(ring.range(1, 9).last().map(|b| b.seq), Some(9));
        // A single message larger than the budget is still kept (the newest).
        ring.push(10, Utf8Bytes::from("x".repeat(50)));
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn a_hole_is_reported_in_the_gap() {
        let held: Vec<Buffered> = [3u64, 4, 6, 7]
            .iter()
            .map(|&s| Buffered {
                seq: s,
                text: text(s),
            })
            .collect();
        let r = replay(2, 7, held);
        assert_eq!(r.gap, Some((3, 5)));
        assert_eq!(r.events.iter().map(|b| b.seq).collect::<Vec<_>>(), [6, 7]);
        let r = replay(2, 8, vec![]);
        assert_eq!(r.gap, Some((3, 8)));
    }

    proptest! {
        /// Any sequence of pushes and reads: order kept, bound held, gap exactly right.
        #[test]
        fn ring_keeps_order_bound_and_reports_exact_gaps(
            capacity in 1usize..20,
            pushes in 0u64..60,
            reads in proptest::collection::vec(0u64..70, 1..10),
        ) {
            let mut ring = EventRing::new(capacity, usize::MAX);
            for seq in 1..=pushes {
                ring.push(seq, text(seq));
                prop_assert!(ring.len() <= capacity);
            }
            let current = pushes;
            for last in reads {
                let r = replay(last, current, ring.range(last + 1, current));
                let events = &r.events;
                for w in events.windows(2) {
                    prop_assert_eq!(w[0].seq + 1, w[1].seq);
                }
                if last >= current {
                    prop_assert!(events.is_empty());
                    prop_assert!(r.gap.is_none());
                    continue;
                }
                if let Some(e) = events.last() {
                    prop_assert_eq!(e.seq, current);
                }
                for e in events {
                    prop_assert!(e.seq > last);
                    prop_assert_eq!(e.text.as_str(), format!("m{}", e.seq));
                }
                let first_replayed = events.first().map(|e| e.seq).unwrap_or(current + 1);
                match r.gap {
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
