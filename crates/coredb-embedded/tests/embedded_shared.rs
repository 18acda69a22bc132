//! The process-wide server: started once, stopped and removed at exit.

mod support;

use std::path::PathBuf;
use std::thread;

use coredb_embedded::EmbeddedServer;
use support::embedded_probe::{
    init_tracing, is_alive, run_helper, scalar, server_processes, HELPER_ENV,
};

#[test]
fn shared_server_is_started_once() {
    init_tracing();
    let servers: Vec<usize> = (0..8)
        .map(|_| {
            thread::spawn(|| {
                EmbeddedServer::shared().expect("shared") as *const EmbeddedServer as usize
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect();
    assert!(
        servers.windows(2).all(|w| w[0] == w[1]),
        "several servers: {servers:?}"
    );

    let server = EmbeddedServer::shared().unwrap();
    assert!(server.is_running());
    let base = server.data_dir().parent().unwrap().parent().unwrap();
    let mine = format!("run-{}-", std::process::id());
    let runs = std::fs::read_dir(base)
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&mine))
        .count();
    assert_eq!(runs, 1, "one run directory for this process");
    assert_eq!(scalar(server.port(), "select 1").unwrap(), "1");
}

#[test]
fn shared_server_is_stopped_and_removed_at_exit() {
    init_tracing();
    let (mut helper, words) = run_helper("helper_process", "shared");
    let pid: u32 = words[0].parse().unwrap();
    let data_dir = PathBuf::from(&words[1]);
    let status = helper.wait().unwrap();
    assert!(status.success(), "helper: {status}");
    // The exit hook ran before the helper exited: no waiting needed.
    assert!(!is_alive(pid), "postmaster {pid} survived its process");
    assert!(
        !data_dir.parent().unwrap().exists(),
        "{} left behind",
        data_dir.display()
    );
    assert!(server_processes(&data_dir).is_empty());
}

/// Helper mode, when re-run by a test with HELPER_ENV set; a no-op otherwise.
#[test]
fn helper_process() {
    if std::env::var(HELPER_ENV).as_deref() == Ok("shared") {
        let server = EmbeddedServer::shared().expect("shared");
        scalar(server.port(), "select 1").unwrap();
        println!(
            "READY {} {}",
            server.pid().unwrap(),
            server.data_dir().display()
        );
    }
}
