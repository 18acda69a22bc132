//! One tokenizer for PostgreSQL statement text, shared by the `:name`
//! rewriter and the statement classifier.
//!
//! It knows just enough of PostgreSQL's lexer (`scan.l`) to find where
//! string literals, quoted identifiers, comments and dollar-quoted bodies
//! begin and end, so that nothing inside them is mistaken for a keyword, a
//! placeholder or a statement separator. It does not check the grammar: the
//! server does that.
//!
//! Two properties the callers rely on:
//! - **It never fails.** Malformed text (an unterminated string, comment or
//!   dollar quote) ends in one token that runs to the end of the input, and
//!   the server, which knows the real grammar, reports the error.
//! - **The tokens tile the input.** Each token starts where the previous one
//!   ended and none is empty. Every boundary has an ASCII byte on at least
//!   one side, so it never splits a UTF-8 character.
//!
//! Like the server since PostgreSQL 9.1, it assumes
//! `standard_conforming_strings = on`: a backslash escapes only inside
//! `E'...'` strings.

/// What a [`Token`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// A keyword or an unquoted identifier: a letter, `_` or non-ASCII byte,
    /// then any of those, digits and `$`. Keywords are not told apart from
    /// names here; compare the text case-insensitively.
    Word,
    /// `"..."` or `U&"..."`, with `""` standing for a quote. Case-sensitive
    /// and never a keyword, even when spelled like one (`"select"`).
    QuotedIdentifier,
    /// `'...'`, `E'...'` (backslash escapes) or `U&'...'`.
    StringLiteral,
    /// `$$...$$` or `$tag$...$tag$`, delimiters included.
    DollarQuoted,
    /// `-- ...` up to, not including, the line break.
    LineComment,
    /// `/* ... */`, nested as PostgreSQL nests them.
    BlockComment,
    /// Spaces, tabs, line breaks, form and vertical feeds.
    Whitespace,
    /// A `:name` placeholder (see the rewriter for when a colon starts one).
    NamedPlaceholder,
    /// A positional parameter `$1`, `$2`, ...
    PositionalParameter,
    /// The `::` cast operator.
    Cast,
    /// Digits, optionally with a fractional part (`12`, `1.5`).
    Number,
    /// `(`
    OpenParen,
    /// `)`
    CloseParen,
    /// `;`, the statement separator.
    Semicolon,
    /// `,`, `.`, `[`, `]` or a `:` that starts neither a cast nor a placeholder.
    Punctuation,
    /// A run of operator characters (`+ - * / < > = ~ ! @ # % ^ & | ` ?`) that
    /// stops before a comment starts.
    Operator,
    /// Any other byte, e.g. a `$` that starts nothing or a backslash.
    Other,
}

impl TokenKind {
    /// Whitespace and comments: tokens that separate others but mean nothing.
    pub(crate) fn is_trivia(self) -> bool {
        matches!(
            self,
            TokenKind::Whitespace | TokenKind::LineComment | TokenKind::BlockComment
        )
    }
}

/// One token: its kind and where it sits in the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    /// What the token is.
    pub(crate) kind: TokenKind,
    /// Byte offset of the token's first byte in the statement.
    pub(crate) start: usize,
    /// The token's text, delimiters and prefixes included.
    pub(crate) text: &'a str,
}

impl Token<'_> {
    /// Byte offset just past the token.
    pub(crate) fn end(&self) -> usize {
        self.start + self.text.len()
    }

    /// Whether this is the unquoted word `keyword`, ignoring ASCII case.
    /// `keyword` is written in upper case by convention; quoted identifiers
    /// never match.
    pub(crate) fn is_keyword(&self, keyword: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(keyword)
    }
}

/// The tokens of `sql`, in order; see the module doc for the guarantees.
pub(crate) fn tokenize(sql: &str) -> Lexer<'_> {
    Lexer { sql, pos: 0 }
}

