//! Opening PostgreSQL connections for the pool, with errors that say what to check.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, Notification};

use super::connector::{ConnectError, Peer};
use super::wire::ConnFlags;
use super::{Connector, PgConn, StatementCache};
use crate::config::{DatabaseConfig, Setting, TargetSessionAttrs};
use crate::error::{Error, ErrorKind, Result};
use crate::pool::Manage;

/// Makes [`PgConn`]s from a [`DatabaseConfig`].
pub(crate) struct PgManager {
    /// The startup settings (user, database, TLS mode, ...); the hosts are coredb's to try.
    driver: tokio_postgres::Config,
    /// The hosts, in failover order.
    hosts: Vec<(String, u16)>,
    config: DatabaseConfig,
    connector: Connector,
}

/// Where a connection's notifications (`LISTEN`) go; a pooled connection has none.
pub(crate) type Notifications = mpsc::UnboundedSender<Notification>;

/// Between a connection's I/O and its users: whether it serves as a shared lane, and whether
/// a session setting the server reports differs from its value at connect (see
/// [`wire`](super::wire)).
pub(crate) type SessionChanged = Arc<ConnFlags>;

/// What a connection's I/O task passes on: notifications (a listener's), and whether the
/// session's reported settings changed (a pooled connection's).
#[derive(Clone, Default)]
pub(crate) struct Reports {
    /// Where notifications go; dropped without one.
    pub(crate) notifications: Option<Notifications>,
    /// Whether the connection is shared, and set while a session setting differs from its
    /// value at connect.
    pub(crate) settings: Option<SessionChanged>,
}

