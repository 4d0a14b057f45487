//! Bounded queues with overflow policies, shared by the WebSocket and gateway layers.
//!
//! Every queue between threads in this crate is a bounded crossbeam channel wrapped in an
//! [`OverflowPolicy`], which decides what happens when a producer finds it full:
//!
//! | policy | name | when full |
//! |---|---|---|
//! | [`DropOld`] | `drop-old` | evicts the oldest item, queues the new one |
//! | [`DropNew`] | `drop-new` | drops the new item |
//! | [`BufferK`] | `buffer-k` | refuses the item and asks the owner to disconnect |
//! | [`Disconnect`] | `disconnect` | buffers nothing: an item no consumer is waiting for asks to disconnect |
//! | [`Block`] | `block` | the producer waits for space (backpressure) until the queue is closed |
//!
//! The consumer side is a plain crossbeam [`Receiver`], so a consumer thread can block on it or
//! `select!` it with other channels.
//!
//! ```
//! use rxplus::overflow::{create_overflow_policy, Pushed};
//!
//! let q = create_overflow_policy::<u32>("drop-old", 2)?;
//! q.push(1).unwrap();
//! q.push(2).unwrap();
//! assert!(matches!(q.push(3), Ok(Pushed::DroppedOld(1))));
//! assert_eq!(q.drain(), vec![2, 3]);
//! assert_eq!(q.dropped(), 1);
//! # Ok::<(), rxplus::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{bounded, Receiver, Select, Sender, TrySendError};
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// What a successful [`OverflowPolicy::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<T> {
    /// The item is queued.
    Queued,
    /// The item is queued; the oldest queued item was evicted to make room (`drop-old`).
    DroppedOld(T),
    /// The queue was full; the new item was dropped and is handed back (`drop-new`).
    DroppedNew(T),
}

/// Why [`OverflowPolicy::push`] refused an item. The item is handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected<T> {
    /// The policy asks the owner to disconnect (`buffer-k` over its limit, `disconnect`).
    Disconnect(T),
    /// The queue was closed; nothing more is accepted.
    Closed(T),
}

impl<T> Rejected<T> {
    /// The refused item.
    pub fn into_inner(self) -> T {
        match self {
            Rejected::Disconnect(t) | Rejected::Closed(t) => t,
        }
    }
}

/// A thread-safe bounded buffer with a rule for what happens when it is full.
///
/// Producers call [`push`](Self::push) from any thread; the consumer takes items with
/// [`pop`](Self::pop) or blocks on [`receiver`](Self::receiver).
pub trait OverflowPolicy<T>: Send + Sync {
    /// Offers an item. See the module table for what each policy does when full.
    ///
    /// # Errors
    /// [`Rejected::Disconnect`] when the policy asks for a disconnect, [`Rejected::Closed`] after
    /// [`close`](Self::close). The item is handed back either way.
    fn push(&self, item: T) -> std::result::Result<Pushed<T>, Rejected<T>>;
    /// Takes the oldest item without blocking.
    fn pop(&self) -> Option<T> {
        self.receiver().try_recv().ok()
    }
    /// The consumer side, for blocking or `select!`.
    fn receiver(&self) -> &Receiver<T>;
    /// Items queued now.
    fn len(&self) -> usize {
        self.receiver().len()
    }
    /// True when nothing is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The most items this queue holds.
    fn capacity(&self) -> usize;
    /// The policy's name (`drop-old`, `drop-new`, `buffer-k`, `disconnect`, `block`).
    fn name(&self) -> &'static str;
    /// Items dropped or refused by the policy so far (not counting [`Rejected::Closed`]).
    fn dropped(&self) -> u64;
    /// Refuses every later push and wakes producers blocked in [`Block`]. Queued items stay
    /// for the consumer to take or drain.
    fn close(&self);
    /// True after [`close`](Self::close).
    fn is_closed(&self) -> bool;
    /// Takes every queued item, oldest first.
    fn drain(&self) -> Vec<T> {
        self.receiver().try_iter().collect()
    }
}

/// The policies by name; `Copy`, so configs can hold one and build a queue per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OverflowStrategy {
    /// [`DropOld`], `drop-old`.
    DropOld,
    /// [`DropNew`], `drop-new`.
    DropNew,
    /// [`BufferK`], `buffer-k`.
    BufferK,
    /// [`Disconnect`], `disconnect`.
    Disconnect,
    /// [`Block`], `block`.
    Block,
}

