//! Behind PgBouncer in transaction-pooling mode: with the statement cache off, statements are
//! sent unprepared, so a statement never meets a server connection that lacks it; with
//! `POSTGRES_PGBOUNCER=transaction`, COPY, the statement timeout and sessions work too.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coredb::{params, DatabaseConfig, DatabaseManager, ErrorKind, Executor, PgBouncerMode};
use coredb_embedded::EmbeddedServer;
use futures_util::{StreamExt as _, TryStreamExt as _};

/// A PgBouncer in transaction mode in front of `server`; stopped when dropped.
struct Bouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Bouncer {
    fn start(server_port: u16) -> Bouncer {
        Self::start_ignoring(server_port, "extra_float_digits,options")
    }

    /// A PgBouncer that ignores (rather than refuses) the startup parameters `ignored`.
    fn start_ignoring(server_port: u16, ignored: &str) -> Bouncer {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("pgbouncer is not installed: apt-get install pgbouncer (.ci/run does it)");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("coredb-pgbouncer-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port={server_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {users}\npool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 100\nlogfile = {log}\npidfile = {pid}\nignore_startup_parameters = {ignored}\n",
            users = dir.join("users.txt").display(),
            log = dir.join("pgbouncer.log").display(),
            pid = dir.join("pgbouncer.pid").display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        // PgBouncer refuses to run as root; it drops to `postgres` when asked.
        let mut command = Command::new(binary);
        if let Some(user) = coredb_embedded::server_user().unwrap() {
            Command::new("chmod")
                .arg("-R")
                .arg("a+rwX")
                .arg(&dir)
                .status()
                .unwrap();
            command.arg("-u").arg(user);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "pgbouncer did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Bouncer { child, dir, port }
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling_works_with_the_statement_cache_off() {
    let server = tokio::task::spawn_blocking(EmbeddedServer::start)
        .await
        .unwrap()
        .unwrap();
    let bouncer = Bouncer::start(server.port());
    let config = DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(bouncer.port)
        .user("postgres")
        .dbname("postgres")
        .ssl_mode(coredb::SslMode::Disable)
        .statement_cache_size(0)
        .pool_size(8)
        .build()
        .unwrap();
    let db = DatabaseManager::from_config(&config).unwrap();
    db.execute("CREATE TABLE bounced (task int, n int, note text)", ())
        .await
        .unwrap();
    let db = Arc::new(db);
    let mut tasks = Vec::new();
    for task in 0..8i32 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..50i32 {
                let got: i64 = db
                    .scalar(
                        "SELECT :n::int8 + :task",
                        params! { "n" => n as i64, "task" => task as i64 },
                    )
                    .await
                    .unwrap();
                assert_eq!(got, (n + task) as i64);
                let mut s = db.session().await.unwrap();
                s.execute(
                    "INSERT INTO bounced VALUES ($1, $2, $3)",
                    (task, n, format!("t{task}")),
                )
                .await
                .unwrap();
                let mine: i64 = s
                    .scalar("SELECT count(*) FROM bounced WHERE task = $1", (task,))
                    .await
                    .unwrap();
                assert_eq!(mine, n as i64 + 1);
                s.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total: i64 = db.scalar("SELECT count(*) FROM bounced", ()).await.unwrap();
    assert_eq!(total, 400);
    db.close().await;
    drop(bouncer);
    drop(server);
}

/// The config of a manager reaching `bouncer` in transaction mode (`POSTGRES_PGBOUNCER`).
fn behind(bouncer: &Bouncer, statement_timeout: Option<Duration>) -> DatabaseConfig {
    DatabaseConfig::from_vars(
        [
            ("POSTGRES_HOST", "127.0.0.1".to_owned()),
            ("POSTGRES_PORT", bouncer.port.to_string()),
            ("POSTGRES_USER", "postgres".to_owned()),
            ("POSTGRES_DB", "postgres".to_owned()),
            ("POSTGRES_SSLMODE", "disable".to_owned()),
            ("POSTGRES_PGBOUNCER", "transaction".to_owned()),
            ("POSTGRES_POOL_SIZE", "8".to_owned()),
            (
                "POSTGRES_STATEMENT_TIMEOUT",
                statement_timeout.map_or("".to_owned(), |t| t.as_secs_f64().to_string()),
            ),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_runs_copy_sessions_pipelines_and_the_statement_timeout_without_errors() {
    let server = tokio::task::spawn_blocking(EmbeddedServer::start)
        .await
        .unwrap()
        .unwrap();
    // PgBouncer as shipped: startup options refused, not ignored.
    let bouncer = Bouncer::start_ignoring(server.port(), "extra_float_digits");
    let config = behind(&bouncer, Some(Duration::from_secs(1)));
    assert_eq!(config.pgbouncer(), PgBouncerMode::Transaction);
    assert_eq!(config.statement_cache_size(), 0);
    let db = Arc::new(DatabaseManager::from_config(&config).unwrap());
    db.execute("CREATE TABLE IF NOT EXISTS copied (n int8, label text)", ())
        .await
        .unwrap();
    db.execute("TRUNCATE copied", ()).await.unwrap();

    // COPY in autocommit, on a connection, and in a session; COPY out from the manager.
    let lines = |from: i64, to: i64| {
        futures_util::stream::iter(from..to)
            .map(|n| Ok::<_, std::io::Error>(bytes::Bytes::from(format!("{n}\trow {n}\n"))))
    };
    assert_eq!(
        db.copy_in_bytes("COPY copied FROM STDIN", lines(0, 1000))
            .await
            .unwrap(),
        1000
    );
    let mut conn = db.get_connection().await.unwrap();
    assert_eq!(
        conn.copy_in_bytes("COPY copied FROM STDIN", lines(1000, 2000))
            .await
            .unwrap(),
        1000
    );
    let err = conn.copy_out("COPY copied TO STDOUT").await.unwrap_err();
    assert!(err.to_string().contains("POSTGRES_PGBOUNCER"), "{err}");
    drop(conn);
    let mut s = db.session().await.unwrap();
    s.copy_in_bytes("COPY copied FROM STDIN", lines(2000, 3000))
        .await
        .unwrap();
    let inside: Vec<bytes::Bytes> = s
        .copy_out("COPY (SELECT count(*) FROM copied) TO STDOUT")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(&inside.concat()[..], b"3000\n");
    s.commit().await.unwrap();
    let out: Vec<bytes::Bytes> = db
        .copy_out("COPY (SELECT n FROM copied ORDER BY n) TO STDOUT")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out.len(), 3000);
    // Binary COPY of rows, both ways.
    let rows: Vec<(i64, String)> = db
        .copy_out_rows::<(i64, String)>("SELECT n, label FROM copied WHERE n < 500")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows.len(), 500);
    let copied = db
        .copy_in_rows(
            "copied",
            &["n", "label"],
            rows.iter()
                .map(|(n, label)| vec![n as coredb::SqlParam, label]),
        )
        .await
        .unwrap();
    assert_eq!(copied, 500);

    // The statement timeout holds in sessions, set per transaction.
    let mut s = db.session().await.unwrap();
    let timeout: String = s.scalar("SHOW statement_timeout", ()).await.unwrap();
    assert_eq!(timeout, "1s");
    let err = s.execute("SELECT pg_sleep(3)", ()).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014", "{err}");
    drop(s);

    // 64 pipelined tasks and sessions with savepoints, side by side.
    let mut tasks = Vec::new();
    for task in 0..64i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..20i64 {
                let got: i64 = db
                    .scalar(
                        "SELECT :n::int8 * :task",
                        params! { "n" => n, "task" => task },
                    )
                    .await
                    .unwrap();
                assert_eq!(got, n * task);
            }
            if task % 8 == 0 {
                let mut s = db.session().await.unwrap();
                s.execute("INSERT INTO copied VALUES ($1, 'kept')", (task,))
                    .await
                    .unwrap();
                let mut sp = s.begin_nested().await.unwrap();
                sp.execute("INSERT INTO copied VALUES ($1, 'undone')", (task,))
                    .await
                    .unwrap();
                sp.rollback().await.unwrap();
                s.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let kept: i64 = db
        .scalar("SELECT count(*) FROM copied WHERE label = 'kept'", ())
        .await
        .unwrap();
    let undone: i64 = db
        .scalar("SELECT count(*) FROM copied WHERE label = 'undone'", ())
        .await
        .unwrap();
    assert_eq!((kept, undone), (8, 0));
    db.close().await;
    drop(bouncer);
    drop(server);
}

#[tokio::test]
async fn a_startup_parameter_refused_by_pgbouncer_is_not_retried_and_names_the_setting() {
    let server = tokio::task::spawn_blocking(EmbeddedServer::start)
        .await
        .unwrap()
        .unwrap();
    let bouncer = Bouncer::start_ignoring(server.port(), "extra_float_digits");
    let config = DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(bouncer.port)
        .user("postgres")
        .dbname("postgres")
        .ssl_mode(coredb::SslMode::Disable)
        .statement_timeout(Some(Duration::from_secs(5)))
        .pool_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let db = DatabaseManager::from_config(&config).unwrap();
    let started = Instant::now();
    let err = db.get_connection().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not retried for the pool timeout"
    );
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(!err.is_transient(), "{err}");
    let text = err.to_string();
    assert!(text.contains("POSTGRES_PGBOUNCER=transaction"), "{text}");
    assert!(text.contains("POSTGRES_STATEMENT_TIMEOUT"), "{text}");
    db.close().await;
}

#[tokio::test]
async fn a_lost_driver_statement_names_the_pgbouncer_setting() {
    // A statement named as the driver names its own, missing on the server: what a pooler
    // in transaction mode causes when statements are prepared.
    let db = coredb_testkit::TestDatabase::new().await.unwrap();
    let err = db
        .manager()
        .execute("EXECUTE s999999", ())
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "26000");
    assert!(
        err.to_string().contains("POSTGRES_PGBOUNCER=transaction"),
        "{err}"
    );
    let err = db
        .manager()
        .execute("EXECUTE my_own_statement", ())
        .await
        .unwrap_err();
    assert!(
        !err.to_string().contains("PGBOUNCER"),
        "a statement of the application's own is its own business: {err}"
    );
    db.manager().close().await;
}

#[tokio::test]
async fn session_state_is_refused_behind_pgbouncer_and_its_transaction_scoped_forms_work() {
    let server = tokio::task::spawn_blocking(EmbeddedServer::start)
        .await
        .unwrap()
        .unwrap();
    let bouncer = Bouncer::start_ignoring(server.port(), "extra_float_digits");
    let db = DatabaseManager::from_config(&behind(&bouncer, None)).unwrap();
    let lasting = [
        "SET search_path = leaked",
        "/* tag */ SET ROLE pg_monitor",
        "SELECT pg_advisory_lock(7)",
        "SELECT set_config('search_path', 'leaked', false)",
        "CREATE TEMP TABLE leaked (x int)",
        "LISTEN leaked",
        "PREPARE leaked AS SELECT 1",
    ];
    for sql in lasting {
        let err = db.execute(sql, ()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{sql}: {err}");
        let text = err.to_string();
        assert!(text.contains("POSTGRES_PGBOUNCER=transaction"), "{text}");
        assert!(text.contains("SET LOCAL"), "names the alternative: {text}");
        // Refused on a checked-out connection and in a session too, before anything is sent.
        let mut conn = db.get_connection().await.unwrap();
        let err = conn.execute(sql, ()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{sql}: {err}");
        let err = conn.execute_script(sql).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{sql}: {err}");
        drop(conn);
        let mut session = db.session().await.unwrap();
        let err = session.execute(sql, ()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{sql}: {err}");
        session.rollback().await.unwrap();
    }
    // The transaction-scoped forms work in a session.
    let mut session = db.session().await.unwrap();
    session
        .execute("SET LOCAL search_path = scoped, public", ())
        .await
        .unwrap();
    let path: String = session.scalar("SHOW search_path", ()).await.unwrap();
    assert_eq!(path, "scoped, public");
    session
        .execute("SELECT pg_advisory_xact_lock(7)", ())
        .await
        .unwrap();
    session
        .execute("CREATE TEMP TABLE scratch (x int) ON COMMIT DROP", ())
        .await
        .unwrap();
    session
        .execute("INSERT INTO scratch VALUES (1)", ())
        .await
        .unwrap();
    session.commit().await.unwrap();
    // Nothing reached the server connections the other clients use.
    let paths = futures_util::future::join_all((0..64).map(|_| {
        let db = db.clone();
        async move { db.scalar::<String, _>("SHOW search_path", ()).await }
    }))
    .await;
    for path in paths {
        assert_eq!(path.unwrap(), "\"$user\", public");
    }
    let locks: i64 = db
        .scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(locks, 0);
    db.close().await;
    drop(bouncer);
    drop(server);
}

#[coredb::model(table = "bounced_users", mixin = UuidTimestampMixin)]
#[derive(Debug, Clone, PartialEq)]
pub struct BouncedUser {
    #[column(length = 100)]
    pub name: String,
}

#[tokio::test]
async fn models_and_health_work_behind_pgbouncer_in_transaction_mode() {
    use coredb::model::Crud as _;
    let server = tokio::task::spawn_blocking(EmbeddedServer::start)
        .await
        .unwrap()
        .unwrap();
    let bouncer = Bouncer::start_ignoring(server.port(), "extra_float_digits");
    let db = DatabaseManager::from_config(&behind(&bouncer, Some(Duration::from_secs(2)))).unwrap();
    let report = db.health_report().await;
    assert!(report.is_healthy(), "{report:?}");

    let mut session = db.session().await.unwrap();
    coredb::model::create_all(&mut session).await.unwrap();
    let mut ada = BouncedUser::new("Ada");
    session.insert(&mut ada).await.unwrap();
    ada.name = "Ada Lovelace".into();
    session.update(&mut ada).await.unwrap();
    session.commit().await.unwrap();
    // From many tasks at once, each on whichever server connection PgBouncer lends.
    let names = futures_util::future::join_all((0..32).map(|_| {
        let (db, id) = (db.clone(), ada.id);
        async move {
            let mut conn = db.get_connection().await?;
            let stored: Option<BouncedUser> = conn.get(&id).await?;
            Ok::<_, coredb::Error>(stored.map(|u| u.name))
        }
    }))
    .await;
    for name in names {
        assert_eq!(name.unwrap().as_deref(), Some("Ada Lovelace"));
    }
    let mut session = db.session().await.unwrap();
    session.delete(&ada).await.unwrap();
    session.commit().await.unwrap();
    let left: i64 = db
        .scalar("SELECT count(*) FROM bounced_users", ())
        .await
        .unwrap();
    assert_eq!(left, 0);
    let report = db.health_report().await;
    assert!(report.is_healthy(), "{report:?}");
    db.close().await;
    drop(bouncer);
    drop(server);
}
