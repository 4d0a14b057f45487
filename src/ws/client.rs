//! [`RxWSClient`]: a WebSocket client that connects in the background and keeps reconnecting.

use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocket};
use tungstenite::Message;

use crate::component::{front_end, Core, Endpoint};
use crate::error::{Context, Error, Result, SendError};
use crate::reactive::{Notification, Subject, Subscription};
use crate::stats::StatsSnapshot;
use crate::telemetry::{self, event, Kind, Outcome, Tracked};
use crate::threads::Threads;
use crate::ws::conn::{ConnHandle, ConnInfo, ConnRun, HalfStream, Outbound};
use crate::ws::datatype::Datatype;
use crate::ws::handshake;
use crate::ws::outbound::{push_outbound, OutQueue, Refused};
use crate::ws::{ConnId, ConnectionState, WSConfig, WSConnectionConfig};

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// A WebSocket client: a subject of `T` in both directions, with automatic reconnection.
///
/// It connects in the background (`rxws-client-N` thread) and reconnects by its
/// [`RetryPolicy`](crate::ws::RetryPolicy) after a failure or a drop; each failed attempt is
/// reported on the errors stream ([`Error::ConnectFailed`]). Items sent while not connected
/// are refused ([`Error::NotConnected`], the item handed back by `send`), unless
/// `buffer_while_disconnected` is on: then they are queued (bounded) and delivered in order
/// after the next connect, before anything newer.
///
/// Threads: the connection thread (connects, then reads) and, while connected, one writer.
///
/// ```no_run
/// use rxplus::ws::{RxWSClient, Text, WSConnectionConfig, WSConfig};
///
/// let client = RxWSClient::<String>::with_config(
///     WSConnectionConfig::from_url("ws://127.0.0.1:9001/chat")?,
///     Text,
///     WSConfig::default().buffer_while_disconnected(true),
/// )?;
/// client.subscribe(|msg| println!("got {msg}"));
/// client.subscribe_state(|s| eprintln!("state: {s}"));
/// client.on_next("hello".to_string());
/// client.on_completed(); // flushes, closes with a close handshake, joins its threads
/// # Ok::<(), rxplus::Error>(())
/// ```
pub struct RxWSClient<T: Clone + Send + 'static> {
    inner: Arc<Inner<T>>,
}

front_end!(RxWSClient, ClientHandle, Inner, T, T);

struct Inner<T: Clone + Send + 'static> {
    core: Core<T>,
    /// The path without its query string (log and metric attribute `path`).
    path: Arc<str>,
    /// The core's counters as listed for metrics.
    metrics: Tracked,
    conn: WSConnectionConfig,
    cfg: WSConfig,
    datatype: Arc<dyn Datatype<T>>,
    state: Arc<Subject<ConnectionState>>,
    queue: Arc<OutQueue>,
    current: Mutex<Option<Arc<ConnHandle>>>,
    // The socket of a handshake under way, so dispose can end it.
    handshaking: Mutex<Option<TcpStream>>,
    connected: AtomicBool,
    completing: AtomicBool,
    // Dropping the sender wakes the connection thread from a retry wait.
    wake_tx: Mutex<Option<Sender<()>>>,
    wake_rx: Receiver<()>,
    // Signalled when the connection thread has ended (for on_completed's bounded wait).
    ended_tx: Mutex<Option<Sender<()>>>,
    ended_rx: Receiver<()>,
    // Notified on every state change: `wait_connected` waits here, holding no subscription.
    state_changed: Condvar,
    state_lock: Mutex<()>,
}

