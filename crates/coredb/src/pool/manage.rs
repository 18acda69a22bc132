//! What the pool needs to know about the objects it keeps.

use std::future::Future;

use crate::error::Result;

/// Opens, checks and closes the objects a [`Pool`](super::Pool) keeps.
///
/// coredb's engine implements it for PostgreSQL connections; the pool itself is generic so that
/// its overhead can be measured on its own.
pub trait Manage: Send + Sync + 'static {
    /// The pooled object, e.g. a database connection.
    type Object: Send + 'static;

    /// Opens a new object. Errors for which [`Error::is_transient`](crate::Error::is_transient)
    /// holds are retried with backoff within the pool timeout.
    fn create(&self) -> impl Future<Output = Result<Self::Object>> + Send;

    /// True when the object is known to be unusable without a round trip (e.g. its socket closed).
    ///
    /// Called at checkout under the pool's lock, so it must be quick and must not block (a
    /// flag or an atomic, never I/O).
    fn is_broken(&self, object: &Self::Object) -> bool;

    /// Verifies an object that sat idle before it is handed out (the pre-ping).
    fn ping(&self, object: &mut Self::Object) -> impl Future<Output = Result<()>> + Send;

    /// The pool's name in spans and metrics (`db.client.connection.pool.name`), unique within
    /// the service; coredb's engine uses `host:port/database`. By default, the type's name.
    fn pool_name(&self) -> String {
        std::any::type_name::<Self>().to_string()
    }
}
