//! [`RxWSServer`]: accepts WebSocket connections on any path and turns them into a stream of
//! `TaggedData(path, item)`.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::{Mutex, RwLock};
use tungstenite::error::ProtocolError;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role};

use crate::error::{Error, Result};
use crate::reactive::{Notification, Observer, Subject, Subscription};
use crate::telemetry::{self, event, Kind, Outcome, Tracked};
use crate::ws::component::Core;
use crate::ws::conn::{ConnHandle, ConnInfo, ConnParams, ConnRun, HalfStream, Outbound};
use crate::ws::datatype::{Datatype, Datatypes};
use crate::ws::stats::{Stats, StatsSnapshot};
use crate::ws::{
    ConnId, ConnectionEvent, ConnectionEventKind, TaggedData, WSConnectionConfig, WsConfig,
};

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Distinct paths a server counts apart (for metrics' `path` attribute); further paths share
/// one set of counters under [`OTHER_PATH`].
const MAX_METRIC_PATHS: usize = 256;
/// The path attribute of the shared counters (a real path starts with `/`).
const OTHER_PATH: &str = "_other";

const UPGRADE_REQUIRED: &str = "HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Version: 13\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 54\r\n\r\nThis is a WebSocket endpoint: send an Upgrade request\n";
const BAD_REQUEST: &str = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 33\r\n\r\nInvalid WebSocket upgrade request\n";
const UNAVAILABLE: &str = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\n\r\nToo many connections";

/// A WebSocket server: a subject of `TaggedData<T>` in both directions.
///
/// * Inbound: every data message received on any connection, decoded by the path's datatype, is
///   emitted as `TaggedData { tag: path, data, conn: Some(id) }`.
/// * Outbound: `on_next(TaggedData { tag: path, data, conn: None })` goes to every connection
///   open on `path`; with `conn: Some(id)` to exactly that connection (see
///   [`TaggedData::reply`]).
///
/// Threads: one accept thread, and two per connection (reader, writer). Callbacks run on the
/// reader thread of the connection the item came from. `dispose()` (also run by `Drop`) joins
/// them all.
///
/// # About handles
/// `RxWSServer` owns the server; dropping it disposes. [`handle`](Self::handle) gives a cheap,
/// cloneable [`ServerHandle`] (a weak reference) to use inside callbacks without a cycle.
///
/// ```no_run
/// use rxplus::ws::{RxWSServer, TaggedData, Text, WSConnectionConfig};
///
/// let server = RxWSServer::<String>::new(WSConnectionConfig::new("127.0.0.1", 0, "/")?, Text)?;
/// let h = server.handle();
/// // Echo every message to the connection it came from.
/// server.subscribe(move |m: TaggedData<String>| h.on_next(m.reply(m.data.clone()))).detach();
/// println!("listening on {}", server.local_addr());
/// # Ok::<(), rxplus::Error>(())
/// ```
pub struct RxWSServer<T: Clone + Send + 'static> {
    inner: Arc<Inner<T>>,
}

/// A weak, cloneable handle to an [`RxWSServer`], for use inside callbacks. Calls on a handle
/// whose server is gone do nothing (sends are counted nowhere and return `AlreadyClosed`).
pub struct ServerHandle<T: Clone + Send + 'static> {
    inner: Weak<Inner<T>>,
}

impl<T: Clone + Send + 'static> Clone for ServerHandle<T> {
    fn clone(&self) -> Self {
        ServerHandle {
            inner: self.inner.clone(),
        }
    }
}

struct PathEntry<T> {
    datatype: Arc<dyn Datatype<T>>,
    conns: Arc<Vec<Arc<ConnHandle>>>,
}

/// Who an outbound item goes to, looked up under one registry read.
enum Recipients {
    One(ConnId, Option<Arc<ConnHandle>>),
    Path(Option<Arc<Vec<Arc<ConnHandle>>>>),
}

struct Registry<T> {
    paths: HashMap<String, PathEntry<T>>,
    by_id: HashMap<ConnId, (String, Arc<ConnHandle>)>,
}

