//! The query API against a real server: rows, scalars, named parameters and server errors.

use coredb::{params, ErrorKind, Executor, Row, SqlState};
use coredb_testkit::TestDatabase;

async fn users(db: &TestDatabase) {
    db.manager()
        .execute(
            "CREATE TABLE users (id serial PRIMARY KEY, name varchar(10) NOT NULL UNIQUE, age int, note text)",
            (),
        )
        .await
        .expect("create users");
    db.manager()
        .execute(
            "INSERT INTO users (name, age, note) VALUES ('ada', 36, 'a:b'), ('bob', 17, NULL), ('cy', 52, 'x')",
            (),
        )
        .await
        .expect("insert users");
}

#[tokio::test]
async fn scalar_select_one_returns_one() {
    let db = TestDatabase::new().await.unwrap();
    let one: i32 = db.manager().scalar("SELECT 1", ()).await.unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn execute_raw_sql_binds_named_parameters() {
    let db = TestDatabase::new().await.unwrap();
    users(&db).await;
    let rows = db
        .manager()
        .execute_raw_sql(
            "SELECT name FROM users WHERE age > :age ORDER BY name",
            params! { "age" => 18 },
        )
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0).unwrap()).collect();
    assert_eq!(names, ["ada", "cy"]);
}

#[tokio::test]
async fn named_parameters_leave_casts_strings_comments_and_dollar_bodies_alone() {
    let db = TestDatabase::new().await.unwrap();
    let sql = r#"SELECT :v::text || ':not' || $q$ :nor $q$ /* :no /* :nested */ */ || "c:x" -- :never
                 FROM (SELECT 'y' AS "c:x") t"#;
    let text: String = db
        .manager()
        .scalar(sql, params! { "v" => 7i32.to_string() })
        .await
        .unwrap();
    assert_eq!(text, "7:not :nor y");
}

#[tokio::test]
async fn repeated_named_parameter_binds_once() {
    let db = TestDatabase::new().await.unwrap();
    let sum: i32 = db
        .manager()
        .scalar(
            "SELECT :a::int4 + :a + :b::int4",
            params! { "a" => 2, "b" => 3 },
        )
        .await
        .unwrap();
    assert_eq!(sum, 7);
}

#[tokio::test]
async fn positional_tuple_parameters_bind_in_order() {
    let db = TestDatabase::new().await.unwrap();
    let (a, b): (String, i64) = db
        .manager()
        .fetch_one("SELECT $1::text, $2::int8", ("x", 5i64))
        .await
        .unwrap();
    assert_eq!((a.as_str(), b), ("x", 5));
}

#[tokio::test]
async fn missing_named_parameter_is_an_error_before_anything_is_sent() {
    let db = TestDatabase::new().await.unwrap();
    let err = db
        .manager()
        .query("SELECT :a, :b", params! { "a" => 1 })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Params);
    assert!(err.to_string().contains("missing value for :b"), "{err}");
    assert_eq!(
        db.manager().metrics().checkouts,
        0,
        "no connection was taken"
    );
}

#[tokio::test]
async fn wrong_number_of_positional_parameters_is_a_params_error() {
    let db = TestDatabase::new().await.unwrap();
    let err = db
        .manager()
        .query("SELECT $1::int, $2::int", (1,))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Params);
    assert!(
        err.to_string()
            .contains("takes 2 parameter(s) but 1 were given"),
        "{err}"
    );
}

#[tokio::test]
async fn parameter_of_wrong_type_names_the_parameter_and_both_types() {
    let db = TestDatabase::new().await.unwrap();
    users(&db).await;
    let err = db
        .manager()
        .query(
            "SELECT * FROM users WHERE age = :age",
            params! { "age" => "old" },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Params);
    let msg = err.to_string();
    assert!(msg.contains(":age ($1)") && msg.contains("int4"), "{msg}");
}

#[tokio::test]
async fn fetch_one_without_row_is_not_found_and_with_two_is_too_many() {
    let db = TestDatabase::new().await.unwrap();
    users(&db).await;
    let none = db
        .manager()
        .fetch_one::<(i32,), _>("SELECT id FROM users WHERE name = 'zed'", ())
        .await
        .unwrap_err();
    assert_eq!(none.kind(), ErrorKind::NotFound);
    let many = db
        .manager()
        .fetch_one::<(i32,), _>("SELECT id FROM users", ())
        .await
        .unwrap_err();
    assert_eq!(many.kind(), ErrorKind::TooManyRows);
    let opt = db
        .manager()
        .fetch_optional::<(i32,), _>("SELECT id FROM users WHERE name = 'zed'", ())
        .await
        .unwrap();
    assert!(opt.is_none());
}

