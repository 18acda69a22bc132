//! axum integration: a transaction per request, committed on 2xx/3xx and rolled back otherwise;
//! database errors answered by the table of `coredb::axum::ErrorResponses` (a test per row, each
//! provoking the real error from PostgreSQL), customisable per layer, and showing neither
//! constraint names nor values, in bodies or logs, by default.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use coredb::axum::{DbError, ErrorResponses, Tx, TxLayer};
use coredb::{params, DatabaseConfig, DatabaseManager, ErrorKind, Executor, SqlState, SslMode};
use coredb_embedded::EmbeddedServer;
use coredb_testkit::TestDatabase;
use http_body_util::BodyExt;
use serde_json::Value;
use support::log_capture::Captured;
use support::proxy::{Mode, Proxy};
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
    assert!(body.contains("\"code\":\"23505\""), "{body}");
    // The constraint's name is the schema's business, not the client's (unless configured).
    assert!(!body.contains("items_name_key"), "{body}");
    assert!(!body.contains("dup"), "no values in the body: {body}");
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
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!({ "error": UNAVAILABLE, "code": null })
    );
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

// ---------------------------------------------------------------------------------------------
// Error responses: one test per row of the table in `ErrorResponses`, each with the real error.

/// What a route answered, the body parsed.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn ask(app: &Router, uri: &str) -> Answer {
    let (status, headers, body) = call(app, "POST", uri).await;
    let body = serde_json::from_str(&body).unwrap_or_else(|_| panic!("a JSON body: {body}"));
    Answer {
        status,
        headers,
        body,
    }
}

/// Checks a row of the default table: the status, the body's stable shape
/// `{"error", "code"}` and nothing more, and `Retry-After` exactly on a 503.
fn assert_row(answer: &Answer, status: StatusCode, code: Option<&str>, error: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.body["error"], error, "{answer:?}");
    if let Some(code) = code {
        assert_eq!(answer.body["code"], code, "{answer:?}");
    }
    let mut keys: Vec<&String> = answer.body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["code", "error"],
        "no other field by default: {answer:?}"
    );
    let retry_after = answer.headers.get("retry-after");
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert_eq!(retry_after.unwrap(), "1", "{answer:?}");
    } else {
        assert!(retry_after.is_none(), "{answer:?}");
    }
}

/// A refused connection is retried until the pool timeout; the answer carries the server's
/// SQLSTATE, unless the last attempt was still under way at the deadline (then it is the
/// pool timeout's, without one).
fn assert_refused_with(answer: &Answer, code: &str) {
    assert!(
        answer.body["code"] == code || answer.body["code"].is_null(),
        "{answer:?}"
    );
}

const UNAVAILABLE: &str = "the database is unavailable or busy; retry shortly";
const CONTENTION: &str = "the request conflicted with concurrent requests; retry shortly";

/// The schema the provoking routes run against; the constraint names are PostgreSQL's defaults
/// (`customers_email_key`, `orders_customer_id_fkey`, `orders_quantity_check`, ...).
const SCHEMA: &[&str] = &[
    "CREATE TYPE mood AS ENUM ('happy', 'sad')",
    "CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL UNIQUE)",
    "CREATE TABLE orders (
        id serial PRIMARY KEY,
        customer_id int NOT NULL REFERENCES customers (id),
        code varchar(8),
        quantity int CHECK (quantity > 0),
        price numeric(5, 2),
        mood mood
    )",
    "CREATE TABLE bookings (during int4range, EXCLUDE USING gist (during WITH &&))",
    "CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)",
    "INSERT INTO customers VALUES (1, 'ada@example.com')",
    "INSERT INTO bookings VALUES (int4range(1, 10))",
    "INSERT INTO counters VALUES (1, 0), (2, 0)",
    "CREATE FUNCTION refuse() RETURNS void LANGUAGE plpgsql AS $$
     BEGIN RAISE EXCEPTION 'order refused' USING DETAIL = 'secret-detail-9931'; END $$",
];

async fn create_schema(m: &DatabaseManager) {
    for sql in SCHEMA {
        m.execute(sql, ()).await.unwrap();
    }
}

async fn mapping_setup() -> (TestDatabase, Router) {
    let db = TestDatabase::new().await.unwrap();
    create_schema(db.manager()).await;
    let app = mapping_router(TxLayer::new(db.manager().clone()), db.manager().clone());
    (db, app)
}

