//! Rows and their mapping to Rust values: [`FromRow`] and column access with clear errors.

use std::any::type_name;

use postgres_types::{FromSql, FromSqlOwned};

use crate::error::{Error, ErrorKind, Result};

/// A row returned by the server (the driver's row type).
pub use tokio_postgres::Row;

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
}

/// Reads column `index` as `T`, with an error that names the column and both types.
pub fn column<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T> {
    let Some(col) = row.columns().get(index) else {
        return Err(Error::new(
            ErrorKind::Decode,
            format!(
                "the result has {} column(s); there is no column at index {index} for Rust type {}",
                row.len(),
                type_name::<T>()
            ),
        ));
    };
    row.try_get::<_, T>(index).map_err(|err| {
        use std::error::Error as _;
        let source = err.source();
        let message = if source.is_some_and(|s| s.is::<postgres_types::WasNull>()) {
            format!(
                "column {:?} is NULL, which Rust type {} cannot hold; declare the field as an Option",
                col.name(),
                type_name::<T>()
            )
        } else if source.is_some_and(|s| s.is::<postgres_types::WrongType>()) {
            format!(
                "column {:?} has PostgreSQL type {}, which cannot be read as Rust type {}",
                col.name(),
                col.type_(),
                type_name::<T>()
            )
        } else {
            format!(
                "column {:?} (PostgreSQL type {}) could not be read as Rust type {}: {}",
                col.name(),
                col.type_(),
                type_name::<T>(),
                source.map_or_else(|| err.to_string(), |s| s.to_string())
            )
        };
        Error::new(ErrorKind::Decode, message)
    })
}

/// Reads the column called `name` as `T`; like [`column`].
pub fn named_column<'a, T: FromSql<'a>>(row: &'a Row, name: &str) -> Result<T> {
    match row.columns().iter().position(|c| c.name() == name) {
        Some(index) => column(row, index),
        None => Err(Error::new(
            ErrorKind::Decode,
            format!(
                "the result has no column {name:?} for Rust type {} (columns: {})",
                type_name::<T>(),
                row.columns()
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
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
                Ok(($(column::<$name>(row, $idx)?,)+))
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
