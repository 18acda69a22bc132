//! Statement parameters: none `()`, positional (`$1`) as a tuple or slice, or named (`:name`)
//! with [`params!`](crate::params!).
//!
//! ```
//! use coredb::{params, Params};
//! let by_name = params! { "age" => 18, "name" => "Ada" };
//! let by_position = (18, "Ada");
//! # fn takes(_: impl Params) {}
//! # takes(by_name); takes(by_position); takes(());
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use postgres_types::ToSql;

use crate::error::{Error, Result};
use crate::sql::{classify, rewrite, RewrittenSql, StatementClass};

/// A parameter value as the driver takes it.
pub type SqlParam<'a> = &'a (dyn ToSql + Sync);

/// The values of a statement, as borrowed by the query API.
#[derive(Debug, Clone)]
pub enum ParamList<'a> {
    /// Values for `$1`, `$2`, ... in order.
    Positional(Values<'a>),
    /// Values by `:name`.
    Named(Vec<(&'a str, SqlParam<'a>)>),
}

/// How many positional values a [`Values`] holds in place before it needs a vector.
const INLINE: usize = 4;

/// Stands in the unused places of an inline [`Values`]; never sent.
static UNUSED: Option<i32> = None;

/// Positional values for `$1`, `$2`, ...: borrowed from the caller's slice, held in place
/// (up to four, e.g. a small tuple's), or in a vector. Binding a statement allocates nothing
/// for its values unless a tuple or a list built by name has more than four. (Four, not more:
/// the values move with the statement through each layer, and every place held in line is
/// copied each time.)
///
/// Made from a `Vec` or a slice of [`SqlParam`]s with `into()`; reads as a slice.
#[derive(Clone)]
pub struct Values<'a>(Repr<'a>);

#[derive(Clone)]
enum Repr<'a> {
    Borrowed(&'a [SqlParam<'a>]),
    Inline(u8, [SqlParam<'a>; INLINE]),
    Owned(Vec<SqlParam<'a>>),
}

impl<'a> Values<'a> {
    /// No values.
    pub const fn new() -> Self {
        Values(Repr::Borrowed(&[]))
    }

    /// The values of an array: held in line when they fit, else in a vector.
    fn from_array<const N: usize>(items: [SqlParam<'a>; N]) -> Self {
        if N > INLINE {
            return Values(Repr::Owned(items.to_vec()));
        }
        let mut inline = [&UNUSED as SqlParam<'a>; INLINE];
        inline[..N].copy_from_slice(&items);
        Values(Repr::Inline(N as u8, inline))
    }

    /// Adds a value after the others.
    pub fn push(&mut self, value: SqlParam<'a>) {
        match &mut self.0 {
            Repr::Inline(len, items) if usize::from(*len) < INLINE => {
                items[usize::from(*len)] = value;
                *len += 1;
            }
            Repr::Owned(items) => items.push(value),
            Repr::Borrowed([]) => {
                let mut items = [&UNUSED as SqlParam<'a>; INLINE];
                items[0] = value;
                self.0 = Repr::Inline(1, items);
            }
            _ => {
                let mut items = Vec::with_capacity(self.len() * 2);
                items.extend_from_slice(self);
                items.push(value);
                self.0 = Repr::Owned(items);
            }
        }
    }
}

impl Default for Values<'_> {
    fn default() -> Self {
        Values::new()
    }
}

impl<'a> std::ops::Deref for Values<'a> {
    type Target = [SqlParam<'a>];
    fn deref(&self) -> &[SqlParam<'a>] {
        match &self.0 {
            Repr::Borrowed(items) => items,
            Repr::Inline(len, items) => &items[..usize::from(*len)],
            Repr::Owned(items) => items,
        }
    }
}

impl<'a> From<Vec<SqlParam<'a>>> for Values<'a> {
    fn from(items: Vec<SqlParam<'a>>) -> Self {
        Values(Repr::Owned(items))
    }
}

impl<'a> From<&'a [SqlParam<'a>]> for Values<'a> {
    fn from(items: &'a [SqlParam<'a>]) -> Self {
        Values(Repr::Borrowed(items))
    }
}

impl<'a> FromIterator<SqlParam<'a>> for Values<'a> {
    fn from_iter<I: IntoIterator<Item = SqlParam<'a>>>(items: I) -> Self {
        let mut values = Values::new();
        for value in items {
            values.push(value);
        }
        values
    }
}

impl fmt::Debug for Values<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Anything that can supply the values of a statement.
///
/// Implemented for `()` (no parameters), tuples of up to 16 values and slices of
/// `&(dyn ToSql + Sync)` (positional), and [`NamedParams`] (named).
pub trait Params: Send + Sync {
    /// Borrows the values.
    fn param_list(&self) -> ParamList<'_>;
}

impl Params for () {
    fn param_list(&self) -> ParamList<'_> {
        ParamList::Positional(Values::new())
    }
}

impl<P: Params + ?Sized> Params for &P {
    fn param_list(&self) -> ParamList<'_> {
        (**self).param_list()
    }
}

