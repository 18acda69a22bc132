//! [`DatabaseManager`]: the handle a service keeps (`DatabaseManager` and `create_engine()`'s
//! engine in core.db; here they are one type).

use std::future::Future;
use std::panic::Location;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres_types::FromSqlOwned;

use crate::config::DatabaseConfig;
use crate::conn::PgManager;
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::exec::{Context, Read, Reply, Returns, Streaming};
use crate::health::{HealthReport, HealthStatus, ListenerStatus, ReplicaHealth};
use crate::listener::{Listener, ListenerCounts};
use crate::params::{Bound, ParamList, Params};
use crate::pipeline::Pipeline;
use crate::pool::{Pool, PoolMetrics, PoolOptions, PoolStatus};
use crate::query::{CopyOutStream, Executor, RowStream};
use crate::retry::{RetryPolicy, TransientError};
use crate::row::{FromRow, Row};
use crate::session::{Session, SessionOptions};
use crate::telemetry::Target;
use tracing::Instrument as _;

mod replicas;
mod test_scope;

use crate::exec::WriteMark;
use replicas::ReplicaState;

pub(crate) use test_scope::scoped;
pub use test_scope::TestScope;

/// core.db's name for what [`DatabaseConfig::create_engine`] returns: the same handle as
/// [`DatabaseManager`], so code written either way works with the other.
pub type Engine = DatabaseManager;

/// How many times a session start is retried on a connection found dead at `BEGIN`.
const BEGIN_ATTEMPTS: usize = 3;

/// One database: its configuration, pool, shared pipeline and statement context.
struct Database {
    config: DatabaseConfig,
    pool: Pool<PgManager>,
    context: Arc<Context>,
    pipeline: Pipeline,
    /// Its listeners, outside the pool.
    listeners: Arc<ListenerCounts>,
    /// For the replicas' pool: until when reads go to the primary instead, after no replica
    /// could be reached.
    down_until: std::sync::Mutex<Option<Instant>>,
    /// For a replica: its lag and replay position, as last seen.
    replica: ReplicaState,
}

/// How long reads skip the replicas after none could be reached.
const REPLICAS_DOWN_FOR: Duration = Duration::from_secs(5);

impl Database {
    /// The database of `config`; `replica` for the read replicas' pool.
    fn new(config: DatabaseConfig, replica: bool) -> Result<Self> {
        // A read that can fall back to the primary waits for a replica no longer than it takes
        // to open a connection.
        let timeout = if replica && config.read_fallback() {
            config
                .pool_timeout()
                .min(config.connect_timeout() + Duration::from_millis(250))
        } else {
            config.pool_timeout()
        };
        let options = PoolOptions {
            pool_size: config.pool_size(),
            max_overflow: config.max_overflow(),
            timeout,
            recycle: config.pool_recycle(),
            pre_ping: config.pool_pre_ping(),
            pre_ping_idle: config.pre_ping_idle,
        };
        Ok(Database {
            pool: Pool::new(PgManager::new(&config)?, options),
            context: Arc::new(Context::new(
                config.exec_settings(),
                Target::of(&config, replica),
            )),
            pipeline: Pipeline::new(config.pool_size()),
            listeners: Arc::default(),
            down_until: std::sync::Mutex::new(None),
            replica: ReplicaState::default(),
            config,
        })
    }

    /// True while reads skip these replicas.
    fn is_down(&self) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Sends reads to the primary for a while.
    fn mark_down(&self) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + REPLICAS_DOWN_FOR);
    }
}

impl DatabaseConfig {
    /// Creates the engine: the pool and its statement caches; no connection is opened until
    /// first use. The same as [`DatabaseManager::from_config`].
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error when this build cannot honour a setting
    /// (e.g. `sslmode=require` without the `tls` feature).
    pub fn create_engine(&self) -> Result<Engine> {
        DatabaseManager::from_config(self)
    }
}

/// Connections, sessions, raw SQL and health for one database; cheap to clone.
///
/// Its query methods run in autocommit. Statements that leave no state on the connection are
/// pipelined over a few shared connections (see `POSTGRES_PIPELINE_AUTOCOMMIT`); the rest take
/// a connection of their own for the statement.
///
/// ```no_run
/// # async fn demo() -> coredb::Result<()> {
/// use coredb::{params, DatabaseManager, Executor};
///
/// let db = DatabaseManager::from_env()?;
/// let adults = db
///     .execute_raw_sql("SELECT name FROM users WHERE age > :age", params! { "age" => 18 })
///     .await?;
/// let total: i64 = db
///     .transaction(async |s| {
///         s.execute("UPDATE accounts SET balance = balance - 10 WHERE id = $1", (1,)).await?;
///         s.scalar("SELECT sum(balance)::int8 FROM accounts", ()).await
///     })
///     .await?;
/// # let _ = (adults, total); Ok(()) }
/// ```
#[derive(Clone)]
pub struct DatabaseManager {
    /// The database its settings, figures and listeners come from: the primary, or for a
    /// [`reader`](Self::reader) the first replica.
    db: Arc<Database>,
    /// The read replicas, one pool each, when configured.
    replicas: Arc<[Arc<Database>]>,
    /// Whether this is a [`reader`](Self::reader): its work goes to the replicas in turn.
    reads: bool,
    /// The primary: `db` itself, or for a reader where reads go when no replica qualifies
    /// (`POSTGRES_READ_FALLBACK`) or a replica is too slow to catch up with the caller's writes.
    primary: Arc<Database>,
    /// The reader's turn over the replicas.
    turn: Arc<std::sync::atomic::AtomicUsize>,
    /// Set by [`read_your_writes`](Self::read_your_writes): how far this scope's writes
    /// reached, which its reads wait for.
    mark: Option<Arc<WriteMark>>,
    /// Set by [`with_timeout`](Self::with_timeout): the limit of each statement.
    timeout: Option<Duration>,
}

