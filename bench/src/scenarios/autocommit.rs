//! Scenario 3: statements without an explicit checkout (`db.execute_raw_sql`, `db.fetch_all` in
//! autocommit) from 64 tasks, beside the peers' checkout-per-query, raw tokio-postgres clients
//! shared by all tasks (pipelining), and pgbench's pipelined figure. Beside the rates, the
//! costs per statement: allocations and bytes (counted in the timed run) and instructions
//! (`--callgrind`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use coredb::DatabaseManager;
use tokio_postgres::{Client, NoTls, Statement};

use crate::callgrind::FixedRun;
use crate::contenders::{CheckoutSelect1, Pooler};
use crate::costs::{self, Cost, CostSamples};
use crate::measure::{count_allocations, rotated, throughput, Measured, Samples, Until, Workload};
use crate::options::Budget;
use crate::pgbench::{Pgbench, PIPELINE_DEPTH};
use crate::report::{Goal, Row, Table};
use crate::scenarios::checkout_query::measure_pool;
use crate::server::Target;
use crate::Result;

/// Tasks issuing statements.
pub const TASKS: usize = 64;
/// Connections of every pool (and shared tokio-postgres clients).
pub const CONNECTIONS: usize = 16;
/// pgbench clients, each pipelining [`PIPELINE_DEPTH`] statements.
const PGBENCH_CLIENTS: usize = 4;

/// coredb's autocommit statements.
#[derive(Debug, Clone, Copy)]
enum CoredbCall {
    ExecuteRawSql,
    FetchAll,
}

/// `db.execute_raw_sql("SELECT 1", ())` or `db.fetch_all::<(i32,), _>("SELECT 1", ())`.
struct Autocommit {
    db: DatabaseManager,
    call: CoredbCall,
}

impl Workload for Autocommit {
    async fn once(&self) -> Result<()> {
        match self.call {
            CoredbCall::ExecuteRawSql => {
                let rows = self.db.execute_raw_sql("SELECT 1", ()).await?;
                std::hint::black_box(rows);
            }
            CoredbCall::FetchAll => {
                let rows: Vec<(i32,)> = self.db.fetch_all("SELECT 1", ()).await?;
                std::hint::black_box(rows);
            }
        }
        Ok(())
    }
}

/// Raw tokio-postgres clients shared round-robin by all tasks: queries in flight on one client
/// are pipelined by the driver. A reference for what pipelining can reach, not a goal.
struct SharedClients {
    clients: Vec<(Client, Statement)>,
    next: AtomicUsize,
}

impl SharedClients {
    async fn connect(target: &Target, count: usize) -> Result<Self> {
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            let (client, connection) = target.pg_config().connect(NoTls).await?;
            tokio::spawn(connection);
            let statement = client.prepare("SELECT 1").await?;
            clients.push((client, statement));
        }
        Ok(SharedClients {
            clients,
            next: AtomicUsize::new(0),
        })
    }
}

