//! One PostgreSQL connection: opening it (with TLS), its prepared statements, and its state.

mod open;
mod state;
mod statement_cache;
#[cfg(feature = "tls")]
mod tls;

pub(crate) use open::PgManager;
pub(crate) use state::{ConnState, Disposal, Event};
pub(crate) use statement_cache::StatementCache;

/// One open connection and what coredb tracks about it.
pub(crate) struct PgConn {
    pub(crate) client: tokio_postgres::Client,
    pub(crate) statements: StatementCache,
    state: ConnState,
}

impl PgConn {
    pub(crate) fn new(client: tokio_postgres::Client, statements: StatementCache) -> Self {
        PgConn {
            client,
            statements,
            state: ConnState::NEW,
        }
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
