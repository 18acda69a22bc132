//! TLS for connections (feature `tls`, rustls): what each `sslmode` checks.
//!
//! As libpq: `prefer` and `require` encrypt without checking the certificate, `verify-ca`
//! checks that a trusted authority signed it, `verify-full` also that it names the host. The
//! trusted authorities are the PEM file `POSTGRES_SSLROOTCERT` (or `sslrootcert=` in the URL),
//! else Mozilla's root list. A client certificate (`POSTGRES_SSLCERT` and `POSTGRES_SSLKEY`)
//! is shown to servers that ask for one (`cert` in `pg_hba.conf`); like libpq, it is not used
//! with `sslmode=disable`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{DatabaseConfig, Setting, SslMode};
use crate::error::{Error, Result};

/// The connector for `config`, or `None` when TLS is off (`sslmode=disable`).
///
/// # Errors
/// A [`Config`](crate::ErrorKind::Config) error when the root certificate, client
/// certificate or client key file cannot be read or holds none, or the key does not fit the
/// certificate.
pub(crate) fn connector(config: &DatabaseConfig) -> Result<Option<MakeRustlsConnect>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match config.ssl_mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => Arc::new(AnyCertificate(provider.clone())),
        SslMode::VerifyCa => Arc::new(SignedByRoot(webpki(config, &provider)?)),
        SslMode::VerifyFull => webpki(config, &provider)?,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS set-up failed: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls = match (&config.ssl_cert, &config.ssl_key) {
        (Some(cert), Some(key)) => {
            let name = |setting| config.origin.name(setting);
            let chain = read_pem(cert, name(Setting::SslCert), "certificate", |path| {
                CertificateDer::pem_file_iter(path)?.collect()
            })?;
            let key_der = read_pem(key, name(Setting::SslKey), "private key", |path| {
                PrivateKeyDer::from_pem_file(path).map(|key| vec![key])
            })?
            .remove(0);
            // rustls' errors here name kinds (an unsupported key type, a key that does not
            // fit the certificate), never key material.
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                let why = if format!("{e:?}").contains("UnsupportedCertVersion") {
                    "the certificate is X.509 version 1; rustls takes version 3 (issue it with extensions, e.g. extendedKeyUsage=clientAuth)"
                } else {
                    "the private key cannot be used with the certificate"
                };
                Error::config(format!(
                    "{} and {}: {why} ({e})",
                    name(Setting::SslCert),
                    name(Setting::SslKey)
                ))
            })?
        }
        // Validation refuses one without the other.
        _ => builder.with_no_client_auth(),
    };
    // As libpq 17 does; a server taking TLS directly (sslnegotiation=direct) insists on it.
    tls.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(MakeRustlsConnect::new(tls)))
}

/// The PEM items (`what`: certificates, a private key) of the file at `path`, given as
/// `setting`. Errors name the setting and the path, never what the file holds.
fn read_pem<T>(
    path: &std::path::Path,
    setting: &str,
    what: &str,
    read: impl FnOnce(&std::path::Path) -> Result<Vec<T>, rustls::pki_types::pem::Error>,
) -> Result<Vec<T>> {
    use rustls::pki_types::pem::Error as Pem;
    let problem = match read(path) {
        Ok(items) if !items.is_empty() => return Ok(items),
        Ok(_) | Err(Pem::NoItemsFound) => format!("holds no PEM {what}"),
        Err(Pem::Io(e)) => format!("could not be read ({e})"),
        // Other PEM errors quote the offending line; it may be key material.
        Err(_) => format!("is not a valid PEM file of a {what}"),
    };
    Err(Error::config(format!(
        "{setting} names {:?}, which {problem}",
        path.display().to_string()
    )))
}

fn webpki(
    config: &DatabaseConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>> {
    let mut roots = RootCertStore::empty();
    match &config.ssl_root_cert {
        Some(path) => {
            let name = config.origin.name(Setting::SslRootCert);
            let certs = read_pem(path, name, "certificate", |path| {
                CertificateDer::pem_file_iter(path)?.collect()
            })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::config(format!(
                    "{name} names {:?}, which holds no usable certificate",
                    path.display().to_string()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::config(format!("TLS certificate verification set-up failed: {e}")))
}

/// `prefer` / `require`: encrypted, certificate not checked (libpq's behaviour).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct SignedByRoot(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for SignedByRoot {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
