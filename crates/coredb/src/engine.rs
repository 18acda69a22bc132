//! The engine: configuration, the connection pool and the statement caches, shared by every
//! handle (the seed's `create_engine()`).

use std::sync::Arc;
use std::time::Duration;

use crate::config::DatabaseConfig;
use crate::connect::PgManager;
use crate::connection::Connection;
use crate::error::{ErrorKind, Result};
use crate::params::RewriteCache;
use crate::pipeline::Pipeline;
use crate::pool::{Pool, PoolMetrics, PoolOptions, PoolStatus};
use crate::session::{Session, SessionOptions};

/// A pool of PostgreSQL connections with its configuration; cheap to clone.
///
/// Lazy: no connection is opened until the first checkout.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) config: DatabaseConfig,
    pub(crate) pool: Pool<PgManager>,
    pub(crate) rewrites: RewriteCache,
    pub(crate) pipeline: Pipeline,
}

/// How many times a session start is retried on a connection found dead at `BEGIN`.
const BEGIN_ATTEMPTS: usize = 3;

impl Engine {
    pub(crate) fn new(config: DatabaseConfig) -> Result<Self> {
        let manager = PgManager::new(&config)?;
        let options = PoolOptions {
            pool_size: config.pool_size,
            max_overflow: config.max_overflow,
            timeout: config.pool_timeout,
            recycle: config.pool_recycle,
            pre_ping: config.pool_pre_ping,
            pre_ping_idle: config.pre_ping_idle,
        };
        Ok(Engine {
            inner: Arc::new(EngineInner {
                pool: Pool::new(manager, options),
                rewrites: RewriteCache::new(),
                pipeline: Pipeline::new(config.pool_size),
                config,
            }),
        })
    }

    pub(crate) fn inner(&self) -> &EngineInner {
        &self.inner
    }

    /// The configuration it was created with.
    pub fn config(&self) -> &DatabaseConfig {
        &self.inner.config
    }

    /// Checks out a connection, waiting up to the pool timeout.
    ///
    /// # Errors
    /// [`PoolTimeout`](ErrorKind::PoolTimeout), [`PoolClosed`](ErrorKind::PoolClosed), or a
    /// [`Connect`](ErrorKind::Connect) error when a new connection cannot be opened.
    pub async fn get_connection(&self) -> Result<Connection> {
        let pooled = self.inner.pool.get().await?;
        Ok(Connection::new(pooled, self.clone()))
    }

    /// Like [`get_connection`](Self::get_connection), waiting at most `limit`.
    pub async fn get_connection_within(&self, limit: Duration) -> Result<Connection> {
        let pooled = self.inner.pool.get_within(limit).await?;
        Ok(Connection::new(pooled, self.clone()))
    }

    /// Begins a transaction with the server's default options.
    pub async fn session(&self) -> Result<Session> {
        self.session_with(SessionOptions::default()).await
    }

    /// Begins a transaction with the given options.
    ///
    /// A connection that turns out dead at `BEGIN` (e.g. terminated while idle) is replaced
    /// without the caller seeing it: nothing was done on it yet.
    pub async fn session_with(&self, options: SessionOptions) -> Result<Session> {
        let mut attempt = 1;
        loop {
            let conn = self.get_connection().await?;
            match Session::begin(conn, &options).await {
                Err(e) if e.kind() == ErrorKind::ConnectionLost && attempt < BEGIN_ATTEMPTS => {
                    tracing::debug!(target: "coredb", error = %e, "connection dead at BEGIN; taking another");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The pool's current state.
    pub fn status(&self) -> PoolStatus {
        self.inner.pool.status()
    }

    /// The pool's counters since creation.
    pub fn metrics(&self) -> PoolMetrics {
        self.inner.pool.metrics()
    }

    /// True once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.pool.is_closed()
    }

    /// Closes the pool: new checkouts fail with `PoolClosed`; waits up to the pool timeout for
    /// checked-out connections to come back, and closes every connection.
    ///
    /// Returns true when all came back in time.
    pub async fn close(&self) -> bool {
        self.close_within(self.inner.config.pool_timeout).await
    }

    /// Like [`close`](Self::close) without waiting: checkouts fail from now on, idle
    /// connections close now and checked-out ones when they come back.
    pub fn close_now(&self) {
        self.inner.pipeline.clear();
        self.inner.pool.close_idle();
    }

    /// Like [`close`](Self::close), waiting at most `wait`.
    pub async fn close_within(&self, wait: Duration) -> bool {
        tracing::debug!(target: "coredb", url = %self.inner.config.database_url(), "closing the pool");
        self.inner.pipeline.clear();
        self.inner.pool.close(wait).await
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("url", &self.inner.config.database_url())
            .field("status", &self.status())
            .finish()
    }
}