impl OverflowStrategy {
    /// The policy's name as accepted by [`FromStr`] and [`create_overflow_policy`].
    pub fn name(self) -> &'static str {
        match self {
            OverflowStrategy::DropOld => "drop-old",
            OverflowStrategy::DropNew => "drop-new",
            OverflowStrategy::BufferK => "buffer-k",
            OverflowStrategy::Disconnect => "disconnect",
            OverflowStrategy::Block => "block",
        }
    }

    /// Builds a queue of this policy.
    ///
    /// # Errors
    /// [`Error::Config`] when `capacity` is 0 for any policy but `disconnect` (which holds nothing).
    pub fn build<T: Send + 'static>(self, capacity: usize) -> Result<Box<dyn OverflowPolicy<T>>> {
        if capacity == 0 && self != OverflowStrategy::Disconnect {
            return Err(Error::config(
                "capacity",
                format!("{} needs a capacity of at least 1", self.name()),
            ));
        }
        Ok(match self {
            OverflowStrategy::DropOld => Box::new(DropOld::new(capacity)),
            OverflowStrategy::DropNew => Box::new(DropNew::new(capacity)),
            OverflowStrategy::BufferK => Box::new(BufferK::new(capacity)),
            OverflowStrategy::Disconnect => Box::new(Disconnect::new()),
            OverflowStrategy::Block => Box::new(Block::new(capacity)),
        })
    }
}

impl fmt::Display for OverflowStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OverflowStrategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "drop-old" => Ok(OverflowStrategy::DropOld),
            "drop-new" => Ok(OverflowStrategy::DropNew),
            "buffer-k" => Ok(OverflowStrategy::BufferK),
            "disconnect" => Ok(OverflowStrategy::Disconnect),
            "block" => Ok(OverflowStrategy::Block),
            other => Err(Error::config(
                "overflow_strategy",
                format!(
                    "unknown policy {other:?} (expected drop-old, drop-new, buffer-k, disconnect or block)"
                ),
            )),
        }
    }
}

/// Builds a queue from a policy name and a capacity.
///
/// # Errors
/// [`Error::Config`] for an unknown name or a zero capacity.
pub fn create_overflow_policy<T: Send + 'static>(
    strategy: &str,
    size: usize,
) -> Result<Box<dyn OverflowPolicy<T>>> {
    strategy.parse::<OverflowStrategy>()?.build(size)
}

/// The channel, counters and close signal every policy shares.
struct Core<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
    capacity: usize,
    dropped: AtomicU64,
    closed: AtomicBool,
    // Dropping the sender wakes producers blocked in `Block::push`.
    close_tx: Mutex<Option<Sender<()>>>,
    close_rx: Receiver<()>,
}

impl<T> Core<T> {
    fn new(capacity: usize) -> Self {
        let (tx, rx) = bounded(capacity);
        let (close_tx, close_rx) = bounded(0);
        Core {
            tx,
            rx,
            capacity,
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            close_tx: Mutex::new(Some(close_tx)),
            close_rx,
        }
    }

    fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.close_tx.lock().take();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn fmt(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("len", &self.rx.len())
            .field("capacity", &self.capacity)
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .field("closed", &self.is_closed())
            .finish()
    }
}

macro_rules! policy_common {
    ($name:literal) => {
        fn receiver(&self) -> &Receiver<T> {
            &self.0.rx
        }
        fn capacity(&self) -> usize {
            self.0.capacity
        }
        fn name(&self) -> &'static str {
            $name
        }
        fn dropped(&self) -> u64 {
            self.0.dropped.load(Ordering::Relaxed)
        }
        fn close(&self) {
            self.0.close()
        }
        fn is_closed(&self) -> bool {
            self.0.is_closed()
        }
    };
}

macro_rules! policy_type {
    ($(#[$doc:meta])* $ty:ident, $name:literal) => {
        $(#[$doc])*
        pub struct $ty<T>(Core<T>);

        impl<T> fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(stringify!($ty), f)
            }
        }
    };
}

policy_type!(
    /// Ring buffer: when full, the oldest item is evicted (`drop-old`).
    DropOld,
    "drop-old"
);
policy_type!(
    /// When full, new items are dropped (`drop-new`).
    DropNew,
    "drop-new"
);
policy_type!(
    /// Buffers up to `k` items; one more asks for a disconnect (`buffer-k`).
    BufferK,
    "buffer-k"
);
policy_type!(
    /// Buffers nothing: an item that no consumer is waiting to take asks for a disconnect
    /// (`disconnect`). Zero tolerance for a consumer that falls behind.
    Disconnect,
    "disconnect"
);
policy_type!(
    /// When full, the producer waits for space: backpressure (`block`). A closed queue wakes it.
    Block,
    "block"
);