fn mapping_router(layer: TxLayer, m: DatabaseManager) -> Router {
    Router::new()
        .route("/provoke/{case}", post(provoke))
        .route("/serialization_failure", post(serialization_failure))
        .route("/deadlock", post(deadlock))
        .route("/lost_connection", post(lost_connection))
        .route("/admin_shutdown", post(admin_shutdown))
        .layer(layer)
        // Not under the layer: the default table applies.
        .route("/outside/foreign_key", post(foreign_key_outside_the_layer))
        .with_state(m)
}

/// Runs the statement named by `case`; each fails on the server with the SQLSTATE it names.
/// `coredb::Error` is the handler's error type as it is.
async fn provoke(mut tx: Tx, Path(case): Path<String>) -> Result<StatusCode, coredb::Error> {
    match case.as_str() {
        "unique" => {
            tx.execute(
                "INSERT INTO customers (id, email) VALUES (:id, :email)",
                params! { "id" => 2, "email" => "ada@example.com" },
            )
            .await?;
        }
        "foreign_key" => {
            tx.execute(
                "INSERT INTO orders (customer_id) VALUES (:customer)",
                params! { "customer" => 987654321 },
            )
            .await?;
        }
        "exclusion" => {
            tx.execute(
                "INSERT INTO bookings (during) VALUES (int4range(:lower, :upper))",
                params! { "lower" => 5, "upper" => 15 },
            )
            .await?;
        }
        "not_null" => {
            tx.execute(
                "INSERT INTO customers (id, email) VALUES (:id, NULL)",
                params! { "id" => 2 },
            )
            .await?;
        }
        "check" => {
            tx.execute(
                "INSERT INTO orders (customer_id, quantity) VALUES (1, :quantity)",
                params! { "quantity" => 0 },
            )
            .await?;
        }
        "too_long" => {
            tx.execute(
                "INSERT INTO orders (customer_id, code) VALUES (1, :code)",
                params! { "code" => "much-too-long-code" },
            )
            .await?;
        }
        "invalid_text" => {
            tx.execute(
                "SELECT :quantity::text::integer",
                params! { "quantity" => "twelve" },
            )
            .await?;
        }
        "invalid_enum" => {
            tx.execute(
                "INSERT INTO orders (customer_id, mood) VALUES (1, :mood::text::mood)",
                params! { "mood" => "ecstatic" },
            )
            .await?;
        }
        "out_of_range" => {
            tx.execute(
                "INSERT INTO orders (customer_id, price) VALUES (1, :price::text::numeric)",
                params! { "price" => "123456.78" },
            )
            .await?;
        }
        "other_data" => {
            tx.execute(
                "SELECT :day::text::date",
                params! { "day" => "next tuesday" },
            )
            .await?;
        }
        "lock_not_available" => {
            let mut holder = tx.manager().session().await?;
            holder
                .execute("SELECT n FROM counters WHERE id = 1 FOR UPDATE", ())
                .await?;
            tx.execute("SELECT n FROM counters WHERE id = 1 FOR UPDATE NOWAIT", ())
                .await?;
        }
        "statement_timeout" => {
            tx.execute("SET LOCAL statement_timeout = '100ms'", ())
                .await?;
            tx.execute("SELECT pg_sleep(5)", ()).await?;
        }
        "no_row" => {
            tx.fetch_one::<(i32,), _>(
                "SELECT id FROM customers WHERE id = :id",
                params! { "id" => 999 },
            )
            .await?;
        }
        "undefined_table" => {
            tx.execute("SELECT * FROM no_such_table", ()).await?;
        }
        "raise" => {
            tx.execute("SELECT refuse()", ()).await?;
        }
        "select" => {
            tx.execute("SELECT 1", ()).await?;
        }
        other => panic!("no case {other}"),
    }
    Ok(StatusCode::OK)
}

/// A repeatable-read transaction updating a row that another transaction changed and
/// committed after this one's snapshot: `40001`.
async fn serialization_failure(mut tx: Tx) -> Result<StatusCode, DbError> {
    tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", ())
        .await?;
    tx.execute("SELECT n FROM counters WHERE id = 1", ())
        .await?; // takes the snapshot
    let other = tx.manager().clone();
    other
        .execute("UPDATE counters SET n = n + 1 WHERE id = 1", ())
        .await?;
    tx.execute("UPDATE counters SET n = n + 1 WHERE id = 1", ())
        .await?;
    Ok(StatusCode::OK)
}

