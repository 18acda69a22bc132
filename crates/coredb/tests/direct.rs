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

/// `n` rows of (id, label) for `copy_in_rows`, built as they are sent.
fn numbered(
    ids: &[i64],
    labels: &[String],
) -> impl Iterator<Item = Vec<coredb::SqlParam<'static>>> + Send + 'static {
    let ids: &'static [i64] = Box::leak(ids.to_vec().into_boxed_slice());
    let labels: &'static [String] = Box::leak(labels.to_vec().into_boxed_slice());
    ids.iter()
        .zip(labels)
        .map(|(id, label)| vec![id as coredb::SqlParam, label])
}

#[tokio::test]
async fn a_copy_whose_every_row_makes_the_server_send_a_notice_neither_side_stalls() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let mut c = m.get_connection().await.unwrap();
    c.execute_script(
        "CREATE TABLE noisy (id int8 PRIMARY KEY, label text);
         CREATE FUNCTION say() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE NOTICE 'row % arrived, with a notice long enough to fill buffers: %',
             NEW.id, repeat('n', 200); RETURN NEW; END $$;
         CREATE TRIGGER say BEFORE INSERT ON noisy FOR EACH ROW EXECUTE FUNCTION say();",
    )
    .await
    .unwrap();
    // 300,000 notices of about 280 bytes: far more than the sockets' buffers hold, so the
    // server waits for them to be read while the rows are still being sent.
    let ids: Vec<i64> = (0..300_000).collect();
    let labels: Vec<String> = ids.iter().map(|i| format!("label {i}")).collect();
    let copied = tokio::time::timeout(
        Duration::from_secs(60),
        c.copy_in_rows("noisy", &["id", "label"], numbered(&ids, &labels)),
    )
    .await
    .expect("the COPY finished")
    .unwrap();
    assert_eq!(copied, 300_000);
    let (count, last): (i64, String) = c
        .fetch_one("SELECT count(*), max(label) FROM noisy", ())
        .await
        .unwrap();
    assert_eq!((count, last.as_str()), (300_000, "label 99999"));
    drop(c);
    m.close().await;
}

#[tokio::test]
async fn a_copy_with_a_value_that_does_not_encode_keeps_none_of_its_rows_and_says_which() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let mut c = m.get_connection().await.unwrap();
    c.execute("CREATE TABLE kept (id int8 PRIMARY KEY, label text)", ())
        .await
        .unwrap();
    let ids: Vec<i64> = (0..100_000).collect();
    let labels: Vec<String> = ids.iter().map(|i| format!("label {i}")).collect();
    let rows = numbered(&ids, &labels).enumerate().map(|(i, row)| match i {
        // Row 60,000 has text where the id's int8 goes.
        59_999 => vec![row[1], row[1]],
        _ => row,
    });
    let err = c
        .copy_in_rows("kept", &["id", "label"], rows)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Params, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("value 1 of row 60000") && text.contains("int8"),
        "{text}"
    );
    // Nothing kept, and the connection goes on, in autocommit and in a session.
    let count: i64 = c.scalar("SELECT count(*) FROM kept", ()).await.unwrap();
    assert_eq!(count, 0);
    let none = c
        .copy_in_rows("kept", &["id", "label"], numbered(&[], &[]))
        .await
        .unwrap();
    assert_eq!(none, 0, "a COPY of no rows");
    let mut s = m.session().await.unwrap();
    let short = s
        .copy_in_rows(
            "kept",
            &["id", "label"],
            numbered(&ids[..10], &labels[..10]).chain([vec![&1i64 as coredb::SqlParam]]),
        )
        .await
        .unwrap_err();
    assert_eq!(short.kind(), ErrorKind::Params, "{short}");
    assert!(
        short.to_string().contains("row 11 has 1 value(s)"),
        "{short}"
    );
    // Like any failed statement, it aborted the session's transaction.
    let aborted = s.execute("SELECT 1", ()).await.unwrap_err();
    assert_eq!(aborted.code().map(|c| c.code()), Some("25P02"), "{aborted}");
    s.rollback().await.unwrap();
    let mut s = m.session().await.unwrap();
    let copied = s
        .copy_in_rows("kept", &["id", "label"], numbered(&ids, &labels))
        .await
        .unwrap();
    assert_eq!(copied, 100_000);
    s.commit().await.unwrap();
    let count: i64 = c.scalar("SELECT count(*) FROM kept", ()).await.unwrap();
    assert_eq!(count, 100_000);
    drop(c);
    m.close().await;
}

