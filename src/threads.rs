//! Thread ownership for components: named spawns, a registry of live threads, and a join that
//! never waits for the calling thread itself (dispose may run inside a callback on one of them).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;

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
        })
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

struct ExitGuard(Arc<Threads>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let id = thread::current().id();
        let mut live = self.0.live.lock();
        if let Some(h) = live.remove(&id) {
            // Joined by the next spawn or by join_all; the thread is exiting now.
            self.0.finished.lock().push(h);
        }
    }
}
