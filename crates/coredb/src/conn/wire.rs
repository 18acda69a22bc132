//! The bytes between a connection and its server, read (and on shared lanes rewritten) on
//! their way to and from the driver.
//!
//! coredb opens each connection's socket itself and hands it to the driver wrapped in a
//! [`Wire`], which reads the header of every message each way (a tag and a length; about 500
//! instructions per statement in all, on a connection of one's own) and the bodies of the few
//! it needs.
//!
//! **Settings.** The values the server reports at startup (`ParameterStatus`) are kept; a
//! later report of a session setting with another value (a `SET` the text showed, or a
//! function calling `set_config` it did not) marks the connection as carrying session state,
//! so no one else gets it that way. The mark is set while the bytes are read, before the
//! driver parses them: a server reports a change before it says it is ready again, and the
//! driver ends a request only at that "ready", so whoever sees a statement end sees the mark
//! it left.
//!
//! **Reads under one Sync.** The driver ends every statement with a Sync, and the server
//! answers each Sync with its own round of work (a "ready", an output flush). On a shared lane
//! ([`ConnFlags::shared`]), statements that the classifier proves read-only and free of
//! function calls, sent in one write one after the other, go out with the Syncs between them
//! left out: they run as one implicit transaction, answered in one flush. The answers come
//! back without the "ready" after each statement, so the wire adds one where the server would
//! have sent it. When one of them fails, the server skips the rest until the Sync: the wire
//! answers each skipped statement with an error of its own ([`SKIPPED`], SQLSTATE `25P02`),
//! and coredb runs those statements again on a connection of their own; they never ran, so
//! each caller gets its own answer or its own error. After such a failure, reads keep a Sync
//! each for the lane's next [`CALM_WRITES`] writes. Writes, and anything else, keep their
//! Sync.
//!
//! **Lent.** On a connection of one's own, the holder may borrow the stream for a request of its
//! own while the driver has nothing under way ([`Lend`], used by `conn::direct`); the driver's
//! task waits until the answer has been read, and reads the rest of an answer whose holder
//! stopped waiting. A request may come in parts (a COPY's rows), given as the socket takes
//! them.
//!
//! **Queued.** On a shared lane, callers queue statements of their own on the stream
//! ([`Lend::enqueue`], see `queue`): the driver's task writes them together and files each
//! answer with its caller, before anything of its own.
//!
//! Under TLS the wrapper sits above the encryption ([`WireTls`]); the socket's own wrapper stops
//! reading when the handshake starts.

mod queue;

use std::collections::{HashSet, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{ready, Context, Poll, Waker};

use bytes::BytesMut;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub(crate) use queue::Queued;
#[cfg(unix)]
use tokio::net::UnixStream;

/// Settings the server reports when they change (`ParameterStatus`) that belong to the
/// session: a change from the value at connect means the connection carries session state,
/// whatever the statement's text said. (`search_path` is reported from PostgreSQL 18.)
const WATCHED_SETTINGS: [&[u8]; 9] = [
    b"session_authorization",
    b"is_superuser",
    b"TimeZone",
    b"DateStyle",
    b"IntervalStyle",
    b"client_encoding",
    b"standard_conforming_strings",
    b"default_transaction_read_only",
    b"search_path",
];

/// The request a client sends to ask for TLS; the server answers with one byte (`S` or `N`),
/// not a message.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Room kept for rewritten bytes between writes.
const OUT_KEPT: usize = 64 * 1024;

/// What the server would have said after a statement with a Sync of its own: ready, idle.
const READY: [u8; 6] = [b'Z', 0, 0, 0, 5, b'I'];

/// The message of the error a statement gets when the server skipped it: an earlier statement
/// under the same Sync failed. It did not run; coredb runs it again on its own.
pub(crate) const SKIPPED: &str =
    "coredb: skipped because an earlier read sent under the same Sync failed; it did not run";

/// Between a connection's I/O and its users: whether it serves as a shared lane, and whether a
/// session setting differs from its value at connect.
#[derive(Default)]
pub(crate) struct ConnFlags {
    /// The connection serves as a shared pipeline lane: its I/O task gathers what its callers
    /// send into one write (`conn::open::drive`), and reads in that write share one Sync.
    pub(crate) shared: AtomicBool,
    /// A session setting the server reports differs from its value at connect.
    pub(crate) changed: AtomicBool,
    /// The stream failed under a request of the holder's own.
    pub(crate) lost: AtomicBool,
    /// The stream the connection's holder may borrow ([`Lend`]), once open.
    pub(crate) lender: Mutex<Option<Weak<dyn Lend>>>,
}

impl std::fmt::Debug for ConnFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnFlags")
            .field("shared", &self.shared)
            .field("changed", &self.changed)
            .field("lost", &self.lost)
            .finish_non_exhaustive()
    }
}

/// An open socket: TCP, or a Unix-domain socket on the server's machine.
#[derive(Debug)]
pub(crate) enum Socket {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix-domain socket.
    #[cfg(unix)]
    Unix(UnixStream),
}

/// A stream whose messages are read (and on a shared lane rewritten) on their way; see the
/// module's docs. The driver's I/O task owns it; a connection of one's own may borrow the
/// stream for a request of its own ([`Lend`]).
pub(crate) struct Wire<S> {
    core: Arc<Mutex<Core<S>>>,
}

/// A wire's stream and its reading state, shared between the driver's I/O task and the
/// connection's holder.
struct Core<S> {
    inner: S,
    scan: Scan,
    sent: Sent,
    /// Bytes for the driver that did not fit its buffer, delivered before anything new is
    /// read; the first `held_read` of them were read already (answers the wire added).
    held: Vec<u8>,
    held_read: usize,
    /// Rewritten bytes the socket has not taken yet, from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
    /// Who has the stream: the driver, or a holder's request.
    lent: Lent,
    /// The waker of the driver's I/O task's last read, and whether the task waits for the
    /// stream to come back.
    driver: Option<Waker>,
    parked: bool,
    /// The driver's task has bytes to write, held back while the stream was lent: the
    /// holder's next request waits its turn behind them (through the driver).
    wants_write: bool,
    /// A lent request's bytes, sent from `lend_at` on; while `lend_open`, its holder has more
    /// to give once they are sent (a COPY's rows)...
    lend_out: BytesMut,
    lend_at: usize,
    lend_open: bool,
    /// ...and whether its answer ended (the "ready" read) before all of it was sent: the
    /// server refused it early, and what was not given yet is never asked for.
    lend_ended: bool,
    /// ...and its answer's: `lend_in[lend_from..lend_end]` read and not yet handed on (the
    /// rest is room).
    lend_in: Vec<u8>,
    lend_from: usize,
    lend_end: usize,
    /// A shared lane's statements queued for the driver's task to send and read (in
    /// `lend_out` and `lend_in` too).
    queue: queue::Queue,
}

/// Who has a wire's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lent {
    /// The driver.
    No,
    /// A holder's request, still being sent.
    Sending,
    /// A holder's request, sent; its answer is being read.
    Reading,
    /// A holder's request whose holder stopped waiting: the driver's task reads its answer
    /// to the end (and drops it) before anything else.
    Abandoned,
    /// The stream failed or the server broke the protocol during a lent request: the driver
    /// sees it closed.
    Lost,
    /// A shared lane's callers queued statements of their own: the driver's task sends them
    /// and files their answers before anything of its own ([`Lend::enqueue`]).
    Queued,
}

impl<S> Drop for Wire<S> {
    fn drop(&mut self) {
        let mut core = self.core();
        if core.lent == Lent::Queued {
            // The driver's task ended: queued statements get no answer.
            core.fail_queued(io::ErrorKind::ConnectionAborted);
        }
    }
}

impl<S> Wire<S> {
    /// `inner`, whose reports set `flags`.
    pub(crate) fn new(inner: S, flags: Arc<ConnFlags>) -> Self {
        Wire::reading(inner, Scan::new(Some(flags)))
    }

