//! `.env` files: read by `DatabaseConfig::from_env`, with the real environment winning.
//! One test in its own binary: it changes the working directory and the environment.

mod support;

use coredb::DatabaseConfig;
use support::log_capture::Captured;

#[test]
fn dotenv_file_is_read_and_the_real_environment_wins() {
    let dir = std::env::temp_dir().join(format!("coredb-dotenv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(".env"),
        "POSTGRES_HOST=from-dotenv\nPOSTGRES_PORT=6543\nPOSTGRES_USER=dotenv_user\nPOSTGRES_PASSWORD=dotenv-secret\nPOSTGRES_DB=dotenv_db\n",
    )
    .unwrap();
    std::env::set_current_dir(&dir).unwrap();
    for key in [
        "DATABASE_URL",
        "POSTGRES_HOST",
        "POSTGRES_PORT",
        "POSTGRES_USER",
        "POSTGRES_DB",
    ] {
        std::env::remove_var(key);
    }
    assert!(DatabaseConfig::is_configured_in_env(), ".env names a host");
    let config = DatabaseConfig::from_env().unwrap();
    assert_eq!(
        config.database_url(),
        "postgres://dotenv_user:***@from-dotenv:6543/dotenv_db"
    );
    assert_eq!(config.password().unwrap().expose(), "dotenv-secret");

    std::env::set_var("POSTGRES_HOST", "from-environment");
    let config = DatabaseConfig::from_env().unwrap();
    assert_eq!(
        config.hosts(),
        ["from-environment"],
        "the real environment wins"
    );
    assert_eq!(config.ports(), [6543], "the rest still comes from .env");

    std::fs::write(dir.join(".env"), "POSTGRES_PORT=not-a-port\n").unwrap();
    let err = DatabaseConfig::from_env().unwrap_err();
    assert!(
        err.to_string().contains("POSTGRES_PORT=\"not-a-port\""),
        "{err}"
    );
    std::env::remove_var("POSTGRES_HOST");

    // A typo in .env is named with the variable it most likely meant.
    std::fs::write(
        dir.join(".env"),
        "POSTGRES_HOTS=db.internal\nPOSTGRES_USER=app\n",
    )
    .unwrap();
    let captured = Captured::default();
    tracing::subscriber::with_default(captured.subscriber(tracing::Level::INFO), || {
        DatabaseConfig::from_env().unwrap();
    });
    let logged = captured.text();
    assert!(logged.contains("WARN"), "{logged}");
    assert!(
        logged.contains("POSTGRES_HOTS (did you mean POSTGRES_HOST?)"),
        "{logged}"
    );
    assert!(
        !logged.contains("db.internal"),
        "values are not logged: {logged}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
