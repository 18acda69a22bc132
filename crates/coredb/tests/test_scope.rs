//! Inside a test, code written the core.db way (process-wide functions, `from_env`, the axum
//! layer built from them) reaches the test's database, never the server the environment names.
//!
//! A test binary of its own: once a scope is entered, unscoped process-wide calls in the same
//! process fail, which the other suites' tests of the process-wide functions must not see.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::Router;
use coredb::axum::{DbError, Tx, TxLayer};
use coredb::{DatabaseManager, ErrorKind, Executor};
use coredb_testkit::TestDatabase;
use tower::ServiceExt;

/// A handler written the core.db way: it takes its session from the process-wide functions.
async fn record_visit() -> Result<StatusCode, DbError> {
    let mut session = coredb::get_session_context().await?;
    session
        .execute("INSERT INTO visits (who) VALUES ('handler')", ())
        .await?;
    session.commit().await?;
    Ok(StatusCode::CREATED)
}

/// A handler using the request's transaction from a layer built on `get_database_manager()`.
async fn record_in_tx(mut tx: Tx) -> Result<StatusCode, DbError> {
    tx.execute("INSERT INTO visits (who) VALUES ('layer')", ())
        .await?;
    Ok(StatusCode::CREATED)
}

async fn visits(db: &DatabaseManager, who: &str) -> i64 {
    db.scalar("SELECT count(*) FROM visits WHERE who = $1", (who,))
        .await
        .unwrap()
}

#[coredb_testkit::test]
async fn process_wide_calls_in_a_test_reach_the_test_database(db: TestDatabase) {
    db.manager()
        .execute("CREATE TABLE visits (who text NOT NULL)", ())
        .await
        .unwrap();

    // Every process-wide entry point names the test's database.
    let expected = db.name().to_owned();
    let global = coredb::get_database_manager().await.unwrap();
    let initialized = coredb::initialize_database().await.unwrap();
    let from_env = DatabaseManager::from_env().unwrap();
    for manager in [&global, &initialized, &from_env] {
        let name: String = manager
            .scalar("SELECT current_database()", ())
            .await
            .unwrap();
        assert_eq!(name, expected);
    }
    let health = coredb::check_database_health().await;
    assert!(health.is_healthy(), "{health:?}");
    assert!(health.database_url.ends_with(&format!("/{expected}")));

    // A handler using get_session_context(), called through axum and from a spawned task.
    let app = Router::new()
        .route("/visit", post(record_visit))
        .route("/tx", post(record_in_tx))
        .layer(TxLayer::new(global.clone()));
    for uri in ["/visit", "/tx"] {
        let response = app
            .clone()
            .oneshot(Request::post(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{uri}");
    }
    let spawned = tokio::spawn(async { record_visit().await.map(|_| ()) });
    assert!(spawned.await.unwrap().is_ok());
    assert_eq!(visits(db.manager(), "handler").await, 2);
    assert_eq!(visits(db.manager(), "layer").await, 1);

    // close_database() leaves the test's database to the test.
    coredb::close_database().await;
    assert!(!db.manager().is_closed());
    assert_eq!(visits(db.manager(), "handler").await, 2);
}

#[coredb_testkit::test]
async fn a_process_wide_call_outside_every_test_scope_is_an_error(db: DatabaseManager) {
    // This test's own thread is in its scope...
    coredb::get_database_manager().await.unwrap();
    // ...a thread of its own is not: it must not fall back to the environment's server.
    let outside = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let manager = coredb::get_database_manager().await.map(drop);
                let session = coredb::get_session_context().await.map(drop);
                let from_env = DatabaseManager::from_env().map(drop);
                (manager, session, from_env)
            })
    })
    .join()
    .unwrap();
    for result in [outside.0, outside.1, outside.2] {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("enter_test_scope"), "{err}");
    }
    let health = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(coredb::check_database_health())
    })
    .join()
    .unwrap();
    assert!(!health.is_healthy());
    drop(db);
}
