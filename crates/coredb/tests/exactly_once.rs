//! A statement that may have run is never run again unless it provably writes nothing; the
//! pool spends its whole timeout on connection attempts.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coredb::{DatabaseConfig, DatabaseManager, ErrorKind, Executor, SqlState};
use coredb_testkit::TestDatabase;
use support::proxy::{Mode, Proxy};

/// A manager for `db`'s database, reached through a proxy that can cut its connections.
async fn through_proxy(db: &TestDatabase) -> (Proxy, DatabaseManager) {
    through_proxy_with(db, |b| b.pool_size(2)).await
}

/// Like [`through_proxy`], with settings of the test's own.
async fn through_proxy_with(
    db: &TestDatabase,
    adjust: impl FnOnce(coredb::DatabaseConfigBuilder) -> coredb::DatabaseConfigBuilder,
) -> (Proxy, DatabaseManager) {
    let port = db.config().ports()[0];
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], port))).await;
    let config = adjust(db.config().to_builder().port(proxy.port()))
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

async fn transfers(db: &TestDatabase) -> i64 {
    db.manager()
        .scalar("SELECT count(*) FROM transfers", ())
        .await
        .unwrap()
}

async fn transfers_table(db: &TestDatabase) {
    db.manager()
        .execute("CREATE TABLE transfers (id int PRIMARY KEY)", ())
        .await
        .unwrap();
}

/// Makes COMMIT of a transaction that inserted into `transfers` take a second, as a commit
/// waiting for a synchronous standby does: the connection can be lost while it runs.
async fn slow_commits(db: &TestDatabase) {
    let m = db.manager();
    m.get_connection()
        .await
        .unwrap()
        .execute_script(
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$; \
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON transfers DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_commit_whose_reply_is_lost_is_resolved_by_asking_the_server() {
    let db = TestDatabase::new().await.unwrap();
    transfers_table(&db).await;
    slow_commits(&db).await;
    let (proxy, m) = through_proxy(&db).await;
    let mut session = m.session().await.unwrap();
    session
        .execute("INSERT INTO transfers VALUES (1)", ())
        .await
        .unwrap();

    // The connection is lost while the server runs COMMIT (which takes a second): the reply
    // never comes, but the server goes on and commits.
    let commit = tokio::spawn(session.commit());
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();

    // The caller is told the truth: it committed, so nothing must run it again.
    commit.await.unwrap().unwrap();
    assert_eq!(transfers(&db).await, 1);
}

#[tokio::test]
async fn a_transaction_whose_connection_is_lost_before_commit_is_retried_and_applied_once() {
    let db = TestDatabase::new().await.unwrap();
    transfers_table(&db).await;
    let (proxy, m) = through_proxy(&db).await;
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let proxy = &proxy;
    let attempts = &attempts;
    m.transaction_with_retry(
        coredb::SessionOptions::default(),
        &coredb::RetryPolicy::default(),
        async move |s| {
            // A second apply would fail on the key.
            s.execute("INSERT INTO transfers VALUES (1)", ()).await?;
            if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                // The network goes before COMMIT is sent.
                proxy.cut();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok::<_, coredb::Error>(())
        },
    )
    .await
    .unwrap();
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(transfers(&db).await, 1);
}

#[tokio::test]
async fn a_commit_that_cannot_be_resolved_is_reported_as_unknown_and_not_retried() {
    let db = TestDatabase::new().await.unwrap();
    transfers_table(&db).await;
    slow_commits(&db).await;
    let (proxy, m) = through_proxy_with(&db, |b| {
        b.pool_timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_millis(500))
    })
    .await;
    let mut session = m.session().await.unwrap();
    session
        .execute("INSERT INTO transfers VALUES (7)", ())
        .await
        .unwrap();

    // The connection is lost while COMMIT runs, and then nothing can reach the server to ask.
    let commit = tokio::spawn(session.commit());
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set(Mode::Blackhole);
    proxy.cut();

    let err = commit.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CommitOutcomeUnknown, "{err}");
    // Not transient: transaction_with_retry does not run it again.
    assert!(!err.is_transient());
    // It did commit, which is why guessing "not committed" and running it again would be wrong.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(transfers(&db).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_cut_off_by_a_crash_is_not_reported_committed_when_its_id_is_given_out_again() {
    // Commits are flushed, so nothing acknowledged is lost in the crash below.
    let builder = coredb_embedded::EmbeddedServer::builder().setting("synchronous_commit", "on");
    let server = std::sync::Arc::new(
        tokio::task::spawn_blocking(move || builder.start())
            .await
            .unwrap()
            .unwrap(),
    );
    let direct = |port: u16| {
        DatabaseConfig::builder()
            .host("127.0.0.1")
            .port(port)
            .user(server.user())
            .dbname("postgres")
            .ssl_mode(coredb::SslMode::Disable)
            .connect_timeout(Duration::from_millis(500))
            .pool_timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let admin = DatabaseManager::from_config(&direct(server.port())).unwrap();
    admin
        .get_connection()
        .await
        .unwrap()
        .execute_script(
            "CREATE TABLE transfers (id int PRIMARY KEY); CREATE TABLE other (id int); \
             CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$; \
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON transfers DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit(); \
             CHECKPOINT",
        )
        .await
        .unwrap();
    admin.close().await;
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], server.port()))).await;
    let m = DatabaseManager::from_config(&direct(proxy.port())).unwrap();

    // The transaction gets an id; its row is in the server's WAL buffers, not yet written.
    let mut session = m.session().await.unwrap();
    session
        .execute("INSERT INTO transfers VALUES (1)", ())
        .await
        .unwrap();
    let commit = tokio::spawn(session.commit());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // COMMIT's reply is lost, and the server crashes before the commit is written.
    proxy.set(Mode::Blackhole);
    proxy.cut();
    let crashed = server.clone();
    tokio::task::spawn_blocking(move || {
        crashed.kill().unwrap();
        crashed.start_again().unwrap();
    })
    .await
    .unwrap();
    // Crash recovery hands out the lost transaction's id again: another transaction takes it
    // and commits before coredb gets to ask.
    let admin = DatabaseManager::from_config(&direct(server.port())).unwrap();
    admin
        .execute("INSERT INTO other VALUES (1)", ())
        .await
        .unwrap();
    proxy.set(Mode::Pass);

    let outcome = commit.await.unwrap();
    let stored: i64 = admin
        .scalar("SELECT count(*) FROM transfers", ())
        .await
        .unwrap();
    assert_eq!(stored, 0, "the crash lost the transaction");
    // Told "committed", the caller would count a transfer that is not there.
    let err = outcome.expect_err("not reported committed");
    assert!(
        matches!(
            err.kind(),
            ErrorKind::CommitOutcomeUnknown | ErrorKind::ConnectionLost
        ),
        "{err}"
    );
}
