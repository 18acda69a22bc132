//! Statements a connection's holder sends on the connection's stream itself (a checked-out
//! connection, a session): the same counts and errors as through the driver, and a connection
//! that stays right when its holder stops waiting, when its backend ends under a statement, and
//! when it goes back to the pool.

use std::time::Duration;

use coredb::{ErrorKind, Executor};
use coredb_testkit::TestDatabase;

#[tokio::test]
async fn a_held_connection_answers_counts_and_server_errors_as_the_driver_does() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let mut c = m.get_connection().await.unwrap();
    let created = c
        .execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance numeric)",
            (),
        )
        .await
        .unwrap();
    assert_eq!(created, 0);
    for _ in 0..3 {
        // Prepared the first time, sent by the holder from then on.
        let n = c
            .execute("UPDATE accounts SET balance = balance + 1", ())
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
    let inserted = c
        .execute(
            "INSERT INTO accounts SELECT g, 'owner ' || g, 0 FROM generate_series(1, $1) g",
            (3i32,),
        )
        .await
        .unwrap();
    assert_eq!(inserted, 3);
    let updated = c
        .execute(
            "UPDATE accounts SET owner = $1 WHERE id > $2",
            ("bob", 1i32),
        )
        .await
        .unwrap();
    assert_eq!(updated, 2);
    // A value the driver widens for its parameter's type (an i64 for numeric), and a NULL.
    let widened = c
        .execute(
            "UPDATE accounts SET balance = $1 WHERE id = $2",
            (7i64, 1i32),
        )
        .await
        .unwrap();
    assert_eq!(widened, 1);
    let nulled = c
        .execute(
            "UPDATE accounts SET owner = $1 WHERE id = $2",
            (None::<&str>, 2i32),
        )
        .await
        .unwrap();
    assert_eq!(nulled, 1);
    // An answer many times the room the holder reads it into.
    for _ in 0..2 {
        let selected = c
            .execute(
                "SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g",
                (),
            )
            .await
            .unwrap();
        assert_eq!(selected, 5000);
    }

    for _ in 0..2 {
        let err = c
            .execute("INSERT INTO accounts VALUES ($1, $2, 0)", (1i32, "dup"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Query, "{err}");
        assert_eq!(err.code().map(|c| c.code()), Some("23505"), "{err}");
        assert_eq!(err.constraint(), Some("accounts_pkey"), "{err}");
        let info = err.db_error().unwrap();
        assert_eq!(info.severity, "ERROR");
        assert_eq!(info.table.as_deref(), Some("accounts"));
        assert!(
            info.detail.as_deref().unwrap().contains("(id)=(1)"),
            "{info:?}"
        );
        assert_eq!(
            err.statement(),
            Some("INSERT INTO accounts VALUES ($1, $2, 0)")
        );
        assert!(!err.is_transient());
    }
    let err = c
        .execute("UPDATE accounts SET balance = balance / $1", (0i32,))
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22012"), "{err}");

    // The connection is as good as before: same rows, same backend.
    let rows: Vec<(i32, Option<String>, rust_decimal::Decimal)> = c
        .fetch_all("SELECT id, owner, balance FROM accounts ORDER BY id", ())
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (1, Some("owner 1".into()), 7.into()),
            (2, None, 0.into()),
            (3, Some("bob".into()), 0.into()),
        ]
    );
    drop(c);
    m.close().await;
}

#[tokio::test]
async fn a_session_sent_by_its_holder_commits_and_rolls_back_whole() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    m.execute("CREATE TABLE ledger (n int PRIMARY KEY)", ())
        .await
        .unwrap();
    let mut s = m.session().await.unwrap();
    for n in 0..100 {
        assert_eq!(
            s.execute("INSERT INTO ledger VALUES ($1)", (n,))
                .await
                .unwrap(),
            1
        );
    }
    s.commit().await.unwrap();

    let mut s = m.session().await.unwrap();
    for n in 100..150 {
        s.execute("INSERT INTO ledger VALUES ($1)", (n,))
            .await
            .unwrap();
    }
    // A failure aborts the transaction, as the server says; nothing of it stays.
    let err = s
        .execute("INSERT INTO ledger VALUES ($1)", (5,))
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23505"), "{err}");
    let err = s
        .execute("INSERT INTO ledger VALUES ($1)", (1000,))
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("25P02"), "{err}");
    drop(s);

    let count: i64 = m.scalar("SELECT count(*) FROM ledger", ()).await.unwrap();
    assert_eq!(count, 100);
    m.close().await;
}

