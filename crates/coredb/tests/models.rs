//! Models against a real server: the six mixins (checked in information_schema), timestamps,
//! constraint errors, create_all / drop_all, CRUD, the select builder, COPY and the types.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use coredb::model::{self, CopyIn, Crud, Metadata, Model, UuidVersion};
use coredb::{params, Connection, ErrorKind, Executor, SqlState};
use coredb_testkit::TestDatabase;
use rust_decimal::Decimal;
use uuid::Uuid;

// core.db's models (README "Database Models"), plus a foreign key or two for ordering.

#[coredb::model(table = "users", mixin = UuidTimestampMixin)]
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    #[column(length = 100)]
    pub name: String,
    #[column(length = 255, unique)]
    pub email: String,
}

#[coredb::model(table = "products", mixin = UuidMixin)]
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    #[column(length = 200)]
    pub name: String,
    #[column(precision = 12, scale = 2)]
    pub price: Decimal,
}

#[coredb::model(table = "categories", mixin = UuidStringMixin)]
#[derive(Debug, Clone, PartialEq)]
pub struct Category {
    #[column(length = 100)]
    pub name: String,
    #[column(references = Category, on_delete = "cascade", length = 36)]
    pub parent_id: Option<String>,
}

#[coredb::model(table = "orders", mixin = UuidFieldMixin)]
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    #[column(primary_key)]
    pub id: i32,
    #[column(length = 50)]
    pub order_number: String,
    #[column(references = User, on_delete = "set null", index)]
    pub user_id: Option<Uuid>,
}

#[coredb::model(table = "my_table", mixin = TimestampMixin)]
#[derive(Debug, Clone, PartialEq)]
pub struct MyModel {
    #[column(primary_key)]
    pub id: i64,
    #[column(length = 100)]
    pub name: String,
}

#[coredb::model(table = "articles", mixin = UuidStringTimestampMixin)]
#[derive(Debug, Clone, PartialEq)]
pub struct Article {
    #[column(length = 200)]
    pub title: String,
}

#[derive(
    Debug, Clone, Copy, PartialEq, postgres_types::ToSql, postgres_types::FromSql, coredb::SqlEnum,
)]
#[postgres(name = "sample_mood", rename_all = "snake_case")]
pub enum Mood {
    Sad,
    SoSo,
    Happy,
}

/// One column of every supported type, in a schema of its own.
#[coredb::model(table = "samples", schema = "model_samples", mixin = UuidMixin, uuid = "v4")]
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub small: i16,
    pub int: i32,
    pub big: i64,
    pub real: f32,
    pub double: f64,
    pub flag: bool,
    pub text: String,
    #[column(length = 20, index)]
    pub code: String,
    pub note: Option<String>,
    pub other_id: Uuid,
    pub day: NaiveDate,
    pub clock: NaiveTime,
    pub local: NaiveDateTime,
    pub at: DateTime<Utc>,
    pub amount: Decimal,
    pub doc: serde_json::Value,
    pub numbers: Vec<i32>,
    pub tags: Vec<String>,
    pub bytes: Vec<u8>,
    pub mood: Mood,
    pub moods: Vec<Mood>,
    #[column(rename = "type")]
    pub kind: String,
    #[column(default = "'n/a'")]
    pub label: String,
    #[column(sql_type = "char(2)")]
    pub country: Option<String>,
    #[column(skip)]
    pub cache: Option<String>,
}

async fn connect(db: &TestDatabase) -> Connection {
    db.manager().get_connection().await.expect("connection")
}

async fn created(db: &TestDatabase) -> Connection {
    let mut conn = connect(db).await;
    model::create_all(&mut conn).await.expect("create_all");
    conn
}

/// `(column, data_type, character_maximum_length, is_nullable)` from information_schema.
async fn columns(
    conn: &mut Connection,
    schema: &str,
    table: &str,
) -> Vec<(String, String, Option<i32>, String)> {
    conn.fetch_all(
        "SELECT column_name::text, data_type::text, character_maximum_length::int, is_nullable::text
         FROM information_schema.columns WHERE table_schema = :schema AND table_name = :table
         ORDER BY ordinal_position",
        params! { "schema" => schema.to_owned(), "table" => table.to_owned() },
    )
    .await
    .expect("information_schema.columns")
}

