//! Per-room stream positions: the bookkeeping that keeps duplicates away from the application
//! and turns missing sequence numbers into gap reports.
//!
//! Every room-scoped server frame carries the room's `seq` (gapless, increasing) and `epoch`
//! (which changes when the room's stream was lost and restarted). A [`StreamPosition`] remembers
//! the last `(seq, epoch)` handed to the application and judges each new frame: a frame at or
//! below the position in the same epoch was already delivered (a replay after a resume overlaps
//! what arrived before the drop) and is dropped; a frame further ahead than the next number
//! means frames were lost, which the application learns as a gap before the frame itself.

/// The last position of one room's stream that the application has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamPosition {
    /// The highest sequence number delivered (or skipped over by a reported gap).
    seq: u64,
    /// The epoch `seq` belongs to; numbers from another epoch are not comparable.
    epoch: String,
}

/// What to do with one room-scoped frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The frame is the next one: deliver it.
    Deliver,
    /// The frame was already delivered: drop it.
    Duplicate,
    /// Frames `from..=to` never arrived: report the gap, then deliver the frame.
    Gap {
        /// First missing sequence number.
        from: u64,
        /// Last missing sequence number.
        to: u64,
    },
    /// The frame belongs to a new epoch: the old positions are meaningless, so deliver it and
    /// start over from its number.
    NewEpoch,
}

impl StreamPosition {
    /// Starts at `seq` (the position reported by `joined` or `reconnected`) in `epoch`.
    pub(crate) fn new(seq: u64, epoch: impl Into<String>) -> Self {
        StreamPosition {
            seq,
            epoch: epoch.into(),
        }
    }

    /// The highest sequence number delivered so far, sent as `last_sequence` when resuming.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// The epoch of [`StreamPosition::seq`], sent with `last_sequence` when resuming.
    pub(crate) fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Judges a frame at `seq` in `epoch` and advances the position when it is delivered.
    pub(crate) fn observe(&mut self, seq: u64, epoch: &str) -> Verdict {
        if epoch != self.epoch {
            self.epoch = epoch.to_owned();
            self.seq = seq;
            return Verdict::NewEpoch;
        }
        if seq <= self.seq {
            return Verdict::Duplicate;
        }
        let verdict = if seq == self.seq + 1 {
            Verdict::Deliver
        } else {
            Verdict::Gap {
                from: self.seq + 1,
                to: seq - 1,
            }
        };
        self.seq = seq;
        verdict
    }

    /// Moves past the gap `from..=to` that the server reported, so that the frames after it
    /// are not reported as a second gap. Returns the part of the gap the application has not
    /// already seen, or `None` when the gap lies entirely behind the position.
    pub(crate) fn skip_gap(&mut self, from: u64, to: u64, epoch: &str) -> Option<(u64, u64)> {
        if epoch != self.epoch {
            self.epoch = epoch.to_owned();
            self.seq = to;
            return Some((from, to));
        }
        if to <= self.seq {
            return None;
        }
        let from = from.max(self.seq + 1);
        self.seq = to;
        Some((from, to))
    }

