//! The server-wide budget for inbound partial messages ([`WSConfig::inbound_budget`]): each
//! connection reads the first [`FREE_INBOUND`] bytes towards a message freely and draws on the
//! budget beyond that; when it is spent, readers wait before reading (TCP pushes back on their
//! peers) until messages complete elsewhere. One connection at a time may overdraw, so the
//! largest allowed message always completes and waiting readers cannot deadlock on each
//! other's partial messages: memory stays below the budget plus one message.
//!
//! [`WSConfig::inbound_budget`]: crate::ws::WSConfig::inbound_budget

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::telemetry::event;

/// Bytes towards one message a connection reads without drawing on the budget: small messages
/// never touch it.
pub(crate) const FREE_INBOUND: usize = 64 << 10;

pub(crate) struct InboundBudget {
    component: Arc<str>,
    max: usize,
    st: Mutex<BudgetState>,
    cv: Condvar,
}

#[derive(Default)]
struct BudgetState {
    used: usize,
    peak: usize,
    /// The one connection allowed past the budget until its message completes.
    overdraft: Option<u64>,
    /// Readers waiting now (a WARN is logged when the first one starts waiting).
    waiting: usize,
}

impl InboundBudget {
    pub(crate) fn new(component: Arc<str>, max: usize) -> Arc<Self> {
        Arc::new(InboundBudget {
            component,
            max,
            st: Mutex::new(BudgetState::default()),
            cv: Condvar::new(),
        })
    }

    /// Takes `n` bytes for connection `who`, waiting while the budget is spent. False when
    /// `stop` was set meanwhile (the connection is being aborted; see [`Self::wake`]).
    pub(crate) fn acquire(&self, who: u64, n: usize, stop: &AtomicBool) -> bool {
        let mut st = self.st.lock();
        let mut waited = false;
        loop {
            let fits = st.used.saturating_add(n) <= self.max;
            if fits || st.overdraft == Some(who) || st.overdraft.is_none() {
                if !fits {
                    st.overdraft = Some(who);
                }
                st.used += n;
                st.peak = st.peak.max(st.used);
                if waited {
                    st.waiting -= 1;
                }
                return true;
            }
            if stop.load(Ordering::Acquire) {
                if waited {
                    st.waiting -= 1;
                }
                return false;
            }
            if !waited {
                waited = true;
                st.waiting += 1;
                if st.waiting == 1 {
                    log::warn!(component = &*self.component, used = st.used, budget = self.max; "{}", event::INBOUND_BUDGET_SPENT);
                }
            }
            self.cv.wait(&mut st);
        }
    }

    /// Gives back `n` bytes; `done` when `who`'s message completed (ending its overdraft).
    pub(crate) fn release(&self, who: u64, n: usize, done: bool) {
        let mut st = self.st.lock();
        st.used = st.used.saturating_sub(n);
        if done && st.overdraft == Some(who) {
            st.overdraft = None;
        }
        let wake = st.waiting > 0;
        drop(st);
        if wake {
            self.cv.notify_all();
        }
    }

    /// Wakes waiting readers so an aborted one sees its stop flag.
    pub(crate) fn wake(&self) {
        let _held = self.st.lock();
        self.cv.notify_all();
    }

    /// Bytes held now and the most ever held.
    pub(crate) fn usage(&self) -> (usize, usize) {
        let st = self.st.lock();
        (st.used, st.peak)
    }
}

/// One connection's account with the budget, kept by its read half.
pub(crate) struct Account {
    pub(crate) budget: Arc<InboundBudget>,
    pub(crate) who: u64,
    pub(crate) stop: Arc<AtomicBool>,
    /// Bytes read since the last complete message.
    pub(crate) since_msg: usize,
    /// Bytes drawn from the budget for the message under way.
    pub(crate) held: usize,
}

impl Account {
    /// A message completed: what it drew goes back.
    pub(crate) fn message_done(&mut self) {
        if self.held > 0 || self.since_msg > FREE_INBOUND {
            self.budget.release(self.who, self.held, true);
        }
        self.held = 0;
        self.since_msg = 0;
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.budget.release(self.who, self.held, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_spent_budget_lets_one_connection_overdraw_and_others_wait_until_it_completes() {
        let b = InboundBudget::new("t".into(), 100);
        let stop = Arc::new(AtomicBool::new(false));
        assert!(b.acquire(1, 60, &stop));
        assert!(b.acquire(2, 40, &stop));
        // Spent: connection 1 overdraws (it is the first to ask).
        assert!(b.acquire(1, 50, &stop));
        let (b2, s2) = (b.clone(), stop.clone());
        let waiter = std::thread::spawn(move || b2.acquire(2, 10, &s2));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!waiter.is_finished(), "2 must wait while 1 overdraws");
        b.release(1, 110, true);
        assert!(waiter.join().unwrap());
        assert_eq!(b.usage(), (50, 150));
    }

    #[test]
    fn an_aborted_waiter_gives_up() {
        let b = InboundBudget::new("t".into(), 10);
        let stop = Arc::new(AtomicBool::new(false));
        assert!(b.acquire(1, 20, &stop)); // overdraft
        let (b2, s2) = (b.clone(), Arc::new(AtomicBool::new(false)));
        let s3 = s2.clone();
        let waiter = std::thread::spawn(move || b2.acquire(2, 5, &s3));
        std::thread::sleep(Duration::from_millis(20));
        s2.store(true, Ordering::Release);
        b.wake();
        assert!(!waiter.join().unwrap());
    }
}
