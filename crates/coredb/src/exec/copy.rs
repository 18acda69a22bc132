//! `COPY .. FROM STDIN` on a connection of one's own: models in binary, or any data the
//! caller streams.

use std::pin::{pin, Pin};
use std::task::Poll;

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::{SinkExt as _, Stream, StreamExt as _};
use postgres_types::{IsNull, Type};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tracing::Instrument as _;

use super::{observe, prepare_text, run_simple, settled, Context, Reply};
use crate::conn::{CopyPart, Event, PgConn};
use crate::error::{Error, Result};
use crate::params::{Bound, SqlParam, TextKey};

/// The data a caller streams into `COPY .. FROM STDIN`.
pub type CopyData<'a> = Pin<
    Box<
        dyn Stream<Item = std::result::Result<Bytes, Box<dyn std::error::Error + Send + Sync>>>
            + Send
            + 'a,
    >,
>;

/// The values of the rows a caller writes with a binary COPY, one `Vec` per row.
pub type RowValues<'a> = Box<dyn Iterator<Item = Vec<SqlParam<'a>>> + Send + 'a>;

/// Where a binary COPY takes its rows from: each row's values are put into one vector reused
/// for every row.
pub(crate) trait CopyRows<'v>: Send {
    /// Puts the next row's values into `out` (emptied first); false when there are no more.
    fn next_into(&mut self, out: &mut Vec<SqlParam<'v>>) -> bool;
}

impl<'v> CopyRows<'v> for RowValues<'v> {
    fn next_into(&mut self, out: &mut Vec<SqlParam<'v>>) -> bool {
        self.next().map(|row| *out = row).is_some()
    }
}

/// Sends `data` into the `COPY .. FROM STDIN` of `bound`, as it comes (on a connection of one's
/// own, by its holder, as one simple query whose parts gather what the stream gives without
/// waiting, up to [`COPY_PART`] bytes); returns the number of rows. A chunk the caller's stream fails to give abandons the COPY (the server keeps none of
/// it and answers `57014`, which in a transaction aborts it) and is returned as a
/// [`Params`](crate::ErrorKind::Params) error carrying that code.
pub(crate) async fn copy_in_data(
    conn: &mut PgConn,
    context: &Context,
    bound: &Bound<'_, '_>,
    data: CopyData<'_>,
    place: Place,
) -> Result<u64> {
    let sql = bound.text.as_str();
    if bound.class.operation() != Some("COPY") || !bound.values.is_empty() {
        return Err(Error::params(
            "copy_in_bytes runs one `COPY .. FROM STDIN` statement, without parameters",
        )
        .with_statement(sql));
    }
    let own = begin_own_transaction(conn, context, place).await?;
    conn.on(Event::Sent {
        leaves_state: !bound.class.is_shareable(),
    });
    let result = {
        let pg = &*conn;
        let work = pin!(async move {
            let half_way = |e: Box<dyn std::error::Error + Send + Sync>| {
                Error::params(format!(
                    "the data for COPY failed half-way ({e}); the COPY was abandoned and none of its rows kept"
                ))
                .with_code(SqlState::QUERY_CANCELED)
                .with_statement(sql)
            };
            let mut data = data;
            if let Some(direct) = pg.direct() {
                let mut failure = None;
                let sent = direct
                    .copy_in(sql, &mut |cx, buf| {
                        let start = buf.len();
                        while buf.len() - start < COPY_PART {
                            match data.as_mut().poll_next(cx) {
                                Poll::Ready(Some(Ok(chunk))) => buf.extend_from_slice(&chunk),
                                Poll::Ready(Some(Err(e))) => {
                                    failure = Some(half_way(e));
                                    return Poll::Ready(CopyPart::Failed);
                                }
                                Poll::Ready(None) => return Poll::Ready(CopyPart::Done),
                                // What came so far goes out while the rest is awaited.
                                Poll::Pending if buf.len() > start => break,
                                Poll::Pending => return Poll::Pending,
                            }
                        }
                        Poll::Ready(CopyPart::More)
                    })
                    .await;
                if let Some(done) = sent {
                    return ours_first(done, failure).map(Reply::Count);
                }
            }
            let statement = prepare_text(pg, bound.key, sql).await?.statement;
            let driver = |e| Error::from_driver(e, Some(sql));
            let sink = pg
                .client
                .copy_in::<_, Bytes>(&statement)
                .await
                .map_err(driver)?;
            let mut sink = pin!(sink);
            while let Some(chunk) = data.next().await {
                // Dropping the sink unfinished tells the server the COPY failed.
                let chunk = chunk.map_err(half_way)?;
                sink.as_mut().send(chunk).await.map_err(driver)?;
            }
            sink.finish().await.map(Reply::Count).map_err(driver)
        });
        observe(context, bound, context.settings.statement_guard, work).await
    };
    conn.on(settled(&result));
    end_own_transaction(conn, own, result.map(Reply::count)).await
}

