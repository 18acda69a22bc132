//! Starting, stopping, killing and restarting embedded servers.

mod support;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use coredb_embedded::{EmbeddedErrorKind, EmbeddedServer};
use support::embedded_probe::{init_tracing, is_alive, scalar, server_processes, Conn};

#[test]
fn server_starts_and_accepts_connections() {
    init_tracing();
    let started = Instant::now();
    let server = EmbeddedServer::start().expect("start");
    eprintln!("started in {:?}", started.elapsed());
    let port = server.port();

    assert_ne!(port, 5432);
    assert_eq!(server.host(), "127.0.0.1");
    assert_eq!(server.user(), "postgres");
    assert_eq!(
        server.url(),
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    );
    assert_eq!(
        server.url_for("app db"),
        format!("postgres://postgres@127.0.0.1:{port}/app%20db")
    );
    assert!(server.is_running());
    assert!(server.pid().is_some());

    assert_eq!(scalar(port, "select 1").unwrap(), "1");
    let server_version = scalar(port, "show server_version").unwrap();
    assert!(
        server_version.starts_with(server.version()),
        "{server_version} vs {}",
        server.version()
    );
    assert_eq!(scalar(port, "show fsync").unwrap(), "off");
    assert_eq!(scalar(port, "show max_connections").unwrap(), "300");
    assert_eq!(scalar(port, "show server_encoding").unwrap(), "UTF8");
    assert_eq!(
        scalar(port, "show data_directory").unwrap(),
        server.data_dir().to_str().unwrap()
    );

    // The Unix socket works too.
    let socket = server.socket_dir().join(format!(".s.PGSQL.{port}"));
    assert!(Path::new(&socket).exists(), "{}", socket.display());
    let status = std::process::Command::new("pg_isready")
        .arg("-h")
        .arg(server.socket_dir())
        .arg("-p")
        .arg(port.to_string())
        .status();
    if let Ok(status) = status {
        assert!(status.success(), "pg_isready on the socket: {status}");
    }
}

#[test]
fn builder_settings_reach_the_server() {
    init_tracing();
    let server = EmbeddedServer::builder()
        .max_connections(42)
        .setting("work_mem", "7MB")
        .setting("application_name", "coredb test")
        .start()
        .expect("start");
    assert_eq!(scalar(server.port(), "show max_connections").unwrap(), "42");
    assert_eq!(scalar(server.port(), "show work_mem").unwrap(), "7MB");
}

