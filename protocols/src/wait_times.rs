//! [`WaitTimes`]: how long things waited, kept as samples so that a report can give the median
//! and the 99th percentile, not just a mean.

use std::fmt;
use std::time::Duration;

/// Samples kept at most; past it every other sample is dropped (so a long session keeps a
/// thinned but unbiased record in bounded memory).
const MAX_SAMPLES: usize = 1 << 16;

/// Durations recorded one by one.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WaitTimes {
    samples: Vec<Duration>,
    /// Every `stride`-th recording is kept (doubles each time the buffer fills).
    stride: u64,
    recorded: u64,
}

/// Order statistics of a [`WaitTimes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitSummary {
    /// Durations recorded (all of them, also those thinned out of the samples).
    pub count: u64,
    /// The shortest.
    pub min: Duration,
    /// The middle one (nearest rank).
    pub median: Duration,
    /// The 99th percentile (nearest rank).
    pub p99: Duration,
    /// The longest.
    pub max: Duration,
}

impl WaitTimes {
    /// Records one duration.
    pub fn record(&mut self, waited: Duration) {
        let stride = self.stride.max(1);
        if self.recorded % stride == 0 {
            if self.samples.len() == MAX_SAMPLES {
                let mut i = 0;
                self.samples.retain(|_| {
                    i += 1;
                    i % 2 == 0
                });
                self.stride = stride * 2;
            }
            self.samples.push(waited);
        }
        self.recorded += 1;
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.recorded
    }

    /// Min, median, p99 and max (nearest-rank); `None` when nothing was recorded.
    pub fn summary(&self) -> Option<WaitSummary> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let rank = |q: f64| {
            let n = sorted.len();
            let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            sorted[i]
        };
        Some(WaitSummary {
            count: self.recorded,
            min: sorted[0],
            median: rank(0.5),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
        })
    }
}

impl fmt::Debug for WaitTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.summary() {
            None => f.write_str("WaitTimes(none)"),
            Some(s) => write!(
                f,
                "WaitTimes(n={} min={:?} median={:?} p99={:?} max={:?})",
                s.count, s.min, s.median, s.p99, s.max
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_order_statistics() {
        let mut w = WaitTimes::default();
        assert_eq!(w.summary(), None);
        for ms in (1..=100).rev() {
            w.record(Duration::from_millis(ms));
        }
        let s = w.summary().unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.min, Duration::from_millis(1));
        assert_eq!(s.median, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
    }

    #[test]
    fn bounded_memory_keeps_counting() {
        let mut w = WaitTimes::default();
        for i in 0..(3 * MAX_SAMPLES as u64) {
            w.record(Duration::from_micros(i % 1000));
        }
        assert_eq!(w.count(), 3 * MAX_SAMPLES as u64);
        assert!(w.samples.len() <= MAX_SAMPLES);
        let s = w.summary().unwrap();
        assert_eq!(s.max, Duration::from_micros(999));
        // Thinning keeps an even spread: the median stays near the middle.
        assert!((400..=600).contains(&s.median.as_micros()), "{s:?}");
    }
}
