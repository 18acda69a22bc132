//! Running one bound statement on a connection: the one path every statement takes.
//!
//! [`run`] is used on a connection of one's own (a [`Connection`](crate::Connection), a
//! [`Session`](crate::Session), COPY's savepoints through [`run_simple`]); the pipeline runs
//! statements on shared connections with the same pieces ([`observe`], [`prepare`],
//! [`encode`], [`query_failed`]). Every step of the way lives here once: the prepared
//! statement cache, the client-side guard, parameter encoding and its diagnostics, the echo
//! log line, and the connection's state events.

/// Sends a bound statement on its prepared `statement` with `$send`, an expression of
/// `$values: &[SqlParam]` (all rows, a count, a row stream); a value the driver refuses for
/// its parameter's type (an `i64` where the server asks for `numeric`) is sent again widened
/// to that type, or the error names the cast to write. The driver checks every value before
/// it writes, so nothing was sent the first time, and values of the right types never pay for
/// the encoding by hand. A macro rather than a function: each caller's `$send` awaits a
/// future of its own type, borrowing the values.
macro_rules! send_widened {
    ($conn:expr, $statement:expr, $bound:expr, |$values:ident| $send:expr) => {{
        let (conn, statement, bound) = ($conn, $statement, $bound);
        let result = {
            let $values: &[SqlParam<'_>] = &bound.values;
            $send
        };
        match result {
            Err(err) if encode::is_wrong_type(&err) => {
                let encoded = encode(statement, bound).inspect_err(|_| {
                    // Like any failure of a prepared statement: the plan may be stale after DDL.
                    conn.statements.remove(bound.key);
                })?;
                let widened: Vec<SqlParam<'_>> =
                    encoded.iter().map(|v| v as SqlParam<'_>).collect();
                let $values: &[SqlParam<'_>] = &widened;
                $send
            }
            result => result,
        }
        .map_err(|err| query_failed(conn, err, bound, statement))
    }};
}

mod commit;
mod copy;
mod encode;
mod param_types;
mod stream;

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use postgres_types::FromSqlOwned;
use tokio_postgres::Statement;

use crate::config::ExecSettings;
use crate::conn::{Event, PgConn, Prepared};
use crate::error::{Error, ErrorKind, Result};
use crate::params::{Bound, ParamList, RewriteCache, SqlParam, TextKey};
use crate::row::{ColumnPositions, FromRow, Row};
use crate::telemetry::{self, StatementInstruments, Target};

pub(crate) use commit::{
    commit, outcome, parse_lsn, Outcome, WitnessReply, WriteMark, WRITTEN_SQL,
};
#[cfg(feature = "models")]
pub(crate) use copy::CopyRows;
pub(crate) use copy::{copy_in, copy_in_data, Place};
pub use copy::{CopyData, RowValues};
pub(crate) use encode::encode;
pub(crate) use stream::{stream, Item, OnError};
pub use stream::{Read, Streaming};

/// What every statement of one database shares: the settings of the path, the cache of
/// `:name` rewrites, and the instruments that report statements. Connections and the pipeline
/// hold it; none of them needs the handle above.
pub(crate) struct Context {
    /// Echo, guard and slow-statement settings.
    pub(crate) settings: ExecSettings,
    /// Rewritten `:name` statements.
    pub(crate) rewrites: RewriteCache,
    /// Statement durations, and the attributes of spans and metrics.
    pub(crate) instruments: StatementInstruments,
}

impl Context {
    /// The context for `settings`, with an empty rewrite cache, for statements sent to
    /// `target`.
    pub(crate) fn new(settings: ExecSettings, target: Target) -> Self {
        Context {
            settings,
            rewrites: RewriteCache::new(),
            instruments: StatementInstruments::new(target),
        }
    }

    /// Where the statements go.
    pub(crate) fn target(&self) -> &Target {
        self.instruments.target()
    }

    /// Matches `params` to `sql`'s placeholders; nothing is sent when they do not match.
    ///
    /// Behind PgBouncer in transaction mode, a statement whose state outlives its transaction
    /// (`SET`, `LISTEN`, `CREATE TEMP`, a session-level advisory lock, ...) is refused: the
    /// server connection it would change serves other clients next.
    pub(crate) fn bind<'s, 'p>(
        &self,
        sql: &'s str,
        params: ParamList<'p>,
    ) -> Result<Bound<'s, 'p>> {
        let bound = self.rewrites.bind(sql, params)?;
        self.refuse_lasting_state(sql, bound.class)?;
        Ok(bound)
    }

    /// Behind PgBouncer in transaction mode, refuses `sql` (of `class`) when its effect
    /// outlives the transaction.
    ///
    /// # Errors
    /// A [`Config`](crate::ErrorKind::Config) error naming the setting and the alternatives.
    pub(crate) fn refuse_lasting_state(
        &self,
        sql: &str,
        class: crate::sql::StatementClass,
    ) -> Result<()> {
        if self.settings.pgbouncer_transaction && class.outlives_transaction() {
            return Err(Error::config(format!(
                "{} is refused with POSTGRES_PGBOUNCER=transaction: its effect outlives the \
                 transaction, and behind PgBouncer in transaction mode the server connection it \
                 would change serves other clients next. Use the transaction-scoped form inside \
                 a session (SET LOCAL, set_config(.., true), pg_advisory_xact_lock, \
                 CREATE TEMP TABLE .. ON COMMIT DROP), or connect without PgBouncer for \
                 session state",
                class.operation().unwrap_or("this statement")
            ))
            .with_statement(sql));
        }
        Ok(())
    }
}

/// What a statement should give back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returns {
    /// The rows.
    Rows,
    /// The first row and how many came: read one by one, never gathered.
    First,
    /// The number of rows affected.
    Count,
}

/// What a statement gave back.
#[derive(Debug)]
pub enum Reply {
    /// The rows.
    Rows(Vec<Row>),
    /// The first row, if any, and the number of rows returned.
    First(Option<Row>, u64),
    /// The number of rows affected.
    Count(u64),
}

impl Reply {
    /// The number of rows returned or affected, without consuming the reply.
    fn len(&self) -> u64 {
        match self {
            Reply::Count(n) | Reply::First(_, n) => *n,
            Reply::Rows(rows) => rows.len() as u64,
        }
    }

    /// The number of rows affected (or returned).
    pub(crate) fn count(self) -> u64 {
        self.len()
    }

    /// The driver's rows, its vector becoming the vector of `Row`s in place: the two row types
    /// have one size, so nothing is allocated again.
    fn from_driver(rows: Vec<tokio_postgres::Row>) -> Self {
        Reply::Rows(rows.into_iter().map(Row::from).collect())
    }

    /// The rows (none for a count).
    pub(crate) fn rows(self) -> Vec<Row> {
        match self {
            Reply::Rows(rows) => rows,
            other => other.into_rows().collect(),
        }
    }

    /// The rows one by one, without gathering them first (only the first of a
    /// [`Returns::First`] statement's).
    fn into_rows(self) -> impl Iterator<Item = Row> {
        let (rows, first) = match self {
            Reply::Rows(rows) => (rows, None),
            Reply::First(first, _) => (Vec::new(), first),
            Reply::Count(_) => (Vec::new(), None),
        };
        first.into_iter().chain(rows)
    }

    /// Every row as `T`.
    pub(crate) fn all<T: FromRow>(self) -> Result<Vec<T>> {
        let Reply::Rows(rows) = self else {
            return self.into_rows().map(T::from_owned_row).collect();
        };
        // Sized once: collecting `Result`s would grow the vector from empty.
        let mut all = Vec::with_capacity(rows.len());
        let mut positions = ColumnPositions::new();
        for row in rows {
            positions.rewind();
            all.push(T::from_owned_row_at(row, &mut positions)?);
        }
        Ok(all)
    }

    /// At most one row as `T`.
    pub(crate) fn optional<T: FromRow>(self) -> Result<Option<T>> {
        let count = self.len();
        if count > 1 {
            return Err(Error::new(
                ErrorKind::TooManyRows,
                format!("expected at most one row, got {count}"),
            ));
        }
        self.into_rows().next().map(T::from_owned_row).transpose()
    }

    /// Exactly one row as `T`.
    pub(crate) fn one<T: FromRow>(self) -> Result<T> {
        self.optional()?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "expected one row, got none"))
    }

    /// The first column of the first row.
    pub(crate) fn scalar<T: FromSqlOwned>(self) -> Result<T> {
        let row = self.into_rows().next().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                "expected a row with a value, got no rows",
            )
        })?;
        row.get(0)
    }
}

