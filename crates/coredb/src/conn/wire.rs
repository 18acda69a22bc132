//! The bytes between a connection and its server, read on their way to the driver.
//!
//! coredb opens each connection's socket itself and hands it to the driver wrapped in a
//! [`Wire`], which reads the header of every message the server sends (a tag and a length:
//! a few instructions per message) and the body of the few that report a setting
//! (`ParameterStatus`). The values reported at startup are kept; a later report of a session
//! setting with another value (a `SET` the text showed, or a function calling `set_config` it
//! did not) marks the connection as carrying session state, so no one else gets it that way.
//!
//! The mark is set while the bytes are read, before the driver parses them: a server reports a
//! change before it says it is ready again, and the driver ends a request only at that "ready",
//! so whoever sees a statement end sees the mark it left.
//!
//! Under TLS the wrapper sits above the encryption ([`WireTls`]); the socket's own wrapper stops
//! reading when the handshake starts.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
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

/// Between a connection's I/O and its users: whether it serves as a shared lane, and whether a
/// session setting differs from its value at connect.
#[derive(Debug, Default)]
pub(crate) struct ConnFlags {
    /// The connection serves as a shared pipeline lane: its I/O task gathers what its callers
    /// send into one write (`conn::open::drive`).
    pub(crate) shared: AtomicBool,
    /// A session setting the server reports differs from its value at connect.
    pub(crate) changed: AtomicBool,
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

/// A stream whose incoming messages are read for settings reports (see the module's docs).
pub(crate) struct Wire<S> {
    inner: S,
    scan: Scan,
}

impl<S> Wire<S> {
    /// `inner`, whose reports set `flags`.
    pub(crate) fn new(inner: S, flags: Arc<ConnFlags>) -> Self {
        Wire {
            inner,
            scan: Scan::new(Some(flags)),
        }
    }

    /// The reading state, taken away: the bytes that follow are read above this stream.
    #[cfg(feature = "tls")]
    fn take_scan(&mut self) -> Scan {
        std::mem::replace(&mut self.scan, Scan::new(None))
    }
}

/// Where a message's bytes stand.
enum At {
    /// At a message's start; `have` bytes of its 5-byte header gathered in `header`.
    Header { header: [u8; 5], have: usize },
    /// Inside a body nobody needs: this many bytes to pass.
    Skip(usize),
    /// Inside a settings report: this many bytes still to gather into `Scan::body`.
    Report(usize),
}

/// The reading of the server's messages.
struct Scan {
    /// Whom to tell; `None` when this stream's bytes are not messages to read (the socket
    /// under TLS).
    flags: Option<Arc<ConnFlags>>,
    at: At,
    /// A settings report's body, gathered across reads (rare: reports are short).
    body: Vec<u8>,
    /// Nothing was written yet: the first write says whether an answer to a TLS request
    /// comes first.
    first_write: bool,
    /// The next byte read is the server's answer to a TLS request.
    answer_due: bool,
    /// The startup is over (the first "ready"): reports from now on are changes.
    started: bool,
    /// Each watched setting's value at connect.
    at_connect: [Option<Box<[u8]>>; WATCHED_SETTINGS.len()],
    /// One bit per watched setting whose value differs from the one at connect.
    differs: u16,
}

impl Scan {
    fn new(flags: Option<Arc<ConnFlags>>) -> Self {
        Scan {
            flags,
            at: At::Header {
                header: [0; 5],
                have: 0,
            },
            body: Vec::new(),
            first_write: true,
            answer_due: false,
            started: false,
            at_connect: Default::default(),
            differs: 0,
        }
    }

    fn wrote(&mut self, buf: &[u8]) {
        if std::mem::take(&mut self.first_write) && buf.starts_with(&SSL_REQUEST) {
            self.answer_due = true;
        }
    }

    /// Reads `data`, the next bytes from the server.
    fn read(&mut self, mut data: &[u8]) {
        if self.flags.is_none() || data.is_empty() {
            return;
        }
        if std::mem::take(&mut self.answer_due) {
            if data[0] == b'S' {
                // TLS follows: its records are no messages; the stream above reads them.
                self.flags = None;
                return;
            }
            data = &data[1..];
        }
        while !data.is_empty() {
            match &mut self.at {
                At::Skip(left) => {
                    let passed = (*left).min(data.len());
                    *left -= passed;
                    data = &data[passed..];
                    if *left == 0 {
                        self.at = At::Header {
                            header: [0; 5],
                            have: 0,
                        };
                    }
                }
                At::Report(left) => {
                    let taken = (*left).min(data.len());
                    *left -= taken;
                    self.body.extend_from_slice(&data[..taken]);
                    data = &data[taken..];
                    if *left == 0 {
                        let body = std::mem::take(&mut self.body);
                        self.report(&body);
                        self.body = body;
                        self.body.clear();
                        self.at = At::Header {
                            header: [0; 5],
                            have: 0,
                        };
                    }
                }
                At::Header { have: 0, .. } if data.len() >= 5 => {
                    // The common case: a whole header in hand.
                    let (tag, len) = (data[0], [data[1], data[2], data[3], data[4]]);
                    data = &data[5..];
                    self.message(tag, len, &mut data);
                }
                At::Header { header, have } => {
                    let taken = (5 - *have).min(data.len());
                    header[*have..*have + taken].copy_from_slice(&data[..taken]);
                    *have += taken;
                    data = &data[taken..];
                    if *have == 5 {
                        let header = *header;
                        self.message(
                            header[0],
                            [header[1], header[2], header[3], header[4]],
                            &mut data,
                        );
                    }
                }
            }
        }
    }

