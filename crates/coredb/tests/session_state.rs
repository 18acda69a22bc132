//! Nothing left behind: a statement that changes the session (a setting, the role, a lock, a
//! temporary table), however it is dressed up, never reaches the next user of a connection.

use coredb::{DatabaseManager, Executor};
use coredb_testkit::TestDatabase;

const POOL: usize = 4;

/// What a connection carries of its session, as seen from that connection.
#[derive(Debug, PartialEq, Eq, coredb::FromRow)]
struct Carried {
    search_path: String,
    role_is_own: bool,
    advisory_locks: i64,
    temp_tables: i64,
}

const CARRIED: &str = "SELECT current_setting('search_path') AS search_path, \
    current_user = session_user AS role_is_own, \
    (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory_locks, \
    (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) AS temp_tables";

fn clean() -> Carried {
    Carried {
        search_path: "\"$user\", public".to_owned(),
        role_is_own: true,
        advisory_locks: 0,
        temp_tables: 0,
    }
}

/// `sql`'s row as 200 statements from 20 other tasks, through the shared pipeline, and one on
/// every pooled connection checked out at once see it.
async fn seen_everywhere<T: coredb::FromRow + Send + 'static>(
    m: &DatabaseManager,
    sql: &'static str,
) -> Vec<T> {
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..10 {
                seen.push(m.fetch_one::<T, _>(sql, ()).await.unwrap());
            }
            seen
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.extend(task.await.unwrap());
    }
    let mut held = Vec::new();
    for _ in 0..POOL {
        held.push(m.get_connection().await.unwrap());
    }
    for conn in &mut held {
        seen.push(conn.fetch_one(sql, ()).await.unwrap());
    }
    seen
}

/// None of the statements of [`seen_everywhere`] may see the leaked state.
async fn nobody_else_sees_it(m: &DatabaseManager, after: &str) {
    for seen in seen_everywhere::<Carried>(m, CARRIED).await {
        assert_eq!(seen, clean(), "after {after:?}");
    }
}

#[tokio::test]
async fn statements_that_change_the_session_leave_nothing_to_the_next_user() {
    let db = TestDatabase::with_config(|b| b.pool_size(POOL).max_overflow(0))
        .await
        .unwrap();
    let m = db.manager();
    m.execute("CREATE SCHEMA leak_schema", ()).await.unwrap();
    m.execute("CREATE ROLE leak_role", ()).await.unwrap();
    m.execute("GRANT leak_role TO CURRENT_USER", ())
        .await
        .unwrap();
    nobody_else_sees_it(m, "nothing").await;

    for leaking in [
        "/* tag */ SET search_path = leak_schema",
        "-- note\nSET ROLE leak_role",
        "(SELECT pg_advisory_lock(1))",
        "SELECT 1 AS x INTO TEMP leak_table",
        "select set_config('search_path', 'leak_schema', false)",
        "SELECT 1; SET search_path = leak_schema",
    ] {
        // Through the manager (autocommit, where statements may share connections)...
        if leaking.contains("; ") {
            // Several statements go through a checked-out connection's script runner.
            m.get_connection()
                .await
                .unwrap()
                .execute_script(leaking)
                .await
                .unwrap();
        } else {
            m.execute(leaking, ()).await.unwrap();
        }
        nobody_else_sees_it(m, leaking).await;

        // ...and on a checked-out connection handed back.
        let mut conn = m.get_connection().await.unwrap();
        conn.execute_script(leaking).await.unwrap();
        drop(conn);
        nobody_else_sees_it(m, leaking).await;
    }
    // Connections that carried state were reset, not replaced: no new connection was opened
    // beyond the pool's own (a close-and-reopen would have opened one per leaking statement).
    let metrics = m.metrics();
    assert!(
        metrics.created <= POOL as u64 && metrics.closed() == 0,
        "{metrics:?}"
    );
}