/// Runs one bound statement on a connection of the caller's own, recording on the connection
/// that a request is in flight (so a future dropped half-way closes it) and whether the
/// statement may leave session state (so the connection is not reused with it).
pub(crate) async fn run(
    conn: &mut PgConn,
    context: &Context,
    bound: &Bound<'_, '_>,
    want: Returns,
    guard: Option<Duration>,
) -> Result<Reply> {
    let leaves_state = !bound.class.is_shareable();
    conn.on(Event::Sent { leaves_state });
    let result = {
        let work = pin!(run_on(conn, bound, want));
        observe(context, bound, guard, work).await
    };
    conn.on(settled(&result));
    result
}

/// Runs `sql` with the simple protocol (no parameters; it may hold several statements), for
/// transaction control and scripts. `sent` says what the text does to the connection.
pub(crate) async fn run_simple(conn: &mut PgConn, sql: &str, sent: Event) -> Result<()> {
    conn.on(sent);
    let result = conn
        .client
        .batch_execute(sql)
        .await
        .map_err(|e| Error::from_driver(e, Some(sql)));
    conn.on(match (&result, sent) {
        (Err(e), _) if e.kind() == ErrorKind::ConnectionLost => Event::Lost,
        // After a reply to COMMIT or ROLLBACK the server has ended the transaction either way.
        (_, Event::EndSent) => Event::Ended,
        _ => Event::Replied,
    });
    result
}

