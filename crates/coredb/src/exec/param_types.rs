//! The PostgreSQL type of a parameter value, for statements sent without preparing them first.
//!
//! Behind PgBouncer in transaction mode a named prepared statement may live on another server
//! connection, so with the statement cache off (`POSTGRES_STATEMENT_CACHE_SIZE=0`) statements
//! are parsed, bound and run in one round trip as unnamed statements. The server then needs
//! each parameter's type from the client: it is the first of the types below that the Rust
//! value can be sent as (as sqlx does, the Rust type decides).

use bytes::BytesMut;
use postgres_types::Type;

use crate::error::{Error, Result};
use crate::params::{SqlParam, SqlText};

/// In order of preference: the first type a value accepts is its type.
const CANDIDATES: &[Type] = &[
    Type::BOOL,
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::FLOAT4,
    Type::FLOAT8,
    Type::NUMERIC,
    Type::TEXT,
    Type::BYTEA,
    Type::UUID,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMP,
    Type::DATE,
    Type::TIME,
    Type::JSONB,
    Type::JSON,
    Type::INET,
    Type::BOOL_ARRAY,
    Type::INT2_ARRAY,
    Type::INT4_ARRAY,
    Type::INT8_ARRAY,
    Type::FLOAT4_ARRAY,
    Type::FLOAT8_ARRAY,
    Type::NUMERIC_ARRAY,
    Type::TEXT_ARRAY,
    Type::BYTEA_ARRAY,
    Type::UUID_ARRAY,
    Type::TIMESTAMPTZ_ARRAY,
    Type::TIMESTAMP_ARRAY,
    Type::DATE_ARRAY,
    Type::JSONB_ARRAY,
];

/// The PostgreSQL type a value is naturally sent as: the first of the list it accepts, e.g.
/// `int4` for an `i32`; `None` for a type outside the list (e.g. a user enum).
pub(super) fn natural_type(value: SqlParam<'_>, scratch: &mut BytesMut) -> Option<Type> {
    // A `&dyn ToSql` cannot be asked which types it accepts without encoding it.
    CANDIDATES
        .iter()
        .find(|ty| {
            scratch.clear();
            value.to_sql_checked(ty, scratch).is_ok()
        })
        .cloned()
}

/// How a message names the `index`th parameter (`:n ($1)`, or `$1`), and how the SQL spells
/// it, for a cast to write (`:n`, or `$1`).
pub(super) fn placeholder(text: &SqlText<'_>, index: usize) -> (String, String) {
    let position = format!("${}", index + 1);
    match text.name_of(index) {
        Some(name) => (format!(":{name} ({position})"), format!(":{name}")),
        None => (position.clone(), position),
    }
}

/// The types of `values`, in order.
///
/// # Errors
/// A [`Params`](crate::ErrorKind::Params) error naming a value of a type outside the list
/// (e.g. a user enum): cast it in SQL and send it as text, or turn the statement cache on.
pub(crate) fn infer(text: &SqlText<'_>, values: &[SqlParam<'_>]) -> Result<Vec<Type>> {
    let mut scratch = BytesMut::new();
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            natural_type(*value, &mut scratch).ok_or_else(|| {
                let (name, written) = placeholder(text, i);
                // The value itself stays out of the message: errors never hold values.
                Error::params(format!(
                    "parameter {name} has a type that cannot be sent unprepared (statement cache off, e.g. for PgBouncer): bind it as text with a cast in SQL (e.g. {written}::my_enum), or set POSTGRES_STATEMENT_CACHE_SIZE above 0"
                ))
                .with_statement(text.as_str())
            })
        })
        .collect()
}
