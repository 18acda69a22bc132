//! The running server: start, readiness, stop, crash simulation and restart.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use super::binaries::Binaries;
use super::error::{EmbeddedError, EmbeddedErrorKind};
use super::privileges::{self, RunAs};
use super::{cluster, pidfile, process, spawner, stale};

pub(crate) const HOST: &str = "127.0.0.1";
pub(crate) const SUPERUSER: &str = "postgres";
const DEFAULT_MAX_CONNECTIONS: u32 = 300;
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Fast shutdown normally takes well under a second; past this, SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Drop and process exit use immediate shutdown, which is quicker still.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(5);
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: u32 = 5;
/// How long `start_again` keeps retrying when its port is briefly taken.
const SAME_PORT_RETRY: Duration = Duration::from_secs(5);
const LOG_TAIL_LINES: usize = 20;
/// `sun_path` holds 108 bytes including the NUL.
const SOCKET_PATH_MAX: usize = 107;
/// Settings the server must own: `port()` and `data_dir()` would lie otherwise.
const RESERVED_SETTINGS: [&str; 2] = ["port", "data_directory"];

/// Configures an [`EmbeddedServer`] before starting it; see [`EmbeddedServer::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct EmbeddedServerBuilder {
    max_connections: u32,
    settings: Vec<(String, String)>,
    start_timeout: Duration,
}

impl Default for EmbeddedServerBuilder {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            settings: Vec::new(),
            start_timeout: DEFAULT_START_TIMEOUT,
        }
    }
}

