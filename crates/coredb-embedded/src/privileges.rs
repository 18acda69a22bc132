//! Running as root: initdb and postgres refuse to, so they run as an unprivileged user.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::error::{EmbeddedError, EmbeddedErrorKind};

/// The unprivileged user that runs initdb and postgres when we are root.
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `None` for an ordinary user (binaries run directly); as root, `postgres` if it exists, else `nobody`.
pub(crate) fn unprivileged_user() -> Result<Option<RunAs>, EmbeddedError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    ["postgres", "nobody"]
        .into_iter()
        .filter_map(lookup)
        .find(|user| user.uid != 0)
        .map(Some)
        .ok_or_else(|| {
            EmbeddedError::new(
                EmbeddedErrorKind::Start,
                "running as root, and there is no `postgres` or `nobody` user to run PostgreSQL as (initdb and postgres refuse to run as root). Create one (e.g. `useradd --system postgres`) or run as an ordinary user.",
            )
        })
}

fn lookup(name: &str) -> Option<RunAs> {
    let c_name = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        // SAFETY: all-zero is a valid passwd (null pointers, zero ids); getpwnam_r fills it.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated name, buffer and out-pointers that outlive the call;
        // the reentrant variant because tests look users up from several threads.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        return Some(RunAs {
            name: name.to_string(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        });
    }
}

/// Makes `cmd` run as `user` (std also clears supplementary groups when root sets a uid).
pub(crate) fn run_as(cmd: &mut Command, user: Option<&RunAs>) {
    if let Some(user) = user {
        cmd.uid(user.uid).gid(user.gid);
    }
}

/// Gives `path` to `user` (no-op for `None`); symlinks themselves, not their targets.
pub(crate) fn chown(path: &Path, user: Option<&RunAs>) -> io::Result<()> {
    match user {
        Some(user) => lchown(path, Some(user.uid), Some(user.gid)),
        None => Ok(()),
    }
}

/// Fails when `user` cannot reach `dir` (e.g. TMPDIR under /root), which initdb would report far less clearly.
pub(crate) fn check_traversable(dir: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    for ancestor in dir.ancestors() {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.permissions().mode();
        let bit = if meta.uid() == user.uid {
            0o100
        } else if meta.gid() == user.gid {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            return Err(EmbeddedError::new(
                EmbeddedErrorKind::Io,
                format!(
                    "{} (mode {:o}) cannot be entered by the user `{}` that runs PostgreSQL (we run as root, and initdb/postgres refuse to). Set TMPDIR to a directory every user can reach, such as /tmp.",
                    ancestor.display(),
                    mode & 0o7777,
                    user.name
                ),
            ));
        }
    }
    Ok(())
}

/// Gives `path` to the user PostgreSQL runs as (when this process is root), so a server started
/// by this crate can read files made for it, such as a TLS key that must be its own and
/// mode `0600`. Does nothing for an ordinary user, who runs the server as itself.
///
/// # Errors
/// When no unprivileged user exists (as root), or the file's owner cannot be changed.
pub fn give_to_server_user(path: &Path) -> Result<(), EmbeddedError> {
    let user = unprivileged_user()?;
    chown(path, user.as_ref()).map_err(|e| {
        EmbeddedError::io(format!("giving {} to the server's user", path.display()), e)
    })
}

/// The name of the user PostgreSQL runs as when this process is root (`postgres`, else
/// `nobody`); `None` for an ordinary user, who runs the server as itself. Tools that also refuse
/// to run as root (PgBouncer, say) can run as the same user.
///
/// # Errors
/// As root, when no unprivileged user exists.
pub fn server_user() -> Result<Option<String>, EmbeddedError> {
    Ok(unprivileged_user()?.map(|user| user.name))
}
