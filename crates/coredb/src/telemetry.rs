//! What coredb tells [`tracing`] and the [`metrics`] facade, named after OpenTelemetry's
//! database semantic conventions.
//!
//! Nothing is exported from inside the library: install a `tracing` subscriber (for example
//! `tracing-opentelemetry`) and a `metrics` recorder (for example
//! `metrics-exporter-prometheus`) in the service, **before** creating the
//! [`DatabaseManager`](crate::DatabaseManager): a pool registers its instruments with the
//! recorder installed when it is created. With neither installed, each costs a branch.
//!
//! # Spans
//!
//! All with target `coredb` at `INFO`, so `RUST_LOG=coredb=warn` turns them off:
//!
//! | span | when | fields |
//! |------|------|--------|
//! | `statement` | every statement, wherever it runs | `db.system.name` (`postgresql`), `db.namespace`, `db.operation.name` (the leading keyword, e.g. `SELECT`), `db.query.text` (the text as sent, never a parameter value), `server.address`, `server.port`, `db.response.returned_rows`, `db.response.status_code` and `error.type` (the SQLSTATE, or coredb's [`ErrorKind`](crate::ErrorKind)), `coredb.role` (`primary` or `replica`), `otel.name`, `otel.kind`, `otel.status_code` |
//! | `checkout` | taking a connection from the pool | `db.client.connection.pool.name`, `coredb.pool.wait_ms`, `error.type` |
//! | `connect` | each attempt to open a connection | `db.client.connection.pool.name`, `coredb.attempt`, `error.type` |
//! | `transaction` | a [`Session`](crate::Session), from `BEGIN` to its end | `db.namespace`, `db.client.connection.pool.name`, `coredb.outcome` (`committed`, `rolled back`, `unknown`), `coredb.attempt` |
//! | `retry` | [`transaction_with_retry`](crate::DatabaseManager::transaction_with_retry) and the read-only retry of a read whose connection was lost | `coredb.attempts`, `error.type` |
//! | `copy` | a binary `COPY ... FROM STDIN` | `db.namespace`, `db.query.text`, `db.response.returned_rows` |
//!
//! Statements run in a session are children of its `transaction` span.
//!
//! # Metrics
//!
//! Every metric carries `db.client.connection.pool.name` (`host:port/database`, as the
//! conventions suggest when a pool has no name of its own) except the statement histogram,
//! which carries the statement's attributes instead. Durations are in seconds.
//!
//! | name | kind | labels |
//! |------|------|--------|
//! | [`OPERATION_DURATION`] | histogram | `db.system.name`, `db.namespace`, `db.operation.name`, `server.address`, `server.port`, `coredb.role`; `error.type` when it failed |
//! | [`CONNECTION_COUNT`] | gauge | `db.client.connection.state` = `idle` or `used` |
//! | [`CONNECTION_MAX`], [`CONNECTION_IDLE_MAX`] | gauge | |
//! | [`CONNECTION_PENDING_REQUESTS`] | gauge | |
//! | [`CONNECTION_TIMEOUTS`] | counter | |
//! | [`CONNECTION_WAIT_TIME`], [`CONNECTION_USE_TIME`], [`CONNECTION_CREATE_TIME`] | histogram | |
//! | [`CONNECTIONS_OPENED`] | counter | |
//! | [`CONNECTIONS_CLOSED`] | counter | `reason` = `broken`, `recycled`, `overflow`, `discarded`, `pool_closed` |
//! | [`CONNECT_FAILURES`] | counter | |
//! | [`RETRIES`] | counter | `db.namespace`, `coredb.retry` = `transaction`, `read`, or `shared_sync` (a read the server skipped under a Sync it shared with a failing one, run again on its own) |
//! | [`COMMITS_UNKNOWN_OUTCOME`] | counter | `db.namespace` |
//! | [`SLOW_STATEMENTS`] | counter | `db.namespace`, `db.operation.name` |
//! | [`LISTENER_RECONNECTS`] | counter | `db.namespace` |
//! | [`LISTENERS_CONNECTED`] | gauge | `db.namespace` |
//!
//! A Prometheus exporter writes the dots as underscores (`db_client_operation_duration_seconds`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Histogram, Label, SharedString, Unit};

use crate::config::DatabaseConfig;
use crate::error::Error;
use crate::sql::StatementClass;