impl Workload for SharedClients {
    async fn once(&self) -> Result<()> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        let (client, statement) = &self.clients[i];
        let one: i32 = client.query_one(statement, &[]).await?.try_get(0)?;
        std::hint::black_box(one);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Contender {
    Coredb(CoredbCall),
    Pool(Pooler),
    SharedClients,
    Pgbench,
}

/// Measures coredb's autocommit `call` on a pool of its own, opened and closed here.
async fn measure_coredb(target: &Target, call: CoredbCall, budget: &Budget) -> Result<Measured> {
    let db = target.coredb(CONNECTIONS)?;
    let rate = measure_workload(
        Autocommit {
            db: db.clone(),
            call,
        },
        budget,
    )
    .await;
    db.close().await;
    rate
}

/// Measures `db.execute_raw_sql("SELECT 1", ())` from [`TASKS`] tasks on a pool of
/// [`CONNECTIONS`], as this scenario does.
pub async fn measure_raw_sql(target: &Target, budget: &Budget) -> Result<f64> {
    Ok(measure_coredb(target, CoredbCall::ExecuteRawSql, budget)
        .await?
        .rate)
}

/// Warms `work` up, times it from [`TASKS`] tasks, then counts the allocations of
/// [`Budget::counted_ops`] statements.
async fn measure_workload<W: Workload>(work: W, budget: &Budget) -> Result<Measured> {
    let work = Arc::new(work);
    throughput(&work, TASKS, Until::Elapsed(budget.warmup)).await?;
    let rate = throughput(&work, TASKS, Until::Elapsed(budget.measure)).await?;
    let counted = count_allocations(&work, TASKS, budget.counted_ops).await?;
    Ok(Measured { rate, counted })
}

/// Cost columns: coredb's two calls, the three pools, the shared clients.
const COST_COLUMNS: [&str; 6] = [
    "coredb `db.execute_raw_sql`",
    "coredb `db.fetch_all`",
    "deadpool-postgres",
    "bb8-postgres",
    "sqlx",
    "tokio-postgres shared",
];

/// The pools among the cost columns, from column 2.
const PEERS: [Pooler; 3] = [Pooler::DeadpoolPostgres, Pooler::Bb8Postgres, Pooler::Sqlx];

/// The contenders of `--callgrind` (one case): (case, column, what runs).
pub fn fixed_units() -> Vec<(usize, usize, String)> {
    COST_COLUMNS
        .iter()
        .enumerate()
        .map(|(column, name)| (0, column, format!("{name}, {TASKS} tasks")))
        .collect()
}

/// In a `--callgrind` child: the contender of `column`, a fixed number of statements from
/// [`TASKS`] tasks on [`CONNECTIONS`] connections.
pub fn run_fixed(fixed: &FixedRun, column: usize) -> Result<()> {
    let target = &fixed.target;
    match column {
        0 | 1 => {
            let call = [CoredbCall::ExecuteRawSql, CoredbCall::FetchAll][column];
            let db = target.coredb(CONNECTIONS)?;
            let work = Arc::new(Autocommit {
                db: db.clone(),
                call,
            });
            let result = fixed.workload(&work, TASKS);
            fixed.block_on(db.close());
            result
        }
        2..=4 => {
            let pool = fixed.block_on(PEERS[column - 2].open(target, CONNECTIONS))?;
            let work = Arc::new(CheckoutSelect1(pool));
            let result = fixed.workload(&work, TASKS);
            fixed.block_on(work.0.close());
            result
        }
        _ => {
            let clients = fixed.block_on(SharedClients::connect(target, CONNECTIONS))?;
            fixed.workload(&Arc::new(clients), TASKS)
        }
    }
}

/// The cost table: `costs` per statement, one row per coredb call beside the same peers,
/// `method` saying how they were counted. Goals (pipelined autocommit): at most 8 allocations
/// and 1 KiB allocated per statement.
pub fn cost_table(samples: &CostSamples, costs: &[Cost], method: &str) -> Table {
    let mut rows = Vec::new();
    for (call, label) in COST_COLUMNS[..2].iter().enumerate() {
        for &cost in costs {
            let cells = samples.cells(0, cost, &[call, 2, 3, 4, 5]);
            let mut row = costs::row(label, cost, "statement", cells);
            match cost {
                Cost::Allocations => {
                    row.goals
                        .push(Goal::at_most("coredb allocations", row.median(0), 8.0));
                }
                Cost::Bytes => {
                    row.goals
                        .push(Goal::at_most("coredb bytes", row.median(0), 1024.0));
                }
                Cost::Instructions => {}
            }
            rows.push(row);
        }
    }
    let mut columns = vec!["coredb".to_owned()];
    columns.extend(COST_COLUMNS[2..].iter().map(|c| (*c).to_owned()));
    Table {
        title: format!("S3. Statements without a checkout, {TASKS} tasks: cost per statement"),
        description: format!(
            "S3's `SELECT 1` from {TASKS} tasks on {CONNECTIONS} connections: coredb's \
             pipelined autocommit calls beside the pools' checkout + prepared `SELECT 1` and \
             raw tokio-postgres clients shared by all tasks. {method}"
        ),
        unit: "the unit named in each case".into(),
        higher_is_better: false,
        columns,
        rows,
        notes: vec![costs::ALLOCATOR_NOTE.into()],
    }
}

/// Runs the scenario: the rates, then the allocations per statement.
pub async fn run(
    budget: &Budget,
    target: &Target,
    pgbench: Option<&Pgbench>,
) -> Result<Vec<Table>> {
    // Columns: coredb (per row), the three peers, shared clients, pgbench pipelined; the cost
    // table's columns are the same without pgbench.
    let peers = PEERS;
    let calls = [CoredbCall::ExecuteRawSql, CoredbCall::FetchAll];
    let mut contenders: Vec<(usize, Contender)> = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        contenders.push((i, Contender::Coredb(*call)));
    }
    for (i, pooler) in peers.iter().enumerate() {
        contenders.push((calls.len() + i, Contender::Pool(*pooler)));
    }
    let shared_index = calls.len() + peers.len();
    contenders.push((shared_index, Contender::SharedClients));
    let pgbench_index = shared_index + 1;
    if pgbench.is_some() {
        contenders.push((pgbench_index, Contender::Pgbench));
    }
    let mut samples = vec![Samples::default(); pgbench_index + 1];
    let mut costs = CostSamples::default();
    for rep in 0..budget.reps {
        eprintln!(
            "S3 autocommit statements from {TASKS} tasks: repetition {}/{}",
            rep + 1,
            budget.reps
        );
        for (index, contender) in rotated(&contenders, rep) {
            let measured = match (contender, pgbench) {
                (Contender::Coredb(call), _) => measure_coredb(target, call, budget).await?,
                (Contender::Pool(pooler), _) => {
                    measure_pool(pooler, target, CONNECTIONS, TASKS, budget).await?
                }
                (Contender::SharedClients, _) => {
                    let clients = SharedClients::connect(target, CONNECTIONS).await?;
                    measure_workload(clients, budget).await?
                }
                (Contender::Pgbench, Some(pgbench)) => {
                    let rate = pgbench
                        .pipelined(PGBENCH_CLIENTS, budget.pgbench_seconds)
                        .await?;
                    samples[index].push(rate);
                    continue;
                }
                (Contender::Pgbench, None) => continue,
            };
            samples[index].push(measured.rate);
            costs.push_counted(0, index, &measured.counted);
        }
    }
    let cell = |i: usize| -> Option<Samples> {
        let s: &Samples = &samples[i];
        s.median().is_some().then(|| s.clone())
    };
    let mut columns = vec!["coredb".to_owned()];
    columns.extend(peers.iter().map(|p| p.name().to_owned()));
    columns.push("tokio-postgres shared".to_owned());
    columns.push("pgbench pipelined".to_owned());
    let mut rows = Vec::new();
    for (i, label) in ["db.execute_raw_sql", "db.fetch_all"].iter().enumerate() {
        let mut cells = vec![cell(i)];
        cells.extend((calls.len()..=pgbench_index).map(cell));
        let mut row = Row::new(format!("coredb `{label}`"), cells);
        row.goals
            .push(Goal::new("coredb/deadpool-postgres", row.ratio(0, 1), 3.0));
        let last = row.cells.len() - 1;
        row.goals.push(Goal::new(
            "coredb/pgbench pipelined",
            row.ratio(0, last),
            0.5,
        ));
        rows.push(row);
    }
    let rates = Table {
        title: format!("S3. Statements without a checkout, {TASKS} tasks"),
        description: format!(
            "{TASKS} tasks each repeat one `SELECT 1`. coredb: `db.execute_raw_sql(\"SELECT 1\", \
             ())` or `db.fetch_all::<(i32,), _>(\"SELECT 1\", ())` in autocommit on a pool of \
             {CONNECTIONS} (coredb pipelines them over shared connections, at most half the \
             pool, keeping the rest for sessions, and the reads sent in one write share one \
             Sync, as pgbench's pipeline does); deadpool-postgres, bb8-postgres, sqlx: checkout + prepared `SELECT 1` per \
             query on a pool of {CONNECTIONS} (as in S2); tokio-postgres shared: \
             {CONNECTIONS} raw clients shared round-robin by all tasks, so queries in flight on a client are pipelined (a \
             reference, no goal); pgbench pipelined: {PGBENCH_CLIENTS} clients each sending \
             `\\startpipeline`, {PIPELINE_DEPTH} × `SELECT 1`, `\\endpipeline` (`-M prepared`), \
             counted in statements."
        ),
        unit: "queries/s".into(),
        higher_is_better: true,
        columns,
        rows,
        notes: Vec::new(),
    };
    let method = format!(
        "Counted in this process after each timed measurement, over {} statements from the \
         same tasks (rounded up to a multiple of the tasks), tokio's multi-threaded runtime.",
        budget.counted_ops
    );
    Ok(vec![rates, cost_table(&costs, &Cost::ALLOCATOR, &method)])
}
