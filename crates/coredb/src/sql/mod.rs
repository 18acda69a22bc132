//! Pure text: what coredb needs to know about SQL before sending it.
//!
//! - [`lexer`]: one tokenizer for PostgreSQL statement text (strings,
//!   `E''` strings, quoted identifiers, nested comments, dollar quotes,
//!   casts, placeholders), which everything else here is built on.
//! - [`rewrite`]: `:name` placeholders to PostgreSQL's `$n`.
//! - [`classify`]: what a statement does (transaction control, session state,
//!   shareable, read-only, function calls), proven from its tokens by
//!   allow-lists rather than guessed from its first word.
//! - [`quote_ident`]: an identifier written into generated SQL.
//!
//! No I/O and no dependencies besides `std`; nothing here allocates except
//! the rewriter's output. The server stays the judge of the grammar: these
//! functions never fail, and malformed text is passed on for it to reject.

mod classify;
mod lexer;
mod rewrite;

pub(crate) use classify::{classify, StatementClass};
pub(crate) use rewrite::{rewrite, RewrittenSql};

/// Quotes an identifier: `users` -> `"users"`, doubling any `"`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
