//! The contenders that pool PostgreSQL connections, configured alike, and the unit of work they
//! all repeat: check a connection out, run a prepared `SELECT 1`, give it back.
//!
//! Settings, chosen so every pool does the same work per checkout:
//! - **coredb**: `pool_size` = size, `max_overflow` 0, defaults otherwise (30 s acquire timeout,
//!   pre-ping only of connections idle for 1 s or more, per-connection statement cache).
//! - **deadpool-postgres**: `max_size` = size, `RecyclingMethod::Fast` (its default: no round
//!   trip on recycle), a 30 s wait timeout like every other pool here, `prepare_cached`.
//! - **bb8-postgres**: `max_size` = size, `test_on_check_out(false)` (its default pings on every
//!   checkout, a second round trip), `query_typed` (parse, bind and execute in one round trip:
//!   bb8-postgres has no statement cache).
//! - **sqlx**: `max_connections` = size, `test_before_acquire(false)` (same reason), its own
//!   statement cache, statement logging off.

use std::future::Future;
use std::time::Duration;

use bb8_postgres::PostgresConnectionManager;
use coredb::{DatabaseManager, Executor};
use tokio_postgres::NoTls;

use crate::measure::Workload;
use crate::server::Target;
use crate::Result;

/// Acquire timeout given to every pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// A library that pools PostgreSQL connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooler {
    /// coredb's engine.
    Coredb,
    /// deadpool-postgres.
    DeadpoolPostgres,
    /// bb8 with bb8-postgres.
    Bb8Postgres,
    /// sqlx's `PgPool`.
    Sqlx,
}

impl Pooler {
    /// All of them, coredb first.
    pub const ALL: [Pooler; 4] = [
        Pooler::Coredb,
        Pooler::DeadpoolPostgres,
        Pooler::Bb8Postgres,
        Pooler::Sqlx,
    ];

    /// Column name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Pooler::Coredb => "coredb",
            Pooler::DeadpoolPostgres => "deadpool-postgres",
            Pooler::Bb8Postgres => "bb8-postgres",
            Pooler::Sqlx => "sqlx",
        }
    }

    /// Opens a pool of `size` connections (lazily: the first checkouts connect).
    pub async fn open(self, target: &Target, size: usize) -> Result<PgPool> {
        Ok(match self {
            Pooler::Coredb => PgPool::Coredb(target.coredb(size)?),
            Pooler::DeadpoolPostgres => {
                let manager = deadpool_postgres::Manager::from_config(
                    target.pg_config(),
                    NoTls,
                    deadpool_postgres::ManagerConfig {
                        recycling_method: deadpool_postgres::RecyclingMethod::Fast,
                    },
                );
                let pool = deadpool_postgres::Pool::builder(manager)
                    .max_size(size)
                    .wait_timeout(Some(ACQUIRE_TIMEOUT))
                    .runtime(deadpool_postgres::Runtime::Tokio1)
                    .build()?;
                PgPool::DeadpoolPostgres(pool)
            }
            Pooler::Bb8Postgres => {
                let manager = PostgresConnectionManager::new(target.pg_config(), NoTls);
                let pool = bb8::Pool::builder()
                    .max_size(size as u32)
                    .test_on_check_out(false)
                    .connection_timeout(ACQUIRE_TIMEOUT)
                    .build(manager)
                    .await?;
                PgPool::Bb8Postgres(pool)
            }
            Pooler::Sqlx => {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(size as u32)
                    .test_before_acquire(false)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(target.sqlx_options());
                PgPool::Sqlx(pool)
            }
        })
    }
}

/// An open pool of one of the [`Pooler`]s.
pub enum PgPool {
    /// coredb.
    Coredb(DatabaseManager),
    /// deadpool-postgres.
    DeadpoolPostgres(deadpool_postgres::Pool),
    /// bb8-postgres.
    Bb8Postgres(bb8::Pool<PostgresConnectionManager<NoTls>>),
    /// sqlx.
    Sqlx(sqlx::PgPool),
}

impl PgPool {
    /// Checks a connection out, runs `SELECT 1` (prepared or cached where the library can),
    /// reads the value, and returns the connection.
    pub async fn checkout_select1(&self) -> Result<()> {
        let one: i32 = match self {
            PgPool::Coredb(db) => {
                let mut conn = db.get_connection().await?;
                conn.scalar("SELECT 1", ()).await?
            }
            PgPool::DeadpoolPostgres(pool) => {
                let client = pool.get().await?;
                let statement = client.prepare_cached("SELECT 1").await?;
                client.query_one(&statement, &[]).await?.try_get(0)?
            }
            PgPool::Bb8Postgres(pool) => {
                let conn = pool.get().await?;
                let rows = conn.query_typed("SELECT 1", &[]).await?;
                rows.first().ok_or("SELECT 1 returned no row")?.try_get(0)?
            }
            PgPool::Sqlx(pool) => {
                let mut conn = pool.acquire().await?;
                sqlx::query_scalar("SELECT 1").fetch_one(&mut *conn).await?
            }
        };
        debug_assert_eq!(one, 1);
        std::hint::black_box(one);
        Ok(())
    }

    /// Checks out `count` connections at once, runs `SELECT 1` on each, then returns them all:
    /// afterwards the pool holds `count` idle connections.
    pub async fn fill(&self, count: usize) -> Result<()> {
        match self {
            PgPool::Coredb(db) => {
                let mut held = Vec::with_capacity(count);
                for _ in 0..count {
                    held.push(db.get_connection().await?);
                }
                for conn in &mut held {
                    let _: i32 = conn.scalar("SELECT 1", ()).await?;
                }
            }
            PgPool::DeadpoolPostgres(pool) => {
                let mut held = Vec::with_capacity(count);
                for _ in 0..count {
                    held.push(pool.get().await?);
                }
                for client in &held {
                    let statement = client.prepare_cached("SELECT 1").await?;
                    client.query_one(&statement, &[]).await?;
                }
            }
            PgPool::Bb8Postgres(pool) => {
                let mut held = Vec::with_capacity(count);
                for _ in 0..count {
                    held.push(pool.get().await?);
                }
                for conn in &held {
                    conn.query_typed("SELECT 1", &[]).await?;
                }
            }
            PgPool::Sqlx(pool) => {
                let mut held = Vec::with_capacity(count);
                for _ in 0..count {
                    held.push(pool.acquire().await?);
                }
                for conn in &mut held {
                    let _: i32 = sqlx::query_scalar("SELECT 1")
                        .fetch_one(&mut **conn)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Closes the pool and its connections.
    pub async fn close(&self) {
        match self {
            PgPool::Coredb(db) => {
                db.close_within(Duration::from_secs(5)).await;
            }
            PgPool::DeadpoolPostgres(pool) => pool.close(),
            PgPool::Bb8Postgres(_) => {} // bb8 closes its connections when the pool is dropped.
            PgPool::Sqlx(pool) => pool.close().await,
        }
    }
}

/// The unit of work of scenario 2: checkout + `SELECT 1`.
pub struct CheckoutSelect1(pub PgPool);

impl Workload for CheckoutSelect1 {
    fn once(&self) -> impl Future<Output = Result<()>> + Send {
        self.0.checkout_select1()
    }
}
