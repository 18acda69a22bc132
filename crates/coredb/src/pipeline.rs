//! Autocommit statements pipelined over shared connections.
//!
//! A statement run on the [`DatabaseManager`](crate::DatabaseManager) outside a transaction
//! needs no connection of its own: many such statements are sent over a few shared pooled
//! connections ("lanes") without waiting for each other's replies, which the driver matches
//! back in order. On a round-trip-bound workload this multiplies throughput.
//!
//! Each lane has a dispatcher task that starts every queued statement in one poll, so their
//! requests leave in one write rather than one system call each; callers encode their
//! parameters first, so the dispatcher owns everything it runs.
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
use std::sync::{Arc, Mutex, Weak};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Statement;

use crate::conn::PgManager;
use crate::error::{Error, ErrorKind, Result};
use crate::exec::{self, Context, Encoded, Reply, Returns};
use crate::params::{Bound, SqlParam};
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
    /// Statements for the lane's dispatcher task.
    jobs: mpsc::UnboundedSender<Job>,
}

/// A statement with its parameters already encoded, so it can run on the dispatcher's task.
struct Job {
    statement: Statement,
    values: Vec<Encoded>,
    want: Returns,
    reply: oneshot::Sender<std::result::Result<Reply, tokio_postgres::Error>>,
}

/// Runs a lane's statements on one task, starting every queued statement in the same poll:
/// their requests then leave in one write instead of one system call each.
async fn dispatch(lane: Weak<Lane>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            job = jobs.recv() => {
                let Some(job) = job else { break };
                // Holds the lane only while statements run, so an idle lane can be dropped.
                let Some(lane) = lane.upgrade() else { break };
                running.push(run_job(lane.clone(), job));
                while let Ok(job) = jobs.try_recv() {
                    running.push(run_job(lane.clone(), job));
                }
            }
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
    while running.next().await.is_some() {}
}

async fn run_job(lane: Arc<Lane>, job: Job) {
    let values: Vec<SqlParam<'_>> = job.values.iter().map(|v| v as SqlParam<'_>).collect();
    let client = &lane.pooled.client;
    let result = match job.want {
        Returns::Rows => client.query(&job.statement, &values).await.map(Reply::Rows),
        Returns::Count => client
            .execute(&job.statement, &values)
            .await
            .map(Reply::Count),
    };
    // The caller may have gone; its statement still ran to the end here.
    let _ = job.reply.send(result);
}

impl Lane {
    fn usable(&self) -> bool {
        !self.tainted.load(Ordering::Acquire)
            && !self.pooled.client.is_closed()
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
        self.pooled.watch_settings(false);
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
        let (jobs, queue) = mpsc::unbounded_channel();
        // Shared from now on: the server's reports of changed settings are followed.
        pooled.watch_settings(true);
        let lane = Arc::new(Lane {
            pooled,
            in_flight: AtomicUsize::new(0),
            tainted: AtomicBool::new(false),
            jobs,
        });
        tokio::spawn(dispatch(Arc::downgrade(&lane), queue));
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
        let work = std::pin::pin!(run_on_lane(&lane, bound, want));
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

/// Runs a statement through the lane's dispatcher (or directly when statements are not
/// prepared, e.g. behind PgBouncer).
async fn run_on_lane(lane: &Lane, bound: &Bound<'_, '_>, want: Returns) -> Result<Reply> {
    if !lane.pooled.statements.is_enabled() {
        return exec::run_on(&lane.pooled, bound, want).await;
    }
    let statement = exec::prepare(&lane.pooled, bound).await?;
    let encoded = exec::encode(&statement, bound)?;
    let (reply, answer) = oneshot::channel();
    let job = Job {
        statement: statement.clone(),
        values: encoded,
        want,
        reply,
    };
    if lane.jobs.send(job).is_err() {
        return Err(Error::new(
            ErrorKind::ConnectionLost,
            "the shared connection closed before the statement was sent",
        ));
    }
    match answer.await {
        Ok(result) => {
            result.map_err(|err| exec::query_failed(&lane.pooled, err, bound, &statement))
        }
        Err(_) => Err(Error::new(
            ErrorKind::ConnectionLost,
            "the shared connection closed before the statement finished",
        )),
    }
}
