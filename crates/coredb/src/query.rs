//! The query API shared by [`Session`](crate::Session), [`Savepoint`](crate::Savepoint) and
//! [`Connection`](crate::Connection); [`DatabaseManager`](crate::DatabaseManager) offers the same
//! methods in autocommit.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use postgres_types::FromSqlOwned;

use crate::error::Result;
use crate::exec::{CopyData, Item, Read, Returns, RowValues, Streaming};
use crate::params::Params;
use crate::row::{ColumnPositions, FromRow, Row};

/// Keeps [`Executor`] implemented by coredb's own types only, so its methods can grow without
/// breaking anyone (as tokio-postgres's `GenericClient`). The module is private: the trait and
/// the types in its signature cannot be named outside the crate.
pub(crate) mod sealed {
    use std::future::Future;

    use crate::error::Result;
    use crate::exec::{CopyData, Read, Reply, Returns, RowValues, Streaming};
    use crate::params::ParamList;

    /// The methods every executor implements; [`Executor`](super::Executor)'s are built on them.
    pub trait Sealed {
        /// Runs one statement.
        fn run_statement<'a>(
            &'a mut self,
            sql: &'a str,
            params: ParamList<'a>,
            want: Returns,
        ) -> impl Future<Output = Result<Reply>> + Send + 'a;

        /// Sends one statement whose rows (or, with `copy`, COPY data) are read as they
        /// arrive.
        fn start_stream<'a, 'p>(
            &'a mut self,
            sql: &'p str,
            params: ParamList<'p>,
            read: Read,
        ) -> impl Future<Output = Result<Streaming<'a>>> + Send;

        /// Sends `data` into one `COPY .. FROM STDIN`.
        fn copy_in_data<'a>(
            &'a mut self,
            sql: &'a str,
            data: CopyData<'a>,
        ) -> impl Future<Output = Result<u64>> + Send + 'a;

        /// Writes `rows` with a binary `copy` (the columns' types from `insert`).
        fn copy_rows_in<'a, 'v>(
            &'a mut self,
            copy: &'a str,
            insert: &'a str,
            rows: RowValues<'v>,
        ) -> impl Future<Output = Result<u64>> + Send;
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
///
/// The trait is sealed: only coredb's types implement it.
///
/// ```no_run
/// use coredb::{params, Executor};
///
/// #[derive(coredb::FromRow)]
/// struct User { name: String, age: i32 }
///
/// /// Works in a transaction or on a plain connection.
/// async fn adults(db: &mut impl Executor) -> coredb::Result<Vec<User>> {
///     db.fetch_all("SELECT name, age FROM users WHERE age >= :age", params! { "age" => 18 })
///         .await
/// }
///
/// # async fn demo(db: coredb::DatabaseManager) -> coredb::Result<()> {
/// let mut session = db.session().await?;
/// let in_tx = adults(&mut session).await?;
/// session.commit().await?;
/// let mut conn = db.get_connection().await?;
/// let outside = adults(&mut conn).await?;
/// # let _ = (in_tx, outside); Ok(()) }
/// ```
pub trait Executor: sealed::Sealed + Send {
    /// Runs a statement and returns the number of rows it affected.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes is safe, but the statement may have run or not.
    /// A [`Connection`](crate::Connection) it ran on is then closed (and the statement cancelled
    /// on the server) rather than returned to the pool; a [`Session`](crate::Session) can go on or
    /// be dropped (its connection is then closed, never reused with the reply unread).
    fn execute<'a, P: Params + 'a>(
        &'a mut self,
        sql: &'a str,
        params: P,
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        async move {
            let list = params.param_list();
            Ok(self.run_statement(sql, list, Returns::Count).await?.count())
        }
    }

