//! A sample service on coredb and axum: a prepaid backend (users, accounts with a balance,
//! idempotent top-ups, purchases that never overdraw, an append-only ledger, `/health`).
//!
//! ```text
//! cargo run --example prepaid
//! ```
//!
//! Uses `DATABASE_URL` / `POSTGRES_*` (environment or `.env`); with nothing configured it starts
//! a throwaway PostgreSQL of its own and removes it on exit. Listens on `PREPAID_ADDR`
//! (default 127.0.0.1:8080, or a free port when that one is taken). Ctrl-C or SIGTERM stops
//! it gracefully: requests in flight finish, then the pool closes.
//!
//! `GET /metrics` answers coredb's pool and statement metrics in Prometheus' text format. With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set (e.g. `http://localhost:4318`), spans go to that
//! OpenTelemetry collector over OTLP/HTTP: one per statement, transaction and checkout.

mod app;
mod error;
mod ledger;
mod models;
mod routes;
mod telemetry;

use std::net::SocketAddr;

use tokio::net::TcpListener;

const DEFAULT_ADDR: &str = "127.0.0.1:8080";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;

    // The OTLP exporter's HTTP client blocks: it is built off the runtime's threads.
    let otlp = tokio::task::spawn_blocking(telemetry::otlp_from_env)
        .await?
        .map_err(|e| e as Box<dyn std::error::Error>)?;
    let log_filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(log_filter))
        .with(otlp.as_ref().map(|provider| {
            telemetry::otel_layer(provider)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
        }))
        .init();
    // Before the database: its pool registers its metrics with the recorder installed now.
    telemetry::prometheus();

    // Starting an embedded server blocks (initdb copy, waiting for readiness).
    let (config, embedded) =
        tokio::task::spawn_blocking(coredb_testkit::config_or_embedded).await??;
    match &embedded {
        Some(server) => println!(
            "No database configured: using an embedded PostgreSQL {} on 127.0.0.1:{} (removed on exit)",
            server.version(),
            server.port()
        ),
        None => println!("Using the configured database {}", config.database_url()),
    }

    let lifespan = coredb::database_lifespan_with(config).await?;
    let db = lifespan.manager().clone();
    app::setup(&db).await?;

    let listener = bind().await?;
    let addr = listener.local_addr()?;
    println!("prepaid listening on http://{addr}");
    println!(
        "try: curl -s -X POST http://{addr}/users -H 'content-type: application/json' -d '{{\"name\":\"Ada\",\"email\":\"ada@example.com\"}}'"
    );
    println!("(the README lists every route; GET /metrics has the pool and statement metrics; Ctrl-C stops the service)");

    app::serve(listener, app::app(db.clone()), db, async {
        app::shutdown_signal().await;
        println!("shutting down: finishing requests in flight");
    })
    .await?;
    lifespan.shutdown().await;
    if let Some(provider) = otlp {
        // Sends the spans still queued.
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
    // Stops and deletes the embedded server, if one was started.
    drop(embedded);
    println!("stopped");
    Ok(())
}

/// `PREPAID_ADDR` when set; otherwise 127.0.0.1:8080, or any free port when that is taken (so
/// a second copy, or another service on 8080, does not stop the sample from starting).
async fn bind() -> std::io::Result<TcpListener> {
    if let Ok(addr) = std::env::var("PREPAID_ADDR") {
        let addr: SocketAddr = addr.parse().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("PREPAID_ADDR={addr:?} is not an address such as 127.0.0.1:8080: {e}"),
            )
        })?;
        return TcpListener::bind(addr).await;
    }
    match TcpListener::bind(DEFAULT_ADDR).await {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!("{DEFAULT_ADDR} is in use; listening on a free port instead");
            TcpListener::bind("127.0.0.1:0").await
        }
        other => other,
    }
}
