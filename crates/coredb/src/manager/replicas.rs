//! What a reader knows of its replicas: how far behind each one is, how far it has replayed
//! the primary's WAL, and how far the caller's own writes reached.
//!
//! Lag is measured on the replica alone, so that no connection to the primary is needed: zero
//! while its WAL receiver is connected and it has replayed all it received, otherwise the age
//! of the last transaction it replayed (`now() - pg_last_xact_replay_timestamp()`). A replica
//! cut off from its primary therefore shows a growing lag even though it replayed everything
//! it had, which is the right answer for routing: it no longer knows what the primary did.
//!
//! Read-your-writes compares WAL positions: after a write commits, the primary's insert
//! position (`pg_current_wal_insert_lsn()`, read after `COMMIT` returned, so at or past the
//! commit record); a replica whose `pg_last_wal_replay_lsn()` reached it has replayed the
//! commit. The insert position can stand a page header (24 bytes) past the end of the last
//! record, so on an idle primary a replica that replayed everything can look a few bytes short
//! until the next record arrives: such a read waits its bound and then goes to the primary,
//! which is slower but never wrong.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Asked of a replica: whether it is a standby, its lag in milliseconds (`NULL` on a primary
/// or when unknown), and how far it has replayed. Readable by any role.
pub(crate) const MEASURE_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN NOT pg_is_in_recovery() THEN NULL \
          WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() \
               AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN 0 \
          ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000 \
     END::float8, \
     pg_last_wal_replay_lsn()::text";

/// Asked of a replica while a read waits for it: how far it has replayed.
pub(crate) const REPLAYED_SQL: &str = "SELECT pg_last_wal_replay_lsn()::text";

/// How often a replica's lag is measured while reads use it.
const MEASURE_EVERY: Duration = Duration::from_millis(250);

/// A lag measured longer ago than this is not trusted: the replica is out of rotation until
/// it is measured again.
const TRUST_FOR: Duration = Duration::from_secs(2);

/// How long a waiting read sleeps between two looks at a replica's replay position.
pub(crate) const REPLAY_POLL: Duration = Duration::from_millis(2);

/// What the reader last learnt of one replica.
#[derive(Debug, Default)]
pub(crate) struct ReplicaState {
    /// When the lag was last measured, and what it was (`None`: the measurement failed).
    lag: Mutex<Option<(Instant, Option<Duration>)>>,
    /// The furthest replay position seen.
    replayed: AtomicU64,
    /// A measurement is under way.
    measuring: AtomicBool,
}

impl ReplicaState {
    /// Whether the replica may take reads under `max_lag`: measured recently, and no further
    /// behind than that.
    pub(crate) fn within(&self, max_lag: Duration) -> bool {
        let last = *self.lag.lock().unwrap_or_else(|e| e.into_inner());
        match last {
            Some((at, Some(lag))) => at.elapsed() < TRUST_FOR && lag <= max_lag,
            _ => false,
        }
    }

    /// Whether a new measurement is due, claiming it when it is: the caller must then call
    /// [`measured`](Self::measured).
    pub(crate) fn claim_measurement(&self) -> bool {
        let due = self
            .lag
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|(at, _)| at.elapsed() >= MEASURE_EVERY);
        due && !self.measuring.swap(true, Ordering::AcqRel)
    }

    /// Records a measurement (`None` when it failed) and its replay position.
    pub(crate) fn measured(&self, lag: Option<Duration>, replayed: Option<u64>) {
        *self.lag.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), lag));
        if let Some(lsn) = replayed {
            self.saw_replayed(lsn);
        }
        self.measuring.store(false, Ordering::Release);
    }

    /// Records a replay position read from the replica.
    pub(crate) fn saw_replayed(&self, lsn: u64) {
        self.replayed.fetch_max(lsn, Ordering::AcqRel);
    }

    /// The furthest replay position seen.
    pub(crate) fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::Acquire)
    }
}

/// The lag in a row of [`MEASURE_SQL`]: `None` when unknown or negative (clocks apart).
pub(crate) fn lag_of(ms: Option<f64>) -> Option<Duration> {
    ms.filter(|ms| ms.is_finite())
        .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lag_is_trusted_only_while_recent_and_small() {
        let state = ReplicaState::default();
        assert!(!state.within(Duration::from_secs(1)), "never measured");
        assert!(state.claim_measurement());
        assert!(!state.claim_measurement(), "one measurement at a time");
        state.measured(Some(Duration::from_millis(300)), Some(42));
        assert!(state.within(Duration::from_secs(1)));
        assert!(!state.within(Duration::from_millis(100)));
        assert_eq!(state.replayed(), 42);
        state.measured(None, None);
        assert!(!state.within(Duration::from_secs(1)), "failed measurement");
        assert_eq!(state.replayed(), 42, "positions only move forward");
    }
}
