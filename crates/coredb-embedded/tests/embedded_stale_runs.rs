//! What dead runs leave behind is cleaned, and postgres never outlives its process.

mod support;

use std::ffi::OsStr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::Duration;

use coredb_embedded::EmbeddedServer;
use support::embedded_probe::{
    eventually, init_tracing, is_alive, run_helper, server_processes, HELPER_ENV,
};

/// Every server start cleans stale runs, including the fake ones these tests are still
/// building: the tests of this file take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn base_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let base = std::env::temp_dir().join(format!("coredb-embedded-{euid}"));
    std::fs::create_dir_all(&base).unwrap();
    base
}

/// A pid that belonged to a process which has exited.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn stale_run_of_dead_process_is_cleaned_up() {
    let _turn = one_at_a_time();
    init_tracing();
    // Its postmaster.pid names a live process that is not postgres (pid reuse): it must survive.
    let mut sleeper = Command::new("sleep").arg("1000").spawn().unwrap();
    let run_dir = base_dir().join(format!("run-{}-0", dead_pid()));
    std::fs::create_dir_all(run_dir.join("data")).unwrap();
    std::fs::write(
        run_dir.join("data/postmaster.pid"),
        format!(
            "{}\n{}\n0\n1\n\n\n  0  0\nready\n",
            sleeper.id(),
            run_dir.join("data").display()
        ),
    )
    .unwrap();

    let _server = EmbeddedServer::start().expect("start");
    assert!(!run_dir.exists(), "{} was not cleaned", run_dir.display());
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "an unrelated process was killed"
    );
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

/// A process looking like postgres to the cleaner: comm "postgres" (exec'd through a symlink of
/// that name), working directory `data_dir`, and `args` on its command line.
fn fake_postgres(run_dir: &Path, data_dir: &Path, args: &[&OsStr]) -> Child {
    let fake = run_dir.join("postgres");
    let _ = symlink("/bin/sh", &fake);
    Command::new(&fake)
        .args(["-c", "while :; do sleep 0.1; done"])
        .args(args)
        .current_dir(data_dir)
        .spawn()
        .unwrap()
}

#[test]
fn stale_postmaster_of_dead_process_is_stopped() {
    let _turn = one_at_a_time();
    init_tracing();
    // Left running by a dead owner that no death signal reached: a postmaster (named in
    // postmaster.pid, "-D <data dir>" on its command line) and one backend.
    let run_dir = base_dir().join(format!("run-{}-0", dead_pid()));
    let data_dir = run_dir.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let mut postmaster = fake_postgres(&run_dir, &data_dir, &["-D".as_ref(), data_dir.as_os_str()]);
    let mut backend = fake_postgres(&run_dir, &data_dir, &[]);
    std::fs::write(
        data_dir.join("postmaster.pid"),
        format!("{}\n{}\n", postmaster.id(), data_dir.display()),
    )
    .unwrap();

    let _server = EmbeddedServer::start().expect("start");
    assert!(!run_dir.exists(), "{} was not cleaned", run_dir.display());
    assert!(
        postmaster.try_wait().unwrap().is_some(),
        "the orphaned postmaster survived"
    );
    assert!(
        backend.try_wait().unwrap().is_some(),
        "the orphaned backend survived"
    );
}

#[test]
fn postgres_dies_with_its_sigkilled_owner_and_the_run_is_cleaned_up() {
    let _turn = one_at_a_time();
    init_tracing();
    let (mut helper, words) = run_helper("helper_process", "start-and-hang");
    let pid: u32 = words[0].parse().unwrap();
    let data_dir = PathBuf::from(&words[1]);
    assert!(is_alive(pid));

    helper.kill().unwrap(); // SIGKILL: no destructor, no exit hook
    helper.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || !is_alive(pid)),
        "postmaster {pid} outlived its process"
    );
    assert!(
        eventually(Duration::from_secs(10), || server_processes(&data_dir)
            .is_empty()),
        "postgres processes of {} survived",
        data_dir.display()
    );

    // The directory is left; the next start removes it.
    let _server = EmbeddedServer::start().expect("start");
    assert!(
        !data_dir.parent().unwrap().exists(),
        "{} was not cleaned",
        data_dir.display()
    );
}

/// Helper mode, when re-run by a test with HELPER_ENV set; a no-op otherwise.
#[test]
fn helper_process() {
    if std::env::var(HELPER_ENV).as_deref() == Ok("start-and-hang") {
        // Started from a thread that ends at once, as under a test harness.
        let server = thread::spawn(|| EmbeddedServer::start().expect("start"))
            .join()
            .unwrap();
        let backend = support::embedded_probe::Conn::connect(server.port()).unwrap(); // a backend must die too
        println!(
            "READY {} {}",
            server.pid().unwrap(),
            server.data_dir().display()
        );
        loop {
            thread::sleep(Duration::from_secs(3600));
            let _ = (&server, &backend);
        }
    }
}