impl<T> DropOld<T> {
    /// A ring buffer of `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        DropOld(Core::new(capacity.max(1)))
    }
}
impl<T> DropNew<T> {
    /// A buffer of `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        DropNew(Core::new(capacity.max(1)))
    }
}
impl<T> BufferK<T> {
    /// A buffer of `k` items (at least 1).
    pub fn new(k: usize) -> Self {
        BufferK(Core::new(k.max(1)))
    }
}
impl<T> Disconnect<T> {
    /// A queue that holds nothing.
    pub fn new() -> Self {
        Disconnect(Core::new(0))
    }
}
impl<T> Default for Disconnect<T> {
    fn default() -> Self {
        Self::new()
    }
}
impl<T> Block<T> {
    /// A buffer of `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        Block(Core::new(capacity.max(1)))
    }
}

impl<T: Send> OverflowPolicy<T> for DropOld<T> {
    fn push(&self, item: T) -> std::result::Result<Pushed<T>, Rejected<T>> {
        if self.0.is_closed() {
            return Err(Rejected::Closed(item));
        }
        let mut item = item;
        let mut evicted = None;
        loop {
            match self.0.tx.try_send(item) {
                Ok(()) => {
                    return Ok(match evicted {
                        Some(old) => Pushed::DroppedOld(old),
                        None => Pushed::Queued,
                    })
                }
                Err(TrySendError::Full(back)) => {
                    item = back;
                    // Another producer or the consumer may race us; every eviction is counted.
                    if let Ok(old) = self.0.rx.try_recv() {
                        self.0.count_drop();
                        evicted = Some(old);
                    }
                }
                Err(TrySendError::Disconnected(back)) => return Err(Rejected::Closed(back)),
            }
        }
    }
    policy_common!("drop-old");
}

impl<T: Send> OverflowPolicy<T> for DropNew<T> {
    fn push(&self, item: T) -> std::result::Result<Pushed<T>, Rejected<T>> {
        if self.0.is_closed() {
            return Err(Rejected::Closed(item));
        }
        match self.0.tx.try_send(item) {
            Ok(()) => Ok(Pushed::Queued),
            Err(TrySendError::Full(back)) => {
                self.0.count_drop();
                Ok(Pushed::DroppedNew(back))
            }
            Err(TrySendError::Disconnected(back)) => Err(Rejected::Closed(back)),
        }
    }
    policy_common!("drop-new");
}

fn push_or_disconnect<T>(core: &Core<T>, item: T) -> std::result::Result<Pushed<T>, Rejected<T>> {
    if core.is_closed() {
        return Err(Rejected::Closed(item));
    }
    match core.tx.try_send(item) {
        Ok(()) => Ok(Pushed::Queued),
        Err(TrySendError::Full(back)) => {
            core.count_drop();
            Err(Rejected::Disconnect(back))
        }
        Err(TrySendError::Disconnected(back)) => Err(Rejected::Closed(back)),
    }
}

impl<T: Send> OverflowPolicy<T> for BufferK<T> {
    fn push(&self, item: T) -> std::result::Result<Pushed<T>, Rejected<T>> {
        push_or_disconnect(&self.0, item)
    }
    policy_common!("buffer-k");
}

impl<T: Send> OverflowPolicy<T> for Disconnect<T> {
    fn push(&self, item: T) -> std::result::Result<Pushed<T>, Rejected<T>> {
        push_or_disconnect(&self.0, item)
    }
    policy_common!("disconnect");
}

impl<T: Send> OverflowPolicy<T> for Block<T> {
    fn push(&self, item: T) -> std::result::Result<Pushed<T>, Rejected<T>> {
        if self.0.is_closed() {
            return Err(Rejected::Closed(item));
        }
        let item = match self.0.tx.try_send(item) {
            Ok(()) => return Ok(Pushed::Queued),
            Err(TrySendError::Full(back)) => back,
            Err(TrySendError::Disconnected(back)) => return Err(Rejected::Closed(back)),
        };
        // Wait for space or for `close`, whichever comes first.
        let mut sel = Select::new();
        let send_op = sel.send(&self.0.tx);
        sel.recv(&self.0.close_rx);
        let oper = sel.select();
        if oper.index() == send_op {
            match oper.send(&self.0.tx, item) {
                Ok(()) => Ok(Pushed::Queued),
                Err(e) => Err(Rejected::Closed(e.into_inner())),
            }
        } else {
            let _ = oper.recv(&self.0.close_rx);
            Err(Rejected::Closed(item))
        }
    }
    policy_common!("block");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::thread;
    use std::time::Duration;

