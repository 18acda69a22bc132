//! Rows and their mapping to Rust values: [`FromRow`] and column access with clear errors.

use std::any::type_name;
use std::sync::Arc;

use postgres_types::{FromSql, FromSqlOwned, Type};
use tokio_postgres::binary_copy::BinaryCopyOutRow;

use crate::error::{Error, ErrorKind, Result};

/// A row returned by the server.
///
/// Its getters return a [`Result`]: a missing column, a `NULL` in a non-`Option` type or a
/// type mismatch is a [`Decode`](ErrorKind::Decode) error naming the column, the Rust type
/// and the PostgreSQL type, never a panic.
///
/// ```no_run
/// # async fn demo(db: coredb::DatabaseManager) -> coredb::Result<()> {
/// for row in db.query("SELECT name, age FROM users", ()).await? {
///     let name: String = row.get("name")?;
///     let age: Option<i32> = row.get(1)?;
///     println!("{name} {age:?}");
/// }
/// # Ok(()) }
/// ```
pub struct Row(Inner);

/// Where a row came from.
enum Inner {
    /// A query's result.
    Query(tokio_postgres::Row),
    /// A binary `COPY .. TO STDOUT`'s, with the columns of its query. Boxed, so a `Row` is
    /// the size of the driver's row and a vector of the driver's rows becomes a vector of
    /// `Row`s in place, without a second allocation.
    Copy(Box<(BinaryCopyOutRow, Arc<[CopyColumn]>)>),
    /// A result read by the connection's holder itself (`conn::direct`).
    Read(ReadRow),
}

/// A row of a result read by the connection's holder: the result's `DataRow` bodies share one
/// buffer and one table of where each value lies, so a row costs no allocation of its own.
pub(crate) struct ReadRow {
    /// The prepared statement, for the columns' names and types.
    statement: tokio_postgres::Statement,
    /// Every row's values, one after the other.
    values: bytes::Bytes,
    /// Where each value of every row lies in `values` (`None` for `NULL`), this row's from
    /// `at` on.
    spans: Arc<[Option<(u32, u32)>]>,
    at: u32,
}

/// The rows of one result, gathered from its `DataRow` message bodies as they are read.
#[derive(Default)]
pub(crate) struct ReadRows {
    values: bytes::BytesMut,
    spans: Vec<Option<(u32, u32)>>,
    rows: usize,
    /// A body that did not hold the values it announced.
    malformed: bool,
}

impl ReadRows {
    /// Adds the row a `DataRow` message's `body` holds: a count of values, then each one's
    /// length (-1 for `NULL`) and bytes.
    pub(crate) fn add(&mut self, body: &[u8]) {
        let base = self.values.len();
        let Some((count, mut rest)) = body.split_first_chunk::<2>() else {
            self.malformed = true;
            return;
        };
        let mut at = 2;
        for _ in 0..u16::from_be_bytes(*count) {
            let Some((len, after)) = rest.split_first_chunk::<4>() else {
                self.malformed = true;
                return;
            };
            let len = i32::from_be_bytes(*len);
            at += 4;
            if len < 0 {
                self.spans.push(None);
                rest = after;
                continue;
            }
            let len = len as usize;
            if after.len() < len {
                self.malformed = true;
                return;
            }
            self.spans.push(Some(((base + at) as u32, len as u32)));
            at += len;
            rest = &after[len..];
        }
        self.values.extend_from_slice(body);
        self.rows += 1;
    }

    /// How many rows were added.
    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    /// The rows, whose columns are `statement`'s; `None` when their values do not match its
    /// columns in number.
    pub(crate) fn into_rows(self, statement: &tokio_postgres::Statement) -> Option<Vec<Row>> {
        let width = statement.columns().len();
        if self.malformed || self.spans.len() != self.rows * width {
            return None;
        }
        if self.rows == 0 {
            return Some(Vec::new());
        }
        let values = self.values.freeze();
        let spans: Arc<[Option<(u32, u32)>]> = self.spans.into();
        let rows = (0..self.rows)
            .map(|i| {
                Row(Inner::Read(ReadRow {
                    statement: statement.clone(),
                    values: values.clone(),
                    spans: Arc::clone(&spans),
                    at: (i * width) as u32,
                }))
            })
            .collect();
        Some(rows)
    }
}

