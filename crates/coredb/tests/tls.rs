//! TLS against a server with a certificate made for the test: what each sslmode accepts,
//! client certificates, cancel requests over TLS, and direct TLS negotiation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use coredb::{DatabaseConfig, DatabaseManager, ErrorKind, Executor, SslMode, SslNegotiation};
use coredb_embedded::EmbeddedServer;

/// A certificate authority and a server certificate it signed, in a directory of their own;
/// client certificates on demand.
struct Certificates {
    dir: PathBuf,
}

/// How a client key is written: the three PEM forms libpq reads.
#[derive(Debug, Clone, Copy)]
enum KeyForm {
    /// `BEGIN PRIVATE KEY` (RSA).
    Pkcs8,
    /// `BEGIN RSA PRIVATE KEY`.
    Pkcs1,
    /// `BEGIN EC PRIVATE KEY` (P-256).
    Sec1,
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

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A client certificate for `user` (its CN) signed by this authority: the paths of
    /// `{name}.pem` and `{name}.key`.
    fn client(&self, name: &str, user: &str, form: KeyForm) -> (PathBuf, PathBuf) {
        let (cert, key, csr) = (
            format!("{name}.pem"),
            format!("{name}.key"),
            format!("{name}.csr"),
        );
        match form {
            KeyForm::Pkcs8 => self.openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &key,
            ]),
            KeyForm::Pkcs1 => self.openssl(&["genrsa", "-traditional", "-out", &key, "2048"]),
            KeyForm::Sec1 => self.openssl(&[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &key,
            ]),
        }
        let subject = format!("/CN={user}");
        // Version 3 (with extensions): rustls takes no version 1 certificate.
        std::fs::write(
            self.path("client-ext.cnf"),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        self.openssl(&["req", "-new", "-key", &key, "-out", &csr, "-subj", &subject]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            "client-ext.cnf",
        ]);
        (self.path(&cert), self.path(&key))
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tls_server(certs: &Certificates) -> EmbeddedServer {
    start(tls_settings(certs)).await
}

/// A server that takes connections from 127.0.0.1 only over TLS, and checks them with `method`
/// (`trust`, or `cert` for a client certificate signed by `certs`' authority).
async fn tls_only_server(certs: &Certificates, method: &str) -> EmbeddedServer {
    let hba = certs.path("pg_hba.conf");
    std::fs::write(
        &hba,
        format!("local all all trust\nhostssl all all 127.0.0.1/32 {method}\n"),
    )
    .unwrap();
    start(
        tls_settings(certs)
            .setting("ssl_ca_file", certs.path("ca.pem").display().to_string())
            .setting("hba_file", hba.display().to_string()),
    )
    .await
}

fn tls_settings(certs: &Certificates) -> coredb_embedded::EmbeddedServerBuilder {
    EmbeddedServer::builder()
        .setting("ssl", "on")
        .setting(
            "ssl_cert_file",
            certs.path("server.pem").display().to_string(),
        )
        .setting(
            "ssl_key_file",
            certs.path("server.key").display().to_string(),
        )
}

