//! [`RxWSServer`]: accepts WebSocket connections on any path and turns them into a stream of
//! `TaggedData(path, item)`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::{Mutex, RwLock};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

use crate::component::{front_end, Core, Endpoint};
use crate::error::{Context, Error, Result, SendError};
use crate::reactive::{Notification, Subject, Subscription};
use crate::stats::{Stats, StatsSnapshot};
use crate::telemetry::{self, event, Kind, Tracked};
use crate::ws::broker::Broker;
use crate::ws::conn::{BurstClock, ConnHandle, InboundBudget, SendRole};
use crate::ws::datatype::{Datatype, Datatypes};
use crate::ws::listen::{self, accept_loop, Handshakes};
use crate::ws::outbound::Refused;
use crate::ws::{check_close, ConnId, ConnectionEvent, Tag, TaggedData, WSConfig};

mod accept;

/// Distinct paths a server counts apart (for metrics' `path` attribute); further paths share
/// one set of counters under [`OTHER_PATH`].
const MAX_METRIC_PATHS: usize = 256;
/// Largest fan-out whose bursts are queued for the connections' writer threads (batching in
/// parallel); larger ones are written by the broadcasting thread, so a server with thousands
/// of connections does not start a thread per connection for a burst.
const FANOUT_WRITERS: usize = 256;

/// Paths without a local connection whose datatype a server with a broker remembers (it
/// encodes their broadcasts for the other instances); past it, the chooser runs per message.
const MAX_REMOTE_PATHS: usize = 1024;

/// The path attribute of the shared counters (a real path starts with `/`).
const OTHER_PATH: &str = "_other";

/// A WebSocket server: a subject of `TaggedData<T>` in both directions.
///
/// * Inbound: every data message received on any connection, decoded by the path's datatype, is
///   emitted as `TaggedData { tag: path, data, conn: Some(id) }`.
/// * Outbound: `on_next(TaggedData { tag: path, data, conn: None })` goes to every connection
///   open on `path`; with `conn: Some(id)` to exactly that connection (see
///   [`TaggedData::reply`]).
///
/// With a [`broker`](WSConfig::broker) (scale-out), path broadcasts are also published for the
/// other instances, and theirs reach this server's connections (see [`crate::ws::broker`]).
///
/// Threads: one accept thread, one timer thread (heartbeats, joining ended threads), one reader
/// per connection, a writer per connection only while it has a backlog, and the broker's. Callbacks run on the
/// reader thread of the connection the item came from. `dispose()` (also run by `Drop`) joins
/// them all.
///
/// # About handles
/// `RxWSServer` owns the server; dropping it disposes. [`handle`](Self::handle) gives a cheap,
/// cloneable [`ServerHandle`] (a weak reference) to use inside callbacks without a cycle.
///
/// ```no_run
/// use rxplus::ws::{RxWSServer, Text};
///
/// let server = RxWSServer::<String>::bind("127.0.0.1:0", Text)?;
/// let h = server.handle();
/// // Echo every message to the connection it came from.
/// server.subscribe(move |m| h.on_next(m.reply(m.data.clone())));
/// println!("listening on {}", server.local_addr());
/// # Ok::<(), rxplus::Error>(())
/// ```
pub struct RxWSServer<T: Clone + Send + 'static> {
    inner: Arc<Inner<T>>,
}

front_end!(
    RxWSServer,
    ServerHandle,
    Inner,
    TaggedData<T>,
    TaggedData<T>
);

struct PathEntry<T> {
    datatype: Arc<dyn Datatype<T>>,
    conns: Arc<Vec<Arc<ConnHandle>>>,
}

/// Who an outbound item goes to, looked up under one registry read.
enum Recipients {
    One(Arc<ConnHandle>),
    Path(Arc<Vec<Arc<ConnHandle>>>),
}

struct Registry<T> {
    paths: HashMap<String, PathEntry<T>>,
    by_id: HashMap<ConnId, (String, Arc<ConnHandle>)>,
}

