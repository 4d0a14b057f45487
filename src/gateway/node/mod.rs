//! [`GatewayNode`]: listens and dials; every connection is a peer with its own id, handshake,
//! stream table and outbound policy. Threads and the connection table are described in
//! `ADR/2026-12-04-gateway-node-threads-and-table.md`; the link threads are in `link.rs`, the
//! per-connection state in `peer.rs`.

mod link;
mod peer;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::component::{front_end, Core, Endpoint};
use crate::error::{Context, Error, Result, SendError};
use crate::gateway::{
    Connection, ConnectionState, DisconnectCause, Framing, GatewayConfig, GatewayEvent, NodeId,
    ResumeFailure, TaggedFrame,
};
use crate::reactive::{Notification, Subject};
use crate::stats::StatsSnapshot;
use crate::telemetry::{self, event};
use crate::ws::conn::SendRole;
use crate::ws::listen::{self, Handshakes};
use crate::ws::{ConnId, WSConnectionConfig};
use crate::Subscription;

use peer::Peer;

/// The connection table. Connection ids are random UUIDs, so eight of their bytes are already
/// a good hash: no SipHash on every send.
pub(crate) type PeerTable = HashMap<ConnId, Arc<Peer>, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // A UUID hashes as its length, then its 16 bytes: fold everything in.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
}

/// A symmetric peer-to-peer node over WebSocket, generic over its frame type.
///
/// * **Peers.** [`start`](Self::start) listens; [`connect_to`](Self::connect_to) dials. Every
///   connection, inbound or outbound, is its own peer with its own [`ConnId`].
/// * **Handshake.** The accepting side sends `HELLO(node id, version)`, the dialing side answers
///   `HELLO_ACK(node id, version)`; then both emit [`GatewayEvent::Connected`]. Frames that
///   arrive before that never reach the stream. Refusals close with 4001–4005
///   ([`close_code`](crate::gateway::close_code)).
/// * **Inbound.** [`subscribe`](Self::subscribe) / [`stream`](Self::stream) give
///   [`TaggedFrame`]s; a frame that fails to decode is logged, counted and dropped.
/// * **Outbound.** [`send_to`](Self::send_to), [`broadcast`](Self::broadcast),
///   [`send`](Self::send) / [`sink`](Self::sink) with a `TaggedFrame`: each connection has its
///   own overflow policy, so a slow peer fills only its own queue. Sending to an unknown or
///   unconnected id is an error.
/// * **Events.** [`subscribe_events`](Self::subscribe_events) / [`events`](Self::events):
///   `Connected`, `Interrupted` (an outbound transport dropped and is redialing, same id),
///   `Disconnected` (exactly once per id), `Gap`.
/// * [`stop`](Self::stop) closes every link and joins every thread; safe from any thread,
///   callbacks included.
///
/// ```
/// use rxplus::gateway::{DefaultFrame, GatewayConfig, GatewayNode, TaggedFrame};
/// use std::time::Duration;
///
/// let a = GatewayNode::<DefaultFrame>::new(GatewayConfig::default().host("127.0.0.1").port(0))?;
/// let b = GatewayNode::<DefaultFrame>::new(GatewayConfig::default().host("127.0.0.1").port(0))?;
/// a.start()?;
/// let rx = a.stream();
/// let to_a = b.connect_to(&format!("ws://{}/", a.local_addr().unwrap()))?;
/// assert!(b.wait_connected(to_a, Duration::from_secs(5)));
/// b.send_to(to_a, DefaultFrame::data(&b"hello"[..]))?;
/// let got = rx.recv_timeout(Duration::from_secs(5)).unwrap().into_item().unwrap();
/// assert_eq!(got.frame.payload().map(|p| &p[..]), Some(&b"hello"[..]));
/// b.stop();
/// a.stop();
/// # Ok::<(), rxplus::Error>(())
/// ```
pub struct GatewayNode<F: Framing> {
    inner: Arc<Inner<F>>,
}