    /// `inner`, read from where `scan` stands.
    fn reading(inner: S, scan: Scan) -> Self {
        Wire {
            core: Arc::new(Mutex::new(Core {
                inner,
                scan,
                sent: Sent::default(),
                held: Vec::new(),
                held_read: 0,
                out: Vec::new(),
                out_at: 0,
                lent: Lent::No,
                driver: None,
                parked: false,
                wants_write: false,
                lend_out: BytesMut::new(),
                lend_at: 0,
                lend_open: false,
                lend_ended: false,
                lend_in: Vec::new(),
                lend_from: 0,
                lend_end: 0,
                queue: queue::Queue::default(),
            })),
        }
    }

    fn core(&self) -> MutexGuard<'_, Core<S>> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reading state, taken away: the bytes that follow are read above this stream.
    #[cfg(feature = "tls")]
    fn take_scan(&mut self) -> Scan {
        let mut scan = std::mem::replace(&mut self.core().scan, Scan::new(None));
        scan.through = false;
        scan
    }

    /// Lets the connection's holder borrow this stream for requests of its own (see
    /// [`Lend`]): registered in `flags`, where the connection picks it up once open. A later
    /// wire over this one (TLS) takes its place.
    pub(crate) fn lend_through(&self, flags: &ConnFlags)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let core: Arc<dyn Lend> = self.core.clone();
        *flags.lender.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::downgrade(&core));
    }
}

impl<S> Core<S> {
    /// Writes what is left of the rewritten bytes.
    #[inline]
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        S: AsyncWrite + Unpin,
    {
        if self.out.is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.drain_out(cx)
    }

    /// [`drain`](Self::drain) when there is something to write.
    fn drain_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        S: AsyncWrite + Unpin,
    {
        ready!(write_from(&mut self.inner, cx, &self.out, &mut self.out_at))?;
        self.out.clear();
        self.out_at = 0;
        if self.out.capacity() > OUT_KEPT {
            // A large statement passed: its room is not kept for the connection's life.
            self.out = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Whether the driver may use the stream now: while it is lent, the driver's task waits
    /// (and is woken when it comes back); an abandoned request's answer is read to its end
    /// first, in the driver's task.
    #[inline]
    fn driver_may(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match self.lent {
            Lent::No => Poll::Ready(Ok(())),
            Lent::Sending | Lent::Reading => {
                self.parked = true;
                Poll::Pending
            }
            Lent::Abandoned => {
                self.parked = false;
                ready!(self.answer(cx, &mut |_, _| Poll::Ready(false), &mut |_, _| {}, false))?;
                Poll::Ready(Ok(()))
            }
            Lent::Lost => Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into())),
            Lent::Queued => self.serve(cx),
        }
    }

    /// Keeps the waker of the driver's task, polling now.
    #[inline]
    fn driver_polls(&mut self, cx: &mut Context<'_>) {
        match &mut self.driver {
            Some(waker) => waker.clone_from(cx.waker()),
            None => self.driver = Some(cx.waker().clone()),
        }
    }

    /// Wakes the driver's task if it waits for the stream to come back.
    fn unpark(&mut self) {
        if std::mem::take(&mut self.parked) {
            if let Some(waker) = &self.driver {
                waker.wake_by_ref();
            }
        }
    }

    /// A lent request was answered: the driver's task watches the stream again (for the
    /// server closing it, or messages of its own), registered with the stream from here
    /// without a wake-up, unless something arrived already. (Reading the answer registered
    /// the holder's task instead.)
    fn watch(&mut self)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(waker) = self.driver.clone() else {
            return;
        };
        let mut cx = Context::from_waker(&waker);
        let mut space = [0u8; 512];
        let mut buf = ReadBuf::new(&mut space);
        match Pin::new(&mut self.inner).poll_read(&mut cx, &mut buf) {
            Poll::Pending => {}
            Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                // Read here, delivered by the driver's task.
                self.held.extend_from_slice(buf.filled());
                waker.wake();
            }
            // The end, or a failure.
            Poll::Ready(_) => self.lose(),
        }
    }

    /// The stream failed under a lent request (or right after it): the connection is lost,
    /// and the driver's task sees it closed.
    fn lose(&mut self) {
        self.lent = Lent::Lost;
        if let Some(flags) = &self.scan.flags {
            flags.lost.store(true, Ordering::Release);
        }
        self.parked = true;
        self.unpark();
    }

    /// Nothing is under way: no request of the driver's is unanswered or half sent, nothing
    /// waits to be delivered or written, and the reading stands between messages.
    fn idle(&self) -> bool {
        self.lent == Lent::No
            && !self.wants_write
            && self.scan.started
            && self.scan.flags.is_some()
            && !self.scan.through
            && self.scan.pending.queue.is_empty()
            && matches!(self.scan.at, At::Header { have: 0, .. })
            && self.sent.between()
            && self.held.is_empty()
            && self.out.is_empty()
    }

    /// Sends a lent request, then reads its answer up to the "ready" that ends it, handing
    /// each message but settings reports (read here, as ever) to `each`. The stream then goes
    /// back to the driver.
    ///
    /// With `some`, it returns `false` as soon as it handed on what it could read (a stream's
    /// rows), and is called again for the rest; `true` once the answer ended.
    fn answer(
        &mut self,
        cx: &mut Context<'_>,
        more: &mut dyn FnMut(&mut Context<'_>, &mut BytesMut) -> Poll<bool>,
        each: &mut dyn FnMut(u8, &[u8]),
        some: bool,
    ) -> Poll<io::Result<bool>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self.lent == Lent::Lost {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        match ready!(self.exchange(cx, more, each, some)) {
            Ok(false) => Poll::Ready(Ok(false)),
            Ok(true) => {
                self.give_back();
                if !self.held.is_empty() {
                    // Something of the driver's came with the answer: its task reads it now.
                    self.parked = true;
                }
                if self.parked {
                    self.unpark();
                } else {
                    self.watch();
                }
                Poll::Ready(Ok(true))
            }
            Err(err) => {
                self.lose();
                Poll::Ready(Err(err))
            }
        }
    }

    /// The stream goes back to the driver after a lent request or queued statements: what the
    /// server sent after their last answer is the driver's, read as it is, and the room of a
    /// large request or answer is not kept for the connection's life.
    fn give_back(&mut self) {
        self.lent = Lent::No;
        self.lend_out.clear();
        self.lend_at = 0;
        if self.lend_out.capacity() > OUT_KEPT {
            self.lend_out = BytesMut::new();
        }
        self.held
            .extend_from_slice(&self.lend_in[self.lend_from..self.lend_end]);
        self.lend_from = 0;
        self.lend_end = 0;
        if self.lend_in.len() > OUT_KEPT {
            self.lend_in = Vec::new();
        }
    }

    /// [`answer`](Self::answer)'s sending and reading, up to the "ready". While the socket
    /// takes no more of a long request (a COPY), what the server sends meanwhile (notices, its
    /// early refusal) is read, so neither side waits on the other's full buffer.
    fn exchange(
        &mut self,
        cx: &mut Context<'_>,
        more: &mut dyn FnMut(&mut Context<'_>, &mut BytesMut) -> Poll<bool>,
        each: &mut dyn FnMut(u8, &[u8]),
        some: bool,
    ) -> Poll<io::Result<bool>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        while self.lent == Lent::Sending {
            match write_from(&mut self.inner, cx, &self.lend_out, &mut self.lend_at) {
                Poll::Ready(written) => written?,
                Poll::Pending => {
                    while !self.lend_ended {
                        self.lend_ended = self.deliver(each);
                        if !self.lend_ended {
                            ready!(self.fill(cx))?;
                        }
                    }
                    return Poll::Pending;
                }
            }
            if self.lend_open && !self.lend_ended {
                self.lend_out.clear();
                self.lend_at = 0;
                match more(cx, &mut self.lend_out) {
                    Poll::Ready(open) => self.lend_open = open,
                    Poll::Pending => {
                        // The next part is not ready (a caller's stream): what was sent goes
                        // out meanwhile.
                        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                        return Poll::Pending;
                    }
                }
            } else {
                ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                self.lent = Lent::Reading;
            }
        }
        while !self.lend_ended {
            let from = self.lend_from;
            self.lend_ended = self.deliver(each);
            if !self.lend_ended {
                if some && self.lend_from != from {
                    return Poll::Ready(Ok(false));
                }
                ready!(self.fill(cx))?;
            }
        }
        Poll::Ready(Ok(true))
    }

    /// Hands the whole messages of a lent answer read so far to `each` (settings reports are
    /// read here); true at the "ready" that ends it, with what follows it left unread.
    fn deliver(&mut self, each: &mut dyn FnMut(u8, &[u8])) -> bool {
        let read = &self.lend_in[..self.lend_end];
        while let Some((tag, body)) = next_message(read, &mut self.lend_from) {
            match tag {
                b'S' => self.scan.report(body),
                b'Z' => return true,
                _ => each(tag, body),
            }
        }
        false
    }

    /// Reads more of a lent answer: what is left unhanded moves to the front, and a message
    /// larger than the room makes it grow.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        S: AsyncRead + Unpin,
    {
        if self.lend_from > 0 {
            self.lend_in.copy_within(self.lend_from..self.lend_end, 0);
            self.lend_end -= self.lend_from;
            self.lend_from = 0;
        }
        if self.lend_in.len() - self.lend_end < 4096 {
            let room = (self.lend_in.len() * 2).max(8192);
            self.lend_in.resize(room, 0);
        }
        let mut buf = ReadBuf::new(&mut self.lend_in[self.lend_end..]);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        self.lend_end += n;
        Poll::Ready(Ok(()))
    }
}

