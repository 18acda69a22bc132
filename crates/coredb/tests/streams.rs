//! Rows as a stream: decoded as they arrive in bounded memory, on the manager and on every
//! executor; a stream dropped half-way leaves no query running and nothing unread in the pool.

mod support;

use std::time::{Duration, Instant};

use coredb::{params, ErrorKind, Executor, FromRow};
use coredb_testkit::TestDatabase;
use futures_util::{StreamExt as _, TryStreamExt as _};

/// The tests run one at a time: the memory test reads the whole process's resident memory.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, FromRow)]
struct Reading {
    n: i64,
    label: String,
}

/// The process's resident memory, in bytes (Linux).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// What the memory bound is for: a million rows of about 110 bytes each are ~110 MB of data,
/// and several times that as rows or structs held at once.
const ROWS: i64 = 1_000_000;
const RESIDENT_GROWTH_LIMIT: u64 = 32 * 1024 * 1024;

#[tokio::test]
async fn a_million_rows_stream_into_structs_with_resident_memory_bounded() {
    let _serial = SERIAL.lock().await;
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let before = resident_bytes();
    let mut peak = before;
    let mut rows = m
        .stream::<Reading, _>(
            "SELECT n, repeat('x', 100) || n AS label FROM generate_series(1, :rows::int8) AS n",
            params! { "rows" => ROWS },
        )
        .await
        .unwrap();
    let (mut count, mut sum) = (0i64, 0i64);
    while let Some(reading) = rows.try_next().await.unwrap() {
        count += 1;
        sum += reading.n;
        assert!(reading.label.ends_with(&reading.n.to_string()));
        if count % 50_000 == 0 {
            peak = peak.max(resident_bytes());
        }
    }
    drop(rows);
    assert_eq!(count, ROWS);
    assert_eq!(sum, ROWS * (ROWS + 1) / 2);
    let growth = peak.saturating_sub(before);
    eprintln!(
        "resident memory growth while streaming {ROWS} rows: {} KiB",
        growth / 1024
    );
    assert!(
        growth < RESIDENT_GROWTH_LIMIT,
        "resident memory grew by {} MiB while streaming",
        growth / (1024 * 1024)
    );
    assert_eq!(m.status().in_use, 0, "the stream's connection went back");
    assert_eq!(m.metrics().closed(), 0, "read to the end, it was reused");
    m.close().await;
}

