//! axum integration (feature `axum`): a request-scoped transaction, error responses with a
//! documented SQLSTATE-to-status mapping, and a health route. The twin of core.db's FastAPI
//! `Depends(get_async_session)`.
//!
//! ```no_run
//! use axum::{routing::{get, post}, Json, Router};
//! use coredb::axum::{Tx, TxLayer};
//! use coredb::{params, DatabaseManager, Executor};
//!
//! // `coredb::Error` is a handler error as it is: a unique violation becomes 409, a foreign-key
//! // violation 409, a too-long name 422, a lost connection 503 with `Retry-After`, ...
//! async fn create_user(mut tx: Tx, Json(name): Json<String>) -> Result<Json<i32>, coredb::Error> {
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
//!
//! # Error responses
//!
//! A handler may fail with [`coredb::Error`](Error) or [`DbError`]; both become a response by
//! the table in [`ErrorResponses`]: 409 for a conflict with other rows, 422 for a value the
//! database refuses, 503 with `Retry-After` when a retry may succeed, 504 when the database did
//! not answer in time, 404 for no row, 500 for the rest. The body is
//! `{"error": "<what happened, in general terms>", "code": "<SQLSTATE or null>"}`: no SQL, no
//! values, no constraint names unless the application asks for them. An application changes
//! the table with [`TxLayer::error_responses`].
//!
//! # Streaming responses
//!
//! [`JsonLines`] writes a query's rows as JSON lines and [`CopyBody`] a `COPY .. TO STDOUT`'s
//! output (a CSV export, say) into the response as they arrive, without gathering them:
//!
//! ```no_run
//! use axum::extract::State;
//! use coredb::axum::{CopyBody, JsonLines};
//! use coredb::{DatabaseManager, RowStream};
//!
//! #[derive(serde::Serialize, coredb::FromRow)]
//! struct Event { id: i64, kind: String }
//!
//! async fn events(State(db): State<DatabaseManager>) -> Result<JsonLines<RowStream<'static, Event>>, coredb::Error> {
//!     Ok(JsonLines(db.stream("SELECT id, kind FROM events ORDER BY id", ()).await?))
//! }
//!
//! async fn export(State(db): State<DatabaseManager>) -> Result<CopyBody, coredb::Error> {
//!     let csv = db.copy_out("COPY events TO STDOUT WITH (FORMAT csv, HEADER)").await?;
//!     Ok(CopyBody::csv(csv))
//! }
//! ```
//!
//! A failure half-way cuts the response short (the client sees an incomplete body, never a
//! complete-looking one) and is logged at WARN.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ::axum::body::Body;
use ::axum::extract::{FromRequestParts, Request, State};
use ::axum::http::{header, request::Parts, HeaderValue, StatusCode};
use ::axum::response::{IntoResponse, Response};
use ::axum::Json;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_postgres::error::SqlState;

use crate::error::{Error, ErrorKind, Result};
use crate::exec::{CopyData, Read, Reply, Returns, RowValues, Streaming};
use crate::health::HealthReport;
use crate::manager::DatabaseManager;
use crate::params::ParamList;
use crate::query::sealed::{self, Sealed as _};
use crate::query::{CopyOutStream, Executor};
use crate::session::Session;
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use serde::Serialize;

tokio::task_local! {
    /// The error responses of the [`TxLayer`] handling the current request. A task-local, not
    /// a request extension, because `IntoResponse` sees only the error, never the request.
    static RESPONSES: Arc<ErrorResponses>;
}

/// The request's transaction, shared between the [`TxLayer`] and the [`Tx`] extractor.
#[derive(Clone)]
struct TxSlot {
    manager: DatabaseManager,
    session: Arc<Mutex<Option<Session>>>,
}

