//! The process-wide server behind [`EmbeddedServer::shared`].

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use super::error::EmbeddedError;
use super::server::EmbeddedServer;

static SHARED: OnceLock<EmbeddedServer> = OnceLock::new();
/// Serialises first calls so concurrent ones start a single server (OnceLock cannot fail to initialise).
static STARTING: Mutex<()> = Mutex::new(());
/// How long exit waits for a test still holding the server's lock.
const EXIT_LOCK_WAIT: Duration = Duration::from_secs(2);

impl EmbeddedServer {
    /// The one server of this process, started on first call; a failed start is retried on the next call.
    ///
    /// Statics are never dropped, so it is stopped and its directory removed by an `atexit` hook.
    pub fn shared() -> Result<&'static EmbeddedServer, EmbeddedError> {
        if let Some(server) = SHARED.get() {
            return Ok(server);
        }
        let _starting = STARTING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(server) = SHARED.get() {
            return Ok(server);
        }
        let server = EmbeddedServer::start()?;
        let server = SHARED.get_or_init(|| server);
        // SAFETY: registering a plain extern "C" function with no arguments.
        if unsafe { libc::atexit(stop_shared_server) } != 0 {
            tracing::debug!(
                "could not register the exit hook; the death signal still stops PostgreSQL"
            );
        }
        Ok(server)
    }
}

extern "C" fn stop_shared_server() {
    // A panic must not cross the C boundary (that aborts); there is nothing else to do at exit anyway.
    let _ = panic::catch_unwind(AssertUnwindSafe(|| {
        if let Some(server) = SHARED.get() {
            server.teardown_at_exit(EXIT_LOCK_WAIT);
        }
    }));
}
