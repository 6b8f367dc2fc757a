//! Percentiles and spreads, kept free of I/O so they are unit-tested exactly.

use serde::Serialize;

/// The nearest-rank percentile `p` (0 < p <= 100) of `sorted` (ascending).
///
/// Nearest rank returns a value that was actually observed: the smallest
/// value with at least `p` percent of the observations at or below it.
/// `None` for an empty slice or a `p` outside (0, 100].
pub fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let n = sorted.len();
    // ceil(p/100 * n) without float drift for exact ratios: work in parts per million.
    let ppm = (p * 10_000.0).round() as u128;
    let rank = (ppm * n as u128).div_ceil(1_000_000) as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// p50/p95/p99 and max of a set of latencies in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Observations.
    pub count: usize,
    /// Median.
    pub p50_ms: i64,
    /// 95th percentile.
    pub p95_ms: i64,
    /// 99th percentile.
    pub p99_ms: i64,
    /// Largest.
    pub max_ms: i64,
}

impl Latency {
    /// Summarises `values` (any order); `None` when empty.
    pub fn of(mut values: Vec<i64>) -> Option<Self> {
        values.sort_unstable();
        Some(Self {
            count: values.len(),
            p50_ms: percentile(&values, 50.0)?,
            p95_ms: percentile(&values, 95.0)?,
            p99_ms: percentile(&values, 99.0)?,
            max_ms: *values.last()?,
        })
    }
}

/// Median and range of repeated measurements of one figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Runs.
    pub runs: usize,
    /// The median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest run.
    pub min: f64,
    /// Largest run.
    pub max: f64,
}

impl Spread {
    /// Summarises `values`; `None` when empty or when a value is NaN.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            runs: n,
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    /// Half the range as a percentage of the median: "± x %".
    pub fn plus_minus_pct(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / 2.0 / self.median * 100.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 95.0), Some(95));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.5), Some(1));
    }

    #[test]
    fn nearest_rank_on_small_sets() {
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2], 50.0), Some(1));
        assert_eq!(percentile(&[1, 2], 50.1), Some(2));
        // 10 values: p95 is rank ceil(9.5) = 10, p90 is rank 9.
        let v: Vec<i64> = (10..20).collect();
        assert_eq!(percentile(&v, 95.0), Some(19));
        assert_eq!(percentile(&v, 90.0), Some(18));
    }

    #[test]
    fn no_percentile_of_nothing_or_nonsense() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1], 0.0), None);
        assert_eq!(percentile(&[1], 100.5), None);
        assert_eq!(percentile(&[1], f64::NAN), None);
    }

    #[test]
    fn latency_summary_sorts_first() {
        let l = Latency::of(vec![30, 10, 20, 1000, 5]).unwrap();
        assert_eq!((l.count, l.p50_ms, l.p99_ms, l.max_ms), (5, 20, 1000, 1000));
        assert_eq!(Latency::of(Vec::new()), None);
    }

    #[test]
    fn spread_median_and_range() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.plus_minus_pct(), 50.0);
        assert_eq!(Spread::of(&[1.0, 3.0]).unwrap().median, 2.0);
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[f64::NAN]).is_none());
    }
}