/// Iterator over the tokens of a statement; made by [`tokenize`]. Allocates
/// nothing.
#[derive(Debug, Clone)]
pub(crate) struct Lexer<'a> {
    /// The whole statement.
    sql: &'a str,
    /// Byte offset where the next token starts.
    pos: usize,
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    // Inlined so that the classifier's and rewriter's loops keep the token
    // in registers instead of passing it through memory on every call.
    #[inline]
    fn next(&mut self) -> Option<Token<'a>> {
        let start = self.pos;
        if start >= self.sql.len() {
            return None;
        }
        let (kind, end) = scan(self.sql.as_bytes(), start);
        // Every branch of `scan` consumes at least one byte and stops at an
        // ASCII byte or the end, so the slice is non-empty and on character
        // boundaries (see `scan`).
        debug_assert!(end > start && end <= self.sql.len());
        self.pos = end;
        Some(Token {
            kind,
            start,
            text: &self.sql[start..end],
        })
    }
}

/// Scans the token starting at `start` (which is below `bytes.len()`),
/// returning its kind and the index just past it.
fn scan(bytes: &[u8], start: usize) -> (TokenKind, usize) {
    let b = bytes[start];
    let next = bytes.get(start + 1).copied();
    match b {
        b'\'' => (
            TokenKind::StringLiteral,
            skip_quoted(bytes, start + 1, b'\'', false),
        ),
        b'"' => (
            TokenKind::QuotedIdentifier,
            skip_quoted(bytes, start + 1, b'"', false),
        ),
        b'-' if next == Some(b'-') => (TokenKind::LineComment, skip_line_comment(bytes, start + 2)),
        b'/' if next == Some(b'*') => (
            TokenKind::BlockComment,
            skip_block_comment(bytes, start + 2),
        ),
        b'$' => match scan_dollar(bytes, start) {
            Dollar::Positional { end } => (TokenKind::PositionalParameter, end),
            Dollar::QuoteStart { tag_end } => (
                TokenKind::DollarQuoted,
                skip_dollar_body(bytes, start, tag_end),
            ),
            Dollar::Plain => (TokenKind::Other, start + 1),
        },
        // `::` is a cast; taking both colons keeps the second one from being
        // mistaken for the start of a placeholder.
        b':' if next == Some(b':') => (TokenKind::Cast, start + 2),
        b':' if starts_placeholder(bytes, start) => (
            TokenKind::NamedPlaceholder,
            placeholder_name_end(bytes, start + 1),
        ),
        b'(' => (TokenKind::OpenParen, start + 1),
        b')' => (TokenKind::CloseParen, start + 1),
        b';' => (TokenKind::Semicolon, start + 1),
        b',' | b'.' | b'[' | b']' | b':' => (TokenKind::Punctuation, start + 1),
        b if is_whitespace(b) => (TokenKind::Whitespace, run_end(bytes, start, is_whitespace)),
        b if b.is_ascii_digit() => (TokenKind::Number, number_end(bytes, start)),
        // Identifiers are consumed whole because `$` may continue one (`a$1`
        // is a name, not a parameter) and because a lone `E` or `U&` before a
        // quote changes how the quoted text is read.
        b if is_ident_start(b) => scan_word(bytes, start),
        b if is_operator_char(b) => (TokenKind::Operator, operator_end(bytes, start)),
        _ => (TokenKind::Other, start + 1),
    }
}

/// Scans an identifier or keyword at `start`, or the string or quoted
/// identifier it prefixes: `E'...'`, `U&'...'`, `U&"..."`.
fn scan_word(bytes: &[u8], start: usize) -> (TokenKind, usize) {
    let end = run_end(bytes, start + 1, is_ident_cont);
    if end == start + 1 {
        let prefix = bytes[start].to_ascii_uppercase();
        let after = bytes.get(end).copied();
        if prefix == b'E' && after == Some(b'\'') {
            return (
                TokenKind::StringLiteral,
                skip_quoted(bytes, end + 1, b'\'', true),
            );
        }
        // A Unicode-escape string or identifier ends at its quote like a
        // plain one: its escapes use `\` followed by hex digits, never `'`.
        if prefix == b'U' && after == Some(b'&') {
            match bytes.get(end + 1) {
                Some(b'\'') => {
                    return (
                        TokenKind::StringLiteral,
                        skip_quoted(bytes, end + 2, b'\'', false),
                    )
                }
                Some(b'"') => {
                    return (
                        TokenKind::QuotedIdentifier,
                        skip_quoted(bytes, end + 2, b'"', false),
                    )
                }
                _ => {}
            }
        }
    }
    (TokenKind::Word, end)
}