impl Params for [SqlParam<'_>] {
    fn param_list(&self) -> ParamList<'_> {
        ParamList::Positional(Values(Repr::Borrowed(self)))
    }
}

impl<const N: usize> Params for [SqlParam<'_>; N] {
    fn param_list(&self) -> ParamList<'_> {
        ParamList::Positional(Values(Repr::Borrowed(self)))
    }
}

impl Params for Vec<SqlParam<'_>> {
    fn param_list(&self) -> ParamList<'_> {
        ParamList::Positional(Values(Repr::Borrowed(self)))
    }
}

macro_rules! tuple_params {
    ($($name:ident : $idx:tt),+) => {
        impl<$($name: ToSql + Send + Sync),+> Params for ($($name,)+) {
            fn param_list(&self) -> ParamList<'_> {
                ParamList::Positional(Values::from_array([$(&self.$idx as SqlParam<'_>),+]))
            }
        }
    };
}

tuple_params!(A: 0);
tuple_params!(A: 0, B: 1);
tuple_params!(A: 0, B: 1, C: 2);
tuple_params!(A: 0, B: 1, C: 2, D: 3);
tuple_params!(A: 0, B: 1, C: 2, D: 3, E: 4);
tuple_params!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5);
tuple_params!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6);
tuple_params!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7);
tuple_params!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8);
tuple_params!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8, J: 9);
tuple_params!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8, J: 9, K: 10);
tuple_params!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8, J: 9, K: 10, L: 11);
tuple_params!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8, J: 9, K: 10, L: 11, M: 12);
tuple_params!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8, J: 9, K: 10, L: 11, M: 12, N: 13);
tuple_params!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8, J: 9, K: 10, L: 11, M: 12, N: 13, O: 14);
tuple_params!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7, I: 8, J: 9, K: 10, L: 11, M: 12, N: 13, O: 14, P: 15);

/// Values by `:name`, usually made with [`params!`](crate::params!).
///
/// ```
/// use coredb::NamedParams;
///
/// // Built step by step, e.g. from optional filters.
/// let mut values = NamedParams::new();
/// values.push("status", "open");
/// if let Some(min) = Some(100) {
///     values.push("min", min);
/// }
/// assert_eq!(values.len(), 2);
/// ```
#[derive(Default)]
pub struct NamedParams<'a> {
    entries: Vec<(Cow<'static, str>, Box<dyn ToSql + Send + Sync + 'a>)>,
}

impl<'a> NamedParams<'a> {
    /// No values yet.
    pub fn new() -> Self {
        NamedParams {
            entries: Vec::new(),
        }
    }

    /// Adds the value of `:name` (a leading `:` is accepted and ignored).
    pub fn add(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl ToSql + Send + Sync + 'a,
    ) -> Self {
        self.push(name, value);
        self
    }

