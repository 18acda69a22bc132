//! Autocommit statements pipelined over shared connections.
//!
//! A statement run on the [`DatabaseManager`](crate::DatabaseManager) outside a transaction
//! needs no connection of its own: many such statements are sent over a few shared pooled
//! connections ("lanes") without waiting for each other's replies, which the driver matches
//! back in order. On a round-trip-bound workload this multiplies throughput.
//!
//! Each caller sends its statement from its own task, through the same path as a statement on
//! a connection of one's own (`exec::run_on`): once prepared on the lane, its `Bind` and
//! `Execute` are queued on the lane's socket (`conn::wire::queue`), and its answer is filed
//! with it, without the driver's channel. The lane's I/O task, woken by the first of them,
//! lets the runtime's other ready tasks run once before it writes, so the statements their
//! callers queue meanwhile leave in one write rather than one system call each; nothing is
//! spawned or allocated per statement for it but the rows. In that write, reads the
//! classifier proves free of writes and of function calls share one Sync (`conn::wire`): the
//! server answers them as one implicit transaction with one flush; if one of them fails, the
//! ones the server skipped after it run again, each on a connection of its own, so every
//! caller gets its own answer or its own error.
//!
//! Rules that keep it safe:
//! - only statements the classifier proves leave no state on the connection are shared
//!   (`sql::classify(..).is_shareable()`);
//!   transactions, `SET`, `LISTEN`, cursors and the like take a connection of their own;
//! - a lane whose statement was abandoned half-way (its future dropped) takes no new
//!   statements; when no caller waits on it any more the abandoned work is cancelled on the
//!   server and the connection closed, so a long query nobody waits for never delays others;
//! - a lane whose connection died is dropped at once; the pool opens a new one when needed;
//! - a lane on which the server reports a session setting changed (`ParameterStatus`: the time
//!   zone, the role, the date style, ..., changed by a function the text does not show) takes
//!   no new statements and is closed when its statements are done;
//! - lanes take at most half of `pool_size` connections (and no more than the machine has
//!   cores: deeper pipelines on fewer connections do more per round trip), and a lane goes back
//!   to the pool as soon as nothing is in flight on it, so sessions never wait behind a quiet
//!   lane.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::conn::PgManager;
use crate::error::{ErrorKind, Result};
use crate::exec::{self, Context, Reply, Returns};
use crate::params::Bound;
use crate::pool::{Pool, Pooled};

/// Statements in flight on a lane before another lane is opened.
const LANE_DEPTH: usize = 32;

/// The shared connections of one engine.
pub(crate) struct Pipeline {
    lanes: Mutex<Vec<Arc<Lane>>>,
    max_lanes: usize,
    growing: AtomicBool,
    /// Held while the first lane is opened, so a burst opens one connection, not one each.
    opening: tokio::sync::Mutex<()>,
}

struct Lane {
    pooled: Pooled<PgManager>,
    in_flight: AtomicUsize,
    /// A statement on it was abandoned; it takes no new ones.
    tainted: AtomicBool,
}

impl Lane {
    fn usable(&self) -> bool {
        !self.tainted.load(Ordering::Acquire)
            && !self.pooled.is_closed()
            // A statement changed a session setting the server reports: no one else's
            // statement runs with it; the lane goes back to the pool, which resets it.
            && !self.pooled.settings_changed()
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // A session setting changed behind the text's back (a function called `set_config`,
        // say): closed rather than pooled with it. Rare, so no reset machinery here.
        if self.tainted.load(Ordering::Acquire) || self.pooled.settings_changed() {
            self.pooled.mark_broken();
        }
        self.pooled.share(false);
    }
}

impl Lane {
    /// Stops what the server may still run for callers that gave up: only when nobody waits on
    /// the lane any more, so no live caller's statement is cancelled by mistake.
    fn cancel_abandoned(&self) {
        self.pooled.cancel_in_background();
    }
}

/// Counts a statement on a lane; taints the lane if dropped before the statement finished.
struct InFlight {
    lane: Arc<Lane>,
    finished: bool,
}