/// What a `$` outside quotes and comments starts.
enum Dollar {
    /// `$123`: a positional parameter; `end` is just past its digits.
    Positional {
        /// Index just past the last digit.
        end: usize,
    },
    /// `$$` or `$tag$`: a dollar-quoted body.
    QuoteStart {
        /// Index just past the opening delimiter.
        tag_end: usize,
    },
    /// Any other `$`, which the server will make sense of (or reject).
    Plain,
}

/// Classifies the `$` at `start`, following PostgreSQL's lexer: digits make a
/// parameter, a tag (identifier characters, no leading digit) closed by `$`
/// makes a dollar quote.
fn scan_dollar(bytes: &[u8], start: usize) -> Dollar {
    let i = start + 1;
    match bytes.get(i) {
        Some(b) if b.is_ascii_digit() => Dollar::Positional {
            end: run_end(bytes, i, |b| b.is_ascii_digit()),
        },
        Some(&b'$') => Dollar::QuoteStart { tag_end: i + 1 },
        Some(&b) if is_ident_start(b) => {
            let tag_end = run_end(bytes, i, |b| is_ident_start(b) || b.is_ascii_digit());
            if bytes.get(tag_end) == Some(&b'$') {
                Dollar::QuoteStart {
                    tag_end: tag_end + 1,
                }
            } else {
                Dollar::Plain
            }
        }
        _ => Dollar::Plain,
    }
}

/// The value of a positional parameter token (`$12` -> 12), saturating
/// rather than overflowing: an absurd `$n` is still the highest one, and the
/// server will reject it.
pub(crate) fn positional_value(token_text: &str) -> usize {
    token_text
        .bytes()
        .skip(1)
        .filter(u8::is_ascii_digit)
        .fold(0usize, |value, digit| {
            value
                .saturating_mul(10)
                .saturating_add(usize::from(digit - b'0'))
        })
}

/// Skips a dollar-quoted body whose opening delimiter is
/// `bytes[start..tag_end]`, returning the index just past the closing one.
///
/// A plain substring search for the delimiter matches PostgreSQL: tags cannot
/// contain `$`, so the lexer examines every `$` in the body as a possible
/// closing delimiter, just as the search does.
fn skip_dollar_body(bytes: &[u8], start: usize, tag_end: usize) -> usize {
    let delimiter = &bytes[start..tag_end];
    let mut i = tag_end;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'$') {
        i += offset;
        if bytes[i..].starts_with(delimiter) {
            return i + delimiter.len();
        }
        i += 1;
    }
    bytes.len()
}

