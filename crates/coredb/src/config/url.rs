//! `postgres://` URLs: parsing them, and writing them with the password masked.

use std::str::FromStr;

use super::validate::{Problems, Source};
use super::{DatabaseConfig, Origin, Password, SslMode, SslNegotiation, TargetSessionAttrs};
use crate::error::Result;

impl DatabaseConfig {
    /// Parses a `postgres://user:password@host:port/dbname?options` URL (also a comma list of
    /// `host:port` pairs for failover); the pool settings keep their defaults.
    ///
    /// # Errors
    /// A [`Config`](crate::ErrorKind::Config) error naming the URL (password masked) and the
    /// expected form.
    pub fn from_url(url: &str) -> Result<Self> {
        let mut problems = Problems::default();
        match parse_url(url) {
            Ok(mut config) => {
                config.origin = Origin::url();
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
}

pub(super) fn parse_url(url: &str) -> std::result::Result<DatabaseConfig, String> {
    let trimmed = url.trim();
    if !(trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://")) {
        return Err(
            "not a PostgreSQL URL; expected postgres://user:password@host:port/database".into(),
        );
    }
    // The TLS settings are read here: the driver knows only some of their values.
    let (rest, tls) = take_tls_params(trimmed)?;
    let pg = tokio_postgres::Config::from_str(&rest).map_err(|e| {
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
    if let Some(mode) = tls.mode {
        config.ssl_mode = mode;
    }
    config.ssl_root_cert = tls.root_cert;
    config.ssl_cert = tls.cert;
    config.ssl_key = tls.key;
    if let Some(negotiation) = tls.negotiation {
        config.ssl_negotiation = negotiation;
    }
    if let Some(attrs) = tls.target_session_attrs {
        config.target_session_attrs = attrs;
    }
    if config.dbname.is_empty() {
        config.dbname = config.user.clone();
    }
    Ok(config)
}

/// The TLS settings of a URL's query string.
#[derive(Default)]
struct TlsParams {
    mode: Option<SslMode>,
    root_cert: Option<std::path::PathBuf>,
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
    negotiation: Option<SslNegotiation>,
    /// Read here too: the driver knows only three of libpq's six values.
    target_session_attrs: Option<TargetSessionAttrs>,
}

/// Takes the TLS settings (`sslmode` with all of libpq's values, `sslrootcert`, `sslcert`,
/// `sslkey`, `sslnegotiation`) out of the URL's query string; refuses the ones coredb cannot
/// honour. Returns the URL without them.
fn take_tls_params(url: &str) -> std::result::Result<(String, TlsParams), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), TlsParams::default()));
    };
    let mut tls = TlsParams::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "sslmode" => {
                tls.mode = Some(value.parse().map_err(|e| format!("sslmode={value:?} in DATABASE_URL: {e}"))?)
            }
            "sslrootcert" => tls.root_cert = Some(value.into()),
            "sslcert" => tls.cert = Some(value.into()),
            "sslkey" => tls.key = Some(value.into()),
            "sslnegotiation" => {
                tls.negotiation = Some(value.parse().map_err(|e| {
                    format!("sslnegotiation={value:?} in DATABASE_URL: {e}")
                })?)
            }
            "target_session_attrs" => {
                tls.target_session_attrs = Some(value.parse().map_err(|e| {
                    format!("target_session_attrs={value:?} in DATABASE_URL: {e}")
                })?)
            }
            "sslpassword" | "sslcrl" | "sslcrldir" => {
                return Err(format!(
                    "{key}= in DATABASE_URL: encrypted client keys and revocation lists are not supported by this version of coredb; the TLS settings it takes are sslmode (disable, allow, prefer, require, verify-ca, verify-full), sslrootcert, sslcert, sslkey (an unencrypted PEM key) and sslnegotiation (postgres, direct)"
                ))
            }
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, tls))
}

/// Decodes `%XX` escapes (as in a path given in a URL); anything else is kept as written.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
