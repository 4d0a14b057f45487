//! The connection core shared by server and client: one full-duplex WebSocket over a blocking
//! `TcpStream`, driven by two threads (see `ADR/2026-11-21-full-duplex-connection-threads.md`).
//!
//! * The **reader** (the thread that calls [`ConnRun::run`]) owns tungstenite's read state. Its
//!   stream has writes switched off after the handshake, so tungstenite's automatic pong and
//!   close replies go nowhere; the reader hands them to the writer instead.
//! * The **writer** thread is the socket's only writer. It takes protocol replies from a small
//!   control channel (checked first) and data from the connection's outbound queue, writes a
//!   batch and flushes once. After it writes a close frame it takes no more data. It also sends
//!   heartbeat pings on its own deadline, and it always shuts the socket down when it exits,
//!   which ends the reader's blocking read.
//!
//! Neither thread polls: the reader blocks in `read`, the writer blocks in `select`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Select, Sender, TryRecvError};
use tungstenite::error::{CapacityError, ProtocolError};
use tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::{CloseFrame, Role, WebSocket, WebSocketContext};
use tungstenite::Message;

use crate::error::{Error, Result};
use crate::overflow::OverflowStrategy;
use crate::stats::Stats;
use crate::telemetry::event;
use crate::threads::Threads;
use crate::ws::outbound::{push_outbound, OutQueue, Refused};
use crate::ws::ConnId;

/// Messages written per batch before the writer checks control replies and flushes.
const MAX_BATCH: usize = 256;
/// How long the writer lets a bursting sender add to the buffer before sending it.
const GATHER: Duration = Duration::from_micros(20);
/// How long the writer waits for more after a batch before parking.
const BURST_LINGER: Duration = Duration::from_micros(50);
/// Bytes encoded per batch (one `send`).
const MAX_BATCH_BYTES: usize = 64 << 10;
/// Capacity of the encode buffer kept between batches; a larger one (after a big message) is
/// released, so an idle connection holds little.
const KEEP_OUT_CAPACITY: usize = 128 << 10;
/// Control replies waiting for the writer; a full channel pushes back on the reader.
const CTRL_CAPACITY: usize = 64;

/// A `TcpStream` whose writes can be switched off: tungstenite's reader needs `Read + Write`, but
/// after the handshake every byte must leave through the writer thread.
pub(crate) struct HalfStream {
    sock: TcpStream,
    writes: bool,
}

impl HalfStream {
    pub(crate) fn new(sock: TcpStream) -> Self {
        HalfStream { sock, writes: true }
    }
    pub(crate) fn sock(&self) -> &TcpStream {
        &self.sock
    }
}

impl Read for HalfStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.read(buf)
    }
}

impl Write for HalfStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.writes {
            self.sock.write(buf)
        } else {
            Ok(buf.len())
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.writes {
            self.sock.flush()
        } else {
            Ok(())
        }
    }
}

/// The write half of a connection, behind the handle's lock: whoever holds the lock is the
/// socket's one writer (the writer thread, or a sender on the direct path). Frames are encoded
/// into `out` and leave in one `send` per batch.
pub(crate) struct WriteState {
    ctx: WebSocketContext,
    role: Role,
    /// Encoded bytes not yet on the socket, oldest first.
    out: OutBuf,
    /// Data messages and payload bytes in `out` (counted as written once `out` is on the socket).
    out_msgs: usize,
    out_bytes: usize,
    /// Copies of the data messages not yet fully on the socket (only with `keep_unsent`).
    unsent: Vec<Message>,
    /// A close frame has been encoded: no data may follow.
    closed: bool,
    /// A write failed: the connection is lost.
    failed: bool,
}

/// XORs a client frame's payload with its mask (RFC 6455 5.3), eight bytes at a time.
fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// tungstenite encodes into any `Read + Write`; this one only collects bytes.
struct OutBuf(Vec<u8>);

impl Read for OutBuf {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for OutBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl WriteState {
    fn new(role: Role, ws: tungstenite::protocol::WebSocketConfig) -> Self {
        WriteState {
            // This context never reads: no read buffer.
            ctx: WebSocketContext::new(role, Some(ws.read_buffer_size(0))),
            role,
            out: OutBuf(Vec::new()),
            out_msgs: 0,
            out_bytes: 0,
            unsent: Vec::new(),
            closed: false,
            failed: false,
        }
    }