front_end!(
    GatewayNode,
    NodeHandle,
    Inner,
    TaggedFrame<T>,
    TaggedFrame<T>,
    Framing
);

pub(crate) struct Inner<F: Framing> {
    pub(crate) core: Core<TaggedFrame<F>>,
    pub(crate) events: Arc<Subject<GatewayEvent>>,
    pub(crate) cfg: GatewayConfig,
    pub(crate) node_id: NodeId,
    pub(crate) peers: RwLock<PeerTable>,
    /// Held while a completed handshake is checked for duplicates and published, so two links
    /// to one node completing at once see each other.
    pub(crate) publish: Mutex<()>,
    pub(crate) local_addr: Mutex<Option<SocketAddr>>,
    /// The accept thread's listener, while it runs (to wake it).
    listener: Mutex<Weak<TcpListener>>,
    /// Inbound links accepted and not past their HELLO exchange: see
    /// [`WSConfig::max_handshakes`](crate::ws::WSConfig::max_handshakes).
    pub(crate) handshakes: Handshakes,
    pub(crate) state_lock: Mutex<()>,
    pub(crate) state_changed: Condvar,
    pub(crate) next_seq: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    /// Frames that arrived before their connection's handshake completed (never delivered).
    pub(crate) early_frames: AtomicU64,
    pub(crate) handshakes_failed: AtomicU64,
    _metrics: telemetry::Tracked,
}

/// A node's counters ([`GatewayNode::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// Frames and bytes in and out, decode errors, drops, connections: the WebSocket counters
    /// summed over every link (`messages_*` count data frames; the HELLO exchange is not counted).
    pub ws: StatsSnapshot,
    /// Sends refused: unknown or unconnected id, overflow.
    pub send_errors: u64,
    /// Missing sequence numbers reported as gaps.
    pub gaps: u64,
    /// Frames received before their connection's handshake completed, dropped.
    pub early_frames: u64,
    /// Handshakes that failed (timeout, refusal, transport lost).
    pub handshakes_failed: u64,
    /// Connections in the table now, any state.
    pub connections: usize,
    /// Connections in `Connected` now.
    pub connected: usize,
    /// Resumable links resumed on a new transport.
    pub resumes: u64,
    /// Frames sent again by resumes.
    pub replayed: u64,
    /// Frames received twice (replayed, already delivered) and dropped.
    pub duplicates: u64,
    /// Frames sent on resumable links that the other side never got: those reported by
    /// `ResumeFailed` events, and those an interrupted link still held when it ended otherwise
    /// (its redials spent, `disconnect`, `stop`; logged at WARN).
    pub resume_lost: u64,
    /// Resumable links waiting for their resume now (interrupted).
    pub interrupted: usize,
}