impl EmbeddedServerBuilder {
    /// Sets `max_connections` (default 300: room for parallel tests that each open a pool).
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections;
        self
    }

    /// Adds a server setting, passed as `-c key=value`; it overrides the defaults and earlier settings.
    pub fn setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }

    /// How long to wait for the server to accept connections, crash recovery included (default 30 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts a server in a fresh directory on a free port, and waits until it accepts connections.
    pub fn start(self) -> Result<EmbeddedServer, EmbeddedError> {
        let started = Instant::now();
        let settings = self.server_settings()?;
        let binaries = Binaries::find()?;
        let user = privileges::unprivileged_user()?;
        let base = cluster::base_dir()?;
        if let Some(user) = &user {
            privileges::check_traversable(&base, user)?;
        }
        stale::clean_dead_runs(&base);
        let template = cluster::template(&base, &binaries, user.as_ref())?;
        let run_dir = cluster::create_run_dir(&base, user.as_ref())?;
        let mut server = EmbeddedServer {
            port: 0,
            version: binaries.version.clone(),
            postgres: binaries.postgres.clone(),
            data_dir: run_dir.join("data"),
            real_data_dir: PathBuf::new(),
            log_path: run_dir.join("postgres.log"),
            unix_socket: run_dir.as_os_str().len() + "/.s.PGSQL.65535".len() <= SOCKET_PATH_MAX,
            run_dir,
            settings,
            user,
            start_timeout: self.start_timeout,
            child: Mutex::new(None),
        };
        // From here on, an early return drops `server`, which removes its run directory.

        let copy_started = Instant::now();
        cluster::copy_tree(&template, &server.data_dir, server.user.as_ref()).map_err(|e| {
            EmbeddedError::io(
                format_args!(
                    "could not copy the template cluster {} to {}",
                    template.display(),
                    server.data_dir.display()
                ),
                e,
            )
        })?;
        tracing::debug!(
            elapsed_ms = copy_started.elapsed().as_millis() as u64,
            data_dir = %server.data_dir.display(),
            "copied the template cluster"
        );
        server.boot(started, &binaries.bindir)?;
        Ok(server)
    }

    fn server_settings(&self) -> Result<Vec<(String, String)>, EmbeddedError> {
        // Durability is traded for speed: the data is throwaway. DSM in files under the data directory
        // (not /dev/shm, often 64 MB in containers) cannot leak and is removed with the directory.
        let mut settings: Vec<(String, String)> = [
            ("listen_addresses", HOST.to_string()),
            ("fsync", "off".into()),
            ("synchronous_commit", "off".into()),
            ("full_page_writes", "off".into()),
            ("max_connections", self.max_connections.to_string()),
            ("shared_buffers", "32MB".into()),
            ("dynamic_shared_memory_type", "mmap".into()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect();
        for (key, value) in &self.settings {
            let valid = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if !valid {
                return Err(EmbeddedError::new(
                    EmbeddedErrorKind::Start,
                    format!("invalid server setting name {key:?}: expected a PostgreSQL parameter name such as work_mem"),
                ));
            }
            if RESERVED_SETTINGS.contains(&key.to_ascii_lowercase().as_str()) {
                return Err(EmbeddedError::new(
                    EmbeddedErrorKind::Start,
                    format!("the setting `{key}` is chosen by the embedded server; read it with EmbeddedServer::port() or data_dir() instead"),
                ));
            }
            settings.push((key.clone(), value.clone()));
        }
        Ok(settings)
    }
}

/// A throwaway PostgreSQL server running as a child process; stopped and deleted when dropped.
///
/// All methods take `&self`, so a shared `&'static` server can be stopped and restarted by a test.
pub struct EmbeddedServer {
    port: u16,
    version: String,
    postgres: PathBuf,
    run_dir: PathBuf,
    data_dir: PathBuf,
    /// `data_dir` with symlinks resolved, as `/proc/<pid>/cwd` shows it.
    real_data_dir: PathBuf,
    log_path: PathBuf,
    unix_socket: bool,
    settings: Vec<(String, String)>,
    user: Option<RunAs>,
    start_timeout: Duration,
    /// The postmaster while it may be running; `None` after stop/kill.
    child: Mutex<Option<Child>>,
}

enum Launch {
    PortInUse(EmbeddedError),
    Failed(EmbeddedError),
}

impl Launch {
    fn into_error(self) -> EmbeddedError {
        match self {
            Launch::PortInUse(e) | Launch::Failed(e) => e,
        }
    }
}

impl EmbeddedServer {
    /// Starts the postmaster on the data directory already in place (a copied template or a
    /// base backup), on a free port; logs where and how long it took.
    fn boot(&mut self, started: Instant, bindir: &Path) -> Result<(), EmbeddedError> {
        let server = self;
        server.real_data_dir =
            fs::canonicalize(&server.data_dir).unwrap_or_else(|_| server.data_dir.clone());
        File::create(&server.log_path)
            .and_then(|_| privileges::chown(&server.log_path, server.user.as_ref()))
            .map_err(|e| {
                EmbeddedError::io(
                    format_args!("could not create {}", server.log_path.display()),
                    e,
                )
            })?;
        let mut attempt = 1;
        loop {
            server.port = free_port()?;
            let mut child = None;
            match server.launch(&mut child) {
                Ok(()) => {
                    *server
                        .child
                        .get_mut()
                        .unwrap_or_else(PoisonError::into_inner) = child;
                    break;
                }
                Err(Launch::PortInUse(e)) if attempt < PORT_ATTEMPTS => {
                    tracing::debug!(port = server.port, error = %e, "port taken meanwhile; trying another");
                    attempt += 1;
                }
                Err(failure) => return Err(failure.into_error()),
            }
        }
        tracing::info!(
            version = %server.version,
            port = server.port,
            elapsed_ms = started.elapsed().as_millis() as u64,
            bindir = %bindir.display(),
            data_dir = %server.data_dir.display(),
            "started embedded PostgreSQL"
        );
        Ok(())
    }
}

impl EmbeddedServer {
    /// A builder to configure the server before starting it.
    pub fn builder() -> EmbeddedServerBuilder {
        EmbeddedServerBuilder::default()
    }

    /// Starts a streaming-replication standby of this server: a base backup taken with
    /// `pg_basebackup -R` (which writes `primary_conninfo` and `standby.signal`), started as a
    /// hot standby on a free port with this server's settings. Blocking, as
    /// [`EmbeddedServerBuilder::start`]; stopped and deleted when dropped, as any embedded
    /// server. Promote it with `SELECT pg_promote()`.
    ///
    /// # Errors
    /// When the base backup or the start fails; the message holds `pg_basebackup`'s output.
    pub fn standby(&self) -> Result<EmbeddedServer, EmbeddedError> {
        let started = Instant::now();
        let binaries = Binaries::find()?;
        let base = cluster::base_dir()?;
        let run_dir = cluster::create_run_dir(&base, self.user.as_ref())?;
        let mut standby = EmbeddedServer {
            port: 0,
            version: self.version.clone(),
            postgres: self.postgres.clone(),
            data_dir: run_dir.join("data"),
            real_data_dir: PathBuf::new(),
            log_path: run_dir.join("postgres.log"),
            unix_socket: run_dir.as_os_str().len() + "/.s.PGSQL.65535".len() <= SOCKET_PATH_MAX,
            run_dir,
            settings: self.settings.clone(),
            user: self.user.clone(),
            start_timeout: self.start_timeout,
            child: Mutex::new(None),
        };
        // From here on, an early return drops `standby`, which removes its run directory.
        let mut cmd = Command::new(binaries.bindir.join("pg_basebackup"));
        cmd.args([
            "-h",
            HOST,
            "-p",
            &self.port.to_string(),
            "-U",
            SUPERUSER,
            "-D",
        ])
        .arg(&standby.data_dir)
        .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
        .current_dir(&standby.run_dir)
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
        privileges::run_as(&mut cmd, self.user.as_ref());
        let output = cmd.output().map_err(|e| {
            EmbeddedError::caused_by(
                EmbeddedErrorKind::Start,
                format_args!(
                    "could not run pg_basebackup in {}",
                    binaries.bindir.display()
                ),
                e,
            )
        })?;
        if !output.status.success() {
            return Err(EmbeddedError::new(
                EmbeddedErrorKind::Start,
                format!(
                    "pg_basebackup from port {} failed ({}): {}",
                    self.port,
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            ));
        }
        standby.boot(started, &binaries.bindir)?;
        Ok(standby)
    }

    /// Starts a server with the default settings; see [`EmbeddedServerBuilder::start`].
    pub fn start() -> Result<EmbeddedServer, EmbeddedError> {
        Self::builder().start()
    }

    /// The TCP host the server listens on: always `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The TCP port; it stays the same across `stop`/`start_again`/`restart`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser to connect as (`postgres`, trust authentication: no password).
    pub fn user(&self) -> &str {
        SUPERUSER
    }

    /// A connection URL for the `postgres` database: `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// A connection URL for the database `dbname` (percent-encoded as needed).
    pub fn url_for(&self, dbname: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@{HOST}:{}/{}",
            self.port,
            percent_encode(dbname)
        )
    }

    /// The directory holding the Unix socket (none when its path would exceed the socket path limit).
    pub fn socket_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The data directory (a copy of the cached template, private to this server).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's log file (its stdout and stderr); start errors quote its last lines.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The PostgreSQL version, e.g. "15.20".
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The postmaster's pid while it is running.
    pub fn pid(&self) -> Option<u32> {
        let mut child = self.lock();
        let child = child.as_mut()?;
        // try_wait also reaps a postmaster that died on its own, so no zombie lingers.
        matches!(child.try_wait(), Ok(None)).then(|| child.id())
    }

    /// Whether the postmaster is alive and accepting connections.
    pub fn is_running(&self) -> bool {
        let mut child = self.lock();
        let Some(child) = child.as_mut() else {
            return false;
        };
        let pid = child.id() as i32;
        matches!(child.try_wait(), Ok(None))
            && pidfile::read(&self.data_dir).is_some_and(|file| file.is_ready(pid))
    }

    /// Stops the server with a fast shutdown (SIGINT), escalating to SIGKILL after 15 s; no-op if stopped.
    pub fn stop(&self) -> Result<(), EmbeddedError> {
        self.stop_locked(&mut self.lock())
    }

    /// SIGKILLs the postmaster, simulating a crash, then its backends; returns once all are gone.
    ///
    /// Commits from the last ~200 ms may be lost (`synchronous_commit=off`) unless made with it on.
    pub fn kill(&self) -> Result<(), EmbeddedError> {
        let mut slot = self.lock();
        let Some(child) = slot.take() else {
            return Ok(());
        };
        let pid = child.id();
        self.stop_child(child, libc::SIGKILL, KILL_TIMEOUT)?;
        tracing::info!(port = self.port, pid, "killed embedded PostgreSQL");
        Ok(())
    }

    /// Starts the same data directory again on the same port, after `stop` or `kill` (crash recovery
    /// then runs within the start timeout); no-op if it is running.
    pub fn start_again(&self) -> Result<(), EmbeddedError> {
        self.start_again_locked(&mut self.lock())
    }

    /// Stops the server and starts it again on the same port.
    pub fn restart(&self) -> Result<(), EmbeddedError> {
        let mut slot = self.lock();
        self.stop_locked(&mut slot)?;
        self.start_again_locked(&mut slot)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stop_locked(&self, slot: &mut Option<Child>) -> Result<(), EmbeddedError> {
        let Some(child) = slot.take() else {
            return Ok(());
        };
        let started = Instant::now();
        self.stop_child(child, libc::SIGINT, STOP_TIMEOUT)?;
        tracing::info!(
            port = self.port,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "stopped embedded PostgreSQL"
        );
        Ok(())
    }

    fn start_again_locked(&self, slot: &mut Option<Child>) -> Result<(), EmbeddedError> {
        if let Some(child) = slot.as_ref() {
            if !process::has_exited(child.id() as i32) {
                return Ok(());
            }
        }
        if let Some(crashed) = slot.take() {
            // It died on its own: clear its leftover backends as kill() would.
            self.stop_child(crashed, libc::SIGKILL, KILL_TIMEOUT)?;
        }
        self.remove_stale_lock_file();
        let started = Instant::now();
        loop {
            match self.launch(slot) {
                Ok(()) => break,
                // The port is fixed now; whoever holds it may let go shortly (e.g. a closing test listener).
                Err(Launch::PortInUse(e)) if started.elapsed() < SAME_PORT_RETRY => {
                    tracing::debug!(port = self.port, error = %e, "port still taken; retrying");
                    thread::sleep(Duration::from_millis(100));
                }
                Err(failure) => return Err(failure.into_error()),
            }
        }
        tracing::info!(
            port = self.port,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "started embedded PostgreSQL again"
        );
        Ok(())
    }

    /// After a crash `postmaster.pid` stays behind. PostgreSQL ignores it while its pid is dead, but
    /// refuses to start once that pid is reused by another process; we reaped the old postmaster,
    /// so a live process with that pid is unrelated and the file can go.
    fn remove_stale_lock_file(&self) {
        if pidfile::read(&self.data_dir).is_some_and(|file| process::is_alive(file.pid)) {
            let _ = fs::remove_file(pidfile::path(&self.data_dir));
        }
    }

    /// Runs postgres and waits until it is ready; on success the postmaster is put in `slot`.
    fn launch(&self, slot: &mut Option<Child>) -> Result<(), Launch> {
        let open_log = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path)
        };
        let (stdout, stderr) = open_log()
            .and_then(|log| Ok((log.try_clone()?, log)))
            .map_err(|e| {
                Launch::Failed(EmbeddedError::io(
                    format_args!("could not open {}", self.log_path.display()),
                    e,
                ))
            })?;
        // Only this attempt's lines go into error messages.
        let log_start = stderr.metadata().map_or(0, |m| m.len());

        let mut cmd = Command::new(&self.postgres);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k");
        if self.unix_socket {
            cmd.arg(&self.run_dir);
        } else {
            cmd.arg(""); // the path would be too long: TCP only
        }
        for (key, value) in &self.settings {
            cmd.arg("-c").arg(format!("{key}={value}"));
        }
        // LC_ALL=C keeps the log messages we match (e.g. "could not bind") in English.
        cmd.current_dir(&self.run_dir)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        privileges::run_as(&mut cmd, self.user.as_ref());
        // SIGQUIT = immediate shutdown: the postmaster takes its backends down and removes its shared memory.
        spawner::die_with_parent(&mut cmd, libc::SIGQUIT);
        let mut child = spawner::spawn(cmd).map_err(|e| {
            Launch::Failed(EmbeddedError::caused_by(
                EmbeddedErrorKind::Start,
                format_args!("could not run {}", self.postgres.display()),
                e,
            ))
        })?;
        if let Err(failure) = self.wait_ready(&mut child, log_start) {
            // Never leave a half-started server behind.
            let _ = self.stop_child(child, libc::SIGKILL, KILL_TIMEOUT);
            return Err(failure);
        }
        *slot = Some(child);
        Ok(())
    }

    /// Polls `postmaster.pid` until it says "ready" for this child, the child exits, or the timeout passes.
    fn wait_ready(&self, child: &mut Child, log_start: u64) -> Result<(), Launch> {
        let pid = child.id() as i32;
        let deadline = Instant::now() + self.start_timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            if process::has_exited(pid) {
                let log = log_since(&self.log_path, log_start);
                let status = match child.try_wait() {
                    Ok(Some(status)) => status.to_string(),
                    _ => "exited".to_string(),
                };
                let error = EmbeddedError::new(
                    EmbeddedErrorKind::Start,
                    format!(
                        "PostgreSQL {} exited while starting on port {} ({status}), data directory {}. Last lines of {}:\n{}",
                        self.version,
                        self.port,
                        self.data_dir.display(),
                        self.log_path.display(),
                        last_lines(&log)
                    ),
                );
                let port_taken = [
                    "could not bind",
                    "Address already in use",
                    "could not create any TCP/IP sockets",
                ]
                .iter()
                .any(|needle| log.contains(needle));
                return Err(if port_taken {
                    Launch::PortInUse(error)
                } else {
                    Launch::Failed(error)
                });
            }
            if pidfile::read(&self.data_dir).is_some_and(|file| file.is_ready(pid)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Launch::Failed(EmbeddedError::new(
                    EmbeddedErrorKind::Start,
                    format!(
                        "PostgreSQL {} did not accept connections on port {} within {:?} (data directory {}); on a slow machine raise EmbeddedServerBuilder::start_timeout. Last lines of {}:\n{}",
                        self.version,
                        self.port,
                        self.start_timeout,
                        self.data_dir.display(),
                        self.log_path.display(),
                        last_lines(&log_since(&self.log_path, log_start))
                    ),
                )));
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the postmaster, escalates to SIGKILL after `grace`, then makes sure no
    /// backend of it survives: after an abrupt end they linger briefly, holding its shared memory,
    /// and PostgreSQL refuses to start again on that data directory until they are gone.
    fn stop_child(
        &self,
        mut child: Child,
        signal: libc::c_int,
        grace: Duration,
    ) -> Result<(), EmbeddedError> {
        let pid = child.id() as i32;
        let mut backends = Vec::new();
        // has_exited does not reap: the pid cannot be reused (and wrongly signalled) meanwhile.
        if !process::has_exited(pid) {
            if signal == libc::SIGKILL {
                // Frozen, it forks no new backend between listing them and dying.
                process::signal(pid, libc::SIGSTOP);
            }
            backends = process::children_of(pid);
            process::signal(pid, signal);
            if !process::wait_until(grace, || process::has_exited(pid)) {
                tracing::debug!(pid, "PostgreSQL did not stop in time; sending SIGKILL");
                process::signal(pid, libc::SIGKILL);
                process::wait_until(KILL_TIMEOUT, || process::has_exited(pid));
            }
        }
        let leftovers_gone =
            process::kill_server_processes(&self.real_data_dir, &backends, KILL_TIMEOUT);
        if !(leftovers_gone && process::has_exited(pid)) {
            // Dropping the Child neither kills nor blocks; we would rather report than hang.
            return Err(EmbeddedError::new(
                EmbeddedErrorKind::Stop,
                format!(
                    "PostgreSQL (pid {pid}, data directory {}) or one of its backends did not exit even after SIGKILL; look for them with `ps -ef | grep postgres`",
                    self.data_dir.display()
                ),
            ));
        }
        let _ = child.wait();
        Ok(())
    }

    /// Immediate shutdown and removal of the run directory (Drop and process exit).
    fn teardown(&self, child: Option<Child>) {
        if let Some(child) = child {
            if let Err(e) = self.stop_child(child, libc::SIGQUIT, TEARDOWN_TIMEOUT) {
                tracing::debug!(error = %e, "could not stop embedded PostgreSQL");
            }
        }
        // A server stopped by kill() leaves its System V segment behind.
        pidfile::remove_orphaned_shared_memory(&self.data_dir);
        match fs::remove_dir_all(&self.run_dir) {
            Ok(()) => {
                tracing::debug!(run_dir = %self.run_dir.display(), "removed embedded PostgreSQL directory")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::debug!(run_dir = %self.run_dir.display(), error = %e, "could not remove embedded PostgreSQL directory")
            }
        }
    }

    /// Teardown for the process-wide server at exit; gives up on the lock after `wait` rather than
    /// hang the exit (the death signal still stops postgres, the next start removes the directory).
    pub(crate) fn teardown_at_exit(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            match self.child.try_lock() {
                Ok(mut slot) => {
                    let child = slot.take();
                    drop(slot);
                    return self.teardown(child);
                }
                Err(TryLockError::Poisoned(poisoned)) => {
                    let child = poisoned.into_inner().take();
                    return self.teardown(child);
                }
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(10));
                }
                Err(TryLockError::WouldBlock) => return,
            }
        }
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.teardown(child);
    }
}