/// Statements still running whose text contains `marker`, seen from another connection.
async fn running(db: &coredb::DatabaseManager, marker: &str) -> i64 {
    db.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
        (marker,),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_manager_stream_dropped_after_ten_rows_leaves_no_running_query_and_a_healthy_pool() {
    let _serial = SERIAL.lock().await;
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    // In the select list, the function yields rows one by one (in FROM it would first
    // gather them all).
    let sql = "SELECT generate_series(1, 1000000000) /* endless-stream */ AS n";
    let mut rows = m.stream::<(i32,), _>(sql, ()).await.unwrap();
    let first: Vec<(i32,)> = (&mut rows).take(10).try_collect().await.unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(
        running(m, "endless-stream").await,
        1,
        "still running while held"
    );
    drop(rows);

    let deadline = Instant::now() + Duration::from_secs(10);
    while running(m, "endless-stream").await > 0 {
        assert!(
            Instant::now() < deadline,
            "the query still runs after the drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = m.status();
    assert_eq!(status.in_use, 0);
    assert_eq!(
        m.metrics().closed_discarded,
        1,
        "closed, never pooled with unread rows"
    );
    let n: i32 = m.scalar("SELECT 7", ()).await.unwrap();
    assert_eq!(n, 7);
    assert!(m.health_check().await);
    m.close().await;
}

#[tokio::test]
async fn a_session_stream_dropped_half_way_leaves_the_session_usable() {
    let _serial = SERIAL.lock().await;
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    m.execute("CREATE TABLE kept (x int)", ()).await.unwrap();

    let mut s = m.session().await.unwrap();
    s.execute("INSERT INTO kept VALUES (1)", ()).await.unwrap();
    {
        let mut rows = s
            .stream::<(i32,), _>("SELECT n FROM generate_series(1, 100000) AS n", ())
            .await
            .unwrap();
        for expected in 1..=10 {
            assert_eq!(rows.try_next().await.unwrap(), Some((expected,)));
        }
    }
    // The rest of the reply is discarded before the next statement's answer.
    let n: i64 = s.scalar("SELECT count(*) FROM kept", ()).await.unwrap();
    assert_eq!(n, 1);
    s.execute("INSERT INTO kept VALUES (2)", ()).await.unwrap();
    s.commit().await.unwrap();
    let n: i64 = m.scalar("SELECT count(*) FROM kept", ()).await.unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        m.metrics().closed(),
        0,
        "the session's connection was reused"
    );
    m.close().await;
}

#[tokio::test]
async fn a_statement_failing_mid_stream_aborts_the_session_and_nothing_is_committed() {
    let _serial = SERIAL.lock().await;
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    m.execute("CREATE TABLE lost (x int)", ()).await.unwrap();

    let mut s = m.session().await.unwrap();
    s.execute("INSERT INTO lost VALUES (1)", ()).await.unwrap();
    let results: Vec<coredb::Result<(i32,)>> = s
        .stream::<(i32,), _>("SELECT 10 / (5 - n) FROM generate_series(1, 10) AS n", ())
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(results.len(), 5, "four rows, then the error: {results:?}");
    let err = results[4].as_ref().unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22012");
    assert!(s.is_aborted());
    let err = s.commit().await.unwrap_err();
    assert!(err.to_string().contains("division by zero"), "{err}");
    let n: i64 = m.scalar("SELECT count(*) FROM lost", ()).await.unwrap();
    assert_eq!(n, 0);
    m.close().await;
}

#[tokio::test]
async fn connections_and_savepoints_stream_with_named_parameters() {
    let _serial = SERIAL.lock().await;
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();

    let mut conn = m.get_connection().await.unwrap();
    let squares: Vec<(i64,)> = conn
        .stream::<(i64,), _>(
            "SELECT n * n FROM generate_series(1, :upto::int8) AS n",
            params! { "upto" => 4i64 },
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(squares, [(1,), (4,), (9,), (16,)]);
    drop(conn);

    let mut s = m.session().await.unwrap();
    let mut sp = s.begin_nested().await.unwrap();
    let words: Vec<(String,)> = sp
        .stream::<(String,), _>("SELECT unnest($1::text[])", (vec!["a", "b"],))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(words, [("a".to_owned(),), ("b".to_owned(),)]);
    sp.commit().await.unwrap();
    s.commit().await.unwrap();

    let err = m
        .stream::<(i32,), _>("SELECT :missing::int", ())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Params);
    assert_eq!(
        m.status().in_use,
        0,
        "no connection taken for a parameter error"
    );
    let wrong: Vec<coredb::Result<(String,)>> = m
        .stream::<(String,), _>("SELECT 1::int", ())
        .await
        .unwrap()
        .collect()
        .await;
    let err = wrong[0].as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
    m.close().await;
}

#[tokio::test]
async fn copy_out_then_copy_in_of_a_hundred_thousand_rows_round_trips_equal() {
    let _serial = SERIAL.lock().await;
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    m.execute(
        "CREATE TABLE source AS SELECT n, 'label ' || n AS label, n * 0.5 AS half, \
         CASE WHEN n % 7 = 0 THEN NULL ELSE now() END AS at FROM generate_series(1, 100000) AS n",
        (),
    )
    .await
    .unwrap();
    m.execute("CREATE TABLE target (LIKE source)", ())
        .await
        .unwrap();

    for format in ["csv", "binary"] {
        m.execute("TRUNCATE target", ()).await.unwrap();
        let data = m
            .copy_out(&format!("COPY source TO STDOUT WITH (FORMAT {format})"))
            .await
            .unwrap();
        let copied = m
            .copy_in_bytes(
                &format!("COPY target FROM STDIN WITH (FORMAT {format})"),
                data,
            )
            .await
            .unwrap();
        assert_eq!(copied, 100_000, "{format}");
        let differing: i64 = m
            .scalar(
                "SELECT count(*) FROM ((TABLE source EXCEPT ALL TABLE target) \
                 UNION ALL (TABLE target EXCEPT ALL TABLE source)) AS d",
                (),
            )
            .await
            .unwrap();
        assert_eq!(differing, 0, "{format}");
    }

    let err = m.copy_out("SELECT 1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Params);
    let err = m
        .stream::<(i32,), _>("COPY source TO STDOUT", ())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("copy_out"), "{err}");
    m.close().await;
}

/// CSV lines `1..=rows` of `(n, label)`; the stream fails instead of giving line `fail_at`.
fn lines(
    rows: i64,
    fail_at: Option<i64>,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    futures_util::stream::iter(1..=rows).map(move |n| {
        if Some(n) == fail_at {
            Err(std::io::Error::other("the upload was cut"))
        } else {
            Ok(bytes::Bytes::from(format!("{n},row {n}\n")))
        }
    })
}

#[tokio::test]
async fn a_copy_failing_at_row_fifty_thousand_keeps_nothing_and_the_connection_goes_on() {
    let _serial = SERIAL.lock().await;
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    m.execute("CREATE TABLE uploads (n int8 PRIMARY KEY, label text)", ())
        .await
        .unwrap();
    let copy = "COPY uploads (n, label) FROM STDIN WITH (FORMAT csv)";
    let count = async || -> i64 { m.scalar("SELECT count(*) FROM uploads", ()).await.unwrap() };

    // The caller's data fails: autocommit, on a connection kept for the next statement.
    let mut conn = m.get_connection().await.unwrap();
    let err = conn
        .copy_in_bytes(copy, lines(100_000, Some(50_000)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Params);
    assert_eq!(err.code().unwrap().code(), "57014");
    assert!(err.to_string().contains("the upload was cut"), "{err}");
    let n: i32 = conn.scalar("SELECT 41 + 1", ()).await.unwrap();
    assert_eq!(n, 42, "the connection serves the next statement");
    drop(conn);
    assert_eq!(count().await, 0);

    // The server refuses row 50,000: nothing of the COPY is kept either.
    let bad = futures_util::stream::iter(1..=100_000i64).map(|n| {
        let line = if n == 50_000 {
            "oops,bad\n".to_owned()
        } else {
            format!("{n},row {n}\n")
        };
        Ok::<_, std::io::Error>(bytes::Bytes::from(line))
    });
    let err = m.copy_in_bytes(copy, bad).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22P02", "{err}");
    assert_eq!(count().await, 0);

    // In a session the failure aborts the transaction: nothing is committed.
    let mut s = m.session().await.unwrap();
    s.execute("INSERT INTO uploads VALUES (0, 'before')", ())
        .await
        .unwrap();
    s.copy_in_bytes(copy, lines(100_000, Some(50_000)))
        .await
        .unwrap_err();
    assert!(s.is_aborted());
    assert!(s.commit().await.is_err());
    assert_eq!(count().await, 0);

    // And a whole one goes in.
    let copied = m.copy_in_bytes(copy, lines(100_000, None)).await.unwrap();
    assert_eq!(copied, 100_000);
    assert_eq!(count().await, 100_000);
    m.close().await;
}

#[derive(Debug, FromRow, serde::Serialize)]
struct Exported {
    n: i64,
    label: String,
}

#[tokio::test]
async fn an_axum_route_streams_a_hundred_thousand_rows_as_json_lines_in_bounded_memory() {
    use axum::extract::State;
    use axum::routing::get;
    use coredb::axum::{CopyBody, JsonLines};
    use coredb::{DatabaseManager, RowStream};
    use http_body_util::BodyExt as _;

    let _serial = SERIAL.lock().await;
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager().clone();

    async fn export(
        State(db): State<DatabaseManager>,
    ) -> Result<JsonLines<RowStream<'static, Exported>>, coredb::Error> {
        let sql =
            "SELECT n, repeat('x', 100) || n AS label FROM generate_series(1, 100000::int8) AS n";
        Ok(JsonLines(db.stream(sql, ()).await?))
    }
    async fn csv(State(db): State<DatabaseManager>) -> Result<CopyBody, coredb::Error> {
        let sql =
            "COPY (SELECT n FROM generate_series(1, 3) AS n) TO STDOUT WITH (FORMAT csv, HEADER)";
        Ok(CopyBody::csv(db.copy_out(sql).await?))
    }
    let app = axum::Router::new()
        .route("/export", get(export))
        .route("/export.csv", get(csv))
        .with_state(m.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let get = async |path: &str| {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = axum::http::Request::get(path)
            .header("host", addr.to_string())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap()
    };

    let before = resident_bytes();
    let mut peak = before;
    let response = get("/export").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = response.into_body();
    let (mut lines, mut pending, mut last) = (0u64, Vec::new(), String::new());
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            lines += 1;
            if lines % 10_000 == 0 {
                peak = peak.max(resident_bytes());
            }
            last = String::from_utf8(line).unwrap();
        }
    }
    assert_eq!(lines, 100_000);
    let last: serde_json::Value = serde_json::from_str(last.trim_end()).unwrap();
    assert_eq!(last["n"], 100_000);
    let growth = peak.saturating_sub(before);
    eprintln!(
        "resident memory growth while serving 100000 rows as JSON lines: {} KiB",
        growth / 1024
    );
    assert!(
        growth < RESIDENT_GROWTH_LIMIT,
        "resident memory grew by {} MiB while serving",
        growth / (1024 * 1024)
    );

    let response = get("/export.csv").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let csv = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&csv[..], b"n\n1\n2\n3\n");

    server.abort();
    m.close().await;
}

