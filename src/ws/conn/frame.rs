//! The write half of a connection: data frames framed straight into one buffer (one copy of
//! the payload), client masking, and writing the buffer in one `send` per batch.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::{Role, WebSocketContext};
use tungstenite::Message;

use super::{TlsSession, KEEP_OUT_CAPACITY, STALL_PROGRESS};
use crate::stats::Stats;

/// The write half of a connection, behind the handle's lock: whoever holds the lock is the
/// socket's one writer (the writer thread, or a sender on the direct path). Frames are encoded
/// into `out` and leave in one `send` per batch.
pub(crate) struct WriteState {
    pub(super) ctx: WebSocketContext,
    pub(super) role: Role,
    /// Encoded bytes not yet on the socket, oldest first.
    pub(super) out: OutBuf,
    /// Data messages and payload bytes in `out` (counted as written once `out` is on the socket).
    pub(super) out_msgs: usize,
    pub(super) out_bytes: usize,
    /// Copies of the data messages not yet fully on the socket (only with `keep_unsent`).
    pub(super) unsent: Vec<Message>,
    /// A close frame has been encoded: no data may follow.
    pub(super) closed: bool,
    /// A write failed: the connection is lost.
    pub(super) failed: bool,
    /// The close frame this side encoded (code, reason; 1005 for one without a code).
    pub(super) sent_close: Option<(u16, String)>,
    /// The TLS session: `out` is plaintext, encrypted a chunk at a time into `ct`.
    tls: Option<Arc<TlsSession>>,
    /// Ciphertext not yet on the socket (TLS only), sent before anything else.
    ct: Vec<u8>,
}

/// Plaintext encrypted per step on a TLS connection: ciphertext waiting is at most about this.
const TLS_CHUNK: usize = 64 << 10;