/// What resets a session, short of `DISCARD ALL` (which would also drop the prepared
/// statements the connection keeps): locks, cursors, subscriptions, settings and the role,
/// temporary tables and sequence state. Runs after a `ROLLBACK` of whatever was open.
const RESET_SESSION: &str = "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; \
    RESET ALL; SET SESSION AUTHORIZATION DEFAULT; DISCARD TEMP; DISCARD SEQUENCES";

/// Brings a connection that may carry session state back to a fresh session's state,
/// keeping its prepared statements.
///
/// # Errors
/// The server's error; the connection should then be closed.
pub(crate) async fn reset_session(conn: &mut PgConn) -> Result<()> {
    conn.on(Event::Sent {
        leaves_state: false,
    });
    let result = async {
        // ROLLBACK on its own: in one string with the reset, it would end the implicit
        // transaction the rest runs in.
        conn.client.batch_execute("ROLLBACK").await?;
        conn.client.batch_execute(RESET_SESSION).await
    }
    .await
    .map_err(|e| Error::from_driver(e, Some(RESET_SESSION)));
    conn.on(match &result {
        Ok(()) => Event::Cleaned,
        Err(e) if e.kind() == ErrorKind::ConnectionLost => Event::Lost,
        Err(_) => Event::Replied,
    });
    result
}

/// The event that ends a request, from its result.
fn settled<T>(result: &Result<T>) -> Event {
    match result {
        Ok(_) => Event::Replied,
        Err(e) => after_error(e),
    }
}

/// The event that ends a request that failed with `err`.
fn after_error(err: &Error) -> Event {
    match err.kind() {
        // Cut off by the guard: the server may still be running it.
        ErrorKind::Timeout => Event::Abandoned,
        ErrorKind::ConnectionLost => Event::Lost,
        _ => Event::Replied,
    }
}

/// Runs `work` under the client-side `guard`, when there is one, in a `statement` span, and
/// reports it: its duration to the metrics, a WARN line when it was slow
/// (`POSTGRES_SLOW_STATEMENT_MS`), the echo line (`DEBUG` / `POSTGRES_ECHO`).
///
/// `work` comes pinned where the caller made it: a statement's future is large (the driver's
/// request and reply state), and every layer that took it by value would copy it whole.
pub(crate) async fn observe<F: Future<Output = Result<Reply>>>(
    context: &Context,
    bound: &Bound<'_, '_>,
    guard: Option<Duration>,
    mut work: std::pin::Pin<&mut F>,
) -> Result<Reply> {
    let settings = &context.settings;
    let span = telemetry::statement_span(context.target(), bound.class, bound.text.as_str());
    let started = Instant::now();
    // The statement's future is wrapped by reference only: no async block around it.
    let result = match guard {
        None => telemetry::in_span(&span, work.as_mut()).await,
        Some(limit) => {
            let guarded = tokio::time::timeout(limit, work.as_mut());
            telemetry::in_span(&span, guarded)
                .await
                .unwrap_or_else(|_| {
                    Err(Error::timeout(
                        "the statement (no reply from the server)",
                        limit,
                    ))
                })
        }
    };
    if matches!(&result, Err(e) if crate::conn::skipped(e)) {
        // Skipped by the server under a Sync shared with a read that failed: it did not run,
        // and runs again on a connection of its own; that run is the one reported.
        telemetry::end_statement_span(&span, None, None);
        return result;
    }
    let rows = result.as_ref().ok().map(Reply::len);
    let error = result.as_ref().err();
    let elapsed = report(
        context,
        &span,
        bound.class,
        bound.text.as_str(),
        started.elapsed(),
        rows,
        error,
    );
    if settings.echo {
        echo(settings, bound, elapsed, &result);
    }
    result
}

