//! Building a configuration in code.

use std::time::Duration;

use super::validate::{Problems, Source};
use super::{
    DatabaseConfig, Origin, Password, Setting, SslMode, SslNegotiation, TargetSessionAttrs,
};
use crate::error::Result;

impl DatabaseConfig {
    /// Starts a builder from the defaults.
    pub fn builder() -> DatabaseConfigBuilder {
        DatabaseConfigBuilder {
            config: DatabaseConfig {
                origin: Origin::code(),
                ..DatabaseConfig::default()
            },
        }
    }

    /// A builder that starts from this configuration, to change a few settings.
    pub fn to_builder(&self) -> DatabaseConfigBuilder {
        DatabaseConfigBuilder {
            config: self.clone(),
        }
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
        host: impl Into<String> => |c, v| { c.hosts = vec![v.into()]; c.origin.set_in_code(Setting::Host) };
        /// Hosts tried in order (failover).
        hosts: Vec<String> => |c, v| { c.hosts = v; c.origin.set_in_code(Setting::Host) };
        /// The port of every host.
        port: u16 => |c, v| { c.ports = vec![v]; c.origin.set_in_code(Setting::Port) };
        /// One port per host.
        ports: Vec<u16> => |c, v| { c.ports = v; c.origin.set_in_code(Setting::Port) };
        /// The user name; also the default database name.
        user: impl Into<String> => |c, v| { c.user = v.into(); c.origin.set_in_code(Setting::User) };
        /// The password.
        password: impl Into<String> => |c, v| { c.password = Some(Password(v.into())); c.origin.set_in_code(Setting::Password) };
        /// The database name.
        dbname: impl Into<String> => |c, v| { c.dbname = v.into(); c.origin.set_in_code(Setting::Database) };
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
        ssl_mode: SslMode => |c, v| { c.ssl_mode = v; c.origin.set_in_code(Setting::SslMode) };
        /// Name shown in `pg_stat_activity`.
        application_name: impl Into<String> => |c, v| c.application_name = v.into();
        /// Log every statement with its duration.
        echo: bool => |c, v| c.echo = v;
        /// Include parameter values in logged statements.
        echo_params: bool => |c, v| c.echo_params = v;
        /// Log statements taking at least this long at WARN, echo or not; `None` logs none.
        slow_statement: Option<Duration> => |c, v| c.slow_statement = v;
        /// Prepared statements cached per connection (0 disables the cache).
        statement_cache_size: usize => |c, v| c.statement_cache_size = v;
        /// Reached through PgBouncer in transaction mode (see [`PgBouncerMode`](crate::config::PgBouncerMode)).
        pgbouncer: crate::config::PgBouncerMode => |c, v| c.pgbouncer = v;
        /// Which server of a multi-host list to use.
        target_session_attrs: TargetSessionAttrs => |c, v| c.target_session_attrs = v;
        /// Idle time before TCP keepalive probes start.
        keepalive_idle: Duration => |c, v| c.keepalive_idle = v;
        /// The bound on finding a dead peer (see [`DatabaseConfig::tcp_user_timeout`]).
        tcp_user_timeout: Duration => |c, v| c.tcp_user_timeout = v;
        /// Read replicas, `(host, port)`, for [`DatabaseManager::reader`](crate::DatabaseManager::reader).
        read_replicas: Vec<(String, u16)> => |c, v| c.read_replicas = v;
        /// Read from the primary when no replica can be reached (default true).
        read_fallback: bool => |c, v| c.read_fallback = v;
        /// Take replicas lagging more than this out of rotation; `None` (the default) takes any.
        read_max_lag: Option<Duration> => |c, v| c.read_max_lag = v;
        /// How long a read-your-writes read waits for a replica before going to the primary.
        read_your_writes_wait: Duration => |c, v| c.read_your_writes_wait = v;
        /// PEM file of the authorities trusted by `verify-ca` / `verify-full`.
        ssl_root_cert: impl Into<std::path::PathBuf> => |c, v| { c.ssl_root_cert = Some(v.into()); c.origin.set_in_code(Setting::SslRootCert) };
        /// PEM file of the client certificate shown to the server (libpq's `sslcert`); give
        /// [`ssl_key`](Self::ssl_key) too.
        ssl_cert: impl Into<std::path::PathBuf> => |c, v| { c.ssl_cert = Some(v.into()); c.origin.set_in_code(Setting::SslCert) };
        /// PEM file of the client certificate's private key (libpq's `sslkey`): PKCS#8,
        /// PKCS#1 RSA or SEC1, unencrypted.
        ssl_key: impl Into<std::path::PathBuf> => |c, v| { c.ssl_key = Some(v.into()); c.origin.set_in_code(Setting::SslKey) };
        /// How TLS is started (libpq's `sslnegotiation`); `Direct` needs PostgreSQL 17 or later.
        ssl_negotiation: SslNegotiation => |c, v| { c.ssl_negotiation = v; c.origin.set_in_code(Setting::SslNegotiation) };
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
