//! The connection pool: `pool_size` kept, `max_overflow` more under load, a timeout that always
//! applies, recycling by age, pre-ping of idle connections, and a bounded close.
//!
//! The pool is generic over what it keeps (see [`Manage`]) so its own overhead can be measured
//! without a database:
//!
//! ```
//! use coredb::pool::{Manage, Pool, PoolOptions};
//!
//! struct Counter;
//! impl Manage for Counter {
//!     type Object = u32;
//!     async fn create(&self) -> coredb::Result<u32> { Ok(0) }
//!     fn is_broken(&self, _: &u32) -> bool { false }
//!     async fn ping(&self, _: &mut u32) -> coredb::Result<()> { Ok(()) }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let pool = Pool::new(Counter, PoolOptions { pool_size: 2, max_overflow: 0, ..PoolOptions::default() });
//! let mut object = pool.get().await?;
//! *object += 1;
//! drop(object); // back to the pool
//! assert_eq!(pool.status().idle, 1);
//! # Ok::<(), coredb::Error>(()) }).unwrap();
//! ```
//!
//! Design: a fair [`tokio::sync::Semaphore`] with `pool_size + max_overflow` permits decides who
//! may hold a connection (first come, first served); idle connections wait in a LIFO stack so the
//! warm ones are reused and the extra ones age out. Every step that can be cancelled holds a
//! guard that undoes its bookkeeping, so a dropped future never leaks a slot.

mod instruments;
mod manage;
mod status;

pub use manage::Manage;
pub use status::{CloseReason, PoolMetrics, PoolStatus};

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::config::defaults;
use crate::error::{Error, ErrorKind, Result};
use crate::retry::Backoff;
use instruments::{describe_holders, Holder, Holders, Instruments};
use status::Counters;

/// How many holders a pool-timeout error names.
const HOLDERS_NAMED: usize = 3;

/// How long a checkout waits for a free slot before it says so in a WARN line.
const WAIT_BEFORE_WARNING: Duration = Duration::from_secs(1);

/// The time a last connection attempt is given before the deadline.
const LAST_ATTEMPT: Duration = Duration::from_millis(20);

/// Awaits `work`, begun at `start`, until `deadline`. No wait longer than a second is silent:
/// when `work` is still pending a second in (and the deadline is further off), `say_why` is
/// called once with the time left.
async fn until_saying_why<F: std::future::Future>(
    work: F,
    (start, deadline): (Instant, Instant),
    say_why: impl FnOnce(Duration),
) -> std::result::Result<F::Output, tokio::time::error::Elapsed> {
    let mut work = std::pin::pin!(work);
    let first = (start + WAIT_BEFORE_WARNING).min(deadline);
    match tokio::time::timeout_at(first, work.as_mut()).await {
        Err(_) if first < deadline => {
            say_why(deadline.saturating_duration_since(Instant::now()));
            tokio::time::timeout_at(deadline, work).await
        }
        done => done,
    }
}

/// Sizes and timings of a [`Pool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Connections kept open when idle.
    pub pool_size: usize,
    /// Extra connections opened under load, closed when returned while `pool_size` are idle.
    pub max_overflow: usize,
    /// How long a checkout waits for a connection (including opening one) before failing.
    pub timeout: Duration,
    /// Maximum age of a connection (with up to 10% jitter), `None` for no limit.
    pub recycle: Option<Duration>,
    /// Verify connections that sat idle for at least `pre_ping_idle` before handing them out.
    pub pre_ping: bool,
    /// How long a connection must have been idle to be pinged.
    pub pre_ping_idle: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            pool_size: defaults::POOL_SIZE,
            max_overflow: defaults::MAX_OVERFLOW,
            timeout: defaults::POOL_TIMEOUT,
            recycle: defaults::POOL_RECYCLE,
            pre_ping: defaults::POOL_PRE_PING,
            pre_ping_idle: defaults::PRE_PING_IDLE,
        }
    }
}

/// A pool of objects made by a [`Manage`]r; cheap to clone (one `Arc`).
pub struct Pool<M: Manage> {
    shared: Arc<Shared<M>>,
}

impl<M: Manage> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Slot<T> {
    /// Boxed: a slot moves at every checkout and return (the idle stack, the guard, the
    /// caller's handle), and a connection is a few hundred bytes; a box moves as a pointer.
    object: Box<T>,
    expires: Option<Instant>,
    idle_since: Instant,
}

