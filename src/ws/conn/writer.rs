//! The writer thread: the socket's only writer. Protocol replies first, then data in batches of
//! one `send`, heartbeat pings on its own deadline, the close frame last.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Select, TryRecvError};
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

use super::handle::ConnHandle;
use super::{elapsed_nanos, ConnParams, Ctrl, BURST_LINGER, GATHER, MAX_BATCH, MAX_BATCH_BYTES};
use crate::telemetry::event;

pub(super) struct Writer {
    pub(super) sock: TcpStream,
    pub(super) ctrl_rx: Receiver<Ctrl>,
    pub(super) handle: Arc<ConnHandle>,
    pub(super) params: ConnParams,
    pub(super) start: Instant,
    pub(super) last_pong: Arc<AtomicU64>,
    /// Taken from the queue but waiting for a pong to go first.
    pub(super) held: Option<Message>,
}

/// What the writer does after handling an event.
enum Step {
    Continue,
    /// Wait (bounded) for the reader to finish, then end.
    Linger,
    End,
}

impl Writer {
    pub(super) fn run(mut self) -> Vec<Message> {
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
            handle.holding.store(self.held.is_some(), Ordering::Release);
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
