//! Statements a shared lane's callers queue on the stream, sent and answered by the driver's
//! I/O task without passing through the driver (see [`Lend::enqueue`](super::Lend::enqueue)).
//!
//! Each caller encodes its `Bind` and `Execute` into the wire's buffer and takes a ticket; the
//! wire adds the Syncs (one for a run of reads that may share it, as on the driver's path) and
//! wakes the driver's task, which writes everything queued in one write, reads the answers and
//! files each in its caller's slot, waking the caller. Nothing is allocated per statement but
//! its rows. While statements are queued the driver's own requests wait, and once the driver
//! has something to write no statement is queued until they are all answered.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{next_message, skipped, write_from, Core, Ends, Lent, CALM_WRITES};
use crate::row::ReadRows;

/// A queued statement's place: its caller's waker and what came back so far.
pub(super) struct Slot {
    waker: Option<Waker>,
    /// How its answer ends: with a "ready" (its own Sync), or, sharing the Sync of the next,
    /// with its command's end.
    ends: Ends,
    /// How many of its rows to keep.
    keep: usize,
    answer: Queued,
    /// Its answer has come (or it never will).
    finished: bool,
    /// Its caller took the answer or stopped waiting.
    gone: bool,
}

/// What a queued statement gave back.
#[derive(Default)]
pub(crate) struct Queued {
    /// Its first rows, as many as asked for.
    pub(crate) rows: ReadRows,
    /// How many rows it returned.
    pub(crate) returned: u64,
    /// How many rows its command tag says it affected.
    pub(crate) affected: u64,
    /// The body of the server's error, or of the error for a statement the server skipped
    /// (see [`SKIPPED`](super::SKIPPED)).
    pub(crate) failed: Option<Vec<u8>>,
    /// The stream failed before the answer came.
    pub(crate) lost: Option<io::ErrorKind>,
}

/// The queued statements of a wire and where their answers stand.
#[derive(Default)]
pub(super) struct Queue {
    slots: VecDeque<Slot>,
    /// The ticket of `slots[0]`.
    first: u64,
    /// `slots[..answered]` have their answers; the next answer read is `slots[answered]`'s.
    answered: usize,
    /// The last statement queued shares the Sync of the next: none was written yet.
    open_sync: bool,
    /// The driver's task was woken for what was queued and has not served it yet.
    kicked: bool,
    /// Bytes were written and not flushed yet.
    unflushed: bool,
}

impl<S> Core<S> {
    /// Queues the statement `request` encodes (`Bind` and `Execute`, no Sync) on prepared
    /// statement `statement`, keeping `keep` of its rows; its ticket, or `None` when the
    /// driver has something under way or waiting to be written (the statement is then the
    /// driver's to send) or `request` fails.
    pub(super) fn enqueue(
        &mut self,
        request: &mut dyn FnMut(&mut BytesMut) -> bool,
        statement: &str,
        keep: usize,
    ) -> Option<u64> {
        match self.lent {
            Lent::Queued if !self.wants_write => {}
            Lent::No if self.idle() => {
                self.lend_out.clear();
                self.lend_at = 0;
            }
            _ => return None,
        }
        let shares =
            self.scan.pending.calm == 0 && self.sent.mergeable.contains(statement.as_bytes());
        let queue = &mut self.queue;
        if queue.open_sync && !shares {
            close_group(queue, &mut self.lend_out);
        }
        let mark = self.lend_out.len();
        if !request(&mut self.lend_out) {
            self.lend_out.truncate(mark);
            return None;
        }
        let ends = if shares {
            queue.open_sync = true;
            Ends::Merged
        } else {
            frontend::sync(&mut self.lend_out);
            Ends::Ready
        };
        queue.slots.push_back(Slot {
            waker: None,
            ends,
            keep,
            answer: Queued::default(),
            finished: false,
            gone: false,
        });
        self.lent = Lent::Queued;
        if !std::mem::replace(&mut queue.kicked, true) {
            if let Some(driver) = &self.driver {
                driver.wake_by_ref();
            }
        }
        Some(queue.first + queue.slots.len() as u64 - 1)
    }

