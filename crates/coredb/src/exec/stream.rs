//! A statement whose rows (or, for `COPY .. TO STDOUT`, whose bytes) are read as they
//! arrive, instead of gathered first.
//!
//! On a connection of one's own, the rows of a prepared statement (or a `COPY .. TO STDOUT`'s
//! data) are read from the socket a part at a time, as the reader asks for them
//! (`conn::RowsRead`); otherwise the driver hands them over a channel of one message batch. Either way a reader that stops pulling stops the
//! connection from reading the socket: memory stays bounded however big the result.
//! The connection is marked busy from the moment the statement leaves until its last row (or
//! its error) is read; a stream dropped half-way leaves it busy, so a connection of the
//! stream's own is cancelled and closed, never pooled with unread rows, and a shared one (a
//! session's) answers its next statement only after the driver discarded the rest.

use std::ops::DerefMut;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::Stream;
use tracing::Instrument as _;

use super::copy::Place;
use super::{
    after_error, encode, prepare, prepare_text, query_failed, report, typed_values, Context,
};
use crate::conn::{Event, PgConn, RowsRead};
use crate::error::{Error, Result};
use crate::params::{Bound, SqlParam, TextKey};
use crate::row::{CopyColumn, Row};
use crate::sql::StatementClass;
use tokio_postgres::binary_copy::BinaryCopyOutStream;

/// The connection a stream reads from: borrowed (a session's, a checked-out connection's) or
/// owned (the manager's autocommit stream).
pub(crate) type Held<'a> = Box<dyn DerefMut<Target = PgConn> + Send + 'a>;

/// Called with an error the server sent mid-stream (a session records it: its transaction is
/// aborted).
pub(crate) type OnError<'a> = Box<dyn FnMut(&Error) + Send + 'a>;

/// What a stream reads: a query's rows, a `COPY .. TO STDOUT`'s data, or a query's rows
/// through a binary COPY.
enum Source {
    Rows(Pin<Box<tokio_postgres::RowStream>>),
    /// Rows the connection's holder reads itself, those of the last part read not handed out
    /// yet, and the statement's key in the connection's cache.
    Direct(Box<RowsRead>, std::vec::IntoIter<Row>, TextKey),
    /// A `COPY .. TO STDOUT`'s data the connection's holder reads itself, and the chunks of the
    /// last part read not handed out yet.
    DirectCopy(Box<RowsRead>, std::vec::IntoIter<Bytes>),
    Copy(Pin<Box<tokio_postgres::CopyOutStream>>),
    CopyRows(Pin<Box<BinaryCopyOutStream>>, Arc<[CopyColumn]>),
}

/// What the caller reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// A query's rows (`stream`).
    Rows,
    /// The data of a `COPY .. TO STDOUT` statement (`copy_out`).
    CopyData,
    /// A query's rows, sent as a binary `COPY (query) TO STDOUT` (`copy_out_rows`).
    CopyRows,
}

/// One item of a [`Streaming`].
pub enum Item {
    /// A row of a query.
    Row(Row),
    /// A chunk of a `COPY .. TO STDOUT`'s data.
    Data(Bytes),
}

/// Rows (or COPY data) of one statement as they arrive; see the module doc.
pub struct Streaming<'a> {
    conn: Held<'a>,
    source: Source,
    context: Arc<Context>,
    class: StatementClass,
    text: String,
    span: tracing::Span,
    started: Instant,
    count: u64,
    ended: bool,
    on_error: Option<OnError<'a>>,
}

