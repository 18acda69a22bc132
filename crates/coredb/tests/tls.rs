//! TLS against a server with a certificate made for the test: what each sslmode accepts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use coredb::{DatabaseConfig, DatabaseManager, ErrorKind, SslMode};
use coredb_embedded::EmbeddedServer;

/// A certificate authority and a server certificate it signed, in a directory of their own.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    /// `names` is the server certificate's subjectAltName, e.g. `DNS:localhost,IP:127.0.0.1`.
    fn make(label: &str, names: &str) -> Certificates {
        let dir = std::env::temp_dir().join(format!("coredb-tls-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=coredb test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=coredb test server",
        ]);
        std::fs::write(dir.join("ext.cnf"), format!("subjectAltName={names}\n")).unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        // The server reads its key as its own user and insists on 0600.
        for f in ["server.key", "server.pem"] {
            coredb_embedded::give_to_server_user(&dir.join(f)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Certificates { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tls_server(certs: &Certificates) -> EmbeddedServer {
    let (cert, key) = (certs.path("server.pem"), certs.path("server.key"));
    tokio::task::spawn_blocking(move || {
        EmbeddedServer::builder()
            .setting("ssl", "on")
            .setting("ssl_cert_file", cert.display().to_string())
            .setting("ssl_key_file", key.display().to_string())
            .start()
    })
    .await
    .unwrap()
    .expect("TLS server starts")
}

fn config(
    server: &EmbeddedServer,
    host: &str,
    mode: SslMode,
    root: Option<&Path>,
) -> DatabaseConfig {
    let mut b = DatabaseConfig::builder()
        .host(host)
        .port(server.port())
        .user("postgres")
        .dbname("postgres")
        .ssl_mode(mode)
        .connect_timeout(Duration::from_secs(2))
        .pool_timeout(Duration::from_secs(2));
    if let Some(root) = root {
        b = b.ssl_root_cert(root);
    }
    b.build().unwrap()
}

async fn encrypted(config: &DatabaseConfig) -> coredb::Result<bool> {
    let db = DatabaseManager::from_config(config)?;
    let mut conn = db.get_connection().await?;
    coredb::Executor::scalar(
        &mut conn,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        (),
    )
    .await
}

#[tokio::test]
async fn require_and_prefer_encrypt_without_checking_the_certificate() {
    let certs = Certificates::make("require", "DNS:elsewhere.example");
    let server = tls_server(&certs).await;
    for mode in [SslMode::Require, SslMode::Prefer] {
        assert!(
            encrypted(&config(&server, "127.0.0.1", mode, None))
                .await
                .unwrap(),
            "{mode:?}"
        );
    }
    assert!(
        !encrypted(&config(&server, "127.0.0.1", SslMode::Disable, None))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn verify_full_accepts_a_certificate_for_the_host_signed_by_the_root() {
    let certs = Certificates::make("full", "DNS:localhost,IP:127.0.0.1");
    let server = tls_server(&certs).await;
    let root = certs.path("ca.pem");
    for host in ["127.0.0.1", "localhost"] {
        assert!(
            encrypted(&config(&server, host, SslMode::VerifyFull, Some(&root)))
                .await
                .unwrap()
        );
    }
}

#[tokio::test]
async fn verify_full_rejects_a_certificate_for_another_host_and_verify_ca_accepts_it() {
    let certs = Certificates::make("name", "DNS:db.example");
    let server = tls_server(&certs).await;
    let root = certs.path("ca.pem");
    let err = encrypted(&config(
        &server,
        "127.0.0.1",
        SslMode::VerifyFull,
        Some(&root),
    ))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    assert!(encrypted(&config(
        &server,
        "127.0.0.1",
        SslMode::VerifyCa,
        Some(&root)
    ))
    .await
    .unwrap());
}

#[tokio::test]
async fn verify_ca_rejects_a_certificate_from_an_untrusted_root() {
    let certs = Certificates::make("server", "DNS:localhost,IP:127.0.0.1");
    let other = Certificates::make("other", "DNS:localhost");
    let server = tls_server(&certs).await;
    let err = encrypted(&config(
        &server,
        "127.0.0.1",
        SslMode::VerifyCa,
        Some(&other.path("ca.pem")),
    ))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(
        !err.is_transient(),
        "a bad certificate is not fixed by retrying: {err}"
    );
    assert!(err.to_string().contains("POSTGRES_SSLROOTCERT"), "{err}");
}

#[tokio::test]
async fn a_tls_only_server_asked_without_tls_says_to_turn_tls_on() {
    let certs = Certificates::make("only", "DNS:localhost,IP:127.0.0.1");
    let server = tls_server(&certs).await;
    std::fs::write(
        server.data_dir().join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    let admin = DatabaseManager::from_config(&config(&server, "127.0.0.1", SslMode::Require, None))
        .unwrap();
    coredb::Executor::execute(
        &mut admin.get_connection().await.unwrap(),
        "SELECT pg_reload_conf()",
        (),
    )
    .await
    .unwrap();

    let plain = DatabaseManager::from_config(&config(&server, "127.0.0.1", SslMode::Disable, None))
        .unwrap();
    let err = plain.get_connection().await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("only over TLS"), "{text}");
    assert!(
        text.contains("the builder's ssl_mode() is disable"),
        "{text}"
    );
    assert!(!text.contains("PASSWORD"), "not a password problem: {text}");
    assert!(!err.is_transient());
    assert_eq!(plain.metrics().connect_failures, 1);
}

#[tokio::test]
async fn verify_full_and_the_root_certificate_given_in_the_url_are_honoured() {
    let certs = Certificates::make("url", "DNS:localhost,IP:127.0.0.1");
    let other = Certificates::make("url-other", "DNS:localhost");
    let server = tls_server(&certs).await;
    let url = |mode: &str, root: &Path| {
        DatabaseConfig::from_vars([(
            "DATABASE_URL",
            format!(
                "postgres://postgres@localhost:{}/postgres?sslmode={mode}&sslrootcert={}&connect_timeout=2",
                server.port(),
                root.display()
            ),
        )])
        .unwrap()
    };
    for mode in ["verify-full", "verify-ca"] {
        assert!(
            encrypted(&url(mode, &certs.path("ca.pem"))).await.unwrap(),
            "{mode}"
        );
    }
    let err = encrypted(&url("verify-full", &other.path("ca.pem")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(!err.is_transient(), "{err}");
}