/// What the pool's one lock guards: the idle objects and who holds the others. One lock, so
/// a checkout and a return each take it once (pop and record the holder; forget the holder
/// and push).
struct Book<T> {
    /// Idle objects, the most recently returned last.
    idle: Vec<Slot<T>>,
    /// Who holds each checked-out object.
    holders: Holders,
}

/// What [`Pool::pop_idle`] found.
enum Popped<T> {
    /// An object handed out as it is, recorded as held under the key.
    Ready(Slot<T>, usize),
    /// A broken object, to close.
    Broken(Slot<T>),
    /// An object past its age (`recycle`), to close.
    Expired(Slot<T>),
    /// An object idle long enough to be pinged before it is handed out.
    Ping(Slot<T>),
    /// No idle object.
    None,
}

struct Shared<M: Manage> {
    manager: M,
    options: PoolOptions,
    semaphore: Semaphore,
    book: Mutex<Book<M::Object>>,
    open: AtomicUsize,
    in_use: AtomicUsize,
    waiting: AtomicUsize,
    closed: AtomicBool,
    returned: Notify,
    counters: Counters,
    instruments: Instruments,
}

impl<M: Manage> Pool<M> {
    /// Creates an empty pool; objects are created on demand. Its metrics are registered now,
    /// with the `metrics` recorder installed at this time (see [`telemetry`](crate::telemetry)).
    pub fn new(manager: M, options: PoolOptions) -> Self {
        let max = options.pool_size + options.max_overflow;
        let instruments = Instruments::new(manager.pool_name(), &options);
        Pool {
            shared: Arc::new(Shared {
                manager,
                options,
                semaphore: Semaphore::new(max),
                book: Mutex::new(Book {
                    idle: Vec::with_capacity(options.pool_size),
                    holders: Holders::default(),
                }),
                open: AtomicUsize::new(0),
                in_use: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                returned: Notify::new(),
                counters: Counters::default(),
                instruments,
            }),
        }
    }

    /// The manager that makes the objects.
    pub fn manager(&self) -> &M {
        &self.shared.manager
    }

    /// The options the pool was made with.
    pub fn options(&self) -> &PoolOptions {
        &self.shared.options
    }