impl DatabaseManager {
    /// Creates the pool for `config` (no connection is opened yet), and the one for its read
    /// replicas when `POSTGRES_READ_HOSTS` is set.
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error when this build cannot honour a setting.
    pub fn from_config(config: &DatabaseConfig) -> Result<Self> {
        let replicas = config
            .replica_configs()
            .into_iter()
            .map(|c| Database::new(c, true).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let db = Arc::new(Database::new(config.clone(), false)?);
        Ok(DatabaseManager {
            primary: Arc::clone(&db),
            db,
            replicas: replicas.into(),
            reads: false,
            turn: Arc::default(),
            mark: None,
            timeout: None,
        })
    }

    /// The manager for reads: on the read replicas (`POSTGRES_READ_HOSTS`) when configured,
    /// one after the other statement by statement (and session by session), skipping for a
    /// while one that could not be reached, and on the primary when none can
    /// (`POSTGRES_READ_FALLBACK`); otherwise this manager itself.
    ///
    /// With `POSTGRES_READ_MAX_LAG`, a replica lagging more than that is out of rotation
    /// until it catches up (its lag is measured on the replica every 250 ms while reads use
    /// it; until the first measurement, a few milliseconds, reads go to the primary).
    ///
    /// Replicas lag the primary a little: read what must be current on the primary, or make
    /// the reader from a [`read_your_writes`](Self::read_your_writes) scope.
    pub fn reader(&self) -> DatabaseManager {
        match self.replicas.first() {
            Some(first) => DatabaseManager {
                db: Arc::clone(first),
                replicas: Arc::clone(&self.replicas),
                reads: true,
                primary: Arc::clone(&self.primary),
                turn: Arc::clone(&self.turn),
                mark: self.mark.clone(),
                timeout: self.timeout,
            },
            None => self.clone(),
        }
    }

    /// A scope whose reads see its own writes: a handle on the same pools that remembers how
    /// far in the primary's WAL its writes reached (each transaction it commits, each
    /// autocommit write it sends), so that its [`reader`](Self::reader) sends a read to a
    /// replica only once the replica has replayed them. A replica that has not waits up to
    /// `POSTGRES_READ_YOUR_WRITES_WAIT` (0.2 s by default), then the read goes to the primary.
    /// Make one per request or per user flow; `coredb::axum::TxLayer` makes one per
    /// request.
    ///
    /// Writes made on a checked-out [`Connection`] in autocommit are not followed: write in a
    /// session (or through the scope's own autocommit methods) for them to count. Without read
    /// replicas this is the same as the manager itself.
    ///
    /// ```no_run
    /// # async fn demo(db: coredb::DatabaseManager) -> coredb::Result<()> {
    /// let scope = db.read_your_writes();
    /// scope.execute("INSERT INTO notes (body) VALUES ($1)", ("hello",)).await?;
    /// // On a replica that has replayed the insert, or on the primary.
    /// let n: i64 = scope.reader().scalar("SELECT count(*) FROM notes", ()).await?;
    /// # let _ = n; Ok(()) }
    /// ```
    pub fn read_your_writes(&self) -> DatabaseManager {
        if self.replicas.is_empty() {
            return self.clone();
        }
        DatabaseManager {
            mark: Some(Arc::default()),
            ..self.clone()
        }
    }

    /// A handle on the same pools whose statements are each limited to `limit`, whatever
    /// `POSTGRES_STATEMENT_TIMEOUT` says: on the server (`SET LOCAL statement_timeout`, error
    /// `57014` when exceeded) and by the client-side guard (the limit plus a margin), which ends
    /// a statement whose connection went silent with a [`Timeout`](ErrorKind::Timeout) error.
    ///
    /// Its autocommit statements run each in a transaction of its own that carries the limit
    /// (`BEGIN; SET LOCAL ...` in one round trip, the statement, `COMMIT`: two round trips more
    /// than a plain autocommit statement); its sessions and transactions begin with the limit
    /// (see [`SessionOptions::timeout`]). Streams, COPY and checked-out connections are not
    /// limited by it: use a session.
    ///
    /// ```no_run
    /// # async fn demo(db: coredb::DatabaseManager) -> coredb::Result<()> {
    /// use std::time::Duration;
    ///
    /// let report: i64 = db
    ///     .with_timeout(Duration::from_secs(2))
    ///     .scalar("SELECT count(*) FROM events WHERE day = current_date", ())
    ///     .await?;
    /// # let _ = report; Ok(()) }
    /// ```
    pub fn with_timeout(&self, limit: Duration) -> DatabaseManager {
        DatabaseManager {
            timeout: Some(limit),
            ..self.clone()
        }
    }

    /// Where this manager's next piece of work goes: its database; for a reader, the next
    /// replica not known to be down nor lagging too far, or the primary while none qualifies.
    fn route(&self) -> &Arc<Database> {
        if !self.reads {
            return &self.db;
        }
        let max_lag = self.db.config.read_max_lag();
        if let Some(max_lag) = max_lag {
            self.measure_lags(max_lag);
        }
        let start = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let count = self.replicas.len();
        let fallback = self.db.config.read_fallback().then_some(&self.primary);
        (0..count)
            .map(|i| &self.replicas[(start + i) % count])
            .find(|db| !db.is_down() && max_lag.is_none_or(|max| db.replica.within(max)))
            .or(fallback)
            .unwrap_or(&self.replicas[start % count])
    }

    /// Starts measuring the lag of each replica whose last measurement is getting old, in the
    /// background, as an autocommit statement on the replica (pipelined beside its reads, so a
    /// busy replica is measured without waiting for a free connection).
    fn measure_lags(&self, max_lag: Duration) {
        for replica in self.replicas.iter() {
            if !replica.replica.claim_measurement() {
                continue;
            }
            let replica = Arc::clone(replica);
            tokio::spawn(async move {
                let measured = async {
                    let bound = replica
                        .context
                        .bind(replicas::MEASURE_SQL, ().param_list())?;
                    run_once(&replica, &bound, Returns::First).await?.one::<(
                        bool,
                        Option<f64>,
                        Option<String>,
                    )>()
                };
                match measured.await {
                    Ok((true, lag_ms, replayed)) => {
                        let lag = replicas::lag_of(lag_ms);
                        if lag.is_some_and(|lag| lag > max_lag) {
                            tracing::debug!(target: "coredb", replica = %replica.context.target().pool_name, ?lag, "a read replica lags too far; out of rotation (POSTGRES_READ_MAX_LAG)");
                        }
                        replica
                            .replica
                            .measured(lag, crate::exec::parse_lsn(replayed.as_deref()));
                    }
                    // A primary in the replicas' list (promoted?) has no replay lag to trust.
                    Ok((false, _, _)) => replica.replica.measured(None, None),
                    Err(err) => {
                        tracing::debug!(target: "coredb", error = %err, replica = %replica.context.target().pool_name, "measuring a read replica's lag failed");
                        replica.replica.measured(None, None);
                    }
                }
            });
        }
    }

    /// Where a read routed to `db` runs so that it sees this scope's writes: `db` once it has
    /// replayed them (waiting up to `POSTGRES_READ_YOUR_WRITES_WAIT`), another replica known to
    /// have, or the primary.
    async fn caught_up<'a>(&'a self, db: &'a Arc<Database>) -> &'a Arc<Database> {
        let Some(mark) = &self.mark else {
            return db;
        };
        let wanted = mark.get();
        if !self.reads || wanted == 0 || Arc::ptr_eq(db, &self.primary) {
            return db;
        }
        if db.replica.replayed() >= wanted {
            return db;
        }
        if let Some(other) = self
            .replicas
            .iter()
            .find(|r| r.replica.replayed() >= wanted && !r.is_down())
        {
            return other;
        }
        let deadline = Instant::now() + self.db.config.read_your_writes_wait();
        let probe = match db.context.bind(replicas::REPLAYED_SQL, ().param_list()) {
            Ok(probe) => probe,
            Err(_) => return &self.primary,
        };
        loop {
            match run_once(db, &probe, Returns::Rows).await {
                Ok(reply) => {
                    let replayed = reply.scalar::<Option<String>>().ok().flatten();
                    if let Some(lsn) = crate::exec::parse_lsn(replayed.as_deref()) {
                        db.replica.saw_replayed(lsn);
                        if lsn >= wanted {
                            return db;
                        }
                    }
                }
                Err(_) => break,
            }
            if Instant::now() + replicas::REPLAY_POLL >= deadline {
                break;
            }
            tokio::time::sleep(replicas::REPLAY_POLL).await;
        }
        tracing::debug!(target: "coredb", replica = %db.context.target().pool_name, "a read replica had not replayed the caller's writes in time; reading from the primary");
        &self.primary
    }

    /// Where this manager's next piece of work goes, for a read once the caller's writes are
    /// visible there.
    async fn pick(&self) -> &Arc<Database> {
        self.caught_up(self.route()).await
    }

    /// Records that a write committed (when this is a [`read_your_writes`](Self::read_your_writes)
    /// scope): reads from now on wait for the primary's current WAL position.
    async fn note_write(&self) {
        let Some(mark) = &self.mark else {
            return;
        };
        let written = async {
            let probe = self
                .primary
                .context
                .bind(crate::exec::WRITTEN_SQL, ().param_list())?;
            run_once(&self.primary, &probe, Returns::Rows)
                .await?
                .scalar::<Option<String>>()
        };
        match written.await {
            Ok(lsn) => mark.raise(crate::exec::parse_lsn(lsn.as_deref()).unwrap_or(u64::MAX)),
            // Not knowing how far the write reached, reads go to the primary.
            Err(_) => mark.raise(u64::MAX),
        }
    }

    /// Where to retry when `err` (from `db`) says a replica could not be reached: another
    /// replica, or the primary; `None` when the error is of another kind or there is nowhere
    /// else to go.
    fn fall_back(&self, db: &Arc<Database>, err: &Error) -> Option<&Arc<Database>> {
        if !self.reads
            || !matches!(err.kind(), ErrorKind::Connect | ErrorKind::PoolTimeout)
            || !self.replicas.iter().any(|r| Arc::ptr_eq(r, db))
        {
            return None;
        }
        db.mark_down();
        let next = self.route();
        // Every replica is down and there is no fallback: nowhere else to go.
        if next.is_down() {
            return None;
        }
        tracing::warn!(target: "coredb", error = %err, replica = %db.context.target().pool_name, "a read replica could not be reached; reading elsewhere, and not from it for {REPLICAS_DOWN_FOR:?} (POSTGRES_READ_FALLBACK)");
        Some(next)
    }

    /// Like [`from_config`](Self::from_config) with [`DatabaseConfig::from_env`]; inside a
    /// [test scope](Self::enter_test_scope), the test's manager.
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error for bad settings, or on a thread outside every
    /// test scope of a process that uses them.
    pub fn from_env() -> Result<Self> {
        if let Some(manager) = scoped()? {
            return Ok(manager);
        }
        Self::from_config(&DatabaseConfig::from_env()?)
    }

    /// The configuration in use.
    pub fn config(&self) -> &DatabaseConfig {
        &self.db.config
    }

    /// Checks out a connection in autocommit mode, waiting up to the pool timeout; it goes
    /// back to the pool when dropped.
    ///
    /// # Errors
    /// [`PoolTimeout`](ErrorKind::PoolTimeout), [`PoolClosed`](ErrorKind::PoolClosed), or a
    /// [`Connect`](ErrorKind::Connect) error when a new connection cannot be opened.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped call leaves its place in the queue and takes no connection.
    ///
    /// The caller's file and line are kept while the connection is out, so a pool timeout
    /// names who holds the connections; the same holds for sessions and transactions.
    #[track_caller]
    pub fn get_connection(&self) -> impl Future<Output = Result<Connection>> + '_ {
        self.connection_for(self.db.pool.options().timeout, Location::caller())
    }

