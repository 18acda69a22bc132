//! Exponential backoff with jitter, shared by connecting and by transaction retries.

use std::time::Duration;

/// Delays that double from `initial` up to `max`, each drawn at random from its upper half so
/// that many clients retrying at once spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { next: initial, max }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let upper = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = upper / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

impl Default for Backoff {
    /// 50 ms doubling up to 2 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let bounds = [(50, 100), (100, 200), (200, 400), (200, 400)];
        for (lo, hi) in bounds {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi),
                "{d:?} not in {lo}..={hi} ms"
            );
        }
    }
}
