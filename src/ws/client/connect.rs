//! The client's connection thread: connect and handshake (bounded), run the connection, and
//! reconnect by the retry policy, carrying a buffering client's unsent batch over.

use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::{Role, WebSocket};
use tungstenite::Message;

use super::Inner;
use crate::error::{Context, Error, Result};
use crate::reactive::Notification;
use crate::telemetry::{event, Outcome};
use crate::ws::conn::{ConnHandle, ConnInfo, ConnRun, HalfStream, Outbound};
use crate::ws::handshake;
use crate::ws::{ConnId, ConnectionState, Tag, WSConfig, WSConnectionConfig};

impl<T: Clone + Send + 'static> Inner<T> {
    /// One connection attempt: connect, handshake, and set up the connection core.
    fn open(&self, seq: u64) -> Result<(ConnRun, Arc<ConnHandle>, ConnInfo)> {
        let (ws, peer, accepted) = self.connect()?;
        *self.accepted.lock() = Some(accepted);
        let info = ConnInfo {
            id: ConnId::new(),
            seq,
            peer,
        };
        let params = handshake::params(&self.cfg, Role::Client, self.cfg.buffer_while_disconnected);
        let (run, handle) = ConnRun::new(
            ws,
            info.clone(),
            self.core.name.clone(),
            Outbound::Shared(self.queue.clone()),
            params,
            self.core.stats.clone(),
            &self.core.threads,
            None,
        )?;
        Ok((run, handle, info))
    }

    /// Connects and handshakes, bounded by `handshake_timeout`. A dispose during the
    /// handshake shuts the socket down to end the wait.
    fn connect(&self) -> Result<(WebSocket<HalfStream>, SocketAddr, Accepted)> {
        let stopping = || self.core.threads.is_stopping();
        let res = dial(
            &self.conn,
            &self.cfg,
            &self.core.name,
            None,
            &stopping,
            |raw| {
                *self.handshaking.lock() = Some(raw.clone());
                if self.core.threads.is_stopping() {
                    let _ = raw.shutdown(Shutdown::Both);
                }
            },
        );
        self.handshaking.lock().take();
        res.map(|(ws, peer, _, accepted)| (ws, peer, accepted))
    }
}