    /// Runs a statement and returns its rows.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes is safe, but the statement may have run or not.
    /// A [`Connection`](crate::Connection) it ran on is then closed (and the statement cancelled
    /// on the server) rather than returned to the pool; a [`Session`](crate::Session) can go on or
    /// be dropped (its connection is then closed, never reused with the reply unread).
    fn query<'a, P: Params + 'a>(
        &'a mut self,
        sql: &'a str,
        params: P,
    ) -> impl Future<Output = Result<Vec<Row>>> + Send + 'a {
        async move {
            let list = params.param_list();
            Ok(self.run_statement(sql, list, Returns::Rows).await?.rows())
        }
    }

    /// Runs a query and maps every row to `T`.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes is safe, but the statement may have run or not.
    /// A [`Connection`](crate::Connection) it ran on is then closed (and the statement cancelled
    /// on the server) rather than returned to the pool; a [`Session`](crate::Session) can go on or
    /// be dropped (its connection is then closed, never reused with the reply unread).
    fn fetch_all<'a, T: FromRow, P: Params + 'a>(
        &'a mut self,
        sql: &'a str,
        params: P,
    ) -> impl Future<Output = Result<Vec<T>>> + Send + 'a {
        async move {
            let list = params.param_list();
            self.run_statement(sql, list, Returns::Rows).await?.all()
        }
    }

    /// Runs a query that must return exactly one row.
    ///
    /// # Errors
    /// [`NotFound`](crate::ErrorKind::NotFound) for no row, [`TooManyRows`](crate::ErrorKind::TooManyRows)
    /// for more than one.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes is safe, but the statement may have run or not.
    /// A [`Connection`](crate::Connection) it ran on is then closed (and the statement cancelled
    /// on the server) rather than returned to the pool; a [`Session`](crate::Session) can go on or
    /// be dropped (its connection is then closed, never reused with the reply unread).
    fn fetch_one<'a, T: FromRow, P: Params + 'a>(
        &'a mut self,
        sql: &'a str,
        params: P,
    ) -> impl Future<Output = Result<T>> + Send + 'a {
        async move {
            let list = params.param_list();
            self.run_statement(sql, list, Returns::First).await?.one()
        }
    }

    /// Runs a query that returns at most one row.
    ///
    /// # Errors
    /// [`TooManyRows`](crate::ErrorKind::TooManyRows) for more than one row.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes is safe, but the statement may have run or not.
    /// A [`Connection`](crate::Connection) it ran on is then closed (and the statement cancelled
    /// on the server) rather than returned to the pool; a [`Session`](crate::Session) can go on or
    /// be dropped (its connection is then closed, never reused with the reply unread).
    fn fetch_optional<'a, T: FromRow, P: Params + 'a>(
        &'a mut self,
        sql: &'a str,
        params: P,
    ) -> impl Future<Output = Result<Option<T>>> + Send + 'a {
        async move {
            let list = params.param_list();
            self.run_statement(sql, list, Returns::First)
                .await?
                .optional()
        }
    }

    /// Runs a query and returns the first column of its first row (core.db's `.scalar()`);
    /// use `Option<T>` for a value that may be NULL.
    ///
    /// # Errors
    /// [`NotFound`](crate::ErrorKind::NotFound) when there is no row.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes is safe, but the statement may have run or not.
    /// A [`Connection`](crate::Connection) it ran on is then closed (and the statement cancelled
    /// on the server) rather than returned to the pool; a [`Session`](crate::Session) can go on or
    /// be dropped (its connection is then closed, never reused with the reply unread).
    fn scalar<'a, T: FromSqlOwned + Send, P: Params + 'a>(
        &'a mut self,
        sql: &'a str,
        params: P,
    ) -> impl Future<Output = Result<T>> + Send + 'a {
        async move {
            let list = params.param_list();
            self.run_statement(sql, list, Returns::First)
                .await?
                .scalar()
        }
    }

    /// Runs a query and yields its rows as `T` as they arrive, so a result of any size is
    /// read in bounded memory: the connection reads from the server only as fast as the
    /// stream is polled.
    ///
    /// The executor stays borrowed until the stream is dropped. A stream read to its end
    /// leaves the connection as any statement does. One dropped half-way leaves the rest of
    /// the reply to be discarded: the next statement on the same connection (or session)
    /// waits until the server has sent it. A [`Connection`](crate::Connection) dropped then is
    /// closed and its statement cancelled on the server, never pooled with unread rows;
    /// [`DatabaseManager::stream`](crate::DatabaseManager::stream) does that at once.
    ///
    /// ```no_run
    /// use futures_util::TryStreamExt as _;
    /// use coredb::Executor;
    ///
    /// # async fn demo(db: coredb::DatabaseManager) -> coredb::Result<()> {
    /// let mut session = db.session().await?;
    /// let mut events = session
    ///     .stream::<(i64, String), _>("SELECT id, kind FROM events ORDER BY id", ())
    ///     .await?;
    /// while let Some((id, kind)) = events.try_next().await? {
    ///     println!("{id} {kind}");
    /// }
    /// # drop(events); session.commit().await }
    /// ```
    ///
    /// # Errors
    /// The future fails as [`query`](Self::query) does before any row; the stream yields the
    /// error of a row that cannot become a `T`, or of a statement that fails half-way (in a
    /// session, that aborts the transaction as any failed statement does).
    ///
    /// # Cancel safety
    /// As [`query`](Self::query) for the future; dropping the stream is described above.
    fn stream<'a, T: FromRow, P: Params + 'a>(
        &'a mut self,
        sql: &'a str,
        params: P,
    ) -> impl Future<Output = Result<RowStream<'a, T>>> + Send + 'a {
        async move {
            let list = params.param_list();
            let rows = self.start_stream(sql, list, Read::Rows).await?;
            Ok(RowStream::new(rows))
        }
    }

    /// Runs a `COPY .. TO STDOUT` and yields its data as it arrives, in bounded memory: the
    /// server's CSV, text or binary output, chunk by chunk (a row per chunk in the text
    /// formats), ready to write to a file or an HTTP response.
    ///
    /// ```no_run
    /// use futures_util::TryStreamExt as _;
    /// use coredb::Executor;
    ///
    /// # async fn demo(mut conn: coredb::Connection) -> coredb::Result<()> {
    /// let csv: Vec<bytes::Bytes> = conn
    ///     .copy_out("COPY (SELECT id, email FROM users) TO STDOUT WITH (FORMAT csv, HEADER)")
    ///     .await?
    ///     .try_collect()
    ///     .await?;
    /// # let _ = csv; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A [`Params`](crate::ErrorKind::Params) error for a statement that is not a `COPY`;
    /// the server's error, before the first chunk or half-way.
    ///
    /// # Cancel safety
    /// As [`stream`](Self::stream).
    fn copy_out<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> impl Future<Output = Result<CopyOutStream<'a>>> + Send + 'a {
        async move {
            let data = self
                .start_stream(sql, ().param_list(), Read::CopyData)
                .await?;
            Ok(CopyOutStream::new(data))
        }
    }

    /// Reads the rows of `query` through a binary `COPY (query) TO STDOUT`, decoded as they
    /// arrive into any `T: FromRow` (a `#[derive(FromRow)]` struct, a tuple): PostgreSQL's
    /// fastest way out, for exports and copies between databases. The query takes no
    /// parameters (COPY cannot); filter in its text or after reading.
    ///
    /// ```no_run
    /// use futures_util::TryStreamExt as _;
    /// use coredb::Executor;
    ///
    /// #[derive(coredb::FromRow)]
    /// struct Reading { sensor: i64, value: f64 }
    ///
    /// # async fn demo(session: &mut coredb::Session) -> coredb::Result<()> {
    /// let mut readings = session
    ///     .copy_out_rows::<Reading>("SELECT sensor, value FROM readings")
    ///     .await?;
    /// while let Some(r) = readings.try_next().await? {
    ///     println!("{} {}", r.sensor, r.value);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`stream`](Self::stream); a [`Params`](crate::ErrorKind::Params) error for a COPY
    /// statement (give the query).
    fn copy_out_rows<'a, T: FromRow>(
        &'a mut self,
        query: &'a str,
    ) -> impl Future<Output = Result<RowStream<'a, T>>> + Send + 'a {
        async move {
            let rows = self
                .start_stream(query, ().param_list(), Read::CopyRows)
                .await?;
            Ok(RowStream::new(rows))
        }
    }

    /// Writes `rows` into `columns` of `table` with a binary `COPY .. FROM STDIN`: the values
    /// of each row in the order of `columns`, any types the driver can send (the columns'
    /// types are learnt from the server, as for an INSERT). Returns the number of rows.
    /// `table` is written into the SQL as given (it may be schema-qualified): never take it
    /// from user input. The column names are quoted.
    ///
    /// ```no_run
    /// use coredb::{Executor, SqlParam};
    ///
    /// struct Reading { sensor: i64, value: f64 }
    ///
    /// # async fn demo(session: &mut coredb::Session, readings: Vec<Reading>) -> coredb::Result<()> {
    /// let copied = session
    ///     .copy_in_rows(
    ///         "readings",
    ///         &["sensor", "value"],
    ///         readings.iter().map(|r| vec![&r.sensor as SqlParam, &r.value]),
    ///     )
    ///     .await?;
    /// # let _ = copied; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A [`Params`](crate::ErrorKind::Params) error for no columns, a row with another number
    /// of values, or a value its column cannot take; the server's error (e.g. `23505`), after
    /// which none of the rows is kept (in a session the transaction is aborted).
    ///
    /// # Cancel safety
    /// As [`copy_in_bytes`](Self::copy_in_bytes).
    fn copy_in_rows<'a, 'v, I>(
        &'a mut self,
        table: &str,
        columns: &[&str],
        rows: I,
    ) -> impl Future<Output = Result<u64>> + Send + 'a
    where
        I: IntoIterator<Item = Vec<crate::params::SqlParam<'v>>>,
        I::IntoIter: Send + 'v,
        'v: 'a,
    {
        let statements = copy_statements(table, columns);
        let rows: RowValues<'v> = Box::new(rows.into_iter());
        async move {
            let (copy, insert) = statements?;
            self.copy_rows_in(&copy, &insert, rows).await
        }
    }

    /// Runs a `COPY .. FROM STDIN`, sending `data` as it comes (CSV, text or binary, as the
    /// statement says); returns the number of rows. Memory stays bounded by what the stream
    /// holds.
    ///
    /// ```no_run
    /// use bytes::Bytes;
    /// use coredb::Executor;
    ///
    /// # async fn demo(mut session: coredb::Session) -> coredb::Result<()> {
    /// let lines = futures_util::stream::iter(
    ///     ["1,ada\n", "2,grace\n"].map(|l| Ok::<_, std::io::Error>(Bytes::from(l))),
    /// );
    /// let rows = session
    ///     .copy_in_bytes("COPY users (id, name) FROM STDIN WITH (FORMAT csv)", lines)
    ///     .await?;
    /// assert_eq!(rows, 2);
    /// session.commit().await
    /// # }
    /// ```
    ///
    /// # Errors
    /// A [`Params`](crate::ErrorKind::Params) error for a statement that is not a `COPY`, or
    /// when `data` yields an error: the COPY is then abandoned and none of its rows kept (in a
    /// session, the transaction is aborted). The server's error for bad data, e.g. `22P02`.
    ///
    /// # Cancel safety
    /// Dropped half-way, the COPY is abandoned; a [`Connection`](crate::Connection) is then
    /// closed rather than pooled.
    fn copy_in_bytes<'a, S, E>(
        &'a mut self,
        sql: &'a str,
        data: S,
    ) -> impl Future<Output = Result<u64>> + Send + 'a
    where
        S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Send + 'a,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'a,
    {
        use futures_util::StreamExt as _;
        let data: CopyData<'a> = Box::pin(data.map(|chunk| chunk.map_err(Into::into)));
        self.copy_in_data(sql, data)
    }
}

