//! A pooled connection checked out by the caller, returned to the pool when dropped.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio_postgres::NoTls;

use crate::connect::{PgConn, PgManager};
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::params::{ParamList, SqlParam, SqlText};
use crate::pipeline::is_shareable;
use crate::pool::Pooled;
use crate::query::{Executor, Output, Want};

/// How long a connection returned inside a transaction may take to roll back before it is closed.
const ROLLBACK_LIMIT: Duration = Duration::from_secs(5);

/// A connection from the pool, in autocommit mode: each statement commits by itself.
///
/// Dropping it returns it to the pool. A connection dropped in the middle of a statement (its
/// future was cancelled) is closed instead, and its statement cancelled on the server; one
/// dropped inside a transaction is rolled back first; one that ran a statement changing
/// session state (`SET`, `LISTEN`, `BEGIN` sent as a statement, ...) is closed, so the next
/// user never inherits it.
pub struct Connection {
    pooled: Option<Pooled<PgManager>>,
    engine: Engine,
}

impl Connection {
    pub(crate) fn new(pooled: Pooled<PgManager>, engine: Engine) -> Self {
        Connection {
            pooled: Some(pooled),
            engine,
        }
    }

    pub(crate) fn pg(&mut self) -> &mut PgConn {
        self.pooled.as_mut().expect("set until drop")
    }

    /// The driver's client, for what coredb does not wrap (COPY, notifications, ...).
    ///
    /// Statements sent through it bypass coredb's bookkeeping; do not begin transactions with it.
    pub fn client(&self) -> &tokio_postgres::Client {
        &self.pooled.as_ref().expect("set until drop").client
    }

    /// The engine this connection belongs to.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs `sql` (no parameters, simple protocol; may hold several statements) while tracking
    /// that an operation is in flight.
    pub(crate) async fn batch(&mut self, sql: &str) -> Result<()> {
        let conn = self.pg();
        conn.busy = true;
        let result = conn.client.batch_execute(sql).await;
        conn.busy = false;
        result.map_err(|e| Error::from_driver(e, Some(sql)))
    }

    pub(crate) async fn run(
        &mut self,
        sql: &str,
        params: ParamList<'_>,
        want: Want,
    ) -> Result<Output> {
        let (text, values) = self.engine.inner().rewrites.bind(sql, params)?;
        self.run_bound(&text, &values, want).await
    }

    /// Runs a statement whose parameters were already matched to it.
    pub(crate) async fn run_bound(
        &mut self,
        text: &SqlText<'_>,
        values: &[SqlParam<'_>],
        want: Want,
    ) -> Result<Output> {
        let started = self.engine.config().echo.then(Instant::now);
        let guard = self.engine.config().statement_guard();
        let conn = self.pg();
        conn.busy = true;
        conn.dirty |= !is_shareable(text.as_str());
        let result = guarded(guard, run_on(conn, text, values, want)).await;
        // A statement cut off by the guard leaves `busy` set: the connection is discarded.
        conn.busy = result
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::Timeout);
        if let Some(started) = started {
            echo(
                self.engine.config(),
                text.as_str(),
                values,
                started,
                &result,
            );
        }
        result
    }
}

/// Runs `work` under the client-side guard, when there is one.
pub(crate) async fn guarded(
    limit: Option<Duration>,
    work: impl std::future::Future<Output = Result<Output>>,
) -> Result<Output> {
    match limit {
        None => work.await,
        Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(Error::timeout(
                "the statement (no reply from the server)",
                limit,
            ))
        }),
    }
}