/// Reports a finished statement: its duration to the metrics, its rows or error to its span,
/// and a WARN line when it was slow (`POSTGRES_SLOW_STATEMENT_MS`). Returns `elapsed`.
fn report(
    context: &Context,
    span: &tracing::Span,
    class: crate::sql::StatementClass,
    text: &str,
    elapsed: Duration,
    rows: Option<u64>,
    error: Option<&Error>,
) -> Duration {
    context.instruments.record(class, elapsed, error);
    telemetry::end_statement_span(span, rows, error);
    if context
        .settings
        .slow_statement
        .is_some_and(|slow| elapsed >= slow)
    {
        slow(context, class, text, elapsed, rows, error);
    }
    elapsed
}

/// Logs a statement over the slow-statement threshold at WARN: its text (never values),
/// duration and rows, or its error.
fn slow(
    context: &Context,
    class: crate::sql::StatementClass,
    sql: &str,
    elapsed: Duration,
    rows: Option<u64>,
    error: Option<&Error>,
) {
    let target = context.target();
    let operation = telemetry::operation_name(class);
    target.count(
        telemetry::SLOW_STATEMENTS,
        &[("db.operation.name", operation)],
    );
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    let threshold_ms = context
        .settings
        .slow_statement
        .map_or(0, |d| d.as_millis() as u64);
    let error = error.map(|e| e.message());
    tracing::warn!(
        target: "coredb",
        sql,
        duration_ms,
        rows,
        error,
        db.namespace = &*target.namespace,
        "slow statement: {duration_ms:.1} ms (POSTGRES_SLOW_STATEMENT_MS is {threshold_ms})"
    );
}

/// Logs a finished statement with its duration; parameter values only when asked.
fn echo(settings: &ExecSettings, bound: &Bound<'_, '_>, elapsed: Duration, result: &Result<Reply>) {
    let sql = bound.text.as_str();
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    let outcome = match result {
        Ok(Reply::Count(n)) => format!("{n} row(s) affected"),
        Ok(rows) => format!("{} row(s)", rows.len()),
        Err(e) => format!("error: {}", e.message()),
    };
    if settings.echo_params {
        let params = &bound.values;
        tracing::info!(target: "coredb", sql, ?params, duration_ms, outcome, "statement");
    } else {
        tracing::info!(target: "coredb", sql, duration_ms, outcome, "statement");
    }
}

/// Prepares (or takes from the cache) and runs the statement; unprepared, in one round trip,
/// when the cache is off (e.g. behind PgBouncer). Needs only a shared borrow, so a pipelined
/// connection can use it too.
///
/// Values are sent as they are; one the driver refuses for its parameter's type (an `i64`
/// where the server asks for `numeric`) is sent again widened to that type, or the error
/// names the cast to write.
pub(crate) async fn run_on(conn: &PgConn, bound: &Bound<'_, '_>, want: Returns) -> Result<Reply> {
    if !conn.statements.is_enabled() {
        return run_unprepared(conn, bound, want).await;
    }
    let prepared = prepare(conn, bound).await?;
    if let Some((direct, shared)) = conn.sender() {
        let keep = match want {
            Returns::Rows => usize::MAX,
            Returns::First => 1,
            Returns::Count => 0,
        };
        let (sql, values) = (bound.text.as_str(), &bound.values[..]);
        let done = if shared {
            direct.queue(&prepared, values, sql, keep).await
        } else {
            direct.run(&prepared, values, sql, keep).await
        };
        if let Some(done) = done {
            return match done {
                Ok(answer) => Ok(match want {
                    Returns::Rows => Reply::Rows(answer.rows),
                    Returns::First => Reply::First(answer.rows.into_iter().next(), answer.returned),
                    Returns::Count => Reply::Count(answer.affected),
                }),
                Err(err) => {
                    // Like any failure of a prepared statement: the plan may be stale.
                    conn.statements.remove(bound.key);
                    Err(err)
                }
            };
        }
    }
    let statement = prepared.statement;
    send_widened!(conn, &statement, bound, |values| send(
        conn, &statement, values, want
    )
    .await)
}

