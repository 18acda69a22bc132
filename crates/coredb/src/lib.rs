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
//! ## Which handle do I use?
//!
//! - [`DatabaseManager`] is the handle a service keeps (cheap to clone; `Engine` is core.db's
//!   name for the same type). Its query methods run in autocommit.
//! - The process-wide functions ([`initialize_database`], [`get_session_context`],
//!   [`check_database_health`], ...) are core.db's names for one `DatabaseManager` per process.
//! - [`Session`] is a transaction; [`Connection`] is a checked-out connection in autocommit.
//!   Both implement [`Executor`], so helpers can take `&mut impl Executor`.
//!
//! ## Layers
//!
//! The modules are layered; each uses only those below it, and no two use each other
//! (`tests/layering.rs` checks it; `ARCHITECTURE.md` explains it):
//!
//! ```text
//! global, axum, model             the process-wide functions and the integrations
//! manager                         DatabaseManager (= Engine): pools, sessions, autocommit
//! health                          the health report
//! session                         transactions and savepoints
//! connection, pipeline, listener  a checked-out connection; shared autocommit lanes; LISTEN
//! query                           the sealed Executor trait
//! exec                            runs one bound statement on a connection
//! conn                            opening connections, TLS, statements sent on the socket, statement cache, state
//! pool                            the generic pool
//! params, row, retry, telemetry   values in, rows out, backoff; span and metric names
//! config, sql                     settings; pure SQL text (rewriter, classifier)
//! error                           the one error type
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "axum")]
pub mod axum;
mod config;
mod conn;
mod connection;
mod error;
mod exec;
mod global;
mod health;
mod listener;
mod manager;
#[cfg(feature = "models")]
pub mod model;
mod params;
mod pipeline;
pub mod pool;
mod query;
mod retry;
mod row;
mod session;
mod sql;
pub mod telemetry;

pub use config::{
    DatabaseConfig, DatabaseConfigBuilder, Password, PgBouncerMode, SslMode, SslNegotiation,
    TargetSessionAttrs,
};
pub use connection::Connection;
pub use error::{DbErrorInfo, Error, ErrorKind, Result};
pub use global::{
    check_database_health, close_database, database_lifespan, database_lifespan_with,
    get_database_manager, get_session_context, initialize_database, initialize_database_with,
    DatabaseLifespan,
};
pub use health::{HealthReport, HealthStatus, ListenerStatus, ReplicaHealth};
pub use listener::{Listener, ListenerEvent, Notification};
pub use manager::{DatabaseManager, Engine, TestScope};
pub use params::{NamedParams, ParamList, Params, SqlParam, Values};
pub use query::{CopyOutStream, Executor, RowStream};
pub use retry::{Backoff, RetryPolicy, TransientError};
#[doc(hidden)]
pub use row::ColumnPositions;
pub use row::{ColumnIndex, FromRow, Row};
pub use session::{CursorStream, IsolationLevel, Savepoint, Session, SessionOptions};
// The model macros; their runtime side is the `model` module.
#[cfg(feature = "models")]
pub use coredb_macros::{model, FromRow, SqlEnum};

/// The driver's traits and types, for custom `ToSql`/`FromSql` implementations.
pub use postgres_types as types;
/// SQLSTATE codes, e.g. `SqlState::UNIQUE_VIOLATION`, to match [`Error::code`].
pub use tokio_postgres::error::SqlState;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
