//! [`ConnHandle`]: what other threads use to send to, close or abort a connection, the
//! direct-write fast path (an idle connection is written on the sender's thread), starting the
//! writer thread when something cannot go that way, and the heartbeat the timer thread ticks.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

use super::frame::WriteState;
use super::writer::Writer;
use super::{
    BurstClock, ConnInfo, ConnParams, Ctrl, InboundBudget, Queue, MAX_BATCH, MAX_BATCH_BYTES,
    OWN_LOCK_WAIT,
};
use crate::error::Error;
use crate::overflow::OverflowStrategy;
use crate::stats::Stats;
use crate::telemetry::event;
use crate::threads::{Threads, Tick};
use crate::ws::outbound::{push_outbound, OutQueue, Refused};

/// How much of a connection's writing a sender may take on (see [`ConnHandle::try_direct`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SendRole {
    /// A server's fan-out or a reply from a reader thread: it must neither take on one
    /// connection's writing nor wait for it, so a busy lock, a backlog or a full batch queues
    /// the message for the writer thread.
    Shared,
    /// The one thread feeding this connection (a client's sender, a gateway peer's): a burst
    /// is sent from its thread, a full batch written here when the socket takes it and a
    /// backlog the writer thread has not drained yet moved into the socket before the message.
    /// A gateway broadcast sends so, without waiting.
    Own,
    /// [`Own`](Self::Own), writing to this connection only: it also waits up to
    /// `OWN_LOCK_WAIT` for the writer thread to release the write lock.
    OwnMayWait,
}

/// The handle other threads use to send to, close or abort a connection.
pub(crate) struct ConnHandle {
    pub(crate) info: ConnInfo,
    pub(super) component: Arc<str>,
    pub(super) me: Weak<ConnHandle>,
    pub(super) threads: Arc<Threads>,
    pub(super) params: ConnParams,
    pub(super) ctrl: Sender<Ctrl>,
    pub(super) ctrl_rx: Receiver<Ctrl>,
    /// None inside once the connection ended: no queue may be built after that.
    pub(super) queue: OnceLock<Option<Queue>>,
    /// How to build the queue on first use (per-connection queues only).
    pub(super) make_queue: Option<(OverflowStrategy, usize, usize)>,
    pub(super) queue_capacity: usize,
    pub(super) sock: Arc<TcpStream>,
    pub(super) ended: AtomicBool,
    /// Set by [`abort`](Self::abort): the reader delivers nothing more (shared with the read
    /// half, which stops waiting for the inbound budget).
    pub(super) aborted: Arc<AtomicBool>,
    pub(super) budget: Option<Arc<InboundBudget>>,
    /// Set by `abort` and when the writer ends: a reader waiting for inbound budget gives up.
    pub(super) stop_reading: Arc<AtomicBool>,
    /// A writer thread is running (see [`ensure_writer`](Self::ensure_writer)).
    pub(super) writer_running: AtomicBool,
    /// Guards starting and retiring the writer; `true` once the reader has ended (no writer
    /// may start after that).
    pub(super) slot: parking_lot::Mutex<bool>,
    pub(super) slot_cv: parking_lot::Condvar,
    /// Heartbeat: the last pong's time (nanoseconds since `epoch`), and the timer's state.
    pub(super) last_pong: AtomicU64,
    pub(super) hb: parking_lot::Mutex<Heartbeat>,
    pub(super) stats: Arc<Stats>,
    // Dropping the sender wakes the writer even when the reader is busy in a callback
    // (e.g. the callback that is disposing the component).
    pub(super) kill_tx: parking_lot::Mutex<Option<Sender<()>>>,
    pub(super) kill_rx: Receiver<()>,
    /// The write half; its holder is the socket's one writer.
    pub(super) wr: parking_lot::Mutex<WriteState>,
    /// Asks the writer thread to finish what a direct write left in `out`.
    pub(super) wake_tx: Sender<()>,
    pub(super) wake_rx: Receiver<()>,
    pub(super) keep_unsent: bool,
    pub(super) epoch: Instant,
    /// Nanoseconds since `epoch` before which a sender queues instead of writing itself.
    pub(super) burst: BurstClock,
    /// Pongs the reader handed to the writer and not yet written: data the reader's callbacks
    /// send after a ping must follow its pong (RFC 6455 5.5.2; Autobahn 5.6–5.20).
    pub(super) pongs_pending: AtomicUsize,
    /// The feeding thread's wait for the write lock timed out: it does not wait again until it
    /// has had the lock (see `try_direct`).
    pub(super) own_wait_off: AtomicBool,
    /// Frames senders have framed into the write buffer in bursts: the writer's gather sleeps
    /// while this grows.
    pub(super) buffered: AtomicU64,
    /// When set, an overflow disconnect sends a close frame with this code before it cuts the
    /// connection (the gateway's 4005); otherwise it only cuts it.
    pub(super) overflow_close: OnceLock<u16>,
    /// Set when the overflow policy disconnected the connection.
    pub(super) overflowed: AtomicBool,
    /// Why the connection was cut (the first cause), for its `Closed` event.
    pub(super) cut: OnceLock<&'static str>,
    /// Set at the first message the overflow policy dropped (logged at WARN once).
    pub(super) dropping: AtomicBool,
    /// The writer holds a message popped from the queue (waiting for a pong): nothing may
    /// overtake it.
    pub(super) holding: AtomicBool,
}

