//! Statements sent straight on a connection's stream by the task that holds the connection.
//!
//! The driver runs every statement through its connection's I/O task: the caller's task hands
//! the request over a channel, the I/O task writes it, reads the answer and hands it back, so
//! each statement wakes two tasks and allocates its channel. A connection of one's own (checked
//! out, or a session's) has one user at a time, so coredb lets that user borrow the stream
//! ([`Lend`]) while the driver has nothing under way or waiting to be written: it encodes
//! `Bind`, `Execute` and `Sync` for a statement the driver prepared (and ran once), writes
//! them and reads the answer in its own task: the count, the rows (their `DataRow` bodies
//! gathered into one buffer, [`ReadRows`]) or the server's error. A stream's rows are read the
//! same way a part at a time, as its reader asks for them ([`RowsRead`]), as is a
//! `COPY .. TO STDOUT`'s data ([`Direct::copy_out`]), and a `COPY .. FROM STDIN` is sent as its
//! rows are encoded or its data comes ([`Direct::copy_in`]). On a shared lane, statements are queued
//! for the lane's I/O task to send together instead ([`Direct::queue`]). Anything else
//! (preparing a statement, values the driver must widen, a connection in use by the driver,
//! the binary COPY of `copy_out_rows`) takes the driver's path, which waits for a borrowed
//! stream to come back.
//!
//! A holder that stops waiting (a timeout, a dropped future) leaves the rest of the answer to
//! the driver's task, which reads it to its end before anything of its own; a stream that fails
//! under a borrowed request is seen closed by the driver too, so the pool drops the
//! connection.

