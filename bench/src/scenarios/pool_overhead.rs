//! Scenario 1: the pools' own overhead, without a database: no-op connections, a pool of 16,
//! and 16, 64 or 256 workers checking out and returning.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crate::callgrind::FixedRun;
use crate::costs::{self, Cost, CostSamples};
use crate::measure::{rotated, throughput, Samples, Until, Workload};
use crate::options::Budget;
use crate::report::{Goal, Row, Table};
use crate::Result;

/// Objects in each pool.
const POOL_SIZE: usize = 16;
/// Worker counts, one row each.
const WORKERS: [usize; 3] = [16, 64, 256];
/// Acquire timeout of every pool (never reached).
const TIMEOUT: Duration = Duration::from_secs(30);

/// A connection that costs nothing: a counter of its checkouts.
struct Noop;

impl coredb::pool::Manage for Noop {
    type Object = u64;

    async fn create(&self) -> coredb::Result<u64> {
        Ok(0)
    }

    fn is_broken(&self, _: &u64) -> bool {
        false
    }

    async fn ping(&self, _: &mut u64) -> coredb::Result<()> {
        Ok(())
    }
}

impl deadpool::managed::Manager for Noop {
    type Type = u64;
    type Error = Infallible;

    async fn create(&self) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn recycle(
        &self,
        _: &mut u64,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

impl bb8::ManageConnection for Noop {
    type Connection = u64;
    type Error = Infallible;

    async fn connect(&self) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn is_valid(&self, _: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }

    fn has_broken(&self, _: &mut u64) -> bool {
        false
    }
}

/// A pool of no-op connections from one library.
enum NoopPool {
    Coredb(coredb::pool::Pool<Noop>),
    Deadpool(deadpool::managed::Pool<Noop>),
    Bb8(bb8::Pool<Noop>),
}

#[derive(Debug, Clone, Copy)]
enum Library {
    Coredb,
    Deadpool,
    Bb8,
}

const LIBRARIES: [Library; 3] = [Library::Coredb, Library::Deadpool, Library::Bb8];

impl Library {
    fn name(self) -> &'static str {
        match self {
            Library::Coredb => "coredb",
            Library::Deadpool => "deadpool",
            Library::Bb8 => "bb8",
        }
    }

    async fn pool(self) -> Result<NoopPool> {
        Ok(match self {
            Library::Coredb => NoopPool::Coredb(coredb::pool::Pool::new(
                Noop,
                coredb::pool::PoolOptions {
                    pool_size: POOL_SIZE,
                    max_overflow: 0,
                    timeout: TIMEOUT,
                    ..coredb::pool::PoolOptions::default()
                },
            )),
            Library::Deadpool => NoopPool::Deadpool(
                deadpool::managed::Pool::builder(Noop)
                    .max_size(POOL_SIZE)
                    .wait_timeout(Some(TIMEOUT))
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()?,
            ),
            Library::Bb8 => NoopPool::Bb8(
                bb8::Pool::builder()
                    .max_size(POOL_SIZE as u32)
                    .test_on_check_out(false)
                    .connection_timeout(TIMEOUT)
                    .build(Noop)
                    .await?,
            ),
        })
    }
}

/// One checkout: take an object, hold it across one yield to the scheduler (so workers beyond
/// the pool size really wait), touch it, give it back.
impl Workload for NoopPool {
    async fn once(&self) -> Result<()> {
        match self {
            NoopPool::Coredb(pool) => {
                let mut object = pool.get().await?;
                tokio::task::yield_now().await;
                *object += 1;
            }
            NoopPool::Deadpool(pool) => {
                let mut object = pool.get().await.map_err(|e| format!("deadpool: {e}"))?;
                tokio::task::yield_now().await;
                *object += 1;
            }
            NoopPool::Bb8(pool) => {
                let mut object = pool.get().await.map_err(|e| format!("bb8: {e}"))?;
                tokio::task::yield_now().await;
                *object += 1;
            }
        }
        Ok(())
    }
}

/// The cases and contenders of the `--callgrind` runs: (case, column, label).
pub fn fixed_units() -> Vec<(usize, usize, String)> {
    WORKERS
        .iter()
        .enumerate()
        .flat_map(|(case, workers)| {
            LIBRARIES.iter().enumerate().map(move |(column, library)| {
                let label = format!("{}, pool {POOL_SIZE}, {workers} workers", library.name());
                (case, column, label)
            })
        })
        .collect()
}

/// In a `--callgrind` child: `case` by the library of `column`, a fixed number of checkouts
/// (on the child's current-thread runtime).
pub fn run_fixed(fixed: &FixedRun, case: usize, column: usize) -> Result<()> {
    let pool = Arc::new(fixed.block_on(LIBRARIES[column].pool())?);
    fixed.workload(&pool, WORKERS[case])
}

/// The cost table: `costs` per checkout for every worker count and library, `method` saying
/// how they were counted. Goal: coredb no dearer than the cheapest peer, in instructions and
/// allocations.
pub fn cost_table(samples: &CostSamples, costs: &[Cost], method: &str) -> Table {
    let columns: Vec<usize> = (0..LIBRARIES.len()).collect();
    let mut rows = Vec::new();
    for (case, workers) in WORKERS.iter().enumerate() {
        for &cost in costs {
            let label = format!("pool {POOL_SIZE}, {workers} workers");
            let cells = samples.cells(case, cost, &columns);
            let mut row = costs::row(&label, cost, "checkout", cells);
            costs::goal_cheapest_peer(&mut row, cost, |j| LIBRARIES[j].name());
            rows.push(row);
        }
    }
    Table {
        title: "S1. Pool overhead: cost per checkout".into(),
        description: format!(
            "S1's checkouts of no-op connections (a pool of {POOL_SIZE}, each object held \
             across one yield), every library. {method}"
        ),
        unit: "the unit named in each case".into(),
        higher_is_better: false,
        columns: LIBRARIES.iter().map(|l| l.name().to_owned()).collect(),
        rows,
        notes: vec![costs::ALLOCATOR_NOTE.into()],
    }
}

/// Runs the scenario.
pub async fn run(budget: &Budget) -> Result<Table> {
    let mut rows = Vec::new();
    for workers in WORKERS {
        let mut samples = vec![Samples::default(); LIBRARIES.len()];
        for rep in 0..budget.reps {
            eprintln!(
                "S1 pool overhead, {workers} workers: repetition {}/{}",
                rep + 1,
                budget.reps
            );
            for (index, library) in rotated(&LIBRARIES.iter().enumerate().collect::<Vec<_>>(), rep)
            {
                let pool = Arc::new(library.pool().await?);
                throughput(&pool, workers, Until::Total(budget.pool_checkouts / 16)).await?;
                let rate = throughput(&pool, workers, Until::Total(budget.pool_checkouts)).await?;
                samples[index].push(rate);
            }
        }
        let mut row = Row::new(
            format!("pool {POOL_SIZE}, {workers} workers"),
            samples.into_iter().map(Some).collect(),
        );
        row.goals
            .push(Goal::new("coredb/deadpool", row.ratio(0, 1), 1.0));
        rows.push(row);
    }
    Ok(Table {
        title: "S1. Pool overhead, no database".into(),
        description: format!(
            "No-op connections, a pool of {POOL_SIZE} (coredb `pool::Pool` with `max_overflow` 0; \
             deadpool `managed::Pool`; bb8 with `test_on_check_out(false)`; each with a 30 s \
             acquire timeout), {} checkouts per measurement split evenly between the workers. \
             Each checkout holds its object across one `tokio::task::yield_now()`, so workers \
             beyond the pool size must queue. Tokio multi-threaded runtime, one worker thread \
             per core.",
            budget.pool_checkouts
        ),
        unit: "checkouts/s".into(),
        higher_is_better: true,
        columns: LIBRARIES.iter().map(|l| l.name().to_owned()).collect(),
        rows,
        notes: Vec::new(),
    })
}
