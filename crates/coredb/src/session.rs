//! Transactions: [`Session`] commits only when told to and rolls back otherwise; nested
//! [`Savepoint`]s do the same inside it.

use std::future::Future;
use std::pin::Pin;

use tokio_postgres::error::SqlState;
use tracing::Instrument as _;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::Event;
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::exec::{
    self, CopyData, OnError, Outcome, Place, Read, Reply, Returns, RowValues, Streaming,
    WitnessReply,
};

/// How often it asks while the server still has the transaction in progress.
const RESOLVE_POLL: Duration = Duration::from_millis(100);
use crate::params::{ParamList, Params as _};
use crate::query::{sealed, Executor};
use crate::row::{FromRow, Row};
use crate::telemetry;

/// Transaction isolation levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationLevel {
    /// PostgreSQL's default.
    ReadCommitted,
    /// One snapshot for the whole transaction.
    RepeatableRead,
    /// As if transactions ran one at a time; may fail with `40001` and need a retry.
    Serializable,
}

/// How a [`Session`]'s transaction begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionOptions {
    /// Isolation level; the server default when `None`.
    pub isolation: Option<IsolationLevel>,
    /// Forbid writes.
    pub read_only: bool,
    /// With `Serializable` and `read_only`: wait for a safe snapshot instead of risking a retry.
    pub deferrable: bool,
    /// Limits each statement of the transaction, as [`Session::set_timeout`] does, sent in
    /// `BEGIN`'s round trip; the configured `POSTGRES_STATEMENT_TIMEOUT` when `None`.
    pub timeout: Option<Duration>,
}

impl SessionOptions {
    /// Options with the given isolation level.
    pub fn isolation(level: IsolationLevel) -> Self {
        SessionOptions {
            isolation: Some(level),
            ..Self::default()
        }
    }

    pub(crate) fn begin_sql(&self) -> String {
        let mut sql = String::from("BEGIN");
        match self.isolation {
            Some(IsolationLevel::ReadCommitted) => sql.push_str(" ISOLATION LEVEL READ COMMITTED"),
            Some(IsolationLevel::RepeatableRead) => {
                sql.push_str(" ISOLATION LEVEL REPEATABLE READ")
            }
            Some(IsolationLevel::Serializable) => sql.push_str(" ISOLATION LEVEL SERIALIZABLE"),
            None => {}
        }
        if self.read_only {
            sql.push_str(" READ ONLY");
        }
        if self.deferrable {
            sql.push_str(" DEFERRABLE");
        }
        sql
    }
}

/// A database transaction on a pooled connection (core.db's session).
///
/// Nothing is committed until [`commit`](Self::commit); dropping the session, or returning an
/// error from a [`transaction`](crate::DatabaseManager::transaction) closure, rolls it back.
/// After a statement fails the server aborts the transaction: `commit` then rolls back and
/// reports the first failure, so no partial work is ever committed.
///
/// ```no_run
/// use coredb::{params, Executor};
///
/// # async fn demo(db: coredb::DatabaseManager) -> coredb::Result<()> {
/// let mut session = db.session().await?;
/// session
///     .execute("UPDATE accounts SET balance = balance - :amount WHERE id = :id",
///              params! { "amount" => 10, "id" => 1 })
///     .await?;
/// let balance: i32 = session.scalar("SELECT balance FROM accounts WHERE id = $1", (1,)).await?;
/// if balance < 0 {
///     return session.rollback().await; // or just drop it
/// }
/// session.commit().await
/// # }
/// ```
pub struct Session {
    conn: Connection,
    depth: u32,
    /// Savepoint level at which a statement failed (0: the transaction itself).
    failed_at: Option<u32>,
    first_failure: Option<String>,
    /// The lowest savepoint level dropped without commit, rolled back before the next statement.
    pending_rollback: Option<u32>,
    /// The `transaction` span; the session's statements are its children.
    span: tracing::Span,
    /// Committed or rolled back (its outcome is on the span).
    ended: bool,
    /// Cursors declared so far, for their names.
    cursors: u32,
}

