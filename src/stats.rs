//! Counters every component keeps; read them with `stats()`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// Live counters of one component, updated with relaxed atomics (no lock on the hot path).
///
/// What a connection receives is counted by its reader alone, in an [`InCounter`] of its own
/// (a plain load and store per message, no read-modify-write shared with other connections);
/// the component's totals add the live counters to what ended connections left.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Received by ended connections (and by brokers, which count here directly).
    pub(crate) messages_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    /// The live connections' inbound counters.
    live_in: Mutex<LiveIn>,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) encode_errors: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// Of `dropped`, those the outbound overflow policy dropped.
    pub(crate) overflow_dropped: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connections_closed: AtomicU64,
    pub(crate) connect_attempts: AtomicU64,
    pub(crate) direct_writes: AtomicU64,
    /// Gateway nodes: missing sequence numbers reported as gaps.
    pub(crate) gaps: AtomicU64,
    /// Gateway nodes, resumable links: resumes, frames replayed, replayed frames dropped as
    /// already delivered, frames lost (reported by `ResumeFailed`, or held by an interrupted
    /// link that ended otherwise).
    pub(crate) resumes: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) resume_lost: AtomicU64,
    pub(crate) write_timeouts: AtomicU64,
}

/// One connection's received messages and bytes.
#[derive(Debug, Default)]
struct InCount {
    messages: AtomicU64,
    bytes: AtomicU64,
}

/// The live connections' inbound counters, by key (added and removed in constant time, so
/// many connections closing at once do not queue on this lock).
#[derive(Debug, Default)]
struct LiveIn {
    next: u64,
    counts: HashMap<u64, Arc<InCount>>,
}

/// A connection reader's inbound counter: written by that thread only (`record` takes
/// `&mut self`), read by `stats()`. Dropping it adds its counts to the component's totals.
pub(crate) struct InCounter {
    stats: Arc<Stats>,
    key: u64,
    count: Arc<InCount>,
}

impl InCounter {
    /// One data message of `bytes` received. Only the owning thread writes, so a plain load
    /// and store suffice: a locked read-modify-write per message costs about 10 % of w1.
    #[inline]
    pub(crate) fn record(&mut self, bytes: usize) {
        let c = &self.count;
        c.messages
            .store(c.messages.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        c.bytes.store(
            c.bytes.load(Ordering::Relaxed) + bytes as u64,
            Ordering::Relaxed,
        );
    }
}

impl Drop for InCounter {
    fn drop(&mut self) {
        // Under the list's lock, so a snapshot sees these counts either live or folded, once.
        let mut live = self.stats.live_in.lock();
        live.counts.remove(&self.key);
        let c = &self.count;
        self.stats
            .messages_in
            .fetch_add(c.messages.load(Ordering::Relaxed), Ordering::Relaxed);
        self.stats
            .bytes_in
            .fetch_add(c.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

impl Stats {
    /// A counter for one connection's reader, live in this component's totals until dropped.
    pub(crate) fn in_counter(self: &Arc<Self>) -> InCounter {
        let count = Arc::new(InCount::default());
        let key = {
            let mut live = self.live_in.lock();
            let key = live.next;
            live.next += 1;
            live.counts.insert(key, count.clone());
            key
        };
        InCounter {
            stats: self.clone(),
            key,
            count,
        }
    }
    /// Messages and bytes received: ended connections' and live ones'.
    pub(crate) fn received(&self) -> (u64, u64) {
        let live = self.live_in.lock();
        live.counts.values().fold(
            (
                self.messages_in.load(Ordering::Relaxed),
                self.bytes_in.load(Ordering::Relaxed),
            ),
            |(m, b), c| {
                (
                    m + c.messages.load(Ordering::Relaxed),
                    b + c.bytes.load(Ordering::Relaxed),
                )
            },
        )
    }
    pub(crate) fn record_out(&self, messages: usize, bytes: usize) {
        self.messages_out
            .fetch_add(messages as u64, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    /// One outbound message dropped by the overflow policy (counted in `dropped` too).
    pub(crate) fn record_overflow_drop(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.overflow_dropped.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (messages_in, bytes_in) = self.received();
        StatsSnapshot {
            messages_in,
            bytes_in,
            messages_out: g(&self.messages_out),
            bytes_out: g(&self.bytes_out),
            decode_errors: g(&self.decode_errors),
            encode_errors: g(&self.encode_errors),
            dropped: g(&self.dropped),
            overflow_dropped: g(&self.overflow_dropped),
            connections_opened: g(&self.connections_opened),
            connections_closed: g(&self.connections_closed),
            connect_attempts: g(&self.connect_attempts),
            direct_writes: g(&self.direct_writes),
            write_timeouts: g(&self.write_timeouts),
        }
    }
}

/// A copy of a component's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Data messages received.
    pub messages_in: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Data messages written to sockets.
    pub messages_out: u64,
    /// Payload bytes written to sockets.
    pub bytes_out: u64,
    /// Received messages the datatype could not decode (logged, skipped).
    pub decode_errors: u64,
    /// Items the datatype could not encode (reported as error notifications).
    pub encode_errors: u64,
    /// Outbound items dropped: overflow policy, not connected, or connection closed.
    pub dropped: u64,
    /// Of `dropped`, the items the outbound overflow policy dropped (`drop-old`, `drop-new`, or
    /// the one that made `buffer-k` / `disconnect` disconnect).
    pub overflow_dropped: u64,
    /// Connections opened (handshake done).
    pub connections_opened: u64,
    /// Connections closed.
    pub connections_closed: u64,
    /// Client connection attempts, first one included.
    pub connect_attempts: u64,
    /// Data messages the sending thread wrote to the socket itself (the direct-write fast
    /// path of an idle connection), instead of queueing them for the writer thread.
    pub direct_writes: u64,
    /// Connections closed because the peer stopped taking data for `write_timeout`.
    pub write_timeouts: u64,
}

impl std::ops::AddAssign for StatsSnapshot {
    fn add_assign(&mut self, o: Self) {
        self.messages_in += o.messages_in;
        self.bytes_in += o.bytes_in;
        self.messages_out += o.messages_out;
        self.bytes_out += o.bytes_out;
        self.decode_errors += o.decode_errors;
        self.encode_errors += o.encode_errors;
        self.dropped += o.dropped;
        self.overflow_dropped += o.overflow_dropped;
        self.connections_opened += o.connections_opened;
        self.connections_closed += o.connections_closed;
        self.connect_attempts += o.connect_attempts;
        self.direct_writes += o.direct_writes;
        self.write_timeouts += o.write_timeouts;
    }
}
