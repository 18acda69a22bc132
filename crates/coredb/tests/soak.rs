//! A randomized soak with a history check: bank transfers and list appends from 24 tasks while
//! connections are cut (COMMITs in flight among them), backends terminated, the server
//! restarted and killed, and callers give up half-way; afterwards every operation's outcome,
//! as its caller was told it, is checked against what the database holds: nothing applied
//! twice, no acknowledged write lost, nothing present that its caller was told failed.
//!
//! The run lasts `COREDB_SOAK_SECS` seconds (default 15, so `cargo test` stays quick); its
//! faults and operations are drawn from `COREDB_SOAK_SEED` (default: the clock; printed, so a
//! failing run's choices can be drawn again, though the interleaving of 24 tasks cannot be
//! replayed). A longer run, with its summary line:
//!
//! ```text
//! COREDB_SOAK_SECS=120 cargo test -p coredb --test soak -- --nocapture
//! ```
//!
//! The second part measures why SERIALIZABLE transfers under contention end in `40001`:
//! whether every one that reaches the caller has used up its retry policy, and whether a
//! `40001` raised at `COMMIT` is retried like one raised by a statement.

mod support;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coredb::{
    DatabaseConfig, DatabaseManager, Error, ErrorKind, Executor, IsolationLevel, RetryPolicy,
    Session, SessionOptions, SqlState,
};
use coredb_embedded::EmbeddedServer;
use coredb_testkit::TestDatabase;
use support::log_capture::Captured;
use support::proxy::Proxy;
use tracing::instrument::{Instrument as _, WithSubscriber as _};

const ACCOUNTS: i32 = 10;
const OPENING_BALANCE: i64 = 1_000;
const LISTS: i32 = 5;
const BANK_TASKS: u32 = 16;
const LIST_TASKS: u32 = 8;
/// What coredb logs when it asked the server about a COMMIT whose reply was cut off.
const RESOLVED_COMMITTED: &str = "the server says the transaction committed";

const SCHEMA: &str = "
    CREATE TABLE accounts (id int PRIMARY KEY, balance int8 NOT NULL CHECK (balance >= 0));
    -- A transfer applied a second time moves the money again and counts a second application,
    -- without a second row: the balances and the counter both show it.
    CREATE TABLE transfers (
        id int8 PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amount int8 NOT NULL,
        slow bool NOT NULL, applications int NOT NULL DEFAULT 1);
    CREATE TABLE appends (element int8 PRIMARY KEY, list int NOT NULL, applications int NOT NULL DEFAULT 1);
    CREATE TABLE lists (id int PRIMARY KEY, elements int8[] NOT NULL DEFAULT '{}');
    -- A slow COMMIT (as one waiting for a synchronous standby) for some transfers, so that cut
    -- connections often catch a COMMIT in flight.
    CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN PERFORM pg_sleep(0.02); RETURN NULL; END $$;
    CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON transfers DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW WHEN (NEW.slow) EXECUTE FUNCTION slow_commit();
";

const APPEND_ROW: &str = "INSERT INTO appends (element, list) VALUES ($1, $2) \
     ON CONFLICT (element) DO UPDATE SET applications = appends.applications + 1";
const APPEND_TO_LIST: &str = "UPDATE lists SET elements = array_append(elements, $1) WHERE id = $2";
/// Both writes of an append in one autocommit statement.
const APPEND_AUTOCOMMIT: &str = "WITH row AS (INSERT INTO appends (element, list) VALUES ($1, $2) \
     ON CONFLICT (element) DO UPDATE SET applications = appends.applications + 1 RETURNING list) \
     UPDATE lists SET elements = array_append(elements, $1) WHERE id = (SELECT list FROM row)";

/// What a caller was told of its operation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Told {
    /// `Ok`: it must be there, once.
    Acknowledged,
    /// A definite failure (the SQLSTATE, or the error kind): it must not be there.
    Failed(String),
    /// `CommitOutcomeUnknown`, or an autocommit write whose connection was lost: either way.
    Unknown,
    /// The caller stopped waiting and dropped the future: either way.
    Abandoned,
}

impl Told {
    /// What `transaction_with_retry` told its caller: every error but
    /// `CommitOutcomeUnknown` claims the transaction did not commit.
    fn of_transaction<T>(outcome: Option<Result<T, Error>>) -> Told {
        match outcome {
            None => Told::Abandoned,
            Some(Ok(_)) => Told::Acknowledged,
            Some(Err(e)) if e.kind() == ErrorKind::CommitOutcomeUnknown => Told::Unknown,
            Some(Err(e)) => Told::Failed(describe(&e)),
        }
    }