    /// Like [`add`](Self::add), in place.
    pub fn push(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl ToSql + Send + Sync + 'a,
    ) {
        let mut name = name.into();
        if let Some(stripped) = name.strip_prefix(':') {
            name = Cow::Owned(stripped.to_owned());
        }
        self.entries.push((name, Box::new(value)));
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for NamedParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl Params for NamedParams<'_> {
    fn param_list(&self) -> ParamList<'_> {
        ParamList::Named(
            self.entries
                .iter()
                .map(|(k, v)| (k.as_ref(), &**v as SqlParam<'_>))
                .collect(),
        )
    }
}

/// Named parameters: `params! { "age" => 18, "name" => name }`.
///
/// Values may be borrowed (`"name" => &name`) and of any type the driver can send.
///
/// ```no_run
/// use coredb::params;
///
/// # async fn demo(db: coredb::DatabaseManager) -> coredb::Result<()> {
/// let name = String::from("Ada");
/// let rows = db
///     .execute_raw_sql(
///         "SELECT * FROM users WHERE name = :name AND age > :age",
///         params! { "name" => &name, "age" => 18 },
///     )
///     .await?;
/// # let _ = rows; Ok(()) }
/// ```
#[macro_export]
macro_rules! params {
    () => { $crate::NamedParams::new() };
    ($($name:expr => $value:expr),+ $(,)?) => {
        $crate::NamedParams::new()$(.add($name, $value))+
    };
}

/// A statement with its values matched to its placeholders, ready to send.
pub(crate) struct Bound<'s, 'p> {
    /// The text as sent (`:name` rewritten to `$n`).
    pub(crate) text: SqlText<'s>,
    /// The values for `$1`, `$2`, ...
    pub(crate) values: Values<'p>,
    /// What the statement does, classified once for every layer that asks.
    pub(crate) class: StatementClass,
    /// The text's number, which keys the connections' prepared statements.
    pub(crate) key: TextKey,
}

/// A number for one statement text as the rewrite cache read it, unique in the process: the
/// connections' prepared statements are found by it, so a statement's text is hashed once
/// (here) rather than twice. A text read again after the cache was cleared gets a new number;
/// its statement is then prepared again.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct TextKey(u64);

/// The next [`TextKey`].
static NEXT_TEXT: AtomicU64 = AtomicU64::new(0);

/// The statement as sent, borrowed from the caller or rewritten from `:name` form.
pub(crate) enum SqlText<'s> {
    Borrowed(&'s str),
    Rewritten(Arc<RewrittenSql>),
}

impl SqlText<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            SqlText::Borrowed(s) => s,
            SqlText::Rewritten(r) => &r.sql,
        }
    }

    /// The `:name` bound to `$index+1`, for messages.
    pub(crate) fn name_of(&self, index: usize) -> Option<&str> {
        match self {
            SqlText::Borrowed(_) => None,
            SqlText::Rewritten(r) => r.names.get(index).map(String::as_str),
        }
    }
}

/// What is read from a statement's text once per distinct text: its class, and its `:name`
/// rewrite when it has names. Classifying is the costliest step of binding (a lexer pass over
/// the whole text, several times a cache lookup), so it is not repeated per statement.
pub(crate) struct RewriteCache {
    /// Hashed with foldhash, not SipHash: looked up on every statement, by texts the
    /// application wrote (SipHash cost about 450 instructions for a 45-byte statement).
    map: Mutex<HashMap<Box<str>, Parsed, foldhash::fast::RandomState>>,
}

/// A statement text, as read once.
#[derive(Clone)]
struct Parsed {
    class: StatementClass,
    /// The rewrite, when the text has `:name` placeholders.
    rewritten: Option<Arc<RewrittenSql>>,
    key: TextKey,
}

const REWRITE_CACHE_LIMIT: usize = 4096;

impl RewriteCache {
    pub(crate) fn new() -> Self {
        RewriteCache {
            map: Mutex::new(HashMap::default()),
        }
    }

