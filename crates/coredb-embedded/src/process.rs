//! Small process helpers: signals, liveness, and /proc lookups.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Sends `signal` to `pid`; `false` when it does not exist (or is not ours to signal).
pub(crate) fn signal(pid: i32, signal: libc::c_int) -> bool {
    // SAFETY: kill has no memory-safety preconditions; pid > 0 so it never targets a process group.
    pid > 0 && unsafe { libc::kill(pid, signal) } == 0
}

/// Whether `pid` exists and is not a zombie (zombies linger where PID 1 does not reap).
pub(crate) fn is_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks existence and permission.
    if unsafe { libc::kill(pid, 0) } != 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    {
        return false;
    }
    stat(pid).is_none_or(|stat| stat.state != 'Z')
}

/// The live child processes of `parent`.
pub(crate) fn children_of(parent: i32) -> Vec<i32> {
    pids()
        .filter(|&pid| stat(pid).is_some_and(|stat| stat.ppid == parent && stat.state != 'Z'))
        .collect()
}

/// The live postgres processes of the server in `data_dir` (canonical path), found by their working
/// directory: every postgres process chdirs into its data directory, and backends call setsid(), so
/// neither the process group nor (once the postmaster is dead) the parent pid finds them.
pub(crate) fn server_processes(data_dir: &Path) -> Vec<i32> {
    pids()
        .filter(|&pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == data_dir)
                && comm(pid).as_deref() == Some("postgres")
                && is_alive(pid)
        })
        .collect()
}

/// SIGKILLs the processes of the server in `data_dir`, and those in `known`, until none is left;
/// returns whether none is. `known` matters because a dying process loses its cwd before it is gone.
pub(crate) fn kill_server_processes(data_dir: &Path, known: &[i32], timeout: Duration) -> bool {
    let mut dying: BTreeSet<i32> = known.iter().copied().collect();
    wait_until(timeout, || {
        let found = server_processes(data_dir);
        dying.extend(&found);
        // The comm check guards against a known pid that exited and was reused meanwhile.
        dying.retain(|&pid| is_alive(pid) && comm(pid).as_deref() == Some("postgres"));
        for &pid in &dying {
            signal(pid, libc::SIGKILL);
        }
        found.is_empty() && dying.is_empty()
    })
}

/// Whether our child `pid` has exited, without reaping it (so its pid cannot be reused meanwhile).
pub(crate) fn has_exited(pid: i32) -> bool {
    // SAFETY: all-zero siginfo_t is valid; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer; WNOWAIT leaves the child for Child::wait to reap.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        // ECHILD: already reaped (e.g. by Child::try_wait), so it has exited.
        return true;
    }
    // SAFETY: waitid succeeded, so si_pid is initialised (0 when nothing has exited yet).
    let exited_pid = unsafe { info.si_pid() };
    exited_pid != 0
}

/// Polls `done` every few milliseconds until it holds or `timeout` passes; returns whether it held.
pub(crate) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The executable name of `pid` (`/proc/<pid>/comm`).
pub(crate) fn comm(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(text.trim_end().to_string())
}

/// The raw, NUL-separated command line of `pid`.
pub(crate) fn cmdline(pid: i32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline")).ok()
}

fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

struct Stat {
    state: char,
    ppid: i32,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..."; comm may contain spaces and parentheses, so look after the last ')'.
    let mut fields = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid })
}
