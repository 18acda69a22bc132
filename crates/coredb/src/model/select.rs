//! The select builder: [`Select`].

use std::borrow::Cow;
use std::future::Future;
use std::marker::PhantomData;

use crate::error::Result;
use crate::params::{NamedParams, ParamList, Params, SqlParam};
use crate::query::Executor;

use super::Model;

/// A query for rows of model `M`, made by [`Crud::select`](super::Crud::select).
///
/// Filters are SQL conditions with `:name` parameters, joined with `AND`; `order_by` takes an
/// SQL ordering. Both are SQL text: build them from constants, and pass user input only as
/// parameter values. Limit and offset are sent as parameters, so a page query is one prepared
/// statement whatever the page.
///
/// ```no_run
/// use coredb::{params, model::Crud};
///
/// #[coredb::model(table = "products", mixin = UuidMixin)]
/// pub struct Product {
///     #[column(length = 200)]
///     pub name: String,
///     pub price: rust_decimal::Decimal,
/// }
///
/// # async fn demo(session: &mut coredb::Session) -> coredb::Result<()> {
/// let cheap: Vec<Product> = session
///     .select::<Product>()
///     .filter("price < :max", params! { "max" => rust_decimal::Decimal::from(10) })
///     .order_by("price DESC, name")
///     .limit(20)
///     .offset(40)
///     .all()
///     .await?;
/// let how_many: i64 = session.select::<Product>().filter("name LIKE :p", params! { "p" => "A%" }).count().await?;
/// let any: bool = session.select::<Product>().exists().await?;
/// # let _ = (cheap, how_many, any); Ok(()) }
/// ```
#[must_use = "a Select does nothing until all, one, optional, first, count or exists runs it"]
pub struct Select<'a, E, M> {
    executor: &'a mut E,
    filters: Vec<Cow<'a, str>>,
    params: Vec<NamedParams<'a>>,
    order: Vec<Cow<'a, str>>,
    limit: Option<i64>,
    offset: Option<i64>,
    model: PhantomData<fn() -> M>,
}

// The run methods return `impl Future + Send` instead of being `async fn`s: rustc cannot yet
// prove an `async fn`'s future `Send` for every executor lifetime (rust-lang/rust#100013),
// and handlers and spawned tasks need it.
#[allow(clippy::manual_async_fn)]
impl<'a, E: Executor, M: Model> Select<'a, E, M> {
    pub(crate) fn new(executor: &'a mut E) -> Self {
        Select {
            executor,
            filters: Vec::new(),
            params: Vec::new(),
            order: Vec::new(),
            limit: None,
            offset: None,
            model: PhantomData,
        }
    }

    /// Keeps the rows for which `condition` holds, e.g. `"age > :age"` with
    /// `params! { "age" => 18 }` (or `params! {}` when it has no parameters). Several filters
    /// must all hold; a parameter name may be used by one filter only.
    pub fn filter(mut self, condition: impl Into<Cow<'a, str>>, params: NamedParams<'a>) -> Self {
        self.filters.push(condition.into());
        self.params.push(params);
        self
    }

    /// Orders the rows, e.g. `"created_at DESC"`; several calls order by each in turn.
    pub fn order_by(mut self, ordering: impl Into<Cow<'a, str>>) -> Self {
        self.order.push(ordering.into());
        self
    }

