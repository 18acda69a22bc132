//! Spans and metrics: names and fields after OpenTelemetry's database conventions, captured
//! with an in-memory subscriber and recorder; slow statements; pool timeouts that name the
//! holder; and no password or parameter value anywhere.

mod support;

use std::time::Duration;

use coredb::{params, telemetry, ErrorKind, Executor, RetryPolicy, SessionOptions};
use coredb_testkit::TestDatabase;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use support::span_capture::Spans;
use tracing::Instrument as _;

const PASSWORD: &str = "pw-that-must-never-be-seen";
const SECRET_VALUE: &str = "value-that-must-never-be-seen";

/// A metric's value, summed over the recorder's snapshots.
#[derive(Debug, Clone)]
enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(Vec<f64>),
}

/// A metric: kind, name, labels, value.
type Metric = (MetricKind, String, Vec<(String, String)>, Value);

/// A test's in-memory subscriber and metrics recorder, installed on its thread (the test
/// runtime runs every task there) before the database and its pool are made.
struct Capture {
    spans: Spans,
    snapshotter: Snapshotter,
    seen: std::sync::Mutex<Vec<Metric>>,
    _subscriber: tracing::subscriber::DefaultGuard,
    _recorder: metrics::LocalRecorderGuard<'static>,
}

impl Capture {
    fn install() -> Self {
        let spans = Spans::default();
        let subscriber = support::span_capture::set_default(spans.subscriber());
        let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
        let snapshotter = recorder.snapshotter();
        let guard = metrics::set_default_local_recorder(recorder);
        Capture {
            spans,
            snapshotter,
            seen: Default::default(),
            _subscriber: subscriber,
            _recorder: guard,
        }
    }

    /// Every metric so far: kind, name, labels, value. The recorder's snapshots take what
    /// they report (counters and gauges back to 0, histograms emptied), so each is added to
    /// what earlier ones took: counters and gauges summed (coredb's gauges move by steps, or
    /// are set once), histogram samples appended.
    fn metrics(&self) -> Vec<Metric> {
        let mut seen = self.seen.lock().unwrap();
        for (key, _unit, _description, value) in self.snapshotter.snapshot().into_vec() {
            let (kind, key): (MetricKind, _) = CompositeKey::into_parts(key);
            let labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            let name = key.name().to_string();
            let entry = seen
                .iter_mut()
                .find(|(k, n, l, _)| *k == kind && *n == name && *l == labels);
            let value = match value {
                DebugValue::Counter(n) => Value::Counter(n),
                DebugValue::Gauge(v) => Value::Gauge(v.into_inner()),
                DebugValue::Histogram(v) => {
                    Value::Histogram(v.into_iter().map(|x| x.into_inner()).collect())
                }
            };
            match (entry, value) {
                (None, value) => seen.push((kind, name, labels, value)),
                (Some((_, _, _, Value::Counter(a))), Value::Counter(b)) => *a += b,
                (Some((_, _, _, Value::Gauge(a))), Value::Gauge(b)) => *a += b,
                (Some((_, _, _, Value::Histogram(a))), Value::Histogram(b)) => a.extend(b),
                (Some(_), value) => panic!("{name} changed kind: {value:?}"),
            }
        }
        seen.clone()
    }

    /// The metric named `name` whose labels include every one of `labels`.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
        self.metrics()
            .into_iter()
            .find(|(_, n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, _, value)| value)
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.metric(name, labels) {
            Some(Value::Counter(n)) => n,
            None => 0,
            other => panic!("{name} is not a counter: {other:?}"),
        }
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.metric(name, labels) {
            Some(Value::Gauge(v)) => v,
            other => panic!("{name} is not a gauge here: {other:?}"),
        }
    }

    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.metric(name, labels) {
            Some(Value::Histogram(v)) => v,
            None => Vec::new(),
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }

    /// Every metric name and label, as text.
    fn metrics_text(&self) -> String {
        format!("{:?}", self.metrics())
    }
}

