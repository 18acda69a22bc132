//! Health reports (`check_database_health()` in core.db).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::pool::PoolStatus;

/// `"healthy"`, `"degraded"` or `"unhealthy"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The database answered.
    Healthy,
    /// The primary answered, but a read replica did not (reads fall back to the primary
    /// unless `POSTGRES_READ_FALLBACK` is off); see `replicas`.
    Degraded,
    /// The database did not answer; see `error`.
    Unhealthy,
}

/// The state of the database connection, for `/health` endpoints and monitoring.
///
/// Serializes as `{"status": "healthy", "connected": true, "database_url": "postgres://app:***@...", ...}`;
/// the password is always masked.
///
/// ```no_run
/// # async fn demo() {
/// let report = coredb::check_database_health().await;
/// if !report.is_healthy() {
///     eprintln!("database down: {}", report.error.as_deref().unwrap_or("unknown"));
/// }
/// println!("{}", serde_json::to_string(&report).unwrap());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// `healthy` when a query round trip succeeded.
    pub status: HealthStatus,
    /// Whether a connection could be used.
    pub connected: bool,
    /// The database URL with the password masked.
    pub database_url: String,
    /// Round-trip time of the check query, in milliseconds.
    pub latency_ms: Option<f64>,
    /// The server's version, e.g. `15.19`.
    pub server_version: Option<String>,
    /// Pool figures at the time of the check.
    pub pool: Option<PoolStatus>,
    /// The manager's [`Listener`](crate::Listener)s, whose connections are outside the pool.
    #[serde(default)]
    pub listeners: Option<ListenerStatus>,
    /// Each read replica (`POSTGRES_READ_HOSTS`), checked on a connection of its own.
    #[serde(default)]
    pub replicas: Option<Vec<ReplicaHealth>>,
    /// Why the check failed.
    pub error: Option<String>,
}

/// One read replica in a health report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaHealth {
    /// `host:port`.
    pub address: String,
    /// Whether it answered within the connect timeout, as a standby.
    pub healthy: bool,
    /// How far its replay is behind, in milliseconds: 0 while it streams from its primary and
    /// has replayed all it received, otherwise the age of the last transaction it replayed
    /// (`now() - pg_last_xact_replay_timestamp()`); `None` when unknown or when it did not
    /// answer. A replica lagging more than `POSTGRES_READ_MAX_LAG` is reported unhealthy: it
    /// takes no reads.
    pub lag_ms: Option<f64>,
    /// Why it is not healthy.
    pub error: Option<String>,
}

/// The listeners of a manager, in its health report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// Listeners not yet dropped.
    pub open: usize,
    /// Those whose connection is up (the others are reconnecting).
    pub connected: usize,
}

impl HealthReport {
    /// True when the primary answered: `status` is healthy or degraded (some replica down).
    pub fn is_healthy(&self) -> bool {
        self.status != HealthStatus::Unhealthy
    }

    /// An unhealthy report for a database that could not even be set up.
    pub(crate) fn failed(database_url: String, error: &Error) -> Self {
        HealthReport {
            status: HealthStatus::Unhealthy,
            connected: false,
            database_url,
            latency_ms: None,
            server_version: None,
            pool: None,
            listeners: None,
            replicas: None,
            error: Some(error.to_string()),
        }
    }

    /// The report of a check that succeeded.
    pub(crate) fn healthy(
        database_url: String,
        latency: Duration,
        server_version: String,
        pool: PoolStatus,
    ) -> Self {
        HealthReport {
            status: HealthStatus::Healthy,
            connected: true,
            database_url,
            latency_ms: Some(latency.as_secs_f64() * 1000.0),
            server_version: Some(server_version),
            pool: Some(pool),
            listeners: None,
            replicas: None,
            error: None,
        }
    }

    /// The report of a check that failed with `error`.
    pub(crate) fn unhealthy(database_url: String, error: &Error, pool: Option<PoolStatus>) -> Self {
        HealthReport {
            // Connected means a connection was had; the query itself failed.
            connected: !matches!(
                error.kind(),
                ErrorKind::Connect
                    | ErrorKind::PoolTimeout
                    | ErrorKind::PoolClosed
                    | ErrorKind::Timeout
                    | ErrorKind::ConnectionLost
            ),
            pool,
            ..HealthReport::failed(database_url, error)
        }
    }
}
