//! Multi-host configuration: hosts are tried in order until one answers.

use coredb::testkit::TestDatabase;
use coredb::{DatabaseManager, TargetSessionAttrs};

fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_down_first_host_fails_over_to_the_next() {
    let db = TestDatabase::new().await.unwrap();
    let live = db.config().ports()[0];
    let config = db
        .config()
        .to_builder()
        .hosts(vec!["127.0.0.1".into(), "127.0.0.1".into()])
        .ports(vec![unused_port(), live])
        .build()
        .unwrap();
    assert_eq!(config.hosts().len(), 2);
    let m = DatabaseManager::from_config(&config).unwrap();
    let port: i32 = m.scalar("SELECT inet_server_port()", ()).await.unwrap();
    assert_eq!(port, i32::from(live));
}

#[tokio::test]
async fn read_write_target_accepts_a_primary() {
    let db = TestDatabase::new().await.unwrap();
    let config = db
        .config()
        .to_builder()
        .target_session_attrs(TargetSessionAttrs::ReadWrite)
        .build()
        .unwrap();
    let m = DatabaseManager::from_config(&config).unwrap();
    let in_recovery: bool = m.scalar("SELECT pg_is_in_recovery()", ()).await.unwrap();
    assert!(!in_recovery);
}

#[tokio::test]
async fn every_host_down_names_all_of_them_in_the_error() {
    let (a, b) = (unused_port(), unused_port());
    let config = coredb::DatabaseConfig::builder()
        .hosts(vec!["127.0.0.1".into(), "127.0.0.1".into()])
        .ports(vec![a, b])
        .pool_timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let err = DatabaseManager::from_config(&config)
        .unwrap()
        .get_connection()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{a}")) && msg.contains(&format!("127.0.0.1:{b}")),
        "{msg}"
    );
}
