//! How a pool's connections are opened: the socket (coredb's own, so the server's messages can
//! be read on their way to the driver, see [`wire`](super::wire)), TLS when configured, and
//! the driver's startup over them. The same connector sends the connections' cancel requests
//! (a server that takes only TLS takes cancel requests only over TLS too).

use std::fmt;
use std::io;
use std::net::SocketAddr;
#[cfg(unix)]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_postgres::{CancelToken, Client, NoTls};

use super::open::{drive, Reports};
use super::wire::{Socket, Wire};
use crate::config::{defaults, DatabaseConfig};
use crate::error::Result;

/// Opens connections and sends cancel requests, with TLS when configured.
#[derive(Clone)]
pub(crate) struct Connector {
    #[cfg(feature = "tls")]
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    socket: SocketOptions,
}

/// How sockets are opened and kept.
#[derive(Clone, Copy)]
struct SocketOptions {
    /// Per address tried.
    connect_timeout: Duration,
    /// Idle time before the first keepalive probe.
    keepalive_idle: Duration,
    /// Time between probes.
    keepalive_interval: Duration,
    /// Sent data unacknowledged this long drops the connection (Linux).
    tcp_user_timeout: Duration,
    /// Hosts (and each host's addresses) in random order.
    load_balance: bool,
}

/// The server a connection went to, for its cancel requests.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    /// The host as configured: the name TLS checks.
    host: Arc<str>,
    addr: Address,
}

/// One address of a server.
#[derive(Clone, Debug)]
enum Address {
    Tcp(SocketAddr),
    #[cfg(unix)]
    Unix(PathBuf),
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The socket: no such host, refused, no answer.
    Socket(io::Error),
    /// The driver's startup: TLS, authentication, the server's refusal.
    Driver(tokio_postgres::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Socket(err) => write!(f, "error connecting to server: {err}"),
            ConnectError::Driver(err) => err.fmt(f),
        }
    }
}

impl From<tokio_postgres::Error> for ConnectError {
    fn from(err: tokio_postgres::Error) -> Self {
        ConnectError::Driver(err)
    }
}

impl Connector {
    /// The connector for `config`.
    ///
    /// # Errors
    /// A [`Config`](crate::ErrorKind::Config) error when a certificate or key file cannot be
    /// used, or TLS is asked of a build without it.
    pub(crate) fn new(config: &DatabaseConfig) -> Result<Self> {
        let socket = SocketOptions {
            connect_timeout: config.connect_timeout,
            keepalive_idle: config.keepalive_idle,
            // A dead peer (a host gone, a silent network) is found within the user timeout:
            // sent data unacknowledged that long, or an idle connection's three probes
            // unanswered that long, drops the connection (Linux; elsewhere the keepalives
            // alone).
            keepalive_interval: (config.tcp_user_timeout / 3)
                .clamp(Duration::from_secs(1), defaults::KEEPALIVE_INTERVAL),
            tcp_user_timeout: config.tcp_user_timeout,
            load_balance: config.load_balance,
        };
        #[cfg(feature = "tls")]
        return Ok(Connector {
            tls: super::tls::connector(config)?,
            socket,
        });
        #[cfg(not(feature = "tls"))]
        {
            use crate::config::SslMode;
            if matches!(
                config.ssl_mode,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
            ) || config.ssl_cert.is_some()
            {
                return Err(crate::error::Error::config(format!(
                    "POSTGRES_SSLMODE={:?}{}: this build of coredb has no TLS (the `tls` feature is off); allowed here: sslmode disable or prefer, without a client certificate",
                    config.ssl_mode.as_str(),
                    if config.ssl_cert.is_some() { " with POSTGRES_SSLCERT" } else { "" },
                )));
            }
            Ok(Connector { socket })
        }
    }

    /// Connects to the first of `hosts` that takes the connection, with `driver`'s startup
    /// settings, and runs the connection on a task of its own.
    pub(crate) async fn connect(
        &self,
        driver: &tokio_postgres::Config,
        hosts: &[(String, u16)],
        reports: Reports,
    ) -> std::result::Result<(Client, Peer), ConnectError> {
        let reports = &reports;
        first_that_opens(
            hosts.iter().collect(),
            self.socket.load_balance,
            "no host to connect to",
            |(host, port)| self.connect_host(driver, host, *port, reports),
        )
        .await
    }

    /// Connects to one host, trying each of its addresses in turn.
    async fn connect_host(
        &self,
        driver: &tokio_postgres::Config,
        host: &str,
        port: u16,
        reports: &Reports,
    ) -> std::result::Result<(Client, Peer), ConnectError> {
        let addresses = addresses(host, port).await?;
        let host: Arc<str> = Arc::from(host);
        let shuffle = self.socket.load_balance;
        first_that_opens(
            addresses,
            shuffle,
            "could not resolve any addresses",
            |addr| {
                let peer = Peer {
                    host: Arc::clone(&host),
                    addr,
                };
                async move {
                    let socket = self.open_socket(&peer.addr).await?;
                    let client = self
                        .start(driver, socket, &peer.host, reports.clone())
                        .await?;
                    Ok((client, peer))
                }
            },
        )
        .await
    }

