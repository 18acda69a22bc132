//! `LISTEN` / `NOTIFY` on a connection of its own that comes back by itself.
//!
//! A [`Listener`] owns one connection outside the pool (it does not count against
//! `pool_size`), driven by a task that hands every notification to the listener's stream.
//! When the connection is lost (a restart, `pg_terminate_backend`, a network cut), the task
//! reconnects with backoff, subscribes to every channel again, and only then yields
//! [`ListenerEvent::Reconnected`]: notifications sent while it was away are lost (PostgreSQL
//! keeps none for a session that is gone), and that event is the caller's cue to catch up
//! from the tables.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

use crate::conn::PgManager;
use crate::error::{Error, ErrorKind, Result};
use crate::pool::Pool;
use crate::retry::Backoff;
use crate::telemetry::Target;

/// The longest channel name PostgreSQL keeps (`NAMEDATALEN - 1`); longer ones are cut.
const MAX_CHANNEL_BYTES: usize = 63;

/// One notification, as `NOTIFY` or `pg_notify()` sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    channel: String,
    payload: String,
    process_id: i32,
}

impl Notification {
    /// The channel it was sent on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The payload (empty when none was given).
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// The process id of the server session that sent it.
    pub fn process_id(&self) -> i32 {
        self.process_id
    }

    /// The payload as JSON, decoded into `T`.
    ///
    /// # Errors
    /// A [`Decode`](ErrorKind::Decode) error naming the channel when the payload is not a `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.payload).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!(
                    "the payload of a notification on {:?} is not the JSON expected: {e}",
                    self.channel
                ),
            )
        })
    }
}

impl From<tokio_postgres::Notification> for Notification {
    fn from(n: tokio_postgres::Notification) -> Self {
        Notification {
            channel: n.channel().to_owned(),
            payload: n.payload().to_owned(),
            process_id: n.process_id(),
        }
    }
}

/// What a [`Listener`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerEvent {
    /// A notification on one of the channels listened to.
    Notification(Notification),
    /// The connection was lost and is back, every channel listened to again. Notifications
    /// sent in between were lost: read what they would have said from the tables.
    Reconnected,
}

/// Listeners of one database, for its health report.
#[derive(Debug, Default)]
pub(crate) struct ListenerCounts {
    /// Listeners not yet dropped.
    pub(crate) open: AtomicUsize,
    /// Those whose connection is up.
    pub(crate) connected: AtomicUsize,
}

/// A request to the listener's task, answered once the server has taken it.
enum Command {
    Listen(String, oneshot::Sender<Result<()>>),
    Unlisten(String, oneshot::Sender<Result<()>>),
}

/// Notifications from a connection of its own; see the module documentation.
///
/// ```no_run
/// use futures_util::StreamExt as _;
/// use coredb::ListenerEvent;
///
/// # async fn demo(db: coredb::DatabaseManager) -> coredb::Result<()> {
/// let mut listener = db.listener().await?;
/// listener.listen("orders").await?;
/// while let Some(event) = listener.next().await {
///     match event {
///         ListenerEvent::Notification(n) => println!("order {}", n.payload()),
///         ListenerEvent::Reconnected => { /* catch up from the orders table */ }
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Listener {
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<ListenerEvent>,
    task: tokio::task::JoinHandle<()>,
    counts: Arc<ListenerCounts>,
}

impl Listener {
    /// Connects and starts the listener's task.
    pub(crate) async fn start(
        pool: Pool<PgManager>,
        target: Target,
        counts: Arc<ListenerCounts>,
    ) -> Result<Listener> {
        let (client, notes) = open(&pool).await?;
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (events_to, events) = mpsc::unbounded_channel();
        counts.open.fetch_add(1, Ordering::AcqRel);
        let task = tokio::spawn(
            Task {
                pool,
                target,
                counts: Arc::clone(&counts),
                channels: BTreeSet::new(),
                commands: commands_rx,
                events: events_to,
            }
            .run(client, notes),
        );
        Ok(Listener {
            commands,
            events,
            task,
            counts,
        })
    }

    /// Starts listening on `channel` (as given: `pg_notify('Orders', ..)` reaches `"Orders"`
    /// only); returns once the server has taken it, or, when the connection is lost
    /// meanwhile, once it is part of what the reconnect subscribes to (which ends with
    /// [`ListenerEvent::Reconnected`]). Kept across reconnects.
    ///
    /// # Errors
    /// A [`Params`](ErrorKind::Params) error for an empty name, one with a NUL byte, or one
    /// longer than 63 bytes; the server's error otherwise.
    pub async fn listen(&mut self, channel: &str) -> Result<()> {
        check_channel(channel)?;
        self.ask(|reply| Command::Listen(channel.to_owned(), reply))
            .await
    }

    /// Stops listening on `channel`.
    ///
    /// # Errors
    /// As [`listen`](Self::listen).
    pub async fn unlisten(&mut self, channel: &str) -> Result<()> {
        check_channel(channel)?;
        self.ask(|reply| Command::Unlisten(channel.to_owned(), reply))
            .await
    }

    /// The next event; `None` only if the listener's task has ended (it ends when the
    /// listener is dropped).
    pub async fn recv(&mut self) -> Option<ListenerEvent> {
        self.events.recv().await
    }

