//! Data directories: the per-version template made once by initdb, and each server's copy of it.
//!
//! Layout under the base dir (`$TMPDIR/coredb-embedded-<euid>`):
//! `template-<version>-v<format>/` (complete templates only: built in `....tmp`, then renamed),
//! `template-<version>-v<format>.lock` (flock taken while building), and `run-<pid>-<n>/` per server
//! (`data/`, `postgres.log`, the Unix socket), named after the owning process for stale-run cleaning.

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::Instant;

use super::binaries::Binaries;
use super::error::{EmbeddedError, EmbeddedErrorKind};
use super::privileges::{self, RunAs};
use super::{server, spawner};

/// Bumped whenever the initdb options change, so older cached templates are not reused.
const TEMPLATE_FORMAT: u32 = 1;

/// Names of the run directories this process created (see [`is_own_run_dir`]).
static OWN_RUN_DIRS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static NEXT_RUN: AtomicU32 = AtomicU32::new(0);

/// The base directory, created with mode 0755 (the unprivileged server user must traverse it).
pub(crate) fn base_dir() -> Result<PathBuf, EmbeddedError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let dir = std::env::temp_dir().join(format!("coredb-embedded-{euid}"));
    match DirBuilder::new().mode(0o755).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(EmbeddedError::io(
                format_args!("could not create {}", dir.display()),
                e,
            ))
        }
    }
    let meta = fs::symlink_metadata(&dir)
        .map_err(|e| EmbeddedError::io(format_args!("could not inspect {}", dir.display()), e))?;
    // Everything below is trusted (executed as data, deleted recursively): it must be our own real directory.
    if !meta.is_dir() || meta.uid() != euid {
        return Err(EmbeddedError::new(
            EmbeddedErrorKind::Io,
            format!(
                "{} is not a directory owned by uid {euid}; remove it or set TMPDIR elsewhere.",
                dir.display()
            ),
        ));
    }
    if meta.permissions().mode() & 0o777 != 0o755 {
        // The umask may have narrowed the mode at creation.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| EmbeddedError::io(format_args!("could not chmod {}", dir.display()), e))?;
    }
    Ok(dir)
}

/// The cached initdb'ed template for this PostgreSQL version, created on first use.
///
/// Built under an exclusive flock so parallel processes run initdb once; a template only
/// appears under its final name when complete (rename), so readers need no lock.
pub(crate) fn template(
    base: &Path,
    binaries: &Binaries,
    user: Option<&RunAs>,
) -> Result<PathBuf, EmbeddedError> {
    let name: String = binaries
        .version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("template-{name}-v{TEMPLATE_FORMAT}");
    let dir = base.join(&name);
    if is_complete(&dir) {
        return Ok(dir);
    }

    let lock_path = base.join(format!("{name}.lock"));
    let _lock = FileLock::exclusive(&lock_path)?;
    if is_complete(&dir) {
        return Ok(dir); // another process built it while we waited
    }
    // Whatever is here was left by a process that died while building.
    let building = base.join(format!("{name}.tmp"));
    for leftover in [&dir, &building] {
        remove_dir_if_exists(leftover)?;
    }
    let started = Instant::now();
    DirBuilder::new()
        .mode(0o700)
        .create(&building)
        .and_then(|()| privileges::chown(&building, user))
        .map_err(|e| {
            EmbeddedError::io(format_args!("could not create {}", building.display()), e)
        })?;
    if let Err(e) = initdb(binaries, &building, base, user) {
        let _ = fs::remove_dir_all(&building);
        return Err(e);
    }
    fs::rename(&building, &dir).map_err(|e| {
        EmbeddedError::io(
            format_args!(
                "could not rename {} to {}",
                building.display(),
                dir.display()
            ),
            e,
        )
    })?;
    tracing::info!(
        version = %binaries.version,
        elapsed_ms = started.elapsed().as_millis() as u64,
        template = %dir.display(),
        "created the embedded PostgreSQL template cluster (once per version)"
    );
    Ok(dir)
}

fn is_complete(template: &Path) -> bool {
    template.join("PG_VERSION").is_file() && template.join("global/pg_control").is_file()
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), EmbeddedError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(EmbeddedError::io(
            format_args!("could not remove {}", dir.display()),
            e,
        )),
        _ => Ok(()),
    }
}

fn initdb(
    binaries: &Binaries,
    data_dir: &Path,
    base: &Path,
    user: Option<&RunAs>,
) -> Result<(), EmbeddedError> {
    let mut cmd = Command::new(&binaries.initdb);
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-U", server::SUPERUSER, "--auth=trust", "-E", "UTF8"])
        .args(["--locale=C", "--no-sync"]);
    // 1 MB WAL segments (default 16): the fresh pg_wal is then ~1 MB instead of 16 MB to copy per server.
    if binaries.major >= 11 {
        cmd.arg("--wal-segsize=1");
    }
    if binaries.major >= 14 {
        cmd.arg("--no-instructions");
    }
    // A cwd the server user can enter; LC_ALL=C for stable, English messages.
    cmd.current_dir(base)
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    privileges::run_as(&mut cmd, user);
    // Safe to tie to this thread: it blocks in output() until initdb is done.
    spawner::die_with_parent(&mut cmd, libc::SIGKILL);
    let output = cmd.output().map_err(|e| {
        EmbeddedError::caused_by(
            EmbeddedErrorKind::InitDb,
            format_args!("could not run {}", binaries.initdb.display()),
            e,
        )
    })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(EmbeddedError::new(
        EmbeddedErrorKind::InitDb,
        format!(
            "initdb ({}) failed ({}) creating the template cluster in {}{}; its output:\n{}",
            binaries.initdb.display(),
            output.status,
            data_dir.display(),
            user.map(|u| format!(" as user {}", u.name))
                .unwrap_or_default(),
            server::last_lines(&text)
        ),
    ))
}

