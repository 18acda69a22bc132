//! Validation: every problem is collected and reported at once, named as the user wrote it
//! (the environment variable, or the builder method).

use super::{DatabaseConfig, SslMode, SslNegotiation};
use crate::error::{Error, Result};

/// Collects every configuration problem before reporting them together.
#[derive(Default)]
pub(super) struct Problems(Vec<String>);

impl Problems {
    pub(super) fn push(&mut self, name: &str, value: &str, what: &str) {
        self.0.push(format!("{name}={value:?}: {what}"));
    }

    pub(super) fn into_result(self) -> Result<()> {
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
pub(super) enum Source {
    /// Environment variables (and URLs).
    Env,
    /// The builder's methods.
    Builder,
}

impl Source {
    pub(super) fn name(self, env: &'static str, builder: &'static str) -> &'static str {
        match self {
            Source::Env => env,
            Source::Builder => builder,
        }
    }
}

impl DatabaseConfig {
    /// Adds every problem of a finished configuration to `problems`.
    pub(super) fn check(&self, source: Source, problems: &mut Problems) {
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
        let (cert_name, key_name) = (
            source.name("POSTGRES_SSLCERT", "ssl_cert"),
            source.name("POSTGRES_SSLKEY", "ssl_key"),
        );
        let in_url = match source {
            Source::Env => " (sslcert and sslkey in DATABASE_URL)",
            Source::Builder => "",
        };
        match (&self.ssl_cert, &self.ssl_key) {
            (Some(cert), None) => problems.push(
                cert_name,
                &cert.display().to_string(),
                &format!("given without {key_name}: a client certificate needs both {cert_name} and {key_name}{in_url}"),
            ),
            (None, Some(key)) => problems.push(
                key_name,
                &key.display().to_string(),
                &format!("given without {cert_name}: a client certificate needs both {cert_name} and {key_name}{in_url}"),
            ),
            _ => {}
        }
        if self.ssl_negotiation == SslNegotiation::Direct
            && matches!(self.ssl_mode, SslMode::Disable | SslMode::Prefer)
        {
            problems.push(
                source.name("POSTGRES_SSLNEGOTIATION", "ssl_negotiation"),
                SslNegotiation::Direct.as_str(),
                &format!(
                    "needs {} require, verify-ca or verify-full (it is {}): direct TLS has no plaintext fallback",
                    source.name("POSTGRES_SSLMODE", "ssl_mode"),
                    self.ssl_mode.as_str()
                ),
            );
        }
        if self.application_name.len() >= 64 {
            problems.push(
                source.name("POSTGRES_APPLICATION_NAME", "application_name"),
                &self.application_name,
                "must be shorter than 64 bytes (PostgreSQL truncates it)",
            );
        }
    }
}