#[tokio::test]
async fn a_session_cursor_fetches_one_batch_per_round_trip() {
    let _serial = SERIAL.lock().await;
    let spans = support::span_capture::Spans::default();
    let _subscriber = support::span_capture::set_default(spans.subscriber());
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let fetches = || {
        spans
            .named("statement")
            .iter()
            .filter(|s| s.field("db.operation.name") == Some("FETCH"))
            .count()
    };

    let mut s = m.session().await.unwrap();
    let all: Vec<(i64,)> = s
        .cursor::<(i64,), _>(
            "SELECT n FROM generate_series(1, :upto::int8) AS n",
            params! { "upto" => 10_000i64 },
            1_000,
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 10_000);
    assert_eq!(all.last(), Some(&(10_000,)));
    assert_eq!(fetches(), 11, "ten full batches, then an empty one");

    // Dropped half-way: nothing is in flight, the session goes on.
    {
        let mut rows = s
            .cursor::<(i64,), _>(
                "SELECT n FROM generate_series(1, 100000::int8) AS n",
                (),
                100,
            )
            .await
            .unwrap();
        for expected in 1..=150 {
            assert_eq!(rows.try_next().await.unwrap(), Some((expected,)));
        }
    }
    assert_eq!(fetches(), 13, "two batches for 150 rows");
    let one: i32 = s.scalar("SELECT 1", ()).await.unwrap();
    assert_eq!(one, 1);
    let err = s
        .cursor::<(i64,), _>("SELECT 1::int8", (), 0)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Params);
    s.commit().await.unwrap();
    m.close().await;
}