/// Creates a fresh `run-<pid>-<n>` directory (mode 0700, owned by the server user).
pub(crate) fn create_run_dir(base: &Path, user: Option<&RunAs>) -> Result<PathBuf, EmbeddedError> {
    let pid = std::process::id();
    loop {
        let name = format!("run-{pid}-{}", NEXT_RUN.fetch_add(1, Ordering::Relaxed));
        // Registered before creation, so a concurrent stale scan never mistakes it for a dead run.
        own_run_dirs().insert(name.clone());
        let dir = base.join(&name);
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                privileges::chown(&dir, user).map_err(|e| {
                    EmbeddedError::io(format_args!("could not chown {}", dir.display()), e)
                })?;
                return Ok(dir);
            }
            // Left by a dead process that had our pid: not ours, so the stale scan removes it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                own_run_dirs().remove(&name);
            }
            Err(e) => {
                return Err(EmbeddedError::io(
                    format_args!("could not create {}", dir.display()),
                    e,
                ))
            }
        }
    }
}

/// The owner pid in a run directory name `run-<pid>-<n>`.
pub(crate) fn run_dir_owner(name: &str) -> Option<u32> {
    let mut parts = name.strip_prefix("run-")?.split('-');
    let pid = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u32>().ok()?;
    parts.next().is_none().then_some(pid)
}

/// Whether this process created the run directory `name` (its pid may be a dead process's, reused).
pub(crate) fn is_own_run_dir(name: &str) -> bool {
    own_run_dirs().contains(name)
}

fn own_run_dirs() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    OWN_RUN_DIRS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Copies a directory tree preserving modes and symlinks, giving every entry to `user`.
///
/// Files are copied by several threads: a data directory is ~1000 small files, and the copy is
/// bound by per-file latency rather than bandwidth (it dominates start time).
pub(crate) fn copy_tree(from: &Path, to: &Path, user: Option<&RunAs>) -> io::Result<()> {
    let mut plan = CopyPlan::default();
    plan.collect(from, to)?;
    for (_, target) in &plan.dirs {
        // Owner-only while filling; the final modes are applied last, so read-only source dirs work.
        DirBuilder::new().mode(0o700).create(target)?;
    }
    for (source, target) in &plan.symlinks {
        symlink(fs::read_link(source)?, target)?;
        privileges::chown(target, user)?;
    }
    let next = AtomicUsize::new(0);
    let copy_files = || -> io::Result<()> {
        while let Some((source, target)) = plan.files.get(next.fetch_add(1, Ordering::Relaxed)) {
            // Permission bits come along; copy_file_range makes this cheap (reflinks where supported).
            fs::copy(source, target)?;
            privileges::chown(target, user)?;
        }
        Ok(())
    };
    thread::scope(|scope| {
        let workers: Vec<_> = (0..COPY_THREADS).map(|_| scope.spawn(copy_files)).collect();
        workers.into_iter().try_for_each(|worker| {
            worker
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a copy thread panicked")))
        })
    })?;
    for (mode, target) in plan.dirs.iter().rev() {
        fs::set_permissions(target, fs::Permissions::from_mode(*mode))?;
        privileges::chown(target, user)?;
    }
    Ok(())
}

const COPY_THREADS: usize = 4;

/// What to copy, parents before children.
#[derive(Default)]
struct CopyPlan {
    dirs: Vec<(u32, PathBuf)>,
    files: Vec<(PathBuf, PathBuf)>,
    symlinks: Vec<(PathBuf, PathBuf)>,
}

impl CopyPlan {
    fn collect(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let mode = fs::symlink_metadata(from)?.permissions().mode();
        self.dirs.push((mode, to.to_path_buf()));
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let (source, target) = (entry.path(), to.join(entry.file_name()));
            if kind.is_dir() {
                self.collect(&source, &target)?;
            } else if kind.is_symlink() {
                self.symlinks.push((source, target));
            } else if kind.is_file() {
                self.files.push((source, target));
            } // sockets, fifos: never part of a stopped cluster
        }
        Ok(())
    }
}

/// An exclusive `flock` held until dropped (the kernel releases it if we die).
struct FileLock(File);

impl FileLock {
    fn exclusive(path: &Path) -> Result<Self, EmbeddedError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| EmbeddedError::io(format_args!("could not open {}", path.display()), e))?;
        tracing::debug!(lock = %path.display(), "waiting for the template lock");
        loop {
            // SAFETY: valid open fd owned by `file`.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Self(file));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(EmbeddedError::io(
                    format_args!("could not lock {}", path.display()),
                    err,
                ));
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file would release it too; unlocking first just makes the intent explicit.
        // SAFETY: valid open fd owned by `self.0`.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dir_names_are_parsed() {
        assert_eq!(run_dir_owner("run-123-0"), Some(123));
        assert_eq!(run_dir_owner("run-123-45"), Some(123));
        assert_eq!(run_dir_owner("run-123"), None);
        assert_eq!(run_dir_owner("run-x-1"), None);
        assert_eq!(run_dir_owner("run-1-2-3"), None);
        assert_eq!(run_dir_owner("template-15.2"), None);
    }
}