struct Inner<T: Clone + Send + 'static> {
    core: Core<TaggedData<T>>,
    cfg: WSConfig,
    local_addr: SocketAddr,
    datatypes: Datatypes<T>,
    registry: RwLock<Registry<T>>,
    events: Arc<Subject<ConnectionEvent>>,
    // Each connection thread signals here when it ends; on_completed waits on it.
    conn_done_tx: Sender<()>,
    conn_done_rx: Receiver<()>,
    completing: AtomicBool,
    /// The close code and reason `on_completed_with` asked for.
    close_with: Mutex<Option<(u16, String)>>,
    /// Broadcasts back to back (see `send`).
    fanout: BurstClock,
    /// Counters per path, kept for the server's life (cumulative across connections); their
    /// sum is `stats()`. See [`MAX_METRIC_PATHS`].
    path_counters: Mutex<HashMap<Arc<str>, Tracked>>,
    /// Shared by every connection: see [`WSConfig::inbound_budget`].
    budget: Arc<InboundBudget>,
    /// Connections accepted and not yet registered: see [`WSConfig::max_handshakes`].
    handshakes: Handshakes,
    /// The accept thread's listener, while it runs (to wake it when a connection cannot be
    /// made to it).
    listener: Weak<TcpListener>,
    /// The scale-out broker, if configured.
    broker: Option<Arc<dyn Broker>>,
    /// Datatypes of paths broadcast to with no local connection (broker only; bounded by
    /// [`MAX_REMOTE_PATHS`]).
    remote_datatypes: Mutex<HashMap<Tag, Arc<dyn Datatype<T>>>>,
}

