//! axum integration (feature `axum`): a request-scoped transaction, an error type that maps to
//! HTTP statuses, and a health route. The twin of core.db's FastAPI `Depends(get_async_session)`.
//!
//! ```no_run
//! use axum::{routing::{get, post}, Json, Router};
//! use coredb::axum::{DbError, Tx, TxLayer};
//! use coredb::{params, DatabaseManager, Executor};
//!
//! async fn create_user(mut tx: Tx, Json(name): Json<String>) -> Result<Json<i32>, DbError> {
//!     let id: i32 = tx
//!         .scalar("INSERT INTO users (name) VALUES (:name) RETURNING id", params! { "name" => name })
//!         .await?;
//!     Ok(Json(id)) // 2xx: committed after the handler returns; any other status: rolled back
//! }
//!
//! # async fn serve() -> coredb::Result<()> {
//! let lifespan = coredb::database_lifespan().await?;
//! let db: DatabaseManager = lifespan.manager().clone();
//! let app = Router::new()
//!     .route("/users", post(create_user))
//!     .route("/health", get(coredb::axum::health))
//!     .layer(TxLayer::new(db.clone()))
//!     .with_state(db);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await.unwrap();
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//!     .unwrap();
//! lifespan.shutdown().await; // after in-flight requests finished
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::axum::extract::{FromRequestParts, Request, State};
use ::axum::http::{header, request::Parts, StatusCode};
use ::axum::response::{IntoResponse, Response};
use ::axum::Json;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::error::{Error, ErrorKind, Result};
use crate::exec::{Reply, Returns};
use crate::health::HealthReport;
use crate::manager::DatabaseManager;
use crate::params::ParamList;
use crate::query::sealed::{self, Sealed as _};
use crate::query::Executor;
use crate::session::Session;

/// The request's transaction, shared between the [`TxLayer`] and the [`Tx`] extractor.
#[derive(Clone)]
struct TxSlot {
    manager: DatabaseManager,
    session: Arc<Mutex<Option<Session>>>,
}

/// Gives every request a lazily begun transaction: committed when the response status is 2xx
/// or 3xx, rolled back otherwise, and also when the handler panics or the client goes away
/// (the transaction is dropped, which rolls it back).
#[derive(Clone)]
pub struct TxLayer {
    manager: DatabaseManager,
}

impl TxLayer {
    /// A layer whose transactions come from `manager`.
    pub fn new(manager: DatabaseManager) -> Self {
        TxLayer { manager }
    }
}

impl<S> tower_layer::Layer<S> for TxLayer {
    type Service = TxService<S>;

    fn layer(&self, inner: S) -> TxService<S> {
        TxService {
            inner,
            manager: self.manager.clone(),
        }
    }
}

/// The service made by [`TxLayer`].
#[derive(Clone)]
pub struct TxService<S> {
    inner: S,
    manager: DatabaseManager,
}

impl<S> tower_service::Service<Request> for TxService<S>
where
    S: tower_service::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let slot = TxSlot {
            manager: self.manager.clone(),
            session: Arc::new(Mutex::new(None)),
        };
        request.extensions_mut().insert(slot.clone());
        // The ready service handles this request; a fresh clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(finish(slot, response).await)
        })
    }
}

/// Commits or rolls back the request's transaction, if one was begun, by the response status.
async fn finish(slot: TxSlot, response: Response) -> Response {
    let session = slot.session.lock().await.take();
    let Some(session) = session else {
        return response;
    };
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        match session.commit().await {
            Ok(()) => response,
            Err(err) => DbError::from(err).into_response(),
        }
    } else {
        if let Err(err) = session.rollback().await {
            tracing::debug!(target: "coredb", error = %err, "rollback after an error response failed");
        }
        response
    }
}

/// The request's transaction, begun on its first statement; extract it in a handler.
///
/// Needs [`TxLayer`] on the route. It implements [`Executor`], so the whole query API works on
/// it; [`session`](Self::session) gives the [`Session`] itself (for savepoints).
pub struct Tx {
    slot: TxSlot,
    guard: OwnedMutexGuard<Option<Session>>,
}

impl Tx {
    /// The transaction, begun now if it was not yet.
    ///
    /// # Errors
    /// When no connection can be had or `BEGIN` fails.
    ///
    /// # Cancel safety
    /// Cancel safe: a `BEGIN` cut off leaves no transaction behind; its connection is closed.
    pub async fn session(&mut self) -> Result<&mut Session> {
        if self.guard.is_none() {
            *self.guard = Some(self.slot.manager.session().await?);
        }
        Ok(self.guard.as_mut().expect("set above"))
    }

    /// The manager behind the transaction.
    pub fn manager(&self) -> &DatabaseManager {
        &self.slot.manager
    }

    async fn run(&mut self, sql: &str, params: ParamList<'_>, want: Returns) -> Result<Reply> {
        self.session().await?.run_statement(sql, params, want).await
    }
}

impl Executor for Tx {}

impl sealed::Sealed for Tx {
    fn run_statement<'a>(
        &'a mut self,
        sql: &'a str,
        params: ParamList<'a>,
        want: Returns,
    ) -> impl Future<Output = Result<Reply>> + Send + 'a {
        self.run(sql, params, want)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tx {
    type Rejection = DbError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, DbError> {
        let slot = parts.extensions.get::<TxSlot>().cloned().ok_or_else(|| {
            DbError(Error::config(
                "the Tx extractor needs coredb::axum::TxLayer on the router (.layer(TxLayer::new(db)))",
            ))
        })?;
        let guard = Arc::clone(&slot.session)
            .try_lock_owned()
            .map_err(|_| DbError(Error::config("Tx can be extracted once per request")))?;
        Ok(Tx { slot, guard })
    }
}

/// A coredb error as an HTTP response: 503 with `Retry-After` when the database is unreachable
/// or the pool is exhausted, 409 for a unique violation, 500 otherwise. The JSON body says what
/// happened in general terms; SQL, parameters and passwords never reach the client.
#[derive(Debug)]
pub struct DbError(pub Error);

impl From<Error> for DbError {
    fn from(err: Error) -> Self {
        DbError(err)
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl crate::retry::TransientError for DbError {
    fn is_transient(&self) -> bool {
        self.0.is_transient()
    }
}

impl IntoResponse for DbError {
    fn into_response(self) -> Response {
        let err = &self.0;
        let unavailable = matches!(
            err.kind(),
            ErrorKind::PoolTimeout
                | ErrorKind::Connect
                | ErrorKind::ConnectionLost
                | ErrorKind::PoolClosed
        ) || err.is_transient();
        let (status, message) = if unavailable {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable or busy; retry shortly".to_owned(),
            )
        } else if err.is_unique_violation() {
            (
                StatusCode::CONFLICT,
                match err.constraint() {
                    Some(c) => format!("a record with the same unique value already exists ({c})"),
                    None => "a record with the same unique value already exists".to_owned(),
                },
            )
        } else {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal database error".to_owned(),
            )
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(target: "coredb", error = %err, "request failed with a database error");
        } else {
            tracing::debug!(target: "coredb", error = %err, %status, "request failed with a database error");
        }
        let body =
            Json(serde_json::json!({ "error": message, "code": err.code().map(|c| c.code()) }));
        let mut response = (status, body).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

/// The health route: the [`HealthReport`] as JSON, 200 when healthy and 503 when not.
pub async fn health(State(db): State<DatabaseManager>) -> (StatusCode, Json<HealthReport>) {
    let report = db.health_report().await;
    let status = if report.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}
