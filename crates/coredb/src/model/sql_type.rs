//! Which PostgreSQL type stores each Rust field type: [`SqlType`].

use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use postgres_types::{FromSqlOwned, ToSql};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::schema::SqlTypeName;

/// A Rust type that can be a model column: names the PostgreSQL type its DDL declares.
///
/// Implemented for the integers (`i16`, `i32`, `i64`), floats, `bool`, `String`, `Vec<u8>`
/// (`bytea`), [`Uuid`], the `chrono` date and time types, [`Decimal`] (`numeric`),
/// `serde_json::Value` (`jsonb`), `Vec<T>` (arrays), `Option<T>` (the same type, nullable) and,
/// through `#[derive(SqlEnum)]`, user enums. For another type that implements `ToSql` and
/// `FromSql`, implement this trait or name the type on the field with
/// `#[column(sql_type = "..")]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a model column: coredb does not know its PostgreSQL type",
    label = "unsupported column type",
    note = "supported: i16, i32, i64, f32, f64, bool, String, Vec<u8>, Uuid, chrono dates and times, rust_decimal::Decimal, serde_json::Value, Vec<T>, Option<T>, and enums with #[derive(coredb::SqlEnum)]",
    note = "for another type that implements ToSql and FromSql, add #[column(sql_type = \"..\")] to the field or implement coredb::model::SqlType for it"
)]
pub trait SqlType: ToSql + FromSqlOwned {
    /// The column type.
    const TYPE: SqlTypeName;
    /// True when the type holds SQL `NULL` (`Option<T>`); the column is then nullable.
    const NULLABLE: bool = false;
}

macro_rules! sql_types {
    ($($rust:ty => $sql:expr),+ $(,)?) => {
        $(impl SqlType for $rust {
            const TYPE: SqlTypeName = $sql;
        })+
    };
}

sql_types! {
    bool => SqlTypeName::Boolean,
    i16 => SqlTypeName::SmallInt,
    i32 => SqlTypeName::Integer,
    i64 => SqlTypeName::BigInt,
    f32 => SqlTypeName::Real,
    f64 => SqlTypeName::DoublePrecision,
    String => SqlTypeName::Text,
    Vec<u8> => SqlTypeName::Bytea,
    Uuid => SqlTypeName::Uuid,
    NaiveDate => SqlTypeName::Date,
    NaiveTime => SqlTypeName::Time,
    NaiveDateTime => SqlTypeName::Timestamp,
    DateTime<Utc> => SqlTypeName::Timestamptz,
    DateTime<FixedOffset> => SqlTypeName::Timestamptz,
    DateTime<Local> => SqlTypeName::Timestamptz,
    Decimal => SqlTypeName::Numeric,
    serde_json::Value => SqlTypeName::Jsonb,
}

impl<T: SqlType> SqlType for Option<T> {
    const TYPE: SqlTypeName = T::TYPE;
    const NULLABLE: bool = true;
}

impl<T: SqlType> SqlType for Vec<T> {
    const TYPE: SqlTypeName = SqlTypeName::Array(&T::TYPE);
}

impl<T> SqlType for postgres_types::Json<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    const TYPE: SqlTypeName = SqlTypeName::Jsonb;
}

/// A type `#[column(length = n)]` applies to: `String` and `Option<String>` (stored as
/// `varchar(n)`).
#[diagnostic::on_unimplemented(
    message = "`length` applies to String fields (stored as varchar(n)), not to `{Self}`",
    label = "not a String"
)]
pub trait TextColumn {}
impl TextColumn for String {}
impl TextColumn for Option<String> {}

/// A type `#[column(precision = p, scale = s)]` applies to: [`Decimal`] and
/// `Option<Decimal>` (stored as `numeric(p, s)`).
#[diagnostic::on_unimplemented(
    message = "`precision` and `scale` apply to rust_decimal::Decimal fields (numeric(p, s)), not to `{Self}`",
    label = "not a Decimal"
)]
pub trait DecimalColumn {}
impl DecimalColumn for Decimal {}
impl DecimalColumn for Option<Decimal> {}
