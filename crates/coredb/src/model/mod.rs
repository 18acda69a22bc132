//! Models: declare a struct once and get its table, its row mapping and the everyday
//! operations, with no hand-written SQL (core.db's `Base` and mixins).
//!
//! ```no_run
//! use coredb::model::{self, Crud};
//!
//! // core.db's `class User(Base, UUIDTimestampMixin)`.
//! #[coredb::model(table = "users", mixin = UuidTimestampMixin)]
//! #[derive(Debug, Clone)]
//! pub struct User {
//!     #[column(length = 100)]
//!     pub name: String,
//!     #[column(length = 255, unique)]
//!     pub email: String,
//!     // id (UUID), created_at and updated_at are added by the mixin
//! }
//!
//! # async fn demo() -> coredb::Result<()> {
//! let db = coredb::initialize_database().await?;
//! model::create_all(&mut db.get_connection().await?).await?; // every declared model
//!
//! let mut session = db.session().await?;
//! let mut ada = User::new("Ada", "ada@example.com"); // id: a new UUIDv7
//! session.insert(&mut ada).await?; // created_at, updated_at: the database clock
//! let adults = session.select::<User>().filter("name LIKE :p", coredb::params! { "p" => "A%" }).all().await?;
//! session.commit().await?;
//! # let _ = adults; Ok(()) }
//! ```
//!
//! - [`#[coredb::model]`](macro@crate::model) declares a model: table name, optional schema, mixins,
//!   column options. [`#[derive(FromRow)]`](crate::FromRow) maps rows of any query to a struct.
//! - The six mixins: [`UuidMixin`], [`UuidStringMixin`], [`UuidFieldMixin`],
//!   [`TimestampMixin`], [`UuidTimestampMixin`], [`UuidStringTimestampMixin`].
//! - [`Crud`]: insert (one or many), get, update, delete and [`Select`] on any
//!   [`Executor`]; [`CopyIn`] for big loads.
//! - [`create_all`] / [`drop_all`] for every declared model, or [`Metadata`] for a chosen set.
//! - [`SqlType`] says which PostgreSQL type stores a field type.
//!
//! Why an attribute and not a derive: core.db's mixins add columns, and only an attribute
//! macro can add the matching fields (`id`, `uuid`, `created_at`, `updated_at`) to the struct;
//! with a derive every model would repeat them by hand. Why a registry: core.db's
//! `Base.metadata` knows every model without a list, and so does [`create_all`] here, through
//! the `inventory` crate (each model registers a constant at program start, no runtime
//! lookups); [`Metadata`] is the explicit list for when a program wants a subset.

mod copy;
mod crud;
mod metadata;
mod schema;
mod select;
mod sql_type;

pub use copy::CopyIn;
pub use crud::Crud;
pub use metadata::{Metadata, Registration};
pub use schema::{
    quote_ident, Column, ColumnRole, EnumType, ForeignKey, InsertValue, SqlTypeName, Statements,
    Table,
};
pub use select::Select;
pub use sql_type::{DecimalColumn, SqlType, TextColumn};

/// The types the mixins' fields have, so models need no direct dependency on `uuid`/`chrono`.
pub use chrono::{DateTime, Utc};
/// The type of UUID keys.
pub use uuid::Uuid;

use crate::error::Result;
use crate::params::SqlParam;
use crate::query::Executor;
use crate::row::{FromRow, Row};

/// A model: a struct mapped to a table; implemented by [`#[coredb::model]`](macro@crate::model).
pub trait Model: FromRow + Sync + Sized + 'static {
    /// The primary key's type.
    type Key: postgres_types::ToSql
        + postgres_types::FromSqlOwned
        + Ord
        + Clone
        + std::fmt::Debug
        + Send
        + Sync;

    /// The table: name, schema, columns, constraints.
    const TABLE: &'static Table;

    /// The SQL of the everyday operations.
    #[doc(hidden)]
    const STATEMENTS: &'static Statements;

    /// [`TABLE`](Self::TABLE) as a function, as foreign keys refer to it.
    fn table() -> &'static Table {
        Self::TABLE
    }

    /// The primary key's value.
    fn key(&self) -> &Self::Key;

    /// Appends the values of the INSERT's parameters to `out`, in order (into a vector the
    /// caller reuses, so COPY allocates nothing per row).
    #[doc(hidden)]
    fn insert_values<'a>(&'a self, out: &mut Vec<SqlParam<'a>>);

    /// The values of the UPDATE's parameters: the written columns, then the key.
    #[doc(hidden)]
    fn update_values(&self) -> Vec<SqlParam<'_>>;

    /// Sets the column fields from a row of this table (skipped fields are kept).
    ///
    /// # Errors
    /// A decode error naming the column, the Rust type and the PostgreSQL type.
    fn apply_row(&mut self, row: &Row) -> Result<()>;
}

