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

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// The default of every setting that more than one layer needs, written once.
pub(crate) mod defaults {
    use std::time::Duration;

    /// `POSTGRES_POOL_SIZE`.
    pub(crate) const POOL_SIZE: usize = 5;
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
}

/// How the connection negotiates TLS, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it and this build can speak it (the default).
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
    const ALLOWED: &'static str = "disable, prefer, require, verify-ca, verify-full";

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

/// Which server of a multi-host list a connection may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetSessionAttrs {
    /// Any server that accepts the connection (the default).
    #[default]
    Any,
    /// Only a primary that accepts writes; standbys are skipped (failover).
    ReadWrite,
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
    pub(crate) statement_cache_size: usize,
    pub(crate) target_session_attrs: TargetSessionAttrs,
    pub(crate) keepalive_idle: Duration,
    pub(crate) pipeline_autocommit: bool,
    pub(crate) ssl_root_cert: Option<std::path::PathBuf>,
    pub(crate) read_replicas: Vec<(String, u16)>,
    /// Spread connections over the hosts at random (used for replicas).
    pub(crate) load_balance: bool,
}

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
            statement_cache_size: 100,
            target_session_attrs: TargetSessionAttrs::Any,
            keepalive_idle: Duration::from_secs(60),
            pipeline_autocommit: true,
            ssl_root_cert: None,
            read_replicas: Vec::new(),
            load_balance: false,
        }
    }
}

/// Collects every configuration problem before reporting them together.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, name: &str, value: &str, what: &str) {
        self.0.push(format!("{name}={value:?}: {what}"));
    }

    fn into_result(self) -> Result<()> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(Error::config(self.0.into_iter().next().unwrap_or_default())),
            n => Err(Error::config(format!(
                "{n} problems:\n  - {}",
                self.0.join("\n  - ")
            ))),
        }
    }
}

/// The names a setting goes by: its environment variable and its builder method.
#[derive(Clone, Copy)]
enum Source {
    Env,
    Builder,
}

impl Source {
    fn name(self, env: &'static str, builder: &'static str) -> &'static str {
        match self {
            Source::Env => env,
            Source::Builder => builder,
        }
    }
}

impl DatabaseConfig {
    /// Reads the settings from the environment, and from a `.env` file in the working
    /// directory or its parents; a variable set in the real environment wins over `.env`.
    ///
    /// # Errors
    /// A [`Config`](crate::ErrorKind::Config) error listing every invalid variable, its value
    /// (never a password) and what is allowed.
    pub fn from_env() -> Result<Self> {
        let mut dotenv: HashMap<String, String> = HashMap::new();
        if let Ok(iter) = dotenvy::dotenv_iter() {
            for item in iter {
                match item {
                    Ok((k, v)) => {
                        dotenv.insert(k, v);
                    }
                    Err(e) => return Err(Error::config(format!(".env could not be read: {e}"))),
                }
            }
        }
        Self::from_lookup(|key| std::env::var(key).ok().or_else(|| dotenv.get(key).cloned()))
    }

