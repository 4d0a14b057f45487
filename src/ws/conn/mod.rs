//! The connection core shared by server, client and gateway: one full-duplex WebSocket over a
//! blocking `TcpStream` (one descriptor), driven by one thread, plus a writer thread only while
//! the connection has a backlog (see `ADR/2026-11-21-full-duplex-connection-threads.md` and
//! `ADR/2026-12-04-one-thread-per-connection.md`).
//!
//! * The **reader** (the thread that calls [`ConnRun::run`]) owns the read state: after
//!   tungstenite's opening handshake, frames are parsed by our own parser (`parse.rs`), which
//!   hands payloads out as slices of its read buffer. The reader writes pongs itself when the
//!   socket takes them at once, and hands them (and close replies) to the writer otherwise.
//! * Senders write on their own thread while the socket takes the bytes at once (the direct
//!   path). Whatever cannot go that way (a queue, a remainder, a close) starts the **writer**
//!   thread, the only one that blocks on the socket: it drains, closes, and ends when it has
//!   been idle for [`WRITER_IDLE`]. A peer that takes too little for `write_timeout` is cut.
//! * Heartbeats run on the component's timer thread ([`crate::threads::Tick`]).
//!
//! Nothing polls: the reader blocks in `read`, the writer in `select`, the timer on its next
//! deadline.
//!
//! Files by thread role: `handle.rs` (what other threads call: send, enqueue, close, abort, the
//! direct-write fast path, the heartbeat tick), `reader.rs` (the reader thread's loop),
//! `parse.rs` (the read half: frames parsed and checked against RFC 6455),
//! `writer.rs` (the writer thread's loop), `frame.rs` (the write half: framing into one buffer,
//! masking, bounded writing), `budget.rs` (the server-wide inbound budget).

mod budget;
mod frame;
mod handle;
mod parse;
mod reader;
mod tls;
mod writer;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::Role;
use tungstenite::Message;

use crate::overflow::OverflowStrategy;
use crate::ws::outbound::OutQueue;
use crate::ws::ConnId;

pub(crate) use budget::InboundBudget;
use parse::{Frames, HeaderScan};
pub(crate) use tls::TlsSession;

/// Tells a caller in a burst: one that comes back while less time has passed since its last
/// call ended than that call took (the direct write, a server's fan-out).
pub(crate) struct BurstClock {
    epoch: Instant,
    after: std::sync::atomic::AtomicU64,
}