/// Connects to `conn` and runs the opening handshake, all within one total deadline: `deadline`
/// if given, otherwise `cfg.handshake_timeout` from now (a server trickling its response cannot
/// stretch it); `on_socket` sees the socket before the handshake (to shut it down from another
/// thread); a given deadline stays set on the returned stream (the gateway's HELLO exchange
/// runs under it), the default one is cleared;
/// `abort` is asked while the TCP connection is under way, so a dispose or stop never waits
/// for an unresponsive host.
/// Returns the WebSocket, the peer's address, a clone of the socket and what the server's
/// response said; read and write timeouts are cleared. A refusal (an HTTP status instead of
/// `101`) is [`Error::HandshakeRefused`].
pub(crate) fn dial(
    conn: &WSConnectionConfig,
    cfg: &WSConfig,
    name: &str,
    deadline: Option<Instant>,
    abort: &dyn Fn() -> bool,
    on_socket: impl FnOnce(&Arc<TcpStream>),
) -> Result<(WebSocket<HalfStream>, SocketAddr, Arc<TcpStream>, Accepted)> {
    let keep_deadline = deadline.is_some();
    let deadline = deadline.unwrap_or_else(|| Instant::now() + cfg.handshake_timeout);
    let addrs: Vec<SocketAddr> = (conn.host(), conn.port())
        .to_socket_addrs()
        .map_err(|e| Error::io(name, Some(conn.authority()), e))?
        .collect();
    let mut last = None;
    let mut sock = None;
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        match connect_abortable(&a, left, abort) {
            Ok(s) => {
                sock = Some((s, a));
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let (sock, peer) = match sock {
        Some(s) => s,
        None => {
            let e = last.unwrap_or_else(|| std::io::Error::other("no address to connect to"));
            return Err(Error::io(name, Some(conn.authority()), e));
        }
    };
    handshake::start(&sock, deadline.saturating_duration_since(Instant::now()));
    let raw = Arc::new(sock);
    on_socket(&raw);
    let request = request(conn, cfg).map_err(|e| Error::ws(name, Some(peer.to_string()), e))?;
    let stream = match handshake::client_stream(&raw, deadline, conn, cfg, name) {
        Ok(s) => s,
        Err(e) => {
            let _ = raw.shutdown(Shutdown::Both);
            return Err(e);
        }
    };
    match tungstenite::client::client_with_config(request, stream, Some(cfg.handshake_config())) {
        Ok((mut ws, resp)) => {
            if !keep_deadline {
                ws.get_mut().set_deadline(None);
            }
            handshake::finish(&raw);
            Ok((ws, peer, raw, Accepted::from_response(&resp)))
        }
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let _ = raw.shutdown(Shutdown::Both);
            let body = resp
                .body()
                .as_deref()
                .map(|b| {
                    String::from_utf8_lossy(&b[..b.len().min(256)])
                        .trim()
                        .to_owned()
                })
                .unwrap_or_default();
            Err(Error::HandshakeRefused {
                ctx: Context::new(name, Some(peer.to_string())),
                status: resp.status().as_u16(),
                body,
            })
        }
        Err(HandshakeError::Failure(e)) => Err(Error::ws(name, Some(peer.to_string()), e)),
        Err(HandshakeError::Interrupted(_)) => {
            let _ = raw.shutdown(Shutdown::Both);
            Err(Error::io(
                name,
                Some(peer.to_string()),
                std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"),
            ))
        }
    }
}

/// The opening request: the URL, the configured headers, the offered subprotocols.
fn request(
    conn: &WSConnectionConfig,
    cfg: &WSConfig,
) -> tungstenite::Result<tungstenite::handshake::client::Request> {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::http::{header, HeaderName, HeaderValue};
    let mut req = conn.url().into_client_request()?;
    let bad = |what: &str| {
        tungstenite::Error::Url(tungstenite::error::UrlError::UnableToConnect(
            what.to_owned(),
        ))
    };
    for (n, v) in &cfg.request_headers {
        let n = HeaderName::from_bytes(n.as_bytes()).map_err(|_| bad("bad header name"))?;
        let v = HeaderValue::from_str(v).map_err(|_| bad("bad header value"))?;
        req.headers_mut().append(n, v);
    }
    if !cfg.subprotocols.is_empty() {
        let v = HeaderValue::from_str(&cfg.subprotocols.join(", "))
            .map_err(|_| bad("bad subprotocol"))?;
        req.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    Ok(req)
}

/// What a server's `101` said: the subprotocol it chose and its headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub(crate) protocol: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
}

impl Accepted {
    fn from_response(resp: &tungstenite::handshake::client::Response) -> Self {
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let protocol = resp
            .headers()
            .get(tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Accepted { protocol, headers }
    }
}

pub(super) fn connection_loop<T: Clone + Send + 'static>(weak: Weak<Inner<T>>, seq: u64) {
    let mut failures: u32 = 0;
    let mut first = true;
    let mut pending: Vec<Message> = Vec::new();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopping() {
            break;
        }
        inner.set_state(if first {
            ConnectionState::Connecting
        } else {
            ConnectionState::Reconnecting
        });
        first = false;
        inner
            .core
            .stats
            .connect_attempts
            .fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let wait = match inner.open(seq) {
            Ok((run, handle, info)) => {
                let handshake = started.elapsed();
                let buffering = inner.cfg.buffer_while_disconnected;
                // What was held for the first attempt goes out now.
                let held = inner.hold_first.swap(false, Ordering::AcqRel);
                if !buffering && !held {
                    inner.drop_queued("not connected");
                }
                let peer = info.peer;
                let run = run.with_pending(std::mem::take(&mut pending));
                *inner.current.lock() = Some(handle.clone());
                inner.connected.store(true, Ordering::Release);
                inner
                    .core
                    .stats
                    .connections_opened
                    .fetch_add(1, Ordering::Relaxed);
                inner.metrics.record_handshake(Outcome::Ok, handshake);
                log::info!(component = &*inner.core.name, conn_id:% = info.id, path = &*inner.path, peer:% = peer, duration_ms = handshake.as_secs_f64() * 1e3; "{}", event::HANDSHAKE_COMPLETED);
                log::info!(component = &*inner.core.name, conn_id:% = info.id, path = &*inner.path, peer:% = peer; "{}", event::CONNECTION_OPENED);
                // A dispose that raced the handshake must still end this connection.
                if inner.core.threads.is_stopping() {
                    handle.abort();
                }
                inner.set_state(ConnectionState::Connected);
                let mut inbound = handshake::Inbound {
                    datatype: inner.datatype.clone(),
                    subject: inner.core.inbound.clone(),
                    errors: inner.core.errors.clone(),
                    stats: inner.core.stats.clone(),
                    component: inner.core.name.clone(),
                    conn_id: info.id,
                    path: Tag::from(&inner.path),
                    subscribers: Default::default(),
                };
                drop(inner);
                let opened = Instant::now();
                let mut end = run.run(|msg| inbound.deliver(msg, |item| item));
                let lasted = opened.elapsed();
                handle.abort();
                let Some(inner) = weak.upgrade() else { return };
                inner.connected.store(false, Ordering::Release);
                *inner.current.lock() = None;
                inner
                    .core
                    .stats
                    .connections_closed
                    .fetch_add(1, Ordering::Relaxed);
                let close = end.close_info();
                log::info!(component = &*inner.core.name, conn_id:% = info.id, path = &*inner.path, peer:% = peer, reason:? = end.reason, close_code:? = close.code(), close_reason = close.reason(), peer_close_code:? = end.peer_close.as_ref().map(|c| c.0), sent_close_code:? = end.sent_close.as_ref().map(|c| c.0); "{}", event::CONNECTION_CLOSED);
                // Readable when the state leaves `Connected`.
                *inner.last_close.lock() = Some(close);
                // Buffering off: what was queued for this connection is dropped (the writer
                // keeps no unsent batch without buffering).
                if buffering {
                    pending = std::mem::take(&mut end.unsent);
                } else {
                    inner.drop_queued("disconnected");
                }
                if inner.stopping() {
                    break;
                }
                inner.set_state(ConnectionState::Disconnected);
                // Healthy long enough: the backoff starts over. Ended sooner (a server that
                // accepts and drops at once): a failed attempt, and the backoff keeps growing.
                if lasted >= inner.cfg.retry.reset_after {
                    failures = 0;
                    inner.cfg.retry.delay(0)
                } else {
                    let e = Error::ConnectionDropped {
                        ctx: Context::new(&inner.core.name, Some(peer.to_string())),
                        after_ms: lasted.as_millis() as u64,
                        reason: end_cause(&end),
                    };
                    match failed_attempt(&inner, &mut failures, e) {
                        Some(delay) => delay,
                        None => break,
                    }
                }
            }
            Err(e) => {
                let outcome = match &e {
                    Error::Io { source, .. } if source.kind() == std::io::ErrorKind::TimedOut => {
                        Outcome::Timeout
                    }
                    _ => Outcome::Failed,
                };
                inner.metrics.record_handshake(outcome, started.elapsed());
                // Held for a first attempt that failed: not sent, and said so.
                if inner.hold_first.swap(false, Ordering::AcqRel)
                    && !inner.cfg.buffer_while_disconnected
                {
                    inner.first_failed.store(true, Ordering::Release);
                    inner.drop_undelivered("first attempt failed");
                }
                match failed_attempt(&inner, &mut failures, e) {
                    Some(delay) => delay,
                    None => break,
                }
            }
        };
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopping() {
            break;
        }
        let wake = inner.wake_rx.clone();
        drop(inner);
        let _ = wake.recv_timeout(wait);
    }
    if let Some(inner) = weak.upgrade() {
        inner.ended_tx.lock().take();
    }
}

