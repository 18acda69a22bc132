//! The test harness's error: the embedded server or the database failed.

use std::fmt;

/// A `Result` whose error is the harness's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a test database could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No server is configured and the embedded one could not start (e.g. no PostgreSQL
    /// binaries: the message says how to install them).
    Embedded(coredb_embedded::EmbeddedError),
    /// The configuration is invalid, or the server refused to create or drop the database.
    Database(coredb::Error),
    /// Starting the embedded server panicked.
    Panicked(String),
    /// The thread that creates and drops test databases is gone (the process is exiting).
    AdminGone,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Embedded(e) => write!(f, "embedded PostgreSQL failed: {e}"),
            Error::Database(e) => write!(f, "{e}"),
            Error::Panicked(e) => write!(f, "starting the embedded PostgreSQL panicked: {e}"),
            Error::AdminGone => f.write_str("the test database admin thread is gone"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Embedded(e) => Some(e),
            Error::Database(e) => Some(e),
            Error::Panicked(_) | Error::AdminGone => None,
        }
    }
}

impl From<coredb_embedded::EmbeddedError> for Error {
    fn from(err: coredb_embedded::EmbeddedError) -> Self {
        Error::Embedded(err)
    }
}

impl From<coredb::Error> for Error {
    fn from(err: coredb::Error) -> Self {
        Error::Database(err)
    }
}
