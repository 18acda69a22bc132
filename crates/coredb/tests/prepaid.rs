//! End-to-end tests of the sample prepaid service (`examples/prepaid`): the example's own code,
//! served by `axum::serve` on a local port and driven over real HTTP/1.1 connections, each test
//! on a database of its own.

mod support;

// The example's modules, compiled here as they are: one copy of the code. The example's
// `main` uses an item these tests do not (`app::shutdown_signal`).
#[path = "../examples/prepaid"]
#[allow(dead_code)]
mod prepaid {
    pub mod app;
    pub mod error;
    pub mod ledger;
    pub mod models;
    pub mod routes;
    pub mod telemetry;
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use coredb::axum::Tx;
use coredb::model::Uuid;
use coredb::{DatabaseConfig, DatabaseManager, SslMode};
use coredb_embedded::EmbeddedServer;
use coredb_testkit::TestDatabase;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prepaid::{app, error::AppError, ledger};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

/// Generous bound for things that normally take milliseconds; only a hang reaches it.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// A running service and an HTTP client for it.

/// The sample service on a local port, with the database it runs on.
struct Service {
    addr: SocketAddr,
    db: DatabaseManager,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Service {
    /// Sets up the schema and serves `app` the way `main` does.
    async fn serve(db: DatabaseManager, app: Router) -> Service {
        app::setup(&db).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(app::serve(listener, app, db.clone(), async move {
            let _ = signal.await;
        }));
        Service {
            addr,
            db,
            shutdown: Some(shutdown),
            task,
        }
    }

    /// The service exactly as `main` builds it.
    async fn start(db: DatabaseManager) -> Service {
        Self::serve(db.clone(), app::app(db)).await
    }

    /// The service's routes plus `routes` (test-only routes), with the service's layers.
    async fn start_with(db: DatabaseManager, routes: Router<DatabaseManager>) -> Service {
        Self::serve(db.clone(), app::with_layers(routes, db)).await
    }

    /// Begins a graceful shutdown, as Ctrl-C does in `main`.
    fn begin_shutdown(&mut self) {
        let _ = self.shutdown.take().expect("shut down once").send(());
    }

    async fn get(&self, path: &str) -> Reply {
        send(self.addr, Method::GET, path, &[], None).await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        send(self.addr, Method::POST, path, &[], Some(body))
            .await
            .unwrap()
    }

    async fn post_with_key(&self, path: &str, key: &str, body: Value) -> Reply {
        send(
            self.addr,
            Method::POST,
            path,
            &[("idempotency-key", key)],
            Some(body),
        )
        .await
        .unwrap()
    }

    /// A new user with one EUR account; the account's id.
    async fn new_account(&self) -> String {
        let email = format!("{}@example.com", Uuid::now_v7());
        let user = self
            .post("/users", json!({ "name": "Ada", "email": email }))
            .await;
        assert_eq!(user.status, StatusCode::CREATED, "{user:?}");
        let path = format!("/users/{}/accounts", user.body["id"].as_str().unwrap());
        let account = self.post(&path, json!({ "currency": "EUR" })).await;
        assert_eq!(account.status, StatusCode::CREATED, "{account:?}");
        account.body["id"].as_str().unwrap().to_owned()
    }

    async fn top_up(&self, account: &str, key: &str, amount: &str) -> Reply {
        self.post_with_key(
            &format!("/accounts/{account}/topups"),
            key,
            json!({ "amount": amount }),
        )
        .await
    }

    async fn buy(&self, account: &str, amount: &str) -> Reply {
        self.post(
            &format!("/accounts/{account}/purchases"),
            json!({ "amount": amount }),
        )
        .await
    }

    /// The balance as the service reports it.
    async fn balance(&self, account: &str) -> String {
        let reply = self.get(&format!("/accounts/{account}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        reply.body["balance"].as_str().unwrap().to_owned()
    }

    /// The ledger as the service reports it.
    async fn ledger(&self, account: &str) -> Vec<Value> {
        let reply = self.get(&format!("/accounts/{account}/ledger")).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        reply.body.as_array().unwrap().clone()
    }
}

/// A response: status, headers, and the body as JSON (a JSON string when it is not JSON).
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// One request on a fresh HTTP/1.1 connection.
async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = match body {
        Some(json) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Full::new(Bytes::from(json.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    let response = sender.send_request(request.body(body)?).await?;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// A database of the test's own, with room for a crowd of requests waiting for the pool.
async fn database() -> TestDatabase {
    TestDatabase::with_config(|b| b.pool_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
}

/// The balance and the sum of the ledger, read from the database itself.
async fn stored(db: &DatabaseManager, account: &str) -> (Decimal, Decimal, i64) {
    let id: Uuid = account.parse().unwrap();
    let balance: Decimal = db
        .scalar("SELECT balance FROM accounts WHERE id = $1", (id,))
        .await
        .unwrap();
    let (sum, entries): (Decimal, i64) = db
        .fetch_one(
            "SELECT coalesce(sum(amount), 0), count(*) FROM ledger_entries WHERE account_id = $1",
            (id,),
        )
        .await
        .unwrap();
    (balance, sum, entries)
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Users and accounts.

#[tokio::test]
async fn users_and_accounts_are_created_listed_and_read() {
    let db = database().await;
    let service = Service::start(db.manager().clone()).await;

    let ada = service
        .post(
            "/users",
            json!({ "name": "Ada", "email": "Ada@Example.com" }),
        )
        .await;
    assert_eq!(ada.status, StatusCode::CREATED, "{ada:?}");
    assert_eq!(ada.body["email"], "ada@example.com");
    let ada_id = ada.body["id"].as_str().unwrap().to_owned();
    assert_eq!(ada_id.parse::<Uuid>().unwrap().get_version_num(), 7);
    assert!(ada.body["created_at"].is_string() && ada.body["updated_at"].is_string());

    let taken = service
        .post(
            "/users",
            json!({ "name": "Other", "email": "ada@example.com" }),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{taken:?}");
    assert_eq!(taken.body["code"], "email_taken");

    let bad = service
        .post("/users", json!({ "name": "", "email": "x@example.com" }))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
    let bob = service
        .post(
            "/users",
            json!({ "name": "Bob", "email": "bob@example.com" }),
        )
        .await;
    assert_eq!(bob.status, StatusCode::CREATED);

    let users = service.get("/users").await;
    assert_eq!(users.status, StatusCode::OK);
    let names: Vec<&str> = users
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Ada", "Bob"]);

    let accounts_path = format!("/users/{ada_id}/accounts");
    let eur = service
        .post(&accounts_path, json!({ "currency": "eur" }))
        .await;
    assert_eq!(eur.status, StatusCode::CREATED, "{eur:?}");
    assert_eq!(eur.body["currency"], "EUR");
    assert_eq!(eur.body["balance"], "0.00", "money is a decimal string");
    assert_eq!(eur.body["user_id"], ada_id.as_str());
    let usd = service
        .post(&accounts_path, json!({ "currency": "USD" }))
        .await;
    assert_eq!(usd.status, StatusCode::CREATED);
    let bad_currency = service
        .post(&accounts_path, json!({ "currency": "euro" }))
        .await;
    assert_eq!(bad_currency.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad_currency.body["code"], "invalid_currency");

    let listed = service.get(&accounts_path).await;
    assert_eq!(listed.status, StatusCode::OK);
    let currencies: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["currency"].as_str().unwrap())
        .collect();
    assert_eq!(currencies, ["EUR", "USD"]);

    let account = service
        .get(&format!("/accounts/{}", eur.body["id"].as_str().unwrap()))
        .await;
    assert_eq!(account.status, StatusCode::OK);
    assert_eq!(account.body, eur.body);

    let nobody = Uuid::now_v7();
    for path in [
        format!("/accounts/{nobody}"),
        format!("/accounts/{nobody}/ledger"),
        format!("/users/{nobody}/accounts"),
    ] {
        let reply = service.get(&path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {reply:?}");
        assert_eq!(reply.body["code"], "not_found");
    }
    let missing_user = service
        .post(
            &format!("/users/{nobody}/accounts"),
            json!({ "currency": "EUR" }),
        )
        .await;
    assert_eq!(missing_user.status, StatusCode::NOT_FOUND);
    let not_an_id = service.get("/accounts/42").await;
    assert_eq!(not_an_id.status, StatusCode::BAD_REQUEST);
    assert_eq!(not_an_id.body["code"], "invalid_id");
}

#[tokio::test]
async fn health_route_reports_the_database() {
    let db = database().await;
    let service = Service::start(db.manager().clone()).await;
    let health = service.get("/health").await;
    assert_eq!(health.status, StatusCode::OK, "{health:?}");
    assert_eq!(health.body["status"], "healthy");
    assert_eq!(health.body["connected"], true);
}

// ---------------------------------------------------------------------------------------------
// Top-ups and idempotency.

#[tokio::test]
async fn topup_replayed_with_the_same_key_credits_once() {
    let db = database().await;
    let service = Service::start(db.manager().clone()).await;
    let account = service.new_account().await;

    let first = service.top_up(&account, "key-1", "25.50").await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert_eq!(first.body["kind"], "topup");
    assert_eq!(first.body["amount"], "25.50");
    assert_eq!(first.body["balance_after"], "25.50");
    assert_eq!(first.body["idempotency_key"], "key-1");
    assert!(first.headers.get("idempotent-replayed").is_none());

    for _ in 0..3 {
        let replay = service.top_up(&account, "key-1", "25.50").await;
        assert_eq!(replay.status, first.status, "the first response's status");
        assert_eq!(replay.body, first.body, "the first response's body");
        assert_eq!(replay.headers.get("idempotent-replayed").unwrap(), "true");
    }
    assert_eq!(service.balance(&account).await, "25.50");
    assert_eq!(service.ledger(&account).await.len(), 1);

    // Another key is another top-up.
    let second = service.top_up(&account, "key-2", "4.50").await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(second.body["balance_after"], "30.00");
    assert_eq!(
        stored(db.manager(), &account).await,
        (dec("30.00"), dec("30.00"), 2)
    );
}

#[tokio::test]
async fn concurrent_topup_replays_credit_once() {
    let db = database().await;
    let service = Arc::new(Service::start(db.manager().clone()).await);
    let account = service.new_account().await;

    let requests: Vec<_> = (0..50)
        .map(|_| {
            let service = Arc::clone(&service);
            let account = account.clone();
            tokio::spawn(async move { service.top_up(&account, "same-key", "10.00").await })
        })
        .collect();
    let mut replies = Vec::new();
    for request in requests {
        replies.push(request.await.unwrap());
    }

    for reply in &replies {
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        assert_eq!(reply.body, replies[0].body, "every reply is the first one");
    }
    let originals = replies
        .iter()
        .filter(|r| r.headers.get("idempotent-replayed").is_none())
        .count();
    assert_eq!(originals, 1, "exactly one request did the top-up");
    assert_eq!(service.balance(&account).await, "10.00");
    assert_eq!(
        stored(db.manager(), &account).await,
        (dec("10.00"), dec("10.00"), 1)
    );
}

#[tokio::test]
async fn topup_without_an_idempotency_key_is_rejected_with_400() {
    let db = database().await;
    let service = Service::start(db.manager().clone()).await;
    let account = service.new_account().await;

    let reply = service
        .post(
            &format!("/accounts/{account}/topups"),
            json!({ "amount": "10.00" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    assert_eq!(reply.body["code"], "idempotency_key_required");
    assert!(reply.body["error"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));
    assert_eq!(service.balance(&account).await, "0.00");
}

#[tokio::test]
async fn reusing_a_key_for_a_different_request_is_rejected_and_changes_nothing() {
    let db = database().await;
    let service = Service::start(db.manager().clone()).await;
    let account = service.new_account().await;

    assert_eq!(
        service.top_up(&account, "k", "10.00").await.status,
        StatusCode::CREATED
    );
    let other_amount = service.top_up(&account, "k", "99.00").await;
    assert_eq!(
        other_amount.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{other_amount:?}"
    );
    assert_eq!(other_amount.body["code"], "idempotency_key_reused");

    let as_purchase = service
        .post_with_key(
            &format!("/accounts/{account}/purchases"),
            "k",
            json!({ "amount": "10.00" }),
        )
        .await;
    assert_eq!(as_purchase.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        stored(db.manager(), &account).await,
        (dec("10.00"), dec("10.00"), 1)
    );
}

#[tokio::test]
async fn amounts_must_be_positive_decimal_strings_in_whole_cents() {
    let db = database().await;
    let service = Service::start(db.manager().clone()).await;
    let account = service.new_account().await;
    let path = format!("/accounts/{account}/topups");

    for (amount, code) in [
        (json!(10), "invalid_body"),
        (json!(10.5), "invalid_body"),
        (json!("ten"), "invalid_body"),
        (json!("0"), "invalid_amount"),
        (json!("-5.00"), "invalid_amount"),
        (json!("0.001"), "invalid_amount"),
        (json!("1000000000000.00"), "invalid_amount"),
    ] {
        let reply = service
            .post_with_key(&path, "k", json!({ "amount": amount }))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{amount}: {reply:?}"
        );
        assert_eq!(reply.body["code"], code, "{amount}: {reply:?}");
    }
    let not_json = send(
        service.addr,
        Method::POST,
        &path,
        &[
            ("idempotency-key", "k"),
            ("content-type", "application/json"),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST, "{not_json:?}");

    // Trailing zeros are fine: the amount is whole cents.
    let ok = service.top_up(&account, "k", "12.300").await;
    assert_eq!(ok.status, StatusCode::CREATED, "{ok:?}");
    assert_eq!(ok.body["amount"], "12.30");
    assert_eq!(service.balance(&account).await, "12.30");
}

// ---------------------------------------------------------------------------------------------
// Purchases.

#[tokio::test]
async fn purchase_beyond_balance_is_rejected_and_changes_nothing() {
    let db = database().await;
    let service = Service::start(db.manager().clone()).await;
    let account = service.new_account().await;
    service.top_up(&account, "k", "10.00").await;
    let before = service.get(&format!("/accounts/{account}")).await.body;

    let refused = service.buy(&account, "10.01").await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
    assert_eq!(refused.body["code"], "insufficient_funds");
    let message = refused.body["error"].as_str().unwrap();
    assert!(
        message.contains("10.00") && message.contains("10.01"),
        "{message}"
    );

    let after = service.get(&format!("/accounts/{account}")).await.body;
    assert_eq!(after, before, "balance and updated_at unchanged");
    assert_eq!(service.ledger(&account).await.len(), 1);

    // Exactly the balance is allowed, and leaves zero.
    let all_of_it = service.buy(&account, "10.00").await;
    assert_eq!(all_of_it.status, StatusCode::CREATED, "{all_of_it:?}");
    assert_eq!(all_of_it.body["amount"], "-10.00");
    assert_eq!(all_of_it.body["balance_after"], "0.00");
    assert_eq!(
        service.buy(&account, "0.01").await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        stored(db.manager(), &account).await,
        (dec("0.00"), dec("0.00"), 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_purchases_against_a_balance_for_one_hundred_give_exactly_one_hundred(
) {
    let db = database().await;
    let service = Arc::new(Service::start(db.manager().clone()).await);
    let account = service.new_account().await;
    assert_eq!(
        service.top_up(&account, "funding", "100.00").await.status,
        StatusCode::CREATED
    );

    let purchases: Vec<_> = (0..200)
        .map(|_| {
            let service = Arc::clone(&service);
            let account = account.clone();
            tokio::spawn(async move { service.buy(&account, "1.00").await })
        })
        .collect();
    let mut succeeded = 0;
    let mut refused = 0;
    for purchase in purchases {
        let reply = purchase.await.unwrap();
        match reply.status {
            StatusCode::CREATED => succeeded += 1,
            StatusCode::CONFLICT => {
                assert_eq!(reply.body["code"], "insufficient_funds", "{reply:?}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }
    assert_eq!((succeeded, refused), (100, 100));
    assert_eq!(service.balance(&account).await, "0.00");

    let (balance, ledger_sum, entries) = stored(db.manager(), &account).await;
    assert_eq!(balance, Decimal::ZERO);
    assert_eq!(ledger_sum, balance, "the ledger sums to the balance");
    assert_eq!(entries, 101);

    // Every entry's balance_after is the running sum: no two purchases saw the same balance.
    let ledger = service.ledger(&account).await;
    let mut running = Decimal::ZERO;
    for entry in &ledger {
        running += dec(entry["amount"].as_str().unwrap());
        assert_eq!(
            dec(entry["balance_after"].as_str().unwrap()),
            running,
            "{entry}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Transactions: commit on 2xx, roll back otherwise.

/// A route that really credits the account, through the service's own ledger code, then fails
/// with the status in its path: what a handler whose later step fails looks like.
async fn top_up_then_fail(
    mut tx: Tx,
    Path((id, status)): Path<(Uuid, u16)>,
) -> Result<Response, AppError> {
    let posting = ledger::top_up(tx.session().await?, id, Decimal::new(5000, 2), "doomed").await?;
    assert!(matches!(posting, ledger::Posting::Created(_)));
    let status = StatusCode::from_u16(status).unwrap();
    Ok((status, Json(json!({ "error": "a later step failed" }))).into_response())
}

/// Like [`top_up_then_fail`], panicking instead.
async fn top_up_then_panic(mut tx: Tx, Path(id): Path<Uuid>) -> StatusCode {
    ledger::top_up(
        tx.session().await.unwrap(),
        id,
        Decimal::new(5000, 2),
        "doomed",
    )
    .await
    .unwrap();
    panic!("the handler failed after writing (expected by the test)");
}

fn routes_with_failures() -> Router<DatabaseManager> {
    app::router()
        .route("/test/accounts/{id}/fail/{status}", post(top_up_then_fail))
        .route("/test/accounts/{id}/panic", post(top_up_then_panic))
}

#[tokio::test]
async fn failed_request_rolls_back_everything_it_wrote() {
    let db = database().await;
    let service = Service::start_with(db.manager().clone(), routes_with_failures()).await;
    let account = service.new_account().await;

    for status in [400, 404, 409, 422, 500, 503] {
        let reply = service
            .post(
                &format!("/test/accounts/{account}/fail/{status}"),
                json!({}),
            )
            .await;
        assert_eq!(reply.status.as_u16(), status);
        assert_eq!(
            stored(db.manager(), &account).await,
            (Decimal::ZERO, Decimal::ZERO, 0),
            "after a {status}: neither the balance update nor the ledger entry was kept"
        );
    }
    // The key was not left claimed: the real route now credits with it, and a 2xx commits.
    let real = service.top_up(&account, "doomed", "50.00").await;
    assert_eq!(real.status, StatusCode::CREATED, "{real:?}");
    assert!(real.headers.get("idempotent-replayed").is_none());
    assert_eq!(
        stored(db.manager(), &account).await,
        (dec("50.00"), dec("50.00"), 1)
    );

    // A real route failing on a constraint: nothing of the request is kept either.
    let users_before = service.get("/users").await.body.as_array().unwrap().len();
    let email = service.get("/users").await.body[0]["email"].clone();
    let duplicate = service
        .post("/users", json!({ "name": "Twin", "email": email }))
        .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(
        service.get("/users").await.body.as_array().unwrap().len(),
        users_before
    );
}

#[tokio::test]
async fn panicking_handler_rolls_back() {
    let db = database().await;
    let service = Service::start_with(db.manager().clone(), routes_with_failures()).await;
    let account = service.new_account().await;

    // axum has no panic handler by default: the connection is dropped without a response.
    let outcome = send(
        service.addr,
        Method::POST,
        &format!("/test/accounts/{account}/panic"),
        &[],
        Some(json!({})),
    )
    .await;
    assert!(outcome.is_err(), "no response after a panic: {outcome:?}");

    assert_eq!(
        stored(db.manager(), &account).await,
        (Decimal::ZERO, Decimal::ZERO, 0)
    );
    // The transaction is gone from the server too: its row lock does not block the next
    // top-up of the same account, which succeeds with the same key.
    let next = tokio::time::timeout(PATIENCE, service.top_up(&account, "doomed", "50.00"))
        .await
        .expect("the panicked request's row lock was released");
    assert_eq!(next.status, StatusCode::CREATED, "{next:?}");
    assert_eq!(service.balance(&account).await, "50.00");
}

// ---------------------------------------------------------------------------------------------
// The ledger is append-only, and set-up can run on every start.

#[tokio::test]
async fn ledger_refuses_updates_and_deletes_and_setup_runs_again() {
    let db = database().await;
    let service = Service::start(db.manager().clone()).await;
    let account = service.new_account().await;
    service.top_up(&account, "k", "10.00").await;

    app::setup(db.manager()).await.expect("setup is idempotent");

    for sql in [
        "UPDATE ledger_entries SET amount = 1000",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries",
    ] {
        let err = db.manager().execute(sql, ()).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&coredb::SqlState::RESTRICT_VIOLATION),
            "{sql}: {err}"
        );
    }
    let err = db
        .manager()
        .execute("UPDATE accounts SET balance = -1", ())
        .await
        .unwrap_err();
    assert_eq!(
        err.constraint(),
        Some("accounts_balance_not_negative"),
        "{err}"
    );
    assert_eq!(
        stored(db.manager(), &account).await,
        (dec("10.00"), dec("10.00"), 1)
    );
}

// ---------------------------------------------------------------------------------------------
// Lifecycle: graceful shutdown, and health with the database gone.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish_then_closes_the_pool() {
    let db = database().await;
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s, r) = (Arc::clone(&started), Arc::clone(&release));
    let routes = app::router().route(
        "/test/accounts/{id}/slow-topup",
        post(move |mut tx: Tx, Path(id): Path<Uuid>| async move {
            let posting =
                ledger::top_up(tx.session().await?, id, Decimal::new(500, 2), "slow").await?;
            // Tell the test the request is in flight, then wait until it says to go on.
            s.notify_one();
            r.notified().await;
            let ledger::Posting::Created(entry) = posting else {
                panic!("not a replay");
            };
            Ok::<_, AppError>((StatusCode::CREATED, Json(entry)))
        }),
    );
    let mut service = Service::start_with(db.manager().clone(), routes).await;
    let account = service.new_account().await;

    let addr = service.addr;
    let path = format!("/test/accounts/{account}/slow-topup");
    let in_flight = tokio::spawn(async move { send(addr, Method::POST, &path, &[], None).await });
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .expect("the slow request started");

    service.begin_shutdown();
    // The listener closes at once: new connections are refused from then on.
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the listener never closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ... but the request in flight is still being served, and the pool is open for it.
    assert!(
        !service.task.is_finished(),
        "serve returned before the request finished"
    );
    assert!(!service.db.is_closed());

    release.notify_one();
    let reply = tokio::time::timeout(PATIENCE, in_flight)
        .await
        .expect("the in-flight request finished")
        .unwrap()
        .expect("a response, not a dropped connection");
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    assert_eq!(reply.body["balance_after"], "5.00");

    tokio::time::timeout(PATIENCE, &mut service.task)
        .await
        .expect("serve returned after the last request")
        .unwrap()
        .unwrap();
    assert!(service.db.is_closed(), "the pool is closed after serving");
    assert_eq!(service.db.status().in_use, 0);

    // The in-flight request's transaction committed before the pool closed.
    let check = DatabaseManager::from_config(db.config()).unwrap();
    let balance: Decimal = check
        .scalar(
            "SELECT balance FROM accounts WHERE id = $1",
            (account.parse::<Uuid>().unwrap(),),
        )
        .await
        .unwrap();
    assert_eq!(balance, dec("5.00"));
    check.close().await;
}

#[tokio::test]
async fn health_is_503_within_the_connect_timeout_when_the_database_is_stopped() {
    // A server of this test's own, so that stopping it disturbs no other test.
    let server = Arc::new(
        tokio::task::spawn_blocking(EmbeddedServer::start)
            .await
            .unwrap()
            .expect("embedded PostgreSQL starts"),
    );
    let connect_timeout = Duration::from_secs(1);
    let config = DatabaseConfig::from_url(&server.url())
        .unwrap()
        .to_builder()
        .ssl_mode(SslMode::Disable)
        .connect_timeout(connect_timeout)
        .pool_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut service = Service::start(DatabaseManager::from_config(&config).unwrap()).await;
    let account = service.new_account().await;

    let healthy = service.get("/health").await;
    assert_eq!(healthy.status, StatusCode::OK, "{healthy:?}");

    let stopping = Arc::clone(&server);
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap()
        .unwrap();

    let asked = Instant::now();
    let health = service.get("/health").await;
    let took = asked.elapsed();
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE, "{health:?}");
    assert_eq!(health.body["status"], "unhealthy");
    assert!(
        took < connect_timeout * 3,
        "answered in {took:?}, with a connect timeout of {connect_timeout:?}"
    );

    // Other routes answer 503 + Retry-After (within the pool timeout), not 500.
    let read = service.get(&format!("/accounts/{account}")).await;
    assert_eq!(read.status, StatusCode::SERVICE_UNAVAILABLE, "{read:?}");
    assert_eq!(read.headers.get("retry-after").unwrap(), "1");

    service.begin_shutdown();
    tokio::time::timeout(PATIENCE, &mut service.task)
        .await
        .expect("the service stops without its database")
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Metrics and traces.

#[tokio::test]
async fn metrics_route_answers_prometheus_text_with_pool_gauges_and_statement_histogram() {
    // Before the database: its pool registers its instruments with this recorder.
    prepaid::telemetry::prometheus();
    let db = TestDatabase::with_config(|b| b.pool_size(4).max_overflow(3))
        .await
        .unwrap();
    let service = Service::start(db.manager().clone()).await;
    let created = service
        .post(
            "/users",
            json!({ "name": "Grace", "email": "grace@example.com" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");

    let reply = service.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    let content_type = reply.headers[header::CONTENT_TYPE].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = reply.body.as_str().expect("text, not JSON");
    let config = db.config();
    let pool = format!(
        "db_client_connection_pool_name=\"{}:{}/{}\"",
        config.hosts()[0],
        config.ports()[0],
        db.name()
    );
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix) && l.contains(&pool))
            .unwrap_or_else(|| panic!("no {prefix} line for {pool} in:\n{text}"))
            .to_owned()
    };
    assert!(line("db_client_connection_max{").ends_with(" 7"));
    assert!(line("db_client_connection_idle_max{").ends_with(" 4"));
    let idle = line("db_client_connection_count{");
    assert!(idle.contains("db_client_connection_state="), "{idle}");
    assert!(line("db_client_connection_pending_requests{").ends_with(" 0"));
    assert!(
        line("coredb_connections_opened_total{").ends_with(" 1")
            || db.manager().metrics().created > 1
    );
    line("db_client_connection_wait_time_seconds_bucket{");

    let namespace = format!("db_namespace=\"{}\"", db.name());
    let inserts: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("db_client_operation_duration_seconds_bucket{")
                && l.contains(&namespace)
                && l.contains("db_operation_name=\"INSERT\"")
                && l.contains("db_system_name=\"postgresql\"")
        })
        .collect();
    assert!(!inserts.is_empty(), "an INSERT histogram in:\n{text}");
    assert!(
        inserts
            .iter()
            .any(|l| l.contains("le=\"+Inf\"") && !l.ends_with(" 0")),
        "{inserts:?}"
    );
    assert!(text.contains("# TYPE db_client_operation_duration_seconds histogram"));
    assert!(!text.contains("grace@example.com"), "no value in metrics");
}

#[tokio::test]
async fn spans_reach_opentelemetry_as_client_spans_named_after_their_operation() {
    use opentelemetry::trace::SpanKind;
    use opentelemetry_sdk::trace::InMemorySpanExporter;
    use tracing_subscriber::layer::SubscriberExt as _;

    let exporter = InMemorySpanExporter::default();
    let provider = prepaid::telemetry::tracer_provider(exporter.clone());
    let subscriber = tracing_subscriber::registry().with(prepaid::telemetry::otel_layer(&provider));
    // The test's runtime runs the service's tasks on this thread too.
    let _guard = support::span_capture::set_default(subscriber);

    let db = database().await;
    let service = Service::start(db.manager().clone()).await;
    let created = service
        .post(
            "/users",
            json!({ "name": "Katherine", "email": "katherine@example.com" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();

    let attribute = |span: &opentelemetry_sdk::trace::SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.as_str().into_owned())
    };
    let insert = spans
        .iter()
        .find(|s| {
            s.name == "INSERT"
                && attribute(s, "db.query.text")
                    .is_some_and(|q| q.starts_with("INSERT INTO") && q.contains("users"))
        })
        .unwrap_or_else(|| {
            panic!(
                "an INSERT span among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(insert.span_kind, SpanKind::Client);
    assert_eq!(
        attribute(insert, "db.system.name").as_deref(),
        Some("postgresql")
    );
    assert_eq!(
        attribute(insert, "db.namespace").as_deref(),
        Some(db.name())
    );
    assert_eq!(
        attribute(insert, "db.operation.name").as_deref(),
        Some("INSERT")
    );
    assert_eq!(
        attribute(insert, "db.response.returned_rows").as_deref(),
        Some("1")
    );

    let transaction = spans
        .iter()
        .find(|s| s.span_context.span_id() == insert.parent_span_id)
        .expect("the INSERT's parent span");
    assert_eq!(transaction.name, "transaction");
    assert_eq!(
        attribute(transaction, "coredb.outcome").as_deref(),
        Some("committed")
    );

    let everything = format!("{spans:?}");
    assert!(
        !everything.contains("katherine@example.com"),
        "no value in any span"
    );
    assert!(!everything.contains("Katherine"), "no value in any span");
    let _ = provider.shutdown();
}