/// Runs a prepared statement with `values`, as rows or a count.
async fn send(
    conn: &PgConn,
    statement: &Statement,
    values: &[SqlParam<'_>],
    want: Returns,
) -> std::result::Result<Reply, tokio_postgres::Error> {
    match want {
        Returns::Rows => conn
            .client
            .query(statement, values)
            .await
            .map(Reply::from_driver),
        Returns::First => {
            first_row(
                conn.client
                    .query_raw(statement, values.iter().copied())
                    .await,
            )
            .await
        }
        Returns::Count => conn
            .client
            .execute(statement, values)
            .await
            .map(Reply::Count),
    }
}

/// The first row of the driver's `rows` and how many there were: the others are read and
/// dropped one by one, never gathered.
async fn first_row(
    rows: std::result::Result<tokio_postgres::RowStream, tokio_postgres::Error>,
) -> std::result::Result<Reply, tokio_postgres::Error> {
    let mut rows = pin!(rows?);
    let Some(first) = rows.try_next().await? else {
        // Ended: polled again, the stream would report its connection closed.
        return Ok(Reply::First(None, 0));
    };
    let mut count = 1;
    while rows.try_next().await?.is_some() {
        count += 1;
    }
    Ok(Reply::First(Some(Row::from(first)), count))
}

/// The connection's prepared statement for the text (prepared now if not cached), checked
/// against the number of values.
pub(crate) async fn prepare(conn: &PgConn, bound: &Bound<'_, '_>) -> Result<Prepared> {
    let sql = bound.text.as_str();
    let prepared = prepare_text(conn, bound.key, sql).await?;
    let takes = prepared.statement.params().len();
    if takes != bound.values.len() {
        return Err(Error::params(format!(
            "the statement takes {takes} parameter(s) but {} were given",
            bound.values.len()
        ))
        .with_statement(sql));
    }
    Ok(prepared)
}

/// The connection's prepared statement for `sql` (numbered `key` by the rewrite cache), from
/// the cache or prepared now.
async fn prepare_text(conn: &PgConn, key: TextKey, sql: &str) -> Result<Prepared> {
    if let Some(prepared) = conn.statements.get(key) {
        return Ok(prepared);
    }
    let statement = conn
        .client
        .prepare(sql)
        .await
        .map_err(|e| Error::from_driver(e, Some(sql)))?;
    let prepared = Prepared::new(&statement);
    conn.statements.insert(key, prepared.clone());
    Ok(prepared)
}

/// The error for a prepared statement that failed: its cached plan is dropped (it may be stale
/// after DDL), and a value the server's type cannot take (even widened) is named, with the
/// cast to write.
pub(crate) fn query_failed(
    conn: &PgConn,
    err: tokio_postgres::Error,
    bound: &Bound<'_, '_>,
    statement: &Statement,
) -> Error {
    let sql = bound.text.as_str();
    conn.statements.remove(bound.key);
    let error = Error::from_driver(err, Some(sql));
    if error.kind() == ErrorKind::Params {
        encode::describe_wrong_parameter(statement, bound).unwrap_or(error)
    } else {
        error
    }
}

/// The values of `bound` with the parameter types taken from the Rust values, for a statement
/// sent unnamed.
fn typed_values<'p>(bound: &Bound<'_, 'p>) -> Result<Vec<(SqlParam<'p>, postgres_types::Type)>> {
    let types = param_types::infer(&bound.text, &bound.values)?;
    Ok(bound.values.iter().copied().zip(types).collect())
}

/// Runs a statement as an unnamed one in a single round trip, with the parameter types taken
/// from the Rust values.
async fn run_unprepared(conn: &PgConn, bound: &Bound<'_, '_>, want: Returns) -> Result<Reply> {
    let sql = bound.text.as_str();
    let typed = typed_values(bound)?;
    let result = match want {
        Returns::Rows => conn
            .client
            .query_typed(sql, &typed)
            .await
            .map(Reply::from_driver),
        Returns::First => {
            first_row(
                conn.client
                    .query_typed_raw(sql, typed.iter().map(|(v, t)| (*v, t.clone())))
                    .await,
            )
            .await
        }
        Returns::Count => conn
            .client
            .execute_typed(sql, &typed)
            .await
            .map(Reply::Count),
    };
    result.map_err(|e| Error::from_driver(e, Some(sql)))
}
