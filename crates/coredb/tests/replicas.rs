//! Real streaming replicas (`pg_basebackup -R`) behind `reader()`: reads on the standbys,
//! the primary when none answers, and health that lists each replica and says "degraded".

use std::time::{Duration, Instant};

use coredb::{DatabaseConfig, DatabaseManager, ErrorKind, Executor, HealthStatus};
use coredb_embedded::EmbeddedServer;

/// A primary and `n` standbys streaming from it.
async fn cluster(n: usize) -> (EmbeddedServer, Vec<EmbeddedServer>) {
    cluster_with(n, &[]).await
}

/// A primary with server `settings` and `n` standbys streaming from it.
async fn cluster_with(
    n: usize,
    settings: &[(&'static str, &'static str)],
) -> (EmbeddedServer, Vec<EmbeddedServer>) {
    let settings = settings.to_vec();
    tokio::task::spawn_blocking(move || {
        let primary = settings
            .into_iter()
            .fold(EmbeddedServer::builder(), |b, (k, v)| b.setting(k, v))
            .start()
            .expect("primary starts");
        let standbys = (0..n)
            .map(|_| primary.standby().expect("standby starts"))
            .collect();
        (primary, standbys)
    })
    .await
    .unwrap()
}

fn config(primary: &EmbeddedServer, standbys: &[EmbeddedServer]) -> DatabaseConfig {
    DatabaseConfig::builder()
        .host("127.0.0.1")
        .port(primary.port())
        .user(primary.user())
        .dbname("postgres")
        .ssl_mode(coredb::SslMode::Disable)
        .connect_timeout(Duration::from_secs(1))
        .pool_timeout(Duration::from_secs(3))
        .read_replicas(
            standbys
                .iter()
                .map(|s| ("127.0.0.1".to_owned(), s.port()))
                .collect(),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn reads_reach_real_standbys_that_replay_the_primary() {
    let (primary, standbys) = cluster(2).await;
    let m = DatabaseManager::from_config(&config(&primary, &standbys)).unwrap();
    m.execute("CREATE TABLE replicated (n int)", ())
        .await
        .unwrap();
    m.execute("INSERT INTO replicated VALUES (1), (2), (3)", ())
        .await
        .unwrap();
    let reader = m.reader();
    let in_recovery: bool = reader
        .scalar("SELECT pg_is_in_recovery()", ())
        .await
        .unwrap();
    assert!(in_recovery, "reads go to a standby");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen: Option<i64> = reader
            .scalar("SELECT count(*) FROM replicated", ())
            .await
            .ok();
        if seen == Some(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never replayed the rows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Spread statement by statement, not connection by connection.
    let mut per_port = std::collections::BTreeMap::new();
    for _ in 0..100 {
        let port: i32 = reader
            .scalar("SELECT inet_server_port()", ())
            .await
            .unwrap();
        *per_port.entry(port).or_insert(0) += 1;
    }
    let expected: std::collections::BTreeMap<i32, i32> =
        standbys.iter().map(|s| (i32::from(s.port()), 50)).collect();
    assert_eq!(per_port, expected, "100 reads, 50 on each standby");

    let report = m.health_report().await;
    assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
    let replicas = report.replicas.unwrap();
    assert_eq!(replicas.len(), 2);
    for (replica, standby) in replicas.iter().zip(&standbys) {
        assert_eq!(replica.address, format!("127.0.0.1:{}", standby.port()));
        assert!(replica.healthy, "{replica:?}");
        assert!(
            replica.lag_ms.is_some(),
            "it replayed the inserts: {replica:?}"
        );
    }
    m.close().await;
}

#[tokio::test]
async fn with_every_replica_down_reads_go_to_the_primary_and_health_says_degraded() {
    let (primary, standbys) = cluster(2).await;
    let config = config(&primary, &standbys);
    let m = DatabaseManager::from_config(&config).unwrap();
    let reader = m.reader();
    let on_standby: bool = reader
        .scalar("SELECT pg_is_in_recovery()", ())
        .await
        .unwrap();
    assert!(on_standby);
    let standbys = tokio::task::spawn_blocking(move || {
        for standby in &standbys {
            standby.stop().expect("standby stops");
        }
        standbys
    })
    .await
    .unwrap();

    // Connections already pooled to the standbys are dead: the reads still succeed, on the
    // primary, within the connect timeout.
    for _ in 0..20 {
        let started = Instant::now();
        let on_standby: bool = reader
            .scalar("SELECT pg_is_in_recovery()", ())
            .await
            .unwrap();
        assert!(!on_standby, "read from the primary");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    let mut session = reader.session().await.unwrap();
    let on_standby: bool = session
        .scalar("SELECT pg_is_in_recovery()", ())
        .await
        .unwrap();
    assert!(!on_standby, "sessions too");
    session.commit().await.unwrap();

    let report = m.health_report().await;
    assert_eq!(report.status, HealthStatus::Degraded, "{report:?}");
    assert!(report.is_healthy(), "the primary is fine");
    let replicas = report.replicas.unwrap();
    assert_eq!(replicas.len(), 2);
    assert!(
        replicas.iter().all(|r| !r.healthy && r.error.is_some()),
        "{replicas:?}"
    );
    let json = serde_json::to_value(m.health_report().await).unwrap();
    assert_eq!(json["status"], "degraded");

    // Without fallback, the reader says what is wrong instead.
    let strict =
        DatabaseManager::from_config(&config.to_builder().read_fallback(false).build().unwrap())
            .unwrap();
    let err = strict
        .reader()
        .scalar::<bool, _>("SELECT pg_is_in_recovery()", ())
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Connect | ErrorKind::PoolTimeout),
        "{err}"
    );
    strict.close().await;
    m.close().await;
    drop(standbys);
    drop(primary);
}

/// A manager for `hosts` (in that order) choosing a server by `attrs`.
fn by_role(user: &str, hosts: &[&EmbeddedServer], attrs: &str) -> DatabaseManager {
    let list: Vec<String> = hosts.iter().map(|_| "127.0.0.1".to_owned()).collect();
    let ports: Vec<String> = hosts.iter().map(|s| s.port().to_string()).collect();
    let config = DatabaseConfig::from_vars([
        ("POSTGRES_HOST", list.join(",")),
        ("POSTGRES_PORT", ports.join(",")),
        ("POSTGRES_USER", user.to_owned()),
        ("POSTGRES_DB", "postgres".to_owned()),
        ("POSTGRES_SSLMODE", "disable".to_owned()),
        ("POSTGRES_CONNECT_TIMEOUT", "1".to_owned()),
        ("POSTGRES_POOL_TIMEOUT", "3".to_owned()),
        ("POSTGRES_TARGET_SESSION_ATTRS", attrs.to_owned()),
    ])
    .unwrap();
    DatabaseManager::from_config(&config).unwrap()
}

async fn in_recovery(m: &DatabaseManager) -> coredb::Result<bool> {
    let mut conn = m.get_connection().await?;
    conn.scalar("SELECT pg_is_in_recovery()", ()).await
}

#[tokio::test]
async fn every_target_session_attrs_value_picks_its_role_and_errors_keep_each_hosts_cause() {
    let (primary, standbys) = cluster(1).await;
    let standby = &standbys[0];
    let user = primary.user().to_owned();
    let expected = [
        ("any", true),
        ("read-write", false),
        ("primary", false),
        ("read-only", true),
        ("standby", true),
        ("prefer-standby", true),
    ];
    for (attrs, on_standby) in expected {
        // The standby first: "any" takes it, the roles choose.
        let m = by_role(&user, &[standby, &primary], attrs);
        assert_eq!(in_recovery(&m).await.unwrap(), on_standby, "{attrs}");
        m.close().await;
    }

    let standbys = tokio::task::spawn_blocking(move || {
        standbys[0].stop().unwrap();
        standbys
    })
    .await
    .unwrap();
    let standby = &standbys[0];
    let m = by_role(&user, &[standby, &primary], "prefer-standby");
    assert!(
        !in_recovery(&m).await.unwrap(),
        "no standby answers: any server"
    );
    m.close().await;
    let m = by_role(&user, &[standby, &primary], "standby");
    let err = in_recovery(&m).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("POSTGRES_TARGET_SESSION_ATTRS=standby"),
        "{text}"
    );
    assert!(
        text.contains(&format!("127.0.0.1:{} refused", standby.port())),
        "{text}"
    );
    assert!(
        text.contains(&format!("127.0.0.1:{} is a primary", primary.port())),
        "{text}"
    );
    m.close().await;
}

#[tokio::test]
async fn after_a_failover_writes_go_to_the_new_primary_and_two_primaries_are_refused() {
    let (primary, standbys) = cluster(1).await;
    let user = primary.user().to_owned();
    let primary = std::sync::Arc::new(primary);
    let standby = &standbys[0];
    let m = by_role(&user, &[&primary, standby], "read-write");
    m.execute("CREATE TABLE ledger (n int)", ()).await.unwrap();
    m.execute("INSERT INTO ledger VALUES (1)", ())
        .await
        .unwrap();

    // The primary goes; the standby is promoted.
    let stopping = primary.clone();
    tokio::task::spawn_blocking(move || stopping.stop().unwrap())
        .await
        .unwrap();
    let promoter = by_role(&user, &[standby], "any");
    let promoted: bool = promoter
        .scalar("SELECT pg_promote(true, 10)", ())
        .await
        .unwrap();
    assert!(promoted);
    promoter.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match m.execute("INSERT INTO ledger VALUES (2)", ()).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "writes never resumed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!in_recovery(&m).await.unwrap());

    // The old primary comes back, still a primary: coredb writes to neither.
    let starting = primary.clone();
    tokio::task::spawn_blocking(move || starting.start_again().unwrap())
        .await
        .unwrap();
    let fresh = by_role(&user, &[&primary, standby], "read-write");
    let err = fresh
        .execute("INSERT INTO ledger VALUES (3)", ())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(!err.is_transient(), "{err}");
    let text = err.to_string();
    assert!(text.contains("two primaries"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", primary.port())),
        "{text}"
    );
    assert!(
        text.contains(&format!("127.0.0.1:{}", standby.port())),
        "{text}"
    );
    // Nothing reached the old primary.
    let old = by_role(&user, &[&primary], "any");
    let rows: i64 = old.scalar("SELECT count(*) FROM ledger", ()).await.unwrap();
    assert_eq!(rows, 1, "only what it had before the failover");
    old.close().await;
    fresh.close().await;
    m.close().await;
}

/// Waits until every standby has replayed what the primary wrote so far.
async fn replayed_everywhere(m: &DatabaseManager, standbys: &[EmbeddedServer]) {
    let target: String = m
        .scalar("SELECT pg_current_wal_insert_lsn()::text", ())
        .await
        .unwrap();
    for standby in standbys {
        let one = by_port(standby);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done: bool = one
                .scalar(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    (&target,),
                )
                .await
                .unwrap();
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "the standby never caught up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        one.close().await;
    }
}

/// A manager on one server alone.
fn by_port(server: &EmbeddedServer) -> DatabaseManager {
    by_role(server.user(), &[server], "any")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_sees_every_write_right_after_it_commits() {
    // As PostgreSQL ships (the embedded server turns it off for speed): a commit's WAL is
    // flushed, and so sent to the standbys, when it returns.
    let (primary, standbys) = cluster_with(2, &[("synchronous_commit", "on")]).await;
    let m = DatabaseManager::from_config(&config(&primary, &standbys)).unwrap();
    m.execute("CREATE TABLE notes (id int PRIMARY KEY)", ())
        .await
        .unwrap();
    replayed_everywhere(&m, &standbys).await;

    // Without it, a read right after a write often misses it (how often is the machine's).
    let plain = m.reader();
    let mut plain_missed = 0;
    for id in 0..100 {
        m.execute("INSERT INTO notes VALUES ($1)", (id,))
            .await
            .unwrap();
        let seen: Option<i32> = plain
            .fetch_optional("SELECT id FROM notes WHERE id = $1", (id,))
            .await
            .unwrap()
            .map(|(id,): (i32,)| id);
        plain_missed += usize::from(seen.is_none());
    }

    // With it: 300 writes, each read back at once, half written in transactions.
    let scope = m.read_your_writes();
    let reader = scope.reader();
    let (mut seen, mut on_standby, mut waits) = (0, 0, Vec::new());
    for id in 1000..1300 {
        if id % 2 == 0 {
            scope
                .execute("INSERT INTO notes VALUES ($1)", (id,))
                .await
                .unwrap();
        } else {
            scope
                .transaction(async |s| s.execute("INSERT INTO notes VALUES ($1)", (id,)).await)
                .await
                .unwrap();
        }
        let t0 = Instant::now();
        let row: Option<(i32, bool)> = reader
            .fetch_optional(
                "SELECT id, pg_is_in_recovery() FROM notes WHERE id = $1",
                (id,),
            )
            .await
            .unwrap();
        waits.push(t0.elapsed());
        if let Some((_, standby)) = row {
            seen += 1;
            on_standby += usize::from(standby);
        }
    }
    waits.sort();
    eprintln!(
        "read-your-writes: {seen}/300 seen, {on_standby} of them on a standby, read time \
         median {:?}, max {:?}; a plain reader missed {plain_missed}/100",
        waits[150], waits[299]
    );
    assert_eq!(seen, 300, "every write is seen by the read after it");
    assert!(on_standby > 0, "the standbys serve reads once caught up");

    // A standby that stops replaying: the scope's reads go to the primary after the wait.
    for standby in &standbys {
        by_port(standby)
            .execute("SELECT pg_wal_replay_pause()", ())
            .await
            .unwrap();
    }
    for id in 2000..2020 {
        scope
            .execute("INSERT INTO notes VALUES ($1)", (id,))
            .await
            .unwrap();
        let (_, standby): (i32, bool) = reader
            .fetch_one(
                "SELECT id, pg_is_in_recovery() FROM notes WHERE id = $1",
                (id,),
            )
            .await
            .unwrap();
        assert!(!standby, "read from the primary");
    }
    // A scope that wrote nothing reads from the standbys, paused or not.
    let fresh = m.read_your_writes().reader();
    let standby: bool = fresh
        .scalar("SELECT pg_is_in_recovery()", ())
        .await
        .unwrap();
    assert!(standby);
    for standby in &standbys {
        by_port(standby)
            .execute("SELECT pg_wal_replay_resume()", ())
            .await
            .unwrap();
    }
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_lagging_past_read_max_lag_leaves_rotation_until_it_catches_up() {
    let (primary, standbys) = cluster(2).await;
    let config = config(&primary, &standbys)
        .to_builder()
        .read_max_lag(Some(Duration::from_millis(500)))
        .build()
        .unwrap();
    let m = DatabaseManager::from_config(&config).unwrap();
    m.execute("CREATE TABLE ticks (at timestamptz)", ())
        .await
        .unwrap();
    let reader = m.reader();
    let ports = |n: usize| {
        let reader = reader.clone();
        async move {
            let mut seen = std::collections::BTreeMap::new();
            for _ in 0..n {
                let port: i32 = reader
                    .scalar("SELECT inet_server_port()", ())
                    .await
                    .unwrap();
                *seen.entry(port).or_insert(0) += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        }
    };
    let (lagging, healthy) = (i32::from(standbys[0].port()), i32::from(standbys[1].port()));
    // Both in rotation once measured.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = ports(20).await;
        if seen.contains_key(&lagging) && seen.contains_key(&healthy) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both standbys never served: {seen:?}"
        );
    }

    // Its lag is dated by the last commit it replayed: the CREATE TABLE's, once it got there.
    let standby = by_port(&standbys[0]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !standby
        .scalar::<bool, _>("SELECT pg_last_xact_replay_timestamp() IS NOT NULL", ())
        .await
        .unwrap()
    {
        assert!(Instant::now() < deadline, "the standby replayed no commit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One standby stops replaying while the primary keeps writing.
    by_port(&standbys[0])
        .execute("SELECT pg_wal_replay_pause()", ())
        .await
        .unwrap();
    let writing = {
        let m = m.clone();
        tokio::spawn(async move {
            loop {
                m.execute("INSERT INTO ticks VALUES (now())", ())
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = ports(40).await;
        if !seen.contains_key(&lagging) {
            assert_eq!(seen.get(&healthy), Some(&40), "{seen:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lagging standby kept serving: {seen:?}"
        );
    }
    // The health check connects to each replica within the connect timeout (1 s here): on a
    // loaded machine one attempt may not answer in time, so a few are allowed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (report, behind) = loop {
        let report = m.health_report().await;
        let behind = report
            .replicas
            .as_ref()
            .unwrap()
            .iter()
            .find(|r| r.address.ends_with(&format!(":{lagging}")))
            .unwrap()
            .clone();
        if behind.lag_ms.is_some() || Instant::now() > deadline {
            break (report, behind);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(report.status, HealthStatus::Degraded, "{report:?}");
    assert!(!behind.healthy, "{behind:?}");
    assert!(behind.lag_ms.is_some_and(|lag| lag > 500.0), "{behind:?}");
    assert!(
        behind
            .error
            .as_deref()
            .unwrap()
            .contains("POSTGRES_READ_MAX_LAG"),
        "{behind:?}"
    );

    // Replaying again, it comes back.
    by_port(&standbys[0])
        .execute("SELECT pg_wal_replay_resume()", ())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = ports(20).await;
        if seen.contains_key(&lagging) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never came back: {seen:?}"
        );
    }
    writing.abort();
    m.close().await;
}

/// What one writer saw during a failover.
#[derive(Default)]
struct Writes {
    /// Acknowledged `(writer, seq)`, with when.
    acked: Vec<(i32, i32, Instant)>,
    /// Errors by kind.
    errors: std::collections::BTreeMap<String, usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_under_sixteen_writers_loses_no_acknowledged_commit_and_the_old_primary_gets_none(
) {
    let (primary, standbys) = cluster_with(1, &[("synchronous_commit", "on")]).await;
    let user = primary.user().to_owned();
    let primary = std::sync::Arc::new(primary);
    let standby = &standbys[0];
    // Synchronous replication, set on the primary only (the standby has no standby of its own
    // once promoted).
    let admin = by_port(&primary);
    admin
        .execute("ALTER SYSTEM SET synchronous_standby_names = '*'", ())
        .await
        .unwrap();
    admin.execute("SELECT pg_reload_conf()", ()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin
        .scalar::<Option<String>, _>("SELECT max(sync_state) FROM pg_stat_replication", ())
        .await
        .unwrap()
        .as_deref()
        != Some("sync")
    {
        assert!(
            Instant::now() < deadline,
            "the standby never became synchronous"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin.close().await;

    let m = by_role(&user, &[&primary, standby], "read-write");
    m.execute(
        "CREATE TABLE acks (writer int, seq int, PRIMARY KEY (writer, seq))",
        (),
    )
    .await
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..16)
        .map(|writer| {
            let (m, stop) = (m.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Writes::default();
                let mut seq = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    seq += 1;
                    let wrote = m
                        .transaction(async |s| {
                            s.execute("INSERT INTO acks VALUES ($1, $2)", (writer, seq))
                                .await
                        })
                        .await;
                    match wrote {
                        Ok(_) => seen.acked.push((writer, seq, Instant::now())),
                        Err(e) => {
                            *seen.errors.entry(format!("{:?}", e.kind())).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                seen
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    // The primary crashes; the standby is promoted.
    let crashing = primary.clone();
    let killed_at = Instant::now();
    tokio::task::spawn_blocking(move || crashing.kill().unwrap())
        .await
        .unwrap();
    let promoter = by_port(standby);
    let promoted: bool = promoter
        .scalar("SELECT pg_promote(true, 10)", ())
        .await
        .unwrap();
    let promoted_at = Instant::now();
    assert!(promoted);
    promoter.close().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The old primary comes back, still a primary: from now on, it gets no write.
    let starting = primary.clone();
    tokio::task::spawn_blocking(move || starting.start_again().unwrap())
        .await
        .unwrap();
    let old = by_port(&primary);
    let old_rows: i64 = old.scalar("SELECT count(*) FROM acks", ()).await.unwrap();
    let fresh = by_role(&user, &[&primary, standby], "read-write");
    let refused = futures_util::future::join_all((0..16).map(|n| {
        let fresh = fresh.clone();
        async move {
            fresh
                .transaction(async |s| s.execute("INSERT INTO acks VALUES (-1, $1)", (n,)).await)
                .await
        }
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Writes::default();
    for writer in writers {
        let seen = writer.await.unwrap();
        all.acked.extend(seen.acked);
        for (kind, n) in seen.errors {
            *all.errors.entry(kind).or_default() += n;
        }
    }
    for outcome in &refused {
        let err = outcome.as_ref().unwrap_err();
        assert!(err.to_string().contains("two primaries"), "{err}");
    }
    let old_rows_after: i64 = old.scalar("SELECT count(*) FROM acks", ()).await.unwrap();
    assert_eq!(old_rows_after, old_rows, "the old primary got a write");
    old.close().await;

    // Every acknowledged commit is on the new primary.
    let new = by_port(standby);
    let kept: std::collections::BTreeSet<(i32, i32)> = new
        .fetch_all::<(i32, i32), _>("SELECT writer, seq FROM acks", ())
        .await
        .unwrap()
        .into_iter()
        .collect();
    let lost = all
        .acked
        .iter()
        .filter(|(w, s, _)| !kept.contains(&(*w, *s)))
        .count();
    let before = all.acked.iter().filter(|(.., at)| *at < killed_at).count();
    let resumed = all
        .acked
        .iter()
        .filter(|(.., at)| *at > promoted_at)
        .map(|(.., at)| *at - promoted_at)
        .min()
        .expect("writes resumed");
    let last_before = all
        .acked
        .iter()
        .filter(|(.., at)| *at < killed_at)
        .map(|(.., at)| killed_at - *at)
        .min()
        .unwrap();
    eprintln!(
        "failover: {} commits acknowledged ({before} before the crash), {lost} lost; \
         writes resumed {resumed:?} after promotion ({:?} after the crash, the last commit \
         before it {last_before:?} earlier); errors by kind {:?}; 16 new write sessions \
         refused while the old primary was back",
        all.acked.len(),
        promoted_at - killed_at + resumed,
        all.errors,
    );
    assert_eq!(lost, 0, "acknowledged commits lost");
    assert!(before > 0 && all.acked.len() > before);
    assert!(
        resumed < Duration::from_secs(1),
        "writes resumed {resumed:?} after promotion"
    );
    new.close().await;
    fresh.close().await;
    m.close().await;
}
