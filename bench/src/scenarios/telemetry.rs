//! Scenario 6: what observing coredb costs. S2's and S3's busiest cases and their allocations
//! per statement, with nothing installed and with a `tracing` subscriber and a `metrics`
//! recorder installed (see `observed.rs`), interleaved.

use crate::contenders::Pooler;
use crate::measure::{rotated, Samples};
use crate::observed;
use crate::options::Budget;
use crate::report::{Row, Table};
use crate::scenarios::memory::{allocations_per_query, Query};
use crate::scenarios::{autocommit, checkout_query};
use crate::server::Target;
use crate::Result;

/// S2's case: pool size and workers.
const CHECKOUT_CASE: (usize, usize) = (16, 64);

/// The two columns: without and with the subscriber and recorder.
const MODES: [bool; 2] = [false, true];

/// Runs the scenario: a throughput table and an allocations table.
pub async fn run(budget: &Budget, target: &Target) -> Result<Vec<Table>> {
    let (size, workers) = CHECKOUT_CASE;
    let modes: Vec<(usize, bool)> = MODES.iter().copied().enumerate().collect();
    let mut checkout = vec![Samples::default(); 2];
    let mut autocommit = vec![Samples::default(); 2];
    let mut checkout_allocs = vec![Samples::default(); 2];
    let mut checkout_bytes = vec![Samples::default(); 2];
    let mut autocommit_allocs = vec![Samples::default(); 2];
    let mut autocommit_bytes = vec![Samples::default(); 2];
    for rep in 0..budget.reps {
        eprintln!(
            "S6 with and without a subscriber and recorder: repetition {}/{}",
            rep + 1,
            budget.reps
        );
        for (index, on) in rotated(&modes, rep) {
            observed::set(on);
            checkout[index].push(
                checkout_query::measure_pool(Pooler::Coredb, target, size, workers, budget)
                    .await?
                    .rate,
            );
            autocommit[index].push(autocommit::measure_raw_sql(target, budget).await?);
            let query = Query::Pool(Pooler::Coredb.open(target, 1).await?);
            let (allocations, bytes) = allocations_per_query(&query, budget.alloc_queries).await?;
            query.close().await;
            checkout_allocs[index].push(allocations);
            checkout_bytes[index].push(bytes);
            let query = Query::CoredbRawSql(target.coredb(1)?);
            let (allocations, bytes) = allocations_per_query(&query, budget.alloc_queries).await?;
            query.close().await;
            autocommit_allocs[index].push(allocations);
            autocommit_bytes[index].push(bytes);
        }
    }
    observed::set(false);
    let columns = vec![
        "coredb, nothing installed".to_owned(),
        "coredb, subscriber + recorder".to_owned(),
    ];
    let row =
        |label: String, cells: Vec<Samples>| Row::new(label, cells.into_iter().map(Some).collect());
    let throughput = Table {
        title: "S6. With a tracing subscriber and a metrics recorder: throughput".into(),
        description: format!(
            "S2's checkout + `SELECT 1` (pool {size}, {workers} workers) and S3's \
             `db.execute_raw_sql(\"SELECT 1\", ())` ({} tasks, pool {}), measured with nothing \
             installed and with a `tracing-subscriber` registry whose `fmt` layer (writing \
             to nowhere) takes coredb's spans and events at INFO, plus a Prometheus recorder \
             (`metrics-exporter-prometheus`) taking its metrics; the two modes interleaved. \
             The ratio column is the second over the first.",
            autocommit::TASKS,
            autocommit::CONNECTIONS
        ),
        unit: "queries/s".into(),
        higher_is_better: true,
        columns: columns.clone(),
        rows: vec![
            row(
                format!("checkout + SELECT 1, pool {size}, {workers} workers"),
                checkout,
            ),
            row(
                format!("execute_raw_sql, {} tasks", autocommit::TASKS),
                autocommit,
            ),
        ],
        notes: Vec::new(),
    };
    let allocations = Table {
        title: "S6. With a tracing subscriber and a metrics recorder: allocations".into(),
        description: format!(
            "Allocations and bytes allocated per statement over {} statements in a row from \
             one task, counted by the harness's global allocator, in the same two modes.",
            budget.alloc_queries
        ),
        unit: "per statement".into(),
        higher_is_better: false,
        columns,
        rows: vec![
            row("checkout + SELECT 1: allocations".into(), checkout_allocs),
            row("checkout + SELECT 1: bytes".into(), checkout_bytes),
            row("execute_raw_sql: allocations".into(), autocommit_allocs),
            row("execute_raw_sql: bytes".into(), autocommit_bytes),
        ],
        notes: Vec::new(),
    };
    Ok(vec![throughput, allocations])
}
