//! Bulk inserts with `COPY .. FROM STDIN BINARY`: [`CopyIn`].

use std::future::Future;

use crate::conn::Event;
use crate::connection::Connection;
use crate::error::Result;
use crate::exec::Place;
use crate::query::Executor;
use crate::session::Session;

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
    ///
    /// # Cancel safety
    /// Dropped half-way, the COPY is abandoned: the connection is closed (not returned to the pool
    /// mid-COPY), and in a session the copy's rows are never committed.
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
        copy_tracked(self, models, Place::Connection)
    }
}

impl CopyIn for Session {
    async fn copy_in<M: Model>(&mut self, models: &[M]) -> Result<u64> {
        // Through the session first: it undoes a dropped savepoint and refuses to go on in an
        // aborted transaction, which COPY on the raw client would not notice.
        self.execute("SELECT 1", ()).await?;
        let conn = self.connection();
        conn.control("SAVEPOINT coredb_copy", Event::TRANSACTION_SCOPED)
            .await?;
        match copy_tracked(conn, models, Place::Session).await {
            Ok(rows) => {
                conn.control("RELEASE SAVEPOINT coredb_copy", Event::TRANSACTION_SCOPED)
                    .await?;
                Ok(rows)
            }
            Err(err) => {
                conn.control(
                    "ROLLBACK TO SAVEPOINT coredb_copy; RELEASE SAVEPOINT coredb_copy",
                    Event::TRANSACTION_SCOPED,
                )
                .await?;
                Err(err)
            }
        }
    }
}

/// Copies through the statement path, which keeps the connection's state.
async fn copy_tracked<M: Model>(conn: &mut Connection, models: &[M], place: Place) -> Result<u64> {
    let statements = M::STATEMENTS;
    let (pg, context) = conn.parts();
    crate::exec::copy_in(
        pg,
        context,
        statements.copy,
        statements.insert,
        ModelRows(models.iter()),
        place,
    )
    .await
}

/// The rows of models for a binary COPY, without a vector of their own each.
struct ModelRows<'v, M>(std::slice::Iter<'v, M>);

impl<'v, M: Model> crate::exec::CopyRows<'v> for ModelRows<'v, M> {
    fn next_into(&mut self, out: &mut Vec<crate::params::SqlParam<'v>>) -> bool {
        out.clear();
        self.0
            .next()
            .map(|model| model.insert_values(out))
            .is_some()
    }
}