    /// Checks out an object, waiting up to the pool timeout.
    ///
    /// The caller's file and line are kept while the object is out, so a pool timeout can say
    /// who holds the connections (`#[track_caller]`: the location is the caller's, or its
    /// caller's when that is `#[track_caller]` too).
    ///
    /// # Errors
    /// [`PoolTimeout`](ErrorKind::PoolTimeout) when none became free in time (naming the
    /// longest holders), [`PoolClosed`](ErrorKind::PoolClosed) after [`close`](Self::close), or
    /// the error of creating a new object once retries within the timeout are exhausted.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped call leaves the queue, and a connection being opened for it is
    /// kept for the next caller or closed; no slot is leaked.
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<Pooled<M>>> + Send + '_ {
        self.get_within(self.shared.options.timeout)
    }

    /// Like [`get`](Self::get), with its own time limit.
    #[track_caller]
    pub fn get_within(
        &self,
        limit: Duration,
    ) -> impl Future<Output = Result<Pooled<M>>> + Send + '_ {
        self.get_for(limit, Location::caller())
    }

    /// Like [`get_within`](Self::get_within), for a caller whose location is `at`.
    pub(crate) async fn get_for(
        &self,
        limit: Duration,
        at: &'static Location<'static>,
    ) -> Result<Pooled<M>> {
        {
            let listened = crate::telemetry::listened();
            // Without a subscriber there is no current span to name.
            let held_in = listened
                .then(|| tracing::Span::current().metadata().map(|m| m.name()))
                .flatten();
            let span = if listened {
                tracing::info_span!(
                    target: "coredb",
                    "checkout",
                    db.client.connection.pool.name = &*self.shared.instruments.name,
                    coredb.pool.wait_ms = tracing::field::Empty,
                    error.type = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                )
            } else {
                tracing::Span::none()
            };
            let start = Instant::now();
            let holder = Holder {
                since: start,
                at,
                span: held_in,
            };
            // Pinned where it is made: the checkout's future is large, and a wrapper taking it
            // by value would copy it.
            let acquire = std::pin::pin!(self.acquire(limit, holder));
            let result = crate::telemetry::in_span(&span, acquire).await;
            // The hand-out's own clock reading, when there is one: one reading fewer.
            let waited = match &result {
                // Handed out at the call's start: no wait, and no subtraction to make.
                Ok(pooled) if pooled.since == start => Duration::ZERO,
                Ok(pooled) => pooled.since.saturating_duration_since(start),
                Err(_) => start.elapsed(),
            };
            self.shared.instruments.wait_time.record(waited);
            if !span.is_disabled() {
                span.record("coredb.pool.wait_ms", waited.as_secs_f64() * 1000.0);
                if let Err(err) = &result {
                    crate::telemetry::record_error(&span, err);
                }
            }
            result
        }
    }

    /// Takes a permit, waiting up to `limit`, and hands out an object to `holder`.
    async fn acquire(&self, limit: Duration, holder: Holder) -> Result<Pooled<M>> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::pool_closed());
        }
        // When the checkout starts, and its deadline if it waited. No wait, no new clock
        // reading: the call's start serves.
        let (now, deadline) = match shared.semaphore.try_acquire() {
            Ok(permit) => {
                permit.forget();
                (holder.since, None)
            }
            Err(TryAcquireError::Closed) => return Err(Error::pool_closed()),
            Err(TryAcquireError::NoPermits) => {
                let start = holder.since;
                let deadline = start + limit;
                let _waiting = Waiting::new(shared);
                let acquired =
                    until_saying_why(shared.semaphore.acquire(), (start, deadline), |left| {
                        tracing::warn!(
                            target: "coredb",
                            in_use = shared.in_use.load(Ordering::Acquire),
                            waiting = shared.waiting.load(Ordering::Acquire),
                            pool_size = shared.options.pool_size,
                            max_overflow = shared.options.max_overflow,
                            "waiting for a pooled connection: all {} are in use; waiting up to {left:?} more (the pool timeout, POSTGRES_POOL_TIMEOUT); {}",
                            shared.options.pool_size + shared.options.max_overflow,
                            shared.describe_holders(),
                        );
                    })
                    .await;
                match acquired {
                    Ok(Ok(permit)) => permit.forget(),
                    Ok(Err(_)) => return Err(Error::pool_closed()),
                    Err(_) => {
                        Counters::bump(&shared.counters.timeouts);
                        shared.instruments.timeouts.increment(1);
                        tracing::debug!(target: "coredb", waited = ?limit, "pool checkout timed out");
                        return Err(Error::pool_timeout(
                            shared.options.pool_size,
                            shared.options.max_overflow,
                            start.elapsed(),
                            &shared.describe_holders(),
                        ));
                    }
                }
                // One clock reading for the wait and the checkout that follows it.
                let now = Instant::now();
                shared.counters.wait_nanos.fetch_add(
                    now.saturating_duration_since(start).as_nanos() as u64,
                    Ordering::Relaxed,
                );
                (now, Some(deadline))
            }
        };
        // Gives the permit back if this future is dropped before the object is handed out.
        let permit = PermitGuard(shared);
        self.checkout(permit, (now, deadline), limit, holder).await
    }

    /// Checks out an object only if one can be had without waiting for another caller to
    /// return one (an idle object, or room to open a new one); `None` otherwise.
    #[track_caller]
    pub fn try_get(&self) -> impl Future<Output = Result<Option<Pooled<M>>>> + Send + '_ {
        let holder = Holder {
            since: Instant::now(),
            at: Location::caller(),
            span: None,
        };
        async move {
            let shared = &self.shared;
            match shared.semaphore.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(TryAcquireError::Closed) => return Err(Error::pool_closed()),
                Err(TryAcquireError::NoPermits) => return Ok(None),
            }
            let permit = PermitGuard(shared);
            let now = holder.since;
            self.checkout(permit, (now, None), shared.options.timeout, holder)
                .await
                .map(Some)
        }
    }

    /// Hands out an idle object (checked) or a new one, for a caller holding a permit, at
    /// `now`. `deadline` is known when the caller waited; otherwise it is `limit` from now.
    async fn checkout(
        &self,
        permit: PermitGuard<'_, M>,
        (now, deadline): (Instant, Option<Instant>),
        limit: Duration,
        holder: Holder,
    ) -> Result<Pooled<M>> {
        let shared = &self.shared;
        let deadline = deadline.unwrap_or(now + limit);

        loop {
            let slot = match self.pop_idle(now, &holder) {
                Popped::Ready(slot, key) => return Ok(self.handed_out(slot, permit, key, now)),
                Popped::Broken(slot) => {
                    shared.retire(slot, CloseReason::Broken);
                    continue;
                }
                Popped::Expired(slot) => {
                    shared.retire(slot, CloseReason::Recycled);
                    continue;
                }
                Popped::Ping(slot) => slot,
                Popped::None => break,
            };
            Counters::bump(&shared.counters.pings);
            // The slot is retired if this future is dropped mid-ping.
            let mut checking = SlotGuard {
                shared,
                slot: Some(slot),
            };
            let object = &mut checking.slot.as_mut().expect("slot is set").object;
            let alive = tokio::time::timeout_at(deadline, shared.manager.ping(object)).await;
            let slot = checking.slot.take().expect("slot is set");
            if !matches!(alive, Ok(Ok(()))) {
                tracing::debug!(target: "coredb", "idle connection failed its pre-ping; replacing it");
                shared.retire(slot, CloseReason::Broken);
                continue;
            }
            return Ok(self.hand_out(slot, permit, holder, Instant::now()));
        }

        let object = self.create(deadline).await?;
        shared.open.fetch_add(1, Ordering::AcqRel);
        Counters::bump(&shared.counters.created);
        shared.instruments.opened.increment(1);
        let now = Instant::now();
        let expires = shared.options.recycle.map(|age| {
            let jitter = age.mul_f64(fastrand::f64() * 0.1);
            now + age - jitter
        });
        let slot = Slot {
            object: Box::new(object),
            expires,
            idle_since: now,
        };
        Ok(self.hand_out(slot, permit, holder, now))
    }

    /// Takes the most recently returned idle object and says what it needs at `now`. One that
    /// needs nothing is recorded as held by `holder` under the same lock.
    fn pop_idle(&self, now: Instant, holder: &Holder) -> Popped<M::Object> {
        let shared = &self.shared;
        let mut book = shared.book.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = book.idle.pop() else {
            return Popped::None;
        };
        let popped = if shared.manager.is_broken(&slot.object) {
            Popped::Broken(slot)
        } else if slot.expires.is_some_and(|t| t <= now) {
            Popped::Expired(slot)
        } else if shared.options.pre_ping
            && now.saturating_duration_since(slot.idle_since) >= shared.options.pre_ping_idle
        {
            Popped::Ping(slot)
        } else {
            let key = book.holders.insert(Holder {
                since: now,
                ..*holder
            });
            Popped::Ready(slot, key)
        };
        drop(book);
        shared.instruments.idle(-1.0);
        popped
    }

    /// Hands `slot` out to `holder` at `at`.
    fn hand_out(
        &self,
        slot: Slot<M::Object>,
        permit: PermitGuard<'_, M>,
        holder: Holder,
        at: Instant,
    ) -> Pooled<M> {
        let key = self
            .shared
            .book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .holders
            .insert(Holder {
                since: at,
                ..holder
            });
        self.handed_out(slot, permit, key, at)
    }

    /// `slot`, recorded as held under `key` since `at`, as the caller's handle.
    fn handed_out(
        &self,
        slot: Slot<M::Object>,
        permit: PermitGuard<'_, M>,
        key: usize,
        at: Instant,
    ) -> Pooled<M> {
        std::mem::forget(permit);
        let shared = &self.shared;
        shared.in_use.fetch_add(1, Ordering::AcqRel);
        Counters::bump(&shared.counters.checkouts);
        shared.instruments.used(1.0);
        Pooled {
            shared: Arc::clone(shared),
            slot: Some(slot),
            broken: false,
            holder: key,
            since: at,
        }
    }

    /// Opens an object, retrying transient failures with backoff until `deadline`.
    async fn create(&self, deadline: Instant) -> Result<M::Object> {
        let shared = &self.shared;
        let mut backoff = Backoff::default();
        let mut attempt = 1;
        // Why the previous attempt failed: a better answer than "no answer in time" when the
        // pool timeout cuts the last attempt short (a slow refusal on a loaded server).
        let mut failed: Option<Error> = None;
        loop {
            let span = tracing::info_span!(
                target: "coredb",
                "connect",
                db.client.connection.pool.name = &*shared.instruments.name,
                coredb.attempt = attempt,
                error.type = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            let started = Instant::now();
            let created = until_saying_why(shared.manager.create(), (started, deadline), |left| {
                if attempt == 1 {
                    tracing::warn!(
                        target: "coredb",
                        "opening a connection has taken {WAIT_BEFORE_WARNING:?} so far; waiting up to {left:?} more (POSTGRES_CONNECT_TIMEOUT per attempt, POSTGRES_POOL_TIMEOUT in all)",
                    );
                }
            })
            .instrument(span.clone())
            .await;
            let err = match created {
                Ok(Ok(object)) => {
                    shared.instruments.create_time.record(started.elapsed());
                    return Ok(object);
                }
                Ok(Err(err)) => err,
                Err(_) => {
                    Counters::bump(&shared.counters.connect_failures);
                    shared.instruments.connect_failures.increment(1);
                    span.record("error.type", "PoolTimeout");
                    span.record("otel.status_code", "ERROR");
                    if let Some(err) = failed {
                        return Err(err);
                    }
                    return Err(Error::new(
                        ErrorKind::PoolTimeout,
                        format!(
                            "no new connection could be opened within the pool timeout of {:?}; the server did not answer in time",
                            shared.options.timeout
                        ),
                    ));
                }
            };
            Counters::bump(&shared.counters.connect_failures);
            shared.instruments.connect_failures.increment(1);
            crate::telemetry::record_error(&span, &err);
            let remaining = deadline.saturating_duration_since(Instant::now());
            if !err.is_transient() || remaining < LAST_ATTEMPT {
                return Err(err);
            }
            // The whole pool timeout is used: a backoff that would pass the deadline is cut
            // short, so the last attempt is made just before it instead of not at all.
            let delay = backoff.next_delay().min(remaining - LAST_ATTEMPT);
            if attempt == 1 {
                // The caller may wait up to the pool timeout: say at once why, and for how long.
                tracing::warn!(
                    target: "coredb",
                    "{err}; retrying with backoff for up to {:?} (the pool timeout, POSTGRES_POOL_TIMEOUT)",
                    deadline.saturating_duration_since(Instant::now()),
                );
            } else {
                tracing::debug!(target: "coredb", error = %err, attempt, ?delay, "connect failed; retrying");
            }
            attempt += 1;
            failed = Some(err);
            tokio::time::sleep(delay).await;
            if shared.closed.load(Ordering::Acquire) {
                return Err(Error::pool_closed());
            }
        }
    }

    /// The pool's current state.
    pub fn status(&self) -> PoolStatus {
        let s = &self.shared;
        let idle = s.book.lock().unwrap_or_else(|e| e.into_inner()).idle.len();
        PoolStatus {
            size: s.open.load(Ordering::Acquire),
            idle,
            in_use: s.in_use.load(Ordering::Acquire),
            waiting: s.waiting.load(Ordering::Acquire),
            max: s.options.pool_size + s.options.max_overflow,
            pool_size: s.options.pool_size,
            max_overflow: s.options.max_overflow,
        }
    }

    /// Counters since the pool was created.
    pub fn metrics(&self) -> PoolMetrics {
        self.shared.counters.snapshot()
    }

    /// True once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Like [`close`](Self::close) without waiting: new checkouts fail, idle objects are closed
    /// now, checked-out ones when they come back.
    pub fn close_idle(&self) {
        let s = &self.shared;
        s.closed.store(true, Ordering::Release);
        s.semaphore.close();
        let idle = std::mem::take(&mut s.book.lock().unwrap_or_else(|e| e.into_inner()).idle);
        s.instruments.idle(-(idle.len() as f64));
        for slot in idle {
            s.retire(slot, CloseReason::PoolClosed);
        }
    }

    /// Closes the pool: new checkouts fail with `PoolClosed`, idle objects are closed at once,
    /// and checked-out ones are closed as they come back. Waits up to `wait` for them.
    ///
    /// Returns true when every object came back in time.
    ///
    /// # Cancel safety
    /// The pool is closed from the first poll; dropping the future only stops the waiting.
    pub async fn close(&self, wait: Duration) -> bool {
        self.close_idle();
        let s = &self.shared;
        let deadline = Instant::now() + wait;
        loop {
            let notified = s.returned.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let in_use = s.in_use.load(Ordering::Acquire);
            if in_use == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(target: "coredb", in_use, ?wait, "pool closed while connections were still checked out; they close when returned");
                return false;
            }
        }
    }
}

