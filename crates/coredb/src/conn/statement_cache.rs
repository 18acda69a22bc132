//! Prepared statements kept per connection, least recently used evicted first.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;
use tokio_postgres::Statement;

/// A connection's prepared statements by SQL text; capacity 0 disables it (for PgBouncer in
/// transaction mode, where a named statement may live on another server connection).
///
/// Locked inside, so tasks sharing a pipelined connection share its cache; the lock is held
/// only for a lookup, never across a round trip.
pub(crate) struct StatementCache {
    cache: Option<Mutex<LruCache<Box<str>, Statement>>>,
    capacity: usize,
}

impl StatementCache {
    pub(crate) fn new(capacity: usize) -> Self {
        // Unbounded and trimmed by hand: a bounded LruCache reserves room for every entry
        // up front, which idle connections would pay for in memory.
        StatementCache {
            cache: NonZeroUsize::new(capacity).map(|_| Mutex::new(LruCache::unbounded())),
            capacity,
        }
    }

    /// False when the capacity is 0: statements are then sent unprepared.
    pub(crate) fn is_enabled(&self) -> bool {
        self.cache.is_some()
    }

    fn with<R>(&self, f: impl FnOnce(&mut LruCache<Box<str>, Statement>) -> R) -> Option<R> {
        let cache = self.cache.as_ref()?;
        Some(f(&mut cache.lock().unwrap_or_else(|e| e.into_inner())))
    }

    pub(crate) fn get(&self, sql: &str) -> Option<Statement> {
        self.with(|c| c.get(sql).cloned()).flatten()
    }

    pub(crate) fn insert(&self, sql: &str, statement: &Statement) {
        // The evicted statement is closed on the server when its last clone drops.
        let capacity = self.capacity;
        self.with(|c| {
            c.put(sql.into(), statement.clone());
            while c.len() > capacity {
                c.pop_lru();
            }
        });
    }

    pub(crate) fn remove(&self, sql: &str) {
        self.with(|c| c.pop(sql));
    }
}