impl Session {
    /// Begins a transaction on `conn`.
    pub(crate) async fn begin(mut conn: Connection, options: &SessionOptions) -> Result<Self> {
        let target = conn.context().target();
        let span = tracing::info_span!(
            target: "coredb",
            "transaction",
            db.system.name = "postgresql",
            db.namespace = &*target.namespace,
            db.client.connection.pool.name = &*target.pool_name,
            coredb.role = target.role,
            coredb.read_only = options.read_only,
            coredb.outcome = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let mut begin = options.begin_sql();
        if let Some(after) = &conn.context().settings.after_begin {
            // Behind PgBouncer: the statement timeout, for this transaction only.
            begin = format!("{begin}; {after}");
        }
        if let Some(limit) = options.timeout {
            begin = format!("{begin}; {}", crate::connection::local_timeout_sql(limit));
        }
        if let Err(e) = conn
            .control(&begin, Event::BeginSent)
            .instrument(span.clone())
            .await
        {
            telemetry::record_error(&span, &e);
            return Err(e);
        }
        if let Some(limit) = options.timeout {
            conn.guard_with(limit);
        }
        Ok(Session {
            conn,
            depth: 0,
            failed_at: None,
            first_failure: None,
            pending_rollback: None,
            span,
            ended: false,
            cursors: 0,
        })
    }

    /// Records how the transaction ended on its span (and counts a commit whose outcome is
    /// unknown).
    fn ended(&mut self, result: &Result<()>, committing: bool) {
        self.ended = true;
        let outcome = match result {
            Ok(()) if committing => "committed",
            Err(e) if e.kind() == ErrorKind::CommitOutcomeUnknown => {
                self.conn
                    .context()
                    .target()
                    .count(telemetry::COMMITS_UNKNOWN_OUTCOME, &[]);
                "unknown"
            }
            _ => "rolled back",
        };
        if self.span.is_disabled() {
            return;
        }
        self.span.record("coredb.outcome", outcome);
        if let Err(e) = result {
            telemetry::record_error(&self.span, e);
        }
    }

    /// Commits the transaction.
    ///
    /// Exactly once: the transaction's id is read in the same round trip as `COMMIT`. When the
    /// connection is lost with the `COMMIT` in flight, the server is asked on another
    /// connection what became of it (`txid_status`), on the same server history only (same
    /// address, timeline and postmaster start): committed gives `Ok`, not committed gives the transient
    /// [`ConnectionLost`](ErrorKind::ConnectionLost) error (running it again applies it once),
    /// and anything else gives [`CommitOutcomeUnknown`](ErrorKind::CommitOutcomeUnknown), which
    /// is not transient, so [`transaction_with_retry`](crate::DatabaseManager::transaction_with_retry)
    /// never applies a transaction twice.
    ///
    /// # Errors
    /// When an earlier statement failed, the transaction is rolled back and an error naming the
    /// first failure is returned; a failing `COMMIT` (e.g. a deferred constraint or a
    /// serialization failure) gives the server's error; a lost connection gives one of the two
    /// errors above.
    ///
    /// # Cancel safety
    /// If the future is dropped after `COMMIT` was sent, the transaction may have committed or
    /// not; the connection is closed rather than reused. Dropped before, it rolls back.
    pub async fn commit(mut self) -> Result<()> {
        let span = self.span.clone();
        let result = self.try_commit().instrument(span).await;
        self.ended(&result, true);
        result
    }

    /// [`commit`](Self::commit), before its outcome is recorded.
    async fn try_commit(&mut self) -> Result<()> {
        self.apply_pending_rollback().await?;
        if self.failed_at.is_some() {
            self.end("ROLLBACK").await?;
            return Err(self.aborted_error("the transaction was rolled back instead of committed"));
        }
        if self.conn.pg().is_closed() {
            // Lost before COMMIT could be sent: the server rolls the transaction back, so
            // running it again applies it once.
            return Err(Error::new(
                ErrorKind::ConnectionLost,
                "the connection was lost before COMMIT was sent; the transaction was not committed",
            ));
        }
        let mark = self.conn.writes().cloned();
        let (committed, witness, written) =
            crate::exec::commit(self.conn.pg(), mark.is_some()).await;
        let wrote = match &witness {
            WitnessReply::Seen(witness) => witness.xid.is_some(),
            _ => true,
        };
        let result = match committed {
            Err(lost) if lost.kind() == ErrorKind::ConnectionLost => {
                self.resolve_lost_commit(lost, witness).await
            }
            other => other,
        };
        if let (Some(mark), Ok(())) = (mark, &result) {
            if wrote {
                // Not knowing how far the commit reached (its reply was lost), reads of the
                // scope go to the primary.
                mark.raise(written.unwrap_or(u64::MAX));
            }
        }
        result
    }

    /// The connection was lost with `COMMIT` in flight: asks the server, on another connection,
    /// what became of the transaction, instead of guessing.
    async fn resolve_lost_commit(&self, lost: Error, witness: WitnessReply) -> Result<()> {
        let unknown = |why: &str| {
            Error::new(
                ErrorKind::CommitOutcomeUnknown,
                format!("the connection was lost with COMMIT in flight, and {why}; check whether the transaction's work is there before running it again ({lost})"),
            )
        };
        let witness = match witness {
            WitnessReply::Seen(witness) => witness,
            // The server ended the session before COMMIT ran: not committed, safe to run again.
            WitnessReply::Refused => return Err(lost),
            WitnessReply::Missing => return Err(unknown("the transaction's id never arrived")),
        };
        if witness.xid.is_none() {
            // It wrote nothing: committed or not, the database is the same.
            return Ok(());
        }
        let deadline = Instant::now() + self.conn.pool_timeout();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let asked = async {
                let mut other = self.conn.another(left).await?;
                crate::exec::outcome(other.pg(), &witness).await
            };
            let outcome = tokio::time::timeout(left, asked).await;
            match outcome {
                Ok(Ok(Outcome::Committed)) => {
                    tracing::info!(target: "coredb", "COMMIT's reply was lost; the server says the transaction committed");
                    return Ok(());
                }
                // Not committed: running it again applies it once.
                Ok(Ok(Outcome::Aborted)) => return Err(lost),
                // The server has not yet seen the connection go: ask again shortly.
                Ok(Ok(Outcome::InProgress)) if left > RESOLVE_POLL => {
                    tokio::time::sleep(RESOLVE_POLL).await;
                }
                Ok(Ok(Outcome::InProgress)) => {
                    return Err(unknown("the server still had the transaction in progress"))
                }
                Ok(Ok(Outcome::Unknown)) => {
                    return Err(unknown(
                        "the server that answers now is not the one that ran it (a failover or a restart?) or no longer knows its id",
                    ))
                }
                // The connection asked on went too (a restart): ask again on a new one.
                Ok(Err(e)) if e.is_transient() && left > RESOLVE_POLL => {
                    tracing::debug!(target: "coredb", error = %e, "asking what became of a commit failed; asking again");
                    tokio::time::sleep(RESOLVE_POLL).await;
                }
                Ok(Err(e)) => return Err(unknown(&format!("the server could not be asked: {e}"))),
                Err(_) => return Err(unknown("the server could not be asked in time")),
            }
        }
    }

