//! `check_database_health()` before anything set the process-wide database up, with the server
//! down: it answers within the connect timeout, not after a first initialization's pool
//! timeout. One test in its own binary: it sets the process environment.

use std::time::{Duration, Instant};

#[tokio::test]
async fn health_of_a_down_server_is_known_within_the_connect_timeout_before_initialization() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::env::set_var("POSTGRES_HOST", "127.0.0.1");
    std::env::set_var("POSTGRES_PORT", port.to_string());
    std::env::set_var("POSTGRES_CONNECT_TIMEOUT", "1");
    std::env::set_var("POSTGRES_POOL_TIMEOUT", "30");

    let started = Instant::now();
    let report = coredb::check_database_health().await;
    let spent = started.elapsed();
    assert!(!report.is_healthy());
    assert!(!report.connected);
    assert!(
        report.error.as_deref().unwrap_or("").contains("refused"),
        "{report:?}"
    );
    assert!(
        spent < Duration::from_secs(2),
        "took {spent:?}; the connect timeout is 1 s"
    );
    // The check set nothing up: a later call checks afresh.
    let again = coredb::check_database_health().await;
    assert!(!again.is_healthy());
}