#[tokio::test]
async fn a_session_level_advisory_lock_taken_in_a_session_does_not_outlive_it() {
    let db = TestDatabase::with_config(|b| b.pool_size(2).max_overflow(0))
        .await
        .unwrap();
    let m = db.manager();
    for end in ["commit", "rollback"] {
        let mut session = m.session().await.unwrap();
        session
            .execute("SELECT pg_advisory_lock(42)", ())
            .await
            .unwrap();
        match end {
            "commit" => session.commit().await.unwrap(),
            _ => session.rollback().await.unwrap(),
        }
        let mut held = vec![
            m.get_connection().await.unwrap(),
            m.get_connection().await.unwrap(),
        ];
        for conn in &mut held {
            let locks: i64 = conn
                .scalar(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
                    (),
                )
                .await
                .unwrap();
            assert_eq!(locks, 0, "after {end}");
        }
    }
}

/// The time zones that the statements of [`seen_everywhere`] see.
async fn time_zones_seen(m: &DatabaseManager) -> std::collections::BTreeSet<String> {
    seen_everywhere::<(String,)>(m, "SHOW TimeZone")
        .await
        .into_iter()
        .map(|(zone,)| zone)
        .collect()
}

/// A database with `far_away()`, a function that changes the session's time zone: its call
/// reads as a plain, shareable SELECT. With the time zones seen before it is called.
async fn with_far_away() -> (TestDatabase, std::collections::BTreeSet<String>) {
    let db = TestDatabase::with_config(|b| b.pool_size(POOL).max_overflow(0))
        .await
        .unwrap();
    db.manager()
        .get_connection()
        .await
        .unwrap()
        .execute_script(
            "CREATE FUNCTION far_away() RETURNS int LANGUAGE plpgsql AS $$ \
             BEGIN PERFORM set_config('TimeZone', 'Pacific/Kiritimati', false); RETURN 1; END $$",
        )
        .await
        .unwrap();
    let default = time_zones_seen(db.manager()).await;
    assert_eq!(default.len(), 1, "{default:?}");
    assert!(!default.contains("Pacific/Kiritimati"));
    (db, default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_changed_on_a_shared_connection_where_the_text_cannot_show_it_is_caught_by_the_servers_report(
) {
    let (db, default) = with_far_away().await;
    let m = db.manager();

    // Through the shared pipeline: the lane that ran it is closed, not shared further.
    let one: i32 = m.scalar("SELECT far_away()", ()).await.unwrap();
    assert_eq!(one, 1);
    assert_eq!(time_zones_seen(m).await, default, "after the pipeline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_changed_on_a_connection_of_ones_own_where_the_text_cannot_show_it_is_reset_before_the_next_user(
) {
    let (db, default) = with_far_away().await;
    let m = db.manager();
    let backends = |m: &DatabaseManager| {
        let m = m.clone();
        async move {
            let mut held = Vec::new();
            for _ in 0..POOL {
                held.push(m.get_connection().await.unwrap());
            }
            let mut pids = std::collections::BTreeSet::new();
            for conn in &mut held {
                pids.insert(
                    conn.scalar::<i32, _>("SELECT pg_backend_pid()", ())
                        .await
                        .unwrap(),
                );
            }
            pids
        }
    };
    let before = backends(m).await;

    // On a checked-out connection: its classifier sees a plain SELECT.
    let mut conn = m.get_connection().await.unwrap();
    let one: i32 = conn.scalar("SELECT far_away()", ()).await.unwrap();
    assert_eq!(one, 1);
    let zone: String = conn.scalar("SHOW TimeZone", ()).await.unwrap();
    assert_eq!(
        zone, "Pacific/Kiritimati",
        "the change holds while it is held"
    );
    drop(conn);
    assert_eq!(
        time_zones_seen(m).await,
        default,
        "after a connection of one's own"
    );

    // In a session, committed and rolled back (a session-level change outlives both).
    for commit in [true, false] {
        let mut session = m.session().await.unwrap();
        let one: i32 = session.scalar("SELECT far_away()", ()).await.unwrap();
        assert_eq!(one, 1);
        if commit {
            session.commit().await.unwrap();
        } else {
            session.rollback().await.unwrap();
        }
        assert_eq!(
            time_zones_seen(m).await,
            default,
            "after a session (commit: {commit})"
        );
    }

    // Reset, not replaced: the same backends serve on.
    assert_eq!(backends(m).await, before);
}
