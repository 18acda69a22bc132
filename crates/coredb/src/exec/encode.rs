//! Parameter values encoded for their statement's types, widened when the server asks for a
//! wider type and nothing is lost, and the diagnostics when one cannot be sent.
//!
//! The server decides a parameter's type when it prepares the statement: `:init + sum(amount)`
//! makes it `numeric`, an `int8` column makes it `int8`. A Rust `i64` or `i32` bound there is
//! refused by the driver, though its value fits exactly; such values are sent in the server's
//! type instead ([`widen`]). A value that might not fit is refused with the cast to write.

use bytes::{Bytes, BytesMut};
use postgres_types::{to_sql_checked, Format, FromSql, IsNull, ToSql, Type, WrongType};
use rust_decimal::Decimal;
use tokio_postgres::Statement;

use super::param_types::{natural_type, placeholder};
use crate::error::{Error, Result};
use crate::params::{Bound, SqlParam};

/// A parameter value encoded for its statement's type: sent in place of a value the driver
/// refused for that type (see [`widen`]).
#[derive(Debug)]
pub(crate) struct Encoded {
    bytes: Option<Bytes>,
    format: Format,
}

impl ToSql for Encoded {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.bytes {
            Some(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    /// Checked by the caller when it encoded the value.
    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        self.format
    }