    /// What an autocommit write told its caller: a statement whose connection went (or whose
    /// reply did not come in time) may have run.
    fn of_autocommit<T>(outcome: Option<Result<T, Error>>) -> Told {
        match outcome {
            Some(Err(e)) if matches!(e.kind(), ErrorKind::ConnectionLost | ErrorKind::Timeout) => {
                Told::Unknown
            }
            other => Told::of_transaction(other),
        }
    }
}

/// The SQLSTATE of a server error, or else the error's kind.
fn describe(e: &Error) -> String {
    e.code()
        .map_or_else(|| format!("{:?}", e.kind()), |c| c.code().to_owned())
}

/// Runs `op`, or drops it half-way when `patience` runs out (`None` then).
async fn awaited<T>(op: impl Future<Output = T>, patience: Option<Duration>) -> Option<T> {
    match patience {
        None => Some(op.await),
        Some(limit) => tokio::time::timeout(limit, op).await.ok(),
    }
}

#[derive(Debug, Clone, Copy)]
struct Transfer {
    id: i64,
    src: i32,
    dst: i32,
    amount: i64,
    /// Its COMMIT takes 20 ms longer (the deferred trigger).
    slow: bool,
}

/// How a transfer keeps its balances right under concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// SERIALIZABLE: reads the total, and the server aborts what would not be serializable.
    Serializable,
    /// READ COMMITTED: locks both accounts in id order (`FOR UPDATE`) first.
    RowLocks,
}

impl Guard {
    fn options(self) -> SessionOptions {
        match self {
            Guard::Serializable => SessionOptions::isolation(IsolationLevel::Serializable),
            Guard::RowLocks => SessionOptions::isolation(IsolationLevel::ReadCommitted),
        }
    }
}

/// Moves the money and logs the transfer; a balance that would go negative fails it (`23514`).
async fn transfer(s: &mut Session, t: Transfer, guard: Guard) -> Result<(), Error> {
    match guard {
        Guard::Serializable => {
            // The bank's total, as an audit would read it: every transfer then depends on every
            // other, and the server also raises serialization failures at COMMIT.
            let _: i64 = s
                .scalar("SELECT sum(balance)::int8 FROM accounts", ())
                .await?;
        }
        Guard::RowLocks => {
            s.execute(
                "SELECT id FROM accounts WHERE id IN ($1, $2) ORDER BY id FOR UPDATE",
                (t.src, t.dst),
            )
            .await?;
        }
    }
    s.execute(
        "UPDATE accounts SET balance = balance - $2 WHERE id = $1",
        (t.src, t.amount),
    )
    .await?;
    s.execute(
        "UPDATE accounts SET balance = balance + $2 WHERE id = $1",
        (t.dst, t.amount),
    )
    .await?;
    s.execute(
        "INSERT INTO transfers (id, src, dst, amount, slow) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET applications = transfers.applications + 1",
        (t.id, t.src, t.dst, t.amount, t.slow),
    )
    .await?;
    Ok(())
}

/// What the attempts of one `transaction_with_retry` call went through.
#[derive(Debug, Default)]
struct Tally {
    /// Times the closure ran.
    attempts: AtomicU32,
    /// Times it returned `Ok` (each but a successful last one was followed by a failed COMMIT).
    closure_ok: AtomicU32,
    /// `40001` raised by a statement in the closure.
    serialization_at_statement: AtomicU32,
}

