//! [`RxWSClient`]: a WebSocket client that connects in the background and keeps reconnecting.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;

use crate::component::{front_end, Core, Endpoint};
use crate::error::{Context, Error, Result, SendError};
use crate::reactive::{Notification, Subject, Subscription};
use crate::stats::StatsSnapshot;
use crate::telemetry::{self, event, Kind, Tracked};
use crate::threads::Threads;
use crate::ws::conn::{ConnHandle, SendRole};
use crate::ws::datatype::Datatype;
use crate::ws::outbound::{push_outbound, OutQueue, Refused};
use crate::ws::{check_close, CloseInfo, ConnId, ConnectionState, WSConfig, WSConnectionConfig};

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

mod connect;

pub(crate) use connect::dial;

use connect::connection_loop;

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
    handshaking: Mutex<Option<Arc<TcpStream>>>,
    connected: AtomicBool,
    completing: AtomicBool,
    /// Items sent before the first attempt resolved are queued, not refused (a group's
    /// children: a path's first item arrives with its client's creation).
    pub(super) hold_first: AtomicBool,
    /// The first attempt failed while items were held: they were dropped and reported.
    pub(super) first_failed: AtomicBool,
    // Dropping the sender wakes the connection thread from a retry wait.
    wake_tx: Mutex<Option<Sender<()>>>,
    wake_rx: Receiver<()>,
    // Signalled when the connection thread has ended (for on_completed's bounded wait).
    ended_tx: Mutex<Option<Sender<()>>>,
    ended_rx: Receiver<()>,
    // Notified on every state change: `wait_connected` waits here, holding no subscription.
    state_changed: Condvar,
    state_lock: Mutex<()>,
    /// What the last successful handshake's response said.
    accepted: Mutex<Option<connect::Accepted>>,
    /// How the last connection closed.
    last_close: Mutex<Option<CloseInfo>>,
    /// The close code and reason `on_completed_with` asked for.
    close_with: Mutex<Option<(u16, String)>>,
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
            cfg.overflow_for(false),
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
            cfg.overflow_for(false).name(),
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
            hold_first: AtomicBool::new(false),
            first_failed: AtomicBool::new(false),
            wake_tx: Mutex::new(Some(wake_tx)),
            wake_rx,
            ended_tx: Mutex::new(Some(ended_tx)),
            ended_rx,
            state_changed: Condvar::new(),
            state_lock: Mutex::new(()),
            accepted: Mutex::new(None),
            last_close: Mutex::new(None),
            close_with: Mutex::new(None),
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

    /// The subprotocol the server chose in the last successful handshake (see
    /// [`WSConfig::subprotocols`]), if any.
    pub fn protocol(&self) -> Option<String> {
        self.inner.accepted.lock().as_ref()?.protocol.clone()
    }

    /// The headers of the server's last `101` response (names in lower case).
    pub fn response_headers(&self) -> Vec<(String, String)> {
        self.inner
            .accepted
            .lock()
            .as_ref()
            .map(|a| a.headers.clone())
            .unwrap_or_default()
    }

    /// How the last connection closed: the close code and reason (whoever sent them first),
    /// or the cause when there was no close frame. Set before the state leaves `Connected`,
    /// so a state subscriber seeing `Disconnected` or `Closed` can read it.
    pub fn last_close(&self) -> Option<CloseInfo> {
        self.inner.last_close.lock().clone()
    }

    /// [`on_completed`](Self::on_completed) with this close code and reason (instead of
    /// 1000): the close handshake completes as usual.
    ///
    /// # Errors
    /// [`Error::Config`] for a code an application may not send (see [`check_close`]);
    /// nothing is closed then.
    pub fn on_completed_with(&self, code: u16, reason: &str) -> Result<()> {
        check_close(code, reason)?;
        *self.inner.close_with.lock() = Some((code, reason.to_owned()));
        self.on_completed();
        Ok(())
    }

    /// Waits up to `timeout` for the client to be connected; true if it is.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        self.inner.wait_connected(timeout)
    }

    /// Queue what is sent before the first connection attempt resolves instead of refusing
    /// it (set in `setup`, before the connection thread starts).
    pub(crate) fn hold_until_first_attempt(&self) {
        self.inner.hold_first.store(true, Ordering::Release);
    }

    /// Sends the item that created this client (see [`Inner::send_held`]).
    pub(crate) fn send_held(&self, item: T) -> std::result::Result<(), SendError<T>> {
        self.inner.send_held(item)
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
        self.send_with(item, false)
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
        let (code, reason) = self.close_with.lock().take().unwrap_or(match n {
            Notification::Error(_) => (u16::from(CloseCode::Error), String::new()),
            _ => (u16::from(CloseCode::Normal), String::new()),
        });
        let current = self.current.lock().clone();
        // Wake a retry wait: completion ends the reconnect loop.
        self.wake_tx.lock().take();
        if let Some(c) = current {
            c.close(Some(CloseFrame {
                code: code.into(),
                reason: reason.into(),
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
        if !self.core.begin_dispose() {
            return;
        }
        self.state.abort();
        self.wake_tx.lock().take();
        self.queue.close();
        // The server sees 1001 (going away) where the socket takes it at once, not 1006.
        if let Some(c) = self.current.lock().clone() {
            c.going_away();
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
    /// Sends an item that created this client (a group's first item for a path): held for
    /// the first attempt even when that attempt has already failed, then reported with
    /// the other held items.
    pub(crate) fn send_held(&self, item: T) -> std::result::Result<(), SendError<T>> {
        self.send_with(item, true)
    }

    fn send_with(&self, item: T, first: bool) -> std::result::Result<(), SendError<T>> {
        if self.core.threads.is_stopping() || self.completing.load(Ordering::Acquire) {
            self.core.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::new(self.core.closed(), Some(item)));
        }
        let held = !self.connected.load(Ordering::Acquire) && !self.cfg.buffer_while_disconnected;
        if held && !first && !self.hold_first.load(Ordering::Acquire) {
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
                match c.try_direct(msg, SendRole::OwnMayWait) {
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
            None,
            || {
                if let Some(c) = self.current.lock().clone() {
                    c.abort();
                }
            },
        );
        // The connection's writer sends what was queued (started if it is not running). Read
        // again when there was none: a connection that started meanwhile may have looked at
        // the queue before this push.
        if pushed.is_ok() {
            if let Some(c) = current.or_else(|| self.current.lock().clone()) {
                c.ensure_writer();
            }
        }
        // Held for a first attempt that failed meanwhile: the connection thread has already
        // dropped and reported what it found; this one is dropped and reported here.
        if held && pushed.is_ok() && self.first_failed.load(Ordering::Acquire) {
            self.drop_undelivered("first attempt failed");
        }
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

    /// Drops everything queued and reports it as `Undelivered` on the errors stream.
    pub(super) fn drop_undelivered(&self, why: &str) {
        let n = self.drop_queued(why);
        if n > 0 {
            self.core.report(Error::Undelivered {
                ctx: Context::new(&self.core.name, None),
                count: n,
            });
        }
    }

    /// Drops everything queued, counted and logged (`why`: disconnected, disposed); how many.
    fn drop_queued(&self, why: &str) -> usize {
        let n = self.queue.drain().len();
        if n > 0 {
            self.core
                .stats
                .dropped
                .fetch_add(n as u64, Ordering::Relaxed);
            log::debug!(component = &*self.core.name, path = &*self.path, reason = why, count = n; "{}", event::MESSAGE_DROPPED);
        }
        n
    }

    fn stopping(&self) -> bool {
        self.core.threads.is_stopping() || self.completing.load(Ordering::Acquire)
    }
}
