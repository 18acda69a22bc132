//! `COPY .. FROM STDIN BINARY` on a connection of one's own.

use std::pin::pin;

use tracing::Instrument as _;

use tokio_postgres::binary_copy::BinaryCopyInWriter;

use super::{prepare_text, settled, Context};
use crate::conn::{Event, PgConn};
use crate::error::{Error, Result};
use crate::params::SqlParam;

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
    rows: impl Iterator<Item = Vec<SqlParam<'v>>> + Send,
) -> Result<u64> {
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
    let result = copy_rows(conn, copy_sql, insert_sql, rows)
        .instrument(span.clone())
        .await;
    crate::telemetry::end_statement_span(
        &span,
        result.as_ref().ok().copied(),
        result.as_ref().err(),
    );
    conn.on(settled(&result));
    result
}

async fn copy_rows<'v>(
    conn: &PgConn,
    copy_sql: &str,
    insert_sql: &str,
    rows: impl Iterator<Item = Vec<SqlParam<'v>>> + Send,
) -> Result<u64> {
    let insert = prepare_text(conn, insert_sql).await?;
    let copy_error = |e| Error::from_driver(e, Some(copy_sql));
    let sink = conn.client.copy_in(copy_sql).await.map_err(copy_error)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, insert.params()));
    for values in rows {
        writer.as_mut().write(&values).await.map_err(copy_error)?;
    }
    writer.finish().await.map_err(copy_error)
}
