//! Connection and pool settings: from the environment, from a URL, or from a builder.
//!
//! ```
//! use coredb::DatabaseConfig;
//! use std::time::Duration;
//!
//! let config = DatabaseConfig::builder()
//!     .host("db.internal")
//!     .user("app")
//!     .password("s3cret")
//!     .dbname("prepaid")
//!     .pool_size(10)
//!     .pool_timeout(Duration::from_secs(5))
//!     .build()?;
//! assert_eq!(config.database_url(), "postgres://app:***@db.internal:5432/prepaid");
//! # Ok::<(), coredb::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

mod builder;
mod env;
mod url;
mod validate;

pub use builder::DatabaseConfigBuilder;

/// The default of every setting that more than one layer needs, written once.
pub(crate) mod defaults {
    use std::time::Duration;

    /// `POSTGRES_POOL_SIZE`.
    pub(crate) const POOL_SIZE: usize = 5;
    /// Idle time before TCP keepalive probes start.
    pub(crate) const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
    /// Time between keepalive probes (at most; a third of the user timeout when that is
    /// shorter, at least a second).
    pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
    /// `POSTGRES_TCP_USER_TIMEOUT`: with the keepalives above, the bound on finding a dead peer.
    pub(crate) const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
    /// `POSTGRES_READ_YOUR_WRITES_WAIT`.
    pub(crate) const READ_YOUR_WRITES_WAIT: Duration = Duration::from_millis(200);
    /// `POSTGRES_MAX_OVERFLOW`.
    pub(crate) const MAX_OVERFLOW: usize = 10;
    /// `POSTGRES_POOL_TIMEOUT`.
    pub(crate) const POOL_TIMEOUT: Duration = Duration::from_secs(30);
    /// `POSTGRES_POOL_RECYCLE`.
    pub(crate) const POOL_RECYCLE: Option<Duration> = Some(Duration::from_secs(1800));
    /// `POSTGRES_POOL_PRE_PING`.
    pub(crate) const POOL_PRE_PING: bool = true;
    /// How long a connection must have sat idle to be pinged before reuse.
    pub(crate) const PRE_PING_IDLE: Duration = Duration::from_secs(1);
}

/// What the statement path (`exec`) needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecSettings {
    /// Log each statement with its duration (`DEBUG` / `POSTGRES_ECHO`).
    pub(crate) echo: bool,
    /// Include parameter values in that log (`POSTGRES_ECHO_PARAMS`).
    pub(crate) echo_params: bool,
    /// The client-side limit of one statement, when there is a statement timeout.
    pub(crate) statement_guard: Option<Duration>,
    /// Statements taking at least this long are logged at WARN, echo or not
    /// (`POSTGRES_SLOW_STATEMENT_MS`).
    pub(crate) slow_statement: Option<Duration>,
    /// Behind PgBouncer in transaction mode: nothing may outlive a transaction.
    pub(crate) pgbouncer_transaction: bool,
    /// Sent right after `BEGIN` (the statement timeout behind PgBouncer).
    pub(crate) after_begin: Option<String>,
}

/// The client-side limit of a statement whose server-side `statement_timeout` is `timeout`:
/// the timeout plus a margin (half of it, at least a second), so the server's own error comes
/// first and the guard fires only when the connection went silent.
pub(crate) fn guard_for(timeout: Duration) -> Duration {
    timeout + Duration::from_secs(1).max(timeout / 2)
}

/// How the connection negotiates TLS, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it and this build can speak it (the default). libpq's
    /// `allow` (plaintext first, TLS if the server insists) is taken as `prefer`: it connects
    /// wherever `allow` would, encrypted when it can.
    #[default]
    Prefer,
    /// Require TLS, without checking the certificate.
    Require,
    /// Require TLS and a certificate signed by a trusted authority.
    VerifyCa,
    /// Like `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    const ALLOWED: &'static str = "disable, allow, prefer, require, verify-ca, verify-full";

    /// The libpq spelling, e.g. `verify-full`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "disable" => SslMode::Disable,
            "prefer" | "allow" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(format!("unknown sslmode; allowed: {}", SslMode::ALLOWED)),
        })
    }
}

/// How TLS is started, as libpq's `sslnegotiation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslNegotiation {
    /// Ask the server for TLS first (PostgreSQL's `SSLRequest`), as every server understands
    /// (the default).
    #[default]
    Postgres,
    /// Start the TLS handshake at once, saving a round trip: PostgreSQL 17 or later only, and
    /// only with `sslmode` `require`, `verify-ca` or `verify-full` (there is no plaintext
    /// fallback).
    Direct,
}