    #[test]
    fn factory_names_round_trip_and_unknown_is_error() {
        for name in ["drop-old", "drop-new", "buffer-k", "disconnect", "block"] {
            let q = create_overflow_policy::<u8>(name, 4).unwrap();
            assert_eq!(q.name(), name);
        }
        let err = create_overflow_policy::<u8>("drop-oldest", 4)
            .err()
            .unwrap();
        assert!(err.to_string().contains("drop-oldest"), "{err}");
        assert!(create_overflow_policy::<u8>("drop-new", 0).is_err());
        assert_eq!(
            create_overflow_policy::<u8>("disconnect", 0)
                .unwrap()
                .capacity(),
            0
        );
    }

    #[test]
    fn drop_old_keeps_newest() {
        let q = DropOld::new(3);
        for i in 0..10 {
            q.push(i).unwrap();
        }
        assert_eq!(q.drain(), vec![7, 8, 9]);
        assert_eq!(q.dropped(), 7);
    }

    #[test]
    fn drop_new_keeps_oldest() {
        let q = DropNew::new(3);
        let outcomes: Vec<_> = (0..5).map(|i| q.push(i).unwrap()).collect();
        assert_eq!(outcomes[3], Pushed::DroppedNew(3));
        assert_eq!(q.drain(), vec![0, 1, 2]);
        assert_eq!(q.dropped(), 2);
    }

    #[test]
    fn buffer_k_asks_to_disconnect_over_k() {
        let q = BufferK::new(2);
        q.push(1).unwrap();
        q.push(2).unwrap();
        assert_eq!(q.push(3), Err(Rejected::Disconnect(3)));
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn disconnect_hands_over_only_to_a_waiting_consumer() {
        let q = Arc::new(Disconnect::new());
        assert_eq!(q.push(1), Err(Rejected::Disconnect(1)));
        let rx = q.receiver().clone();
        let consumer = thread::spawn(move || rx.recv().unwrap());
        // Retry until the consumer is parked in recv; each refusal is counted.
        let mut n = 0;
        while q.push(2).is_err() {
            n += 1;
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(consumer.join().unwrap(), 2);
        assert_eq!(q.dropped(), n + 1);
    }

    #[test]
    fn block_waits_for_space_and_close_wakes_it() {
        let q = Arc::new(Block::new(1));
        q.push(1).unwrap();
        let q2 = q.clone();
        let producer = thread::spawn(move || q2.push(2));
        thread::sleep(Duration::from_millis(50));
        assert_eq!(q.pop(), Some(1));
        assert_eq!(producer.join().unwrap(), Ok(Pushed::Queued));
        assert_eq!(q.pop(), Some(2));

        q.push(3).unwrap();
        let q2 = q.clone();
        let producer = thread::spawn(move || q2.push(4));
        thread::sleep(Duration::from_millis(50));
        q.close();
        assert_eq!(producer.join().unwrap(), Err(Rejected::Closed(4)));
        assert_eq!(q.push(5), Err(Rejected::Closed(5)));
        assert_eq!(q.drain(), vec![3]);
    }

    #[test]
    fn concurrent_pushes_are_all_accounted_for() {
        // 8 producers race a slow consumer; queued + dropped must equal pushed, per policy.
        for strategy in [
            OverflowStrategy::DropOld,
            OverflowStrategy::DropNew,
            OverflowStrategy::Block,
        ] {
            let q: Arc<dyn OverflowPolicy<u64>> = Arc::from(strategy.build(16).unwrap());
            let barrier = Arc::new(Barrier::new(9));
            let consumed = thread::scope(|s| {
                for t in 0..8u64 {
                    let q = q.clone();
                    let b = barrier.clone();
                    s.spawn(move || {
                        b.wait();
                        for i in 0..2_000 {
                            q.push(t * 10_000 + i).unwrap();
                        }
                    });
                }
                let q2 = q.clone();
                let b = barrier.clone();
                let consumer = s.spawn(move || {
                    b.wait();
                    let mut seen = 0u64;
                    let mut last = [None::<u64>; 8];
                    while let Ok(v) = q2.receiver().recv_timeout(Duration::from_millis(300)) {
                        // Per producer, order is preserved whatever is dropped.
                        let p = (v / 10_000) as usize;
                        assert!(last[p].is_none_or(|l| l < v), "{strategy}: out of order");
                        last[p] = Some(v);
                        seen += 1;
                    }
                    seen
                });
                consumer.join().unwrap()
            });
            assert_eq!(consumed + q.dropped(), 16_000, "{strategy}");
            if strategy == OverflowStrategy::Block {
                assert_eq!(q.dropped(), 0);
            }
        }
    }
}