struct Inner<T: Clone + Send + 'static> {
    core: Core<TaggedData<T>>,
    cfg: WsConfig,
    local_addr: SocketAddr,
    datatypes: Datatypes<T>,
    registry: RwLock<Registry<T>>,
    events: Arc<Subject<ConnectionEvent>>,
    // Each connection thread signals here when it ends; on_completed waits on it.
    conn_done_tx: Sender<()>,
    conn_done_rx: Receiver<()>,
    completing: AtomicBool,
    /// Counters per path, kept for the server's life (cumulative across connections); their
    /// sum is `stats()`. See [`MAX_METRIC_PATHS`].
    path_counters: Mutex<HashMap<Arc<str>, Tracked>>,
}

impl<T: Clone + Send + 'static> RxWSServer<T> {
    /// Binds `host:port` (port 0 picks a free port; host `::` accepts IPv4 and IPv6) with the
    /// default [`WsConfig`] and starts accepting.
    ///
    /// # Errors
    /// [`Error::Bind`] naming `host:port` when the address cannot be bound.
    pub fn new(conn: WSConnectionConfig, datatype: impl Into<Datatypes<T>>) -> Result<Self> {
        Self::with_config(conn, datatype, WsConfig::default())
    }

    /// Like [`new`](Self::new) with a custom config.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid `cfg`; [`Error::Bind`] when the address cannot be bound.
    pub fn with_config(
        conn: WSConnectionConfig,
        datatype: impl Into<Datatypes<T>>,
        cfg: WsConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        let configured = || format!("RxWSServer:{}", conn.authority());
        let listener = bind(&conn).map_err(|e| Error::Bind {
            component: cfg.name.clone().unwrap_or_else(configured).into(),
            addr: conn.authority(),
            source: Arc::new(e),
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io(&cfg.name.clone().unwrap_or_else(configured), None, e))?;
        // Port 0 means "any": then the name carries the address actually bound.
        let name: Arc<str> = match &cfg.name {
            Some(n) => n.clone(),
            None if conn.port() == 0 => format!("RxWSServer:{local_addr}"),
            None => configured(),
        }
        .into();
        let (conn_done_tx, conn_done_rx) = bounded(cfg.max_connections);
        let inner = Arc::new(Inner {
            core: Core::new(
                name.clone(),
                cfg.thread_stack_size,
                cfg.stream_capacity,
                None,
            ),
            events: Subject::new(name.to_string(), cfg.stream_capacity),
            cfg,
            local_addr,
            datatypes: datatype.into(),
            registry: RwLock::new(Registry {
                paths: HashMap::new(),
                by_id: HashMap::new(),
            }),
            conn_done_tx,
            conn_done_rx,
            completing: AtomicBool::new(false),
            path_counters: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&inner);
        inner
            .core
            .threads
            .spawn("rxws-server-accept".into(), move || {
                accept_loop(weak, listener)
            })?;
        log::info!(component = &*name, addr:% = local_addr; "{}", event::SERVER_STARTED);
        Ok(RxWSServer { inner })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The component's name, e.g. `RxWSServer:127.0.0.1:9001`.
    pub fn name(&self) -> &str {
        &self.inner.core.name
    }

    /// A weak, cloneable handle for use inside callbacks.
    pub fn handle(&self) -> ServerHandle<T> {
        ServerHandle {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Subscribes to inbound items. Dropping the returned [`Subscription`] unsubscribes.
    pub fn subscribe(&self, observer: impl Observer<TaggedData<T>> + 'static) -> Subscription {
        self.inner.core.inbound.subscribe(Box::new(observer))
    }

    /// Inbound items as a bounded crossbeam receiver (`WsConfig::stream_capacity`). A full
    /// receiver slows the connections feeding it; dropping it unsubscribes.
    pub fn stream(&self) -> Receiver<Notification<TaggedData<T>>> {
        self.inner.core.inbound.stream()
    }

    /// Connection opened/closed events.
    pub fn subscribe_events(
        &self,
        observer: impl Observer<ConnectionEvent> + 'static,
    ) -> Subscription {
        self.inner.events.subscribe(Box::new(observer))
    }

    /// Non-fatal errors (an item that cannot be encoded, a reply to a connection that is gone).
    pub fn subscribe_errors(&self, observer: impl Observer<Error> + 'static) -> Subscription {
        self.inner.core.errors.subscribe(Box::new(observer))
    }

    /// A crossbeam sender of outbound items, forwarded by a `rxws-server-sink` thread.
    ///
    /// # Errors
    /// [`Error::AlreadyClosed`] after dispose.
    pub fn sink(&self) -> Result<Sender<TaggedData<T>>> {
        let weak = Arc::downgrade(&self.inner);
        self.inner.core.sink("server", move |item| {
            if let Some(inner) = weak.upgrade() {
                let _ = inner.send(item);
            }
        })
    }

    /// Sends one item, reporting failures directly instead of on the errors stream.
    ///
    /// # Errors
    /// [`Error::Encode`] when the path's datatype refuses the item; [`Error::AlreadyClosed`]
    /// after completion.
    pub fn send(&self, item: TaggedData<T>) -> Result<()> {
        self.inner.send(item)
    }

    /// Sends one item (errors go to the errors stream).
    pub fn on_next(&self, item: TaggedData<T>) {
        self.inner.on_next(item)
    }

    /// Graceful shutdown: stops accepting, flushes and closes every connection with a close
    /// handshake (bounded by `close_timeout`), completes subscribers, then disposes.
    pub fn on_completed(&self) {
        self.inner.complete(Notification::Completed)
    }

    /// Fails subscribers with `error`, closes every connection, then disposes.
    pub fn on_error(&self, error: Error) {
        self.inner.complete(Notification::Error(error))
    }

    /// Stops everything now and joins every thread the server started (bounded, about 2 s even
    /// with unresponsive peers). Idempotent; safe from any thread, including a callback.
    pub fn dispose(&self) {
        self.inner.dispose()
    }

    /// Connections open now.
    pub fn connection_count(&self) -> usize {
        self.inner.registry.read().by_id.len()
    }

    /// Connection ids open on `path`.
    pub fn connections(&self, path: &str) -> Vec<ConnId> {
        let reg = self.inner.registry.read();
        reg.paths
            .get(path)
            .map(|p| p.conns.iter().map(|c| c.info.id).collect())
            .unwrap_or_default()
    }

    /// Counters, summed over every path.
    pub fn stats(&self) -> StatsSnapshot {
        // The server counts per path; anything counted on the component itself is included.
        let mut s = self.inner.core.stats.snapshot();
        for t in self.inner.path_counters.lock().values() {
            s += t.stats.snapshot();
        }
        s
    }

    /// Threads the server is running now (accept, and reader + writer per connection).
    pub fn thread_count(&self) -> usize {
        self.inner.core.threads.live_count()
    }
}

impl<T: Clone + Send + 'static> Drop for RxWSServer<T> {
    fn drop(&mut self) {
        self.inner.dispose();
    }
}

impl<T: Clone + Send + 'static> Observer<TaggedData<T>> for RxWSServer<T> {
    fn on_next(&self, item: TaggedData<T>) {
        self.inner.on_next(item)
    }
    fn on_error(&self, error: Error) {
        RxWSServer::on_error(self, error)
    }
    fn on_completed(&self) {
        RxWSServer::on_completed(self)
    }
}

impl<T: Clone + Send + 'static> ServerHandle<T> {
    /// See [`RxWSServer::on_next`].
    pub fn on_next(&self, item: TaggedData<T>) {
        if let Some(i) = self.inner.upgrade() {
            i.on_next(item)
        }
    }
    /// See [`RxWSServer::send`].
    ///
    /// # Errors
    /// As [`RxWSServer::send`]; [`Error::AlreadyClosed`] when the server is gone.
    pub fn send(&self, item: TaggedData<T>) -> Result<()> {
        match self.inner.upgrade() {
            Some(i) => i.send(item),
            None => Err(Error::AlreadyClosed {
                component: "RxWSServer".into(),
            }),
        }
    }
    /// See [`RxWSServer::on_completed`].
    pub fn on_completed(&self) {
        if let Some(i) = self.inner.upgrade() {
            i.complete(Notification::Completed)
        }
    }
    /// See [`RxWSServer::dispose`].
    pub fn dispose(&self) {
        if let Some(i) = self.inner.upgrade() {
            i.dispose()
        }
    }
}

impl<T: Clone + Send + 'static> Observer<TaggedData<T>> for ServerHandle<T> {
    fn on_next(&self, item: TaggedData<T>) {
        ServerHandle::on_next(self, item)
    }
    fn on_error(&self, error: Error) {
        if let Some(i) = self.inner.upgrade() {
            i.complete(Notification::Error(error))
        }
    }
    fn on_completed(&self) {
        ServerHandle::on_completed(self)
    }
}