#[tokio::test]
async fn fetch_all_maps_rows_and_tuples() {
    let db = TestDatabase::new().await.unwrap();
    users(&db).await;
    let rows: Vec<(String, Option<String>)> = db
        .manager()
        .fetch_all("SELECT name, note FROM users ORDER BY id", ())
        .await
        .unwrap();
    assert_eq!(rows[0], ("ada".into(), Some("a:b".into())));
    assert_eq!(rows[1], ("bob".into(), None));
    let raw: Vec<Row> = db
        .manager()
        .fetch_all("SELECT name FROM users", ())
        .await
        .unwrap();
    assert_eq!(raw.len(), 3);
}

#[tokio::test]
async fn null_into_non_option_is_a_decode_error_naming_the_column() {
    let db = TestDatabase::new().await.unwrap();
    users(&db).await;
    let err = db
        .manager()
        .fetch_all::<(String, String), _>("SELECT name, note FROM users ORDER BY id", ())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    let msg = err.to_string();
    assert!(
        msg.contains("\"note\" is NULL") && msg.contains("Option"),
        "{msg}"
    );
}

#[tokio::test]
async fn wrong_column_type_is_a_decode_error_with_both_types() {
    let db = TestDatabase::new().await.unwrap();
    let err = db
        .manager()
        .scalar::<String, _>("SELECT 1::int4 AS n", ())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    let msg = err.to_string();
    assert!(
        msg.contains("\"n\"") && msg.contains("int4") && msg.contains("String"),
        "{msg}"
    );
}

#[tokio::test]
async fn bad_sql_is_a_query_error_with_sqlstate_and_statement() {
    let db = TestDatabase::new().await.unwrap();
    let err = db.manager().execute("SELEC 1", ()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Query);
    assert_eq!(err.code(), Some(&SqlState::SYNTAX_ERROR));
    assert_eq!(err.statement(), Some("SELEC 1"));
    assert!(!err.is_transient());
}

#[tokio::test]
async fn unique_violation_reports_sqlstate_and_constraint() {
    let db = TestDatabase::new().await.unwrap();
    users(&db).await;
    let err = db
        .manager()
        .execute(
            "INSERT INTO users (name) VALUES (:n)",
            params! { "n" => "ada" },
        )
        .await
        .unwrap_err();
    assert!(err.is_unique_violation());
    assert_eq!(err.constraint(), Some("users_name_key"));
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[tokio::test]
async fn too_long_value_is_sqlstate_22001() {
    let db = TestDatabase::new().await.unwrap();
    users(&db).await;
    let err = db
        .manager()
        .execute(
            "INSERT INTO users (name) VALUES (:n)",
            params! { "n" => "much-too-long-name" },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::STRING_DATA_RIGHT_TRUNCATION));
}

#[tokio::test]
async fn hostile_parameter_values_are_stored_verbatim() {
    let db = TestDatabase::new().await.unwrap();
    users(&db).await;
    let hostile = "x'); DROP TABLE users; --";
    db.manager()
        .execute(
            "UPDATE users SET note = :note WHERE name = 'ada'",
            params! { "note" => hostile },
        )
        .await
        .unwrap();
    db.manager()
        .execute("UPDATE users SET note = $1 WHERE name = 'bob'", (hostile,))
        .await
        .unwrap();
    let notes: Vec<(String,)> = db
        .manager()
        .fetch_all("SELECT note FROM users WHERE name IN ('ada', 'bob')", ())
        .await
        .unwrap();
    assert_eq!(notes, vec![(hostile.to_owned(),), (hostile.to_owned(),)]);
}