/// The rows of a query as `T`, read as they arrive: what [`Executor::stream`] and
/// [`DatabaseManager::stream`](crate::DatabaseManager::stream) return. A
/// [`Stream`](futures_util::Stream) of `Result<T>`; it ends after the last row or the first
/// error.
pub struct RowStream<'a, T> {
    rows: Streaming<'a>,
    /// Where `T`'s columns sit, found in the first row.
    positions: ColumnPositions,
    _rows_of: PhantomData<fn() -> T>,
}

impl<'a, T> RowStream<'a, T> {
    pub(crate) fn new(rows: Streaming<'a>) -> Self {
        RowStream {
            rows,
            positions: ColumnPositions::new(),
            _rows_of: PhantomData,
        }
    }
}

impl<T: FromRow> Stream for RowStream<'_, T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let this = &mut *self;
        Pin::new(&mut this.rows).poll_next(cx).map(|item| {
            item.map(|item| match item? {
                Item::Row(row) => {
                    this.positions.rewind();
                    T::from_owned_row_at(row, &mut this.positions)
                }
                Item::Data(_) => unreachable!("a COPY is refused before it is sent"),
            })
        })
    }
}

impl<T> std::fmt::Debug for RowStream<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowStream").finish_non_exhaustive()
    }
}

/// The data of a `COPY .. TO STDOUT` as it arrives: what [`Executor::copy_out`] and
/// [`DatabaseManager::copy_out`](crate::DatabaseManager::copy_out) return. A
/// [`Stream`](futures_util::Stream) of `Result<Bytes>`.
pub struct CopyOutStream<'a> {
    data: Streaming<'a>,
}