    /// `sql` as read once: from the cache, or read now and kept.
    fn get(&self, sql: &str) -> Parsed {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = map.get(sql) {
            return hit.clone();
        }
        // Only statements with a ':' can hold names.
        let rewritten = sql
            .as_bytes()
            .contains(&b':')
            .then(|| rewrite(sql))
            .filter(|r| !r.names.is_empty())
            .map(Arc::new);
        let parsed = Parsed {
            class: classify(sql),
            rewritten,
            key: TextKey(NEXT_TEXT.fetch_add(1, Ordering::Relaxed)),
        };
        if map.len() >= REWRITE_CACHE_LIMIT {
            // Statements built by string formatting would grow the cache without bound.
            map.clear();
        }
        map.insert(sql.into(), parsed.clone());
        parsed
    }

    /// The number of `sql` (a text sent as it is), for statements that are not bound: the
    /// statements COPY writes itself.
    pub(crate) fn key(&self, sql: &str) -> TextKey {
        self.get(sql).key
    }

    /// Matches values to the statement's placeholders, checking names before anything is sent.
    pub(crate) fn bind<'s, 'p>(
        &self,
        sql: &'s str,
        params: ParamList<'p>,
    ) -> Result<Bound<'s, 'p>> {
        let Parsed {
            class,
            rewritten,
            key,
        } = self.get(sql);
        let Some(rewritten) = rewritten else {
            return match params {
                ParamList::Positional(values) => Ok(Bound {
                    text: SqlText::Borrowed(sql),
                    values,
                    class,
                    key,
                }),
                ParamList::Named(values) if values.is_empty() => Ok(Bound {
                    text: SqlText::Borrowed(sql),
                    values: Values::new(),
                    class,
                    key,
                }),
                ParamList::Named(values) => Err(no_placeholders(&values)),
            };
        };
        // Only error messages need the list: not built on the way to a successful bind.
        let wanted = || list_names(rewritten.names.iter().map(String::as_str));
        if rewritten.max_positional > 0 {
            return Err(Error::params(format!(
                "the statement mixes positional (${}) and named ({}) placeholders; use one style",
                rewritten.max_positional,
                wanted()
            )));
        }
        let given = match params {
            ParamList::Named(given) => given,
            ParamList::Positional(values) if values.is_empty() => Vec::new(),
            ParamList::Positional(values) => {
                return Err(Error::params(format!(
                    "the statement uses named placeholders ({}) but {} positional value(s) were given; pass them with params!{{\"name\" => value}}",
                    wanted(),
                    values.len()
                )))
            }
        };
        for (i, (name, _)) in given.iter().enumerate() {
            if given[..i].iter().any(|(n, _)| n == name) {
                return Err(Error::params(format!("parameter :{name} is given twice")));
            }
        }
        let unknown: Vec<&str> = given
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| !rewritten.names.iter().any(|w| w == n))
            .collect();
        let missing: Vec<&str> = rewritten
            .names
            .iter()
            .map(String::as_str)
            .filter(|w| !given.iter().any(|(n, _)| n == w))
            .collect();
        if !missing.is_empty() || !unknown.is_empty() {
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!(
                    "missing value for {}",
                    list_names(missing.into_iter())
                ));
            }
            if !unknown.is_empty() {
                parts.push(format!(
                    "unknown parameter {} (not in the statement)",
                    list_names(unknown.into_iter())
                ));
            }
            return Err(Error::params(format!(
                "{}; the statement uses {}",
                parts.join(", "),
                wanted()
            )));
        }
        let values = rewritten
            .names
            .iter()
            .map(|w| {
                given
                    .iter()
                    .find(|(n, _)| *n == w.as_str())
                    .map(|(_, v)| *v)
                    .expect("every name was checked above")
            })
            .collect();
        Ok(Bound {
            text: SqlText::Rewritten(rewritten),
            values,
            class,
            key,
        })
    }
}

