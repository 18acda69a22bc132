//! core.db's process-wide functions, in core.db's order. One test: they share global state.

use coredb::{ErrorKind, Executor};
use coredb_testkit::TestDatabase;

#[tokio::test]
async fn core_db_quick_start_lifecycle_works_end_to_end() {
    let db = TestDatabase::new().await.unwrap();
    let config = db.config().clone();

    // initialize_database, then get_database_manager returns the same pool.
    let manager = coredb::initialize_database_with(config.clone())
        .await
        .unwrap();
    let again = coredb::get_database_manager().await.unwrap();
    manager
        .execute("CREATE TABLE seen (x int)", ())
        .await
        .unwrap();
    again
        .execute("INSERT INTO seen VALUES (1)", ())
        .await
        .unwrap();
    assert_eq!(manager.metrics().created, again.metrics().created);

    // Another configuration while initialized is refused with a clear message.
    let other = config.to_builder().dbname("postgres").build().unwrap();
    let err = coredb::initialize_database_with(other).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("close_database()"), "{err}");

    // get_session_context: a session that commits.
    let mut session = coredb::get_session_context().await.unwrap();
    let one: i32 = session.scalar("SELECT 1", ()).await.unwrap();
    assert_eq!(one, 1);
    session
        .execute("INSERT INTO seen VALUES (2)", ())
        .await
        .unwrap();
    session.commit().await.unwrap();

    // check_database_health.
    let report = coredb::check_database_health().await;
    assert!(report.is_healthy(), "{report:?}");

    // close_database waits, closes, forgets.
    coredb::close_database().await;
    assert!(manager.is_closed());
    assert_eq!(
        manager.get_connection().await.unwrap_err().kind(),
        ErrorKind::PoolClosed
    );

    // database_lifespan: initialize for a service, shutdown after serving.
    let lifespan = coredb::database_lifespan_with(config.clone())
        .await
        .unwrap();
    let n: i64 = lifespan
        .manager()
        .scalar("SELECT count(*) FROM seen", ())
        .await
        .unwrap();
    assert_eq!(n, 2, "both the autocommit and the session insert were kept");
    let service = lifespan.manager().clone();
    lifespan.shutdown().await;
    assert!(service.is_closed());
}
