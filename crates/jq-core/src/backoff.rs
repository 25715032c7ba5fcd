//! Retry backoff (FR-033): `min(base * 2^retry, max) + jitter`.
//!
//! Jitter is uniform in `[0, JITTER_RATIO * capped)`, i.e. at most 10% on top
//! of the capped delay, so retries of jobs that failed together spread out
//! without ever waiting much longer than the documented curve. The random
//! number is passed in, so the function is pure and tests are exact.

use std::time::Duration;

/// Largest share of the capped delay added as jitter.
pub const JITTER_RATIO: f64 = 0.1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl Default for BackoffPolicy {
    /// SPEC defaults: base 5 s, max 300 s.
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_secs(5),
            max: Duration::from_secs(300),
        }
    }
}

impl BackoffPolicy {
    /// The delay before retry number `retry` (0 for the first retry).
    /// `unit` is a random number in [0, 1); values outside are clamped.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let capped = self.capped(retry);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        capped + capped.mul_f64(JITTER_RATIO * unit)
    }

    /// The delay without jitter: `min(base * 2^retry, max)`.
    pub fn capped(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn fr_033_default_curve_doubles_then_caps_at_300s() {
        let p = BackoffPolicy::default();
        let got: Vec<u64> = (0..10).map(|r| p.delay(r, 0.0).as_secs()).collect();
        assert_eq!(got, vec![5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
    }

    #[test]
    fn fr_033_jitter_adds_at_most_ten_percent() {
        let p = BackoffPolicy::default();
        assert_eq!(p.delay(0, 0.5), Duration::from_millis(5250));
        assert!(p.delay(6, 0.999_999) < secs(330));
        // Out-of-range randomness is clamped, never negative or unbounded.
        assert_eq!(p.delay(0, -3.0), secs(5));
        assert_eq!(p.delay(0, f64::NAN), secs(5));
        assert_eq!(p.delay(0, 7.0), Duration::from_millis(5500));
    }

    #[test]
    fn fr_033_huge_retry_numbers_do_not_overflow() {
        let p = BackoffPolicy {
            base: Duration::from_secs(u64::MAX / 4),
            max: Duration::from_secs(600),
        };
        assert_eq!(p.capped(u32::MAX), secs(600));
    }

    proptest! {
        #[test]
        fn fr_033_delay_is_bounded_and_monotonic(
            base_ms in 1u64..100_000, max_ms in 1u64..10_000_000,
            retry in 0u32..64, unit in 0.0f64..1.0,
        ) {
            let p = BackoffPolicy { base: Duration::from_millis(base_ms), max: Duration::from_millis(max_ms) };
            let d = p.delay(retry, unit);
            let capped = p.capped(retry);
            prop_assert!(capped <= p.max);
            prop_assert!(d >= capped);
            prop_assert!(d <= capped + capped.mul_f64(JITTER_RATIO));
            prop_assert!(p.capped(retry + 1) >= capped);
        }
    }
}
