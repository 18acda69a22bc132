//! Connection failures a newcomer meets in the first hour: each says what to change, naming the
//! setting as it was written, and the ones retrying cannot fix fail at once instead of after
//! the pool timeout.

mod support;

use std::time::Duration;

use coredb::{DatabaseConfig, DatabaseManager, ErrorKind, SslMode};
use coredb_embedded::EmbeddedServer;
use support::log_capture::Captured;

/// A server of this test binary's own, with a user that must give a password.
async fn server() -> &'static EmbeddedServer {
    static SERVER: tokio::sync::OnceCell<EmbeddedServer> = tokio::sync::OnceCell::const_new();
    SERVER
        .get_or_init(|| async {
            let server = coredb_embedded::start_in_background(EmbeddedServer::builder())
                .await
                .expect("embedded PostgreSQL");
            let hba = server.data_dir().join("pg_hba.conf");
            let rules = std::fs::read_to_string(&hba).unwrap();
            std::fs::write(
                &hba,
                format!("host all needs_password 127.0.0.1/32 scram-sha-256\n{rules}"),
            )
            .unwrap();
            let admin = DatabaseManager::from_config(&config_for(&server.url())).unwrap();
            admin
                .execute("CREATE ROLE needs_password LOGIN PASSWORD 'right'", ())
                .await
                .unwrap();
            admin.execute("SELECT pg_reload_conf()", ()).await.unwrap();
            admin.close().await;
            server
        })
        .await
}

fn config_for(url: &str) -> DatabaseConfig {
    DatabaseConfig::from_url(url)
        .unwrap()
        .to_builder()
        .ssl_mode(SslMode::Disable)
        .pool_timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_missing_password_fails_at_once_and_names_the_setting() {
    let server = server().await;
    let url = format!(
        "postgres://needs_password@127.0.0.1:{}/postgres?sslmode=disable",
        server.port()
    );
    // From the environment's DATABASE_URL: the message names the URL's password.
    let from_env = DatabaseConfig::from_vars([
        ("DATABASE_URL", url.as_str()),
        ("POSTGRES_POOL_TIMEOUT", "30"),
    ])
    .unwrap();
    let db = DatabaseManager::from_config(&from_env).unwrap();
    let err = db.get_connection().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string().contains("set the password in DATABASE_URL"),
        "{err}"
    );
    // One attempt, not a retry loop until the 30 s pool timeout.
    assert_eq!(db.metrics().connect_failures, 1);

    // Built in code: the message names the builder method.
    let built = DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(server.port())
        .user("needs_password")
        .dbname("postgres")
        .ssl_mode(SslMode::Disable)
        .pool_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let db = DatabaseManager::from_config(&built).unwrap();
    let err = db.get_connection().await.unwrap_err();
    assert!(
        err.to_string().contains("the builder's password()"),
        "{err}"
    );
    assert_eq!(db.metrics().connect_failures, 1);
}

#[tokio::test]
async fn a_wrong_password_and_a_missing_database_fail_at_once_naming_the_variables() {
    let server = server().await;
    let port = server.port().to_string();
    let wrong_password = DatabaseConfig::from_vars([
        ("POSTGRES_HOST", "127.0.0.1"),
        ("POSTGRES_PORT", port.as_str()),
        ("POSTGRES_USER", "needs_password"),
        ("POSTGRES_PASSWORD", "wrong"),
        ("POSTGRES_DB", "postgres"),
        ("POSTGRES_SSLMODE", "disable"),
    ])
    .unwrap();
    let db = DatabaseManager::from_config(&wrong_password).unwrap();
    let err = db.get_connection().await.unwrap_err();
    assert!(!err.is_transient());
    assert!(
        err.to_string()
            .contains("check POSTGRES_USER / POSTGRES_PASSWORD"),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong"), "no password in {err}");
    assert_eq!(db.metrics().connect_failures, 1);

    let url = format!("postgres://postgres@127.0.0.1:{port}/no_such_db?sslmode=disable");
    let missing_db = DatabaseConfig::from_vars([("DATABASE_URL", url.as_str())]).unwrap();
    let db = DatabaseManager::from_config(&missing_db).unwrap();
    let err = db.get_connection().await.unwrap_err();
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("\"no_such_db\" does not exist"), "{text}");
    assert!(text.contains("the database name in DATABASE_URL"), "{text}");
    assert!(!text.contains("POSTGRES_DB"), "{text}");
    assert_eq!(db.metrics().connect_failures, 1);

    let by_variable = DatabaseConfig::from_vars([
        ("DATABASE_URL", url.as_str()),
        ("POSTGRES_DB", "still_missing"),
    ])
    .unwrap();
    let err = DatabaseManager::from_config(&by_variable)
        .unwrap()
        .get_connection()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("or fix POSTGRES_DB"), "{err}");
}

#[tokio::test]
async fn a_refused_port_is_reported_at_once_while_the_pool_keeps_trying() {
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber(tracing::Level::WARN));

    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = DatabaseConfig::from_vars([
        ("POSTGRES_HOST", "127.0.0.1".to_owned()),
        ("POSTGRES_PORT", port.to_string()),
        ("POSTGRES_POOL_TIMEOUT", "30".to_owned()),
        ("POSTGRES_SSLMODE", "disable".to_owned()),
    ])
    .unwrap();
    let db = DatabaseManager::from_config(&config).unwrap();
    let checkout = db.get_connection();
    tokio::pin!(checkout);
    // The checkout is still retrying (its pool timeout is 30 s), and the log already says why.
    let said = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::select! {
                biased;
                done = &mut checkout => panic!("the checkout ended before the pool timeout: {:?}", done.map(drop)),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            if captured.text().contains("refused the connection") {
                return captured.text();
            }
        }
    })
    .await
    .expect("a WARN line about the refused connection");
    assert!(said.contains("WARN"), "{said}");
    assert!(said.contains(&format!("127.0.0.1:{port}")), "{said}");
    assert!(
        said.contains("check POSTGRES_HOST / POSTGRES_PORT"),
        "{said}"
    );
    assert!(said.contains("retrying"), "{said}");
    assert!(said.contains("POSTGRES_POOL_TIMEOUT"), "{said}");
}
