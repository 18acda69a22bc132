//! Where a round trip's time goes between the caller's task and the connection's I/O task.
//!
//! One raw tokio-postgres connection runs `SELECT 1` (prepared) `queries` times, one at a
//! time, with the connection either on a task of its own (as tokio-postgres, deadpool-postgres
//! and coredb run it) or polled in the caller's task while the query waits (no hop between
//! tasks). It prints the rate; run it under `strace -f -c` for the system calls per query and
//! under callgrind for the instructions (see docs/libpq-gap.md).
//!
//! ```sh
//! cargo run --release -p coredb-bench --example hops -- own-task 20000 multi
//! cargo run --release -p coredb-bench --example hops -- in-task 20000 multi
//! ```
//!
//! Arguments: `own-task` or `in-task`; the number of queries; `multi` (tokio's multi-threaded
//! runtime, two workers) or `current` (one thread). The server is `COREDB_HOPS_DSN`, by
//! default `host=127.0.0.1 port=5432 user=postgres dbname=postgres`.

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Instant;

use tokio_postgres::{Client, Statement};

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Runs `future` in this task while polling `connection` whenever it waits.
async fn in_task<T, C>(future: impl Future<Output = T>, mut connection: Pin<&mut C>) -> T
where
    C: Future<Output = Result<(), tokio_postgres::Error>>,
{
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = future.as_mut().poll(cx) {
            return Poll::Ready(done);
        }
        if let Poll::Ready(ended) = connection.as_mut().poll(cx) {
            panic!("the connection ended: {ended:?}");
        }
        // What the connection read may have completed the query.
        future.as_mut().poll(cx)
    })
    .await
}

/// `n` queries, the connection driven by another task.
#[inline(never)]
async fn queries_own_task(client: &Client, statement: &Statement, n: u64) -> Result<i64, Failure> {
    let mut sum = 0i64;
    for _ in 0..n {
        sum += i64::from(client.query_one(statement, &[]).await?.get::<_, i32>(0));
    }
    Ok(sum)
}

/// `n` queries, the connection polled in this task.
#[inline(never)]
async fn queries_in_task<C>(
    client: &Client,
    statement: &Statement,
    mut connection: Pin<&mut C>,
    n: u64,
) -> Result<i64, Failure>
where
    C: Future<Output = Result<(), tokio_postgres::Error>>,
{
    let mut sum = 0i64;
    for _ in 0..n {
        let row = in_task(client.query_one(statement, &[]), connection.as_mut()).await?;
        sum += i64::from(row.get::<_, i32>(0));
    }
    Ok(sum)
}

async fn run(mode: &str, n: u64) -> Result<(), Failure> {
    let dsn = std::env::var("COREDB_HOPS_DSN")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into());
    let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
    let started;
    match mode {
        "own-task" => {
            tokio::spawn(connection);
            let statement = client.prepare("SELECT 1").await?;
            queries_own_task(&client, &statement, 200).await?;
            started = Instant::now();
            queries_own_task(&client, &statement, n).await?;
        }
        "in-task" => {
            let mut connection = pin!(connection);
            let statement = in_task(client.prepare("SELECT 1"), connection.as_mut()).await?;
            queries_in_task(&client, &statement, connection.as_mut(), 200).await?;
            started = Instant::now();
            queries_in_task(&client, &statement, connection.as_mut(), n).await?;
        }
        other => return Err(format!("unknown mode {other:?}: own-task or in-task").into()),
    }
    let elapsed = started.elapsed();
    println!(
        "{mode}: {n} queries in {elapsed:?}, {:.0} queries/s",
        n as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, n, runtime] = &args[..] else {
        return Err("usage: hops own-task|in-task QUERIES multi|current".into());
    };
    let n: u64 = n.parse()?;
    let runtime = match runtime.as_str() {
        "multi" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
        "current" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        other => return Err(format!("unknown runtime {other:?}: multi or current").into()),
    };
    runtime.block_on(run(mode, n))
}
