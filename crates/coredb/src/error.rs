//! The one error type of coredb, with a kind the caller can match on.

use std::fmt;
use std::time::Duration;

use tokio_postgres::error::SqlState;

/// A `Result` whose error is [`coredb::Error`](Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, broadly; match on it to decide what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A configuration value is missing or invalid; every problem is listed.
    Config,
    /// A connection to the server could not be opened.
    Connect,
    /// No connection became free within the pool timeout.
    PoolTimeout,
    /// The pool was closed; no new checkouts are possible.
    PoolClosed,
    /// The connection to the server was lost while it was in use.
    ConnectionLost,
    /// The server rejected a statement (see [`Error::code`]).
    Query,
    /// Parameters do not match the statement: unknown, missing, extra or of the wrong type.
    Params,
    /// A value could not be converted from its PostgreSQL type to the Rust type asked for.
    Decode,
    /// A statement expected to return a row returned none.
    NotFound,
    /// A statement expected to return at most one row returned more.
    TooManyRows,
    /// An operation did not finish within its time limit.
    Timeout,
    /// The connection was lost while `COMMIT` was in flight and the server could not be asked
    /// whether it committed (see [`Session::commit`](crate::Session::commit)). Not transient:
    /// running the transaction again might apply it twice.
    CommitOutcomeUnknown,
}

impl ErrorKind {
    /// What failed, in a few words; [`Error`]'s `Display` puts it before the message.
    fn label(self) -> &'static str {
        match self {
            ErrorKind::Config => "invalid database configuration",
            ErrorKind::Connect => "could not connect to PostgreSQL",
            ErrorKind::PoolTimeout => "timed out waiting for a pooled connection",
            ErrorKind::PoolClosed => "the connection pool is closed",
            ErrorKind::ConnectionLost => "the connection to PostgreSQL was lost",
            ErrorKind::Query => "query failed",
            ErrorKind::Params => "statement parameters do not match",
            ErrorKind::Decode => "could not decode a column",
            ErrorKind::NotFound => "no row returned",
            ErrorKind::TooManyRows => "more than one row returned",
            ErrorKind::Timeout => "operation timed out",
            ErrorKind::CommitOutcomeUnknown => "the outcome of COMMIT is unknown",
        }
    }
}

/// The server's own account of a failed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbErrorInfo {
    /// Severity, e.g. `ERROR` or `FATAL`.
    pub severity: String,
    /// The primary message.
    pub message: String,
    /// Optional detail, e.g. the duplicate key.
    pub detail: Option<String>,
    /// Optional hint on how to fix it.
    pub hint: Option<String>,
    /// The constraint that was violated, when there is one.
    pub constraint: Option<String>,
    /// The table concerned, when there is one.
    pub table: Option<String>,
    /// The column concerned, when there is one.
    pub column: Option<String>,
}

/// The error of every fallible coredb operation.
///
/// Cheap to move (one box). Its [`kind`](Error::kind) says what failed, [`code`](Error::code)
/// gives the SQLSTATE of server errors, and [`is_transient`](Error::is_transient) says whether a
/// retry may succeed. Passwords never appear in its text.
///
/// ```no_run
/// use coredb::{ErrorKind, Executor, SqlState};
///
/// # async fn demo(db: coredb::DatabaseManager) -> coredb::Result<()> {
/// match db.execute("INSERT INTO users (email) VALUES ($1)", ("ada@example.com",)).await {
///     Ok(_) => println!("created"),
///     Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => println!("already there"),
///     Err(e) if e.kind() == ErrorKind::PoolTimeout || e.is_transient() => {
///         println!("try again later: {e}")
///     }
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    code: Option<SqlState>,
    db: Option<DbErrorInfo>,
    statement: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    /// Known not to go away by retrying (e.g. a certificate the client does not trust).
    permanent: bool,
}