impl SslNegotiation {
    const ALLOWED: &'static str = "postgres, direct";

    /// The libpq spelling, e.g. `direct`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslNegotiation::Postgres => "postgres",
            SslNegotiation::Direct => "direct",
        }
    }
}

impl FromStr for SslNegotiation {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "postgres" => SslNegotiation::Postgres,
            "direct" => SslNegotiation::Direct,
            _ => {
                return Err(format!(
                    "unknown sslnegotiation; allowed: {}",
                    SslNegotiation::ALLOWED
                ))
            }
        })
    }
}

/// Whether the server is reached through PgBouncer, and in which pool mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PgBouncerMode {
    /// A direct connection, or PgBouncer in session mode (which behaves like one).
    #[default]
    Off,
    /// PgBouncer in transaction mode: a server connection is lent for one transaction only,
    /// so coredb keeps nothing on it between transactions. Statements are sent unnamed (no
    /// statement cache), COPY runs inside a transaction of its own, and the statement timeout
    /// is set with `SET LOCAL` at `BEGIN` instead of at connect (PgBouncer refuses startup
    /// options).
    Transaction,
}

impl PgBouncerMode {
    const ALLOWED: &'static str = "off, session, transaction";
}

impl FromStr for PgBouncerMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "off" | "none" | "false" | "session" => PgBouncerMode::Off,
            "transaction" => PgBouncerMode::Transaction,
            _ => {
                return Err(format!(
                "unknown PgBouncer pool mode; allowed: {} (statement mode cannot run transactions)",
                PgBouncerMode::ALLOWED
            ))
            }
        })
    }
}

/// Which server of a multi-host list a connection may use, as libpq's
/// `target_session_attrs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetSessionAttrs {
    /// Any server that accepts the connection, in the order given (the default).
    #[default]
    Any,
    /// A server whose sessions may write (`transaction_read_only` off); standbys are skipped.
    /// Every host is asked, and two writable servers (two primaries after a failover the old
    /// one came back from) are refused rather than guessed between.
    ReadWrite,
    /// A server whose sessions are read-only: a standby, or a primary set read-only.
    ReadOnly,
    /// A server not in recovery, whatever its read-only setting; two are refused as for
    /// `ReadWrite`.
    Primary,
    /// A server in recovery (a standby).
    Standby,
    /// A standby if one answers, otherwise any server.
    PreferStandby,
}

impl TargetSessionAttrs {
    const ALLOWED: &'static str = "any, read-write, read-only, primary, standby, prefer-standby";
}

impl FromStr for TargetSessionAttrs {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "any" => TargetSessionAttrs::Any,
            "read-write" => TargetSessionAttrs::ReadWrite,
            "read-only" => TargetSessionAttrs::ReadOnly,
            "primary" => TargetSessionAttrs::Primary,
            "standby" => TargetSessionAttrs::Standby,
            "prefer-standby" => TargetSessionAttrs::PreferStandby,
            _ => return Err(format!("allowed: {}", TargetSessionAttrs::ALLOWED)),
        })
    }
}

