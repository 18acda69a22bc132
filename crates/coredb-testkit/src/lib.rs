//! Test harness for coredb: a fresh database per test, on the configured server or a throwaway
//! embedded one. Use it as a dev-dependency.
//!
//! ```no_run
//! use coredb_testkit::TestDatabase;
//!
//! #[tokio::test]
//! async fn inserts_are_visible() -> Result<(), Box<dyn std::error::Error>> {
//!     let db = TestDatabase::new().await?;
//!     db.manager().execute("CREATE TABLE t (x int)", ()).await?;
//!     db.manager().execute("INSERT INTO t VALUES (1)", ()).await?;
//!     assert_eq!(db.manager().scalar::<i64, _>("SELECT count(*) FROM t", ()).await?, 1);
//!     Ok(())
//! }
//!
//! // The same with the attribute: the database comes as the argument.
//! #[coredb_testkit::test]
//! async fn counts_start_at_zero(db: coredb::DatabaseManager) {
//!     db.execute("CREATE TABLE t (x int)", ()).await.unwrap();
//!     assert_eq!(db.scalar::<i64, _>("SELECT count(*) FROM t", ()).await.unwrap(), 0);
//! }
//! ```
//!
//! Where the server comes from: when `DATABASE_URL` or `POSTGRES_HOST` is set (environment or
//! `.env`), test databases are created on that server (its user needs `CREATEDB`); otherwise
//! on the process's [`EmbeddedServer::shared`] server. Each test database is a copy of
//! `template1` (milliseconds), named `coredb_test_<pid>_<n>`, and dropped with the
//! [`TestDatabase`]. Under `cargo nextest`, where every test is its own process, each process
//! starts its own embedded server from a cached cluster (well under a second); no server is
//! shared between processes, so none can outlive the run.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod error;
mod fallback;

use coredb::{DatabaseConfig, DatabaseConfigBuilder, DatabaseManager, SslMode};
use coredb_embedded::EmbeddedServer;

pub use coredb_embedded;
/// `#[coredb_testkit::test]`: an async test with a fresh database of its own, given as its
/// argument (a [`TestDatabase`] or a `coredb::DatabaseManager`), or none.
pub use coredb_macros::test;
pub use error::{Error, Result};
pub use fallback::config_or_embedded;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A database of its own for one test; dropped (with its pool) when the value is dropped.
pub struct TestDatabase {
    manager: DatabaseManager,
    admin: DatabaseConfig,
    name: String,
    server: Option<&'static EmbeddedServer>,
}

impl TestDatabase {
    /// Creates a fresh, empty database and a manager for it.
    ///
    /// # Errors
    /// When no server is configured and the embedded one cannot start (e.g. no PostgreSQL
    /// binaries: the message says how to install them), or the database cannot be created.
    pub async fn new() -> Result<Self> {
        Self::with_config(|builder| builder).await
    }