#[tokio::test]
async fn a_statement_its_holder_stopped_waiting_for_is_read_to_its_end_before_the_next_one() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let mut c = m.get_connection().await.unwrap();
    let pid: i32 = c.scalar("SELECT pg_backend_pid()", ()).await.unwrap();
    // Prepared, so the holder sends it itself.
    c.execute("SELECT pg_sleep($1)", (0.0f64,)).await.unwrap();
    for i in 0..40i32 {
        let sleep = f64::from(i % 4) * 0.005;
        let waited = Duration::from_micros(fastrand::u64(0..15_000));
        let _ = tokio::time::timeout(waited, c.execute("SELECT pg_sleep($1)", (sleep,))).await;
        // The next statement gets its own answer, whichever path it takes.
        if i % 2 == 0 {
            let got: i32 = c.scalar("SELECT $1::int4", (i,)).await.unwrap();
            assert_eq!(got, i);
        } else {
            let n = c
                .execute("SELECT generate_series(1, $1)", (i,))
                .await
                .unwrap();
            assert_eq!(n, i as u64);
        }
    }
    // Still the same backend, idle and not in a transaction, as another connection sees it.
    let same: i32 = c.scalar("SELECT pg_backend_pid()", ()).await.unwrap();
    assert_eq!(same, pid);
    let mut other = m.get_connection().await.unwrap();
    let state: String = other
        .scalar("SELECT state FROM pg_stat_activity WHERE pid = $1", (pid,))
        .await
        .unwrap();
    assert_eq!(state, "idle");
    drop((c, other));
    m.close().await;
}

#[tokio::test]
async fn a_backend_ended_under_a_holders_statement_fails_it_as_lost_and_the_pool_drops_it() {
    let db = TestDatabase::with_config(|b| b.pool_size(2).max_overflow(0))
        .await
        .unwrap();
    let m = db.manager();
    let mut c = m.get_connection().await.unwrap();
    let pid: i32 = c.scalar("SELECT pg_backend_pid()", ()).await.unwrap();
    c.execute("SELECT pg_sleep($1)", (0.0f64,)).await.unwrap();
    let killer = {
        let m = m.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let done: bool = m
                .scalar("SELECT pg_terminate_backend($1, 5000)", (pid,))
                .await
                .unwrap();
            assert!(done);
        })
    };
    let err = c
        .execute("SELECT pg_sleep($1)", (10.0f64,))
        .await
        .unwrap_err();
    killer.await.unwrap();
    assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");
    assert_eq!(err.code().map(|c| c.code()), Some("57P01"), "{err}");
    assert!(err.is_transient());
    // The next statement on it fails fast as lost too, whichever path it takes.
    let again = c
        .execute("SELECT pg_sleep($1)", (0.0f64,))
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::ConnectionLost, "{again}");
    drop(c);
    // Closed rather than pooled: the next checkouts get another backend.
    for _ in 0..5 {
        let mut c = m.get_connection().await.unwrap();
        let other: i32 = c.scalar("SELECT pg_backend_pid()", ()).await.unwrap();
        assert_ne!(other, pid);
        c.execute("SELECT pg_sleep($1)", (0.0f64,)).await.unwrap();
    }
    m.close().await;
}

#[tokio::test]
async fn connections_whose_holders_sent_statements_themselves_notice_their_backends_end_in_the_pool(
) {
    let db = TestDatabase::with_config(|b| b.pool_size(4).max_overflow(0))
        .await
        .unwrap();
    let m = db.manager();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = m.get_connection().await.unwrap();
        for _ in 0..3 {
            c.execute("SELECT 1 WHERE $1", (true,)).await.unwrap();
        }
        held.push(c);
    }
    drop(held);
    // One of them runs the termination; the two others end.
    let mut admin = m.get_connection().await.unwrap();
    let killed: i64 = admin
        .scalar(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(killed, 2);
    drop(admin);
    // No checkout gets one of them: each statement runs, sent by its holder.
    for i in 0..300i32 {
        let mut c = m.get_connection().await.unwrap();
        let n = c
            .execute("SELECT 1 WHERE $1 >= 0", (i,))
            .await
            .unwrap_or_else(|e| panic!("checkout {i}: {e}"));
        assert_eq!(n, 1);
    }
    m.close().await;
}

#[derive(coredb::FromRow, Debug, PartialEq)]
struct Item {
    id: i64,
    label: Option<String>,
    price: rust_decimal::Decimal,
    tags: Vec<String>,
}