#[tokio::test]
async fn a_copy_dropped_half_way_is_abandoned_and_its_backend_freed() {
    let db = TestDatabase::with_config(|b| b.pool_size(2).max_overflow(0))
        .await
        .unwrap();
    let m = db.manager();
    let mut c = m.get_connection().await.unwrap();
    c.execute("CREATE TABLE dropped (id int8 PRIMARY KEY, label text)", ())
        .await
        .unwrap();
    let pid: i32 = c.scalar("SELECT pg_backend_pid()", ()).await.unwrap();
    let ids: Vec<i64> = (0..3_000_000).collect();
    let labels: Vec<String> = ids.iter().map(|i| format!("label {i}")).collect();
    let copy = c.copy_in_rows("dropped", &["id", "label"], numbered(&ids, &labels));
    tokio::time::timeout(Duration::from_millis(300), copy)
        .await
        .expect_err("3,000,000 rows take longer than that");
    drop(c);
    // The server was told the COPY failed: its backend leaves the COPY and the connection is
    // closed, not pooled; nothing was kept.
    let mut other = m.get_connection().await.unwrap();
    let mut gone = false;
    for _ in 0..100 {
        let left: i64 = other
            .scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                (pid,),
            )
            .await
            .unwrap();
        if left == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the abandoned COPY's backend ended");
    let count: i64 = other
        .scalar("SELECT count(*) FROM dropped", ())
        .await
        .unwrap();
    assert_eq!(count, 0);
    let copied = other
        .copy_in_rows(
            "dropped",
            &["id", "label"],
            numbered(&ids[..1000], &labels[..1000]),
        )
        .await
        .unwrap();
    assert_eq!(copied, 1000);
    drop(other);
    m.close().await;
}

#[tokio::test]
async fn a_stream_its_holder_reads_itself_gives_every_row_then_the_servers_error_and_can_be_dropped(
) {
    use futures_util::TryStreamExt as _;
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let mut c = m.get_connection().await.unwrap();
    let select = "SELECT g::int8, repeat('x', 100) || g FROM generate_series(1, $1::int8) g";
    // Prepared and run once by the driver; read by the holder from then on.
    let first: Vec<(i64, String)> = c.fetch_all(select, (3i64,)).await.unwrap();
    assert_eq!(first.len(), 3);
    for _ in 0..2 {
        let rows: Vec<(i64, String)> = c
            .stream::<(i64, String), _>(select, (200_000i64,))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(rows.len(), 200_000);
        assert!(rows
            .iter()
            .enumerate()
            .all(|(i, (n, s))| *n == i as i64 + 1 && s.ends_with(&n.to_string())));
    }
    // The server's error comes after the rows before it.
    let failing = "SELECT 1000000 / (g - $1::int8) FROM generate_series(1, 200000) g";
    let _: Vec<(i64,)> = c.fetch_all(failing, (-1i64,)).await.unwrap();
    let mut rows = c.stream::<(i64,), _>(failing, (150_000i64,)).await.unwrap();
    let mut read = 0;
    let err = loop {
        match rows.try_next().await {
            Ok(Some(_)) => read += 1,
            Ok(None) => panic!("no error after {read} rows"),
            Err(err) => break err,
        }
    };
    assert_eq!(read, 149_999);
    assert_eq!(
        err.code(),
        Some(&coredb::SqlState::DIVISION_BY_ZERO),
        "{err}"
    );
    assert!(
        rows.try_next().await.unwrap().is_none(),
        "nothing after the error"
    );
    drop(rows);
    // Dropped half-way: the rest of the answer is read and dropped before the next statement's.
    for _ in 0..3 {
        let mut rows = c
            .stream::<(i64, String), _>(select, (200_000i64,))
            .await
            .unwrap();
        for i in 1..=10 {
            let (n, _) = rows.try_next().await.unwrap().unwrap();
            assert_eq!(n, i);
        }
        drop(rows);
        let got: i64 = c.scalar("SELECT $1::int8", (7i64,)).await.unwrap();
        assert_eq!(got, 7);
    }
    drop(c);
    // In a session: the same, and the transaction goes on.
    let mut s = m.session().await.unwrap();
    let _: Vec<(i64, String)> = s.fetch_all(select, (1i64,)).await.unwrap();
    let mut rows = s
        .stream::<(i64, String), _>(select, (100_000i64,))
        .await
        .unwrap();
    let (n, _) = rows.try_next().await.unwrap().unwrap();
    assert_eq!(n, 1);
    drop(rows);
    let counted: i64 = s
        .scalar("SELECT count(*) FROM generate_series(1, $1::int8)", (5i64,))
        .await
        .unwrap();
    assert_eq!(counted, 5);
    s.commit().await.unwrap();
    m.close().await;
}