    /// Like [`new`](Self::new), letting the test change pool or session settings.
    pub async fn with_config(
        adjust: impl FnOnce(DatabaseConfigBuilder) -> DatabaseConfigBuilder,
    ) -> Result<Self> {
        let (admin, server) = admin_config().await?;
        let name = format!(
            "coredb_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        AdminThread::get()
            .run(&admin, AdminJob::Create(name.clone()))
            .await?;
        let config = adjust(admin.to_builder().dbname(&name)).build()?;
        Ok(TestDatabase {
            manager: DatabaseManager::from_config(&config)?,
            admin,
            name,
            server,
        })
    }

    /// The manager of this test's database.
    pub fn manager(&self) -> &DatabaseManager {
        &self.manager
    }

    /// The configuration of this test's database, to build engines with other settings.
    pub fn config(&self) -> &DatabaseConfig {
        self.manager.config()
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The embedded server it lives on, when no server is configured.
    pub fn server(&self) -> Option<&'static EmbeddedServer> {
        self.server
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        self.manager.close_now();
        // Drop cannot await, and the test's runtime may be shutting down: the admin thread,
        // which has a runtime of its own, drops the database; this waits for it (bounded).
        let (reply, done) = std::sync::mpsc::channel();
        AdminThread::get().send(&self.admin, AdminJob::Drop(name), move |result| {
            let _ = reply.send(result);
        });
        if !matches!(done.recv_timeout(Duration::from_secs(30)), Ok(Ok(()))) {
            tracing::debug!(target: "coredb", "a test database could not be dropped; it goes with its server");
        }
    }
}

/// What the admin thread does on the maintenance database.
enum AdminJob {
    Create(String),
    Drop(String),
}

type Reply = Box<dyn FnOnce(Result<()>) + Send>;

/// One thread per process, with a runtime and maintenance connections of its own, that creates
/// and drops test databases: tests' runtimes come and go, and opening a maintenance connection
/// per test would cost more than the `CREATE DATABASE` itself.
struct AdminThread {
    jobs: tokio::sync::mpsc::UnboundedSender<(DatabaseConfig, AdminJob, Reply)>,
}

impl AdminThread {
    fn get() -> &'static AdminThread {
        static ADMIN: std::sync::OnceLock<AdminThread> = std::sync::OnceLock::new();
        ADMIN.get_or_init(|| {
            let (jobs, mut queue) =
                tokio::sync::mpsc::unbounded_channel::<(DatabaseConfig, AdminJob, Reply)>();
            std::thread::Builder::new()
                .name("coredb-testkit-admin".into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a tokio runtime for the test database admin");
                    runtime.block_on(async move {
                        let mut managers: Vec<(DatabaseConfig, DatabaseManager)> = Vec::new();
                        while let Some((config, job, reply)) = queue.recv().await {
                            let manager = match managers.iter().find(|(c, _)| *c == config) {
                                Some((_, m)) => m.clone(),
                                None => match DatabaseManager::from_config(&config) {
                                    Ok(m) => {
                                        managers.push((config, m.clone()));
                                        m
                                    }
                                    Err(e) => {
                                        reply(Err(e.into()));
                                        continue;
                                    }
                                },
                            };
                            // Jobs run side by side: tests create databases in parallel.
                            tokio::spawn(async move { reply(admin_job(&manager, job).await) });
                        }
                    });
                })
                .expect("the test database admin thread");
            AdminThread { jobs }
        })
    }

    fn send(
        &self,
        config: &DatabaseConfig,
        job: AdminJob,
        reply: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        if let Err(e) = self.jobs.send((config.clone(), job, Box::new(reply))) {
            let (_, _, reply) = e.0;
            reply(Err(Error::AdminGone));
        }
    }

    async fn run(&self, config: &DatabaseConfig, job: AdminJob) -> Result<()> {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.send(config, job, move |result| {
            let _ = reply.send(result);
        });
        done.await.unwrap_or(Err(Error::AdminGone))
    }
}

async fn admin_job(admin: &DatabaseManager, job: AdminJob) -> Result<()> {
    match job {
        AdminJob::Create(name) => {
            let version: String = admin.scalar("SHOW server_version_num", ()).await?;
            // FILE_COPY (PostgreSQL 15+) copies the template's files instead of WAL-logging
            // every page: several times faster for a small template.
            let strategy = if version.parse::<u32>().unwrap_or(0) >= 150_000 {
                " STRATEGY = FILE_COPY"
            } else {
                ""
            };
            admin
                .execute(
                    &format!("CREATE DATABASE {name} TEMPLATE template1{strategy}"),
                    (),
                )
                .await?;
            Ok(())
        }
        AdminJob::Drop(name) => {
            admin
                .execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), ())
                .await?;
            Ok(())
        }
    }
}

/// The maintenance database of the server tests run on.
async fn admin_config() -> Result<(DatabaseConfig, Option<&'static EmbeddedServer>)> {
    let tuned = |b: DatabaseConfigBuilder| {
        b.pool_timeout(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(5))
            .pool_size(5)
            .max_overflow(10)
    };
    if DatabaseConfig::is_configured_in_env() {
        let config = DatabaseConfig::from_env()?;
        let admin = tuned(config.to_builder()).dbname("postgres").build()?;
        return Ok((admin, None));
    }
    let server = tokio::task::spawn_blocking(EmbeddedServer::shared)
        .await
        .map_err(|e| Error::Panicked(e.to_string()))??;
    let config = DatabaseConfig::from_url(&server.url())?;
    let admin = tuned(config.to_builder())
        .ssl_mode(SslMode::Disable)
        .build()?;
    Ok((admin, Some(server)))
}

/// Used by the code `#[coredb_testkit::test]` generates.
#[doc(hidden)]
pub mod __private {
    /// Runs a test's future on a runtime of its own, as `#[tokio::test]` does.
    pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the test")
            .block_on(future)
    }
}
