//! Bulk inserts with `COPY .. FROM STDIN BINARY`: [`CopyIn`].

use std::future::Future;
use std::pin::pin;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::Client;

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::query::Executor;
use crate::session::Session;
use crate::statement_cache::StatementCache;

use super::Model;

/// Loads many models with PostgreSQL's `COPY`, the fastest way in (several times the rows per
/// second of multi-row INSERTs for big batches).
///
/// Unlike [`Crud::insert_many`](super::Crud::insert_many), nothing comes back: the structs keep
/// their values, an identity key is numbered by the database without being read back, and
/// `created_at` / `updated_at` take their column default, the transaction's `now()`.
///
/// In a [`Session`] the copy runs inside a savepoint of its own: when it fails, its rows are
/// undone and the error returned, and the transaction can go on (or be dropped to roll back).
///
/// ```no_run
/// use coredb::model::CopyIn;
///
/// #[coredb::model(table = "readings", mixin = UuidTimestampMixin)]
/// pub struct Reading { pub value: f64 }
///
/// # async fn demo(session: &mut coredb::Session) -> coredb::Result<()> {
/// let readings: Vec<Reading> = (0..100_000).map(|i| Reading::new(i as f64)).collect();
/// let copied = session.copy_in(&readings).await?;
/// assert_eq!(copied, 100_000);
/// # Ok(()) }
/// ```
pub trait CopyIn {
    /// Copies `models` into their table; returns the number of rows.
    ///
    /// # Errors
    /// The server's error, e.g. `23505` for a duplicate unique value, or a parameter error for
    /// a value that cannot be sent as its column's type.
    fn copy_in<'a, M: Model>(
        &'a mut self,
        models: &'a [M],
    ) -> impl Future<Output = Result<u64>> + Send + 'a;
}

impl CopyIn for Connection {
    fn copy_in<'a, M: Model>(
        &'a mut self,
        models: &'a [M],
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        copy_tracked(self, models)
    }
}

impl CopyIn for Session {
    async fn copy_in<M: Model>(&mut self, models: &[M]) -> Result<u64> {
        // Through the session first: it undoes a dropped savepoint and refuses to go on in an
        // aborted transaction, which COPY on the raw client would not notice.
        self.execute("SELECT 1", ()).await?;
        let conn = self.connection();
        conn.batch("SAVEPOINT coredb_copy").await?;
        match copy_tracked(conn, models).await {
            Ok(rows) => {
                conn.batch("RELEASE SAVEPOINT coredb_copy").await?;
                Ok(rows)
            }
            Err(err) => {
                conn.batch("ROLLBACK TO SAVEPOINT coredb_copy; RELEASE SAVEPOINT coredb_copy")
                    .await?;
                Err(err)
            }
        }
    }
}

/// Copies while the connection is marked busy, so a copy abandoned half-way (its future
/// dropped) closes the connection instead of returning it to the pool mid-COPY.
async fn copy_tracked<M: Model>(conn: &mut Connection, models: &[M]) -> Result<u64> {
    let pg = conn.pg();
    pg.busy = true;
    let result = copy_rows(&pg.client, &pg.statements, models).await;
    pg.busy = false;
    result
}

async fn copy_rows<M: Model>(client: &Client, cache: &StatementCache, models: &[M]) -> Result<u64> {
    let statements = M::STATEMENTS;
    // The one-row INSERT takes exactly the copied columns as parameters, in order: its
    // prepared form tells their types (and is usually cached already).
    let insert = match cache.get(statements.insert) {
        Some(statement) => statement,
        None => {
            let statement = client
                .prepare(statements.insert)
                .await
                .map_err(|e| Error::from_driver(e, Some(statements.insert)))?;
            cache.insert(statements.insert, &statement);
            statement
        }
    };
    let copy_error = |e| Error::from_driver(e, Some(statements.copy));
    let sink = client.copy_in(statements.copy).await.map_err(copy_error)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, insert.params()));
    for model in models {
        writer
            .as_mut()
            .write(&model.insert_values())
            .await
            .map_err(copy_error)?;
    }
    writer.finish().await.map_err(copy_error)
}
