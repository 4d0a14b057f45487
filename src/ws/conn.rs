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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Select, Sender};
use tungstenite::error::{CapacityError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocket, WebSocketContext};
use tungstenite::Message;

use crate::error::{Error, Result};
use crate::overflow::{OverflowPolicy, Pushed, Rejected};
use crate::threads::Threads;
use crate::ws::stats::Stats;
use crate::ws::ConnId;

/// Messages written per batch before the writer checks control replies and flushes.
const MAX_BATCH: usize = 256;
/// Bytes written per batch before a flush.
const MAX_BATCH_BYTES: usize = 256 << 10;
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
    /// The outbound queue belongs to this connection (server) rather than to a client that
    /// keeps it across reconnects: ending the connection closes it.
    pub(crate) owns_queue: bool,
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
}

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
    queue: Arc<dyn OverflowPolicy<Message>>,
    sock: TcpStream,
    ended: AtomicBool,
    owns_queue: bool,
    stats: Arc<Stats>,
    // Dropping the sender wakes the writer even when the reader is busy in a callback
    // (e.g. the callback that is disposing the component).
    kill_tx: parking_lot::Mutex<Option<Sender<()>>>,
    kill_rx: Receiver<()>,
}

impl ConnHandle {
    /// Queues a message by the outbound policy. Returns false when it was not queued.
    pub(crate) fn send(&self, msg: Message) -> bool {
        if self.ended.load(Ordering::Acquire) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        push_outbound(
            &*self.queue,
            msg,
            &self.component,
            Some(&self.info),
            &self.stats,
            || self.abort(),
        )
    }

    /// Starts a graceful close: queued data is flushed (bounded), then a close frame is sent.
    pub(crate) fn close(&self, frame: Option<CloseFrame>) {
        let _ = self.ctrl.try_send(Ctrl::Close(frame));
    }

    /// Ends the connection now: both directions of the socket are shut down, which wakes the
    /// reader and a writer blocked on a full socket.
    pub(crate) fn abort(&self) {
        self.ended.store(true, Ordering::Release);
        if self.owns_queue {
            self.queue.close();
        }
        self.kill_tx.lock().take();
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

/// Applies an outbound queue's policy to one message, counting and logging what it drops.
/// `disconnect` is called when the policy asks for one.
pub(crate) fn push_outbound(
    queue: &dyn OverflowPolicy<Message>,
    msg: Message,
    component: &str,
    conn: Option<&ConnInfo>,
    stats: &Stats,
    disconnect: impl FnOnce(),
) -> bool {
    // Only the drop branches format the id: nothing is allocated on the accepted path.
    let conn_id = || conn.map(|c| c.id.to_string()).unwrap_or_default();
    match queue.push(msg) {
        Ok(Pushed::Queued) => true,
        Ok(Pushed::DroppedOld(_)) | Ok(Pushed::DroppedNew(_)) => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            log::debug!(component, conn_id = conn_id().as_str(), policy = queue.name(); "outbound message dropped by overflow policy");
            // A drop-old eviction still queued the new message.
            matches!(queue.name(), "drop-old")
        }
        Err(Rejected::Disconnect(_)) => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            log::warn!(component, conn_id = conn_id().as_str(), policy = queue.name(), capacity = queue.capacity(); "Overflow disconnect");
            disconnect();
            false
        }
        Err(Rejected::Closed(_)) => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            log::debug!(component, conn_id = conn_id().as_str(); "outbound message dropped: connection closed");
            false
        }
    }
}

/// A handshaken connection, ready to run on the current (reader) thread.
pub(crate) struct ConnRun {
    ws: WebSocket<HalfStream>,
    handle: Arc<ConnHandle>,
    ctrl_rx: Receiver<Ctrl>,
    params: ConnParams,
    pending: Vec<Message>,
}

impl ConnRun {
    /// Wraps a socket whose handshake is done. `queue` is the outbound queue (a client keeps
    /// one across reconnects; a server makes one per connection).
    pub(crate) fn new(
        mut ws: WebSocket<HalfStream>,
        info: ConnInfo,
        component: Arc<str>,
        queue: Arc<dyn OverflowPolicy<Message>>,
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
        let handle = Arc::new(ConnHandle {
            info,
            component,
            ctrl: ctrl_tx,
            queue,
            sock,
            ended: AtomicBool::new(false),
            owns_queue: params.owns_queue,
            stats,
            kill_tx: parking_lot::Mutex::new(Some(kill_tx)),
            kill_rx,
        });
        Ok((
            ConnRun {
                ws,
                handle: handle.clone(),
                ctrl_rx,
                params,
                pending: Vec::new(),
            },
            handle,
        ))
    }