    /// A message tagged `tag` whose length field is `len` starts at `data`.
    fn message(&mut self, tag: u8, len: [u8; 4], data: &mut &[u8]) {
        let body = (u32::from_be_bytes(len) as usize).saturating_sub(4);
        match tag {
            b'S' if data.len() >= body => {
                let (report, rest) = data.split_at(body);
                self.report(report);
                *data = rest;
                self.at = At::Header {
                    header: [0; 5],
                    have: 0,
                };
            }
            b'S' => self.at = At::Report(body),
            _ => {
                if tag == b'Z' {
                    self.started = true;
                }
                self.at = if body == 0 {
                    At::Header {
                        header: [0; 5],
                        have: 0,
                    }
                } else {
                    At::Skip(body)
                };
            }
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

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            this.scan.read(&buf.filled()[before..]);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.scan.first_write {
            this.scan.wrote(buf);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.scan.first_write {
            if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
                this.scan.wrote(first);
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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
            Ok(Wire { inner, scan })
        })
    }
}

#[cfg(feature = "tls")]
impl<S: tokio_postgres::tls::TlsStream + Unpin> tokio_postgres::tls::TlsStream for Wire<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        self.inner.channel_binding()
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

    /// A startup (reports, then ready), then `after`, read in pieces of `piece` bytes.
    fn read_in_pieces(after: &[Vec<u8>], piece: usize) -> (Scan, Arc<ConnFlags>) {
        let flags = Arc::new(ConnFlags::default());
        let mut scan = Scan::new(Some(Arc::clone(&flags)));
        let mut bytes = report("TimeZone", "UTC");
        bytes.extend(report("application_name", "svc"));
        bytes.extend(message(b'K', &[0; 8]));
        bytes.extend(message(b'Z', b"I"));
        for m in after {
            bytes.extend_from_slice(m);
        }
        for chunk in bytes.chunks(piece) {
            scan.read(chunk);
        }
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
        for piece in 1..=40 {
            let (_, flags) = read_in_pieces(&changed, piece);
            assert!(flags.changed.load(Ordering::Acquire), "piece {piece}");
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
        for piece in [1, 3, 7, 64] {
            let (_, flags) = read_in_pieces(&back, piece);
            assert!(!flags.changed.load(Ordering::Acquire), "piece {piece}");
        }
    }

    #[test]
    fn reports_at_startup_and_of_unwatched_settings_mark_nothing() {
        let rows: Vec<Vec<u8>> = (0..50)
            .map(|i| message(b'D', format!("row {i} with S inside").as_bytes()))
            .chain([report("application_name", "other"), message(b'Z', b"I")])
            .collect();
        for piece in [1, 2, 5, 13, 4096] {
            let (scan, flags) = read_in_pieces(&rows, piece);
            assert!(!flags.changed.load(Ordering::Acquire), "piece {piece}");
            assert_eq!(scan.at_connect[2].as_deref(), Some(&b"UTC"[..]));
        }
    }

    #[test]
    fn the_answer_to_a_tls_request_is_no_message() {
        let flags = Arc::new(ConnFlags::default());
        let mut scan = Scan::new(Some(Arc::clone(&flags)));
        scan.wrote(&SSL_REQUEST);
        // Refused: plain messages follow the one-byte answer.
        let mut bytes = vec![b'N'];
        bytes.extend(report("TimeZone", "UTC"));
        bytes.extend(message(b'Z', b"I"));
        bytes.extend(report("TimeZone", "Europe/Paris"));
        scan.read(&bytes);
        assert!(flags.changed.load(Ordering::Acquire));

        let mut accepted = Scan::new(Some(Arc::new(ConnFlags::default())));
        accepted.wrote(&SSL_REQUEST);
        accepted.read(b"S");
        assert!(
            accepted.flags.is_none(),
            "TLS records are not read as messages"
        );
    }
}