    /// Rolls the transaction back.
    ///
    /// # Cancel safety
    /// Dropping the future still ends the transaction: the connection is closed, which rolls it
    /// back on the server.
    pub async fn rollback(mut self) -> Result<()> {
        let span = self.span.clone();
        let result = self.end("ROLLBACK").instrument(span).await;
        self.ended(&result, false);
        result
    }

    async fn end(&mut self, sql: &str) -> Result<()> {
        self.conn.control(sql, Event::EndSent).await
    }

    /// Begins a nested transaction (a savepoint); it rolls back on drop unless committed.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the session usable: a savepoint whose `SAVEPOINT` was cut off
    /// is not tracked (the server may keep it until the transaction ends, which is harmless).
    pub async fn begin_nested(&mut self) -> Result<Savepoint<'_>> {
        self.ready().await?;
        let level = self.depth + 1;
        let sql = format!("SAVEPOINT coredb_sp_{level}");
        if let Err(e) = self.conn.control(&sql, Event::TRANSACTION_SCOPED).await {
            self.record_failure(&e);
            return Err(e);
        }
        self.depth = level;
        Ok(Savepoint {
            session: self,
            level,
            done: false,
        })
    }

    /// Limits every following statement of this transaction to `limit`: on the server
    /// (`SET LOCAL statement_timeout`, error `57014` when exceeded) and on the client, whose
    /// guard (the limit plus a margin) ends a statement whose connection went silent. Call it
    /// again to change it; it ends with the transaction. A `SET [LOCAL] statement_timeout`
    /// sent by hand is followed by the guard too.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use coredb::Executor;
    ///
    /// # async fn demo(db: coredb::DatabaseManager) -> coredb::Result<()> {
    /// let mut session = db.session().await?;
    /// session.set_timeout(Duration::from_millis(500)).await?;
    /// session.execute("UPDATE accounts SET balance = balance + 1 WHERE id = $1", (7,)).await?;
    /// session.commit().await
    /// # }
    /// ```
    ///
    /// # Errors
    /// The server's error, or the session's first failure if it is aborted.
    pub async fn set_timeout(&mut self, limit: Duration) -> Result<()> {
        self.ready().await?;
        let result = self
            .conn
            .set_local_timeout(limit)
            .instrument(self.span.clone())
            .await;
        self.noted(result)
    }

    /// The underlying connection, e.g. for [`execute_script`](Connection::execute_script).
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// True when a statement failed and the transaction can only be rolled back.
    pub fn is_aborted(&self) -> bool {
        self.failed_at.is_some()
    }

    fn aborted_error(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::Query,
            format!(
                "{what} because an earlier statement in it failed: {}",
                self.first_failure.as_deref().unwrap_or("unknown error")
            ),
        )
        .with_code(SqlState::IN_FAILED_SQL_TRANSACTION)
    }

    fn check_not_aborted(&self) -> Result<()> {
        match self.failed_at {
            Some(_) => Err(self.aborted_error(
                "the transaction is aborted; roll it back (or drop the session) and start again,",
            )),
            None => Ok(()),
        }
    }

    fn record_failure(&mut self, err: &Error) {
        note_failure(
            &mut self.failed_at,
            &mut self.first_failure,
            self.depth,
            err,
        );
    }

    /// Before a statement: undoes a dropped savepoint, and refuses to go on in an aborted
    /// transaction.
    async fn ready(&mut self) -> Result<()> {
        self.apply_pending_rollback().await?;
        self.check_not_aborted()
    }

    /// After a statement: a failure is the transaction's.
    fn noted<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.record_failure(e);
        }
        result
    }

    /// Sends a statement whose rows are read as they arrive; an error the server sends
    /// half-way is recorded like any failed statement's.
    async fn start_stream<'a>(
        &'a mut self,
        sql: &str,
        params: ParamList<'_>,
        read: Read,
    ) -> Result<Streaming<'a>> {
        self.ready().await?;
        let span = self.span.clone();
        let depth = self.depth;
        let Session {
            conn,
            failed_at,
            first_failure,
            ..
        } = self;
        let on_error: OnError<'a> = Box::new(move |err: &Error| {
            note_failure(failed_at, first_failure, depth, err);
        });
        let (pg, context) = conn.parts();
        let context = Arc::clone(context);
        let bound = context.bind(sql, params)?;
        exec::stream(
            Box::new(pg),
            Arc::clone(&context),
            &bound,
            read,
            crate::exec::Place::Session,
            Some(on_error),
        )
        .instrument(span)
        .await
    }

    async fn apply_pending_rollback(&mut self) -> Result<()> {
        let Some(level) = self.pending_rollback.take() else {
            return Ok(());
        };
        let result = self.rollback_to(level).await;
        if let Err(e) = &result {
            // The server aborted the transaction; without this, COMMIT would quietly roll back.
            self.record_failure(e);
        }
        result
    }

    async fn rollback_to(&mut self, level: u32) -> Result<()> {
        let sql =
            format!("ROLLBACK TO SAVEPOINT coredb_sp_{level}; RELEASE SAVEPOINT coredb_sp_{level}");
        self.conn.control(&sql, Event::TRANSACTION_SCOPED).await?;
        self.depth = level - 1;
        if self.failed_at.is_some_and(|at| at >= level) {
            self.failed_at = None;
            self.first_failure = None;
        }
        Ok(())
    }

    async fn run(&mut self, sql: &str, params: ParamList<'_>, want: Returns) -> Result<Reply> {
        self.ready().await?;
        // Pinned where it is made: wrapping the statement's (large) future by value would copy it.
        let result = {
            let run = std::pin::pin!(self.conn.run(sql, params, want));
            telemetry::in_span(&self.span, run).await
        };
        self.noted(result)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.ended && !self.span.is_disabled() {
            // The connection rolls the transaction back as it goes back to the pool.
            self.span.record("coredb.outcome", "rolled back");
        }
    }
}

