//! Autocommit statements on the manager share pipelined connections, safely.

use std::time::Duration;

use coredb::Executor as _;
use coredb_testkit::TestDatabase;

#[tokio::test]
async fn concurrent_autocommit_statements_share_few_connections_and_get_their_own_answers() {
    let db = TestDatabase::with_config(|b| b.pool_size(4)).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..64i64 {
        let m = db.manager().clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50i64 {
                let n = t * 1000 + i;
                let got: i64 = m.scalar("SELECT $1::int8", (n,)).await.unwrap();
                assert_eq!(got, n, "each statement gets its own answer");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let metrics = db.manager().metrics();
    assert!(
        metrics.created <= 2,
        "at most pool_size / 2 lanes: {metrics:?}"
    );
}

#[tokio::test]
async fn abandoned_autocommit_statement_is_cancelled_and_does_not_hold_up_later_ones() {
    let db = TestDatabase::with_config(|b| b.pool_size(2)).await.unwrap();
    let m = db.manager();
    let abandoned = tokio::time::timeout(
        Duration::from_millis(100),
        m.execute("SELECT pg_sleep(20)", ()),
    )
    .await;
    assert!(abandoned.is_err());
    let next = tokio::time::timeout(Duration::from_secs(10), m.scalar::<i32, _>("SELECT 1", ()))
        .await
        .expect("later statements are not queued behind the abandoned one")
        .unwrap();
    assert_eq!(next, 1);
    let mut sleeping = 1i64;
    for _ in 0..100 {
        sleeping = m
            .scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)' AND state = 'active'",
                (),
            )
            .await
            .unwrap();
        if sleeping == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sleeping, 0,
        "the abandoned statement was cancelled on the server"
    );
}

#[tokio::test]
async fn session_state_statements_take_a_connection_of_their_own() {
    let db = TestDatabase::with_config(|b| b.pool_size(2)).await.unwrap();
    let m = db.manager();
    let _: i32 = m.scalar("SELECT 1", ()).await.unwrap();
    m.execute("SET application_name = 'changed'", ())
        .await
        .unwrap();
    let name: String = m.scalar("SHOW application_name", ()).await.unwrap();
    assert_eq!(name, "coredb", "the shared connection was not changed");
}

#[tokio::test]
async fn pipelining_can_be_turned_off() {
    let db = TestDatabase::with_config(|b| b.pipeline_autocommit(false))
        .await
        .unwrap();
    let m = db.manager();
    for _ in 0..3 {
        let _: i32 = m.scalar("SELECT 1", ()).await.unwrap();
    }
    let s = m.status();
    assert_eq!(
        (s.in_use, s.idle),
        (0, 1),
        "each statement returned its connection"
    );
}

#[tokio::test]
async fn quiet_lane_goes_back_to_the_pool_so_sessions_can_use_it() {
    let db = TestDatabase::with_config(|b| b.pool_size(1).max_overflow(0))
        .await
        .unwrap();
    let m = db.manager();
    let _: i32 = m.scalar("SELECT 1", ()).await.unwrap();
    assert_eq!(m.status().in_use, 0);
    let mut s = m.session().await.unwrap();
    coredb::Executor::execute(&mut s, "SELECT 1", ())
        .await
        .unwrap();
    s.commit().await.unwrap();
}

/// Runs `each(m, n)` for 20 statements from each of 64 tasks at once; what they returned.
async fn from_64_tasks<F, Fut, T>(m: &coredb::DatabaseManager, each: F) -> Vec<T>
where
    F: Fn(coredb::DatabaseManager, i64) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    let mut tasks = Vec::new();
    for t in 0..64i64 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..20i64 {
                out.push(each(m.clone(), t * 1000 + i).await);
            }
            out
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn reads_sent_together_share_one_sync_and_each_gets_its_own_answer() {
    let db = TestDatabase::with_config(|b| b.pool_size(4)).await.unwrap();
    let seen = from_64_tasks(db.manager(), |m, n| async move {
        // The transaction's start: the same for statements under one Sync.
        let (got, started): (i64, chrono::DateTime<chrono::Utc>) = m
            .fetch_one("SELECT $1::int8, CURRENT_TIMESTAMP", (n,))
            .await
            .unwrap();
        assert_eq!(got, n, "each statement gets its own answer");
        started
    })
    .await;
    let transactions: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(seen.len(), 1280);
    assert!(
        transactions.len() * 2 < seen.len(),
        "{} statements ran in {} implicit transactions",
        seen.len(),
        transactions.len()
    );
}

#[tokio::test]
async fn a_read_that_fails_under_a_shared_sync_fails_alone_and_the_reads_it_skipped_run_again() {
    let db = TestDatabase::with_config(|b| b.pool_size(4)).await.unwrap();
    from_64_tasks(db.manager(), |m, n| async move {
        if n % 7 == 3 {
            let err = m
                .scalar::<i32, _>("SELECT 1 / $1::int", (0i32,))
                .await
                .unwrap_err();
            assert_eq!(
                err.code(),
                Some(&coredb::SqlState::DIVISION_BY_ZERO),
                "{err}"
            );
        } else {
            let got: i64 = m.scalar("SELECT $1::int8", (n,)).await.unwrap();
            assert_eq!(got, n, "each statement gets its own answer");
        }
    })
    .await;
    // The connections are as good as new.
    let got: i64 = db
        .manager()
        .scalar("SELECT 41::int8 + 1", ())
        .await
        .unwrap();
    assert_eq!(got, 42);
}

