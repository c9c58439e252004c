//! Latency histograms: recorded in microseconds, merged across connections and processes,
//! summarised as percentiles in milliseconds.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded, in microseconds (one hour); larger values are clamped.
const MAX_US: u64 = 3_600_000_000;

/// A latency histogram with microsecond resolution and three significant digits.
#[derive(Debug, Clone)]
pub struct Latency {
    /// HDR keeps every percentile within 0.1% at a fixed, small size, whatever the count.
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        Latency {
            hist: Histogram::new_with_bounds(1, MAX_US, 3)
                .expect("static bounds are valid for hdrhistogram"),
        }
    }

    /// Records one latency in microseconds (0 is counted as 1).
    pub fn record_us(&mut self, us: u64) {
        self.hist.saturating_record(us.clamp(1, MAX_US));
    }

    /// Records one latency in nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        self.record_us(ns / 1_000);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Both histograms share the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The percentile summary.
    pub fn summary(&self) -> Percentiles {
        let ms = |us: u64| us as f64 / 1_000.0;
        if self.hist.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: self.hist.len(),
            min_ms: ms(self.hist.min()),
            mean_ms: self.hist.mean() / 1_000.0,
            p50_ms: ms(self.hist.value_at_quantile(0.50)),
            p90_ms: ms(self.hist.value_at_quantile(0.90)),
            p99_ms: ms(self.hist.value_at_quantile(0.99)),
            p999_ms: ms(self.hist.value_at_quantile(0.999)),
            max_ms: ms(self.hist.max()),
        }
    }

    /// The recorded values as `[value_us, count]` pairs, for shipping between processes.
    pub fn to_buckets(&self) -> Vec<[u64; 2]> {
        self.hist
            .iter_recorded()
            .map(|v| [v.value_iterated_to(), v.count_at_value()])
            .collect()
    }

    /// Rebuilds a histogram from [`Latency::to_buckets`].
    pub fn from_buckets(buckets: &[[u64; 2]]) -> Self {
        let mut out = Latency::new();
        for [value, count] in buckets {
            let _ = out
                .hist
                .record_n(value.clamp(&1, &MAX_US).to_owned(), *count);
        }
        out
    }
}

/// A latency distribution summary, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Smallest sample.
    pub min_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b * 0.002 + 0.001
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = Latency::new();
        for us in 1..=10_000 {
            h.record_us(us);
        }
        let p = h.summary();
        assert_eq!(p.count, 10_000);
        assert!(close(p.p50_ms, 5.0), "{p:?}");
        assert!(close(p.p90_ms, 9.0), "{p:?}");
        assert!(close(p.p99_ms, 9.9), "{p:?}");
        assert!(close(p.p999_ms, 9.99), "{p:?}");
        assert!(close(p.max_ms, 10.0), "{p:?}");
        assert!(close(p.min_ms, 0.001), "{p:?}");
    }

    #[test]
    fn a_tail_shows_in_the_high_percentiles_only() {
        let mut h = Latency::new();
        for _ in 0..990 {
            h.record_us(1_000);
        }
        for _ in 0..10 {
            h.record_us(500_000);
        }
        let p = h.summary();
        assert!(close(p.p50_ms, 1.0) && close(p.p90_ms, 1.0), "{p:?}");
        assert!(close(p.p999_ms, 500.0), "{p:?}");
    }

    #[test]
    fn merging_and_buckets_round_trip() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        for us in 0..1_000 {
            a.record_us(us);
            b.record_ns(us * 1_000 + 500_000_000);
        }
        a.merge(&b);
        assert_eq!(a.count(), 2_000);
        let back = Latency::from_buckets(&a.to_buckets());
        assert_eq!(back.summary(), a.summary());
        let json = serde_json::to_string(&a.to_buckets()).unwrap();
        let parsed: Vec<[u64; 2]> = serde_json::from_str(&json).unwrap();
        assert_eq!(Latency::from_buckets(&parsed).summary(), a.summary());
        assert_eq!(Latency::new().summary(), Percentiles::default());
    }
}
