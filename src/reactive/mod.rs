//! The small reactive surface: [`Observer`], [`Subscription`], [`Notification`], and the subject
//! every component uses to fan items out to its subscribers.
//!
//! Rules (ReactiveX): no `on_next` after a terminal notification; a late subscriber receives the
//! terminal notification at once; callbacks for one subscriber never run concurrently.
//!
//! ```
//! use rxplus::{FnObserver, Observer};
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//!
//! let seen = Arc::new(AtomicUsize::new(0));
//! let s = seen.clone();
//! // Any `Fn(T) + Send + Sync` closure is an observer of its `on_next`…
//! let by_closure = move |n: usize| { s.fetch_add(n, Ordering::SeqCst); };
//! by_closure.on_next(2);
//! // …and `FnObserver` adds the terminal callbacks.
//! let full = FnObserver::new(|n: usize| println!("{n}"))
//!     .on_error(|e| eprintln!("{e}"))
//!     .on_completed(|| println!("done"));
//! Observer::on_completed(&full);
//! assert_eq!(seen.load(Ordering::SeqCst), 2);
//! ```

use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{bounded, select, Receiver, Sender, TrySendError};
use parking_lot::{Mutex, ReentrantMutex, ReentrantMutexGuard};

use crate::error::Error;

/// Receives the notifications of a stream.
///
/// Callbacks run on the component's threads. They take `&self`: an observer that keeps state
/// uses atomics, a lock of its own or a channel. A slow callback slows the connection that
/// feeds it (and through TCP, the peer); it never makes memory grow.
pub trait Observer<T>: Send + Sync {
    /// One item.
    fn on_next(&self, item: T);
    /// The stream failed; nothing follows.
    fn on_error(&self, error: Error) {
        let _ = error;
    }
    /// The stream ended; nothing follows.
    fn on_completed(&self) {}
}

impl<T, F> Observer<T> for F
where
    F: Fn(T) + Send + Sync,
{
    fn on_next(&self, item: T) {
        self(item)
    }
}

/// An observer built from closures: `FnObserver::new(next).on_error(err).on_completed(done)`.
pub struct FnObserver<T> {
    next: Box<dyn Fn(T) + Send + Sync>,
    error: Box<dyn Fn(Error) + Send + Sync>,
    completed: Box<dyn Fn() + Send + Sync>,
}

impl<T> FnObserver<T> {
    /// An observer calling `next` for each item and ignoring terminal notifications.
    pub fn new(next: impl Fn(T) + Send + Sync + 'static) -> Self {
        FnObserver {
            next: Box::new(next),
            error: Box::new(|_| {}),
            completed: Box::new(|| {}),
        }
    }
    /// Sets the error callback.
    pub fn on_error(mut self, f: impl Fn(Error) + Send + Sync + 'static) -> Self {
        self.error = Box::new(f);
        self
    }
    /// Sets the completion callback.
    pub fn on_completed(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.completed = Box::new(f);
        self
    }
}

impl<T> Observer<T> for FnObserver<T> {
    fn on_next(&self, item: T) {
        (self.next)(item)
    }
    fn on_error(&self, error: Error) {
        (self.error)(error)
    }
    fn on_completed(&self) {
        (self.completed)()
    }
}

impl<T> fmt::Debug for FnObserver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnObserver")
    }
}

/// One notification, as delivered by the channel-style `stream()` receivers.
#[derive(Debug, Clone)]
pub enum Notification<T> {
    /// An item.
    Next(T),
    /// The stream failed; nothing follows.
    Error(Error),
    /// The stream ended; nothing follows.
    Completed,
}

impl<T> Notification<T> {
    /// The item of a `Next`; `None` for a terminal notification.
    pub fn into_item(self) -> Option<T> {
        match self {
            Notification::Next(t) => Some(t),
            _ => None,
        }
    }
}

/// A live subscription: it lasts until [`unsubscribe`](Self::unsubscribe) or until the
/// component ends. Dropping it does **not** unsubscribe (so `let _ = c.subscribe(..)` and a
/// bare `c.subscribe(..);` both keep the subscriber); [`guard`](Self::guard) makes a
/// [`SubscriptionGuard`] that unsubscribes when it goes out of scope.
///
/// When `unsubscribe` returns, no callback of this subscriber is running and none will start:
/// a callback already running on another thread is waited for. Called from inside the
/// subscriber's own callback it returns at once (that callback finishes, nothing follows it).
/// Do not unsubscribe while holding a lock your callback takes: the wait would deadlock, as it
/// would with any join.
pub struct Subscription {
    // Weak: a subscription kept after its component ended holds neither entry nor callback.
    // None when the subject had ended before it subscribed.
    entry: Option<Weak<dyn Gated>>,
    owner: Option<(Weak<dyn Unsubscribe>, u64)>,
}