impl<F: Framing> GatewayNode<F> {
    /// A node with `cfg`; it neither listens nor dials until [`start`](Self::start) or
    /// [`connect_to`](Self::connect_to).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config.
    pub fn new(cfg: GatewayConfig) -> Result<Self> {
        cfg.validate()?;
        let node_id = cfg.node_id.unwrap_or_else(NodeId::random);
        let name: Arc<str> = cfg
            .name
            .clone()
            .unwrap_or_else(|| format!("GatewayNode:{node_id}"))
            .into();
        let core = Core::new(
            name.clone(),
            cfg.ws.thread_stack_size,
            cfg.ws.stream_capacity,
            None,
        );
        let metrics = telemetry::track(
            core.stats.clone(),
            telemetry::Kind::Gateway,
            &name,
            None,
            cfg.overflow_strategy.name(),
        );
        let node = GatewayNode {
            inner: Arc::new(Inner {
                events: Subject::new(name.to_string(), cfg.ws.stream_capacity),
                core,
                cfg,
                node_id,
                peers: RwLock::new(PeerTable::default()),
                publish: Mutex::new(()),
                local_addr: Mutex::new(None),
                listener: Mutex::new(Weak::new()),
                handshakes: Handshakes::default(),
                state_lock: Mutex::new(()),
                state_changed: Condvar::new(),
                next_seq: AtomicU64::new(1),
                send_errors: AtomicU64::new(0),
                early_frames: AtomicU64::new(0),
                handshakes_failed: AtomicU64::new(0),
                _metrics: metrics,
            }),
        };
        if node.inner.cfg.resume.enabled {
            let weak = Arc::downgrade(&node.inner);
            node.inner
                .core
                .threads
                .spawn("rxgw-resume".into(), move || resume_loop(weak))?;
        }
        Ok(node)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// Binds `host:port` and starts accepting peers (thread `rxgw-accept`).
    ///
    /// # Errors
    /// [`Error::Bind`] when the address cannot be bound; [`Error::Config`] when the node
    /// already listens; [`Error::AlreadyClosed`] after [`stop`](Self::stop).
    pub fn start(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.core.threads.is_stopping() {
            return Err(inner.core.closed());
        }
        let mut local = inner.local_addr.lock();
        if local.is_some() {
            return Err(Error::config("start", "the node already listens"));
        }
        let addr = if inner.cfg.host.contains(':') {
            format!("[{}]:{}", inner.cfg.host, inner.cfg.port)
        } else {
            format!("{}:{}", inner.cfg.host, inner.cfg.port)
        };
        let listener =
            listen::listen_any(addr.as_str(), inner.cfg.ws.listen_backlog).map_err(|e| {
                Error::Bind {
                    ctx: Context::new(&inner.core.name, None),
                    addr: addr.clone(),
                    source: Arc::new(e),
                }
            })?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::io(&inner.core.name, None, e))?;
        *local = Some(bound);
        drop(local);
        let listener = Arc::new(listener);
        *inner.listener.lock() = Arc::downgrade(&listener);
        let weak = Arc::downgrade(inner);
        inner.core.threads.spawn("rxgw-accept".into(), move || {
            listen::accept_loop(weak, listener)
        })?;
        log::info!(component = &*inner.core.name, node_id:% = inner.node_id, addr:% = bound; "{}", event::GATEWAY_STARTED);
        Ok(())
    }