    /// Moves the position forward to `seq` in `epoch` without delivering anything, as after
    /// `reconnected` reports the room's current position. Returns the range skipped over when
    /// it is not empty and lies in the same epoch.
    pub(crate) fn catch_up(&mut self, seq: u64, epoch: &str) -> Option<(u64, u64)> {
        if epoch != self.epoch {
            self.epoch = epoch.to_owned();
            self.seq = seq;
            return None;
        }
        if seq <= self.seq {
            return None;
        }
        let skipped = (self.seq + 1, seq);
        self.seq = seq;
        Some(skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_frames_are_delivered() {
        let mut p = StreamPosition::new(3, "e1");
        assert_eq!(p.observe(4, "e1"), Verdict::Deliver);
        assert_eq!(p.observe(5, "e1"), Verdict::Deliver);
        assert_eq!(p.seq(), 5);
    }

    #[test]
    fn replays_are_dropped() {
        let mut p = StreamPosition::new(3, "e1");
        assert_eq!(p.observe(4, "e1"), Verdict::Deliver);
        assert_eq!(p.observe(4, "e1"), Verdict::Duplicate);
        assert_eq!(p.observe(2, "e1"), Verdict::Duplicate);
        assert_eq!(p.seq(), 4);
    }

    #[test]
    fn jumps_are_gaps() {
        let mut p = StreamPosition::new(3, "e1");
        assert_eq!(p.observe(7, "e1"), Verdict::Gap { from: 4, to: 6 });
        assert_eq!(p.observe(8, "e1"), Verdict::Deliver);
    }

    #[test]
    fn a_new_epoch_restarts_the_count() {
        let mut p = StreamPosition::new(30, "e1");
        assert_eq!(p.observe(2, "e2"), Verdict::NewEpoch);
        assert_eq!(p.epoch(), "e2");
        assert_eq!(p.observe(3, "e2"), Verdict::Deliver);
        assert_eq!(p.observe(2, "e2"), Verdict::Duplicate);
    }

    #[test]
    fn reported_gaps_move_the_position() {
        let mut p = StreamPosition::new(3, "e1");
        assert_eq!(
            p.skip_gap(2, 10, "e1"),
            Some((4, 10)),
            "trimmed to what was not seen"
        );
        assert_eq!(p.observe(11, "e1"), Verdict::Deliver);
        assert_eq!(
            p.skip_gap(4, 5, "e1"),
            None,
            "a gap behind the position is old news"
        );
        assert_eq!(p.skip_gap(1, 3, "e2"), Some((1, 3)));
        assert_eq!(p.epoch(), "e2");
        assert_eq!(p.catch_up(3, "e2"), None);
        assert_eq!(p.catch_up(11, "e1"), None);
        assert_eq!(p.catch_up(13, "e1"), Some((12, 13)));
    }

    /// A server stream `1..=len`, delivered over connections that are cut at the given points;
    /// after each cut the client resumes from its position and the server replays from a buffer
    /// that holds only the last `buffer` frames, reporting a gap for anything older.
    fn simulate(len: u64, cuts: &[u64], overlap: u64, buffer: u64) -> (Vec<u64>, Vec<(u64, u64)>) {
        let mut position = StreamPosition::new(0, "e");
        let mut delivered = Vec::new();
        let mut gaps = Vec::new();
        let mut next = 1;
        let mut cuts = cuts.to_vec();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain(std::iter::once(len)) {
            // The live connection delivers up to the cut.
            while next <= cut.min(len) {
                match position.observe(next, "e") {
                    Verdict::Deliver => delivered.push(next),
                    other => panic!("live frame {next}: {other:?}"),
                }
                next += 1;
            }
            // The server produced more while the client was away; the client resumes from
            // its position, and the replay overlaps by `overlap` frames (as when the server
            // replays from an older point than asked).
            let produced = (next + 3).min(len);
            let oldest_kept = produced.saturating_sub(buffer) + 1;
            let from = position.seq().saturating_sub(overlap).max(1);
            let before = position.seq();
            if before + 1 < oldest_kept {
                if let Some(gap) = position.skip_gap(1, oldest_kept - 1, "e") {
                    gaps.push(gap);
                }
            }
            for seq in from.max(oldest_kept)..=produced {
                match position.observe(seq, "e") {
                    Verdict::Deliver => delivered.push(seq),
                    Verdict::Duplicate => {}
                    other => panic!("replayed frame {seq}: {other:?}"),
                }
            }
            next = produced + 1;
        }
        (delivered, gaps)
    }

    proptest! {
        /// Whatever the order of observations, the application sees strictly increasing
        /// numbers, and delivered numbers plus gap ranges cover every number exactly once.
        #[test]
        fn delivered_and_gaps_partition_the_stream(seqs in proptest::collection::vec(1u64..60, 0..200)) {
            let mut p = StreamPosition::new(0, "e");
            let mut covered = Vec::new();
            let mut last = 0;
            for seq in seqs {
                match p.observe(seq, "e") {
                    Verdict::Deliver => {
                        prop_assert_eq!(seq, last + 1);
                        covered.push(seq);
                        last = seq;
                    }
                    Verdict::Gap { from, to } => {
                        prop_assert_eq!(from, last + 1);
                        prop_assert_eq!(to, seq - 1);
                        covered.extend(from..=to);
                        covered.push(seq);
                        last = seq;
                    }
                    Verdict::Duplicate => prop_assert!(seq <= last),
                    Verdict::NewEpoch => prop_assert!(false, "one epoch only"),
                }
            }
            let expected: Vec<u64> = (1..=last).collect();
            prop_assert_eq!(covered, expected);
        }

        /// Resumes with overlapping replays deliver every frame exactly once and in order;
        /// with a large enough buffer nothing is reported lost.
        #[test]
        fn resumes_deliver_exactly_once(
            len in 1u64..300,
            cuts in proptest::collection::vec(0u64..300, 0..10),
            overlap in 0u64..5,
        ) {
            let (delivered, gaps) = simulate(len, &cuts, overlap, 1_000);
            prop_assert!(gaps.is_empty());
            let expected: Vec<u64> = (1..=len).collect();
            prop_assert_eq!(delivered, expected);
        }

        /// With a small replay buffer, frames are lost, but every lost frame is inside a
        /// reported gap and every other frame is delivered exactly once, in order.
        #[test]
        fn lost_frames_are_reported_as_gaps(
            len in 1u64..300,
            cuts in proptest::collection::vec(0u64..300, 0..10),
            overlap in 0u64..5,
            buffer in 1u64..4,
        ) {
            let (delivered, gaps) = simulate(len, &cuts, overlap, buffer);
            prop_assert!(delivered.windows(2).all(|w| w[0] < w[1]));
            let mut covered: Vec<u64> = delivered.clone();
            for (from, to) in &gaps {
                prop_assert!(from <= to);
                covered.extend(*from..=*to);
            }
            covered.sort_unstable();
            let expected: Vec<u64> = (1..=len).collect();
            prop_assert_eq!(covered, expected);
        }
    }
}
