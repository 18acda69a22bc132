//! [`DatabaseManager`]: the handle a service keeps (the seed's `DatabaseManager`).

use std::time::{Duration, Instant};

use postgres_types::FromSqlOwned;

use crate::config::DatabaseConfig;
use crate::connection::Connection;
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::health::HealthReport;
use crate::params::{ParamList, Params};
use crate::pipeline::is_shareable;
use crate::pool::{PoolMetrics, PoolStatus};
use crate::query::{Output, Want};
use crate::retry::{is_read_only_statement, RetryPolicy, TransientError};
use crate::row::{FromRow, Row};
use crate::session::{Session, SessionOptions};

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
#[derive(Clone, Debug)]
pub struct DatabaseManager {
    engine: Engine,
    /// The pool on the read replicas, when configured.
    replica: Option<Engine>,
}

impl DatabaseManager {
    /// Wraps an engine.
    pub fn new(engine: Engine) -> Self {
        DatabaseManager {
            engine,
            replica: None,
        }
    }

    /// Creates the engine for `config` (no connection is opened yet).
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error when this build cannot honour a setting.
    pub fn from_config(config: &DatabaseConfig) -> Result<Self> {
        Ok(DatabaseManager {
            engine: config.create_engine()?,
            replica: config
                .replica_config()
                .map(|c| c.create_engine())
                .transpose()?,
        })
    }

    /// The manager for reads: on the read replicas (`POSTGRES_READ_HOSTS`) when configured,
    /// each connection on one of them at random; otherwise this manager itself.
    ///
    /// Replicas lag the primary a little: read what must be current on the primary.
    pub fn reader(&self) -> DatabaseManager {
        match &self.replica {
            Some(replica) => DatabaseManager::new(replica.clone()),
            None => self.clone(),
        }
    }

    /// Like [`from_config`](Self::from_config) with [`DatabaseConfig::from_env`].
    pub fn from_env() -> Result<Self> {
        Self::from_config(&DatabaseConfig::from_env()?)
    }

    /// The engine behind it.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration in use.
    pub fn config(&self) -> &DatabaseConfig {
        self.engine.config()
    }

    /// Checks out a connection in autocommit mode; it goes back to the pool when dropped.
    pub async fn get_connection(&self) -> Result<Connection> {
        self.engine.get_connection().await
    }

    /// Begins a transaction (the seed's `get_session_context()`); commit it explicitly.
    pub async fn session(&self) -> Result<Session> {
        self.engine.session().await
    }

    /// Like [`session`](Self::session), with an isolation level or read-only mode.
    pub async fn session_with(&self, options: SessionOptions) -> Result<Session> {
        self.engine.session_with(options).await
    }