/// Gives every request a lazily begun transaction: committed when the response status is 2xx
/// or 3xx, rolled back otherwise, and also when the handler panics or the client goes away
/// (the transaction is dropped, which rolls it back).
///
/// Database errors returned by the handlers under it become responses by its
/// [`ErrorResponses`] (the default table unless [`error_responses`](Self::error_responses)
/// was called).
#[derive(Clone)]
pub struct TxLayer {
    manager: DatabaseManager,
    responses: Arc<ErrorResponses>,
}

impl TxLayer {
    /// A layer whose transactions come from `manager`, with the default [`ErrorResponses`].
    pub fn new(manager: DatabaseManager) -> Self {
        TxLayer {
            manager,
            responses: Arc::new(ErrorResponses::new()),
        }
    }

    /// Renders the database errors of the requests under this layer with `responses`: the
    /// errors handlers return (`coredb::Error` or [`DbError`]), the [`Tx`] extractor's
    /// rejections, and a failed `COMMIT`.
    ///
    /// ```no_run
    /// use axum::http::StatusCode;
    /// use coredb::axum::{ErrorResponses, TxLayer};
    /// use coredb::{ErrorKind, SqlState};
    ///
    /// # fn layer(db: coredb::DatabaseManager) -> TxLayer {
    /// TxLayer::new(db).error_responses(
    ///     ErrorResponses::new()
    ///         // A missing customer is the client's mistake here, not a conflict.
    ///         .status_for_code(SqlState::FOREIGN_KEY_VIOLATION, StatusCode::UNPROCESSABLE_ENTITY)
    ///         .status_for_kind(ErrorKind::Timeout, StatusCode::SERVICE_UNAVAILABLE)
    ///         .include_schema_names(true), // an internal API: name the constraint
    /// )
    /// # }
    /// ```
    pub fn error_responses(mut self, responses: ErrorResponses) -> Self {
        self.responses = Arc::new(responses);
        self
    }
}

impl<S> tower_layer::Layer<S> for TxLayer {
    type Service = TxService<S>;

    fn layer(&self, inner: S) -> TxService<S> {
        TxService {
            inner,
            manager: self.manager.clone(),
            responses: Arc::clone(&self.responses),
        }
    }
}

/// The service made by [`TxLayer`].
#[derive(Clone)]
pub struct TxService<S> {
    inner: S,
    manager: DatabaseManager,
    responses: Arc<ErrorResponses>,
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
            // Reads through `tx.manager().reader()` see the request's own writes.
            manager: self.manager.read_your_writes(),
            session: Arc::new(Mutex::new(None)),
        };
        request.extensions_mut().insert(slot.clone());
        // The ready service handles this request; a fresh clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let responses = Arc::clone(&self.responses);
        Box::pin(async move {
            // The handler (and its extractors) run inside the scope, so the errors they turn
            // into responses find this layer's table.
            let handled = async move { inner.call(request).await };
            let response = RESPONSES.scope(Arc::clone(&responses), handled).await?;
            Ok(finish(slot, &responses, response).await)
        })
    }
}

/// Commits or rolls back the request's transaction, if one was begun, by the response status.
async fn finish(slot: TxSlot, responses: &ErrorResponses, response: Response) -> Response {
    let session = slot.session.lock().await.take();
    let Some(session) = session else {
        return response;
    };
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        match session.commit().await {
            Ok(()) => response,
            // E.g. a deferred constraint checked at COMMIT: the client learns nothing was kept.
            Err(err) => responses.response(&err),
        }
    } else {
        if let Err(err) = session.rollback().await {
            tracing::debug!(target: "coredb", kind = ?err.kind(), code = err.code().map(SqlState::code), "rollback after an error response failed");
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

    /// The manager behind the transaction, scoped to the request: writes made through it
    /// (its transactions and autocommit writes) are seen by reads through its
    /// [`reader`](DatabaseManager::reader) within the same request (see
    /// [`DatabaseManager::read_your_writes`]).
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

    async fn start_stream<'a, 'p>(
        &'a mut self,
        sql: &'p str,
        params: ParamList<'p>,
        read: Read,
    ) -> Result<Streaming<'a>> {
        self.session().await?.start_stream(sql, params, read).await
    }

    async fn copy_in_data<'a>(&'a mut self, sql: &'a str, data: CopyData<'a>) -> Result<u64> {
        self.session().await?.copy_in_data(sql, data).await
    }

    async fn copy_rows_in<'a, 'v>(
        &'a mut self,
        copy: &'a str,
        insert: &'a str,
        rows: RowValues<'v>,
    ) -> Result<u64> {
        self.session().await?.copy_rows_in(copy, insert, rows).await
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

/// A coredb error as a handler error; it becomes a response like [`coredb::Error`](Error)
/// does (see [`ErrorResponses`]). Useful as a variant of an application's own error type.
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
        self.0.into_response()
    }
}