#[tokio::test]
async fn a_stream_whose_cached_plan_went_stale_fails_once_and_the_next_one_prepares_it_again() {
    use futures_util::TryStreamExt as _;
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let mut c = m.get_connection().await.unwrap();
    c.execute_script("CREATE TABLE shifting (a int); INSERT INTO shifting VALUES (1), (2);")
        .await
        .unwrap();
    let select = "SELECT * FROM shifting WHERE a > $1";
    let _ = c.fetch_all::<(i32,), _>(select, (0i32,)).await.unwrap();
    let rows: Vec<(i32,)> = c
        .stream::<(i32,), _>(select, (0i32,))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows, [(1,), (2,)]);
    // The table's columns change under the cached statement.
    c.execute("ALTER TABLE shifting ADD COLUMN b text DEFAULT 'b'", ())
        .await
        .unwrap();
    let stale: coredb::Result<Vec<(i32, String)>> = async {
        c.stream::<(i32, String), _>(select, (0i32,))
            .await?
            .try_collect()
            .await
    }
    .await;
    let err = stale.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"), "{err}");
    let rows: Vec<(i32, String)> = c
        .stream::<(i32, String), _>(select, (0i32,))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows, [(1, "b".to_owned()), (2, "b".to_owned())]);
    drop(c);
    m.close().await;
}

#[tokio::test]
async fn a_copy_of_bytes_that_arrive_slowly_is_sent_as_they_come_and_kept_whole() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let mut c = m.get_connection().await.unwrap();
    c.execute("CREATE TABLE trickle (n int8, label text)", ())
        .await
        .unwrap();
    // 20,000 lines in chunks of 1 to 500 lines, with a pause before every tenth chunk: the
    // holder waits for the caller's data between parts of the COPY.
    let chunks = futures_util::stream::unfold((0i64, 0u32), |(next, k)| async move {
        if next >= 20_000 {
            return None;
        }
        if k % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let size = 1 + (next * 7919) % 500;
        let end = (next + size).min(20_000);
        let text: String = (next..end).map(|n| format!("{n}\tline {n}\n")).collect();
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from(text)),
            (end, k + 1),
        ))
    });
    let copied = c
        .copy_in_bytes("COPY trickle (n, label) FROM STDIN", chunks)
        .await
        .unwrap();
    assert_eq!(copied, 20_000);
    let (count, sum): (i64, rust_decimal::Decimal) = c
        .fetch_one("SELECT count(*), sum(n) FROM trickle", ())
        .await
        .unwrap();
    assert_eq!(count, 20_000);
    assert_eq!(sum, rust_decimal::Decimal::from(199_990_000i64));
    drop(c);
    m.close().await;
}

#[tokio::test]
async fn a_copy_out_its_holder_reads_itself_gives_each_line_then_the_servers_error_and_can_be_dropped(
) {
    use futures_util::TryStreamExt as _;
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let mut c = m.get_connection().await.unwrap();
    let whole = "COPY (SELECT g, 'line ' || g FROM generate_series(1, 50000) g) TO STDOUT";
    let lines: Vec<bytes::Bytes> = c
        .copy_out(whole)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(lines.len(), 50_000, "a chunk per line");
    assert_eq!(&lines[0][..], b"1\tline 1\n");
    assert_eq!(&lines[49_999][..], b"50000\tline 50000\n");
    // The server's error comes after the lines before it.
    let failing = "COPY (SELECT 100000 / (g - 30000) FROM generate_series(1, 50000) g) TO STDOUT";
    let mut data = c.copy_out(failing).await.unwrap();
    let mut read = 0;
    let err = loop {
        match data.try_next().await {
            Ok(Some(_)) => read += 1,
            Ok(None) => panic!("no error after {read} lines"),
            Err(err) => break err,
        }
    };
    assert_eq!(read, 29_999);
    assert_eq!(
        err.code(),
        Some(&coredb::SqlState::DIVISION_BY_ZERO),
        "{err}"
    );
    drop(data);
    // A COPY of a table that is not there fails; the connection goes on.
    let missing: coredb::Result<Vec<bytes::Bytes>> = async {
        c.copy_out("COPY nowhere TO STDOUT")
            .await?
            .try_collect()
            .await
    }
    .await;
    assert_eq!(missing.unwrap_err().code().map(|c| c.code()), Some("42P01"));
    // Dropped half-way: the rest is read and dropped before the next statement's answer.
    let mut data = c.copy_out(whole).await.unwrap();
    assert_eq!(&data.try_next().await.unwrap().unwrap()[..], b"1\tline 1\n");
    drop(data);
    let got: i64 = c.scalar("SELECT $1::int8", (9i64,)).await.unwrap();
    assert_eq!(got, 9);
    drop(c);
    m.close().await;
}