/// A password that never shows itself in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The secret itself, for handing to the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Everything coredb needs to reach PostgreSQL and size its pool.
///
/// Build it with [`from_env`](Self::from_env), [`from_url`](Self::from_url) or
/// [`builder`](Self::builder); all three validate and report every problem at once.
/// `Debug` and `Display` mask the password.
///
/// ```
/// use coredb::DatabaseConfig;
///
/// // The variables a service would have in its environment or `.env`.
/// let config = DatabaseConfig::from_vars([
///     ("DATABASE_URL", "postgres://app:s3cret@db.internal:5432/prepaid"),
///     ("POSTGRES_POOL_SIZE", "10"),
/// ])?;
/// assert_eq!(config.pool_size(), 10);
/// assert_eq!(config.database_url(), "postgres://app:***@db.internal:5432/prepaid");
/// assert!(!format!("{config:?}").contains("s3cret"));
///
/// // Every problem at once, each with what is allowed.
/// let err = DatabaseConfig::from_vars([("POSTGRES_POOL_SIZE", "0"), ("POSTGRES_PORT", "x")])
///     .unwrap_err();
/// assert!(err.to_string().contains("POSTGRES_POOL_SIZE"));
/// assert!(err.to_string().contains("POSTGRES_PORT"));
/// # Ok::<(), coredb::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub(crate) hosts: Vec<String>,
    pub(crate) ports: Vec<u16>,
    pub(crate) user: String,
    pub(crate) password: Option<Password>,
    pub(crate) dbname: String,
    pub(crate) pool_size: usize,
    pub(crate) max_overflow: usize,
    pub(crate) pool_timeout: Duration,
    pub(crate) pool_recycle: Option<Duration>,
    pub(crate) pool_pre_ping: bool,
    pub(crate) pre_ping_idle: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) ssl_mode: SslMode,
    pub(crate) application_name: String,
    pub(crate) echo: bool,
    pub(crate) echo_params: bool,
    pub(crate) slow_statement: Option<Duration>,
    pub(crate) pgbouncer: PgBouncerMode,
    pub(crate) statement_cache_size: usize,
    pub(crate) target_session_attrs: TargetSessionAttrs,
    pub(crate) keepalive_idle: Duration,
    /// How long sent data may stay unacknowledged, and an idle connection's keepalive probes
    /// unanswered, before the kernel drops the connection (`POSTGRES_TCP_USER_TIMEOUT`).
    pub(crate) tcp_user_timeout: Duration,
    pub(crate) pipeline_autocommit: bool,
    pub(crate) ssl_root_cert: Option<std::path::PathBuf>,
    pub(crate) ssl_cert: Option<std::path::PathBuf>,
    pub(crate) ssl_key: Option<std::path::PathBuf>,
    pub(crate) ssl_negotiation: SslNegotiation,
    pub(crate) read_replicas: Vec<(String, u16)>,
    pub(crate) read_fallback: bool,
    /// Replicas lagging more than this are out of rotation (`POSTGRES_READ_MAX_LAG`).
    pub(crate) read_max_lag: Option<Duration>,
    /// How long a read that must see the caller's writes waits for a replica to replay them
    /// before it goes to the primary (`POSTGRES_READ_YOUR_WRITES_WAIT`).
    pub(crate) read_your_writes_wait: Duration,
    /// Spread connections over the hosts at random (used for replicas).
    pub(crate) load_balance: bool,
    /// Where the connection settings came from, so messages name what the user wrote.
    pub(crate) origin: Origin,
}

/// A connection setting, for messages that must name it as the user wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setting {
    /// The host (or hosts).
    Host,
    /// The port.
    Port,
    /// The user name.
    User,
    /// The password.
    Password,
    /// The database name.
    Database,
    /// The TLS mode.
    SslMode,
    /// The trusted authorities' PEM file.
    SslRootCert,
    /// The client certificate's PEM file.
    SslCert,
    /// The client key's PEM file.
    SslKey,
    /// How TLS is started.
    SslNegotiation,
}

impl Setting {
    pub(crate) fn variable(self) -> &'static str {
        match self {
            Setting::Host => "POSTGRES_HOST",
            Setting::Port => "POSTGRES_PORT",
            Setting::User => "POSTGRES_USER",
            Setting::Password => "POSTGRES_PASSWORD",
            Setting::Database => "POSTGRES_DB",
            Setting::SslMode => "POSTGRES_SSLMODE",
            Setting::SslRootCert => "POSTGRES_SSLROOTCERT",
            Setting::SslCert => "POSTGRES_SSLCERT",
            Setting::SslKey => "POSTGRES_SSLKEY",
            Setting::SslNegotiation => "POSTGRES_SSLNEGOTIATION",
        }
    }

    fn url_part(self) -> &'static str {
        match self {
            Setting::Host => "the host in DATABASE_URL",
            Setting::Port => "the port in DATABASE_URL",
            Setting::User => "the user in DATABASE_URL",
            Setting::Password => "the password in DATABASE_URL",
            Setting::Database => "the database name in DATABASE_URL",
            Setting::SslMode => "sslmode in DATABASE_URL",
            Setting::SslRootCert => "sslrootcert in DATABASE_URL",
            Setting::SslCert => "sslcert in DATABASE_URL",
            Setting::SslKey => "sslkey in DATABASE_URL",
            Setting::SslNegotiation => "sslnegotiation in DATABASE_URL",
        }
    }

    fn builder_method(self) -> &'static str {
        match self {
            Setting::Host => "the builder's host()",
            Setting::Port => "the builder's port()",
            Setting::User => "the builder's user()",
            Setting::Password => "the builder's password()",
            Setting::Database => "the builder's dbname()",
            Setting::SslMode => "the builder's ssl_mode()",
            Setting::SslRootCert => "the builder's ssl_root_cert()",
            Setting::SslCert => "the builder's ssl_cert()",
            Setting::SslKey => "the builder's ssl_key()",
            Setting::SslNegotiation => "the builder's ssl_negotiation()",
        }
    }

    /// Every setting, for reading which ones the environment gives.
    pub(crate) const ALL: [Setting; 10] = [
        Setting::Host,
        Setting::Port,
        Setting::User,
        Setting::Password,
        Setting::Database,
        Setting::SslMode,
        Setting::SslRootCert,
        Setting::SslCert,
        Setting::SslKey,
        Setting::SslNegotiation,
    ];

    fn bit(self) -> u16 {
        1 << self as u8
    }
}