impl Tally {
    /// Runs `body` as one attempt, counting it and how it ended.
    async fn attempt(&self, body: impl Future<Output = Result<(), Error>>) -> Result<(), Error> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let result = body.await;
        match &result {
            Ok(()) => {
                self.closure_ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) => {
                self.serialization_at_statement
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        result
    }

    fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Attempts whose closure succeeded but whose COMMIT failed (in a run without faults: a
    /// serialization failure raised at COMMIT).
    fn failed_commits(&self, committed: bool) -> u32 {
        self.closure_ok.load(Ordering::Relaxed) - u32::from(committed)
    }
}

/// One operation of the history, with what its caller was told.
#[derive(Debug)]
enum Record {
    Transfer {
        transfer: Transfer,
        guard: Guard,
        told: Told,
        attempts: u32,
        serialization_failures: u32,
    },
    Append {
        element: i64,
        list: i32,
        autocommit: bool,
        told: Told,
    },
    /// A list as one read saw it.
    Read { list: i32, seen: Vec<i64> },
}

/// The operations' settings, shared by the tasks.
struct Workload {
    db: DatabaseManager,
    policy: RetryPolicy,
    stop: AtomicBool,
}

/// One client task: transfers with `guard`, or (`None`) list appends and reads, until told
/// to stop; one operation in 20 is given up on after 0–40 ms.
async fn client(work: Arc<Workload>, task: u32, guard: Option<Guard>, seed: u64) -> Vec<Record> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut history = Vec::new();
    let mut n = 0;
    while !work.stop.load(Ordering::Acquire) {
        n += 1;
        let id = i64::from(task) * 10_000_000 + n;
        let patience = (rng.u32(..20) == 0).then(|| Duration::from_millis(rng.u64(..40)));
        let op = async {
            Some(match guard {
                Some(guard) => {
                    let src = rng.i32(1..=ACCOUNTS);
                    let t = Transfer {
                        id,
                        src,
                        dst: (src + rng.i32(1..ACCOUNTS) - 1) % ACCOUNTS + 1,
                        amount: rng.i64(1..=200),
                        slow: rng.u32(..4) == 0,
                    };
                    let tally = Tally::default();
                    let tally = &tally;
                    let op = work.db.transaction_with_retry(
                        guard.options(),
                        &work.policy,
                        async move |s| tally.attempt(transfer(s, t, guard)).await,
                    );
                    let told = Told::of_transaction(awaited(op, patience).await);
                    Record::Transfer {
                        transfer: t,
                        guard,
                        told,
                        attempts: tally.attempts(),
                        serialization_failures: tally
                            .serialization_at_statement
                            .load(Ordering::Relaxed),
                    }
                }
                None => {
                    let list = rng.i32(1..=LISTS);
                    match rng.u32(..10) {
                        0..=3 => {
                            let op = work.db.transaction_with_retry(
                                SessionOptions::default(),
                                &work.policy,
                                async move |s| {
                                    s.execute(APPEND_ROW, (id, list)).await?;
                                    s.execute(APPEND_TO_LIST, (id, list)).await?;
                                    Ok::<_, Error>(())
                                },
                            );
                            Record::Append {
                                element: id,
                                list,
                                autocommit: false,
                                told: Told::of_transaction(awaited(op, patience).await),
                            }
                        }
                        4..=7 => {
                            let op = work.db.execute(APPEND_AUTOCOMMIT, (id, list));
                            Record::Append {
                                element: id,
                                list,
                                autocommit: true,
                                told: Told::of_autocommit(awaited(op, patience).await),
                            }
                        }
                        _ => {
                            let read = work.db.scalar::<Vec<i64>, _>(
                                "SELECT elements FROM lists WHERE id = $1",
                                (list,),
                            );
                            match awaited(read, patience).await {
                                Some(Ok(seen)) => Record::Read { list, seen },
                                // A read that failed tells nothing.
                                _ => return None,
                            }
                        }
                    }
                }
            })
        };
        // coredb's log lines about the operation carry its id.
        let span = tracing::info_span!("op", id);
        history.extend(op.instrument(span).await);
    }
    history
}

/// Faults injected, by kind.
#[derive(Debug, Default)]
struct Faults {
    cuts: u32,
    terminations: u32,
    terminated_backends: u32,
    restarts: u32,
    kills: u32,
}

/// Runs a blocking server operation (restart, kill, start again) off the runtime.
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

/// Injects a fault every 100–700 ms until `until`: cuts every connection through the proxy,
/// terminates 1–3 client backends, restarts the server (fast shutdown) or kills it (`kill -9`,
/// crash recovery). The server is up when it returns.
async fn inject_faults(
    server: &Arc<EmbeddedServer>,
    proxy: &Proxy,
    admin: &DatabaseManager,
    rng: &mut fastrand::Rng,
    until: Instant,
) -> Faults {
    let mut faults = Faults::default();
    loop {
        let pause = Duration::from_millis(rng.u64(100..=700));
        if Instant::now() + pause >= until {
            return faults;
        }
        tokio::time::sleep(pause).await;
        match rng.u32(..100) {
            0..35 => {
                proxy.cut();
                faults.cuts += 1;
            }
            35..70 => {
                let backends: Vec<(i32,)> = admin
                    .fetch_all(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = 'soak' ORDER BY pid",
                        (),
                    )
                    .await
                    .unwrap_or_default();
                faults.terminations += 1;
                for _ in 0..rng.usize(1..=3).min(backends.len()) {
                    let (pid,) = backends[rng.usize(..backends.len())];
                    if let Ok(true) = admin
                        .scalar::<bool, _>("SELECT pg_terminate_backend($1)", (pid,))
                        .await
                    {
                        faults.terminated_backends += 1;
                    }
                }
            }
            70..85 => {
                on_server(server, EmbeddedServer::restart).await;
                faults.restarts += 1;
            }
            _ => {
                on_server(server, EmbeddedServer::kill).await;
                tokio::time::sleep(Duration::from_millis(rng.u64(..300))).await;
                on_server(server, EmbeddedServer::start_again).await;
                faults.kills += 1;
            }
        }
    }
}

/// What the history check found; every list but the counts must be empty.
#[derive(Debug, Default)]
struct Verdict {
    /// Operations whose effect is in the database more than once.
    applied_twice: Vec<String>,
    /// Acknowledged operations whose effect is missing.
    lost: Vec<String>,
    /// Operations whose caller was told of a definite failure, yet whose effect is there.
    failed_but_present: Vec<String>,
    /// Anything else that does not add up: money created or lost, a balance that disagrees
    /// with the transfer log, a list that disagrees with its appends, a read that saw what is
    /// gone, a row nobody wrote.
    inconsistent: Vec<String>,
    /// Operations of unknown outcome (unknown or abandoned): (applied, not applied).
    unknown_applied: u32,
    unknown_absent: u32,
}

impl Verdict {
    fn is_clean(&self) -> bool {
        self.applied_twice.is_empty()
            && self.lost.is_empty()
            && self.failed_but_present.is_empty()
            && self.inconsistent.is_empty()
    }

