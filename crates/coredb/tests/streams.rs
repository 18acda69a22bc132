//! Rows as a stream: decoded as they arrive in bounded memory, on the manager and on every
//! executor; a stream dropped half-way leaves no query running and nothing unread in the pool.

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
