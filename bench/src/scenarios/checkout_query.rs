//! Scenario 2: checkout + `SELECT 1`, repeated by every worker, with pools of 4 and 16 and 4 or
//! 64 workers; pgbench at the same concurrency (as many clients as connections in use).

use std::sync::Arc;

use crate::contenders::{CheckoutSelect1, Pooler};
use crate::measure::{rotated, throughput, Samples, Until};
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
/// the timed measurement, closes it.
pub async fn measure_pool(
    pooler: Pooler,
    target: &Target,
    size: usize,
    workers: usize,
    budget: &Budget,
) -> Result<f64> {
    let work = Arc::new(CheckoutSelect1(pooler.open(target, size).await?));
    throughput(&work, workers, Until::Elapsed(budget.warmup)).await?;
    let rate = throughput(&work, workers, Until::Elapsed(budget.measure)).await;
    work.0.close().await;
    rate
}

/// Runs the scenario.
pub async fn run(budget: &Budget, target: &Target, pgbench: Option<&Pgbench>) -> Result<Table> {
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
    for (size, workers) in CASES {
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
                        measure_pool(pooler, target, size, workers, budget).await?
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
    Ok(Table {
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
        ],
    })
}
