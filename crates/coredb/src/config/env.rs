//! Reading the configuration from the environment and `.env`.

use std::collections::HashMap;
use std::time::Duration;

use super::url::{mask_url, parse_url};
use super::validate::{Problems, Source};
use super::{DatabaseConfig, Origin, Password, Setting, SslMode, TargetSessionAttrs};
use crate::error::{Error, Result};

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
        let process = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok());
        warn_unknown_variables(process.chain(dotenv.keys().cloned()));
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
        warn_unknown_variables(map.keys().cloned());
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
        if let Some(n) = number(
            "POSTGRES_SLOW_STATEMENT_MS",
            0,
            "must be a whole number of milliseconds of at least 0 (0 logs every statement)",
        ) {
            config.slow_statement = Some(Duration::from_millis(n as u64));
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
        if let Some(d) = seconds("POSTGRES_TCP_USER_TIMEOUT") {
            config.tcp_user_timeout = d;
        }
        if let Some(d) = seconds("POSTGRES_READ_MAX_LAG") {
            config.read_max_lag = Some(d);
        }
        if let Some(d) = seconds("POSTGRES_READ_YOUR_WRITES_WAIT") {
            config.read_your_writes_wait = d;
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
        if let Some(b) = flag("POSTGRES_READ_FALLBACK") {
            config.read_fallback = b;
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
        if let Some(path) = get("POSTGRES_SSLCERT") {
            config.ssl_cert = Some(path.into());
        }
        if let Some(path) = get("POSTGRES_SSLKEY") {
            config.ssl_key = Some(path.into());
        }
        if let Some(raw) = get("POSTGRES_SSLNEGOTIATION") {
            match raw.parse() {
                Ok(negotiation) => config.ssl_negotiation = negotiation,
                Err(what) => problems.push("POSTGRES_SSLNEGOTIATION", &raw, &what),
            }
        }
        if let Some(name) = get("POSTGRES_APPLICATION_NAME") {
            config.application_name = name;
        }
        if let Some(raw) = get("POSTGRES_PGBOUNCER") {
            match raw.parse() {
                Ok(mode) => config.pgbouncer = mode,
                Err(what) => problems.push("POSTGRES_PGBOUNCER", &raw, &what),
            }
        }
        if let Some(raw) = get("POSTGRES_TARGET_SESSION_ATTRS") {
            match raw.parse::<TargetSessionAttrs>() {
                Ok(attrs) => config.target_session_attrs = attrs,
                Err(allowed) => problems.push("POSTGRES_TARGET_SESSION_ATTRS", &raw, &allowed),
            }
        }
        let given: Vec<Setting> = Setting::ALL
            .into_iter()
            .filter(|setting| get(setting.variable()).is_some())
            .collect();
        config.origin = Origin::environment(get("DATABASE_URL").is_some(), &given);
        config.check(Source::Env, &mut problems);
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

/// Every variable coredb reads (the `COREDB_*` ones are read by `coredb-embedded`).
const KNOWN_VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "POSTGRES_POOL_SIZE",
    "POSTGRES_MAX_OVERFLOW",
    "POSTGRES_POOL_TIMEOUT",
    "POSTGRES_POOL_RECYCLE",
    "POSTGRES_POOL_PRE_PING",
    "POSTGRES_CONNECT_TIMEOUT",
    "POSTGRES_STATEMENT_TIMEOUT",
    "POSTGRES_STATEMENT_CACHE_SIZE",
    "POSTGRES_SSLMODE",
    "POSTGRES_SSLROOTCERT",
    "POSTGRES_SSLCERT",
    "POSTGRES_SSLKEY",
    "POSTGRES_SSLNEGOTIATION",
    "POSTGRES_APPLICATION_NAME",
    "POSTGRES_ECHO",
    "POSTGRES_ECHO_PARAMS",
    "POSTGRES_SLOW_STATEMENT_MS",
    "POSTGRES_PGBOUNCER",
    "POSTGRES_PIPELINE_AUTOCOMMIT",
    "POSTGRES_TARGET_SESSION_ATTRS",
    "POSTGRES_READ_HOSTS",
    "POSTGRES_READ_FALLBACK",
    "POSTGRES_READ_MAX_LAG",
    "POSTGRES_TCP_USER_TIMEOUT",
    "POSTGRES_READ_YOUR_WRITES_WAIT",
    "COREDB_PG_BINDIR",
];

/// Variables of the official PostgreSQL container image, often set beside an application's
/// own; they are not meant for coredb and are no typo.
const CONTAINER_VARIABLES: &[&str] = &[
    "POSTGRES_INITDB_ARGS",
    "POSTGRES_INITDB_WALDIR",
    "POSTGRES_HOST_AUTH_METHOD",
    "POSTGRES_PASSWORD_FILE",
    "POSTGRES_USER_FILE",
    "POSTGRES_DB_FILE",
    "POSTGRES_VERSION",
];

/// Logs one WARN naming every `POSTGRES_*` / `COREDB_*` variable that coredb does not read,
/// with the known variable it most likely meant: a typo would otherwise be ignored in silence.
fn warn_unknown_variables(names: impl Iterator<Item = String>) {
    let mut unknown: Vec<String> = names
        .filter(|n| n.starts_with("POSTGRES_") || n.starts_with("COREDB_"))
        .filter(|n| {
            !KNOWN_VARIABLES.contains(&n.as_str()) && !CONTAINER_VARIABLES.contains(&n.as_str())
        })
        .map(|n| match did_you_mean(&n) {
            Some(known) => format!("{n} (did you mean {known}?)"),
            None => n,
        })
        .collect();
    if unknown.is_empty() {
        return;
    }
    unknown.sort();
    unknown.dedup();
    tracing::warn!(
        target: "coredb",
        "ignoring unknown variable(s) {}; the variables coredb reads are listed in the README under Configuration",
        unknown.join(", ")
    );
}

/// The known variable closest to `name`, when it is close enough to be a typo.
fn did_you_mean(name: &str) -> Option<&'static str> {
    KNOWN_VARIABLES
        .iter()
        .map(|known| (edit_distance(name, known), *known))
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, known)| known)
}

/// Levenshtein distance, over bytes (variable names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_of_known_variables_get_a_suggestion() {
        assert_eq!(did_you_mean("POSTGRES_HOTS"), Some("POSTGRES_HOST"));
        assert_eq!(did_you_mean("POSTGRES_PASWORD"), Some("POSTGRES_PASSWORD"));
        assert_eq!(
            did_you_mean("POSTGRES_POOLSIZE"),
            Some("POSTGRES_POOL_SIZE")
        );
        assert_eq!(did_you_mean("POSTGRES_SOMETHING_ELSE"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn every_variable_this_module_reads_is_known() {
        // The code above the tests: the tests themselves spell typos on purpose.
        let source = include_str!("env.rs")
            .split("#[cfg(test)]")
            .next()
            .unwrap_or("");
        let reads = source.split('"').filter(|piece| {
            (piece.len() > "POSTGRES_".len() && piece.starts_with("POSTGRES_")
                || piece == &"DATABASE_URL")
                && piece.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        });
        for name in reads {
            assert!(
                KNOWN_VARIABLES.contains(&name) || CONTAINER_VARIABLES.contains(&name),
                "{name} is read but not in KNOWN_VARIABLES"
            );
        }
    }
}
