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
        let index = column.position(self, type_name::<T>())?;
        let read = match &self.0 {
            Inner::Query(row) => row.try_get::<_, T>(index),
            Inner::Copy(copy) => copy.0.try_get::<T>(index),
        };
        read.map_err(|err| self.unreadable(index, type_name::<T>(), &err))
    }

    /// The error for column `index` (which exists), which the driver could not read as
    /// `rust_type`. Out of line: the read itself is on every column of every row.
    #[cold]
    #[inline(never)]
    fn unreadable(&self, index: usize, rust_type: &str, err: &tokio_postgres::Error) -> Error {
        use std::error::Error as _;
        let (name, type_) = self.column(index);
        let source = err.source();
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
