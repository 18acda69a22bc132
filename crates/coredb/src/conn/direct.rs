//! Statements sent straight on a connection's stream by the task that holds the connection.
//!
//! The driver runs every statement through its connection's I/O task: the caller's task hands
//! the request over a channel, the I/O task writes it, reads the answer and hands it back, so
//! each statement wakes two tasks and allocates its channel. A connection of one's own (checked
//! out, or a session's) has one user at a time, so coredb lets that user borrow the stream
//! ([`Lend`]) while the driver has nothing under way or waiting to be written: it encodes
//! `Bind`, `Execute` and `Sync` for a statement the driver prepared (and ran once), writes
//! them and reads the answer in its own task: the count, the rows (their `DataRow` bodies
//! gathered into one buffer, [`ReadRows`]) or the server's error. Anything else (preparing a
//! statement, values the driver must widen, a connection in use by the driver, a shared lane,
//! streams and COPY) takes the driver's path, which waits for a borrowed stream to come back.
//!
//! A holder that stops waiting (a timeout, a dropped future) leaves the rest of the answer to
//! the driver's task, which reads it to its end before anything of its own; a stream that fails
//! under a borrowed request is seen closed by the driver too, so the pool drops the
//! connection.

use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use postgres_types::IsNull;
use tokio_postgres::Statement;

use super::statement_cache::Prepared;
use super::wire::Lend;
use crate::error::{Error, ErrorKind, Result};
use crate::params::SqlParam;
use crate::row::{ReadRows, Row};

/// A connection's stream as its holder may borrow it.
pub(crate) struct Direct(Arc<dyn Lend>);

impl Direct {
    pub(super) fn new(lend: Arc<dyn Lend>) -> Self {
        Direct(lend)
    }

    /// Runs the prepared statement with `values`, keeping its first `keep` rows, or returns
    /// `None` when the driver must run it: its first run after preparing, a connection on which
    /// the driver has something under way or waiting to be written, or a value that does not
    /// encode for its parameter's type as it is.
    pub(crate) async fn run(
        &self,
        prepared: &Prepared,
        values: &[SqlParam<'_>],
        sql: &str,
        keep: usize,
    ) -> Option<Result<Answer>> {
        if prepared.fresh {
            return None;
        }
        let name = prepared.name.as_deref()?;
        let statement = &prepared.statement;
        if !self
            .0
            .start(&mut |buf| encode(name, statement, values, buf))
        {
            return None;
        }
        let mut waiting = Waiting(Some(&*self.0));
        let (mut rows, mut returned, mut affected) = (ReadRows::default(), 0, 0);
        let mut failed: Option<Vec<u8>> = None;
        let answer = std::future::poll_fn(|cx| {
            self.0.poll_answer(cx, &mut |tag, body| match tag {
                b'D' => {
                    returned += 1;
                    if rows.len() < keep {
                        rows.add(body);
                    }
                }
                b'C' => affected = affected_by(body),
                b'E' if failed.is_none() => failed = Some(body.to_vec()),
                _ => {}
            })
        })
        .await;
        waiting.0 = None;
        Some(match (answer, failed) {
            (Ok(()), None) => match rows.into_rows(statement) {
                Some(rows) => Ok(Answer {
                    rows,
                    returned,
                    affected,
                }),
                None => Err(Error::new(
                    ErrorKind::Decode,
                    "the server sent rows whose values do not match the statement's columns",
                )
                .with_statement(sql)),
            },
            (Ok(()), Some(body)) => Err(Error::from_error_response(&body, false, Some(sql))),
            // The server said why before it closed the connection (a FATAL error).
            (Err(_), Some(body)) => Err(Error::from_error_response(&body, true, Some(sql))),
            (Err(err), None) => Err(Error::new(
                ErrorKind::ConnectionLost,
                format!("connection closed: {err}"),
            )
            .with_statement(sql)),
        })
    }
}

/// What a statement sent by its holder gave back.
pub(crate) struct Answer {
    /// Its first rows, as many as asked for.
    pub(crate) rows: Vec<Row>,
    /// How many rows it returned.
    pub(crate) returned: u64,
    /// How many rows its command tag says it affected.
    pub(crate) affected: u64,
}

/// Abandons the borrowed request when dropped before its answer was read.
struct Waiting<'a>(Option<&'a dyn Lend>);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(lend) = self.0 {
            lend.abandon();
        }
    }
}

/// Encodes `Bind` (the unnamed portal, binary results), `Execute` and `Sync` for `statement`
/// with `values` into `buf`; false when a value does not encode as it is (the driver's path
/// then widens it, or names it in its error).
fn encode(name: &str, statement: &Statement, values: &[SqlParam<'_>], buf: &mut BytesMut) -> bool {
    let types = statement.params();
    if types.len() != values.len() {
        return false;
    }
    let bound = frontend::bind(
        "",
        name,
        values
            .iter()
            .zip(types)
            .map(|(value, ty)| value.encode_format(ty) as i16),
        values.iter().zip(types),
        |(value, ty), buf| match value.to_sql_checked(ty, buf)? {
            IsNull::No => Ok(postgres_protocol::IsNull::No),
            IsNull::Yes => Ok(postgres_protocol::IsNull::Yes),
        },
        Some(1),
        buf,
    );
    if bound.is_err() || frontend::execute("", 0, buf).is_err() {
        return false;
    }
    frontend::sync(buf);
    true
}

/// The name the driver gave `statement` on the server, which it shows only in its `Debug`
/// output (`Statement { name: "s12", .. }`); `None` when that output does not show one, and
/// the statement then runs on the driver's path.
pub(super) fn statement_name(statement: &Statement) -> Option<Arc<str>> {
    let shown = format!("{statement:?}");
    let name = shown
        .strip_prefix("Statement { name: \"")?
        .split('"')
        .next()?;
    let numbered = name.strip_prefix('s')?;
    (!numbered.is_empty() && numbered.bytes().all(|b| b.is_ascii_digit())).then(|| name.into())
}

/// The rows a command tag (`INSERT 0 3`, `UPDATE 2`, `SELECT 5`) says were affected; 0 for
/// one without a count (`CREATE TABLE`).
fn affected_by(tag: &[u8]) -> u64 {
    let tag = tag.strip_suffix(&[0]).unwrap_or(tag);
    tag.rsplit(|&b| b == b' ')
        .next()
        .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::affected_by as affected;

    #[test]
    fn a_command_tag_gives_the_rows_it_affected_and_zero_without_a_count() {
        assert_eq!(affected(b"INSERT 0 3\0"), 3);
        assert_eq!(affected(b"UPDATE 12\0"), 12);
        assert_eq!(affected(b"SELECT 5\0"), 5);
        assert_eq!(affected(b"CREATE TABLE\0"), 0);
        assert_eq!(affected(b"\0"), 0);
    }
}
