//! A statement that may have run is never run again unless it provably writes nothing; the
//! pool spends its whole timeout on connection attempts.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coredb::{DatabaseConfig, DatabaseManager, ErrorKind, SqlState};
use coredb_testkit::TestDatabase;
use support::proxy::Proxy;

/// A manager for `db`'s database, reached through a proxy that can cut its connections.
async fn through_proxy(db: &TestDatabase) -> (Proxy, DatabaseManager) {
    let port = db.config().ports()[0];
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], port))).await;
    let config = db
        .config()
        .to_builder()
        .port(proxy.port())
        .pool_size(2)
        .build()
        .unwrap();
    (proxy, DatabaseManager::from_config(&config).unwrap())
}

#[tokio::test]
async fn a_select_that_writes_is_not_run_twice_after_a_cut_connection() {
    let db = TestDatabase::new().await.unwrap();
    db.manager()
        .execute("CREATE SEQUENCE tickets", ())
        .await
        .unwrap();
    let (proxy, m) = through_proxy(&db).await;
    // Warm the pool, so the statement below goes out at once.
    let _: i32 = m.scalar("SELECT 1", ()).await.unwrap();

    // The server has the statement (nextval runs at once, then it sleeps) when the connection
    // is cut: the reply is lost, and nextval has advanced.
    let statement = m.scalar::<i64, _>("SELECT nextval('tickets'), pg_sleep(1)", ());
    let cut = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        proxy.cut();
    };
    let (result, ()) = tokio::join!(statement, cut);

    // Its first keyword is SELECT, but running it again would take a second ticket: the retry
    // runs read-only, where nextval() is refused, so the caller hears of it instead.
    let err = result.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
        "{err}"
    );
    let (taken, called): (i64, bool) = db
        .manager()
        .fetch_one("SELECT last_value, is_called FROM tickets", ())
        .await
        .unwrap();
    assert_eq!((taken, called), (1, true), "nextval ran exactly once");
}

#[tokio::test]
async fn a_plain_read_is_retried_after_a_cut_connection_and_answers() {
    let db = TestDatabase::new().await.unwrap();
    let (proxy, m) = through_proxy(&db).await;
    let _: i32 = m.scalar("SELECT 1", ()).await.unwrap();
    let statement = m.scalar::<String, _>(
        "SELECT current_database()::text || (SELECT '' FROM pg_sleep(0.5))",
        (),
    );
    let cut = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        proxy.cut();
    };
    let (result, ()) = tokio::join!(statement, cut);
    assert_eq!(result.unwrap(), db.name());
}

#[tokio::test]
async fn connection_attempts_use_the_whole_pool_timeout() {
    // A port nothing listens on: every attempt is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let timeout = Duration::from_secs(2);
    let config = DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(port)
        .pool_timeout(timeout)
        .build()
        .unwrap();
    let m = DatabaseManager::from_config(&config).unwrap();
    let started = Instant::now();
    let err = m.get_connection().await.unwrap_err();
    let spent = started.elapsed();
    // The last attempt is made just before the deadline, not given up a backoff early.
    assert!(
        spent >= timeout - Duration::from_millis(100),
        "gave up after {spent:?} of {timeout:?}"
    );
    // The caller gets the cause, not a bare timeout.
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert!(err.to_string().contains("refused the connection"), "{err}");
}