#[tokio::test]
async fn rows_a_holder_reads_itself_decode_as_the_drivers_do_with_the_same_errors() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let mut c = m.get_connection().await.unwrap();
    let select =
        "SELECT g::int8 AS id, CASE WHEN g % 3 = 0 THEN NULL ELSE 'item ' || g END AS label, \
                  (g * 1.5)::numeric AS price, ARRAY['t' || g, 'u'] AS tags \
                  FROM generate_series(1, $1) g ORDER BY g";
    for n in [0i32, 1, 7, 20_000] {
        // Twice: prepared the first time, read by the holder the second.
        for _ in 0..2 {
            let items: Vec<Item> = c.fetch_all(select, (n,)).await.unwrap();
            assert_eq!(items.len(), n as usize);
            for (i, item) in items.iter().enumerate() {
                let g = i as i64 + 1;
                assert_eq!(item.id, g);
                assert_eq!(
                    item.label,
                    (g % 3 != 0).then(|| format!("item {g}")),
                    "row {g}"
                );
                assert_eq!(item.price, rust_decimal::Decimal::new(g * 15, 1));
                assert_eq!(item.tags, vec![format!("t{g}"), "u".to_owned()]);
            }
        }
    }
    // Rows by name and position, kept apart from the result they came from.
    let rows = c.query(select, (4i32,)).await.unwrap();
    let kept = rows.into_iter().nth(2).unwrap();
    assert_eq!(kept.get::<i64>("id").unwrap(), 3);
    assert_eq!(kept.get::<Option<String>>(1).unwrap(), None);
    assert_eq!(
        kept.column_names().collect::<Vec<_>>(),
        ["id", "label", "price", "tags"]
    );
    assert_eq!(kept.column_type(2), Some("numeric"));
    // One row, one value, none.
    let one: Option<Item> = c.fetch_optional(select, (1i32,)).await.unwrap();
    assert_eq!(one.unwrap().id, 1);
    let none: Option<Item> = c.fetch_optional(select, (0i32,)).await.unwrap();
    assert!(none.is_none());
    let too_many = c
        .fetch_optional::<Item, _>(select, (2i32,))
        .await
        .unwrap_err();
    assert_eq!(too_many.kind(), ErrorKind::TooManyRows, "{too_many}");
    for _ in 0..2 {
        let sum: i64 = c
            .scalar(
                "SELECT sum(g)::int8 FROM generate_series(1, $1) g",
                (100i32,),
            )
            .await
            .unwrap();
        assert_eq!(sum, 5050);
    }

    // Decoding errors name the column and both types, as for the driver's rows.
    let row = c.query(select, (3i32,)).await.unwrap().pop().unwrap();
    let null = row.get::<String>("label").unwrap_err();
    assert_eq!(null.kind(), ErrorKind::Decode);
    assert!(null.message().contains("\"label\" is NULL"), "{null}");
    let wrong = row.get::<i32>("price").unwrap_err();
    assert!(
        wrong.message().contains("PostgreSQL type numeric") && wrong.message().contains("i32"),
        "{wrong}"
    );
    let missing = row.get::<i32>(9).unwrap_err();
    assert!(missing.message().contains("4 column(s)"), "{missing}");
    drop(c);
    m.close().await;
}

#[tokio::test]
async fn what_the_driver_queued_meanwhile_goes_out_before_the_holders_next_statements() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let mut c = m.get_connection().await.unwrap();
    let prepared = async |c: &mut coredb::Connection| -> Vec<String> {
        let rows: Vec<(String,)> = c
            .fetch_all(
                "SELECT statement FROM pg_prepared_statements WHERE statement LIKE 'SELECT 100 / %' ORDER BY 1",
                (),
            )
            .await
            .unwrap();
        rows.into_iter().map(|(s,)| s).collect()
    };
    for _ in 0..3 {
        let n: i32 = c.scalar("SELECT 100 / $1", (4i32,)).await.unwrap();
        assert_eq!(n, 25);
        assert_eq!(prepared(&mut c).await, ["SELECT 100 / $1"]);
        // Fails when sent by the holder: dropped from the cache, and its Close queued with the
        // driver while the holder goes on.
        let err = c
            .scalar::<i32, _>("SELECT 100 / $1", (0i32,))
            .await
            .unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some("22012"), "{err}");
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(prepared(&mut c).await);
        }
        assert!(
            seen[1..].iter().all(Vec::is_empty),
            "the Close went out behind at most one statement of the holder's: {seen:?}"
        );
    }
    drop(c);
    m.close().await;
}