fn bind(conn: &WSConnectionConfig) -> std::io::Result<TcpListener> {
    // Bracket-free IPv6 literals ("::") parse as IpAddr; names go through the resolver.
    match conn.host().parse::<IpAddr>() {
        Ok(ip) => TcpListener::bind(SocketAddr::new(ip, conn.port())),
        Err(_) => TcpListener::bind((conn.host(), conn.port())),
    }
}

impl<T: Clone + Send + 'static> Inner<T> {
    fn on_next(&self, item: TaggedData<T>) {
        if let Err(e) = self.send(item) {
            self.core.report(e);
        }
    }

    fn send(&self, item: TaggedData<T>) -> Result<()> {
        if self.core.threads.is_stopping() || self.completing.load(Ordering::Acquire) {
            self.counters(&item.tag)
                .stats
                .dropped
                .fetch_add(1, Ordering::Relaxed);
            return Err(Error::AlreadyClosed {
                component: Box::from(&*self.core.name),
            });
        }
        // One registry read: the path's datatype and the recipients (one connection, or a
        // snapshot of the path's connections, so no lock is held while a send may block).
        let (datatype, recipients) = {
            let reg = self.registry.read();
            let entry = reg.paths.get(&*item.tag);
            let datatype = match entry {
                Some(p) => p.datatype.clone(),
                None => self.datatypes.for_path(&item.tag),
            };
            let recipients = match item.conn {
                Some(id) => Recipients::One(id, reg.by_id.get(&id).map(|(_, c)| c.clone())),
                None => Recipients::Path(entry.map(|p| p.conns.clone())),
            };
            (datatype, recipients)
        };
        let msg = datatype.encode(item.data).map_err(|reason| {
            self.counters(&item.tag)
                .stats
                .encode_errors
                .fetch_add(1, Ordering::Relaxed);
            Error::Encode {
                component: Box::from(&*self.core.name),
                datatype: datatype.name(),
                reason,
            }
        })?;
        match recipients {
            Recipients::One(_, Some(c)) => {
                log::debug!(component = &*self.core.name, conn_id:% = c.info.id, path = &*item.tag, bytes = msg.len(); "{}", event::MESSAGE_SENT);
                c.send(msg);
            }
            Recipients::One(id, None) => {
                self.counters(&item.tag)
                    .stats
                    .dropped
                    .fetch_add(1, Ordering::Relaxed);
                log::debug!(component = &*self.core.name, conn_id:% = id, path = &*item.tag, reason = "connection is gone", count = 1; "{}", event::MESSAGE_DROPPED);
            }
            Recipients::Path(Some(conns)) => match conns.split_last() {
                Some((only, [])) => {
                    log::debug!(component = &*self.core.name, conn_id:% = only.info.id, path = &*item.tag, bytes = msg.len(); "{}", event::MESSAGE_SENT);
                    only.send(msg);
                }
                // Fan-out is queued: each connection's writer thread writes in parallel.
                Some((last, rest)) => {
                    log::debug!(component = &*self.core.name, path = &*item.tag, recipients = conns.len(), bytes = msg.len(); "{}", event::MESSAGE_SENT);
                    for c in rest {
                        c.enqueue(msg.clone());
                    }
                    last.enqueue(msg);
                }
                None => {}
            },
            Recipients::Path(None) => {}
        }
        Ok(())
    }

    /// The counters of `path` (created on first use; beyond [`MAX_METRIC_PATHS`] paths, the
    /// shared [`OTHER_PATH`] ones). Not on the per-message path: once per connection, and
    /// when a send fails.
    fn counters(&self, path: &str) -> Tracked {
        let mut map = self.path_counters.lock();
        if let Some(t) = map.get(path) {
            return t.clone();
        }
        let key = if map.len() < MAX_METRIC_PATHS {
            path
        } else {
            if let Some(t) = map.get(OTHER_PATH) {
                return t.clone();
            }
            log::warn!(component = &*self.core.name, path, limit = MAX_METRIC_PATHS; "{}", event::PATH_LIMIT);
            OTHER_PATH
        };
        let t = telemetry::track(
            Arc::new(Stats::default()),
            Kind::Server,
            &self.core.name,
            Some(key),
            self.cfg.outbound_overflow.name(),
        );
        map.insert(Arc::from(key), t.clone());
        t
    }

    /// Adds a connection to its path; returns the path's datatype, or None when full.
    fn register(&self, path: &str, handle: Arc<ConnHandle>) -> Option<Arc<dyn Datatype<T>>> {
        let mut reg = self.registry.write();
        if reg.by_id.len() >= self.cfg.max_connections {
            return None;
        }
        let datatypes = &self.datatypes;
        let entry = reg
            .paths
            .entry(path.to_owned())
            .or_insert_with(|| PathEntry {
                datatype: datatypes.for_path(path),
                conns: Arc::new(Vec::new()),
            });
        let mut v = Vec::with_capacity(entry.conns.len() + 1);
        v.extend(entry.conns.iter().cloned());
        v.push(handle.clone());
        entry.conns = Arc::new(v);
        let datatype = entry.datatype.clone();
        reg.by_id.insert(handle.info.id, (path.to_owned(), handle));
        Some(datatype)
    }

    fn unregister(&self, id: ConnId) {
        let mut reg = self.registry.write();
        if let Some((path, _)) = reg.by_id.remove(&id) {
            let now_empty = match reg.paths.get_mut(&path) {
                Some(entry) => {
                    let v: Vec<_> = entry
                        .conns
                        .iter()
                        .filter(|c| c.info.id != id)
                        .cloned()
                        .collect();
                    entry.conns = Arc::new(v);
                    entry.conns.is_empty()
                }
                None => false,
            };
            if now_empty {
                reg.paths.remove(&path);
            }
        }
    }

    fn all_conns(&self) -> Vec<Arc<ConnHandle>> {
        self.registry
            .read()
            .by_id
            .values()
            .map(|(_, c)| c.clone())
            .collect()
    }

    fn complete(&self, n: Notification<TaggedData<T>>) {
        if self.completing.swap(true, Ordering::AcqRel) || self.core.threads.is_stopping() {
            self.dispose();
            return;
        }
        log::info!(component = &*self.core.name; "{}", event::COMPLETING);
        self.wake_accept();
        let conns = self.all_conns();
        let code = match n {
            Notification::Error(_) => CloseCode::Error,
            _ => CloseCode::Normal,
        };
        for c in &conns {
            c.close(Some(CloseFrame {
                code,
                reason: "".into(),
            }));
        }
        // Wait (bounded) for the close handshakes; a callback on our own thread cannot wait
        // for its own connection, so it skips this.
        if !self.core.threads.on_own_thread() {
            let deadline = Instant::now() + self.cfg.close_timeout + Duration::from_millis(200);
            while !self.registry.read().by_id.is_empty() {
                if self.conn_done_rx.recv_deadline(deadline).is_err() {
                    break;
                }
            }
        }
        self.core.terminate(n);
        self.events.terminate(Notification::Completed);
        self.dispose();
    }

    fn dispose(&self) {
        if !self.core.threads.begin_stop() {
            self.core.threads.wait_stopped();
            return;
        }
        self.core.abort_subjects();
        self.events.abort();
        self.wake_accept();
        for c in self.all_conns() {
            c.abort();
        }
        self.core.threads.join_all();
        self.core.terminate(Notification::Completed);
        self.events.terminate(Notification::Completed);
        log::info!(component = &*self.core.name; "{}", event::SERVER_STOPPED);
    }

    /// Unblocks the accept thread's `accept()` by connecting to our own listener.
    fn wake_accept(&self) {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(500));
    }
}