    /// Files an operation found `applied` (or not) under what its caller was told.
    fn judge(&mut self, what: String, told: &Told, applied: bool) {
        match (told, applied) {
            (Told::Acknowledged, false) => self.lost.push(what),
            (Told::Failed(why), true) => self.failed_but_present.push(format!("{what} ({why})")),
            (Told::Unknown | Told::Abandoned, true) => self.unknown_applied += 1,
            (Told::Unknown | Told::Abandoned, false) => self.unknown_absent += 1,
            _ => {}
        }
    }
}

/// Checks the history against the database.
async fn check_history(db: &DatabaseManager, history: &[Record]) -> Verdict {
    let mut verdict = Verdict::default();

    let balances: HashMap<i32, i64> = db
        .fetch_all::<(i32, i64), _>("SELECT id, balance FROM accounts", ())
        .await
        .unwrap()
        .into_iter()
        .collect();
    let logged: Vec<(i64, i32, i32, i64, i32)> = db
        .fetch_all(
            "SELECT id, src, dst, amount, applications FROM transfers",
            (),
        )
        .await
        .unwrap();
    let total: i64 = balances.values().sum();
    if total != i64::from(ACCOUNTS) * OPENING_BALANCE {
        verdict
            .inconsistent
            .push(format!("the accounts hold {total} in all"));
    }
    // Each logged transfer counted once: a transfer applied twice without a second row of
    // its own makes its accounts disagree.
    let mut expected: HashMap<i32, i64> = (1..=ACCOUNTS).map(|a| (a, OPENING_BALANCE)).collect();
    for &(id, src, dst, amount, applications) in &logged {
        *expected.get_mut(&src).unwrap() -= amount;
        *expected.get_mut(&dst).unwrap() += amount;
        if applications > 1 {
            verdict
                .applied_twice
                .push(format!("transfer {id} ({applications} times)"));
        }
    }
    for (account, balance) in &balances {
        if expected[account] != *balance {
            verdict.inconsistent.push(format!(
                "account {account} holds {balance}, its log says {}",
                expected[account]
            ));
        }
    }

    let appended: HashMap<i64, (i32, i32)> = db
        .fetch_all::<(i64, i32, i32), _>("SELECT element, list, applications FROM appends", ())
        .await
        .unwrap()
        .into_iter()
        .map(|(element, list, applications)| (element, (list, applications)))
        .collect();
    let lists: HashMap<i32, Vec<i64>> = db
        .fetch_all::<(i32, Vec<i64>), _>("SELECT id, elements FROM lists", ())
        .await
        .unwrap()
        .into_iter()
        .collect();
    let mut in_lists: HashMap<i64, (i32, u32)> = HashMap::new();
    for (&list, elements) in &lists {
        for &element in elements {
            in_lists.entry(element).or_insert((list, 0)).1 += 1;
        }
    }
    for (&element, &(list, applications)) in &appended {
        let times = in_lists.get(&element).map_or(0, |&(_, n)| n);
        if applications > 1 || times > 1 {
            verdict.applied_twice.push(format!(
                "element {element} (row applied {applications} times, {times} times in list {list})"
            ));
        }
        if in_lists.get(&element).map(|&(l, _)| l) != Some(list) {
            verdict.inconsistent.push(format!(
                "element {element} has a row for list {list} but is not in it"
            ));
        }
    }
    for element in in_lists.keys() {
        if !appended.contains_key(element) {
            verdict
                .inconsistent
                .push(format!("element {element} is in a list without its row"));
        }
    }

    let logged: HashSet<i64> = logged.iter().map(|row| row.0).collect();
    let mut known: HashSet<i64> = HashSet::new();
    for record in history {
        match record {
            Record::Transfer { transfer, told, .. } => {
                known.insert(transfer.id);
                let what = format!("transfer {}", transfer.id);
                verdict.judge(what, told, logged.contains(&transfer.id));
            }
            Record::Append {
                element,
                told,
                autocommit,
                ..
            } => {
                known.insert(*element);
                let what = format!("append {element} (autocommit: {autocommit})");
                verdict.judge(what, told, appended.contains_key(element));
            }
            Record::Read { list, seen } => {
                if !lists[list].starts_with(seen) {
                    verdict.inconsistent.push(format!(
                        "a read of list {list} saw {seen:?}, which the list no longer starts with"
                    ));
                }
            }
        }
    }
    for id in logged.iter().chain(appended.keys()) {
        if !known.contains(id) {
            verdict
                .inconsistent
                .push(format!("{id} is stored but no operation wrote it"));
        }
    }
    verdict
}

/// Reads `name` from the environment, or `default` when unset.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_randomized_soak_applies_nothing_twice_and_loses_no_acknowledged_write() {
    let secs: u64 = env_or("COREDB_SOAK_SECS", 15);
    let seed: u64 = env_or(
        "COREDB_SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    eprintln!("soak: {secs} s, COREDB_SOAK_SEED={seed}");

    // Commits are flushed, so "acknowledged" holds across kill -9.
    let builder = EmbeddedServer::builder().setting("synchronous_commit", "on");
    let server = Arc::new(
        tokio::task::spawn_blocking(move || builder.start())
            .await
            .unwrap()
            .expect("embedded server starts"),
    );
    let config = |port: u16, name: &str| {
        DatabaseConfig::builder()
            .host("127.0.0.1")
            .port(port)
            .user(server.user())
            .dbname("postgres")
            .ssl_mode(coredb::SslMode::Disable)
            .application_name(name)
            .connect_timeout(Duration::from_secs(1))
            .pool_timeout(Duration::from_secs(5))
    };
    // Faults and the check go straight to the server; the clients go through the proxy.
    let admin = DatabaseManager::from_config(&config(server.port(), "soak-admin").build().unwrap())
        .unwrap();
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], server.port()))).await;
    let db = DatabaseManager::from_config(
        &config(proxy.port(), "soak")
            .pool_size(8)
            .max_overflow(4)
            .build()
            .unwrap(),
    )
    .unwrap();
    admin
        .get_connection()
        .await
        .unwrap()
        .execute_script(SCHEMA)
        .await
        .unwrap();
    admin
        .execute(
            "INSERT INTO accounts SELECT g, $2 FROM generate_series(1, $1::int) g",
            (ACCOUNTS, OPENING_BALANCE),
        )
        .await
        .unwrap();
    admin
        .execute(
            "INSERT INTO lists (id) SELECT generate_series(1, $1::int)",
            (LISTS,),
        )
        .await
        .unwrap();

    // coredb's own log says how often a COMMIT's reply was cut off and the server was asked.
    let log = Captured::default();
    let logger = tracing::Dispatch::new(log.subscriber(tracing::Level::INFO));
    let work = Arc::new(Workload {
        db: db.clone(),
        policy: RetryPolicy {
            max_attempts: 10,
            max_elapsed: Duration::from_secs(10),
            ..RetryPolicy::default()
        },
        stop: AtomicBool::new(false),
    });
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let tasks: Vec<_> = (0..BANK_TASKS + LIST_TASKS)
        .map(|task| {
            let guard = match task {
                t if t < BANK_TASKS / 2 => Some(Guard::Serializable),
                t if t < BANK_TASKS => Some(Guard::RowLocks),
                _ => None,
            };
            let run = client(work.clone(), task, guard, rng.u64(..));
            tokio::spawn(run.with_subscriber(logger.clone()))
        })
        .collect();
    let faults = inject_faults(
        &server,
        &proxy,
        &admin,
        &mut rng,
        started + Duration::from_secs(secs),
    )
    .await;
    tokio::time::sleep(
        (started + Duration::from_secs(secs)).saturating_duration_since(Instant::now()),
    )
    .await;
    work.stop.store(true, Ordering::Release);
    let mut history = Vec::new();
    for task in tasks {
        // The retry policy, the pool timeout and the commit resolution bound every operation.
        let records = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("every operation ends once the faults stop")
            .unwrap();
        history.extend(records);
    }
    let elapsed = started.elapsed();

    let verdict = check_history(&admin, &history).await;

    let mut told: HashMap<String, u32> = HashMap::new();
    let (mut ops, mut reads, mut retries, mut serialization, mut ended_40001) = (0, 0, 0, 0, 0);
    for record in &history {
        let outcome = match record {
            Record::Transfer {
                told,
                attempts,
                serialization_failures,
                ..
            } => {
                retries += attempts.saturating_sub(1);
                serialization += serialization_failures;
                told
            }
            Record::Append { told, .. } => told,
            Record::Read { .. } => {
                reads += 1;
                continue;
            }
        };
        ops += 1;
        if *outcome == Told::Failed("40001".into()) {
            ended_40001 += 1;
        }
        let key = match outcome {
            Told::Failed(why) => format!("failed {why}"),
            other => format!("{other:?}").to_lowercase(),
        };
        *told.entry(key).or_default() += 1;
    }
    let mut told: Vec<_> = told.into_iter().collect();
    told.sort();
    let resolved = log.text().matches(RESOLVED_COMMITTED).count();
    eprintln!(
        "SOAK | seed {seed} | {:.1} s | {ops} writes + {reads} reads from {} tasks | told: {} | faults: {} cuts, {} terminations ({} backends), {} restarts, {} kills | \
         cut COMMITs resolved as committed {resolved} | unknown/abandoned applied {}, not applied {} | transfer retries {retries}, 40001 at statements {serialization}, ended in 40001 {ended_40001} | \
         applied twice {}, lost acknowledged {}, present after a definite failure {}, inconsistencies {} |",
        elapsed.as_secs_f64(),
        BANK_TASKS + LIST_TASKS,
        told.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "),
        faults.cuts,
        faults.terminations,
        faults.terminated_backends,
        faults.restarts,
        faults.kills,
        verdict.unknown_applied,
        verdict.unknown_absent,
        verdict.applied_twice.len(),
        verdict.lost.len(),
        verdict.failed_but_present.len(),
        verdict.inconsistent.len(),
    );
    if !verdict.is_clean() {
        // What coredb logged about the operations in question.
        let text = log.text();
        let named = verdict
            .lost
            .iter()
            .chain(&verdict.applied_twice)
            .chain(&verdict.failed_but_present);
        for what in named {
            let id = what.split_whitespace().nth(1).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains(&format!("{{id={id}}}"))) {
                eprintln!("{what}: {line}");
            }
        }
    }
    assert!(verdict.is_clean(), "seed {seed}: {verdict:#?}");
    assert!(
        faults.cuts + faults.terminations + faults.restarts + faults.kills > 0,
        "faults were injected"
    );

    // The check's own check: what a blind retry of an acknowledged transfer and a lost append
    // would leave behind is caught.
    let mut acknowledged = history.iter().filter_map(|r| match r {
        Record::Transfer {
            transfer,
            guard,
            told: Told::Acknowledged,
            ..
        } => Some((*transfer, *guard)),
        _ => None,
    });
    let again = loop {
        let (t, guard) = acknowledged
            .next()
            .expect("some acknowledged transfer can be applied again");
        // One whose source account still holds the amount.
        let applied = admin
            .transaction_with(guard.options(), async |s| transfer(s, t, guard).await)
            .await;
        if applied.is_ok() {
            break t;
        }
    };
    let (gone, list) = history
        .iter()
        .find_map(|r| match r {
            Record::Append {
                element,
                list,
                told: Told::Acknowledged,
                ..
            } => Some((*element, *list)),
            _ => None,
        })
        .expect("some append was acknowledged");
    admin
        .transaction(async |s| {
            s.execute("DELETE FROM appends WHERE element = $1", (gone,))
                .await?;
            s.execute(
                "UPDATE lists SET elements = array_remove(elements, $1) WHERE id = $2",
                (gone, list),
            )
            .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    let tampered = check_history(&admin, &history).await;
    assert_eq!(
        tampered.applied_twice,
        vec![format!("transfer {} (2 times)", again.id)],
        "{tampered:#?}"
    );
    assert!(
        !tampered.inconsistent.is_empty(),
        "the twice-moved money disagrees with the log"
    );
    assert_eq!(tampered.lost.len(), 1, "{tampered:#?}");
    assert!(tampered.lost[0].starts_with(&format!("append {gone} ")));
}

/// One contended transfer: how many attempts it took and how it ended.
struct Contended {
    attempts: u32,
    /// Attempts whose COMMIT failed (a serialization failure raised at COMMIT: no faults here).
    failed_commits: u32,
    /// Attempts whose statements raised `40001`.
    failed_statements: u32,
    took: Duration,
    /// The final error's SQLSTATE and statement.
    error: Option<(String, Option<String>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_transfers_under_contention_end_in_40001_only_when_retries_run_out() {
    const TASKS: u32 = 32;
    const HOT_ACCOUNTS: i32 = 4;
    const RUN: Duration = Duration::from_secs(5);
    let db = TestDatabase::with_config(|b| b.pool_size(TASKS as usize))
        .await
        .unwrap();
    let m = db.manager();
    m.get_connection()
        .await
        .unwrap()
        .execute_script(SCHEMA)
        .await
        .unwrap();
    m.execute(
        "INSERT INTO accounts SELECT g, 1000000 FROM generate_series(1, $1::int) g",
        (HOT_ACCOUNTS,),
    )
    .await
    .unwrap();
    let policy = RetryPolicy {
        max_attempts: 10,
        ..RetryPolicy::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(1));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (m, stop, next_id) = (m.clone(), stop.clone(), next_id.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    let src = fastrand::i32(1..=HOT_ACCOUNTS);
                    let t = Transfer {
                        id: next_id.fetch_add(1, Ordering::Relaxed) as i64,
                        src,
                        dst: src % HOT_ACCOUNTS + 1,
                        amount: fastrand::i64(1..=100),
                        slow: false,
                    };
                    let tally = Tally::default();
                    let tally = &tally;
                    let started = Instant::now();
                    let outcome = m
                        .transaction_with_retry(
                            Guard::Serializable.options(),
                            &policy,
                            async move |s| tally.attempt(transfer(s, t, Guard::Serializable)).await,
                        )
                        .await;
                    done.push(Contended {
                        attempts: tally.attempts(),
                        failed_commits: tally.failed_commits(outcome.is_ok()),
                        failed_statements: tally.serialization_at_statement.load(Ordering::Relaxed),
                        took: started.elapsed(),
                        error: outcome
                            .err()
                            .map(|e| (describe(&e), e.statement().map(str::to_owned))),
                    });
                }
                done
            })
        })
        .collect();
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Release);
    let mut done = Vec::new();
    for task in tasks {
        done.extend(task.await.unwrap());
    }

    let total: i64 = m
        .scalar("SELECT sum(balance)::int8 FROM accounts", ())
        .await
        .unwrap();
    assert_eq!(total, i64::from(HOT_ACCOUNTS) * 1_000_000);
    let failed: Vec<&Contended> = done.iter().filter(|c| c.error.is_some()).collect();
    for c in &failed {
        let (code, statement) = c.error.as_ref().unwrap();
        // Serialization failures and deadlocks only, each after every attempt the policy
        // allows (or its time): none is given up on early.
        assert!(
            code == "40001" || code == "40P01",
            "{code} after {} attempts",
            c.attempts
        );
        assert!(
            c.attempts == policy.max_attempts || c.took + policy.max_backoff >= policy.max_elapsed,
            "{code} (statement {statement:?}) reached the caller after {} of {} attempts in {:?}",
            c.attempts,
            policy.max_attempts,
            c.took
        );
    }
    let final_at_commit = failed
        .iter()
        .filter(|c| c.error.as_ref().unwrap().1.as_deref() == Some("COMMIT"))
        .count() as u32;
    let failed_commits: u32 = done.iter().map(|c| c.failed_commits).sum();
    let failed_statements: u32 = done.iter().map(|c| c.failed_statements).sum();
    // How likely a retry is to fail again, against a first attempt.
    let failed_once = done
        .iter()
        .filter(|c| c.attempts > 1 || c.error.is_some())
        .count();
    let failed_twice = done
        .iter()
        .filter(|c| c.attempts > 2 || (c.attempts == 2 && c.error.is_some()))
        .count();
    let mut by_attempts = std::collections::BTreeMap::<u32, u32>::new();
    for c in &done {
        *by_attempts.entry(c.attempts).or_default() += 1;
    }
    eprintln!(
        "SERIALIZABLE | {TASKS} tasks on {HOT_ACCOUNTS} accounts, {:?}, max_attempts {} | {} transfers, {} committed, {} ended in 40001 ({} of them at COMMIT), {} in 40P01 | 40001 by statements {failed_statements}, at COMMIT {failed_commits} ({} retried) | first attempts failed {failed_once}, of which second attempts failed {failed_twice} | transfers by attempts used: {by_attempts:?} |",
        RUN,
        policy.max_attempts,
        done.len(),
        done.len() - failed.len(),
        failed
            .iter()
            .filter(|c| c.error.as_ref().unwrap().0 == "40001")
            .count(),
        final_at_commit,
        failed
            .iter()
            .filter(|c| c.error.as_ref().unwrap().0 == "40P01")
            .count(),
        failed_commits - final_at_commit,
    );
}

