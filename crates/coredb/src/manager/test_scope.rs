//! The process-wide database scoped to one test.
//!
//! Tests run side by side in one process, each on a database of its own, while code written the
//! core.db way reaches the database through process-wide functions. A test scope makes the
//! test's manager the process-wide one for the thread the test runs on; `#[coredb_testkit::test]`
//! runs the test and every task it spawns on one thread (a current-thread runtime), so the
//! scope covers handlers, spawned tasks and the axum layer alike. Once any thread of the process
//! entered a scope, a process-wide call on a thread without one is an error instead of a quiet
//! connection to whatever server the environment names.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use super::DatabaseManager;
use crate::error::{Error, Result};

thread_local! {
    static SCOPED: RefCell<Option<DatabaseManager>> = const { RefCell::new(None) };
}

/// Set once a scope was entered anywhere in the process: the process is a test run.
static SCOPES_IN_USE: AtomicBool = AtomicBool::new(false);

/// The process-wide database of this thread while it lives; see
/// [`DatabaseManager::enter_test_scope`]. Dropping it restores what was there before.
#[must_use = "the scope ends when this guard is dropped"]
pub struct TestScope {
    previous: Option<DatabaseManager>,
    /// Tied to the thread whose process-wide database it changed.
    _not_send: PhantomData<*const ()>,
}

impl Drop for TestScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        SCOPED.with(|scoped| *scoped.borrow_mut() = previous);
    }
}

impl DatabaseManager {
    /// Makes this manager the process-wide database of the current thread until the returned
    /// guard is dropped: [`initialize_database`](crate::initialize_database),
    /// [`get_database_manager`](crate::get_database_manager),
    /// [`get_session_context`](crate::get_session_context),
    /// [`check_database_health`](crate::check_database_health),
    /// [`database_lifespan`](crate::database_lifespan) and [`DatabaseManager::from_env`] on
    /// this thread then return it (and [`close_database`](crate::close_database) leaves it
    /// open: the test owns it).
    ///
    /// Meant for tests; `#[coredb_testkit::test]` enters one around every test. Once any thread
    /// of the process entered a scope, those functions fail on a thread without one, so a test
    /// never reaches the server the environment names by mistake.
    ///
    /// ```no_run
    /// # async fn demo(test_db: coredb::DatabaseManager) -> coredb::Result<()> {
    /// let _scope = test_db.enter_test_scope();
    /// // Code written the core.db way now reaches the test's database.
    /// let mut session = coredb::get_session_context().await?;
    /// # session.commit().await }
    /// ```
    pub fn enter_test_scope(&self) -> TestScope {
        SCOPES_IN_USE.store(true, Ordering::Release);
        let previous = SCOPED.with(|scoped| scoped.borrow_mut().replace(self.clone()));
        TestScope {
            previous,
            _not_send: PhantomData,
        }
    }
}

/// The test scope's manager on this thread; `Ok(None)` outside tests (use the process-wide
/// one).
///
/// # Errors
/// A [`Config`](crate::ErrorKind::Config) error on a thread without a scope when scopes are in
/// use: the process-wide database would be the one the environment names, not the test's.
pub(crate) fn scoped() -> Result<Option<DatabaseManager>> {
    if let Some(manager) = SCOPED.with(|scoped| scoped.borrow().clone()) {
        return Ok(Some(manager));
    }
    if SCOPES_IN_USE.load(Ordering::Acquire) {
        return Err(Error::config(
            "this process runs tests with a database each, and this thread is in none of their scopes, so the process-wide database would be whatever the environment names: run the code inside the test's thread (#[coredb_testkit::test] runs spawned tasks there), or call enter_test_scope() on the test's manager in this thread",
        ));
    }
    Ok(None)
}
