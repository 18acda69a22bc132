//! Health reports: healthy with figures, unhealthy with the reason and never a hang.

use std::time::{Duration, Instant};

use coredb::{DatabaseConfig, DatabaseManager, HealthStatus};
use coredb_testkit::TestDatabase;

#[tokio::test]
async fn healthy_report_has_version_latency_and_pool_figures() {
    let db = TestDatabase::new().await.unwrap();
    assert!(db.manager().health_check().await);
    let report = db.manager().health_report().await;
    assert_eq!(report.status, HealthStatus::Healthy);
    assert!(report.connected);
    assert!(report
        .server_version
        .as_deref()
        .unwrap()
        .starts_with(char::is_numeric));
    assert!(report.latency_ms.unwrap() >= 0.0);
    assert_eq!(report.pool.unwrap().size, 1);
    assert!(report.error.is_none());
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["status"], "healthy");
    assert_eq!(json["connected"], true);
    assert_eq!(json["database_url"], report.database_url);
}

fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn unreachable_server_is_unhealthy_with_the_reason_within_the_connect_timeout() {
    let config = DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(unused_port())
        .password("do-not-print-me")
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let db = DatabaseManager::from_config(&config).unwrap();
    let started = Instant::now();
    let report = db.health_report().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(!report.connected);
    let error = report.error.as_deref().unwrap();
    assert!(error.contains("refused the connection"), "{error}");
    assert!(error.contains("is PostgreSQL running"), "{error}");
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"status\":\"unhealthy\""), "{json}");
    assert!(!json.contains("do-not-print-me"), "{json}");
    assert!(json.contains(":***@"), "{json}");
    assert!(!db.health_check().await);
}

#[tokio::test]
async fn silent_server_is_unhealthy_within_the_connect_timeout() {
    // Accepts TCP connections and never answers: a blackholed server.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(port)
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let db = DatabaseManager::from_config(&config).unwrap();
    let started = Instant::now();
    let report = db.health_report().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert!(report.error.unwrap().contains("timeout"));
    drop(listener);
}

#[tokio::test]
async fn wrong_database_name_says_how_to_fix_it() {
    let db = TestDatabase::new().await.unwrap();
    let config = db
        .config()
        .to_builder()
        .dbname("no_such_db")
        .build()
        .unwrap();
    let bad = DatabaseManager::from_config(&config).unwrap();
    let err = bad.get_connection().await.unwrap_err();
    assert_eq!(err.kind(), coredb::ErrorKind::Connect);
    assert!(!err.is_transient());
    let msg = err.to_string();
    assert!(
        msg.contains("database \"no_such_db\" does not exist"),
        "{msg}"
    );
    assert!(msg.contains("or fix the builder's dbname()"), "{msg}");
}
