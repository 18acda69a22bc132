//! Small process helpers: signals, liveness, and /proc lookups.

use std::io;
use std::thread;
use std::time::{Duration, Instant};

/// Sends `signal` to `pid`; `false` when it does not exist (or is not ours to signal).
pub(crate) fn signal(pid: i32, signal: libc::c_int) -> bool {
    // SAFETY: kill has no memory-safety preconditions; pid > 0 so it never targets a group by accident.
    pid > 0 && unsafe { libc::kill(pid, signal) } == 0
}

/// Sends `signal` to every process of the process group `pgid`.
pub(crate) fn signal_group(pgid: i32, signal: libc::c_int) -> bool {
    // SAFETY: as above; pgid > 1 so this never means "every process" (-1) or our own group (0).
    pgid > 1 && unsafe { libc::kill(-pgid, signal) } == 0
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
    stat(pid).map_or(true, |s| s.state != 'Z')
}

/// Whether any non-zombie process is still in the process group `pgid`.
pub(crate) fn group_is_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    if pgid <= 1 || unsafe { libc::kill(-pgid, 0) } != 0 {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true; // no /proc: trust kill()
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .any(|s| s.pgrp == pgid && s.state != 'Z')
}

/// Whether our child `pid` has exited, without reaping it (so its pid and group id cannot be reused meanwhile).
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

/// The executable name of `pid` (/proc/<pid>/comm).
pub(crate) fn comm(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(text.trim_end().to_string())
}

/// The raw, NUL-separated command line of `pid`.
pub(crate) fn cmdline(pid: i32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline")).ok()
}

struct Stat {
    state: char,
    pgrp: i32,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses, so split after the last ')'.
    let mut fields = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Stat { state, pgrp })
}
