//! A connection's outbound queue: an [`OverflowPolicy`] bounded by message count, plus a byte
//! budget, so that a fast producer of large messages cannot pile up `capacity × message size`
//! bytes (1,024 × 64 KiB is 64 MiB) in front of one socket.
//!
//! Every message leaves through [`OutQueue::try_pop`] or [`OutQueue::drain`], which return its
//! bytes to the budget. Going over the budget is an overflow like a full queue, handled by the
//! same strategy: `block` waits, `drop-new` drops the message, `drop-old` evicts the oldest,
//! `buffer-k` and `disconnect` ask for a disconnect. A single message larger than the whole
//! budget is still accepted when nothing is queued.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_channel::{bounded, select, Receiver, Sender};
use parking_lot::Mutex;
use tungstenite::Message;

use crate::error::Result;
use crate::overflow::{OverflowPolicy, OverflowStrategy, Pushed, Rejected};
use crate::stats::Stats;
use crate::telemetry::event;
use crate::ws::conn::ConnInfo;

/// What [`OutQueue::push`] did with a message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushOutcome {
    Queued,
    /// Queued after evicting this many older messages (`drop-old`).
    Evicted(usize),
    /// The message was dropped (`drop-new`).
    DroppedNew,
    /// The policy asks for a disconnect; the message was not queued.
    Disconnect,
    /// The queue is closed; the message was not queued.
    Closed,
}

pub(crate) struct OutQueue {
    policy: Box<dyn OverflowPolicy<Message>>,
    strategy: OverflowStrategy,
    max_bytes: usize,
    bytes: AtomicUsize,
    /// Producers waiting for bytes to be freed (`block`).
    waiters: AtomicUsize,
    space_tx: Sender<()>,
    space_rx: Receiver<()>,
    // Dropping the sender wakes every waiting producer.
    close_tx: Mutex<Option<Sender<()>>>,
    close_rx: Receiver<()>,
}

impl OutQueue {
    pub(crate) fn new(
        strategy: OverflowStrategy,
        capacity: usize,
        max_bytes: usize,
    ) -> Result<Self> {
        let (space_tx, space_rx) = bounded(1);
        let (close_tx, close_rx) = bounded(0);
        Ok(OutQueue {
            policy: strategy.build(capacity)?,
            strategy,
            max_bytes,
            bytes: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            space_tx,
            space_rx,
            close_tx: Mutex::new(Some(close_tx)),
            close_rx,
        })
    }

    /// Queues a message by the count and byte bounds.
    pub(crate) fn push(&self, msg: Message) -> PushOutcome {
        let len = msg.len();
        let mut evicted = 0;
        loop {
            if self.policy.is_closed() {
                return PushOutcome::Closed;
            }
            // `block` waits for room here, not inside the channel: a producer parked on a full
            // channel is woken for every slot the writer frees (a futex wake per message);
            // here it sleeps until the queue is half empty.
            let count_full = self.strategy == OverflowStrategy::Block
                && self.policy.len() >= self.policy.capacity();
            if !count_full && self.try_reserve(len) {
                break;
            }
            match self.strategy {
                OverflowStrategy::Block => self.wait_for_space(len),
                OverflowStrategy::DropNew => return PushOutcome::DroppedNew,
                OverflowStrategy::DropOld => match self.try_pop() {
                    Some(_) => evicted += 1,
                    None => break, // emptied by the writer meanwhile
                },
                OverflowStrategy::BufferK | OverflowStrategy::Disconnect => {
                    return PushOutcome::Disconnect
                }
            }
        }
        let outcome = match self.policy.push(msg) {
            Ok(Pushed::Queued) => return self.evicted(evicted),
            Ok(Pushed::DroppedOld(old)) => {
                self.release(old.len());
                return self.evicted(evicted + 1);
            }
            Ok(Pushed::DroppedNew(_)) => PushOutcome::DroppedNew,
            Err(Rejected::Disconnect(_)) => PushOutcome::Disconnect,
            Err(Rejected::Closed(_)) => PushOutcome::Closed,
        };
        self.release(len);
        outcome
    }