impl<M: Manage> Shared<M> {
    fn retire(&self, slot: Slot<M::Object>, reason: CloseReason) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.counters.closed(reason);
        self.instruments.closed(reason);
        tracing::debug!(target: "coredb", ?reason, "closing pooled connection");
        drop(slot);
    }

    /// The longest holders of checked-out objects, for a message.
    fn describe_holders(&self) -> String {
        let holders = self
            .book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .holders
            .longest(HOLDERS_NAMED);
        describe_holders(
            &holders,
            Instant::now(),
            self.in_use.load(Ordering::Acquire),
        )
    }

    fn put_back(&self, mut slot: Slot<M::Object>, broken: bool, holder: usize, since: Instant) {
        let now = Instant::now();
        self.instruments
            .use_time
            .record(now.saturating_duration_since(since));
        self.instruments.used(-1.0);
        let unusable = if broken {
            Some(CloseReason::Discarded)
        } else if self.closed.load(Ordering::Acquire) {
            Some(CloseReason::PoolClosed)
        } else if self.manager.is_broken(&slot.object) {
            Some(CloseReason::Broken)
        } else if slot.expires.is_some_and(|t| t <= now) {
            Some(CloseReason::Recycled)
        } else {
            None
        };
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.holders.remove(holder);
        let reason = match unusable {
            Some(reason) => reason,
            // Checked again under the lock: `close_idle` sets the flag, then empties the idle
            // stack under it, so an object pushed here is either seen by it or not pushed.
            None if self.closed.load(Ordering::Acquire) => CloseReason::PoolClosed,
            None if book.idle.len() < self.options.pool_size => {
                slot.idle_since = now;
                book.idle.push(slot);
                drop(book);
                self.instruments.idle(1.0);
                self.release();
                return;
            }
            None => CloseReason::Overflow,
        };
        drop(book);
        self.retire(slot, reason);
        self.release();
    }

    fn release(&self) {
        self.in_use.fetch_sub(1, Ordering::AcqRel);
        self.semaphore.add_permits(1);
        if self.closed.load(Ordering::Acquire) {
            self.returned.notify_waiters();
        }
    }
}