/// The response of the [`TxLayer`] handling the request ([`ErrorResponses`]; the default table
/// outside one), so `Result<_, coredb::Error>` is a handler's return type as it is.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        RESPONSES
            .try_with(|responses| responses.response(&self))
            .unwrap_or_else(|_| ErrorResponses::new().response(&self))
    }
}

/// How database errors become HTTP responses: the status for each error, what the JSON body
/// shows, and the `Retry-After` of a 503. Install it with [`TxLayer::error_responses`].
///
/// # The default table
///
/// | error | status | `error` in the body |
/// |---|---|---|
/// | `23505` unique violation | 409 | a record with the same unique value already exists |
/// | `23503` foreign-key violation | 409 | a referenced record does not exist, or the record is still referenced |
/// | `23P01` exclusion violation, other class `23` | 409 | the change conflicts with existing records |
/// | `23502` not-null violation | 422 | a required value is missing |
/// | `23514` check violation | 422 | a value is not allowed |
/// | `22001` string too long | 422 | a value is too long |
/// | `22P02` invalid text representation (also a value not in an enum) | 422 | a value is not valid for its type |
/// | `22003` numeric value out of range | 422 | a number is out of range |
/// | other class `22` (data exception) | 422 | a value is invalid |
/// | `40001` serialization failure, `40P01` deadlock, `55P03` lock not available | 503 + `Retry-After` | the request conflicted with concurrent requests; retry shortly |
/// | [`ConnectionLost`](ErrorKind::ConnectionLost), [`Connect`](ErrorKind::Connect), [`PoolTimeout`](ErrorKind::PoolTimeout), [`PoolClosed`](ErrorKind::PoolClosed), class `08`, class `53` (`53300` too many connections), `57P01`/`57P02`/`57P03` shutdown or start-up | 503 + `Retry-After` | the database is unavailable or busy; retry shortly |
/// | `57014` statement timeout (or cancel), [`Timeout`](ErrorKind::Timeout) | 504 | the database did not answer in time |
/// | [`NotFound`](ErrorKind::NotFound) (`fetch_one` found no row) | 404 | not found |
/// | anything else (SQL errors, [`Params`](ErrorKind::Params), [`Decode`](ErrorKind::Decode), ...) | 500 | internal database error |
///
/// Why: 409 means the request conflicts with *other* rows (a duplicate, a missing or still
/// referencing row: one SQLSTATE covers both directions of a foreign key, so both are a
/// conflict with the current data); 422 means a value of the request itself is refused, like
/// axum's own 422 for a JSON body of the wrong shape. 503 is for what a retry may fix (every
/// error whose [`is_transient`](Error::is_transient) is true lands here). 504, not 503: the
/// database is up but did not finish in time, and the same slow statement sent again right away
/// usually fails again, so no `Retry-After` invites it. A data exception can also come from a
/// bug (a `1/0` in a report); map such a code to 500 with
/// [`status_for_code`](Self::status_for_code).
///
/// # The body
///
/// `{"error": "...", "code": "23505"}`: the text of the table and the SQLSTATE (`null` for
/// errors that are not the server's). Never SQL, parameter values or constraint names, unless
/// asked for: [`include_schema_names`](Self::include_schema_names) adds `constraint`, `table`
/// and `column`; [`include_detail`](Self::include_detail) adds the server's `message` and
/// `detail`, which quote the offending values.
///
/// # Logs
///
/// Under the target `coredb`: a 4xx at DEBUG with the status, kind and SQLSTATE only; a 5xx at
/// WARN when it passes by itself (the 503 and 504 rows, but for a connection refused for good,
/// such as a wrong password) and at ERROR otherwise, with the SQLSTATE, the server's message
/// (left out for data exceptions, class `22`, which quote the value) and the statement as
/// sent. Never the server's `detail` (`Key (customer_id)=(42)`) nor parameter values, whatever
/// the body shows.
///
/// ```no_run
/// use axum::http::StatusCode;
/// use coredb::axum::ErrorResponses;
/// use coredb::SqlState;
/// use std::time::Duration;
///
/// let responses = ErrorResponses::new()
///     .status_for_code(SqlState::FOREIGN_KEY_VIOLATION, StatusCode::UNPROCESSABLE_ENTITY)
///     .status_for_code(SqlState::DIVISION_BY_ZERO, StatusCode::INTERNAL_SERVER_ERROR)
///     .retry_after(Duration::from_secs(5));
/// # let _ = responses;
/// ```
#[derive(Debug, Clone)]
pub struct ErrorResponses {
    by_code: Vec<(SqlState, StatusCode)>,
    by_kind: Vec<(ErrorKind, StatusCode)>,
    schema_names: bool,
    detail: bool,
    retry_after: HeaderValue,
}

