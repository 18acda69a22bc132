//! The SQL text of a model's statements (`coredb::model::Statements`), written once, when the
//! macro runs: plain names in, strings out.
//!
//! Types, nullability, defaults, constraints and indexes are not here: they go into
//! `Model::TABLE`, and `create_all` writes the `CREATE TABLE` from it at run time.

use super::parse::Role;

/// What INSERT and UPDATE write for a timestamp: the database clock, so every row's times come
/// from one clock whichever client wrote it.
pub const DATABASE_CLOCK: &str = "statement_timestamp()";

/// One column, as the statements see it.
#[derive(Debug, Clone, Copy)]
pub struct Column<'a> {
    pub name: &'a str,
    pub role: Role,
    pub primary_key: bool,
}

impl Column<'_> {
    /// INSERT names every column but an identity key, which the database numbers.
    pub fn inserted(&self) -> bool {
        self.role != Role::Identity
    }

    /// What INSERT writes in place of a parameter: timestamps come from the database clock.
    pub fn insert_expression(&self) -> Option<&'static str> {
        self.role.is_timestamp().then_some(DATABASE_CLOCK)
    }

    /// Whether INSERT and COPY take the field's value.
    pub fn insert_param(&self) -> bool {
        self.inserted() && self.insert_expression().is_none()
    }

    /// UPDATE writes the plain columns; keys, mixin UUIDs and created_at never change.
    pub fn updated(&self) -> bool {
        self.role == Role::Plain && !self.primary_key
    }
}

/// A model's table, as the statements see it.
#[derive(Debug)]
pub struct Table<'a> {
    pub schema: Option<&'a str>,
    pub name: &'a str,
    /// Every column, in table order.
    pub columns: Vec<Column<'a>>,
    /// The primary key's column name.
    pub key: &'a str,
}

/// `"name"`: always quoted, so keywords, mixed case and odd characters name what they say.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`, or `"table"` without a schema.
pub fn qualified_name(table: &Table) -> String {
    match table.schema {
        Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(table.name)),
        None => quote_ident(table.name),
    }
}

/// The columns' quoted names, comma-separated.
pub fn column_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `INSERT INTO t (..) VALUES `: what a multi-row insert repeats its rows after.
pub fn insert_head(table: &Table) -> String {
    let inserted: Vec<Column> = table
        .columns
        .iter()
        .copied()
        .filter(Column::inserted)
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES ",
        qualified_name(table),
        column_list(&inserted)
    )
}

/// One row's INSERT, returning the stored row (identity key and timestamps included).
pub fn insert(table: &Table) -> String {
    let mut placeholder = 0;
    let values: Vec<String> = table
        .columns
        .iter()
        .filter(|c| c.inserted())
        .map(|c| match c.insert_expression() {
            Some(expression) => expression.to_owned(),
            None => {
                placeholder += 1;
                format!("${placeholder}")
            }
        })
        .collect();
    format!(
        "{}({}) RETURNING {}",
        insert_head(table),
        values.join(", "),
        column_list(&table.columns)
    )
}

/// Binary COPY of the columns INSERT takes as parameters.
pub fn copy_from_stdin(table: &Table) -> String {
    let params: Vec<Column> = table
        .columns
        .iter()
        .copied()
        .filter(Column::insert_param)
        .collect();
    format!(
        "COPY {} ({}) FROM STDIN BINARY",
        qualified_name(table),
        column_list(&params)
    )
}

/// UPDATE by key, returning the stored row: the plain columns as `$1..`, `updated_at` from the
/// database clock, the key last.
pub fn update(table: &Table) -> String {
    let key = quote_ident(table.key);
    let updated: Vec<Column> = table
        .columns
        .iter()
        .copied()
        .filter(Column::updated)
        .collect();
    let mut assignments: Vec<String> = updated
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ${}", quote_ident(c.name), i + 1))
        .collect();
    if let Some(stamp) = table.columns.iter().find(|c| c.role == Role::UpdatedAt) {
        assignments.push(format!("{} = {DATABASE_CLOCK}", quote_ident(stamp.name)));
    }
    if assignments.is_empty() {
        // Nothing to write: still report whether the row exists, and return it.
        assignments.push(format!("{key} = {key}"));
    }
    format!(
        "UPDATE {} SET {} WHERE {key} = ${} RETURNING {}",
        qualified_name(table),
        assignments.join(", "),
        updated.len() + 1,
        column_list(&table.columns)
    )
}

/// SELECT of one row by key.
pub fn select_by_key(table: &Table) -> String {
    format!(
        "SELECT {} FROM {} WHERE {} = $1",
        column_list(&table.columns),
        qualified_name(table),
        quote_ident(table.key)
    )
}

