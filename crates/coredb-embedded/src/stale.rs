//! Cleaning what dead runs left: run directories whose owner process is gone, and their postmasters.
//!
//! The death signal normally stops an orphaned postmaster already; this covers non-Linux systems,
//! processes killed before the signal was armed, and directories nobody removed.

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::{cluster, pidfile, process};

const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Removes every run directory under `base` whose owner process is dead. Best effort: never fails.
pub(crate) fn clean_dead_runs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let Some(owner) = cluster::run_dir_owner(name) else {
            continue;
        };
        let owner_is_alive = if owner == me {
            // Our pid, but not created by us: a dead earlier process had the same pid.
            cluster::is_own_run_dir(name)
        } else {
            // EPERM counts as alive: the process exists.
            i32::try_from(owner).is_ok_and(process::is_alive)
        };
        if !owner_is_alive {
            clean_run(&entry.path(), owner);
        }
    }
}

fn clean_run(run_dir: &Path, owner: u32) {
    let data_dir = run_dir.join("data");
    let mut backends = Vec::new();
    if let Some(postmaster) = pidfile::read(&data_dir).map(|file| file.pid) {
        if is_postmaster_of(postmaster, &data_dir) {
            tracing::info!(
                postmaster,
                owner,
                run_dir = %run_dir.display(),
                "stopping a PostgreSQL left running by a dead process"
            );
            backends = process::children_of(postmaster);
            // Immediate shutdown: it also removes its shared memory. SIGKILL if that does not work.
            process::signal(postmaster, libc::SIGQUIT);
            if !process::wait_until(SHUTDOWN_GRACE, || !process::is_alive(postmaster)) {
                process::signal(postmaster, libc::SIGKILL);
            }
        }
    }
    // Backends of a postmaster that was SIGKILLed outlive it briefly.
    let real_data_dir = fs::canonicalize(&data_dir).unwrap_or_else(|_| data_dir.clone());
    process::kill_server_processes(&real_data_dir, &backends, SHUTDOWN_GRACE);
    // A postmaster that died by SIGKILL leaves its segment behind (no-op while still attached).
    pidfile::remove_orphaned_shared_memory(&data_dir);
    match fs::remove_dir_all(run_dir) {
        Ok(()) => {
            tracing::debug!(run_dir = %run_dir.display(), owner, "removed a dead run's directory")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // another process cleaned it
        Err(e) => {
            tracing::debug!(run_dir = %run_dir.display(), error = %e, "could not remove a dead run's directory")
        }
    }
}

/// Whether `pid` is a live postgres serving `data_dir`: pids get reused, so never trust the lock file alone.
fn is_postmaster_of(pid: i32, data_dir: &Path) -> bool {
    if !process::is_alive(pid) || process::comm(pid).as_deref() != Some("postgres") {
        return false;
    }
    let Some(cmdline) = process::cmdline(pid) else {
        return false;
    };
    // The postmaster keeps its argv (only its children retitle themselves); match "\0<data_dir>\0" exactly.
    let mut needle = vec![0u8];
    needle.extend_from_slice(data_dir.as_os_str().as_encoded_bytes());
    needle.push(0);
    cmdline
        .windows(needle.len())
        .any(|w| w == needle.as_slice())
}