    /// Like [`from_env`](Self::from_env), reading the given variables instead of the
    /// process environment (handy in tests).
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let map: HashMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::from_lookup(|key| map.get(key).cloned())
    }

    /// True when the environment (or `.env`) names a database: `DATABASE_URL` or
    /// `POSTGRES_HOST` is set.
    pub fn is_configured_in_env() -> bool {
        let in_env = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
        if in_env("DATABASE_URL") || in_env("POSTGRES_HOST") {
            return true;
        }
        dotenvy::dotenv_iter()
            .map(|iter| {
                iter.flatten()
                    .any(|(k, v)| (k == "DATABASE_URL" || k == "POSTGRES_HOST") && !v.is_empty())
            })
            .unwrap_or(false)
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut problems = Problems::default();
        let mut config = DatabaseConfig::default();
        let get =
            |key: &str| get(key).filter(|v| !v.trim().is_empty() || key == "POSTGRES_PASSWORD");

        let mut dbname_set = false;
        if let Some(url) = get("DATABASE_URL") {
            match parse_url(&url) {
                Ok(parsed) => {
                    dbname_set = !parsed.dbname.is_empty();
                    config = parsed;
                }
                Err(what) => problems.push("DATABASE_URL", &mask_url(&url), &what),
            }
        }
        if let Some(hosts) = get("POSTGRES_HOST") {
            config.hosts = hosts.split(',').map(|h| h.trim().to_owned()).collect();
        }
        if let Some(ports) = get("POSTGRES_PORT") {
            match parse_ports(&ports) {
                Ok(p) => config.ports = p,
                Err(what) => problems.push("POSTGRES_PORT", &ports, &what),
            }
        }
        if let Some(user) = get("POSTGRES_USER") {
            config.user = user;
        }
        if let Some(password) = get("POSTGRES_PASSWORD") {
            config.password = Some(Password(password));
        }
        if let Some(db) = get("POSTGRES_DB") {
            config.dbname = db;
            dbname_set = true;
        }
        if !dbname_set {
            config.dbname = config.user.clone();
        }

        let mut number = |key: &'static str, min: i64, allowed: &str| -> Option<i64> {
            let raw = get(key)?;
            match raw.trim().parse::<i64>() {
                Ok(n) if n >= min => Some(n),
                Ok(_) => {
                    problems.push(key, &raw, allowed);
                    None
                }
                Err(_) => {
                    problems.push(key, &raw, &format!("not a whole number; {allowed}"));
                    None
                }
            }
        };
        if let Some(n) = number(
            "POSTGRES_POOL_SIZE",
            1,
            "must be a whole number of at least 1",
        ) {
            config.pool_size = n as usize;
        }
        if let Some(n) = number(
            "POSTGRES_MAX_OVERFLOW",
            0,
            "must be a whole number of at least 0",
        ) {
            config.max_overflow = n as usize;
        }
        if let Some(n) = number(
            "POSTGRES_STATEMENT_CACHE_SIZE",
            0,
            "must be a whole number of at least 0 (0 disables the cache, e.g. behind PgBouncer)",
        ) {
            config.statement_cache_size = n as usize;
        }
        if let Some(raw) = get("POSTGRES_POOL_RECYCLE") {
            match raw.trim().parse::<f64>() {
                Ok(-1.0) => config.pool_recycle = None,
                Ok(v) if v > 0.0 && v.is_finite() => {
                    config.pool_recycle = Some(Duration::from_secs_f64(v))
                }
                _ => problems.push(
                    "POSTGRES_POOL_RECYCLE",
                    &raw,
                    "must be a number of seconds greater than 0, or -1 to never recycle",
                ),
            }
        }
        let mut seconds = |key: &'static str| -> Option<Duration> {
            let raw = get(key)?;
            match raw.trim().parse::<f64>() {
                Ok(v) if v > 0.0 && v.is_finite() && v < 1e9 => Some(Duration::from_secs_f64(v)),
                _ => {
                    problems.push(
                        key,
                        &raw,
                        "must be a number of seconds greater than 0, e.g. 30 or 2.5",
                    );
                    None
                }
            }
        };
        if let Some(d) = seconds("POSTGRES_POOL_TIMEOUT") {
            config.pool_timeout = d;
        }
        if let Some(d) = seconds("POSTGRES_CONNECT_TIMEOUT") {
            config.connect_timeout = d;
        }
        if let Some(d) = seconds("POSTGRES_STATEMENT_TIMEOUT") {
            config.statement_timeout = Some(d);
        }
        let mut flag = |key: &'static str| -> Option<bool> {
            let raw = get(key)?;
            match parse_bool(&raw) {
                Some(b) => Some(b),
                None => {
                    problems.push(
                        key,
                        &raw,
                        "must be true or false (also 1/0, yes/no, on/off)",
                    );
                    None
                }
            }
        };
        if let Some(b) = flag("POSTGRES_POOL_PRE_PING") {
            config.pool_pre_ping = b;
        }
        if let Some(b) = flag("POSTGRES_PIPELINE_AUTOCOMMIT") {
            config.pipeline_autocommit = b;
        }
        let debug = flag("DEBUG").unwrap_or(false);
        let echo = flag("POSTGRES_ECHO").unwrap_or(false);
        config.echo = config.echo || debug || echo;
        if let Some(b) = flag("POSTGRES_ECHO_PARAMS") {
            config.echo_params = b;
        }
        if let Some(raw) = get("POSTGRES_SSLMODE") {
            match raw.parse::<SslMode>() {
                Ok(mode) => config.ssl_mode = mode,
                Err(what) => problems.push("POSTGRES_SSLMODE", &raw, &what),
            }
        }
        if let Some(raw) = get("POSTGRES_READ_HOSTS") {
            let default_port = config.ports.first().copied().unwrap_or(5432);
            match parse_replicas(&raw, default_port) {
                Ok(replicas) => config.read_replicas = replicas,
                Err(what) => problems.push("POSTGRES_READ_HOSTS", &raw, &what),
            }
        }
        if let Some(path) = get("POSTGRES_SSLROOTCERT") {
            config.ssl_root_cert = Some(path.into());
        }
        if let Some(name) = get("POSTGRES_APPLICATION_NAME") {
            config.application_name = name;
        }
        if let Some(raw) = get("POSTGRES_TARGET_SESSION_ATTRS") {
            match raw.trim() {
                "any" => config.target_session_attrs = TargetSessionAttrs::Any,
                "read-write" => config.target_session_attrs = TargetSessionAttrs::ReadWrite,
                _ => problems.push(
                    "POSTGRES_TARGET_SESSION_ATTRS",
                    &raw,
                    "allowed: any, read-write",
                ),
            }
        }
        config.check(Source::Env, &mut problems);
        problems.into_result()?;
        Ok(config)
    }

    /// Parses a `postgres://user:password@host:port/dbname?options` URL (also a comma list of
    /// `host:port` pairs for failover); the pool settings keep their defaults.
    ///
    /// # Errors
    /// A [`Config`](crate::ErrorKind::Config) error naming the URL (password masked) and the
    /// expected form.
    pub fn from_url(url: &str) -> Result<Self> {
        let mut problems = Problems::default();
        match parse_url(url) {
            Ok(config) => {
                config.check(Source::Env, &mut problems);
                problems.into_result()?;
                Ok(config)
            }
            Err(what) => {
                problems.push("DATABASE_URL", &mask_url(url), &what);
                problems.into_result()?;
                unreachable!("a problem was pushed")
            }
        }
    }

    /// Starts a builder from the defaults.
    pub fn builder() -> DatabaseConfigBuilder {
        DatabaseConfigBuilder {
            config: DatabaseConfig::default(),
        }
    }

    /// A builder that starts from this configuration, to change a few settings.
    pub fn to_builder(&self) -> DatabaseConfigBuilder {
        DatabaseConfigBuilder {
            config: self.clone(),
        }
    }

    fn check(&self, source: Source, problems: &mut Problems) {
        let hosts_name = source.name("POSTGRES_HOST", "host");
        if self.hosts.is_empty() || self.hosts.iter().any(|h| h.trim().is_empty()) {
            problems.push(
                hosts_name,
                &self.hosts.join(","),
                "must name a host (or a comma list of hosts); none may be empty",
            );
        }
        if self.ports.len() != 1 && self.ports.len() != self.hosts.len() {
            problems.push(
                source.name("POSTGRES_PORT", "port"),
                &self
                    .ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                &format!(
                    "give one port for all hosts or one per host ({} hosts)",
                    self.hosts.len()
                ),
            );
        }
        if self.user.trim().is_empty() {
            problems.push(
                source.name("POSTGRES_USER", "user"),
                &self.user,
                "must not be empty",
            );
        }
        if self.pool_size == 0 {
            problems.push(
                source.name("POSTGRES_POOL_SIZE", "pool_size"),
                "0",
                "must be a whole number of at least 1",
            );
        }
        for (value, env, builder) in [
            (self.pool_timeout, "POSTGRES_POOL_TIMEOUT", "pool_timeout"),
            (
                self.connect_timeout,
                "POSTGRES_CONNECT_TIMEOUT",
                "connect_timeout",
            ),
        ] {
            if value.is_zero() {
                problems.push(source.name(env, builder), "0", "must be greater than 0");
            }
        }
        if self.application_name.len() >= 64 {
            problems.push(
                source.name("POSTGRES_APPLICATION_NAME", "application_name"),
                &self.application_name,
                "must be shorter than 64 bytes (PostgreSQL truncates it)",
            );
        }
    }

    /// Each host with its port (one port for all hosts, or one per host).
    pub(crate) fn host_ports(&self) -> impl Iterator<Item = (&str, u16)> {
        self.hosts.iter().enumerate().map(|(i, h)| {
            let port = self.ports.get(i).or(self.ports.first()).copied();
            (h.as_str(), port.unwrap_or(5432))
        })
    }

    /// The URL with the password masked: `postgres://user:***@host:5432/db`.
    pub fn database_url(&self) -> String {
        let auth = match &self.password {
            Some(_) => format!("{}:***", self.user),
            None => self.user.clone(),
        };
        let hosts = self
            .host_ports()
            .map(|(h, port)| {
                if h.starts_with('/') {
                    h.replace('/', "%2F")
                } else if h.contains(':') {
                    format!("[{h}]:{port}")
                } else {
                    format!("{h}:{port}")
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        format!("postgres://{auth}@{hosts}/{}", self.dbname)
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

    /// PEM file of trusted authorities for `verify-ca` / `verify-full`, when set.
    pub fn ssl_root_cert(&self) -> Option<&std::path::Path> {
        self.ssl_root_cert.as_deref()
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
    /// Prepared statements cached per connection (0: none).
    pub fn statement_cache_size(&self) -> usize {
        self.statement_cache_size
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
            statement_guard: self
                .statement_timeout
                .map(|t| t + Duration::from_secs(1).max(t / 2)),
        }
    }

    /// The driver's configuration for one connection.
    pub(crate) fn to_driver_config(&self) -> tokio_postgres::Config {
        let mut pg = tokio_postgres::Config::new();
        for host in &self.hosts {
            pg.host(host);
        }
        for port in &self.ports {
            pg.port(*port);
        }
        pg.user(&self.user);
        if let Some(p) = &self.password {
            pg.password(p.expose());
        }
        pg.dbname(&self.dbname);
        pg.application_name(&self.application_name);
        pg.connect_timeout(self.connect_timeout);
        pg.keepalives(true);
        pg.keepalives_idle(self.keepalive_idle);
        pg.ssl_mode(match self.ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        pg.target_session_attrs(match self.target_session_attrs {
            TargetSessionAttrs::Any => tokio_postgres::config::TargetSessionAttrs::Any,
            TargetSessionAttrs::ReadWrite => tokio_postgres::config::TargetSessionAttrs::ReadWrite,
        });
        if self.load_balance {
            pg.load_balance_hosts(tokio_postgres::config::LoadBalanceHosts::Random);
        }
        if let Some(t) = self.statement_timeout {
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
            .field("statement_cache_size", &self.statement_cache_size)
            .field("pipeline_autocommit", &self.pipeline_autocommit)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("read_replicas", &self.read_replicas)
            .finish()
    }
}

impl fmt::Display for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.database_url())
    }
}

/// Builds a [`DatabaseConfig`] in code; [`build`](Self::build) validates it.
#[derive(Debug, Clone)]
pub struct DatabaseConfigBuilder {
    config: DatabaseConfig,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => |$c:ident, $v:ident| $body:expr;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $v: $ty) -> Self {
                let $c = &mut self.config;
                $body;
                self
            }
        )*
    };
}

