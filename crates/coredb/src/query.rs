//! The query API shared by [`Session`](crate::Session), [`Savepoint`](crate::Savepoint) and
//! [`Connection`](crate::Connection); [`DatabaseManager`](crate::DatabaseManager) offers the same
//! methods in autocommit.

use std::future::Future;

use postgres_types::FromSqlOwned;

use crate::error::{Error, ErrorKind, Result};
use crate::params::{ParamList, Params};
use crate::row::{column, FromRow, Row};

/// What a statement should give back.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The rows.
    Rows,
    /// The number of rows affected.
    Count,
}

/// What a statement gave back.
#[doc(hidden)]
#[derive(Debug)]
pub enum Output {
    /// The rows.
    Rows(Vec<Row>),
    /// The number of rows affected.
    Count(u64),
}

impl Output {
    pub(crate) fn count(self) -> u64 {
        match self {
            Output::Count(n) => n,
            Output::Rows(rows) => rows.len() as u64,
        }
    }

    pub(crate) fn rows(self) -> Vec<Row> {
        match self {
            Output::Rows(rows) => rows,
            Output::Count(_) => Vec::new(),
        }
    }

    pub(crate) fn all<T: FromRow>(self) -> Result<Vec<T>> {
        self.rows().into_iter().map(T::from_owned_row).collect()
    }

    pub(crate) fn optional<T: FromRow>(self) -> Result<Option<T>> {
        let mut rows = self.rows();
        if rows.len() > 1 {
            return Err(Error::new(
                ErrorKind::TooManyRows,
                format!("expected at most one row, got {}", rows.len()),
            ));
        }
        rows.pop().map(T::from_owned_row).transpose()
    }

    pub(crate) fn one<T: FromRow>(self) -> Result<T> {
        self.optional()?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "expected one row, got none"))
    }

    pub(crate) fn scalar<T: FromSqlOwned>(self) -> Result<T> {
        let rows = self.rows();
        let row = rows.first().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                "expected a row with a value, got no rows",
            )
        })?;
        column(row, 0)
    }
}

/// Runs statements; implemented by [`Session`](crate::Session),
/// [`Savepoint`](crate::Savepoint) and [`Connection`](crate::Connection), so code can take
/// `&mut impl Executor` and work in or out of a transaction.
///
/// Parameters are `()`, a tuple for `$1, $2, ...`, or [`params!`](crate::params!) for `:name`.
///
/// A helper generic over the executor that must run in an axum handler or a spawned task
/// should return `impl Future<Output = ...> + Send + 'a` (with an `async move` body) rather
/// than be an `async fn`: rustc cannot yet prove an `async fn`'s future `Send` for every
/// executor lifetime (rust-lang/rust#100013).
pub trait Executor: Send {
    /// Runs one statement; the methods below are built on it.
    #[doc(hidden)]
    fn run_statement<'a>(
        &'a mut self,
        sql: &'a str,
        params: ParamList<'a>,
        want: Want,
    ) -> impl Future<Output = Result<Output>> + Send + 'a;

    /// Runs a statement and returns the number of rows it affected.
    fn execute<'a, P: Params + 'a>(
        &'a mut self,
        sql: &'a str,
        params: P,
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        async move {
            let list = params.param_list();
            Ok(self.run_statement(sql, list, Want::Count).await?.count())
        }
    }

    /// Runs a statement and returns its rows.
    fn query<'a, P: Params + 'a>(
        &'a mut self,
        sql: &'a str,
        params: P,
    ) -> impl Future<Output = Result<Vec<Row>>> + Send + 'a {
        async move {
            let list = params.param_list();
            Ok(self.run_statement(sql, list, Want::Rows).await?.rows())
        }
    }

    /// Runs a query and maps every row to `T`.
    fn fetch_all<'a, T: FromRow, P: Params + 'a>(
        &'a mut self,
        sql: &'a str,
        params: P,
    ) -> impl Future<Output = Result<Vec<T>>> + Send + 'a {
        async move {
            let list = params.param_list();
            self.run_statement(sql, list, Want::Rows).await?.all()
        }
    }

    /// Runs a query that must return exactly one row.
    ///
    /// # Errors
    /// [`NotFound`](ErrorKind::NotFound) for no row, [`TooManyRows`](ErrorKind::TooManyRows)
    /// for more than one.
    fn fetch_one<'a, T: FromRow, P: Params + 'a>(
        &'a mut self,
        sql: &'a str,
        params: P,
    ) -> impl Future<Output = Result<T>> + Send + 'a {
        async move {
            let list = params.param_list();
            self.run_statement(sql, list, Want::Rows).await?.one()
        }
    }

    /// Runs a query that returns at most one row.
    ///
    /// # Errors
    /// [`TooManyRows`](ErrorKind::TooManyRows) for more than one row.
    fn fetch_optional<'a, T: FromRow, P: Params + 'a>(
        &'a mut self,
        sql: &'a str,
        params: P,
    ) -> impl Future<Output = Result<Option<T>>> + Send + 'a {
        async move {
            let list = params.param_list();
            self.run_statement(sql, list, Want::Rows).await?.optional()
        }
    }

    /// Runs a query and returns the first column of its first row (the seed's `.scalar()`);
    /// use `Option<T>` for a value that may be NULL.
    ///
    /// # Errors
    /// [`NotFound`](ErrorKind::NotFound) when there is no row.
    fn scalar<'a, T: FromSqlOwned + Send, P: Params + 'a>(
        &'a mut self,
        sql: &'a str,
        params: P,
    ) -> impl Future<Output = Result<T>> + Send + 'a {
        async move {
            let list = params.param_list();
            self.run_statement(sql, list, Want::Rows).await?.scalar()
        }
    }
}
