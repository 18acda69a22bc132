//! Blocking work on a thread of its own, awaited as a future from any async runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::error::{EmbeddedError, EmbeddedErrorKind};
use crate::server::{EmbeddedServer, EmbeddedServerBuilder};

/// Starts `builder`'s server on a thread of its own; the future resolves when it accepts
/// connections. Use it inside an async runtime, where [`EmbeddedServerBuilder::start`] would
/// block a worker thread.
///
/// ```no_run
/// # async fn demo() -> Result<(), coredb_embedded::EmbeddedError> {
/// let server = coredb_embedded::start_in_background(coredb_embedded::EmbeddedServer::builder()).await?;
/// println!("{}", server.url());
/// # Ok(()) }
/// ```
///
/// # Cancel safety
/// Dropping the future does not stop the start: the thread finishes it and drops the server
/// (which stops it and deletes its data), so nothing is left behind.
pub fn start_in_background(
    builder: EmbeddedServerBuilder,
) -> Background<Result<EmbeddedServer, EmbeddedError>> {
    Background::spawn(move || builder.start())
}

/// The result of blocking work running on a thread of its own; see [`start_in_background`].
pub struct Background<T> {
    shared: Arc<Mutex<Slot<T>>>,
}

struct Slot<T> {
    result: Option<std::thread::Result<T>>,
    waker: Option<Waker>,
}

impl<T: Send + 'static> Background<T> {
    /// Runs `work` on a new thread.
    ///
    /// # Panics
    /// When the operating system cannot start a thread.
    pub fn spawn(work: impl FnOnce() -> T + Send + 'static) -> Self {
        let shared = Arc::new(Mutex::new(Slot {
            result: None,
            waker: None,
        }));
        let slot = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("coredb-embedded".into())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
                let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
                slot.result = Some(result);
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            })
            .expect("a thread for the embedded server's blocking work");
        Background { shared }
    }
}

impl<T> Future for Background<Result<T, EmbeddedError>> {
    type Output = Result<T, EmbeddedError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.result.take() {
            Some(Ok(result)) => Poll::Ready(result),
            Some(Err(_panic)) => Poll::Ready(Err(EmbeddedError::new(
                EmbeddedErrorKind::Start,
                "the embedded server's start panicked (see the panic message above)",
            ))),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