async fn start(builder: coredb_embedded::EmbeddedServerBuilder) -> EmbeddedServer {
    tokio::task::spawn_blocking(move || builder.start())
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

/// A column of `pg_stat_ssl` for the connection, as the server saw it.
async fn ssl_stat<T: postgres_types::FromSqlOwned + Send>(
    config: &DatabaseConfig,
    column: &str,
) -> coredb::Result<T> {
    let db = DatabaseManager::from_config(config)?;
    let mut conn = db.get_connection().await?;
    let sql = format!("SELECT {column} FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    coredb::Executor::scalar(&mut conn, &sql, ()).await
}

/// Whether the connection is encrypted.
async fn encrypted(config: &DatabaseConfig) -> coredb::Result<bool> {
    ssl_stat(config, "ssl").await
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
    assert!(
        err.to_string().contains("the builder's ssl_root_cert()"),
        "{err}"
    );
}

#[tokio::test]
async fn a_tls_only_server_asked_without_tls_says_to_turn_tls_on() {
    let certs = Certificates::make("only", "DNS:localhost,IP:127.0.0.1");
    let server = tls_only_server(&certs, "trust").await;

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

/// A path as a URL query value.
fn url_path(path: &Path) -> String {
    path.display().to_string().replace('/', "%2F")
}

/// The subject of the certificate the connection showed, as the server saw it.
async fn client_dn(config: &DatabaseConfig) -> coredb::Result<Option<String>> {
    ssl_stat(config, "client_dn").await
}

#[tokio::test]
async fn a_client_certificate_from_the_url_the_environment_or_the_builder_logs_in_by_certificate() {
    let certs = Certificates::make("client", "DNS:localhost,IP:127.0.0.1");
    let server = tls_only_server(&certs, "cert").await;
    let root = certs.path("ca.pem");
    for form in [KeyForm::Pkcs8, KeyForm::Pkcs1, KeyForm::Sec1] {
        let (cert, key) = certs.client(&format!("client-{form:?}"), "postgres", form);
        let from_url = DatabaseConfig::from_vars([(
            "DATABASE_URL",
            format!(
                "postgresql://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}&connect_timeout=2",
                server.port(),
                url_path(&root),
                url_path(&cert),
                url_path(&key),
            ),
        )])
        .unwrap();
        let port = server.port().to_string();
        let from_env = DatabaseConfig::from_vars([
            ("POSTGRES_HOST", "127.0.0.1"),
            ("POSTGRES_PORT", port.as_str()),
            ("POSTGRES_USER", "postgres"),
            ("POSTGRES_SSLMODE", "verify-ca"),
            ("POSTGRES_SSLROOTCERT", &root.display().to_string()),
            ("POSTGRES_SSLCERT", &cert.display().to_string()),
            ("POSTGRES_SSLKEY", &key.display().to_string()),
            ("POSTGRES_CONNECT_TIMEOUT", "2"),
        ])
        .unwrap();
        let from_builder = config(&server, "127.0.0.1", SslMode::Require, None)
            .to_builder()
            .ssl_cert(&cert)
            .ssl_key(&key)
            .build()
            .unwrap();
        for (how, config) in [
            ("url", from_url),
            ("env", from_env),
            ("builder", from_builder),
        ] {
            assert!(
                !format!("{config:?}").contains("PRIVATE KEY"),
                "paths only in Debug"
            );
            let dn = client_dn(&config)
                .await
                .unwrap_or_else(|e| panic!("{form:?} key, {how}: {e}"));
            assert_eq!(dn.as_deref(), Some("/CN=postgres"), "{form:?} key, {how}");
        }
    }
}

#[tokio::test]
async fn a_server_that_asks_for_a_client_certificate_refuses_one_without_and_says_what_to_set() {
    let certs = Certificates::make("nocert", "DNS:localhost,IP:127.0.0.1");
    let server = tls_only_server(&certs, "cert").await;
    let port = server.port().to_string();
    let from_env = DatabaseConfig::from_vars([
        ("POSTGRES_HOST", "127.0.0.1"),
        ("POSTGRES_PORT", port.as_str()),
        ("POSTGRES_USER", "postgres"),
        ("POSTGRES_SSLMODE", "require"),
        ("POSTGRES_CONNECT_TIMEOUT", "2"),
    ])
    .unwrap();
    let err = client_dn(&from_env).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Connect, "{text}");
    assert!(
        text.contains("connection requires a valid client certificate"),
        "the server's words: {text}"
    );
    assert!(
        text.contains("POSTGRES_SSLCERT") && text.contains("POSTGRES_SSLKEY"),
        "{text}"
    );
    assert!(
        !text.contains("POSTGRES_PASSWORD"),
        "not a password problem: {text}"
    );
    assert!(!err.is_transient(), "{text}");

    let from_url = DatabaseConfig::from_url(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require&connect_timeout=2"
    ))
    .unwrap();
    let text = client_dn(&from_url).await.unwrap_err().to_string();
    assert!(
        text.contains("sslcert in DATABASE_URL") && text.contains("sslkey in DATABASE_URL"),
        "{text}"
    );
}

#[tokio::test]
async fn a_client_certificate_signed_by_another_authority_is_refused() {
    let certs = Certificates::make("trusted", "DNS:localhost,IP:127.0.0.1");
    let other = Certificates::make("untrusted", "DNS:localhost");
    let server = tls_only_server(&certs, "cert").await;
    let (cert, key) = other.client("stranger", "postgres", KeyForm::Pkcs8);
    let config = config(&server, "127.0.0.1", SslMode::Require, None)
        .to_builder()
        .ssl_cert(&cert)
        .ssl_key(&key)
        .build()
        .unwrap();
    let err = client_dn(&config).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Connect, "{text}");
    assert!(text.contains("client certificate"), "{text}");
    assert!(text.contains("the builder's ssl_cert()"), "{text}");
    assert!(!err.is_transient(), "{text}");
}

