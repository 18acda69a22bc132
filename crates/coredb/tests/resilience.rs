//! Fault injection: server restarts and crashes, killed connections, cancellation storms, a
//! silent network, pool exhaustion and a full server, each asserting what callers see and that
//! nothing committed is lost. Every scenario runs on an embedded server of its own.
//!
//! Each scenario prints one `RELIABILITY` line with its figures (see docs/reliability.md).

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coredb::{
    DatabaseConfig, DatabaseConfigBuilder, DatabaseManager, Error, ErrorKind, Executor,
    IsolationLevel, RetryPolicy, SessionOptions,
};
use coredb_embedded::{EmbeddedServer, EmbeddedServerBuilder};
use support::proxy::{Mode, Proxy};

/// Starts a server of the scenario's own; commits are flushed so that a crash of the server
/// process loses nothing acknowledged (the embedded default trades that for speed).
async fn start(builder: EmbeddedServerBuilder) -> Arc<EmbeddedServer> {
    let builder = builder.setting("synchronous_commit", "on");
    Arc::new(
        tokio::task::spawn_blocking(move || builder.start())
            .await
            .unwrap()
            .expect("embedded server starts"),
    )
}

/// Runs a blocking server operation (stop, kill, restart) off the runtime.
async fn on_server(
    server: &Arc<EmbeddedServer>,
    op: fn(&EmbeddedServer) -> Result<(), coredb_embedded::EmbeddedError>,
) {
    let server = server.clone();
    tokio::task::spawn_blocking(move || op(&server))
        .await
        .unwrap()
        .expect("server operation");
}

fn config(
    port: u16,
    user: &str,
    adjust: impl FnOnce(DatabaseConfigBuilder) -> DatabaseConfigBuilder,
) -> DatabaseConfig {
    let base = DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .dbname("postgres")
        .ssl_mode(coredb::SslMode::Disable)
        .connect_timeout(Duration::from_secs(2))
        .pool_timeout(Duration::from_secs(5));
    adjust(base).build().unwrap()
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 5 s");
}

fn report(scenario: &str, runs: u64, caller_errors: u64, lost: u64, recover: Option<Duration>) {
    println!(
        "RELIABILITY | {scenario} | runs {runs} | caller errors {caller_errors} | data lost {lost} | recovery {} |",
        recover.map_or("-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
    );
}

/// 32 tasks commit transactions while the server goes down; returns (commits, errors).
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    committed: Arc<Mutex<HashSet<(i32, i32)>>>,
    errors: Arc<Mutex<Vec<(Instant, Error)>>>,
    attempts: Arc<AtomicU64>,
}