/// XORs a client frame's payload with its mask (RFC 6455 5.3), eight bytes at a time.
pub(super) fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
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
pub(super) struct OutBuf(pub(super) Vec<u8>);

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
    pub(super) fn new(
        role: Role,
        ws: tungstenite::protocol::WebSocketConfig,
        tls: Option<Arc<TlsSession>>,
    ) -> Self {
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
            sent_close: None,
            tls,
            ct: Vec::new(),
        }
    }

    /// Encodes one data message behind whatever is already in `out`.
    pub(super) fn encode(&mut self, msg: Message, keep: bool) -> tungstenite::Result<()> {
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
    pub(super) fn encode_control(&mut self, msg: Message) -> tungstenite::Result<()> {
        self.ctx.write(&mut self.out, msg)?;
        self.ctx.flush(&mut self.out)
    }

    /// Writes all of `out`, blocking while the peer keeps up: `TimedOut` when it takes fewer
    /// than [`STALL_PROGRESS`] bytes (or all that waits) within `stall`. From here on its
    /// messages count as written. After a timeout, `out` holds what the peer did not take.
    pub(super) fn write_out(
        &mut self,
        sock: &TcpStream,
        stats: &Stats,
        stall: Duration,
    ) -> io::Result<()> {
        if let Some(tls) = self.tls.clone() {
            return self
                .write_out_tls(&tls, sock, stats, Some(stall))
                .map(|_| ());
        }
        if !self.out.0.is_empty() {
            let (sent, res) = write_bounded(sock, &self.out.0, stall);
            if let Err(e) = res {
                if e.kind() == io::ErrorKind::TimedOut {
                    self.out.0.drain(..sent);
                } else {
                    self.failed = true;
                }
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
    pub(super) fn write_out_nonblocking(
        &mut self,
        sock: &TcpStream,
        stats: &Stats,
    ) -> io::Result<bool> {
        if let Some(tls) = self.tls.clone() {
            return self.write_out_tls(&tls, sock, stats, None);
        }
        let (sent, res) = send_now(sock, &self.out.0);
        match res {
            Err(e) => {
                self.failed = true;
                Err(e)
            }
            Ok(false) => {
                self.out.0.drain(..sent);
                Ok(false)
            }
            Ok(true) => {
                self.out.0.clear();
                self.commit(stats);
                Ok(true)
            }
        }
    }

    /// `write_out` (`stall` given) or `write_out_nonblocking` (`None`) on a TLS connection:
    /// ciphertext left from before goes first; then `out` is encrypted a chunk at a time
    /// (the session's lock is held only for that) and each chunk written with no lock held.
    fn write_out_tls(
        &mut self,
        tls: &TlsSession,
        sock: &TcpStream,
        stats: &Stats,
        stall: Option<Duration>,
    ) -> io::Result<bool> {
        let mut pos = 0;
        let res = loop {
            if self.ct.is_empty() {
                let take = (self.out.0.len() - pos).min(TLS_CHUNK);
                if let Err(e) = tls.seal(&self.out.0[pos..pos + take], &mut self.ct) {
                    self.failed = true;
                    break Err(e);
                }
                pos += take;
                if self.ct.is_empty() {
                    break Ok(true);
                }
            }
            let (sent, r) = match stall {
                Some(stall) => {
                    let (sent, r) = write_bounded(sock, &self.ct, stall);
                    (sent, r.map(|()| true))
                }
                None => send_now(sock, &self.ct),
            };
            self.ct.drain(..sent);
            match r {
                Ok(true) => {}
                Ok(false) => break Ok(false),
                Err(e) => {
                    if e.kind() != io::ErrorKind::TimedOut {
                        self.failed = true;
                    }
                    break Err(e);
                }
            }
        };
        self.out.0.drain(..pos);
        if self.out.0.is_empty() && self.out.0.capacity() > KEEP_OUT_CAPACITY {
            self.out.0 = Vec::new();
        }
        if self.ct.is_empty() && self.ct.capacity() > KEEP_OUT_CAPACITY {
            self.ct = Vec::new();
        }
        if matches!(res, Ok(true)) {
            self.commit(stats);
        }
        res
    }

    /// The connection is over: a TLS `close_notify`, if the socket takes it at once.
    pub(super) fn end_tls(&mut self, sock: &TcpStream) {
        if self.failed {
            return;
        }
        if let Some(tls) = self.tls.clone() {
            if tls.seal_close(&mut self.ct).is_ok() {
                let _ = send_now(sock, &self.ct);
            }
        }
    }

    pub(super) fn commit(&mut self, stats: &Stats) {
        if self.out_msgs > 0 {
            stats.record_out(self.out_msgs, self.out_bytes);
            self.out_msgs = 0;
            self.out_bytes = 0;
        }
        self.unsent.clear();
    }
}

/// Sends what the socket takes of `buf` without blocking: how much went, and whether all of it
/// did.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_now(sock: &TcpStream, buf: &[u8]) -> (usize, io::Result<bool>) {
    let sock = socket2::SockRef::from(sock);
    let mut sent = 0;
    while sent < buf.len() {
        match sock.send_with_flags(&buf[sent..], libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (sent, Ok(false)),
            Err(e) => return (sent, Err(e)),
        }
    }
    (sent, Ok(true))
}

/// Elsewhere nothing is sent without blocking: the caller hands the bytes to the writer thread.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_now(_: &TcpStream, buf: &[u8]) -> (usize, io::Result<bool>) {
    (0, Ok(buf.is_empty()))
}

/// Writes `buf`: without blocking while the socket takes it, then blocking in bounded waits.
/// Fails with `TimedOut` once the peer has taken fewer than [`STALL_PROGRESS`] bytes within
/// `stall` of falling behind. Returns how much went, with the outcome.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn write_bounded(sock: &TcpStream, buf: &[u8], stall: Duration) -> (usize, io::Result<()>) {
    let nb = socket2::SockRef::from(sock);
    let mut sent = 0;
    // When the peer last fell behind, and bytes it has taken since.
    let mut behind: Option<(Instant, usize)> = None;
    while sent < buf.len() {
        let res = match nb.send_with_flags(&buf[sent..], libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let (at, _) = *behind.get_or_insert((Instant::now(), 0));
                let left = stall.saturating_sub(at.elapsed());
                if left.is_zero() {
                    return (sent, Err(stalled()));
                }
                // Wait for room, at most what is left of the deadline.
                if let Err(e) = sock.set_write_timeout(Some(left)) {
                    return (sent, Err(e));
                }
                let mut s = sock;
                s.write(&buf[sent..])
            }
            other => other,
        };
        match res {
            Ok(n) => {
                sent += n;
                if let Some((_, since)) = &mut behind {
                    *since += n;
                    if *since >= STALL_PROGRESS {
                        behind = None;
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return (sent, Err(e)),
        }
    }
    (sent, Ok(()))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn write_bounded(mut sock: &TcpStream, buf: &[u8], stall: Duration) -> (usize, io::Result<()>) {
    // Without MSG_DONTWAIT: a socket timeout per write call.
    let _ = Instant::now();
    if let Err(e) = sock.set_write_timeout(Some(stall)) {
        return (0, Err(e));
    }
    match sock.write_all(buf) {
        Ok(()) => (buf.len(), Ok(())),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            (0, Err(stalled()))
        }
        Err(e) => (0, Err(e)),
    }
}

fn stalled() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "write timeout: the peer stopped taking data",
    )
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