/// The whole message of `read` at `from`, if it is all there: its tag and body; `from` moves
/// past it.
fn next_message<'r>(read: &'r [u8], from: &mut usize) -> Option<(u8, &'r [u8])> {
    let header = read.get(*from..*from + 5)?;
    let len = body_len([header[1], header[2], header[3], header[4]]);
    let body = read.get(*from + 5..*from + 5 + len)?;
    let tag = header[0];
    *from += 5 + len;
    Some((tag, body))
}

/// Writes `buf` from `at` on to `inner`, moving `at` along.
fn write_from<S: AsyncWrite + Unpin>(
    inner: &mut S,
    cx: &mut Context<'_>,
    buf: &[u8],
    at: &mut usize,
) -> Poll<io::Result<()>> {
    while *at < buf.len() {
        let n = ready!(Pin::new(&mut *inner).poll_write(cx, &buf[*at..]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        *at += n;
    }
    Poll::Ready(Ok(()))
}

/// A connection's stream, borrowed by its holder for one request at a time while the driver has
/// nothing under way on it (see `conn::direct`): the holder's task writes the request and reads
/// the answer itself, with no hop through the driver's I/O task. Meanwhile the driver's task
/// waits; it takes the stream back when the answer has been read, and reads the rest of an
/// answer whose holder stopped waiting.
pub(crate) trait Lend: Send + Sync {
    /// Writes the request `request` encodes into an empty buffer (or its first part: see
    /// [`poll_answer`](Self::poll_answer)) when the stream is idle and `request` says yes;
    /// false when the driver has something under way (the request is then the driver's to
    /// send).
    fn start(&self, request: &mut dyn FnMut(&mut BytesMut) -> bool) -> bool;

    /// Sends the request [`start`](Self::start) took and reads its answer, handing each
    /// message (but the last "ready", and settings reports) to `each`. Once what was encoded
    /// is sent, `more` encodes the next part into the emptied buffer, as long as it says more
    /// is to come (a COPY's rows or data), or is not ready to (waking the task when it is);
    /// it is not asked again once the answer has ended. An error leaves the connection lost.
    fn poll_answer(
        &self,
        cx: &mut Context<'_>,
        more: &mut dyn FnMut(&mut Context<'_>, &mut BytesMut) -> Poll<bool>,
        each: &mut dyn FnMut(u8, &[u8]),
    ) -> Poll<io::Result<()>>;

    /// Like [`poll_answer`](Self::poll_answer) for a request sent whole, but ready as soon
    /// as it handed on what it could read: `false` while the answer goes on (a stream's rows,
    /// read as the caller asks for them), `true` once it ended.
    fn poll_some(
        &self,
        cx: &mut Context<'_>,
        each: &mut dyn FnMut(u8, &[u8]),
    ) -> Poll<io::Result<bool>>;

    /// The holder stopped waiting for the answer: the driver's task reads it to its end. A
    /// request that had more to come is ended first with what `unfinished` encodes (a COPY's
    /// `CopyFail`).
    fn abandon(&self, unfinished: &mut dyn FnMut(&mut BytesMut));

    /// On a shared lane: queues the statement `request` encodes (its `Bind` and `Execute`)
    /// on the prepared statement named `statement`, for the driver's task to send with the
    /// others queued and to read its answer, keeping `keep` rows. Returns its ticket, or
    /// `None` when the driver has something under way or waiting to be written (the
    /// statement is then the driver's to send). See `queue`.
    fn enqueue(
        &self,
        request: &mut dyn FnMut(&mut BytesMut) -> bool,
        statement: &str,
        keep: usize,
    ) -> Option<u64>;

    /// The answer for a queued statement's `ticket`, once it has come.
    fn poll_queued(&self, ticket: u64, cx: &mut Context<'_>) -> Poll<Queued>;

    /// The caller of a queued statement's `ticket` stopped waiting: its answer is dropped.
    fn forget(&self, ticket: u64);
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Lend for Mutex<Core<S>> {
    fn start(&self, request: &mut dyn FnMut(&mut BytesMut) -> bool) -> bool {
        let mut core = self.lock().unwrap_or_else(PoisonError::into_inner);
        if !core.idle() {
            return false;
        }
        core.lend_out.clear();
        if !request(&mut core.lend_out) {
            return false;
        }
        core.lend_at = 0;
        core.lend_open = true;
        core.lend_ended = false;
        core.lent = Lent::Sending;
        true
    }

    fn poll_answer(
        &self,
        cx: &mut Context<'_>,
        more: &mut dyn FnMut(&mut Context<'_>, &mut BytesMut) -> Poll<bool>,
        each: &mut dyn FnMut(u8, &[u8]),
    ) -> Poll<io::Result<()>> {
        let mut core = self.lock().unwrap_or_else(PoisonError::into_inner);
        core.answer(cx, more, each, false).map_ok(|_| ())
    }

    fn poll_some(
        &self,
        cx: &mut Context<'_>,
        each: &mut dyn FnMut(u8, &[u8]),
    ) -> Poll<io::Result<bool>> {
        let mut core = self.lock().unwrap_or_else(PoisonError::into_inner);
        core.answer(cx, &mut |_, _| Poll::Ready(false), each, true)
    }

    fn abandon(&self, unfinished: &mut dyn FnMut(&mut BytesMut)) {
        let mut core = self.lock().unwrap_or_else(PoisonError::into_inner);
        if core.lent == Lent::Sending && core.lend_open && !core.lend_ended {
            unfinished(&mut core.lend_out);
        }
        core.lend_open = false;
        if matches!(core.lent, Lent::Sending | Lent::Reading) {
            core.lent = Lent::Abandoned;
            core.parked = true;
            core.unpark();
        }
    }

    fn enqueue(
        &self,
        request: &mut dyn FnMut(&mut BytesMut) -> bool,
        statement: &str,
        keep: usize,
    ) -> Option<u64> {
        let mut core = self.lock().unwrap_or_else(PoisonError::into_inner);
        core.enqueue(request, statement, keep)
    }

    fn poll_queued(&self, ticket: u64, cx: &mut Context<'_>) -> Poll<Queued> {
        let mut core = self.lock().unwrap_or_else(PoisonError::into_inner);
        core.poll_queued(ticket, cx)
    }

    fn forget(&self, ticket: u64) {
        let mut core = self.lock().unwrap_or_else(PoisonError::into_inner);
        core.forget(ticket);
    }
}

/// How the server ends its answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ends {
    /// With a "ready" (its own Sync, or a simple query).
    Ready,
    /// Without one: its Sync was left out.
    Merged,
}

/// How the requests sent and not yet answered end, oldest first.
#[derive(Default, Debug)]
struct Pending {
    queue: VecDeque<Ends>,
    /// How many of them end without a "ready": while none do, nothing is added.
    merged: usize,
    /// Writes left in which reads keep a Sync each, after one failed under a shared Sync: a
    /// run of failing reads then costs no rerun on a connection of its own each.
    calm: u32,
}

/// Writes in which reads keep a Sync each after one failed under a shared Sync.
const CALM_WRITES: u32 = 32;

impl Pending {
    fn push(&mut self, ends: Ends) {
        self.merged += usize::from(ends == Ends::Merged);
        self.queue.push_back(ends);
    }

    fn pop(&mut self) {
        if self.queue.pop_front() == Some(Ends::Merged) {
            self.merged -= 1;
        }
    }

    fn front(&self) -> Option<Ends> {
        self.queue.front().copied()
    }
}

/// Where a message's bytes stand.
#[derive(Clone, Copy)]
enum At {
    /// At a message's start; `have` bytes of its 5-byte header gathered in `header`.
    Header { header: [u8; 5], have: usize },
    /// Inside the body of a message tagged `tag`, `left` bytes of it to pass.
    Body { tag: u8, left: usize },
    /// Inside a body being gathered (`left` bytes still to come).
    Keep { tag: u8, left: usize },
}

const AT_START: At = At::Header {
    header: [0; 5],
    have: 0,
};

impl Default for At {
    fn default() -> Self {
        AT_START
    }
}

/// The reading of the server's messages.
struct Scan {
    /// Whom to tell; `None` when this stream's bytes are not messages to read (the socket
    /// under TLS).
    flags: Option<Arc<ConnFlags>>,
    at: At,
    /// A kept body (a settings report), gathered across reads.
    body: Vec<u8>,
    /// Nothing was written yet: the first write says whether an answer to a TLS request
    /// comes first.
    first_write: bool,
    /// The next byte read is the server's answer to a TLS request.
    answer_due: bool,
    /// TLS follows: this stream's bytes are records, read by the stream above.
    through: bool,
    /// The startup is over (the first "ready"): reports from now on are changes, and the
    /// client's requests are followed.
    started: bool,
    /// Each watched setting's value at connect.
    at_connect: [Option<Box<[u8]>>; WATCHED_SETTINGS.len()],
    /// One bit per watched setting whose value differs from the one at connect.
    differs: u16,
    /// How the requests sent and not yet answered end, oldest first.
    pending: Pending,
    /// Answers the wire adds to what was just read, one after the other...
    added: Vec<u8>,
    /// ...and where each group goes: after the byte at the first number, ending in `added`
    /// at the second.
    points: Vec<(usize, usize)>,
}

impl Scan {
    fn new(flags: Option<Arc<ConnFlags>>) -> Self {
        Scan {
            flags,
            at: AT_START,
            body: Vec::new(),
            first_write: true,
            answer_due: false,
            through: false,
            started: false,
            at_connect: Default::default(),
            differs: 0,
            pending: Pending::default(),
            added: Vec::new(),
            points: Vec::new(),
        }
    }

    fn wrote_first(&mut self, buf: &[u8]) {
        if std::mem::take(&mut self.first_write) && buf.starts_with(&SSL_REQUEST) {
            self.answer_due = true;
        }
    }

    /// Reads the bytes of `buf` from `i` on, new from the server. Answers the wire adds go in
    /// place; when `buf` has no room for them, the bytes from the first of them on go, with
    /// them, to the front of `held` (its first `held_read` bytes, read already).
    fn read(
        &mut self,
        buf: &mut ReadBuf<'_>,
        mut i: usize,
        held: &mut Vec<u8>,
        held_read: &mut usize,
    ) {
        if self.flags.is_none() || self.through || i >= buf.filled().len() {
            return;
        }
        if std::mem::take(&mut self.answer_due) {
            if buf.filled()[i] == b'S' {
                // TLS follows: its records are no messages; the stream above reads them.
                self.through = true;
                return;
            }
            i += 1;
        }
        let end = buf.filled().len();
        if self.pending.merged == 0 {
            // Nothing to add: whole messages are read in place.
            i = self.skim(buf.filled(), i);
            if i >= end {
                return;
            }
        }
        // Read to the end, noting where answers go; then put them in, in one pass.
        self.added.clear();
        self.points.clear();
        while i < end {
            let (used, ended) = self.step(&buf.filled()[i..end]);
            i += used;
            if let Some(tag) = ended {
                let before = self.added.len();
                self.ended(tag);
                if self.added.len() > before {
                    self.points.push((i, self.added.len()));
                }
            }
        }
        let Some(&(first, _)) = self.points.first() else {
            return;
        };
        let total = self.added.len();
        if buf.remaining() >= total {
            // Each run of the server's bytes moves once, from the back.
            buf.put_slice(&self.added);
            let filled = buf.filled_mut();
            let (mut from_end, mut to_end) = (end, end + total);
            for (k, &(at, added_end)) in self.points.iter().enumerate().rev() {
                let run = from_end - at;
                filled.copy_within(at..from_end, to_end - run);
                to_end -= run;
                let added_start = k.checked_sub(1).map_or(0, |k| self.points[k].1);
                let added = &self.added[added_start..added_end];
                filled[to_end - added.len()..to_end].copy_from_slice(added);
                to_end -= added.len();
                from_end = at;
            }
        } else {
            // No room: from the first answer on, the bytes (read already) wait in `held`.
            let mut waiting = Vec::with_capacity(end - first + total);
            let mut from = first;
            let mut added_start = 0;
            for &(at, added_end) in &self.points {
                waiting.extend_from_slice(&buf.filled()[from..at]);
                waiting.extend_from_slice(&self.added[added_start..added_end]);
                (from, added_start) = (at, added_end);
            }
            waiting.extend_from_slice(&buf.filled()[from..end]);
            *held_read = waiting.len();
            held.splice(0..0, waiting);
            buf.set_filled(first);
        }
    }

    /// Reads the whole messages of `data` from `i`, when at a message's start; where it
    /// stopped.
    #[inline]
    fn skim(&mut self, data: &[u8], mut i: usize) -> usize {
        if !matches!(self.at, At::Header { have: 0, .. }) {
            return i;
        }
        while let Some(header) = data.get(i..i + 5) {
            let next = i + 5 + body_len([header[1], header[2], header[3], header[4]]);
            let Some(body) = data.get(i + 5..next) else {
                break;
            };
            match header[0] {
                b'Z' => {
                    self.started = true;
                    self.pending.pop();
                }
                b'S' => self.report(body),
                _ => {}
            }
            i = next;
        }
        i
    }

    /// Reads one step of `data` (a whole message when it is all there); how many bytes it
    /// took, and the tag of the message that ended with them.
    fn step(&mut self, data: &[u8]) -> (usize, Option<u8>) {
        match self.at {
            At::Header { have: 0, .. } if data.len() >= 5 => {
                let tag = data[0];
                let body = body_len([data[1], data[2], data[3], data[4]]);
                match data.get(5..5 + body) {
                    Some(whole) => {
                        if tag == b'S' {
                            self.report(whole);
                        }
                        (5 + body, Some(tag))
                    }
                    None => {
                        self.begin(tag, body);
                        (5, None)
                    }
                }
            }
            At::Header {
                mut header,
                mut have,
            } => {
                let (taken, whole) = gather_header(&mut header, &mut have, data);
                let Some(body) = whole else {
                    self.at = At::Header { header, have };
                    return (taken, None);
                };
                if body == 0 {
                    self.at = AT_START;
                    return (taken, Some(header[0]));
                }
                self.begin(header[0], body);
                (taken, None)
            }
            At::Body { tag, left } => {
                let passed = left.min(data.len());
                if passed < left {
                    self.at = At::Body {
                        tag,
                        left: left - passed,
                    };
                    return (passed, None);
                }
                self.at = AT_START;
                (passed, Some(tag))
            }
            At::Keep { tag, left } => {
                let taken = left.min(data.len());
                self.body.extend_from_slice(&data[..taken]);
                if taken < left {
                    self.at = At::Keep {
                        tag,
                        left: left - taken,
                    };
                    return (taken, None);
                }
                let body = std::mem::take(&mut self.body);
                self.report(&body);
                self.body = body;
                self.body.clear();
                self.at = AT_START;
                (taken, Some(tag))
            }
        }
    }

    /// A message tagged `tag` with a body of `body` bytes, not all in hand, starts.
    fn begin(&mut self, tag: u8, body: usize) {
        self.at = if tag == b'S' {
            At::Keep { tag, left: body }
        } else {
            At::Body { tag, left: body }
        };
    }

    /// A message tagged `tag` ended: what it closes; the answers to add after it go to the end
    /// of `added`.
    fn ended(&mut self, tag: u8) {
        match tag {
            b'Z' => {
                self.started = true;
                self.pending.pop();
            }
            // A statement whose Sync was left out is done: the server sends no "ready".
            b'C' | b'I' | b's' if self.pending.front() == Some(Ends::Merged) => {
                self.pending.pop();
                self.added.extend_from_slice(&READY);
            }
            b'E' if self.pending.front() == Some(Ends::Merged) => {
                self.pending.calm = CALM_WRITES;
                self.pending.pop();
                self.added.extend_from_slice(&READY);
                // The server skips what follows until the Sync: each skipped statement gets
                // an error of its own...
                while self.pending.front() == Some(Ends::Merged) {
                    self.pending.pop();
                    skipped(&mut self.added);
                    self.added.extend_from_slice(&READY);
                }
                // ...the last one too, whose "ready" the server does send.
                if self.pending.front() == Some(Ends::Ready) {
                    skipped(&mut self.added);
                }
            }
            _ => {}
        }
    }

    /// A settings report: `name\0value\0`.
    fn report(&mut self, body: &[u8]) {
        let mut parts = body.split(|&b| b == 0);
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            return;
        };
        let Some(i) = WATCHED_SETTINGS.iter().position(|w| *w == name) else {
            return;
        };
        if !self.started {
            self.at_connect[i] = Some(value.into());
            return;
        }
        let bit = 1u16 << i;
        if self.at_connect[i].as_deref() == Some(value) {
            self.differs &= !bit;
        } else {
            self.differs |= bit;
        }
        if let Some(flags) = &self.flags {
            flags.changed.store(self.differs != 0, Ordering::Release);
        }
    }
}

/// Gathers a message's 5-byte header across reads (`have` bytes of it so far): takes what
/// it still needs from `data`; how many bytes it took, and the body's length once the header
/// is whole.
fn gather_header(header: &mut [u8; 5], have: &mut usize, data: &[u8]) -> (usize, Option<usize>) {
    let taken = (5 - *have).min(data.len());
    header[*have..*have + taken].copy_from_slice(&data[..taken]);
    *have += taken;
    let whole = (*have == 5).then(|| body_len([header[1], header[2], header[3], header[4]]));
    (taken, whole)
}

/// The length of a message's body from its length field (which counts itself).
fn body_len(field: [u8; 4]) -> usize {
    (u32::from_be_bytes(field) as usize).saturating_sub(4)
}

/// Appends the error of a statement the server skipped (see [`SKIPPED`]).
fn skipped(out: &mut Vec<u8>) {
    let fields: [(u8, &str); 4] = [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', "25P02"),
        (b'M', SKIPPED),
    ];
    let len = 4 + fields.iter().map(|(_, v)| v.len() + 2).sum::<usize>() + 1;
    out.push(b'E');
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for (field, value) in fields {
        out.push(field);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out.push(0);
}

/// The reading of the client's messages (after the startup).
#[derive(Default)]
struct Sent {
    /// Where the client's message bytes stand (bodies passed are `At::Body`).
    at: At,
    /// A kept body (a `Parse`, a `Close`), gathered across writes.
    body: Vec<u8>,
    /// The last message was `CopyDone` or `CopyFail`: the server answers the Sync that
    /// follows, not the one sent with the `COPY` (which it ignored).
    after_copy: bool,
    /// Prepared statements that may share a Sync: read-only, calling no function.
    mergeable: HashSet<Box<[u8]>, foldhash::fast::RandomState>,
    /// The unnamed statement may share one.
    unnamed: bool,
    /// The request being read.
    request: Request,
    /// A request was begun and not ended (by a Sync or as a simple query).
    open: bool,
    /// The units of the write being planned, in order: where each Sync is and whether its
    /// request may share it (`None` for a simple query).
    units: Vec<(usize, Option<bool>)>,
}

/// What one request (up to its Sync) was made of.
#[derive(Default, Clone, Copy)]
struct Request {
    /// Something other than an unnamed `Parse`, an unnamed portal's `Bind`, a `Describe` and
    /// an `Execute`.
    other: bool,
    /// The `Bind`'s statement may share a Sync.
    bound_mergeable: bool,
    executes: bool,
}

/// What a client message means for the answers.
enum Unit {
    /// Nothing answered by its own.
    None,
    /// A Sync the server answers with a "ready"; whether its request may share it.
    Sync(bool),
    /// A simple query, answered with a "ready".
    Query,
}

impl Sent {
    /// Between requests: every one begun was ended, and no message is half written.
    fn between(&self) -> bool {
        !self.open && matches!(self.at, At::Header { have: 0, .. })
    }

    /// Reads `data`, written as it is, noting each request's answer in `pending`.
    fn walk(&mut self, mut data: &[u8], pending: &mut Pending) {
        if matches!(self.at, At::Header { have: 0, .. }) {
            // Whole messages from a message's start: the common case, read in place.
            while let Some(header) = data.get(..5) {
                let body = body_len([header[1], header[2], header[3], header[4]]);
                let Some(whole) = data.get(5..5 + body) else {
                    break;
                };
                self.note(header[0], whole, pending);
                data = &data[5 + body..];
            }
        }
        while !data.is_empty() {
            match self.at {
                At::Body { tag, left } => {
                    let passed = left.min(data.len());
                    data = &data[passed..];
                    self.at = if passed < left {
                        At::Body {
                            tag,
                            left: left - passed,
                        }
                    } else {
                        AT_START
                    };
                }
                At::Keep { tag, left } => {
                    let taken = left.min(data.len());
                    self.body.extend_from_slice(&data[..taken]);
                    data = &data[taken..];
                    if taken < left {
                        self.at = At::Keep {
                            tag,
                            left: left - taken,
                        };
                    } else {
                        self.at = AT_START;
                        let body = std::mem::take(&mut self.body);
                        self.note(tag, &body, pending);
                        self.body = body;
                        self.body.clear();
                    }
                }
                At::Header { have: 0, .. } if data.len() >= 5 => {
                    let tag = data[0];
                    let body = body_len([data[1], data[2], data[3], data[4]]);
                    match data.get(5..5 + body) {
                        Some(whole) => {
                            self.note(tag, whole, pending);
                            data = &data[5 + body..];
                        }
                        None => {
                            data = &data[5..];
                            self.at = self.begin(tag, body, pending);
                        }
                    }
                }
                At::Header {
                    mut header,
                    mut have,
                } => {
                    let (taken, whole) = gather_header(&mut header, &mut have, data);
                    data = &data[taken..];
                    self.at = match whole {
                        None => At::Header { header, have },
                        Some(0) => {
                            self.note(header[0], &[], pending);
                            AT_START
                        }
                        Some(body) => self.begin(header[0], body, pending),
                    };
                }
            }
        }
    }

    /// How to read a body of `body` bytes of a message tagged `tag`, not all in hand.
    fn begin(&mut self, tag: u8, body: usize, pending: &mut Pending) -> At {
        if matches!(tag, b'P' | b'C') {
            return At::Keep { tag, left: body };
        }
        // Its body is not needed: the message counts now.
        self.note(tag, &[], pending);
        At::Body { tag, left: body }
    }

    /// Notes a whole message (`body` may be empty for one whose body was not kept); pushes
    /// the answer it is due when it is written as it is.
    fn note(&mut self, tag: u8, body: &[u8], pending: &mut Pending) {
        self.open = !matches!(tag, b'S' | b'Q');
        // The messages of every statement, first: written as they are, there is nothing to
        // learn from them but where a request ends.
        match tag {
            b'B' => {
                self.request.other = true;
                return;
            }
            b'E' | b'D' => return,
            b'S' if !self.after_copy => {
                self.request = Request::default();
                pending.push(Ends::Ready);
                return;
            }
            _ => {}
        }
        match self.unit(tag, body, false) {
            Unit::None => {}
            Unit::Sync(_) | Unit::Query => pending.push(Ends::Ready),
        }
    }

    /// What message `tag` with `body` is, for the request being read.
    /// `planning`: the write may leave Syncs out (a shared lane's); written as it is, which
    /// statement a `Bind` names does not matter.
    fn unit(&mut self, tag: u8, body: &[u8], planning: bool) -> Unit {
        let after_copy = std::mem::take(&mut self.after_copy);
        match tag {
            b'P' => {
                let mut parts = body.split(|&b| b == 0);
                let (name, query) = (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
                let mergeable = std::str::from_utf8(query).is_ok_and(|sql| {
                    let class = crate::sql::classify(sql);
                    class.is_read_only() && !class.calls_functions()
                });
                if name.is_empty() {
                    self.unnamed = mergeable;
                } else if mergeable {
                    self.mergeable.insert(name.into());
                } else {
                    self.mergeable.remove(name);
                    self.request.other = true;
                }
                Unit::None
            }
            b'B' if !planning => {
                self.request.other = true;
                Unit::None
            }
            b'B' => {
                let mut parts = body.split(|&b| b == 0);
                let (portal, statement) =
                    (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
                self.request.other |= !portal.is_empty();
                self.request.bound_mergeable = if statement.is_empty() {
                    self.unnamed
                } else {
                    self.mergeable.contains(statement)
                };
                Unit::None
            }
            b'D' => Unit::None,
            b'E' => {
                self.request.executes = true;
                Unit::None
            }
            b'S' if after_copy => {
                self.request = Request::default();
                Unit::None
            }
            b'S' => {
                let r = std::mem::take(&mut self.request);
                Unit::Sync(!r.other && r.bound_mergeable && r.executes)
            }
            b'Q' => {
                self.request = Request::default();
                Unit::Query
            }
            b'c' | b'f' => {
                self.after_copy = true;
                self.request.other = true;
                Unit::None
            }
            b'C' => {
                if let Some((b'S', name)) = body.split_first().map(|(k, rest)| (*k, rest)) {
                    let name = name.strip_suffix(&[0]).unwrap_or(name);
                    self.mergeable.remove(name);
                }
                self.request.other = true;
                Unit::None
            }
            _ => {
                self.request.other = true;
                Unit::None
            }
        }
    }

    /// Copies `buf` (whole messages from a message's start) into `out`, leaving out the Sync
    /// between two requests that may share one, and notes each request's answer in
    /// `pending`. Bytes of a message `buf` holds only part of are copied as they are.
    fn plan(&mut self, buf: &[u8], out: &mut Vec<u8>, pending: &mut Pending) {
        if !matches!(self.at, At::Header { have: 0, .. }) {
            // In the middle of a message: nothing is left out.
            self.walk(buf, pending);
            out.extend_from_slice(buf);
            return;
        }
        let mut units = std::mem::take(&mut self.units);
        units.clear();
        let mut i = 0;
        while let Some(header) = buf.get(i..i + 5) {
            let body = body_len([header[1], header[2], header[3], header[4]]);
            let Some(whole) = buf.get(i + 5..i + 5 + body) else {
                break;
            };
            self.open = !matches!(header[0], b'S' | b'Q');
            match self.unit(header[0], whole, true) {
                Unit::None => {}
                Unit::Sync(mergeable) => units.push((i, Some(mergeable))),
                Unit::Query => units.push((i, None)),
            }
            i += 5 + body;
        }
        let merging = pending.calm == 0;
        pending.calm = pending.calm.saturating_sub(1);
        let mut from = 0;
        for (k, &(at, mergeable)) in units.iter().enumerate() {
            let shares = merging
                && mergeable == Some(true)
                && units.get(k + 1).is_some_and(|next| next.1 == Some(true));
            if shares {
                out.extend_from_slice(&buf[from..at]);
                from = at + 5;
                pending.push(Ends::Merged);
            } else {
                pending.push(Ends::Ready);
            }
        }
        out.extend_from_slice(&buf[from..]);
        self.units = units;
        // What follows is a part of a message: read as it comes.
        self.walk(&buf[i..], pending);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut core = self.core();
        let this = &mut *core;
        this.driver_polls(cx);
        if this.lent != Lent::No && ready!(this.driver_may(cx)).is_err() {
            // The stream was lost under a lent request: the driver sees it closed.
            return Poll::Ready(Ok(()));
        }
        let from = buf.filled().len();
        let read_from = if this.held.is_empty() {
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            from
        } else {
            let n = this.held.len().min(buf.remaining());
            buf.put_slice(&this.held[..n]);
            this.held.drain(..n);
            let added = this.held_read.min(n);
            this.held_read -= added;
            from + added
        };
        this.scan
            .read(buf, read_from, &mut this.held, &mut this.held_read);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut core = self.core();
        let this = &mut *core;
        if !this.scan.started || this.scan.flags.is_none() || this.scan.through {
            this.scan.wrote_first(buf);
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if this.lent != Lent::No && this.driver_may(cx)?.is_pending() {
            this.wants_write = true;
            return Poll::Pending;
        }
        this.wants_write = false;
        let shared = this
            .scan
            .flags
            .as_ref()
            .is_some_and(|flags| flags.shared.load(Ordering::Relaxed));
        // What was rewritten goes first (nothing, mostly).
        ready!(this.drain(cx))?;
        if !shared {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
            this.sent.walk(&buf[..n], &mut this.scan.pending);
            return Poll::Ready(Ok(n));
        }
        this.sent.plan(buf, &mut this.out, &mut this.scan.pending);
        // Taken whole; what the socket does not take now goes at the next flush.
        if let Poll::Ready(Err(err)) = this.drain(cx) {
            return Poll::Ready(Err(err));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut core = self.core();
        let this = &mut *core;
        if this.lent != Lent::No {
            ready!(this.driver_may(cx))?;
        }
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut core = self.core();
        let this = &mut *core;
        if this.lent == Lent::Queued {
            // Closing: queued statements get no answer.
            this.fail_queued(io::ErrorKind::ConnectionAborted);
        }
        if this.lent != Lent::No {
            // Closing: an abandoned answer need not be read.
            this.lent = Lent::Lost;
        }
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(unix)]
            Socket::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Tcp(s) => s.is_write_vectored(),
            #[cfg(unix)]
            Socket::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A TLS connector whose streams are read like a [`Wire`]: the reading moves from the socket
/// to the decrypted stream when the handshake starts.
#[cfg(feature = "tls")]
pub(crate) struct WireTls<C>(pub(crate) C);

#[cfg(feature = "tls")]
impl<C, S> tokio_postgres::tls::TlsConnect<Wire<S>> for WireTls<C>
where
    C: tokio_postgres::tls::TlsConnect<Wire<S>> + Send + 'static,
    C::Future: Send,
    C::Stream: Send + 'static,
    S: Send + 'static,
{
    type Stream = Wire<C::Stream>;
    type Error = C::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Stream, C::Error>> + Send>>;

    fn connect(self, mut stream: Wire<S>) -> Self::Future {
        let scan = stream.take_scan();
        let handshake = self.0.connect(stream);
        Box::pin(async move {
            let inner = handshake.await?;
            let flags = scan.flags.clone();
            let wire = Wire::reading(inner, scan);
            if let Some(flags) = flags {
                let lends = flags
                    .lender
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some();
                if lends {
                    // The holder's requests go through the encryption too.
                    wire.lend_through(&flags);
                }
            }
            Ok(wire)
        })
    }
}

#[cfg(feature = "tls")]
impl<S: tokio_postgres::tls::TlsStream + Unpin> tokio_postgres::tls::TlsStream for Wire<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        self.core().inner.channel_binding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn report(name: &str, value: &str) -> Vec<u8> {
        message(b'S', format!("{name}\0{value}\0").as_bytes())
    }

    /// What the driver reads through a wire in the state `scan` when the server sends
    /// `bytes`, into buffers of `room` bytes.
    fn through(scan: Scan, bytes: &[u8], room: usize) -> (Vec<u8>, Scan) {
        let mut wire = Wire::new(
            io::Cursor::new(bytes.to_vec()),
            Arc::new(ConnFlags::default()),
        );
        wire.core().scan = scan;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut seen = Vec::new();
        loop {
            let mut space = vec![0u8; room];
            let mut buf = ReadBuf::new(&mut space);
            match Pin::new(&mut wire).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
                Poll::Ready(Ok(())) => seen.extend_from_slice(buf.filled()),
                other => panic!("{other:?}"),
            }
        }
        let scan = std::mem::replace(&mut wire.core().scan, Scan::new(None));
        (seen, scan)
    }

    /// A startup (reports, then ready), then `after`, read into buffers of `room` bytes.
    fn after_startup(after: &[Vec<u8>], room: usize) -> (Scan, Arc<ConnFlags>) {
        let flags = Arc::new(ConnFlags::default());
        let mut bytes = report("TimeZone", "UTC");
        bytes.extend(report("application_name", "svc"));
        bytes.extend(message(b'K', &[0; 8]));
        bytes.extend(message(b'Z', b"I"));
        for m in after {
            bytes.extend_from_slice(m);
        }
        let (seen, scan) = through(Scan::new(Some(Arc::clone(&flags))), &bytes, room);
        assert_eq!(
            seen, bytes,
            "nothing added without statements sharing a Sync"
        );
        (scan, flags)
    }

    #[test]
    fn a_session_setting_reported_with_another_value_marks_the_connection_however_the_bytes_are_split(
    ) {
        let changed = [
            message(b'C', b"SELECT 1\0"),
            report("TimeZone", "Asia/Tokyo"),
            message(b'Z', b"I"),
        ];
        for room in 1..=40 {
            let (_, flags) = after_startup(&changed, room);
            assert!(flags.changed.load(Ordering::Acquire), "room {room}");
        }
    }

    #[test]
    fn a_setting_set_back_to_its_value_at_connect_clears_the_mark() {
        let back = [
            report("TimeZone", "Asia/Tokyo"),
            message(b'Z', b"I"),
            report("TimeZone", "UTC"),
            message(b'Z', b"I"),
        ];
        for room in [1, 3, 7, 64] {
            let (_, flags) = after_startup(&back, room);
            assert!(!flags.changed.load(Ordering::Acquire), "room {room}");
        }
    }

    #[test]
    fn reports_at_startup_and_of_unwatched_settings_mark_nothing() {
        let rows: Vec<Vec<u8>> = (0..50)
            .map(|i| message(b'D', format!("row {i} with S inside").as_bytes()))
            .chain([report("application_name", "other"), message(b'Z', b"I")])
            .collect();
        for room in [1, 2, 5, 13, 4096] {
            let (scan, flags) = after_startup(&rows, room);
            assert!(!flags.changed.load(Ordering::Acquire), "room {room}");
            assert_eq!(scan.at_connect[2].as_deref(), Some(&b"UTC"[..]));
        }
    }

    #[test]
    fn the_answer_to_a_tls_request_is_no_message() {
        let flags = Arc::new(ConnFlags::default());
        let mut refused = Scan::new(Some(Arc::clone(&flags)));
        refused.wrote_first(&SSL_REQUEST);
        // Refused: plain messages follow the one-byte answer.
        let mut bytes = vec![b'N'];
        bytes.extend(report("TimeZone", "UTC"));
        bytes.extend(message(b'Z', b"I"));
        bytes.extend(report("TimeZone", "Europe/Paris"));
        through(refused, &bytes, 4096);
        assert!(flags.changed.load(Ordering::Acquire));

        let mut accepted = Scan::new(Some(Arc::new(ConnFlags::default())));
        accepted.wrote_first(&SSL_REQUEST);
        let (_, accepted) = through(accepted, b"S", 4096);
        assert!(accepted.through, "TLS records are not read as messages");
    }

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        message(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
    }

    fn bind(statement: &str) -> Vec<u8> {
        message(b'B', format!("\0{statement}\0\0\0\0\0\0\0").as_bytes())
    }

    fn execute() -> Vec<u8> {
        message(b'E', b"\0\0\0\0\0")
    }

    fn sync() -> Vec<u8> {
        message(b'S', b"")
    }

    fn statement(name: &str) -> Vec<u8> {
        [bind(name), execute(), sync()].concat()
    }

    #[test]
    fn reads_sent_together_share_one_sync_and_writes_keep_theirs() {
        let mut sent = Sent::default();
        let mut pending = Pending::default();
        let prepared = [
            parse("s1", "SELECT 1"),
            message(b'D', b"Ss1\0"),
            sync(),
            parse("s2", "INSERT INTO t VALUES (1)"),
            message(b'D', b"Ss2\0"),
            sync(),
            parse("s3", "SELECT count(*) FROM t"),
            message(b'D', b"Ss3\0"),
            sync(),
        ]
        .concat();
        // Prepared one piece at a time (the wire reads writes as they come).
        for piece in prepared.chunks(3) {
            sent.walk(piece, &mut pending);
        }
        assert_eq!(pending.queue, [Ends::Ready; 3]);
        pending = Pending::default();

        let write = [
            statement("s1"),
            statement("s1"),
            statement("s1"),
            statement("s2"),
            statement("s1"),
            statement("s3"),
            statement("s1"),
            statement("s1"),
            [parse("", "SELECT 2"), bind(""), execute(), sync()].concat(),
        ]
        .concat();
        let mut out = Vec::new();
        sent.plan(&write, &mut out, &mut pending);
        use Ends::{Merged, Ready};
        assert_eq!(
            pending.queue,
            [Merged, Merged, Ready, Ready, Ready, Ready, Merged, Merged, Ready],
            "the write, the call of a function (count), and each run's last read keep theirs"
        );
        assert_eq!(out.len(), write.len() - 4 * 5);
        let syncs = out.windows(5).filter(|w| *w == &sync()[..]).count();
        assert_eq!(syncs, 5);

        // Closed, a statement shares no more.
        sent.walk(&[message(b'C', b"Ss1\0"), sync()].concat(), &mut pending);
        pending = Pending::default();
        out.clear();
        let again = [statement("s1"), statement("s1")].concat();
        sent.plan(&again, &mut out, &mut pending);
        assert_eq!(out, again);
    }

    #[test]
    fn after_a_read_fails_under_a_shared_sync_reads_keep_their_syncs_for_a_while() {
        let mut sent = Sent::default();
        let mut scan = started(&[]);
        sent.walk(
            &[parse("s1", "SELECT 1"), message(b'D', b"Ss1\0"), sync()].concat(),
            &mut scan.pending,
        );
        scan.pending = Pending::default();
        let reads = [statement("s1"), statement("s1"), statement("s1")].concat();
        let mut out = Vec::new();
        sent.plan(&reads, &mut out, &mut scan.pending);
        use Ends::{Merged, Ready};
        assert_eq!(scan.pending.queue, [Merged, Merged, Ready]);
        // The first one fails: the server skips the other two.
        let mut failing = failed();
        failing.extend(message(b'Z', b"I"));
        let (_, mut scan) = through(scan, &failing, 4096);
        assert!(scan.pending.queue.is_empty());
        for write in 0..CALM_WRITES {
            out.clear();
            sent.plan(&reads, &mut out, &mut scan.pending);
            assert_eq!(scan.pending.queue, [Ready; 3], "write {write}");
            assert_eq!(out, reads);
            scan.pending = Pending {
                calm: scan.pending.calm,
                ..Pending::default()
            };
        }
        out.clear();
        sent.plan(&reads, &mut out, &mut scan.pending);
        assert_eq!(scan.pending.queue, [Merged, Merged, Ready], "merging again");
    }

    fn bound() -> Vec<u8> {
        message(b'2', b"")
    }

    fn done() -> Vec<u8> {
        message(b'C', b"SELECT 1\0")
    }

    fn failed() -> Vec<u8> {
        message(b'E', b"SERROR\0C22012\0Mdivision by zero\0\0")
    }

    fn started(pending: &[Ends]) -> Scan {
        let mut scan = Scan::new(Some(Arc::new(ConnFlags::default())));
        scan.started = true;
        for &ends in pending {
            scan.pending.push(ends);
        }
        scan
    }

    #[test]
    fn each_read_under_a_shared_sync_gets_its_own_ready_and_the_skipped_ones_an_error_of_their_own()
    {
        use Ends::{Merged, Ready};
        let skip = {
            let mut e = Vec::new();
            skipped(&mut e);
            e
        };
        let ready = message(b'Z', b"I");
        // Four reads under one Sync; the second fails, the server skips the last two.
        let server = [bound(), done(), bound(), failed(), ready.clone()].concat();
        let driver = [
            bound(),
            done(),
            READY.to_vec(),
            bound(),
            failed(),
            READY.to_vec(),
            skip.clone(),
            READY.to_vec(),
            skip.clone(),
            ready.clone(),
        ]
        .concat();
        // Then all four succeed.
        let server_ok = [
            bound(),
            done(),
            bound(),
            done(),
            bound(),
            done(),
            ready.clone(),
        ]
        .concat();
        let driver_ok = [
            bound(),
            done(),
            READY.to_vec(),
            bound(),
            done(),
            READY.to_vec(),
            bound(),
            done(),
            ready.clone(),
        ]
        .concat();
        for room in [1, 2, 5, 6, 7, 11, 64, 4096] {
            let (seen, scan) = through(started(&[Merged, Merged, Merged, Ready]), &server, room);
            assert_eq!(seen, driver, "room {room}");
            assert!(scan.pending.queue.is_empty() && scan.pending.merged == 0);
            let (seen, scan) = through(started(&[Merged, Merged, Ready]), &server_ok, room);
            assert_eq!(seen, driver_ok, "room {room}");
            assert!(scan.pending.queue.is_empty() && scan.pending.merged == 0);
        }
    }

    /// Polls the driver's read once (its task woken through `waker`); what it got, or `None`
    /// while it waits.
    fn driver_read_woken(
        wire: &mut Wire<tokio::io::DuplexStream>,
        waker: &Waker,
    ) -> Option<Vec<u8>> {
        let mut cx = Context::from_waker(waker);
        let mut space = [0u8; 256];
        let mut buf = ReadBuf::new(&mut space);
        match Pin::new(wire).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) => Some(buf.filled().to_vec()),
            Poll::Pending => None,
            Poll::Ready(Err(err)) => panic!("{err}"),
        }
    }

    fn driver_read(wire: &mut Wire<tokio::io::DuplexStream>) -> Option<Vec<u8>> {
        driver_read_woken(wire, Waker::noop())
    }

    /// A waker that notes it was woken.
    struct Woken(AtomicBool);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_lent_request_is_answered_to_its_holder_and_an_abandoned_one_is_read_to_its_end_by_the_driver(
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (socket, mut server) = tokio::io::duplex(64 * 1024);
        let flags = Arc::new(ConnFlags::default());
        let mut wire = Wire::new(socket, Arc::clone(&flags));
        wire.lend_through(&flags);
        let lend = flags
            .lender
            .lock()
            .unwrap()
            .take()
            .unwrap()
            .upgrade()
            .unwrap();
        // Not lent before the startup is over.
        assert!(!lend.start(&mut |_| true));
        server.write_all(&message(b'Z', b"I")).await.unwrap();
        tokio::task::yield_now().await;
        assert_eq!(driver_read(&mut wire).unwrap(), message(b'Z', b"I"));

        // Lent: the driver waits; the holder sends, then reads its answer.
        assert!(lend.start(&mut |buf| {
            buf.extend_from_slice(b"first");
            true
        }));
        assert!(!lend.start(&mut |_| true), "one request at a time");
        assert_eq!(driver_read(&mut wire), None);
        let mut answer = message(b'C', b"INSERT 0 1\0");
        answer.extend(report("TimeZone", "Asia/Tokyo"));
        answer.extend(message(b'Z', b"I"));
        answer.extend(message(b'N', b"for the driver"));
        server.write_all(&answer).await.unwrap();
        let mut seen = Vec::new();
        std::future::poll_fn(|cx| {
            lend.poll_answer(cx, &mut |_, _| Poll::Ready(false), &mut |tag, body| {
                seen.push((tag, body.to_vec()))
            })
        })
        .await
        .unwrap();
        assert_eq!(seen, vec![(b'C', b"INSERT 0 1\0".to_vec())]);
        let mut sent = [0u8; 5];
        server.read_exact(&mut sent).await.unwrap();
        assert_eq!(&sent, b"first");
        assert!(
            flags.changed.load(Ordering::Acquire),
            "a report in a lent answer is read as ever"
        );
        // What came after the answer's "ready" is the driver's.
        assert_eq!(
            driver_read(&mut wire).unwrap(),
            message(b'N', b"for the driver")
        );

        // Abandoned half-way: the driver reads the rest of that answer and drops it.
        assert!(lend.start(&mut |buf| {
            buf.extend_from_slice(b"second");
            true
        }));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(lend
            .poll_answer(&mut cx, &mut |_, _| Poll::Ready(false), &mut |_, _| {})
            .is_pending());
        server.write_all(&message(b'D', b"\0\0\0\0")).await.unwrap();
        lend.abandon(&mut |_| {});
        assert!(
            !lend.start(&mut |_| true),
            "not lent until the answer is read"
        );
        assert_eq!(driver_read(&mut wire), None);
        let mut rest = message(b'C', b"SELECT 1\0");
        rest.extend(message(b'Z', b"I"));
        rest.extend(message(b'A', b"the driver's"));
        server.write_all(&rest).await.unwrap();
        assert_eq!(
            driver_read(&mut wire).unwrap(),
            message(b'A', b"the driver's")
        );

        // The driver's task, waiting on the stream and not on the lending, is woken when
        // something of its own came with an answer.
        let woken = Arc::new(Woken(AtomicBool::new(false)));
        assert_eq!(
            driver_read_woken(&mut wire, &Waker::from(Arc::clone(&woken))),
            None
        );
        assert!(lend.start(&mut |buf| {
            buf.extend_from_slice(b"third");
            true
        }));
        let mut answer = message(b'C', b"SELECT 0\0");
        answer.extend(message(b'Z', b"I"));
        answer.extend(message(b'N', b"after"));
        server.write_all(&answer).await.unwrap();
        // (The stream itself woke the waiting reader as the bytes came.)
        woken.0.store(false, Ordering::SeqCst);
        std::future::poll_fn(|cx| {
            lend.poll_answer(cx, &mut |_, _| Poll::Ready(false), &mut |_, _| {})
        })
        .await
        .unwrap();
        assert!(woken.0.load(Ordering::SeqCst));
        assert_eq!(driver_read(&mut wire).unwrap(), message(b'N', b"after"));
        assert!(lend.start(&mut |_| true), "lent again");
    }
}