/// Which UUID version a model's generated keys use: `#[coredb::model(uuid = "v4")]` or the
/// default, `v7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UuidVersion {
    /// Random (version 4).
    V4,
    /// Time-ordered (version 7): new keys sort after older ones, so inserts land at the end
    /// of the primary key's index instead of all over it.
    #[default]
    V7,
}

/// A new UUID of `version`; what the mixins' keys are made with.
pub fn new_uuid(version: UuidVersion) -> Uuid {
    match version {
        UuidVersion::V4 => Uuid::new_v4(),
        UuidVersion::V7 => Uuid::now_v7(),
    }
}

/// A new UUID of `version` as 36 characters (lowercase, hyphenated), for string keys.
pub fn new_uuid_string(version: UuidVersion) -> String {
    new_uuid(version).hyphenated().to_string()
}

/// Creates the tables of every model declared in the program (core.db's
/// `Base.metadata.create_all`), referenced tables first. Running it again is harmless.
///
/// # Errors
/// As [`Metadata::create_all`].
pub async fn create_all<E: Executor>(executor: &mut E) -> Result<()> {
    Metadata::registered().create_all(executor).await
}

/// Drops the tables of every model declared in the program (core.db's
/// `Base.metadata.drop_all`), referencing tables first, then the enum types and schemas
/// `create_all` made.
///
/// # Errors
/// As [`Metadata::drop_all`].
pub async fn drop_all<E: Executor>(executor: &mut E) -> Result<()> {
    Metadata::registered().drop_all(executor).await
}

/// A mixin: columns a model gets by naming it in `#[coredb::model(mixin = ..)]`.
///
/// The marker types below document what each adds; the macro adds the fields.
pub trait Mixin {
    /// The mixin's name.
    const NAME: &'static str;
    /// The columns it adds: name and PostgreSQL type as in `information_schema`.
    const COLUMNS: &'static [(&'static str, &'static str)];
}

macro_rules! mixins {
    ($($(#[$doc:meta])* $name:ident => [$(($column:literal, $type:literal)),+];)+) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $name;

            impl Mixin for $name {
                const NAME: &'static str = stringify!($name);
                const COLUMNS: &'static [(&'static str, &'static str)] = &[$(($column, $type)),+];
            }
        )+
    };
}

mixins! {
    /// core.db's `UUIDMixin`: `id uuid` primary key, a UUID made by the application (v7
    /// unless the model says `uuid = "v4"`). Field: `pub id: Uuid`.
    UuidMixin => [("id", "uuid")];
    /// core.db's `UUIDStringMixin`: `id varchar(36)` primary key holding a UUID as text.
    /// Field: `pub id: String`.
    UuidStringMixin => [("id", "character varying(36)")];
    /// core.db's `UUIDFieldMixin`: `uuid uuid unique not null` beside the model's own
    /// primary key. Field: `pub uuid: Uuid`.
    UuidFieldMixin => [("uuid", "uuid")];
    /// core.db's `TimestampMixin`: `created_at` and `updated_at timestamptz not null`, both
    /// set from the database clock at insert, `updated_at` moved by every update. Fields:
    /// `pub created_at: DateTime<Utc>`, `pub updated_at: DateTime<Utc>`.
    TimestampMixin => [("created_at", "timestamp with time zone"), ("updated_at", "timestamp with time zone")];
    /// core.db's `UUIDTimestampMixin`: [`UuidMixin`] and [`TimestampMixin`].
    UuidTimestampMixin => [("id", "uuid"), ("created_at", "timestamp with time zone"), ("updated_at", "timestamp with time zone")];
    /// core.db's `UUIDStringTimestampMixin`: [`UuidStringMixin`] and [`TimestampMixin`].
    UuidStringTimestampMixin => [("id", "character varying(36)"), ("created_at", "timestamp with time zone"), ("updated_at", "timestamp with time zone")];
}

/// What the macros' expansions use; not public API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;

    use super::SqlType;
    use crate::params::SqlParam;
    use crate::row::Row;

    /// Reads a column of a model. Bounded by `SqlType` alone, so an unsupported field type
    /// gives one clear error instead of one per missing driver trait.
    pub fn read<T: SqlType>(
        row: &Row,
        positions: &mut crate::row::ColumnPositions,
        name: &str,
    ) -> crate::error::Result<T> {
        positions.get(row, name)
    }

    /// A model field as a statement parameter (bounded like [`read`]).
    pub fn param<T: SqlType + Sync>(value: &T) -> SqlParam<'_> {
        value
    }
}
