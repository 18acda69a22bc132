//! The state of one connection, as one enum changed in one place ([`ConnState::on`]).
//!
//! A connection goes back to the pool only when it is exactly as a new one would be: no open
//! transaction, no half-read reply, no session state. Instead of flags set and cleared by
//! hand in several files, every layer reports what it did as an [`Event`], and the state
//! answers what to do with the connection when it comes back ([`Disposal`]).

/// What a connection carries between statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Carry {
    /// Nothing: it can be reused as it is.
    Nothing,
    /// An open transaction: it must be rolled back before reuse.
    Transaction,
    /// Perhaps session state (a setting, a role, a lock, a cursor, `LISTEN`, a temporary
    /// table): it is reset before reuse, or closed. Outranks an open transaction (the reset
    /// rolls it back first).
    SessionState,
}

/// The state of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// Between statements, carrying what it says.
    Ready(Carry),
    /// A request was sent and its reply not read to the end; seen at return, the future that
    /// sent it was dropped half-way, so the reply may still be on its way.
    Busy(Carry),
    /// The connection failed; it is closed at return.
    Broken,
}

/// What happened on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A statement was sent; `leaves_state` when it may change the session (anything the
    /// classifier does not prove harmless).
    Sent {
        /// The statement may leave session state behind.
        leaves_state: bool,
    },
    /// `BEGIN` was sent.
    BeginSent,
    /// `COMMIT` or `ROLLBACK` was sent.
    EndSent,
    /// The reply of the request in flight was read to the end (a server error counts: the
    /// protocol is back in step).
    Replied,
    /// The reply to `COMMIT` / `ROLLBACK` was read: the server ended the transaction either way.
    Ended,
    /// The client gave up on the reply (timeout guard): the request may still be running.
    Abandoned,
    /// The connection was lost.
    Lost,
    /// The reply to the reset (see [`Disposal::Reset`]) was read: nothing is carried any more.
    Cleaned,
}

impl Event {
    /// A statement whose effects end with the transaction (a savepoint, say).
    pub(crate) const TRANSACTION_SCOPED: Event = Event::Sent {
        leaves_state: false,
    };
}

/// What to do with a connection that comes back to its owner (the pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposal {
    /// Reuse it as it is.
    Reuse,
    /// Roll the open transaction back, then reuse it.
    RollBack,
    /// Roll back whatever transaction is open, then reset the session (settings, role, locks,
    /// cursors, `LISTEN`, temporary tables), keeping the prepared statements; then reuse it.
    Reset,
    /// Close it.
    Close,
    /// Ask the server to cancel the request nobody waits for, and close it.
    CancelAndClose,
}

impl ConnState {
    /// A freshly opened connection.
    pub(crate) const NEW: ConnState = ConnState::Ready(Carry::Nothing);

    /// The state after `event`: the only place a connection's state changes.
    pub(crate) fn on(self, event: Event) -> ConnState {
        use ConnState::{Broken, Busy, Ready};
        match (self, event) {
            (Broken, _) | (_, Event::Lost) => Broken,
            // A request after one whose future was dropped is fine: the driver discards the
            // abandoned reply and the server answers in order, so once this one's reply is
            // read, the earlier one is done too.
            (Ready(carry) | Busy(carry), Event::Sent { leaves_state }) => {
                let carry = if leaves_state {
                    carry.max(Carry::SessionState)
                } else {
                    carry
                };
                Busy(carry)
            }
            // Counted as open from the moment BEGIN leaves: if it is cut off, the rollback or
            // close that follows is harmless; the other way round would leak a transaction.
            (Ready(carry) | Busy(carry), Event::BeginSent) => Busy(carry.max(Carry::Transaction)),
            (Ready(carry) | Busy(carry), Event::EndSent) => Busy(carry),
            (Busy(carry), Event::Replied) => Ready(carry),
            (Busy(Carry::SessionState), Event::Ended) => Ready(Carry::SessionState),
            (Busy(_), Event::Ended) => Ready(Carry::Nothing),
            (Busy(carry), Event::Abandoned) => Busy(carry),
            (Busy(_), Event::Cleaned) => Ready(Carry::Nothing),
            // A reply with no request in flight: a bug in the caller; the connection cannot be
            // trusted.
            (Ready(_), Event::Replied | Event::Ended | Event::Abandoned | Event::Cleaned) => {
                debug_assert!(false, "connection event {event:?} in state {self:?}");
                Broken
            }
        }
    }