impl Subscription {
    fn inert() -> Self {
        Subscription {
            entry: None,
            owner: None,
        }
    }

    /// Stops delivery to this subscriber (see the type's docs for what "stops" guarantees).
    pub fn unsubscribe(mut self) {
        self.cancel();
    }

    /// A guard that unsubscribes when dropped: a subscription scoped to a block.
    ///
    /// ```
    /// # use rxplus::ws::{RxWSServer, Text};
    /// # let server = RxWSServer::<String>::bind("127.0.0.1:0", Text)?;
    /// {
    ///     let _guard = server.subscribe(|m| println!("{}", m.data)).guard();
    ///     // … delivered while the guard lives …
    /// } // unsubscribed here
    /// # Ok::<(), rxplus::Error>(())
    /// ```
    pub fn guard(self) -> SubscriptionGuard {
        SubscriptionGuard(self)
    }

    /// True while notifications are still delivered to this subscriber.
    pub fn is_active(&self) -> bool {
        self.entry
            .as_ref()
            .and_then(Weak::upgrade)
            .is_some_and(|e| e.is_active())
    }

    fn cancel(&mut self) {
        let Some((owner, id)) = self.owner.take() else {
            return;
        };
        // An entry no snapshot holds any more runs nothing.
        let Some(entry) = self.entry.as_ref().and_then(Weak::upgrade) else {
            return;
        };
        entry.deactivate();
        let owner = owner.upgrade();
        if let Some(owner) = &owner {
            owner.remove(id);
        }
        // A delivery that passed the active check before `deactivate` holds the gate until its
        // callback returns: wait for it (at once on the callback's own thread, the gate being
        // re-entrant). A disposed component's deliveries are cut short, so stop waiting then.
        loop {
            if entry.wait_idle(GATE_RECHECK) {
                return;
            }
            if owner.as_ref().is_none_or(|o| o.aborted()) {
                return;
            }
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("active", &self.is_active())
            .finish()
    }
}

/// A [`Subscription`] that unsubscribes when dropped (from [`Subscription::guard`]).
#[must_use = "dropping a SubscriptionGuard unsubscribes at once; bind it to a variable"]
#[derive(Debug)]
pub struct SubscriptionGuard(Subscription);

impl SubscriptionGuard {
    /// True while notifications are still delivered to this subscriber.
    pub fn is_active(&self) -> bool {
        self.0.is_active()
    }
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

trait Unsubscribe: Send + Sync {
    fn remove(&self, id: u64);
    fn aborted(&self) -> bool;
}

enum Target<T> {
    Observer(Box<dyn Observer<T>>),
    Channel(Sender<Notification<T>>),
}

struct Entry<T> {
    id: u64,
    /// Cleared by unsubscribe, a terminal notification, or a callback cut off.
    active: AtomicBool,
    // Serialises this subscriber's callbacks. Re-entrant so a callback may emit into the same
    // subject (e.g. dispose from inside on_next) without deadlocking itself.
    gate: ReentrantMutex<Gate<T>>,
}

/// What an entry's gate guards.
struct Gate<T> {
    /// The last state version delivered (for replaying subjects).
    version: Cell<u64>,
    /// The callback or channel; taken out (and dropped, outside the gate) once the entry is
    /// inactive, so a stale snapshot that still holds the entry holds no user state.
    target: RefCell<Option<Target<T>>>,
}

impl<T> Entry<T> {
    fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Releases the gate. An inactive entry's target is taken out first and dropped after (its
    /// drop may run user code), so a stale snapshot that still holds the entry holds no user
    /// state; not while a callback of it runs on this thread (its delivery does it on return).
    fn unlock(&self, gate: ReentrantMutexGuard<'_, Gate<T>>) {
        let target = if self.is_active() {
            None
        } else {
            gate.target.try_borrow_mut().ok().and_then(|mut t| t.take())
        };
        drop(gate);
        drop(target);
    }
}

/// A subscription's view of its entry, whatever the item type.
trait Gated: Send + Sync {
    fn is_active(&self) -> bool;
    fn deactivate(&self);
    /// Waits up to `d` for the entry's running callback, if any, to return, then releases
    /// the gate (see `Entry::unlock`). False if the wait timed out.
    fn wait_idle(&self, d: Duration) -> bool;
}

impl<T: Send> Gated for Entry<T> {
    fn is_active(&self) -> bool {
        Entry::is_active(self)
    }
    fn deactivate(&self) {
        self.active.store(false, Ordering::Release);
    }
    fn wait_idle(&self, d: Duration) -> bool {
        match self.gate.try_lock_for(d) {
            Some(g) => {
                self.unlock(g);
                true
            }
            None => false,
        }
    }
}

/// One emitting thread's copy of a subject's subscriber set, reloaded only when the set has
/// changed (a plain load per emission instead of the snapshot's reference counting).
pub(crate) struct SubsCache<T> {
    generation: u64,
    subs: Option<Arc<Vec<Arc<Entry<T>>>>>,
}

impl<T> Default for SubsCache<T> {
    fn default() -> Self {
        SubsCache {
            generation: 0,
            subs: None,
        }
    }
}

/// How long a terminal notification may wait, in all, for full channel receivers nobody reads
/// (and, once the component is disposed, for gates held by callbacks still running).
pub(crate) const TERMINAL_SEND_WAIT: Duration = Duration::from_millis(200);
/// How often a delivery blocked on another thread's callback rechecks for abort.
const GATE_RECHECK: Duration = Duration::from_millis(20);

/// A thread-safe subject: fan-out to subscribers, terminal rules, optional replay of the
/// current value (for connection-state streams).
pub(crate) struct Subject<T> {
    name: String,
    // The subscriber set, swapped whole on subscribe and unsubscribe: an emission reads it
    // without a lock, a reference count or an allocation. `subs_write` orders the writers.
    subs: ArcSwap<Vec<Arc<Entry<T>>>>,
    subs_write: Mutex<()>,
    // Bumped after every change of `subs`, for emitters that keep a `SubsCache`.
    generation: AtomicU64,
    terminal: Mutex<Option<Notification<T>>>,
    terminated: AtomicBool,
    next_id: AtomicU64,
    // Replaying subjects keep (version, value); None for plain subjects.
    current: Option<Mutex<(u64, T)>>,
    aborted: AtomicBool,
    abort_tx: Mutex<Option<Sender<()>>>,
    abort_rx: Receiver<()>,
    stream_capacity: usize,
}

impl<T: Clone + Send + 'static> Subject<T> {
    pub(crate) fn new(name: impl Into<String>, stream_capacity: usize) -> Arc<Self> {
        Arc::new(Self::build(name.into(), None, stream_capacity))
    }