#[tokio::test]
async fn a_serialization_failure_raised_at_commit_is_retried_until_the_attempts_run_out() {
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    // A deferred trigger fails the first `fail_first.n` COMMITs with 40001, as the server does
    // for a serializable transaction found a pivot at commit.
    m.get_connection()
        .await
        .unwrap()
        .execute_script(
            "CREATE TABLE done (id int PRIMARY KEY); \
             CREATE TABLE fail_first (n int NOT NULL); INSERT INTO fail_first VALUES (2); \
             CREATE SEQUENCE commits_failed; \
             CREATE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF nextval('commits_failed') <= (SELECT n FROM fail_first) THEN \
                     RAISE EXCEPTION 'could not serialize access' USING ERRCODE = 'serialization_failure'; \
                 END IF; RETURN NULL; END $$; \
             CREATE CONSTRAINT TRIGGER fail_commit AFTER INSERT ON done DEFERRABLE INITIALLY DEFERRED \
                 FOR EACH ROW EXECUTE FUNCTION fail_commit()",
        )
        .await
        .unwrap();
    let policy = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..RetryPolicy::default()
    };
    let insert = async |id: i32| {
        let tally = Tally::default();
        let tally = &tally;
        let outcome = m
            .transaction_with_retry(
                SessionOptions::isolation(IsolationLevel::Serializable),
                &policy,
                async move |s| {
                    tally
                        .attempt(async {
                            s.execute("INSERT INTO done VALUES ($1)", (id,)).await?;
                            Ok(())
                        })
                        .await
                },
            )
            .await;
        (outcome, tally.attempts(), tally.failed_commits(false))
    };

    // Two COMMITs fail: the third attempt commits.
    let (outcome, attempts, _) = insert(1).await;
    outcome.unwrap();
    assert_eq!(attempts, 3);

    // Every COMMIT fails: the caller hears of it after all three attempts, with the COMMIT's
    // 40001.
    m.execute("UPDATE fail_first SET n = 1000", ())
        .await
        .unwrap();
    let (outcome, attempts, failed_commits) = insert(2).await;
    let err = outcome.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::T_R_SERIALIZATION_FAILURE),
        "{err}"
    );
    assert_eq!(err.statement(), Some("COMMIT"), "{err}");
    assert_eq!((attempts, failed_commits), (3, 3));
    let stored: Vec<(i32,)> = m.fetch_all("SELECT id FROM done", ()).await.unwrap();
    assert_eq!(stored, vec![(1,)]);
}
