//! [`RedisBroker`]: the [`Broker`] over Redis pub/sub (feature `redis`), on the `redis` crate's
//! blocking API.
//!
//! Two named threads and two Redis connections: `rxws-broker-pub` takes path messages from a
//! bounded queue and publishes them in pipelined batches; `rxws-broker-sub` subscribes to the
//! pattern `prefix*` and hands every envelope another instance published to the server. Each
//! connection reconnects by its own [`RetryPolicy`] loop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{
    bounded, select, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError,
};
use parking_lot::{Condvar, Mutex};
use tungstenite::{Bytes, Message};

use super::envelope::{Envelope, Gaps, InstanceId};
use super::{Broker, Deliver};
use crate::error::{Context, Error, Result};
use crate::reactive::{Notification, Subject, Subscription};
use crate::stats::Stats;
use crate::telemetry::{self, event, Kind, Tracked};
use crate::threads::{wait_for_state, Threads};
use crate::ws::{ConnectionState, RetryPolicy};

/// Where and how a [`RedisBroker`] talks to Redis. Public fields with defaults and chained
/// setters; validated by [`RedisBroker::new`].
///
/// ```
/// use rxplus::ws::broker::RedisConfig;
/// use std::time::Duration;
///
/// let cfg = RedisConfig::new("redis://127.0.0.1:6379/")?
///     .prefix("chat-app:")
///     .queue_capacity(8192)
///     .io_timeout(Duration::from_millis(500));
/// assert_eq!(cfg.prefix, "chat-app:");
/// assert!(RedisConfig::new("http://nope/").is_err());
/// # Ok::<(), rxplus::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]` (or `rediss://` is refused: this build
    /// speaks plain TCP). Set by [`RedisConfig::new`].
    url: String,
    /// Channel name prefix: a path `/chat` is published on channel `prefix + "/chat"`, and the
    /// broker subscribes to the pattern `prefix*` (glob characters in the prefix are
    /// escaped). Instances that should reach each other use the same prefix. Default
    /// `"rxplus:"`.
    pub prefix: String,
    /// How each Redis connection reconnects (the client's policy type; `reset_after`,
    /// `retry_client_errors` and `retry_certificate_errors` do not apply). Default
    /// [`RetryPolicy::default`]: 100 ms doubling up to 10 s, forever.
    pub retry: RetryPolicy,
    /// Path messages waiting for the publishing thread. A full queue drops the new message
    /// (counted in `dropped`, a WARN record when it starts). Default 4,096.
    pub queue_capacity: usize,
    /// Messages sent to Redis in one pipelined round trip, at most. Default 256.
    pub max_batch: usize,
    /// Bound on a connection attempt (TCP connect and setup). Default 2 s.
    pub connect_timeout: Duration,
    /// Bound on one publish round trip (read and write timeout of the publishing connection);
    /// past it the connection counts as broken. Also bounds how long `dispose` may wait for a
    /// publish under way. Default 1 s.
    pub io_timeout: Duration,
    /// How often the subscribing thread, blocked waiting for messages, looks up to see whether
    /// it should stop (its read timeout; a message arriving wakes it at once). Default 100 ms.
    pub poll_interval: Duration,
    /// After this long without a message on the subscribing connection, it sends `PING`; no
    /// answer within `io_timeout` counts the connection as broken and it reconnects. This is
    /// what notices a Redis that hangs with its TCP connections still open (a killed or
    /// restarted one breaks the connection at once). `None`: never ping. Default 5 s.
    pub ping_interval: Option<Duration>,
    /// Publishing instances whose sequence numbers are tracked to count lost messages. Past
    /// it, the tracking starts over. Default 1,024.
    pub max_instances: usize,
    /// Name for logs and errors; `None` derives `RedisBroker:{server name}`. Default `None`.
    pub name: Option<String>,
}

