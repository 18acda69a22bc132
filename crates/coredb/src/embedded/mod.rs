//! A throwaway real PostgreSQL, started from the server binaries installed on this machine.
//!
//! ```no_run
//! let server = coredb::embedded::EmbeddedServer::start()?;
//! println!("connect to {}", server.url()); // postgres://postgres@127.0.0.1:PORT/postgres
//! // Dropping it stops PostgreSQL and deletes its data.
//! # Ok::<(), coredb::embedded::EmbeddedError>(())
//! ```
//!
//! Used when no database is configured, and by the test harness through [`EmbeddedServer::shared`].
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

mod binaries;
mod cluster;
mod error;
mod fallback;
mod pidfile;
mod privileges;
mod process;
mod server;
mod shared;
mod spawner;
mod stale;

pub use error::{EmbeddedError, EmbeddedErrorKind};
pub use fallback::config_or_embedded;
pub use server::{EmbeddedServer, EmbeddedServerBuilder};
