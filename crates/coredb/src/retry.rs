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

/// Errors that can say whether running the same work again may succeed.
///
/// Implemented for [`coredb::Error`](crate::Error); implement it for an application error
/// type that wraps one to use [`transaction_with_retry`](crate::DatabaseManager::transaction_with_retry).
pub trait TransientError {
    /// True when a retry may succeed (see [`Error::is_transient`](crate::Error::is_transient)).
    fn is_transient(&self) -> bool;
}

impl TransientError for crate::error::Error {
    fn is_transient(&self) -> bool {
        crate::error::Error::is_transient(self)
    }
}

/// How often and for how long a transaction is retried on transient errors.
///
/// ```no_run
/// use std::time::Duration;
/// use coredb::{Executor, IsolationLevel, RetryPolicy, SessionOptions};
///
/// # async fn demo(db: coredb::DatabaseManager) -> coredb::Result<()> {
/// let policy = RetryPolicy { max_attempts: 5, ..RetryPolicy::default() };
/// db.transaction_with_retry(
///     SessionOptions::isolation(IsolationLevel::Serializable),
///     &policy,
///     async |s| {
///         s.execute("UPDATE stock SET n = n - 1 WHERE id = 1", ()).await?;
///         Ok::<_, coredb::Error>(())
///     },
/// )
/// .await
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// No new attempt starts after this much time since the first.
    pub max_elapsed: Duration,
    /// First backoff delay; doubles per attempt with jitter.
    pub initial_backoff: Duration,
    /// Largest backoff delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts within 30 s, backoff from 50 ms up to 2 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The backoff sequence of this policy.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.initial_backoff, self.max_backoff)
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
