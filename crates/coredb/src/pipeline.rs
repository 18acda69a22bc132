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
//! - only statements that leave no state on the connection are shared (see [`is_shareable`]);
//!   transactions, `SET`, `LISTEN`, cursors and the like take a connection of their own;
//! - a lane whose statement was abandoned half-way (its future dropped) takes no new
//!   statements; when no caller waits on it any more the abandoned work is cancelled on the
//!   server and the connection closed, so a long query nobody waits for never delays others;
//! - a lane whose connection died is dropped at once; the pool opens a new one when needed;
//! - lanes take at most half of `pool_size` connections (and no more than the machine has
//!   cores: deeper pipelines on fewer connections do more per round trip), and a lane goes back
//!   to the pool as soon as nothing is in flight on it, so sessions never wait behind a quiet
//!   lane.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use postgres_types::{to_sql_checked, Format, IsNull, ToSql, Type};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Statement;

use tokio_postgres::NoTls;

use crate::connect::PgManager;
use crate::connection::{describe_wrong_parameter, echo, guarded, prepared, run_on};
use crate::engine::EngineInner;
use crate::error::{ErrorKind, Result};
use crate::params::{SqlParam, SqlText};
use crate::pool::Pooled;
use crate::query::{Output, Want};

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
    want: Want,
    reply: oneshot::Sender<std::result::Result<Output, tokio_postgres::Error>>,
}

/// A parameter value encoded for its statement's type by the caller.
#[derive(Debug)]
struct Encoded {
    bytes: Option<Bytes>,
    format: Format,
}

impl ToSql for Encoded {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.bytes {
            Some(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    /// Checked by the caller when it encoded the value.
    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        self.format
    }

    to_sql_checked!();
}

/// Encodes `values` for `statement`'s parameter types.
fn encode(
    statement: &Statement,
    text: &SqlText<'_>,
    values: &[SqlParam<'_>],
) -> Result<Vec<Encoded>> {
    let mut encoded = Vec::with_capacity(values.len());
    for (value, ty) in values.iter().zip(statement.params()) {
        let mut out = BytesMut::new();
        match value.to_sql_checked(ty, &mut out) {
            Ok(IsNull::No) => encoded.push(Encoded {
                bytes: Some(out.freeze()),
                format: value.encode_format(ty),
            }),
            Ok(IsNull::Yes) => encoded.push(Encoded {
                bytes: None,
                format: value.encode_format(ty),
            }),
            Err(err) => {
                return Err(
                    describe_wrong_parameter(statement, text, values).unwrap_or_else(|| {
                        crate::Error::params(format!("a parameter cannot be sent: {err}"))
                            .with_statement(text.as_str())
                    }),
                )
            }
        }
    }
    Ok(encoded)
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
        Want::Rows => client
            .query(&job.statement, &values)
            .await
            .map(Output::Rows),
        Want::Count => client
            .execute(&job.statement, &values)
            .await
            .map(Output::Count),
    };
    // The caller may have gone; its statement still ran to the end here.
    let _ = job.reply.send(result);
}

impl Lane {
    fn usable(&self) -> bool {
        !self.tainted.load(Ordering::Acquire) && !self.pooled.client.is_closed()
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if self.tainted.load(Ordering::Acquire) {
            self.pooled.mark_broken();
        }
    }
}

impl Lane {
    /// Stops what the server may still run for callers that gave up: only when nobody waits on
    /// the lane any more, so no live caller's statement is cancelled by mistake.
    fn cancel_abandoned(&self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let token = self.pooled.client.cancel_token();
            runtime.spawn(async move {
                let _ = token.cancel_query(NoTls).await;
            });
        }
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

