//! Sessions: commit, rollback, rollback on drop and on error, savepoints, options, closures.

use coredb::{params, Error, ErrorKind, Executor, IsolationLevel, SessionOptions, SqlState};
use coredb_testkit::TestDatabase;

async fn accounts() -> TestDatabase {
    let db = TestDatabase::new().await.unwrap();
    db.manager()
        .execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, owner varchar(8) UNIQUE NOT NULL, balance int NOT NULL)",
            (),
        )
        .await
        .unwrap();
    db
}

async fn count(db: &TestDatabase) -> i64 {
    db.manager()
        .scalar("SELECT count(*) FROM accounts", ())
        .await
        .unwrap()
}

#[tokio::test]
async fn committed_session_work_is_visible() {
    let db = accounts().await;
    let mut s = db.manager().session().await.unwrap();
    s.execute("INSERT INTO accounts VALUES (1, 'ada', 10)", ())
        .await
        .unwrap();
    let inside: i64 = s.scalar("SELECT count(*) FROM accounts", ()).await.unwrap();
    assert_eq!(inside, 1, "statements run at once inside the session");
    assert_eq!(count(&db).await, 0, "not visible before commit");
    s.commit().await.unwrap();
    assert_eq!(count(&db).await, 1);
}

#[tokio::test]
async fn dropped_session_is_rolled_back() {
    let db = accounts().await;
    {
        let mut s = db.manager().session().await.unwrap();
        s.execute("INSERT INTO accounts VALUES (1, 'ada', 10)", ())
            .await
            .unwrap();
    }
    assert_eq!(count(&db).await, 0);
}

#[tokio::test]
async fn explicit_rollback_discards_work() {
    let db = accounts().await;
    let mut s = db.manager().session().await.unwrap();
    s.execute("INSERT INTO accounts VALUES (1, 'ada', 10)", ())
        .await
        .unwrap();
    s.rollback().await.unwrap();
    assert_eq!(count(&db).await, 0);
}