impl Load {
    fn start(m: &DatabaseManager) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let committed: Arc<Mutex<HashSet<(i32, i32)>>> = Arc::default();
        let errors: Arc<Mutex<Vec<(Instant, Error)>>> = Arc::default();
        let attempts = Arc::new(AtomicU64::new(0));
        let tasks = (0..32)
            .map(|task| {
                let (m, stop, committed, errors, attempts) = (
                    m.clone(),
                    stop.clone(),
                    committed.clone(),
                    errors.clone(),
                    attempts.clone(),
                );
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Acquire) {
                        n += 1;
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let outcome = m
                            .transaction(async |s| {
                                s.execute("INSERT INTO work (task, n) VALUES ($1, $2)", (task, n))
                                    .await
                            })
                            .await;
                        match outcome {
                            Ok(_) => {
                                committed.lock().unwrap().insert((task, n));
                            }
                            Err(e) => {
                                errors.lock().unwrap().push((Instant::now(), e));
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            tasks,
            committed,
            errors,
            attempts,
        }
    }

    async fn finish(self) -> (HashSet<(i32, i32)>, Vec<(Instant, Error)>, u64) {
        self.stop.store(true, Ordering::Release);
        for t in self.tasks {
            t.await.unwrap();
        }
        let committed = self.committed.lock().unwrap().clone();
        let errors = std::mem::take(&mut *self.errors.lock().unwrap());
        (committed, errors, self.attempts.load(Ordering::Relaxed))
    }
}

async fn restart_under_load(crash: bool) {
    let server = start(EmbeddedServer::builder()).await;
    let m = DatabaseManager::from_config(&config(server.port(), "postgres", |b| {
        b.pool_size(8).max_overflow(8)
    }))
    .unwrap();
    m.execute(
        "CREATE TABLE work (task int, n int, PRIMARY KEY (task, n))",
        (),
    )
    .await
    .unwrap();
    let load = Load::start(&m);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let down = Instant::now();
    if crash {
        on_server(&server, EmbeddedServer::kill).await;
        on_server(&server, EmbeddedServer::start_again).await;
    } else {
        on_server(&server, EmbeddedServer::restart).await;
    }
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (committed, errors, attempts) = load.finish().await;

    for (at, e) in &errors {
        // A COMMIT cut off by the restart may or may not have committed: that caller is told
        // so (and must not blindly run it again); every other error is transient.
        assert!(
            e.is_transient() || e.kind() == coredb::ErrorKind::CommitOutcomeUnknown,
            "callers see transient errors or an unknown commit outcome only: {e}"
        );
        assert!(
            *at < back + Duration::from_secs(2),
            "error {:.2?} after the server was back: {e}",
            at.duration_since(back)
        );
    }
    let recovered = errors
        .iter()
        .map(|(at, _)| *at)
        .max()
        .map_or(Duration::ZERO, |last| last.saturating_duration_since(back));
    let stored: HashSet<(i32, i32)> = m
        .fetch_all::<(i32, i32), _>("SELECT task, n FROM work", ())
        .await
        .unwrap()
        .into_iter()
        .collect();
    let lost = committed.difference(&stored).count() as u64;
    assert_eq!(lost, 0, "every committed transaction survived");
    eventually("the pool to settle", async || {
        let s = m.status();
        s.in_use == 0 && s.waiting == 0 && s.size <= s.max
    })
    .await;
    let name = if crash {
        "kill -9 of the postmaster under 32 writers"
    } else {
        "fast restart under 32 writers"
    };
    report(name, attempts, errors.len() as u64, lost, Some(recovered));
    println!("  outage {:.2?}", back.duration_since(down));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_restart_under_load_loses_nothing_and_recovers() {
    restart_under_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postmaster_crash_under_load_loses_nothing_and_recovers() {
    restart_under_load(true).await;
}

#[tokio::test]
async fn terminated_idle_connections_are_invisible_to_the_next_thousand_checkouts() {
    let server = start(EmbeddedServer::builder()).await;
    let m = DatabaseManager::from_config(&config(server.port(), "postgres", |b| b.pool_size(5)))
        .unwrap();
    let held: Vec<_> = hold_connections(&m, 5).await;
    drop(held);
    let admin = DatabaseManager::from_config(&config(server.port(), "postgres", |b| b)).unwrap();
    let killed: i64 = admin
        .scalar(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE application_name = 'coredb' AND pid <> pg_backend_pid() AND state = 'idle'",
            (),
        )
        .await
        .unwrap();
    assert!(killed >= 5, "{killed}");
    let started = Instant::now();
    for i in 0..1000i64 {
        let mut c = m.get_connection().await.unwrap();
        let got: i64 = c.scalar("SELECT $1::int8", (i,)).await.unwrap();
        assert_eq!(got, i);
    }
    report(
        "every idle connection terminated, then 1,000 checkouts",
        1000,
        0,
        0,
        Some(started.elapsed()),
    );
}

async fn hold_connections(m: &DatabaseManager, n: usize) -> Vec<coredb::Connection> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut c = m.get_connection().await.unwrap();
        let _: i32 = c.scalar("SELECT 1", ()).await.unwrap();
        held.push(c);
    }
    held
}

#[tokio::test]
async fn connection_killed_mid_transaction_gives_a_transient_error_and_retry_commits_once() {
    let server = start(EmbeddedServer::builder()).await;
    let m = DatabaseManager::from_config(&config(server.port(), "postgres", |b| b)).unwrap();
    let admin = DatabaseManager::from_config(&config(server.port(), "postgres", |b| {
        b.application_name("admin")
    }))
    .unwrap();
    m.execute("CREATE TABLE paid (id int PRIMARY KEY)", ())
        .await
        .unwrap();

    let mut s = m.session().await.unwrap();
    s.execute("INSERT INTO paid VALUES (1)", ()).await.unwrap();
    let pid: i32 = s.scalar("SELECT pg_backend_pid()", ()).await.unwrap();
    let _: bool = admin
        .scalar("SELECT pg_terminate_backend($1, 5000)", (pid,))
        .await
        .unwrap();
    let err = s
        .execute("INSERT INTO paid VALUES (2)", ())
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");
    drop(s);
    assert_eq!(m.status().size, 0, "the dead connection was discarded");

    let attempts = AtomicU64::new(0);
    m.transaction_with_retry(
        SessionOptions::default(),
        &RetryPolicy::default(),
        async |s| {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            s.execute("INSERT INTO paid VALUES (3)", ()).await?;
            if n == 0 {
                let pid: i32 = s.scalar("SELECT pg_backend_pid()", ()).await?;
                let _: bool = admin
                    .scalar("SELECT pg_terminate_backend($1, 5000)", (pid,))
                    .await?;
            }
            Ok::<_, Error>(())
        },
    )
    .await
    .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let rows: Vec<(i32,)> = m.fetch_all("SELECT id FROM paid", ()).await.unwrap();
    assert_eq!(
        rows,
        vec![(3,)],
        "committed exactly once; the killed transaction left nothing"
    );
    report("in-use connection killed mid-transaction", 2, 1, 0, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_storm_leaves_no_open_transaction_no_busy_slot_and_no_crossed_reply() {
    let server = start(EmbeddedServer::builder()).await;
    let m = DatabaseManager::from_config(&config(server.port(), "postgres", |b| {
        b.pool_size(6).max_overflow(4)
    }))
    .unwrap();
    m.execute("CREATE TABLE storm (n int8)", ()).await.unwrap();
    let cancelled = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..20u64 {
        let (m, cancelled) = (m.clone(), cancelled.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..500u64 {
                let deadline = Duration::from_micros(fastrand::u64(0..50_000));
                let n = (worker * 1000 + i) as i64;
                let op = async {
                    match i % 4 {
                        0 => m
                            .execute("INSERT INTO storm VALUES ($1)", (n,))
                            .await
                            .map(drop),
                        1 => {
                            let mut s = m.session().await?;
                            s.execute("INSERT INTO storm VALUES ($1)", (n,)).await?;
                            s.execute("SELECT pg_sleep(0.001)", ()).await?;
                            s.commit().await
                        }
                        2 => {
                            let mut c = m.get_connection().await?;
                            let got: i64 = c.scalar("SELECT $1::int8", (n,)).await?;
                            assert_eq!(got, n);
                            Ok(())
                        }
                        _ => {
                            let got: i64 = m.scalar("SELECT $1::int8", (n,)).await?;
                            assert_eq!(got, n);
                            Ok(())
                        }
                    }
                };
                match tokio::time::timeout(deadline, op).await {
                    Err(_) => {
                        cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(result) => result.unwrap(),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eventually("nothing in use", async || m.status().in_use == 0).await;
    let admin = DatabaseManager::from_config(&config(server.port(), "postgres", |b| {
        b.application_name("admin")
    }))
    .unwrap();
    eventually("no session of ours idle in transaction", async || {
        admin
            .scalar::<i64, _>(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'coredb' AND state LIKE 'idle in transaction%'",
                (),
            )
            .await
            .unwrap()
            == 0
    })
    .await;
    let mut follow_up = Vec::new();
    for t in 0..10i64 {
        let m = m.clone();
        follow_up.push(tokio::spawn(async move {
            for i in 0..100i64 {
                let n = t * 100 + i;
                let got: i64 = m.scalar("SELECT $1::int8", (n,)).await.unwrap();
                assert_eq!(got, n, "each query gets its own answer");
            }
        }));
    }
    for t in follow_up {
        t.await.unwrap();
    }
    let s = m.status();
    assert_eq!(s.waiting, 0);
    report(
        &format!(
            "cancellation storm: 10,000 operations, {} dropped half-way",
            cancelled.load(Ordering::Relaxed)
        ),
        10_000,
        0,
        0,
        None,
    );
}

#[tokio::test]
async fn silent_network_fails_checkouts_and_statements_within_their_limits() {
    let server = start(EmbeddedServer::builder()).await;
    let target = format!("127.0.0.1:{}", server.port()).parse().unwrap();
    let proxy = Proxy::start(target).await;
    let m = DatabaseManager::from_config(&config(proxy.port(), "postgres", |b| {
        b.pool_size(2)
            .max_overflow(0)
            .pool_timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(1))
            .statement_timeout(Some(Duration::from_millis(500)))
            .pipeline_autocommit(false)
    }))
    .unwrap();
    let _: i32 = m.scalar("SELECT 1", ()).await.unwrap();

    let mut running = m.get_connection().await.unwrap();
    proxy.set(Mode::Blackhole);
    let started = Instant::now();
    let err = running.execute("SELECT 1", ()).await.unwrap_err();
    let statement_failed_after = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        statement_failed_after < Duration::from_secs(3),
        "{statement_failed_after:?}"
    );
    drop(running);

    let started = Instant::now();
    let mut errors = 0;
    for _ in 0..3 {
        let err = m.get_connection().await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::PoolTimeout | ErrorKind::Connect),
            "{err}"
        );
        assert!(err.is_transient());
        errors += 1;
    }
    let per_checkout = started.elapsed() / 3;
    assert!(per_checkout < Duration::from_secs(4), "{per_checkout:?}");

    proxy.set(Mode::Pass);
    let back = Instant::now();
    eventually("the database to answer again", async || {
        m.scalar::<i32, _>("SELECT 1", ()).await.is_ok()
    })
    .await;
    report(
        "blackholed network (statement 0.5 s limit, pool timeout 2 s)",
        4,
        errors + 1,
        0,
        Some(back.elapsed()),
    );
    println!(
        "  statement failed after {statement_failed_after:.2?}; checkout failed after {per_checkout:.2?}"
    );
}

#[tokio::test]
async fn two_hundred_tasks_on_five_connections_are_served_first_come_first_served() {
    let server = start(EmbeddedServer::builder()).await;
    let m = DatabaseManager::from_config(&config(server.port(), "postgres", |b| {
        b.pool_size(5)
            .max_overflow(0)
            .pool_timeout(Duration::from_secs(20))
    }))
    .unwrap();
    drop(hold_connections(&m, 5).await);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..200usize {
        let (m, order) = (m.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = m.get_connection().await.unwrap();
            order.lock().unwrap().push(i);
            c.execute("SELECT pg_sleep(0.002)", ()).await.unwrap();
        }));
        // Each task starts waiting before the next is spawned.
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 200, "all served");
    assert_eq!(
        order,
        (0..200).collect::<Vec<_>>(),
        "served in arrival order"
    );
    assert_eq!(m.status().size, 5);
    assert_eq!(m.metrics().timeouts, 0);
    report("200 tasks on a pool of 5, no overflow", 200, 0, 0, None);
}

#[tokio::test]
async fn full_server_gives_a_clear_error_then_recovers_when_slots_free_up() {
    let server = start(EmbeddedServer::builder().max_connections(8)).await;
    let admin = DatabaseManager::from_config(&config(server.port(), "postgres", |b| {
        b.application_name("admin")
    }))
    .unwrap();
    admin.execute("CREATE ROLE app LOGIN", ()).await.unwrap();
    admin.close().await;
    // Three slots are reserved for superusers: `app` may open five.
    let hog = DatabaseManager::from_config(&config(server.port(), "app", |b| {
        b.pool_size(5).max_overflow(0)
    }))
    .unwrap();
    let held = hold_connections(&hog, 5).await;
    let m = DatabaseManager::from_config(&config(server.port(), "app", |b| {
        b.pool_timeout(Duration::from_secs(1))
    }))
    .unwrap();
    let err = m.get_connection().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert!(err.is_transient());
    assert!(
        err.to_string().contains("no connection slots left"),
        "{err}"
    );
    assert!(
        m.metrics().connect_failures >= 2,
        "it backed off and tried again"
    );

    let patient = DatabaseManager::from_config(&config(server.port(), "app", |b| {
        b.pool_timeout(Duration::from_secs(10))
    }))
    .unwrap();
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let mut c = patient.get_connection().await?;
        let one: i32 = c.scalar("SELECT 1", ()).await?;
        Ok::<_, Error>((one, started.elapsed()))
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(held);
    hog.close().await;
    let (one, waited) = waiter.await.unwrap().unwrap();
    assert_eq!(one, 1);
    report("server at max_connections", 2, 1, 0, Some(waited));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_transfers_under_two_restarts_keep_the_total_and_apply_each_once() {
    const ACCOUNTS: i32 = 20;
    let server = start(EmbeddedServer::builder()).await;
    let m = DatabaseManager::from_config(&config(server.port(), "postgres", |b| {
        b.pool_size(8).max_overflow(4)
    }))
    .unwrap();
    m.execute(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance numeric(12,2) NOT NULL CHECK (balance >= 0))",
        (),
    )
    .await
    .unwrap();
    m.execute(
        "CREATE TABLE transfers (id int8 PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amount numeric(12,2) NOT NULL)",
        (),
    )
    .await
    .unwrap();
    m.execute(
        "INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, $1::int) g",
        (ACCOUNTS,),
    )
    .await
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let applied: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let gave_up = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..16i64 {
        let (m, stop, applied, gave_up) =
            (m.clone(), stop.clone(), applied.clone(), gave_up.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Acquire) {
                i += 1;
                let id = worker * 1_000_000 + i;
                let src = fastrand::i32(1..=ACCOUNTS);
                let dst = (src % ACCOUNTS) + 1;
                let amount = rust_decimal::Decimal::new(fastrand::i64(1..500), 2);
                let policy = RetryPolicy {
                    max_attempts: 20,
                    max_elapsed: Duration::from_secs(20),
                    ..RetryPolicy::default()
                };
                let outcome = m
                    .transaction_with_retry(
                        SessionOptions::isolation(IsolationLevel::Serializable),
                        &policy,
                        async |s| {
                            // Re-running a transfer whose commit reply was lost finds it applied.
                            let done: Option<i64> = s
                                .fetch_optional::<(i64,), _>(
                                    "SELECT id FROM transfers WHERE id = $1",
                                    (id,),
                                )
                                .await?
                                .map(|(id,)| id);
                            if done.is_some() {
                                return Ok::<_, Error>(());
                            }
                            let balance: rust_decimal::Decimal = s
                                .scalar("SELECT balance FROM accounts WHERE id = $1", (src,))
                                .await?;
                            if balance < amount {
                                return Ok(());
                            }
                            s.execute(
                                "UPDATE accounts SET balance = balance - $2 WHERE id = $1",
                                (src, amount),
                            )
                            .await?;
                            s.execute(
                                "UPDATE accounts SET balance = balance + $2 WHERE id = $1",
                                (dst, amount),
                            )
                            .await?;
                            s.execute(
                                "INSERT INTO transfers VALUES ($1, $2, $3, $4)",
                                (id, src, dst, amount),
                            )
                            .await?;
                            Ok(())
                        },
                    )
                    .await;
                match outcome {
                    Ok(()) => applied.lock().unwrap().push((id, Instant::now())),
                    Err(e) if e.kind() == coredb::ErrorKind::CommitOutcomeUnknown => {
                        // What a caller does with an unknown outcome: look before running it
                        // again (the transfer id says whether it was applied).
                        let applied_already: Option<(i64,)> = m
                            .fetch_optional("SELECT id FROM transfers WHERE id = $1", (id,))
                            .await
                            .unwrap_or(None);
                        if applied_already.is_some() {
                            applied.lock().unwrap().push((id, Instant::now()));
                        } else {
                            gave_up.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        assert!(e.is_transient(), "only transient failures remain: {e}");
                        gave_up.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    on_server(&server, EmbeddedServer::restart).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    on_server(&server, EmbeddedServer::restart).await;
    let back = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.unwrap();
    }
    let total: rust_decimal::Decimal = m
        .scalar("SELECT sum(balance) FROM accounts", ())
        .await
        .unwrap();
    assert_eq!(
        total,
        rust_decimal::Decimal::from(1000 * ACCOUNTS),
        "no money created or lost"
    );
    let stored: HashSet<i64> = m
        .fetch_all::<(i64,), _>("SELECT id FROM transfers", ())
        .await
        .unwrap()
        .into_iter()
        .map(|(id,)| id)
        .collect();
    let applied = applied.lock().unwrap().clone();
    let missing = applied
        .iter()
        .filter(|(id, _)| !stored.contains(id))
        .count() as u64;
    let first_after_back = applied
        .iter()
        .map(|(_, at)| *at)
        .filter(|at| *at >= back)
        .min()
        .expect("transfers succeed after the restarts");
    assert_eq!(missing, 0, "every transfer reported applied is stored");
    let consistent: bool = m
        .scalar(
            "SELECT bool_and(a.balance = 1000 - coalesce(o.s, 0) + coalesce(i.s, 0)) FROM accounts a
             LEFT JOIN (SELECT src, sum(amount) s FROM transfers GROUP BY src) o ON o.src = a.id
             LEFT JOIN (SELECT dst, sum(amount) s FROM transfers GROUP BY dst) i ON i.dst = a.id",
            (),
        )
        .await
        .unwrap();
    assert!(
        consistent,
        "each account's balance equals its ledger: every transfer applied once"
    );
    report(
        &format!(
            "ledger: 16 writers, serializable + retry, 2 restarts ({} transfers)",
            stored.len()
        ),
        applied.len() as u64 + gave_up.load(Ordering::Relaxed),
        gave_up.load(Ordering::Relaxed),
        missing,
        Some(first_after_back.duration_since(back)),
    );
}
