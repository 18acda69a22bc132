//! Temporary stand-in for the sql module.
#[path = "named_params.rs"]
mod named_params;
pub(crate) use named_params::{rewrite, RewrittenSql};

#[derive(Clone, Copy)]
pub(crate) struct StatementClass(bool, bool);
impl StatementClass {
    pub(crate) fn is_shareable(self) -> bool { self.0 }
    pub(crate) fn is_read_only(self) -> bool { self.1 }
}
pub(crate) fn classify(sql: &str) -> StatementClass {
    let w = sql.trim_start().split_whitespace().next().unwrap_or("").to_ascii_uppercase();
    StatementClass(!matches!(w.as_str(), "SET"|"BEGIN"|"LISTEN"|""|"DECLARE"|"COMMIT"|"ROLLBACK"), matches!(w.as_str(), "SELECT"|"VALUES"|"SHOW"|"TABLE"))
}