/// Sends `bound` on `conn` and returns what `read` asks for as a stream; nothing is read yet.
///
/// # Errors
/// Parameter errors (nothing sent), a COPY where rows are wanted or the other way round, or
/// the server's error for the statement's first message.
pub(crate) async fn stream<'a>(
    mut conn: Held<'a>,
    context: Arc<Context>,
    bound: &Bound<'_, '_>,
    read: Read,
    place: Place,
    on_error: Option<OnError<'a>>,
) -> Result<Streaming<'a>> {
    let is_copy = bound.class.operation() == Some("COPY");
    let refused = match (read, is_copy) {
        (Read::CopyData, false) => {
            Some("copy_out runs `COPY .. TO STDOUT`; read a query's rows with stream")
        }
        (Read::Rows, true) => Some("a COPY's data is read with copy_out, not as rows"),
        (Read::CopyRows, true) => {
            Some("copy_out_rows takes the query whose rows to copy (it writes the COPY itself)")
        }
        _ => None,
    };
    if let Some(message) = refused {
        return Err(Error::params(message).with_statement(bound.text.as_str()));
    }
    let copy = read != Read::Rows;
    if copy && context.settings.pgbouncer_transaction {
        if place == Place::Connection {
            return Err(Error::params(
                "behind PgBouncer in transaction mode (POSTGRES_PGBOUNCER=transaction), COPY .. TO STDOUT runs in a transaction: call copy_out in a session, or on the manager",
            )
            .with_statement(bound.text.as_str()));
        }
        // The stream's connection is its own: the transaction is rolled back when it goes back
        // to the pool (COPY TO writes nothing).
        super::copy::begin_own_transaction(&mut conn, &context, place).await?;
    }
    let leaves_state = !bound.class.is_shareable();
    conn.on(Event::Sent { leaves_state });
    let span = crate::telemetry::statement_span(context.target(), bound.class, bound.text.as_str());
    let started = Instant::now();
    let source = match read {
        Read::Rows => start(&conn, bound).instrument(span.clone()).await,
        Read::CopyData => start_copy(&conn, bound).instrument(span.clone()).await,
        Read::CopyRows => {
            start_copy_rows(&conn, &context, bound)
                .instrument(span.clone())
                .await
        }
    };
    let source = match source {
        Ok(source) => source,
        Err(err) => {
            conn.on(after_error(&err));
            report(
                &context,
                &span,
                bound.class,
                bound.text.as_str(),
                started.elapsed(),
                None,
                Some(&err),
            );
            return Err(err);
        }
    };
    Ok(Streaming {
        conn,
        source,
        class: bound.class,
        text: bound.text.as_str().to_owned(),
        context,
        span,
        started,
        count: 0,
        ended: false,
        on_error,
    })
}

/// Prepares (or takes from the cache) and sends the statement; unnamed, in one round trip,
/// when the cache is off. Values the driver refuses for their parameter's type are sent again
/// widened, as [`run_on`](super::run_on) does.
async fn start(conn: &PgConn, bound: &Bound<'_, '_>) -> Result<Source> {
    if !conn.statements.is_enabled() {
        let sql = bound.text.as_str();
        return conn
            .client
            .query_typed_raw(sql, typed_values(bound)?)
            .await
            .map(|rows| Source::Rows(Box::pin(rows)))
            .map_err(|e| Error::from_driver(e, Some(sql)));
    }
    let prepared = prepare(conn, bound).await?;
    if let Some(rows) = conn
        .direct()
        .and_then(|direct| direct.rows(&prepared, &bound.values))
    {
        return Ok(Source::Direct(
            Box::new(rows),
            Vec::new().into_iter(),
            bound.key,
        ));
    }
    let statement = prepared.statement;
    let rows = send_widened!(conn, &statement, bound, |values| conn
        .client
        .query_raw(&statement, values.iter().copied())
        .await)?;
    Ok(Source::Rows(Box::pin(rows)))
}

/// Sends `COPY (query) TO STDOUT (FORMAT binary)` for the query of `bound`, whose columns
/// (names and types, to decode the binary rows) come from preparing the query itself.
async fn start_copy_rows(
    conn: &PgConn,
    context: &Context,
    bound: &Bound<'_, '_>,
) -> Result<Source> {
    let query = bound.text.as_str().trim_end().trim_end_matches(';');
    if !bound.values.is_empty() {
        return Err(Error::params(
            "COPY takes no parameters: write the values into the query, or filter after reading",
        )
        .with_statement(query));
    }
    let described = prepare_text(conn, context.rewrites.key(query), query)
        .await?
        .statement;
    let columns: Arc<[CopyColumn]> = described
        .columns()
        .iter()
        .map(|c| CopyColumn {
            name: c.name().to_owned(),
            type_: c.type_().clone(),
        })
        .collect();
    let types: Vec<_> = columns.iter().map(|c| c.type_.clone()).collect();
    let copy = format!("COPY ({query}) TO STDOUT (FORMAT binary)");
    let statement = prepare_text(conn, context.rewrites.key(&copy), &copy)
        .await?
        .statement;
    let data = conn
        .client
        .copy_out(&statement)
        .await
        .map_err(|err| Error::from_driver(err, Some(&copy)))?;
    Ok(Source::CopyRows(
        Box::pin(BinaryCopyOutStream::new(data, &types)),
        columns,
    ))
}