impl<T: Clone + Send + 'static> RxWSClient<T> {
    /// Starts a client for `conn` with the default [`WSConfig`].
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config.
    pub fn new(conn: WSConnectionConfig, datatype: impl Datatype<T>) -> Result<Self> {
        Self::with_config(conn, datatype, WSConfig::default())
    }

    /// Starts a client for a `ws://` URL.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] at once for a URL that cannot be used; it is never retried.
    pub fn connect(url: &str, datatype: impl Datatype<T>) -> Result<Self> {
        Self::new(WSConnectionConfig::from_url(url)?, datatype)
    }

    /// Starts a client with a custom config.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config.
    pub fn with_config(
        conn: WSConnectionConfig,
        datatype: impl Datatype<T>,
        cfg: WSConfig,
    ) -> Result<Self> {
        Self::build(conn, Arc::new(datatype), cfg, None, |_| {})
    }

    /// Starts a client after `setup` has run on it: subscribe there, and nothing the server
    /// sends right after the handshake can arrive before your subscribers (the client connects
    /// on its own thread as soon as it starts, so a `subscribe` after `with_config` may miss
    /// the first messages).
    ///
    /// ```no_run
    /// use rxplus::ws::{RxWSClient, Text, WSConnectionConfig, WSConfig};
    ///
    /// let conn = WSConnectionConfig::from_url("ws://127.0.0.1:9001/feed")?;
    /// let client = RxWSClient::<String>::with_setup(conn, Text, WSConfig::default(), |c| {
    ///     c.subscribe(|m: String| println!("{m}"));
    /// })?;
    /// # Ok::<(), rxplus::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config.
    pub fn with_setup(
        conn: WSConnectionConfig,
        datatype: impl Datatype<T>,
        cfg: WSConfig,
        setup: impl FnOnce(&Self),
    ) -> Result<Self> {
        Self::build(conn, Arc::new(datatype), cfg, None, setup)
    }

    /// Builds the client, runs `setup` on it, then starts its connection thread.
    pub(crate) fn build(
        conn: WSConnectionConfig,
        datatype: Arc<dyn Datatype<T>>,
        cfg: WSConfig,
        parent: Option<&Threads>,
        setup: impl FnOnce(&Self),
    ) -> Result<Self> {
        cfg.validate()?;
        let name: Arc<str> = cfg
            .name
            .clone()
            .unwrap_or_else(|| format!("RxWSClient:{}", conn.url()))
            .into();
        let queue = Arc::new(OutQueue::new(
            cfg.outbound_overflow,
            cfg.outbound_capacity,
            cfg.outbound_max_bytes,
        )?);
        let (wake_tx, wake_rx) = bounded(0);
        let (ended_tx, ended_rx) = bounded(0);
        let core = Core::new(
            name.clone(),
            cfg.thread_stack_size,
            cfg.stream_capacity,
            parent,
        );
        let path: Arc<str> = Arc::from(conn.path().split_once('?').map_or(conn.path(), |(p, _)| p));
        let metrics = telemetry::track(
            core.stats.clone(),
            Kind::Client,
            &name,
            Some(&path),
            cfg.outbound_overflow.name(),
        );
        let inner = Arc::new(Inner {
            core,
            path,
            metrics,
            state: Subject::replaying(
                name.to_string(),
                ConnectionState::Disconnected,
                cfg.stream_capacity,
            ),
            conn,
            cfg,
            datatype,
            queue,
            current: Mutex::new(None),
            handshaking: Mutex::new(None),
            connected: AtomicBool::new(false),
            completing: AtomicBool::new(false),
            wake_tx: Mutex::new(Some(wake_tx)),
            wake_rx,
            ended_tx: Mutex::new(Some(ended_tx)),
            ended_rx,
            state_changed: Condvar::new(),
            state_lock: Mutex::new(()),
        });
        let client = RxWSClient { inner };
        setup(&client);
        let seq = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
        let weak = Arc::downgrade(&client.inner);
        client
            .inner
            .core
            .threads
            .spawn(format!("rxws-client-{seq}"), move || {
                connection_loop(weak, seq)
            })?;
        Ok(client)
    }

    /// Connection states, only when they change; a new subscriber gets the current state
    /// first.
    pub fn subscribe_state(
        &self,
        f: impl Fn(ConnectionState) + Send + Sync + 'static,
    ) -> Subscription {
        self.inner.state.subscribe(Box::new(f))
    }

    /// Connection states as a crossbeam receiver, current state first.
    pub fn state_stream(&self) -> Receiver<Notification<ConnectionState>> {
        self.inner.state.stream()
    }

    /// The current connection state.
    pub fn connection_state(&self) -> ConnectionState {
        self.inner
            .state
            .current()
            .unwrap_or(ConnectionState::Closed)
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// The id of the current connection (a new one after each reconnect), or `None` while
    /// not connected.
    pub fn conn_id(&self) -> Option<ConnId> {
        self.inner.current.lock().as_ref().map(|c| c.info.id)
    }

    /// Waits up to `timeout` for the client to be connected; true if it is.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        self.inner.wait_connected(timeout)
    }

    /// Counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.core.stats.snapshot()
    }

    /// Items waiting in the outbound queue (or disconnect buffer).
    pub fn queued(&self) -> usize {
        self.inner.queue.len()
    }

    /// Threads the client is running now.
    pub fn thread_count(&self) -> usize {
        self.inner.core.threads.live_count()
    }
}