impl RedisConfig {
    /// A config for the Redis at `url`, every other field at its default.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL the `redis` crate cannot use (not `redis://`,
    /// `redis+unix://` or `unix://`).
    pub fn new(url: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        if url.starts_with("rediss://") {
            return Err(bad("rediss:// (TLS to Redis) is not built in".into()));
        }
        redis::Client::open(url).map_err(|e| bad(e.to_string()))?;
        Ok(RedisConfig {
            url: url.to_owned(),
            prefix: "rxplus:".into(),
            retry: RetryPolicy::default(),
            queue_capacity: 4096,
            max_batch: 256,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(100),
            ping_interval: Some(Duration::from_secs(5)),
            max_instances: 1024,
            name: None,
        })
    }
    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }
    /// Sets [`Self::prefix`].
    pub fn prefix(mut self, p: impl Into<String>) -> Self {
        self.prefix = p.into();
        self
    }
    /// Sets [`Self::retry`].
    pub fn retry(mut self, r: RetryPolicy) -> Self {
        self.retry = r;
        self
    }
    /// Sets [`Self::queue_capacity`].
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }
    /// Sets [`Self::max_batch`].
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }
    /// Sets [`Self::connect_timeout`].
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }
    /// Sets [`Self::io_timeout`].
    pub fn io_timeout(mut self, d: Duration) -> Self {
        self.io_timeout = d;
        self
    }
    /// Sets [`Self::poll_interval`].
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }
    /// Sets [`Self::ping_interval`].
    pub fn ping_interval(mut self, d: Option<Duration>) -> Self {
        self.ping_interval = d;
        self
    }
    /// Sets [`Self::max_instances`].
    pub fn max_instances(mut self, n: usize) -> Self {
        self.max_instances = n;
        self
    }
    /// Sets [`Self::name`].
    pub fn name(mut self, n: impl Into<String>) -> Self {
        self.name = Some(n.into());
        self
    }

    fn validate(&self) -> Result<()> {
        let positive = |field, d: Duration| {
            if d.is_zero() {
                Err(Error::config(field, "must be above zero"))
            } else {
                Ok(())
            }
        };
        if self.queue_capacity == 0 {
            return Err(Error::config("broker.queue_capacity", "must be above zero"));
        }
        if self.max_batch == 0 {
            return Err(Error::config("broker.max_batch", "must be above zero"));
        }
        if self.max_instances == 0 {
            return Err(Error::config("broker.max_instances", "must be above zero"));
        }
        if matches!(&self.name, Some(n) if n.is_empty()) {
            return Err(Error::config("broker.name", "must not be empty"));
        }
        positive("broker.connect_timeout", self.connect_timeout)?;
        positive("broker.io_timeout", self.io_timeout)?;
        positive("broker.poll_interval", self.poll_interval)?;
        if let Some(d) = self.ping_interval {
            positive("broker.ping_interval", d)?;
        }
        self.retry.validate()
    }
}

/// A copy of a broker's counters at one moment. Loss across instances is `dropped` on the
/// publishing side (never reached Redis) plus `lost` on each receiving side (reached Redis or
/// was on its way, never arrived here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerStats {
    /// Path messages Redis took (`PUBLISH` answered).
    pub published: u64,
    /// Path messages of other instances received and handed to the server.
    pub received: u64,
    /// Path messages not published: Redis down or not yet connected, the queue full, a
    /// `PUBLISH` that got no answer, or stopped.
    pub dropped: u64,
    /// Messages of other instances that never arrived here, counted from the sequence numbers
    /// skipped (known once a later message of that instance arrives).
    pub lost: u64,
    /// Envelopes that could not be read (another version, not an envelope): skipped.
    pub decode_errors: u64,
    /// Connection attempts to Redis, both connections, the first ones included.
    pub connect_attempts: u64,
    /// Connections to Redis made (two on start; one more per reconnect).
    pub connections: u64,
}

/// Which of the broker's two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher,
    Subscriber,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        }
    }
}

