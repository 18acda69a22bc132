//! A throwaway real PostgreSQL, started from the server binaries installed on this machine.
//!
//! ```no_run
//! let server = coredb_embedded::EmbeddedServer::start()?;
//! println!("connect to {}", server.url()); // postgres://postgres@127.0.0.1:PORT/postgres
//! // Dropping it stops PostgreSQL and deletes its data.
//! # Ok::<(), coredb_embedded::EmbeddedError>(())
//! ```
//!
//! For tests, examples and local runs: `coredb-testkit` uses it when no database is configured
//! (through [`EmbeddedServer::shared`]); a production service never links it. It depends on
//! nothing of coredb: std, libc and tracing.
//!
//! **Blocking.** Starting and stopping run `initdb`, copy a directory and wait for the server:
//! from a few hundred milliseconds to seconds. Every method blocks the calling thread; inside an
//! async runtime call [`start_in_background`] (or the runtime's own `spawn_blocking`) instead.
//!
//! - **Binaries**: `COREDB_PG_BINDIR` if set (it must hold `initdb` and `postgres`: an explicit
//!   choice never silently falls back), else `PATH`, else `pg_config --bindir`, else the newest
//!   `/usr/lib/postgresql/*/bin`. PostgreSQL 10 or newer.
//! - **Speed**: initdb runs once per PostgreSQL version into a template under
//!   `$TMPDIR/coredb-embedded-<euid>/`; each server starts from a copy of it, with durability
//!   turned off (`fsync`, `synchronous_commit`, `full_page_writes`).
//! - **Root**: initdb and postgres refuse to run as root, so they then run as `postgres` (or `nobody`).
//! - **No orphans**: postgres gets a death signal when this process dies (even by SIGKILL), and
//!   every start removes the directories and servers of runs whose process is gone.
//! - **Access**: `127.0.0.1` on a free port, superuser `postgres`, trust authentication, and a
//!   Unix socket in [`EmbeddedServer::socket_dir`].

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod background;
mod binaries;
mod cluster;
mod error;
mod pidfile;
mod privileges;
mod process;
mod server;
mod shared;
mod spawner;
mod stale;

pub use background::{start_in_background, Background};
pub use error::{EmbeddedError, EmbeddedErrorKind};
pub use privileges::{give_to_server_user, server_user};
pub use server::{EmbeddedServer, EmbeddedServerBuilder};