/// Statement duration (histogram, seconds).
pub const OPERATION_DURATION: &str = "db.client.operation.duration";
/// Open connections by state, `idle` or `used` (gauge).
pub const CONNECTION_COUNT: &str = "db.client.connection.count";
/// The most connections the pool may open: `pool_size + max_overflow` (gauge).
pub const CONNECTION_MAX: &str = "db.client.connection.max";
/// The most idle connections the pool keeps: `pool_size` (gauge).
pub const CONNECTION_IDLE_MAX: &str = "db.client.connection.idle.max";
/// Callers waiting for a connection (gauge).
pub const CONNECTION_PENDING_REQUESTS: &str = "db.client.connection.pending_requests";
/// Checkouts that gave up after the pool timeout (counter).
pub const CONNECTION_TIMEOUTS: &str = "db.client.connection.timeouts";
/// Time to obtain a connection from the pool, opening included (histogram, seconds).
pub const CONNECTION_WAIT_TIME: &str = "db.client.connection.wait_time";
/// Time between a checkout and the connection's return (histogram, seconds).
pub const CONNECTION_USE_TIME: &str = "db.client.connection.use_time";
/// Time to open a connection (histogram, seconds).
pub const CONNECTION_CREATE_TIME: &str = "db.client.connection.create_time";
/// Connections opened (counter).
pub const CONNECTIONS_OPENED: &str = "coredb.connections.opened";
/// Connections closed, by `reason` (counter).
pub const CONNECTIONS_CLOSED: &str = "coredb.connections.closed";
/// Connection attempts that failed (counter).
pub const CONNECT_FAILURES: &str = "coredb.connect.failures";
/// Transactions or reads run again after a transient error (counter).
pub const RETRIES: &str = "coredb.retries";
/// Commits whose reply was lost and whose outcome could not be learnt (counter).
pub const COMMITS_UNKNOWN_OUTCOME: &str = "coredb.commits.unknown_outcome";
/// Listeners whose connection is up (gauge).
pub const LISTENERS_CONNECTED: &str = "coredb.listeners.connected";
/// Listener connections lost and opened again (counter).
pub const LISTENER_RECONNECTS: &str = "coredb.listener.reconnects";
/// Statements over `POSTGRES_SLOW_STATEMENT_MS` (counter).
pub const SLOW_STATEMENTS: &str = "coredb.statements.slow";

/// The label naming the pool.
pub(crate) const POOL_NAME: &str = "db.client.connection.pool.name";

/// Describes coredb's metrics (units and help texts) to the recorder installed now, once per
/// recorder a pool is created under.
pub(crate) fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        OPERATION_DURATION,
        Unit::Seconds,
        "Duration of database statements"
    );
    describe_gauge!(
        CONNECTION_COUNT,
        "Open connections, by state (idle or used)"
    );
    describe_gauge!(CONNECTION_MAX, "The most connections the pool may open");
    describe_gauge!(
        CONNECTION_IDLE_MAX,
        "The most idle connections the pool keeps"
    );
    describe_gauge!(
        CONNECTION_PENDING_REQUESTS,
        "Callers waiting for a connection"
    );
    describe_counter!(
        CONNECTION_TIMEOUTS,
        "Checkouts that gave up after the pool timeout"
    );
    describe_histogram!(
        CONNECTION_WAIT_TIME,
        Unit::Seconds,
        "Time to obtain a connection from the pool"
    );
    describe_histogram!(
        CONNECTION_USE_TIME,
        Unit::Seconds,
        "Time a connection was held by its caller"
    );
    describe_histogram!(
        CONNECTION_CREATE_TIME,
        Unit::Seconds,
        "Time to open a connection"
    );
    describe_counter!(CONNECTIONS_OPENED, "Connections opened");
    describe_counter!(CONNECTIONS_CLOSED, "Connections closed, by reason");
    describe_counter!(CONNECT_FAILURES, "Connection attempts that failed");
    describe_counter!(RETRIES, "Work run again after a transient error");
    describe_counter!(
        COMMITS_UNKNOWN_OUTCOME,
        "Commits whose outcome could not be learnt"
    );
    describe_counter!(
        SLOW_STATEMENTS,
        "Statements over the slow-statement threshold"
    );
    describe_gauge!(LISTENERS_CONNECTED, "Listeners whose connection is up");
    describe_counter!(
        LISTENER_RECONNECTS,
        "Listener connections lost and opened again"
    );
}

/// Where one database's statements go: the attributes of their spans and metrics.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `db.namespace`: the database name.
    pub(crate) namespace: Arc<str>,
    /// `server.address`: the first configured host.
    pub(crate) address: Arc<str>,
    /// `server.port`.
    pub(crate) port: u16,
    /// `db.client.connection.pool.name`: `address:port/namespace`.
    pub(crate) pool_name: Arc<str>,
    /// `coredb.role`: `primary` or `replica`.
    pub(crate) role: &'static str,
}

impl Target {
    /// The target of `config`'s pool; `replica` for the read replicas' pool.
    pub(crate) fn of(config: &DatabaseConfig, replica: bool) -> Self {
        let (address, port) = config
            .host_ports()
            .next()
            .map(|(h, p)| (h.to_string(), p))
            .unwrap_or_else(|| ("localhost".to_string(), 5432));
        let namespace = config.dbname.as_str();
        Target {
            pool_name: format!("{address}:{port}/{namespace}").into(),
            namespace: namespace.into(),
            address: address.into(),
            port,
            role: if replica { "replica" } else { "primary" },
        }
    }

    /// A label whose value is one of the target's shared strings (no copy of the text).
    fn label(key: &'static str, value: &Arc<str>) -> Label {
        Label::new(key, SharedString::from(Arc::clone(value)))
    }