    /// Encodes one data message behind whatever is already in `out`.
    fn encode(&mut self, msg: Message, keep: bool) -> tungstenite::Result<()> {
        self.out_msgs += 1;
        self.out_bytes += msg.len();
        let (opcode, payload) = match &msg {
            Message::Text(t) => (OpData::Text, t.as_bytes()),
            Message::Binary(b) => (OpData::Binary, &b[..]),
            _ => {
                // Not produced by the datatypes; tungstenite handles anything else.
                self.ctx.write(&mut self.out, msg)?;
                return self.ctx.flush(&mut self.out);
            }
        };
        // Framed straight into `out`: one copy of the payload (tungstenite's context would
        // buffer it and then copy it again into ours).
        let mask = (self.role == Role::Client).then(rand::random::<[u8; 4]>);
        let header = FrameHeader {
            opcode: OpCode::Data(opcode),
            mask,
            ..FrameHeader::default()
        };
        header.format(payload.len() as u64, &mut self.out.0)?;
        let start = self.out.0.len();
        self.out.0.extend_from_slice(payload);
        if let Some(mask) = mask {
            apply_mask(&mut self.out.0[start..], mask);
        }
        if keep {
            self.unsent.push(msg);
        }
        Ok(())
    }

    /// Encodes a ping or pong.
    fn encode_control(&mut self, msg: Message) -> tungstenite::Result<()> {
        self.ctx.write(&mut self.out, msg)?;
        self.ctx.flush(&mut self.out)
    }

    /// Writes all of `out`, blocking; from here on its messages count as written.
    fn write_out(&mut self, mut sock: &TcpStream, stats: &Stats) -> io::Result<()> {
        if !self.out.0.is_empty() {
            if let Err(e) = sock.write_all(&self.out.0) {
                self.failed = true;
                return Err(e);
            }
            self.out.0.clear();
            if self.out.0.capacity() > KEEP_OUT_CAPACITY {
                self.out.0 = Vec::new();
            }
        }
        self.commit(stats);
        Ok(())
    }

    /// Writes as much of `out` as the socket takes without blocking. Returns true when all of it
    /// went; the rest stays in `out` for the writer thread.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn write_out_nonblocking(&mut self, sock: &TcpStream, stats: &Stats) -> io::Result<bool> {
        let sock = socket2::SockRef::from(sock);
        let mut sent = 0;
        let buf = &self.out.0;
        while sent < buf.len() {
            match sock.send_with_flags(&buf[sent..], libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
        if sent < self.out.0.len() {
            self.out.0.drain(..sent);
            return Ok(false);
        }
        self.out.0.clear();
        self.commit(stats);
        Ok(true)
    }

    fn commit(&mut self, stats: &Stats) {
        if self.out_msgs > 0 {
            stats.record_out(self.out_msgs, self.out_bytes);
            self.out_msgs = 0;
            self.out_bytes = 0;
        }
        self.unsent.clear();
    }
}

/// What the reader asks of the writer, and the graceful close request.
enum Ctrl {
    Pong(tungstenite::Bytes),
    /// The peer sent a close frame; reply with this one (or acknowledge ours).
    PeerClosed(Option<CloseFrame>),
    /// The peer broke the protocol: send this close frame and end at once.
    Fail(CloseFrame),
    /// Close gracefully: flush queued data (bounded), send this close frame, wait for the peer's.
    Close(Option<CloseFrame>),
    ReaderDone,
}

/// Who a connection is.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub(crate) id: ConnId,
    pub(crate) seq: u64,
    pub(crate) peer: SocketAddr,
}

/// Parameters a connection needs from its component's config.
#[derive(Clone)]
pub(crate) struct ConnParams {
    pub(crate) role: Role,
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) ping_timeout: Option<Duration>,
    pub(crate) close_timeout: Duration,
    /// Keep messages written since the last successful flush, to resend after a reconnect.
    pub(crate) keep_unsent: bool,
    pub(crate) ws: tungstenite::protocol::WebSocketConfig,
}

/// How a connection ended, as the reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// Close handshake completed or the peer closed TCP after a close frame.
    Closed,
    /// The peer broke the protocol; we closed with this code.
    ProtocolError(u16, String),
    /// The socket failed or the peer vanished without a close frame.
    Lost(String),
    /// Aborted on our side (dispose, or an overflow policy's disconnect): what was still
    /// buffered inbound is not delivered.
    Aborted,
}