impl<T: Clone + Send + 'static> Endpoint for Inner<T> {
    type In = T;
    type Out = T;
    const KIND: &'static str = "client";

    fn core(&self) -> &Core<T> {
        &self.core
    }

    fn send(&self, item: T) -> std::result::Result<(), SendError<T>> {
        if self.core.threads.is_stopping() || self.completing.load(Ordering::Acquire) {
            self.core.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::new(self.core.closed(), Some(item)));
        }
        if !self.connected.load(Ordering::Acquire) && !self.cfg.buffer_while_disconnected {
            self.core.stats.dropped.fetch_add(1, Ordering::Relaxed);
            log::debug!(component = &*self.core.name, path = &*self.path, reason = "not connected", count = 1; "{}", event::MESSAGE_DROPPED);
            let err = Error::NotConnected {
                ctx: Context::new(&self.core.name, None),
            };
            return Err(SendError::new(err, Some(item)));
        }
        let msg = self.datatype.encode(item).map_err(|source| {
            self.core
                .stats
                .encode_errors
                .fetch_add(1, Ordering::Relaxed);
            let err = Error::Encode {
                ctx: Context::new(&self.core.name, None),
                datatype: self.datatype.name(),
                source,
            };
            SendError::new(err, None)
        })?;
        // Written on this thread when the connection is idle; otherwise queued.
        let current = self.current.lock().clone();
        let msg = match &current {
            Some(c) => {
                log::debug!(component = &*self.core.name, conn_id:% = c.info.id, path = &*self.path, bytes = msg.len(); "{}", event::MESSAGE_SENT);
                match c.try_direct(msg) {
                    None => return Ok(()),
                    Some(msg) => msg,
                }
            }
            None => {
                log::debug!(component = &*self.core.name, path = &*self.path, bytes = msg.len(); "{}", event::MESSAGE_SENT);
                msg
            }
        };
        let pushed = push_outbound(
            &self.queue,
            msg,
            &self.core.name,
            current.as_deref().map(|c| &c.info),
            &self.core.stats,
            || {
                if let Some(c) = self.current.lock().clone() {
                    c.abort();
                }
            },
        );
        pushed.map_err(|r| {
            let err = match r {
                Refused::Overflow => Error::Overflow {
                    ctx: Context::new(&self.core.name, None),
                    policy: self.queue.name(),
                    capacity: self.queue.capacity(),
                },
                Refused::Closed => self.core.closed(),
            };
            SendError::new(err, None)
        })
    }

    fn complete(&self, n: Notification<T>) {
        // Buffered items waiting for a first (or next) connection: give it a bounded chance.
        if self.cfg.buffer_while_disconnected
            && !self.queue.is_empty()
            && !self.connected.load(Ordering::Acquire)
            && !self.core.threads.on_own_thread()
            && !self.stopping()
        {
            self.wait_connected(self.cfg.handshake_timeout);
        }
        if self.completing.swap(true, Ordering::AcqRel) || self.core.threads.is_stopping() {
            self.dispose();
            return;
        }
        log::info!(component = &*self.core.name; "{}", event::COMPLETING);
        let code = match n {
            Notification::Error(_) => CloseCode::Error,
            _ => CloseCode::Normal,
        };
        let current = self.current.lock().clone();
        // Wake a retry wait: completion ends the reconnect loop.
        self.wake_tx.lock().take();
        if let Some(c) = current {
            c.close(Some(CloseFrame {
                code,
                reason: "".into(),
            }));
            if !self.core.threads.on_own_thread() {
                let deadline =
                    Instant::now() + self.cfg.close_timeout * 2 + Duration::from_millis(200);
                let _ended_or_timed_out = self.ended_rx.recv_deadline(deadline);
            }
        }
        // What is still queued could not be delivered within the bound: say how much.
        let left = self.queue.len();
        if left > 0 {
            log::warn!(component = &*self.core.name, path = &*self.path, count = left; "{}", event::COMPLETED_UNDELIVERED);
            self.core.report(Error::Undelivered {
                ctx: Context::new(&self.core.name, None),
                count: left,
            });
        }
        self.core.terminate(n);
        self.dispose();
    }

    fn dispose(&self) {
        if !self.core.threads.begin_stop() {
            self.core.threads.wait_stopped();
            return;
        }
        self.core.abort_subjects();
        self.state.abort();
        self.wake_tx.lock().take();
        self.queue.close();
        if let Some(c) = self.current.lock().clone() {
            c.abort();
        }
        if let Some(s) = self.handshaking.lock().take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.core.threads.join_all();
        self.drop_queued("disposed");
        self.core.terminate(Notification::Completed);
        self.close_state();
    }
}