/// Polls `sql` (a boolean query of `:pid`) until it is true.
async fn wait_until(m: &DatabaseManager, sql: &str, pid: i32) {
    for _ in 0..500 {
        if m.scalar::<bool, _>(sql, params! { "pid" => pid })
            .await
            .unwrap()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{sql} stayed false for 5 s");
}

/// The request's transaction and another one lock two rows in opposite orders: `40P01`. The
/// request's transaction checks for deadlocks first (after 50 ms), so PostgreSQL aborts it.
async fn deadlock(mut tx: Tx) -> Result<StatusCode, DbError> {
    tx.execute("SET LOCAL deadlock_timeout = '50ms'", ())
        .await?;
    tx.execute("UPDATE counters SET n = n + 1 WHERE id = 1", ())
        .await?;
    let m = tx.manager().clone();
    let (locked, other_pid) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut other = m.session().await?;
        other
            .execute("SET LOCAL deadlock_timeout = '10s'", ())
            .await?;
        let pid: i32 = other.scalar("SELECT pg_backend_pid()", ()).await?;
        other
            .execute("UPDATE counters SET n = n + 1 WHERE id = 2", ())
            .await?;
        let _ = locked.send(pid);
        // Waits for the request's transaction, and goes on once the deadlock aborted that.
        other
            .execute("UPDATE counters SET n = n + 1 WHERE id = 1", ())
            .await?;
        other.rollback().await
    });
    let pid = other_pid.await.unwrap();
    // The other transaction waits for row 1 before this one asks for row 2, so the cycle is
    // complete when this one's deadlock check runs.
    wait_until(
        tx.manager(),
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = :pid AND NOT granted)",
        pid,
    )
    .await;
    tx.execute("UPDATE counters SET n = n + 1 WHERE id = 2", ())
        .await?;
    Ok(StatusCode::OK)
}

/// The request's backend is terminated while the transaction is idle; the next statement
/// finds the connection gone.
async fn lost_connection(mut tx: Tx) -> Result<StatusCode, DbError> {
    let pid: i32 = tx.scalar("SELECT pg_backend_pid()", ()).await?;
    let m = tx.manager().clone();
    m.execute(
        "SELECT pg_terminate_backend(:pid)",
        params! { "pid" => pid },
    )
    .await?;
    wait_until(
        &m,
        "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = :pid)",
        pid,
    )
    .await;
    tx.execute("SELECT 1", ()).await?;
    Ok(StatusCode::OK)
}

/// The request's backend is terminated in the middle of a statement: the server answers it
/// with `57P01` (admin shutdown).
async fn admin_shutdown(mut tx: Tx) -> Result<StatusCode, DbError> {
    let pid: i32 = tx.scalar("SELECT pg_backend_pid()", ()).await?;
    let m = tx.manager().clone();
    let terminator = tokio::spawn(async move {
        wait_until(
            &m,
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = :pid AND state = 'active' AND query LIKE 'SELECT pg_sleep%')",
            pid,
        )
        .await;
        m.execute(
            "SELECT pg_terminate_backend(:pid)",
            params! { "pid" => pid },
        )
        .await
    });
    let outcome = tx.execute("SELECT pg_sleep(10)", ()).await;
    terminator.await.unwrap()?;
    outcome?;
    Ok(StatusCode::OK)
}

async fn foreign_key_outside_the_layer(
    State(m): State<DatabaseManager>,
) -> Result<StatusCode, coredb::Error> {
    m.execute(
        "INSERT INTO orders (customer_id) VALUES (:customer)",
        params! { "customer" => 987654321 },
    )
    .await?;
    Ok(StatusCode::CREATED)
}

#[tokio::test]
async fn unique_violation_is_409() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/provoke/unique").await;
    assert_row(
        &answer,
        StatusCode::CONFLICT,
        Some("23505"),
        "a record with the same unique value already exists",
    );
}

