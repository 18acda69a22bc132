//! Multi-host configuration: hosts are tried in order until one answers.

use coredb::{DatabaseManager, TargetSessionAttrs};
use coredb_testkit::TestDatabase;

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

async fn server() -> coredb_embedded::EmbeddedServer {
    tokio::task::spawn_blocking(coredb_embedded::EmbeddedServer::start)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn reads_go_to_the_replicas_and_writes_to_the_primary() {
    let (primary, replica_a, replica_b) = (server().await, server().await, server().await);
    let config = coredb::DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(primary.port())
        .read_replicas(vec![
            ("127.0.0.1".into(), replica_a.port()),
            ("127.0.0.1".into(), replica_b.port()),
        ])
        .pool_size(1)
        .max_overflow(0)
        .pipeline_autocommit(false)
        .pool_recycle(Some(std::time::Duration::from_millis(1)))
        .build()
        .unwrap();
    let db = DatabaseManager::from_config(&config).unwrap();
    let write_port: i32 = db.scalar("SELECT inet_server_port()", ()).await.unwrap();
    assert_eq!(write_port, i32::from(primary.port()));
    let reader = db.reader();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        // A 1 ms recycle age gives a new connection, to a replica picked at random, each time.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let port: i32 = reader
            .scalar("SELECT inet_server_port()", ())
            .await
            .unwrap();
        seen.insert(port);
    }
    let replicas: std::collections::HashSet<i32> =
        [replica_a.port(), replica_b.port()].map(i32::from).into();
    assert_eq!(
        seen, replicas,
        "reads spread over both replicas, none on the primary"
    );
    assert!(db.close().await);
}

#[test]
fn replica_hosts_are_read_from_the_environment_and_checked() {
    let c = coredb::DatabaseConfig::from_vars([
        ("POSTGRES_PORT", "6000"),
        ("POSTGRES_READ_HOSTS", "r1:6001, r2"),
    ])
    .unwrap();
    assert_eq!(
        c.read_replicas(),
        [("r1".to_owned(), 6001), ("r2".to_owned(), 6000)]
    );
    let err =
        coredb::DatabaseConfig::from_vars([("POSTGRES_READ_HOSTS", "r1:notaport")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("POSTGRES_READ_HOSTS=\"r1:notaport\""),
        "{err}"
    );
}