/// An object checked out of a [`Pool`]; returned to it when dropped.
pub struct Pooled<M: Manage> {
    shared: Arc<Shared<M>>,
    slot: Option<Slot<M::Object>>,
    broken: bool,
    /// The key of its holder in the pool's record.
    holder: usize,
    /// When it was handed out.
    since: Instant,
}

impl<M: Manage> Pooled<M> {
    /// Marks the object as unusable: it is closed instead of returned to the pool.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// True when [`mark_broken`](Self::mark_broken) was called.
    pub fn is_marked_broken(&self) -> bool {
        self.broken
    }
}

impl<M: Manage> Deref for Pooled<M> {
    type Target = M::Object;
    fn deref(&self) -> &M::Object {
        &self.slot.as_ref().expect("slot is set until drop").object
    }
}

impl<M: Manage> DerefMut for Pooled<M> {
    fn deref_mut(&mut self) -> &mut M::Object {
        &mut self.slot.as_mut().expect("slot is set until drop").object
    }
}

impl<M: Manage> Drop for Pooled<M> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.shared
                .put_back(slot, self.broken, self.holder, self.since);
        }
    }
}

/// Counts a caller waiting for a permit while it lives.
struct Waiting<'a, M: Manage>(&'a Shared<M>);

impl<'a, M: Manage> Waiting<'a, M> {
    fn new(shared: &'a Shared<M>) -> Self {
        shared.waiting.fetch_add(1, Ordering::AcqRel);
        shared.instruments.pending.increment(1.0);
        Waiting(shared)
    }
}

impl<M: Manage> Drop for Waiting<'_, M> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        self.0.instruments.pending.decrement(1.0);
    }
}

/// A permit taken from the semaphore but not yet owned by a [`Pooled`].
struct PermitGuard<'a, M: Manage>(&'a Shared<M>);

impl<M: Manage> Drop for PermitGuard<'_, M> {
    fn drop(&mut self) {
        self.0.semaphore.add_permits(1);
    }
}

/// An idle slot being checked; retired if the check is abandoned.
struct SlotGuard<'a, M: Manage> {
    shared: &'a Shared<M>,
    slot: Option<Slot<M::Object>>,
}

impl<M: Manage> Drop for SlotGuard<'_, M> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.shared.retire(slot, CloseReason::Discarded);
        }
    }
}