    /// A connection within `limit`, held by the caller at `at`.
    async fn connection_for(
        &self,
        limit: Duration,
        at: &'static Location<'static>,
    ) -> Result<Connection> {
        let mut db = self.pick().await;
        loop {
            match connection_from(db, limit, at).await {
                Err(err) => match self.fall_back(db, &err) {
                    Some(next) => db = self.caught_up(next).await,
                    None => return Err(err),
                },
                Ok(mut conn) => {
                    if !self.reads {
                        conn.follow_writes(self.mark.clone());
                    }
                    return Ok(conn);
                }
            }
        }
    }

    /// Like [`get_connection`](Self::get_connection), waiting at most `limit`.
    ///
    /// # Errors
    /// As [`get_connection`](Self::get_connection).
    ///
    /// # Cancel safety
    /// As [`get_connection`](Self::get_connection).
    #[track_caller]
    pub fn get_connection_within(
        &self,
        limit: Duration,
    ) -> impl Future<Output = Result<Connection>> + '_ {
        self.connection_for(limit, Location::caller())
    }

    /// Begins a transaction (`get_session_context()` in core.db); commit it explicitly.
    ///
    /// # Errors
    /// As [`get_connection`](Self::get_connection), or the server's error for `BEGIN`.
    ///
    /// # Cancel safety
    /// Cancel safe: a call dropped during `BEGIN` closes its connection instead of returning
    /// it to the pool with a transaction open.
    #[track_caller]
    pub fn session(&self) -> impl Future<Output = Result<Session>> + '_ {
        self.session_for(SessionOptions::default(), Location::caller())
    }

    /// Like [`session`](Self::session), with an isolation level or read-only mode.
    ///
    /// A connection that turns out dead at `BEGIN` (e.g. terminated while idle) is replaced
    /// without the caller seeing it: nothing was done on it yet.
    ///
    /// # Errors
    /// As [`session`](Self::session).
    ///
    /// # Cancel safety
    /// As [`session`](Self::session).
    #[track_caller]
    pub fn session_with(
        &self,
        options: SessionOptions,
    ) -> impl Future<Output = Result<Session>> + '_ {
        self.session_for(options, Location::caller())
    }

    /// A session with `options`, held by the caller at `at`.
    pub(crate) async fn session_for(
        &self,
        options: SessionOptions,
        at: &'static Location<'static>,
    ) -> Result<Session> {
        let options = SessionOptions {
            timeout: options.timeout.or(self.timeout),
            ..options
        };
        let mut attempt = 1;
        loop {
            let conn = self
                .connection_for(self.db.pool.options().timeout, at)
                .await?;
            match Session::begin(conn, &options).await {
                Err(e) if e.kind() == ErrorKind::ConnectionLost && attempt < BEGIN_ATTEMPTS => {
                    tracing::debug!(target: "coredb", error = %e, "connection dead at BEGIN; taking another");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Runs `f` in a transaction: committed when it returns `Ok`, rolled back when it returns
    /// `Err` (which is returned unchanged).
    ///
    /// # Errors
    /// The closure's error, or a coredb error from `BEGIN` or `COMMIT` converted into `E`.
    ///
    /// # Cancel safety
    /// Dropping the future rolls the transaction back (the session is dropped with it), unless
    /// `COMMIT` was already sent: then it may have committed, and the connection is closed rather
    /// than reused.
    #[track_caller]
    pub fn transaction<T, E, F>(
        &self,
        f: F,
    ) -> impl Future<Output = Result<T, E>> + use<'_, T, E, F>
    where
        F: AsyncFnOnce(&mut Session) -> Result<T, E>,
        E: From<Error>,
    {
        self.transaction_for(SessionOptions::default(), f, Location::caller())
    }

    /// Like [`transaction`](Self::transaction), with session options.
    ///
    /// # Cancel safety
    /// Dropping the future rolls the transaction back (the session is dropped with it), unless
    /// `COMMIT` was already sent: then it may have committed, and the connection is closed rather
    /// than reused.
    #[track_caller]
    pub fn transaction_with<T, E, F>(
        &self,
        options: SessionOptions,
        f: F,
    ) -> impl Future<Output = Result<T, E>> + use<'_, T, E, F>
    where
        F: AsyncFnOnce(&mut Session) -> Result<T, E>,
        E: From<Error>,
    {
        self.transaction_for(options, f, Location::caller())
    }

    /// [`transaction_with`](Self::transaction_with) for a caller at `at`.
    async fn transaction_for<T, E, F>(
        &self,
        options: SessionOptions,
        f: F,
        at: &'static Location<'static>,
    ) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut Session) -> Result<T, E>,
        E: From<Error>,
    {
        let mut session = self.session_for(options, at).await?;
        match f(&mut session).await {
            Ok(value) => {
                session.commit().await?;
                Ok(value)
            }
            Err(err) => {
                if let Err(rollback) = session.rollback().await {
                    tracing::debug!(target: "coredb", error = %rollback, "rollback after a failed transaction closure failed");
                }
                Err(err)
            }
        }
    }

    /// Like [`transaction_with`](Self::transaction_with), running the whole closure again when
    /// it fails with a transient error (serialization failure, deadlock, lost connection, ...),
    /// with exponential backoff and jitter, within the policy's attempts and time.
    ///
    /// The closure may run several times (a fresh clone each time), so it must not have effects
    /// outside the transaction that cannot be repeated. Only a committed attempt counts.
    ///
    /// # Errors
    /// The first non-transient error, or the last error when the policy gives up.
    ///
    /// # Cancel safety
    /// Dropping the future rolls the transaction back (the session is dropped with it), unless
    /// `COMMIT` was already sent: then it may have committed, and the connection is closed rather
    /// than reused.
    #[track_caller]
    pub fn transaction_with_retry<'a, T, E, F>(
        &'a self,
        options: SessionOptions,
        policy: &'a RetryPolicy,
        f: F,
    ) -> impl Future<Output = Result<T, E>> + use<'a, T, E, F>
    where
        F: AsyncFnOnce(&mut Session) -> Result<T, E> + Clone,
        E: From<Error> + TransientError + std::fmt::Display,
    {
        let at = Location::caller();
        let span = tracing::info_span!(
            target: "coredb",
            "retry",
            coredb.retry = "transaction",
            coredb.attempts = tracing::field::Empty,
        );
        self.retry_transaction(options, policy, f, at)
            .instrument(span)
    }

    /// [`transaction_with_retry`](Self::transaction_with_retry) for a caller at `at`.
    async fn retry_transaction<T, E, F>(
        &self,
        options: SessionOptions,
        policy: &RetryPolicy,
        f: F,
        at: &'static Location<'static>,
    ) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut Session) -> Result<T, E> + Clone,
        E: From<Error> + TransientError + std::fmt::Display,
    {
        let started = Instant::now();
        let mut backoff = policy.backoff();
        let mut attempt = 1;
        loop {
            tracing::Span::current().record("coredb.attempts", attempt);
            let outcome = async {
                let mut session = self.session_for(options, at).await?;
                // Each attempt runs a fresh copy of the closure.
                match f.clone()(&mut session).await {
                    Ok(value) => {
                        session.commit().await?;
                        Ok(value)
                    }
                    Err(err) => {
                        let _ = session.rollback().await;
                        Err(err)
                    }
                }
            }
            .await;
            let err = match outcome {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let delay = backoff.next_delay();
            if !err.is_transient()
                || attempt >= policy.max_attempts
                || started.elapsed() + delay > policy.max_elapsed
            {
                return Err(err);
            }
            tracing::debug!(target: "coredb", attempt, error = %err, ?delay, "transient error; retrying the transaction");
            self.db.context.target().count(
                crate::telemetry::RETRIES,
                &[("coredb.retry", "transaction")],
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// True when the database answers a query within the connect timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: the check's connection goes back to the pool, or is closed if it was mid-query.
    pub async fn health_check(&self) -> bool {
        self.health_report().await.is_healthy()
    }

    /// A full [`HealthReport`]: a query round trip within the connect timeout, never longer.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`health_check`](Self::health_check).
    pub async fn health_report(&self) -> HealthReport {
        let limit = self.config().connect_timeout();
        let started = Instant::now();
        // The driver's own connect timeout fires first and gives the better message.
        let outcome = tokio::time::timeout(limit + Duration::from_millis(500), async {
            let mut conn = self
                .get_connection_within(limit + Duration::from_millis(250))
                .await?;
            conn.scalar::<String, _>("SELECT current_setting('server_version')", ())
                .await
        })
        .await
        .unwrap_or_else(|_| Err(Error::timeout("the health check", limit)));
        let url = self.config().database_url();
        let mut report = match outcome {
            Ok(version) => HealthReport::healthy(url, started.elapsed(), version, self.status()),
            Err(err) => {
                tracing::warn!(target: "coredb", error = %err, "database health check failed");
                HealthReport::unhealthy(url, &err, Some(self.status()))
            }
        };
        let counts = &self.db.listeners;
        report.listeners = Some(ListenerStatus {
            open: counts.open.load(Ordering::Acquire),
            connected: counts.connected.load(Ordering::Acquire),
        });
        if !self.reads && !self.replicas.is_empty() {
            let checks = self.replicas.iter().map(|replica| {
                let (host, port) = replica.config.host_ports().next().unwrap_or(("", 0));
                check_replica(&replica.config, host.to_owned(), port)
            });
            let replicas = futures_util::future::join_all(checks).await;
            if report.is_healthy() && replicas.iter().any(|r| !r.healthy) {
                report.status = HealthStatus::Degraded;
            }
            report.replicas = Some(replicas);
        }
        report
    }

    /// Runs raw SQL with `:name` (or `$n`) parameters in autocommit and returns the rows
    /// (core.db's `execute_raw_sql`).
    ///
    /// # Cancel safety
    /// Dropping the future is safe; the statement may have run or not. A shared connection whose
    /// statement was abandoned takes no new statements and is closed once nothing else runs on it;
    /// a connection of its own is closed and the statement cancelled on the server.
    pub async fn execute_raw_sql<P: Params>(&self, sql: &str, params: P) -> Result<Vec<Row>> {
        self.query(sql, params).await
    }

    async fn autocommit(&self, sql: &str, params: ParamList<'_>, want: Returns) -> Result<Reply> {
        if self.timeout.is_some() {
            return self.limited(sql, params, want).await;
        }
        // Parameters are checked before a connection is taken.
        let bound = self.db.context.bind(sql, params)?;
        let mut db = self.pick().await;
        loop {
            match self.autocommit_on(db, &bound, want).await {
                // No connection was had: the statement never left, and runs elsewhere (each
                // replica that fails is skipped for a while, so this ends).
                Err(err) => match self.fall_back(db, &err) {
                    Some(next) => db = self.caught_up(next).await,
                    None => return Err(err),
                },
                Ok(reply) => {
                    // Anything the text does not prove free of writes may have written.
                    let may_write = !bound.class.is_read_only() || bound.class.calls_functions();
                    if !self.reads && may_write {
                        self.note_write().await;
                    }
                    return Ok(reply);
                }
            }
        }
    }

    /// Runs one statement in a transaction of its own that carries this handle's timeout.
    async fn limited(&self, sql: &str, params: ParamList<'_>, want: Returns) -> Result<Reply> {
        // Parameters are checked before a connection is taken.
        self.db.context.bind(sql, params.clone())?;
        let mut session = self
            .session_for(SessionOptions::default(), Location::caller())
            .await?;
        match crate::query::sealed::Sealed::run_statement(&mut session, sql, params, want).await {
            Ok(reply) => {
                session.commit().await?;
                Ok(reply)
            }
            Err(err) => {
                let _ = session.rollback().await;
                Err(err)
            }
        }
    }

    /// Runs `bound` in autocommit on `db`.
    async fn autocommit_on(
        &self,
        db: &Database,
        bound: &Bound<'_, '_>,
        want: Returns,
    ) -> Result<Reply> {
        let class = bound.class;
        match run_once(db, bound, want).await {
            // The statement may have run. It is run again only where it provably writes
            // nothing: in a READ ONLY transaction, where writes, nextval() and functions that
            // write all fail, so a read that hid a write is reported, never applied twice.
            Err(e) if e.kind() == ErrorKind::ConnectionLost && class.is_read_only() => {
                tracing::debug!(target: "coredb", error = %e, "connection lost during a read; retrying once, read-only");
                db.context
                    .target()
                    .count(crate::telemetry::RETRIES, &[("coredb.retry", "read")]);
                let read_only = SessionOptions {
                    read_only: true,
                    ..SessionOptions::default()
                };
                let retry = async {
                    let mut session = self.session_with(read_only).await?;
                    let reply = crate::exec::run(
                        session.connection().pg(),
                        &db.context,
                        bound,
                        want,
                        db.context.settings.statement_guard,
                    )
                    .await?;
                    session.commit().await?;
                    Ok(reply)
                };
                let span = tracing::info_span!(
                    target: "coredb",
                    "retry",
                    coredb.retry = "read",
                    coredb.attempts = 2,
                );
                retry.instrument(span).await
            }
            other => other,
        }
    }

    /// Like [`Executor::stream`], in autocommit, on a connection of the stream's own: rows are
    /// decoded as they arrive, in bounded memory, and the connection goes back to the pool
    /// when the stream is dropped. Dropped before its end, the statement is cancelled on the
    /// server and the connection closed, never pooled with unread rows.
    ///
    /// ```no_run
    /// use futures_util::TryStreamExt as _;
    ///
    /// # async fn demo(db: coredb::DatabaseManager) -> coredb::Result<()> {
    /// let mut rows = db
    ///     .stream::<(i64,), _>("SELECT n FROM generate_series(1, 1000000) AS n", ())
    ///     .await?;
    /// let mut total = 0;
    /// while let Some((n,)) = rows.try_next().await? {
    ///     total += n;
    /// }
    /// # let _ = total; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`query`](Self::query) before the first row; the stream yields a decode error or an
    /// error the server sends half-way.
    #[track_caller]
    pub fn stream<'a, T: FromRow, P: Params + 'a>(
        &'a self,
        sql: &'a str,
        params: P,
    ) -> impl Future<Output = Result<RowStream<'static, T>>> + Send + 'a {
        let at = Location::caller();
        async move {
            let rows = self
                .stream_owned(sql, params.param_list(), Read::Rows, at)
                .await?;
            Ok(RowStream::new(rows))
        }
    }

    /// Like [`Executor::copy_out`], on a connection of the stream's own (as
    /// [`stream`](Self::stream)): the data of a `COPY .. TO STDOUT` as it arrives, e.g. a CSV
    /// export written straight into an HTTP response.
    ///
    /// # Errors
    /// As [`Executor::copy_out`].
    #[track_caller]
    pub fn copy_out<'a>(
        &'a self,
        sql: &'a str,
    ) -> impl Future<Output = Result<CopyOutStream<'static>>> + Send + 'a {
        let at = Location::caller();
        async move {
            let data = self
                .stream_owned(sql, ().param_list(), Read::CopyData, at)
                .await?;
            Ok(CopyOutStream::new(data))
        }
    }

    /// Like [`Executor::copy_in_bytes`], in autocommit on a connection of its own: a COPY
    /// that fails half-way keeps none of its rows.
    ///
    /// # Errors
    /// As [`Executor::copy_in_bytes`].
    pub async fn copy_in_bytes<S, E>(&self, sql: &str, data: S) -> Result<u64>
    where
        S: futures_util::Stream<Item = std::result::Result<bytes::Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut conn = self.get_connection().await?;
        conn.copy_in_bytes(sql, data).await
    }

    /// Like [`Executor::copy_out_rows`], on a connection of the stream's own (as
    /// [`stream`](Self::stream)).
    ///
    /// # Errors
    /// As [`Executor::copy_out_rows`].
    #[track_caller]
    pub fn copy_out_rows<'a, T: FromRow>(
        &'a self,
        query: &'a str,
    ) -> impl Future<Output = Result<RowStream<'static, T>>> + Send + 'a {
        let at = Location::caller();
        async move {
            let rows = self
                .stream_owned(query, ().param_list(), Read::CopyRows, at)
                .await?;
            Ok(RowStream::new(rows))
        }
    }

    /// Like [`Executor::copy_in_rows`], in autocommit on a connection of its own: a COPY that
    /// fails keeps none of its rows.
    ///
    /// # Errors
    /// As [`Executor::copy_in_rows`].
    pub async fn copy_in_rows<'v, I>(&self, table: &str, columns: &[&str], rows: I) -> Result<u64>
    where
        I: IntoIterator<Item = Vec<crate::params::SqlParam<'v>>>,
        I::IntoIter: Send + 'v,
    {
        let mut conn = self.get_connection().await?;
        conn.copy_in_rows(table, columns, rows).await
    }

    /// Starts a stream on a connection it owns, taken for the caller at `at`.
    async fn stream_owned(
        &self,
        sql: &str,
        params: ParamList<'_>,
        read: Read,
        at: &'static Location<'static>,
    ) -> Result<Streaming<'static>> {
        let db = &*self.db;
        // Parameters are checked before a connection is taken.
        let bound = db.context.bind(sql, params)?;
        let conn = self.connection_for(db.pool.options().timeout, at).await?;
        crate::exec::stream(
            Box::new(OwnedConnection(conn)),
            Arc::clone(&db.context),
            &bound,
            read,
            crate::exec::Place::OwnConnection,
            None,
        )
        .await
    }

    /// A [`Listener`] on a connection of its own, outside the pool (it does not count
    /// against `pool_size`; the health report lists it): `LISTEN` to channels and read their
    /// notifications as a stream, across reconnects.
    ///
    /// # Errors
    /// A [`Connect`](ErrorKind::Connect) error when the first connection cannot be opened
    /// (later losses are reconnected by the listener itself).
    pub async fn listener(&self) -> Result<Listener> {
        let db = &*self.db;
        Listener::start(
            db.pool.clone(),
            db.context.target().clone(),
            Arc::clone(&db.listeners),
        )
        .await
    }

    /// Sends a notification on `channel` with `payload` (`pg_notify`, parameterised), in
    /// autocommit: listeners receive it at once. Inside a [`Session`], run
    /// `SELECT pg_notify($1, $2)` instead: it is delivered when the session commits.
    ///
    /// # Errors
    /// The server's error, e.g. for a payload of 8000 bytes or more.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        self.autocommit(
            "SELECT pg_notify($1, $2)",
            (channel, payload).param_list(),
            Returns::Count,
        )
        .await
        .map(drop)
    }

    /// Like [`Executor::execute`], in autocommit.
    ///
    /// # Cancel safety
    /// Dropping the future is safe; the statement may have run or not. A shared connection whose
    /// statement was abandoned takes no new statements and is closed once nothing else runs on it;
    /// a connection of its own is closed and the statement cancelled on the server.
    pub async fn execute<P: Params>(&self, sql: &str, params: P) -> Result<u64> {
        Ok(self
            .autocommit(sql, params.param_list(), Returns::Count)
            .await?
            .count())
    }

    /// Like [`Executor::query`], in autocommit.
    ///
    /// # Cancel safety
    /// Dropping the future is safe; the statement may have run or not. A shared connection whose
    /// statement was abandoned takes no new statements and is closed once nothing else runs on it;
    /// a connection of its own is closed and the statement cancelled on the server.
    pub async fn query<P: Params>(&self, sql: &str, params: P) -> Result<Vec<Row>> {
        Ok(self
            .autocommit(sql, params.param_list(), Returns::Rows)
            .await?
            .rows())
    }

    /// Like [`Executor::fetch_all`], in autocommit.
    ///
    /// # Cancel safety
    /// Dropping the future is safe; the statement may have run or not. A shared connection whose
    /// statement was abandoned takes no new statements and is closed once nothing else runs on it;
    /// a connection of its own is closed and the statement cancelled on the server.
    pub async fn fetch_all<T: FromRow, P: Params>(&self, sql: &str, params: P) -> Result<Vec<T>> {
        self.autocommit(sql, params.param_list(), Returns::Rows)
            .await?
            .all()
    }

    /// Like [`Executor::fetch_one`], in autocommit.
    ///
    /// # Cancel safety
    /// Dropping the future is safe; the statement may have run or not. A shared connection whose
    /// statement was abandoned takes no new statements and is closed once nothing else runs on it;
    /// a connection of its own is closed and the statement cancelled on the server.
    pub async fn fetch_one<T: FromRow, P: Params>(&self, sql: &str, params: P) -> Result<T> {
        self.autocommit(sql, params.param_list(), Returns::First)
            .await?
            .one()
    }

    /// Like [`Executor::fetch_optional`], in autocommit.
    ///
    /// # Cancel safety
    /// Dropping the future is safe; the statement may have run or not. A shared connection whose
    /// statement was abandoned takes no new statements and is closed once nothing else runs on it;
    /// a connection of its own is closed and the statement cancelled on the server.
    pub async fn fetch_optional<T: FromRow, P: Params>(
        &self,
        sql: &str,
        params: P,
    ) -> Result<Option<T>> {
        self.autocommit(sql, params.param_list(), Returns::First)
            .await?
            .optional()
    }

    /// Like [`Executor::scalar`], in autocommit.
    ///
    /// # Cancel safety
    /// Dropping the future is safe; the statement may have run or not. A shared connection whose
    /// statement was abandoned takes no new statements and is closed once nothing else runs on it;
    /// a connection of its own is closed and the statement cancelled on the server.
    pub async fn scalar<T: FromSqlOwned + Send, P: Params>(
        &self,
        sql: &str,
        params: P,
    ) -> Result<T> {
        self.autocommit(sql, params.param_list(), Returns::First)
            .await?
            .scalar()
    }

    /// The pool's current state.
    pub fn status(&self) -> PoolStatus {
        self.db.pool.status()
    }

    /// The pool's counters since creation.
    pub fn metrics(&self) -> PoolMetrics {
        self.db.pool.metrics()
    }

    /// True once [`close`](Self::close) (or [`close_now`](Self::close_now)) was called.
    pub fn is_closed(&self) -> bool {
        self.db.pool.is_closed()
    }

    /// Closes the pool, and the replicas' pool: new checkouts fail with
    /// [`PoolClosed`](ErrorKind::PoolClosed); waits up to the pool timeout for checked-out
    /// connections to come back, and closes every connection.
    ///
    /// Returns true when all came back in time.
    ///
    /// # Cancel safety
    /// The pool is closed from the first poll; dropping the future only stops the waiting.
    pub async fn close(&self) -> bool {
        self.close_within(self.config().pool_timeout()).await
    }

    /// Like [`close`](Self::close), waiting at most `wait` for checked-out connections.
    ///
    /// # Cancel safety
    /// As [`close`](Self::close).
    pub async fn close_within(&self, wait: Duration) -> bool {
        let mut all = true;
        for replica in self.replicas.iter() {
            all &= close_within(replica, wait).await;
        }
        close_within(&self.db, wait).await && all
    }

    /// Like [`close`](Self::close) without waiting: checkouts fail from now on, idle
    /// connections close now and checked-out ones when they come back.
    pub fn close_now(&self) {
        for db in std::iter::once(&self.db).chain(self.replicas.iter()) {
            db.pipeline.clear();
            db.pool.close_idle();
        }
    }
}