/// `(constraint, type, column)` from information_schema.
async fn constraints(conn: &mut Connection, table: &str) -> Vec<(String, String, String)> {
    conn.fetch_all(
        "SELECT tc.constraint_name::text, tc.constraint_type::text, kcu.column_name::text
         FROM information_schema.table_constraints tc
         JOIN information_schema.key_column_usage kcu
           ON kcu.constraint_schema = tc.constraint_schema AND kcu.constraint_name = tc.constraint_name
         WHERE tc.table_name = :table ORDER BY 1",
        params! { "table" => table.to_owned() },
    )
    .await
    .expect("information_schema.table_constraints")
}

fn expected(
    rows: &[(&str, &str, Option<i32>, &str)],
) -> Vec<(String, String, Option<i32>, String)> {
    rows.iter()
        .map(|(c, t, l, n)| (c.to_string(), t.to_string(), *l, n.to_string()))
        .collect()
}

fn constraint_rows(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|(n, t, c)| (n.to_string(), t.to_string(), c.to_string()))
        .collect()
}

const TIMESTAMPTZ: &str = "timestamp with time zone";

#[tokio::test]
async fn uuid_mixin_gives_native_uuid_primary_key_and_round_trips() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = created(&db).await;
    assert_eq!(
        columns(&mut conn, "public", "products").await,
        expected(&[
            ("id", "uuid", None, "NO"),
            ("name", "character varying", Some(200), "NO"),
            ("price", "numeric", None, "NO"),
        ])
    );
    assert_eq!(
        constraints(&mut conn, "products").await,
        constraint_rows(&[("products_pkey", "PRIMARY KEY", "id")])
    );
    let mut lamp = Product::new("Lamp", Decimal::new(1999, 2));
    let id = lamp.id;
    conn.insert(&mut lamp).await.unwrap();
    assert_eq!(lamp.id, id, "the application made the key");
    let stored: Product = conn.get(&id).await.unwrap().expect("inserted row");
    assert_eq!(stored, lamp);
}

#[tokio::test]
async fn uuid_string_mixin_gives_36_character_string_primary_key_and_round_trips() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = created(&db).await;
    assert_eq!(
        columns(&mut conn, "public", "categories").await,
        expected(&[
            ("id", "character varying", Some(36), "NO"),
            ("name", "character varying", Some(100), "NO"),
            ("parent_id", "character varying", Some(36), "YES"),
        ])
    );
    assert_eq!(
        constraints(&mut conn, "categories").await,
        constraint_rows(&[
            ("categories_parent_id_fkey", "FOREIGN KEY", "parent_id"),
            ("categories_pkey", "PRIMARY KEY", "id"),
        ])
    );
    let mut books = Category::new("Books", None);
    conn.insert(&mut books).await.unwrap();
    assert_eq!(books.id.len(), 36);
    assert!(Uuid::parse_str(&books.id).is_ok(), "{}", books.id);
    let mut poetry = Category::new("Poetry", Some(books.id.clone()));
    conn.insert(&mut poetry).await.unwrap();
    let stored: Category = conn.get(&poetry.id).await.unwrap().expect("inserted row");
    assert_eq!(stored, poetry);
}

