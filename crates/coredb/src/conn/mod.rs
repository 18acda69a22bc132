//! One PostgreSQL connection: opening it (with TLS), its prepared statements, and its state.

mod connector;
mod direct;
mod open;
mod state;
mod statement_cache;
#[cfg(feature = "tls")]
mod tls;
mod wire;

pub(crate) use connector::{Connector, Peer};
pub(crate) use direct::{CopyPart, Direct, RowsRead};
pub(crate) use open::{PgManager, Reports, SessionChanged};
pub(crate) use state::{ConnState, Disposal, Event};
pub(crate) use statement_cache::{Prepared, StatementCache};

/// True for the error of a statement the server skipped because a read it shared a Sync with
/// failed (see [`wire`]): it did not run.
pub(crate) fn skipped(err: &crate::error::Error) -> bool {
    err.code() == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
        && err.message().contains(wire::SKIPPED)
}

/// One open connection and what coredb tracks about it.
pub(crate) struct PgConn {
    pub(crate) client: tokio_postgres::Client,
    pub(crate) statements: StatementCache,
    state: ConnState,
    /// How it was opened and to which server, for its cancel requests.
    connector: (Connector, Peer),
    /// Whether it serves as a shared lane; set while the server reports a session setting
    /// other than at connect.
    settings_changed: SessionChanged,
    /// Its stream, for statements its holder sends itself.
    direct: Option<Direct>,
}

impl PgConn {
    pub(crate) fn new(
        client: tokio_postgres::Client,
        statements: StatementCache,
        connector: (Connector, Peer),
        settings_changed: SessionChanged,
    ) -> Self {
        let direct = settings_changed
            .lender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .and_then(|lender| lender.upgrade())
            .map(Direct::new);
        PgConn {
            client,
            statements,
            state: ConnState::NEW,
            connector,
            settings_changed,
            direct,
        }
    }

    /// The stream, for a statement of its holder's own (see [`Direct`]): `None` on a shared
    /// lane, whose statements are queued for its I/O task instead ([`sender`](Self::sender)).
    #[inline]
    pub(crate) fn direct(&self) -> Option<&Direct> {
        self.sender()
            .and_then(|(direct, shared)| (!shared).then_some(direct))
    }

    /// The stream, for a statement coredb sends itself, and whether the connection is a shared
    /// lane: its holder's own ([`Direct::run`]), or queued with the lane's other callers'
    /// ([`Direct::queue`]).
    #[inline]
    pub(crate) fn sender(&self) -> Option<(&Direct, bool)> {
        let shared = self
            .settings_changed
            .shared
            .load(std::sync::atomic::Ordering::Relaxed);
        self.direct.as_ref().map(|direct| (direct, shared))
    }

    /// True once the connection is closed: the driver saw it end, or its stream failed under
    /// a statement its holder sent itself.
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
            || self
                .settings_changed
                .lost
                .load(std::sync::atomic::Ordering::Acquire)
    }

    /// True while the server reports a session setting (time zone, role, date style, ...)
    /// other than at connect: the connection carries session state whatever its statements'
    /// text said (a function calling `set_config`, say). Set as the report is read, before the
    /// statement that caused it is seen to end.
    pub(crate) fn settings_changed(&self) -> bool {
        self.settings_changed
            .changed
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the connection as a shared pipeline lane, or no longer one: its I/O task then
    /// gathers what its callers send into one write.
    pub(crate) fn share(&self, on: bool) {
        self.settings_changed
            .shared
            .store(on, std::sync::atomic::Ordering::Release);
    }

    /// Asks the server, in the background, to stop the statement running here (one nobody
    /// waits for any more); does nothing outside a tokio runtime.
    pub(crate) fn cancel_in_background(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let token = self.client.cancel_token();
        let (connector, peer) = self.connector.clone();
        runtime.spawn(async move {
            if let Err(err) = connector.cancel(&token, &peer).await {
                tracing::debug!(target: "coredb", error = %err, "cancel request failed");
            }
        });
    }

    /// Records what happened on the connection.
    pub(crate) fn on(&mut self, event: Event) {
        self.state = self.state.on(event);
    }

    /// The connection's state.
    pub(crate) fn state(&self) -> ConnState {
        self.state
    }

    /// What to do with the connection now that it comes back.
    pub(crate) fn disposal(&self) -> Disposal {
        if self.is_closed() {
            return Disposal::Close;
        }
        match self.state.disposal() {
            // A reported setting changed behind the text's back: reset like a `SET`.
            Disposal::Reuse | Disposal::RollBack if self.settings_changed() => Disposal::Reset,
            disposal => disposal,
        }
    }
}