impl Default for BurstClock {
    fn default() -> Self {
        BurstClock {
            epoch: Instant::now(),
            after: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl BurstClock {
    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
    /// The start of a call, and whether it comes back to back with the last one.
    pub(crate) fn begin(&self) -> (u64, bool) {
        let start = self.nanos();
        (
            start,
            start < self.after.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
    /// The call that began at `start` ended.
    pub(crate) fn end(&self, start: u64) {
        let end = self.nanos();
        self.after.store(
            end + end.saturating_sub(start),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}
pub(crate) use handle::{ConnHandle, SendRole};
pub(crate) use reader::ConnRun;

use budget::{Account, FREE_INBOUND};

/// Messages written per batch before the writer checks control replies and flushes.
pub(super) const MAX_BATCH: usize = 256;
/// The writer's first wait (yielding) for a bursting sender to add to the buffer, and each
/// later step (sleeping) while it keeps adding.
pub(super) const GATHER: Duration = Duration::from_micros(20);
/// The longest the writer lets a sender that keeps adding fill the buffer before sending it.
pub(super) const MAX_GATHER: Duration = Duration::from_micros(200);
/// How long the writer waits for more after a batch from the queue before parking.
pub(super) const QUEUE_LINGER: Duration = Duration::from_micros(50);
/// How long the thread feeding a connection waits for the write lock (held by the writer
/// thread for a batch) before it queues the message instead.
pub(super) const OWN_LOCK_WAIT: Duration = Duration::from_micros(100);
/// Bytes encoded per batch (one `send`).
pub(super) const MAX_BATCH_BYTES: usize = 64 << 10;
/// Capacity of the encode buffer kept between batches; a larger one (after a big message) is
/// released, so an idle connection holds little.
pub(super) const KEEP_OUT_CAPACITY: usize = 128 << 10;
/// Control replies waiting for the writer; a full channel pushes back on the reader. Small:
/// its slots are allocated with the connection, and pongs usually go out directly.
pub(super) const CTRL_CAPACITY: usize = 8;
/// How long a writer thread with nothing to write waits for more before it ends.
pub(super) const WRITER_IDLE: Duration = Duration::from_millis(200);
/// Bytes a peer must take within `write_timeout` (or all that waits, if less) to count as
/// reading: a trickle below it is a stall.
pub(super) const STALL_PROGRESS: usize = 64 << 10;
/// Largest single read counted against the inbound budget.
const BUDGET_CHUNK: usize = 64 << 10;

/// Raw bytes read per socket call on a TLS connection (one full record).
const TLS_READ: usize = 16 << 10;

/// A `TcpStream` (with TLS, if the connection has it) whose writes can be switched off:
/// tungstenite's handshake needs `Read + Write`, but after it every byte must leave through
/// the write half. It also holds the inbound frame parser ([`Self::read_message`]).
pub(crate) struct HalfStream {
    /// Shared with the connection's handle: one descriptor per connection.
    sock: Arc<TcpStream>,
    tls: Option<TlsRead>,
    pub(super) writes: bool,
    /// A total deadline for every read and write (a handshake): a peer trickling one byte per
    /// read timeout cannot stretch it.
    deadline: Option<Instant>,
    /// The server-wide inbound budget, once the connection runs.
    account: Option<Account>,
    /// Inbound frames (`parse.rs`), set up for the opening handshake by [`Self::for_handshake`].
    frames: Option<Box<Frames>>,
    /// While the opening handshake reads: where its HTTP header ends. Reads stop there and
    /// what follows goes to `frames` (for a client, only after a `101`: a refusal's body stays
    /// tungstenite's, for the error).
    header: Option<Box<Header>>,
}

/// The opening handshake's HTTP header, as read so far.
#[derive(Default)]
struct Header {
    scan: HeaderScan,
    /// Its first bytes (the status line's start).
    first: Vec<u8>,
}

/// The start of a response that switches protocols.
const SWITCHING: &[u8] = b"HTTP/1.1 101";

impl HalfStream {
    pub(crate) fn new(sock: Arc<TcpStream>) -> Self {
        HalfStream {
            sock,
            tls: None,
            writes: true,
            deadline: None,
            account: None,
            frames: None,
            header: None,
        }
    }
    /// Readies the stream for a WebSocket opening handshake in `role`: the handshake's reads
    /// end with the HTTP header, so every frame after it is parsed by [`Self::read_message`].
    pub(crate) fn for_handshake(
        mut self,
        role: Role,
        cfg: &tungstenite::protocol::WebSocketConfig,
    ) -> Self {
        self.frames = Some(Box::new(Frames::new(role, cfg)));
        self.header = Some(Box::default());
        self
    }
    /// The next message from the peer (after the opening handshake). The error is boxed: the
    /// reader's hot loop moves only the message.
    pub(crate) fn read_message(&mut self) -> Result<Message, Box<tungstenite::Error>> {
        // The handshake is over, whether or not its header ended as we expected.
        self.header = None;
        let Some(mut frames) = self.frames.take() else {
            return Err(Box::new(tungstenite::Error::AlreadyClosed));
        };
        let res = frames.read(self);
        self.frames = Some(frames);
        res
    }
    /// A stream over a TLS session whose handshake is done.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn secure(
        sock: Arc<TcpStream>,
        deadline: Option<Instant>,
        session: Arc<TlsSession>,
    ) -> Self {
        HalfStream {
            tls: Some(TlsRead {
                session,
                raw: Vec::new(),
                end: 0,
                used: 0,
                on_output: None,
            }),
            ..HalfStream::with_deadline(sock, deadline)
        }
    }
    /// The connection's TLS session, if it has one.
    pub(crate) fn tls(&self) -> Option<&Arc<TlsSession>> {
        self.tls.as_ref().map(|t| &t.session)
    }
    /// Called when decrypting leaves rustls with something to send (the write half sends it).
    pub(super) fn on_tls_output(&mut self, f: Arc<dyn Fn() + Send + Sync>) {
        if let Some(t) = &mut self.tls {
            t.on_output = Some(f);
        }
    }
    pub(crate) fn with_deadline(sock: Arc<TcpStream>, deadline: Option<Instant>) -> Self {
        HalfStream {
            deadline,
            ..HalfStream::new(sock)
        }
    }
    /// Sets or clears the total deadline (the socket's own timeouts are left as they are).
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
    pub(crate) fn sock(&self) -> &Arc<TcpStream> {
        &self.sock
    }
    /// Bounds the next socket call by what is left of the deadline (`WouldBlock` once passed,
    /// as a socket timeout reports it).
    fn bound(&self, read: bool) -> io::Result<()> {
        let Some(d) = self.deadline else {
            return Ok(());
        };
        let left = d.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "handshake deadline passed",
            ));
        }
        if read {
            self.sock.set_read_timeout(Some(left))
        } else {
            self.sock.set_write_timeout(Some(left))
        }
    }
}

impl HalfStream {
    /// Draws on `budget` from here on (see `budget.rs`).
    pub(super) fn attach_budget(
        &mut self,
        budget: Arc<InboundBudget>,
        who: u64,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) {
        self.account = Some(Account {
            budget,
            who,
            stop,
            since_msg: 0,
            held: 0,
        });
    }

    /// A data message completed: its budget goes back.
    pub(super) fn message_done(&mut self) {
        if let Some(a) = &mut self.account {
            a.message_done();
        }
    }

    /// A control frame of `wire` bytes was read (maybe between fragments of a message).
    pub(super) fn control_done(&mut self, wire: usize) {
        if let Some(a) = &mut self.account {
            a.since_msg = a.since_msg.saturating_sub(wire);
        }
    }
}

/// The reader's side of a TLS connection: raw bytes read but not yet taken by rustls.
struct TlsRead {
    session: Arc<TlsSession>,
    /// Allocated at the first read; `raw[used..end]` is not yet in rustls.
    raw: Vec<u8>,
    end: usize,
    used: usize,
    on_output: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Read for HalfStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.bound(true)?;
        let n = if self.tls.is_some() {
            self.read_tls(buf)?
        } else {
            self.read_sock(buf)?
        };
        let Some(h) = &mut self.header else {
            return Ok(n);
        };
        let take = SWITCHING.len().saturating_sub(h.first.len()).min(n);
        h.first.extend_from_slice(&buf[..take]);
        let Some(end) = h.scan.end(&buf[..n]) else {
            return Ok(n);
        };
        let switching = h.first.starts_with(SWITCHING);
        self.header = None;
        match &mut self.frames {
            // A server reads a request; a client's frames follow only a `101`.
            Some(f) if f.role() == Role::Server || switching => {
                f.push_early(&buf[end..n]);
                Ok(end)
            }
            _ => Ok(n),
        }
    }
}

impl HalfStream {
    /// Plaintext from the TLS session; raw bytes are read with no lock held (see `tls.rs`).
    fn read_tls(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(t) = &mut self.tls else {
                return Err(io::ErrorKind::NotConnected.into());
            };
            let mut wants_write = false;
            let pulled = t
                .session
                .pull(buf, &t.raw[..t.end], &mut t.used, &mut wants_write);
            if wants_write {
                if let Some(f) = &t.on_output {
                    f();
                }
            }
            if let tls::Pulled::Data(n) = pulled? {
                return Ok(n);
            }
            // Everything read has gone into rustls: read more (the inbound budget counts
            // these raw bytes).
            let mut raw = std::mem::take(&mut t.raw);
            raw.resize(TLS_READ, 0);
            // Every socket read is bounded by what is left of a handshake's deadline: a peer
            // trickling a record a byte at a time cannot stretch it.
            let res = self.bound(true).and_then(|()| self.read_sock(&mut raw));
            if let Some(t) = &mut self.tls {
                t.raw = raw;
                t.end = *res.as_ref().unwrap_or(&0);
                t.used = 0;
            }
            if res? == 0 {
                return Ok(0);
            }
        }
    }

    /// Bytes from the socket, drawing on the inbound budget.
    fn read_sock(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(a) = &mut self.account else {
            return (&*self.sock).read(buf);
        };
        // Within a message's free part, a read never asks for more than is left of it: small
        // messages never touch the budget, however large the read offered.
        if a.since_msg < FREE_INBOUND {
            let room = buf.len().min(FREE_INBOUND - a.since_msg);
            let n = (&*self.sock).read(&mut buf[..room])?;
            a.since_msg += n;
            return Ok(n);
        }
        // Beyond the free part of a message: reserve before reading (waiting while the
        // server-wide budget is spent), keep what the bytes read used.
        let want = buf.len().min(BUDGET_CHUNK);
        let free = FREE_INBOUND.saturating_sub(a.since_msg);
        let charge = want.saturating_sub(free);
        if !a.budget.acquire(a.who, charge, &a.stop) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection aborted",
            ));
        }
        let res = (&*self.sock).read(&mut buf[..want]);
        let n = *res.as_ref().unwrap_or(&0);
        let used = (a.since_msg + n).saturating_sub(FREE_INBOUND.max(a.since_msg));
        a.budget.release(a.who, charge - used, false);
        a.held += used;
        a.since_msg += n;
        res
    }
}