#[tokio::test]
async fn a_statement_span_carries_the_database_conventions_and_never_a_value() {
    let capture = Capture::install();
    let db = TestDatabase::with_config(|b| b.password(PASSWORD))
        .await
        .unwrap();
    let m = db.manager();
    let port = m.config().ports()[0].to_string();

    let rows = m
        .query(
            "SELECT :v::text AS v, n FROM generate_series(1, 3) AS n",
            params! { "v" => SECRET_VALUE },
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let err = m.execute("SELEC 1", ()).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42601");

    let statements = capture.spans.named("statement");
    let select = statements
        .iter()
        .find(|s| s.field("db.operation.name") == Some("SELECT"))
        .expect("a span for the SELECT");
    assert_eq!(select.target, "coredb");
    assert_eq!(select.field("db.system.name"), Some("postgresql"));
    assert_eq!(select.field("db.namespace"), Some(db.name()));
    assert_eq!(
        select.field("db.query.text"),
        Some("SELECT $1::text AS v, n FROM generate_series(1, 3) AS n")
    );
    assert_eq!(
        select.field("server.address"),
        Some(m.config().hosts()[0].as_str())
    );
    assert_eq!(select.field("server.port"), Some(port.as_str()));
    assert_eq!(select.field("db.response.returned_rows"), Some("3"));
    assert_eq!(select.field("otel.name"), Some("SELECT"));
    assert_eq!(select.field("otel.kind"), Some("client"));
    assert_eq!(select.field("coredb.role"), Some("primary"));
    assert_eq!(select.field("error.type"), None);

    let failed = statements
        .iter()
        .find(|s| s.field("db.query.text") == Some("SELEC 1"))
        .expect("a span for the failed statement");
    assert_eq!(failed.field("error.type"), Some("42601"));
    assert_eq!(failed.field("db.response.status_code"), Some("42601"));
    assert_eq!(failed.field("otel.status_code"), Some("ERROR"));
    assert_eq!(
        failed.field("otel.name"),
        Some("postgresql"),
        "no known operation"
    );

    let text = capture.spans.all_text() + &capture.metrics_text();
    assert!(!text.contains(SECRET_VALUE), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    m.close().await;
}

#[tokio::test]
async fn statements_in_a_session_are_children_of_its_transaction_span() {
    let capture = Capture::install();
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    m.execute("CREATE TABLE t (x int)", ()).await.unwrap();

    let mut s = m.session().await.unwrap();
    s.execute("INSERT INTO t VALUES (1), (2)", ())
        .await
        .unwrap();
    let n: i64 = s.scalar("SELECT count(*) FROM t", ()).await.unwrap();
    assert_eq!(n, 2);
    s.commit().await.unwrap();

    let mut dropped = m.session().await.unwrap();
    dropped
        .execute("INSERT INTO t VALUES (3)", ())
        .await
        .unwrap();
    drop(dropped);

    let transactions = capture.spans.named("transaction");
    assert_eq!(transactions.len(), 2, "{transactions:?}");
    assert_eq!(transactions[0].field("coredb.outcome"), Some("committed"));
    assert_eq!(transactions[0].field("db.namespace"), Some(db.name()));
    assert_eq!(transactions[1].field("coredb.outcome"), Some("rolled back"));

    let insert = capture
        .spans
        .named("statement")
        .into_iter()
        .find(|s| s.field("db.query.text") == Some("INSERT INTO t VALUES (1), (2)"))
        .unwrap();
    assert_eq!(insert.ancestors.first(), Some(&"transaction"));
    assert_eq!(insert.field("db.operation.name"), Some("INSERT"));
    assert_eq!(insert.field("db.response.returned_rows"), Some("2"));

    let create = capture
        .spans
        .named("statement")
        .into_iter()
        .find(|s| s.field("db.operation.name") == Some("CREATE"))
        .unwrap();
    assert!(create.ancestors.is_empty(), "autocommit: {create:?}");

    let checkouts = capture.spans.named("checkout");
    assert!(checkouts.len() >= 2, "{checkouts:?}");
    let pool_name = format!(
        "{}:{}/{}",
        m.config().hosts()[0].as_str(),
        m.config().ports()[0],
        db.name()
    );
    assert!(checkouts
        .iter()
        .all(|c| c.field("db.client.connection.pool.name") == Some(pool_name.as_str())));
    let connects = capture.spans.named("connect");
    assert_eq!(connects[0].field("coredb.attempt"), Some("1"));
    m.close().await;
}

#[tokio::test]
async fn metrics_report_pool_gauges_counters_and_statement_durations() {
    let capture = Capture::install();
    let db = TestDatabase::with_config(|b| b.pool_size(3).max_overflow(2))
        .await
        .unwrap();
    let m = db.manager();
    let pool = format!(
        "{}:{}/{}",
        m.config().hosts()[0].as_str(),
        m.config().ports()[0],
        db.name()
    );
    let pool = [(telemetry_pool_label(), pool.as_str())];

    for i in 0..5 {
        let n: i32 = m.scalar("SELECT $1::int", (i,)).await.unwrap();
        assert_eq!(n, i);
    }
    let _ = m.execute("SELECT 1/0", ()).await.unwrap_err();
    {
        let mut a = m.get_connection().await.unwrap();
        let _b = m.get_connection().await.unwrap();
        a.execute("SELECT 1", ()).await.unwrap();
        assert_eq!(
            capture.gauge(
                telemetry::CONNECTION_COUNT,
                &[pool[0], ("db.client.connection.state", "used")]
            ),
            m.status().in_use as f64
        );
    }

    let status = m.status();
    assert_eq!(capture.gauge(telemetry::CONNECTION_MAX, &pool), 5.0);
    assert_eq!(capture.gauge(telemetry::CONNECTION_IDLE_MAX, &pool), 3.0);
    assert_eq!(
        capture.gauge(
            telemetry::CONNECTION_COUNT,
            &[pool[0], ("db.client.connection.state", "idle")]
        ),
        status.idle as f64
    );
    assert_eq!(
        capture.gauge(
            telemetry::CONNECTION_COUNT,
            &[pool[0], ("db.client.connection.state", "used")]
        ),
        0.0
    );
    assert_eq!(
        capture.counter(telemetry::CONNECTIONS_OPENED, &pool),
        m.metrics().created
    );
    assert_eq!(
        capture.gauge(telemetry::CONNECTION_PENDING_REQUESTS, &pool),
        0.0
    );
    let uses = capture.samples(telemetry::CONNECTION_USE_TIME, &pool);
    assert_eq!(uses.len() as u64, m.metrics().checkouts, "one per checkout");
    assert!(!capture
        .samples(telemetry::CONNECTION_WAIT_TIME, &pool)
        .is_empty());
    assert_eq!(
        capture
            .samples(telemetry::CONNECTION_CREATE_TIME, &pool)
            .len() as u64,
        m.metrics().created
    );

    let namespace = ("db.namespace", db.name());
    let selects = capture.samples(
        telemetry::OPERATION_DURATION,
        &[namespace, ("db.operation.name", "SELECT")],
    );
    // 5 scalars and the one on the checked-out connection; the failed one is apart.
    assert_eq!(selects.len(), 6, "{}", capture.metrics_text());
    assert!(
        selects.iter().all(|&s| s > 0.0 && s < 60.0),
        "seconds: {selects:?}"
    );
    let failed = capture.samples(
        telemetry::OPERATION_DURATION,
        &[namespace, ("error.type", "22012")],
    );
    assert_eq!(failed.len(), 1);
    assert!(capture
        .metric(
            telemetry::OPERATION_DURATION,
            &[
                namespace,
                ("db.system.name", "postgresql"),
                ("server.port", &m.config().ports()[0].to_string()),
                ("coredb.role", "primary"),
            ]
        )
        .is_some());

    m.close().await;
    assert_eq!(
        capture.counter(
            telemetry::CONNECTIONS_CLOSED,
            &[pool[0], ("reason", "pool_closed")]
        ),
        m.metrics().closed_pool_closed
    );
    assert_eq!(
        capture.gauge(
            telemetry::CONNECTION_COUNT,
            &[pool[0], ("db.client.connection.state", "idle")]
        ),
        0.0
    );
}

/// The label that names the pool.
fn telemetry_pool_label() -> &'static str {
    "db.client.connection.pool.name"
}

#[tokio::test]
async fn a_retried_transaction_is_one_retry_span_and_one_retry_counted() {
    let capture = Capture::install();
    let db = TestDatabase::new().await.unwrap();
    let m = db.manager();
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let policy = RetryPolicy::default();
    let n: i32 = m
        .transaction_with_retry(SessionOptions::default(), &policy, async |s| {
            if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                s.execute(
                    "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$",
                    (),
                )
                .await?;
            }
            s.scalar("SELECT 7", ()).await
        })
        .await
        .unwrap();
    assert_eq!(n, 7);

    let retries = capture.spans.named("retry");
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert_eq!(retries[0].field("coredb.retry"), Some("transaction"));
    assert_eq!(retries[0].field("coredb.attempts"), Some("2"));
    let transactions = capture.spans.named("transaction");
    assert_eq!(transactions.len(), 2);
    assert!(transactions
        .iter()
        .all(|t| t.ancestors.first() == Some(&"retry")));
    assert_eq!(transactions[0].field("coredb.outcome"), Some("rolled back"));
    assert_eq!(transactions[1].field("coredb.outcome"), Some("committed"));
    let failed = capture
        .spans
        .named("statement")
        .into_iter()
        .find(|s| s.field("error.type") == Some("40001"))
        .expect("the failed statement's span");
    assert_eq!(failed.ancestors, ["transaction", "retry"]);

    assert_eq!(
        capture.counter(
            telemetry::RETRIES,
            &[("db.namespace", db.name()), ("coredb.retry", "transaction")]
        ),
        1
    );
    m.close().await;
}

