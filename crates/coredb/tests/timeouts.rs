//! Per-session timeouts: honoured by the server (57014) and, when the network goes silent, by
//! the client-side guard, which also follows a `SET [LOCAL] statement_timeout` sent by hand.

mod support;

use std::time::{Duration, Instant};

use coredb::{DatabaseConfig, DatabaseManager, ErrorKind, Executor, SessionOptions};
use coredb_embedded::EmbeddedServer;
use coredb_testkit::TestDatabase;
use support::proxy::{Mode, Proxy};

#[tokio::test]
async fn a_session_timeout_is_honoured_by_the_server_and_ends_with_the_transaction() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let mut s = m.session().await.unwrap();
    s.set_timeout(Duration::from_millis(200)).await.unwrap();
    let shown: String = s.scalar("SHOW statement_timeout", ()).await.unwrap();
    assert_eq!(shown, "200ms");
    let started = Instant::now();
    let err = s.execute("SELECT pg_sleep(5)", ()).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014", "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(s);

    // The next session on the (reused) connection has the configured timeout again.
    let mut s = m.session().await.unwrap();
    let shown: String = s.scalar("SHOW statement_timeout", ()).await.unwrap();
    assert_eq!(shown, "0");
    s.commit().await.unwrap();
    m.close().await;
}

/// A manager reaching `server` through `proxy`, with no statement timeout configured.
fn through(proxy: &Proxy, server: &EmbeddedServer) -> DatabaseManager {
    let config = DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(proxy.port())
        .user(server.user())
        .dbname("postgres")
        .ssl_mode(coredb::SslMode::Disable)
        .connect_timeout(Duration::from_secs(1))
        .pool_timeout(Duration::from_secs(2))
        .pipeline_autocommit(false)
        .build()
        .unwrap();
    DatabaseManager::from_config(&config).unwrap()
}

/// With the network silent, the next statement of `session` fails with `Timeout` within 3 s.
async fn times_out_when_silent(proxy: &Proxy, mut session: coredb::Session) {
    proxy.set(Mode::Blackhole);
    let started = Instant::now();
    let err = session.execute("SELECT 1", ()).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    drop(session);
    proxy.set(Mode::Pass);
}

/// A server of its own, a proxy in front of it, and a manager through the proxy.
async fn proxied() -> (EmbeddedServer, Proxy, DatabaseManager) {
    let server = tokio::task::spawn_blocking(EmbeddedServer::start)
        .await
        .unwrap()
        .unwrap();
    let target = format!("127.0.0.1:{}", server.port()).parse().unwrap();
    let proxy = Proxy::start(target).await;
    let m = through(&proxy, &server);
    (server, proxy, m)
}

#[tokio::test]
async fn on_a_silent_network_the_guard_follows_the_session_timeout_and_a_hand_written_one() {
    let (server, proxy, m) = proxied().await;

    // set_timeout: the guard is the limit plus a second.
    let mut s = m.session().await.unwrap();
    s.set_timeout(Duration::from_millis(300)).await.unwrap();
    times_out_when_silent(&proxy, s).await;

    // A SET LOCAL written by hand: the guard reads the server's setting after it.
    let mut s = m.session().await.unwrap();
    s.execute("SET LOCAL statement_timeout = '400ms'", ())
        .await
        .unwrap();
    times_out_when_silent(&proxy, s).await;

    // And RESET takes the guard away with the timeout.
    let mut s = m.session().await.unwrap();
    s.execute("SET LOCAL statement_timeout = '400ms'", ())
        .await
        .unwrap();
    s.execute("RESET statement_timeout", ()).await.unwrap();
    proxy.set(Mode::Blackhole);
    let outcome = tokio::time::timeout(Duration::from_secs(3), s.execute("SELECT 3", ())).await;
    assert!(
        outcome.is_err(),
        "no timeout configured: still waiting after 3 s"
    );
    drop(s);
    proxy.set(Mode::Pass);
    m.close_now();
    drop(proxy);
    drop(server);
}

#[tokio::test]
async fn a_per_call_timeout_limits_autocommit_statements_and_sessions_and_nothing_else() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let limited = m.with_timeout(Duration::from_millis(200));
    // Autocommit: each statement carries the limit; the server ends it with 57014.
    let started = Instant::now();
    let err = limited.execute("SELECT pg_sleep(5)", ()).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014", "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let shown: String = limited.scalar("SHOW statement_timeout", ()).await.unwrap();
    assert_eq!(shown, "200ms");
    // Its writes commit.
    limited
        .execute("CREATE TABLE limited (x int)", ())
        .await
        .unwrap();
    limited
        .execute("INSERT INTO limited VALUES (1)", ())
        .await
        .unwrap();
    let n: i64 = m.scalar("SELECT count(*) FROM limited", ()).await.unwrap();
    assert_eq!(n, 1);
    // Its transactions begin with it.
    let err = limited
        .transaction(async |s| s.execute("SELECT pg_sleep(5)", ()).await)
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014", "{err}");
    // A session option gives the same to one session, in BEGIN's round trip.
    let mut s = m
        .session_with(SessionOptions {
            timeout: Some(Duration::from_millis(300)),
            ..SessionOptions::default()
        })
        .await
        .unwrap();
    let shown: String = s.scalar("SHOW statement_timeout", ()).await.unwrap();
    assert_eq!(shown, "300ms");
    let err = s.execute("SELECT pg_sleep(5)", ()).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014", "{err}");
    drop(s);
    // The manager itself, its sessions and the pooled connections are untouched.
    let shown: String = m.scalar("SHOW statement_timeout", ()).await.unwrap();
    assert_eq!(shown, "0");
    let mut s = m.session().await.unwrap();
    let shown: String = s.scalar("SHOW statement_timeout", ()).await.unwrap();
    assert_eq!(shown, "0");
    s.commit().await.unwrap();
    // Bad parameters are refused before anything is sent.
    let err = limited.execute("SELECT $1::int", ()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Params, "{err}");
    m.close().await;
}

#[tokio::test]
async fn on_a_silent_network_a_per_call_timeout_ends_the_statement() {
    let (server, proxy, m) = proxied().await;
    let limited = m.with_timeout(Duration::from_millis(300));
    // A session begun (so the connection is had) before the network goes silent.
    let s = limited.session().await.unwrap();
    times_out_when_silent(&proxy, s).await;
    m.close_now();
    drop(proxy);
    drop(server);
}