    async fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<()>>) -> Command,
    ) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        let gone = || Error::new(ErrorKind::ConnectionLost, "the listener's task has ended");
        self.commands.send(command(reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

impl Stream for Listener {
    type Item = ListenerEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ListenerEvent>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Dropping the client with the task closes the connection.
        self.task.abort();
        self.counts.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

/// The notifications of a connection, as its driver task hands them over.
type Notes = mpsc::UnboundedReceiver<tokio_postgres::Notification>;

/// Opens a connection whose notifications come out of the returned receiver.
async fn open(pool: &Pool<PgManager>) -> Result<(Client, Notes)> {
    let (notes_to, notes) = mpsc::unbounded_channel();
    let (client, _) = pool
        .manager()
        .open(crate::conn::Reports {
            notifications: Some(notes_to),
            settings: None,
        })
        .await?;
    Ok((client, notes))
}

/// Refuses channel names PostgreSQL would refuse or cut.
fn check_channel(channel: &str) -> Result<()> {
    let problem = if channel.is_empty() {
        "is empty"
    } else if channel.contains('\0') {
        "contains a NUL byte"
    } else if channel.len() > MAX_CHANNEL_BYTES {
        "is longer than 63 bytes (PostgreSQL would cut it)"
    } else {
        return Ok(());
    };
    Err(Error::params(format!(
        "the channel name {channel:?} {problem}; a channel is 1 to 63 bytes, any characters but NUL"
    )))
}

/// `LISTEN "channel"` (or `UNLISTEN`), the name quoted so it is taken as given.
fn statement(verb: &str, channel: &str) -> String {
    format!("{verb} {}", crate::sql::quote_ident(channel))
}

/// The task that owns the listener's connection.
struct Task {
    pool: Pool<PgManager>,
    target: Target,
    counts: Arc<ListenerCounts>,
    /// Channels listened to, subscribed again after a reconnect.
    channels: BTreeSet<String>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<ListenerEvent>,
}

/// Counts a listener as connected while it lives: also when the task is aborted (the
/// listener dropped) in the middle of serving.
struct Connected {
    counts: Arc<ListenerCounts>,
    target: Target,
}

impl Connected {
    fn new(counts: &Arc<ListenerCounts>, target: &Target) -> Self {
        counts.connected.fetch_add(1, Ordering::AcqRel);
        target.adjust(crate::telemetry::LISTENERS_CONNECTED, 1.0);
        Connected {
            counts: Arc::clone(counts),
            target: target.clone(),
        }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.counts.connected.fetch_sub(1, Ordering::AcqRel);
        self.target
            .adjust(crate::telemetry::LISTENERS_CONNECTED, -1.0);
    }
}

/// Why the task stopped serving a connection.
enum Ended {
    /// The connection was lost: reconnect.
    Lost,
    /// The listener was dropped: stop.
    Dropped,
}

impl Task {
    async fn run(mut self, client: Client, notes: Notes) {
        let mut connection = Some((client, notes));
        let mut backoff = Backoff::default();
        loop {
            let (client, notes) = match connection.take() {
                Some(connection) => connection,
                None => match self.reconnect().await {
                    Ok(connection) => connection,
                    Err(err) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(target: "coredb", error = %err, ?delay, "listener could not reconnect; trying again");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                },
            };
            backoff = Backoff::default();
            let connected = Connected::new(&self.counts, &self.target);
            let ended = self.serve(&client, notes).await;
            drop(connected);
            match ended {
                Ended::Dropped => return,
                Ended::Lost => {
                    tracing::warn!(target: "coredb", channels = self.channels.len(), "listener connection lost; reconnecting");
                    self.target
                        .count(crate::telemetry::LISTENER_RECONNECTS, &[]);
                }
            }
        }
    }

    /// Opens a new connection, listens to every channel again, and says so.
    async fn reconnect(&mut self) -> Result<(Client, Notes)> {
        let (client, notes) = open(&self.pool).await?;
        for channel in &self.channels {
            client
                .batch_execute(&statement("LISTEN", channel))
                .await
                .map_err(|e| Error::from_driver(e, None))?;
        }
        // Only now: every channel is listened to again.
        let _ = self.events.send(ListenerEvent::Reconnected);
        Ok((client, notes))
    }

    /// Hands notifications over and runs commands until the connection is lost or the
    /// listener dropped.
    async fn serve(&mut self, client: &Client, mut notes: Notes) -> Ended {
        loop {
            tokio::select! {
                note = notes.recv() => match note {
                    Some(note) => {
                        if self.events.send(ListenerEvent::Notification(note.into())).is_err() {
                            return Ended::Dropped;
                        }
                    }
                    None => return Ended::Lost,
                },
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        return Ended::Dropped;
                    };
                    let (verb, channel, reply) = match command {
                        Command::Listen(channel, reply) => ("LISTEN", channel, reply),
                        Command::Unlisten(channel, reply) => ("UNLISTEN", channel, reply),
                    };
                    let sent = client
                        .batch_execute(&statement(verb, &channel))
                        .await
                        .map_err(|e| Error::from_driver(e, None));
                    let lost = matches!(&sent, Err(e) if e.kind() == ErrorKind::ConnectionLost);
                    if sent.is_ok() || lost {
                        // Kept (or dropped) for the next connection too.
                        if verb == "LISTEN" {
                            self.channels.insert(channel);
                        } else {
                            self.channels.remove(&channel);
                        }
                    }
                    // Lost half-way, the command takes effect with the reconnect.
                    let _ = reply.send(if lost { Ok(()) } else { sent });
                    if lost {
                        return Ended::Lost;
                    }
                }
            }
        }
    }
}
