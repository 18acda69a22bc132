//! Transactions retried on transient errors: run again until committed once, or give up.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coredb::{Error, ErrorKind, Executor, IsolationLevel, RetryPolicy, SessionOptions, SqlState};
use coredb_testkit::TestDatabase;

#[tokio::test]
async fn serialization_failure_is_retried_and_each_transaction_commits_once() {
    let db = TestDatabase::new().await.unwrap();
    db.manager()
        .execute("CREATE TABLE t (v int8)", ())
        .await
        .unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (m, attempts, barrier) = (db.manager().clone(), attempts.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
            m.transaction_with_retry(
                SessionOptions::isolation(IsolationLevel::Serializable),
                &RetryPolicy::default(),
                async |s| {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    let sum: i64 = s
                        .scalar("SELECT coalesce(sum(v), 0)::int8 FROM t", ())
                        .await?;
                    if first.swap(false, Ordering::SeqCst) {
                        // Both read before either writes: a write skew the server must stop.
                        barrier.wait().await;
                    }
                    s.execute("INSERT INTO t VALUES ($1)", (sum + 1,)).await?;
                    Ok::<_, Error>(())
                },
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let values: Vec<(i64,)> = db
        .manager()
        .fetch_all("SELECT v FROM t ORDER BY v", ())
        .await
        .unwrap();
    assert_eq!(
        values,
        vec![(1,), (2,)],
        "the retried transaction saw the other's row"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn non_transient_error_is_returned_at_once() {
    let db = TestDatabase::new().await.unwrap();
    let attempts = AtomicU32::new(0);
    let err = db
        .manager()
        .transaction_with_retry(
            SessionOptions::default(),
            &RetryPolicy::default(),
            async |s| {
                attempts.fetch_add(1, Ordering::SeqCst);
                s.execute("SELECT * FROM no_such_table", ()).await
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn retries_stop_after_max_attempts_with_the_last_error() {
    let db = TestDatabase::new().await.unwrap();
    let attempts = AtomicU32::new(0);
    let policy = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        ..RetryPolicy::default()
    };
    let err = db
        .manager()
        .transaction_with_retry(SessionOptions::default(), &policy, async |s| {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            // Raised by the server, as a deadlock would be.
            let sql = format!(
                "DO $$ BEGIN RAISE EXCEPTION 'attempt {n}' USING ERRCODE = '40P01'; END $$"
            );
            s.execute(&sql, ()).await
        })
        .await
        .unwrap_err();
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(err.kind(), ErrorKind::Query);
    assert_eq!(err.code(), Some(&SqlState::T_R_DEADLOCK_DETECTED));
    assert!(err.to_string().contains("attempt 2"), "{err}");
}
