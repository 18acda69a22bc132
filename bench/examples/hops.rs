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
//! A third family of modes measures the design tokio-postgres cannot take: a protocol client
//! of its own on `postgres-protocol`, which the caller's task drives itself on the socket it
//! holds (no I/O task, no channel between client and connection, as libpq works):
//!
//! - `wire`: one `SELECT 1` per round trip (Bind, Execute, Sync);
//! - `wire-syncs`: [`PIPELINE`] queries per write, each with its own Sync (what a pipeline
//!   lane on tokio-postgres sends);
//! - `wire-batch`: [`PIPELINE`] queries per write under one Sync (read-only statements
//!   sharing one implicit transaction);
//! - `pipelined`, for comparison: [`PIPELINE`] concurrent queries on one tokio-postgres client
//!   (its connection on a task of its own), each with its own Sync.
//!
//! Arguments: the mode; the number of queries; `multi` (tokio's multi-threaded runtime, two
//! workers) or `current` (one thread). The server is `COREDB_HOPS_DSN`, by default
//! `host=127.0.0.1 port=5432 user=postgres dbname=postgres`; the `wire` modes speak to it over
//! TCP without TLS and with trust authentication only (they measure, they are not a driver).

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::{Client, Statement};

/// Queries per write in the pipelined modes (pgbench's pipelined comparison sends 20).
const PIPELINE: u64 = 20;

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

/// `n` queries, [`PIPELINE`] at a time on one shared client.
#[inline(never)]
async fn queries_pipelined(client: &Client, statement: &Statement, n: u64) -> Result<i64, Failure> {
    let mut sum = 0i64;
    for _ in 0..n.div_ceil(PIPELINE) {
        let rows = futures_util::future::try_join_all(
            (0..PIPELINE).map(|_| client.query_one(statement, &[])),
        )
        .await?;
        sum += rows
            .iter()
            .map(|r| i64::from(r.get::<_, i32>(0)))
            .sum::<i64>();
    }
    Ok(sum)
}

/// A protocol client of its own: the socket, and one buffer each way, reused.
struct Wire {
    socket: TcpStream,
    out: BytesMut,
    input: BytesMut,
}

impl Wire {
    /// Connects and authenticates (trust only), and prepares `SELECT 1` as `s1`.
    async fn connect(config: &tokio_postgres::Config) -> Result<Wire, Failure> {
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => return Err("the wire modes need a TCP host".into()),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let socket = TcpStream::connect((host.as_str(), port)).await?;
        socket.set_nodelay(true)?;
        let mut wire = Wire {
            socket,
            out: BytesMut::with_capacity(4096),
            input: BytesMut::with_capacity(8192),
        };
        let user = config.get_user().unwrap_or("postgres");
        let dbname = config.get_dbname().unwrap_or(user);
        frontend::startup_message([("user", user), ("database", dbname)], &mut wire.out)?;
        wire.flush().await?;
        wire.until_ready(|_| Ok(())).await?;
        frontend::parse("s1", "SELECT 1", [], &mut wire.out)?;
        frontend::sync(&mut wire.out);
        wire.flush().await?;
        wire.until_ready(|_| Ok(())).await?;
        Ok(wire)
    }