impl InFlight {
    fn start(lane: Arc<Lane>) -> Self {
        lane.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            lane,
            finished: false,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.finished {
            self.lane.tainted.store(true, Ordering::Release);
        }
        let left = self.lane.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
        if left == 0 && self.lane.tainted.load(Ordering::Acquire) {
            self.lane.cancel_abandoned();
        }
    }
}

/// Resets a flag when dropped (also when the future holding it is cancelled).
struct Unset<'a>(&'a AtomicBool);

impl Drop for Unset<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Pipeline {
    pub(crate) fn new(pool_size: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let max_lanes = (pool_size / 2).clamp(1, cores);
        Pipeline {
            lanes: Mutex::new(Vec::with_capacity(max_lanes)),
            max_lanes,
            growing: AtomicBool::new(false),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// The least busy usable lane, and whether another lane should be opened.
    fn pick(&self) -> (Option<Arc<Lane>>, bool) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes.retain(|lane| lane.usable());
        let best = lanes
            .iter()
            .min_by_key(|lane| lane.in_flight.load(Ordering::Acquire))
            .cloned();
        let busy = best
            .as_ref()
            .is_none_or(|lane| lane.in_flight.load(Ordering::Acquire) >= LANE_DEPTH);
        (best, busy && lanes.len() < self.max_lanes)
    }

    fn add(&self, pooled: Pooled<PgManager>) -> Arc<Lane> {
        pooled.share(true);
        let lane = Arc::new(Lane {
            pooled,
            in_flight: AtomicUsize::new(0),
            tainted: AtomicBool::new(false),
        });
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if lanes.len() < self.max_lanes {
            lanes.push(Arc::clone(&lane));
        }
        // Otherwise it serves this statement only and goes back to the pool afterwards.
        lane
    }

    async fn lane(&self, pool: &Pool<PgManager>) -> Result<Arc<Lane>> {
        let (best, grow) = self.pick();
        match best {
            None => {
                let _opening = self.opening.lock().await;
                match self.pick().0 {
                    Some(lane) => Ok(lane),
                    None => Ok(self.add(pool.get().await?)),
                }
            }
            Some(best) if grow && !self.growing.swap(true, Ordering::AcqRel) => {
                let _unset = Unset(&self.growing);
                // Never wait for a connection while a lane is usable.
                match pool.try_get().await {
                    Ok(Some(pooled)) => Ok(self.add(pooled)),
                    _ => Ok(best),
                }
            }
            Some(best) => Ok(best),
        }
    }

    /// Runs one bound statement on a shared lane.
    pub(crate) async fn run(
        &self,
        pool: &Pool<PgManager>,
        context: &Context,
        bound: &Bound<'_, '_>,
        want: Returns,
    ) -> Result<Reply> {
        let mut in_flight = loop {
            let mut in_flight = InFlight::start(self.lane(pool).await?);
            // A lane tainted between picking and starting may be about to cancel its work.
            if !in_flight.lane.tainted.load(Ordering::Acquire) {
                break in_flight;
            }
            in_flight.finished = true;
        };
        let lane = in_flight.lane.clone();
        // Sent from the caller's task: the lane's I/O task gathers what its callers send into
        // one write (`conn::drive`).
        let work = std::pin::pin!(exec::run_on(&lane.pooled, bound, want));
        let result = exec::observe(context, bound, context.settings.statement_guard, work).await;
        // A statement cut off by the guard is abandoned like a dropped one.
        in_flight.finished = !matches!(&result, Err(e) if e.kind() == ErrorKind::Timeout);
        if matches!(&result, Err(e) if e.kind() == ErrorKind::ConnectionLost) {
            lane.tainted.store(true, Ordering::Release);
        }
        drop(in_flight);
        if lane.in_flight.load(Ordering::Acquire) == 0 {
            // Idle lanes go back to the pool, so sessions never wait behind a quiet lane.
            self.lanes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|l| !Arc::ptr_eq(l, &lane));
        }
        result
    }

    /// Gives every lane back to the pool (before it closes).
    pub(crate) fn clear(&self) {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