impl Default for ErrorResponses {
    fn default() -> Self {
        Self::new()
    }
}

impl ErrorResponses {
    /// The default table (see above), bodies without names or values, `Retry-After: 1`.
    pub fn new() -> Self {
        ErrorResponses {
            by_code: Vec::new(),
            by_kind: Vec::new(),
            schema_names: false,
            detail: false,
            retry_after: HeaderValue::from_static("1"),
        }
    }

    /// Answers server errors with SQLSTATE `code` with `status`. Wins over
    /// [`status_for_kind`](Self::status_for_kind) and the default table.
    pub fn status_for_code(mut self, code: SqlState, status: StatusCode) -> Self {
        self.by_code.retain(|(c, _)| *c != code);
        self.by_code.push((code, status));
        self
    }

    /// Answers errors of `kind` with `status`, unless a
    /// [`status_for_code`](Self::status_for_code) matches their SQLSTATE. Wins over the
    /// default table: `ErrorKind::Query` covers every SQLSTATE-based row of it.
    pub fn status_for_kind(mut self, kind: ErrorKind, status: StatusCode) -> Self {
        self.by_kind.retain(|(k, _)| *k != kind);
        self.by_kind.push((kind, status));
        self
    }

    /// Adds the `constraint`, `table` and `column` the server named to bodies (off by default:
    /// they describe the schema to whoever calls the API).
    pub fn include_schema_names(mut self, include: bool) -> Self {
        self.schema_names = include;
        self
    }

    /// Adds the server's `message` and `detail` to bodies (off by default: they quote the
    /// offending values, such as `Key (email)=(ada@example.com) already exists`). Logs never
    /// carry them.
    pub fn include_detail(mut self, include: bool) -> Self {
        self.detail = include;
        self
    }

    /// The `Retry-After` of 503 responses, in whole seconds rounded up (1 by default).
    pub fn retry_after(mut self, wait: Duration) -> Self {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.retry_after = HeaderValue::from(seconds);
        self
    }

    /// The status `err` is answered with.
    pub fn status(&self, err: &Error) -> StatusCode {
        let by_code = err
            .code()
            .and_then(|code| self.by_code.iter().find(|(c, _)| c == code))
            .map(|(_, status)| *status);
        let by_kind = || {
            self.by_kind
                .iter()
                .find(|(k, _)| *k == err.kind())
                .map(|(_, status)| *status)
        };
        by_code
            .or_else(by_kind)
            .unwrap_or_else(|| Category::of(err).status())
    }