/// Where a COPY runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// In a session's transaction.
    Session,
    /// On a checked-out connection, in autocommit.
    Connection,
    /// On a connection of the statement's own (the manager's streams).
    OwnConnection,
}

/// Behind PgBouncer in transaction mode, COPY's statement is prepared (the driver has no
/// unnamed COPY), so it must meet the same server connection: outside a session, the COPY is
/// given a transaction of its own. Returns whether it was.
pub(crate) async fn begin_own_transaction(
    conn: &mut PgConn,
    context: &Context,
    place: Place,
) -> Result<bool> {
    if !context.settings.pgbouncer_transaction || place == Place::Session {
        return Ok(false);
    }
    run_simple(conn, "BEGIN", Event::BeginSent).await?;
    Ok(true)
}

/// Ends the transaction [`begin_own_transaction`] opened: committed after `result` succeeded,
/// rolled back otherwise.
async fn end_own_transaction<T>(conn: &mut PgConn, own: bool, result: Result<T>) -> Result<T> {
    if !own {
        return result;
    }
    match result {
        Ok(value) => run_simple(conn, "COMMIT", Event::EndSent)
            .await
            .map(|()| value),
        Err(err) => {
            // The error that matters is the COPY's; a failed rollback closes the connection.
            let _ = run_simple(conn, "ROLLBACK", Event::EndSent).await;
            Err(err)
        }
    }
}

/// Copies `rows` with `copy_sql`; the columns' types come from `insert_sql`, the one-row INSERT
/// of the same columns (prepared once and usually cached already). Returns the number of rows.
///
/// The connection counts as busy until the copy ends, so a copy abandoned half-way (its future
/// dropped) closes the connection instead of returning it to the pool mid-COPY. It runs in a
/// `copy` span.
pub(crate) async fn copy_in<'v>(
    conn: &mut PgConn,
    context: &Context,
    copy_sql: &str,
    insert_sql: &str,
    rows: impl CopyRows<'v>,
    place: Place,
) -> Result<u64> {
    let own = begin_own_transaction(conn, context, place).await?;
    conn.on(Event::Sent {
        leaves_state: false,
    });
    let target = context.target();
    let span = tracing::info_span!(
        target: "coredb",
        "copy",
        otel.name = "COPY",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = "postgresql",
        db.namespace = &*target.namespace,
        db.operation.name = "COPY",
        db.query.text = copy_sql,
        server.address = &*target.address,
        server.port = target.port,
        db.response.returned_rows = tracing::field::Empty,
        db.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    let insert_key = context.rewrites.key(insert_sql);
    let result = copy_rows(conn, copy_sql, (insert_key, insert_sql), rows)
        .instrument(span.clone())
        .await;
    crate::telemetry::end_statement_span(
        &span,
        result.as_ref().ok().copied(),
        result.as_ref().err(),
    );
    conn.on(settled(&result));
    end_own_transaction(conn, own, result).await
}

async fn copy_rows<'v>(
    conn: &PgConn,
    copy_sql: &str,
    (insert_key, insert_sql): (TextKey, &str),
    mut rows: impl CopyRows<'v>,
) -> Result<u64> {
    let insert = prepare_text(conn, insert_key, insert_sql).await?.statement;
    let columns = insert.params().len();
    if let Some(direct) = conn.direct() {
        let mut binary = BinaryRows {
            types: insert.params(),
            rows: &mut rows,
            values: Vec::with_capacity(columns),
            index: 0,
            header: true,
            failure: None,
            sql: copy_sql,
        };
        if let Some(done) = direct
            .copy_in(copy_sql, &mut |_, buf| Poll::Ready(binary.fill(buf)))
            .await
        {
            return ours_first(done, binary.failure);
        }
    }
    let copy_error = |e| Error::from_driver(e, Some(copy_sql));
    let sink = conn.client.copy_in(copy_sql).await.map_err(copy_error)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, insert.params()));
    let mut values = Vec::with_capacity(columns);
    let mut index = 0;
    while rows.next_into(&mut values) {
        index += 1;
        if values.len() != columns {
            // Returning drops the writer unfinished: the server abandons the COPY.
            return Err(wrong_width(index, values.len(), columns, copy_sql));
        }
        writer.as_mut().write(&values).await.map_err(copy_error)?;
    }
    writer.finish().await.map_err(copy_error)
}

