//! Scenario 5: memory. Resident memory of idle pooled connections (each contender measured in a
//! fresh child process, from VmRSS in /proc/self/status before and after), and allocations per
//! simple query (the counting global allocator of this binary).

use std::process::Command;
use std::time::Duration;

use tokio_postgres::NoTls;

use crate::alloc_counter;
use crate::contenders::{PgPool, Pooler};
use crate::measure::{rotated, Samples};
use crate::options::Budget;
use crate::report::{Row, Table};
use crate::server::Target;
use crate::Result;

/// The hidden first argument that turns the binary into a memory probe.
pub const PROBE_FLAG: &str = "--memory-probe";

/// What a probe process measures: one pooler's idle connections.
#[derive(Debug)]
pub struct Probe {
    pooler: Pooler,
    connections: usize,
}

impl Probe {
    /// Parses `<pooler> <connections>`.
    pub fn from_args(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let name = args.next().ok_or("memory probe: missing pooler")?;
        let pooler = Pooler::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| format!("memory probe: unknown pooler {name:?}"))?;
        let connections = args
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or("memory probe: missing connection count")?;
        Ok(Probe {
            pooler,
            connections,
        })
    }
}

/// VmRSS of this process, in KiB.
fn resident_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix("VmRSS:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| "no VmRSS line in /proc/self/status".into())
}

/// In the probe process: warms the library up with one connection (so code pages and
/// one-time state are not counted), then opens `connections`, returns them to the pool, and
/// prints VmRSS before and after as `before_kib after_kib`.
pub fn run_probe(probe: &Probe) -> Result<()> {
    let target = Target::from_parent()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let warm = probe.pooler.open(&target, 1).await?;
        warm.fill(1).await?;
        warm.close().await;
        drop(warm);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = resident_kib()?;
        let pool = probe.pooler.open(&target, probe.connections).await?;
        pool.fill(probe.connections).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = resident_kib()?;
        println!("{before} {after}");
        pool.close().await;
        Ok(())
    })
}

/// Runs a probe child for `pooler`; returns KiB of resident memory per idle connection.
async fn probe_child(target: &Target, pooler: Pooler, connections: usize) -> Result<f64> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg(PROBE_FLAG)
        .arg(pooler.name())
        .arg(connections.to_string());
    target.pass_to(&mut command);
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    let numbers =
        crate::measure::child_numbers(&output, &format!("memory probe for {}", pooler.name()))?;
    let [before, after] = numbers[..] else {
        return Err(format!(
            "memory probe for {}: unexpected output {:?}",
            pooler.name(),
            String::from_utf8_lossy(&output.stdout)
        )
        .into());
    };
    Ok(after.saturating_sub(before) as f64 / connections as f64)
}

/// Allocations and bytes per query of `SELECT 1` run `count` times in a row by one task.
pub async fn allocations_per_query(query: &Query, count: u64) -> Result<(f64, f64)> {
    for _ in 0..100 {
        query.once().await?;
    }
    let counting = alloc_counter::start();
    for _ in 0..count {
        query.once().await?;
    }
    let (allocations, bytes) = counting.stop();
    Ok((
        allocations as f64 / count as f64,
        bytes as f64 / count as f64,
    ))
}

/// One simple query, as each contender runs it.
pub enum Query {
    /// Checkout + `SELECT 1` (S2's unit of work).
    Pool(PgPool),
    /// `db.execute_raw_sql("SELECT 1", ())`.
    CoredbRawSql(coredb::DatabaseManager),
    /// A prepared `SELECT 1` on one raw tokio-postgres client.
    Raw(tokio_postgres::Client, tokio_postgres::Statement),
}

impl Query {
    async fn once(&self) -> Result<()> {
        match self {
            Query::Pool(pool) => pool.checkout_select1().await,
            Query::CoredbRawSql(db) => {
                std::hint::black_box(db.execute_raw_sql("SELECT 1", ()).await?);
                Ok(())
            }
            Query::Raw(client, statement) => {
                let one: i32 = client.query_one(statement, &[]).await?.try_get(0)?;
                std::hint::black_box(one);
                Ok(())
            }
        }
    }

    /// Closes what the query ran on.
    pub async fn close(self) {
        match self {
            Query::Pool(pool) => pool.close().await,
            Query::CoredbRawSql(db) => {
                db.close().await;
            }
            Query::Raw(..) => {}
        }
    }
}

