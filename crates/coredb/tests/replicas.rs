//! Real streaming replicas (`pg_basebackup -R`) behind `reader()`: reads on the standbys,
//! the primary when none answers, and health that lists each replica and says "degraded".

use std::time::{Duration, Instant};

use coredb::{DatabaseConfig, DatabaseManager, ErrorKind, Executor, HealthStatus};
use coredb_embedded::EmbeddedServer;

/// A primary and `n` standbys streaming from it.
async fn cluster(n: usize) -> (EmbeddedServer, Vec<EmbeddedServer>) {
    tokio::task::spawn_blocking(move || {
        let primary = EmbeddedServer::start().expect("primary starts");
        let standbys = (0..n)
            .map(|_| primary.standby().expect("standby starts"))
            .collect();
        (primary, standbys)
    })
    .await
    .unwrap()
}

fn config(primary: &EmbeddedServer, standbys: &[EmbeddedServer]) -> DatabaseConfig {
    DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(primary.port())
        .user(primary.user())
        .dbname("postgres")
        .ssl_mode(coredb::SslMode::Disable)
        .connect_timeout(Duration::from_secs(1))
        .pool_timeout(Duration::from_secs(3))
        .read_replicas(
            standbys
                .iter()
                .map(|s| ("127.0.0.1".to_owned(), s.port()))
                .collect(),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn reads_reach_real_standbys_that_replay_the_primary() {
    let (primary, standbys) = cluster(2).await;
    let m = DatabaseManager::from_config(&config(&primary, &standbys)).unwrap();
    m.execute("CREATE TABLE replicated (n int)", ())
        .await
        .unwrap();
    m.execute("INSERT INTO replicated VALUES (1), (2), (3)", ())
        .await
        .unwrap();
    let reader = m.reader();
    let in_recovery: bool = reader
        .scalar("SELECT pg_is_in_recovery()", ())
        .await
        .unwrap();
    assert!(in_recovery, "reads go to a standby");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen: Option<i64> = reader
            .scalar("SELECT count(*) FROM replicated", ())
            .await
            .ok();
        if seen == Some(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never replayed the rows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = m.health_report().await;
    assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
    let replicas = report.replicas.unwrap();
    assert_eq!(replicas.len(), 2);
    for (replica, standby) in replicas.iter().zip(&standbys) {
        assert_eq!(replica.address, format!("127.0.0.1:{}", standby.port()));
        assert!(replica.healthy, "{replica:?}");
        assert!(
            replica.lag_ms.is_some(),
            "it replayed the inserts: {replica:?}"
        );
    }
    m.close().await;
}

#[tokio::test]
async fn with_every_replica_down_reads_go_to_the_primary_and_health_says_degraded() {
    let (primary, standbys) = cluster(2).await;
    let config = config(&primary, &standbys);
    let m = DatabaseManager::from_config(&config).unwrap();
    let reader = m.reader();
    let on_standby: bool = reader
        .scalar("SELECT pg_is_in_recovery()", ())
        .await
        .unwrap();
    assert!(on_standby);
    let standbys = tokio::task::spawn_blocking(move || {
        for standby in &standbys {
            standby.stop().expect("standby stops");
        }
        standbys
    })
    .await
    .unwrap();

    // Connections already pooled to the standbys are dead: the reads still succeed, on the
    // primary, within the connect timeout.
    for _ in 0..20 {
        let started = Instant::now();
        let on_standby: bool = reader
            .scalar("SELECT pg_is_in_recovery()", ())
            .await
            .unwrap();
        assert!(!on_standby, "read from the primary");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    let mut session = reader.session().await.unwrap();
    let on_standby: bool = session
        .scalar("SELECT pg_is_in_recovery()", ())
        .await
        .unwrap();
    assert!(!on_standby, "sessions too");
    session.commit().await.unwrap();

    let report = m.health_report().await;
    assert_eq!(report.status, HealthStatus::Degraded, "{report:?}");
    assert!(report.is_healthy(), "the primary is fine");
    let replicas = report.replicas.unwrap();
    assert_eq!(replicas.len(), 2);
    assert!(
        replicas.iter().all(|r| !r.healthy && r.error.is_some()),
        "{replicas:?}"
    );
    let json = serde_json::to_value(m.health_report().await).unwrap();
    assert_eq!(json["status"], "degraded");

    // Without fallback, the reader says what is wrong instead.
    let strict =
        DatabaseManager::from_config(&config.to_builder().read_fallback(false).build().unwrap())
            .unwrap();
    let err = strict
        .reader()
        .scalar::<bool, _>("SELECT pg_is_in_recovery()", ())
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Connect | ErrorKind::PoolTimeout),
        "{err}"
    );
    strict.close().await;
    m.close().await;
    drop(standbys);
    drop(primary);
}