    /// The response for `err`: [`status`](Self::status), the JSON body, `Retry-After` on a
    /// 503; and the log line (see [Logs](ErrorResponses#logs)). For an application's own error type
    /// that wraps `coredb::Error` outside a [`TxLayer`]; under one, `err.into_response()` does
    /// this with the layer's table.
    pub fn response(&self, err: &Error) -> Response {
        let category = Category::of(err);
        let status = self.status(err);
        log(err, category, status);
        let mut body = serde_json::Map::new();
        body.insert("error".into(), category.description().into());
        body.insert("code".into(), err.code().map(SqlState::code).into());
        if let Some(db) = err.db_error() {
            if self.schema_names {
                for (key, value) in [
                    ("constraint", &db.constraint),
                    ("table", &db.table),
                    ("column", &db.column),
                ] {
                    if let Some(value) = value {
                        body.insert(key.into(), value.as_str().into());
                    }
                }
            }
            if self.detail {
                body.insert("message".into(), db.message.as_str().into());
                if let Some(detail) = &db.detail {
                    body.insert("detail".into(), detail.as_str().into());
                }
            }
        }
        let mut response = (status, Json(serde_json::Value::Object(body))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, self.retry_after.clone());
        }
        response
    }
}

/// One row of the default table: its status and the body's description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Unique,
    ForeignKey,
    Integrity,
    NotNull,
    Check,
    TooLong,
    InvalidText,
    OutOfRange,
    InvalidValue,
    Contention,
    Unavailable,
    Timeout,
    NotFound,
    Internal,
}

impl Category {
    fn of(err: &Error) -> Category {
        match err.kind() {
            ErrorKind::Connect
            | ErrorKind::ConnectionLost
            | ErrorKind::PoolTimeout
            | ErrorKind::PoolClosed => Category::Unavailable,
            ErrorKind::Timeout => Category::Timeout,
            ErrorKind::NotFound => Category::NotFound,
            ErrorKind::Query => err.code().map_or(Category::Internal, |code| {
                Category::of_code(code, err.is_transient())
            }),
            _ => Category::Internal,
        }
    }