#[tokio::test]
async fn foreign_key_violation_is_409() {
    let (db, app) = mapping_setup().await;
    let answer = ask(&app, "/provoke/foreign_key").await;
    assert_row(
        &answer,
        StatusCode::CONFLICT,
        Some("23503"),
        "a referenced record does not exist, or the record is still referenced",
    );
    // The other direction: deleting a customer who still has orders.
    db.manager()
        .execute("INSERT INTO orders (customer_id) VALUES (1)", ())
        .await
        .unwrap();
    let still_referenced = Router::new()
        .route(
            "/delete",
            post(|mut tx: Tx| async move {
                tx.execute("DELETE FROM customers WHERE id = 1", ()).await?;
                Ok::<_, coredb::Error>(StatusCode::NO_CONTENT)
            }),
        )
        .layer(TxLayer::new(db.manager().clone()));
    let answer = ask(&still_referenced, "/delete").await;
    assert_row(
        &answer,
        StatusCode::CONFLICT,
        Some("23503"),
        "a referenced record does not exist, or the record is still referenced",
    );
}

#[tokio::test]
async fn exclusion_violation_is_409() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/provoke/exclusion").await;
    assert_row(
        &answer,
        StatusCode::CONFLICT,
        Some("23P01"),
        "the change conflicts with existing records",
    );
}

#[tokio::test]
async fn not_null_violation_is_422() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/provoke/not_null").await;
    assert_row(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("23502"),
        "a required value is missing",
    );
}

#[tokio::test]
async fn check_violation_is_422() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/provoke/check").await;
    assert_row(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("23514"),
        "a value is not allowed",
    );
}

#[tokio::test]
async fn too_long_value_is_422() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/provoke/too_long").await;
    assert_row(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("22001"),
        "a value is too long",
    );
}

#[tokio::test]
async fn invalid_text_representation_is_422() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/provoke/invalid_text").await;
    assert_row(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("22P02"),
        "a value is not valid for its type",
    );
}

#[tokio::test]
async fn invalid_enum_value_is_422() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/provoke/invalid_enum").await;
    assert_row(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("22P02"),
        "a value is not valid for its type",
    );
}

#[tokio::test]
async fn numeric_out_of_range_is_422() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/provoke/out_of_range").await;
    assert_row(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("22003"),
        "a number is out of range",
    );
}

#[tokio::test]
async fn other_data_exception_is_422() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/provoke/other_data").await;
    assert_row(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("22007"),
        "a value is invalid",
    );
}

#[tokio::test]
async fn serialization_failure_is_503_with_retry_after() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/serialization_failure").await;
    assert_row(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        Some("40001"),
        CONTENTION,
    );
}

#[tokio::test]
async fn deadlock_is_503_with_retry_after() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/deadlock").await;
    assert_row(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        Some("40P01"),
        CONTENTION,
    );
}

#[tokio::test]
async fn lock_not_available_is_503_with_retry_after() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/provoke/lock_not_available").await;
    assert_row(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        Some("55P03"),
        CONTENTION,
    );
}

#[tokio::test]
async fn lost_connection_is_503_with_retry_after() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/lost_connection").await;
    assert_row(&answer, StatusCode::SERVICE_UNAVAILABLE, None, UNAVAILABLE);
}

#[tokio::test]
async fn admin_shutdown_is_503_with_retry_after() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/admin_shutdown").await;
    assert_row(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        Some("57P01"),
        UNAVAILABLE,
    );
}

