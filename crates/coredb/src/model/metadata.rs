//! Sets of tables created and dropped together: core.db's `Base.metadata`.
//!
//! Every `#[coredb::model]` registers its table when the program starts (through the
//! `inventory` crate, which uses the linker rather than a runtime list), so
//! [`create_all`](super::create_all) needs no list, as in core.db. [`Metadata`] is the explicit
//! form: a chosen set of models, e.g. one service's tables in a program that links several.

use crate::error::{Error, ErrorKind, Result};
use crate::query::Executor;

use super::schema::{quote_ident, EnumType, Table};
use super::Model;

/// A registered model table; written by the model macro.
#[doc(hidden)]
#[derive(Debug)]
pub struct Registration {
    table: &'static Table,
}

impl Registration {
    /// Registers `table`.
    pub const fn new(table: &'static Table) -> Self {
        Registration { table }
    }
}

inventory::collect!(Registration);

/// A set of model tables, created and dropped in an order that respects their foreign keys.
///
/// ```
/// # use coredb::model::Metadata;
/// # #[coredb::model(table = "authors", mixin = UuidMixin)]
/// # pub struct Author { pub name: String }
/// # #[coredb::model(table = "books", mixin = UuidMixin)]
/// # pub struct Book { #[column(references = Author)] pub author_id: coredb::model::Uuid }
/// let metadata = Metadata::new().with::<Book>().with::<Author>();
/// let names: Vec<_> = metadata.sorted_tables()?.iter().map(|t| t.name).collect();
/// assert_eq!(names, ["authors", "books"]);
/// # Ok::<(), coredb::Error>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct Metadata {
    tables: Vec<&'static Table>,
}

impl Metadata {
    /// An empty set.
    pub fn new() -> Self {
        Metadata::default()
    }

    /// Every model declared in the program (what [`create_all`](super::create_all) uses).
    pub fn registered() -> Self {
        let mut metadata = Metadata::new();
        for registration in inventory::iter::<Registration> {
            metadata.add(registration.table);
        }
        metadata
    }

    /// Adds model `M`.
    pub fn with<M: Model>(mut self) -> Self {
        self.add(M::TABLE);
        self
    }

    /// Adds a table (once; adding it again does nothing).
    pub fn add(&mut self, table: &'static Table) {
        if !self.tables.iter().any(|t| std::ptr::eq(*t, table)) {
            self.tables.push(table);
        }
    }

    /// The tables, in the order they were added.
    pub fn tables(&self) -> &[&'static Table] {
        &self.tables
    }

    /// The tables in creation order: each after the tables it references.
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error when two models declare the same table or the
    /// foreign keys form a cycle.
    pub fn sorted_tables(&self) -> Result<Vec<&'static Table>> {
        let mut pending: Vec<&'static Table> = self.tables.clone();
        // Name order first, so the result does not depend on link or registration order.
        pending.sort_by(|a, b| (a.schema, a.name).cmp(&(b.schema, b.name)));
        for pair in pending.windows(2) {
            if pair[0].same_name(pair[1]) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "models {} and {} both declare table {}; give one of them another table name",
                        pair[0].model,
                        pair[1].model,
                        pair[0].qualified_name()
                    ),
                ));
            }
        }
        let mut sorted: Vec<&'static Table> = Vec::with_capacity(pending.len());
        while !pending.is_empty() {
            let ready = pending.iter().position(|table| {
                table.references().all(|target| {
                    target.same_name(table)
                        || sorted.iter().any(|done| done.same_name(target))
                        // A table outside this set must already exist; it does not order ours.
                        || !pending.iter().any(|p| p.same_name(target))
                })
            });
            match ready {
                Some(index) => sorted.push(pending.remove(index)),
                None => {
                    let names: Vec<String> = pending.iter().map(|t| t.qualified_name()).collect();
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "the foreign keys of {} form a cycle; create one of the references with ALTER TABLE after create_all",
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(sorted)
    }

    fn schemas(&self) -> Vec<&'static str> {
        let mut schemas: Vec<&'static str> = self
            .tables
            .iter()
            .filter_map(|t| t.schema)
            .chain(self.enum_types().into_iter().filter_map(|e| e.schema))
            .filter(|s| *s != "public")
            .collect();
        schemas.sort_unstable();
        schemas.dedup();
        schemas
    }

    fn enum_types(&self) -> Vec<&'static EnumType> {
        let mut types: Vec<&'static EnumType> = Vec::new();
        for ty in self.tables.iter().flat_map(|t| t.enum_types()) {
            if !types
                .iter()
                .any(|known| known.qualified_name() == ty.qualified_name())
            {
                types.push(ty);
            }
        }
        types
    }

    /// The statements [`create_all`](Self::create_all) runs: schemas, enum types, then each
    /// table with its indexes, referenced tables first. Each is harmless to run again.
    ///
    /// # Errors
    /// As [`sorted_tables`](Self::sorted_tables).
    pub fn create_statements(&self) -> Result<Vec<String>> {
        let mut statements: Vec<String> = self
            .schemas()
            .into_iter()
            .map(|s| format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(s)))
            .collect();
        statements.extend(self.enum_types().iter().map(|e| e.create_sql()));
        for table in self.sorted_tables()? {
            statements.extend(table.create_sql());
        }
        Ok(statements)
    }

    /// The statements [`drop_all`](Self::drop_all) runs: tables, referencing ones first, then
    /// their enum types, then their schemas when nothing else is left in them.
    ///
    /// # Errors
    /// As [`sorted_tables`](Self::sorted_tables).
    pub fn drop_statements(&self) -> Result<Vec<String>> {
        let mut statements: Vec<String> = self
            .sorted_tables()?
            .iter()
            .rev()
            .map(|t| t.drop_sql())
            .collect();
        statements.extend(self.enum_types().iter().map(|e| e.drop_sql()));
        // A schema that still holds other objects is kept (and the error swallowed): drop_all
        // removes what create_all made, never a user's own tables.
        statements.extend(self.schemas().into_iter().map(|s| {
            format!(
                "DO $coredb$ BEGIN DROP SCHEMA IF EXISTS {}; EXCEPTION WHEN dependent_objects_still_exist THEN NULL; END $coredb$",
                quote_ident(s)
            )
        }));
        Ok(statements)
    }

    /// Creates every table of the set that does not exist yet, with its indexes, enum types
    /// and schema. Running it again is harmless.
    ///
    /// Run it in a [`Session`](crate::Session) to create all or nothing (PostgreSQL's DDL is
    /// transactional), or on a [`Connection`](crate::Connection).
    ///
    /// # Errors
    /// As [`sorted_tables`](Self::sorted_tables), or the server's error for a statement.
    pub async fn create_all<E: Executor>(&self, executor: &mut E) -> Result<()> {
        for sql in self.create_statements()? {
            executor.execute(&sql, ()).await?;
        }
        Ok(())
    }

    /// Drops every table of the set, then the enum types and schemas `create_all` made.
    ///
    /// # Errors
    /// As [`sorted_tables`](Self::sorted_tables), or the server's error for a statement (for
    /// instance a table of another model still references one of these).
    pub async fn drop_all<E: Executor>(&self, executor: &mut E) -> Result<()> {
        for sql in self.drop_statements()? {
            executor.execute(&sql, ()).await?;
        }
        Ok(())
    }
}
