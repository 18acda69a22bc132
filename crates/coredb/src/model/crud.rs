//! Everyday operations on models for every [`Executor`]: [`Crud`].

use std::collections::BTreeMap;
use std::future::Future;

use crate::error::{Error, ErrorKind, Result};
use crate::params::SqlParam;
use crate::query::Executor;
use crate::row::Row;

use super::schema::ColumnRole;
use super::select::Select;
use super::Model;

/// PostgreSQL takes at most 65535 parameters in one statement.
const MAX_PARAMS: usize = 65_535;
/// Rows per multi-row INSERT: beyond this the statement text only grows, with no fewer round
/// trips worth having; use [`CopyIn`](super::CopyIn) for big loads.
const MAX_ROWS_PER_INSERT: usize = 1_000;

/// Insert, get, update, delete and select models; implemented for every [`Executor`]
/// ([`Session`](crate::Session), [`Savepoint`](crate::Savepoint),
/// [`Connection`](crate::Connection)).
///
/// Each operation is one statement whose text the model macro wrote at compile time, run
/// through the same query API and statement cache as raw SQL. Inside a session a failing
/// operation aborts the transaction like any failing statement.
///
/// ```no_run
/// use coredb::model::Crud;
///
/// #[coredb::model(table = "users", mixin = UuidTimestampMixin)]
/// pub struct User {
///     #[column(length = 100)]
///     pub name: String,
/// }
///
/// # async fn demo(db: &coredb::DatabaseManager) -> coredb::Result<()> {
/// let mut session = db.session().await?;
/// let mut ada = User::new("Ada");
/// session.insert(&mut ada).await?; // ada.created_at now holds the stored time
/// ada.name = "Ada Lovelace".into();
/// session.update(&mut ada).await?; // ada.updated_at moved
/// let found: Option<User> = session.get(&ada.id).await?;
/// session.commit().await?;
/// # let _ = found; Ok(()) }
/// ```
pub trait Crud: Executor {
    /// Inserts one row and writes the stored values back into `model` (`RETURNING`): the
    /// database-generated key, `created_at` and `updated_at`.
    ///
    /// # Errors
    /// The server's error, e.g. SQLSTATE `23505` with the constraint name for a duplicate
    /// unique value, or `22001` for a string longer than its `length`.
    fn insert<'a, M: Model>(
        &'a mut self,
        model: &'a mut M,
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        async move {
            let mut values = Vec::new();
            model.insert_values(&mut values);
            let row: Row = self.fetch_one(M::STATEMENTS.insert, values).await?;
            model.apply_row(&row)
        }
    }

    /// Inserts many rows with multi-row `INSERT .. RETURNING` statements (up to 1000 rows
    /// each) and writes the stored values back into each model. Returns the number of rows.
    ///
    /// In a session the whole batch commits or rolls back together; on a
    /// [`Connection`](crate::Connection) (autocommit) each statement of up to 1000 rows
    /// commits by itself, so a failure part-way leaves the earlier statements' rows.
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    fn insert_many<'a, M: Model>(
        &'a mut self,
        models: &'a mut [M],
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        async move {
            let statements = M::STATEMENTS;
            let per_row = statements.params_per_row().max(1);
            let chunk_rows = (MAX_PARAMS / per_row).clamp(1, MAX_ROWS_PER_INSERT);
            let mut inserted = 0u64;
            for chunk in models.chunks_mut(chunk_rows) {
                let sql = statements.insert_many(chunk.len());
                let mut values: Vec<SqlParam<'_>> = Vec::with_capacity(chunk.len() * per_row);
                for model in chunk.iter() {
                    model.insert_values(&mut values);
                }
                let rows = self.query(&sql, values).await?;
                apply_returned_rows(chunk, rows)?;
                inserted += chunk.len() as u64;
            }
            Ok(inserted)
        }
    }

    /// The row with primary key `key`, or `None` (core.db's `session.get(Model, key)`).
    ///
    /// # Errors
    /// The server's error, or a decode error naming the column.
    fn get<'a, M: Model>(
        &'a mut self,
        key: &'a M::Key,
    ) -> impl Future<Output = Result<Option<M>>> + Send + 'a {
        async move {
            let params: [SqlParam<'_>; 1] = [key];
            self.fetch_optional(M::STATEMENTS.get, params).await
        }
    }

    /// Writes every column of `model` except its keys and `created_at`, moves `updated_at` to
    /// the database clock, and writes the stored values back into `model`.
    ///
    /// # Errors
    /// [`NotFound`](ErrorKind::NotFound) when no row has the model's key; the server's error
    /// otherwise.
    fn update<'a, M: Model>(
        &'a mut self,
        model: &'a mut M,
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        async move {
            let row: Option<Row> = self
                .fetch_optional(M::STATEMENTS.update, model.update_values())
                .await?;
            match row {
                Some(row) => model.apply_row(&row),
                None => Err(missing_row::<M>("update", model.key())),
            }
        }
    }

    /// Deletes the model's row; returns whether there was one.
    ///
    /// # Errors
    /// The server's error, e.g. `23503` when another table still references the row.
    fn delete<'a, M: Model>(
        &'a mut self,
        model: &'a M,
    ) -> impl Future<Output = Result<bool>> + Send + 'a {
        self.delete_by_key::<M>(model.key())
    }

    /// Deletes the row with primary key `key`; returns whether there was one.
    ///
    /// # Errors
    /// As [`delete`](Self::delete).
    fn delete_by_key<'a, M: Model>(
        &'a mut self,
        key: &'a M::Key,
    ) -> impl Future<Output = Result<bool>> + Send + 'a {
        async move {
            let params: [SqlParam<'_>; 1] = [key];
            Ok(self.execute(M::STATEMENTS.delete, params).await? > 0)
        }
    }

    /// A query for rows of `M`: add filters, order, limit and offset, then fetch them, count
    /// them or ask whether any exists. See [`Select`].
    fn select<M: Model>(&mut self) -> Select<'_, Self, M>
    where
        Self: Sized,
    {
        Select::new(self)
    }
}