/// Where the connection settings came from: environment variables, `DATABASE_URL` (perhaps
/// with some `POSTGRES_*` on top), or code.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Origin {
    /// `DATABASE_URL` (or a URL given in code) was the base.
    url: bool,
    /// Built in code with the builder.
    code: bool,
    /// The settings given as `POSTGRES_*` variables, one bit each.
    variables: u16,
    /// The settings set with the builder's methods, one bit each.
    set_in_code: u16,
}

impl Origin {
    /// Settings read from the environment.
    pub(crate) fn environment(url: bool, given: &[Setting]) -> Self {
        Origin {
            url,
            code: false,
            variables: given.iter().fold(0, |bits, s| bits | s.bit()),
            set_in_code: 0,
        }
    }

    /// Settings from a URL given in code.
    pub(crate) fn url() -> Self {
        Origin {
            url: true,
            ..Origin::default()
        }
    }

    /// Settings built in code.
    pub(crate) fn code() -> Self {
        Origin {
            code: true,
            ..Origin::default()
        }
    }

    /// Records that the builder set `setting`.
    pub(crate) fn set_in_code(&mut self, setting: Setting) {
        self.set_in_code |= setting.bit();
    }

    /// How the user wrote `setting`: the variable, the part of `DATABASE_URL`, or the method.
    pub(crate) fn name(self, setting: Setting) -> &'static str {
        if self.set_in_code & setting.bit() != 0 {
            setting.builder_method()
        } else if self.variables & setting.bit() != 0 {
            setting.variable()
        } else if self.url {
            setting.url_part()
        } else if self.code {
            setting.builder_method()
        } else {
            setting.variable()
        }
    }
}

/// Where a setting came from does not make two configurations differ.
impl PartialEq for Origin {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for Origin {}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            hosts: vec!["localhost".into()],
            ports: vec![5432],
            user: "postgres".into(),
            password: None,
            dbname: String::new(),
            pool_size: defaults::POOL_SIZE,
            max_overflow: defaults::MAX_OVERFLOW,
            pool_timeout: defaults::POOL_TIMEOUT,
            pool_recycle: defaults::POOL_RECYCLE,
            pool_pre_ping: defaults::POOL_PRE_PING,
            pre_ping_idle: defaults::PRE_PING_IDLE,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: None,
            ssl_mode: SslMode::Prefer,
            application_name: env!("CARGO_PKG_NAME").into(),
            echo: false,
            echo_params: false,
            slow_statement: None,
            pgbouncer: PgBouncerMode::Off,
            statement_cache_size: 100,
            target_session_attrs: TargetSessionAttrs::Any,
            keepalive_idle: defaults::KEEPALIVE_IDLE,
            tcp_user_timeout: defaults::TCP_USER_TIMEOUT,
            pipeline_autocommit: true,
            ssl_root_cert: None,
            ssl_cert: None,
            ssl_key: None,
            ssl_negotiation: SslNegotiation::Postgres,
            read_replicas: Vec::new(),
            read_fallback: true,
            read_max_lag: None,
            read_your_writes_wait: defaults::READ_YOUR_WRITES_WAIT,
            load_balance: false,
            origin: Origin::default(),
        }
    }
}

impl DatabaseConfig {
    /// Each host with its port (one port for all hosts, or one per host).
    pub(crate) fn host_ports(&self) -> impl Iterator<Item = (&str, u16)> {
        self.hosts.iter().enumerate().map(|(i, h)| {
            let port = self.ports.get(i).or(self.ports.first()).copied();
            (h.as_str(), port.unwrap_or(5432))
        })
    }