    fn evicted(&self, n: usize) -> PushOutcome {
        if n == 0 {
            PushOutcome::Queued
        } else {
            PushOutcome::Evicted(n)
        }
    }

    /// Takes `len` bytes of the budget if they fit (or nothing is queued).
    fn try_reserve(&self, len: usize) -> bool {
        self.bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used == 0 || used.saturating_add(len) <= self.max_bytes).then(|| used + len)
            })
            .is_ok()
    }

    /// Waits until the writer has emptied the queue to half (by count and bytes) or the queue
    /// closes.
    fn wait_for_space(&self, len: usize) {
        // Registered before the re-check, so a writer that frees room meanwhile sees us.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        if !self.may_retry(len) && !self.policy.is_closed() {
            select! {
                recv(self.space_rx) -> _ => {}
                recv(self.close_rx) -> _ => {}
            }
        }
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        // Pass the wake-up on: there may be room for more than one waiter.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _ = self.space_tx.try_send(());
        }
    }

    /// Whether a waiting producer of `len` bytes should try again: the queue is empty, or half
    /// empty and the message fits.
    fn may_retry(&self, len: usize) -> bool {
        let used = self.bytes.load(Ordering::SeqCst);
        used == 0 || (self.low_water() && used.saturating_add(len) <= self.max_bytes)
    }

    /// Half empty or less, by count and by bytes.
    fn low_water(&self) -> bool {
        self.policy.len() <= self.policy.capacity() / 2
            && self.bytes.load(Ordering::SeqCst) <= self.max_bytes / 2
    }

    fn release(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 && (self.policy.is_empty() || self.low_water()) {
            let _ = self.space_tx.try_send(());
        }
    }

    /// True when a message of `len` bytes would meet a full queue (by count or bytes) under a
    /// policy that drops or disconnects: worth draining into the socket first.
    pub(crate) fn would_overflow(&self, len: usize) -> bool {
        matches!(
            self.strategy,
            OverflowStrategy::DropOld | OverflowStrategy::DropNew | OverflowStrategy::BufferK
        ) && (self.policy.len() >= self.policy.capacity()
            || self.bytes.load(Ordering::Relaxed).saturating_add(len) > self.max_bytes)
    }

    /// The queue's policy.
    pub(crate) fn strategy(&self) -> OverflowStrategy {
        self.strategy
    }

    /// Takes the oldest message.
    pub(crate) fn try_pop(&self) -> Option<Message> {
        let msg = self.policy.receiver().try_recv().ok()?;
        self.release(msg.len());
        Some(msg)
    }

    /// Takes everything queued.
    pub(crate) fn drain(&self) -> Vec<Message> {
        std::iter::from_fn(|| self.try_pop()).collect()
    }

    /// Ready when a message is queued (for the writer's `Select`; take it with `try_pop`).
    pub(crate) fn receiver(&self) -> &Receiver<Message> {
        self.policy.receiver()
    }

    pub(crate) fn len(&self) -> usize {
        self.policy.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.policy.is_empty()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.policy.capacity()
    }

    /// The policy's name, for logs.
    pub(crate) fn name(&self) -> &'static str {
        self.policy.name()
    }

    /// Closes the queue and wakes every waiting producer.
    pub(crate) fn close(&self) {
        self.policy.close();
        self.close_tx.lock().take();
    }
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The overflow policy dropped it (`drop-new`) or disconnected (`buffer-k`, `disconnect`).
    Overflow,
    /// The connection (or the client) has ended.
    Closed,
}