/// Whether a backend still runs `sql`, asked until `within` is over.
async fn still_running(admin: &DatabaseManager, sql: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let running: i64 = admin
            .scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE query = :sql AND state = 'active'",
                coredb::NamedParams::new().add("sql", sql),
            )
            .await
            .unwrap();
        if running == 0 {
            return false;
        }
        if tokio::time::Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn statements_abandoned_on_a_tls_only_server_are_cancelled_over_tls() {
    let certs = Certificates::make("cancel", "DNS:localhost,IP:127.0.0.1");
    let server = tls_only_server(&certs, "trust").await;
    let config = config(&server, "127.0.0.1", SslMode::Require, None);
    let admin = DatabaseManager::from_config(&config).unwrap();

    // On a checked-out connection: closed, and its statement cancelled.
    let db = DatabaseManager::from_config(&config).unwrap();
    let mut conn = db.get_connection().await.unwrap();
    let sleep = "SELECT pg_sleep(30)";
    let abandoned = tokio::time::timeout(
        Duration::from_millis(300),
        coredb::Executor::execute(&mut conn, sleep, ()),
    )
    .await;
    assert!(abandoned.is_err(), "still sleeping when dropped");
    drop(conn);
    assert!(
        !still_running(&admin, sleep, Duration::from_secs(5)).await,
        "the abandoned statement of a connection still runs"
    );

    // On a shared (pipelined) connection of the manager: cancelled once nobody waits on it.
    let sleep = "SELECT pg_sleep(29)";
    let abandoned = tokio::time::timeout(Duration::from_millis(300), db.execute(sleep, ())).await;
    assert!(abandoned.is_err(), "still sleeping when dropped");
    assert!(
        !still_running(&admin, sleep, Duration::from_secs(5)).await,
        "the abandoned statement of a shared connection still runs"
    );
}

#[tokio::test]
async fn direct_tls_negotiation_with_a_server_before_postgresql_17_fails_saying_so() {
    let certs = Certificates::make("direct", "DNS:localhost,IP:127.0.0.1");
    let server = tls_server(&certs).await;
    let major: u32 = server
        .version()
        .split(|c: char| !c.is_ascii_digit())
        .find(|part| !part.is_empty())
        .and_then(|part| part.parse().ok())
        .unwrap();
    let direct = config(&server, "127.0.0.1", SslMode::Require, None)
        .to_builder()
        .ssl_negotiation(SslNegotiation::Direct)
        .build()
        .unwrap();
    let from_url = DatabaseConfig::from_url(&format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=require&sslnegotiation=direct&connect_timeout=2",
        server.port()
    ))
    .unwrap();
    assert_eq!(from_url.ssl_negotiation(), SslNegotiation::Direct);
    if major >= 17 {
        assert!(encrypted(&direct).await.unwrap(), "PostgreSQL {major}");
        return;
    }
    for (config, named) in [
        (direct, "the builder's ssl_negotiation() is direct"),
        (from_url, "sslnegotiation in DATABASE_URL is direct"),
    ] {
        let err = encrypted(&config).await.unwrap_err();
        let text = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Connect, "{text}");
        assert!(text.contains("PostgreSQL 17 or later"), "{text}");
        assert!(text.contains("sslnegotiation=postgres"), "{text}");
        assert!(text.contains(named), "{text}");
        assert!(!err.is_transient(), "{text}");
    }
    // The default negotiation works with the same server.
    let postgres = DatabaseConfig::from_url(&format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=require&sslnegotiation=postgres&connect_timeout=2",
        server.port()
    ))
    .unwrap();
    assert!(encrypted(&postgres).await.unwrap());
}