#[tokio::test]
async fn a_pool_timeout_names_the_holders_file_line_and_span() {
    let capture = Capture::install();
    let db = TestDatabase::with_config(|b| {
        b.pool_size(1)
            .max_overflow(0)
            .pool_timeout(Duration::from_millis(300))
    })
    .await
    .unwrap();
    let m = db.manager();
    // A handler running in its own span, as axum's TraceLayer makes one per request.
    let handler = tracing::info_span!("create_order_handler");
    let held_line = line!() + 1;
    let held = m.session().instrument(handler).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let err = m.get_connection().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolTimeout);
    let text = err.to_string();
    let place = format!("tests/telemetry.rs:{held_line}:");
    assert!(text.contains(&place), "{place} in: {text}");
    assert!(text.contains("in span `create_order_handler`"), "{text}");
    assert!(text.contains("POSTGRES_POOL_SIZE"), "{text}");

    let pool = format!(
        "{}:{}/{}",
        m.config().hosts()[0].as_str(),
        m.config().ports()[0],
        db.name()
    );
    assert_eq!(
        capture.counter(
            telemetry::CONNECTION_TIMEOUTS,
            &[(telemetry_pool_label(), pool.as_str())]
        ),
        1
    );
    let checkout = capture
        .spans
        .named("checkout")
        .into_iter()
        .find(|c| c.field("error.type").is_some())
        .expect("the failed checkout's span");
    assert_eq!(checkout.field("error.type"), Some("PoolTimeout"));
    let waited: f64 = checkout
        .field("coredb.pool.wait_ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(waited >= 300.0, "{waited}");
    held.rollback().await.unwrap();
    m.close().await;
}