#[tokio::test]
async fn uuid_field_mixin_adds_unique_uuid_beside_the_integer_key() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = created(&db).await;
    assert_eq!(
        columns(&mut conn, "public", "orders").await,
        expected(&[
            ("id", "integer", None, "NO"),
            ("order_number", "character varying", Some(50), "NO"),
            ("user_id", "uuid", None, "YES"),
            ("uuid", "uuid", None, "NO"),
        ])
    );
    assert_eq!(
        constraints(&mut conn, "orders").await,
        constraint_rows(&[
            ("orders_pkey", "PRIMARY KEY", "id"),
            ("orders_user_id_fkey", "FOREIGN KEY", "user_id"),
            ("orders_uuid_key", "UNIQUE", "uuid"),
        ])
    );
    let identity: String = conn
        .scalar(
            "SELECT is_identity::text FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'id'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(identity, "YES");
    let index: i64 = conn
        .scalar(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_orders_user_id'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(index, 1);

    let mut first = Order::new("A-1", None);
    let mut second = Order::new("A-2", None);
    conn.insert(&mut first).await.unwrap();
    conn.insert(&mut second).await.unwrap();
    assert!(
        first.id > 0 && second.id > first.id,
        "{} then {}",
        first.id,
        second.id
    );
    assert_ne!(first.uuid, second.uuid);
    let stored: Order = conn.get(&second.id).await.unwrap().expect("inserted row");
    assert_eq!(stored, second);
}

#[tokio::test]
async fn timestamp_mixin_sets_both_timestamps_from_the_database_clock() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = created(&db).await;
    assert_eq!(
        columns(&mut conn, "public", "my_table").await,
        expected(&[
            ("id", "bigint", None, "NO"),
            ("name", "character varying", Some(100), "NO"),
            ("created_at", TIMESTAMPTZ, None, "NO"),
            ("updated_at", TIMESTAMPTZ, None, "NO"),
        ])
    );
    let before: DateTime<Utc> = conn.scalar("SELECT clock_timestamp()", ()).await.unwrap();
    let mut row = MyModel::new("first");
    conn.insert(&mut row).await.unwrap();
    let after: DateTime<Utc> = conn.scalar("SELECT clock_timestamp()", ()).await.unwrap();
    assert!(row.id > 0);
    assert_eq!(row.created_at, row.updated_at);
    assert!(
        before <= row.created_at && row.created_at <= after,
        "{before} <= {} <= {after}",
        row.created_at
    );
    let stored: MyModel = conn.get(&row.id).await.unwrap().expect("inserted row");
    assert_eq!(stored, row);
}

#[tokio::test]
async fn uuid_timestamp_mixin_gives_uuid_key_and_timestamps_and_round_trips() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = created(&db).await;
    assert_eq!(
        columns(&mut conn, "public", "users").await,
        expected(&[
            ("id", "uuid", None, "NO"),
            ("name", "character varying", Some(100), "NO"),
            ("email", "character varying", Some(255), "NO"),
            ("created_at", TIMESTAMPTZ, None, "NO"),
            ("updated_at", TIMESTAMPTZ, None, "NO"),
        ])
    );
    assert_eq!(
        constraints(&mut conn, "users").await,
        constraint_rows(&[
            ("users_email_key", "UNIQUE", "email"),
            ("users_pkey", "PRIMARY KEY", "id")
        ])
    );
    let mut ada = User::new("Ada", "ada@example.com");
    conn.insert(&mut ada).await.unwrap();
    assert_eq!(ada.id.get_version_num(), 7, "UUIDv7 by default");
    assert!(ada.created_at > DateTime::<Utc>::default());
    let stored: User = conn.get(&ada.id).await.unwrap().expect("inserted row");
    assert_eq!(stored, ada);
}

#[tokio::test]
async fn uuid_string_timestamp_mixin_gives_string_key_and_timestamps_and_round_trips() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = created(&db).await;
    assert_eq!(
        columns(&mut conn, "public", "articles").await,
        expected(&[
            ("id", "character varying", Some(36), "NO"),
            ("title", "character varying", Some(200), "NO"),
            ("created_at", TIMESTAMPTZ, None, "NO"),
            ("updated_at", TIMESTAMPTZ, None, "NO"),
        ])
    );
    assert_eq!(
        constraints(&mut conn, "articles").await,
        constraint_rows(&[("articles_pkey", "PRIMARY KEY", "id")])
    );
    let mut article = Article::new("Notes on the Analytical Engine");
    conn.insert(&mut article).await.unwrap();
    assert_eq!(Uuid::parse_str(&article.id).unwrap().get_version_num(), 7);
    let stored: Article = conn.get(&article.id).await.unwrap().expect("inserted row");
    assert_eq!(stored, article);
}

#[tokio::test]
async fn update_moves_updated_at_and_keeps_created_at_even_within_one_transaction() {
    let db = TestDatabase::new().await.unwrap();
    drop(created(&db).await);
    let mut session = db.manager().session().await.unwrap();
    let mut ada = User::new("Ada", "ada@example.com");
    session.insert(&mut ada).await.unwrap();
    let inserted = ada.clone();
    tokio::time::sleep(Duration::from_millis(5)).await;
    ada.name = "Ada Lovelace".into();
    session.update(&mut ada).await.unwrap();
    assert_eq!(ada.created_at, inserted.created_at);
    assert!(
        ada.updated_at > inserted.updated_at,
        "{} > {}",
        ada.updated_at,
        inserted.updated_at
    );
    session.commit().await.unwrap();

    let mut conn = connect(&db).await;
    let stored: User = conn.get(&ada.id).await.unwrap().expect("row");
    assert_eq!(stored, ada, "the struct holds the stored values");
    assert_eq!(stored.name, "Ada Lovelace");
}

