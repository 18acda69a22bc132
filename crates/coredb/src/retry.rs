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

impl TransientError for crate::Error {
    fn is_transient(&self) -> bool {
        crate::Error::is_transient(self)
    }
}

/// How often and for how long a transaction is retried on transient errors.
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

/// True for statements that only read, so running one again after a lost connection cannot
/// apply anything twice: the first keyword is `SELECT`, `VALUES`, `TABLE` or `SHOW`.
pub(crate) fn is_read_only_statement(sql: &str) -> bool {
    let mut rest = sql.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r
                .split_once('\n')
                .map_or("", |(_, after)| after)
                .trim_start();
        } else if let Some(r) = rest.strip_prefix('(') {
            rest = r.trim_start();
        } else {
            break;
        }
    }
    let word: String = rest
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_uppercase();
    matches!(word.as_str(), "SELECT" | "VALUES" | "TABLE" | "SHOW")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_reads_count_as_read_only() {
        for sql in [
            "SELECT 1",
            "  select * from t",
            "(SELECT 1) UNION (SELECT 2)",
            "-- c\nSHOW x",
            "VALUES (1)",
            "TABLE t",
        ] {
            assert!(is_read_only_statement(sql), "{sql}");
        }
        for sql in [
            "INSERT INTO t VALUES (1)",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "UPDATE t SET x = 1",
            "BEGIN",
            "",
        ] {
            assert!(!is_read_only_statement(sql), "{sql}");
        }
    }

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
