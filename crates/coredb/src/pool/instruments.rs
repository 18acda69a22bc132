//! The pool's metrics (through the `metrics` facade) and the record of who holds each
//! checked-out object, which a pool timeout reports.

use std::fmt::Write as _;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use tokio::time::Instant;

use super::{CloseReason, PoolOptions};
use crate::telemetry::{self, POOL_NAME};

/// The pool's instruments, registered once with the recorder installed when the pool is made.
pub(super) struct Instruments {
    /// The pool's name, `db.client.connection.pool.name`.
    pub(super) name: Arc<str>,
    idle: Gauge,
    used: Gauge,
    pub(super) pending: Gauge,
    pub(super) timeouts: Counter,
    pub(super) wait_time: Histogram,
    pub(super) use_time: Histogram,
    pub(super) create_time: Histogram,
    pub(super) opened: Counter,
    pub(super) connect_failures: Counter,
    /// By [`CloseReason`].
    closed: [Counter; 5],
}

impl Instruments {
    pub(super) fn new(name: String, options: &PoolOptions) -> Self {
        telemetry::describe_metrics();
        let name: Arc<str> = name.into();
        let pool = || metrics::SharedString::from(Arc::clone(&name));
        metrics::gauge!(telemetry::CONNECTION_MAX, POOL_NAME => pool())
            .set((options.pool_size + options.max_overflow) as f64);
        metrics::gauge!(telemetry::CONNECTION_IDLE_MAX, POOL_NAME => pool())
            .set(options.pool_size as f64);
        let closed = |reason: CloseReason| metrics::counter!(telemetry::CONNECTIONS_CLOSED, POOL_NAME => pool(), "reason" => reason.as_str());
        Instruments {
            idle: metrics::gauge!(telemetry::CONNECTION_COUNT, POOL_NAME => pool(), "db.client.connection.state" => "idle"),
            used: metrics::gauge!(telemetry::CONNECTION_COUNT, POOL_NAME => pool(), "db.client.connection.state" => "used"),
            pending: metrics::gauge!(telemetry::CONNECTION_PENDING_REQUESTS, POOL_NAME => pool()),
            timeouts: metrics::counter!(telemetry::CONNECTION_TIMEOUTS, POOL_NAME => pool()),
            wait_time: metrics::histogram!(telemetry::CONNECTION_WAIT_TIME, POOL_NAME => pool()),
            use_time: metrics::histogram!(telemetry::CONNECTION_USE_TIME, POOL_NAME => pool()),
            create_time: metrics::histogram!(telemetry::CONNECTION_CREATE_TIME, POOL_NAME => pool()),
            opened: metrics::counter!(telemetry::CONNECTIONS_OPENED, POOL_NAME => pool()),
            connect_failures: metrics::counter!(telemetry::CONNECT_FAILURES, POOL_NAME => pool()),
            closed: [
                closed(CloseReason::Broken),
                closed(CloseReason::Recycled),
                closed(CloseReason::Overflow),
                closed(CloseReason::Discarded),
                closed(CloseReason::PoolClosed),
            ],
            name,
        }
    }

    /// Idle objects went up (into the pool) or down (out of it) by `delta`.
    pub(super) fn idle(&self, delta: f64) {
        self.idle.increment(delta);
    }

    /// An object was handed out (`delta` 1) or came back (-1).
    pub(super) fn used(&self, delta: f64) {
        self.used.increment(delta);
    }

    /// An object was closed.
    pub(super) fn closed(&self, reason: CloseReason) {
        self.closed[reason as usize].increment(1);
    }
}

/// Who took a checked-out object: where, when, and in which span.
#[derive(Debug, Clone, Copy)]
pub(super) struct Holder {
    /// When it was handed out.
    pub(super) since: Instant,
    /// The caller's file and line (`#[track_caller]` through the public checkout methods).
    pub(super) at: &'static Location<'static>,
    /// The name of the span that was current at the call, if any.
    pub(super) span: Option<&'static str>,
}

/// The holders of the checked-out objects, in slots reused as objects come back (no
/// allocation once the pool has been full).
#[derive(Default)]
pub(super) struct Holders {
    slots: Vec<Option<Holder>>,
    free: Vec<usize>,
}

impl Holders {
    /// Records a holder; the returned key removes it.
    pub(super) fn insert(&mut self, holder: Holder) -> usize {
        match self.free.pop() {
            Some(key) => {
                self.slots[key] = Some(holder);
                key
            }
            None => {
                self.slots.push(Some(holder));
                self.slots.len() - 1
            }
        }
    }

    /// Forgets the holder recorded under `key`.
    pub(super) fn remove(&mut self, key: usize) {
        if let Some(slot) = self.slots.get_mut(key) {
            if slot.take().is_some() {
                self.free.push(key);
            }
        }
    }

    /// The `n` longest holders, longest first.
    pub(super) fn longest(&self, n: usize) -> Vec<Holder> {
        let mut all: Vec<Holder> = self.slots.iter().flatten().copied().collect();
        all.sort_by_key(|h| h.since);
        all.truncate(n);
        all
    }
}

/// The holders for a pool-timeout message: how long each has held its connection, where it
/// was taken, and in which span; or why there is none to name.
pub(super) fn describe_holders(holders: &[Holder], now: Instant, in_use: usize) -> String {
    if holders.is_empty() {
        return "no connection is checked out: they are still being opened".to_string();
    }
    let mut text = format!("the longest held of the {in_use} in use: ");
    for (i, holder) in holders.iter().enumerate() {
        if i > 0 {
            text.push_str("; ");
        }
        let held = now.saturating_duration_since(holder.since);
        let _ = write!(
            text,
            "{:.1?} by {}:{}:{}",
            round(held),
            holder.at.file(),
            holder.at.line(),
            holder.at.column()
        );
        if let Some(span) = holder.span {
            let _ = write!(text, " in span `{span}`");
        }
    }
    text
}

/// `d` to a tenth of a millisecond, for messages.
fn round(d: Duration) -> Duration {
    Duration::from_micros(d.as_micros() as u64 / 100 * 100)
}