impl DatabaseConfigBuilder {
    setters! {
        /// One host (replaces the list); call [`hosts`](Self::hosts) for failover.
        host: impl Into<String> => |c, v| c.hosts = vec![v.into()];
        /// Hosts tried in order (failover).
        hosts: Vec<String> => |c, v| c.hosts = v;
        /// The port of every host.
        port: u16 => |c, v| c.ports = vec![v];
        /// One port per host.
        ports: Vec<u16> => |c, v| c.ports = v;
        /// The user name; also the default database name.
        user: impl Into<String> => |c, v| c.user = v.into();
        /// The password.
        password: impl Into<String> => |c, v| c.password = Some(Password(v.into()));
        /// The database name.
        dbname: impl Into<String> => |c, v| c.dbname = v.into();
        /// Connections kept open (at least 1).
        pool_size: usize => |c, v| c.pool_size = v;
        /// Extra connections allowed under load.
        max_overflow: usize => |c, v| c.max_overflow = v;
        /// How long a checkout waits.
        pool_timeout: Duration => |c, v| c.pool_timeout = v;
        /// Maximum connection age; `None` never recycles.
        pool_recycle: Option<Duration> => |c, v| c.pool_recycle = v;
        /// Verify idle connections before hand-out.
        pool_pre_ping: bool => |c, v| c.pool_pre_ping = v;
        /// A connection idle for longer than this is pinged at checkout (default 1 s).
        pre_ping_idle: Duration => |c, v| c.pre_ping_idle = v;
        /// Limit of one connection attempt.
        connect_timeout: Duration => |c, v| c.connect_timeout = v;
        /// Server-side `statement_timeout`.
        statement_timeout: Option<Duration> => |c, v| c.statement_timeout = v;
        /// TLS negotiation mode.
        ssl_mode: SslMode => |c, v| c.ssl_mode = v;
        /// Name shown in `pg_stat_activity`.
        application_name: impl Into<String> => |c, v| c.application_name = v.into();
        /// Log every statement with its duration.
        echo: bool => |c, v| c.echo = v;
        /// Include parameter values in logged statements.
        echo_params: bool => |c, v| c.echo_params = v;
        /// Prepared statements cached per connection (0 disables the cache).
        statement_cache_size: usize => |c, v| c.statement_cache_size = v;
        /// Which server of a multi-host list to use.
        target_session_attrs: TargetSessionAttrs => |c, v| c.target_session_attrs = v;
        /// Idle time before TCP keepalive probes start.
        keepalive_idle: Duration => |c, v| c.keepalive_idle = v;
        /// Read replicas, `(host, port)`, for [`DatabaseManager::reader`](crate::DatabaseManager::reader).
        read_replicas: Vec<(String, u16)> => |c, v| c.read_replicas = v;
        /// PEM file of the authorities trusted by `verify-ca` / `verify-full`.
        ssl_root_cert: impl Into<std::path::PathBuf> => |c, v| c.ssl_root_cert = Some(v.into());
        /// Send the manager's autocommit statements over shared, pipelined connections.
        pipeline_autocommit: bool => |c, v| c.pipeline_autocommit = v;
    }

