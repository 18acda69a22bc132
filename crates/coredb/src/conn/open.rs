//! Opening PostgreSQL connections for the pool, with errors that say what to check.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::{PgConn, StatementCache};
use crate::config::DatabaseConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::pool::Manage;

/// Makes [`PgConn`]s from a [`DatabaseConfig`].
pub(crate) struct PgManager {
    driver: tokio_postgres::Config,
    config: DatabaseConfig,
    #[cfg(feature = "tls")]
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

/// Runs a connection's I/O until it ends; a lost connection is worth a warning.
async fn drive<F>(connection: F)
where
    F: std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>,
{
    if let Err(err) = connection.await {
        tracing::warn!(target: "coredb", error = %err, "connection to PostgreSQL lost");
    }
}

impl PgManager {
    pub(crate) fn new(config: &DatabaseConfig) -> Result<Self> {
        #[cfg(feature = "tls")]
        let tls = super::tls::connector(config)?;
        #[cfg(not(feature = "tls"))]
        if matches!(
            config.ssl_mode,
            crate::config::SslMode::Require
                | crate::config::SslMode::VerifyCa
                | crate::config::SslMode::VerifyFull
        ) {
            return Err(Error::config(format!(
                "POSTGRES_SSLMODE={:?}: this build of coredb has no TLS (the `tls` feature is off); allowed here: disable, prefer",
                config.ssl_mode.as_str()
            )));
        }
        Ok(PgManager {
            driver: config.to_driver_config(),
            config: config.clone(),
            #[cfg(feature = "tls")]
            tls,
        })
    }

    /// Connects with TLS when configured, and runs the connection on a task of its own.
    async fn connect(&self) -> std::result::Result<Client, tokio_postgres::Error> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let (client, connection) = self.driver.connect(tls.clone()).await?;
            tokio::spawn(drive(connection));
            return Ok(client);
        }
        let (client, connection) = self.driver.connect(NoTls).await?;
        tokio::spawn(drive(connection));
        Ok(client)
    }

    fn target(&self) -> String {
        self.config
            .host_ports()
            .map(|(h, port)| format!("{h}:{port}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Turns a driver connect error into one a newcomer can act on.
    fn connect_error(&self, err: tokio_postgres::Error) -> Error {
        let target = self.target();
        let c = &self.config;
        if let Some(db) = err.as_db_error() {
            let code = db.code().clone();
            let message = if code == SqlState::INVALID_PASSWORD
                || code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                format!(
                    "authentication failed for user {:?} at {target}: check POSTGRES_USER / POSTGRES_PASSWORD ({})",
                    c.user,
                    db.message()
                )
            } else if code == SqlState::INVALID_CATALOG_NAME {
                format!(
                    "database {:?} does not exist on {target}: create it (createdb {}) or set POSTGRES_DB",
                    c.dbname, c.dbname
                )
            } else if code == SqlState::TOO_MANY_CONNECTIONS {
                format!(
                    "the server at {target} has no connection slots left ({}); lower POSTGRES_POOL_SIZE / POSTGRES_MAX_OVERFLOW across services or raise max_connections",
                    db.message()
                )
            } else if code == SqlState::CANNOT_CONNECT_NOW {
                format!(
                    "the server at {target} is starting up or shutting down ({})",
                    db.message()
                )
            } else {
                format!(
                    "the server at {target} refused the connection: {}",
                    db.message()
                )
            };
            return Error::new(ErrorKind::Connect, message)
                .with_code(code)
                .with_source(err);
        }
        if err.to_string().contains("TLS") {
            let cause = innermost_cause(&err);
            let certificate = cause.to_lowercase().contains("certificate");
            let message = format!(
                "TLS with {target} failed: {cause}; check POSTGRES_SSLMODE ({}){}",
                c.ssl_mode.as_str(),
                if certificate {
                    " and POSTGRES_SSLROOTCERT"
                } else {
                    ""
                }
            );
            let error = Error::new(ErrorKind::Connect, message).with_source(err);
            // A certificate the client does not accept stays unaccepted.
            return if certificate {
                error.permanent()
            } else {
                error
            };
        }
        let io = find_io_error(&err);
        let message = match io.map(std::io::Error::kind) {
            Some(std::io::ErrorKind::ConnectionRefused) => format!(
                "connection refused by {target}: is PostgreSQL running and listening on that host and port? (check POSTGRES_HOST / POSTGRES_PORT)"
            ),
            Some(std::io::ErrorKind::TimedOut) => format!(
                "no answer from {target} within the connect timeout of {:?} (POSTGRES_CONNECT_TIMEOUT): is the host reachable and the port open?",
                c.connect_timeout
            ),
            _ if err.to_string().contains("lookup address") || io.is_some_and(|e| e.to_string().contains("lookup")) => {
                format!("could not resolve the host of {target}: check POSTGRES_HOST")
            }
            _ => format!("could not connect to {target}: {err}"),
        };
        Error::new(ErrorKind::Connect, message).with_source(err)
    }
}

/// The text of the deepest error in `err`'s source chain (the actual cause).
fn innermost_cause(err: &tokio_postgres::Error) -> String {
    let mut text = err.to_string();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    text
}

fn find_io_error(err: &tokio_postgres::Error) -> Option<&std::io::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

impl Manage for PgManager {
    type Object = PgConn;

    async fn create(&self) -> Result<PgConn> {
        // The driver applies connect_timeout per host; this guards the whole handshake too.
        let limit =
            self.config.connect_timeout * self.config.hosts.len() as u32 + Duration::from_secs(1);
        let client = match tokio::time::timeout(limit, self.connect()).await {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => return Err(self.connect_error(err)),
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Connect,
                    format!(
                        "no answer from {} within the connect timeout of {:?} (POSTGRES_CONNECT_TIMEOUT): is the host reachable and the port open?",
                        self.target(),
                        self.config.connect_timeout
                    ),
                ))
            }
        };
        tracing::debug!(target: "coredb", target_hosts = %self.target(), "opened connection");
        Ok(PgConn::new(
            client,
            StatementCache::new(self.config.statement_cache_size),
        ))
    }

    fn is_broken(&self, conn: &PgConn) -> bool {
        conn.client.is_closed()
    }

    async fn ping(&self, conn: &mut PgConn) -> Result<()> {
        conn.client
            .check_connection()
            .await
            .map_err(|e| Error::from_driver(e, None))
    }
}