#[tokio::test]
async fn connection_query_api_runs_in_autocommit() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = db.manager().get_connection().await.unwrap();
    conn.execute("CREATE TABLE t (x int)", ()).await.unwrap();
    assert_eq!(
        conn.execute("INSERT INTO t VALUES (1), (2)", ())
            .await
            .unwrap(),
        2
    );
    drop(conn);
    let n: i64 = db
        .manager()
        .scalar("SELECT count(*) FROM t", ())
        .await
        .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn statements_are_prepared_once_per_connection() {
    let db = TestDatabase::new().await.unwrap();
    let mut conn = db.manager().get_connection().await.unwrap();
    for i in 0..5 {
        let _: i32 = conn.scalar("SELECT $1::int4 + 0", (i,)).await.unwrap();
    }
    let prepared: i64 = conn
        .scalar(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT $1::int4 + 0'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(prepared, 1);
}

#[tokio::test]
async fn statement_cache_of_zero_prepares_nothing_that_outlives_a_statement() {
    let db = TestDatabase::with_config(|b| b.statement_cache_size(0))
        .await
        .unwrap();
    let mut conn = db.manager().get_connection().await.unwrap();
    for i in 0..5 {
        let _: i32 = conn.scalar("SELECT $1::int4 + 0", (i,)).await.unwrap();
    }
    let prepared: i64 = conn
        .scalar(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT $1::int4 + 0'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(prepared, 0);
}

#[tokio::test]
async fn statement_timeout_cancels_long_statements_on_the_server() {
    let db = TestDatabase::with_config(|b| {
        b.statement_timeout(Some(std::time::Duration::from_millis(200)))
    })
    .await
    .unwrap();
    let err = db
        .manager()
        .execute("SELECT pg_sleep(5)", ())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED));
    let mut s = db.manager().session().await.unwrap();
    let err = s.execute("SELECT pg_sleep(5)", ()).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED));
    assert!(s.is_aborted());
}

#[tokio::test]
async fn statement_cache_keeps_at_most_its_size_evicting_the_least_recently_used() {
    let db = TestDatabase::with_config(|b| b.statement_cache_size(3))
        .await
        .unwrap();
    let mut conn = db.manager().get_connection().await.unwrap();
    for i in 0..6 {
        let sql = format!("SELECT {i}::int4 + $1");
        let _: i32 = conn.scalar(&sql, (1,)).await.unwrap();
    }
    let kept: Vec<(String,)> = conn
        .fetch_all(
            "SELECT statement FROM pg_prepared_statements WHERE statement LIKE 'SELECT %::int4 + $1' ORDER BY statement",
            (),
        )
        .await
        .unwrap();
    let kept: Vec<String> = kept.into_iter().map(|(s,)| s).collect();
    // The inspecting statement is prepared and cached too, taking the third place.
    assert_eq!(kept, ["SELECT 4::int4 + $1", "SELECT 5::int4 + $1"]);
}

#[tokio::test]
async fn untyped_parameter_error_hints_at_a_cast_naming_the_placeholder() {
    let db = TestDatabase::new().await.unwrap();
    // The server gives `SELECT :n` the type text; an i32 cannot be sent as text.
    let shared = db
        .manager()
        .scalar::<i32, _>("SELECT :n", params! { "n" => 5i32 })
        .await
        .unwrap_err();
    let mut conn = db.manager().get_connection().await.unwrap();
    let own = conn
        .scalar::<i32, _>("SELECT :n", params! { "n" => 5i32 })
        .await
        .unwrap_err();
    let positional = conn
        .scalar::<i32, _>("SELECT $1", (5i32,))
        .await
        .unwrap_err();
    for err in [shared, own] {
        assert_eq!(err.kind(), ErrorKind::Params);
        let msg = err.to_string();
        assert!(
            msg.contains(":n ($1) cannot be sent as PostgreSQL type text")
                && msg.contains("the SQL does not tell it a parameter's type")
                && msg.contains("add a cast in the SQL, e.g. :n::int4"),
            "{msg}"
        );
    }
    let msg = positional.to_string();
    assert!(msg.contains("e.g. $1::int4"), "{msg}");
    // The hint works.
    let n: i32 = conn
        .scalar("SELECT :n::int4", params! { "n" => 5i32 })
        .await
        .unwrap();
    assert_eq!(n, 5);
}

#[tokio::test]
async fn integer_where_the_server_infers_numeric_is_sent_as_numeric() {
    let db = TestDatabase::new().await.unwrap();
    db.manager()
        .execute("CREATE TABLE ledger (amount numeric NOT NULL)", ())
        .await
        .unwrap();
    db.manager()
        .execute("INSERT INTO ledger VALUES (2.5), (4)", ())
        .await
        .unwrap();
    let sql = "SELECT (:init + COALESCE(sum(amount), 0))::text FROM ledger";
    let shared: String = db
        .manager()
        .scalar(sql, params! { "init" => 10i64 })
        .await
        .unwrap();
    let mut s = db.manager().session().await.unwrap();
    let own: String = s.scalar(sql, params! { "init" => 10i64 }).await.unwrap();
    let small: String = s.scalar(sql, params! { "init" => -3i32 }).await.unwrap();
    let null: Option<String> = s
        .scalar(sql, params! { "init" => None::<i64> })
        .await
        .unwrap();
    let big: String = db
        .manager()
        .scalar(sql, params! { "init" => i64::MAX })
        .await
        .unwrap();
    assert_eq!(
        (shared.as_str(), own.as_str(), small.as_str()),
        ("16.5", "16.5", "3.5")
    );
    assert_eq!(null, None);
    assert_eq!(big, "9223372036854775813.5");
}

