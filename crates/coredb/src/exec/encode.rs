//! Parameter values encoded for their statement's types, and the diagnostics when one cannot be.

use bytes::{Bytes, BytesMut};
use postgres_types::{to_sql_checked, Format, IsNull, ToSql, Type};
use tokio_postgres::Statement;

use crate::error::{Error, Result};
use crate::params::Bound;

/// A parameter value encoded by the caller for its statement's type, so the statement can run
/// on another task (a pipeline lane's dispatcher) that owns everything it sends.
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

/// Encodes the bound values for `statement`'s parameter types.
///
/// # Errors
/// A [`Params`](crate::ErrorKind::Params) error naming the value that cannot be sent as its type.
pub(crate) fn encode(statement: &Statement, bound: &Bound<'_, '_>) -> Result<Vec<Encoded>> {
    let mut encoded = Vec::with_capacity(bound.values.len());
    for (value, ty) in bound.values.iter().zip(statement.params()) {
        let mut out = BytesMut::new();
        let bytes = match value.to_sql_checked(ty, &mut out) {
            Ok(IsNull::No) => Some(out.freeze()),
            Ok(IsNull::Yes) => None,
            Err(err) => {
                return Err(
                    describe_wrong_parameter(statement, bound).unwrap_or_else(|| {
                        Error::params(format!("a parameter cannot be sent: {err}"))
                            .with_statement(bound.text.as_str())
                    }),
                )
            }
        };
        encoded.push(Encoded {
            bytes,
            format: value.encode_format(ty),
        });
    }
    Ok(encoded)
}

/// Finds which parameter cannot be sent as the type the server expects, and says so by name.
pub(crate) fn describe_wrong_parameter(
    statement: &Statement,
    bound: &Bound<'_, '_>,
) -> Option<Error> {
    let mut scratch = BytesMut::new();
    for (i, (value, ty)) in bound.values.iter().zip(statement.params()).enumerate() {
        scratch.clear();
        if let Err(err) = value.to_sql_checked(ty, &mut scratch) {
            let name = match bound.text.name_of(i) {
                Some(name) => format!(":{name} (${})", i + 1),
                None => format!("${}", i + 1),
            };
            return Some(
                Error::params(format!(
                    "parameter {name} cannot be sent as PostgreSQL type {ty}: {err}"
                ))
                .with_statement(bound.text.as_str()),
            );
        }
    }
    None
}