/// A [`Broker`] over Redis pub/sub. A cheap handle: clone it to keep reading its state and
/// counters after giving it to a server's config. One broker serves one server.
///
/// Redis pub/sub is **at-most-once**: a message published while a subscriber is disconnected,
/// or while Redis restarts, is gone. Such losses are counted (`dropped` by the publisher,
/// `lost` by each receiver) and logged; local delivery never waits on Redis. See
/// `docs/scale-out.md`.
///
/// ```no_run
/// use rxplus::ws::broker::{RedisBroker, RedisConfig};
/// use rxplus::ws::{RxWSServer, Text, WSConfig};
/// use std::time::Duration;
///
/// let broker = RedisBroker::new(RedisConfig::new("redis://127.0.0.1:6379/")?)?;
/// broker.subscribe_state(|s| eprintln!("redis: {s}"));
/// let server = RxWSServer::<String>::bind_with_config(
///     "127.0.0.1:0",
///     Text,
///     WSConfig::default().broker(broker.clone()),
/// )?;
/// assert!(broker.wait_connected(Duration::from_secs(5)));
/// println!("{:?}", broker.stats());
/// server.dispose();
/// # Ok::<(), rxplus::Error>(())
/// ```
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: RedisConfig,
    client: redis::Client,
    /// The subscription pattern: the prefix, glob characters escaped, then `*`.
    pattern: String,
    instance: InstanceId,
    name: Mutex<Arc<str>>,
    stats: Arc<Stats>,
    metrics: Mutex<Option<Tracked>>,
    state: Arc<Subject<ConnectionState>>,
    errors: Arc<Subject<Error>>,
    queue_tx: Sender<(String, Message)>,
    queue_rx: Receiver<(String, Message)>,
    threads: Mutex<Option<Arc<Threads>>>,
    pub_up: AtomicBool,
    sub_up: AtomicBool,
    ever_up: AtomicBool,
    /// Retries exhausted or stopped: the state is `Closed`.
    closed: AtomicBool,
    /// `stop` has accounted for what was left in the queue.
    stopped: AtomicBool,
    /// Only one thread emits states at a time (see `refresh_state`).
    emitting: AtomicBool,
    dirty: AtomicBool,
    /// Drops since the broker was last fully connected (logged when it is again).
    outage_drops: AtomicU64,
    /// A full queue was logged at WARN; cleared when the queue empties.
    full_warned: AtomicBool,
    state_lock: Mutex<()>,
    state_changed: Condvar,
}

impl RedisBroker {
    /// A broker for `cfg`; it connects when the server it is given to binds.
    ///
    /// # Errors
    /// [`Error::Config`] naming a bad field.
    pub fn new(cfg: RedisConfig) -> Result<Self> {
        cfg.validate()?;
        let client = redis::Client::open(cfg.url.as_str()).map_err(|e| Error::InvalidUrl {
            url: cfg.url.clone(),
            reason: e.to_string(),
        })?;
        let mut pattern = String::with_capacity(cfg.prefix.len() + 1);
        for c in cfg.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        let (queue_tx, queue_rx) = bounded(cfg.queue_capacity);
        let name: Arc<str> = Arc::from(cfg.name.as_deref().unwrap_or("RedisBroker"));
        Ok(RedisBroker {
            inner: Arc::new(Inner {
                client,
                pattern,
                instance: *uuid::Uuid::new_v4().as_bytes(),
                state: Subject::replaying(name.to_string(), ConnectionState::Disconnected, 64),
                errors: Subject::new(name.to_string(), 64),
                name: Mutex::new(name),
                stats: Arc::new(Stats::default()),
                metrics: Mutex::new(None),
                queue_tx,
                queue_rx,
                threads: Mutex::new(None),
                pub_up: AtomicBool::new(false),
                sub_up: AtomicBool::new(false),
                ever_up: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                emitting: AtomicBool::new(false),
                dirty: AtomicBool::new(false),
                outage_drops: AtomicU64::new(0),
                full_warned: AtomicBool::new(false),
                state_lock: Mutex::new(()),
                state_changed: Condvar::new(),
                cfg,
            }),
        })
    }