/// Applies an outbound queue's policy to one message, counting and logging what it drops
/// (the first drop on a connection at WARN when `first_drop` is given: a reader falling
/// behind). `disconnect` is called when the policy asks for one. `Err` when the message was
/// not queued.
pub(crate) fn push_outbound(
    queue: &OutQueue,
    msg: Message,
    component: &str,
    conn: Option<&ConnInfo>,
    stats: &Stats,
    first_drop: Option<&AtomicBool>,
    disconnect: impl FnOnce(),
) -> Result<(), Refused> {
    // Only the drop branches format the id: nothing is allocated on the accepted path.
    let conn_id = || conn.map(|c| c.id.to_string()).unwrap_or_default();
    let dropped = |n: usize| {
        stats.record_overflow_drop(n as u64);
        if first_drop.is_some_and(|f| !f.swap(true, Ordering::Relaxed)) {
            log::warn!(component, conn_id = conn_id().as_str(), policy = queue.name(), capacity = queue.capacity(); "{}", event::SLOW_READER);
        } else {
            log::debug!(component, conn_id = conn_id().as_str(), policy = queue.name(), count = n; "{}", event::OVERFLOW_DROP);
        }
    };
    match queue.push(msg) {
        PushOutcome::Queued => Ok(()),
        PushOutcome::Evicted(n) => {
            dropped(n);
            Ok(())
        }
        PushOutcome::DroppedNew => {
            dropped(1);
            Err(Refused::Overflow)
        }
        PushOutcome::Disconnect => {
            stats.record_overflow_drop(1);
            log::warn!(component, conn_id = conn_id().as_str(), policy = queue.name(), capacity = queue.capacity(); "{}", event::OVERFLOW_DISCONNECT);
            disconnect();
            Err(Refused::Overflow)
        }
        PushOutcome::Closed => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            log::debug!(component, conn_id = conn_id().as_str(), reason = "connection closed", count = 1; "{}", event::MESSAGE_DROPPED);
            Err(Refused::Closed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn msg(n: usize) -> Message {
        Message::binary(vec![0u8; n])
    }

    #[test]
    fn bytes_bound_drop_new_and_drop_old() {
        let q = OutQueue::new(OverflowStrategy::DropNew, 100, 1000).unwrap();
        assert_eq!(q.push(msg(600)), PushOutcome::Queued);
        assert_eq!(q.push(msg(600)), PushOutcome::DroppedNew);
        assert_eq!(q.push(msg(400)), PushOutcome::Queued);
        assert_eq!(q.drain().len(), 2);
        // Empty again: one message over the whole budget still goes.
        assert_eq!(q.push(msg(5000)), PushOutcome::Queued);

        let q = OutQueue::new(OverflowStrategy::DropOld, 100, 1000).unwrap();
        for _ in 0..3 {
            assert_eq!(q.push(msg(300)), PushOutcome::Queued);
        }
        assert_eq!(q.push(msg(700)), PushOutcome::Evicted(2));
        let left: Vec<usize> = q.drain().iter().map(Message::len).collect();
        assert_eq!(left, vec![300, 700]);
    }

    #[test]
    fn bytes_over_budget_ask_buffer_k_to_disconnect() {
        let q = OutQueue::new(OverflowStrategy::BufferK, 100, 1000).unwrap();
        assert_eq!(q.push(msg(900)), PushOutcome::Queued);
        assert_eq!(q.push(msg(200)), PushOutcome::Disconnect);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn block_waits_for_bytes_and_every_message_arrives_in_order() {
        let q = Arc::new(OutQueue::new(OverflowStrategy::Block, 1000, 10_000).unwrap());
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..500u32 {
                        let mut body = vec![0u8; 1000];
                        body[..4].copy_from_slice(&(p * 1000 + i).to_be_bytes());
                        assert_eq!(q.push(Message::binary(body)), PushOutcome::Queued);
                    }
                })
            })
            .collect();
        let mut last = [None::<u32>; 4];
        let mut got = 0;
        while got < 2000 {
            assert!(q.bytes.load(Ordering::SeqCst) <= 10_000);
            match q.try_pop() {
                Some(m) => {
                    let d = m.into_data();
                    let v = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
                    let (p, i) = ((v / 1000) as usize, v % 1000);
                    assert!(last[p].is_none_or(|l| l < i), "producer {p} out of order");
                    last[p] = Some(i);
                    got += 1;
                }
                None => std::thread::sleep(Duration::from_micros(50)),
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(q.bytes.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn close_wakes_a_blocked_producer() {
        let q = Arc::new(OutQueue::new(OverflowStrategy::Block, 10, 100).unwrap());
        assert_eq!(q.push(msg(100)), PushOutcome::Queued);
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.push(msg(50)));
        std::thread::sleep(Duration::from_millis(20));
        q.close();
        assert_eq!(t.join().unwrap(), PushOutcome::Closed);
    }
}