/// Columns: the four pools, then raw tokio-postgres.
const RAW_COLUMN: usize = Pooler::ALL.len();

/// Runs the scenario.
pub async fn run(budget: &Budget, target: &Target) -> Result<Table> {
    let n = budget.idle_connections;
    let columns = Pooler::ALL.len() + 1;
    let mut rss = vec![Samples::default(); columns];
    let mut allocations = vec![Samples::default(); columns];
    let mut bytes = vec![Samples::default(); columns];
    let mut raw_sql_allocations = Samples::default();
    let mut raw_sql_bytes = Samples::default();
    let poolers: Vec<(usize, Pooler)> = Pooler::ALL.into_iter().enumerate().collect();
    for rep in 0..budget.reps {
        eprintln!(
            "S5 memory, {n} idle connections and allocations per query: repetition {}/{}",
            rep + 1,
            budget.reps
        );
        for (index, pooler) in rotated(&poolers, rep) {
            rss[index].push(probe_child(target, pooler, n).await?);
        }
        // Allocations: every query path in turn, one task, one connection.
        for (index, pooler) in rotated(&poolers, rep) {
            let query = Query::Pool(pooler.open(target, 1).await?);
            let (a, b) = allocations_per_query(&query, budget.alloc_queries).await?;
            query.close().await;
            allocations[index].push(a);
            bytes[index].push(b);
        }
        let query = Query::CoredbRawSql(target.coredb(1)?);
        let (a, b) = allocations_per_query(&query, budget.alloc_queries).await?;
        query.close().await;
        raw_sql_allocations.push(a);
        raw_sql_bytes.push(b);
        let (client, connection) = target.pg_config().connect(NoTls).await?;
        tokio::spawn(connection);
        let statement = client.prepare("SELECT 1").await?;
        let query = Query::Raw(client, statement);
        let (a, b) = allocations_per_query(&query, budget.alloc_queries).await?;
        query.close().await;
        allocations[RAW_COLUMN].push(a);
        bytes[RAW_COLUMN].push(b);
    }
    let present = |s: &Samples| s.median().is_some().then(|| s.clone());
    let with_coredb = |coredb: &Samples, peers: &[Samples]| {
        std::iter::once(present(coredb))
            .chain(peers[1..].iter().map(present))
            .collect::<Vec<_>>()
    };
    let rows = vec![
        Row::new(
            format!("resident memory per idle pooled connection, KiB ({n} connections)"),
            rss.iter().map(present).collect(),
        ),
        Row::new(
            "allocations per checkout + SELECT 1",
            allocations.iter().map(present).collect(),
        ),
        Row::new(
            "bytes allocated per checkout + SELECT 1",
            bytes.iter().map(present).collect(),
        ),
        Row::new(
            "allocations per query: coredb `db.execute_raw_sql`, peers checkout + SELECT 1",
            with_coredb(&raw_sql_allocations, &allocations),
        ),
        Row::new(
            "bytes allocated per query: coredb `db.execute_raw_sql`, peers checkout + SELECT 1",
            with_coredb(&raw_sql_bytes, &bytes),
        ),
    ];
    let mut names: Vec<String> = Pooler::ALL.iter().map(|p| p.name().to_owned()).collect();
    names.push("tokio-postgres (no pool)".into());
    Ok(Table {
        title: "S5. Memory".into(),
        description: format!(
            "Resident memory: each pool measured in a fresh child process (`coredb-bench \
             {PROBE_FLAG}`), which first opens and closes one connection with the same library \
             (so code pages and one-time state are not counted), reads VmRSS from \
             /proc/self/status, checks out {n} connections at once, runs `SELECT 1` on each, \
             returns them (now idle in the pool), waits 200 ms and reads VmRSS again; the \
             difference divided by {n}. Allocations: a counting `#[global_allocator]` in this \
             binary counts every allocation of the process (the connection tasks included) \
             over {} sequential queries from one task on a pool of one connection, after 100 \
             untimed ones; tokio-postgres runs the prepared statement on one client, without a \
             pool.",
            budget.alloc_queries
        ),
        unit: "the unit named in each case".into(),
        higher_is_better: false,
        columns: names,
        rows,
        notes: vec![
            "No goals: these figures show where memory goes. Resident memory is rounded to \
             pages by the kernel and includes allocator slack; compare orders of magnitude."
                .into(),
        ],
    })
}