#[tokio::test]
async fn slow_statements_are_logged_at_warn_without_values_even_with_echo_off() {
    let capture = Capture::install();
    let db = TestDatabase::with_config(|b| {
        b.echo(false)
            .slow_statement(Some(Duration::from_millis(100)))
    })
    .await
    .unwrap();
    let m = db.manager();
    m.execute("SELECT 1", ()).await.unwrap();
    m.execute(
        "SELECT pg_sleep(0.2), :v::text",
        params! { "v" => SECRET_VALUE },
    )
    .await
    .unwrap();

    let slow: Vec<_> = capture
        .spans
        .events()
        .into_iter()
        .filter(|e| {
            e.fields
                .get("message")
                .is_some_and(|m| m.starts_with("slow statement"))
        })
        .collect();
    assert_eq!(slow.len(), 1, "only the slow one: {slow:?}");
    let event = &slow[0];
    assert_eq!(event.level, tracing::Level::WARN);
    assert_eq!(
        event.fields.get("sql").map(String::as_str),
        Some("SELECT pg_sleep(0.2), $1::text")
    );
    let ms: f64 = event.fields["duration_ms"].parse().unwrap();
    assert!(ms >= 200.0, "{ms}");
    assert_eq!(event.fields.get("rows").map(String::as_str), Some("1"));
    assert!(event.fields["message"].contains("POSTGRES_SLOW_STATEMENT_MS is 100"));
    assert!(!capture.spans.all_text().contains(SECRET_VALUE));
    assert_eq!(
        capture.counter(
            telemetry::SLOW_STATEMENTS,
            &[("db.namespace", db.name()), ("db.operation.name", "SELECT")]
        ),
        1
    );
    m.close().await;
}