impl ReadRow {
    /// Column `index` (which exists) as `T`.
    fn get<'a, T: FromSql<'a>>(
        &'a self,
        index: usize,
    ) -> std::result::Result<T, Box<dyn std::error::Error + Sync + Send>> {
        let type_ = self.statement.columns()[index].type_();
        if !T::accepts(type_) {
            return Err(Box::new(postgres_types::WrongType::new::<T>(type_.clone())));
        }
        let value = self.spans[self.at as usize + index]
            .map(|(start, len)| &self.values[start as usize..(start + len) as usize]);
        T::from_sql_nullable(type_, value)
    }
}

const _: () = assert!(std::mem::size_of::<Row>() == std::mem::size_of::<tokio_postgres::Row>());

/// A column of a binary COPY's rows: its name and type, learnt by preparing its query.
pub(crate) struct CopyColumn {
    pub(crate) name: String,
    pub(crate) type_: Type,
}

impl From<tokio_postgres::Row> for Row {
    fn from(row: tokio_postgres::Row) -> Self {
        Row(Inner::Query(row))
    }
}

impl Row {
    /// A row of a binary COPY, whose columns are `columns`.
    pub(crate) fn from_copy(row: BinaryCopyOutRow, columns: Arc<[CopyColumn]>) -> Self {
        Row(Inner::Copy(Box::new((row, columns))))
    }

    /// The name and type of column `index` (which must exist).
    fn column(&self, index: usize) -> (&str, &Type) {
        match &self.0 {
            Inner::Query(row) => {
                let column = &row.columns()[index];
                (column.name(), column.type_())
            }
            Inner::Copy(copy) => {
                let column = &copy.1[index];
                (&column.name, &column.type_)
            }
            Inner::Read(row) => {
                let column = &row.statement.columns()[index];
                (column.name(), column.type_())
            }
        }
    }

    /// The columns' names and types, in order.
    fn columns(&self) -> impl Iterator<Item = (&str, &Type)> {
        (0..self.len()).map(|i| self.column(i))
    }
}

/// A column of a [`Row`]: by position (`0`, `1`, ...) or by name (`"email"`).
///
/// Implemented for `usize` and `&str` only.
pub trait ColumnIndex: sealed::Sealed {
    /// The position of the column in `row`, or the error naming what was asked.
    #[doc(hidden)]
    fn position(&self, row: &Row, rust_type: &str) -> Result<usize>;
}

mod sealed {
    /// Keeps [`ColumnIndex`](super::ColumnIndex) to coredb's implementations.
    pub trait Sealed {}
    impl Sealed for usize {}
    impl Sealed for &str {}
}

impl ColumnIndex for usize {
    #[inline]
    fn position(&self, row: &Row, rust_type: &str) -> Result<usize> {
        if *self < row.len() {
            return Ok(*self);
        }
        Err(no_such_index(*self, row, rust_type))
    }
}

/// The error for a column index past the end of `row`.
#[cold]
#[inline(never)]
fn no_such_index(index: usize, row: &Row, rust_type: &str) -> Error {
    Error::new(
        ErrorKind::Decode,
        format!(
            "the result has {} column(s); there is no column at index {index} for Rust type {rust_type}",
            row.len()
        ),
    )
}

