//! A pooled connection checked out by the caller, returned to the pool when dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::conn::{Disposal, Event, PgConn, PgManager};
use crate::error::Result;
use crate::exec::{
    self, Context, CopyData, Place, Read, Reply, Returns, RowValues, Streaming, WriteMark,
};
use crate::params::{ParamList, Params as _};
use crate::pool::{Pool, Pooled};
use crate::query::{sealed, Executor};

/// How long a returned connection may take to roll back (or reset) before it is closed.
const CLEANUP_LIMIT: Duration = Duration::from_secs(5);

/// A connection from the pool, in autocommit mode: each statement commits by itself.
///
/// Dropping it returns it to the pool. A connection dropped in the middle of a statement (its
/// future was cancelled) is closed instead, and its statement cancelled on the server; one
/// dropped inside a transaction is rolled back first; one that ran a statement that may change
/// session state (`SET`, `LISTEN`, a cursor, a temporary table, ...) is reset first (its
/// prepared statements kept), so the next user never inherits it.
///
/// ```no_run
/// use coredb::Executor;
///
/// # async fn demo(db: coredb::DatabaseManager) -> coredb::Result<()> {
/// let mut conn = db.get_connection().await?;
/// conn.execute_script("CREATE TABLE IF NOT EXISTS t (x int); CREATE INDEX IF NOT EXISTS t_x ON t (x)").await?;
/// let n: i64 = conn.scalar("SELECT count(*) FROM t", ()).await?;
/// # let _ = n; Ok(()) }
/// ```
pub struct Connection {
    pooled: Option<Pooled<PgManager>>,
    context: Arc<Context>,
    /// The client-side limit of a statement here: the configured one, until the caller
    /// changes the server's `statement_timeout`.
    guard: Option<Duration>,
    /// The pool it came from, for a second connection (asking what became of a commit).
    pool: Pool<PgManager>,
    /// Where the commits of its sessions are recorded, in a read-your-writes scope.
    writes: Option<Arc<WriteMark>>,
}

impl Connection {
    pub(crate) fn new(
        pooled: Pooled<PgManager>,
        context: Arc<Context>,
        pool: Pool<PgManager>,
    ) -> Self {
        Connection {
            pooled: Some(pooled),
            guard: context.settings.statement_guard,
            context,
            pool,
            writes: None,
        }
    }

    /// Records how far the commits of sessions on this connection reach in `mark` (a
    /// read-your-writes scope's).
    pub(crate) fn follow_writes(&mut self, mark: Option<Arc<WriteMark>>) {
        self.writes = mark;
    }

    /// The read-your-writes mark its commits raise, if any.
    pub(crate) fn writes(&self) -> Option<&Arc<WriteMark>> {
        self.writes.as_ref()
    }

    /// The pool's timeout, the longest a caller waits for a connection.
    pub(crate) fn pool_timeout(&self) -> Duration {
        self.pool.options().timeout
    }

    /// Another connection from the same pool, waiting at most `limit`.
    pub(crate) async fn another(&self, limit: Duration) -> Result<Connection> {
        let pooled = self.pool.get_within(limit).await?;
        Ok(Connection::new(
            pooled,
            Arc::clone(&self.context),
            self.pool.clone(),
        ))
    }

    /// What the connection's statements share: settings and instruments.
    pub(crate) fn context(&self) -> &Context {
        &self.context
    }

    /// The connection and its context, borrowed together.
    pub(crate) fn parts(&mut self) -> (&mut PgConn, &Arc<Context>) {
        (self.pooled.as_mut().expect("set until drop"), &self.context)
    }

    /// The connection, shared.
    pub(crate) fn pg_ref(&self) -> &PgConn {
        self.pooled.as_ref().expect("set until drop")
    }

    pub(crate) fn pg(&mut self) -> &mut PgConn {
        self.pooled.as_mut().expect("set until drop")
    }

    /// Runs `sql` with the simple protocol: no parameters, and it may hold several statements
    /// separated by `;` (a schema script, say). The connection is closed rather than reused
    /// afterwards, unless every statement was proven to leave no session state.
    ///
    /// # Errors
    /// The server's error for the first statement that failed; the ones before it stay done.
    ///
    /// # Cancel safety
    /// Dropping the future closes the connection instead of returning it to the pool.
    pub async fn execute_script(&mut self, sql: &str) -> Result<()> {
        let class = crate::sql::classify(sql);
        self.context.refuse_lasting_state(sql, class)?;
        let leaves_state = !class.is_shareable();
        exec::run_simple(self.pg(), sql, Event::Sent { leaves_state }).await
    }

    /// Runs transaction control or savepoint text (`BEGIN`, `COMMIT`, `SAVEPOINT ...`),
    /// recording what it does to the connection.
    pub(crate) async fn control(&mut self, sql: &str, sent: Event) -> Result<()> {
        exec::run_simple(self.pg(), sql, sent).await
    }

    /// Binds and runs one statement.
    pub(crate) async fn run(
        &mut self,
        sql: &str,
        params: ParamList<'_>,
        want: Returns,
    ) -> Result<Reply> {
        let guard = self.guard;
        let (pg, context) = self.parts();
        let bound = context.bind(sql, params)?;
        let class = bound.class;
        let reply = exec::run(pg, context, &bound, want, guard).await?;
        if sets_statement_timeout(class, sql) {
            self.follow_statement_timeout().await?;
        }
        Ok(reply)
    }