impl fmt::Debug for EmbeddedServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedServer")
            .field("version", &self.version)
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// A port the kernel just considered free (5432 excluded: a system server may want it).
/// It is released before postgres binds it; losing that race is handled by retrying.
fn free_port() -> Result<u16, EmbeddedError> {
    for _ in 0..16 {
        let port = TcpListener::bind((HOST, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|e| {
                EmbeddedError::caused_by(
                    EmbeddedErrorKind::Start,
                    "could not find a free TCP port on 127.0.0.1",
                    e,
                )
            })?
            .port();
        if port != 5432 {
            return Ok(port);
        }
    }
    Err(EmbeddedError::new(
        EmbeddedErrorKind::Start,
        "could not find a free TCP port on 127.0.0.1 other than 5432",
    ))
}

fn log_since(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut bytes);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last lines of a log or command output, for error messages.
pub(crate) fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    if tail.is_empty() {
        "(no output)".to_string()
    } else {
        tail.join("\n")
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_percent_encoded() {
        assert_eq!(percent_encode("app_test-1"), "app_test-1");
        assert_eq!(percent_encode("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn reserved_and_malformed_settings_are_rejected() {
        let err = EmbeddedServer::builder()
            .setting("port", "1")
            .server_settings()
            .unwrap_err();
        assert_eq!(err.kind(), EmbeddedErrorKind::Start);
        let err = EmbeddedServer::builder()
            .setting("work_mem=1", "2")
            .server_settings()
            .unwrap_err();
        assert!(err.to_string().contains("invalid server setting name"));
        let settings = EmbeddedServer::builder()
            .max_connections(7)
            .setting("work_mem", "8MB")
            .server_settings()
            .unwrap();
        assert!(settings.contains(&("max_connections".into(), "7".into())));
        assert_eq!(settings.last(), Some(&("work_mem".into(), "8MB".into())));
    }

    #[test]
    fn only_the_last_lines_are_quoted() {
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let tail = last_lines(&text);
        assert!(tail.starts_with("line 11\n"));
        assert!(tail.ends_with("line 30"));
        assert_eq!(last_lines(""), "(no output)");
    }
}