/// DELETE of one row by key.
pub fn delete_by_key(table: &Table) -> String {
    format!(
        "DELETE FROM {} WHERE {} = $1",
        qualified_name(table),
        quote_ident(table.key)
    )
}

#[cfg(test)]
mod tests {
    //! The expected text is what the macro wrote before these functions were split out of it.

    use super::*;

    fn column(name: &str, role: Role) -> Column<'_> {
        Column {
            name,
            role,
            primary_key: false,
        }
    }

    fn key(name: &str, role: Role) -> Column<'_> {
        Column {
            name,
            role,
            primary_key: true,
        }
    }

    fn table<'a>(name: &'a str, columns: Vec<Column<'a>>) -> Table<'a> {
        let key = columns.iter().find(|c| c.primary_key).expect("a key").name;
        Table {
            schema: None,
            name,
            columns,
            key,
        }
    }

    /// Every statement, in `coredb::model::Statements` order.
    fn statements(table: &Table) -> [String; 8] {
        [
            qualified_name(table),
            column_list(&table.columns),
            insert(table),
            insert_head(table),
            select_by_key(table),
            update(table),
            delete_by_key(table),
            copy_from_stdin(table),
        ]
    }

    #[test]
    fn identifiers_are_always_quoted_and_inner_quotes_doubled() {
        assert_eq!(quote_ident("users"), r#""users""#);
        assert_eq!(quote_ident("select"), r#""select""#);
        assert_eq!(quote_ident("MixedCase"), r#""MixedCase""#);
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_ident(r#"Mixed "Case""#), r#""Mixed ""Case""""#);
    }

    #[test]
    fn uuid_key() {
        // UuidMixin: the key is made by the client, so INSERT and COPY send it; UPDATE does not.
        let products = table(
            "products",
            vec![
                key("id", Role::GeneratedUuid),
                column("name", Role::Plain),
                column("price", Role::Plain),
            ],
        );
        assert_eq!(
            statements(&products),
            [
                r#""products""#,
                r#""id", "name", "price""#,
                r#"INSERT INTO "products" ("id", "name", "price") VALUES ($1, $2, $3) RETURNING "id", "name", "price""#,
                r#"INSERT INTO "products" ("id", "name", "price") VALUES "#,
                r#"SELECT "id", "name", "price" FROM "products" WHERE "id" = $1"#,
                r#"UPDATE "products" SET "name" = $1, "price" = $2 WHERE "id" = $3 RETURNING "id", "name", "price""#,
                r#"DELETE FROM "products" WHERE "id" = $1"#,
                r#"COPY "products" ("id", "name", "price") FROM STDIN BINARY"#,
            ]
        );
    }

    #[test]
    fn uuid_key_with_timestamps() {
        // UuidTimestampMixin: the timestamps come from the database clock on insert, and
        // updated_at moves on every update; COPY leaves both to their column defaults.
        let users = table(
            "users",
            vec![
                key("id", Role::GeneratedUuid),
                column("name", Role::Plain),
                column("email", Role::Plain),
                column("created_at", Role::CreatedAt),
                column("updated_at", Role::UpdatedAt),
            ],
        );
        assert_eq!(
            statements(&users),
            [
                r#""users""#,
                r#""id", "name", "email", "created_at", "updated_at""#,
                r#"INSERT INTO "users" ("id", "name", "email", "created_at", "updated_at") VALUES ($1, $2, $3, statement_timestamp(), statement_timestamp()) RETURNING "id", "name", "email", "created_at", "updated_at""#,
                r#"INSERT INTO "users" ("id", "name", "email", "created_at", "updated_at") VALUES "#,
                r#"SELECT "id", "name", "email", "created_at", "updated_at" FROM "users" WHERE "id" = $1"#,
                r#"UPDATE "users" SET "name" = $1, "email" = $2, "updated_at" = statement_timestamp() WHERE "id" = $3 RETURNING "id", "name", "email", "created_at", "updated_at""#,
                r#"DELETE FROM "users" WHERE "id" = $1"#,
                r#"COPY "users" ("id", "name", "email") FROM STDIN BINARY"#,
            ]
        );
    }

    #[test]
    fn varchar_uuid_key_with_timestamps() {
        // UuidStringTimestampMixin: the varchar(36) key is a parameter like the uuid one.
        let articles = table(
            "articles",
            vec![
                key("id", Role::GeneratedUuidString),
                column("title", Role::Plain),
                column("created_at", Role::CreatedAt),
                column("updated_at", Role::UpdatedAt),
            ],
        );
        assert_eq!(
            statements(&articles),
            [
                r#""articles""#,
                r#""id", "title", "created_at", "updated_at""#,
                r#"INSERT INTO "articles" ("id", "title", "created_at", "updated_at") VALUES ($1, $2, statement_timestamp(), statement_timestamp()) RETURNING "id", "title", "created_at", "updated_at""#,
                r#"INSERT INTO "articles" ("id", "title", "created_at", "updated_at") VALUES "#,
                r#"SELECT "id", "title", "created_at", "updated_at" FROM "articles" WHERE "id" = $1"#,
                r#"UPDATE "articles" SET "title" = $1, "updated_at" = statement_timestamp() WHERE "id" = $2 RETURNING "id", "title", "created_at", "updated_at""#,
                r#"DELETE FROM "articles" WHERE "id" = $1"#,
                r#"COPY "articles" ("id", "title") FROM STDIN BINARY"#,
            ]
        );
    }

    #[test]
    fn unique_uuid_beside_an_identity_key() {
        // UuidFieldMixin on a model with an integer key: the identity key is left to the
        // database (not inserted, not copied), the uuid is sent on insert and never updated.
        let orders = table(
            "orders",
            vec![
                key("id", Role::Identity),
                column("order_number", Role::Plain),
                column("user_id", Role::Plain),
                column("uuid", Role::GeneratedUuid),
            ],
        );
        assert_eq!(
            statements(&orders),
            [
                r#""orders""#,
                r#""id", "order_number", "user_id", "uuid""#,
                r#"INSERT INTO "orders" ("order_number", "user_id", "uuid") VALUES ($1, $2, $3) RETURNING "id", "order_number", "user_id", "uuid""#,
                r#"INSERT INTO "orders" ("order_number", "user_id", "uuid") VALUES "#,
                r#"SELECT "id", "order_number", "user_id", "uuid" FROM "orders" WHERE "id" = $1"#,
                r#"UPDATE "orders" SET "order_number" = $1, "user_id" = $2 WHERE "id" = $3 RETURNING "id", "order_number", "user_id", "uuid""#,
                r#"DELETE FROM "orders" WHERE "id" = $1"#,
                r#"COPY "orders" ("order_number", "user_id", "uuid") FROM STDIN BINARY"#,
            ]
        );
    }

    #[test]
    fn timestamps_on_an_identity_key() {
        // TimestampMixin: the only parameter of INSERT is the model's own field.
        let my_table = table(
            "my_table",
            vec![
                key("id", Role::Identity),
                column("name", Role::Plain),
                column("created_at", Role::CreatedAt),
                column("updated_at", Role::UpdatedAt),
            ],
        );
        assert_eq!(
            statements(&my_table),
            [
                r#""my_table""#,
                r#""id", "name", "created_at", "updated_at""#,
                r#"INSERT INTO "my_table" ("name", "created_at", "updated_at") VALUES ($1, statement_timestamp(), statement_timestamp()) RETURNING "id", "name", "created_at", "updated_at""#,
                r#"INSERT INTO "my_table" ("name", "created_at", "updated_at") VALUES "#,
                r#"SELECT "id", "name", "created_at", "updated_at" FROM "my_table" WHERE "id" = $1"#,
                r#"UPDATE "my_table" SET "name" = $1, "updated_at" = statement_timestamp() WHERE "id" = $2 RETURNING "id", "name", "created_at", "updated_at""#,
                r#"DELETE FROM "my_table" WHERE "id" = $1"#,
                r#"COPY "my_table" ("name") FROM STDIN BINARY"#,
            ]
        );
    }

    #[test]
    fn key_the_database_does_not_number() {
        // A text key, or an integer key with identity = false: sent on insert, never updated.
        let codes = table(
            "strkey",
            vec![
                key("code", Role::Plain),
                column("value", Role::Plain),
                column("created_at", Role::CreatedAt),
                column("updated_at", Role::UpdatedAt),
            ],
        );
        assert_eq!(
            statements(&codes),
            [
                r#""strkey""#,
                r#""code", "value", "created_at", "updated_at""#,
                r#"INSERT INTO "strkey" ("code", "value", "created_at", "updated_at") VALUES ($1, $2, statement_timestamp(), statement_timestamp()) RETURNING "code", "value", "created_at", "updated_at""#,
                r#"INSERT INTO "strkey" ("code", "value", "created_at", "updated_at") VALUES "#,
                r#"SELECT "code", "value", "created_at", "updated_at" FROM "strkey" WHERE "code" = $1"#,
                r#"UPDATE "strkey" SET "value" = $1, "updated_at" = statement_timestamp() WHERE "code" = $2 RETURNING "code", "value", "created_at", "updated_at""#,
                r#"DELETE FROM "strkey" WHERE "code" = $1"#,
                r#"COPY "strkey" ("code", "value") FROM STDIN BINARY"#,
            ]
        );
    }

    #[test]
    fn schema_qualified_table() {
        let mut samples = table(
            "samples",
            vec![
                key("id", Role::GeneratedUuid),
                column("small", Role::Plain),
                column("type", Role::Plain),
                column("country", Role::Plain),
            ],
        );
        samples.schema = Some("model_samples");
        assert_eq!(
            statements(&samples),
            [
                r#""model_samples"."samples""#,
                r#""id", "small", "type", "country""#,
                r#"INSERT INTO "model_samples"."samples" ("id", "small", "type", "country") VALUES ($1, $2, $3, $4) RETURNING "id", "small", "type", "country""#,
                r#"INSERT INTO "model_samples"."samples" ("id", "small", "type", "country") VALUES "#,
                r#"SELECT "id", "small", "type", "country" FROM "model_samples"."samples" WHERE "id" = $1"#,
                r#"UPDATE "model_samples"."samples" SET "small" = $1, "type" = $2, "country" = $3 WHERE "id" = $4 RETURNING "id", "small", "type", "country""#,
                r#"DELETE FROM "model_samples"."samples" WHERE "id" = $1"#,
                r#"COPY "model_samples"."samples" ("id", "small", "type", "country") FROM STDIN BINARY"#,
            ]
        );
    }

    #[test]
    fn names_that_need_quoting() {
        // Quotes in the schema, table and column names are doubled everywhere they appear;
        // a keyword (`select`) is an ordinary quoted name.
        let weird = Table {
            schema: Some(r#"Sch"ema"#),
            ..table(
                r#"we"ird"#,
                vec![
                    key("id", Role::GeneratedUuidString),
                    column(r#"Mixed "Case""#, Role::Plain),
                    column("select", Role::Plain),
                    column("uuid", Role::GeneratedUuid),
                    column("created_at", Role::CreatedAt),
                    column("updated_at", Role::UpdatedAt),
                ],
            )
        };
        assert_eq!(
            statements(&weird),
            [
                r#""Sch""ema"."we""ird""#,
                r#""id", "Mixed ""Case""", "select", "uuid", "created_at", "updated_at""#,
                r#"INSERT INTO "Sch""ema"."we""ird" ("id", "Mixed ""Case""", "select", "uuid", "created_at", "updated_at") VALUES ($1, $2, $3, $4, statement_timestamp(), statement_timestamp()) RETURNING "id", "Mixed ""Case""", "select", "uuid", "created_at", "updated_at""#,
                r#"INSERT INTO "Sch""ema"."we""ird" ("id", "Mixed ""Case""", "select", "uuid", "created_at", "updated_at") VALUES "#,
                r#"SELECT "id", "Mixed ""Case""", "select", "uuid", "created_at", "updated_at" FROM "Sch""ema"."we""ird" WHERE "id" = $1"#,
                r#"UPDATE "Sch""ema"."we""ird" SET "Mixed ""Case""" = $1, "select" = $2, "updated_at" = statement_timestamp() WHERE "id" = $3 RETURNING "id", "Mixed ""Case""", "select", "uuid", "created_at", "updated_at""#,
                r#"DELETE FROM "Sch""ema"."we""ird" WHERE "id" = $1"#,
                r#"COPY "Sch""ema"."we""ird" ("id", "Mixed ""Case""", "select", "uuid") FROM STDIN BINARY"#,
            ]
        );
    }

    #[test]
    fn update_with_nothing_to_write_still_returns_the_row() {
        let only_key = table("only_key", vec![key("id", Role::GeneratedUuid)]);
        assert_eq!(
            update(&only_key),
            r#"UPDATE "only_key" SET "id" = "id" WHERE "id" = $1 RETURNING "id""#
        );
        let identity_and_uuid = table(
            "uuidfield_only",
            vec![
                key("n", Role::Identity),
                column("uuid", Role::GeneratedUuid),
            ],
        );
        assert_eq!(
            update(&identity_and_uuid),
            r#"UPDATE "uuidfield_only" SET "n" = "n" WHERE "n" = $1 RETURNING "n", "uuid""#
        );
    }

    #[test]
    fn update_of_timestamps_alone_moves_updated_at() {
        let stamped = table(
            "only_key_ts",
            vec![
                key("id", Role::GeneratedUuidString),
                column("created_at", Role::CreatedAt),
                column("updated_at", Role::UpdatedAt),
            ],
        );
        assert_eq!(
            update(&stamped),
            r#"UPDATE "only_key_ts" SET "updated_at" = statement_timestamp() WHERE "id" = $1 RETURNING "id", "created_at", "updated_at""#
        );
        assert_eq!(
            copy_from_stdin(&stamped),
            r#"COPY "only_key_ts" ("id") FROM STDIN BINARY"#
        );
    }
}
