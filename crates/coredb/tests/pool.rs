//! The pool's lifecycle against a real server: sizes, overflow, timeouts, fairness, recycling,
//! pre-ping, cancelled futures, close.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coredb::{Connection, DatabaseManager, ErrorKind, Executor};
use coredb_testkit::TestDatabase;

async fn pid(conn: &mut Connection) -> i32 {
    conn.scalar("SELECT pg_backend_pid()", ()).await.unwrap()
}

/// Polls `check` until it holds or two seconds pass.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

#[tokio::test]
async fn pool_size_connections_are_kept_and_overflow_is_closed_on_return() {
    let db = TestDatabase::with_config(|b| b.pool_size(2).max_overflow(3))
        .await
        .unwrap();
    let m = db.manager();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(m.get_connection().await.unwrap());
    }
    let s = m.status();
    assert_eq!((s.size, s.in_use, s.idle, s.max), (5, 5, 0, 5));
    drop(held);
    let s = m.status();
    assert_eq!((s.size, s.in_use, s.idle), (2, 0, 2));
    assert_eq!(m.metrics().closed_overflow, 3);
    assert_eq!(m.metrics().created, 5);
}

#[tokio::test]
async fn checkout_beyond_the_maximum_times_out_with_sizes_in_the_message() {
    let db = TestDatabase::with_config(|b| {
        b.pool_size(1)
            .max_overflow(0)
            .pool_timeout(Duration::from_millis(200))
    })
    .await
    .unwrap();
    let m = db.manager();
    let _held = m.get_connection().await.unwrap();
    let err = m.get_connection().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolTimeout);
    assert!(err.is_transient());
    let msg = err.to_string();
    assert!(msg.contains("pool_size 1, max_overflow 0"), "{msg}");
    assert!(msg.contains("within 2"), "names the wait: {msg}");
    assert_eq!(m.metrics().timeouts, 1);
    assert_eq!(m.status().waiting, 0);
}

#[tokio::test]
async fn waiters_are_served_first_come_first_served() {
    let db = TestDatabase::with_config(|b| b.pool_size(1).max_overflow(0))
        .await
        .unwrap();
    let m = db.manager().clone();
    let held = m.get_connection().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (m2, order) = (m.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let conn = m2.get_connection().await.unwrap();
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(conn);
        }));
        // Each waiter queues before the next one arrives.
        assert!(eventually(|| m.status().waiting == i + 1).await);
    }
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn connections_past_recycle_age_are_replaced_at_checkout_not_in_use() {
    let db = TestDatabase::with_config(|b| b.pool_recycle(Some(Duration::from_millis(300))))
        .await
        .unwrap();
    let m = db.manager();
    let mut conn = m.get_connection().await.unwrap();
    let first = pid(&mut conn).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(pid(&mut conn).await, first, "never replaced while in use");
    drop(conn);
    let mut conn = m.get_connection().await.unwrap();
    assert_ne!(pid(&mut conn).await, first);
    assert_eq!(m.metrics().closed_recycled, 1);
}

async fn terminate_idle(db: &TestDatabase, pids: &[i32]) {
    let admin = DatabaseManager::from_config(db.config()).unwrap();
    for p in pids {
        let done: bool = admin
            .scalar("SELECT pg_terminate_backend($1, 5000)", (p,))
            .await
            .unwrap();
        assert!(done);
    }
    admin.close().await;
}

#[tokio::test]
async fn idle_connections_killed_by_the_server_never_reach_the_caller() {
    let db = TestDatabase::with_config(|b| b.pool_size(4)).await.unwrap();
    let m = db.manager();
    let mut held = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..4 {
        let mut c = m.get_connection().await.unwrap();
        pids.push(pid(&mut c).await);
        held.push(c);
    }
    drop(held);
    terminate_idle(&db, &pids).await;
    for _ in 0..200 {
        let mut c = m.get_connection().await.unwrap();
        let _: i32 = c.scalar("SELECT 1", ()).await.unwrap();
    }
    for _ in 0..50 {
        let mut s = m.session().await.unwrap();
        s.execute("SELECT 1", ()).await.unwrap();
        s.commit().await.unwrap();
    }
    assert!(m.metrics().closed_broken >= 1);
}

