//! Pool figures: a snapshot of its state and counters since it was created.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A snapshot of the pool's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Open connections (idle + in use).
    pub size: usize,
    /// Open connections waiting in the pool.
    pub idle: usize,
    /// Connections checked out by callers.
    pub in_use: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
    /// The most connections that may be open: `pool_size + max_overflow`.
    pub max: usize,
    /// Connections kept open when idle.
    pub pool_size: usize,
    /// Extra connections allowed under load.
    pub max_overflow: usize,
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Its socket was closed or a ping failed (server restart, `pg_terminate_backend`).
    Broken,
    /// It reached `pool_recycle` age.
    Recycled,
    /// It came back while `pool_size` connections were already idle.
    Overflow,
    /// Its last operation was abandoned half-way (a dropped future), so its state is unknown.
    Discarded,
    /// The pool was closed.
    PoolClosed,
}

impl CloseReason {
    /// The reason as a metric label: `broken`, `recycled`, `overflow`, `discarded`,
    /// `pool_closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Broken => "broken",
            CloseReason::Recycled => "recycled",
            CloseReason::Overflow => "overflow",
            CloseReason::Discarded => "discarded",
            CloseReason::PoolClosed => "pool_closed",
        }
    }
}

/// Counters since the pool was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PoolMetrics {
    /// Connections opened.
    pub created: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Successful checkouts.
    pub checkouts: u64,
    /// Checkouts that gave up after the pool timeout.
    pub timeouts: u64,
    /// Total time callers spent waiting for a connection.
    #[serde(serialize_with = "as_millis")]
    pub total_wait: Duration,
    /// Idle connections verified with a ping before hand-out.
    pub pings: u64,
    /// Connections closed because they were broken.
    pub closed_broken: u64,
    /// Connections closed because they reached their maximum age.
    pub closed_recycled: u64,
    /// Connections closed because enough were already idle.
    pub closed_overflow: u64,
    /// Connections closed because an operation on them was abandoned.
    pub closed_discarded: u64,
    /// Connections closed by [`close`](crate::Engine::close).
    pub closed_pool_closed: u64,
}

impl PoolMetrics {
    /// All connections closed, whatever the reason.
    pub fn closed(&self) -> u64 {
        self.closed_broken
            + self.closed_recycled
            + self.closed_overflow
            + self.closed_discarded
            + self.closed_pool_closed
    }
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// The live counters behind [`PoolMetrics`].
#[derive(Default)]
pub(crate) struct Counters {
    pub created: AtomicU64,
    pub connect_failures: AtomicU64,
    pub checkouts: AtomicU64,
    pub timeouts: AtomicU64,
    pub wait_nanos: AtomicU64,
    pub pings: AtomicU64,
    closed: [AtomicU64; 5],
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self, reason: CloseReason) {
        Self::bump(&self.closed[reason as usize]);
    }

    pub fn snapshot(&self) -> PoolMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PoolMetrics {
            created: get(&self.created),
            connect_failures: get(&self.connect_failures),
            checkouts: get(&self.checkouts),
            timeouts: get(&self.timeouts),
            total_wait: Duration::from_nanos(get(&self.wait_nanos)),
            pings: get(&self.pings),
            closed_broken: get(&self.closed[CloseReason::Broken as usize]),
            closed_recycled: get(&self.closed[CloseReason::Recycled as usize]),
            closed_overflow: get(&self.closed[CloseReason::Overflow as usize]),
            closed_discarded: get(&self.closed[CloseReason::Discarded as usize]),
            closed_pool_closed: get(&self.closed[CloseReason::PoolClosed as usize]),
        }
    }
}