#[tokio::test]
async fn server_shutting_down_is_503_with_retry_after() {
    // A server of its own: it is shut down.
    let server = tokio::task::spawn_blocking(|| EmbeddedServer::builder().start())
        .await
        .unwrap()
        .expect("embedded server starts");
    let config = DatabaseConfig::from_url(&server.url())
        .unwrap()
        .to_builder()
        .ssl_mode(SslMode::Disable)
        .pool_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let setup = DatabaseManager::from_config(&config).unwrap();
    create_schema(&setup).await;
    // A smart shutdown (SIGTERM) waits for the sessions still open and refuses new
    // connections with 57P03 meanwhile; this one keeps it waiting.
    let session = setup.get_connection().await.unwrap();
    let postmaster = server.pid().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &postmaster])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut last = None;
    for _ in 0..100 {
        // A new manager each time: an open pooled connection would still be served.
        let m = DatabaseManager::from_config(&config).unwrap();
        let app = mapping_router(TxLayer::new(m.clone()), m);
        let reply = ask(&app, "/provoke/select").await;
        if reply.status != StatusCode::OK {
            last = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = last.expect("new connections are refused after SIGTERM");
    assert_row(&answer, StatusCode::SERVICE_UNAVAILABLE, None, UNAVAILABLE);
    assert_refused_with(&answer, "57P03");
    drop(session);
    setup.close_now();
}

#[tokio::test]
async fn too_many_connections_is_503_with_retry_after() {
    let (db, _) = mapping_setup().await;
    // Superusers pass every connection limit; a role of its own with none left does not.
    let role = format!("{}_limited", db.name());
    db.manager()
        .execute(&format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT 0"), ())
        .await
        .unwrap();
    let config = db
        .config()
        .to_builder()
        .user(&role)
        .pool_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let limited = DatabaseManager::from_config(&config).unwrap();
    let app = mapping_router(TxLayer::new(limited.clone()), limited.clone());
    let answer = ask(&app, "/provoke/select").await;
    limited.close_now();
    db.manager()
        .execute(&format!("DROP ROLE {role}"), ())
        .await
        .unwrap();
    assert_row(&answer, StatusCode::SERVICE_UNAVAILABLE, None, UNAVAILABLE);
    assert_refused_with(&answer, "53300");
}

#[tokio::test]
async fn refused_connection_is_503_with_retry_after() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(port)
        .connect_timeout(Duration::from_millis(200))
        .pool_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let m = DatabaseManager::from_config(&down).unwrap();
    let app = mapping_router(TxLayer::new(m.clone()), m);
    let answer = ask(&app, "/provoke/select").await;
    assert_row(&answer, StatusCode::SERVICE_UNAVAILABLE, None, UNAVAILABLE);
}

#[tokio::test]
async fn closed_pool_is_503_with_retry_after() {
    let (db, app) = mapping_setup().await;
    db.manager().close().await;
    let answer = ask(&app, "/provoke/select").await;
    assert_row(&answer, StatusCode::SERVICE_UNAVAILABLE, None, UNAVAILABLE);
}

#[tokio::test]
async fn statement_timeout_is_504() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/provoke/statement_timeout").await;
    assert_row(
        &answer,
        StatusCode::GATEWAY_TIMEOUT,
        Some("57014"),
        "the database did not answer in time",
    );
}

#[tokio::test]
async fn statement_without_a_reply_is_504() {
    let db = TestDatabase::new().await.unwrap();
    let server = tokio::net::lookup_host((db.config().hosts()[0].as_str(), db.config().ports()[0]))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Arc::new(Proxy::start(server).await);
    // The client-side guard of a statement is statement_timeout plus a second.
    let config = db
        .config()
        .to_builder()
        .host("127.0.0.1")
        .port(proxy.port())
        .statement_timeout(Some(Duration::from_millis(100)))
        .build()
        .unwrap();
    let m = DatabaseManager::from_config(&config).unwrap();
    let silent = proxy.clone();
    let app = Router::new()
        .route(
            "/silent",
            post(move |mut tx: Tx| async move {
                tx.execute("SELECT 1", ()).await?;
                silent.set(Mode::Blackhole);
                let outcome = tx.execute("SELECT 1", ()).await;
                // The connection is useless now; cut it so that nothing waits on it.
                silent.cut();
                outcome?;
                Ok::<_, coredb::Error>(StatusCode::OK)
            }),
        )
        .layer(TxLayer::new(m.clone()));
    let answer = ask(&app, "/silent").await;
    m.close_now();
    assert_row(
        &answer,
        StatusCode::GATEWAY_TIMEOUT,
        None,
        "the database did not answer in time",
    );
    assert!(answer.body["code"].is_null(), "{answer:?}");
}

#[tokio::test]
async fn no_row_is_404() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/provoke/no_row").await;
    assert_row(&answer, StatusCode::NOT_FOUND, None, "not found");
    assert!(answer.body["code"].is_null(), "{answer:?}");
}

#[tokio::test]
async fn other_errors_are_500() {
    let (_db, app) = mapping_setup().await;
    let answer = ask(&app, "/provoke/undefined_table").await;
    assert_row(
        &answer,
        StatusCode::INTERNAL_SERVER_ERROR,
        Some("42P01"),
        "internal database error",
    );
    let answer = ask(&app, "/provoke/raise").await;
    assert_row(
        &answer,
        StatusCode::INTERNAL_SERVER_ERROR,
        Some("P0001"),
        "internal database error",
    );
}

