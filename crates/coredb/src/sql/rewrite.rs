//! Rewrites SQLAlchemy-style `:name` placeholders into PostgreSQL's `$n`.
//!
//! PostgreSQL only understands positional parameters, but named ones are far
//! easier to read and to keep in sync with their values. The rewriter is a
//! single forward pass over the statement's tokens (see [`super::lexer`]),
//! which know just enough of the PostgreSQL lexer to tell a placeholder apart
//! from text that merely contains a colon: string literals, quoted
//! identifiers, comments, dollar-quoted bodies and `::` casts are copied
//! through untouched.
//!
//! It never reports errors: malformed SQL (an unterminated string, say) is
//! copied through verbatim so that the server, which knows the real grammar,
//! produces the diagnostic.
//!
//! The text is only ever sliced at token boundaries, which never split a
//! multi-byte UTF-8 character.

use std::collections::HashMap;

use super::lexer::{positional_value, tokenize, TokenKind};

/// SQL with `:name` placeholders rewritten to `$n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RewrittenSql {
    /// The statement as sent to the server.
    pub sql: String,
    /// `names[i]` is the parameter bound to `$i+1`, in order of first use.
    pub names: Vec<String>,
    /// Highest positional `$n` written by the user (0 when none).
    pub max_positional: usize,
}

/// Rewrites every `:name` placeholder in `sql` to `$n`.
///
/// Distinct names are numbered in order of first appearance and a repeated
/// name reuses its number, so each value is bound once. Positional `$n`
/// parameters written by the user are left in place and only counted, so the
/// caller can reject statements that mix both styles. When there is no
/// placeholder the output is byte-identical to the input.
pub(crate) fn rewrite(sql: &str) -> RewrittenSql {
    // Every placeholder starts with `:` and every positional parameter with
    // `$`: text with neither has nothing to find, and a byte search is much
    // cheaper than lexing.
    if !sql.bytes().any(|b| b == b':' || b == b'$') {
        return RewrittenSql {
            sql: sql.to_owned(),
            names: Vec::new(),
            max_positional: 0,
        };
    }
    let mut out = Output::new(sql);
    let mut names = Names::default();
    let mut max_positional = 0usize;

    for token in tokenize(sql) {
        match token.kind {
            TokenKind::NamedPlaceholder => {
                // The token is `:` followed by the name.
                let number = names.number_for(&token.text[1..]);
                out.replace(token.start, token.end(), number);
            }
            TokenKind::PositionalParameter => {
                max_positional = max_positional.max(positional_value(token.text));
            }
            _ => {}
        }
    }

    RewrittenSql {
        sql: out.finish(),
        names: names.into_owned(),
        max_positional,
    }
}

/// The output buffer, filled lazily so that SQL without placeholders costs a
/// single copy and is guaranteed byte-identical.
struct Output<'a> {
    /// The original statement, copied in spans between placeholders.
    src: &'a str,
    /// The rewritten statement so far; unallocated until the first placeholder.
    buf: String,
    /// Bytes of `src` before this index are already in `buf` (or replaced).
    copied: usize,
}

impl<'a> Output<'a> {
    /// Room for a few placeholders whose `$n` is longer than `:name`
    /// (`:a` -> `$10`), so the common case allocates exactly once.
    const SLACK: usize = 16;

    /// Starts an empty output over `src`.
    fn new(src: &'a str) -> Self {
        Output {
            src,
            buf: String::new(),
            copied: 0,
        }
    }

    /// Replaces `src[start..end]` (a `:name`) with `$number`.
    fn replace(&mut self, start: usize, end: usize, number: usize) {
        if self.buf.capacity() == 0 {
            self.buf.reserve(self.src.len() + Self::SLACK);
        }
        self.buf.push_str(&self.src[self.copied..start]);
        self.buf.push('$');
        push_decimal(&mut self.buf, number);
        self.copied = end;
    }

    /// Returns the finished statement, copying the tail after the last
    /// placeholder (or the whole input when there was none).
    fn finish(mut self) -> String {
        if self.copied == 0 {
            return self.src.to_owned();
        }
        self.buf.push_str(&self.src[self.copied..]);
        self.buf
    }
}

/// Appends `n` in decimal without the temporary `String` of `to_string`.
fn push_decimal(buf: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        // `n % 10` is below 10, so the cast cannot truncate.
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in digits[..len].iter().rev() {
        buf.push(char::from(d));
    }
}

/// Distinct placeholder names in order of first use.
#[derive(Default)]
struct Names<'a> {
    /// `list[i]` is bound to `$i+1`.
    list: Vec<&'a str>,
    /// Name to index in `list`, built only once there are enough names that
    /// a linear scan would make rewriting quadratic (e.g. bulk `VALUES`).
    index: HashMap<&'a str, usize>,
}

impl<'a> Names<'a> {
    /// Below this many names a linear scan beats hashing.
    const LINEAR_LIMIT: usize = 16;

