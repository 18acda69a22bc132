//! Behind PgBouncer in transaction-pooling mode, with the statement cache off: statements are
//! sent unprepared, so a statement never meets a server connection that lacks it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coredb::{params, DatabaseConfig, DatabaseManager, Executor};
use coredb_embedded::EmbeddedServer;

/// A PgBouncer in transaction mode in front of `server`; stopped when dropped.
struct Bouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Bouncer {
    fn start(server_port: u16) -> Bouncer {
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
            "[databases]\n* = host=127.0.0.1 port={server_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {users}\npool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 100\nlogfile = {log}\npidfile = {pid}\nignore_startup_parameters = extra_float_digits,options\n",
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