    to_sql_checked!();
}

/// Encodes the bound values for `statement`'s parameter types, widening those the server asks
/// for in a wider type (see [`widen`]).
///
/// # Errors
/// A [`Params`](crate::ErrorKind::Params) error naming the value that cannot be sent as its
/// type, with the cast to write.
pub(crate) fn encode(statement: &Statement, bound: &Bound<'_, '_>) -> Result<Vec<Encoded>> {
    let mut encoded = Vec::with_capacity(bound.values.len());
    for (i, (value, ty)) in bound.values.iter().zip(statement.params()).enumerate() {
        let mut out = BytesMut::new();
        let (is_null, format) =
            encode_one(*value, ty, &mut out).map_err(|err| refused(bound, i, *value, ty, &*err))?;
        encoded.push(Encoded {
            bytes: match is_null {
                IsNull::No => Some(out.freeze()),
                IsNull::Yes => None,
            },
            format,
        });
    }
    Ok(encoded)
}

/// True when the driver refused to send a value as its parameter's type. It checks every value
/// before it writes anything, so nothing was sent and the statement can be sent again.
pub(crate) fn is_wrong_type(err: &tokio_postgres::Error) -> bool {
    std::error::Error::source(err).is_some_and(|cause| cause.is::<WrongType>())
}

/// Encodes one value as `ty`, or widened to `ty` when the value is of a narrower type.
fn encode_one(
    value: SqlParam<'_>,
    ty: &Type,
    out: &mut BytesMut,
) -> std::result::Result<(IsNull, Format), Box<dyn std::error::Error + Sync + Send>> {
    match value.to_sql_checked(ty, out) {
        Ok(is_null) => Ok((is_null, value.encode_format(ty))),
        Err(err) if err.is::<WrongType>() => {
            out.clear();
            // The wider types are all sent in binary.
            widen(value, ty, out)
                .map(|is_null| (is_null, Format::Binary))
                .ok_or(err)
        }
        Err(err) => Err(err),
    }
}

/// The lossless widenings: the server's type, and the narrower types whose every value it
/// holds exactly, tried in this order.
const WIDENINGS: &[(Type, &[Type])] = &[
    (Type::INT4, &[Type::INT2]),
    (Type::INT8, &[Type::INT4, Type::INT2]),
    (Type::NUMERIC, &[Type::INT8, Type::INT4, Type::INT2]),
    (Type::FLOAT4, &[Type::INT2]),
    (Type::FLOAT8, &[Type::FLOAT4, Type::INT4, Type::INT2]),
];

/// A number read back from a value encoded as a narrower type.
enum Narrow {
    /// From `int2`, `int4` or `int8`.
    Int(i64),
    /// From `float4`, exactly.
    Float(f64),
}

/// Writes `value` as `ty` when the value is of a narrower type `ty` holds exactly: `None` when
/// there is no such widening.
///
/// A `&dyn ToSql` cannot be downcast to its Rust type, so the value is encoded as the narrower
/// type, read back, and written again as the wider one.
fn widen(value: SqlParam<'_>, ty: &Type, out: &mut BytesMut) -> Option<IsNull> {
    let (_, narrower) = WIDENINGS.iter().find(|(wide, _)| wide == ty)?;
    let mut raw = BytesMut::new();
    for narrow in *narrower {
        raw.clear();
        match value.to_sql_checked(narrow, &mut raw) {
            Ok(IsNull::Yes) => return Some(IsNull::Yes),
            Ok(IsNull::No) => {}
            Err(_) => continue,
        }
        let number = if *narrow == Type::INT2 {
            Narrow::Int(i16::from_sql(narrow, &raw).ok()?.into())
        } else if *narrow == Type::INT4 {
            Narrow::Int(i32::from_sql(narrow, &raw).ok()?.into())
        } else if *narrow == Type::INT8 {
            Narrow::Int(i64::from_sql(narrow, &raw).ok()?)
        } else {
            Narrow::Float(f32::from_sql(narrow, &raw).ok()?.into())
        };
        let written = match number {
            Narrow::Int(n) if *ty == Type::INT4 => i32::try_from(n).ok()?.to_sql(ty, out),
            Narrow::Int(n) if *ty == Type::INT8 => n.to_sql(ty, out),
            Narrow::Int(n) if *ty == Type::NUMERIC => Decimal::from(n).to_sql(ty, out),
            // Only int2 widens to float4, and int2 / int4 to float8: f32 and f64 hold them exactly.
            Narrow::Int(n) if *ty == Type::FLOAT4 => {
                f32::from(i16::try_from(n).ok()?).to_sql(ty, out)
            }
            Narrow::Int(n) => f64::from(i32::try_from(n).ok()?).to_sql(ty, out),
            Narrow::Float(x) => x.to_sql(ty, out),
        };
        return written.ok();
    }
    None
}

/// Finds which parameter cannot be sent as the type the server expects, and says so by name.
pub(crate) fn describe_wrong_parameter(
    statement: &Statement,
    bound: &Bound<'_, '_>,
) -> Option<Error> {
    let mut scratch = BytesMut::new();
    for (i, (value, ty)) in bound.values.iter().zip(statement.params()).enumerate() {
        scratch.clear();
        if let Err(err) = encode_one(*value, ty, &mut scratch) {
            return Some(refused(bound, i, *value, ty, &*err));
        }
    }
    None
}

/// The error for the `index`th value, which cannot be sent as `ty`: it names the parameter as
/// written in the SQL and says what to change.
fn refused(
    bound: &Bound<'_, '_>,
    index: usize,
    value: SqlParam<'_>,
    ty: &Type,
    err: &(dyn std::error::Error + Sync + Send),
) -> Error {
    let (name, written) = placeholder(&bound.text, index);
    let mut message = format!("parameter {name} cannot be sent as PostgreSQL type {ty}: {err}");
    if let Some(hint) = hint(&written, value, ty) {
        message.push_str("; ");
        message.push_str(&hint);
    }
    Error::params(message).with_statement(bound.text.as_str())
}

/// What to write instead, for a value the server's type `ty` does not take; `written` is the
/// placeholder as the SQL spells it.
fn hint(written: &str, value: SqlParam<'_>, ty: &Type) -> Option<String> {
    let natural = natural_type(value, &mut BytesMut::new());
    if *ty == Type::TEXT {
        // PostgreSQL gives text to a parameter whose type nothing in the SQL decides
        // (`SELECT :n`); a cast decides it.
        let cast = natural
            .as_ref()
            .map_or_else(|| "the_type".to_owned(), cast_name);
        return Some(format!(
            "the server takes text when the SQL does not tell it a parameter's type: add a cast in the SQL, e.g. {written}::{cast}"
        ));
    }
    let rust = rust_type(ty);
    match natural {
        Some(natural) if is_number(&natural) && is_number(ty) => {
            let mut hint = format!(
                "sending {natural} as {ty} could change the value: add a cast in the SQL, e.g. {written}::{}, and the server converts it (with an error for a value that does not fit)",
                cast_name(&natural)
            );
            if let Some(rust) = rust {
                hint.push_str(&format!(", or bind a Rust {rust}"));
            }
            Some(hint)
        }
        _ => rust.map(|rust| format!("bind a Rust {rust} (or an Option of one)")),
    }
}

/// How a type is spelled in a cast: `int4`, or `int4[]` for an array.
fn cast_name(ty: &Type) -> String {
    match ty.kind() {
        postgres_types::Kind::Array(element) => format!("{}[]", element.name()),
        _ => ty.name().to_owned(),
    }
}

/// True for the numeric types, between which a cast converts the value.
fn is_number(ty: &Type) -> bool {
    [
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
    ]
    .contains(ty)
}

/// The Rust type that is sent as `ty`, for the common types.
fn rust_type(ty: &Type) -> Option<&'static str> {
    const RUST_TYPES: &[(Type, &str)] = &[
        (Type::BOOL, "bool"),
        (Type::INT2, "i16"),
        (Type::INT4, "i32"),
        (Type::INT8, "i64"),
        (Type::FLOAT4, "f32"),
        (Type::FLOAT8, "f64"),
        (Type::NUMERIC, "rust_decimal::Decimal"),
        (Type::TEXT, "String"),
        (Type::VARCHAR, "String"),
        (Type::BPCHAR, "String"),
        (Type::BYTEA, "Vec<u8>"),
        (Type::UUID, "uuid::Uuid"),
        (Type::TIMESTAMPTZ, "chrono::DateTime<Utc>"),
        (Type::TIMESTAMP, "chrono::NaiveDateTime"),
        (Type::DATE, "chrono::NaiveDate"),
        (Type::TIME, "chrono::NaiveTime"),
        (Type::JSONB, "serde_json::Value"),
        (Type::JSON, "serde_json::Value"),
    ];
    RUST_TYPES
        .iter()
        .find(|(t, _)| t == ty)
        .map(|(_, rust)| *rust)
}
