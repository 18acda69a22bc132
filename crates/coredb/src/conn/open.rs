//! Opening PostgreSQL connections for the pool, with errors that say what to check.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

use super::{PgConn, StatementCache};
use crate::config::{DatabaseConfig, Setting};
use crate::error::{Error, ErrorKind, Result};
use crate::pool::Manage;

/// Makes [`PgConn`]s from a [`DatabaseConfig`].
pub(crate) struct PgManager {
    driver: tokio_postgres::Config,
    config: DatabaseConfig,
    #[cfg(feature = "tls")]
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

/// Where a connection's notifications (`LISTEN`) go; a pooled connection has none.
pub(crate) type Notifications = mpsc::UnboundedSender<Notification>;

/// Runs a connection's I/O until it ends, handing notifications to `notifications` (dropped
/// without one); a lost connection is worth a warning.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notifications: Option<Notifications>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(notification))) => {
                if let Some(to) = &notifications {
                    // The listener is gone: its connection has no reader left.
                    if to.send(notification).is_err() {
                        return;
                    }
                }
            }
            Some(Ok(_notice)) => {}
            Some(Err(err)) => {
                tracing::warn!(target: "coredb", error = %err, "connection to PostgreSQL lost");
                return;
            }
            None => return,
        }
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
    async fn connect(
        &self,
        notifications: Option<Notifications>,
    ) -> std::result::Result<Client, tokio_postgres::Error> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let (client, connection) = self.driver.connect(tls.clone()).await?;
            tokio::spawn(drive(connection, notifications));
            return Ok(client);
        }
        let (client, connection) = self.driver.connect(NoTls).await?;
        tokio::spawn(drive(connection, notifications));
        Ok(client)
    }

    /// Opens a connection within the connect timeout, with an error that says what to check.
    pub(crate) async fn open(&self, notifications: Option<Notifications>) -> Result<Client> {
        // The driver applies connect_timeout per host; this guards the whole handshake too.
        let limit =
            self.config.connect_timeout * self.config.hosts.len() as u32 + Duration::from_secs(1);
        match tokio::time::timeout(limit, self.connect(notifications)).await {
            Ok(Ok(client)) => {
                tracing::debug!(target: "coredb", target_hosts = %self.target(), "opened connection");
                Ok(client)
            }
            Ok(Err(err)) => Err(self.connect_error(err)),
            Err(_) => Err(Error::new(
                ErrorKind::Connect,
                format!(
                    "no answer from {} within the connect timeout of {:?} (POSTGRES_CONNECT_TIMEOUT): is the host reachable and the port open?",
                    self.target(),
                    self.config.connect_timeout
                ),
            )),
        }
    }

    fn target(&self) -> String {
        self.config
            .host_ports()
            .map(|(h, port)| format!("{h}:{port}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Turns a driver connect error into one a newcomer can act on, naming each setting as
    /// the user wrote it (a `POSTGRES_*` variable, a part of `DATABASE_URL`, or a builder
    /// method). Causes that retrying cannot fix are marked permanent, so the pool fails at once
    /// instead of waiting out its timeout.
    fn connect_error(&self, err: tokio_postgres::Error) -> Error {
        let target = self.target();
        let c = &self.config;
        let name = |setting| c.origin.name(setting);
        if let Some(db) = err.as_db_error() {
            let code = db.code().clone();
            let server_says = db.message();
            let (message, permanent) = if code == SqlState::PROTOCOL_VIOLATION
                && server_says.contains("unsupported startup parameter")
            {
                (
                    format!(
                        "{target} refused a startup parameter ({server_says}): PgBouncer refuses the statement timeout sent at connect; set POSTGRES_PGBOUNCER=transaction (coredb then sets POSTGRES_STATEMENT_TIMEOUT with SET LOCAL in each transaction), or add `options` to PgBouncer's ignore_startup_parameters"
                    ),
                    true,
                )
            } else if code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && (server_says.contains("no encryption") || server_says.contains("SSL off"))
            {
                (
                    format!(
                        "{target} accepts user {:?} only over TLS, and {} is {}: set it to require (or prefer) ({server_says})",
                        c.user,
                        name(Setting::SslMode),
                        c.ssl_mode.as_str()
                    ),
                    true,
                )
            } else if code == SqlState::INVALID_PASSWORD
                || code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                (
                    format!(
                        "{target} rejected user {:?}: check {} / {} ({server_says})",
                        c.user,
                        name(Setting::User),
                        name(Setting::Password)
                    ),
                    true,
                )
            } else if code == SqlState::INVALID_CATALOG_NAME {
                (
                    format!(
                        "database {:?} does not exist on {target}: create it (createdb {}) or fix {}",
                        c.dbname,
                        c.dbname,
                        name(Setting::Database)
                    ),
                    true,
                )
            } else if code == SqlState::TOO_MANY_CONNECTIONS {
                (
                    format!(
                        "{target} has no connection slots left ({server_says}); lower POSTGRES_POOL_SIZE / POSTGRES_MAX_OVERFLOW across services or raise max_connections"
                    ),
                    false,
                )
            } else if code == SqlState::CANNOT_CONNECT_NOW {
                (
                    format!("{target} is starting up or shutting down ({server_says})"),
                    false,
                )
            } else {
                (
                    format!("{target} refused the connection: {server_says}"),
                    !crate::error::is_transient_code(&code),
                )
            };
            let error = Error::new(ErrorKind::Connect, message)
                .with_code(code)
                .with_source(err);
            return if permanent { error.permanent() } else { error };
        }
        let text = err.to_string();
        let cause = innermost_cause(&err);
        if cause.contains("password missing") {
            return Error::new(
                ErrorKind::Connect,
                format!(
                    "{target} asks for a password and none is set: set {}",
                    name(Setting::Password)
                ),
            )
            .with_source(err)
            .permanent();
        }
        if text.starts_with("invalid configuration") {
            // The driver refused the settings themselves: the same settings fail again.
            return Error::new(
                ErrorKind::Connect,
                format!("{target}: the connection settings are not usable: {cause}"),
            )
            .with_source(err)
            .permanent();
        }
        if text.contains("TLS") || text.contains("SSL") {
            let certificate = cause.to_lowercase().contains("certificate");
            let message = format!(
                "TLS with {target} failed: {cause}; check {} ({}){}",
                name(Setting::SslMode),
                c.ssl_mode.as_str(),
                if certificate {
                    " and POSTGRES_SSLROOTCERT"
                } else {
                    ""
                }
            );
            let error = Error::new(ErrorKind::Connect, message).with_source(err);
            // A certificate the client does not accept stays unaccepted; a server without TLS
            // asked for it stays without.
            return if certificate || c.ssl_mode != crate::config::SslMode::Prefer {
                error.permanent()
            } else {
                error
            };
        }
        let io = find_io_error(&err);
        let message = match io.map(std::io::Error::kind) {
            Some(std::io::ErrorKind::ConnectionRefused) => format!(
                "{target} refused the connection: is PostgreSQL running and listening on that host and port? (check {} / {})",
                name(Setting::Host),
                name(Setting::Port)
            ),
            Some(std::io::ErrorKind::TimedOut) => format!(
                "no answer from {target} within the connect timeout of {:?} (POSTGRES_CONNECT_TIMEOUT): is the host reachable and the port open?",
                c.connect_timeout
            ),
            _ if text.contains("lookup address") || io.is_some_and(|e| e.to_string().contains("lookup")) => {
                format!("the host of {target} could not be resolved: check {}", name(Setting::Host))
            }
            _ => format!("{target}: {text}"),
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

    fn pool_name(&self) -> String {
        crate::telemetry::Target::of(&self.config, false)
            .pool_name
            .to_string()
    }

    async fn create(&self) -> Result<PgConn> {
        let client = self.open(None).await?;
        Ok(PgConn::new(
            client,
            StatementCache::new(self.config.statement_cache_size()),
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