    /// This instance's id as it goes in every envelope it publishes.
    pub fn instance_id(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.inner.instance)
    }

    /// The broker's name (logs, errors, metrics' `component`).
    pub fn name(&self) -> Arc<str> {
        self.inner.name()
    }

    /// Counters now.
    pub fn stats(&self) -> BrokerStats {
        let s = self.inner.stats.snapshot();
        BrokerStats {
            published: s.messages_out,
            received: s.messages_in,
            dropped: s.dropped,
            lost: self.inner.stats.gaps.load(Ordering::Relaxed),
            decode_errors: s.decode_errors,
            connect_attempts: s.connect_attempts,
            connections: s.connections_opened,
        }
    }

    /// The connection state: `Disconnected` before the server starts it, `Connecting` until
    /// both connections are up the first time, `Connected` while both are, `Reconnecting`
    /// while either is down after that, `Closed` once stopped or out of retries.
    pub fn connection_state(&self) -> ConnectionState {
        self.inner
            .state
            .current()
            .unwrap_or(ConnectionState::Disconnected)
    }

    /// Connection states, only when they change; a new subscriber gets the current state
    /// first. Callbacks run on the broker's threads.
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

    /// Non-fatal errors: failed connection attempts ([`Error::ConnectFailed`]), a broken
    /// connection, envelopes that could not be read; and [`Error::RetriesExhausted`] when a
    /// connection gives up.
    pub fn subscribe_errors(&self, f: impl Fn(Error) + Send + Sync + 'static) -> Subscription {
        self.inner.errors.subscribe(Box::new(f))
    }

    /// Waits until both connections are up; false at the timeout or once `Closed`.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        wait_for_state(
            &self.inner.state_lock,
            &self.inner.state_changed,
            timeout,
            || match self.connection_state() {
                ConnectionState::Connected => Some(true),
                ConnectionState::Closed => Some(false),
                _ => None,
            },
        )
    }

    /// Threads the broker runs now (0 before start and after stop, 2 while running).
    pub fn thread_count(&self) -> usize {
        self.inner
            .threads
            .lock()
            .as_ref()
            .map_or(0, |t| t.live_count())
    }
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("name", &self.inner.name())
            .field("state", &self.connection_state())
            .finish()
    }
}

impl Broker for RedisBroker {
    fn start(&self, server: &str, deliver: Deliver) -> Result<()> {
        let inner = &self.inner;
        let name: Arc<str> = match &inner.cfg.name {
            Some(n) => Arc::from(n.as_str()),
            None => Arc::from(format!("RedisBroker:{server}")),
        };
        let threads = {
            let mut slot = inner.threads.lock();
            if slot.is_some() || inner.closed.load(Ordering::Acquire) {
                return Err(Error::config(
                    "broker",
                    "this broker was already started: one broker serves one server",
                ));
            }
            let t = Threads::new(name.clone(), 1 << 20, None);
            *slot = Some(t.clone());
            t
        };
        *inner.name.lock() = name.clone();
        *inner.metrics.lock() = Some(telemetry::track(
            inner.stats.clone(),
            Kind::Broker,
            &name,
            None,
            "drop-new",
        ));
        log::info!(component = &*name, addr = self.addr().as_str(), instance:% = self.instance_id(), prefix = inner.cfg.prefix.as_str(); "{}", event::BROKER_STARTED);
        inner.refresh_state();
        let me = inner.clone();
        let stop = threads.stop_signal().clone();
        threads.spawn("rxws-broker-pub".into(), move || me.run_publisher(&stop))?;
        let me = inner.clone();
        let stop = threads.stop_signal().clone();
        threads.spawn("rxws-broker-sub".into(), move || {
            me.run_subscriber(&stop, &deliver)
        })?;
        Ok(())
    }