    /// A subject that replays its current value to each new subscriber.
    pub(crate) fn replaying(
        name: impl Into<String>,
        initial: T,
        stream_capacity: usize,
    ) -> Arc<Self> {
        Arc::new(Self::build(
            name.into(),
            Some(Mutex::new((0, initial))),
            stream_capacity,
        ))
    }

    fn build(name: String, current: Option<Mutex<(u64, T)>>, stream_capacity: usize) -> Self {
        let (abort_tx, abort_rx) = bounded(0);
        Subject {
            name,
            subs: ArcSwap::from_pointee(Vec::new()),
            subs_write: Mutex::new(()),
            generation: AtomicU64::new(0),
            terminal: Mutex::new(None),
            terminated: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            current,
            aborted: AtomicBool::new(false),
            abort_tx: Mutex::new(Some(abort_tx)),
            abort_rx,
            stream_capacity: stream_capacity.max(1),
        }
    }

    pub(crate) fn subscribe(self: &Arc<Self>, observer: Box<dyn Observer<T>>) -> Subscription {
        self.add(Target::Observer(observer))
    }

    pub(crate) fn stream(self: &Arc<Self>) -> Receiver<Notification<T>> {
        let (tx, rx) = bounded(self.stream_capacity);
        self.add(Target::Channel(tx));
        rx
    }