    /// The labels of a statement's duration.
    fn statement_labels(&self, operation: &'static str) -> Vec<Label> {
        vec![
            Label::from_static_parts("db.system.name", "postgresql"),
            Self::label("db.namespace", &self.namespace),
            Label::from_static_parts("db.operation.name", operation),
            Self::label("server.address", &self.address),
            Label::new("server.port", self.port.to_string()),
            Label::from_static_parts("coredb.role", self.role),
        ]
    }

    /// Moves the gauge `name` of this database by `delta`.
    pub(crate) fn adjust(&self, name: &'static str, delta: f64) {
        metrics::gauge!(name, vec![Self::label("db.namespace", &self.namespace)]).increment(delta);
    }

    /// Counts one event of `name` for this database, with `extra` labels.
    pub(crate) fn count(&self, name: &'static str, extra: &[(&'static str, &'static str)]) {
        let mut labels = vec![Self::label("db.namespace", &self.namespace)];
        labels.extend(extra.iter().map(|(k, v)| Label::from_static_parts(k, v)));
        metrics::counter!(name, labels).increment(1);
    }
}

/// The statement instruments of one database: a duration histogram per operation, registered
/// at its first use, so a statement's record takes no allocation.
pub(crate) struct StatementInstruments {
    target: Target,
    /// By [`StatementClass::operation_id`].
    durations: Box<[OnceLock<Histogram>]>,
}

impl StatementInstruments {
    /// Instruments for the statements of `target`.
    pub(crate) fn new(target: Target) -> Self {
        StatementInstruments {
            target,
            durations: (0..=u8::MAX).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Where the statements go.
    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// Records a finished statement's duration; a failed one carries its `error.type`.
    pub(crate) fn record(&self, class: StatementClass, elapsed: Duration, error: Option<&Error>) {
        let operation = operation_name(class);
        match error {
            None => self.durations[usize::from(class.operation_id())]
                .get_or_init(|| {
                    metrics::histogram!(OPERATION_DURATION, self.target.statement_labels(operation))
                })
                .record(elapsed),
            Some(err) => {
                let mut labels = self.target.statement_labels(operation);
                labels.push(Label::new("error.type", error_type(err)));
                metrics::histogram!(OPERATION_DURATION, labels).record(elapsed);
            }
        }
    }
}

/// The `db.operation.name` of a statement: its leading keyword, or `unknown`.
pub(crate) fn operation_name(class: StatementClass) -> &'static str {
    class.operation().unwrap_or("unknown")
}

/// The `error.type` of an error: its SQLSTATE when the server sent one, otherwise coredb's
/// [`ErrorKind`](crate::ErrorKind).
pub(crate) fn error_type(err: &Error) -> String {
    match err.code() {
        Some(code) => code.code().to_string(),
        None => format!("{:?}", err.kind()),
    }
}

/// Whether a subscriber takes coredb's spans (target `coredb`, INFO). When none does, the
/// hot paths make no span at all: a disabled span still carries its metadata, and with
/// tracing's `log` feature on (some crates turn it on) its fields are formatted for `log` and
/// its every use checked against it, hundreds of instructions per statement.
pub(crate) fn listened() -> bool {
    tracing::span_enabled!(target: "coredb", tracing::Level::INFO)
}

/// `work` inside `span`, or `work` alone when no subscriber takes the span: entering and
/// leaving a disabled span still costs on every poll (hundreds of instructions per statement
/// when `tracing`'s `log` feature is on, as some crates turn it on).
pub(crate) fn in_span<F: std::future::Future>(
    span: &tracing::Span,
    work: F,
) -> futures_util::future::Either<F, tracing::instrument::Instrumented<F>> {
    use tracing::Instrument as _;
    if span.is_disabled() {
        futures_util::future::Either::Left(work)
    } else {
        futures_util::future::Either::Right(work.instrument(span.clone()))
    }
}

/// The span of one statement; `db.response.returned_rows` and the error fields are recorded
/// when it ends (see [`end_statement_span`]).
pub(crate) fn statement_span(target: &Target, class: StatementClass, text: &str) -> tracing::Span {
    if !listened() {
        return tracing::Span::none();
    }
    let operation = class.operation();
    tracing::info_span!(
        target: "coredb",
        "statement",
        otel.name = operation.unwrap_or("postgresql"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = "postgresql",
        db.namespace = &*target.namespace,
        db.operation.name = operation,
        db.query.text = text,
        server.address = &*target.address,
        server.port = target.port,
        coredb.role = target.role,
        db.response.returned_rows = tracing::field::Empty,
        db.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Records how a statement ended on its span: the rows it returned or affected, or its error.
pub(crate) fn end_statement_span(span: &tracing::Span, rows: Option<u64>, error: Option<&Error>) {
    if span.is_disabled() {
        return;
    }
    if let Some(rows) = rows {
        span.record("db.response.returned_rows", rows);
    }
    if let Some(err) = error {
        record_error(span, err);
        if let Some(code) = err.code() {
            span.record("db.response.status_code", code.code());
        }
    }
}

/// Records `err` on `span` as OpenTelemetry expects: `error.type` and an error status.
pub(crate) fn record_error(span: &tracing::Span, err: &Error) {
    if span.is_disabled() {
        return;
    }
    span.record("error.type", error_type(err));
    span.record("otel.status_code", "ERROR");
}