/// Prepares (or reuses) the statement and runs it; shared by exclusive and pipelined use.
pub(crate) async fn run_on(
    conn: &PgConn,
    text: &SqlText<'_>,
    values: &[SqlParam<'_>],
    want: Want,
) -> Result<Output> {
    let sql = text.as_str();
    if !conn.statements.is_enabled() {
        return run_unprepared(conn, text, values, want).await;
    }
    let statement = prepared(conn, text, values).await?;
    run_prepared(&conn.client, &statement, values, want)
        .await
        .map_err(|err| {
            // A cached plan may be stale after DDL; prepare afresh next time.
            conn.statements.remove(sql);
            let error = Error::from_driver(err, Some(sql));
            if error.kind() == ErrorKind::Params {
                describe_wrong_parameter(&statement, text, values).unwrap_or(error)
            } else {
                error
            }
        })
}

/// Logs a finished statement with its duration (the seed's echo).
pub(crate) fn echo(
    config: &crate::DatabaseConfig,
    sql: &str,
    values: &[SqlParam<'_>],
    started: Instant,
    result: &Result<Output>,
) {
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let outcome = match result {
        Ok(Output::Rows(rows)) => format!("{} row(s)", rows.len()),
        Ok(Output::Count(n)) => format!("{n} row(s) affected"),
        Err(e) => format!("error: {}", e.message()),
    };
    if config.echo_params {
        tracing::info!(target: "coredb", sql, params = ?values, duration_ms, outcome, "statement");
    } else {
        tracing::info!(target: "coredb", sql, duration_ms, outcome, "statement");
    }
}

/// Runs a prepared statement, giving rows or the count as asked.
pub(crate) async fn run_prepared(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    values: &[SqlParam<'_>],
    want: Want,
) -> std::result::Result<Output, tokio_postgres::Error> {
    match want {
        Want::Rows => client.query(statement, values).await.map(Output::Rows),
        Want::Count => client.execute(statement, values).await.map(Output::Count),
    }
}

/// The connection's prepared statement for `text` (prepared now if not cached), checked
/// against the number of values.
pub(crate) async fn prepared(
    conn: &PgConn,
    text: &SqlText<'_>,
    values: &[SqlParam<'_>],
) -> Result<tokio_postgres::Statement> {
    let sql = text.as_str();
    let statement = match conn.statements.get(sql) {
        Some(statement) => statement,
        None => {
            let statement = conn
                .client
                .prepare(sql)
                .await
                .map_err(|e| Error::from_driver(e, Some(sql)))?;
            conn.statements.insert(sql, &statement);
            statement
        }
    };
    if statement.params().len() != values.len() {
        return Err(Error::params(format!(
            "the statement takes {} parameter(s) but {} were given",
            statement.params().len(),
            values.len()
        ))
        .with_statement(sql));
    }
    Ok(statement)
}

/// Runs a statement as an unnamed one in a single round trip, with the parameter types taken
/// from the Rust values (the statement cache is off, e.g. behind PgBouncer).
async fn run_unprepared(
    conn: &PgConn,
    text: &SqlText<'_>,
    values: &[SqlParam<'_>],
    want: Want,
) -> Result<Output> {
    let sql = text.as_str();
    let types = crate::param_types::infer(text, values)?;
    let typed: Vec<(SqlParam<'_>, postgres_types::Type)> =
        values.iter().copied().zip(types).collect();
    let result = match want {
        Want::Rows => conn.client.query_typed(sql, &typed).await.map(Output::Rows),
        Want::Count => conn
            .client
            .execute_typed(sql, &typed)
            .await
            .map(Output::Count),
    };
    result.map_err(|e| Error::from_driver(e, Some(sql)))
}

/// Finds which parameter cannot be sent as the type the server expects, and says so by name.
pub(crate) fn describe_wrong_parameter(
    statement: &tokio_postgres::Statement,
    text: &SqlText<'_>,
    values: &[SqlParam<'_>],
) -> Option<Error> {
    let mut scratch = BytesMut::new();
    for (i, (value, ty)) in values.iter().zip(statement.params()).enumerate() {
        scratch.clear();
        if let Err(err) = value.to_sql_checked(ty, &mut scratch) {
            let name = match text.name_of(i) {
                Some(name) => format!(":{name} (${})", i + 1),
                None => format!("${}", i + 1),
            };
            return Some(
                Error::params(format!(
                    "parameter {name} cannot be sent as PostgreSQL type {ty}: {err}"
                ))
                .with_statement(text.as_str()),
            );
        }
    }
    None
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pg = self.pooled.as_ref();
        f.debug_struct("Connection")
            .field("url", &self.engine.config().database_url())
            .field("in_transaction", &pg.map(|c| c.in_transaction))
            .finish()
    }
}

impl Executor for Connection {
    fn run_statement<'a>(
        &'a mut self,
        sql: &'a str,
        params: ParamList<'a>,
        want: Want,
    ) -> impl std::future::Future<Output = Result<Output>> + Send + 'a {
        self.run(sql, params, want)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(mut pooled) = self.pooled.take() else {
            return;
        };
        let runtime = tokio::runtime::Handle::try_current().ok();
        if pooled.client.is_closed() {
            // Dead already: nothing to roll back or cancel.
            pooled.mark_broken();
        } else if pooled.busy {
            // Abandoned mid-statement: the reply may still be on its way, so the connection is
            // closed, and the server is asked to stop the work nobody waits for.
            tracing::debug!(target: "coredb", "connection dropped mid-statement; closing it");
            if let Some(runtime) = runtime {
                let token = pooled.client.cancel_token();
                runtime.spawn(async move {
                    let _ = token.cancel_query(NoTls).await;
                });
            }
            pooled.mark_broken();
        } else if pooled.dirty {
            tracing::debug!(target: "coredb", "connection ran a statement that changes session state; closing it");
            pooled.mark_broken();
        } else if pooled.in_transaction {
            match runtime {
                Some(runtime) => {
                    // The slot stays taken until the rollback is done, so pool counts stay true.
                    runtime.spawn(async move {
                        let rollback = pooled.client.batch_execute("ROLLBACK");
                        match tokio::time::timeout(ROLLBACK_LIMIT, rollback).await {
                            Ok(Ok(())) => pooled.in_transaction = false,
                            _ => pooled.mark_broken(),
                        }
                        drop(pooled);
                    });
                }
                None => pooled.mark_broken(),
            }
        }
    }
}