#[tokio::test]
async fn callers_sharing_a_lane_each_get_all_their_own_rows_of_large_answers() {
    let db = TestDatabase::with_config(|b| b.pool_size(4)).await.unwrap();
    let select = "SELECT g::int8 AS n, repeat('x', 60) || $2::text AS label \
                  FROM generate_series(1, $1) g";
    let counts = from_64_tasks(db.manager(), move |m, n| async move {
        // 1 to 3,000 rows, each answer many times the room it is read into.
        let rows = (n % 3000 + 1) as i32;
        let tag = n.to_string();
        let all: Vec<(i64, String)> = m.fetch_all(select, (rows, tag.as_str())).await.unwrap();
        assert_eq!(all.len(), rows as usize);
        assert!(
            all.iter()
                .enumerate()
                .all(|(i, (k, label))| *k == i as i64 + 1 && label.ends_with(&tag)),
            "each caller gets its own rows, in order"
        );
        let one: (i64, String) = m.fetch_one(select, (1, tag.as_str())).await.unwrap();
        assert!(one.0 == 1 && one.1.ends_with(&tag));
        let many = m.fetch_one::<(i64, String), _>(select, (rows.max(2), tag.as_str()));
        let err = many.await.unwrap_err();
        assert!(
            err.to_string().contains(&format!("got {}", rows.max(2))),
            "{err}"
        );
        let counted = m.execute(select, (rows, tag.as_str())).await.unwrap();
        assert_eq!(counted, rows as u64);
        counted
    })
    .await;
    assert_eq!(counts.len(), 1280);
}

#[tokio::test]
async fn statements_on_a_lane_whose_backend_ends_fail_on_their_own_and_later_ones_run() {
    let db = TestDatabase::with_config(|b| b.pool_size(4)).await.unwrap();
    let m = db.manager().clone();
    let mut admin = m.get_connection().await.unwrap();
    let admin_pid: i32 = admin.scalar("SELECT pg_backend_pid()", ()).await.unwrap();
    let killer = tokio::spawn(async move {
        // Ends every other backend of the database a few times while statements run.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> $1",
                    (admin_pid,),
                )
                .await
                .unwrap();
        }
    });
    let outcomes = tokio::time::timeout(
        Duration::from_secs(60),
        from_64_tasks(&m, |m, n| async move {
            let r: coredb::Result<i64> =
                m.scalar("SELECT $1::int8 FROM pg_sleep(0.002)", (n,)).await;
            match r {
                Ok(got) => {
                    assert_eq!(got, n, "each statement gets its own answer");
                    true
                }
                Err(err) => {
                    assert_eq!(err.kind(), coredb::ErrorKind::ConnectionLost, "{err}");
                    false
                }
            }
        }),
    )
    .await
    .expect("no caller waits for an answer that cannot come");
    killer.await.unwrap();
    assert_eq!(outcomes.len(), 1280);
    let failed = outcomes.iter().filter(|ok| !**ok).count();
    println!("RELIABILITY lane backends ended 5 times: {failed} of 1280 statements lost");
    assert!(failed < 640, "most statements ran: {failed} lost");
    // Nothing of the ended lanes is left: every statement now runs.
    let again = from_64_tasks(&m, |m, n| async move {
        m.scalar::<i64, _>("SELECT $1::int8 FROM pg_sleep(0.002)", (n,))
            .await
            .unwrap()
    })
    .await;
    assert_eq!(again.len(), 1280);
}

#[tokio::test]
async fn lanes_whose_statements_are_evicted_and_prepared_again_meanwhile_give_every_caller_its_answer(
) {
    // Four cached statements per connection for twelve texts: statements are evicted (and
    // closed on the server) and prepared again all the time, between and among the ones that
    // callers queue; writes, failing reads and reads that share a Sync are mixed.
    let db = TestDatabase::with_config(|b| b.pool_size(4).statement_cache_size(4))
        .await
        .unwrap();
    db.manager()
        .execute("CREATE TABLE hits (n int8)", ())
        .await
        .unwrap();
    let outcomes = from_64_tasks(db.manager(), |m, n| async move {
        let k = n % 12;
        match k {
            0 => {
                let added = m
                    .execute("INSERT INTO hits VALUES ($1)", (n,))
                    .await
                    .unwrap();
                assert_eq!(added, 1);
            }
            1 => {
                let err = m
                    .scalar::<i64, _>("SELECT $1::int8 / 0", (n,))
                    .await
                    .unwrap_err();
                assert_eq!(
                    err.code(),
                    Some(&coredb::SqlState::DIVISION_BY_ZERO),
                    "{err}"
                );
            }
            _ => {
                let sql = format!("SELECT $1::int8 + {k}");
                let got: i64 = m.scalar(&sql, (n,)).await.unwrap();
                assert_eq!(got, n + k, "each statement gets its own answer");
            }
        }
        k
    })
    .await;
    let inserts = outcomes.iter().filter(|k| **k == 0).count() as i64;
    let stored: i64 = db
        .manager()
        .scalar("SELECT count(*) FROM hits", ())
        .await
        .unwrap();
    assert_eq!(stored, inserts, "each INSERT applied once");
}