#[tokio::test]
async fn duplicate_unique_value_fails_with_23505_and_the_constraint_and_rolls_back_the_whole_transaction(
) {
    let db = TestDatabase::new().await.unwrap();
    drop(created(&db).await);
    let mut session = db.manager().session().await.unwrap();
    session
        .insert(&mut User::new("Ada", "ada@example.com"))
        .await
        .unwrap();
    let err = session
        .insert(&mut User::new("Another Ada", "ada@example.com"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION), "{err}");
    assert_eq!(err.constraint(), Some("users_email_key"), "{err}");
    assert!(
        session.commit().await.is_err(),
        "an aborted transaction does not commit"
    );

    let mut conn = connect(&db).await;
    let users = conn.select::<User>().count().await.unwrap();
    assert_eq!(users, 0, "the first insert was rolled back too");
}

#[tokio::test]
async fn value_longer_than_length_fails_with_22001() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = created(&db).await;
    let err = conn
        .insert(&mut User::new("x".repeat(101), "long@example.com"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::STRING_DATA_RIGHT_TRUNCATION),
        "{err}"
    );
    conn.insert(&mut User::new("x".repeat(100), "fits@example.com"))
        .await
        .unwrap();
}

/// Every table, enum type and schema outside the system's, as `kind name`.
async fn user_objects(conn: &mut Connection) -> Vec<String> {
    conn.fetch_all::<(String,), _>(
        "SELECT 'table ' || table_schema || '.' || table_name FROM information_schema.tables
           WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
         UNION ALL SELECT 'type ' || typname FROM pg_type WHERE typtype = 'e'
         UNION ALL SELECT 'schema ' || nspname FROM pg_namespace
           WHERE nspname NOT IN ('public', 'information_schema') AND nspname NOT LIKE 'pg\\_%'
         ORDER BY 1",
        (),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|(name,)| name)
    .collect()
}

#[tokio::test]
async fn create_all_twice_is_harmless() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = created(&db).await;
    conn.insert(&mut User::new("Ada", "ada@example.com"))
        .await
        .unwrap();
    let objects = user_objects(&mut conn).await;
    model::create_all(&mut conn).await.unwrap();
    assert_eq!(user_objects(&mut conn).await, objects);
    assert_eq!(
        conn.select::<User>().count().await.unwrap(),
        1,
        "data is kept"
    );
    for expected in [
        "schema model_samples",
        "table model_samples.samples",
        "table public.users",
        "table public.orders",
        "type sample_mood",
    ] {
        assert!(
            objects.iter().any(|o| o == expected),
            "{expected} in {objects:?}"
        );
    }
}

#[tokio::test]
async fn drop_all_removes_every_table_type_and_schema_it_created() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = created(&db).await;
    model::drop_all(&mut conn).await.unwrap();
    assert_eq!(user_objects(&mut conn).await, Vec::<String>::new());
    // And back again, inside one transaction.
    let mut session = db.manager().session().await.unwrap();
    model::create_all(&mut session).await.unwrap();
    session.commit().await.unwrap();
    assert!(!user_objects(&mut conn).await.is_empty());
}