    /// What to do with the connection when it comes back.
    pub(crate) fn disposal(self) -> Disposal {
        match self {
            ConnState::Ready(Carry::Nothing) => Disposal::Reuse,
            ConnState::Ready(Carry::Transaction) => Disposal::RollBack,
            ConnState::Ready(Carry::SessionState) => Disposal::Reset,
            ConnState::Broken => Disposal::Close,
            ConnState::Busy(_) => Disposal::CancelAndClose,
        }
    }

    /// True while a transaction is open (or its `BEGIN` in flight).
    pub(crate) fn in_transaction(self) -> bool {
        matches!(
            self,
            ConnState::Ready(Carry::Transaction) | ConnState::Busy(Carry::Transaction)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENT: Event = Event::Sent {
        leaves_state: false,
    };
    const SENT_STATEFUL: Event = Event::Sent { leaves_state: true };

    fn after(events: &[Event]) -> ConnState {
        events.iter().fold(ConnState::NEW, |state, e| state.on(*e))
    }

    #[test]
    fn a_statement_that_finished_leaves_the_connection_reusable() {
        assert_eq!(after(&[SENT, Event::Replied]).disposal(), Disposal::Reuse);
    }

    #[test]
    fn a_statement_cut_off_before_its_reply_closes_and_cancels() {
        assert_eq!(after(&[SENT]).disposal(), Disposal::CancelAndClose);
        assert_eq!(
            after(&[SENT, Event::Abandoned]).disposal(),
            Disposal::CancelAndClose
        );
    }

    #[test]
    fn a_statement_that_may_leave_session_state_has_the_connection_reset() {
        let state = after(&[SENT_STATEFUL, Event::Replied]);
        assert_eq!(state.disposal(), Disposal::Reset);
        // Later harmless statements do not clean it; the reset does.
        let later = state.on(SENT).on(Event::Replied);
        assert_eq!(later.disposal(), Disposal::Reset);
        let reset = later.on(SENT).on(Event::Cleaned);
        assert_eq!(reset.disposal(), Disposal::Reuse);
        // A reset cut off leaves it carrying what it carried.
        assert_eq!(later.on(SENT).disposal(), Disposal::CancelAndClose);
    }

    #[test]
    fn an_open_transaction_is_rolled_back_before_reuse() {
        let open = after(&[Event::BeginSent, Event::Replied, SENT, Event::Replied]);
        assert!(open.in_transaction());
        assert_eq!(open.disposal(), Disposal::RollBack);
        let ended = open.on(Event::EndSent).on(Event::Ended);
        assert!(!ended.in_transaction());
        assert_eq!(ended.disposal(), Disposal::Reuse);
    }

    #[test]
    fn a_begin_cut_off_counts_as_an_open_transaction_in_flight() {
        let state = after(&[Event::BeginSent]);
        assert!(state.in_transaction());
        assert_eq!(state.disposal(), Disposal::CancelAndClose);
    }

    #[test]
    fn session_state_outlives_the_end_of_the_transaction() {
        let state = after(&[
            Event::BeginSent,
            Event::Replied,
            SENT_STATEFUL,
            Event::Replied,
            Event::EndSent,
            Event::Ended,
        ]);
        assert_eq!(state.disposal(), Disposal::Reset);
    }

    #[test]
    fn a_statement_after_an_abandoned_one_settles_the_connection_again() {
        let state = after(&[SENT, Event::Abandoned, SENT, Event::Replied]);
        assert_eq!(state.disposal(), Disposal::Reuse);
        let in_session = after(&[Event::BeginSent, Event::Replied, SENT, SENT, Event::Replied]);
        assert_eq!(in_session.disposal(), Disposal::RollBack);
    }

    #[test]
    fn a_lost_connection_stays_broken() {
        let state = after(&[Event::BeginSent, Event::Lost]);
        assert_eq!(state, ConnState::Broken);
        assert_eq!(state.on(Event::Replied), ConnState::Broken);
        assert_eq!(state.disposal(), Disposal::Close);
    }

    #[test]
    fn a_commit_whose_reply_was_lost_keeps_the_connection_out_of_the_pool() {
        let state = after(&[Event::BeginSent, Event::Replied, Event::EndSent]);
        assert_eq!(state.disposal(), Disposal::CancelAndClose);
    }
}
