//! The test harness: isolated per-test databases and an embedded server whose state the
//! handle shows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coredb::{DatabaseConfig, DatabaseManager, Executor};
use coredb_embedded::EmbeddedServer;
use coredb_testkit::TestDatabase;

#[tokio::test]
async fn each_test_gets_its_own_isolated_database() {
    let a = TestDatabase::new().await.unwrap();
    let b = TestDatabase::new().await.unwrap();
    assert_ne!(a.name(), b.name());
    a.manager()
        .execute("CREATE TABLE only_in_a (x int)", ())
        .await
        .unwrap();
    let in_b: Option<String> = b
        .manager()
        .scalar("SELECT to_regclass('only_in_a')::text", ())
        .await
        .unwrap();
    assert_eq!(in_b, None);
    let db: String = a
        .manager()
        .scalar("SELECT current_database()", ())
        .await
        .unwrap();
    assert_eq!(db, a.name());
}

#[tokio::test]
async fn test_database_is_dropped_with_its_handle() {
    let db = TestDatabase::new().await.unwrap();
    let name = db.name().to_owned();
    let admin_config = db.config().to_builder().dbname("postgres").build().unwrap();
    drop(db);
    let admin = DatabaseManager::from_config(&admin_config).unwrap();
    let left: i64 = admin
        .scalar(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            (name.as_str(),),
        )
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn creating_a_test_database_takes_milliseconds() {
    let _warm = TestDatabase::new().await.unwrap();
    let rounds = 5;
    let (mut create, mut drop_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let started = Instant::now();
        let db = TestDatabase::new().await.unwrap();
        let _: i32 = db.manager().scalar("SELECT 1", ()).await.unwrap();
        create += started.elapsed();
        let started = Instant::now();
        drop(db);
        drop_time += started.elapsed();
    }
    // Reported, not asserted: timings on shared machines are noisy.
    println!(
        "TESTKIT per-test database: create + first query {:.1} ms, drop {:.1} ms",
        create.as_secs_f64() * 1000.0 / rounds as f64,
        drop_time.as_secs_f64() * 1000.0 / rounds as f64
    );
}

async fn dedicated_server() -> (Arc<EmbeddedServer>, DatabaseManager) {
    let started = Instant::now();
    let server = Arc::new(
        tokio::task::spawn_blocking(EmbeddedServer::start)
            .await
            .unwrap()
            .unwrap(),
    );
    println!(
        "TESTKIT embedded server start to accepting connections: {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let config = DatabaseConfig::from_url(&server.url())
        .unwrap()
        .to_builder()
        .ssl_mode(coredb::SslMode::Disable)
        .connect_timeout(Duration::from_secs(1))
        .pool_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    (server, DatabaseManager::from_config(&config).unwrap())
}

async fn blocking(
    server: &Arc<EmbeddedServer>,
    op: fn(&EmbeddedServer) -> Result<(), coredb_embedded::EmbeddedError>,
) {
    let server = server.clone();
    tokio::task::spawn_blocking(move || op(&server))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn stopped_killed_and_restarted_server_shows_through_the_handle_and_health() {
    let (server, m) = dedicated_server().await;
    assert!(server.is_running());
    assert!(m.health_check().await);
    let port = server.port();

    blocking(&server, EmbeddedServer::stop).await;
    assert!(!server.is_running());
    assert!(server.pid().is_none());
    let report = m.health_report().await;
    assert!(!report.is_healthy());
    assert!(report.error.unwrap().contains("refused the connection"));

    blocking(&server, EmbeddedServer::start_again).await;
    assert!(server.is_running());
    assert_eq!(server.port(), port, "same port after a restart");
    assert!(m.health_check().await);

    blocking(&server, EmbeddedServer::kill).await;
    assert!(!server.is_running());
    assert!(!m.health_check().await);
    blocking(&server, EmbeddedServer::start_again).await;
    assert!(m.health_check().await);
}

#[tokio::test]
async fn checkout_retries_with_backoff_until_the_server_is_back() {
    let (server, m) = dedicated_server().await;
    blocking(&server, EmbeddedServer::stop).await;
    let waiting = tokio::spawn({
        let m = m.clone();
        async move {
            let mut c = m.get_connection().await?;
            c.scalar::<i32, _>("SELECT 1", ()).await
        }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    blocking(&server, EmbeddedServer::start_again).await;
    assert_eq!(waiting.await.unwrap().unwrap(), 1);
    assert!(m.metrics().connect_failures >= 2, "{:?}", m.metrics());
}

#[coredb_testkit::test]
async fn test_attribute_hands_a_fresh_database_manager(db: DatabaseManager) -> coredb::Result<()> {
    db.execute("CREATE TABLE fresh (x int)", ()).await?;
    let n: i64 = db.scalar("SELECT count(*) FROM fresh", ()).await?;
    assert_eq!(n, 0);
    let name: String = db.scalar("SELECT current_database()", ()).await?;
    assert!(name.starts_with("coredb_test_"), "{name}");
    Ok(())
}

#[coredb_testkit::test]
async fn test_attribute_can_hand_the_test_database_itself(db: TestDatabase) {
    let n: i32 = db.manager().scalar("SELECT 1", ()).await.unwrap();
    assert_eq!(n, 1);
}