#[tokio::test]
async fn create_all_creates_referenced_tables_first_and_drop_all_drops_them_last() {
    let metadata = Metadata::new()
        .with::<Order>()
        .with::<Category>()
        .with::<User>();
    let order: Vec<&str> = metadata
        .sorted_tables()
        .unwrap()
        .iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(order, ["categories", "users", "orders"]);
    let drops = metadata.drop_statements().unwrap();
    assert_eq!(drops[0], r#"DROP TABLE IF EXISTS "orders""#);

    // Only the chosen set is created.
    let db = TestDatabase::new().await.unwrap();
    let mut conn = connect(&db).await;
    metadata.create_all(&mut conn).await.unwrap();
    assert_eq!(
        user_objects(&mut conn).await,
        [
            "table public.categories",
            "table public.orders",
            "table public.users"
        ]
    );
    metadata.drop_all(&mut conn).await.unwrap();
    assert!(user_objects(&mut conn).await.is_empty());
}

#[test]
fn table_ddl_names_columns_types_and_constraints_like_core_db() {
    assert_eq!(
        User::TABLE.create_table_sql(),
        r#"CREATE TABLE IF NOT EXISTS "users" (
    "id" uuid NOT NULL,
    "name" varchar(100) NOT NULL,
    "email" varchar(255) NOT NULL,
    "created_at" timestamptz NOT NULL DEFAULT now(),
    "updated_at" timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT "users_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "users_email_key" UNIQUE ("email")
)"#
    );
    assert_eq!(
        Order::TABLE.create_sql(),
        [
            r#"CREATE TABLE IF NOT EXISTS "orders" (
    "id" integer GENERATED BY DEFAULT AS IDENTITY,
    "order_number" varchar(50) NOT NULL,
    "user_id" uuid,
    "uuid" uuid NOT NULL,
    CONSTRAINT "orders_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "orders_uuid_key" UNIQUE ("uuid"),
    CONSTRAINT "orders_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users" ("id") ON DELETE SET NULL
)"#,
            r#"CREATE INDEX IF NOT EXISTS "ix_orders_user_id" ON "orders" ("user_id")"#,
        ]
    );
    assert_eq!(User::TABLE.mixins, ["UuidTimestampMixin"]);
}

#[tokio::test]
async fn get_update_and_delete_report_missing_rows() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = created(&db).await;
    let mut ghost = User::new("Ghost", "ghost@example.com");
    assert!(conn.get::<User>(&ghost.id).await.unwrap().is_none());
    let err = conn.update(&mut ghost).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains(&ghost.id.to_string()), "{err}");
    assert!(!conn.delete(&ghost).await.unwrap());

    conn.insert(&mut ghost).await.unwrap();
    assert!(conn.delete(&ghost).await.unwrap());
    assert!(conn.get::<User>(&ghost.id).await.unwrap().is_none());
    let mut article = Article::new("gone");
    conn.insert(&mut article).await.unwrap();
    assert!(conn.delete_by_key::<Article>(&article.id).await.unwrap());
}

#[tokio::test]
async fn insert_many_writes_the_stored_values_back_to_each_model() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = created(&db).await;
    let mut users: Vec<User> = (0..2500)
        .map(|i| User::new(format!("user {i}"), format!("u{i}@example.com")))
        .collect();
    assert_eq!(conn.insert_many(&mut users).await.unwrap(), 2500);
    assert!(users
        .iter()
        .all(|u| u.created_at > DateTime::<Utc>::default()));
    let stored: User = conn.get(&users[1234].id).await.unwrap().unwrap();
    assert_eq!(stored, users[1234]);

    // Identity keys come back to the model they belong to.
    let mut orders: Vec<Order> = (0..10)
        .map(|i| Order::new(format!("N-{i}"), None))
        .collect();
    conn.insert_many(&mut orders).await.unwrap();
    for order in &orders {
        let stored: Order = conn.get(&order.id).await.unwrap().unwrap();
        assert_eq!(&stored, order);
    }
    assert_eq!(conn.insert_many::<Order>(&mut []).await.unwrap(), 0);
}