#[derive(Debug, Clone, PartialEq, FromRow)]
struct Measurement {
    id: i64,
    sensor: String,
    value: Option<f64>,
    taken_at: chrono::DateTime<chrono::Utc>,
}

#[tokio::test]
async fn copy_out_then_copy_in_of_a_hundred_thousand_structs_round_trips_equal() {
    let _serial = SERIAL.lock().await;
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    m.execute(
        "CREATE TABLE measurements (id int8 PRIMARY KEY, sensor text NOT NULL, value float8, taken_at timestamptz NOT NULL)",
        (),
    )
    .await
    .unwrap();
    m.execute(
        "INSERT INTO measurements SELECT n, 'sensor-' || (n % 97), \
         CASE WHEN n % 10 = 0 THEN NULL ELSE n / 3.0 END, \
         timestamptz '2026-01-01' + n * interval '1 second' FROM generate_series(1, 100000) AS n",
        (),
    )
    .await
    .unwrap();
    m.execute(
        "CREATE TABLE copy_of_measurements (LIKE measurements INCLUDING ALL)",
        (),
    )
    .await
    .unwrap();

    let out: Vec<Measurement> = m
        .copy_out_rows::<Measurement>(
            "SELECT id, sensor, value, taken_at FROM measurements ORDER BY id",
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out.len(), 100_000);
    assert_eq!(out[9].value, None, "NULLs come through");
    assert_eq!(out[0].sensor, "sensor-1");

    let columns = ["id", "sensor", "value", "taken_at"];
    let mut s = m.session().await.unwrap();
    let copied = s
        .copy_in_rows(
            "copy_of_measurements",
            &columns,
            out.iter()
                .map(|r| vec![&r.id as coredb::SqlParam, &r.sensor, &r.value, &r.taken_at]),
        )
        .await
        .unwrap();
    assert_eq!(copied, 100_000);
    let back: Vec<Measurement> = s
        .copy_out_rows::<Measurement>("SELECT * FROM copy_of_measurements ORDER BY id")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(back, out);
    s.commit().await.unwrap();

    // A row the table refuses (a duplicate key at row 50,000): none of the COPY is kept.
    let mut again = out.clone();
    again[49_999].id = again[0].id + 1_000_000;
    again[50_000].id = again[0].id + 1_000_000;
    m.execute("TRUNCATE copy_of_measurements", ())
        .await
        .unwrap();
    let err = m
        .copy_in_rows(
            "copy_of_measurements",
            &columns,
            again
                .iter()
                .map(|r| vec![&r.id as coredb::SqlParam, &r.sensor, &r.value, &r.taken_at]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23505", "{err}");
    let left: i64 = m
        .scalar("SELECT count(*) FROM copy_of_measurements", ())
        .await
        .unwrap();
    assert_eq!(left, 0);
    let err = m
        .copy_in_rows(
            "copy_of_measurements",
            &columns,
            [vec![&1i64 as coredb::SqlParam]],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Params, "{err}");
    let err = m
        .copy_out_rows::<Measurement>("COPY measurements TO STDOUT")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Params);
    m.close().await;
}