/// Sends a `COPY .. TO STDOUT`, which takes no parameters.
async fn start_copy(conn: &PgConn, bound: &Bound<'_, '_>) -> Result<Source> {
    let sql = bound.text.as_str();
    if !bound.values.is_empty() {
        return Err(Error::params(
            "COPY takes no parameters: put the values in the statement's query, or filter after reading",
        )
        .with_statement(sql));
    }
    if let Some(data) = conn.direct().and_then(|direct| direct.copy_out(sql)) {
        return Ok(Source::DirectCopy(Box::new(data), Vec::new().into_iter()));
    }
    let statement = prepare_text(conn, bound.key, sql).await?.statement;
    conn.client
        .copy_out(&statement)
        .await
        .map(|data| Source::Copy(Box::pin(data)))
        .map_err(|err| query_failed(conn, err, bound, &statement))
}

impl Streaming<'_> {
    /// Records the end of the statement: on the connection, the span and the metrics.
    fn finish(&mut self, error: Option<&Error>) {
        self.ended = true;
        self.conn.on(error.map_or(Event::Replied, after_error));
        if let (Some(err), Some(on_error)) = (error, self.on_error.as_mut()) {
            on_error(err);
        }
        report(
            &self.context,
            &self.span,
            self.class,
            &self.text,
            self.started.elapsed(),
            Some(self.count),
            error,
        );
    }
}

impl Stream for Streaming<'_> {
    type Item = Result<Item>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let polled = {
            let _in_span = this.span.enter();
            let driver = |e| Error::from_driver(e, Some(&this.text));
            match &mut this.source {
                Source::Rows(rows) => rows
                    .as_mut()
                    .poll_next(cx)
                    .map(|r| r.map(|r| r.map(|row| Item::Row(Row::from(row))).map_err(driver))),
                Source::Direct(rows, part, key) => {
                    let text = &this.text;
                    let polled = next_of(part, cx, |cx| rows.poll_rows(cx, text), Item::Row);
                    if let Poll::Ready(Some(Err(_))) = polled {
                        // Like any failure of a prepared statement: the plan may be stale
                        // after DDL (the server refuses it when its Bind arrives).
                        this.conn.statements.remove(*key);
                    }
                    polled
                }
                Source::DirectCopy(data, part) => {
                    let text = &this.text;
                    next_of(part, cx, |cx| data.poll_data(cx, text), Item::Data)
                }
                Source::Copy(data) => data
                    .as_mut()
                    .poll_next(cx)
                    .map(|r| r.map(|r| r.map(Item::Data).map_err(driver))),
                Source::CopyRows(rows, columns) => rows.as_mut().poll_next(cx).map(|r| {
                    r.map(|r| {
                        r.map(|row| Item::Row(Row::from_copy(row, Arc::clone(columns))))
                            .map_err(driver)
                    })
                }),
            }
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(item))) => {
                // Rows, or for COPY the chunks of data (one per row in text and CSV formats).
                this.count += 1;
                Poll::Ready(Some(Ok(item)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.finish(Some(&err));
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                this.finish(None);
                Poll::Ready(None)
            }
        }
    }
}

/// The next item of the part its holder read last, reading the next part with `read` once
/// this one is handed out.
fn next_of<T>(
    part: &mut std::vec::IntoIter<T>,
    cx: &mut TaskContext<'_>,
    mut read: impl FnMut(&mut TaskContext<'_>) -> Poll<Option<Result<Vec<T>>>>,
    item: fn(T) -> Item,
) -> Poll<Option<Result<Item>>> {
    loop {
        if let Some(next) = part.next() {
            return Poll::Ready(Some(Ok(item(next))));
        }
        match std::task::ready!(read(cx)) {
            Some(Ok(next)) => *part = next.into_iter(),
            Some(Err(err)) => return Poll::Ready(Some(Err(err))),
            None => return Poll::Ready(None),
        }
    }
}

impl Drop for Streaming<'_> {
    fn drop(&mut self) {
        if !self.ended && !self.span.is_disabled() {
            self.span.record("db.response.returned_rows", self.count);
            self.span.record("error.type", "abandoned");
        }
    }
}
