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

//!
//! Files by thread role: `handle.rs` (what other threads call: send, enqueue, close, abort, and
//! the direct-write fast path), `reader.rs` (the reader thread's loop), `writer.rs` (the writer
//! thread's loop), `frame.rs` (the write half: framing into one buffer, masking, writing).

mod frame;
mod handle;
mod reader;
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

pub(crate) use handle::ConnHandle;
pub(crate) use reader::ConnRun;

/// Messages written per batch before the writer checks control replies and flushes.
pub(super) const MAX_BATCH: usize = 256;
/// How long the writer lets a bursting sender add to the buffer before sending it.
pub(super) const GATHER: Duration = Duration::from_micros(20);
/// How long the writer waits for more after a batch before parking.
pub(super) const BURST_LINGER: Duration = Duration::from_micros(50);
/// Bytes encoded per batch (one `send`).
pub(super) const MAX_BATCH_BYTES: usize = 64 << 10;
/// Capacity of the encode buffer kept between batches; a larger one (after a big message) is
/// released, so an idle connection holds little.
pub(super) const KEEP_OUT_CAPACITY: usize = 128 << 10;
/// Control replies waiting for the writer; a full channel pushes back on the reader.
pub(super) const CTRL_CAPACITY: usize = 64;

/// A `TcpStream` whose writes can be switched off: tungstenite's reader needs `Read + Write`, but
/// after the handshake every byte must leave through the writer thread.
pub(crate) struct HalfStream {
    sock: TcpStream,
    pub(super) writes: bool,
    /// A total deadline for every read and write (a gateway handshake): a peer trickling one
    /// byte per read timeout cannot stretch it.
    deadline: Option<Instant>,
}

impl HalfStream {
    pub(crate) fn new(sock: TcpStream) -> Self {
        HalfStream {
            sock,
            writes: true,
            deadline: None,
        }
    }
    pub(crate) fn with_deadline(sock: TcpStream, deadline: Option<Instant>) -> Self {
        HalfStream {
            deadline,
            ..HalfStream::new(sock)
        }
    }
    /// Sets or clears the total deadline (the socket's own timeouts are left as they are).
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
    pub(crate) fn sock(&self) -> &TcpStream {
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

impl Read for HalfStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.bound(true)?;
        self.sock.read(buf)
    }
}

impl Write for HalfStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.writes {
            self.bound(false)?;
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
pub(super) enum Ctrl {
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

pub(super) type Queue = Arc<OutQueue>;

/// What [`ConnRun::run`] hands back.
pub(crate) struct ConnEnd {
    pub(crate) reason: EndReason,
    /// Accepted messages not confirmed written (only with `keep_unsent`), oldest first.
    pub(crate) unsent: Vec<Message>,
    /// The close frame the peer sent, if it sent one (code, reason).
    pub(crate) peer_close: Option<(u16, String)>,
}

pub(super) fn elapsed_nanos(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}