#[tokio::test]
async fn select_filters_orders_pages_counts_and_checks_existence() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = created(&db).await;
    let mut products: Vec<Product> = [
        ("Lamp", 20),
        ("Desk", 150),
        ("Chair", 80),
        ("Pen", 2),
        ("Rug", 80),
    ]
    .into_iter()
    .map(|(name, price)| Product::new(name, Decimal::from(price)))
    .collect();
    conn.insert_many(&mut products).await.unwrap();

    let names = |rows: Vec<Product>| rows.into_iter().map(|p| p.name).collect::<Vec<_>>();
    let cheap = conn
        .select::<Product>()
        .filter("price < :max", params! { "max" => Decimal::from(100) })
        .order_by("price DESC")
        .order_by("name")
        .all()
        .await
        .unwrap();
    assert_eq!(names(cheap), ["Chair", "Rug", "Lamp", "Pen"]);

    let page = conn
        .select::<Product>()
        .order_by("name")
        .limit(2)
        .offset(1)
        .all()
        .await
        .unwrap();
    assert_eq!(names(page), ["Desk", "Lamp"]);

    let both = conn
        .select::<Product>()
        .filter("price >= :min", params! { "min" => Decimal::from(50) })
        .filter("name <> :not", params! { "not" => "Desk" })
        .count()
        .await
        .unwrap();
    assert_eq!(both, 2);
    assert_eq!(conn.select::<Product>().limit(3).count().await.unwrap(), 3);
    assert!(conn
        .select::<Product>()
        .filter("name = :n", params! { "n" => "Pen" })
        .exists()
        .await
        .unwrap());
    assert!(!conn
        .select::<Product>()
        .filter("name = :n", params! { "n" => "Sofa" })
        .exists()
        .await
        .unwrap());

    let desk = conn
        .select::<Product>()
        .filter("name = :n", params! { "n" => "Desk" })
        .one()
        .await
        .unwrap();
    assert_eq!(desk.price, Decimal::from(150));
    let first = conn
        .select::<Product>()
        .order_by("price")
        .first()
        .await
        .unwrap();
    assert_eq!(first.map(|p| p.name).as_deref(), Some("Pen"));
    let err = conn.select::<Product>().one().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooManyRows);
    let err = conn
        .select::<Product>()
        .filter("price < :max", params! { "max" => 1 , "extra" => 2 })
        .all()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Params, "{err}");
}

#[tokio::test]
async fn model_operations_reuse_one_prepared_statement_per_connection() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = created(&db).await;
    for i in 0..3 {
        let mut user = User::new(format!("u{i}"), format!("u{i}@example.com"));
        conn.insert(&mut user).await.unwrap();
        let _: Option<User> = conn.get(&user.id).await.unwrap();
    }
    let prepared: i64 = conn
        .scalar(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement = :insert OR statement = :get",
            params! { "insert" => User::STATEMENTS.insert, "get" => User::STATEMENTS.get },
        )
        .await
        .unwrap();
    assert_eq!(prepared, 2);
}

fn sample() -> Sample {
    Sample {
        id: model::new_uuid(UuidVersion::V4),
        small: -7,
        int: 42,
        big: 9_000_000_000,
        real: 1.5,
        double: 2.25,
        flag: true,
        text: "it's a \"text\" with ümlauts".into(),
        code: "ABC-123".into(),
        note: None,
        other_id: Uuid::now_v7(),
        day: NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
        clock: NaiveTime::from_hms_micro_opt(23, 59, 58, 123_456).unwrap(),
        local: NaiveDate::from_ymd_opt(1999, 12, 31)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap(),
        at: DateTime::from_timestamp(1_700_000_000, 654_321_000).unwrap(),
        amount: "12345678901234567890.123456789".parse().unwrap(),
        doc: serde_json::json!({ "plan": "prepaid", "limits": [1, 2, 3] }),
        numbers: vec![3, 1, 2],
        tags: vec!["a".into(), "b,c".into()],
        bytes: vec![0, 255, 10],
        mood: Mood::SoSo,
        moods: vec![Mood::Happy, Mood::Sad],
        kind: "reserved word column".into(),
        label: "given".into(),
        country: Some("FR".into()),
        cache: Some("not stored".into()),
    }
}