impl<T: Clone + Send + 'static> Inner<T> {
    /// Emits a state when it changes (and logs it).
    fn set_state(&self, s: ConnectionState) {
        // Only real changes: a retry loop does not emit `Reconnecting` once per attempt.
        if self.state.current() == Some(s) {
            return;
        }
        log::info!(component = &*self.core.name, path = &*self.path, state:% = s; "{}", event::CLIENT_STATE);
        self.state.next(s);
        self.notify_state();
    }

    /// The terminal state: `Closed`, delivered even though dispose has begun, then completion.
    fn close_state(&self) {
        if self.state.current() != Some(ConnectionState::Closed) {
            log::info!(component = &*self.core.name, path = &*self.path, state:% = ConnectionState::Closed; "{}", event::CLIENT_STATE);
        }
        self.state
            .terminate_with(ConnectionState::Closed, Notification::Completed);
        self.notify_state();
    }

    fn notify_state(&self) {
        // Taking the lock orders this wake-up after a waiter's check of the flag.
        drop(self.state_lock.lock());
        self.state_changed.notify_all();
    }

    /// Waits on a condition variable: constant memory and time per call, however many calls.
    fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.state_lock.lock();
        loop {
            if self.connected.load(Ordering::Acquire) {
                return true;
            }
            if self.state.is_terminated()
                || self.state.current() == Some(ConnectionState::Closed)
                || self
                    .state_changed
                    .wait_until(&mut guard, deadline)
                    .timed_out()
            {
                return self.connected.load(Ordering::Acquire);
            }
        }
    }

    /// Drops everything queued, counted and logged (`why`: disconnected, disposed).
    fn drop_queued(&self, why: &str) {
        let n = self.queue.drain().len();
        if n > 0 {
            self.core
                .stats
                .dropped
                .fetch_add(n as u64, Ordering::Relaxed);
            log::debug!(component = &*self.core.name, path = &*self.path, reason = why, count = n; "{}", event::MESSAGE_DROPPED);
        }
    }

    fn stopping(&self) -> bool {
        self.core.threads.is_stopping() || self.completing.load(Ordering::Acquire)
    }

    /// One connection attempt: connect, handshake, and set up the connection core.
    fn open(&self, seq: u64) -> Result<(ConnRun, Arc<ConnHandle>, ConnInfo)> {
        let (ws, peer) = self.connect()?;
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
        )?;
        Ok((run, handle, info))
    }

    /// Connects and handshakes, bounded by `handshake_timeout`.
    fn connect(&self) -> Result<(WebSocket<HalfStream>, SocketAddr)> {
        let name = &self.core.name;
        let timeout = self.cfg.handshake_timeout;
        let addrs: Vec<SocketAddr> = (self.conn.host(), self.conn.port())
            .to_socket_addrs()
            .map_err(|e| Error::io(name, Some(self.conn.authority()), e))?
            .collect();
        let mut last = None;
        let mut sock = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
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
                return Err(Error::io(name, Some(self.conn.authority()), e));
            }
        };
        handshake::start(&sock, timeout);
        let raw = sock
            .try_clone()
            .map_err(|e| Error::io(name, Some(peer.to_string()), e))?;
        // A dispose during the handshake shuts this socket down to end the wait.
        if let Ok(s) = raw.try_clone() {
            *self.handshaking.lock() = Some(s);
        }
        if self.core.threads.is_stopping() {
            let _ = raw.shutdown(Shutdown::Both);
        }
        let url = self.conn.url();
        let res = tungstenite::client::client_with_config(
            url.as_str(),
            HalfStream::new(sock),
            Some(self.cfg.tungstenite()),
        );
        self.handshaking.lock().take();
        match res {
            Ok((ws, _resp)) => {
                handshake::finish(&raw);
                Ok((ws, peer))
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
}

fn connection_loop<T: Clone + Send + 'static>(weak: Weak<Inner<T>>, seq: u64) {
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
                failures = 0;
                let buffering = inner.cfg.buffer_while_disconnected;
                if !buffering {
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
                let inbound = handshake::Inbound {
                    datatype: inner.datatype.clone(),
                    subject: inner.core.inbound.clone(),
                    errors: inner.core.errors.clone(),
                    stats: inner.core.stats.clone(),
                    component: inner.core.name.clone(),
                    conn_id: info.id,
                    path: inner.path.clone(),
                };
                let threads = inner.core.threads.clone();
                drop(inner);
                let end = run.run(&threads, |msg| inbound.deliver(msg, |item| item));
                handle.abort();
                let Some(inner) = weak.upgrade() else { return };
                inner.connected.store(false, Ordering::Release);
                *inner.current.lock() = None;
                inner
                    .core
                    .stats
                    .connections_closed
                    .fetch_add(1, Ordering::Relaxed);
                log::info!(component = &*inner.core.name, conn_id:% = info.id, path = &*inner.path, peer:% = peer, reason:? = end.reason; "{}", event::CONNECTION_CLOSED);
                // Buffering off: what was queued for this connection is dropped (the writer
                // keeps no unsent batch without buffering).
                if buffering {
                    pending = end.unsent;
                } else {
                    inner.drop_queued("disconnected");
                }
                if inner.stopping() {
                    break;
                }
                inner.set_state(ConnectionState::Disconnected);
                inner.cfg.retry.delay(0)
            }
            Err(e) => {
                let outcome = match &e {
                    Error::Io { source, .. } if source.kind() == std::io::ErrorKind::TimedOut => {
                        Outcome::Timeout
                    }
                    _ => Outcome::Failed,
                };
                inner.metrics.record_handshake(outcome, started.elapsed());
                failures += 1;
                if let Some(max) = inner.cfg.retry.max_retries {
                    if failures > max {
                        log::warn!(component = &*inner.core.name, path = &*inner.path, attempt = failures, error:% = e; "{}", event::RETRIES_EXHAUSTED);
                        let err = Error::RetriesExhausted {
                            ctx: Context::new(&inner.core.name, None),
                            attempts: failures,
                            source: Box::new(e),
                        };
                        inner.completing.store(true, Ordering::Release);
                        inner.core.terminate(Notification::Error(err));
                        inner.set_state(ConnectionState::Closed);
                        break;
                    }
                }
                let delay = inner.cfg.retry.delay(failures - 1);
                log::info!(component = &*inner.core.name, path = &*inner.path, attempt = failures, delay_ms = delay.as_millis() as u64, error:% = e; "{}", event::CONNECT_RETRY);
                inner.core.report(Error::ConnectFailed {
                    ctx: Context::new(&inner.core.name, None),
                    attempt: failures,
                    source: Box::new(e),
                });
                delay
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
