//! The error type of the embedded server.

use std::fmt;
use std::io;

/// What kind of step failed, so callers can react (e.g. skip database tests when the binaries are missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EmbeddedErrorKind {
    /// The PostgreSQL server binaries (`initdb`, `postgres`) were not found or are unusable.
    BinariesNotFound,
    /// A file system or process operation failed (creating directories, copying the template, ...).
    Io,
    /// `initdb` failed while creating the template cluster.
    InitDb,
    /// The server did not start, or did not accept connections within the start timeout.
    Start,
    /// The server could not be stopped.
    Stop,
}

/// Error from the embedded server; its message says what was tried and what to do about it.
pub struct EmbeddedError {
    kind: EmbeddedErrorKind,
    message: String,
    source: Option<io::Error>,
}

impl EmbeddedError {
    pub(crate) fn new(kind: EmbeddedErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` caused by `err`; the message is "`context`: `err`".
    pub(crate) fn caused_by(
        kind: EmbeddedErrorKind,
        context: impl fmt::Display,
        err: io::Error,
    ) -> Self {
        Self {
            kind,
            message: format!("{context}: {err}"),
            source: Some(err),
        }
    }

    /// An [`EmbeddedErrorKind::Io`] error caused by `err`.
    pub(crate) fn io(context: impl fmt::Display, err: io::Error) -> Self {
        Self::caused_by(EmbeddedErrorKind::Io, context, err)
    }

    /// Which step failed.
    pub fn kind(&self) -> EmbeddedErrorKind {
        self.kind
    }
}

impl fmt::Display for EmbeddedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// `.expect()` prints Debug: keep the message readable (real newlines in the log tail), not escaped.
impl fmt::Debug for EmbeddedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmbeddedError({:?}): {}", self.kind, self.message)
    }
}

impl std::error::Error for EmbeddedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