#[tokio::test]
async fn every_supported_type_round_trips_in_its_postgresql_type() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = created(&db).await;
    let types: Vec<(String, String)> = conn
        .fetch_all(
            "SELECT column_name::text, format_type(atttypid, atttypmod)
             FROM information_schema.columns c
             JOIN pg_attribute a ON a.attrelid = 'model_samples.samples'::regclass AND a.attname = c.column_name
             WHERE c.table_schema = 'model_samples' AND c.table_name = 'samples' ORDER BY ordinal_position",
            (),
        )
        .await
        .unwrap();
    let types: Vec<String> = types.into_iter().map(|(c, t)| format!("{c} {t}")).collect();
    assert_eq!(
        types,
        [
            "id uuid",
            "small smallint",
            "int integer",
            "big bigint",
            "real real",
            "double double precision",
            "flag boolean",
            "text text",
            "code character varying(20)",
            "note text",
            "other_id uuid",
            "day date",
            "clock time without time zone",
            "local timestamp without time zone",
            "at timestamp with time zone",
            "amount numeric",
            "doc jsonb",
            "numbers integer[]",
            "tags text[]",
            "bytes bytea",
            "mood sample_mood",
            "moods sample_mood[]",
            "type text",
            "label text",
            "country character(2)",
        ]
    );
    let mut value = sample();
    conn.insert(&mut value).await.unwrap();
    assert_eq!(value.id.get_version_num(), 4);
    assert_eq!(
        value.cache.as_deref(),
        Some("not stored"),
        "insert keeps skipped fields"
    );
    let stored: Sample = conn.get(&value.id).await.unwrap().unwrap();
    assert_eq!(
        stored,
        Sample {
            cache: None,
            ..value.clone()
        }
    );

    let copied: Vec<String> = Sample::TABLE
        .columns
        .iter()
        .filter(|c| c.name != "id" && c.name != "label")
        .map(|c| model::quote_ident(c.name))
        .collect();
    let copied = copied.join(", ");
    let sql = format!(
        "INSERT INTO model_samples.samples (id, {copied}) SELECT gen_random_uuid(), {copied} FROM model_samples.samples RETURNING label"
    );
    let label: String = conn.scalar(&sql, ()).await.unwrap();
    assert_eq!(
        label, "n/a",
        "the column default applies to rows written by other SQL"
    );
}

#[derive(Debug, PartialEq, coredb::FromRow)]
struct Address {
    city: String,
}

#[derive(Debug, PartialEq, coredb::FromRow)]
struct UserSummary {
    #[column(rename = "user_name")]
    name: String,
    orders: i64,
    note: Option<String>,
    #[column(flatten)]
    address: Address,
    #[column(skip)]
    cached: Vec<String>,
}

#[tokio::test]
async fn from_row_maps_renamed_optional_flattened_and_skipped_fields() {
    let db = TestDatabase::new().await.unwrap();
    let summary: UserSummary = db
        .manager()
        .fetch_one(
            "SELECT 'Ada' AS user_name, 3::bigint AS orders, NULL::text AS note, 'London' AS city",
            (),
        )
        .await
        .unwrap();
    assert_eq!(
        summary,
        UserSummary {
            name: "Ada".into(),
            orders: 3,
            note: None,
            address: Address {
                city: "London".into()
            },
            cached: Vec::new(),
        }
    );
}

#[tokio::test]
async fn from_row_reads_every_row_of_a_result_by_name_whatever_the_column_order() {
    use futures_util::TryStreamExt as _;
    let db = TestDatabase::new().await.unwrap();
    // Columns in another order than the fields, the flattened one in the middle: the first
    // row finds them by name, the others by the positions it found.
    let sql = "SELECT n::bigint AS orders, 'city ' || n AS city, CASE WHEN n % 2 = 0 THEN 'even' END AS note, \
               'user ' || n AS user_name FROM generate_series(1, 50) AS n ORDER BY n";
    let expected: Vec<UserSummary> = (1..=50i64)
        .map(|n| UserSummary {
            name: format!("user {n}"),
            orders: n,
            note: (n % 2 == 0).then(|| "even".to_owned()),
            address: Address {
                city: format!("city {n}"),
            },
            cached: Vec::new(),
        })
        .collect();
    let all: Vec<UserSummary> = db.manager().fetch_all(sql, ()).await.unwrap();
    assert_eq!(all, expected);

    let mut conn = db.manager().get_connection().await.unwrap();
    let streamed: Vec<UserSummary> = conn
        .stream::<UserSummary, _>(sql, ())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(streamed, expected);

    // A later row that cannot be read still names its column.
    let late_null = db
        .manager()
        .fetch_all::<UserSummary, _>(
            "SELECT 'Ada' AS user_name, CASE WHEN n < 40 THEN n END::bigint AS orders, \
             NULL::text AS note, 'x' AS city FROM generate_series(1, 50) AS n ORDER BY n",
            (),
        )
        .await
        .unwrap_err();
    assert_eq!(late_null.kind(), ErrorKind::Decode);
    let text = late_null.to_string();
    assert!(
        text.contains("\"orders\"") && text.contains("Option"),
        "{text}"
    );
}