use std::io;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{BufMut as _, Bytes, BytesMut};
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
        let statement = self.send(prepared, values)?;
        let (mut rows, mut returned) = (ReadRows::default(), 0);
        let answer = self
            .answer(
                &mut |_, _| Poll::Ready(false),
                |_| {},
                |body| {
                    returned += 1;
                    if rows.len() < keep {
                        rows.add(body);
                    }
                },
                sql,
            )
            .await;
        Some(answer.and_then(|affected| with_rows(rows, returned, affected, statement, sql)))
    }

    /// On a shared lane: runs the prepared statement with `values` like [`run`](Self::run),
    /// queued with the statements of the lane's other callers for the driver's task to send
    /// and answer (see `wire::queue`); `None` when the driver must run it.
    pub(crate) async fn queue(
        &self,
        prepared: &Prepared,
        values: &[SqlParam<'_>],
        sql: &str,
        keep: usize,
    ) -> Option<Result<Answer>> {
        let (name, statement) = ready(prepared)?;
        let ticket = self
            .0
            .enqueue(&mut |buf| encode(name, statement, values, buf), name, keep)?;
        let mut waiting = Ticket(Some(&*self.0), ticket);
        let queued = std::future::poll_fn(|cx| self.0.poll_queued(ticket, cx)).await;
        waiting.0 = None;
        let affected = outcome(queued.lost.map(io::Error::from), queued.failed, sql);
        Some(affected.and_then(|()| {
            with_rows(
                queued.rows,
                queued.returned,
                queued.affected,
                statement,
                sql,
            )
        }))
    }

    /// Sends the prepared statement with `values` for a stream of its rows, which its holder
    /// reads as the stream's reader asks for them ([`RowsRead`]); `None` when the driver must
    /// run it, as for [`run`](Self::run).
    pub(crate) fn rows(&self, prepared: &Prepared, values: &[SqlParam<'_>]) -> Option<RowsRead> {
        let statement = self.send(prepared, values)?;
        Some(RowsRead::new(&self.0, Some(statement.clone())))
    }

    /// Takes the stream for the prepared statement with `values` (its `Bind`, `Execute` and
    /// `Sync`); its statement, or `None` when the driver must run it.
    fn send<'p>(&self, prepared: &'p Prepared, values: &[SqlParam<'_>]) -> Option<&'p Statement> {
        let (name, statement) = ready(prepared)?;
        let started = self.0.start(&mut |buf| {
            encode(name, statement, values, buf) && {
                frontend::sync(buf);
                true
            }
        });
        started.then_some(statement)
    }

    /// Sends `sql`, one `COPY .. TO STDOUT`, as a simple query, for a stream of its data which
    /// its holder reads as the stream's reader asks for it ([`RowsRead::poll_data`]); `None`
    /// when the driver must run it (it has something under way).
    pub(crate) fn copy_out(&self, sql: &str) -> Option<RowsRead> {
        let started = self.0.start(&mut |buf| frontend::query(sql, buf).is_ok());
        started.then(|| RowsRead::new(&self.0, None))
    }

    /// Runs `sql`, one `COPY .. FROM STDIN` without parameters, as a simple query, sending the
    /// data `fill` appends (the COPY's own format), a part at a time as the socket takes it;
    /// returns the number of rows, or `None` when the driver must run it (it has something
    /// under way). A part that `fill` reports [`Failed`](CopyPart::Failed) is dropped and the
    /// COPY abandoned: the server keeps none of it and answers `57014`. So does a COPY whose
    /// caller stops waiting.
    pub(crate) async fn copy_in(
        &self,
        sql: &str,
        fill: &mut (dyn FnMut(&mut Context<'_>, &mut BytesMut) -> Poll<CopyPart> + Send),
    ) -> Option<Result<u64>> {
        if !self.0.start(&mut |buf| frontend::query(sql, buf).is_ok()) {
            return None;
        }
        let mut more = |cx: &mut Context<'_>, buf: &mut BytesMut| copy_data(cx, buf, fill);
        let abandoned = |buf: &mut BytesMut| {
            let _ = frontend::copy_fail("the COPY's caller stopped waiting", buf);
        };
        Some(self.answer(&mut more, abandoned, |_| {}, sql).await)
    }

    /// Sends what [`Lend::start`] took (and what `more` gives), then reads the answer: each
    /// row's body goes to `row`; returns the count its command tag gives, or the server's
    /// error. A caller that stops waiting abandons the request, ended by what `unfinished`
    /// encodes if it had more to come.
    async fn answer(
        &self,
        more: &mut (dyn FnMut(&mut Context<'_>, &mut BytesMut) -> Poll<bool> + Send),
        unfinished: fn(&mut BytesMut),
        mut row: impl FnMut(&[u8]),
        sql: &str,
    ) -> Result<u64> {
        let mut waiting = Waiting(Some(&*self.0), unfinished);
        let mut affected = 0;
        let mut failed: Option<Vec<u8>> = None;
        let answer = std::future::poll_fn(|cx| {
            self.0.poll_answer(cx, more, &mut |tag, body| match tag {
                b'D' => row(body),
                b'C' => affected = affected_by(body),
                b'E' if failed.is_none() => failed = Some(body.to_vec()),
                _ => {}
            })
        })
        .await;
        waiting.0 = None;
        outcome(answer.err(), failed, sql).map(|()| affected)
    }
}

/// A prepared statement's name and statement, when its holder may send it: not on its first
/// run (which the driver makes, behind the `Close` of any statement it evicted).
fn ready(prepared: &Prepared) -> Option<(&str, &Statement)> {
    if prepared.fresh {
        return None;
    }
    Some((prepared.name.as_deref()?, &prepared.statement))
}

/// What an answer read by coredb means: the server's error (its `ErrorResponse`'s body), or
/// the stream's failure (`lost`), or success.
fn outcome(lost: Option<io::Error>, failed: Option<Vec<u8>>, sql: &str) -> Result<()> {
    match (lost, failed) {
        (None, None) => Ok(()),
        (None, Some(body)) => Err(Error::from_error_response(&body, false, Some(sql))),
        // The server said why before it closed the connection (a FATAL error).
        (Some(_), Some(body)) => Err(Error::from_error_response(&body, true, Some(sql))),
        (Some(err), None) => Err(Error::new(
            ErrorKind::ConnectionLost,
            format!("connection closed: {err}"),
        )
        .with_statement(sql)),
    }
}

/// The rows read for `statement`, as its answer.
fn with_rows(
    rows: ReadRows,
    returned: u64,
    affected: u64,
    statement: &Statement,
    sql: &str,
) -> Result<Answer> {
    match rows.into_rows(statement) {
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
    }
}

/// How far the data for a COPY went in one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyPart {
    /// More is to come.
    More,
    /// That was all of it.
    Done,
    /// It could not be encoded: the COPY is abandoned.
    Failed,
}

/// Appends one `CopyData` message holding what `fill` gives (none when it gives nothing),
/// then `CopyDone` when that was all, or only `CopyFail` when it failed; true while more is
/// to come.
fn copy_data(
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    fill: &mut dyn FnMut(&mut Context<'_>, &mut BytesMut) -> Poll<CopyPart>,
) -> Poll<bool> {
    let at = buf.len();
    buf.put_u8(b'd');
    buf.put_i32(0);
    let Poll::Ready(part) = fill(cx, buf) else {
        buf.truncate(at);
        return Poll::Pending;
    };
    let len = i32::try_from(buf.len() - at - 1);
    match (part, len) {
        (CopyPart::Failed, _) | (_, Err(_)) => {
            buf.truncate(at);
            let _ = frontend::copy_fail("the data for COPY could not be encoded", buf);
            return Poll::Ready(false);
        }
        (_, Ok(4)) => buf.truncate(at),
        (_, Ok(len)) => buf[at + 1..at + 5].copy_from_slice(&len.to_be_bytes()),
    }
    if part == CopyPart::Done {
        frontend::copy_done(buf);
    }
    Poll::Ready(part == CopyPart::More)
}

/// What a statement its holder sent reads back a part at a time as it is asked for: the rows
/// of a query ([`Direct::rows`]) or the data of a `COPY .. TO STDOUT` ([`Direct::copy_out`]).
/// Memory stays bounded however big the result. Dropped before the end, the statement is
/// abandoned and the driver's task reads the rest of its answer.
pub(crate) struct RowsRead {
    lend: Arc<dyn Lend>,
    /// The query's statement; `None` for a COPY.
    statement: Option<Statement>,
    /// The rows of the part being read...
    batch: ReadRows,
    /// ...or its COPY data, and where each `CopyData` message of it ends.
    data: BytesMut,
    cuts: Vec<usize>,
    /// The body of the server's error, once read.
    failed: Option<Vec<u8>>,
    /// The answer ended (or the connection was lost).
    ended: bool,
}

impl RowsRead {
    fn new(lend: &Arc<dyn Lend>, statement: Option<Statement>) -> Self {
        RowsRead {
            lend: Arc::clone(lend),
            statement,
            batch: ReadRows::default(),
            data: BytesMut::new(),
            cuts: Vec::new(),
            failed: None,
            ended: false,
        }
    }

    /// The rows read next (as many as came in one read), then, after the last of them, the
    /// server's error if there was one, then `None`. `sql` names the statement in errors.
    pub(crate) fn poll_rows(
        &mut self,
        cx: &mut Context<'_>,
        sql: &str,
    ) -> Poll<Option<Result<Vec<Row>>>> {
        Poll::Ready(match ready!(self.poll_part(cx, sql)) {
            Some(Ok(())) => {
                let batch = std::mem::take(&mut self.batch);
                Some(match &self.statement {
                    Some(statement) => with_rows(batch, 0, 0, statement, sql).map(|a| a.rows),
                    // A COPY's answer has no rows.
                    None => Ok(Vec::new()),
                })
            }
            other => other.map(|r| r.map(|()| Vec::new())),
        })
    }

    /// Like [`poll_rows`](Self::poll_rows), the data of a `COPY .. TO STDOUT`, a chunk per
    /// `CopyData` message (a row, in the text and CSV formats).
    pub(crate) fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
        sql: &str,
    ) -> Poll<Option<Result<Vec<Bytes>>>> {
        Poll::Ready(match ready!(self.poll_part(cx, sql)) {
            Some(Ok(())) => {
                let mut data = std::mem::take(&mut self.data).freeze();
                let mut from = 0;
                let chunks = self
                    .cuts
                    .drain(..)
                    .map(|cut| {
                        let chunk = data.split_to(cut - from);
                        from = cut;
                        chunk
                    })
                    .collect();
                Some(Ok(chunks))
            }
            other => other.map(|r| r.map(|()| Vec::new())),
        })
    }

    /// Reads the next part: ready with `Some(Ok(()))` once rows or data were gathered, then,
    /// after the last part, the server's error if there was one, then `None`.
    fn poll_part(&mut self, cx: &mut Context<'_>, sql: &str) -> Poll<Option<Result<()>>> {
        loop {
            if self.ended {
                let failed = self.failed.take();
                return Poll::Ready(
                    failed.map(|body| Err(Error::from_error_response(&body, false, Some(sql)))),
                );
            }
            let (batch, data, cuts, failed) = (
                &mut self.batch,
                &mut self.data,
                &mut self.cuts,
                &mut self.failed,
            );
            let polled = self.lend.poll_some(cx, &mut |tag, body| match tag {
                b'D' => batch.add(body),
                b'd' => {
                    data.extend_from_slice(body);
                    cuts.push(data.len());
                }
                b'E' if failed.is_none() => *failed = Some(body.to_vec()),
                _ => {}
            });
            match ready!(polled) {
                Err(err) => {
                    self.ended = true;
                    return Poll::Ready(Some(outcome(Some(err), self.failed.take(), sql)));
                }
                Ok(ended) => {
                    self.ended = ended;
                    if self.batch.len() > 0 || !self.cuts.is_empty() {
                        return Poll::Ready(Some(Ok(())));
                    }
                }
            }
        }
    }
}

impl Drop for RowsRead {
    fn drop(&mut self) {
        if !self.ended {
            self.lend.abandon(&mut |_| {});
        }
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

/// Abandons the borrowed request when dropped before its answer was read, ending a request
/// that had more to come with what the function encodes.
struct Waiting<'a>(Option<&'a dyn Lend>, fn(&mut BytesMut));

/// Forgets a queued statement when dropped before its answer came.
struct Ticket<'a>(Option<&'a dyn Lend>, u64);

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(lend) = self.0 {
            lend.forget(self.1);
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(lend) = self.0 {
            lend.abandon(&mut |buf| (self.1)(buf));
        }
    }
}

/// Encodes `Bind` (the unnamed portal, binary results) and `Execute` for `statement` with
/// `values` into `buf`; false when a value does not encode as it is (the driver's path
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
    bound.is_ok() && frontend::execute("", 0, buf).is_ok()
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
pub(super) fn affected_by(tag: &[u8]) -> u64 {
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
