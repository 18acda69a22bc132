//! The TLS connector of a pool's connections: one per pool, used to open its connections and
//! to send their cancel requests (a server that takes only TLS takes cancel requests only over
//! TLS too).

use tokio_postgres::{CancelToken, Client, NoTls};

use super::open::{drive, Reports};
use crate::config::DatabaseConfig;
use crate::error::Result;

/// Opens connections and sends cancel requests, with TLS when configured.
#[derive(Clone)]
pub(crate) struct Connector {
    #[cfg(feature = "tls")]
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Connector {
    /// The connector for `config`.
    ///
    /// # Errors
    /// A [`Config`](crate::ErrorKind::Config) error when a certificate or key file cannot be
    /// used, or TLS is asked of a build without it.
    pub(crate) fn new(config: &DatabaseConfig) -> Result<Self> {
        #[cfg(feature = "tls")]
        return Ok(Connector {
            tls: super::tls::connector(config)?,
        });
        #[cfg(not(feature = "tls"))]
        {
            use crate::config::SslMode;
            if matches!(
                config.ssl_mode,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
            ) || config.ssl_cert.is_some()
            {
                return Err(crate::error::Error::config(format!(
                    "POSTGRES_SSLMODE={:?}{}: this build of coredb has no TLS (the `tls` feature is off); allowed here: sslmode disable or prefer, without a client certificate",
                    config.ssl_mode.as_str(),
                    if config.ssl_cert.is_some() { " with POSTGRES_SSLCERT" } else { "" },
                )));
            }
            Ok(Connector {})
        }
    }

    /// Connects to `driver`'s server and runs the connection on a task of its own.
    pub(crate) async fn connect(
        &self,
        driver: &tokio_postgres::Config,
        reports: Reports,
    ) -> std::result::Result<Client, tokio_postgres::Error> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let (client, connection) = driver.connect(tls.clone()).await?;
            tokio::spawn(drive(connection, reports));
            return Ok(client);
        }
        let (client, connection) = driver.connect(NoTls).await?;
        tokio::spawn(drive(connection, reports));
        Ok(client)
    }

    /// Asks the server to cancel what `token`'s connection runs, over a connection of its own
    /// made like the first one.
    pub(crate) async fn cancel(
        &self,
        token: &CancelToken,
    ) -> std::result::Result<(), tokio_postgres::Error> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return token.cancel_query(tls.clone()).await;
        }
        token.cancel_query(NoTls).await
    }
}
