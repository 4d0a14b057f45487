//! The writer thread, started only while a connection has a backlog: the one thread that
//! blocks on the socket. Protocol replies first, then data in batches of one `send`, the close
//! frame last. It ends after [`WRITER_IDLE`] with nothing to write, when the connection ends,
//! or when the peer stalls past `write_timeout`.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Select, TryRecvError};
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

use super::handle::ConnHandle;
use super::{Ctrl, GATHER, MAX_BATCH, MAX_BATCH_BYTES, MAX_GATHER, QUEUE_LINGER, WRITER_IDLE};
use crate::telemetry::event;

pub(super) struct Writer {
    handle: Arc<ConnHandle>,
    /// Taken from the queue but waiting for a pong to go first.
    held: Option<Message>,
}

/// What the writer does after handling an event.
enum Step {
    Continue,
    /// Nothing to write for a while: the thread ends, the connection goes on.
    Idle,
    /// Wait (bounded) for the reader to finish, then end.
    Linger,
    End,
}

impl Writer {
    pub(super) fn new(handle: Arc<ConnHandle>) -> Self {
        Writer { handle, held: None }
    }

    pub(super) fn run(mut self) {
        let step = self.serve();
        if matches!(step, Step::Linger) {
            self.linger();
        }
        if !matches!(step, Step::Idle) {
            // The connection is over: this ends the reader's blocking read.
            self.handle.wr.lock().end_tls(&self.handle.sock);
            let _ = self.handle.sock.shutdown(Shutdown::Both);
            self.handle.ended.store(true, Ordering::Release);
            // A reader waiting to hand this writer a request, or for inbound budget, must not
            // wait for a writer that has ended.
            self.handle.kill_tx.lock().take();
            self.handle.stop_reading.store(true, Ordering::Release);
            if let Some(b) = &self.handle.budget {
                b.wake();
            }
            if let Some(msg) = self.held.take() {
                if self.handle.keep_unsent {
                    self.handle.wr.lock().unsent.push(msg);
                } else {
                    self.handle.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _slot = self.handle.slot.lock();
            self.handle.writer_running.store(false, Ordering::SeqCst);
            self.handle.slot_cv.notify_all();
        }
    }

    fn serve(&mut self) -> Step {
        let handle = self.handle.clone();
        let ctrl_rx = &handle.ctrl_rx;
        let kill_rx = &handle.kill_rx;
        let wake_rx = &handle.wake_rx;
        let mut queue_rx: Option<Receiver<Message>> = None;
        // Rebuilt once, when a per-connection queue is first built.
        'select: loop {
            if queue_rx.is_none() {
                queue_rx = handle.queue().map(|q| q.receiver().clone());
            }
            // Readiness only: data leaves the queue under the write lock (see `try_direct`).
            let mut sel = Select::new();
            sel.recv(ctrl_rx);
            sel.recv(kill_rx);
            sel.recv(wake_rx);
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
                    self.gather(queue_rx.as_ref());
                }
                let queued = match self.drain(None) {
                    Ok(n) => n,
                    Err(e) => {
                        self.failed(&e);
                        return Step::End;
                    }
                };
                if !ctrl_rx.is_empty() || (queued > 0 && self.more_queued()) {
                    continue;
                }
                if queue_rx.is_none() && handle.queue().is_some() {
                    continue 'select;
                }
                if sel.ready_deadline(Instant::now() + WRITER_IDLE).is_ok() {
                    continue;
                }
                if self.retire() {
                    return Step::Idle;
                }
            }
        }
    }

    /// Ends the thread if there is still nothing to write. Pairs with
    /// [`ConnHandle::ensure_writer`]: the flag is cleared before looking for work, and a
    /// sender makes its work visible before looking at the flag, both with `SeqCst`, so one
    /// of the two always sees the other.
    fn retire(&mut self) -> bool {
        let h = &self.handle;
        let _slot = h.slot.lock();
        h.writer_running.store(false, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let work = self.held.is_some()
            || !h.ctrl_rx.is_empty()
            || !h.wake_rx.is_empty()
            || h.queue().is_some_and(|q| !q.is_empty())
            || matches!(h.kill_rx.try_recv(), Err(TryRecvError::Disconnected));
        if work {
            h.writer_running.store(true, Ordering::SeqCst);
            return false;
        }
        h.slot_cv.notify_all();
        true
    }

    fn control(&mut self, c: Ctrl) -> Step {
        match c {
            Ctrl::Ping => match self.write_control(Message::Ping(tungstenite::Bytes::new())) {
                Ok(()) => Step::Continue,
                Err(e) => {
                    self.failed(&e);
                    Step::End
                }
            },
            Ctrl::Pong(data) => {
                let res = self.write_control(Message::Pong(data));
                self.handle.pongs_pending.fetch_sub(1, Ordering::AcqRel);
                if let Err(e) = res {
                    self.failed(&e);
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
        let h = &self.handle;
        let mut w = h.wr.lock();
        if w.closed || w.failed {
            return Ok(());
        }
        w.encode_control(msg)?;
        w.write_out(&h.sock, &h.stats, h.params.write_timeout)?;
        Ok(())
    }

    /// Writes what is left in `out` and what is queued, in batches of one `send` each, until
    /// the queue is empty, a control reply waits, or `deadline` passes.
    fn drain(&mut self, deadline: Option<Instant>) -> tungstenite::Result<usize> {
        let mut written = 0;
        let handle = self.handle.clone();
        let stats = &handle.stats;
        let stall = handle.params.write_timeout;
        let mut w = handle.wr.lock();
        if w.failed {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe).into());
        }
        w.write_out(&handle.sock, stats, stall)?;
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
                w.encode(msg, handle.params.keep_unsent)?;
                n += 1;
            }
            handle.holding.store(self.held.is_some(), Ordering::Release);
            if n == 0 {
                break;
            }
            w.write_out(&handle.sock, stats, stall)?;
            written += n;
            if !closing && (self.held.is_some() || !handle.ctrl_rx.is_empty()) {
                break;
            }
        }
        Ok(written)
    }

    /// Woken for frames a sender put in the buffer during a burst: wait while it keeps adding
    /// (in steps of `GATHER`, up to `MAX_GATHER` plus a step), so they leave in one syscall.
    /// Only the first step yields; later ones sleep (each `GATHER` plus the timer's slack),
    /// leaving the core to the sender and the peer (a connection's own sender that fills a
    /// batch sends it itself).
    fn gather(&self, queue_rx: Option<&Receiver<Message>>) {
        let h = &self.handle;
        let until = Instant::now() + MAX_GATHER;
        let mut seen = h.buffered.load(Ordering::Relaxed);
        // The first step yields rather than sleeps: a lone frame waits GATHER, not a timer's
        // slack on top.
        let first = Instant::now() + GATHER;
        while Instant::now() < first && h.ctrl_rx.is_empty() {
            std::thread::yield_now();
        }
        // A message queued meanwhile (a fan-out finding the buffer full) ends the wait too.
        let mut sel = Select::new();
        sel.recv(&h.ctrl_rx);
        sel.recv(&h.kill_rx);
        if let Some(q) = queue_rx {
            sel.recv(q);
        }
        loop {
            let now = h.buffered.load(Ordering::Relaxed);
            if now == seen || Instant::now() >= until {
                return;
            }
            seen = now;
            if sel.ready_timeout(GATHER).is_ok() || h.queue().is_some_and(|q| !q.is_empty()) {
                return;
            }
        }
    }

    /// After a batch from the queue, a producer in a burst (a server's fan-out) usually has
    /// more within microseconds: wait for it briefly (yielding the CPU) rather than park and
    /// make it pay a wake-up per message. Frames a connection's own sender puts in the buffer
    /// need no such wait: `gather` handles them.
    fn more_queued(&self) -> bool {
        let h = &self.handle;
        let until = Instant::now() + QUEUE_LINGER;
        loop {
            if h.queue().is_some_and(|q| !q.is_empty())
                || !h.ctrl_rx.is_empty()
                || !h.wake_rx.is_empty()
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
        if let Err(e) = self.drain(Some(Instant::now() + self.handle.params.close_timeout)) {
            self.failed(&e);
            return;
        }
        let h = self.handle.clone();
        let mut guard = h.wr.lock();
        let w = &mut *guard;
        w.closed = true;
        w.sent_close = Some(frame.as_ref().map_or((1005, String::new()), |f| {
            (u16::from(f.code), f.reason.to_string())
        }));
        let res = w
            .ctx
            .close(&mut w.out, frame)
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|()| w.write_out(&h.sock, &h.stats, h.params.close_timeout));
        if let Err(e) = res {
            log::debug!(component = &*h.component, conn_id:% = h.info.id, error:% = e; "close frame not written");
        }
    }

    /// After a close frame: wait (bounded) for the reader to see the end of the stream.
    fn linger(&mut self) {
        let deadline = Instant::now() + self.handle.params.close_timeout;
        let h = self.handle.clone();
        loop {
            crossbeam_channel::select! {
                recv(h.ctrl_rx) -> c => match c {
                    Ok(Ctrl::ReaderDone) | Err(_) => return,
                    Ok(_) => {}
                },
                recv(h.kill_rx) -> _ => return,
                default(deadline.saturating_duration_since(Instant::now())) => return,
            }
        }
    }

    /// A write failed. A peer that stopped taking data is cut with a WARN (and a 1008 close
    /// frame if the socket still takes one); anything else is an ordinary loss.
    fn failed(&self, e: &tungstenite::Error) {
        let h = &self.handle;
        match e {
            tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::TimedOut => {
                log::warn!(component = &*h.component, conn_id:% = h.info.id, peer:% = h.info.peer, timeout_ms = h.params.write_timeout.as_millis() as u64; "{}", event::WRITE_TIMEOUT);
                h.stats.write_timeouts.fetch_add(1, Ordering::Relaxed);
                let _ = h.cut.set("write timeout");
                h.close_now(1008, "write timeout");
            }
            _ => {
                log::debug!(component = &*h.component, conn_id:% = h.info.id, peer:% = h.info.peer, error:% = e; "write failed; connection lost");
            }
        }
    }
}