#[test]
fn slow_statement_threshold_is_read_from_the_environment_and_checked() {
    let config =
        coredb::DatabaseConfig::from_vars([("POSTGRES_SLOW_STATEMENT_MS", "250")]).unwrap();
    assert_eq!(config.slow_statement(), Some(Duration::from_millis(250)));
    let err =
        coredb::DatabaseConfig::from_vars([("POSTGRES_SLOW_STATEMENT_MS", "soon")]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("POSTGRES_SLOW_STATEMENT_MS"), "{text}");
    assert!(text.contains("whole number of milliseconds"), "{text}");
}

#[tokio::test]
async fn a_read_skipped_under_a_shared_sync_is_reported_once_by_its_run_alone_and_counted_as_a_retry(
) {
    let capture = Capture::install();
    let db = TestDatabase::with_config(|b| b.pool_size(4)).await.unwrap();
    let m = db.manager();
    // Reads from 64 tasks share Syncs on the pipelined lanes; one in seven fails.
    let failing = |n: i64| n % 7 == 3;
    let mut tasks = Vec::new();
    for t in 0..64i64 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            for n in (0..20).map(|i| t * 1000 + i) {
                if failing(n) {
                    let err = m.scalar::<i32, _>("SELECT 1 / $1::int", (0i32,)).await;
                    assert_eq!(
                        err.unwrap_err().code(),
                        Some(&coredb::SqlState::DIVISION_BY_ZERO)
                    );
                } else {
                    assert_eq!(
                        m.scalar::<i64, _>("SELECT $1::int8", (n,)).await.unwrap(),
                        n
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let failed = (0..64i64)
        .flat_map(|t| (0..20).map(move |i| t * 1000 + i))
        .filter(|&n| failing(n))
        .count();
    let namespace = ("db.namespace", db.name());
    let errors = |code| {
        capture
            .samples(
                telemetry::OPERATION_DURATION,
                &[namespace, ("error.type", code)],
            )
            .len()
    };
    // Each statement once: the failing ones with their own error, the skipped ones by their
    // run alone, never as the 25P02 the wire answered them with.
    assert_eq!(errors("22012"), failed, "{}", capture.metrics_text());
    assert_eq!(errors("25P02"), 0, "{}", capture.metrics_text());
    // Every series of statement durations, with an error or without.
    let statements: usize = capture
        .metrics()
        .into_iter()
        .filter(|(_, name, labels, _)| {
            name == telemetry::OPERATION_DURATION
                && labels
                    .iter()
                    .any(|(k, v)| k == namespace.0 && v == namespace.1)
        })
        .map(|(.., value)| match value {
            Value::Histogram(samples) => samples.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(statements, 64 * 20, "{}", capture.metrics_text());
    let retried = capture.counter(
        telemetry::RETRIES,
        &[namespace, ("coredb.retry", "shared_sync")],
    );
    assert!(retried > 0, "{}", capture.metrics_text());
    m.close().await;
}