    /// Returns at most `n` rows.
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(i64::from(n));
        self
    }

    /// Skips the first `n` rows.
    pub fn offset(mut self, n: u32) -> Self {
        self.offset = Some(i64::from(n));
        self
    }

    /// The SELECT statement as it will be sent (before `:name` becomes `$n`).
    pub fn sql(&self) -> String {
        let statements = M::STATEMENTS;
        format!(
            "SELECT {} FROM {}{}",
            statements.columns,
            statements.table,
            self.tail(true)
        )
    }

    /// `WHERE .. ORDER BY .. LIMIT .. OFFSET ..`
    fn tail(&self, ordered: bool) -> String {
        let mut sql = String::new();
        for (i, filter) in self.filters.iter().enumerate() {
            sql.push_str(if i == 0 { " WHERE (" } else { " AND (" });
            sql.push_str(filter);
            sql.push(')');
        }
        if ordered && !self.order.is_empty() {
            sql.push_str(" ORDER BY ");
            sql.push_str(&self.order.join(", "));
        }
        if self.limit.is_some() {
            sql.push_str(" LIMIT :coredb_limit");
        }
        if self.offset.is_some() {
            sql.push_str(" OFFSET :coredb_offset");
        }
        sql
    }

    /// The executor and every value, parting with the builder once the SQL is written.
    fn into_parts(self) -> (&'a mut E, SelectParams<'a>) {
        let values = SelectParams {
            sets: self.params,
            limit: self.limit,
            offset: self.offset,
        };
        (self.executor, values)
    }

    /// All matching rows.
    ///
    /// # Errors
    /// The server's error (with the statement), a parameter error naming the `:name`, or a
    /// decode error naming the column.
    pub fn all(self) -> impl Future<Output = Result<Vec<M>>> + Send + 'a {
        async move {
            let sql = self.sql();
            let (executor, values) = self.into_parts();
            executor.fetch_all(&sql, &values).await
        }
    }

    /// The one matching row.
    ///
    /// # Errors
    /// [`NotFound`](crate::ErrorKind::NotFound) for none,
    /// [`TooManyRows`](crate::ErrorKind::TooManyRows) for more than one; otherwise as
    /// [`all`](Self::all).
    pub fn one(self) -> impl Future<Output = Result<M>> + Send + 'a {
        async move {
            let sql = self.sql();
            let (executor, values) = self.into_parts();
            executor.fetch_one(&sql, &values).await
        }
    }

    /// The matching row, or `None`.
    ///
    /// # Errors
    /// [`TooManyRows`](crate::ErrorKind::TooManyRows) for more than one; otherwise as
    /// [`all`](Self::all).
    pub fn optional(self) -> impl Future<Output = Result<Option<M>>> + Send + 'a {
        async move {
            let sql = self.sql();
            let (executor, values) = self.into_parts();
            executor.fetch_optional(&sql, &values).await
        }
    }

    /// The first matching row in the given order, or `None`.
    ///
    /// # Errors
    /// As [`all`](Self::all).
    pub fn first(self) -> impl Future<Output = Result<Option<M>>> + Send + 'a {
        async move { self.limit(1).optional().await }
    }

    /// The number of matching rows (within the limit and offset, when set).
    ///
    /// # Errors
    /// As [`all`](Self::all).
    pub fn count(self) -> impl Future<Output = Result<i64>> + Send + 'a {
        async move {
            let table = M::STATEMENTS.table;
            let sql = if self.limit.is_some() || self.offset.is_some() {
                format!(
                    "SELECT count(*) FROM (SELECT 1 FROM {table}{}) AS counted",
                    self.tail(true)
                )
            } else {
                format!("SELECT count(*) FROM {table}{}", self.tail(false))
            };
            let (executor, values) = self.into_parts();
            executor.scalar(&sql, &values).await
        }
    }

    /// Whether any row matches.
    ///
    /// # Errors
    /// As [`all`](Self::all).
    pub fn exists(self) -> impl Future<Output = Result<bool>> + Send + 'a {
        async move {
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM {}{})",
                M::STATEMENTS.table,
                self.tail(true)
            );
            let (executor, values) = self.into_parts();
            executor.scalar(&sql, &values).await
        }
    }
}

impl<E, M> std::fmt::Debug for Select<'_, E, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Select")
            .field("filters", &self.filters)
            .field("params", &self.params)
            .field("order", &self.order)
            .field("limit", &self.limit)
            .field("offset", &self.offset)
            .finish()
    }
}

/// The values of every filter, plus limit and offset, as one set of named parameters.
struct SelectParams<'a> {
    sets: Vec<NamedParams<'a>>,
    limit: Option<i64>,
    offset: Option<i64>,
}

impl Params for SelectParams<'_> {
    fn param_list(&self) -> ParamList<'_> {
        let mut named: Vec<(&str, SqlParam<'_>)> = Vec::new();
        for set in &self.sets {
            if let ParamList::Named(values) = set.param_list() {
                named.extend(values);
            }
        }
        if let Some(limit) = &self.limit {
            named.push(("coredb_limit", limit));
        }
        if let Some(offset) = &self.offset {
            named.push(("coredb_offset", offset));
        }
        ParamList::Named(named)
    }
}