impl Session {
    /// Runs `sql` through a cursor and yields its rows as `T`, fetching `batch` rows per
    /// round trip (`DECLARE .. NO SCROLL CURSOR`, then `FETCH batch` as the stream is read):
    /// at most one batch is held at a time, and the server keeps the rest. Unlike
    /// [`stream`](Executor::stream), the session can run other statements between two
    /// batches once the stream is dropped, and a stream dropped half-way leaves nothing in
    /// flight (the cursor closes with the transaction).
    ///
    /// ```no_run
    /// use futures_util::TryStreamExt as _;
    ///
    /// # async fn demo(db: coredb::DatabaseManager) -> coredb::Result<()> {
    /// let mut session = db.session().await?;
    /// let mut rows = session
    ///     .cursor::<(i64,), _>("SELECT id FROM events WHERE kind = :kind", coredb::params! { "kind" => "login" }, 500)
    ///     .await?;
    /// while let Some((id,)) = rows.try_next().await? {
    ///     println!("{id}");
    /// }
    /// # drop(rows); session.commit().await }
    /// ```
    ///
    /// # Errors
    /// A [`Params`](ErrorKind::Params) error for a `batch` of 0; as
    /// [`query`](Executor::query) for the `DECLARE` and each `FETCH`.
    pub async fn cursor<'a, T, P>(
        &'a mut self,
        sql: &str,
        params: P,
        batch: u32,
    ) -> Result<CursorStream<'a, T>>
    where
        T: FromRow + Send + 'a,
        P: crate::params::Params,
    {
        if batch == 0 {
            return Err(Error::params(
                "a cursor fetches at least 1 row per round trip; batch is 0",
            ));
        }
        self.cursors += 1;
        let name = format!("coredb_cursor_{}", self.cursors);
        let declare = format!("DECLARE {name} NO SCROLL CURSOR FOR {sql}");
        self.run(&declare, params.param_list(), Returns::Count)
            .await?;
        let fetch = format!("FETCH {batch} FROM {name}");
        let state = (self, fetch, std::collections::VecDeque::<Row>::new(), false);
        let rows = futures_util::stream::try_unfold(
            state,
            move |(session, fetch, mut buffer, mut done)| async move {
                if buffer.is_empty() && !done {
                    let rows = session
                        .run(&fetch, ().param_list(), Returns::Rows)
                        .await?
                        .rows();
                    done = rows.len() < batch as usize;
                    buffer.extend(rows);
                }
                match buffer.pop_front() {
                    Some(row) => Ok(Some((
                        T::from_owned_row(row)?,
                        (session, fetch, buffer, done),
                    ))),
                    None => Ok(None),
                }
            },
        );
        Ok(CursorStream {
            rows: Box::pin(rows),
        })
    }

    /// Writes `rows` with a binary COPY; a failure aborts the transaction as any failed
    /// statement does.
    async fn copy_rows_in(&mut self, copy: &str, insert: &str, rows: RowValues<'_>) -> Result<u64> {
        self.ready().await?;
        let span = self.span.clone();
        let (pg, context) = self.conn.parts();
        let result = exec::copy_in(pg, context, copy, insert, rows, Place::Session)
            .instrument(span)
            .await;
        self.noted(result)
    }

    /// Sends `data` into a `COPY .. FROM STDIN`; a failure aborts the transaction as any
    /// failed statement does.
    async fn copy_in_data(&mut self, sql: &str, data: CopyData<'_>) -> Result<u64> {
        self.ready().await?;
        let span = self.span.clone();
        let (pg, context) = self.conn.parts();
        let bound = context.bind(sql, ().param_list())?;
        let result = exec::copy_in_data(pg, context, &bound, data, Place::Session)
            .instrument(span)
            .await;
        self.noted(result)
    }
}