    /// Runs `f` in a transaction: committed when it returns `Ok`, rolled back when it returns
    /// `Err` (which is returned unchanged).
    ///
    /// # Errors
    /// The closure's error, or a coredb error from `BEGIN` or `COMMIT` converted into `E`.
    pub async fn transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut Session) -> Result<T, E>,
        E: From<Error>,
    {
        self.transaction_with(SessionOptions::default(), f).await
    }

    /// Like [`transaction`](Self::transaction), with session options.
    pub async fn transaction_with<T, E, F>(&self, options: SessionOptions, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut Session) -> Result<T, E>,
        E: From<Error>,
    {
        let mut session = self.session_with(options).await?;
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
    pub async fn transaction_with_retry<T, E, F>(
        &self,
        options: SessionOptions,
        policy: &RetryPolicy,
        f: F,
    ) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut Session) -> Result<T, E> + Clone,
        E: From<Error> + TransientError + std::fmt::Display,
    {
        let started = Instant::now();
        let mut backoff = policy.backoff();
        let mut attempt = 1;
        loop {
            let outcome = async {
                let mut session = self.session_with(options).await?;
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
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// True when the database answers a query within the connect timeout.
    pub async fn health_check(&self) -> bool {
        self.health_report().await.is_healthy()
    }

    /// A full [`HealthReport`]; never hangs past the connect timeout.
    pub async fn health_report(&self) -> HealthReport {
        HealthReport::check(&self.engine).await
    }

    /// Runs raw SQL with `:name` (or `$n`) parameters in autocommit and returns the rows
    /// (the seed's `execute_raw_sql`).
    pub async fn execute_raw_sql<P: Params>(&self, sql: &str, params: P) -> Result<Vec<Row>> {
        self.query(sql, params).await
    }

    async fn autocommit(&self, sql: &str, params: ParamList<'_>, want: Want) -> Result<Output> {
        // Parameters are checked before a connection is taken.
        let engine = self.engine.inner();
        let (text, values) = engine.rewrites.bind(sql, params)?;
        let shared = engine.config.pipeline_autocommit && is_shareable(sql);
        let once = async || {
            if shared {
                engine.pipeline.run(engine, &text, &values, want).await
            } else {
                let mut conn = self.get_connection().await?;
                conn.run_bound(&text, &values, want).await
            }
        };
        match once().await {
            // A read cannot apply anything twice: one more try on a fresh connection.
            Err(e) if e.kind() == ErrorKind::ConnectionLost && is_read_only_statement(sql) => {
                tracing::debug!(target: "coredb", error = %e, "connection lost during a read; retrying once");
                once().await
            }
            other => other,
        }
    }

    /// Like [`Executor::execute`], in autocommit.
    pub async fn execute<P: Params>(&self, sql: &str, params: P) -> Result<u64> {
        Ok(self
            .autocommit(sql, params.param_list(), Want::Count)
            .await?
            .count())
    }

    /// Like [`Executor::query`], in autocommit.
    pub async fn query<P: Params>(&self, sql: &str, params: P) -> Result<Vec<Row>> {
        Ok(self
            .autocommit(sql, params.param_list(), Want::Rows)
            .await?
            .rows())
    }

    /// Like [`Executor::fetch_all`], in autocommit.
    pub async fn fetch_all<T: FromRow, P: Params>(&self, sql: &str, params: P) -> Result<Vec<T>> {
        self.autocommit(sql, params.param_list(), Want::Rows)
            .await?
            .all()
    }

    /// Like [`Executor::fetch_one`], in autocommit.
    pub async fn fetch_one<T: FromRow, P: Params>(&self, sql: &str, params: P) -> Result<T> {
        self.autocommit(sql, params.param_list(), Want::Rows)
            .await?
            .one()
    }

    /// Like [`Executor::fetch_optional`], in autocommit.
    pub async fn fetch_optional<T: FromRow, P: Params>(
        &self,
        sql: &str,
        params: P,
    ) -> Result<Option<T>> {
        self.autocommit(sql, params.param_list(), Want::Rows)
            .await?
            .optional()
    }

    /// Like [`Executor::scalar`], in autocommit.
    pub async fn scalar<T: FromSqlOwned + Send, P: Params>(
        &self,
        sql: &str,
        params: P,
    ) -> Result<T> {
        self.autocommit(sql, params.param_list(), Want::Rows)
            .await?
            .scalar()
    }

    /// The pool's current state.
    pub fn status(&self) -> PoolStatus {
        self.engine.status()
    }

    /// The pool's counters.
    pub fn metrics(&self) -> PoolMetrics {
        self.engine.metrics()
    }

    /// Closes the pool (see [`Engine::close`]), and the replica pool.
    pub async fn close(&self) -> bool {
        self.close_within(self.config().pool_timeout()).await
    }

    /// Like [`close`](Self::close), waiting at most `wait` for checked-out connections.
    pub async fn close_within(&self, wait: Duration) -> bool {
        let replica_closed = match &self.replica {
            Some(replica) => replica.close_within(wait).await,
            None => true,
        };
        self.engine.close_within(wait).await && replica_closed
    }
}
