//! The embedded server as the default when no database is configured.

use crate::config::{DatabaseConfig, SslMode};

use super::EmbeddedServer;

/// The configured database, or, when neither `DATABASE_URL` nor `POSTGRES_HOST` is set (in the
/// environment or `.env`), a throwaway embedded server and its configuration.
///
/// Keep the returned server alive as long as the database is used; dropping it stops the
/// server and deletes its data.
///
/// # Errors
/// A configuration error, or an [`Embedded`](crate::ErrorKind::Embedded) error when the
/// server cannot be started (the message says how to install PostgreSQL).
pub fn config_or_embedded() -> crate::Result<(DatabaseConfig, Option<EmbeddedServer>)> {
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