fn accept_loop<T: Clone + Send + 'static>(weak: Weak<Inner<T>>, listener: TcpListener) {
    for stream in listener.incoming() {
        let Some(inner) = weak.upgrade() else { return };
        if inner.core.threads.is_stopping() || inner.completing.load(Ordering::Acquire) {
            return;
        }
        match stream {
            Ok(sock) => {
                let seq = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
                let w = weak.clone();
                let res = inner
                    .core
                    .threads
                    .spawn(format!("rxws-conn-{seq}-read"), move || {
                        serve_conn(w, sock, seq)
                    });
                if let Err(e) = res {
                    log::warn!(component = &*inner.core.name, error:% = e; "{}", event::CONNECTION_SETUP_FAILED);
                }
            }
            Err(e) => {
                log::warn!(component = &*inner.core.name, error:% = e; "{}", event::ACCEPT_FAILED);
                drop(inner);
                // Out of file descriptors and the like: back off instead of spinning.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn reply_http(sock: &TcpStream, response: &str) {
    let mut s = sock;
    let _ = s.write_all(response.as_bytes());
    let _ = s.flush();
    let _ = sock.shutdown(Shutdown::Write);
}

fn serve_conn<T: Clone + Send + 'static>(weak: Weak<Inner<T>>, sock: TcpStream, seq: u64) {
    let Some(inner) = weak.upgrade() else { return };
    let name = inner.core.name.clone();
    let peer = match sock.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let _ = sock.set_nodelay(true);
    let _ = sock.set_read_timeout(Some(inner.cfg.handshake_timeout));
    let _ = sock.set_write_timeout(Some(inner.cfg.handshake_timeout));
    let Ok(raw) = sock.try_clone() else { return };
    if inner.registry.read().by_id.len() >= inner.cfg.max_connections {
        log::warn!(component = &*name, peer:% = peer, limit = inner.cfg.max_connections; "{}", event::CONNECTION_REFUSED);
        reply_http(&raw, UNAVAILABLE);
        return;
    }
    let started = Instant::now();
    let mut path = String::from("/");
    // The callback's signature is tungstenite's (its error type is a full HTTP response).
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    let ws = match tungstenite::accept_hdr_with_config(
        HalfStream::new(sock),
        callback,
        Some(inner.cfg.tungstenite()),
    ) {
        Ok(ws) => ws,
        Err(HandshakeError::Failure(e)) => {
            let not_upgrade = matches!(
                e,
                tungstenite::Error::Protocol(
                    ProtocolError::MissingConnectionUpgradeHeader
                        | ProtocolError::MissingUpgradeWebSocketHeader
                        | ProtocolError::WrongHttpMethod
                )
            );
            let elapsed = started.elapsed();
            let duration_ms = elapsed.as_secs_f64() * 1e3;
            if matches!(e, tungstenite::Error::Io(_)) {
                log::debug!(component = &*name, peer:% = peer, error:% = e, duration_ms; "{}", event::HANDSHAKE_FAILED);
            } else if not_upgrade {
                log::info!(component = &*name, peer:% = peer, error = "not a WebSocket upgrade", status = 426, duration_ms; "{}", event::HANDSHAKE_FAILED);
                reply_http(&raw, UPGRADE_REQUIRED);
            } else {
                log::info!(component = &*name, peer:% = peer, error:% = e, status = 400, duration_ms; "{}", event::HANDSHAKE_FAILED);
                reply_http(&raw, BAD_REQUEST);
            }
            telemetry::record_handshake(&name, Outcome::Failed, elapsed);
            return;
        }
        Err(HandshakeError::Interrupted(_)) => {
            let elapsed = started.elapsed();
            log::info!(component = &*name, peer:% = peer, duration_ms = elapsed.as_secs_f64() * 1e3; "{}", event::HANDSHAKE_TIMED_OUT);
            telemetry::record_handshake(&name, Outcome::Timeout, elapsed);
            let _ = raw.shutdown(Shutdown::Both);
            return;
        }
    };
    let handshake = started.elapsed();
    // The handshake is done: from here on, reads block without a timeout (full duplex).
    let _ = raw.set_read_timeout(None);
    let _ = raw.set_write_timeout(None);
    if inner.core.threads.is_stopping() {
        return;
    }
    let info = ConnInfo {
        id: ConnId::new(),
        seq,
        peer,
    };
    let counters = inner.counters(&path);
    counters.record_handshake(Outcome::Ok, handshake);
    log::info!(component = &*name, conn_id:% = info.id, path = path.as_str(), peer:% = peer, duration_ms = handshake.as_secs_f64() * 1e3; "{}", event::HANDSHAKE_COMPLETED);
    let params = ConnParams {
        role: Role::Server,
        ping_interval: inner.cfg.ping_interval,
        ping_timeout: inner.cfg.ping_timeout,
        close_timeout: inner.cfg.close_timeout,
        keep_unsent: false,
        ws: inner.cfg.tungstenite(),
    };
    let (run, handle) = match ConnRun::new(
        ws,
        info.clone(),
        name.clone(),
        Outbound::PerConnection {
            strategy: inner.cfg.outbound_overflow,
            capacity: inner.cfg.outbound_capacity,
            max_bytes: inner.cfg.outbound_max_bytes,
        },
        params,
        counters.stats.clone(),
    ) {
        Ok(x) => x,
        Err(e) => {
            log::warn!(component = &*name, peer:% = peer, error:% = e; "{}", event::CONNECTION_SETUP_FAILED);
            return;
        }
    };
    // Shared by every inbound item of this connection (a reference count, not an allocation).
    let tag: Arc<str> = Arc::from(path.as_str());
    let Some(datatype) = inner.register(&path, handle.clone()) else {
        handle.abort();
        return;
    };
    counters
        .stats
        .connections_opened
        .fetch_add(1, Ordering::Relaxed);
    log::info!(component = &*name, conn_id:% = info.id, path = path.as_str(), peer:% = peer; "{}", event::CONNECTION_OPENED);
    inner.events.next(ConnectionEvent {
        kind: ConnectionEventKind::Opened,
        id: info.id,
        path: path.clone(),
        peer,
    });
    let threads = inner.core.threads.clone();
    let inbound = inner.core.inbound.clone();
    let stats = counters.stats;
    // Hold only a weak reference while running, so dropping the server is never blocked by us.
    drop(inner);
    let id = info.id;
    let end = run.run(&threads, |msg| {
        log::debug!(component = &*name, conn_id:% = id, path = path.as_str(), bytes = msg.len(); "{}", event::MESSAGE_RECEIVED);
        match datatype.decode(msg) {
            Ok(data) => inbound.next(TaggedData {
                tag: tag.clone(),
                data,
                conn: Some(id),
            }),
            Err(reason) => {
                stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                log::warn!(component = &*name, conn_id:% = id, path = path.as_str(), datatype = datatype.name(), error = reason.as_str(); "{}", event::DECODE_ERROR);
            }
        }
    });
    handle.abort();
    let Some(inner) = weak.upgrade() else { return };
    inner.unregister(id);
    stats.connections_closed.fetch_add(1, Ordering::Relaxed);
    log::info!(component = &*name, conn_id:% = id, path = path.as_str(), peer:% = peer, reason:? = end.reason; "{}", event::CONNECTION_CLOSED);
    inner.events.next(ConnectionEvent {
        kind: ConnectionEventKind::Closed,
        id,
        path,
        peer,
    });
    let _ = inner.conn_done_tx.try_send(());
}
