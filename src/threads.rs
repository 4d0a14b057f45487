//! Thread ownership for components: named spawns, a registry of live threads, and a join that
//! never waits for the calling thread itself (dispose may run inside a callback on one of them).
//! Each component may also run one timer thread ([`Threads::schedule`]): heartbeats of all its
//! connections run on it, and it joins the component's threads as soon as they exit, so an
//! ended connection's stack is released at once, not when the next one arrives.

use std::cell::RefCell;
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Instant;

use crossbeam_channel::{bounded, select, Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};

static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

thread_local! {
    // The components (and their ancestors) that own the current thread.
    static OWNERS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// The threads one component started.
pub(crate) struct Threads {
    id: u64,
    chain: Vec<u64>,
    component: Arc<str>,
    stack_size: usize,
    live: Mutex<HashMap<ThreadId, JoinHandle<()>>>,
    finished: Mutex<Vec<JoinHandle<()>>>,
    stopping: AtomicBool,
    done_tx: Mutex<Option<Sender<()>>>,
    done_rx: Receiver<()>,
    // Disconnected when stopping begins: wakes threads blocked in `select!`.
    stop_tx: Mutex<Option<Sender<()>>>,
    stop_rx: Receiver<()>,
    timer: Mutex<TimerState>,
    /// Wakes the timer thread: a new earliest deadline, or a thread to join.
    timer_tx: Sender<()>,
    timer_rx: Receiver<()>,
}

/// Something the component's timer thread calls at a deadline (a connection's heartbeat).
pub(crate) trait Tick: Send + Sync {
    /// Called at or after its deadline; returns the next one, or `None` to be forgotten.
    fn tick(&self, now: Instant) -> Option<Instant>;
}

#[derive(Default)]
struct TimerState {
    heap: BinaryHeap<Reverse<Due>>,
    seq: u64,
    started: bool,
    /// Threads joined since dead entries were last dropped from the heap.
    joined: usize,
}

struct Due {
    at: Instant,
    seq: u64,
    what: Weak<dyn Tick>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Threads {
    /// A registry for a component; `parent` ties child components (a group's clients) to the
    /// parent so the parent's threads count as "own threads" for the child too.
    pub(crate) fn new(
        component: Arc<str>,
        stack_size: usize,
        parent: Option<&Threads>,
    ) -> Arc<Self> {
        let id = NEXT_OWNER.fetch_add(1, Ordering::Relaxed);
        let mut chain = parent.map(|p| p.chain.clone()).unwrap_or_default();
        chain.push(id);
        let (done_tx, done_rx) = bounded(0);
        let (stop_tx, stop_rx) = bounded(0);
        let (timer_tx, timer_rx) = bounded(1);
        Arc::new(Threads {
            id,
            chain,
            component,
            stack_size,
            live: Mutex::new(HashMap::new()),
            finished: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            done_tx: Mutex::new(Some(done_tx)),
            done_rx,
            stop_tx: Mutex::new(Some(stop_tx)),
            stop_rx,
            timer: Mutex::new(TimerState::default()),
            timer_tx,
            timer_rx,
        })
    }

    /// Has the timer thread call `what` at `at` (and at each deadline it returns after that).
    /// The timer holds it weakly: once dropped it is forgotten.
    pub(crate) fn schedule(self: &Arc<Self>, at: Instant, what: Weak<dyn Tick>) -> Result<()> {
        let mut t = self.timer.lock();
        t.seq += 1;
        let seq = t.seq;
        t.heap.push(Reverse(Due { at, seq, what }));
        drop(t);
        self.start_timer()?;
        let _ = self.timer_tx.try_send(());
        Ok(())
    }

    /// Starts the timer thread if it is not running: it also joins threads as they exit.
    pub(crate) fn start_timer(self: &Arc<Self>) -> Result<()> {
        let mut t = self.timer.lock();
        if t.started {
            return Ok(());
        }
        t.started = true;
        drop(t);
        let me = self.clone();
        let res = self.spawn("rxws-timer".into(), move || me.run_timer());
        if res.is_err() {
            self.timer.lock().started = false;
        }
        res
    }

    fn run_timer(&self) {
        let me = thread::current().id();
        loop {
            // Threads that exited since the last round: join them now, releasing their stacks.
            let done: Vec<_> = std::mem::take(&mut *self.finished.lock());
            let mut joined = 0;
            for h in done {
                if h.thread().id() == me {
                    self.finished.lock().push(h);
                } else {
                    let _ = h.join();
                    joined += 1;
                }
            }
            if joined > 0 {
                // An ended connection's entry would stay until its deadline (a ping interval),
                // keeping its memory: drop dead entries once about half may be dead (amortised
                // O(1) per ended thread).
                let mut t = self.timer.lock();
                t.joined += joined;
                if t.joined * 2 >= t.heap.len() {
                    t.heap.retain(|Reverse(d)| d.what.strong_count() > 0);
                    t.joined = 0;
                }
            }
            let now = Instant::now();
            let mut due = Vec::new();
            {
                let mut t = self.timer.lock();
                while t.heap.peek().is_some_and(|Reverse(d)| d.at <= now) {
                    if let Some(Reverse(d)) = t.heap.pop() {
                        due.push(d);
                    }
                }
            }
            // Called outside the lock: a tick may schedule again.
            for d in due {
                if let Some(at) = d.what.upgrade().and_then(|what| what.tick(now)) {
                    self.timer.lock().heap.push(Reverse(Due { at, ..d }));
                }
            }
            let next = self.timer.lock().heap.peek().map(|Reverse(d)| d.at);
            match next {
                Some(at) if at <= Instant::now() => {}
                Some(at) => select! {
                    recv(self.timer_rx) -> _ => {},
                    recv(self.stop_rx) -> _ => return,
                    default(at.saturating_duration_since(Instant::now())) => {},
                },
                None => select! {
                    recv(self.timer_rx) -> _ => {},
                    recv(self.stop_rx) -> _ => return,
                },
            }
            if self.is_stopping() {
                return;
            }
        }
    }

    /// Starts a named thread owned by this component. Refused once stopping.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        name: String,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<()> {
        let mut live = self.live.lock();
        if self.is_stopping() {
            return Err(Error::closed(&self.component));
        }
        let me = self.clone();
        let chain = self.chain.clone();
        let handle = thread::Builder::new()
            .name(name)
            .stack_size(self.stack_size)
            .spawn(move || {
                OWNERS.with(|o| *o.borrow_mut() = chain);
                // Moves this thread's handle to `finished` however the body ends.
                let _exit = ExitGuard(me);
                f();
            })
            .map_err(|e| Error::io(&self.component, None, e))?;
        live.insert(handle.thread().id(), handle);
        // Reap threads that have finished since the last spawn, so the registry stays small.
        let done: Vec<_> = std::mem::take(&mut *self.finished.lock());
        drop(live);
        for h in done {
            let _ = h.join();
        }
        Ok(())
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Marks the component as stopping; true for the first caller only.
    pub(crate) fn begin_stop(&self) -> bool {
        let first = !self.stopping.swap(true, Ordering::AcqRel);
        self.stop_tx.lock().take();
        first
    }

    /// A receiver that becomes ready (disconnected) once stopping begins.
    pub(crate) fn stop_signal(&self) -> &Receiver<()> {
        &self.stop_rx
    }

    /// True when called from a thread of this component (or of a component it belongs to).
    pub(crate) fn on_own_thread(&self) -> bool {
        OWNERS.with(|o| o.borrow().contains(&self.id))
    }

    /// Joins every thread except the calling one, including threads spawned while joining,
    /// then signals `wait_stopped` waiters.
    pub(crate) fn join_all(&self) {
        let me = thread::current().id();
        loop {
            let mut batch: Vec<JoinHandle<()>> = std::mem::take(&mut *self.finished.lock());
            {
                let mut live = self.live.lock();
                let ids: Vec<ThreadId> = live.keys().copied().filter(|id| *id != me).collect();
                for id in ids {
                    if let Some(h) = live.remove(&id) {
                        batch.push(h);
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            for h in batch {
                if h.thread().id() != me {
                    let _ = h.join();
                }
            }
        }
        self.done_tx.lock().take();
    }

    /// Blocks until another caller's `join_all` has finished. Returns at once on an own thread.
    pub(crate) fn wait_stopped(&self) {
        if !self.on_own_thread() {
            let _ = self.done_rx.recv();
        }
    }

    /// Threads alive now (for tests and stats).
    pub(crate) fn live_count(&self) -> usize {
        self.live.lock().len()
    }
}

/// Waits on `changed` (notified under `lock` whenever a state changes) until `settled` gives an
/// answer, or `timeout` passes: then whatever `settled` says, `false` if still undecided.
/// Constant memory per call, however many waiters.
pub(crate) fn wait_for_state(
    lock: &Mutex<()>,
    changed: &Condvar,
    timeout: std::time::Duration,
    mut settled: impl FnMut() -> Option<bool>,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut guard = lock.lock();
    loop {
        if let Some(answer) = settled() {
            return answer;
        }
        if changed.wait_until(&mut guard, deadline).timed_out() {
            return settled().unwrap_or(false);
        }
    }
}

struct ExitGuard(Arc<Threads>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let id = thread::current().id();
        let mut live = self.0.live.lock();
        if let Some(h) = live.remove(&id) {
            // Joined by the timer thread (at once), the next spawn or join_all.
            self.0.finished.lock().push(h);
            drop(live);
            if self.0.timer.lock().started {
                let _ = self.0.timer_tx.try_send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_timer_thread_joins_an_exited_thread_without_another_spawn() {
        let t = Threads::new("reap".into(), 64 << 10, None);
        t.start_timer().unwrap();
        for _ in 0..50 {
            t.spawn("short".into(), || {}).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            // Joined (not only exited): its handle has left both lists.
            while !(t.finished.lock().is_empty() && t.live_count() == 1) {
                assert!(Instant::now() < deadline, "exited thread not joined");
                thread::sleep(Duration::from_millis(1));
            }
        }
        t.begin_stop();
        t.join_all();
        assert_eq!(t.live_count(), 0);
    }

    struct Count(AtomicU64, u64);
    impl Tick for Count {
        fn tick(&self, now: Instant) -> Option<Instant> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            (n < self.1).then(|| now + Duration::from_millis(1))
        }
    }

    #[test]
    fn ticks_run_until_they_stop_asking_and_dropped_ones_are_forgotten() {
        let t = Threads::new("tick".into(), 64 << 10, None);
        let a = Arc::new(Count(AtomicU64::new(0), 5));
        let b = Arc::new(Count(AtomicU64::new(0), u64::MAX));
        let now = Instant::now();
        let wa: Weak<dyn Tick> = Arc::downgrade(&a) as Weak<dyn Tick>;
        let wb: Weak<dyn Tick> = Arc::downgrade(&b) as Weak<dyn Tick>;
        t.schedule(now, wa).unwrap();
        t.schedule(now, wb).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.0.load(Ordering::SeqCst) < 5 || b.0.load(Ordering::SeqCst) < 5 {
            assert!(Instant::now() < deadline);
            thread::sleep(Duration::from_millis(1));
        }
        drop(b);
        thread::sleep(Duration::from_millis(20));
        assert_eq!(a.0.load(Ordering::SeqCst), 5, "a asked for no more");
        assert!(t.timer.lock().heap.is_empty(), "b forgotten once dropped");
        t.begin_stop();
        t.join_all();
    }

    #[test]
    fn an_ended_threads_join_drops_dead_entries_before_their_deadline() {
        let t = Threads::new("prune".into(), 64 << 10, None);
        let far = Instant::now() + Duration::from_secs(3600);
        let a = Arc::new(Count(AtomicU64::new(0), 1));
        let wa: Weak<dyn Tick> = Arc::downgrade(&a) as Weak<dyn Tick>;
        t.schedule(far, wa).unwrap();
        drop(a);
        t.spawn("short".into(), || {}).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !t.timer.lock().heap.is_empty() {
            assert!(
                Instant::now() < deadline,
                "dead entry kept until its deadline"
            );
            thread::sleep(Duration::from_millis(1));
        }
        t.begin_stop();
        t.join_all();
    }
}