/// Counts a failed attempt and reports it on the errors stream: the delay before the next
/// one, or `None` when the retry policy gives up (the client then ends with an error).
fn failed_attempt<T: Clone + Send + 'static>(
    inner: &Inner<T>,
    failures: &mut u32,
    e: Error,
) -> Option<std::time::Duration> {
    *failures += 1;
    // A refused certificate stays refused, and so does a request the server refused with a
    // 4xx: the client ends with it (reported first).
    if inner.cfg.retry.gives_up_on(&e) {
        log::warn!(component = &*inner.core.name, path = &*inner.path, attempt = *failures, error:% = e; "{}", event::RETRIES_EXHAUSTED);
        inner.core.report(Error::ConnectFailed {
            ctx: Context::new(&inner.core.name, None),
            attempt: *failures,
            source: Box::new(e.clone()),
        });
        return end_with(inner, e);
    }
    if let Some(max) = inner.cfg.retry.max_retries {
        if *failures > max {
            log::warn!(component = &*inner.core.name, path = &*inner.path, attempt = *failures, error:% = e; "{}", event::RETRIES_EXHAUSTED);
            let err = Error::RetriesExhausted {
                ctx: Context::new(&inner.core.name, None),
                attempts: *failures,
                source: Box::new(e),
            };
            return end_with(inner, err);
        }
    }
    let delay = inner.cfg.retry.delay(*failures - 1);
    log::info!(component = &*inner.core.name, path = &*inner.path, attempt = *failures, delay_ms = delay.as_millis() as u64, error:% = e; "{}", event::CONNECT_RETRY);
    inner.core.report(Error::ConnectFailed {
        ctx: Context::new(&inner.core.name, None),
        attempt: *failures,
        source: Box::new(e),
    });
    Some(delay)
}