impl Error {
    /// An error of `kind` with a message; used across the crate.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                code: None,
                db: None,
                statement: None,
                source: None,
                permanent: false,
            }),
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.inner.source = Some(Box::new(source));
        self
    }

    pub(crate) fn with_statement(mut self, sql: &str) -> Self {
        self.inner.statement = Some(sql.to_owned());
        self
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub(crate) fn params(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Params, message)
    }

    pub(crate) fn pool_closed() -> Self {
        Self::new(
            ErrorKind::PoolClosed,
            "close_database() or Engine::close() was called; no new connections are handed out",
        )
    }

    pub(crate) fn pool_timeout(
        pool_size: usize,
        max_overflow: usize,
        waited: Duration,
        holders: &str,
    ) -> Self {
        Self::new(
            ErrorKind::PoolTimeout,
            format!(
                "no connection became free within {:.1?} (pool_size {pool_size}, max_overflow {max_overflow}, all {} in use); {holders}. Raise POSTGRES_POOL_SIZE / POSTGRES_MAX_OVERFLOW or POSTGRES_POOL_TIMEOUT, or hold connections for less time",
                waited,
                pool_size + max_overflow
            ),
        )
    }

    pub(crate) fn timeout(what: &str, limit: Duration) -> Self {
        Self::new(
            ErrorKind::Timeout,
            format!("{what} did not finish within {limit:?}"),
        )
    }

    /// An error from the driver for a statement (or for `None` when not tied to one).
    pub(crate) fn from_driver(err: tokio_postgres::Error, sql: Option<&str>) -> Self {
        use std::error::Error as _;
        if let Some(db) = err.as_db_error() {
            let info = DbErrorInfo {
                severity: db.severity().to_owned(),
                message: db.message().to_owned(),
                detail: db.detail().map(str::to_owned),
                hint: db.hint().map(str::to_owned),
                constraint: db.constraint().map(str::to_owned),
                table: db.table().map(str::to_owned),
                column: db.column().map(str::to_owned),
            };
            let mut e = Error::server(info, db.code().clone(), err.is_closed(), sql);
            e.inner.source = Some(Box::new(err));
            return e;
        }
        if let Some(wrong) = err
            .source()
            .and_then(|s| s.downcast_ref::<postgres_types::WrongType>())
        {
            let kind = if err.to_string().starts_with("error serializing") {
                ErrorKind::Params
            } else {
                ErrorKind::Decode
            };
            let mut e = Error::new(kind, format!("{err}: {wrong}"));
            e.inner.statement = sql.map(str::to_owned);
            return e;
        }
        let text = err.to_string();
        // A message the driver did not expect leaves the protocol state unknown: the
        // connection is treated as lost, so it is closed rather than pooled.
        let kind = if err.is_closed()
            || text.contains("connection closed")
            || text.contains("unexpected message")
        {
            ErrorKind::ConnectionLost
        } else if text.starts_with("error serializing") {
            ErrorKind::Params
        } else if text.starts_with("error deserializing") {
            ErrorKind::Decode
        } else if text.starts_with("error communicating") || text.starts_with("error connecting") {
            ErrorKind::ConnectionLost
        } else {
            ErrorKind::Query
        };
        let mut e = Error::new(kind, text);
        e.inner.statement = sql.map(str::to_owned);
        e.inner.source = Some(Box::new(err));
        e
    }

    /// A server error (`ErrorResponse`), on a connection that is `closed` now or not.
    fn server(info: DbErrorInfo, code: SqlState, closed: bool, sql: Option<&str>) -> Self {
        // A FATAL from the server (admin shutdown, terminated backend) ends the connection.
        let kind = if closed || code.code().starts_with("08") || code == SqlState::ADMIN_SHUTDOWN {
            ErrorKind::ConnectionLost
        } else {
            ErrorKind::Query
        };
        let mut message = info.message.clone();
        if code == SqlState::INVALID_SQL_STATEMENT_NAME && names_a_driver_statement(&message) {
            // The driver's own prepared statement is gone: the classic sign of a pooler
            // lending the connection to someone else between two messages.
            message.push_str(
                ": coredb prepared it on a server connection this one is not; behind PgBouncer in transaction mode set POSTGRES_PGBOUNCER=transaction",
            );
        }
        let mut e = Error::new(kind, message);
        e.inner.code = Some(code);
        e.inner.db = Some(info);
        e.inner.statement = sql.map(str::to_owned);
        e
    }

    /// The error an `ErrorResponse` message's `body` reports (its fields, each a code byte
    /// and a string), on a connection that is `closed` now or not.
    pub(crate) fn from_error_response(body: &[u8], closed: bool, sql: Option<&str>) -> Self {
        let mut info = DbErrorInfo {
            severity: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
            constraint: None,
            table: None,
            column: None,
        };
        let mut code = None;
        let mut fields = body;
        while let Some((&field, rest)) = fields.split_first() {
            if field == 0 {
                break;
            }
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let value = String::from_utf8_lossy(&rest[..end]).into_owned();
            fields = rest.get(end + 1..).unwrap_or_default();
            match field {
                b'S' => info.severity = value,
                b'V' if info.severity.is_empty() => info.severity = value,
                b'C' => code = Some(SqlState::from_code(&value)),
                b'M' => info.message = value,
                b'D' => info.detail = Some(value),
                b'H' => info.hint = Some(value),
                b'n' => info.constraint = Some(value),
                b't' => info.table = Some(value),
                b'c' => info.column = Some(value),
                _ => {}
            }
        }
        let code = code.unwrap_or(SqlState::INTERNAL_ERROR);
        Error::server(info, code, closed, sql)
    }

    /// What failed.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The message, without the kind's label.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The SQLSTATE of a server error, e.g. [`SqlState::UNIQUE_VIOLATION`].
    pub fn code(&self) -> Option<&SqlState> {
        self.inner.code.as_ref()
    }

    /// The server's message, detail, hint and constraint for a server error.
    pub fn db_error(&self) -> Option<&DbErrorInfo> {
        self.inner.db.as_ref()
    }

    /// The constraint that was violated, for integrity errors.
    pub fn constraint(&self) -> Option<&str> {
        self.inner.db.as_ref()?.constraint.as_deref()
    }

    /// The statement that failed, as sent (parameters are never included).
    pub fn statement(&self) -> Option<&str> {
        self.inner.statement.as_deref()
    }

    /// True when running the same work again may succeed: a lost connection, a connect failure
    /// the server may recover from, serialization failure (`40001`), deadlock (`40P01`), admin
    /// shutdown (`57P01`), too many connections (`53300`), any `08` connection exception, and
    /// pool timeouts.
    pub fn is_transient(&self) -> bool {
        if self.inner.permanent {
            return false;
        }
        match self.inner.kind {
            ErrorKind::ConnectionLost | ErrorKind::PoolTimeout => true,
            ErrorKind::Connect => self.inner.code.as_ref().is_none_or(is_transient_code),
            ErrorKind::Query => self.inner.code.as_ref().is_some_and(is_transient_code),
            _ => false,
        }
    }

    /// True for a unique-constraint violation (`23505`).
    pub fn is_unique_violation(&self) -> bool {
        self.inner.code.as_ref() == Some(&SqlState::UNIQUE_VIOLATION)
    }

    /// Marks an error that retrying cannot fix.
    pub(crate) fn permanent(mut self) -> Self {
        self.inner.permanent = true;
        self
    }

    /// Adds the SQLSTATE and server details to a connect error.
    pub(crate) fn with_code(mut self, code: SqlState) -> Self {
        self.inner.code = Some(code);
        self
    }
}