#[tokio::test]
async fn pre_ping_skips_busy_connections_and_checks_idle_ones() {
    let db = TestDatabase::with_config(|b| b.pre_ping_idle(Duration::from_millis(300)))
        .await
        .unwrap();
    let m = db.manager();
    for _ in 0..100 {
        let mut c = m.get_connection().await.unwrap();
        let _: i32 = c.scalar("SELECT 1", ()).await.unwrap();
    }
    assert_eq!(
        m.metrics().pings,
        0,
        "no round trip added under steady load"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut c = m.get_connection().await.unwrap();
    let _: i32 = c.scalar("SELECT 1", ()).await.unwrap();
    assert_eq!(m.metrics().pings, 1);
}

#[tokio::test]
async fn idle_connection_killed_is_caught_by_pre_ping() {
    let db = TestDatabase::with_config(|b| b.pool_size(1).pre_ping_idle(Duration::ZERO))
        .await
        .unwrap();
    let m = db.manager();
    let mut c = m.get_connection().await.unwrap();
    let first = pid(&mut c).await;
    drop(c);
    terminate_idle(&db, &[first]).await;
    let mut c = m.get_connection().await.unwrap();
    assert_ne!(pid(&mut c).await, first);
}

#[tokio::test]
async fn connection_dropped_inside_a_transaction_is_rolled_back_before_reuse() {
    let db = TestDatabase::with_config(|b| b.pool_size(1).max_overflow(0))
        .await
        .unwrap();
    let m = db.manager();
    m.execute("CREATE TABLE t (x int)", ()).await.unwrap();
    let mut s = m.session().await.unwrap();
    s.execute("INSERT INTO t VALUES (1)", ()).await.unwrap();
    let session_pid: i32 = s.scalar("SELECT pg_backend_pid()", ()).await.unwrap();
    drop(s);
    let mut c = m.get_connection().await.unwrap();
    assert_eq!(
        pid(&mut c).await,
        session_pid,
        "the same connection is reused"
    );
    let in_tx: Option<i64> = c
        .scalar("SELECT txid_current_if_assigned()::text::int8", ())
        .await
        .unwrap();
    assert_eq!(in_tx, None, "no transaction is open on it");
    let n: i64 = c.scalar("SELECT count(*) FROM t", ()).await.unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn connection_dropped_mid_query_is_discarded_and_its_query_cancelled() {
    let db = TestDatabase::with_config(|b| b.pool_size(1).max_overflow(0))
        .await
        .unwrap();
    let m = db.manager();
    let mut c = m.get_connection().await.unwrap();
    let sleeper = pid(&mut c).await;
    let abandoned = tokio::time::timeout(
        Duration::from_millis(200),
        c.execute("SELECT pg_sleep(30)", ()),
    )
    .await;
    assert!(abandoned.is_err(), "the query was cut short");
    drop(c);
    let s = m.status();
    assert_eq!((s.size, s.in_use), (0, 0));
    assert_eq!(m.metrics().closed_discarded, 1);
    let mut c = m.get_connection().await.unwrap();
    assert_ne!(pid(&mut c).await, sleeper);
    let mut still_sleeping = true;
    for _ in 0..100 {
        let n: i64 = c
            .scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                (sleeper,),
            )
            .await
            .unwrap();
        still_sleeping = n > 0;
        if !still_sleeping {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !still_sleeping,
        "the abandoned statement was stopped on the server"
    );
}

#[tokio::test]
async fn cancelled_checkouts_and_queries_never_leak_a_slot() {
    let db = TestDatabase::with_config(|b| b.pool_size(2).max_overflow(1))
        .await
        .unwrap();
    let m = db.manager().clone();
    let mut tasks = Vec::new();
    for i in 0..60u64 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let deadline = Duration::from_millis(1 + (i * 7) % 40);
            let _ = tokio::time::timeout(deadline, async {
                let mut s = m.session().await?;
                s.execute("SELECT pg_sleep(0.005)", ()).await?;
                s.commit().await
            })
            .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        eventually(|| m.status().in_use == 0).await,
        "{:?}",
        m.status()
    );
    let s = m.status();
    assert_eq!(s.waiting, 0);
    assert!(s.size <= 3);
    let a = m.get_connection().await.unwrap();
    let b = m.get_connection().await.unwrap();
    let c = m.get_connection().await.unwrap();
    drop((a, b, c));
    let idle_in_tx: i64 = m
        .scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(idle_in_tx, 0);
}

#[tokio::test]
async fn close_refuses_new_checkouts_and_waits_for_checked_out_connections() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager().clone();
    let held = m.get_connection().await.unwrap();
    let idle = m.get_connection().await.unwrap();
    drop(idle);
    let closer = tokio::spawn({
        let m = m.clone();
        async move { m.close().await }
    });
    assert!(eventually(|| m.is_closed()).await);
    let err = m.get_connection().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolClosed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !closer.is_finished(),
        "close waits for the checked-out connection"
    );
    drop(held);
    assert!(closer.await.unwrap(), "every connection came back");
    let s = m.status();
    assert_eq!((s.size, s.in_use, s.idle), (0, 0, 0));
    assert_eq!(m.metrics().closed_pool_closed, 2);
}

#[tokio::test]
async fn close_gives_up_waiting_after_its_bound() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let _held = m.get_connection().await.unwrap();
    assert!(!m.close_within(Duration::from_millis(100)).await);
}

#[tokio::test]
async fn counters_record_checkouts_and_waiting_time() {
    let db = TestDatabase::with_config(|b| b.pool_size(1).max_overflow(0))
        .await
        .unwrap();
    let m = db.manager().clone();
    let held = m.get_connection().await.unwrap();
    let waiter = tokio::spawn({
        let m = m.clone();
        async move { drop(m.get_connection().await.unwrap()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(held);
    waiter.await.unwrap();
    let metrics = m.metrics();
    assert_eq!(metrics.checkouts, 2);
    assert_eq!(metrics.created, 1);
    assert!(
        metrics.total_wait >= Duration::from_millis(50),
        "{metrics:?}"
    );
}

#[tokio::test]
async fn connection_left_in_a_transaction_by_hand_comes_back_clean() {
    let db = TestDatabase::with_config(|b| b.pool_size(1).max_overflow(0))
        .await
        .unwrap();
    let m = db.manager();
    let mut c = m.get_connection().await.unwrap();
    let first = pid(&mut c).await;
    c.execute("BEGIN", ()).await.unwrap();
    c.execute("SET search_path = nowhere", ()).await.unwrap();
    drop(c);
    let mut c = m.get_connection().await.unwrap();
    // The same connection, reset (its prepared statements kept) rather than replaced...
    assert_eq!(pid(&mut c).await, first);
    assert_eq!(m.metrics().closed(), 0);
    // ...with neither the setting nor the transaction left: in autocommit each statement has
    // a timestamp of its own, inside a leftover transaction they would share one.
    let path: String = c.scalar("SHOW search_path", ()).await.unwrap();
    assert_ne!(path, "nowhere");
    let a: chrono::DateTime<chrono::Utc> = c.scalar("SELECT now()", ()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b: chrono::DateTime<chrono::Utc> = c.scalar("SELECT now()", ()).await.unwrap();
    assert_ne!(a, b, "no transaction is open");
}