    async fn flush(&mut self) -> Result<(), Failure> {
        self.socket.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// Reads until ReadyForQuery, handing each data row's first column (an `int4`) to `row`.
    async fn until_ready(
        &mut self,
        mut row: impl FnMut(i32) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        loop {
            while let Some(message) = backend::Message::parse(&mut self.input)? {
                match message {
                    backend::Message::ReadyForQuery(_) => return Ok(()),
                    backend::Message::DataRow(body) => {
                        // The column count is already read: a length, then the value.
                        let mut value = body.buffer();
                        let _length = value.get_i32();
                        row(value.get_i32())?;
                    }
                    backend::Message::ErrorResponse(_) => {
                        return Err("the server failed the query".into())
                    }
                    backend::Message::AuthenticationOk
                    | backend::Message::ParameterStatus(_)
                    | backend::Message::BackendKeyData(_)
                    | backend::Message::ParseComplete
                    | backend::Message::BindComplete
                    | backend::Message::CommandComplete(_) => {}
                    _ => {
                        return Err(
                            "unexpected message (the wire modes take trust authentication only)"
                                .into(),
                        )
                    }
                }
            }
            if self.socket.read_buf(&mut self.input).await? == 0 {
                return Err("the server closed the connection".into());
            }
        }
    }

    /// Appends Bind and Execute of `s1`, results in binary.
    fn query(&mut self) -> Result<(), Failure> {
        let no_values: [Option<&[u8]>; 0] = [];
        frontend::bind(
            "",
            "s1",
            [],
            no_values,
            |_, _| Ok(postgres_protocol::IsNull::No),
            [1],
            &mut self.out,
        )
        .map_err(|_| "bind failed")?;
        frontend::execute("", 0, &mut self.out)?;
        Ok(())
    }
}

/// `n` queries on the protocol client of its own, `per_write` per write, each with its own Sync
/// or (`one_sync`) under one.
#[inline(never)]
async fn queries_wire(
    wire: &mut Wire,
    n: u64,
    per_write: u64,
    one_sync: bool,
) -> Result<i64, Failure> {
    let mut sum = 0i64;
    for _ in 0..n.div_ceil(per_write) {
        for _ in 0..per_write {
            wire.query()?;
            if !one_sync {
                frontend::sync(&mut wire.out);
            }
        }
        if one_sync {
            frontend::sync(&mut wire.out);
        }
        wire.flush().await?;
        let syncs = if one_sync { 1 } else { per_write };
        for _ in 0..syncs {
            wire.until_ready(|v| {
                sum += i64::from(v);
                Ok(())
            })
            .await?;
        }
    }
    Ok(sum)
}

async fn run(mode: &str, n: u64) -> Result<(), Failure> {
    let dsn = std::env::var("COREDB_HOPS_DSN")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into());
    if let Some(shape) = mode.strip_prefix("wire") {
        let (per_write, one_sync) = match shape {
            "" => (1, false),
            "-syncs" => (PIPELINE, false),
            "-batch" => (PIPELINE, true),
            other => {
                return Err(
                    format!("unknown mode wire{other}: wire, wire-syncs or wire-batch").into(),
                )
            }
        };
        let mut wire = Wire::connect(&dsn.parse()?).await?;
        queries_wire(&mut wire, 200, per_write, one_sync).await?;
        let started = Instant::now();
        let sum = queries_wire(&mut wire, n, per_write, one_sync).await?;
        return report(mode, sum, started);
    }
    let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
    let started;
    match mode {
        "pipelined" => {
            tokio::spawn(connection);
            let statement = client.prepare("SELECT 1").await?;
            queries_pipelined(&client, &statement, 200).await?;
            started = Instant::now();
            let sum = queries_pipelined(&client, &statement, n).await?;
            return report(mode, sum, started);
        }
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
        other => {
            return Err(format!(
            "unknown mode {other:?}: own-task, in-task, pipelined, wire, wire-syncs or wire-batch"
        )
            .into())
        }
    }
    report(mode, n as i64, started)
}

/// Prints the rate of `n` queries (each returned 1, so their sum is their count) since `started`.
fn report(mode: &str, n: i64, started: Instant) -> Result<(), Failure> {
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
        return Err(
            "usage: hops own-task|in-task|pipelined|wire|wire-syncs|wire-batch QUERIES multi|current"
                .into(),
        );
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
    // On a worker, as a service's request handlers run (the thread of `block_on` is none).
    let mode = mode.clone();
    runtime.block_on(async move { tokio::spawn(async move { run(&mode, n).await }).await? })
}