/// Ends the client with `err`: state `Closed` first, then the terminal notification.
fn end_with<T: Clone + Send + 'static>(
    inner: &Inner<T>,
    err: Error,
) -> Option<std::time::Duration> {
    inner.completing.store(true, Ordering::Release);
    inner.set_state(ConnectionState::Closed);
    inner.core.terminate(Notification::Error(err));
    None
}

/// How a connection ended, in words, for the error a short-lived one reports.
fn end_cause(end: &crate::ws::conn::ConnEnd) -> String {
    use crate::ws::conn::EndReason;
    match (&end.reason, &end.peer_close) {
        (_, Some((code, reason))) if reason.is_empty() => format!("peer closed with code {code}"),
        (_, Some((code, reason))) => format!("peer closed with code {code}: {reason}"),
        (EndReason::Closed, None) => "closed".into(),
        (EndReason::ProtocolError(code, e), None) => format!("protocol error ({code}): {e}"),
        (EndReason::Lost(e), None) => format!("lost: {e}"),
        (EndReason::Aborted, None) => "aborted".into(),
    }
}

/// How often a connection under way is checked for completion and for `abort`.
const CONNECT_CHECK: std::time::Duration = std::time::Duration::from_millis(2);

/// A TCP connection to `addr` within `timeout`, given up as soon as `abort()` is true (checked
/// every 2 ms; the connect itself runs in the kernel, non-blocking).
fn connect_abortable(
    addr: &SocketAddr,
    timeout: std::time::Duration,
    abort: &dyn Fn() -> bool,
) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    use std::io::{Error as IoError, ErrorKind};
    let sock = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    sock.set_nonblocking(true)?;
    match sock.connect(&SockAddr::from(*addr)) {
        Ok(()) => {}
        Err(e)
            if e.kind() == ErrorKind::WouldBlock
                || e.raw_os_error() == Some(libc_einprogress()) => {}
        Err(e) => return Err(e),
    }
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(e) = sock.take_error()? {
            return Err(e);
        }
        match sock.peer_addr() {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::NotConnected => {}
            Err(e) => return Err(e),
        }
        if abort() {
            return Err(IoError::new(
                ErrorKind::Interrupted,
                "connect abandoned: stopping",
            ));
        }
        if Instant::now() >= deadline {
            return Err(IoError::new(ErrorKind::TimedOut, "connect timed out"));
        }
        std::thread::sleep(CONNECT_CHECK);
    }
    sock.set_nonblocking(false)?;
    Ok(sock.into())
}

#[cfg(unix)]
fn libc_einprogress() -> i32 {
    libc::EINPROGRESS
}

#[cfg(not(unix))]
fn libc_einprogress() -> i32 {
    // Windows reports an in-progress connect as WouldBlock (WSAEWOULDBLOCK).
    -1
}