/// Skips a literal or quoted identifier whose body starts at `start`,
/// returning the index just past the closing `quote` (or the end of input).
///
/// A doubled quote stands for itself; with `backslash` (an `E'...'` string)
/// a backslash also escapes the next byte, so `E'\''` is one string.
fn skip_quoted(bytes: &[u8], start: usize, quote: u8, backslash: bool) -> usize {
    let mut i = start;
    while i < bytes.len() {
        let b = bytes[i];
        if backslash && b == b'\\' {
            i += 2;
        } else if b == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// Skips a `--` comment whose body starts at `start`; like PostgreSQL, either
/// newline character ends it.
fn skip_line_comment(bytes: &[u8], start: usize) -> usize {
    run_end(bytes, start, |b| b != b'\n' && b != b'\r')
}

/// Skips a `/* */` comment whose body starts at `start`. PostgreSQL nests
/// block comments, so every `/*` inside needs its own `*/`.
fn skip_block_comment(bytes: &[u8], start: usize) -> usize {
    let mut depth = 1usize;
    let mut i = start;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'/', Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (b'*', Some(b'/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Whether the `:` at `colon` (not part of `::`) starts a placeholder.
///
/// The name must start with an ASCII letter or `_`, which rules out `:=`,
/// `:1` and `arr[1:2]`. As in SQLAlchemy's `text()`, a colon directly after
/// an identifier character, digit, `]`, `)` or another colon is never a
/// placeholder, so slices such as `arr[lo:hi]` and `f(x)[a:b]` are left
/// alone.
fn starts_placeholder(bytes: &[u8], colon: usize) -> bool {
    let name_starts = bytes
        .get(colon + 1)
        .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_');
    let glued_to_previous = colon > 0 && {
        let prev = bytes[colon - 1];
        is_ident_cont(prev) || matches!(prev, b']' | b')' | b':')
    };
    name_starts && !glued_to_previous
}

/// End of a placeholder name starting at `start`: ASCII letters, digits, `_`.
/// It may stop before a non-ASCII character, which then starts a word.
fn placeholder_name_end(bytes: &[u8], start: usize) -> usize {
    run_end(bytes, start, |b| b.is_ascii_alphanumeric() || b == b'_')
}

/// End of a number starting at `start`: digits, then a fraction if a `.` is
/// followed by a digit. Exponents and `_` separators are left to the next
/// tokens; nothing in this module depends on them.
fn number_end(bytes: &[u8], start: usize) -> usize {
    let end = run_end(bytes, start, |b| b.is_ascii_digit());
    if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
        run_end(bytes, end + 1, |b| b.is_ascii_digit())
    } else {
        end
    }
}

/// End of an operator starting at `start`. Like PostgreSQL, the run stops
/// where `--` or `/*` would start a comment.
fn operator_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(&b) = bytes.get(i) {
        let next = bytes.get(i + 1).copied();
        let starts_comment = (b == b'-' && next == Some(b'-')) || (b == b'/' && next == Some(b'*'));
        if !is_operator_char(b) || starts_comment {
            break;
        }
        i += 1;
    }
    i
}

/// Index of the first byte at or after `start` that `keep` rejects, or the
/// end of input.
fn run_end(bytes: &[u8], start: usize, keep: impl Fn(u8) -> bool) -> usize {
    bytes[start..]
        .iter()
        .position(|&b| !keep(b))
        .map_or(bytes.len(), |offset| start + offset)
}

/// PostgreSQL's whitespace: space, tab, newline, carriage return, form feed
/// and vertical tab (which `u8::is_ascii_whitespace` leaves out).
fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// PostgreSQL's operator characters.
fn is_operator_char(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'%'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
    )
}

/// PostgreSQL's identifier start: ASCII letters, `_`, and any non-ASCII byte
/// (so whole UTF-8 characters are consumed together).
fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// PostgreSQL's identifier continuation: a start byte, a digit, or `$`.
fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use TokenKind::*;

    /// The significant (non-trivia) tokens of `sql` as (kind, text).
    fn significant(sql: &str) -> Vec<(TokenKind, &str)> {
        tokenize(sql)
            .filter(|t| !t.kind.is_trivia())
            .map(|t| (t.kind, t.text))
            .collect()
    }

    #[test]
    fn splits_a_statement_into_tokens() {
        assert_eq!(
            significant("SELECT a.b, f($1)::int[] FROM t WHERE x >= :y;"),
            [
                (Word, "SELECT"),
                (Word, "a"),
                (Punctuation, "."),
                (Word, "b"),
                (Punctuation, ","),
                (Word, "f"),
                (OpenParen, "("),
                (PositionalParameter, "$1"),
                (CloseParen, ")"),
                (Cast, "::"),
                (Word, "int"),
                (Punctuation, "["),
                (Punctuation, "]"),
                (Word, "FROM"),
                (Word, "t"),
                (Word, "WHERE"),
                (Word, "x"),
                (Operator, ">="),
                (NamedPlaceholder, ":y"),
                (Semicolon, ";"),
            ]
        );
    }

    #[test]
    fn quoted_text_is_one_token() {
        assert_eq!(
            significant(r#"'a;b' E'\';x' U&'d\0061' "se""t" U&"x" $$ ; $$ $q$ $$ $q$"#),
            [
                (StringLiteral, "'a;b'"),
                (StringLiteral, r"E'\';x'"),
                (StringLiteral, r"U&'d\0061'"),
                (QuotedIdentifier, r#""se""t""#),
                (QuotedIdentifier, r#"U&"x""#),
                (DollarQuoted, "$$ ; $$"),
                (DollarQuoted, "$q$ $$ $q$"),
            ]
        );
        // Only a lone `E` or `U&` is a prefix.
        assert_eq!(
            significant("xe'a' u &'b'"),
            [
                (Word, "xe"),
                (StringLiteral, "'a'"),
                (Word, "u"),
                (Operator, "&"),
                (StringLiteral, "'b'"),
            ]
        );
    }

    #[test]
    fn comments_nest_and_stop_operators() {
        let tokens: Vec<_> = tokenize("a/* x /* y */ z */b --c\r+-- d\n*/*e*/")
            .map(|t| (t.kind, t.text))
            .collect();
        assert_eq!(
            tokens,
            [
                (Word, "a"),
                (BlockComment, "/* x /* y */ z */"),
                (Word, "b"),
                (Whitespace, " "),
                (LineComment, "--c"),
                (Whitespace, "\r"),
                (Operator, "+"),
                (LineComment, "-- d"),
                (Whitespace, "\n"),
                (Operator, "*"),
                (BlockComment, "/*e*/"),
            ]
        );
    }

    #[test]
    fn dollar_signs() {
        assert_eq!(
            significant("a$1 $1 $ $x 1$2"),
            [
                (Word, "a$1"),
                (PositionalParameter, "$1"),
                (Other, "$"),
                (Other, "$"),
                (Word, "x"),
                (Number, "1"),
                (PositionalParameter, "$2"),
            ]
        );
        assert_eq!(positional_value("$12"), 12);
        assert_eq!(positional_value("$99999999999999999999999"), usize::MAX);
    }

    #[test]
    fn unterminated_text_runs_to_the_end() {
        for (sql, kind) in [
            ("'abc ; x", StringLiteral),
            (r"E'abc\", StringLiteral),
            ("\"abc", QuotedIdentifier),
            ("/* /* */ x", BlockComment),
            ("$t$ x $t", DollarQuoted),
            ("-- x", LineComment),
        ] {
            let tokens: Vec<_> = tokenize(sql).collect();
            assert_eq!(tokens.len(), 1, "{sql}");
            assert_eq!((tokens[0].kind, tokens[0].text), (kind, sql));
        }
    }

    #[test]
    fn keywords_compare_without_case_and_never_quoted() {
        let tokens: Vec<_> = tokenize(r#"sElEcT "select""#).collect();
        assert!(tokens[0].is_keyword("SELECT"));
        assert!(!tokens[2].is_keyword("SELECT"));
        assert!(!tokens[0].is_keyword("SELEC"));
    }

    /// SQL-ish fragments that exercise every lexer state and its boundaries.
    const FRAGMENTS: &[&str] = &[
        "'", "\"", "$$", "$a$", "$1", "$", "--", "/*", "*/", "/", "*", "-", ":x", ":", "::", ":=",
        "\n", "\r", "\x0b", "E'", "e'", "U&'", "u&\"", "\\", "[", "]", "(", ")", ";", " ", "a",
        "1", "1.5", "_", "é", "日", "✓", ":é", "SELECT ", "''", "\"\"", "<=", "+-",
    ];

    /// Strings built by concatenating fragments.
    fn sqlish() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40)
            .prop_map(|parts| parts.concat())
    }

    /// Checks that the tokens of `sql` are non-empty, contiguous, cover the
    /// whole input and start and end on character boundaries.
    fn assert_tiles(sql: &str) -> Result<(), TestCaseError> {
        let mut expected_start = 0;
        for token in tokenize(sql) {
            prop_assert_eq!(token.start, expected_start);
            prop_assert!(!token.text.is_empty());
            prop_assert!(sql.is_char_boundary(token.start) && sql.is_char_boundary(token.end()));
            prop_assert_eq!(&sql[token.start..token.end()], token.text);
            expected_start = token.end();
        }
        prop_assert_eq!(expected_start, sql.len());
        Ok(())
    }

    proptest! {
        #[test]
        fn tokens_tile_arbitrary_strings(s in any::<String>()) {
            assert_tiles(&s)?;
        }

        #[test]
        fn tokens_tile_sqlish_strings(s in sqlish()) {
            assert_tiles(&s)?;
        }
    }
}
