//! Prepared statements kept per connection, least recently used evicted first.

use std::num::NonZeroUsize;

use lru::LruCache;
use tokio_postgres::Statement;

/// A connection's prepared statements by SQL text; capacity 0 disables it (for PgBouncer in
/// transaction mode, where a named statement may live on another server connection).
pub(crate) struct StatementCache {
    cache: Option<LruCache<Box<str>, Statement>>,
}

impl StatementCache {
    pub(crate) fn new(capacity: usize) -> Self {
        StatementCache {
            cache: NonZeroUsize::new(capacity).map(LruCache::new),
        }
    }

    pub(crate) fn get(&mut self, sql: &str) -> Option<Statement> {
        self.cache.as_mut()?.get(sql).cloned()
    }

    pub(crate) fn insert(&mut self, sql: &str, statement: &Statement) {
        if let Some(cache) = self.cache.as_mut() {
            // The evicted statement is closed on the server when its last clone drops.
            cache.put(sql.into(), statement.clone());
        }
    }

    pub(crate) fn remove(&mut self, sql: &str) {
        if let Some(cache) = self.cache.as_mut() {
            cache.pop(sql);
        }
    }

}
