//! axum integration: a transaction per request, committed on 2xx/3xx and rolled back otherwise.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use coredb::axum::{DbError, Tx, TxLayer};
use coredb::{DatabaseManager, Executor};
use coredb_testkit::TestDatabase;
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn insert(tx: &mut Tx, name: &str) -> Result<(), DbError> {
    tx.execute("INSERT INTO items (name) VALUES ($1)", (name,))
        .await?;
    Ok(())
}

async fn created(mut tx: Tx) -> Result<StatusCode, DbError> {
    insert(&mut tx, "created").await?;
    Ok(StatusCode::CREATED)
}

async fn redirected(mut tx: Tx) -> Result<StatusCode, DbError> {
    insert(&mut tx, "redirected").await?;
    Ok(StatusCode::SEE_OTHER)
}

async fn rejected(mut tx: Tx) -> Result<StatusCode, DbError> {
    insert(&mut tx, "rejected").await?;
    Ok(StatusCode::BAD_REQUEST)
}

async fn duplicate(mut tx: Tx) -> Result<StatusCode, DbError> {
    insert(&mut tx, "first-of-two").await?;
    insert(&mut tx, "dup").await?;
    insert(&mut tx, "dup").await?;
    Ok(StatusCode::CREATED)
}

async fn panics(mut tx: Tx) -> StatusCode {
    insert(&mut tx, "panicked").await.unwrap();
    panic!("handler failed");
}

async fn slow(mut tx: Tx) -> StatusCode {
    insert(&mut tx, "slow").await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    StatusCode::OK
}

async fn no_database() -> &'static str {
    "hello"
}

async fn setup() -> (TestDatabase, Router) {
    let db = TestDatabase::with_config(|b| b.pool_timeout(Duration::from_millis(300)))
        .await
        .unwrap();
    db.manager()
        .execute("CREATE TABLE items (name text UNIQUE)", ())
        .await
        .unwrap();
    let app = router(db.manager().clone());
    (db, app)
}

fn router(m: DatabaseManager) -> Router {
    Router::new()
        .route("/created", post(created))
        .route("/redirected", post(redirected))
        .route("/rejected", post(rejected))
        .route("/duplicate", post(duplicate))
        .route("/panics", post(panics))
        .route("/slow", post(slow))
        .route("/hello", get(no_database))
        .route("/health", get(coredb::axum::health))
        .layer(TxLayer::new(m.clone()))
        .with_state(m)
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

async fn names(db: &TestDatabase) -> Vec<String> {
    db.manager()
        .fetch_all::<(String,), _>("SELECT name FROM items ORDER BY name", ())
        .await
        .unwrap()
        .into_iter()
        .map(|(n,)| n)
        .collect()
}

#[tokio::test]
async fn success_and_redirect_responses_commit() {
    let (db, app) = setup().await;
    assert_eq!(call(&app, "POST", "/created").await.0, StatusCode::CREATED);
    assert_eq!(
        call(&app, "POST", "/redirected").await.0,
        StatusCode::SEE_OTHER
    );
    assert_eq!(names(&db).await, ["created", "redirected"]);
}

#[tokio::test]
async fn client_error_response_rolls_back() {
    let (db, app) = setup().await;
    assert_eq!(
        call(&app, "POST", "/rejected").await.0,
        StatusCode::BAD_REQUEST
    );
    assert!(names(&db).await.is_empty());
}

#[tokio::test]
async fn unique_violation_is_409_and_the_whole_request_is_rolled_back() {
    let (db, app) = setup().await;
    let (status, _, body) = call(&app, "POST", "/duplicate").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("items_name_key"), "{body}");
    assert!(!body.contains("INSERT"), "no SQL in the body: {body}");
    assert!(names(&db).await.is_empty());
}

#[tokio::test]
async fn panicking_handler_is_rolled_back_and_frees_its_connection() {
    let (db, app) = setup().await;
    let request = Request::builder()
        .method("POST")
        .uri("/panics")
        .body(Body::empty())
        .unwrap();
    let outcome = tokio::spawn(app.clone().oneshot(request)).await;
    assert!(outcome.unwrap_err().is_panic());
    assert!(names(&db).await.is_empty());
    for _ in 0..100 {
        if db.manager().status().in_use == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(db.manager().status().in_use, 0);
}

/// Sessions of the test's database that sit inside an open transaction.
async fn idle_in_transaction(db: &TestDatabase) -> i64 {
    db.manager()
        .scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'",
            (),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn client_going_away_mid_request_rolls_back() {
    let (db, app) = setup().await;
    let request = Request::builder()
        .method("POST")
        .uri("/slow")
        .body(Body::empty())
        .unwrap();
    let task = tokio::spawn(app.clone().oneshot(request));
    for _ in 0..200 {
        if idle_in_transaction(&db).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(names(&db).await.is_empty());
    let mut open = 1i64;
    for _ in 0..200 {
        open = idle_in_transaction(&db).await;
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(open, 0, "the transaction was rolled back on the server");
}

#[tokio::test]
async fn handler_that_never_touches_the_database_opens_nothing() {
    let (db, app) = setup().await;
    let before = db.manager().metrics().checkouts;
    assert_eq!(call(&app, "GET", "/hello").await.0, StatusCode::OK);
    assert_eq!(db.manager().metrics().checkouts, before);
}

#[tokio::test]
async fn exhausted_pool_is_503_with_retry_after() {
    let db = TestDatabase::with_config(|b| {
        b.pool_size(1)
            .max_overflow(0)
            .pool_timeout(Duration::from_millis(200))
    })
    .await
    .unwrap();
    db.manager()
        .execute("CREATE TABLE items (name text UNIQUE)", ())
        .await
        .unwrap();
    let app = router(db.manager().clone());
    let _held = db.manager().get_connection().await.unwrap();
    let (status, headers, body) = call(&app, "POST", "/created").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    assert!(body.contains("retry"), "{body}");
}

#[tokio::test]
async fn health_route_is_200_when_healthy_and_503_when_not() {
    let (_db, app) = setup().await;
    let (status, _, body) = call(&app, "GET", "/health").await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "healthy");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = coredb::DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(port)
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let app = router(DatabaseManager::from_config(&down).unwrap());
    let (status, _, body) = call(&app, "GET", "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("\"status\":\"unhealthy\""), "{body}");
}