    fn publish(&self, path: &str, message: &Message) -> Result<()> {
        let inner = &self.inner;
        if !matches!(message, Message::Text(_) | Message::Binary(_)) {
            return Err(inner.error("only text and binary messages cross instances", None));
        }
        if inner.closed.load(Ordering::Acquire) || !inner.pub_up.load(Ordering::Acquire) {
            inner.drop_one(path, "broker down");
            return Err(inner.error("not connected to Redis: message dropped", None));
        }
        let channel = format!("{}{path}", inner.cfg.prefix);
        match inner.queue_tx.try_send((channel, message.clone())) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                if !inner.full_warned.swap(true, Ordering::AcqRel) {
                    log::warn!(component = &*inner.name(), path, capacity = inner.cfg.queue_capacity; "{}", event::BROKER_QUEUE_FULL);
                }
                inner.drop_one(path, "queue full");
                Err(inner.error("publish queue full: message dropped", None))
            }
            Err(TrySendError::Disconnected(_)) => {
                inner.drop_one(path, "stopped");
                Err(Error::closed(&inner.name()))
            }
        }
    }

    fn stop(&self) {
        let inner = &self.inner;
        let threads = inner.threads.lock().clone();
        inner.closed.store(true, Ordering::Release);
        if let Some(t) = threads {
            t.begin_stop();
            t.join_all();
            if !inner.stopped.swap(true, Ordering::AcqRel) {
                let left = inner.queue_rx.try_iter().count() as u64;
                inner.stats.dropped.fetch_add(left, Ordering::Relaxed);
                inner.pub_up.store(false, Ordering::Release);
                inner.sub_up.store(false, Ordering::Release);
                log::info!(component = &*inner.name(), dropped = left; "{}", event::BROKER_STOPPED);
            }
        }
        inner.refresh_state();
    }
}

impl RedisBroker {
    /// Redis's address as `host:port` (no credentials).
    fn addr(&self) -> String {
        self.inner.client.get_connection_info().addr().to_string()
    }
}

impl Inner {
    fn name(&self) -> Arc<str> {
        self.name.lock().clone()
    }

    fn error(&self, reason: &str, source: Option<redis::RedisError>) -> Error {
        Error::Broker {
            ctx: Context::new(&self.name(), None),
            reason: reason.to_owned(),
            source: source.map(|e| Arc::new(e) as Arc<dyn std::error::Error + Send + Sync>),
        }
    }

    fn drop_one(&self, path: &str, reason: &'static str) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        self.outage_drops.fetch_add(1, Ordering::Relaxed);
        log::debug!(component = &*self.name(), path, reason, count = 1; "{}", event::BROKER_DROPPED);
    }

    /// Emits the state the flags describe, if it changed. One emitter at a time and no lock
    /// held while subscribers run: a thread that finds another emitting leaves it a note
    /// (`dirty`), and the emitter looks again before it leaves.
    fn refresh_state(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        while !self.emitting.swap(true, Ordering::SeqCst) {
            self.dirty.store(false, Ordering::SeqCst);
            let want = if self.closed.load(Ordering::SeqCst) {
                ConnectionState::Closed
            } else if self.pub_up.load(Ordering::SeqCst) && self.sub_up.load(Ordering::SeqCst) {
                ConnectionState::Connected
            } else if self.ever_up.load(Ordering::SeqCst) {
                ConnectionState::Reconnecting
            } else {
                ConnectionState::Connecting
            };
            if self.state.current() != Some(want) && !self.state.is_terminated() {
                log::info!(component = &*self.name(), state:% = want; "{}", event::BROKER_STATE);
                if want == ConnectionState::Connected {
                    self.ever_up.store(true, Ordering::SeqCst);
                    let dropped = self.outage_drops.swap(0, Ordering::Relaxed);
                    log::info!(component = &*self.name(), dropped; "{}", event::BROKER_CONNECTED);
                }
                if want == ConnectionState::Closed {
                    self.state.terminate_with(want, Notification::Completed);
                    self.errors.terminate(Notification::Completed);
                } else {
                    self.state.next(want);
                }
                drop(self.state_lock.lock());
                self.state_changed.notify_all();
            }
            self.emitting.store(false, Ordering::SeqCst);
            if !self.dirty.load(Ordering::SeqCst) {
                break;
            }
        }
    }

    /// One connection up or down (`error`: why it went down).
    fn set_up(&self, role: Role, up: bool, error: Option<&Error>) {
        let flag = match role {
            Role::Publisher => &self.pub_up,
            Role::Subscriber => &self.sub_up,
        };
        let was = flag.swap(up, Ordering::SeqCst);
        if up {
            self.stats
                .connections_opened
                .fetch_add(1, Ordering::Relaxed);
        } else if was {
            self.stats
                .connections_closed
                .fetch_add(1, Ordering::Relaxed);
            let error = error.map(ToString::to_string).unwrap_or_default();
            log::warn!(component = &*self.name(), role = role.as_str(), error = error.as_str(); "{}", event::BROKER_DOWN);
        }
        self.refresh_state();
    }