impl ConnHandle {
    /// Sends a message: written on the calling thread when [`try_direct`](Self::try_direct)
    /// can for this sender's `role`, otherwise queued by the outbound policy. `Err` when it
    /// was dropped.
    pub(crate) fn send(&self, msg: Message, role: SendRole) -> std::result::Result<(), Refused> {
        match self.try_direct(msg, role) {
            None => Ok(()),
            Some(msg) => self.enqueue(msg),
        }
    }

    /// Writes `msg` on the calling thread when that can neither reorder nor block (but for
    /// [`SendRole::OwnMayWait`]'s bounded wait for the lock): nothing is queued or half-written, no one else is
    /// writing, and the socket takes the bytes now (a remainder goes to the writer thread). A
    /// sender that writes back to back (its last direct write ended more recently than it took)
    /// queues instead, so bursts are batched by the writer thread rather than paying a syscall
    /// per message. Returns the message when it must be queued.
    ///
    /// The [`SendRole`] says how much of the connection's writing the caller may take on.
    ///
    /// Ordering holds because messages leave the queue only under the same lock: with the lock
    /// held and the queue empty, everything sent before has been encoded.
    pub(crate) fn try_direct(&self, msg: Message, role: SendRole) -> Option<Message> {
        let own = role != SendRole::Shared;
        if !cfg!(any(target_os = "linux", target_os = "android"))
            || self.ended.load(Ordering::Acquire)
        {
            return Some(msg);
        }
        let backlog = self.queue().is_some_and(|q| !q.is_empty());
        if backlog && !own {
            return Some(msg);
        }
        // The thread feeding this connection waits a moment for the writer thread to finish
        // its batch: queueing instead hands the rest of the burst to that thread, which then
        // holds the lock for as long as the queue grows. A wait that times out (the writer is
        // blocked on a full socket) is not repeated until the lock is had again, so a stalled
        // peer costs its sender one wait, not one per message.
        let lock = if role == SendRole::OwnMayWait && !self.own_wait_off.load(Ordering::Relaxed) {
            let lock = self.wr.try_lock_for(OWN_LOCK_WAIT);
            if lock.is_none() {
                self.own_wait_off.store(true, Ordering::Relaxed);
            }
            lock
        } else {
            self.wr.try_lock()
        };
        let Some(mut w) = lock else {
            return Some(msg);
        };
        if self.own_wait_off.load(Ordering::Relaxed) {
            self.own_wait_off.store(false, Ordering::Relaxed);
        }
        if !self.data_may_go(&w) {
            return Some(msg);
        }
        if let Some(q) = self.queue().filter(|q| !q.is_empty()) {
            if !own {
                return Some(msg);
            }
            // The writer thread fell behind this burst (it held the lock for a moment): take
            // the backlog back onto this thread, in order, rather than queue every message
            // behind it until that thread has encoded them all.
            match self.move_queued(&mut w, q, 0) {
                Ok(true) => {}
                Ok(false) => {
                    drop(w);
                    self.kick();
                    return Some(msg);
                }
                Err(e) => {
                    drop(w);
                    self.lost("queued messages not written", &e);
                    return None;
                }
            }
        }
        // Something queued or frames waiting in the buffer mean a burst; the clock, which costs
        // more than these checks, tells only for an idle connection. A zero-capacity queue
        // ("disconnect") has no other way in: never a burst.
        let (start, burst) = if backlog || !w.out.0.is_empty() {
            (0, true)
        } else {
            let (start, back_to_back) = self.burst.begin();
            (start, self.queue_capacity > 0 && back_to_back)
        };
        if burst {
            // In a burst: frame it behind what waits in the buffer and let the writer thread
            // send the lot with one syscall (woken once per batch, not per message).
            if w.out.0.len() >= MAX_BATCH_BYTES {
                if !own {
                    return Some(msg);
                }
                // A full batch: send it from this thread when the socket takes it now, rather
                // than hand the burst to the writer thread (a third busy thread, and every
                // message through the queue while it holds the lock).
                match self.write_direct(&mut w) {
                    Ok(_) if w.out.0.len() < MAX_BATCH_BYTES => {}
                    Ok(_) => return Some(msg),
                    Err(e) => {
                        drop(w);
                        self.lost("batch write failed", &e);
                        return None;
                    }
                }
            }
            let first = w.out.0.is_empty();
            let res = w.encode(msg, self.keep_unsent);
            // Only written under the write lock: a plain update, no atomic read-modify-write.
            let n = self.buffered.load(Ordering::Relaxed);
            self.buffered.store(n.wrapping_add(1), Ordering::Relaxed);
            drop(w);
            match res {
                Ok(()) if first => self.kick(),
                Ok(()) => {}
                Err(e) => {
                    self.lost("frame not encoded", &e);
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
            Ok(false) => self.kick(),
            Err(e) => {
                self.lost("direct write failed", &e);
            }
        }
        self.burst.end(start);
        None
    }

    /// A write-side failure: logged (DEBUG; the connection's end is reported by its reader)
    /// and the connection aborted.
    fn lost(&self, what: &str, e: &dyn std::fmt::Display) {
        log::debug!(component = &*self.component, conn_id:% = self.info.id, peer:% = self.info.peer, error:% = e; "{what}; connection lost");
        self.abort();
    }

    /// Writes what the socket takes now (elsewhere than Linux: nothing, see `send_now`).
    pub(super) fn write_direct(&self, w: &mut WriteState) -> io::Result<bool> {
        w.write_out_nonblocking(&self.sock, &self.stats)
    }

    pub(super) fn nanos(&self) -> u64 {
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
        if queue.would_overflow(msg.len()) {
            self.help_drain(queue);
        }
        let msg = if queue.strategy() == OverflowStrategy::Disconnect {
            match self.write_unless_full(msg) {
                Ok(()) => return Ok(()),
                Err(msg) => msg,
            }
        } else {
            msg
        };
        let queued = push_outbound(
            queue,
            msg,
            &self.component,
            Some(&self.info),
            &self.stats,
            Some(&self.dropping),
            || {
                self.overflowed.store(true, Ordering::Release);
                let _ = self.cut.set("overflow");
                match self.overflow_close.get() {
                    Some(&code) => self.close_now(code, "overflow"),
                    None => self.abort(),
                }
            },
        );
        // A new queue: a running writer waits on it only once it knows it exists.
        if !existed {
            let _ = self.wake_tx.try_send(());
        }
        // Whatever was queued is the writer's to send (its `select` sees the queue itself: no
        // wake token per message, which would also start its gathering wait for nothing).
        if queued.is_ok() || !existed {
            self.ensure_writer();
        }
        queued
    }

    /// Whether a data message may be written now by whoever holds the write lock `w`: the
    /// link is open, and no pong (nor a message the writer holds back for one) must go first.
    fn data_may_go(&self, w: &WriteState) -> bool {
        !w.closed
            && !w.failed
            && self.pongs_pending.load(Ordering::Acquire) == 0
            && !self.holding.load(Ordering::Acquire)
    }

    /// `disconnect` holds nothing, so it must not fire because the writer thread was busy for
    /// a moment: wait briefly (1 ms at most) for the write lock and hand the message to the
    /// socket; give it back only when the socket's own buffer is full (the peer is slow) or
    /// the link cannot take data now.
    fn write_unless_full(&self, msg: Message) -> std::result::Result<(), Message> {
        if !cfg!(any(target_os = "linux", target_os = "android")) {
            return Err(msg);
        }
        let until = Instant::now() + std::time::Duration::from_millis(1);
        let mut w = loop {
            let Some(w) = self.wr.try_lock_until(until) else {
                return Err(msg);
            };
            if w.closed || w.failed {
                return Err(msg);
            }
            // A pong owed goes first: wait for the writer to send it, within the same bound.
            if self.data_may_go(&w) {
                break w;
            }
            drop(w);
            if Instant::now() >= until {
                return Err(msg);
            }
            std::thread::yield_now();
        };
        if !w.out.0.is_empty() && !matches!(self.write_direct(&mut w), Ok(true)) {
            return Err(msg);
        }
        if w.encode(msg, self.keep_unsent).is_err() {
            drop(w);
            self.abort();
            return Ok(());
        }
        let res = self.write_direct(&mut w);
        drop(w);
        match res {
            Ok(true) => {}
            // The rest waits in the buffer, which was empty: the writer finishes it.
            Ok(false) => self.kick(),
            Err(_) => self.abort(),
        }
        Ok(())
    }

    /// A full queue while the writer thread has not run yet (a burst outpacing the scheduler,
    /// not the peer): move queued messages into the socket on this thread, as far as it takes
    /// them without blocking, so the overflow policy drops only for a peer that is slow. The
    /// writer's discipline holds: the queue is popped only under the write lock, and not while
    /// a pong or a held message must go first.
    fn help_drain(&self, q: &OutQueue) {
        if !cfg!(any(target_os = "linux", target_os = "android")) {
            return; // the direct write below would block there
        }
        let Some(mut w) = self.wr.try_lock() else {
            return;
        };
        if !self.data_may_go(&w) {
            return;
        }
        if let Err(e) = self.move_queued(&mut w, q, q.capacity() / 2) {
            drop(w);
            self.lost("write failed", &e);
            return;
        }
        let rest = !w.out.0.is_empty();
        drop(w);
        if rest {
            self.kick();
        }
    }

    /// Under the write lock `w` (data allowed to go): writes what waits in the buffer, then
    /// moves queued messages into the socket in batches until at most `keep` remain
    /// (`Ok(true)`, the buffer empty). `Ok(false)` leaves the rest to the writer thread: the
    /// socket takes no more now, or one queue's worth has been moved (other producers refilling
    /// the queue must not keep this caller here).
    fn move_queued(&self, w: &mut WriteState, q: &OutQueue, keep: usize) -> io::Result<bool> {
        let mut budget = q.capacity().max(MAX_BATCH);
        loop {
            if !w.out.0.is_empty() && !self.write_direct(w)? {
                return Ok(false);
            }
            if q.len() <= keep {
                return Ok(true);
            }
            if budget == 0 {
                return Ok(false);
            }
            let mut n = 0;
            while n < MAX_BATCH.min(budget) && w.out.0.len() < MAX_BATCH_BYTES {
                let Some(msg) = q.try_pop() else { break };
                w.encode(msg, self.keep_unsent).map_err(io::Error::other)?;
                n += 1;
            }
            if n == 0 {
                return Ok(true);
            }
            budget -= n;
        }
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
    pub(super) fn queue(&self) -> Option<&Queue> {
        self.queue.get().and_then(Option::as_ref)
    }

    pub(super) fn build_queue(&self) -> Option<Queue> {
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
    /// False when the writer cannot take the request now (its control channel is full, or it
    /// is stuck writing to a peer that stopped reading).
    pub(crate) fn close(&self, frame: Option<CloseFrame>) -> bool {
        let ok = self.ctrl.try_send(Ctrl::Close(frame)).is_ok();
        if ok {
            self.ensure_writer();
        }
        ok
    }

    /// True while frames wait for the writer (queued or half-written).
    pub(crate) fn backlogged(&self) -> bool {
        self.queue().is_some_and(|q| !q.is_empty())
    }

    /// Frames `msgs` into the write buffer ahead of anything sent later, before the connection
    /// runs (a client's unsent batch, a redialed gateway link's waiting frames): nothing can
    /// overtake them and no queue bound applies, as they were already accepted. The writer
    /// sends them first.
    pub(crate) fn preload(&self, msgs: impl IntoIterator<Item = Message>) {
        let mut w = self.wr.lock();
        for msg in msgs {
            if let Err(e) = w.encode(msg, self.keep_unsent) {
                log::warn!(component = &*self.component, conn_id:% = self.info.id, error:% = e; "message carried over not framed");
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        let any = !w.out.0.is_empty();
        drop(w);
        if any {
            self.kick();
        }
    }

    /// True once the overflow policy disconnected the connection.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Has an overflow disconnect send a close frame with `code` first (see `close_now`).
    pub(crate) fn set_overflow_close(&self, code: u16) {
        let _ = self.overflow_close.set(code);
    }

    /// Ends the connection now with a close frame carrying `code`, sent only if the socket takes
    /// it at once (a peer that stopped reading would never get it): then cuts the connection.
    pub(crate) fn close_now(&self, code: u16, reason: &str) {
        if let Some(mut w) = self.wr.try_lock() {
            if !w.closed && !w.failed {
                let frame = CloseFrame {
                    code: code.into(),
                    reason: reason.to_owned().into(),
                };
                if w.encode_control(Message::Close(Some(frame))).is_ok()
                    && matches!(self.write_direct(&mut w), Ok(true))
                {
                    w.sent_close = Some((code, reason.to_owned()));
                }
                w.closed = true;
            }
        }
        self.abort();
    }

    /// [`abort`](Self::abort), saying why (the `Closed` event's cause).
    pub(crate) fn cut_for(&self, why: &'static str) {
        let _ = self.cut.set(why);
        self.abort();
    }

    /// Going away (dispose, drop): a `1001` close frame if the socket takes it at once, then
    /// the connection is cut. Never waits for the peer.
    pub(crate) fn going_away(&self) {
        let _ = self.cut.set("going away");
        self.close_now(1001, "going away");
    }

    /// Ends the connection now: both directions of the socket are shut down, which wakes the
    /// reader and a writer blocked on a full socket.
    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.stop_reading.store(true, Ordering::Release);
        self.ended.store(true, Ordering::Release);
        // A per-connection queue ends with the connection (and is never built after this).
        if self.make_queue.is_some() {
            if let Some(q) = self.queue.get_or_init(|| None) {
                q.close();
            }
        }
        self.kill_tx.lock().take();
        let _ = self.sock.shutdown(Shutdown::Both);
        if let Some(b) = &self.budget {
            b.wake();
        }
    }

    /// Hands a control request to the writer (started if needed), waiting while its channel is
    /// full; false once the connection has ended (a writer that ended reads no more).
    pub(super) fn to_writer(&self, c: Ctrl) -> bool {
        self.ensure_writer();
        let sent = crossbeam_channel::select! {
            send(self.ctrl, c) -> r => r.is_ok(),
            recv(self.kill_rx) -> _ => false,
        };
        if sent {
            self.ensure_writer();
        }
        sent
    }

    /// TLS output owed after a read (reader thread): written now when the write half is free
    /// and the socket takes it (so an alert precedes the end of a failed connection), else
    /// handed to the writer.
    pub(super) fn flush_tls(&self) {
        if let Some(mut w) = self.wr.try_lock() {
            if !w.failed && matches!(self.write_direct(&mut w), Ok(true)) {
                return;
            }
        }
        self.kick();
    }

    /// Hands what waits in the write buffer to the writer thread (started if needed).
    pub(super) fn kick(&self) {
        let _ = self.wake_tx.try_send(());
        self.ensure_writer();
    }

    /// Starts the writer thread unless one runs or the connection has ended. Callers first
    /// make the work visible (queue, buffer, control channel), then call this: either the
    /// running writer sees the work before it retires, or this sees that it retired (both
    /// sides order a store and a load with `SeqCst`; see `Writer::retire`).
    pub(crate) fn ensure_writer(&self) {
        fence(Ordering::SeqCst);
        if self.writer_running.load(Ordering::SeqCst) {
            return;
        }
        let reader_done = self.slot.lock();
        if *reader_done
            || self.writer_running.load(Ordering::SeqCst)
            || self.ended.load(Ordering::Acquire)
        {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        self.writer_running.store(true, Ordering::SeqCst);
        let name = format!("rxws-conn-{}-write", self.info.seq);
        if let Err(e) = self.threads.spawn(name, move || Writer::new(me).run()) {
            self.writer_running.store(false, Ordering::SeqCst);
            drop(reader_done);
            self.lost("writer not started", &e);
        }
    }

    /// Writes a ping or pong now when the socket takes it (`Ok(true)`, or `Ok(false)` with
    /// the rest handed to the writer); `Err(msg)` when the write half is busy or a queued
    /// pong must go first, for the caller to hand it to the writer.
    fn control_direct(&self, msg: Message) -> Result<bool, Message> {
        if !cfg!(any(target_os = "linux", target_os = "android"))
            || self.pongs_pending.load(Ordering::Acquire) > 0
        {
            return Err(msg);
        }
        let Some(mut w) = self.wr.try_lock() else {
            return Err(msg);
        };
        if w.closed || w.failed {
            return Ok(true);
        }
        let res = w
            .encode_control(msg)
            .map_err(io::Error::other)
            .and_then(|()| self.write_direct(&mut w));
        drop(w);
        match res {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.kick();
                Ok(false)
            }
            Err(e) => {
                self.lost("control frame not written", &e);
                Ok(true)
            }
        }
    }

    /// Answers a ping (reader thread): at once when the socket takes it, otherwise through
    /// the writer. Data sent after this call goes after the pong either way. False when the
    /// writer cannot take it.
    pub(super) fn pong(&self, data: tungstenite::Bytes) -> bool {
        match self.control_direct(Message::Pong(data)) {
            Ok(_) => true,
            Err(Message::Pong(data)) => {
                self.pongs_pending.fetch_add(1, Ordering::AcqRel);
                self.to_writer(Ctrl::Pong(data))
            }
            Err(_) => true,
        }
    }

    /// The heartbeat's ping (timer thread).
    fn ping(&self) {
        if self
            .control_direct(Message::Ping(tungstenite::Bytes::new()))
            .is_err()
            && self.ctrl.try_send(Ctrl::Ping).is_ok()
        {
            self.ensure_writer();
        }
    }

    /// Registers the heartbeat with the component's timer.
    pub(super) fn start_heartbeat(&self) {
        let Some(interval) = self.params.ping_interval else {
            return;
        };
        let first = Instant::now() + interval;
        self.hb.lock().next_ping = first;
        let me: Weak<dyn Tick> = self.me.clone();
        if let Err(e) = self.threads.schedule(first, me) {
            log::debug!(component = &*self.component, conn_id:% = self.info.id, error:% = e; "heartbeat not scheduled");
        }
    }
}

/// A connection's heartbeat, as the timer thread keeps it.
pub(crate) struct Heartbeat {
    pub(super) next_ping: Instant,
    /// The unanswered ping: when it was sent, and the same in nanoseconds since `epoch`.
    pub(super) ping_sent: Option<(Instant, u64)>,
}

impl Tick for ConnHandle {
    fn tick(&self, now: Instant) -> Option<Instant> {
        if self.ended.load(Ordering::Acquire) {
            return None;
        }
        let interval = self.params.ping_interval?;
        let timeout = self.params.ping_timeout;
        let mut hb = self.hb.lock();
        if let Some((_, nanos)) = hb.ping_sent {
            if self.last_pong.load(Ordering::Acquire) >= nanos {
                hb.ping_sent = None;
            }
        }
        if let (Some((at, _)), Some(t)) = (hb.ping_sent, timeout) {
            if now >= at + t {
                drop(hb);
                log::warn!(component = &*self.component, conn_id:% = self.info.id, peer:% = self.info.peer, timeout_ms = t.as_millis() as u64; "{}", event::HEARTBEAT_TIMEOUT);
                self.cut_for("heartbeat timeout");
                return None;
            }
        }
        let mut ping = false;
        if now >= hb.next_ping {
            if hb.ping_sent.is_none() {
                hb.ping_sent = Some((now, self.nanos().max(1)));
            }
            hb.next_ping = now + interval;
            ping = true;
        }
        let next = match (hb.ping_sent, timeout) {
            (Some((at, _)), Some(t)) => hb.next_ping.min(at + t),
            _ => hb.next_ping,
        };
        drop(hb);
        if ping {
            self.ping();
        }
        Some(next)
    }
}