    /// The address the node listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *self.inner.local_addr.lock()
    }

    /// Dials `url` (`ws://host:port/path`) on a new thread and returns the new connection's id
    /// at once; [`GatewayEvent::Connected`] follows the handshake. The connection redials by
    /// `cfg.ws.retry` after a failed attempt or a dropped transport, under the same id, until
    /// [`disconnect`](Self::disconnect), a refusal, or its retries are spent.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a bad URL; [`Error::Config`] at `max_peers`;
    /// [`Error::AlreadyClosed`] after [`stop`](Self::stop).
    pub fn connect_to(&self, url: &str) -> Result<ConnId> {
        let conn = WSConnectionConfig::from_url(url)?;
        self.inner.dial(conn)
    }

    /// Sends one frame to one connection.
    ///
    /// # Errors
    /// [`Error::NoConnection`] for an unknown id; [`Error::NotConnected`] before its handshake
    /// completed or after it ended; [`Error::Overflow`] when its policy refused the frame
    /// (`drop-new` full, or `buffer-k`/`disconnect`, which also close the link with 4005).
    /// While an outbound connection is interrupted, frames wait in its policy (in order).
    pub fn send_to(&self, conn_id: ConnId, frame: F) -> Result<()> {
        self.inner.send_frame(conn_id, frame).map_err(|(e, _)| e)
    }

    /// Sends `frame` to every connected peer, and to every interrupted resumable link (encoded
    /// once). Returns how many took it.
    pub fn broadcast(&self, frame: F) -> usize {
        self.inner.broadcast(&frame)
    }

    /// Ends one connection for good: a close with 1000 and, for an outbound connection, no
    /// redial. Its `Disconnected` event has cause [`DisconnectCause::Local`].
    ///
    /// # Errors
    /// [`Error::NoConnection`] for an unknown id.
    pub fn disconnect(&self, conn_id: ConnId) -> Result<()> {
        self.inner.disconnect(conn_id, DisconnectCause::Local)
    }

    /// A snapshot of one connection.
    pub fn get_connection(&self, conn_id: ConnId) -> Option<Connection> {
        let peer = self.inner.peers.read().get(&conn_id).cloned()?;
        Some(peer.snapshot(&self.inner.cfg))
    }

    /// Ids of the connections in `Connected` now.
    pub fn get_connected_peers(&self) -> Vec<ConnId> {
        let peers: Vec<Arc<Peer>> = self.inner.peers.read().values().cloned().collect();
        let mut v: Vec<(std::time::SystemTime, ConnId)> = peers
            .iter()
            .filter(|p| p.state() == ConnectionState::Connected)
            .map(|p| (p.created_at, p.id))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// Snapshots of every connection in the table (any state).
    pub fn connections(&self) -> Vec<Connection> {
        let peers: Vec<Arc<Peer>> = self.inner.peers.read().values().cloned().collect();
        let mut v: Vec<Connection> = peers.iter().map(|p| p.snapshot(&self.inner.cfg)).collect();
        v.sort_by_key(|c| c.created_at);
        v
    }

    /// Waits until `conn_id` is `Connected`, up to `timeout`. False when it ended or the time
    /// ran out.
    pub fn wait_connected(&self, conn_id: ConnId, timeout: Duration) -> bool {
        crate::threads::wait_for_state(
            &self.inner.state_lock,
            &self.inner.state_changed,
            timeout,
            || match self.inner.peers.read().get(&conn_id).map(|p| p.state()) {
                Some(ConnectionState::Connected) => Some(true),
                None | Some(ConnectionState::Disconnected) => Some(false),
                _ => None,
            },
        )
    }

    /// Calls `f` for each connection event, one call at a time.
    pub fn subscribe_events(
        &self,
        f: impl Fn(GatewayEvent) + Send + Sync + 'static,
    ) -> Subscription {
        self.inner.events.subscribe(Box::new(f))
    }

    /// Connection events as a bounded crossbeam receiver (ends with one terminal notification).
    pub fn events(&self) -> crossbeam_channel::Receiver<Notification<GatewayEvent>> {
        self.inner.events.stream()
    }

    /// Ends every link (a close with 1001, bounded by the close timeout), emits `Disconnected`
    /// for each with cause [`DisconnectCause::Stopped`], completes the streams and joins every
    /// thread. Idempotent; safe from any thread, callbacks included.
    pub fn stop(&self) {
        self.inner.stop();
    }

    /// Counters.
    pub fn stats(&self) -> GatewayStats {
        let peers: Vec<Arc<Peer>> = self.inner.peers.read().values().cloned().collect();
        let i = &self.inner;
        GatewayStats {
            ws: i.core.stats.snapshot(),
            send_errors: i.send_errors.load(Ordering::Relaxed),
            gaps: i.core.stats.gaps.load(Ordering::Relaxed),
            early_frames: i.early_frames.load(Ordering::Relaxed),
            handshakes_failed: i.handshakes_failed.load(Ordering::Relaxed),
            connections: peers.len(),
            connected: peers
                .iter()
                .filter(|p| p.state() == ConnectionState::Connected)
                .count(),
            resumes: i.core.stats.resumes.load(Ordering::Relaxed),
            replayed: i.core.stats.replayed.load(Ordering::Relaxed),
            duplicates: i.core.stats.duplicates.load(Ordering::Relaxed),
            resume_lost: i.core.stats.resume_lost.load(Ordering::Relaxed),
            interrupted: peers.iter().filter(|p| p.is_interrupted()).count(),
        }
    }

    /// Threads the node runs now (accept, and per link a reader and a writer).
    pub fn thread_count(&self) -> usize {
        self.inner.core.threads.live_count()
    }
}