    fn of_code(code: &SqlState, transient: bool) -> Category {
        let code = code.code();
        match code {
            "23505" => Category::Unique,
            "23503" => Category::ForeignKey,
            "23502" => Category::NotNull,
            "23514" => Category::Check,
            "22001" => Category::TooLong,
            "22P02" => Category::InvalidText,
            "22003" => Category::OutOfRange,
            "40001" | "40P01" | "55P03" => Category::Contention,
            "57014" => Category::Timeout,
            "57P01" | "57P02" | "57P03" => Category::Unavailable,
            _ if code.starts_with("23") => Category::Integrity,
            _ if code.starts_with("22") => Category::InvalidValue,
            _ if code.starts_with("08") || code.starts_with("53") || transient => {
                Category::Unavailable
            }
            _ => Category::Internal,
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Category::Unique | Category::ForeignKey | Category::Integrity => StatusCode::CONFLICT,
            Category::NotNull
            | Category::Check
            | Category::TooLong
            | Category::InvalidText
            | Category::OutOfRange
            | Category::InvalidValue => StatusCode::UNPROCESSABLE_ENTITY,
            Category::Contention | Category::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Category::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Category::NotFound => StatusCode::NOT_FOUND,
            Category::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// For the client: what happened, in general terms that hold whatever the status.
    fn description(self) -> &'static str {
        match self {
            Category::Unique => "a record with the same unique value already exists",
            Category::ForeignKey => {
                "a referenced record does not exist, or the record is still referenced"
            }
            Category::Integrity => "the change conflicts with existing records",
            Category::NotNull => "a required value is missing",
            Category::Check => "a value is not allowed",
            Category::TooLong => "a value is too long",
            Category::InvalidText => "a value is not valid for its type",
            Category::OutOfRange => "a number is out of range",
            Category::InvalidValue => "a value is invalid",
            Category::Contention => {
                "the request conflicted with concurrent requests; retry shortly"
            }
            Category::Unavailable => "the database is unavailable or busy; retry shortly",
            Category::Timeout => "the database did not answer in time",
            Category::NotFound => "not found",
            Category::Internal => "internal database error",
        }
    }
}

/// Logs an error response without values: never the server's `detail` (it quotes keys and
/// rows) nor parameters; the server's message only where it cannot quote the input.
fn log(err: &Error, category: Category, status: StatusCode) {
    let kind = err.kind();
    let code = err.code().map(SqlState::code);
    if !status.is_server_error() {
        // The client's mistake: nothing for the service's operators to act on.
        tracing::debug!(target: "coredb", status = status.as_u16(), ?kind, code, "database error answered with a client error");
        return;
    }
    let message = match err.db_error() {
        // Data exceptions quote the refused input: `invalid input syntax for type integer: "x"`.
        Some(_) if code.is_some_and(|c| c.starts_with("22")) => None,
        Some(db) => Some(db.message.as_str()),
        // coredb's own messages never hold values.
        None => Some(err.message()),
    };
    let statement = err.statement();
    // WARN for what passes by itself (busy, restarting, slow); ERROR for what someone must fix,
    // including a connection refused for good (a wrong password, a missing database).
    let passes = match category {
        Category::Contention | Category::Timeout => true,
        Category::Unavailable => kind != ErrorKind::Connect || err.is_transient(),
        _ => false,
    };
    if passes {
        tracing::warn!(target: "coredb", status = status.as_u16(), ?kind, code, message, statement, "database error answered with a server error; a retry may succeed");
    } else {
        tracing::error!(target: "coredb", status = status.as_u16(), ?kind, code, message, statement, "database error answered with a server error");
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

/// A response whose body is the rows of `S` as JSON lines (`application/x-ndjson`), written as
/// they arrive; see the [module docs](self#streaming-responses).
pub struct JsonLines<S>(pub S);

impl<S, T> IntoResponse for JsonLines<S>
where
    S: Stream<Item = Result<T>> + Send + 'static,
    T: Serialize,
{
    fn into_response(self) -> Response {
        let lines = self.0.map(|row| {
            let mut line = serde_json::to_vec(&row?).map_err(|e| {
                Error::new(
                    ErrorKind::Decode,
                    format!("a row could not be written as JSON: {e}"),
                )
            })?;
            line.push(b'\n');
            Ok(Bytes::from(line))
        });
        streamed("application/x-ndjson", lines)
    }
}

/// A response whose body is the output of a `COPY .. TO STDOUT`, written as it arrives; see
/// the [module docs](self#streaming-responses).
pub struct CopyBody {
    data: CopyOutStream<'static>,
    content_type: &'static str,
}

impl CopyBody {
    /// `COPY .. WITH (FORMAT csv)` output, as `text/csv`.
    pub fn csv(data: CopyOutStream<'static>) -> Self {
        Self::new(data, "text/csv; charset=utf-8")
    }

    /// Output of any format, with the given `Content-Type`.
    pub fn new(data: CopyOutStream<'static>, content_type: &'static str) -> Self {
        CopyBody { data, content_type }
    }
}

impl IntoResponse for CopyBody {
    fn into_response(self) -> Response {
        streamed(self.content_type, self.data)
    }
}

/// A 200 response streaming `chunks`; an error ends the body early (and is logged).
fn streamed(
    content_type: &'static str,
    chunks: impl Stream<Item = Result<Bytes>> + Send + 'static,
) -> Response {
    let chunks = chunks.map(|chunk| {
        chunk.inspect_err(|e| {
            tracing::warn!(target: "coredb", error = %e, "a streamed response failed half-way; its body is cut short");
        })
    });
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        Body::from_stream(chunks),
    )
        .into_response()
}
