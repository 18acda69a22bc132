//! Scenario 2: checkout + `SELECT 1`, repeated by every worker, with pools of 4 and 16 and 4 or
//! 64 workers; pgbench at the same concurrency (as many clients as connections in use). Beside
//! the rates, the pools' costs per query: allocations and bytes (counted in the timed run) and
//! instructions (`--callgrind`).

use std::sync::Arc;

use crate::callgrind::FixedRun;
use crate::contenders::{CheckoutSelect1, Pooler};
use crate::costs::{self, Cost, CostSamples};
use crate::measure::{count_allocations, rotated, throughput, Measured, Samples, Until};
use crate::options::Budget;
use crate::pgbench::Pgbench;
use crate::report::{Goal, Row, Table};
use crate::server::Target;
use crate::Result;

/// (pool size, workers), one row each.
const CASES: [(usize, usize); 4] = [(4, 4), (4, 64), (16, 4), (16, 64)];

/// Who runs in this scenario: every pool, then pgbench.
#[derive(Debug, Clone, Copy)]
enum Contender {
    Pool(Pooler),
    Pgbench,
}

/// Measures one pool: opens it, warms it up (connections opened, statements prepared), runs
/// the timed measurement, then counts the allocations of [`Budget::counted_ops`] checkouts,
/// and closes it.
pub async fn measure_pool(
    pooler: Pooler,
    target: &Target,
    size: usize,
    workers: usize,
    budget: &Budget,
) -> Result<Measured> {
    let work = Arc::new(CheckoutSelect1(pooler.open(target, size).await?));
    let measured = async {
        throughput(&work, workers, Until::Elapsed(budget.warmup)).await?;
        let rate = throughput(&work, workers, Until::Elapsed(budget.measure)).await?;
        let counted = count_allocations(&work, workers, budget.counted_ops).await?;
        Ok(Measured { rate, counted })
    }
    .await;
    work.0.close().await;
    measured
}

/// The cases and contenders of `--callgrind`: (case, column, what runs).
pub fn fixed_units() -> Vec<(usize, usize, String)> {
    CASES
        .iter()
        .enumerate()
        .flat_map(|(case, (size, workers))| {
            Pooler::ALL.iter().enumerate().map(move |(column, pooler)| {
                let label = format!("{}, pool {size}, {workers} workers", pooler.name());
                (case, column, label)
            })
        })
        .collect()
}

/// In a `--callgrind` child: `case` by the pool of `column`, a fixed number of checkouts.
pub fn run_fixed(fixed: &FixedRun, case: usize, column: usize) -> Result<()> {
    let (size, workers) = CASES[case];
    let pooler = Pooler::ALL[column];
    let work = Arc::new(CheckoutSelect1(
        fixed.block_on(pooler.open(&fixed.target, size))?,
    ));
    let result = fixed.workload(&work, workers);
    fixed.block_on(work.0.close());
    result
}

/// The cost table: `costs` per query for every case and pool, `method` saying how they were
/// counted. Goal (where the issue sets one): coredb no dearer than the cheapest peer, in
/// instructions and allocations.
pub fn cost_table(samples: &CostSamples, costs: &[Cost], method: &str) -> Table {
    let columns: Vec<usize> = (0..Pooler::ALL.len()).collect();
    let mut rows = Vec::new();
    for (case, (size, workers)) in CASES.iter().enumerate() {
        for &cost in costs {
            let label = format!("pool {size}, {workers} workers");
            let mut row = costs::row(&label, cost, "query", samples.cells(case, cost, &columns));
            costs::goal_cheapest_peer(&mut row, cost, |j| Pooler::ALL[j].name());
            rows.push(row);
        }
    }
    Table {
        title: "S2. Checkout + SELECT 1: cost per query".into(),
        description: format!("S2's checkout + `SELECT 1` in each case, every pool. {method}"),
        unit: "the unit named in each case".into(),
        higher_is_better: false,
        columns: Pooler::ALL.iter().map(|p| p.name().to_owned()).collect(),
        rows,
        notes: vec![costs::ALLOCATOR_NOTE.into()],
    }
}