/// Records that a statement failed at savepoint level `depth`: only errors the server raised
/// abort its transaction (parameter and decode errors happen on this side).
fn note_failure(
    failed_at: &mut Option<u32>,
    first_failure: &mut Option<String>,
    depth: u32,
    err: &Error,
) {
    if err.code().is_some() || err.kind() == ErrorKind::ConnectionLost {
        if failed_at.is_none_or(|level| depth < level) {
            *failed_at = Some(depth);
        }
        if first_failure.is_none() {
            *first_failure = Some(err.to_string());
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("connection", &self.conn)
            .field("savepoint_depth", &self.depth)
            .field("aborted", &self.failed_at.is_some())
            .finish()
    }
}

impl Executor for Session {}

impl sealed::Sealed for Session {
    fn run_statement<'a>(
        &'a mut self,
        sql: &'a str,
        params: ParamList<'a>,
        want: Returns,
    ) -> impl Future<Output = Result<Reply>> + Send + 'a {
        self.run(sql, params, want)
    }

    fn start_stream<'a, 'p>(
        &'a mut self,
        sql: &'p str,
        params: ParamList<'p>,
        read: Read,
    ) -> impl Future<Output = Result<Streaming<'a>>> + Send {
        Session::start_stream(self, sql, params, read)
    }

    fn copy_in_data<'a>(
        &'a mut self,
        sql: &'a str,
        data: CopyData<'a>,
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        Session::copy_in_data(self, sql, data)
    }

    fn copy_rows_in<'a, 'v>(
        &'a mut self,
        copy: &'a str,
        insert: &'a str,
        rows: RowValues<'v>,
    ) -> impl Future<Output = Result<u64>> + Send {
        Session::copy_rows_in(self, copy, insert, rows)
    }
}

