//! What the server and the client do alike around a WebSocket opening handshake: set the
//! socket up for it and clear its timeouts after it (reads then block with no timeout: full
//! duplex; the handshake's total deadline is the `HalfStream`'s), build a connection's parameters from the config, and decode each received message
//! into an item for the component's subject.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::protocol::Role;
use tungstenite::Message;

use crate::error::{Context, Error};
use crate::reactive::{Subject, SubsCache};
use crate::stats::Stats;
use crate::telemetry::event;
use crate::ws::conn::{ConnParams, HalfStream, TlsSession};
use crate::ws::datatype::Datatype;
use crate::ws::{ConnId, Tag, WSConfig, WSConnectionConfig};

pub(crate) const UPGRADE_REQUIRED: &str = "HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Version: 13\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 54\r\n\r\nThis is a WebSocket endpoint: send an Upgrade request\n";
pub(crate) const BAD_REQUEST: &str = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 33\r\n\r\nInvalid WebSocket upgrade request\n";
pub(crate) const UNAVAILABLE: &str = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\n\r\nToo many connections";

/// Answers a refused upgrade with a complete HTTP response, then half-closes.
pub(crate) fn reply_http(sock: &TcpStream, response: &str) {
    let mut s = sock;
    let _ = s.write_all(response.as_bytes());
    let _ = s.flush();
    let _ = sock.shutdown(Shutdown::Write);
}

/// [`reply_http`] on a connection that may be TLS (encrypted, then `close_notify`).
pub(crate) fn reply_http_on(sock: &TcpStream, tls: Option<&TlsSession>, response: &str) {
    let Some(tls) = tls else {
        return reply_http(sock, response);
    };
    let _ = tls.write_blocking(sock, response.as_bytes());
    end_refused(sock, Some(tls));
}

/// After a refusal's response went out: `close_notify` on TLS, then a half-close.
pub(crate) fn end_refused(sock: &TcpStream, tls: Option<&TlsSession>) {
    if let Some(tls) = tls {
        let mut ct = Vec::new();
        if tls.seal_close(&mut ct).is_ok() {
            let mut s = sock;
            let _ = s.write_all(&ct);
        }
    }
    let _ = sock.shutdown(Shutdown::Write);
}

/// The stream a server's opening handshake runs over: a TLS handshake first (within
/// `deadline`) when the component serves `wss://`.
pub(crate) fn server_stream(
    raw: &Arc<TcpStream>,
    deadline: Instant,
    cfg: &WSConfig,
) -> std::io::Result<HalfStream> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &cfg.tls_server {
        let session = TlsSession::accept(tls, raw, deadline)?;
        return Ok(HalfStream::secure(raw.clone(), Some(deadline), session)
            .for_handshake(Role::Server, &cfg.tungstenite()));
    }
    Ok(HalfStream::with_deadline(raw.clone(), Some(deadline))
        .for_handshake(Role::Server, &cfg.tungstenite()))
}

/// The stream a client's opening handshake runs over: a TLS handshake first (within
/// `deadline`) for a `wss://` endpoint. An error is [`Error::Tls`].
pub(crate) fn client_stream(
    raw: &Arc<TcpStream>,
    deadline: Instant,
    conn: &WSConnectionConfig,
    cfg: &WSConfig,
    name: &str,
) -> crate::Result<HalfStream> {
    #[cfg(feature = "tls")]
    if conn.is_secure() {
        let tls = match &cfg.tls_client {
            Some(t) => t.clone(),
            None => crate::tls::ClientTls::webpki_roots()?,
        };
        let session = TlsSession::connect(&tls, conn.host(), raw, deadline)
            .map_err(|e| Error::tls(name, Some(conn.authority()), e))?;
        return Ok(HalfStream::secure(raw.clone(), Some(deadline), session)
            .for_handshake(Role::Client, &cfg.tungstenite()));
    }
    let _ = (conn, name);
    Ok(HalfStream::with_deadline(raw.clone(), Some(deadline))
        .for_handshake(Role::Client, &cfg.tungstenite()))
}

/// Wakes an accept loop blocked on a listener at `addr` (so it sees that its component is
/// stopping): a throwaway connection, to loopback when the listener is on every address.
/// Returns whether the connection was made.
pub(crate) fn wake_listener(mut addr: std::net::SocketAddr) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Sets the socket up for the handshake: no Nagle delay, and no single read or write longer
/// than `timeout` (the `HalfStream`'s deadline bounds them all together).
pub(crate) fn start(sock: &TcpStream, timeout: Duration) {
    let _ = sock.set_nodelay(true);
    let _ = sock.set_read_timeout(Some(timeout));
    let _ = sock.set_write_timeout(Some(timeout));
}

/// The handshake is done: from here on, reads block without a timeout (full duplex).
pub(crate) fn finish(sock: &TcpStream) {
    let _ = sock.set_read_timeout(None);
    let _ = sock.set_write_timeout(None);
}

/// A connection's parameters from its component's config.
pub(crate) fn params(cfg: &WSConfig, role: Role, keep_unsent: bool) -> ConnParams {
    ConnParams {
        role,
        ping_interval: cfg.ping_interval,
        ping_timeout: cfg.ping_timeout,
        close_timeout: cfg.close_timeout,
        write_timeout: cfg.write_timeout,
        keep_unsent,
        ws: cfg.tungstenite(),
    }
}

/// Where one connection's received messages go.
pub(crate) struct Inbound<T, I> {
    pub(crate) datatype: Arc<dyn Datatype<T>>,
    pub(crate) subject: Arc<Subject<I>>,
    pub(crate) errors: Arc<Subject<Error>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) component: Arc<str>,
    pub(crate) conn_id: ConnId,
    pub(crate) path: Tag,
    /// The reader's copy of the subject's subscriber set.
    pub(crate) subscribers: SubsCache<I>,
}

impl<T: 'static, I: Clone + Send + 'static> Inbound<T, I> {
    /// Decodes one message and emits it (wrapped by `wrap`). A message that fails to decode is
    /// counted, logged and reported on the errors stream; the connection goes on.
    pub(crate) fn deliver(&mut self, msg: Message, wrap: impl FnOnce(T) -> I) {
        log::debug!(component = &*self.component, conn_id:% = self.conn_id, path = &*self.path, bytes = msg.len(); "{}", event::MESSAGE_RECEIVED);
        match self.datatype.decode(msg) {
            Ok(item) => self.subject.next_cached(wrap(item), &mut self.subscribers),
            Err(source) => {
                self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                log::warn!(component = &*self.component, conn_id:% = self.conn_id, path = &*self.path, datatype = self.datatype.name(), error:% = source; "{}", event::DECODE_ERROR);
                self.errors.next(Error::Decode {
                    ctx: Context::new(&self.component, Some(self.conn_id.to_string())),
                    datatype: self.datatype.name(),
                    source,
                });
            }
        }
    }
}