    async fn lane(&self, engine: &EngineInner) -> Result<Arc<Lane>> {
        let (best, grow) = self.pick();
        match best {
            None => {
                let _opening = self.opening.lock().await;
                match self.pick().0 {
                    Some(lane) => Ok(lane),
                    None => Ok(self.add(engine.pool.get().await?)),
                }
            }
            Some(best) if grow && !self.growing.swap(true, Ordering::AcqRel) => {
                let _unset = Unset(&self.growing);
                // Never wait for a connection while a lane is usable.
                match engine.pool.try_get().await {
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
        engine: &EngineInner,
        text: &SqlText<'_>,
        values: &[SqlParam<'_>],
        want: Want,
    ) -> Result<Output> {
        let mut in_flight = loop {
            let mut in_flight = InFlight::start(self.lane(engine).await?);
            // A lane tainted between picking and starting may be about to cancel its work.
            if !in_flight.lane.tainted.load(Ordering::Acquire) {
                break in_flight;
            }
            in_flight.finished = true;
        };
        let lane = in_flight.lane.clone();
        let started = engine.config.echo.then(Instant::now);
        let result = guarded(
            engine.config.statement_guard(),
            run_on_lane(&lane, text, values, want),
        )
        .await;
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
        if let Some(started) = started {
            echo(&engine.config, text.as_str(), values, started, &result);
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
async fn run_on_lane(
    lane: &Lane,
    text: &SqlText<'_>,
    values: &[SqlParam<'_>],
    want: Want,
) -> Result<Output> {
    if !lane.pooled.statements.is_enabled() {
        return run_on(&lane.pooled, text, values, want).await;
    }
    let statement = prepared(&lane.pooled, text, values).await?;
    let encoded = encode(&statement, text, values)?;
    let (reply, answer) = oneshot::channel();
    let job = Job {
        statement,
        values: encoded,
        want,
        reply,
    };
    let sql = text.as_str();
    if lane.jobs.send(job).is_err() {
        return Err(crate::Error::new(
            ErrorKind::ConnectionLost,
            "the shared connection closed before the statement was sent",
        ));
    }
    match answer.await {
        Ok(result) => result.map_err(|err| {
            // A cached plan may be stale after DDL; prepare afresh next time.
            lane.pooled.statements.remove(sql);
            crate::Error::from_driver(err, Some(sql))
        }),
        Err(_) => Err(crate::Error::new(
            ErrorKind::ConnectionLost,
            "the shared connection closed before the statement finished",
        )),
    }
}

/// True for statements that leave no state on the connection once they finish, so they may
/// share it and return it to the pool as it was: not transaction control, `SET`/`RESET`,
/// `LISTEN`, cursors, `PREPARE`, `LOCK`, `COPY`, `DO`/`CALL`, temporary objects, or
/// `set_config`. Cheap: no allocation.
pub(crate) fn is_shareable(sql: &str) -> bool {
    let mut words = sql
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty());
    let Some(first) = words.next() else {
        return false;
    };
    const STATEFUL: &[&str] = &[
        "BEGIN",
        "START",
        "COMMIT",
        "END",
        "ROLLBACK",
        "ABORT",
        "SAVEPOINT",
        "RELEASE",
        "PREPARE",
        "DEALLOCATE",
        "DISCARD",
        "SET",
        "RESET",
        "LISTEN",
        "UNLISTEN",
        "DECLARE",
        "FETCH",
        "MOVE",
        "CLOSE",
        "LOCK",
        "COPY",
        "DO",
        "CALL",
    ];
    if first.eq_ignore_ascii_case("SET") {
        // SET LOCAL ends with the transaction.
        return words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("LOCAL"));
    }
    if STATEFUL.iter().any(|w| first.eq_ignore_ascii_case(w)) {
        return false;
    }
    if first.eq_ignore_ascii_case("CREATE") {
        if let Some(second) = words.next() {
            if second.eq_ignore_ascii_case("TEMP") || second.eq_ignore_ascii_case("TEMPORARY") {
                return false;
            }
        }
    }
    // set_config(..., false) changes the session.
    !sql.as_bytes()
        .windows(b"set_config".len())
        .any(|w| w.eq_ignore_ascii_case(b"set_config"))
}

#[cfg(test)]
mod tests {
    use super::is_shareable;

    #[test]
    fn statements_that_leave_session_state_are_not_shared() {
        for sql in [
            "BEGIN",
            "start transaction",
            "SET search_path = x",
            "LISTEN chan",
            "DECLARE c CURSOR FOR SELECT 1",
            "CREATE TEMP TABLE t (x int)",
            "SELECT set_config('a.b', '1', false)",
            "DO $$ BEGIN END $$",
            "",
        ] {
            assert!(!is_shareable(sql), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET x = 1",
            "CREATE TABLE t (x int)",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "SET LOCAL statement_timeout = 5",
        ] {
            assert!(is_shareable(sql), "{sql}");
        }
    }
}