#[tokio::test]
async fn over_tls_a_holders_own_statements_and_the_settings_watch_read_above_the_encryption() {
    let certs = Certificates::make("watch", "DNS:elsewhere.example");
    let server = tls_only_server(&certs, "trust").await;
    let config = DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(server.port())
        .user("postgres")
        .dbname("postgres")
        .ssl_mode(SslMode::Require)
        .pool_size(1)
        .max_overflow(0)
        .build()
        .unwrap();
    let m = DatabaseManager::from_config(&config).unwrap();
    m.get_connection()
        .await
        .unwrap()
        .execute_script(
            "CREATE TABLE tls_rows (n int); \
             CREATE FUNCTION far_away() RETURNS int LANGUAGE plpgsql AS $$ \
             BEGIN PERFORM set_config('TimeZone', 'Pacific/Kiritimati', false); RETURN 1; END $$",
        )
        .await
        .unwrap();
    let mut conn = m.get_connection().await.unwrap();
    let pid: i32 = conn.scalar("SELECT pg_backend_pid()", ()).await.unwrap();
    let ssl: bool = conn
        .scalar(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            (),
        )
        .await
        .unwrap();
    assert!(ssl);
    // Sent by the holder itself once prepared, through the encryption.
    for n in 0..20 {
        let inserted = conn
            .execute("INSERT INTO tls_rows VALUES ($1)", (n,))
            .await
            .unwrap();
        assert_eq!(inserted, 1);
    }
    // A setting changed where the text cannot show it: reported by the server inside the
    // encrypted stream, and reset before the next user.
    let one: i32 = conn.scalar("SELECT far_away()", ()).await.unwrap();
    assert_eq!(one, 1);
    drop(conn);
    let mut conn = m.get_connection().await.unwrap();
    let same: i32 = conn.scalar("SELECT pg_backend_pid()", ()).await.unwrap();
    assert_eq!(
        same, pid,
        "the pool's one connection, reset rather than closed"
    );
    let zone: String = conn.scalar("SHOW TimeZone", ()).await.unwrap();
    assert_ne!(zone, "Pacific/Kiritimati");
    let rows: i64 = conn
        .scalar("SELECT count(*) FROM tls_rows", ())
        .await
        .unwrap();
    assert_eq!(rows, 20);
    drop(conn);
    m.close().await;
}

#[tokio::test]
async fn over_tls_statements_queued_on_lanes_and_a_copy_sent_by_its_holder_go_through_the_encryption(
) {
    let certs = Certificates::make("queue", "DNS:elsewhere.example");
    let server = tls_only_server(&certs, "trust").await;
    let config = DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(server.port())
        .user("postgres")
        .dbname("postgres")
        .ssl_mode(SslMode::Require)
        .pool_size(4)
        .build()
        .unwrap();
    let m = DatabaseManager::from_config(&config).unwrap();
    m.execute("CREATE TABLE tls_copied (n int8, label text)", ())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..64i64 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20i64 {
                let n = t * 1000 + i;
                let got: i64 = m.scalar("SELECT $1::int8", (n,)).await.unwrap();
                assert_eq!(got, n, "each statement gets its own answer");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ids: Vec<i64> = (0..50_000).collect();
    let labels: Vec<String> = ids.iter().map(|i| format!("row {i}")).collect();
    let copied = m
        .copy_in_rows(
            "tls_copied",
            &["n", "label"],
            ids.iter()
                .zip(&labels)
                .map(|(n, label)| vec![n as coredb::SqlParam, label]),
        )
        .await
        .unwrap();
    assert_eq!(copied, 50_000);
    let (count, last): (i64, String) = m
        .fetch_one("SELECT count(*), max(label) FROM tls_copied", ())
        .await
        .unwrap();
    assert_eq!((count, last.as_str()), (50_000, "row 9999"));
    let ssl: bool = m
        .scalar(
            "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE datname = current_database()",
            (),
        )
        .await
        .unwrap();
    assert!(ssl);
    m.close().await;
}
