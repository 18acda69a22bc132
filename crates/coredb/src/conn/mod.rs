//! One PostgreSQL connection: opening it (with TLS), its prepared statements, and its state.

mod connector;
mod open;
mod state;
mod statement_cache;
#[cfg(feature = "tls")]
mod tls;

pub(crate) use connector::Connector;
pub(crate) use open::{PgManager, Reports, SessionChanged};
pub(crate) use state::{ConnState, Disposal, Event};
pub(crate) use statement_cache::StatementCache;

/// One open connection and what coredb tracks about it.
pub(crate) struct PgConn {
    pub(crate) client: tokio_postgres::Client,
    pub(crate) statements: StatementCache,
    state: ConnState,
    /// How it was opened, for its cancel requests.
    connector: Connector,
    /// Set while the server reports a session setting changed since connect.
    settings_changed: SessionChanged,
}

impl PgConn {
    pub(crate) fn new(
        client: tokio_postgres::Client,
        statements: StatementCache,
        connector: Connector,
        settings_changed: SessionChanged,
    ) -> Self {
        PgConn {
            client,
            statements,
            state: ConnState::NEW,
            connector,
            settings_changed,
        }
    }

    /// True while the server reports a session setting (time zone, role, date style, ...)
    /// other than at connect, on a connection whose reports are followed (a shared lane, see
    /// [`watch_settings`](Self::watch_settings)): it carries session state whatever its
    /// statements' text said, and the lane closes it.
    pub(crate) fn settings_changed(&self) -> bool {
        self.settings_changed
            .changed
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// True while the I/O task of a connection whose reports are followed is reading what
    /// arrived and has not yet looked at the settings: the server reports a changed setting
    /// after a statement's completion (just before it is ready again), so a caller can hold
    /// its completion before the report that follows it was read.
    pub(crate) fn settings_being_read(&self) -> bool {
        self.settings_changed
            .reading
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Starts or stops following the settings the server reports (see
    /// [`settings_changed`](Self::settings_changed)): on while the connection is shared.
    pub(crate) fn watch_settings(&self, on: bool) {
        self.settings_changed
            .watching
            .store(on, std::sync::atomic::Ordering::Release);
    }

    /// Asks the server, in the background, to stop the statement running here (one nobody
    /// waits for any more); does nothing outside a tokio runtime.
    pub(crate) fn cancel_in_background(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let token = self.client.cancel_token();
        let connector = self.connector.clone();
        runtime.spawn(async move {
            if let Err(err) = connector.cancel(&token).await {
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
        if self.client.is_closed() {
            return Disposal::Close;
        }
        self.state.disposal()
    }
}