/// SQLSTATEs after which the same work may succeed when run again.
/// True when `message` is "prepared statement "sN" does not exist" for a name the driver
/// gives its statements (`s` and a number).
fn names_a_driver_statement(message: &str) -> bool {
    message
        .strip_prefix("prepared statement \"s")
        .and_then(|rest| rest.split_once('"'))
        .is_some_and(|(digits, _)| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

pub(crate) fn is_transient_code(code: &SqlState) -> bool {
    let c = code.code();
    c.starts_with("08")
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::TOO_MANY_CONNECTIONS
}

/// The number of the label's opening words that, when a message starts with them, show that
/// the message already says what failed (e.g. "could not connect to 127.0.0.1:1: ...").
const LABEL_WORDS: usize = 2;

/// True when `message` opens with the label's first [`LABEL_WORDS`] words, so showing the
/// label in front of it would say the same thing twice.
fn repeats_label(label: &str, message: &str) -> bool {
    let mut said = message.split_whitespace();
    label
        .split_whitespace()
        .take(LABEL_WORDS)
        .all(|word| said.next().is_some_and(|m| m.eq_ignore_ascii_case(word)))
}

/// The message with the kind's label in front, unless the message already opens with what the
/// label says; then the server's code, detail, hint, constraint and the statement.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = self.inner.kind.label();
        let message = &self.inner.message;
        if message.is_empty() {
            f.write_str(label)?;
        } else if repeats_label(label, message) {
            f.write_str(message)?;
        } else {
            write!(f, "{label}: {message}")?;
        }
        if let Some(code) = &self.inner.code {
            write!(f, " (SQLSTATE {})", code.code())?;
        }
        if let Some(db) = &self.inner.db {
            if let Some(detail) = &db.detail {
                write!(f, "; detail: {detail}")?;
            }
            if let Some(hint) = &db.hint {
                write!(f, "; hint: {hint}")?;
            }
            if let Some(constraint) = &db.constraint {
                write!(f, "; constraint: {constraint}")?;
            }
        }
        if let Some(sql) = &self.inner.statement {
            write!(f, "; statement: {sql}")?;
        }
        Ok(())
    }
}