/// A savepoint inside a [`Session`]: committing releases it, dropping it rolls back to it.
///
/// ```no_run
/// use coredb::Executor;
///
/// # async fn demo(db: coredb::DatabaseManager) -> coredb::Result<()> {
/// let mut session = db.session().await?;
/// session.execute("INSERT INTO orders (id) VALUES (1)", ()).await?;
/// let mut nested = session.begin_nested().await?;
/// if nested.execute("INSERT INTO coupons (order_id) VALUES (1)", ()).await.is_err() {
///     nested.rollback().await?; // the order stays; the coupon is undone
/// } else {
///     nested.commit().await?;
/// }
/// session.commit().await
/// # }
/// ```
pub struct Savepoint<'a> {
    session: &'a mut Session,
    level: u32,
    done: bool,
}

impl Savepoint<'_> {
    /// Keeps the savepoint's work as part of the enclosing transaction.
    ///
    /// # Errors
    /// When a statement inside it failed, it is rolled back and an error is returned.
    ///
    /// # Cancel safety
    /// Dropped before it finishes, the savepoint is rolled back before the session's next
    /// statement. If its `RELEASE` had already reached the server, that rollback fails and
    /// the session is aborted: it can then only roll back, so nothing half-done is committed.
    pub async fn commit(mut self) -> Result<()> {
        let result = self.release().await;
        // Reached only when the work above finished: a future dropped half-way leaves `done`
        // unset, and Drop rolls the savepoint back before the session's next statement.
        self.done = true;
        result
    }

    async fn release(&mut self) -> Result<()> {
        self.session.apply_pending_rollback().await?;
        if self.session.failed_at.is_some_and(|at| at >= self.level) {
            let err = self
                .session
                .aborted_error("the savepoint was rolled back instead of released");
            self.session.rollback_to(self.level).await?;
            return Err(err);
        }
        let sql = format!("RELEASE SAVEPOINT coredb_sp_{}", self.level);
        self.session
            .conn
            .control(&sql, Event::TRANSACTION_SCOPED)
            .await?;
        self.session.depth = self.level - 1;
        Ok(())
    }

    /// Undoes the savepoint's work; the enclosing transaction goes on.
    ///
    /// # Cancel safety
    /// Dropped before it finishes, the rollback is made (again) before the session's next
    /// statement; if it had already been made, that fails and the session is aborted, so
    /// the savepoint's work is never committed.
    pub async fn rollback(mut self) -> Result<()> {
        let result = async {
            self.session.apply_pending_rollback().await?;
            self.session.rollback_to(self.level).await
        }
        .await;
        self.done = true;
        result
    }

    /// Begins a savepoint inside this one.
    pub async fn begin_nested(&mut self) -> Result<Savepoint<'_>> {
        self.session.begin_nested().await
    }
}

