//! core.db's Quick Start in Rust: connect, `SELECT 1`, a session that commits, the health report.
//!
//! Uses the database named by `DATABASE_URL` / `POSTGRES_*` (environment or `.env`); with
//! nothing configured it starts a throwaway PostgreSQL of its own and stops it on exit.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use coredb::{params, Executor};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    // 1. Configuration: the environment, or the embedded server when nothing is configured.
    let (config, embedded) = coredb_testkit::config_or_embedded()?;
    match &embedded {
        Some(server) => {
            // Say what was found, so a typo (POSTGRES_HOTS=...) is not mistaken for nothing.
            let found: Vec<String> = std::env::vars()
                .map(|(name, _)| name)
                .filter(|name| name.starts_with("POSTGRES_") || name == "DATABASE_URL")
                .collect();
            let found = if found.is_empty() {
                String::new()
            } else {
                format!(
                    " (found {}, but neither DATABASE_URL nor POSTGRES_HOST)",
                    found.join(", ")
                )
            };
            println!(
                "No database configured{found}: using an embedded PostgreSQL {} on 127.0.0.1:{} (stopped on exit)",
                server.version(),
                server.port()
            )
        }
        None => println!("Using the configured database {}", config.database_url()),
    }

    // 2. Basic usage: initialize, then a session.
    coredb::initialize_database_with(config).await?;
    let mut session = coredb::get_session_context().await?;
    let one: i32 = session.scalar("SELECT 1", ()).await?;
    println!("SELECT 1 -> {one}");

    session
        .execute(
            "CREATE TABLE IF NOT EXISTS quickstart_visits (id serial PRIMARY KEY, visitor text NOT NULL, at timestamptz NOT NULL DEFAULT now())",
            (),
        )
        .await?;
    session
        .execute(
            "INSERT INTO quickstart_visits (visitor) VALUES (:visitor)",
            params! { "visitor" => "quickstart" },
        )
        .await?;
    session.commit().await?;

    // Raw SQL with named parameters, in autocommit.
    let db = coredb::get_database_manager().await?;
    let visits: i64 = db
        .scalar(
            "SELECT count(*) FROM quickstart_visits WHERE visitor = :visitor",
            params! { "visitor" => "quickstart" },
        )
        .await?;
    println!("session committed; visits recorded so far: {visits}");

    // 3. Health, as JSON.
    let health = coredb::check_database_health().await;
    println!("{}", serde_json::to_string_pretty(&health)?);

    coredb::close_database().await;
    drop(embedded);
    Ok(())
}
