//! A dead peer found within the documented bound, with no statement timeout configured: the
//! server sits in a network namespace whose link is taken down, so packets vanish and nothing
//! answers (no reset, no acknowledgement), as when a host or its network dies.

mod support;

use std::time::{Duration, Instant};

use coredb::{DatabaseConfig, DatabaseManager, ErrorKind, Executor};
use coredb_embedded::EmbeddedServer;
use support::netns::Netns;
use support::proxy::Proxy;

/// How long the kernel may keep data unacknowledged in these tests (the default is 30 s).
const USER_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_is_found_within_the_tcp_user_timeout_without_a_statement_timeout() {
    let server = tokio::task::spawn_blocking(EmbeddedServer::start)
        .await
        .unwrap()
        .unwrap();
    // The server, as the client sees it, is inside the namespace: a proxy listening there.
    let ns = Netns::new();
    let listener = tokio::net::TcpListener::from_std(ns.listen()).unwrap();
    let proxy = Proxy::start_on(
        listener,
        format!("127.0.0.1:{}", server.port()).parse().unwrap(),
    );
    let config = DatabaseConfig::builder()
        .host(ns.ip.to_string())
        .port(proxy.addr().port())
        .user(server.user())
        .dbname("postgres")
        .ssl_mode(coredb::SslMode::Disable)
        .connect_timeout(Duration::from_secs(1))
        .pool_timeout(Duration::from_secs(2))
        .pipeline_autocommit(false)
        .tcp_user_timeout(USER_TIMEOUT)
        .keepalive_idle(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(config.statement_timeout(), None);
    assert_eq!(
        DatabaseConfig::builder()
            .build()
            .unwrap()
            .tcp_user_timeout(),
        Duration::from_secs(30),
        "the documented default"
    );
    let m = DatabaseManager::from_config(&config).unwrap();
    let port: i32 = m.scalar("SELECT inet_server_port()", ()).await.unwrap();
    assert_eq!(
        port,
        i32::from(server.port()),
        "reached through the namespace"
    );

    // A statement sent after the peer died: its data is never acknowledged.
    let mut conn = m.get_connection().await.unwrap();
    ns.cut_off();
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(20), conn.execute("SELECT 1", ())).await;
    let waited = started.elapsed();
    let err = outcome.expect("found within 20 s").unwrap_err();
    eprintln!(
        "dead peer, request in flight: {:?} after {waited:?}",
        err.kind()
    );
    assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");
    assert!(err.is_transient());
    assert!(
        waited >= USER_TIMEOUT - Duration::from_millis(500) && waited < USER_TIMEOUT * 4,
        "found after {waited:?}: the user timeout is {USER_TIMEOUT:?}"
    );
    drop(conn);
    ns.reconnect();

    // A statement whose request arrived, waiting for a reply when the peer dies: nothing is
    // unacknowledged, so the keepalive probes find it.
    let mut conn = m.get_connection().await.unwrap();
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let outcome = conn.execute("SELECT pg_sleep(60)", ()).await;
        (outcome, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    ns.cut_off();
    let (outcome, waited) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("found within 20 s")
        .unwrap();
    let err = outcome.unwrap_err();
    eprintln!(
        "dead peer, waiting for a reply: {:?} after {waited:?}",
        err.kind()
    );
    assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");
    // One second of silence before the first probe, then the user timeout, then a probe
    // interval (a second here) at most.
    assert!(
        waited < Duration::from_millis(500) + Duration::from_secs(1) + USER_TIMEOUT * 3,
        "found after {waited:?}"
    );
    ns.reconnect();

    // The pool recovers: the dead connections were dropped, not reused.
    let one: i32 = m.scalar("SELECT 1", ()).await.unwrap();
    assert_eq!(one, 1);
    m.close_now();
    drop(proxy);
    drop(ns);
    drop(server);
}
