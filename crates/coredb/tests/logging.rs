//! Statement echo through `tracing`, and that the password never reaches the logs.

mod support;

use coredb::{params, DatabaseManager, Executor};
use coredb_testkit::TestDatabase;
use support::log_capture::Captured;

const PASSWORD: &str = "pw-that-must-never-be-logged";

/// Runs a workload with every `coredb` log line captured (debug level and up).
async fn capture(echo_params: bool) -> String {
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber(tracing::Level::DEBUG));

    // The test server trusts local connections, so the password is sent nowhere but kept.
    let db =
        TestDatabase::with_config(|b| b.password(PASSWORD).echo(true).echo_params(echo_params))
            .await
            .unwrap();
    let m = db.manager();
    m.execute("CREATE TABLE t (secret text)", ()).await.unwrap();
    m.execute(
        "INSERT INTO t VALUES (:v)",
        params! { "v" => "param-value-42" },
    )
    .await
    .unwrap();
    let _ = m.execute("SELEC broken", ()).await;
    let mut s = m.session().await.unwrap();
    s.execute("UPDATE t SET secret = $1", ("other-param",))
        .await
        .unwrap();
    drop(s);
    let report = m.health_report().await;
    tracing::info!(report = ?report, config = ?m.config(), "diagnostics");
    let bad = DatabaseManager::from_config(
        &m.config()
            .to_builder()
            .dbname("missing_db")
            .build()
            .unwrap(),
    )
    .unwrap();
    let err = bad.get_connection().await.unwrap_err();
    tracing::warn!(error = %err, debug = ?err, "connect failure");
    m.close().await;
    captured.text()
}

#[tokio::test]
async fn echo_logs_every_statement_with_its_duration_but_not_its_values() {
    let logs = capture(false).await;
    assert!(logs.contains("INSERT INTO t VALUES ($1)"), "{logs}");
    assert!(logs.contains("duration_ms"), "{logs}");
    assert!(
        logs.contains("SELEC broken"),
        "failed statements are echoed too"
    );
    assert!(
        !logs.contains("param-value-42"),
        "values only with POSTGRES_ECHO_PARAMS"
    );
    assert!(!logs.contains(PASSWORD), "{logs}");
}

#[tokio::test]
async fn echo_params_adds_values_and_still_hides_the_password() {
    let logs = capture(true).await;
    assert!(logs.contains("param-value-42"), "{logs}");
    assert!(logs.contains("other-param"), "{logs}");
    assert!(!logs.contains(PASSWORD), "{logs}");
    assert!(logs.contains(":***@"), "URLs are shown masked: {logs}");
}