    /// Messages to write before anything queued (a client's unsent batch from the last
    /// connection).
    pub(crate) fn with_pending(mut self, pending: Vec<Message>) -> Self {
        self.pending = pending;
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
            pending,
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
        let writer = Writer {
            ctx: WebSocketContext::new(params.role, Some(params.ws)),
            sock: writer_sock,
            ctrl_rx,
            queue_rx: handle.queue.receiver().clone(),
            handle: handle.clone(),
            params: params.clone(),
            start,
            last_pong: last_pong.clone(),
            unsent: Vec::new(),
            closed: false,
            pending,
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
            match ws.read() {
                Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                    handle.stats.record_in(msg.len());
                    on_message(msg);
                }
                Ok(Message::Ping(data)) => {
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
        let _ = ctrl.send(Ctrl::ReaderDone);
        drop(ctrl);
        let unsent = done_rx.recv().unwrap_or_default();
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
    ctx: WebSocketContext,
    sock: TcpStream,
    ctrl_rx: Receiver<Ctrl>,
    queue_rx: Receiver<Message>,
    handle: Arc<ConnHandle>,
    params: ConnParams,
    start: Instant,
    last_pong: Arc<AtomicU64>,
    unsent: Vec<Message>,
    /// A close frame has been written: no data may follow.
    closed: bool,
    /// Written before anything queued.
    pending: Vec<Message>,
}

/// Messages and payload bytes written since the last flush.
#[derive(Default)]
struct Batch {
    n: usize,
    bytes: usize,
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
        let step = match self.write_pending() {
            Ok(()) => self.serve(),
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
        std::mem::take(&mut self.unsent)
    }

    fn serve(&mut self) -> Step {
        let ctrl_rx = self.ctrl_rx.clone();
        let queue_rx = self.queue_rx.clone();
        let kill_rx = self.handle.kill_rx.clone();
        let mut sel = Select::new();
        let ctrl_op = sel.recv(&ctrl_rx);
        let data_op = sel.recv(&queue_rx);
        let kill_op = sel.recv(&kill_rx);
        let mut next_ping = self.params.ping_interval.map(|i| Instant::now() + i);
        let mut ping_sent: Option<(Instant, u64)> = None;
        loop {
            // Protocol replies go first.
            while let Ok(c) = ctrl_rx.try_recv() {
                match self.control(c) {
                    Step::Continue => {}
                    other => return other,
                }
            }
            let pong_deadline = match (ping_sent, self.params.ping_timeout) {
                (Some((at, _)), Some(t)) => Some(at + t),
                _ => None,
            };
            let deadline = match (next_ping, pong_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let oper = match deadline {
                Some(d) => sel.select_deadline(d).ok(),
                None => Some(sel.select()),
            };
            match oper {
                Some(op) if op.index() == ctrl_op => match op.recv(&ctrl_rx) {
                    Ok(c) => match self.control(c) {
                        Step::Continue => {}
                        other => return other,
                    },
                    Err(_) => return Step::End,
                },
                Some(op) if op.index() == data_op => match op.recv(&queue_rx) {
                    Ok(first) => {
                        if let Err(e) = self.write_batch(first) {
                            self.lost(&e);
                            return Step::End;
                        }
                    }
                    Err(_) => return Step::End,
                },
                Some(op) => {
                    // A selected operation must be completed (crossbeam panics otherwise).
                    debug_assert_eq!(op.index(), kill_op);
                    let _ = op.recv(&kill_rx);
                    return Step::End;
                }
                None => {
                    // Heartbeat deadline.
                    let now = Instant::now();
                    if let Some((_, sent_nanos)) = ping_sent {
                        if self.last_pong.load(Ordering::Acquire) >= sent_nanos {
                            ping_sent = None;
                        }
                    }
                    if let (Some((at, _)), Some(t)) = (ping_sent, self.params.ping_timeout) {
                        if now >= at + t {
                            log::warn!(component = &*self.handle.component, conn_id = self.handle.info.id.to_string().as_str(), peer = self.handle.info.peer.to_string().as_str(), timeout_ms = t.as_millis() as u64; "heartbeat timeout: no pong; closing connection");
                            return Step::End;
                        }
                    }
                    if let (Some(np), Some(i)) = (next_ping, self.params.ping_interval) {
                        if now >= np {
                            if ping_sent.is_none() {
                                ping_sent = Some((now, elapsed_nanos(self.start)));
                            }
                            next_ping = Some(now + i);
                            let res = self
                                .ctx
                                .write(&mut self.sock, Message::Ping(tungstenite::Bytes::new()))
                                .and_then(|_| self.ctx.flush(&mut self.sock));
                            if let Err(e) = res {
                                self.lost(&e);
                                return Step::End;
                            }
                        }
                    }
                }
            }
        }
    }

    fn control(&mut self, c: Ctrl) -> Step {
        match c {
            Ctrl::Pong(data) => {
                if !self.closed {
                    let res = self
                        .ctx
                        .write(&mut self.sock, Message::Pong(data))
                        .and_then(|_| self.ctx.flush(&mut self.sock));
                    if let Err(e) = res {
                        self.lost(&e);
                        return Step::End;
                    }
                }
                Step::Continue
            }
            Ctrl::PeerClosed(frame) => {
                if !self.closed {
                    // Whatever was queued before the peer's close (e.g. replies the reader's
                    // callbacks produced) goes out before our close reply.
                    self.flush_queued(Instant::now() + self.params.close_timeout);
                    self.send_close(frame);
                }
                Step::Linger
            }
            Ctrl::Fail(frame) => {
                if !self.closed {
                    // Replies to the valid messages before the violation still go out.
                    self.flush_queued(Instant::now() + self.params.close_timeout);
                    self.send_close(Some(frame));
                }
                Step::End
            }
            Ctrl::Close(frame) => {
                if !self.closed {
                    self.flush_queued(Instant::now() + self.params.close_timeout);
                    self.send_close(frame);
                }
                Step::Linger
            }
            Ctrl::ReaderDone => Step::End,
        }
    }

    /// Writes `first` and whatever else is queued (bounded), then flushes once.
    fn write_batch(&mut self, first: Message) -> tungstenite::Result<()> {
        let mut batch = Batch::default();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            self.put(msg, &mut batch)?;
            if batch.n < MAX_BATCH && batch.bytes < MAX_BATCH_BYTES && self.ctrl_rx.is_empty() {
                next = self.queue_rx.try_recv().ok();
            }
        }
        self.commit(batch)
    }

    /// Writes the previous connection's unsent batch before anything queued.
    fn write_pending(&mut self) -> tungstenite::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::default();
        for msg in pending {
            self.put(msg, &mut batch)?;
        }
        self.commit(batch)
    }

    /// Buffers one message in tungstenite's write buffer, keeping a copy until it is flushed
    /// when the client may resend it after a reconnect.
    fn put(&mut self, msg: Message, batch: &mut Batch) -> tungstenite::Result<()> {
        batch.n += 1;
        batch.bytes += msg.len();
        if self.params.keep_unsent {
            self.unsent.push(msg.clone());
        }
        self.ctx.write(&mut self.sock, msg)
    }

    /// Flushes a batch; from here on its messages count as written.
    fn commit(&mut self, batch: Batch) -> tungstenite::Result<()> {
        self.ctx.flush(&mut self.sock)?;
        self.handle.stats.record_out(batch.n, batch.bytes);
        self.unsent.clear();
        Ok(())
    }

    /// Graceful close: writes what is queued until `deadline`.
    fn flush_queued(&mut self, deadline: Instant) {
        while Instant::now() < deadline {
            let Ok(first) = self.queue_rx.try_recv() else {
                break;
            };
            if let Err(e) = self.write_batch(first) {
                self.lost(&e);
                return;
            }
        }
    }

    fn send_close(&mut self, frame: Option<CloseFrame>) {
        self.closed = true;
        if let Err(e) = self.ctx.close(&mut self.sock, frame) {
            log::debug!(component = &*self.handle.component, conn_id = self.handle.info.id.to_string().as_str(), error:% = e; "close frame not written");
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
        log::debug!(component = &*self.handle.component, conn_id = self.handle.info.id.to_string().as_str(), peer = self.handle.info.peer.to_string().as_str(), error:% = e; "write failed; connection lost");
    }
}