    /// Validates and returns the configuration.
    ///
    /// # Errors
    /// A [`Config`](crate::ErrorKind::Config) error listing every invalid setting.
    pub fn build(self) -> Result<DatabaseConfig> {
        let mut problems = Problems::default();
        let mut config = self.config;
        if config.dbname.is_empty() {
            config.dbname = config.user.clone();
        }
        config.check(Source::Builder, &mut problems);
        problems.into_result()?;
        Ok(config)
    }
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn parse_ports(raw: &str) -> std::result::Result<Vec<u16>, String> {
    raw.split(',')
        .map(|p| match p.trim().parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            Ok(_) => Err("port out of range; allowed 1-65535".to_owned()),
            Err(_) => Err("not a port number; allowed 1-65535 (or a comma list)".to_owned()),
        })
        .collect()
}

fn parse_replicas(raw: &str, default_port: u16) -> std::result::Result<Vec<(String, u16)>, String> {
    raw.split(',')
        .map(|entry| {
            let entry = entry.trim();
            let (host, port) = match entry.rsplit_once(':') {
                Some((host, port)) => match port.parse::<u16>() {
                    Ok(p) if p > 0 => (host, p),
                    _ => {
                        return Err(format!(
                        "{entry:?} has no valid port; expected host or host:port, comma-separated"
                    ))
                    }
                },
                None => (entry, default_port),
            };
            if host.is_empty() {
                return Err(
                    "a replica host is empty; expected host or host:port, comma-separated".into(),
                );
            }
            Ok((host.to_owned(), port))
        })
        .collect()
}