impl<E: Executor> Crud for E {}

fn missing_row<M: Model>(operation: &str, key: &M::Key) -> Error {
    let table = M::TABLE;
    Error::new(
        ErrorKind::NotFound,
        format!(
            "no row of {} has {} = {key:?}, nothing to {operation}",
            table.qualified_name(),
            table.primary_key().name
        ),
    )
}

/// Matches the rows of a multi-row `INSERT .. RETURNING` to the models they came from.
///
/// PostgreSQL does not promise to return them in the order of the VALUES list, so they are
/// matched by key: an application-made key is known beforehand; identity numbers are handed
/// out in VALUES order, so sorting the rows by key restores that order.
fn apply_returned_rows<M: Model>(models: &mut [M], rows: Vec<Row>) -> Result<()> {
    if rows.len() != models.len() {
        return Err(Error::new(
            ErrorKind::Decode,
            format!(
                "inserted {} row(s) but {} came back",
                models.len(),
                rows.len()
            ),
        ));
    }
    let pk = M::TABLE.primary_key();
    let mut keyed: BTreeMap<M::Key, Row> = BTreeMap::new();
    for row in rows {
        let key: M::Key = row.get(pk.name)?;
        keyed.insert(key, row);
    }
    if pk.role == ColumnRole::Identity {
        for (model, row) in models.iter_mut().zip(keyed.into_values()) {
            model.apply_row(&row)?;
        }
        return Ok(());
    }
    for model in models.iter_mut() {
        let row = keyed.remove(model.key()).ok_or_else(|| {
            Error::new(
                ErrorKind::Decode,
                format!(
                    "no inserted row of {} came back for {} = {:?}",
                    M::TABLE.qualified_name(),
                    pk.name,
                    model.key()
                ),
            )
        })?;
        model.apply_row(&row)?;
    }
    Ok(())
}