impl Executor for Savepoint<'_> {}

impl sealed::Sealed for Savepoint<'_> {
    fn run_statement<'a>(
        &'a mut self,
        sql: &'a str,
        params: ParamList<'a>,
        want: Returns,
    ) -> impl Future<Output = Result<Reply>> + Send + 'a {
        self.session.run(sql, params, want)
    }

    fn start_stream<'a, 'p>(
        &'a mut self,
        sql: &'p str,
        params: ParamList<'p>,
        read: Read,
    ) -> impl Future<Output = Result<Streaming<'a>>> + Send {
        self.session.start_stream(sql, params, read)
    }

    fn copy_in_data<'a>(
        &'a mut self,
        sql: &'a str,
        data: CopyData<'a>,
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        self.session.copy_in_data(sql, data)
    }

    fn copy_rows_in<'a, 'v>(
        &'a mut self,
        copy: &'a str,
        insert: &'a str,
        rows: RowValues<'v>,
    ) -> impl Future<Output = Result<u64>> + Send {
        self.session.copy_rows_in(copy, insert, rows)
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Rolled back before the session's next statement (Drop cannot wait for the server).
            let level = self
                .session
                .pending_rollback
                .map_or(self.level, |l| l.min(self.level));
            self.session.pending_rollback = Some(level);
        }
    }
}

/// The rows of a [`Session::cursor`], fetched a batch at a time as the stream is read.
pub struct CursorStream<'a, T> {
    rows: Pin<Box<dyn futures_util::Stream<Item = Result<T>> + Send + 'a>>,
}

impl<T> futures_util::Stream for CursorStream<'_, T> {
    type Item = Result<T>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<T>>> {
        self.rows.as_mut().poll_next(cx)
    }
}

impl<T> std::fmt::Debug for CursorStream<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CursorStream").finish_non_exhaustive()
    }
}
