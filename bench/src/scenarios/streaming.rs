//! Scenario 7: a big result read as it arrives (rows decoded into `(i64, String)`), beside
//! sqlx's `fetch` and tokio-postgres's `query_raw`; and a `COPY .. TO STDOUT` read as it
//! arrives, beside tokio-postgres's `copy_out`. Rate, allocations per row and the peak of
//! heap bytes held at once during the read (from the harness's counting allocator).

use std::pin::pin;
use std::time::Instant;

use futures_util::TryStreamExt as _;
use tokio_postgres::NoTls;

use crate::alloc_counter;
use crate::measure::{rotated, Samples};
use crate::options::Budget;
use crate::report::{Goal, Row, Table};
use crate::server::Target;
use crate::Result;

/// The query every contender streams: about 110 bytes per row.
const SQL: &str = "SELECT n, repeat('x', 100) || n FROM generate_series(1, $1::int8) AS n";

/// Who reads rows.
#[derive(Debug, Clone, Copy)]
enum Reader {
    Coredb,
    Sqlx,
    TokioPostgres,
}

/// One read's figures: rows per second, allocations per row, peak bytes held.
struct Read {
    rate: f64,
    allocations_per_row: f64,
    peak_bytes: f64,
}

/// The open handles of every contender.
struct Handles {
    coredb: coredb::DatabaseManager,
    sqlx: sqlx::PgPool,
    client: tokio_postgres::Client,
    statement: tokio_postgres::Statement,
}

