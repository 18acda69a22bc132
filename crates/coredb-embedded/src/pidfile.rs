//! Reading `postmaster.pid`, the server's lock file, and cleaning what a killed server left in it.

use std::path::{Path, PathBuf};

/// The parts of `postmaster.pid` we use (layout of PostgreSQL >= 10).
#[derive(Debug)]
pub(crate) struct PidFile {
    /// Line 1: the postmaster's pid.
    pub(crate) pid: i32,
    /// Line 7: System V shared memory key and id.
    shared_memory: Option<(libc::key_t, libc::c_int)>,
    /// Line 8: "starting", "ready", "stopping" or "standby".
    status: Option<String>,
}

impl PidFile {
    /// Whether the postmaster `pid` wrote this file and accepts connections.
    pub(crate) fn is_ready(&self, pid: i32) -> bool {
        // The pid check matters after kill -9: the dead postmaster's file still says "ready".
        self.pid == pid && self.status.as_deref() == Some("ready")
    }
}

pub(crate) fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("postmaster.pid")
}

/// Reads the lock file; `None` when absent or (being written) incomplete.
pub(crate) fn read(data_dir: &Path) -> Option<PidFile> {
    let text = std::fs::read_to_string(path(data_dir)).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let pid = lines.first()?.trim().parse().ok()?;
    let shared_memory = lines.get(6).and_then(|line| {
        let mut parts = line.split_whitespace().map(|p| p.parse::<u64>().ok());
        let key = parts.next()??;
        let id = parts.next()??;
        // PostgreSQL prints the (signed) key and id as unsigned long; truncation restores them.
        Some((key as libc::key_t, id as libc::c_int))
    });
    let status = lines.get(7).map(|line| line.trim().to_string());
    Some(PidFile {
        pid,
        shared_memory,
        status,
    })
}

/// Removes the System V segment of a server that died without cleaning up (SIGKILL),
/// so repeated crash tests do not exhaust the system's segments. Only an unattached segment
/// whose key and id both still match the lock file is removed.
pub(crate) fn remove_orphaned_shared_memory(data_dir: &Path) {
    let Some((key, id)) = read(data_dir).and_then(|file| file.shared_memory) else {
        return;
    };
    if key == 0 || id < 0 {
        return;
    }
    // SAFETY: shmget with size 0 and no flags only looks the key up.
    if unsafe { libc::shmget(key, 0, 0) } != id {
        return;
    }
    // SAFETY: all-zero shmid_ds is valid; IPC_STAT fills it.
    let mut info: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer for IPC_STAT.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut info) } != 0 || info.shm_nattch != 0 {
        return;
    }
    // SAFETY: IPC_RMID takes no buffer.
    if unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } == 0 {
        tracing::debug!(
            key,
            id,
            "removed the shared memory segment of a killed PostgreSQL"
        );
    }
}