    /// Hosts, in failover order.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }
    /// Ports: one for all hosts, or one per host.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }
    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }
    /// The password, masked in `Debug`.
    pub fn password(&self) -> Option<&Password> {
        self.password.as_ref()
    }
    /// The database name.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }
    /// Connections kept open.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }
    /// Extra connections allowed under load.
    pub fn max_overflow(&self) -> usize {
        self.max_overflow
    }
    /// How long a checkout waits for a connection.
    pub fn pool_timeout(&self) -> Duration {
        self.pool_timeout
    }
    /// Maximum connection age, `None` when recycling is off.
    pub fn pool_recycle(&self) -> Option<Duration> {
        self.pool_recycle
    }
    /// Whether idle connections are verified before hand-out.
    pub fn pool_pre_ping(&self) -> bool {
        self.pool_pre_ping
    }
    /// Limit of one connection attempt.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    /// Server-side `statement_timeout`, when set.
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.statement_timeout
    }
    /// TLS negotiation mode.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }
    /// Read replicas as `(host, port)`; empty when reads go to the primary.
    pub fn read_replicas(&self) -> &[(String, u16)] {
        &self.read_replicas
    }

    /// The configuration of the replica pool: the same settings on the replica hosts, one
    /// picked at random per connection. `None` without replicas.
    pub fn replica_config(&self) -> Option<DatabaseConfig> {
        if self.read_replicas.is_empty() {
            return None;
        }
        let mut replica = self.clone();
        replica.hosts = self.read_replicas.iter().map(|(h, _)| h.clone()).collect();
        replica.ports = self.read_replicas.iter().map(|(_, p)| *p).collect();
        replica.read_replicas = Vec::new();
        replica.target_session_attrs = TargetSessionAttrs::Any;
        replica.load_balance = true;
        Some(replica)
    }

    /// Whether reads go to the primary when no read replica can be reached
    /// (`POSTGRES_READ_FALLBACK`, on by default).
    pub fn read_fallback(&self) -> bool {
        self.read_fallback
    }

    /// How far behind the primary a read replica may be and still take reads
    /// (`POSTGRES_READ_MAX_LAG`, seconds); `None`, the default, takes any lag.
    pub fn read_max_lag(&self) -> Option<Duration> {
        self.read_max_lag
    }

    /// How long a read that must see the caller's own writes (see
    /// [`DatabaseManager::read_your_writes`](crate::DatabaseManager::read_your_writes)) waits
    /// for a replica to replay them before it is sent to the primary
    /// (`POSTGRES_READ_YOUR_WRITES_WAIT`, seconds; 0.2 by default).
    pub fn read_your_writes_wait(&self) -> Duration {
        self.read_your_writes_wait
    }

    /// The bound on finding a dead peer (`POSTGRES_TCP_USER_TIMEOUT`, 30 s by default): data
    /// sent and not acknowledged for that long, or an idle connection's keepalive probes
    /// (from 15 s of silence, every 5 s) unanswered for that long, drops the connection, and
    /// the statement waiting on it fails with [`ConnectionLost`](crate::ErrorKind::ConnectionLost),
    /// with or without a statement timeout: within this timeout plus one probe interval
    /// (35 s by default). Linux only; elsewhere the keepalives alone (15 s + 3 probes).
    pub fn tcp_user_timeout(&self) -> Duration {
        self.tcp_user_timeout
    }

    /// One configuration per read replica, each for its host alone.
    pub(crate) fn replica_configs(&self) -> Vec<DatabaseConfig> {
        self.read_replicas
            .iter()
            .map(|(host, port)| {
                let mut replica = self.clone();
                replica.hosts = vec![host.clone()];
                replica.ports = vec![*port];
                replica.read_replicas = Vec::new();
                replica.target_session_attrs = TargetSessionAttrs::Any;
                replica
            })
            .collect()
    }

    /// PEM file of trusted authorities for `verify-ca` / `verify-full`, when set.
    pub fn ssl_root_cert(&self) -> Option<&std::path::Path> {
        self.ssl_root_cert.as_deref()
    }
    /// PEM file of the client certificate shown to the server (libpq's `sslcert`), when set;
    /// given together with [`ssl_key`](Self::ssl_key), and unused with `sslmode=disable`.
    pub fn ssl_cert(&self) -> Option<&std::path::Path> {
        self.ssl_cert.as_deref()
    }
    /// PEM file of the client certificate's private key (libpq's `sslkey`), when set.
    pub fn ssl_key(&self) -> Option<&std::path::Path> {
        self.ssl_key.as_deref()
    }
    /// How TLS is started (libpq's `sslnegotiation`).
    pub fn ssl_negotiation(&self) -> SslNegotiation {
        self.ssl_negotiation
    }
    /// Name shown in `pg_stat_activity`.
    pub fn application_name(&self) -> &str {
        &self.application_name
    }
    /// Whether every statement is logged with its duration.
    pub fn echo(&self) -> bool {
        self.echo
    }
    /// Whether logged statements include parameter values.
    pub fn echo_params(&self) -> bool {
        self.echo_params
    }
    /// Statements taking at least this long are logged at WARN with their duration, rows and
    /// text (never values), echo or not; `None` (the default) logs none.
    pub fn slow_statement(&self) -> Option<Duration> {
        self.slow_statement
    }
    /// Prepared statements cached per connection (0: none, and always 0 behind PgBouncer in
    /// transaction mode).
    pub fn statement_cache_size(&self) -> usize {
        match self.pgbouncer {
            PgBouncerMode::Transaction => 0,
            PgBouncerMode::Off => self.statement_cache_size,
        }
    }
    /// Whether the server is reached through PgBouncer in transaction mode
    /// (`POSTGRES_PGBOUNCER`).
    pub fn pgbouncer(&self) -> PgBouncerMode {
        self.pgbouncer
    }
    /// Whether the manager's autocommit statements share pipelined connections.
    pub fn pipeline_autocommit(&self) -> bool {
        self.pipeline_autocommit
    }

    /// The settings of the statement path. The client-side guard is the server's
    /// `statement_timeout` plus a margin, so a statement on a connection that went silent
    /// fails instead of hanging.
    pub(crate) fn exec_settings(&self) -> ExecSettings {
        ExecSettings {
            echo: self.echo,
            echo_params: self.echo_params,
            statement_guard: self.statement_timeout.map(guard_for),
            slow_statement: self.slow_statement,
            pgbouncer_transaction: self.pgbouncer == PgBouncerMode::Transaction,
            after_begin: match (self.pgbouncer, self.statement_timeout) {
                (PgBouncerMode::Transaction, Some(t)) => Some(format!(
                    "SET LOCAL statement_timeout = {}",
                    t.as_millis().max(1)
                )),
                _ => None,
            },
        }
    }

    /// The driver's configuration for one connection.
    pub(crate) fn to_driver_config(&self) -> tokio_postgres::Config {
        // The hosts, their sockets (timeouts, keepalives) and their order are coredb's
        // (`conn::Connector`); the driver runs the startup over the socket it is given.
        let mut pg = tokio_postgres::Config::new();
        pg.user(&self.user);
        if let Some(p) = &self.password {
            pg.password(p.expose());
        }
        pg.dbname(&self.dbname);
        pg.application_name(&self.application_name);
        pg.ssl_mode(match self.ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        pg.ssl_negotiation(match self.ssl_negotiation {
            SslNegotiation::Postgres => tokio_postgres::config::SslNegotiation::Postgres,
            SslNegotiation::Direct => tokio_postgres::config::SslNegotiation::Direct,
        });
        // PgBouncer refuses startup options; behind it the timeout is set at BEGIN.
        if let (Some(t), PgBouncerMode::Off) = (self.statement_timeout, self.pgbouncer) {
            pg.options(format!("-c statement_timeout={}", t.as_millis().max(1)));
        }
        pg
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.database_url())
            .field("pool_size", &self.pool_size)
            .field("max_overflow", &self.max_overflow)
            .field("pool_timeout", &self.pool_timeout)
            .field("pool_recycle", &self.pool_recycle)
            .field("pool_pre_ping", &self.pool_pre_ping)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("ssl_mode", &self.ssl_mode)
            .field("application_name", &self.application_name)
            .field("echo", &self.echo)
            .field("echo_params", &self.echo_params)
            .field("slow_statement", &self.slow_statement)
            .field("statement_cache_size", &self.statement_cache_size)
            .field("pgbouncer", &self.pgbouncer)
            .field("pipeline_autocommit", &self.pipeline_autocommit)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("ssl_cert", &self.ssl_cert)
            .field("ssl_key", &self.ssl_key)
            .field("ssl_negotiation", &self.ssl_negotiation)
            .field("read_replicas", &self.read_replicas)
            .finish()
    }
}

impl fmt::Display for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.database_url())
    }
}