impl<T: Clone + Send + 'static> RxWSServer<T> {
    /// Binds `addr` (`host:port`; port 0 picks a free port; `[::]:port` accepts IPv4 and IPv6)
    /// with the default [`WSConfig`] and starts accepting, on every path.
    ///
    /// # Errors
    /// [`Error::Config`] for an address that is not `host:port`; [`Error::Bind`] naming it when
    /// it cannot be bound.
    pub fn bind(addr: &str, datatype: impl Into<Datatypes<T>>) -> Result<Self> {
        Self::bind_with_config(addr, datatype, WSConfig::default())
    }

    /// Like [`bind`](Self::bind) with a custom config.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid `cfg` or address; [`Error::Bind`] when the address
    /// cannot be bound.
    pub fn bind_with_config(
        addr: &str,
        datatype: impl Into<Datatypes<T>>,
        cfg: WSConfig,
    ) -> Result<Self> {
        Self::bind_with_setup(addr, datatype, cfg, |_| {})
    }

    /// Binds, runs `setup` on the server, then starts accepting: subscribe there, and no
    /// connection's first message or `Opened` event can arrive before your subscribers.
    /// Peers that connect meanwhile wait in the listen backlog.
    ///
    /// ```no_run
    /// use rxplus::ws::{RxWSServer, TaggedData, Text, WSConfig};
    ///
    /// let server = RxWSServer::<String>::bind_with_setup("127.0.0.1:0", Text, WSConfig::default(), |s| {
    ///     s.subscribe(|m: TaggedData<String>| println!("{}: {}", m.tag, m.data));
    ///     s.subscribe_events(|e| println!("{e:?}"));
    /// })?;
    /// # Ok::<(), rxplus::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`bind_with_config`](Self::bind_with_config).
    pub fn bind_with_setup(
        addr: &str,
        datatype: impl Into<Datatypes<T>>,
        cfg: WSConfig,
        setup: impl FnOnce(&Self),
    ) -> Result<Self> {
        cfg.validate()?;
        let configured = || format!("RxWSServer:{addr}");
        let listener = bind(addr, cfg.listen_backlog).map_err(|e| match e {
            BindError::Addr(reason) => Error::config("addr", format!("{addr:?}: {reason}")),
            BindError::Io(e) => Error::Bind {
                ctx: Context::new(&cfg.name.clone().unwrap_or_else(configured), None),
                addr: addr.to_owned(),
                source: Arc::new(e),
            },
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io(&cfg.name.clone().unwrap_or_else(configured), None, e))?;
        // Port 0 means "any": then the name carries the address actually bound.
        let name: Arc<str> = match &cfg.name {
            Some(n) => n.clone(),
            None if addr.ends_with(":0") => format!("RxWSServer:{local_addr}"),
            None => configured(),
        }
        .into();
        let listener = Arc::new(listener);
        let (conn_done_tx, conn_done_rx) = bounded(cfg.max_connections);
        let cfg_budget = cfg.inbound_budget;
        let broker = cfg.broker.as_ref().map(|b| b.0.clone());
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
            close_with: Mutex::new(None),
            fanout: BurstClock::default(),
            path_counters: Mutex::new(HashMap::new()),
            budget: InboundBudget::new(name.clone(), cfg_budget),
            handshakes: Handshakes::default(),
            listener: Arc::downgrade(&listener),
            broker,
            remote_datatypes: Mutex::new(HashMap::new()),
        });
        let server = RxWSServer { inner };
        // Joins connection threads as they end (and runs heartbeats).
        server.inner.core.threads.start_timer()?;
        setup(&server);
        if let Some(broker) = &server.inner.broker {
            let weak = Arc::downgrade(&server.inner);
            broker.start(
                &name,
                Box::new(move |path, msg| {
                    if let Some(inner) = weak.upgrade() {
                        inner.deliver_remote(path, msg);
                    }
                }),
            )?;
        }
        let weak = Arc::downgrade(&server.inner);
        server
            .inner
            .core
            .threads
            .spawn("rxws-server-accept".into(), move || {
                accept_loop(weak, listener)
            })?;
        log::info!(component = &*name, addr:% = local_addr; "{}", event::SERVER_STARTED);
        Ok(server)
    }

    /// Closes connection `id` with `code` and `reason`: the close frame goes after what is
    /// already queued for it, the close handshake completes (bounded by `close_timeout`), and
    /// a `Closed` event follows with that code. The other connections are untouched.
    ///
    /// # Errors
    /// [`Error::Config`] for a code an application may not send (see [`check_close`]);
    /// [`Error::NoConnection`] when `id` is not open.
    pub fn close(&self, id: ConnId, code: u16, reason: &str) -> Result<()> {
        self.inner.close_conn(id, code, reason)
    }

    /// [`on_completed`](Self::on_completed) with this close code and reason for every
    /// connection (instead of 1000).
    ///
    /// # Errors
    /// [`Error::Config`] for a code an application may not send; nothing is closed then.
    pub fn on_completed_with(&self, code: u16, reason: &str) -> Result<()> {
        check_close(code, reason)?;
        *self.inner.close_with.lock() = Some((code, reason.to_owned()));
        self.on_completed();
        Ok(())
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Connection opened/closed events.
    pub fn subscribe_events(
        &self,
        f: impl Fn(ConnectionEvent) + Send + Sync + 'static,
    ) -> Subscription {
        self.inner.events.subscribe(Box::new(f))
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

    /// Bytes of partial inbound messages held against the server's
    /// [`inbound_budget`](WSConfig::inbound_budget) now, and the most held at once so far.
    pub fn inbound_buffered(&self) -> (usize, usize) {
        self.inner.budget.usage()
    }

    /// Threads the server is running now (accept, timer, a reader per connection, writers of
    /// connections with a backlog).
    pub fn thread_count(&self) -> usize {
        self.inner.core.threads.live_count()
    }
}

enum BindError {
    Addr(&'static str),
    Io(std::io::Error),
}

/// Binds `host:port` and listens with `backlog`: IP literals directly (`[::]:0`), names
/// through the resolver.
fn bind(addr: &str, backlog: u32) -> std::result::Result<TcpListener, BindError> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return listen::listen(sa, backlog).map_err(BindError::Io);
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or(BindError::Addr("expected host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| BindError::Addr("port must be 0..=65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(BindError::Addr("empty host"));
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => listen::listen(SocketAddr::new(ip, port), backlog),
        Err(_) => listen::listen_any((host, port), backlog),
    }
    .map_err(BindError::Io)
}

impl<T: Clone + Send + 'static> ServerHandle<T> {
    /// [`RxWSServer::close`] through the handle.
    ///
    /// # Errors
    /// As [`RxWSServer::close`]; [`Error::AlreadyClosed`] once the server is gone.
    pub fn close(&self, id: ConnId, code: u16, reason: &str) -> Result<()> {
        match self.inner.upgrade() {
            Some(inner) => inner.close_conn(id, code, reason),
            None => Err(Error::closed("RxWSServer")),
        }
    }
}

impl<T: Clone + Send + 'static> Endpoint for Inner<T> {
    type In = TaggedData<T>;
    type Out = TaggedData<T>;
    const KIND: &'static str = "server";

    fn core(&self) -> &Core<TaggedData<T>> {
        &self.core
    }

    fn send(&self, item: TaggedData<T>) -> std::result::Result<(), SendError<TaggedData<T>>> {
        if self.core.threads.is_stopping() || self.completing.load(Ordering::Acquire) {
            self.counters(&item.tag)
                .stats
                .dropped
                .fetch_add(1, Ordering::Relaxed);
            return Err(SendError::new(self.core.closed(), Some(item)));
        }
        // One registry read: the recipients (one connection, or a snapshot of the path's
        // connections, so no lock is held while a send may block) and their path's datatype,
        // chosen when the path's first connection opened. No connection: nothing to encode.
        let found = {
            let reg = self.registry.read();
            match item.conn {
                Some(id) => reg.by_id.get(&id).and_then(|(path, c)| {
                    let dt = reg.paths.get(path)?.datatype.clone();
                    Some((dt, Recipients::One(c.clone())))
                }),
                None => reg
                    .paths
                    .get(&*item.tag)
                    .map(|p| (p.datatype.clone(), Recipients::Path(p.conns.clone()))),
            }
        };
        let publish = item.conn.is_none() && self.broker.is_some();
        let Some((datatype, recipients)) = found else {
            if publish {
                return self.publish_only(item);
            }
            self.counters(&item.tag)
                .stats
                .dropped
                .fetch_add(1, Ordering::Relaxed);
            let target = item
                .conn
                .map_or_else(|| item.tag.to_string(), |id| id.to_string());
            log::debug!(component = &*self.core.name, target = target.as_str(), path = &*item.tag, reason = "no open connection", count = 1; "{}", event::MESSAGE_DROPPED);
            let err = Error::NoConnection {
                ctx: Context::new(&self.core.name, Some(target)),
            };
            return Err(SendError::new(err, Some(item)));
        };
        let tag = item.tag;
        let msg = self.encode(&datatype, &tag, item.data)?;
        if publish {
            // Counted and logged by the broker when it does not take it; local delivery goes on.
            if let Some(broker) = &self.broker {
                let _not_taken_is_counted = broker.publish(&tag, &msg);
            }
        }
        match recipients {
            Recipients::One(c) => {
                log::debug!(component = &*self.core.name, conn_id:% = c.info.id, path = &*tag, bytes = msg.len(); "{}", event::MESSAGE_SENT);
                c.send(msg, SendRole::Shared)
                    .map_err(|r| SendError::new(self.refused(&c, r), None))
            }
            Recipients::Path(conns) => self.fan_out(&tag, msg, &conns),
        }
    }

    fn complete(&self, n: Notification<TaggedData<T>>) {
        if self.completing.swap(true, Ordering::AcqRel) || self.core.threads.is_stopping() {
            self.dispose();
            return;
        }
        log::info!(component = &*self.core.name; "{}", event::COMPLETING);
        self.wake_accept();
        let conns = self.all_conns();
        let (code, reason) = self.close_with.lock().take().unwrap_or(match n {
            Notification::Error(_) => (u16::from(CloseCode::Error), String::new()),
            _ => (u16::from(CloseCode::Normal), String::new()),
        });
        for c in &conns {
            c.close(Some(CloseFrame {
                code: code.into(),
                reason: reason.clone().into(),
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
        if !self.core.begin_dispose() {
            return;
        }
        self.events.abort();
        self.wake_accept();
        self.handshakes.abort_all();
        // Emptied at once, so each ending connection finds nothing to unregister (one by one,
        // 10,000 connections would cost a path list rebuild each).
        let conns: Vec<_> = {
            let mut reg = self.registry.write();
            reg.paths.clear();
            reg.by_id.drain().map(|(_, (_, c))| c).collect()
        };
        // Peers see 1001 (going away) where the socket takes it at once, not 1006.
        for c in &conns {
            c.going_away();
        }
        drop(conns);
        // After the registry is emptied (a remote message finds no connection) and the
        // connections are aborted (a delivery waiting on a full `block` queue is released).
        if let Some(broker) = &self.broker {
            broker.stop();
        }
        self.core.threads.join_all();
        self.core.terminate(Notification::Completed);
        self.events.terminate(Notification::Completed);
        log::info!(component = &*self.core.name; "{}", event::SERVER_STOPPED);
    }
}

impl<T: Clone + Send + 'static> Inner<T> {
    /// Encodes an outbound item with `datatype`; a failure is counted on `tag`.
    fn encode(
        &self,
        datatype: &Arc<dyn Datatype<T>>,
        tag: &str,
        data: T,
    ) -> std::result::Result<Message, SendError<TaggedData<T>>> {
        datatype.encode(data).map_err(|source| {
            self.counters(tag)
                .stats
                .encode_errors
                .fetch_add(1, Ordering::Relaxed);
            let err = Error::Encode {
                ctx: Context::new(&self.core.name, None),
                datatype: datatype.name(),
                source,
            };
            SendError::new(err, None)
        })
    }

    /// One message to every connection of a path (a snapshot of its list).
    fn fan_out(
        &self,
        tag: &str,
        msg: Message,
        conns: &[Arc<ConnHandle>],
    ) -> std::result::Result<(), SendError<TaggedData<T>>> {
        match conns.split_last() {
            Some((only, [])) => {
                log::debug!(component = &*self.core.name, conn_id:% = only.info.id, path = tag, bytes = msg.len(); "{}", event::MESSAGE_SENT);
                only.send(msg, SendRole::Shared)
                    .map_err(|r| SendError::new(self.refused(only, r), None))
            }
            // Fan-out: written on this thread to each connection that takes it at once
            // (no thread starts for an idle connection); queued for the others, by their
            // policy, never waiting on one connection under the server's default. In a
            // burst (broadcasts back to back) to up to FANOUT_WRITERS connections, every
            // message is queued instead: their writer threads send in batches, in
            // parallel. A connection that refuses is counted and logged; the others still
            // get it.
            Some((last, rest)) => {
                log::debug!(component = &*self.core.name, path = tag, recipients = conns.len(), bytes = msg.len(); "{}", event::MESSAGE_SENT);
                let (start, back_to_back) = self.fanout.begin();
                let queue = conns.len() <= FANOUT_WRITERS && back_to_back;
                let give = |c: &Arc<ConnHandle>, m| {
                    let _refused_is_counted = if queue {
                        c.enqueue(m)
                    } else {
                        c.send(m, SendRole::Shared)
                    };
                };
                for c in rest {
                    give(c, msg.clone());
                }
                give(last, msg);
                self.fanout.end(start);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A path broadcast with no local connection, for the other instances only: encoded with
    /// the path's datatype and handed to the broker.
    fn publish_only(
        &self,
        item: TaggedData<T>,
    ) -> std::result::Result<(), SendError<TaggedData<T>>> {
        let Some(broker) = &self.broker else {
            return Ok(());
        };
        // The chooser is user code: it runs outside the lock.
        let known = self.remote_datatypes.lock().get(&item.tag).cloned();
        let datatype = known.unwrap_or_else(|| {
            let d = self.datatypes.for_path(&item.tag);
            let mut map = self.remote_datatypes.lock();
            if map.len() < MAX_REMOTE_PATHS {
                map.insert(item.tag.clone(), d.clone());
            }
            d
        });
        let msg = self.encode(&datatype, &item.tag, item.data)?;
        broker
            .publish(&item.tag, &msg)
            .map_err(|e| SendError::new(e, None))
    }

    /// A path message another instance published: to this server's connections on `path`.
    fn deliver_remote(&self, path: &str, msg: Message) {
        if self.core.threads.is_stopping() {
            return;
        }
        let conns = self
            .registry
            .read()
            .paths
            .get(path)
            .map(|p| p.conns.clone());
        if let Some(conns) = conns {
            // Refusals are counted per connection, like a local broadcast's.
            let _ = self.fan_out(path, msg, &conns);
        }
    }

    /// The error for a message one connection did not take.
    fn refused(&self, c: &ConnHandle, r: Refused) -> Error {
        match r {
            Refused::Overflow => c.overflow_error(),
            Refused::Closed => Error::NoConnection {
                ctx: Context::new(&self.core.name, Some(c.info.id.to_string())),
            },
        }
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
            self.cfg.overflow_for(true).name(),
        );
        map.insert(Arc::from(key), t.clone());
        t
    }

    /// Adds a connection to its path; returns the path's datatype, or None when full.
    fn register(&self, path: &str, handle: Arc<ConnHandle>) -> Option<Arc<dyn Datatype<T>>> {
        // The datatype chooser is user code: it runs before the lock, never under it, so it
        // may call back into the server.
        let known = self
            .registry
            .read()
            .paths
            .get(path)
            .map(|p| p.datatype.clone());
        let chosen = known.unwrap_or_else(|| self.datatypes.for_path(path));
        let mut reg = self.registry.write();
        // Checked under the lock dispose empties the registry with: a connection registered
        // after that would never be aborted.
        if reg.by_id.len() >= self.cfg.max_connections || self.core.threads.is_stopping() {
            return None;
        }
        let entry = reg
            .paths
            .entry(path.to_owned())
            .or_insert_with(|| PathEntry {
                datatype: chosen,
                conns: Arc::new(Vec::new()),
            });
        // In place unless a send holds the list now (then copied: the send keeps its snapshot).
        match Arc::get_mut(&mut entry.conns) {
            Some(v) => v.push(handle.clone()),
            None => {
                let mut v = Vec::with_capacity(entry.conns.len() + 1);
                v.extend(entry.conns.iter().cloned());
                v.push(handle.clone());
                entry.conns = Arc::new(v);
            }
        }
        let datatype = entry.datatype.clone();
        reg.by_id.insert(handle.info.id, (path.to_owned(), handle));
        Some(datatype)
    }

    fn unregister(&self, id: ConnId) {
        let mut reg = self.registry.write();
        if let Some((path, _)) = reg.by_id.remove(&id) {
            let now_empty = match reg.paths.get_mut(&path) {
                Some(entry) => {
                    match Arc::get_mut(&mut entry.conns) {
                        Some(v) => v.retain(|c| c.info.id != id),
                        None => {
                            let v: Vec<_> = entry
                                .conns
                                .iter()
                                .filter(|c| c.info.id != id)
                                .cloned()
                                .collect();
                            entry.conns = Arc::new(v);
                        }
                    }
                    entry.conns.is_empty()
                }
                None => false,
            };
            if now_empty {
                reg.paths.remove(&path);
            }
        }
    }

    /// Closes one connection with `code` and `reason` after what is queued for it.
    fn close_conn(&self, id: ConnId, code: u16, reason: &str) -> Result<()> {
        check_close(code, reason)?;
        let conn = self.registry.read().by_id.get(&id).map(|(_, c)| c.clone());
        let Some(c) = conn else {
            return Err(Error::NoConnection {
                ctx: Context::new(&self.core.name, Some(id.to_string())),
            });
        };
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.to_owned().into(),
        };
        // A writer that cannot take the request now (stuck on a peer that stopped reading):
        // the frame goes only if the socket takes it at once, and the connection is cut.
        if !c.close(Some(frame)) {
            c.close_now(code, reason);
        }
        Ok(())
    }

    fn all_conns(&self) -> Vec<Arc<ConnHandle>> {
        self.registry
            .read()
            .by_id
            .values()
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Unblocks the accept thread's `accept()`.
    fn wake_accept(&self) {
        listen::wake(&self.listener, self.local_addr);
    }
}