/// Runs a connection's I/O until it ends, passing on what `reports` asks for; a lost
/// connection is worth a warning.
pub(super) async fn drive<S, T>(mut connection: tokio_postgres::Connection<S, T>, reports: Reports)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let Reports {
        notifications,
        settings,
    } = reports;
    // Armed when the connection waits: the next wake-up first lets the rest of the runtime's
    // ready tasks run (see `shared`).
    let mut yielding = std::pin::pin!(Some(tokio::task::yield_now()));
    yielding.set(None);
    loop {
        let message = std::future::poll_fn(|cx| {
            if let Some(pending) = yielding.as_mut().as_pin_mut() {
                std::task::ready!(std::future::Future::poll(pending, cx));
                yielding.set(None);
            }
            let message = connection.poll_message(cx);
            // A shared lane's callers send their statements from tasks of their own: woken
            // by the first, the I/O task goes to the back of the run queue once, so the
            // statements the others send meanwhile leave in the same write (and the replies
            // that arrive meanwhile are read in one go).
            if message.is_pending()
                && settings
                    .as_ref()
                    .is_some_and(|flags| flags.shared.load(Ordering::Relaxed))
            {
                yielding.set(Some(tokio::task::yield_now()));
            }
            message
        })
        .await;
        match message {
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
        let connector = Connector::new(config)?;
        Ok(PgManager {
            hosts: config
                .host_ports()
                .map(|(host, port)| (host.to_owned(), port))
                .collect(),
            driver: config.to_driver_config(),
            config: config.clone(),
            connector,
        })
    }

    /// Opens a connection within the connect timeout, with an error that says what to check;
    /// on a server of the role `target_session_attrs` asks for.
    pub(crate) async fn open(&self, reports: Reports) -> Result<(Client, Peer)> {
        if self.config.target_session_attrs != TargetSessionAttrs::Any {
            return self.open_by_role(reports).await;
        }
        self.open_any(reports).await
    }

    /// Asks every host at once what it is, and keeps a connection to the one the role wants.
    /// Each host's cause is kept for the error; two servers that both take writes are refused.
    async fn open_by_role(&self, reports: Reports) -> Result<(Client, Peer)> {
        let want = self.config.target_session_attrs;
        let limit = self.config.connect_timeout + Duration::from_secs(1);
        let asked = self.hosts.iter().map(|host| {
            let reports = reports.clone();
            let address = format!("{}:{}", host.0, host.1);
            async move {
                let probe = async {
                    let (client, peer) = self
                        .connector
                        .connect(&self.driver, std::slice::from_ref(host), reports)
                        .await
                        .map_err(|e| self.connect_error_for(e, &address).message().to_owned())?;
                    let row = client
                        .query_one(
                            "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'",
                            &[],
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>(Server {
                        client,
                        peer,
                        in_recovery: row.get(0),
                        read_only: row.get(1),
                    })
                };
                let found = tokio::time::timeout(limit, probe)
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer from {address} within {limit:?}")));
                (address, found)
            }
        });
        let answers = futures_util::future::join_all(asked).await;
        let mut causes = Vec::new();
        let mut servers = Vec::new();
        for (address, answer) in answers {
            match answer {
                Ok(server) => {
                    causes.push(format!("{address} is {}", server.describe()));
                    servers.push((address, server));
                }
                Err(cause) => causes.push(cause),
            }
        }
        let fits = |s: &Server| match want {
            TargetSessionAttrs::Any => true,
            TargetSessionAttrs::ReadWrite => !s.read_only,
            TargetSessionAttrs::ReadOnly => s.read_only,
            TargetSessionAttrs::Primary => !s.in_recovery,
            TargetSessionAttrs::Standby | TargetSessionAttrs::PreferStandby => s.in_recovery,
        };
        let writers: Vec<&str> = servers
            .iter()
            .filter(|(_, s)| !s.in_recovery)
            .map(|(a, _)| a.as_str())
            .collect();
        if matches!(
            want,
            TargetSessionAttrs::ReadWrite | TargetSessionAttrs::Primary
        ) && writers.len() > 1
        {
            return Err(Error::new(
                ErrorKind::Connect,
                format!(
                    "{} all accept writes: two primaries (an old one back after a failover?); coredb sends no write to either until one is a standby again ({})",
                    writers.join(" and "),
                    name_attrs(want)
                ),
            )
            .permanent());
        }
        let position = servers.iter().position(|(_, s)| fits(s)).or(
            // prefer-standby takes any server when no standby answers.
            (want == TargetSessionAttrs::PreferStandby && !servers.is_empty()).then_some(0),
        );
        match position {
            Some(i) => {
                let server = servers.swap_remove(i).1;
                Ok((server.client, server.peer))
            }
            None => Err(Error::new(
                ErrorKind::Connect,
                format!("no server fits {}: {}", name_attrs(want), causes.join("; ")),
            )),
        }
    }

    /// Opens a connection to the first host that answers.
    async fn open_any(&self, reports: Reports) -> Result<(Client, Peer)> {
        // The driver applies connect_timeout per host; this guards the whole handshake too.
        let limit =
            self.config.connect_timeout * self.config.hosts.len() as u32 + Duration::from_secs(1);
        match tokio::time::timeout(
            limit,
            self.connector.connect(&self.driver, &self.hosts, reports),
        ).await {
            Ok(Ok(opened)) => {
                tracing::debug!(target: "coredb", target_hosts = %self.target(), "opened connection");
                Ok(opened)
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
    fn connect_error(&self, err: ConnectError) -> Error {
        self.connect_error_for(err, &self.target())
    }

    /// [`connect_error`](Self::connect_error) for a connection to `target` alone.
    fn connect_error_for(&self, err: ConnectError, target: &str) -> Error {
        let err = match err {
            ConnectError::Driver(err) => err,
            ConnectError::Socket(io) => {
                let message = self.unreachable(Some(&io), &io.to_string(), target);
                return Error::new(ErrorKind::Connect, message).with_source(io);
            }
        };
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
            } else if code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && server_says.contains("requires a valid client certificate")
            {
                (
                    format!(
                        "{target} accepts user {:?} only with a client certificate, and none was shown ({server_says}): set {} and {} to a certificate whose CN is the user name, signed by an authority the server trusts, and its key{}",
                        c.user,
                        name(Setting::SslCert),
                        name(Setting::SslKey),
                        if c.ssl_mode == crate::config::SslMode::Disable {
                            format!(", and {} to require or stricter", name(Setting::SslMode))
                        } else {
                            String::new()
                        }
                    ),
                    true,
                )
            } else if code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && server_says.contains("certificate authentication failed")
            {
                (
                    format!(
                        "{target} did not accept the client certificate for user {:?} ({server_says}): the certificate's CN must be the user name (or be mapped to it in pg_ident.conf); check {} / {}",
                        c.user,
                        name(Setting::SslCert),
                        name(Setting::User)
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
        let lowered = cause.to_lowercase();
        let certificate = lowered.contains("certificate") || lowered.contains("unknownca");
        if lowered.contains("alert") && certificate && c.ssl_cert.is_some() {
            // The server checks the client's certificate after the client's part of the
            // handshake, and says no with a TLS alert.
            return Error::new(
                ErrorKind::Connect,
                format!(
                    "{target} refused the client certificate ({cause}): check {} / {}: the certificate must be signed by an authority in the server's ssl_ca_file",
                    name(Setting::SslCert),
                    name(Setting::SslKey)
                ),
            )
            .with_source(err)
            .permanent();
        }
        let tls_failed = text.contains("TLS") || text.contains("SSL");
        if c.ssl_negotiation == crate::config::SslNegotiation::Direct
            && !certificate
            && (tls_failed
                || matches!(
                    find_io_error(&err).map(std::io::Error::kind),
                    Some(std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset)
                ))
        {
            // A server before PostgreSQL 17 reads the TLS hello as a malformed startup
            // packet and hangs up.
            return Error::new(
                ErrorKind::Connect,
                format!(
                    "{target} did not take a direct TLS handshake ({cause}): direct TLS negotiation ({} is direct) needs PostgreSQL 17 or later; with an older server (or a proxy that does not support it) use sslnegotiation=postgres",
                    name(Setting::SslNegotiation)
                ),
            )
            .with_source(err)
            .permanent();
        }
        if tls_failed {
            let message = format!(
                "TLS with {target} failed: {cause}; check {} ({}){}",
                name(Setting::SslMode),
                c.ssl_mode.as_str(),
                if certificate {
                    format!(" and {}", name(Setting::SslRootCert))
                } else {
                    String::new()
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
        let message = self.unreachable(find_io_error(&err), &text, target);
        Error::new(ErrorKind::Connect, message).with_source(err)
    }

    /// What to say when `target` could not be reached (`io` the cause, `text` the whole
    /// error).
    fn unreachable(&self, io: Option<&std::io::Error>, text: &str, target: &str) -> String {
        let c = &self.config;
        let name = |setting| c.origin.name(setting);
        match io.map(std::io::Error::kind) {
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
        }
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

/// A server asked what it is, with the connection asked on.
struct Server {
    client: Client,
    peer: Peer,
    in_recovery: bool,
    read_only: bool,
}

impl Server {
    fn describe(&self) -> &'static str {
        match (self.in_recovery, self.read_only) {
            (true, _) => "a standby",
            (false, true) => "a primary set read-only",
            (false, false) => "a primary",
        }
    }
}

/// `POSTGRES_TARGET_SESSION_ATTRS=...` as the user would write it.
fn name_attrs(attrs: TargetSessionAttrs) -> String {
    let value = match attrs {
        TargetSessionAttrs::Any => "any",
        TargetSessionAttrs::ReadWrite => "read-write",
        TargetSessionAttrs::ReadOnly => "read-only",
        TargetSessionAttrs::Primary => "primary",
        TargetSessionAttrs::Standby => "standby",
        TargetSessionAttrs::PreferStandby => "prefer-standby",
    };
    format!("POSTGRES_TARGET_SESSION_ATTRS={value}")
}

/// A connection being opened, boxed (see `create`).
type Opening<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(Client, Peer)>> + Send + 'a>>;

impl Manage for PgManager {
    type Object = PgConn;

    fn pool_name(&self) -> String {
        crate::telemetry::Target::of(&self.config, false)
            .pool_name
            .to_string()
    }

    fn create(&self) -> impl std::future::Future<Output = Result<PgConn>> + Send {
        // Boxed and type-erased: the driver's connect is a deep future, and this one is part of
        // the type of every checkout (rustc's layout computation would reach its recursion
        // limit in callers' code); a connection is opened rarely, so one allocation is nothing.
        let changed = SessionChanged::default();
        let opening: Opening<'_> = Box::pin(self.open(Reports {
            notifications: None,
            settings: Some(Arc::clone(&changed)),
        }));
        async move {
            let (client, peer) = opening.await?;
            Ok(PgConn::new(
                client,
                StatementCache::new(self.config.statement_cache_size()),
                (self.connector.clone(), peer),
                changed,
            ))
        }
    }

    fn is_broken(&self, conn: &PgConn) -> bool {
        conn.is_closed()
    }

    async fn ping(&self, conn: &mut PgConn) -> Result<()> {
        conn.client
            .check_connection()
            .await
            .map_err(|e| Error::from_driver(e, None))
    }
}