fn list_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!(":{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn no_placeholders(values: &[(&str, SqlParam<'_>)]) -> Error {
    Error::params(format!(
        "named parameters were given ({}) but the statement has no :name placeholders",
        list_names(values.iter().map(|(n, _)| *n))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn bind_err(sql: &str, params: &dyn Params) -> String {
        let cache = RewriteCache::new();
        match cache.bind(sql, params.param_list()) {
            Ok(_) => panic!("expected an error for {sql}"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Params);
                e.to_string()
            }
        }
    }

    #[test]
    fn positional_values_keep_their_order_in_place_borrowed_and_past_four() {
        let debug = |list: ParamList<'_>| match list {
            ParamList::Positional(values) => format!("{values:?}"),
            ParamList::Named(_) => unreachable!(),
        };
        assert_eq!(debug((1, "a", 2.5).param_list()), r#"[1, "a", 2.5]"#);
        assert_eq!(
            debug((1, 2, 3, 4, 5, 6, 7, 8, 9, 10).param_list()),
            "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"
        );
        let slice: Vec<SqlParam<'_>> = vec![&1i64, &"b"];
        assert_eq!(debug(slice.param_list()), r#"[1, "b"]"#);
        assert_eq!(debug(().param_list()), "[]");
        let mut values: Values<'_> = slice[..].into();
        for extra in [&3i32 as SqlParam<'_>; 9] {
            values.push(extra);
        }
        assert_eq!(values.len(), 11);
        assert_eq!(format!("{:?}", &values[..3]), r#"[1, "b", 3]"#);
    }

    #[test]
    fn named_values_are_ordered_by_first_use() {
        let cache = RewriteCache::new();
        let p = params! { "b" => 2i32, "a" => 1i32 };
        let Bound {
            text: sql, values, ..
        } = cache
            .bind("SELECT :a + :b + :a", p.param_list())
            .expect("binds");
        assert_eq!(sql.as_str(), "SELECT $1 + $2 + $1");
        assert_eq!(values.len(), 2);
        assert_eq!(format!("{:?}", values[0]), "1");
        assert_eq!(format!("{:?}", values[1]), "2");
    }

    #[test]
    fn missing_named_value_is_reported_with_the_statement_names() {
        let msg = bind_err("SELECT :a, :b", &params! { "a" => 1 });
        assert!(msg.contains("missing value for :b"), "{msg}");
        assert!(msg.contains("uses :a, :b"), "{msg}");
    }

    #[test]
    fn unknown_named_value_is_reported() {
        let msg = bind_err("SELECT :a", &params! { "a" => 1, "zz" => 2 });
        assert!(msg.contains("unknown parameter :zz"), "{msg}");
    }

    #[test]
    fn mixing_positional_and_named_placeholders_is_rejected() {
        let msg = bind_err("SELECT $1, :a", &params! { "a" => 1 });
        assert!(msg.contains("mixes positional"), "{msg}");
    }

    #[test]
    fn positional_values_for_named_statement_are_rejected() {
        let msg = bind_err("SELECT :a", &(1,));
        assert!(msg.contains("positional value(s) were given"), "{msg}");
    }

    #[test]
    fn named_values_for_statement_without_placeholders_are_rejected() {
        let msg = bind_err("SELECT 1", &params! { "a" => 1 });
        assert!(msg.contains("no :name placeholders"), "{msg}");
        let msg = bind_err("SELECT '1:x'", &params! { "x" => 1 });
        assert!(msg.contains("no :name placeholders"), "{msg}");
    }

    #[test]
    fn duplicate_named_value_is_rejected() {
        let msg = bind_err("SELECT :a", &params! { "a" => 1, ":a" => 2 });
        assert!(msg.contains("given twice"), "{msg}");
    }

    #[test]
    fn statement_without_colon_is_sent_unchanged() {
        let cache = RewriteCache::new();
        let Bound {
            text: sql, values, ..
        } = cache.bind("SELECT $1", (5,).param_list()).expect("binds");
        assert!(matches!(sql, SqlText::Borrowed("SELECT $1")));
        assert_eq!(values.len(), 1);
    }
}