impl<'a> CopyOutStream<'a> {
    pub(crate) fn new(data: Streaming<'a>) -> Self {
        CopyOutStream { data }
    }
}

impl Stream for CopyOutStream<'_> {
    type Item = Result<bytes::Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.data).poll_next(cx).map(|item| {
            item.map(|item| match item? {
                Item::Data(data) => Ok(data),
                Item::Row(_) => unreachable!("rows are refused before the statement is sent"),
            })
        })
    }
}

impl std::fmt::Debug for CopyOutStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOutStream").finish_non_exhaustive()
    }
}

/// The binary COPY and the one-row INSERT (whose parameters give the columns' types) for
/// `columns` of `table`.
fn copy_statements(table: &str, columns: &[&str]) -> Result<(String, String)> {
    if columns.is_empty() || table.trim().is_empty() || table.contains(';') {
        return Err(crate::error::Error::params(format!(
            "copy_in_rows needs a table name (without `;`) and at least one column; got table {table:?} and {} column(s)",
            columns.len()
        )));
    }
    let quoted: Vec<String> = columns.iter().map(|c| crate::sql::quote_ident(c)).collect();
    let list = quoted.join(", ");
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    Ok((
        format!("COPY {table} ({list}) FROM STDIN BINARY"),
        format!(
            "INSERT INTO {table} ({list}) VALUES ({})",
            placeholders.join(", ")
        ),
    ))
}