    /// The answer for `ticket` once it has come; until then its caller's task is woken when
    /// it does.
    pub(super) fn poll_queued(&mut self, ticket: u64, cx: &mut Context<'_>) -> Poll<Queued> {
        let queue = &mut self.queue;
        let Some(slot) = ticket
            .checked_sub(queue.first)
            .and_then(|i| queue.slots.get_mut(i as usize))
        else {
            return Poll::Ready(Queued {
                lost: Some(io::ErrorKind::ConnectionAborted),
                ..Queued::default()
            });
        };
        if !slot.finished {
            match &mut slot.waker {
                Some(waker) => waker.clone_from(cx.waker()),
                None => slot.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        let answer = std::mem::take(&mut slot.answer);
        slot.gone = true;
        queue.tidy();
        Poll::Ready(answer)
    }

    /// The caller of `ticket` stopped waiting: its answer is read and dropped.
    pub(super) fn forget(&mut self, ticket: u64) {
        let queue = &mut self.queue;
        if let Some(slot) = ticket
            .checked_sub(queue.first)
            .and_then(|i| queue.slots.get_mut(i as usize))
        {
            slot.gone = true;
            slot.waker = None;
            slot.answer = Queued::default();
            queue.tidy();
        }
    }

    /// The driver's task serves the queue: writes what was queued, reads the answers and files
    /// them. Ready once every queued statement is answered (the stream is the driver's again),
    /// or with the error that lost the stream.
    pub(super) fn serve(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.queue.kicked = false;
        if let Err(err) = self.send_queued(cx) {
            self.fail_queued(err.kind());
            return Poll::Ready(Err(err));
        }
        loop {
            self.file_answers();
            if self.queue.answered == self.queue.slots.len() {
                self.queue_done();
                return Poll::Ready(Ok(()));
            }
            match self.fill(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => {
                    self.fail_queued(err.kind());
                    return Poll::Ready(Err(err));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Writes what is queued (as much as the socket takes), ending a last run of reads with
    /// its Sync, and flushes it.
    fn send_queued(&mut self, cx: &mut Context<'_>) -> io::Result<()>
    where
        S: AsyncWrite + Unpin,
    {
        let queue = &mut self.queue;
        if queue.open_sync {
            close_group(queue, &mut self.lend_out);
        }
        if self.lend_at < self.lend_out.len() {
            match write_from(&mut self.inner, cx, &self.lend_out, &mut self.lend_at) {
                Poll::Ready(Ok(())) => {
                    self.lend_out.clear();
                    self.lend_at = 0;
                    self.scan.pending.calm = self.scan.pending.calm.saturating_sub(1);
                    queue.unflushed = true;
                }
                Poll::Ready(Err(err)) => return Err(err),
                // Woken when the socket takes more.
                Poll::Pending => {}
            }
        }
        if queue.unflushed {
            match Pin::new(&mut self.inner).poll_flush(cx) {
                Poll::Ready(Ok(())) => queue.unflushed = false,
                Poll::Ready(Err(err)) => return Err(err),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    /// Files each whole message read so far with the statement it answers (settings reports
    /// are read here, notices dropped); stops when every queued statement has its answer.
    fn file_answers(&mut self) {
        let queue = &mut self.queue;
        let read = &self.lend_in[..self.lend_end];
        while queue.answered < queue.slots.len() {
            let Some((tag, body)) = next_message(read, &mut self.lend_from) else {
                break;
            };
            let slot = &mut queue.slots[queue.answered];
            match tag {
                b'S' => self.scan.report(body),
                b'D' => {
                    slot.answer.returned += 1;
                    if !slot.gone && slot.answer.rows.len() < slot.keep {
                        slot.answer.rows.add(body);
                    }
                }
                b'C' | b'I' => {
                    if tag == b'C' {
                        slot.answer.affected = crate::conn::direct::affected_by(body);
                    }
                    if slot.ends == Ends::Merged {
                        queue.finish();
                    }
                }
                b'E' => {
                    if slot.answer.failed.is_none() && !slot.gone {
                        slot.answer.failed = Some(body.to_vec());
                    }
                    if slot.ends == Ends::Merged {
                        self.scan.pending.calm = CALM_WRITES;
                        queue.finish();
                        // The server skips the rest of the run until its Sync: each skipped
                        // statement gets an error of its own; the last one's "ready" comes.
                        while let Some(next) = queue.slots.get_mut(queue.answered) {
                            if !next.gone {
                                let mut error = Vec::new();
                                skipped(&mut error);
                                error.drain(..5);
                                next.answer.failed = Some(error);
                            }
                            if next.ends == Ends::Ready {
                                break;
                            }
                            queue.finish();
                        }
                    }
                }
                b'Z' => queue.finish(),
                _ => {}
            }
        }
    }

    /// Every queued statement is answered: the stream goes back to the driver, with what was
    /// read after the last answer.
    fn queue_done(&mut self) {
        self.queue.tidy();
        self.give_back();
        if !self.held.is_empty() {
            // Something of the driver's came after the last answer (a notice, a server's
            // farewell): its task reads it, also when the queue ended under its write.
            if let Some(driver) = &self.driver {
                driver.wake_by_ref();
            }
        }
    }

    /// The stream failed (or the driver closed it) with statements queued: each gets the
    /// error, and the stream is lost.
    pub(super) fn fail_queued(&mut self, kind: io::ErrorKind) {
        let queue = &mut self.queue;
        while queue.answered < queue.slots.len() {
            queue.slots[queue.answered].answer.lost = Some(kind);
            queue.finish();
        }
        self.lose();
    }
}

impl Queue {
    /// The statement being answered has its answer: its caller is woken.
    fn finish(&mut self) {
        let slot = &mut self.slots[self.answered];
        slot.finished = true;
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
        self.answered += 1;
    }

    /// Drops the answered slots at the front whose callers took the answer or left.
    fn tidy(&mut self) {
        while self.answered > 0 && self.slots.front().is_some_and(|s| s.gone && s.finished) {
            self.slots.pop_front();
            self.first += 1;
            self.answered -= 1;
        }
    }
}

/// Ends the run of reads sharing a Sync with that Sync: the last of them is answered with a
/// "ready".
fn close_group(queue: &mut Queue, out: &mut BytesMut) {
    frontend::sync(out);
    if let Some(last) = queue.slots.back_mut() {
        last.ends = Ends::Ready;
    }
    queue.open_sync = false;
}
