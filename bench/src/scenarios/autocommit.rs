//! Scenario 3: statements without an explicit checkout (`db.execute_raw_sql`, `db.fetch_all` in
//! autocommit) from 64 tasks, beside the peers' checkout-per-query, raw tokio-postgres clients
//! shared by all tasks (pipelining), and pgbench's pipelined figure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use coredb::DatabaseManager;
use tokio_postgres::{Client, NoTls, Statement};

use crate::contenders::Pooler;
use crate::measure::{rotated, throughput, Samples, Until, Workload};
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
async fn measure_coredb(target: &Target, call: CoredbCall, budget: &Budget) -> Result<f64> {
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
    measure_coredb(target, CoredbCall::ExecuteRawSql, budget).await
}

async fn measure_workload<W: Workload>(work: W, budget: &Budget) -> Result<f64> {
    let work = Arc::new(work);
    throughput(&work, TASKS, Until::Elapsed(budget.warmup)).await?;
    throughput(&work, TASKS, Until::Elapsed(budget.measure)).await
}

/// Runs the scenario.
pub async fn run(budget: &Budget, target: &Target, pgbench: Option<&Pgbench>) -> Result<Table> {
    // Columns: coredb (per row), the three peers, shared clients, pgbench pipelined.
    let peers = [Pooler::DeadpoolPostgres, Pooler::Bb8Postgres, Pooler::Sqlx];
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
    for rep in 0..budget.reps {
        eprintln!(
            "S3 autocommit statements from {TASKS} tasks: repetition {}/{}",
            rep + 1,
            budget.reps
        );
        for (index, contender) in rotated(&contenders, rep) {
            let rate = match (contender, pgbench) {
                (Contender::Coredb(call), _) => measure_coredb(target, call, budget).await?,
                (Contender::Pool(pooler), _) => {
                    measure_pool(pooler, target, CONNECTIONS, TASKS, budget).await?
                }
                (Contender::SharedClients, _) => {
                    let clients = SharedClients::connect(target, CONNECTIONS).await?;
                    measure_workload(clients, budget).await?
                }
                (Contender::Pgbench, Some(pgbench)) => {
                    pgbench
                        .pipelined(PGBENCH_CLIENTS, budget.pgbench_seconds)
                        .await?
                }
                (Contender::Pgbench, None) => continue,
            };
            samples[index].push(rate);
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
    Ok(Table {
        title: format!("S3. Statements without a checkout, {TASKS} tasks"),
        description: format!(
            "{TASKS} tasks each repeat one `SELECT 1`. coredb: `db.execute_raw_sql(\"SELECT 1\", \
             ())` or `db.fetch_all::<(i32,), _>(\"SELECT 1\", ())` in autocommit on a pool of \
             {CONNECTIONS} (coredb pipelines them over shared connections, at most half the \
             pool, keeping the rest for sessions); deadpool-postgres, bb8-postgres, sqlx: checkout + prepared `SELECT 1` per \
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
    })
}