/// A connection's outbound queue.
pub(crate) enum Outbound {
    /// Kept by a client across reconnects.
    Shared(Arc<OutQueue>),
    /// Built on the first message that has to be queued: a connection that only ever writes
    /// directly (idle, or request/response) never allocates one.
    PerConnection {
        strategy: OverflowStrategy,
        capacity: usize,
        max_bytes: usize,
    },
}

type Queue = Arc<OutQueue>;

/// What [`ConnRun::run`] hands back.
pub(crate) struct ConnEnd {
    pub(crate) reason: EndReason,
    /// Accepted messages not confirmed written (only with `keep_unsent`), oldest first.
    pub(crate) unsent: Vec<Message>,
}

/// The handle other threads use to send to, close or abort a connection.
pub(crate) struct ConnHandle {
    pub(crate) info: ConnInfo,
    component: Arc<str>,
    ctrl: Sender<Ctrl>,
    /// None inside once the connection ended: no queue may be built after that.
    queue: OnceLock<Option<Queue>>,
    /// How to build the queue on first use (per-connection queues only).
    make_queue: Option<(OverflowStrategy, usize, usize)>,
    queue_capacity: usize,
    sock: TcpStream,
    ended: AtomicBool,
    /// Set by [`abort`](Self::abort): the reader delivers nothing more.
    aborted: AtomicBool,
    stats: Arc<Stats>,
    // Dropping the sender wakes the writer even when the reader is busy in a callback
    // (e.g. the callback that is disposing the component).
    kill_tx: parking_lot::Mutex<Option<Sender<()>>>,
    kill_rx: Receiver<()>,
    /// The write half; its holder is the socket's one writer.
    wr: parking_lot::Mutex<WriteState>,
    /// Asks the writer thread to finish what a direct write left in `out`.
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
    keep_unsent: bool,
    epoch: Instant,
    /// Nanoseconds since `epoch` before which a sender queues instead of writing itself.
    direct_after: AtomicU64,
    /// Pongs the reader handed to the writer and not yet written: data the reader's callbacks
    /// send after a ping must follow its pong (RFC 6455 5.5.2; Autobahn 5.6–5.20).
    pongs_pending: AtomicUsize,
}

impl ConnHandle {
    /// Sends a message: written on the calling thread when the connection is idle (see
    /// [`try_direct`](Self::try_direct)), otherwise queued by the outbound policy. `Err` when
    /// it was dropped.
    pub(crate) fn send(&self, msg: Message) -> std::result::Result<(), Refused> {
        match self.try_direct(msg) {
            None => Ok(()),
            Some(msg) => self.enqueue(msg),
        }
    }

