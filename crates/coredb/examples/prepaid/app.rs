//! The service assembled: routes, the request transaction layer, the schema, and serving with
//! a graceful shutdown. `main.rs` runs it; `tests/prepaid.rs` runs the same code over HTTP.

use std::future::Future;

use axum::routing::{get, post};
use axum::Router;
use coredb::axum::TxLayer;
use coredb::{model, DatabaseManager, Executor};
use tokio::net::TcpListener;

use super::{routes, telemetry};

/// The routes, before the transaction layer and the state are added.
pub fn router() -> Router<DatabaseManager> {
    Router::new()
        .route("/users", post(routes::create_user).get(routes::list_users))
        .route(
            "/users/{id}/accounts",
            post(routes::create_account).get(routes::list_accounts),
        )
        .route("/accounts/{id}", get(routes::get_account))
        .route("/accounts/{id}/ledger", get(routes::get_ledger))
        .route("/accounts/{id}/topups", post(routes::top_up))
        .route("/accounts/{id}/purchases", post(routes::purchase))
        .route("/health", get(coredb::axum::health))
        .route("/metrics", get(telemetry::metrics))
}

/// `routes` with a transaction per request (`TxLayer`) and the manager as state.
pub fn with_layers(routes: Router<DatabaseManager>, db: DatabaseManager) -> Router {
    routes.layer(TxLayer::new(db.clone())).with_state(db)
}

/// The whole service on `db`.
pub fn app(db: DatabaseManager) -> Router {
    with_layers(router(), db)
}

/// Statements `create_all` cannot derive from the models: the money invariants as CHECK
/// constraints, the per-account uniqueness of idempotency keys, and the trigger that keeps the
/// ledger append-only. Each is idempotent, so every start may run them.
const EXTRA_DDL: &[&str] = &[
    // The last line of defence: whatever the code does, no balance goes below zero.
    "DO $$ BEGIN
        ALTER TABLE accounts ADD CONSTRAINT accounts_balance_not_negative CHECK (balance >= 0);
     EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    "DO $$ BEGIN
        ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_amount_sign
            CHECK ((kind = 'topup' AND amount > 0) OR (kind = 'purchase' AND amount < 0));
        ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_balance_after_not_negative
            CHECK (balance_after >= 0);
     EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    // Also the index the replay lookup uses.
    "CREATE UNIQUE INDEX IF NOT EXISTS ledger_entries_account_idempotency_key
        ON ledger_entries (account_id, idempotency_key) WHERE idempotency_key IS NOT NULL",
    "CREATE OR REPLACE FUNCTION ledger_entries_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger_entries is append-only: % is not allowed', TG_OP
                USING ERRCODE = 'restrict_violation';
        END $$",
    "DO $$ BEGIN
        CREATE TRIGGER ledger_entries_append_only
            BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_entries
            FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_append_only();
     EXCEPTION WHEN duplicate_object THEN NULL; END $$",
];

/// Creates the tables (`create_all`) and the constraints above, all or nothing.
///
/// # Errors
/// When the database refuses a statement or cannot be reached.
pub async fn setup(db: &DatabaseManager) -> coredb::Result<()> {
    let mut session = db.session().await?;
    // Two instances starting at once would race on the catalog (CREATE .. IF NOT EXISTS is not
    // safe against a concurrent CREATE); a transaction-scoped advisory lock takes turns.
    session
        .execute("SELECT pg_advisory_xact_lock(7726601)", ())
        .await?;
    model::create_all(&mut session).await?;
    for sql in EXTRA_DDL {
        session.execute(sql, ()).await?;
    }
    session.commit().await
}

/// Serves `app` until `shutdown` completes, lets the requests in flight finish (their
/// transactions commit or roll back as usual), then closes `db`'s pool.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    db: DatabaseManager,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    // Every request has finished, so no transaction is open: closing only waits for
    // connections still on their way back to the pool.
    db.close().await;
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM (what `docker stop` and Kubernetes send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
