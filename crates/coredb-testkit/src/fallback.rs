//! The embedded server as the default when no database is configured.

use coredb::{DatabaseConfig, SslMode};
use coredb_embedded::EmbeddedServer;

use crate::error::Result;

/// The configured database, or, when neither `DATABASE_URL` nor `POSTGRES_HOST` is set (in the
/// environment or `.env`), a throwaway embedded server and its configuration. The quick start
/// and the sample service start this way.
///
/// Keep the returned server alive as long as the database is used; dropping it stops the
/// server and deletes its data.
///
/// Blocking: starting the server takes from a few hundred milliseconds to seconds; call it
/// before the runtime starts, or through `spawn_blocking`.
///
/// # Errors
/// A configuration error, or an [`Embedded`](crate::Error::Embedded) error when the server
/// cannot be started (the message says how to install PostgreSQL).
pub fn config_or_embedded() -> Result<(DatabaseConfig, Option<EmbeddedServer>)> {
    if DatabaseConfig::is_configured_in_env() {
        return Ok((DatabaseConfig::from_env()?, None));
    }
    let server = EmbeddedServer::start()?;
    let config = DatabaseConfig::from_url(&server.url())?
        .to_builder()
        .ssl_mode(SslMode::Disable)
        .build()?;
    Ok((config, Some(server)))
}