/// Checks one read replica on a connection of its own, within the connect timeout: it must
/// answer as a standby; its lag is measured as routing measures it (see `replicas`).
async fn check_replica(config: &DatabaseConfig, host: String, port: u16) -> ReplicaHealth {
    let address = format!("{host}:{port}");
    let limit = config.connect_timeout() + Duration::from_millis(500);
    let checked = tokio::time::timeout(limit, async {
        let mut one = config.clone();
        one.hosts = vec![host];
        one.ports = vec![port];
        let (client, _) = PgManager::new(&one)?
            .open(crate::conn::Reports::default())
            .await?;
        let row = client
            .query_one(replicas::MEASURE_SQL, &[])
            .await
            .map_err(|e| Error::from_driver(e, None))?;
        Ok::<_, Error>((row.get::<_, bool>(0), row.get::<_, Option<f64>>(1)))
    })
    .await
    .unwrap_or_else(|_| Err(Error::timeout("the replica's health check", limit)));
    let too_far = |lag_ms: Option<f64>| {
        let max = config.read_max_lag()?;
        let lag = replicas::lag_of(lag_ms);
        match lag {
            Some(lag) if lag <= max => None,
            Some(lag) => Some(format!(
                "it lags {lag:?} behind its primary, more than POSTGRES_READ_MAX_LAG ({max:?}); it takes no reads"
            )),
            None => Some(format!(
                "its lag is unknown (it has not replayed anything it can date); with POSTGRES_READ_MAX_LAG ({max:?}) it takes no reads"
            )),
        }
    };
    match checked {
        Ok((true, lag_ms)) if too_far(lag_ms).is_some() => ReplicaHealth {
            address,
            healthy: false,
            lag_ms,
            error: too_far(lag_ms),
        },
        Ok((true, lag_ms)) => ReplicaHealth {
            address,
            healthy: true,
            lag_ms,
            error: None,
        },
        Ok((false, _)) => ReplicaHealth {
            address,
            healthy: false,
            lag_ms: None,
            error: Some("it is not in recovery: a primary, not a standby".to_owned()),
        },
        Err(err) => ReplicaHealth {
            address,
            healthy: false,
            lag_ms: None,
            error: Some(err.to_string()),
        },
    }
}