/// Runs the scenario: the rates, then the allocations per query.
pub async fn run(
    budget: &Budget,
    target: &Target,
    pgbench: Option<&Pgbench>,
) -> Result<Vec<Table>> {
    let mut contenders: Vec<(usize, Contender)> = Pooler::ALL
        .iter()
        .map(|&p| Contender::Pool(p))
        .enumerate()
        .collect();
    let pgbench_column = contenders.len();
    if pgbench.is_some() {
        contenders.push((pgbench_column, Contender::Pgbench));
    }
    let mut rows = Vec::new();
    let mut costs = CostSamples::default();
    for (case, (size, workers)) in CASES.into_iter().enumerate() {
        let clients = size.min(workers);
        let mut samples = vec![Samples::default(); pgbench_column + 1];
        for rep in 0..budget.reps {
            eprintln!(
                "S2 checkout + SELECT 1, pool {size}, {workers} workers: repetition {}/{}",
                rep + 1,
                budget.reps
            );
            for (index, contender) in rotated(&contenders, rep) {
                let rate = match (contender, pgbench) {
                    (Contender::Pool(pooler), _) => {
                        let measured = measure_pool(pooler, target, size, workers, budget).await?;
                        costs.push_counted(case, index, &measured.counted);
                        measured.rate
                    }
                    (Contender::Pgbench, Some(pgbench)) => {
                        pgbench.select1(clients, budget.pgbench_seconds).await?
                    }
                    (Contender::Pgbench, None) => continue,
                };
                samples[index].push(rate);
            }
        }
        let cells = samples
            .into_iter()
            .map(|s| s.median().is_some().then_some(s))
            .collect();
        let mut row = Row::new(format!("pool {size}, {workers} workers"), cells);
        let best_peer = (1..pgbench_column)
            .filter_map(|j| Some((j, row.median(j)?)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let best_ratio = best_peer.and_then(|(j, _)| row.ratio(0, j));
        let best_name = best_peer.map_or("?", |(j, _)| Pooler::ALL[j].name());
        row.goals.push(Goal::new(
            format!("coredb/best peer ({best_name})"),
            best_ratio,
            1.0,
        ));
        row.goals.push(Goal::new(
            format!("coredb/pgbench -c {clients}"),
            row.ratio(0, pgbench_column),
            0.9,
        ));
        rows.push(row);
    }
    let mut columns: Vec<String> = Pooler::ALL.iter().map(|p| p.name().to_owned()).collect();
    columns.push("pgbench".into());
    let rates = Table {
        title: "S2. Checkout + SELECT 1".into(),
        description: "Every worker repeats: check a connection out, run `SELECT 1` (prepared: \
             coredb's statement cache, deadpool-postgres `prepare_cached`, sqlx's statement \
             cache; bb8-postgres has no cache and uses `query_typed`, one round trip), read the \
             value, return the connection. Pools are fixed at the given size (no overflow), \
             opened and warmed up before each measurement and closed after. pgbench runs \
             `SELECT 1` with `-M prepared` and `-c` = the number of connections in use \
             (min(pool, workers)), `-j` = min(clients, cores)."
            .into(),
        unit: "queries/s".into(),
        higher_is_better: true,
        columns,
        rows,
        notes: vec![
            "Pool settings are in `bench/src/contenders.rs`: bb8's `test_on_check_out` and \
             sqlx's `test_before_acquire` are off (each would add a round trip per checkout); \
             coredb pings only connections idle for 1 s or more, which never happens here."
                .into(),
            "Against pgbench: on one connection a client on tokio-postgres matches pgbench's \
             rate with half its instructions; the gap comes with several connections on two \
             workers that share the two cores with the server. A protocol client of coredb's \
             own, driven in the caller's task, would cut the client's instructions to a third \
             (measured with a prototype): docs/libpq-gap.md."
                .into(),
        ],
    };
    let method = format!(
        "Counted in this process after each timed measurement, over {} queries from the same \
         workers (rounded up to a multiple of the workers), tokio's multi-threaded runtime.",
        budget.counted_ops
    );
    Ok(vec![rates, cost_table(&costs, &Cost::ALLOCATOR, &method)])
}
