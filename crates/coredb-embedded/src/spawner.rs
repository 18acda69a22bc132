//! Spawning postgres so that it dies with us.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
//! Test harnesses run each test on a short-lived thread, so postgres is always forked from one
//! dedicated thread that lives as long as the process: the death signal then means "our process died".

use std::io;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::thread;

struct Request {
    command: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

static SPAWNER: Mutex<Option<mpsc::Sender<Request>>> = Mutex::new(None);

/// Spawns `command` on the process-wide spawner thread (started on first use, never exits).
pub(crate) fn spawn(command: Command) -> io::Result<Child> {
    let (reply, answer) = mpsc::channel();
    {
        let mut spawner = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = match spawner.as_ref() {
            Some(sender) => sender,
            None => {
                let (sender, requests) = mpsc::channel::<Request>();
                thread::Builder::new()
                    .name("coredb-pg-spawner".into())
                    .spawn(move || serve(requests))?;
                spawner.insert(sender)
            }
        };
        sender
            .send(Request { command, reply })
            .map_err(|_| io::Error::other("the coredb postgres spawner thread is gone"))?;
    }
    answer
        .recv()
        .map_err(|_| io::Error::other("the coredb postgres spawner thread did not answer"))?
}

fn serve(requests: mpsc::Receiver<Request>) {
    // The sender lives in a static, so this loop (and the thread) never ends.
    for mut request in requests {
        let result = request.command.spawn();
        let _ = request.reply.send(result);
    }
}

/// Makes the child receive `signal` when the thread that spawns it exits.
///
/// Set in `pre_exec`, which runs after std's setuid: a credential change clears the death signal.
pub(crate) fn die_with_parent(command: &mut Command, signal: libc::c_int) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure only makes async-signal-safe syscalls and does not allocate.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // We may have died between fork and prctl; then nobody would ever signal the child.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        // No death signal outside Linux: orphans are removed by the stale-run cleaning of the next start.
        let _ = (command, signal);
    }
}