    fn add(self: &Arc<Self>, target: Target<T>) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            id,
            active: AtomicBool::new(true),
            gate: ReentrantMutex::new(Gate {
                version: Cell::new(0),
                target: RefCell::new(Some(target)),
            }),
        });
        // Hold the gate while inserting and replaying, so a concurrent emission reaching the
        // new entry waits for the replayed value and never overtakes it.
        let gate = entry.gate.lock();
        {
            let terminal = self.terminal.lock();
            if let Some(t) = terminal.clone() {
                drop(terminal);
                drop(gate);
                self.deliver(&entry, t, 0, Some(Instant::now() + TERMINAL_SEND_WAIT));
                return Subscription::inert();
            }
            let _w = self.subs_write.lock();
            let subs = self.subs.load();
            let mut v = Vec::with_capacity(subs.len() + 1);
            v.extend(subs.iter().cloned());
            v.push(entry.clone());
            self.store_subs(Arc::new(v));
        }
        if let Some(cur) = &self.current {
            let (version, value) = cur.lock().clone();
            gate.version.set(version);
            self.call(&entry, &gate, Notification::Next(value), None);
        }
        entry.unlock(gate);
        let owner: Arc<dyn Unsubscribe> = self.clone();
        let gated: Arc<dyn Gated> = entry.clone();
        Subscription {
            entry: Some(Arc::downgrade(&gated)),
            owner: Some((Arc::downgrade(&owner), id)),
        }
    }

    /// The current value of a replaying subject.
    pub(crate) fn current(&self) -> Option<T> {
        self.current.as_ref().map(|c| c.lock().1.clone())
    }

    pub(crate) fn is_terminated(&self) -> bool {
        self.terminated.load(Ordering::Acquire)
    }

    fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Emits one item to every subscriber, cloning n-1 times. Nothing is delivered once the
    /// subject is terminated or aborted (dispose has begun).
    pub(crate) fn next(&self, item: T) {
        if let Some(version) = self.admit(&item) {
            self.emit(&self.subs.load(), item, version);
        }
    }

    /// Like [`next`](Self::next), reading the subscriber set from the caller's `cache` (a
    /// thread that emits every item of a stream, such as a connection's reader, keeps one).
    pub(crate) fn next_cached(&self, item: T, cache: &mut SubsCache<T>) {
        let Some(version) = self.admit(&item) else {
            return;
        };
        // Read before the set: a set newer than the generation is reloaded once more, never
        // one older.
        let generation = self.generation.load(Ordering::Acquire);
        let subs = match &cache.subs {
            Some(s) if cache.generation == generation => s,
            _ => {
                cache.generation = generation;
                cache.subs.insert(self.subs.load_full())
            }
        };
        self.emit(subs, item, version);
    }

    /// The state version of an item about to be emitted; None when nothing may be (the
    /// subject is terminated, or aborted: dispose has begun).
    fn admit(&self, item: &T) -> Option<u64> {
        if self.is_terminated() || self.is_aborted() {
            return None;
        }
        Some(self.set_current(item))
    }

    fn emit(&self, subs: &[Arc<Entry<T>>], item: T, version: u64) {
        if let Some((last, rest)) = subs.split_last() {
            for e in rest {
                self.deliver(e, Notification::Next(item.clone()), version, None);
            }
            self.deliver(last, Notification::Next(item), version, None);
        }
    }

    /// Emits one item even once aborted, each delivery waiting at most until `deadline` (a
    /// node's last `Disconnected` events during its stop: delivered, but never able to hold the
    /// stop up). Nothing once terminated.
    pub(crate) fn next_final(&self, item: T, deadline: Instant) {
        if self.is_terminated() {
            return;
        }
        let version = self.set_current(&item);
        let subs = self.subs.load();
        for e in subs.iter() {
            self.deliver(e, Notification::Next(item.clone()), version, Some(deadline));
        }
    }

    /// Records the current value of a replaying subject; its version (0 for plain subjects).
    fn set_current(&self, item: &T) -> u64 {
        match &self.current {
            Some(cur) => {
                let mut c = cur.lock();
                c.0 += 1;
                c.1 = item.clone();
                c.0
            }
            None => 0,
        }
    }

    /// Emits a terminal notification once; later calls return false.
    ///
    /// Every subscriber gets it after the items delivered to it before, even once aborted.
    /// Full channel receivers are waited for (all of them together) up to
    /// [`TERMINAL_SEND_WAIT`].
    pub(crate) fn terminate(&self, n: Notification<T>) -> bool {
        self.finish(None, n)
    }

    /// Like [`terminate`](Self::terminate), with a last item delivered just before the
    /// terminal notification, even once aborted (a client's final `Closed` state).
    pub(crate) fn terminate_with(&self, last: T, n: Notification<T>) -> bool {
        self.finish(Some(last), n)
    }

    fn finish(&self, last: Option<T>, n: Notification<T>) -> bool {
        {
            let mut t = self.terminal.lock();
            if t.is_some() {
                return false;
            }
            *t = Some(n.clone());
            self.terminated.store(true, Ordering::Release);
        }
        let subs = {
            let _w = self.subs_write.lock();
            self.store_subs(Arc::new(Vec::new()))
        };
        let deadline = Some(Instant::now() + TERMINAL_SEND_WAIT);
        let last = last.map(|item| {
            let version = self.set_current(&item);
            (item, version)
        });
        for e in subs.iter() {
            if let Some((item, version)) = &last {
                self.deliver(e, Notification::Next(item.clone()), *version, deadline);
            }
            self.deliver(e, n.clone(), 0, deadline);
        }
        true
    }

    /// Stops delivery of items at once and unblocks deliveries waiting on slow subscribers or
    /// full channels; used by dispose. Terminal notifications still go out.
    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.abort_tx.lock().take();
    }

    /// Delivers `n` to one subscriber under its gate. An ordinary item (`deadline` None) is
    /// given up once the subject is aborted: the gate's holder may be a callback that is
    /// disposing us and joining this thread. The final notifications carry a deadline and
    /// survive abort until it passes.
    fn deliver(&self, e: &Entry<T>, n: Notification<T>, version: u64, deadline: Option<Instant>) {
        let Some(gate) = self.gate(e, deadline) else {
            return;
        };
        if e.is_active() && (deadline.is_some() || !self.is_aborted()) {
            if version != 0 {
                if version <= gate.version.get() {
                    return; // already replayed this value
                }
                gate.version.set(version);
            }
            if !matches!(n, Notification::Next(_)) {
                e.active.store(false, Ordering::Release);
            }
            self.call(e, &gate, n, deadline);
        }
        // Unsubscribed, ended or cut off: its callback is dropped now, not when the last
        // snapshot holding the entry goes.
        e.unlock(gate);
    }

    /// Takes a subscriber's gate, waiting for its running callback; None once the subject is
    /// aborted (an ordinary item) or once `deadline` passes after that (a final one).
    fn gate<'a>(
        &self,
        e: &'a Entry<T>,
        deadline: Option<Instant>,
    ) -> Option<ReentrantMutexGuard<'a, Gate<T>>> {
        loop {
            if deadline.is_none() && self.is_aborted() {
                return None;
            }
            if let Some(g) = e.gate.try_lock_for(GATE_RECHECK) {
                return Some(g);
            }
            if self.is_aborted() && deadline.is_none_or(|d| Instant::now() >= d) {
                return None;
            }
        }
    }

    /// Runs one callback. The caller holds the entry's gate and no other lock; `deadline` is
    /// set for the final notifications.
    fn call(&self, e: &Entry<T>, gate: &Gate<T>, n: Notification<T>, deadline: Option<Instant>) {
        let target = gate.target.borrow();
        match &*target {
            None => {}
            Some(Target::Observer(o)) => {
                let res = catch_unwind(AssertUnwindSafe(|| match n {
                    Notification::Next(v) => o.on_next(v),
                    Notification::Error(err) => o.on_error(err),
                    Notification::Completed => o.on_completed(),
                }));
                if res.is_err() {
                    // A panicking subscriber is cut off; the component keeps serving the others.
                    log::error!(component = self.name.as_str(), subscriber = e.id; "{}", crate::telemetry::event::SUBSCRIBER_PANICKED);
                    e.active.store(false, Ordering::Release);
                    self.remove(e.id);
                }
            }
            Some(Target::Channel(tx)) => {
                let n = match tx.try_send(n) {
                    Ok(()) => return,
                    Err(TrySendError::Full(n)) => n,
                    Err(TrySendError::Disconnected(_)) => {
                        // The receiver was dropped: stop feeding it.
                        e.active.store(false, Ordering::Release);
                        self.remove(e.id);
                        return;
                    }
                };
                // Full: wait for the reader. An item gives up when dispose begins; a final
                // notification waits until its deadline, so it is never lost to a race with
                // abort (a receiver still being read always gets it).
                let sent = match deadline {
                    Some(d) => tx.send_deadline(n, d).is_ok(),
                    None => select! {
                        send(tx, n) -> r => r.is_ok(),
                        recv(self.abort_rx) -> _ => true,
                    },
                };
                if !sent && deadline.is_none() {
                    e.active.store(false, Ordering::Release);
                    self.remove(e.id);
                }
            }
        }
    }
}

impl<T> Subject<T> {
    /// Replaces the subscriber set (the caller holds `subs_write`).
    fn store_subs(&self, subs: Arc<Vec<Arc<Entry<T>>>>) -> Arc<Vec<Arc<Entry<T>>>> {
        let old = self.subs.swap(subs);
        self.generation.fetch_add(1, Ordering::Release);
        old
    }
}

impl<T: Send + 'static> Unsubscribe for Subject<T> {
    fn remove(&self, id: u64) {
        let old = {
            let _w = self.subs_write.lock();
            let subs = self.subs.load_full();
            if !subs.iter().any(|e| e.id == id) {
                return;
            }
            let v: Vec<_> = subs.iter().filter(|e| e.id != id).cloned().collect();
            self.store_subs(Arc::new(v))
        };
        // Maybe the entry's last reference, and with it the callback (user code, which may
        // unsubscribe in turn): dropped after the writers' lock is released.
        drop(old);
    }
    fn aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests;