/// Runs `bound` once in autocommit on `db`: pipelined on a shared connection when it is
/// shareable, else on a connection of its own.
async fn run_once(db: &Database, bound: &Bound<'_, '_>, want: Returns) -> Result<Reply> {
    if db.config.pipeline_autocommit() && bound.class.is_shareable() {
        match db.pipeline.run(&db.pool, &db.context, bound, want).await {
            // Skipped by the server under a Sync it shared with a read that failed: it did
            // not run, and runs now on a connection of its own.
            Err(err) if crate::conn::skipped(&err) => {
                tracing::debug!(target: "coredb", "a read skipped after another under the same Sync failed; running it on its own");
                db.context.target().count(
                    crate::telemetry::RETRIES,
                    &[("coredb.retry", "shared_sync")],
                );
            }
            done => return done,
        }
    }
    let mut conn = connection_from(db, db.pool.options().timeout, Location::caller()).await?;
    crate::exec::run(
        conn.pg(),
        &db.context,
        bound,
        want,
        db.context.settings.statement_guard,
    )
    .await
}

/// A connection from `db`'s pool, waiting at most `limit`, held by the caller at `at`.
async fn connection_from(
    db: &Database,
    limit: Duration,
    at: &'static Location<'static>,
) -> Result<Connection> {
    let pooled = db.pool.get_for(limit, at).await?;
    Ok(Connection::new(
        pooled,
        Arc::clone(&db.context),
        db.pool.clone(),
    ))
}

/// A checked-out connection owned by a stream, seen as the connection it holds.
struct OwnedConnection(Connection);

impl std::ops::Deref for OwnedConnection {
    type Target = crate::conn::PgConn;
    fn deref(&self) -> &Self::Target {
        self.0.pg_ref()
    }
}

impl std::ops::DerefMut for OwnedConnection {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.pg()
    }
}

async fn close_within(db: &Database, wait: Duration) -> bool {
    tracing::debug!(target: "coredb", url = %db.config.database_url(), "closing the pool");
    db.pipeline.clear();
    db.pool.close(wait).await
}

impl std::fmt::Debug for DatabaseManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseManager")
            .field("url", &self.config().database_url())
            .field("status", &self.status())
            .field("read_replicas", &self.replicas.len())
            .finish()
    }
}