    /// Writes `msg` on the calling thread when that can neither reorder nor block: nothing is
    /// queued or half-written, no one else is writing, and the socket takes the bytes now (a
    /// remainder goes to the writer thread). A sender that writes back to back (its last direct
    /// write ended more recently than it took) queues instead, so bursts are batched by the
    /// writer thread rather than paying a syscall per message. Returns the message when it must
    /// be queued.
    ///
    /// Ordering holds because messages leave the queue only under the same lock: with the lock
    /// held and the queue empty, everything sent before has been encoded.
    pub(crate) fn try_direct(&self, msg: Message) -> Option<Message> {
        // Cheap refusals first: in a burst the queue is rarely empty, and the clock costs more.
        if !cfg!(any(target_os = "linux", target_os = "android"))
            || self.ended.load(Ordering::Acquire)
            || self.queue().is_some_and(|q| !q.is_empty())
        {
            return Some(msg);
        }
        // A zero-capacity queue ("disconnect") has no other way in: never a burst.
        let start = self.nanos();
        let burst = self.queue_capacity > 0 && start < self.direct_after.load(Ordering::Relaxed);
        let Some(mut w) = self.wr.try_lock() else {
            return Some(msg);
        };
        if w.closed
            || w.failed
            || self.queue().is_some_and(|q| !q.is_empty())
            || self.pongs_pending.load(Ordering::Acquire) > 0
        {
            return Some(msg);
        }
        // Frames already waiting in the buffer: a burst too. (Reading the clock only when the
        // buffer is empty measured no better: 16 interleaved w1 pairs, ahead in 6.)
        if burst || !w.out.0.is_empty() {
            // In a burst: frame it behind what waits in the buffer and let the writer thread
            // send the lot with one syscall (woken once per batch, not per message).
            if w.out.0.len() >= MAX_BATCH_BYTES {
                return Some(msg);
            }
            let first = w.out.0.is_empty();
            let res = w.encode(msg, self.keep_unsent);
            drop(w);
            match res {
                Ok(()) if first => {
                    let _ = self.wake_tx.try_send(());
                }
                Ok(()) => {}
                Err(e) => {
                    log::debug!(component = &*self.component, conn_id:% = self.info.id, error:% = e; "frame not encoded; connection lost");
                    self.abort();
                }
            }
            return None;
        }
        let res = match w.encode(msg, self.keep_unsent) {
            Ok(()) => self.write_direct(&mut w),
            Err(e) => Err(io::Error::other(e)),
        };
        drop(w);
        self.stats.direct_writes.fetch_add(1, Ordering::Relaxed);
        match res {
            Ok(true) => {}
            Ok(false) => {
                let _ = self.wake_tx.try_send(());
            }
            Err(e) => {
                log::debug!(component = &*self.component, conn_id:% = self.info.id, peer:% = self.info.peer, error:% = e; "direct write failed; connection lost");
                self.abort();
            }
        }
        let end = self.nanos();
        self.direct_after
            .store(end + (end - start), Ordering::Relaxed);
        None
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn write_direct(&self, w: &mut WriteState) -> io::Result<bool> {
        w.write_out_nonblocking(&self.sock, &self.stats)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn write_direct(&self, w: &mut WriteState) -> io::Result<bool> {
        // Unreachable: try_direct returns early on these targets.
        w.write_out(&self.sock, &self.stats).map(|()| true)
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Queues a message by the outbound policy (for fan-out, where one thread writing to many
    /// sockets would serialise what the writer threads do in parallel). `Err` when it was not
    /// queued.
    pub(crate) fn enqueue(&self, msg: Message) -> std::result::Result<(), Refused> {
        let existed = self.queue.get().is_some();
        let queue = match self.queue.get_or_init(|| self.build_queue()) {
            Some(q) if !self.ended.load(Ordering::Acquire) => q,
            _ => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::Closed);
            }
        };
        let queued = push_outbound(
            queue,
            msg,
            &self.component,
            Some(&self.info),
            &self.stats,
            || self.abort(),
        );
        if !existed {
            // The writer waits on the queue only once it knows it exists.
            let _ = self.wake_tx.try_send(());
        }
        queued
    }

    /// The overflow error for a message this connection's policy refused.
    pub(crate) fn overflow_error(&self) -> Error {
        let policy = match (self.queue(), self.make_queue) {
            (Some(q), _) => q.name(),
            (None, Some((strategy, _, _))) => strategy.name(),
            (None, None) => "none",
        };
        Error::Overflow {
            ctx: crate::error::Context::new(&self.component, Some(self.info.id.to_string())),
            policy,
            capacity: self.queue_capacity,
        }
    }

    /// The outbound queue, if it has been built.
    fn queue(&self) -> Option<&Queue> {
        self.queue.get().and_then(Option::as_ref)
    }

    fn build_queue(&self) -> Option<Queue> {
        let (strategy, capacity, max_bytes) = self.make_queue?;
        match OutQueue::new(strategy, capacity, max_bytes) {
            Ok(q) => Some(Arc::new(q)),
            Err(e) => {
                // The config was validated when the component was built.
                log::warn!(component = &*self.component, conn_id:% = self.info.id, error:% = e; "outbound queue not built");
                None
            }
        }
    }

    /// Starts a graceful close: queued data is flushed (bounded), then a close frame is sent.
    pub(crate) fn close(&self, frame: Option<CloseFrame>) {
        let _ = self.ctrl.try_send(Ctrl::Close(frame));
    }

    /// Ends the connection now: both directions of the socket are shut down, which wakes the
    /// reader and a writer blocked on a full socket.
    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.ended.store(true, Ordering::Release);
        // A per-connection queue ends with the connection (and is never built after this).
        if self.make_queue.is_some() {
            if let Some(q) = self.queue.get_or_init(|| None) {
                q.close();
            }
        }
        self.kill_tx.lock().take();
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

/// A handshaken connection, ready to run on the current (reader) thread.
pub(crate) struct ConnRun {
    ws: WebSocket<HalfStream>,
    handle: Arc<ConnHandle>,
    ctrl_rx: Receiver<Ctrl>,
    params: ConnParams,
}

impl ConnRun {
    /// Wraps a socket whose handshake is done.
    pub(crate) fn new(
        mut ws: WebSocket<HalfStream>,
        info: ConnInfo,
        component: Arc<str>,
        outbound: Outbound,
        params: ConnParams,
        stats: Arc<Stats>,
    ) -> Result<(Self, Arc<ConnHandle>)> {
        let sock = ws
            .get_ref()
            .sock()
            .try_clone()
            .map_err(|e| Error::io(&component, Some(info.peer.to_string()), e))?;
        ws.get_mut().writes = false;
        let (ctrl_tx, ctrl_rx) = bounded(CTRL_CAPACITY);
        let (kill_tx, kill_rx) = bounded(0);
        let (wake_tx, wake_rx) = bounded(1);
        let (queue, make_queue, queue_capacity) = match outbound {
            Outbound::Shared(q) => {
                let cap = q.capacity();
                (OnceLock::from(Some(q)), None, cap)
            }
            Outbound::PerConnection {
                strategy,
                capacity,
                max_bytes,
            } => (
                OnceLock::new(),
                Some((strategy, capacity, max_bytes)),
                capacity,
            ),
        };
        let handle = Arc::new(ConnHandle {
            info,
            component,
            ctrl: ctrl_tx,
            queue,
            make_queue,
            queue_capacity,
            sock,
            ended: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            stats,
            kill_tx: parking_lot::Mutex::new(Some(kill_tx)),
            kill_rx,
            wr: parking_lot::Mutex::new(WriteState::new(params.role, params.ws)),
            wake_tx,
            wake_rx,
            keep_unsent: params.keep_unsent,
            epoch: Instant::now(),
            direct_after: AtomicU64::new(0),
            pongs_pending: AtomicUsize::new(0),
        });
        Ok((
            ConnRun {
                ws,
                handle: handle.clone(),
                ctrl_rx,
                params,
            },
            handle,
        ))
    }

    /// Messages to write before anything queued (a client's unsent batch from the last
    /// connection).
    /// Encoded now, before the handle can take a direct write, so nothing overtakes them.
    pub(crate) fn with_pending(self, pending: Vec<Message>) -> Self {
        let mut w = self.handle.wr.lock();
        for msg in pending {
            // Data frames are framed into a Vec (cannot fail); anything else goes through a
            // fresh context, which refuses only after a close.
            if let Err(e) = w.encode(msg, self.params.keep_unsent) {
                log::warn!(component = &*self.handle.component, conn_id:% = self.handle.info.id, error:% = e; "unsent message not resent");
                self.handle.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(w);
        self
    }

    /// Runs the connection: spawns the writer on `threads`, reads on this thread, calls
    /// `on_message` for each data message, and returns when both directions are done.
    pub(crate) fn run(
        self,
        threads: &Arc<Threads>,
        mut on_message: impl FnMut(Message),
    ) -> ConnEnd {
        let ConnRun {
            mut ws,
            handle,
            ctrl_rx,
            params,
        } = self;
        let component = handle.component.clone();
        let peer = handle.info.peer.to_string();
        let conn_id = handle.info.id.to_string();
        let start = Instant::now();
        let last_pong = Arc::new(AtomicU64::new(0));
        let (done_tx, done_rx) = bounded::<Vec<Message>>(1);

        let writer_sock = match handle.sock.try_clone() {
            Ok(s) => s,
            Err(e) => {
                handle.abort();
                return ConnEnd {
                    reason: EndReason::Lost(e.to_string()),
                    unsent: Vec::new(),
                };
            }
        };
        // A write that makes no progress for a whole heartbeat cycle means the peer stopped
        // reading: fail it rather than block forever (the heartbeat cannot run meanwhile).
        if let (Some(i), Some(t)) = (params.ping_interval, params.ping_timeout) {
            let _ = writer_sock.set_write_timeout(Some(i + t));
        }
        let writer = Writer {
            sock: writer_sock,
            ctrl_rx,
            handle: handle.clone(),
            params: params.clone(),
            start,
            last_pong: last_pong.clone(),
            held: None,
        };
        let name = format!("rxws-conn-{}-write", handle.info.seq);
        if let Err(e) = threads.spawn(name, move || {
            let unsent = writer.run();
            let _ = done_tx.send(unsent);
        }) {
            log::debug!(component = &*component, conn_id = conn_id.as_str(), error:% = e; "writer not started");
            handle.abort();
            return ConnEnd {
                reason: EndReason::Lost(e.to_string()),
                unsent: Vec::new(),
            };
        }

        let ctrl = handle.ctrl.clone();
        let reason = loop {
            let read = ws.read();
            // After an abort the socket still yields what the kernel (or tungstenite) had
            // buffered: none of it is delivered, so dispose is bounded however much waits.
            if handle.aborted.load(Ordering::Acquire) {
                break EndReason::Aborted;
            }
            match read {
                Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                    handle.stats.record_in(msg.len());
                    on_message(msg);
                }
                Ok(Message::Ping(data)) => {
                    handle.pongs_pending.fetch_add(1, Ordering::AcqRel);
                    if ctrl.send(Ctrl::Pong(data)).is_err() {
                        break EndReason::Lost("writer ended".into());
                    }
                }
                Ok(Message::Pong(_)) => {
                    last_pong.store(elapsed_nanos(start), Ordering::Release);
                }
                Ok(Message::Close(frame)) => {
                    let _ = ctrl.send(Ctrl::PeerClosed(frame));
                }
                Ok(Message::Frame(_)) => {}
                Err(tungstenite::Error::ConnectionClosed)
                | Err(tungstenite::Error::AlreadyClosed) => {
                    break EndReason::Closed;
                }
                Err(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    break EndReason::Lost("peer closed without a close frame".into());
                }
                Err(e) => {
                    if let Some((code, why)) = fail_code(&e) {
                        log::debug!(component = &*component, conn_id = conn_id.as_str(), peer = peer.as_str(), code = u16::from(code), error:% = e; "protocol error from peer; failing the connection");
                        let _ = ctrl.send(Ctrl::Fail(CloseFrame {
                            code,
                            reason: why.into(),
                        }));
                        break EndReason::ProtocolError(u16::from(code), e.to_string());
                    }
                    break EndReason::Lost(e.to_string());
                }
            }
        };
        // A peer that vanished can leave the writer blocked on a full socket: once the peer is
        // lost, or the writer has had its close timeout, shutting the socket down ends the write.
        if matches!(reason, EndReason::Lost(_)) {
            let _ = handle.sock.shutdown(Shutdown::Both);
        }
        // The writer's own close steps take up to one close timeout each.
        let deadline = Instant::now() + params.close_timeout * 2;
        if ctrl.send_deadline(Ctrl::ReaderDone, deadline).is_err() {
            let _ = handle.sock.shutdown(Shutdown::Both);
        }
        drop(ctrl);
        let unsent = match done_rx.recv_deadline(deadline) {
            Ok(unsent) => unsent,
            Err(_) => {
                let _ = handle.sock.shutdown(Shutdown::Both);
                done_rx.recv().unwrap_or_default()
            }
        };
        handle.ended.store(true, Ordering::Release);
        ConnEnd { reason, unsent }
    }
}

/// The close code for a protocol violation by the peer, or None when the socket simply failed.
fn fail_code(e: &tungstenite::Error) -> Option<(CloseCode, &'static str)> {
    match e {
        tungstenite::Error::Utf8(_) => Some((CloseCode::Invalid, "invalid UTF-8")),
        tungstenite::Error::Capacity(CapacityError::MessageTooLong { .. }) => {
            Some((CloseCode::Size, "message too big"))
        }
        tungstenite::Error::Capacity(_) => Some((CloseCode::Size, "too big")),
        tungstenite::Error::Protocol(_) => Some((CloseCode::Protocol, "protocol error")),
        _ => None,
    }
}

fn elapsed_nanos(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

struct Writer {
    sock: TcpStream,
    ctrl_rx: Receiver<Ctrl>,
    handle: Arc<ConnHandle>,
    params: ConnParams,
    start: Instant,
    last_pong: Arc<AtomicU64>,
    /// Taken from the queue but waiting for a pong to go first.
    held: Option<Message>,
}

/// What the writer does after handling an event.
enum Step {
    Continue,
    /// Wait (bounded) for the reader to finish, then end.
    Linger,
    End,
}

impl Writer {
    fn run(mut self) -> Vec<Message> {
        // A client's unsent batch from the last connection goes first.
        let step = match self.drain(None) {
            Ok(_) => self.serve(),
            Err(e) => {
                self.lost(&e);
                Step::End
            }
        };
        if matches!(step, Step::Linger) {
            self.linger();
        }
        let _ = self.sock.shutdown(Shutdown::Both);
        self.handle.ended.store(true, Ordering::Release);
        let mut unsent = std::mem::take(&mut self.handle.wr.lock().unsent);
        if let Some(msg) = self.held.take() {
            if self.params.keep_unsent {
                unsent.push(msg);
            } else {
                self.handle.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        unsent
    }

    fn serve(&mut self) -> Step {
        let ctrl_rx = self.ctrl_rx.clone();
        let kill_rx = self.handle.kill_rx.clone();
        let wake_rx = self.handle.wake_rx.clone();
        let mut queue_rx: Option<Receiver<Message>> = None;
        let mut next_ping = self.params.ping_interval.map(|i| Instant::now() + i);
        let mut ping_sent: Option<(Instant, u64)> = None;
        // Rebuilt once, when a per-connection queue is first built.
        'select: loop {
            if queue_rx.is_none() {
                queue_rx = self.handle.queue().map(|q| q.receiver().clone());
            }
            // Readiness only: data leaves the queue under the write lock (see `try_direct`).
            let mut sel = Select::new();
            sel.recv(&ctrl_rx);
            sel.recv(&kill_rx);
            sel.recv(&wake_rx);
            if let Some(q) = &queue_rx {
                sel.recv(q);
            }
            loop {
                // Protocol replies go first.
                while let Ok(c) = ctrl_rx.try_recv() {
                    match self.control(c) {
                        Step::Continue => {}
                        other => return other,
                    }
                }
                if matches!(kill_rx.try_recv(), Err(TryRecvError::Disconnected)) {
                    return Step::End;
                }
                if wake_rx.try_recv().is_ok() {
                    self.gather();
                }
                let written = match self.drain(None) {
                    Ok(n) => n,
                    Err(e) => {
                        self.lost(&e);
                        return Step::End;
                    }
                };
                if !ctrl_rx.is_empty() || (written > 0 && self.more_soon()) {
                    continue;
                }
                if queue_rx.is_none() && self.handle.queue().is_some() {
                    continue 'select;
                }
                let pong_deadline = match (ping_sent, self.params.ping_timeout) {
                    (Some((at, _)), Some(t)) => Some(at + t),
                    _ => None,
                };
                let deadline = match (next_ping, pong_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let ready = match deadline {
                    Some(d) => sel.ready_deadline(d).is_ok(),
                    None => {
                        sel.ready();
                        true
                    }
                };
                if ready {
                    continue;
                }
                // Heartbeat deadline.
                let now = Instant::now();
                if let Some((_, sent_nanos)) = ping_sent {
                    if self.last_pong.load(Ordering::Acquire) >= sent_nanos {
                        ping_sent = None;
                    }
                }
                if let (Some((at, _)), Some(t)) = (ping_sent, self.params.ping_timeout) {
                    if now >= at + t {
                        log::warn!(component = &*self.handle.component, conn_id:% = self.handle.info.id, peer:% = self.handle.info.peer, timeout_ms = t.as_millis() as u64; "{}", event::HEARTBEAT_TIMEOUT);
                        return Step::End;
                    }
                }
                if let (Some(np), Some(i)) = (next_ping, self.params.ping_interval) {
                    if now >= np {
                        if ping_sent.is_none() {
                            ping_sent = Some((now, elapsed_nanos(self.start)));
                        }
                        next_ping = Some(now + i);
                        if let Err(e) = self.write_control(Message::Ping(tungstenite::Bytes::new()))
                        {
                            self.lost(&e);
                            return Step::End;
                        }
                    }
                }
            }
        }
    }

    fn control(&mut self, c: Ctrl) -> Step {
        match c {
            Ctrl::Pong(data) => {
                let res = self.write_control(Message::Pong(data));
                self.handle.pongs_pending.fetch_sub(1, Ordering::AcqRel);
                if let Err(e) = res {
                    self.lost(&e);
                    return Step::End;
                }
                Step::Continue
            }
            // Whatever was queued before the peer's close (e.g. replies the reader's callbacks
            // produced) goes out before our close reply.
            Ctrl::PeerClosed(frame) => {
                self.close_after_queued(frame);
                Step::Linger
            }
            // Replies to the valid messages before the violation still go out.
            Ctrl::Fail(frame) => {
                self.close_after_queued(Some(frame));
                Step::End
            }
            Ctrl::Close(frame) => {
                self.close_after_queued(frame);
                Step::Linger
            }
            Ctrl::ReaderDone => Step::End,
        }
    }

    /// Writes a ping or pong (none after a close frame).
    fn write_control(&mut self, msg: Message) -> tungstenite::Result<()> {
        let mut w = self.handle.wr.lock();
        if w.closed || w.failed {
            return Ok(());
        }
        w.encode_control(msg)?;
        w.write_out(&self.sock, &self.handle.stats)?;
        Ok(())
    }

    /// Writes what is left in `out` and what is queued, in batches of one `send` each, until
    /// the queue is empty, a control reply waits, or `deadline` passes.
    fn drain(&mut self, deadline: Option<Instant>) -> tungstenite::Result<usize> {
        let mut written = 0;
        let handle = self.handle.clone();
        let stats = &handle.stats;
        let mut w = handle.wr.lock();
        if w.failed {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe).into());
        }
        w.write_out(&self.sock, stats)?;
        // While closing, pongs no longer matter: everything queued goes before the close frame.
        let closing = deadline.is_some();
        while !w.closed && deadline.is_none_or(|d| Instant::now() < d) {
            let mut n = 0;
            while n < MAX_BATCH && w.out.0.len() < MAX_BATCH_BYTES {
                let next = self
                    .held
                    .take()
                    .or_else(|| handle.queue().and_then(|q| q.try_pop()));
                let Some(msg) = next else {
                    break;
                };
                // A message sent after the reader saw a ping waits for that ping's pong.
                if !closing && handle.pongs_pending.load(Ordering::Acquire) > 0 {
                    self.held = Some(msg);
                    break;
                }
                w.encode(msg, self.params.keep_unsent)?;
                n += 1;
            }
            if n == 0 {
                break;
            }
            w.write_out(&self.sock, stats)?;
            written += n;
            if !closing && (self.held.is_some() || !self.ctrl_rx.is_empty()) {
                break;
            }
        }
        Ok(written)
    }

    /// Woken for frames a sender put in the buffer during a burst: give it a moment to add
    /// more, so they leave in one syscall.
    fn gather(&self) {
        let until = Instant::now() + GATHER;
        while Instant::now() < until && self.ctrl_rx.is_empty() {
            std::thread::yield_now();
        }
    }

    /// After a batch, a producer in a burst usually has more within microseconds: wait for it
    /// briefly (yielding the CPU) rather than park and make it pay a wake-up per message.
    fn more_soon(&self) -> bool {
        let until = Instant::now() + BURST_LINGER;
        loop {
            if self.handle.queue().is_some_and(|q| !q.is_empty())
                || !self.ctrl_rx.is_empty()
                || !self.handle.wake_rx.is_empty()
            {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::yield_now();
        }
    }

    /// Graceful close: flush what is queued (bounded by the close timeout), then the close frame.
    fn close_after_queued(&mut self, frame: Option<CloseFrame>) {
        if self.handle.wr.lock().closed {
            return;
        }
        if let Err(e) = self.drain(Some(Instant::now() + self.params.close_timeout)) {
            self.lost(&e);
            return;
        }
        let mut guard = self.handle.wr.lock();
        let w = &mut *guard;
        w.closed = true;
        let res = w
            .ctx
            .close(&mut w.out, frame)
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|()| w.write_out(&self.sock, &self.handle.stats));
        if let Err(e) = res {
            log::debug!(component = &*self.handle.component, conn_id:% = self.handle.info.id, error:% = e; "close frame not written");
        }
    }

    /// After a close frame: wait (bounded) for the reader to see the end of the stream.
    fn linger(&mut self) {
        let deadline = Instant::now() + self.params.close_timeout;
        let kill_rx = self.handle.kill_rx.clone();
        loop {
            crossbeam_channel::select! {
                recv(self.ctrl_rx) -> c => match c {
                    Ok(Ctrl::ReaderDone) | Err(_) => return,
                    Ok(_) => {}
                },
                recv(kill_rx) -> _ => return,
                default(deadline.saturating_duration_since(Instant::now())) => return,
            }
        }
    }

    fn lost(&self, e: &tungstenite::Error) {
        log::debug!(component = &*self.handle.component, conn_id:% = self.handle.info.id, peer:% = self.handle.info.peer, error:% = e; "write failed; connection lost");
    }
}

#[cfg(test)]
mod tests {
    use super::apply_mask;

    #[test]
    fn mask_matches_the_bytewise_definition_at_every_length() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut fast = data.clone();
            apply_mask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow, "length {len}");
            apply_mask(&mut fast, mask);
            assert_eq!(fast, data, "masking twice restores, length {len}");
        }
    }
}
