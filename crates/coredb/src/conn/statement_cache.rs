//! Prepared statements kept per connection, least recently used evicted first.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use tokio_postgres::Statement;

use crate::params::TextKey;

/// The map inside: keyed by number, hashed with foldhash.
type Statements = LruCache<TextKey, Prepared, foldhash::fast::RandomState>;

/// A prepared statement and its name on the server, for a holder's `Bind` of its own
/// ([`super::Direct`]); `None` when the driver did not say it.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(crate) statement: Statement,
    pub(crate) name: Option<Arc<str>>,
    /// Prepared just now: its first run takes the driver's path, behind what preparing it
    /// may have queued there (the `Close` of the statement it evicted from the cache).
    pub(crate) fresh: bool,
}

impl Prepared {
    /// `statement`, just prepared.
    pub(crate) fn new(statement: &Statement) -> Self {
        Prepared {
            name: super::direct::statement_name(statement),
            statement: statement.clone(),
            fresh: true,
        }
    }
}

/// A connection's prepared statements by the number of their text ([`TextKey`]: the text was
/// hashed once, by the rewrite cache); capacity 0 disables it (for PgBouncer in transaction
/// mode, where a named statement may live on another server connection).
///
/// Locked inside, so tasks sharing a pipelined connection share its cache; the lock is held
/// only for a lookup, never across a round trip.
pub(crate) struct StatementCache {
    cache: Option<Mutex<Statements>>,
    capacity: usize,
}

impl StatementCache {
    pub(crate) fn new(capacity: usize) -> Self {
        // Unbounded and trimmed by hand: a bounded LruCache reserves room for every entry
        // up front, which idle connections would pay for in memory.
        StatementCache {
            cache: NonZeroUsize::new(capacity)
                .map(|_| Mutex::new(LruCache::unbounded_with_hasher(Default::default()))),
            capacity,
        }
    }

    /// False when the capacity is 0: statements are then sent unprepared.
    pub(crate) fn is_enabled(&self) -> bool {
        self.cache.is_some()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Statements) -> R) -> Option<R> {
        let cache = self.cache.as_ref()?;
        Some(f(&mut cache.lock().unwrap_or_else(|e| e.into_inner())))
    }

    pub(crate) fn get(&self, key: TextKey) -> Option<Prepared> {
        self.with(|c| c.get(&key).cloned()).flatten()
    }

    pub(crate) fn insert(&self, key: TextKey, prepared: Prepared) {
        // The evicted statement is closed on the server when its last clone drops.
        let capacity = self.capacity;
        self.with(|c| {
            c.put(
                key,
                Prepared {
                    fresh: false,
                    ..prepared
                },
            );
            while c.len() > capacity {
                c.pop_lru();
            }
        });
    }

    pub(crate) fn remove(&self, key: TextKey) {
        self.with(|c| c.pop(&key));
    }
}
