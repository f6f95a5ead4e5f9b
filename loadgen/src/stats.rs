//! Latency samples into percentiles (exact: the samples are sorted), and a run's
//! counts into rates.

use serde::Serialize;

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// From samples in microseconds.
    pub fn of(mut micros: Vec<u64>) -> Self {
        if micros.is_empty() {
            return Self::default();
        }
        micros.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * micros.len() as f64).ceil() as usize).clamp(1, micros.len());
            micros[rank - 1] as f64 / 1000.0
        };
        Self {
            count: micros.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: micros[micros.len() - 1] as f64 / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_over_the_sorted_samples() {
        let l = Latency::of((1..=1000).rev().map(|ms| ms * 1000).collect());
        assert_eq!((l.count, l.p50, l.p90, l.p99, l.p999, l.max), (1000, 500.0, 900.0, 990.0, 999.0, 1000.0));
        assert_eq!(Latency::of(vec![]), Latency::default());
        assert_eq!(Latency::of(vec![2500]).p99, 2.5);
    }
}
