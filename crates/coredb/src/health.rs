//! Health reports (the seed's `check_database_health()`).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{Error, ErrorKind};
use crate::pool::PoolStatus;
use crate::query::Executor;

/// `"healthy"` or `"unhealthy"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The database answered.
    Healthy,
    /// The database did not answer; see `error`.
    Unhealthy,
}

/// The state of the database connection, for `/health` endpoints and monitoring.
///
/// Serializes as `{"status": "healthy", "connected": true, "database_url": "postgres://app:***@...", ...}`;
/// the password is always masked.
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
    /// Why the check failed.
    pub error: Option<String>,
}

impl HealthReport {
    /// True when `status` is healthy.
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
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
            error: Some(error.to_string()),
        }
    }

    /// Checks `engine`: a query round trip within the connect timeout, never longer.
    pub(crate) async fn check(engine: &Engine) -> Self {
        let limit = engine.config().connect_timeout();
        let started = Instant::now();
        // The driver's own connect timeout fires first and gives the better message.
        let outcome = tokio::time::timeout(limit + Duration::from_millis(500), async {
            let mut conn = engine
                .get_connection_within(limit + Duration::from_millis(250))
                .await?;
            let version: String = conn
                .scalar("SELECT current_setting('server_version')", ())
                .await?;
            Ok::<_, Error>(version)
        })
        .await
        .unwrap_or_else(|_| Err(Error::timeout("the health check", limit)));
        let url = engine.config().database_url();
        let pool = Some(engine.status());
        match outcome {
            Ok(version) => HealthReport {
                status: HealthStatus::Healthy,
                connected: true,
                database_url: url,
                latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
                server_version: Some(version),
                pool,
                error: None,
            },
            Err(err) => {
                tracing::warn!(target: "coredb", error = %err, "database health check failed");
                HealthReport {
                    // Connected means a connection was had; the query itself failed.
                    connected: !matches!(
                        err.kind(),
                        ErrorKind::Connect
                            | ErrorKind::PoolTimeout
                            | ErrorKind::PoolClosed
                            | ErrorKind::Timeout
                            | ErrorKind::ConnectionLost
                    ),
                    pool,
                    ..HealthReport::failed(url, &err)
                }
            }
        }
    }
}