fn parse_url(url: &str) -> std::result::Result<DatabaseConfig, String> {
    let trimmed = url.trim();
    if !(trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://")) {
        return Err(
            "not a PostgreSQL URL; expected postgres://user:password@host:port/database".into(),
        );
    }
    let pg = tokio_postgres::Config::from_str(trimmed).map_err(|e| {
        format!("not a valid PostgreSQL URL ({e}); expected postgres://user:password@host:port/database")
    })?;
    let mut config = DatabaseConfig::default();
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        config.hosts = hosts;
    }
    if !pg.get_ports().is_empty() {
        config.ports = pg.get_ports().to_vec();
    }
    if let Some(user) = pg.get_user() {
        config.user = user.to_owned();
    }
    if let Some(pw) = pg.get_password() {
        config.password = Some(Password(String::from_utf8_lossy(pw).into_owned()));
    }
    config.dbname = pg.get_dbname().unwrap_or_default().to_owned();
    if let Some(name) = pg.get_application_name() {
        config.application_name = name.to_owned();
    }
    if let Some(t) = pg.get_connect_timeout() {
        config.connect_timeout = *t;
    }
    config.ssl_mode = match pg.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => SslMode::Disable,
        tokio_postgres::config::SslMode::Require => SslMode::Require,
        _ => SslMode::Prefer,
    };
    // tokio-postgres folds verify-ca/verify-full into `require`; keep the stricter wish.
    if let Some(path) = trimmed
        .split_once('?')
        .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("sslrootcert=")))
    {
        config.ssl_root_cert = Some(path.into());
    }
    if let Some(mode) = trimmed
        .split_once('?')
        .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("sslmode=")))
    {
        config.ssl_mode = mode.parse()?;
    }
    if pg.get_target_session_attrs() == tokio_postgres::config::TargetSessionAttrs::ReadWrite {
        config.target_session_attrs = TargetSessionAttrs::ReadWrite;
    }
    if config.dbname.is_empty() {
        config.dbname = config.user.clone();
    }
    Ok(config)
}

/// Masks the password of a URL that may not even parse: `scheme://user:***@rest`.
pub(crate) fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    // The authority ends at the first '/' or '?' after the last '@' (passwords may hold '/').
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}