impl<F: Framing> Endpoint for Inner<F> {
    type In = TaggedFrame<F>;
    type Out = TaggedFrame<F>;
    const KIND: &'static str = "gateway";

    fn core(&self) -> &Core<TaggedFrame<F>> {
        &self.core
    }

    fn send(&self, item: TaggedFrame<F>) -> std::result::Result<(), SendError<TaggedFrame<F>>> {
        let conn_id = item.conn_id;
        self.send_frame(conn_id, item.frame)
            .map_err(|(e, frame)| SendError::new(e, Some(TaggedFrame::new(conn_id, frame))))
    }

    fn complete(&self, _n: Notification<TaggedFrame<F>>) {
        self.stop();
    }

    fn dispose(&self) {
        self.stop();
    }
}

impl<F: Framing> Inner<F> {
    pub(crate) fn stopping(&self) -> bool {
        self.core.threads.is_stopping()
    }

    /// Wakes `wait_connected` callers.
    pub(crate) fn notify_state(&self) {
        let _g = self.state_lock.lock();
        self.state_changed.notify_all();
    }

    fn dial(self: &Arc<Self>, conn: WSConnectionConfig) -> Result<ConnId> {
        if self.stopping() {
            return Err(self.core.closed());
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let peer = Arc::new(Peer::new(
            ConnId::new(),
            crate::gateway::Direction::Outbound,
            Some(conn.clone()),
            seq,
        ));
        {
            let mut peers = self.peers.write();
            if peers.len() >= self.cfg.max_peers {
                return Err(Error::config(
                    "max_peers",
                    format!("{} connections already", self.cfg.max_peers),
                ));
            }
            peers.insert(peer.id, peer.clone());
        }
        let id = peer.id;
        let weak = Arc::downgrade(self);
        let p = peer.clone();
        if let Err(e) = self
            .core
            .threads
            .spawn(format!("rxgw-dial-{seq}"), move || {
                link::dial_loop(weak, p, conn)
            })
        {
            self.peers.write().remove(&id);
            return Err(e);
        }
        Ok(id)
    }

    fn not_connected(&self, conn_id: ConnId) -> Error {
        Error::NotConnected {
            ctx: Context::new(&self.core.name, Some(conn_id.to_string())),
        }
    }

    /// Sends one frame; hands it back with the reason when it was not taken.
    pub(crate) fn send_frame(
        &self,
        conn_id: ConnId,
        frame: F,
    ) -> std::result::Result<(), (Error, F)> {
        let res = self.try_send_frame(conn_id, &frame);
        res.map_err(|e| {
            self.send_errors.fetch_add(1, Ordering::Relaxed);
            (e, frame)
        })
    }

    fn try_send_frame(&self, conn_id: ConnId, frame: &F) -> Result<()> {
        // The table's read lock is held across the send (no reference count taken per frame).
        // The send calls only the frame's own encoder and never blocks: at most it waits
        // `OWN_LOCK_WAIT` (100 µs) for the link's write lock while its writer sends a batch.
        let peers = self.peers.read();
        let Some(peer) = peers.get(&conn_id) else {
            drop(peers);
            return Err(Error::NoConnection {
                ctx: Context::new(&self.core.name, Some(conn_id.to_string())),
            });
        };
        let encode = |out: &mut Vec<u8>| frame.encode_into(out);
        let sent = peer.send(
            peer::Outgoing::Encode(&encode, frame.encoded_len()),
            SendRole::OwnMayWait,
            &self.cfg,
            &self.core.name,
            &self.core.stats,
        );
        let peer = match &sent {
            peer::Sent::Overflow { disconnect: true } => Some(peer.clone()),
            _ => None,
        };
        drop(peers);
        match sent {
            peer::Sent::Ok => Ok(()),
            peer::Sent::NotConnected => Err(self.not_connected(conn_id)),
            peer::Sent::Overflow { disconnect } => {
                if let (true, Some(peer)) = (disconnect, peer) {
                    // Interrupted, over its buffer-k bound: the connection ends (no transport
                    // to send 4005 on); wake its dialer to say so.
                    self.end_peer(&peer, DisconnectCause::Overflow);
                }
                Err(Error::Overflow {
                    ctx: Context::new(&self.core.name, Some(conn_id.to_string())),
                    policy: self.cfg.overflow_strategy.name(),
                    capacity: self.cfg.overflow_size,
                })
            }
        }
    }

    fn broadcast(&self, frame: &F) -> usize {
        let msg = Bytes::from(frame.encode());
        let mut n = 0;
        let mut over = Vec::new();
        // Under the read lock, as a single send: no copy of the table per broadcast.
        for p in self.peers.read().values() {
            // An interrupted resumable link takes it too: it goes out after the resume.
            if p.state() != ConnectionState::Connected && p.session_id().is_none() {
                continue;
            }
            match p.send(
                peer::Outgoing::Encoded(msg.clone()),
                SendRole::Own,
                &self.cfg,
                &self.core.name,
                &self.core.stats,
            ) {
                peer::Sent::Ok => n += 1,
                sent => {
                    self.send_errors.fetch_add(1, Ordering::Relaxed);
                    if let peer::Sent::Overflow { disconnect: true } = sent {
                        over.push(p.clone());
                    }
                }
            }
        }
        // `buffer-k` / `disconnect` over their bound: those links end (after the lock).
        for p in over {
            self.end_peer(&p, DisconnectCause::Overflow);
        }
        n
    }

    fn disconnect(&self, conn_id: ConnId, cause: DisconnectCause) -> Result<()> {
        let Some(peer) = self.peers.read().get(&conn_id).cloned() else {
            return Err(Error::NoConnection {
                ctx: Context::new(&self.core.name, Some(conn_id.to_string())),
            });
        };
        self.end_peer(&peer, cause);
        Ok(())
    }

    /// Ends a connection for good: its link thread reports it, or, for an interrupted
    /// resumable link (which has none), this call does.
    pub(crate) fn end_peer(&self, peer: &Arc<Peer>, cause: DisconnectCause) {
        peer.end_with(cause.clone());
        if !peer.link_running() {
            self.finish(peer, cause);
        }
    }

    /// Drops a connection that never went live and never will (the accepting side's
    /// placeholder for a transport that resumed another link): no event.
    pub(crate) fn discard(&self, peer: &Peer) {
        if peer.mark_ended() {
            self.peers.write().remove(&peer.id);
        }
    }

    /// Emits `Disconnected` once for `peer` and removes it from the table. While the node
    /// stops, its link threads leave this to `stop`, which reports every connection left after
    /// the joins (so no link thread can block on a subscriber the stopping thread waits on).
    pub(crate) fn finish(&self, peer: &Arc<Peer>, cause: DisconnectCause) {
        if self.stopping() {
            return;
        }
        self.finish_now(peer, cause, None);
    }

    fn finish_now(&self, peer: &Arc<Peer>, cause: DisconnectCause, deadline: Option<Instant>) {
        // A cause this side set (disconnect, stop, duplicate, overflow) wins over how the
        // transport happened to end.
        let cause = peer.cause().unwrap_or(cause);
        let interrupted = peer.is_interrupted();
        if !peer.mark_ended() {
            return;
        }
        if interrupted && !matches!(cause, DisconnectCause::ResumeFailed(_)) {
            // An interrupted resumable link ends without a resume (its redials spent,
            // `disconnect`, `stop`): what it still held was never acknowledged; said and
            // counted (a failed resume said it already).
            let lost = peer.lost(None);
            if lost > 0 {
                self.core
                    .stats
                    .resume_lost
                    .fetch_add(lost, Ordering::Relaxed);
                log::warn!(component = &*self.core.name, conn_id:% = peer.id, cause:% = cause, lost; "interrupted resumable link ended with frames never acknowledged");
            }
        }
        self.peers.write().remove(&peer.id);
        let remote = peer.remote();
        log::info!(component = &*self.core.name, conn_id:% = peer.id, remote_node_id:? = remote.map(|r| r.to_string()), cause:% = cause; "{}", event::CONNECTION_CLOSED);
        self.notify_state();
        let event = GatewayEvent::Disconnected {
            conn_id: peer.id,
            remote_node_id: remote,
            cause,
        };
        match deadline {
            Some(d) => self.events.next_final(event, d),
            None => self.events.next(event),
        }
    }

    fn stop(&self) {
        if !self.core.begin_dispose() {
            return;
        }
        // No event delivery may hold the stop up (a subscriber may be the caller, or a full
        // receiver nobody reads): what stop reports goes out with a deadline below.
        self.events.abort();
        log::info!(component = &*self.core.name, node_id:% = self.node_id; "{}", event::GATEWAY_STOPPING);
        let peers: Vec<Arc<Peer>> = self.peers.read().values().cloned().collect();
        for p in &peers {
            p.end_with(DisconnectCause::Stopped);
        }
        // Links close with 1001 and end on their own within the close timeout; then the rest
        // is cut.
        let deadline = Instant::now() + self.cfg.ws.close_timeout.min(Duration::from_secs(1));
        {
            // Link threads notify as they end (`notify_state`).
            let mut guard = self.state_lock.lock();
            while peers.iter().any(|p| p.link_running()) {
                if self
                    .state_changed
                    .wait_until(&mut guard, deadline)
                    .timed_out()
                {
                    break;
                }
            }
        }
        for p in &peers {
            p.abort();
        }
        self.handshakes.abort_all();
        self.wake_accept();
        self.core.threads.join_all();
        let left: Vec<Arc<Peer>> = self.peers.read().values().cloned().collect();
        let deadline = Instant::now() + crate::reactive::TERMINAL_SEND_WAIT;
        for p in left {
            self.finish_now(&p, DisconnectCause::Stopped, Some(deadline));
        }
        self.core.terminate(Notification::Completed);
        self.events.terminate(Notification::Completed);
        self.notify_state();
        log::info!(component = &*self.core.name, node_id:% = self.node_id; "{}", event::GATEWAY_STOPPED);
    }

    fn wake_accept(&self) {
        if let Some(addr) = *self.local_addr.lock() {
            listen::wake(&self.listener.lock(), addr);
        }
    }
}

/// The node's resume thread (`rxgw-resume`, with resume on): acknowledges what arrived on each
/// resumable link at least every `ack_interval`, and ends the interrupted inbound links whose
/// session expired (an outbound one is ended by its own dialer).
fn resume_loop<F: Framing>(weak: Weak<Inner<F>>) {
    let (tick, stop) = match weak.upgrade() {
        Some(i) => (
            i.cfg.resume.ack_interval,
            i.core.threads.stop_signal().clone(),
        ),
        None => return,
    };
    // Ready (disconnected) once the node stops.
    while stop.recv_timeout(tick) == Err(crossbeam_channel::RecvTimeoutError::Timeout) {
        let Some(inner) = weak.upgrade() else { return };
        let peers: Vec<Arc<Peer>> = inner.peers.read().values().cloned().collect();
        let now = Instant::now();
        for p in peers {
            if let Some(h) = p.ack_due() {
                p.ack_now(&h);
            }
            p.trim();
            if p.direction == crate::gateway::Direction::Inbound
                && p.try_expire(now, inner.cfg.resume.session_expiry)
            {
                // The cause is set already (no resume can start now).
                link::resume_failed(&inner, &p, ResumeFailure::Expired, None);
            }
        }
    }
}