    /// The driver's startup over `socket`, read on its way (see [`Wire`]).
    async fn start(
        &self,
        driver: &tokio_postgres::Config,
        socket: Socket,
        host: &str,
        reports: Reports,
    ) -> std::result::Result<Client, ConnectError> {
        let flags = reports.settings.clone().unwrap_or_default();
        let wire = Wire::new(socket, Arc::clone(&flags));
        if reports.notifications.is_none() {
            // A pooled connection: its holder may send statements itself (a listener's
            // notifications are the driver's to read).
            wire.lend_through(&flags);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let tls = make_tls::<Wire<Socket>>(tls, host);
            let (client, connection) = driver.connect_raw(wire, super::wire::WireTls(tls)).await?;
            tokio::spawn(drive(connection, reports));
            return Ok(client);
        }
        let _ = host;
        let (client, connection) = driver.connect_raw(wire, NoTls).await?;
        tokio::spawn(drive(connection, reports));
        Ok(client)
    }

    /// A socket to `addr`, within the connect timeout, with the keepalive settings.
    async fn open_socket(&self, addr: &Address) -> std::result::Result<Socket, ConnectError> {
        let options = self.socket;
        let socket = match addr {
            Address::Tcp(addr) => {
                let stream = within(options.connect_timeout, TcpStream::connect(*addr)).await;
                let stream = stream.and_then(|stream| {
                    stream.set_nodelay(true)?;
                    let tuned = socket2::SockRef::from(&stream);
                    #[cfg(target_os = "linux")]
                    tuned.set_tcp_user_timeout(Some(options.tcp_user_timeout))?;
                    tuned.set_tcp_keepalive(
                        &socket2::TcpKeepalive::new()
                            .with_time(options.keepalive_idle)
                            .with_interval(options.keepalive_interval)
                            .with_retries(3),
                    )?;
                    Ok(stream)
                });
                stream.map(Socket::Tcp)
            }
            #[cfg(unix)]
            Address::Unix(path) => {
                let connecting = tokio::net::UnixStream::connect(path.clone());
                within(options.connect_timeout, connecting)
                    .await
                    .map(Socket::Unix)
            }
        };
        socket.map_err(ConnectError::Socket)
    }

    /// Asks the server to cancel what `token`'s connection runs, over a connection of its own
    /// to the same server, made like the first one.
    pub(crate) async fn cancel(
        &self,
        token: &CancelToken,
        peer: &Peer,
    ) -> std::result::Result<(), ConnectError> {
        let socket = self.open_socket(&peer.addr).await?;
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return Ok(token
                .cancel_query_raw(socket, make_tls::<Socket>(tls, &peer.host))
                .await?);
        }
        Ok(token.cancel_query_raw(socket, NoTls).await?)
    }
}

/// What `attempt` opens with the first of `items` (in random order when `shuffle`) that it
/// opens with; else the last failure, or `none` when there is no item.
async fn first_that_opens<I, T, Opening>(
    mut items: Vec<I>,
    shuffle: bool,
    none: &str,
    mut attempt: impl FnMut(I) -> Opening,
) -> std::result::Result<T, ConnectError>
where
    Opening: std::future::Future<Output = std::result::Result<T, ConnectError>>,
{
    if shuffle {
        fastrand::shuffle(&mut items);
    }
    let mut failed = None;
    for item in items {
        match attempt(item).await {
            Ok(opened) => return Ok(opened),
            Err(err) => failed = Some(err),
        }
    }
    Err(failed
        .unwrap_or_else(|| ConnectError::Socket(io::Error::new(io::ErrorKind::InvalidInput, none))))
}

/// `connecting`, cut off after `limit`.
async fn within<T>(
    limit: Duration,
    connecting: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(limit, connecting).await {
        Ok(opened) => opened,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "connection timed out",
        )),
    }
}

/// The addresses of `host` (a name, an IP address, or a Unix socket's directory).
async fn addresses(host: &str, port: u16) -> std::result::Result<Vec<Address>, ConnectError> {
    #[cfg(unix)]
    if host.starts_with('/') {
        let path = std::path::Path::new(host).join(format!(".s.PGSQL.{port}"));
        return Ok(vec![Address::Unix(path)]);
    }
    let found = tokio::net::lookup_host((host, port))
        .await
        .map_err(ConnectError::Socket)?;
    Ok(found.map(Address::Tcp).collect())
}

/// The TLS connector for one connection to `host`.
#[cfg(feature = "tls")]
fn make_tls<S>(
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    host: &str,
) -> <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<S>>::TlsConnect
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio_postgres::tls::MakeTlsConnect;
    match MakeTlsConnect::<S>::make_tls_connect(&mut tls.clone(), host) {
        Ok(connect) => connect,
        Err(never) => match never {},
    }
}