    /// Returns the 1-based parameter number for `name`, assigning the next
    /// one on first use.
    fn number_for(&mut self, name: &'a str) -> usize {
        let found = if self.index.is_empty() {
            self.list.iter().position(|n| *n == name)
        } else {
            self.index.get(name).copied()
        };
        if let Some(pos) = found {
            return pos + 1;
        }
        let pos = self.list.len();
        self.list.push(name);
        if !self.index.is_empty() {
            self.index.insert(name, pos);
        } else if self.list.len() > Self::LINEAR_LIMIT {
            self.index = self.list.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        }
        pos + 1
    }

    /// The names as owned strings, in parameter order.
    fn into_owned(self) -> Vec<String> {
        self.list.into_iter().map(str::to_owned).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Rewrites `sql` and returns just the statement and names.
    fn rw(sql: &str) -> (String, Vec<String>) {
        let r = rewrite(sql);
        (r.sql, r.names)
    }

    /// Asserts that `sql` contains no placeholder and comes back unchanged.
    fn assert_untouched(sql: &str) {
        let r = rewrite(sql);
        assert_eq!(r.sql, sql);
        assert!(r.names.is_empty(), "unexpected names {:?}", r.names);
    }

    #[test]
    fn names_become_numbered_in_order_of_first_use() {
        let (sql, names) = rw("SELECT * FROM users WHERE age > :age AND name = :name");
        assert_eq!(sql, "SELECT * FROM users WHERE age > $1 AND name = $2");
        assert_eq!(names, ["age", "name"]);
    }

    #[test]
    fn repeated_name_binds_once() {
        let (sql, names) = rw("SELECT :a, :b, :a, :b_2, :b");
        assert_eq!(sql, "SELECT $1, $2, $1, $3, $2");
        assert_eq!(names, ["a", "b", "b_2"]);
    }

    #[test]
    fn many_names_keep_first_use_numbering() {
        // Crosses the switch from linear scan to hash index.
        let sql: String = (0..40)
            .chain(0..40)
            .map(|i| format!(":p{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let r = rewrite(&sql);
        let expected: String = (1..=40)
            .chain(1..=40)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(r.sql, expected);
        assert_eq!(r.names.len(), 40);
        assert_eq!(r.names[39], "p39");
    }

    #[test]
    fn statement_without_names_is_unchanged() {
        assert_untouched("SELECT 1");
        assert_untouched("");
        assert_eq!(rewrite("SELECT $1").max_positional, 1);
    }

    #[test]
    fn casts_are_not_parameters() {
        assert_eq!(rw(":age::int").0, "$1::int");
        assert_eq!(rw("SELECT (:a)::text").0, "SELECT ($1)::text");
        assert_untouched("SELECT x::text");
        assert_untouched("SELECT a :: text");
        assert_untouched("SELECT '1'::int:::x");
    }

    #[test]
    fn name_at_start_and_end_of_statement() {
        assert_eq!(rw(":a").0, "$1");
        assert_eq!(rw("x = :long_name_9").0, "x = $1");
    }

    #[test]
    fn quoted_string_hides_names() {
        assert_untouched("SELECT 'it''s :not'");
        let (sql, names) = rw("SELECT 'a:b', :c, 'x'':y'");
        assert_eq!(sql, "SELECT 'a:b', $1, 'x'':y'");
        assert_eq!(names, ["c"]);
    }

    #[test]
    fn escape_string_backslash_quote_does_not_end_string() {
        assert_untouched(r"SELECT E'\':x'");
        assert_untouched(r"SELECT e'\\'':x'");
        assert_eq!(rw(r"SELECT E'\\', :x").0, r"SELECT E'\\', $1");
        // Only a lone `E` prefixes an escape string; `'\'` here is a
        // complete standard string, so `:x` after it is a placeholder.
        assert_eq!(rw(r"SELECT xe'\', :x").0, r"SELECT xe'\', $1");
        assert_eq!(rw(r"SELECT '\', :x").0, r"SELECT '\', $1");
    }

    #[test]
    fn quoted_identifier_with_colon_is_left_alone() {
        assert_untouched(r#"SELECT "col:x" FROM t"#);
        assert_untouched(r#"SELECT "a"":x" FROM t"#);
        assert_eq!(rw(r#"SELECT "c" = :x"#).0, r#"SELECT "c" = $1"#);
    }

    #[test]
    fn line_comments_hide_names() {
        assert_untouched("SELECT 1 -- :x\n");
        assert_eq!(rw("SELECT 1 -- :x\n, :y").0, "SELECT 1 -- :x\n, $1");
        assert_eq!(rw("SELECT 1 -- :x\r, :y").0, "SELECT 1 -- :x\r, $1");
    }

    #[test]
    fn nested_block_comments_hide_names() {
        assert_untouched("/* a /* b */ :x */ SELECT 1");
        assert_eq!(
            rw("/* a /* b */ :x */ SELECT :y").0,
            "/* a /* b */ :x */ SELECT $1"
        );
        assert_eq!(rw("/**/ :y").0, "/**/ $1");
    }

    #[test]
    fn dollar_quoted_body_is_left_alone() {
        assert_untouched("DO $$ BEGIN x := :y; END $$");
        assert_untouched("DO $fn$ SELECT ':a' $$ :b $fn$");
        assert_eq!(
            rw("SELECT $q$ :a $q$, :b, $_9$:c$_9$").0,
            "SELECT $q$ :a $q$, $1, $_9$:c$_9$"
        );
    }

    #[test]
    fn dollar_inside_identifier_starts_nothing() {
        // `a$$` is an identifier, so `:b` is not inside a dollar quote.
        let r = rewrite("SELECT a$$, :b, x$1");
        assert_eq!(r.sql, "SELECT a$$, $1, x$1");
        assert_eq!(r.max_positional, 0);
    }

    #[test]
    fn positional_parameters_are_counted() {
        let r = rewrite("SELECT $1, $12, $3 WHERE x = :a");
        assert_eq!(r.max_positional, 12);
        assert_eq!(r.sql, "SELECT $1, $12, $3 WHERE x = $1");
        assert_eq!(r.names, ["a"]);
        let hidden = rewrite("SELECT '$7', \"$8\", $t9$ $10 $t9$ -- $11\n/* $12 */");
        assert_eq!(hidden.max_positional, 0);
        assert_eq!(
            rewrite("SELECT $99999999999999999999999").max_positional,
            usize::MAX
        );
    }

    #[test]
    fn colon_without_identifier_is_not_a_parameter() {
        assert_untouched("x := 1");
        assert_untouched("SELECT :1, : a, :");
        assert_untouched("SELECT :é");
    }

    #[test]
    fn array_slice_is_not_a_parameter() {
        assert_untouched("SELECT arr[1:2]");
        assert_untouched("SELECT arr[lo:hi]");
        assert_untouched("SELECT f(x)[1:n], (a)[b:c], arr[1][2:x]");
        // The colon is not glued to anything, so this is a placeholder.
        assert_eq!(rw("SELECT arr[:hi]").0, "SELECT arr[$1]");
    }

    #[test]
    fn non_ascii_text_passes_through() {
        let (sql, names) = rw("SELECT 'héllo :x', \"naïve\", :nom, ünïcode, /* 日本 */ :nom -- ✓");
        assert_eq!(
            sql,
            "SELECT 'héllo :x', \"naïve\", $1, ünïcode, /* 日本 */ $1 -- ✓"
        );
        assert_eq!(names, ["nom"]);
        // A non-ASCII letter is an identifier character, so it glues.
        assert_untouched("SELECT é:x");
        assert_eq!(rw("SELECT :a€").0, "SELECT $1€");
        assert_untouched("SELECT $é$ :x $é$");
    }

    #[test]
    fn unterminated_string_is_copied_verbatim() {
        assert_untouched("SELECT 'abc :x");
        assert_untouched(r"SELECT E'abc\");
        assert_untouched("SELECT \"abc :x");
        assert_untouched("SELECT /* /* :x */");
        assert_untouched("SELECT $t$ :x $t");
        assert_eq!(rw("SELECT :a, 'abc :x").0, "SELECT $1, 'abc :x");
    }

    /// SQL-ish fragments that exercise every lexer state and its boundaries.
    const FRAGMENTS: &[&str] = &[
        "'", "\"", "$$", "$a$", "$1", "$", "--", "/*", "*/", "/", "*", "-", ":x", ":", "::", ":=",
        "\n", "\r", "E'", "e'", "\\", "[", "]", "(", ")", " ", "a", "1", "_", "é", "日", "✓", ":é",
        "SELECT ", ":name", "''", "\"\"",
    ];

    /// Strings built by concatenating fragments.
    fn sqlish() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40)
            .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_strings(s in any::<String>()) {
            let _ = rewrite(&s);
        }

        #[test]
        fn never_panics_on_sqlish_strings(s in sqlish()) {
            let _ = rewrite(&s);
        }

        #[test]
        fn input_without_colon_is_unchanged(s in sqlish().prop_map(|s| s.replace(':', ""))) {
            let r = rewrite(&s);
            prop_assert_eq!(&r.sql, &s);
            prop_assert!(r.names.is_empty());
        }

        #[test]
        fn arbitrary_input_without_colon_is_unchanged(s in "[^:]*") {
            let r = rewrite(&s);
            prop_assert_eq!(&r.sql, &s);
            prop_assert!(r.names.is_empty());
        }

        /// Replacing `:name` by `$n` must not change how the rest lexes:
        /// rewriting the output finds no names and sees exactly the user's
        /// positional parameters plus the new ones.
        #[test]
        fn rewriting_is_stable(s in sqlish()) {
            let first = rewrite(&s);
            let second = rewrite(&first.sql);
            prop_assert!(second.names.is_empty());
            prop_assert_eq!(&second.sql, &first.sql);
            prop_assert_eq!(
                second.max_positional,
                first.max_positional.max(first.names.len())
            );
        }

        #[test]
        fn names_are_distinct(s in sqlish()) {
            let names = rewrite(&s).names;
            let mut sorted = names.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), names.len());
        }
    }
}