#[tokio::test]
async fn customised_mapping_takes_effect() {
    let (db, default_app) = mapping_setup().await;
    let responses = ErrorResponses::new()
        .status_for_code(
            SqlState::FOREIGN_KEY_VIOLATION,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .status_for_kind(ErrorKind::Query, StatusCode::BAD_REQUEST)
        .status_for_code(SqlState::UNDEFINED_TABLE, StatusCode::SERVICE_UNAVAILABLE)
        .status_for_kind(ErrorKind::NotFound, StatusCode::GONE)
        .include_schema_names(true)
        .include_detail(true)
        .retry_after(Duration::from_millis(2500));
    let app = mapping_router(
        TxLayer::new(db.manager().clone()).error_responses(responses),
        db.manager().clone(),
    );

    // A SQLSTATE of its own; the names and the server's words, as configured.
    let fk = ask(&app, "/provoke/foreign_key").await;
    assert_eq!(fk.status, StatusCode::UNPROCESSABLE_ENTITY, "{fk:?}");
    assert_eq!(fk.body["code"], "23503");
    assert_eq!(fk.body["constraint"], "orders_customer_id_fkey");
    assert_eq!(fk.body["table"], "orders");
    assert!(
        fk.body["detail"].as_str().unwrap().contains("(987654321)"),
        "{fk:?}"
    );
    assert!(
        fk.body["message"].as_str().unwrap().contains("foreign key"),
        "{fk:?}"
    );
    // The kind's status for the other server errors; the SQLSTATE's status wins over it.
    let unique = ask(&app, "/provoke/unique").await;
    assert_eq!(unique.status, StatusCode::BAD_REQUEST, "{unique:?}");
    assert_eq!(unique.body["constraint"], "customers_email_key");
    let not_null = ask(&app, "/provoke/not_null").await;
    assert_eq!(not_null.body["column"], "email", "{not_null:?}");
    let undefined = ask(&app, "/provoke/undefined_table").await;
    assert_eq!(undefined.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(undefined.headers.get("retry-after").unwrap(), "3");
    assert_eq!(ask(&app, "/provoke/no_row").await.status, StatusCode::GONE);

    // Other routers, and routes outside the layer, keep the default table.
    let default_fk = ask(&default_app, "/provoke/foreign_key").await;
    assert_row(
        &default_fk,
        StatusCode::CONFLICT,
        Some("23503"),
        "a referenced record does not exist, or the record is still referenced",
    );
    let outside = ask(&app, "/outside/foreign_key").await;
    assert_row(
        &outside,
        StatusCode::CONFLICT,
        Some("23503"),
        "a referenced record does not exist, or the record is still referenced",
    );
}

#[tokio::test]
async fn bodies_and_logs_hold_no_constraint_names_or_values_by_default() {
    let captured = Captured::default();
    let subscriber = captured.subscriber(tracing::Level::DEBUG);
    // The test runs on one thread (a current-thread runtime), so every log line lands here.
    let _guard = tracing::subscriber::set_default(subscriber);

    let (_db, app) = mapping_setup().await;
    let mut bodies = String::new();
    for case in ["foreign_key", "unique", "invalid_text", "raise"] {
        let (_, _, body) = call(&app, "POST", &format!("/provoke/{case}")).await;
        bodies.push_str(&body);
    }
    let logs = captured.text();

    for secret in [
        "orders_customer_id_fkey", // the constraint's name
        "customers_email_key",
        "987654321", // the key's value in `Key (customer_id)=(987654321) is not present`
        "ada@example.com",
        "twelve",             // quoted by the server's message of a data exception
        "secret-detail-9931", // a 500's detail
    ] {
        assert!(!bodies.contains(secret), "{secret} in a body: {bodies}");
        assert!(!logs.contains(secret), "{secret} in the logs: {logs}");
    }
    assert!(!bodies.contains("INSERT"), "no SQL in bodies: {bodies}");

    // The 4xx are logged at DEBUG at most; the 500 at ERROR, with what an operator needs.
    let line = |code: &str| {
        logs.lines()
            .find(|l| l.contains(code))
            .unwrap_or_else(|| panic!("a log line with {code}: {logs}"))
            .to_owned()
    };
    for code in ["23503", "23505", "22P02"] {
        assert!(line(code).contains("DEBUG"), "{}", line(code));
    }
    let error = line("P0001");
    assert!(error.contains("ERROR"), "{error}");
    assert!(error.contains("order refused"), "{error}");
    assert!(error.contains("SELECT refuse()"), "{error}");
}
