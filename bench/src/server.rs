//! The server every contender talks to: the configured one, or a throwaway embedded one; and
//! the scratch database the run creates on it and drops afterwards.

use std::time::Duration;

use coredb::{DatabaseConfig, DatabaseManager, SslMode};
use coredb_embedded::EmbeddedServer;

use crate::Result;

/// Environment variables that pass the scratch database to a child process of the harness (the
/// password stays out of the command line).
const ENV_HOST: &str = "COREDB_BENCH_HOST";
const ENV_PORT: &str = "COREDB_BENCH_PORT";
const ENV_USER: &str = "COREDB_BENCH_USER";
const ENV_PASSWORD: &str = "COREDB_BENCH_PASSWORD";
const ENV_DB: &str = "COREDB_BENCH_DB";

/// Where the server comes from.
pub struct Server {
    embedded: Option<EmbeddedServer>,
    base: DatabaseConfig,
}

/// The scratch database of this run, with connection settings for every contender.
#[derive(Clone)]
pub struct Target {
    /// coredb's configuration for the scratch database (pool sizes set per measurement).
    pub config: DatabaseConfig,
    /// `SHOW server_version`.
    pub server_version: String,
}

impl Server {
    /// Uses the configured server when `DATABASE_URL` / `POSTGRES_HOST` is set, else starts an
    /// embedded one.
    pub fn start() -> Result<Self> {
        if DatabaseConfig::is_configured_in_env() {
            let base = DatabaseConfig::from_env()?;
            return Ok(Server {
                embedded: None,
                base,
            });
        }
        let embedded = EmbeddedServer::start()?;
        let base = DatabaseConfig::from_url(&embedded.url())?;
        Ok(Server {
            embedded: Some(embedded),
            base,
        })
    }

    /// Says which server this is (no password).
    pub fn describe(&self) -> String {
        let host = self.base.hosts().first().map_or("?", String::as_str);
        let port = self.base.ports().first().copied().unwrap_or(5432);
        match &self.embedded {
            Some(_) => format!(
                "the embedded server on {host} (fsync, synchronous_commit and full_page_writes off)"
            ),
            None => format!("configured server {host}:{port} (DATABASE_URL / POSTGRES_*)"),
        }
    }

    fn admin(&self) -> Result<DatabaseManager> {
        let config = self
            .base
            .to_builder()
            .pool_size(1)
            .max_overflow(0)
            .application_name("coredb-bench admin")
            .build()?;
        Ok(DatabaseManager::from_config(&config)?)
    }

    /// Creates the scratch database `coredb_bench_<pid>` and returns how to reach it.
    pub async fn prepare(&self) -> Result<Target> {
        let dbname = format!("coredb_bench_{}", std::process::id());
        let admin = self.admin()?;
        admin
            .execute(
                &format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"),
                (),
            )
            .await?;
        admin
            .execute(&format!("CREATE DATABASE {dbname}"), ())
            .await?;
        let server_version: String = admin.scalar("SHOW server_version", ()).await?;
        admin.close().await;
        let config = self
            .base
            .to_builder()
            .dbname(&dbname)
            .ssl_mode(SslMode::Disable)
            .application_name("coredb-bench")
            .build()?;
        Ok(Target {
            config,
            server_version,
        })
    }

    /// Drops the scratch database (its connections are terminated).
    pub async fn cleanup(&self, target: &Target) -> Result<()> {
        let admin = self.admin()?;
        admin
            .execute(
                &format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    target.config.dbname()
                ),
                (),
            )
            .await?;
        admin.close_within(Duration::from_secs(5)).await;
        Ok(())
    }
}

impl Target {
    /// Sets the environment of `command`, a child process of the harness, so that
    /// [`Target::from_parent`] finds this database there.
    pub fn pass_to(&self, command: &mut std::process::Command) {
        command
            .env(ENV_HOST, self.host())
            .env(ENV_PORT, self.port().to_string())
            .env(ENV_USER, self.config.user())
            .env(ENV_DB, self.config.dbname())
            .env_remove(ENV_PASSWORD);
        if let Some(password) = self.password() {
            command.env(ENV_PASSWORD, password);
        }
    }

    /// In a child process: the database its parent passed with [`Target::pass_to`].
    pub fn from_parent() -> Result<Self> {
        let var = |key: &str| std::env::var(key).map_err(|_| format!("{key} is not set"));
        let mut builder = DatabaseConfig::builder()
            .host(var(ENV_HOST)?)
            .port(var(ENV_PORT)?.parse()?)
            .user(var(ENV_USER)?)
            .dbname(var(ENV_DB)?)
            .ssl_mode(SslMode::Disable)
            .application_name("coredb-bench");
        if let Ok(password) = std::env::var(ENV_PASSWORD) {
            builder = builder.password(password);
        }
        Ok(Target {
            config: builder.build()?,
            server_version: String::new(),
        })
    }

    /// The first host (multi-host lists are not benchmarked).
    pub fn host(&self) -> &str {
        self.config
            .hosts()
            .first()
            .map_or("localhost", String::as_str)
    }

    /// The port of the first host.
    pub fn port(&self) -> u16 {
        self.config.ports().first().copied().unwrap_or(5432)
    }

    /// The password, if any.
    pub fn password(&self) -> Option<&str> {
        self.config.password().map(coredb::Password::expose)
    }

    /// coredb with a fixed pool of `size` connections (no overflow).
    pub fn coredb(&self, size: usize) -> Result<DatabaseManager> {
        let config = self
            .config
            .to_builder()
            .pool_size(size)
            .max_overflow(0)
            .build()?;
        Ok(DatabaseManager::from_config(&config)?)
    }

    /// The driver's settings, shared by deadpool-postgres, bb8-postgres and raw tokio-postgres.
    pub fn pg_config(&self) -> tokio_postgres::Config {
        let mut pg = tokio_postgres::Config::new();
        pg.host(self.host())
            .port(self.port())
            .user(self.config.user())
            .dbname(self.config.dbname())
            .application_name("coredb-bench")
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        if let Some(password) = self.password() {
            pg.password(password);
        }
        pg
    }

    /// sqlx's settings (statement logging off: no logger is installed anyway).
    pub fn sqlx_options(&self) -> sqlx::postgres::PgConnectOptions {
        use sqlx::ConnectOptions;
        let mut options = sqlx::postgres::PgConnectOptions::new()
            .host(self.host())
            .port(self.port())
            .username(self.config.user())
            .database(self.config.dbname())
            .application_name("coredb-bench")
            .ssl_mode(sqlx::postgres::PgSslMode::Disable);
        if let Some(password) = self.password() {
            options = options.password(password);
        }
        options.disable_statement_logging()
    }
}