impl Write for HalfStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.writes {
            self.bound(false)?;
            if let Some(t) = &self.tls {
                t.session.write_blocking(&self.sock, buf)?;
                return Ok(buf.len());
            }
            (&*self.sock).write(buf)
        } else {
            Ok(buf.len())
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.writes {
            (&*self.sock).flush()
        } else {
            Ok(())
        }
    }
}

/// What the reader asks of the writer, and the graceful close request.
pub(super) enum Ctrl {
    /// A heartbeat ping the timer could not write at once.
    Ping,
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
    /// See [`crate::ws::WSConfig::write_timeout`].
    pub(crate) write_timeout: Duration,
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

pub(super) type Queue = Arc<OutQueue>;

/// What [`ConnRun::run`] hands back.
pub(crate) struct ConnEnd {
    pub(crate) reason: EndReason,
    /// Accepted messages not confirmed written (only with `keep_unsent`), oldest first.
    pub(crate) unsent: Vec<Message>,
    /// The close frame the peer sent, if it sent one (code, reason).
    pub(crate) peer_close: Option<(u16, String)>,
    /// The close frame this side sent, if it did.
    pub(crate) sent_close: Option<(u16, String)>,
    /// The peer's close frame came before ours.
    pub(crate) peer_first: bool,
    /// Why the connection was cut, when it was (heartbeat timeout, dispose, overflow).
    pub(crate) cut: Option<&'static str>,
}

impl ConnEnd {
    /// How the connection closed, for events and logs.
    pub(crate) fn close_info(&self) -> crate::ws::CloseInfo {
        use crate::ws::CloseInfo;
        match (&self.peer_close, &self.sent_close) {
            // Both sent one: ours went first.
            (Some(_), Some((code, reason))) if !self.peer_first => CloseInfo::Closed {
                code: *code,
                reason: reason.clone(),
                by_peer: false,
            },
            (Some((code, reason)), _) => CloseInfo::Closed {
                code: *code,
                reason: reason.clone(),
                by_peer: true,
            },
            (None, Some((code, reason))) => CloseInfo::ClosedByUs {
                code: *code,
                reason: reason.clone(),
            },
            (None, None) => CloseInfo::Lost(match (&self.reason, self.cut) {
                (_, Some(cut)) => cut.to_owned(),
                (EndReason::Lost(e), None) => e.clone(),
                (EndReason::ProtocolError(code, e), None) => {
                    format!("protocol error ({code}): {e}")
                }
                (EndReason::Aborted, None) => "aborted".to_owned(),
                (EndReason::Closed, None) => "closed".to_owned(),
            }),
        }
    }
}