    /// Sets the server's `statement_timeout` for the rest of the current transaction
    /// (`SET LOCAL`), and the client-side guard with it.
    pub(crate) async fn set_local_timeout(&mut self, limit: Duration) -> Result<()> {
        self.control(&local_timeout_sql(limit), Event::TRANSACTION_SCOPED)
            .await?;
        self.guard_with(limit);
        Ok(())
    }

    /// Sets the client-side guard for a server-side `statement_timeout` of `limit`, sent by
    /// the caller (e.g. with `BEGIN`).
    pub(crate) fn guard_with(&mut self, limit: Duration) {
        self.guard = Some(crate::config::guard_for(limit));
    }

    /// Reads the server's `statement_timeout` after the caller changed it, so the client-side
    /// guard follows it (0: no timeout, and no guard).
    async fn follow_statement_timeout(&mut self) -> Result<()> {
        let sql = "SELECT setting::int8 FROM pg_settings WHERE name = 'statement_timeout'";
        let (pg, context) = self.parts();
        let bound = context.bind(sql, ().param_list())?;
        let ms: i64 = exec::run(pg, context, &bound, Returns::First, None)
            .await?
            .scalar()?;
        self.guard = (ms > 0).then(|| crate::config::guard_for(Duration::from_millis(ms as u64)));
        Ok(())
    }
}

/// `SET LOCAL statement_timeout` to `limit` (at least a millisecond: 0 would mean none).
pub(crate) fn local_timeout_sql(limit: Duration) -> String {
    format!("SET LOCAL statement_timeout = {}", limit.as_millis().max(1))
}

/// True for a statement that may change `statement_timeout`: `SET` / `RESET` naming it (or
/// `RESET ALL`).
fn sets_statement_timeout(class: crate::sql::StatementClass, sql: &str) -> bool {
    match class.operation() {
        Some("SET") => sql.to_ascii_lowercase().contains("statement_timeout"),
        Some("RESET") => {
            let sql = sql.to_ascii_lowercase();
            sql.contains("statement_timeout") || sql.contains("all")
        }
        _ => false,
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pg = self.pooled.as_ref();
        f.debug_struct("Connection")
            .field("in_transaction", &pg.map(|c| c.state().in_transaction()))
            .field("state", &pg.map(|c| c.state()))
            .finish()
    }
}

impl sealed::Sealed for Connection {
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
        let context = Arc::clone(&self.context);
        let bound = context.bind(sql, params)?;
        exec::stream(
            Box::new(self.pg()),
            Arc::clone(&context),
            &bound,
            read,
            crate::exec::Place::Connection,
            None,
        )
        .await
    }

    async fn copy_rows_in<'a, 'v>(
        &'a mut self,
        copy: &'a str,
        insert: &'a str,
        rows: RowValues<'v>,
    ) -> Result<u64> {
        let (pg, context) = self.parts();
        exec::copy_in(pg, context, copy, insert, rows, Place::Connection).await
    }

    async fn copy_in_data<'a>(&'a mut self, sql: &'a str, data: CopyData<'a>) -> Result<u64> {
        let (pg, context) = self.parts();
        let bound = context.bind(sql, ().param_list())?;
        exec::copy_in_data(pg, context, &bound, data, Place::Connection).await
    }
}

impl Executor for Connection {}

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(mut pooled) = self.pooled.take() else {
            return;
        };
        let runtime = tokio::runtime::Handle::try_current().ok();
        match pooled.disposal() {
            Disposal::Reuse => {}
            Disposal::Close => {
                tracing::debug!(target: "coredb", state = ?pooled.state(), "connection broken; closing it");
                pooled.mark_broken();
            }
            Disposal::CancelAndClose => {
                // Abandoned mid-statement: the reply may still be on its way, so the connection
                // is closed, and the server is asked to stop the work nobody waits for.
                tracing::debug!(target: "coredb", "connection dropped mid-statement; closing it");
                pooled.cancel_in_background();
                pooled.mark_broken();
            }
            disposal @ (Disposal::RollBack | Disposal::Reset) => match runtime {
                Some(runtime) => {
                    // The slot stays taken until the cleanup is done, so pool counts stay true.
                    runtime.spawn(async move {
                        let cleaned = if disposal == Disposal::Reset {
                            let reset = exec::reset_session(&mut pooled);
                            tokio::time::timeout(CLEANUP_LIMIT, reset).await
                        } else {
                            let rollback =
                                exec::run_simple(&mut pooled, "ROLLBACK", Event::EndSent);
                            tokio::time::timeout(CLEANUP_LIMIT, rollback).await
                        };
                        // A reported setting still other than at connect (changed for the
                        // role or the database meanwhile): closed rather than handed on.
                        if !matches!(cleaned, Ok(Ok(()))) || pooled.settings_changed() {
                            tracing::debug!(target: "coredb", ?disposal, "cleaning a returned connection failed; closing it");
                            pooled.mark_broken();
                        }
                        drop(pooled);
                    });
                }
                None => pooled.mark_broken(),
            },
        }
    }
}
