//! # coredb
//!
//! Async PostgreSQL for backend services: configuration from the environment, a connection pool
//! with a full lifecycle, transactions that commit or roll back by themselves, raw SQL with named
//! parameters, health checks and retries. The Rust twin of the `core.db` Python module.
//!
//! ```no_run
//! use coredb::{params, Executor};
//!
//! # async fn demo() -> coredb::Result<()> {
//! let db = coredb::initialize_database().await?; // POSTGRES_* / DATABASE_URL / .env
//!
//! let mut session = coredb::get_session_context().await?;
//! let one: i32 = session.scalar("SELECT 1", ()).await?;
//! session.execute("INSERT INTO users (name, age) VALUES (:name, :age)",
//!                 params! { "name" => "Ada", "age" => 36 }).await?;
//! session.commit().await?; // dropped without commit = rolled back
//!
//! let rows = db.execute_raw_sql("SELECT * FROM users WHERE age > :age",
//!                               params! { "age" => 18 }).await?;
//! println!("{}", serde_json::to_string(&coredb::check_database_health().await).unwrap());
//! coredb::close_database().await;
//! # let _ = (one, rows); Ok(()) }
//! ```
//!
//! Layers, bottom up: [`config`] and [`error`] (leaves), [`pool`], [`Engine`] (pool +
//! statement caches), [`Connection`] / [`Session`] with the [`Executor`] query API,
//! [`DatabaseManager`] and the seed's process-wide functions.

#![warn(missing_docs)]

#[cfg(feature = "axum")]
pub mod axum;
pub mod config;
mod connect;
mod connection;
#[cfg(all(feature = "embedded", target_os = "linux"))]
pub mod embedded;
mod engine;
pub mod error;
mod global;
mod health;
mod manager;
#[cfg(feature = "models")]
pub mod model;
mod named_params;
mod param_types;
mod params;
mod pipeline;
pub mod pool;
mod query;
pub mod retry;
mod row;
mod session;
mod statement_cache;
#[cfg(all(feature = "testkit", target_os = "linux"))]
pub mod testkit;
#[cfg(feature = "tls")]
mod tls;

pub use config::{DatabaseConfig, DatabaseConfigBuilder, Password, SslMode, TargetSessionAttrs};
pub use connection::Connection;
pub use engine::Engine;
pub use error::{DbErrorInfo, Error, ErrorKind, Result};
pub use global::{
    check_database_health, close_database, database_lifespan, database_lifespan_with,
    get_database_manager, get_session_context, initialize_database, initialize_database_with,
    DatabaseLifespan,
};
pub use health::{HealthReport, HealthStatus};
pub use manager::DatabaseManager;
pub use params::{NamedParams, ParamList, Params, SqlParam};
pub use pool::{PoolMetrics, PoolStatus};
pub use query::Executor;
pub use retry::{RetryPolicy, TransientError};
pub use row::{column, named_column, FromRow, Row};
pub use session::{IsolationLevel, Savepoint, Session, SessionOptions};
// The model macros; their runtime side is the `model` module.
#[cfg(feature = "models")]
pub use coredb_macros::{model, FromRow, SqlEnum};

/// `#[coredb::test]`: an async test with a fresh database of its own.
#[cfg(all(feature = "testkit", target_os = "linux"))]
pub use coredb_macros::test;
/// The driver's types, for custom `ToSql`/`FromSql` implementations.
pub use postgres_types as types;
/// SQLSTATE codes, e.g. `SqlState::UNIQUE_VIOLATION`, to match [`Error::code`].
pub use tokio_postgres::error::SqlState;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
