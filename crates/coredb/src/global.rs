//! core.db's process-wide functions: one [`DatabaseManager`] per process, set up from the
//! environment.
//!
//! ```no_run
//! # async fn demo() -> coredb::Result<()> {
//! use coredb::Executor;
//!
//! coredb::initialize_database().await?;
//! let mut session = coredb::get_session_context().await?;
//! let one: i32 = session.scalar("SELECT 1", ()).await?;
//! session.commit().await?;
//! println!("{}", serde_json::to_string(&coredb::check_database_health().await).unwrap());
//! coredb::close_database().await;
//! # let _ = one; Ok(()) }
//! ```

use std::future::Future;
use std::panic::Location;
use std::sync::RwLock;

use crate::config::DatabaseConfig;
use crate::error::{Error, Result};
use crate::health::HealthReport;
use crate::manager::{scoped, DatabaseManager};
use crate::session::{Session, SessionOptions};

static GLOBAL: RwLock<Option<DatabaseManager>> = RwLock::new(None);
/// Serializes set-up so that concurrent first calls create one pool.
static INIT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The process-wide manager when one is set up: the test scope's on a test's thread.
///
/// # Errors
/// Outside every test scope of a process that uses them (see
/// [`DatabaseManager::enter_test_scope`]).
fn current() -> Result<Option<DatabaseManager>> {
    if let Some(manager) = scoped()? {
        return Ok(Some(manager));
    }
    Ok(GLOBAL.read().unwrap_or_else(|e| e.into_inner()).clone())
}

/// Sets up the process-wide manager from the environment and checks that the database answers.
/// Calling it again returns the manager already set up.
///
/// # Errors
/// A [`Config`](crate::ErrorKind::Config) error for bad settings, or the
/// [`Connect`](crate::ErrorKind::Connect) error (with a hint) when the database cannot be reached.
///
/// # Cancel safety
/// Cancel safe: a dropped call sets nothing up; the next call starts afresh.
pub async fn initialize_database() -> Result<DatabaseManager> {
    if let Some(manager) = current()? {
        return Ok(manager);
    }
    let config = DatabaseConfig::from_env()?;
    initialize_database_with(config).await
}

/// Like [`initialize_database`], with an explicit configuration.
///
/// # Errors
/// As [`initialize_database`]; also a [`Config`](crate::ErrorKind::Config) error when a manager with
/// another configuration is already set up (call [`close_database`] first).
pub async fn initialize_database_with(config: DatabaseConfig) -> Result<DatabaseManager> {
    let _guard = INIT.lock().await;
    if let Some(manager) = current()? {
        if *manager.config() == config {
            return Ok(manager);
        }
        return Err(Error::config(format!(
            "the database is already initialized for {}; call close_database() before initializing it for {}",
            manager.config().database_url(),
            config.database_url()
        )));
    }
    let manager = DatabaseManager::from_config(&config)?;
    // Fail at start-up, not at the first request, when the database is unreachable.
    drop(manager.get_connection().await?);
    tracing::info!(target: "coredb", url = %config.database_url(), "database initialized");
    *GLOBAL.write().unwrap_or_else(|e| e.into_inner()) = Some(manager.clone());
    Ok(manager)
}

/// The process-wide manager, set up from the environment on first use.
///
/// # Errors
/// As [`initialize_database`].
pub async fn get_database_manager() -> Result<DatabaseManager> {
    match current()? {
        Some(manager) => Ok(manager),
        None => initialize_database().await,
    }
}

/// Closes the process-wide manager's pool (waiting for checked-out connections, bounded by the
/// pool timeout) and forgets it; a later call to [`get_database_manager`] sets up a new one.
/// Inside a [test scope](DatabaseManager::enter_test_scope) it does nothing: the test's
/// database belongs to the test.
///
/// # Cancel safety
/// The manager is forgotten and its pool closed from the first poll; dropping the future only
/// stops the waiting for checked-out connections.
pub async fn close_database() {
    if !matches!(scoped(), Ok(None)) {
        // A test's database belongs to the test, which closes it.
        return;
    }
    let manager = GLOBAL.write().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(manager) = manager {
        manager.close().await;
        tracing::info!(target: "coredb", "database closed");
    }
}

/// Begins a transaction on the process-wide manager (core.db's `get_session_context()`).
///
/// # Errors
/// As [`get_database_manager`] and [`DatabaseManager::session`].
///
/// # Cancel safety
/// As [`DatabaseManager::session`].
#[track_caller]
pub fn get_session_context() -> impl Future<Output = Result<Session>> {
    let at = Location::caller();
    async move {
        get_database_manager()
            .await?
            .session_for(SessionOptions::default(), at)
            .await
    }
}

/// The health of the process-wide database; unhealthy (never an error) when it cannot be set up.
///
/// Answers within the connect timeout (plus half a second) whatever the state of the
/// process-wide manager: when none is set up yet, the database the environment names is
/// checked with a manager of the check's own, so a server that is down costs the connect
/// timeout, not the pool timeout of a first initialization.
///
/// # Cancel safety
/// Cancel safe, as [`DatabaseManager::health_report`].
pub async fn check_database_health() -> HealthReport {
    let unavailable = |err: &Error| {
        let url = DatabaseConfig::from_env()
            .map(|c| c.database_url())
            .unwrap_or_else(|_| "unknown (invalid configuration)".to_owned());
        HealthReport::failed(url, err)
    };
    match current() {
        Ok(Some(manager)) => manager.health_report().await,
        Ok(None) => {
            match DatabaseConfig::from_env().and_then(|c| DatabaseManager::from_config(&c)) {
                Ok(manager) => {
                    let report = manager.health_report().await;
                    manager.close_now();
                    report
                }
                Err(err) => unavailable(&err),
            }
        }
        Err(err) => unavailable(&err),
    }
}

/// Sets up the process-wide database for the life of a service (core.db's
/// `database_lifespan()`); call [`shutdown`](DatabaseLifespan::shutdown) after the server stops.
///
/// # Errors
/// As [`initialize_database`].
pub async fn database_lifespan() -> Result<DatabaseLifespan> {
    Ok(DatabaseLifespan {
        manager: initialize_database().await?,
        closed: false,
    })
}

/// Like [`database_lifespan`], with an explicit configuration.
///
/// # Errors
/// As [`initialize_database_with`].
pub async fn database_lifespan_with(config: DatabaseConfig) -> Result<DatabaseLifespan> {
    Ok(DatabaseLifespan {
        manager: initialize_database_with(config).await?,
        closed: false,
    })
}

/// The process-wide database for the life of a service; see [`database_lifespan`].
#[must_use = "call shutdown().await when the service stops"]
pub struct DatabaseLifespan {
    manager: DatabaseManager,
    closed: bool,
}

impl DatabaseLifespan {
    /// The manager set up for the service.
    pub fn manager(&self) -> &DatabaseManager {
        &self.manager
    }

    /// Waits for checked-out connections to come back (bounded by the pool timeout) and closes
    /// the pool.
    pub async fn shutdown(mut self) {
        self.closed = true;
        close_database().await;
    }
}

impl Drop for DatabaseLifespan {
    fn drop(&mut self) {
        if !self.closed {
            tracing::warn!(target: "coredb", "DatabaseLifespan dropped without shutdown(); connections close when the process exits");
        }
    }
}
