//! The macros of coredb: `#[derive(FromRow)]`, `#[coredb::model]` and
//! `#[derive(SqlEnum)]`. Use them through `coredb`, which re-exports them; the code they write
//! refers to `::coredb` (and `#[test]`'s to `::coredb_testkit`).

#![warn(missing_docs)]

use proc_macro::TokenStream;

mod from_row;
mod mixins;
mod model;
mod options;
mod sql_enum;
mod test_attr;

/// Maps the columns of a row to the fields of a struct, by name.
///
/// Field options, in `#[column(..)]`:
/// - `rename = "col"`: read column `col` instead of the field's name;
/// - `flatten`: the field is a struct that is itself `FromRow`, read from the same row;
/// - `skip`: no column; the field gets `Default::default()`.
///
/// An `Option<T>` field holds SQL `NULL`. A missing column or a type mismatch is a
/// `coredb::ErrorKind::Decode` error naming the column,
/// the Rust type and the PostgreSQL type.
///
/// ```
/// #[derive(coredb::FromRow)]
/// struct Totals {
///     #[column(rename = "user_name")]
///     name: String,
///     orders: i64,
///     last_order: Option<chrono::NaiveDate>,
///     #[column(flatten)]
///     address: Address,
///     #[column(skip)]
///     cached: Vec<String>,
/// }
///
/// #[derive(coredb::FromRow)]
/// struct Address {
///     city: String,
/// }
/// ```
#[proc_macro_derive(FromRow, attributes(column))]
pub fn derive_from_row(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    from_row::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Declares a model: a struct stored in a table, with its key and timestamps from mixins.
///
/// Arguments: `table = "users"` (required), `schema = "app"`, `mixin = UuidTimestampMixin` or
/// `mixins(UuidMixin, TimestampMixin)`, `uuid = "v4"` (generated UUIDs are v7 by default), and
/// `constructor = false` to write your own `new`.
///
/// The mixins add fields to the struct, with core.db's columns:
///
/// | mixin | fields | columns |
/// |---|---|---|
/// | `UuidMixin` | `id: Uuid` | `id uuid` primary key |
/// | `UuidStringMixin` | `id: String` | `id varchar(36)` primary key |
/// | `UuidFieldMixin` | `uuid: Uuid` | `uuid uuid unique not null` |
/// | `TimestampMixin` | `created_at`, `updated_at: DateTime<Utc>` | `timestamptz not null` |
/// | `UuidTimestampMixin` | `id`, `created_at`, `updated_at` | both of the above |
/// | `UuidStringTimestampMixin` | `id: String`, `created_at`, `updated_at` | both of the above |
///
/// Column options, in `#[column(..)]`: `rename = "col"`, `length = 100` (`varchar(100)`),
/// `precision = 12, scale = 2` (`numeric(12, 2)`), `sql_type = "citext"`, `unique`, `index`,
/// `default = "sql expression"`, `primary_key` (an integer key is an identity column unless
/// `identity = false`), `references = OtherModel` with `on_delete = "cascade"`, and `skip` (not a
/// column; `Default` when read). An `Option<T>` field is a nullable column; every other column
/// is `NOT NULL`.
///
/// The macro implements `coredb::model::Model` and `FromRow` (so do not derive `FromRow` as
/// well), registers the table for `create_all`, and writes `new(own fields..)`, which makes the
/// UUIDs. A model has exactly one primary key. Write `#[derive(..)]` below the attribute: a
/// derive above it runs before the mixin's fields exist.
///
/// ```
/// #[coredb::model(table = "users", mixin = UuidTimestampMixin)]
/// #[derive(Debug, Clone)]
/// pub struct User {
///     #[column(length = 100)]
///     pub name: String,
///     #[column(length = 255, unique)]
///     pub email: String,
/// }
///
/// let user = User::new("Ada", "ada@example.com");
/// assert_eq!(user.id.get_version_num(), 7);
/// ```
#[proc_macro_attribute]
pub fn model(args: TokenStream, item: TokenStream) -> TokenStream {
    model::expand(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// An async test with a fresh database of its own; use it as `#[coredb_testkit::test]` (the
/// code it writes runs on `coredb-testkit`). The function may take a `TestDatabase` or a
/// `DatabaseManager`; the database is dropped afterwards. (Compiled examples: the crate docs
/// of `coredb-testkit`, which cannot be a dependency here.)
///
/// ```ignore
/// #[coredb_testkit::test]
/// async fn counts_users(db: coredb::DatabaseManager) -> coredb::Result<()> {
///     db.execute("CREATE TABLE users (name text)", ()).await?;
///     assert_eq!(db.scalar::<i64, _>("SELECT count(*) FROM users", ()).await?, 0);
///     Ok(())
/// }
/// ```
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    test_attr::expand(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Lets an enum that derives postgres-types' `ToSql` and `FromSql` be a model column: its
/// PostgreSQL enum type is created by `create_all` and dropped by `drop_all`.
///
/// Reads the same `#[postgres(name = "..")]` and `rename_all` as postgres-types, so the labels
/// match.
///
/// ```
/// use postgres_types::{FromSql, ToSql}; // postgres-types with its `derive` feature
///
/// #[derive(Debug, Clone, Copy, PartialEq, ToSql, FromSql, coredb::SqlEnum)]
/// #[postgres(name = "order_status", rename_all = "snake_case")]
/// pub enum OrderStatus {
///     Pending,
///     Paid,
///     Shipped,
/// }
/// ```
#[proc_macro_derive(SqlEnum, attributes(postgres))]
pub fn derive_sql_enum(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    sql_enum::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