/// Reads like the message and its causes, the way `anyhow` prints an error, because Rust shows
/// this form when `main` returns an error: the `Display` text, then `Caused by:` and the
/// [`source`](std::error::Error::source) chain, one cause a line. `{:#?}` gives the fields
/// (kind, message, SQLSTATE, server details, statement) instead. Neither holds a password or a
/// parameter value, because the error never does.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return self.fields(f);
        }
        write!(f, "{self}")?;
        let causes: Vec<&(dyn std::error::Error + 'static)> =
            std::iter::successors(std::error::Error::source(self), |cause| cause.source())
                .collect();
        if causes.is_empty() {
            return Ok(());
        }
        f.write_str("\n\nCaused by:")?;
        let numbered = causes.len() > 1;
        for (i, cause) in causes.iter().enumerate() {
            let text = cause.to_string();
            if numbered {
                // Continuation lines of a cause line up under its first line.
                write!(f, "\n    {i}: {}", text.replace('\n', "\n       "))?;
            } else {
                write!(f, "\n    {}", text.replace('\n', "\n    "))?;
            }
        }
        Ok(())
    }
}

impl Error {
    /// The fields, for `{:#?}`.
    fn fields(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(code) = &self.inner.code {
            d.field("code", &code.code());
        }
        if let Some(db) = &self.inner.db {
            d.field("db", db);
        }
        if let Some(sql) = &self.inner.statement {
            d.field("statement", sql);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause with a cause of its own, like a driver error wrapping an I/O error.
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("error connecting to server")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn refused() -> Error {
        Error::new(
            ErrorKind::Connect,
            "127.0.0.1:1 refused the connection: is PostgreSQL running and listening there?",
        )
        .with_source(Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        )))
    }

    #[test]
    fn debug_reads_like_the_message_and_its_numbered_causes() {
        assert_eq!(
            format!("{:?}", refused()),
            "could not connect to PostgreSQL: 127.0.0.1:1 refused the connection: is PostgreSQL running and listening there?\n\
             \n\
             Caused by:\n    \
                 0: error connecting to server\n    \
                 1: Connection refused (os error 111)"
        );
    }

    #[test]
    fn debug_of_one_cause_is_not_numbered_and_of_none_is_the_display_text() {
        let one = Error::config("POSTGRES_PORT=\"x\": not a number")
            .with_source(std::io::Error::other("invalid digit found in string"));
        assert_eq!(
            format!("{one:?}"),
            "invalid database configuration: POSTGRES_PORT=\"x\": not a number\n\nCaused by:\n    invalid digit found in string"
        );
        let none = Error::new(ErrorKind::NotFound, "expected one row, got none");
        assert_eq!(format!("{none:?}"), none.to_string());
    }

    #[test]
    fn debug_keeps_newlines_real_and_indents_multi_line_causes() {
        let err = Error::config("2 problems:\n  - POSTGRES_PORT\n  - POSTGRES_HOST")
            .with_source(std::io::Error::other("first line\nsecond line"));
        let text = format!("{err:?}");
        assert!(!text.contains("\\n") && !text.contains("Error {"), "{text}");
        assert!(
            text.contains("\n  - POSTGRES_HOST\n\nCaused by:\n    first line\n    second line"),
            "{text}"
        );
    }

    #[test]
    fn alternate_debug_shows_the_fields() {
        let text = format!("{:#?}", refused());
        assert!(
            text.starts_with("Error {") && text.contains("kind: Connect"),
            "{text}"
        );
    }

    #[test]
    fn display_shows_the_label_before_a_message_that_does_not_say_it() {
        assert_eq!(
            refused().to_string(),
            "could not connect to PostgreSQL: 127.0.0.1:1 refused the connection: is PostgreSQL running and listening there?"
        );
    }

    #[test]
    fn display_does_not_repeat_the_label() {
        let cases = [
            (
                ErrorKind::Connect,
                "could not connect to 127.0.0.1:1: error connecting to server",
            ),
            (
                ErrorKind::NotFound,
                "no row of users has id = 7, nothing to update",
            ),
            (ErrorKind::Timeout, "operation timed out after 5s"),
        ];
        for (kind, message) in cases {
            let text = Error::new(kind, message).to_string();
            assert_eq!(text, message, "{kind:?}");
            let opening: Vec<&str> = kind.label().split_whitespace().take(LABEL_WORDS).collect();
            assert_eq!(text.matches(&opening.join(" ")).count(), 1, "{text}");
        }
        let closed = Error::pool_closed().to_string();
        assert_eq!(closed.matches("closed").count(), 1, "{closed}");
    }
}