#[tokio::test]
async fn failed_statement_rolls_back_the_whole_transaction_at_commit() {
    let db = accounts().await;
    let mut s = db.manager().session().await.unwrap();
    s.execute("INSERT INTO accounts VALUES (1, 'ada', 10)", ())
        .await
        .unwrap();
    let dup = s
        .execute("INSERT INTO accounts VALUES (2, 'ada', 5)", ())
        .await
        .unwrap_err();
    assert!(dup.is_unique_violation());
    assert!(s.is_aborted());
    let next = s.execute("SELECT 1", ()).await.unwrap_err();
    assert_eq!(next.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    let commit = s.commit().await.unwrap_err();
    assert_eq!(commit.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    assert!(commit.to_string().contains("rolled back"), "{commit}");
    assert_eq!(count(&db).await, 0, "the first insert is rolled back too");
}

#[tokio::test]
async fn transaction_closure_commits_on_ok() {
    let db = accounts().await;
    let balance: i32 = db
        .manager()
        .transaction(async |s| {
            s.execute(
                "INSERT INTO accounts VALUES (:id, :owner, :balance)",
                params! { "id" => 1, "owner" => "ada", "balance" => 10 },
            )
            .await?;
            s.scalar("SELECT balance FROM accounts WHERE id = 1", ())
                .await
        })
        .await
        .unwrap();
    assert_eq!(balance, 10);
    assert_eq!(count(&db).await, 1);
}

#[derive(Debug, PartialEq)]
enum AppError {
    Insufficient,
    Db(ErrorKind),
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::Db(e.kind())
    }
}

#[tokio::test]
async fn transaction_closure_rolls_back_on_err_and_returns_it_unchanged() {
    let db = accounts().await;
    let result: Result<(), AppError> = db
        .manager()
        .transaction(async |s| {
            s.execute("INSERT INTO accounts VALUES (1, 'ada', 10)", ())
                .await?;
            Err(AppError::Insufficient)
        })
        .await;
    assert_eq!(result, Err(AppError::Insufficient));
    assert_eq!(count(&db).await, 0);
}

#[tokio::test]
async fn savepoint_rollback_keeps_the_outer_work() {
    let db = accounts().await;
    let mut s = db.manager().session().await.unwrap();
    s.execute("INSERT INTO accounts VALUES (1, 'ada', 10)", ())
        .await
        .unwrap();
    let mut sp = s.begin_nested().await.unwrap();
    sp.execute("INSERT INTO accounts VALUES (2, 'bob', 10)", ())
        .await
        .unwrap();
    sp.rollback().await.unwrap();
    let mut kept = s.begin_nested().await.unwrap();
    kept.execute("INSERT INTO accounts VALUES (3, 'cy', 10)", ())
        .await
        .unwrap();
    kept.commit().await.unwrap();
    s.commit().await.unwrap();
    let ids: Vec<(i32,)> = db
        .manager()
        .fetch_all("SELECT id FROM accounts ORDER BY id", ())
        .await
        .unwrap();
    assert_eq!(ids, vec![(1,), (3,)]);
}

#[tokio::test]
async fn dropped_savepoint_rolls_back_to_it_before_the_next_statement() {
    let db = accounts().await;
    let mut s = db.manager().session().await.unwrap();
    s.execute("INSERT INTO accounts VALUES (1, 'ada', 10)", ())
        .await
        .unwrap();
    {
        let mut sp = s.begin_nested().await.unwrap();
        sp.execute("INSERT INTO accounts VALUES (2, 'bob', 10)", ())
            .await
            .unwrap();
        let mut inner = sp.begin_nested().await.unwrap();
        inner
            .execute("INSERT INTO accounts VALUES (3, 'cy', 10)", ())
            .await
            .unwrap();
    }
    let n: i64 = s.scalar("SELECT count(*) FROM accounts", ()).await.unwrap();
    assert_eq!(n, 1);
    s.commit().await.unwrap();
    assert_eq!(count(&db).await, 1);
}

#[tokio::test]
async fn error_inside_savepoint_can_be_rolled_back_and_the_transaction_committed() {
    let db = accounts().await;
    let mut s = db.manager().session().await.unwrap();
    s.execute("INSERT INTO accounts VALUES (1, 'ada', 10)", ())
        .await
        .unwrap();
    let mut sp = s.begin_nested().await.unwrap();
    let err = sp
        .execute("INSERT INTO accounts VALUES (1, 'dup', 10)", ())
        .await
        .unwrap_err();
    assert!(err.is_unique_violation());
    let release = sp.commit().await.unwrap_err();
    assert_eq!(release.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    assert!(!s.is_aborted(), "the failure was confined to the savepoint");
    s.execute("INSERT INTO accounts VALUES (2, 'bob', 10)", ())
        .await
        .unwrap();
    s.commit().await.unwrap();
    assert_eq!(count(&db).await, 2);
}

#[tokio::test]
async fn session_options_set_isolation_and_read_only() {
    let db = accounts().await;
    let mut s = db
        .manager()
        .session_with(SessionOptions {
            isolation: Some(IsolationLevel::Serializable),
            read_only: true,
            deferrable: false,
            timeout: None,
        })
        .await
        .unwrap();
    let level: String = s.scalar("SHOW transaction_isolation", ()).await.unwrap();
    assert_eq!(level, "serializable");
    let err = s
        .execute("INSERT INTO accounts VALUES (1, 'ada', 10)", ())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION));
}

#[tokio::test]
async fn core_db_style_session_returns_scalar_and_commits() {
    let db = accounts().await;
    let mut session = db.manager().session().await.unwrap();
    let one: i32 = session.scalar("SELECT 1", ()).await.unwrap();
    session.commit().await.unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn a_savepoint_commit_cut_off_is_never_committed_half_done() {
    use futures_util::FutureExt;

    let db = accounts().await;
    let mut session = db.manager().session().await.unwrap();
    session
        .execute("INSERT INTO accounts VALUES (1, 'ada', 10)", ())
        .await
        .unwrap();
    let mut savepoint = session.begin_nested().await.unwrap();
    savepoint
        .execute("INSERT INTO accounts VALUES (2, 'bob', 20)", ())
        .await
        .unwrap();
    // One poll sends RELEASE; dropping the future abandons the reply.
    assert!(savepoint.commit().now_or_never().is_none());

    // The savepoint is rolled back before the next statement; its RELEASE already ran, so that
    // fails and the session is aborted rather than going on with work of unknown state.
    let err = session
        .scalar::<i64, _>("SELECT count(*) FROM accounts", ())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::S_E_INVALID_SPECIFICATION),
        "{err}"
    );
    assert!(session.is_aborted());
    let commit = session.commit().await.unwrap_err();
    assert_eq!(commit.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    assert_eq!(count(&db).await, 0);
}