#[tokio::test]
async fn from_row_names_the_column_and_both_types_when_it_cannot_read_one() {
    let db = TestDatabase::new().await.unwrap();
    let missing = db
        .manager()
        .fetch_one::<UserSummary, _>(
            "SELECT 'Ada' AS user_name, NULL::text AS note, 'x' AS city",
            (),
        )
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::Decode);
    let text = missing.to_string();
    assert!(
        text.contains("\"orders\"") && text.contains("i64"),
        "{text}"
    );

    let mismatch = db
        .manager()
        .fetch_one::<UserSummary, _>(
            "SELECT 'Ada' AS user_name, 'three' AS orders, NULL::text AS note, 'x' AS city",
            (),
        )
        .await
        .unwrap_err();
    let text = mismatch.to_string();
    assert_eq!(mismatch.kind(), ErrorKind::Decode);
    assert!(
        text.contains("\"orders\"") && text.contains("i64") && text.contains("text"),
        "{text}"
    );

    let null = db
        .manager()
        .fetch_one::<Address, _>("SELECT NULL::text AS city", ())
        .await
        .unwrap_err();
    assert!(null.to_string().contains("Option"), "{null}");
}

#[tokio::test]
async fn copy_in_loads_many_rows_on_a_connection_and_in_a_session() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = created(&db).await;
    let users: Vec<User> = (0..20_000)
        .map(|i| User::new(format!("user {i}"), format!("c{i}@example.com")))
        .collect();
    assert_eq!(conn.copy_in(&users).await.unwrap(), 20_000);
    let stored: User = conn.get(&users[19_999].id).await.unwrap().unwrap();
    assert_eq!(stored.email, "c19999@example.com");
    assert!(
        stored.created_at > DateTime::<Utc>::default(),
        "timestamps take the column default"
    );

    let mut orders: Vec<Order> = (0..3).map(|i| Order::new(format!("C-{i}"), None)).collect();
    let mut session = db.manager().session().await.unwrap();
    session.copy_in(&orders).await.unwrap();
    // A failing copy undoes itself; the transaction goes on.
    orders[0].uuid = orders[1].uuid;
    let err = session.copy_in(&orders).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION), "{err}");
    assert_eq!(session.select::<Order>().count().await.unwrap(), 3);
    session.commit().await.unwrap();
    assert_eq!(conn.select::<Order>().count().await.unwrap(), 3);
}

// A private model: its generated constructor and unread timestamps raise no warnings.
#[coredb::model(table = "tags", mixin = UuidStringTimestampMixin, uuid = "v4")]
#[derive(Debug, Clone, PartialEq)]
struct Tag {
    #[column(length = 30, unique)]
    label: String,
}

#[test]
fn derives_below_the_attribute_see_the_mixin_fields() {
    let tag = Tag::new("rust");
    let debug = format!("{tag:?}");
    for field in ["id:", "label:", "created_at:", "updated_at:"] {
        assert!(debug.contains(field), "{field} in {debug}");
    }
    assert_eq!(tag.clone(), tag);
    assert_eq!(Uuid::parse_str(&tag.id).unwrap().get_version_num(), 4);
    assert!(format!("{:?}", User::new("a", "b")).contains("created_at:"));
}

#[test]
fn uuid_keys_are_v7_by_default_and_v4_on_request() {
    let a = User::new("a", "a@example.com");
    let b = User::new("b", "b@example.com");
    assert_eq!(a.id.get_version_num(), 7);
    assert!(a.id < b.id, "v7 keys sort in creation order");
    assert_eq!(
        Uuid::parse_str(&Article::new("t").id)
            .unwrap()
            .get_version_num(),
        7
    );
    assert_eq!(model::new_uuid(UuidVersion::V4).get_version_num(), 4);
    assert_eq!(Order::new("n", None).uuid.get_version_num(), 7);
}

#[tokio::test]
async fn crud_and_select_futures_run_in_spawned_tasks() {
    let db = TestDatabase::new().await.unwrap();
    drop(created(&db).await);
    let m = db.manager().clone();
    // tokio::spawn needs Send futures: the same holds for axum handlers.
    let found = tokio::spawn(async move {
        let mut s = m.session().await?;
        let mut user = User::new("Sam", "sam@example.com");
        s.insert(&mut user).await?;
        let all = s.select::<User>().all().await?;
        let n = s
            .select::<User>()
            .filter("name = :name", params! { "name" => "Sam" })
            .count()
            .await?;
        s.commit().await?;
        Ok::<_, coredb::Error>((all.len(), n))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(found, (1, 1));
}