#[test]
fn start_timeout_error_quotes_the_log_and_cleans_up() {
    init_tracing();
    let err = EmbeddedServer::builder()
        .start_timeout(Duration::from_millis(1))
        .start()
        .expect_err("1 ms is too short to start");
    assert_eq!(err.kind(), EmbeddedErrorKind::Start);
    let text = err.to_string();
    assert!(text.contains("did not accept connections"), "{text}");
    assert!(text.contains("start_timeout"), "{text}");
    assert!(text.contains("postgres.log"), "{text}");
    let data_dir = text
        .split("data directory ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    assert!(!Path::new(data_dir).exists(), "{data_dir} left behind");
    assert!(server_processes(Path::new(data_dir)).is_empty());
}

#[test]
fn stop_and_start_again_keep_the_port() {
    init_tracing();
    let server = EmbeddedServer::start().expect("start");
    let port = server.port();
    let mut conn = Conn::connect(port).unwrap();
    conn.query("create table kept (x int); insert into kept values (7)")
        .unwrap();

    let started = Instant::now();
    server.stop().expect("stop");
    eprintln!("stopped in {:?}", started.elapsed());
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    assert!(
        conn.query("select 1").is_err(),
        "the old connection is closed"
    );
    assert!(
        Conn::connect(port).is_err(),
        "nothing listens while stopped"
    );
    server.stop().expect("stopping twice is a no-op");

    server.start_again().expect("start again");
    assert_eq!(server.port(), port);
    assert!(server.is_running());
    assert_eq!(scalar(port, "select x from kept").unwrap(), "7");
    server
        .start_again()
        .expect("starting a running server is a no-op");
}

#[test]
fn restart_keeps_the_port_and_the_data() {
    init_tracing();
    let server = EmbeddedServer::start().expect("start");
    let port = server.port();
    let before = server.pid().unwrap();
    scalar(
        port,
        "create table kept (x int); insert into kept values (8); select 1",
    )
    .unwrap();
    server.restart().expect("restart");
    assert_eq!(server.port(), port);
    assert_ne!(server.pid().unwrap(), before);
    assert_eq!(scalar(port, "select x from kept").unwrap(), "8");
}

#[test]
fn kill_then_start_again_recovers() {
    init_tracing();
    let server = EmbeddedServer::start().expect("start");
    let port = server.port();
    let postmaster = server.pid().unwrap();
    let mut conn = Conn::connect(port).unwrap();
    // With synchronous_commit=off the newest commits may not have reached the WAL file yet.
    conn.query("set synchronous_commit = on; create table survived (x int); insert into survived values (9)")
        .unwrap();
    let backend: u32 = conn
        .scalar("select pg_backend_pid()")
        .unwrap()
        .parse()
        .unwrap();

    server.kill().expect("kill");
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    assert!(!is_alive(postmaster), "postmaster survived");
    assert!(
        !is_alive(backend),
        "backend survived: {:?} {:?}",
        std::fs::read_to_string(format!("/proc/{backend}/stat")),
        std::fs::read_link(format!("/proc/{backend}/cwd"))
    );
    assert!(server_processes(server.data_dir()).is_empty());
    assert!(conn.query("select 1").is_err());

    server.start_again().expect("start again after kill -9");
    assert_eq!(server.port(), port);
    assert_eq!(scalar(port, "select x from survived").unwrap(), "9");
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(
        log.contains("automatic recovery in progress"),
        "no crash recovery in the log:\n{log}"
    );

    // Twice in a row works too.
    server.kill().expect("kill again");
    server.start_again().expect("start again, twice");
    assert_eq!(scalar(port, "select count(*) from survived").unwrap(), "1");
}

#[test]
fn two_servers_run_side_by_side() {
    init_tracing();
    let (first, second) = thread::scope(|s| {
        let a = s.spawn(|| EmbeddedServer::start().expect("first"));
        let b = s.spawn(|| EmbeddedServer::start().expect("second"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(first.port(), second.port());
    assert_ne!(first.data_dir(), second.data_dir());
    scalar(first.port(), "create table only_in_first (x int); select 1").unwrap();
    assert_eq!(
        scalar(second.port(), "select to_regclass('only_in_first') is null").unwrap(),
        "t"
    );

    drop(first);
    assert_eq!(scalar(second.port(), "select 2").unwrap(), "2");
}

#[test]
fn dropping_the_server_removes_its_directory_and_process() {
    init_tracing();
    let server = EmbeddedServer::start().expect("start");
    let pid = server.pid().unwrap();
    let backend: u32 = Conn::connect(server.port())
        .unwrap()
        .scalar("select pg_backend_pid()")
        .unwrap()
        .parse()
        .unwrap();
    let run_dir = server.data_dir().parent().unwrap().to_path_buf();
    assert!(run_dir.exists());

    let started = Instant::now();
    drop(server);
    eprintln!("dropped in {:?}", started.elapsed());
    assert!(!run_dir.exists(), "{} left behind", run_dir.display());
    assert!(!is_alive(pid), "postmaster {pid} survived");
    assert!(!is_alive(backend), "backend {backend} survived");
    assert!(server_processes(&run_dir).is_empty());
}

#[test]
fn server_outlives_the_thread_that_started_it() {
    init_tracing();
    // Like a #[tokio::test] runtime thread: it starts the server and ends.
    let server = thread::spawn(|| EmbeddedServer::start().expect("start"))
        .join()
        .unwrap();
    thread::sleep(Duration::from_millis(300)); // a death signal would have been delivered by now
    assert!(server.is_running());
    assert_eq!(scalar(server.port(), "select 3").unwrap(), "3");
    // Restarts from yet another short-lived thread keep working.
    thread::scope(|s| {
        s.spawn(|| server.restart().expect("restart"));
    });
    thread::sleep(Duration::from_millis(300));
    assert_eq!(scalar(server.port(), "select 4").unwrap(), "4");
}
