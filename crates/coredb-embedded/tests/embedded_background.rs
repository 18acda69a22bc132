//! Starting a server from async code without blocking the runtime's thread.

mod support;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::thread::{self, Thread};
use std::time::Instant;

use coredb_embedded::{start_in_background, EmbeddedServer};
use support::embedded_probe::{init_tracing, scalar};

/// Wakes the thread that polls.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A minimal executor: the future needs no particular runtime.
fn block_on<F: Future>(future: F) -> (F::Output, usize) {
    let waker = Arc::new(Unpark(thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let mut polls = 0;
    loop {
        polls += 1;
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return (output, polls);
        }
        thread::park();
    }
}

#[test]
fn a_server_started_in_the_background_wakes_its_caller_when_ready() {
    init_tracing();
    let started = Instant::now();
    let (server, polls) = block_on(start_in_background(EmbeddedServer::builder()));
    let server = server.expect("start");
    // The first poll returned at once: the start ran on a thread of its own.
    assert!(polls >= 2, "polled {polls} time(s)");
    assert!(server.is_running());
    assert_eq!(scalar(server.port(), "SELECT 1").unwrap(), "1");
    eprintln!("started in {:?}", started.elapsed());
}