    /// Connects one connection, retrying by the policy; None when stopping or out of retries.
    fn connect(&self, role: Role, stop: &Receiver<()>) -> Option<redis::Connection> {
        let mut failures: u32 = 0;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            self.stats.connect_attempts.fetch_add(1, Ordering::Relaxed);
            let attempt = self
                .client
                .get_connection_with_timeout(self.cfg.connect_timeout)
                .and_then(|c| {
                    c.set_write_timeout(Some(self.cfg.io_timeout))?;
                    c.set_read_timeout(Some(match role {
                        Role::Publisher => self.cfg.io_timeout,
                        Role::Subscriber => self.cfg.poll_interval,
                    }))?;
                    Ok(c)
                });
            let e = match attempt {
                Ok(c) => return Some(c),
                Err(e) => self.error("connection attempt failed", Some(e)),
            };
            failures += 1;
            let name = self.name();
            if self.cfg.retry.max_retries.is_some_and(|max| failures > max) {
                log::warn!(component = &*name, role = role.as_str(), attempt = failures, error:% = e; "{}", event::BROKER_GAVE_UP);
                self.errors.next(Error::RetriesExhausted {
                    ctx: Context::new(&name, Some(role.as_str().into())),
                    attempts: failures,
                    source: Box::new(e),
                });
                self.give_up();
                return None;
            }
            let delay = self.cfg.retry.delay(failures - 1);
            log::info!(component = &*name, role = role.as_str(), attempt = failures, delay_ms = delay.as_millis() as u64, error:% = e; "{}", event::BROKER_RETRY);
            self.errors.next(Error::ConnectFailed {
                ctx: Context::new(&name, Some(role.as_str().into())),
                attempt: failures,
                source: Box::new(e),
            });
            if stopped_within(stop, delay) {
                return None;
            }
        }
    }

    /// Out of retries: both threads end (the other one too, whatever it is doing), nothing is
    /// published any more, and the state is `Closed`. The server delivers locally only.
    fn give_up(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.pub_up.store(false, Ordering::SeqCst);
        self.sub_up.store(false, Ordering::SeqCst);
        if let Some(t) = self.threads.lock().clone() {
            t.begin_stop();
        }
        self.refresh_state();
    }

    /// `rxws-broker-pub`: the queue to Redis, in pipelined batches, in order.
    fn run_publisher(&self, stop: &Receiver<()>) {
        let mut seq: u64 = 0;
        let mut batch = Vec::with_capacity(self.cfg.max_batch);
        while let Some(mut con) = self.connect(Role::Publisher, stop) {
            self.set_up(Role::Publisher, true, None);
            loop {
                select! {
                    recv(self.queue_rx) -> m => match m {
                        Ok(m) => batch.push(m),
                        Err(_) => return,
                    },
                    recv(stop) -> _ => return,
                }
                batch.extend(self.queue_rx.try_iter().take(self.cfg.max_batch - 1));
                if self.queue_rx.is_empty() {
                    self.full_warned.store(false, Ordering::Release);
                }
                let mut pipe = redis::pipe();
                let first = seq;
                for (channel, message) in batch.iter() {
                    let Ok(bytes) = Envelope::encode(&self.instance, seq + 1, message) else {
                        // Not reached: `publish` takes text and binary only.
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    seq += 1;
                    pipe.cmd("PUBLISH")
                        .arg(channel.as_bytes())
                        .arg(bytes)
                        .ignore();
                }
                let n = seq - first;
                let sent = pipe.exec(&mut con);
                batch.clear();
                match sent {
                    Ok(()) => {
                        self.stats.messages_out.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        // Not known to be published: dropped, and their numbers are given
                        // again, so receivers count no gap for them.
                        seq = first;
                        let e = self.error("publish failed", Some(e));
                        self.pub_down(n, &e);
                        break;
                    }
                }
            }
        }
    }

    /// The publishing connection broke: `failed` messages of the batch and everything queued
    /// are dropped (at-most-once), and publishing stops until it reconnects.
    fn pub_down(&self, failed: u64, e: &Error) {
        self.set_up(Role::Publisher, false, Some(e));
        let queued = self.queue_rx.try_iter().count() as u64;
        let n = failed + queued;
        self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        self.outage_drops.fetch_add(n, Ordering::Relaxed);
        self.errors.next(e.clone());
        self.full_warned.store(false, Ordering::Release);
    }

    /// `rxws-broker-sub`: envelopes of other instances to the server.
    fn run_subscriber(&self, stop: &Receiver<()>, deliver: &Deliver) {
        let mut gaps = Gaps::new(self.cfg.max_instances);
        while let Some(mut con) = self.connect(Role::Subscriber, stop) {
            let mut pubsub = con.as_pubsub();
            if let Err(e) = pubsub.psubscribe(self.pattern.as_str()) {
                let e = self.error("subscribe failed", Some(e));
                self.errors.next(e);
                if stopped_within(stop, self.cfg.retry.initial_delay) {
                    return;
                }
                continue;
            }
            self.set_up(Role::Subscriber, true, None);
            let mut heard = Instant::now();
            loop {
                if !matches!(stop.try_recv(), Err(TryRecvError::Empty)) {
                    return;
                }
                let (reason, e) = match pubsub.get_message() {
                    Ok(msg) => {
                        heard = Instant::now();
                        let channel = msg.get_channel_name();
                        if let Some(path) = channel.strip_prefix(self.cfg.prefix.as_str()) {
                            let bytes = Bytes::copy_from_slice(msg.get_payload_bytes());
                            self.receive(path, bytes, &mut gaps, deliver);
                        }
                        continue;
                    }
                    Err(e) if e.is_timeout() => {
                        if self.cfg.ping_interval.is_none_or(|d| heard.elapsed() < d) {
                            continue;
                        }
                        match self.ping(&mut pubsub) {
                            Ok(()) => {
                                heard = Instant::now();
                                continue;
                            }
                            Err(e) => ("no answer to PING (Redis hung?)", e),
                        }
                    }
                    Err(e) => ("subscription broke", e),
                };
                let e = self.error(reason, Some(e));
                self.set_up(Role::Subscriber, false, Some(&e));
                self.errors.next(e);
                break;
            }
        }
    }

    /// `PING` on the subscribing connection, answered within `io_timeout` (messages that
    /// arrive meanwhile are kept for `get_message`).
    fn ping(&self, pubsub: &mut redis::PubSub<'_>) -> redis::RedisResult<()> {
        pubsub.set_read_timeout(Some(self.cfg.io_timeout))?;
        let answer = pubsub.ping::<redis::Value>();
        pubsub.set_read_timeout(Some(self.cfg.poll_interval))?;
        answer.map(drop)
    }

    fn receive(&self, path: &str, bytes: Bytes, gaps: &mut Gaps, deliver: &Deliver) {
        let env = match Envelope::decode(bytes) {
            Ok(env) => env,
            Err(source) => {
                self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                log::warn!(component = &*self.name(), path, error:% = source; "{}", event::BROKER_DECODE_ERROR);
                self.errors.next(Error::Decode {
                    ctx: Context::new(&self.name(), Some(path.to_owned())),
                    datatype: "envelope",
                    source,
                });
                return;
            }
        };
        if env.instance == self.instance {
            return;
        }
        let lost = gaps.record(&env.instance, env.seq);
        if lost > 0 {
            self.stats.gaps.fetch_add(lost, Ordering::Relaxed);
            log::warn!(component = &*self.name(), instance:% = uuid::Uuid::from_bytes(env.instance), count = lost; "{}", event::BROKER_LOST);
        }
        self.stats.messages_in.fetch_add(1, Ordering::Relaxed);
        deliver(path, env.message);
    }
}

/// Waits up to `d` for the stop signal; true when stopping.
fn stopped_within(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}