/// Reads `rows` rows with `reader`, measuring it.
async fn read_rows(handles: &Handles, reader: Reader, rows: u64) -> Result<Read> {
    let n = rows as i64;
    let counting = alloc_counter::start();
    let started = Instant::now();
    let mut seen = 0u64;
    match reader {
        Reader::Coredb => {
            let mut stream = handles.coredb.stream::<(i64, String), _>(SQL, (n,)).await?;
            while let Some(row) = stream.try_next().await? {
                std::hint::black_box(row);
                seen += 1;
            }
        }
        Reader::Sqlx => {
            let mut stream = sqlx::query_as::<_, (i64, String)>(SQL)
                .bind(n)
                .fetch(&handles.sqlx);
            while let Some(row) = stream.try_next().await? {
                std::hint::black_box(row);
                seen += 1;
            }
        }
        Reader::TokioPostgres => {
            let stream = handles.client.query_raw(&handles.statement, [n]).await?;
            let mut stream = pin!(stream);
            while let Some(row) = stream.try_next().await? {
                let row: (i64, String) = (row.try_get(0)?, row.try_get(1)?);
                std::hint::black_box(row);
                seen += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    let (allocations, _, peak) = counting.stop_with_peak();
    if seen != rows {
        return Err(format!("{reader:?} read {seen} rows of {rows}").into());
    }
    Ok(Read {
        rate: rows as f64 / elapsed.as_secs_f64(),
        allocations_per_row: allocations as f64 / rows as f64,
        peak_bytes: peak as f64,
    })
}

/// Reads a `COPY .. TO STDOUT` of `rows` rows with coredb (`true`) or tokio-postgres.
async fn read_copy(handles: &Handles, coredb: bool, rows: u64) -> Result<Read> {
    let sql = format!(
        "COPY (SELECT n, repeat('x', 100) || n FROM generate_series(1, {rows}) AS n) TO STDOUT"
    );
    let counting = alloc_counter::start();
    let started = Instant::now();
    let mut bytes = 0usize;
    if coredb {
        let mut data = handles.coredb.copy_out(&sql).await?;
        while let Some(chunk) = data.try_next().await? {
            bytes += chunk.len();
        }
    } else {
        let data = handles.client.copy_out(sql.as_str()).await?;
        let mut data = pin!(data);
        while let Some(chunk) = data.try_next().await? {
            bytes += chunk.len();
        }
    }
    let elapsed = started.elapsed();
    let (allocations, _, peak) = counting.stop_with_peak();
    std::hint::black_box(bytes);
    Ok(Read {
        rate: rows as f64 / elapsed.as_secs_f64(),
        allocations_per_row: allocations as f64 / rows as f64,
        peak_bytes: peak as f64,
    })
}

/// Runs the scenario: rate, allocations and peak memory of streaming; then COPY OUT.
pub async fn run(budget: &Budget, target: &Target) -> Result<Vec<Table>> {
    let rows = budget.stream_rows;
    let (client, connection) = target.pg_config().connect(NoTls).await?;
    tokio::spawn(connection);
    let statement = client.prepare(SQL).await?;
    let handles = Handles {
        coredb: target.coredb(1)?,
        sqlx: sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(target.sqlx_options()),
        client,
        statement,
    };
    let readers = [Reader::Coredb, Reader::Sqlx, Reader::TokioPostgres];
    let contenders: Vec<(usize, Reader)> = readers.iter().copied().enumerate().collect();
    // Warm-up: connections opened, statements prepared.
    for &reader in &readers {
        read_rows(&handles, reader, 1_000).await?;
    }
    read_copy(&handles, true, 1_000).await?;
    read_copy(&handles, false, 1_000).await?;

    let mut rate = vec![Samples::default(); 3];
    let mut allocations = vec![Samples::default(); 3];
    let mut peak = vec![Samples::default(); 3];
    let mut copy_rate = vec![Samples::default(); 2];
    let mut copy_peak = vec![Samples::default(); 2];
    for rep in 0..budget.reps {
        eprintln!(
            "S7 streaming {rows} rows: repetition {}/{}",
            rep + 1,
            budget.reps
        );
        for (index, reader) in rotated(&contenders, rep) {
            let read = read_rows(&handles, reader, rows).await?;
            rate[index].push(read.rate);
            allocations[index].push(read.allocations_per_row);
            peak[index].push(read.peak_bytes / 1024.0);
        }
        for (index, coredb) in rotated(&[(0, true), (1, false)], rep) {
            let read = read_copy(&handles, coredb, rows).await?;
            copy_rate[index].push(read.rate);
            copy_peak[index].push(read.peak_bytes / 1024.0);
        }
    }
    handles.coredb.close().await;
    handles.sqlx.close().await;

    let columns: Vec<String> = [
        "coredb `stream`",
        "sqlx `fetch`",
        "tokio-postgres `query_raw`",
    ]
    .map(String::from)
    .to_vec();
    let cells = |samples: Vec<Samples>| samples.into_iter().map(Some).collect::<Vec<_>>();
    let mut rate_row = Row::new(format!("{rows} rows of about 110 bytes"), cells(rate));
    let best = [1, 2]
        .into_iter()
        .filter_map(|j| Some((j, rate_row.median(j)?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((j, _)) = best {
        let name = columns[j].clone();
        let ratio = rate_row.ratio(0, j);
        rate_row
            .goals
            .push(Goal::new(format!("coredb/best ({name})"), ratio, 1.0));
    }
    let description = format!(
        "One task reads `{SQL}` with $1 = {rows}, each row decoded into `(i64, String)`, on \
         one connection kept open between repetitions (statements prepared in a warm-up). \
         Allocations and the peak of heap bytes held at once are counted by the harness's \
         allocator over the whole read, every thread included."
    );
    let streaming = Table {
        title: "S7. A big result read as it arrives: rate".into(),
        description: description.clone(),
        unit: "rows/s".into(),
        higher_is_better: true,
        columns: columns.clone(),
        rows: vec![rate_row],
        notes: Vec::new(),
    };
    let memory = Table {
        title: "S7. A big result read as it arrives: memory".into(),
        description,
        unit: "KiB held at the peak; allocations per row".into(),
        higher_is_better: false,
        columns,
        rows: vec![
            Row::new("peak heap held (KiB)", cells(peak)),
            Row::new("allocations per row", cells(allocations)),
        ],
        notes: vec![format!(
            "Flat means independent of the row count: the whole result is about {} KiB.",
            rows * 110 / 1024
        )],
    };
    let mut copy_row = Row::new(format!("{rows} rows, text format"), cells(copy_rate));
    copy_row.goals.push(Goal::new(
        "coredb/tokio-postgres",
        copy_row.ratio(0, 1),
        1.0,
    ));
    let copy = Table {
        title: "S7. COPY .. TO STDOUT read as it arrives".into(),
        description: format!(
            "`COPY (SELECT n, repeat('x', 100) || n FROM generate_series(1, {rows}) AS n) TO \
             STDOUT`, every chunk read: coredb `db.copy_out` (a pooled connection of its own) \
             beside tokio-postgres `client.copy_out`."
        ),
        unit: "rows/s".into(),
        higher_is_better: true,
        columns: vec![
            "coredb `copy_out`".into(),
            "tokio-postgres `copy_out`".into(),
        ],
        rows: vec![copy_row, Row::new("peak heap held (KiB)", cells(copy_peak))],
        notes: Vec::new(),
    };
    Ok(vec![streaming, memory, copy])
}