/// What a COPY its holder sent gave: when the holder abandoned it (`failure`), the server's
/// answer to that (`57014`) gives way to the reason.
fn ours_first(done: Result<u64>, failure: Option<Error>) -> Result<u64> {
    match (done, failure) {
        (Err(err), Some(ours)) if err.code() == Some(&SqlState::QUERY_CANCELED) => Err(ours),
        (done, _) => done,
    }
}

/// The error for row `index`, which has `values` values for `columns` columns.
fn wrong_width(index: usize, values: usize, columns: usize, sql: &str) -> Error {
    Error::params(format!(
        "row {index} has {values} value(s) for {columns} column(s); the COPY was abandoned and none of its rows kept"
    ))
    .with_statement(sql)
}

/// How much of a binary COPY's rows is encoded into one `CopyData` message.
const COPY_PART: usize = 32 * 1024;

/// Rows encoded in PostgreSQL's binary COPY format, a part at a time, for a COPY its
/// connection's holder sends itself.
struct BinaryRows<'a, 'v, R> {
    /// The columns' types, in order.
    types: &'a [Type],
    rows: &'a mut R,
    /// The current row's values (one vector for all rows).
    values: Vec<SqlParam<'v>>,
    /// The number of the current row, from 1.
    index: usize,
    /// The format's header is still to be written.
    header: bool,
    /// Why the COPY was abandoned, if it was.
    failure: Option<Error>,
    sql: &'a str,
}

impl<'v, R: CopyRows<'v>> BinaryRows<'_, 'v, R> {
    /// Appends rows to `buf` until it holds [`COPY_PART`] bytes or the rows end (then the
    /// format's trailer too).
    fn fill(&mut self, buf: &mut BytesMut) -> CopyPart {
        if std::mem::take(&mut self.header) {
            buf.put_slice(b"PGCOPY\n\xff\r\n\0");
            buf.put_i32(0); // flags
            buf.put_i32(0); // header extension
        }
        let columns = self.types.len();
        while buf.len() < COPY_PART {
            if !self.rows.next_into(&mut self.values) {
                buf.put_i16(-1);
                return CopyPart::Done;
            }
            self.index += 1;
            if self.values.len() != columns {
                self.failure = Some(wrong_width(
                    self.index,
                    self.values.len(),
                    columns,
                    self.sql,
                ));
                return CopyPart::Failed;
            }
            // A table has at most 1,600 columns.
            buf.put_i16(columns as i16);
            for (column, (value, ty)) in self.values.iter().zip(self.types).enumerate() {
                let at = buf.len();
                buf.put_i32(-1);
                match value.to_sql_checked(ty, buf) {
                    Ok(IsNull::Yes) => {}
                    Ok(IsNull::No) => match i32::try_from(buf.len() - at - 4) {
                        Ok(len) => buf[at..at + 4].copy_from_slice(&len.to_be_bytes()),
                        Err(_) => return self.fail(column, &"larger than a value may be"),
                    },
                    Err(err) => return self.fail(column, &err),
                }
            }
        }
        CopyPart::More
    }

    /// Abandons the COPY at the current row's value in `column` (from 0), which does not
    /// encode for its column's type.
    fn fail(&mut self, column: usize, why: &dyn std::fmt::Display) -> CopyPart {
        self.failure = Some(
            Error::params(format!(
                "value {} of row {} cannot be sent as {}: {why}; the COPY was abandoned and none of its rows kept",
                column + 1,
                self.index,
                self.types[column]
            ))
            .with_statement(self.sql),
        );
        CopyPart::Failed
    }
}