#[tokio::test]
async fn narrower_integers_and_f32_are_widened_to_the_column_type() {
    let db = TestDatabase::new().await.unwrap();
    db.manager()
        .execute("CREATE TABLE wide (id int8, n int4, f float8)", ())
        .await
        .unwrap();
    let insert = "INSERT INTO wide VALUES (:id, :n, :f)";
    db.manager()
        .execute(insert, params! { "id" => 1i32, "n" => 2i16, "f" => 1.5f32 })
        .await
        .unwrap();
    let mut conn = db.manager().get_connection().await.unwrap();
    conn.execute(
        insert,
        params! { "id" => 2i32, "n" => -7i16, "f" => 0.25f32 },
    )
    .await
    .unwrap();
    let mut s = db.manager().session().await.unwrap();
    s.execute(
        insert,
        params! { "id" => i32::MIN, "n" => i16::MAX, "f" => f32::MAX },
    )
    .await
    .unwrap();
    s.commit().await.unwrap();
    let rows: Vec<(i64, i32, f64)> = conn
        .fetch_all("SELECT id, n, f FROM wide ORDER BY id", ())
        .await
        .unwrap();
    assert_eq!(
        rows,
        [
            (
                i64::from(i32::MIN),
                i32::from(i16::MAX),
                f64::from(f32::MAX)
            ),
            (1, 2, 1.5),
            (2, -7, 0.25),
        ]
    );
    // A comparison is widened too: the server asks for int8 here.
    let found: i64 = db
        .manager()
        .scalar(
            "SELECT count(*) FROM wide WHERE id = :id",
            params! { "id" => 2i32 },
        )
        .await
        .unwrap();
    assert_eq!(found, 1);
}

#[tokio::test]
async fn lossy_narrowing_is_refused_naming_the_cast_to_write() {
    let db = TestDatabase::new().await.unwrap();
    db.manager()
        .execute("CREATE TABLE narrow (n int4, f float4, d numeric)", ())
        .await
        .unwrap();
    let shared = db
        .manager()
        .execute(
            "INSERT INTO narrow (n) VALUES (:n)",
            params! { "n" => 5i64 },
        )
        .await
        .unwrap_err();
    let mut conn = db.manager().get_connection().await.unwrap();
    let own = conn
        .execute(
            "INSERT INTO narrow (n) VALUES (:n)",
            params! { "n" => 5i64 },
        )
        .await
        .unwrap_err();
    for err in [shared, own] {
        assert_eq!(err.kind(), ErrorKind::Params);
        let msg = err.to_string();
        assert!(
            msg.contains(":n ($1) cannot be sent as PostgreSQL type int4")
                && msg.contains("sending int8 as int4 could change the value")
                && msg.contains("add a cast in the SQL, e.g. :n::int8")
                && msg.contains("or bind a Rust i32"),
            "{msg}"
        );
    }
    let float = conn
        .execute(
            "INSERT INTO narrow (f) VALUES (:f)",
            params! { "f" => 0.1f64 },
        )
        .await
        .unwrap_err();
    let msg = float.to_string();
    assert!(
        msg.contains("e.g. :f::float8") && msg.contains("bind a Rust f32"),
        "{msg}"
    );
    let decimal = db
        .manager()
        .execute(
            "INSERT INTO narrow (d) VALUES (:d)",
            params! { "d" => 0.1f64 },
        )
        .await
        .unwrap_err();
    let msg = decimal.to_string();
    assert!(
        msg.contains("e.g. :d::float8") && msg.contains("bind a Rust rust_decimal::Decimal"),
        "{msg}"
    );
    // Nothing was sent by the refused statements; the cast named in the message works.
    conn.execute(
        "INSERT INTO narrow (n) VALUES (:n::int8)",
        params! { "n" => 5i64 },
    )
    .await
    .unwrap();
    let n: i64 = conn
        .scalar("SELECT count(*) FROM narrow", ())
        .await
        .unwrap();
    assert_eq!(n, 1);
}