impl ColumnIndex for &str {
    fn position(&self, row: &Row, rust_type: &str) -> Result<usize> {
        match row.column_names().position(|name| name == *self) {
            Some(index) => Ok(index),
            None => Err(Error::new(
                ErrorKind::Decode,
                format!(
                    "the result has no column {self:?} for Rust type {rust_type} (columns: {})",
                    row.column_names().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
}

impl Row {
    /// Reads a column (by position or name) as `T`; use `Option<T>` for a column that may be
    /// `NULL`.
    ///
    /// # Errors
    /// A [`Decode`](ErrorKind::Decode) error naming the column, the Rust type and the
    /// PostgreSQL type when the column is missing, `NULL` for a non-`Option` type, or of
    /// another type.
    pub fn get<'a, T: FromSql<'a>>(&'a self, column: impl ColumnIndex) -> Result<T> {
        use std::error::Error as _;
        let index = column.position(self, type_name::<T>())?;
        let read = match &self.0 {
            Inner::Query(row) => row.try_get::<_, T>(index),
            Inner::Copy(copy) => copy.0.try_get::<T>(index),
            Inner::Read(row) => {
                return row
                    .get::<T>(index)
                    .map_err(|err| self.unreadable(index, type_name::<T>(), Some(&*err), &*err))
            }
        };
        read.map_err(|err| self.unreadable(index, type_name::<T>(), err.source(), &err))
    }

    /// The error for column `index` (which exists), which could not be read as `rust_type`:
    /// `err`, caused by `source`. Out of line: the read itself is on every column of every
    /// row.
    #[cold]
    #[inline(never)]
    fn unreadable(
        &self,
        index: usize,
        rust_type: &str,
        source: Option<&(dyn std::error::Error + 'static)>,
        err: &dyn std::fmt::Display,
    ) -> Error {
        let (name, type_) = self.column(index);
        let message = if source.is_some_and(|s| s.is::<postgres_types::WasNull>()) {
            format!(
                "column {name:?} is NULL, which Rust type {rust_type} cannot hold; declare the field as an Option"
            )
        } else if source.is_some_and(|s| s.is::<postgres_types::WrongType>()) {
            format!(
                "column {name:?} has PostgreSQL type {type_}, which cannot be read as Rust type {rust_type}"
            )
        } else {
            format!(
                "column {name:?} (PostgreSQL type {type_}) could not be read as Rust type {rust_type}: {}",
                source.map_or_else(|| err.to_string(), |s| s.to_string())
            )
        };
        Error::new(ErrorKind::Decode, message)
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        match &self.0 {
            Inner::Query(row) => row.len(),
            Inner::Copy(copy) => copy.1.len(),
            Inner::Read(row) => row.statement.columns().len(),
        }
    }

    /// True when the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The columns' names, in order.
    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.columns().map(|(name, _)| name)
    }

    /// The PostgreSQL type of column `index` (e.g. `int4`, `text`), or `None` past the end.
    pub fn column_type(&self, index: usize) -> Option<&str> {
        (index < self.len()).then(|| self.column(index).1.name())
    }
}

impl std::fmt::Debug for Row {
    /// The column names and types, never the values (they may be personal data).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.columns().map(|(name, type_)| (name, type_.name())))
            .finish()
    }
}

/// Builds a value from one row; implemented for [`Row`] itself, for tuples of up to 16 columns,
/// and by `#[derive(FromRow)]` for structs.
pub trait FromRow: Sized + Send {
    /// Builds the value from a borrowed row.
    ///
    /// # Errors
    /// A [`Decode`](ErrorKind::Decode) error naming the column, the Rust type and the
    /// PostgreSQL type when a column is missing or cannot be converted.
    fn from_row(row: &Row) -> Result<Self>;

    /// Like [`from_row`](Self::from_row), taking the row by value (the query API uses this, so
    /// [`Row`] itself needs no copy).
    fn from_owned_row(row: Row) -> Result<Self> {
        Self::from_row(&row)
    }

    /// Like [`from_row`](Self::from_row) for one row of a result whose other rows share
    /// `positions`: `#[derive(FromRow)]` and `#[coredb::model]` find their columns by name
    /// in the first row and by position in the rest.
    #[doc(hidden)]
    fn from_row_at(row: &Row, positions: &mut ColumnPositions) -> Result<Self> {
        let _ = positions;
        Self::from_row(row)
    }

    /// [`from_row_at`](Self::from_row_at), taking the row by value.
    #[doc(hidden)]
    fn from_owned_row_at(row: Row, positions: &mut ColumnPositions) -> Result<Self> {
        Self::from_row_at(&row, positions)
    }
}

/// Where the columns read by name sit in the rows of one result, so only its first row looks
/// them up by name (a string comparison per column passed over), and the rest read by
/// position, as fast as reading by index.
///
/// The lookups of one row are numbered in the order they are made, which is the same for
/// every row of one type; positions are kept for the first 32 and looked up by name after
/// that. Valid for the rows of one result only (they share its columns).
#[doc(hidden)]
pub struct ColumnPositions {
    found: [u16; ColumnPositions::KEPT],
    kept: u8,
    next: u8,
}

impl Default for ColumnPositions {
    fn default() -> Self {
        ColumnPositions::new()
    }
}

impl ColumnPositions {
    const KEPT: usize = 32;

    /// None known yet.
    pub fn new() -> Self {
        ColumnPositions {
            found: [0; Self::KEPT],
            kept: 0,
            next: 0,
        }
    }

    /// Starts the lookups of the next row.
    pub(crate) fn rewind(&mut self) {
        self.next = 0;
    }

    /// Reads column `name` of `row` as `T`: by the position an earlier row of the result
    /// found, or by name (and the position kept).
    ///
    /// # Errors
    /// As [`Row::get`].
    pub fn get<'a, T: FromSql<'a>>(&mut self, row: &'a Row, name: &str) -> Result<T> {
        let lookup = usize::from(self.next);
        self.next = self.next.saturating_add(1);
        if lookup < usize::from(self.kept) {
            return row.get(usize::from(self.found[lookup]));
        }
        let index = name.position(row, type_name::<T>())?;
        if lookup == usize::from(self.kept) && lookup < Self::KEPT {
            // A column past u16 cannot exist (PostgreSQL allows 1,664).
            self.found[lookup] = index as u16;
            self.kept += 1;
        }
        row.get(index)
    }
}

impl FromRow for Row {
    /// A borrowed row cannot be copied; only [`from_owned_row`](FromRow::from_owned_row) works.
    fn from_row(_row: &Row) -> Result<Self> {
        Err(Error::new(
            ErrorKind::Decode,
            "a Row cannot be copied out of a borrowed row (e.g. as a flattened field); fetch Row values directly",
        ))
    }

    fn from_owned_row(row: Row) -> Result<Self> {
        Ok(row)
    }

    fn from_owned_row_at(row: Row, _positions: &mut ColumnPositions) -> Result<Self> {
        Ok(row)
    }
}

macro_rules! tuple_from_row {
    ($n:literal; $($name:ident : $idx:tt),+) => {
        impl<$($name: FromSqlOwned + Send),+> FromRow for ($($name,)+) {
            fn from_row(row: &Row) -> Result<Self> {
                if row.len() != $n {
                    return Err(Error::new(
                        ErrorKind::Decode,
                        format!("the result has {} column(s) but the tuple has {}", row.len(), $n),
                    ));
                }
                Ok(($(row.get::<$name>($idx as usize)?,)+))
            }
        }
    };
}

tuple_from_row!(1; A: 0);
tuple_from_row!(2; A: 0, B: 1);
tuple_from_row!(3; A: 0, B: 1, C: 2);
tuple_from_row!(4; A: 0, B: 1, C: 2, D: 3);
tuple_from_row!(5; A: 0, B: 1, C: 2, D: 3, E: 4);
tuple_from_row!(6; A: 0, B: 1, C: 2, D: 3, E: 4, F: 5);
tuple_from_row!(7; A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6);
tuple_from_row!(8; A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7);
tuple_from_row!(9; A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8);
tuple_from_row!(10; A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8, J: 9);
tuple_from_row!(11; A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8, J: 9, K: 10);
tuple_from_row!(12; A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8, J: 9, K: 10, L: 11);
tuple_from_row!(13; A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8, J: 9, K: 10, L: 11, M: 12);
tuple_from_row!(14; A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8, J: 9, K: 10, L: 11, M: 12, N: 13);
tuple_from_row!(15; A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8, J: 9, K: 10, L: 11, M: 12, N: 13, O: 14);
tuple_from_row!(16; A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8, J: 9, K: 10, L: 11, M: 12, N: 13, O: 14, P: 15);
