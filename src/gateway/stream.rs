//! Streams multiplexed over one gateway connection: their states and sequence numbers.
//!
//! The state machine, the sequence-number rules and the cap are documented on [`StreamTable`]
//! (module docs of this private module are not rendered).

use std::collections::HashMap;
use std::fmt;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::{Error, Result};

/// Identifies one stream of a connection: 16 bytes chosen by the side that opens it.
pub type StreamId = [u8; 16];

/// The default cap on the streams of one [`StreamTable`] that are not closed.
pub const MAX_STREAMS: usize = 1024;

/// Where a stream is in its life; [`StreamTable`] documents the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamState {
    /// Opened, not yet subscribed.
    Init,
    /// The application subscribed.
    Open,
    /// Both ends confirmed: the stream's first frame was seen from the peer.
    Active,
    /// Closed; the id may be opened again as a fresh stream.
    Closed,
}

impl fmt::Display for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamState::Init => "init",
            StreamState::Open => "open",
            StreamState::Active => "active",
            StreamState::Closed => "closed",
        })
    }
}

/// A snapshot of one stream.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The stream.
    pub stream_id: StreamId,
    /// Its state.
    pub state: StreamState,
    /// The next sequence number expected from the peer.
    pub next_seq: u32,
    /// The next sequence number this side will send.
    pub send_seq: u32,
    /// When it was opened (re-opening a closed id resets it).
    pub created_at: SystemTime,
}

/// The sequence numbers a jump skipped: a range, never a list, so a jump of four billion
/// costs no more than a jump of one.
///
/// ```
/// use rxplus::gateway::StreamTable;
///
/// let table = StreamTable::new();
/// let id = [7; 16];
/// table.open(id)?;
/// assert!(table.validate_seq(id, 0)?.is_empty());
/// let gap = table.validate_seq(id, 4)?;
/// assert_eq!(gap.first(), Some(1));
/// assert_eq!(gap.len(), 3);
/// assert_eq!(gap.iter().collect::<Vec<_>>(), [1, 2, 3]);
/// # Ok::<(), rxplus::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missing {
    first: u32,
    count: u32,
}

impl Missing {
    /// Nothing missing.
    pub const fn none() -> Self {
        Missing { first: 0, count: 0 }
    }
    /// Whether nothing is missing.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// How many numbers are missing.
    pub const fn len(&self) -> u32 {
        self.count
    }
    /// The first missing number, if any.
    pub const fn first(&self) -> Option<u32> {
        if self.count == 0 {
            None
        } else {
            Some(self.first)
        }
    }
    /// The missing numbers in order, wrapping from `u32::MAX` to 0.
    pub fn iter(&self) -> impl Iterator<Item = u32> {
        let first = self.first;
        (0..self.count).map(move |i| first.wrapping_add(i))
    }
    /// At most `limit` of the missing numbers, from the first (allocates for no more than
    /// that: `limit` is the caller's bound on a range that may hold billions).
    pub fn to_vec_bounded(&self, limit: usize) -> Vec<u32> {
        let n = usize::try_from(self.count).map_or(limit, |c| c.min(limit));
        let mut out = Vec::with_capacity(n);
        out.extend(self.iter().take(n));
        out
    }
}

impl Default for Missing {
    fn default() -> Self {
        Missing::none()
    }
}

#[derive(Debug)]
struct Entry {
    info: StreamInfo,
    // When the entry last changed between open and closed, by the table's counter: the closed
    // entry with the lowest value was closed longest ago and is evicted first.
    stamp: u64,
}

#[derive(Debug)]
struct Inner {
    map: HashMap<StreamId, Entry>,
    clock: u64,
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.clock = self.clock.wrapping_add(1);
        self.clock
    }
}

/// The streams of one connection: their states and sequence numbers. Thread-safe (every
/// method takes `&self`); each call is atomic.
///
/// Each stream moves through these states; any other operation is an error naming the stream
/// and its state:
///
/// | operation | from | to | meaning |
/// |---|---|---|---|
/// | [`open`](Self::open) | (unknown) or `Closed` | `Init` | opened, not yet subscribed; sequence numbers start at 0 |
/// | [`subscribe`](Self::subscribe) | `Init` | `Open` | the application subscribed |
/// | [`activate`](Self::activate) | `Init` or `Open` | `Active` | both ends confirmed: the stream's first frame was seen from the peer |
/// | [`close`](Self::close) | `Init`, `Open` or `Active` | `Closed` | closed by either end |
///
/// Errors: opening a stream that is not closed, subscribing when not `Init`, activating when
/// `Active` or `Closed`, closing when `Closed`, and any operation on an unknown stream.
/// Sequence numbers ([`next_seq`](Self::next_seq), [`validate_seq`](Self::validate_seq)) work
/// in every state but `Closed`.
///
/// Sequence numbers are `u32` compared by serial-number arithmetic (RFC 1982): they wrap from
/// `u32::MAX` to 0 without a gap, a number up to 2³¹ − 1 ahead of the expected one is a jump
/// (the numbers between are [`Missing`]), and a number behind it is a duplicate or a late,
/// reordered frame.
///
/// A table holds at most a fixed number of streams that are not closed ([`MAX_STREAMS`] by
/// default), so a hostile peer cannot grow it without bound; closed streams are kept (for
/// diagnostics, and to tell a late frame on a closed stream from one on an unknown stream)
/// until their room is needed.
///
/// ```
/// use rxplus::gateway::{StreamState, StreamTable};
///
/// let table = StreamTable::new();
/// let id = [1; 16];
/// table.open(id)?;
/// table.subscribe(id)?;
/// assert_eq!(table.activate(id)?.state, StreamState::Active);
/// assert_eq!(table.next_seq(id)?, 0);
/// assert_eq!(table.next_seq(id)?, 1);
/// table.close(id)?;
/// assert!(table.close(id).is_err());
/// # Ok::<(), rxplus::Error>(())
/// ```
#[derive(Debug)]
pub struct StreamTable {
    inner: Mutex<Inner>,
    max: usize,
}

impl Default for StreamTable {
    fn default() -> Self {
        StreamTable::new()
    }
}

/// A stream id as 32 lowercase hex digits, for error messages.
struct Hex<'a>(&'a StreamId);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

fn bad_state(id: &StreamId, op: &str, state: StreamState) -> Error {
    Error::config(
        "stream",
        format!("stream {}: cannot {op} in state {state}", Hex(id)),
    )
}

fn unknown(id: &StreamId, op: &str) -> Error {
    Error::config(
        "stream",
        format!("stream {}: cannot {op}: unknown stream", Hex(id)),
    )
}

impl StreamTable {
    /// An empty table holding at most [`MAX_STREAMS`] streams that are not closed.
    pub fn new() -> Self {
        StreamTable::with_capacity_limit(MAX_STREAMS)
    }

    /// An empty table holding at most `max` streams (closed ones included: closed streams are
    /// evicted to make room, so `open` fails only when `max` streams are not closed).
    pub fn with_capacity_limit(max: usize) -> Self {
        StreamTable {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                clock: 0,
            }),
            max,
        }
    }

    /// The most streams this table holds.
    pub fn capacity_limit(&self) -> usize {
        self.max
    }

    /// Opens a stream in `Init`, with both sequence numbers at 0. A closed id opens afresh.
    ///
    /// Errors when the stream exists and is not closed, or when the table already holds its
    /// limit of streams that are not closed.
    pub fn open(&self, id: StreamId) -> Result<StreamInfo> {
        let mut inner = self.inner.lock();
        let reopen = match inner.map.get(&id) {
            Some(e) if e.info.state != StreamState::Closed => {
                return Err(bad_state(&id, "open", e.info.state));
            }
            Some(_) => true,
            None => false,
        };
        if !reopen && inner.map.len() >= self.max {
            // Make room by evicting the stream closed longest ago; if none is closed, the
            // table is full of live streams.
            let oldest = inner
                .map
                .iter()
                .filter(|(_, e)| e.info.state == StreamState::Closed)
                .min_by_key(|(_, e)| e.stamp)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => {
                    inner.map.remove(&k);
                }
                None => {
                    return Err(Error::config(
                        "stream",
                        format!(
                            "stream {}: cannot open: the table holds its limit of {} streams not closed",
                            Hex(&id),
                            self.max
                        ),
                    ));
                }
            }
        }
        let info = StreamInfo {
            stream_id: id,
            state: StreamState::Init,
            next_seq: 0,
            send_seq: 0,
            created_at: SystemTime::now(),
        };
        let stamp = inner.tick();
        inner.map.insert(
            id,
            Entry {
                info: info.clone(),
                stamp,
            },
        );
        Ok(info)
    }

    /// `Init → Open`: the application subscribed.
    pub fn subscribe(&self, id: StreamId) -> Result<StreamInfo> {
        self.transition(id, "subscribe", |s| match s {
            StreamState::Init => Some(StreamState::Open),
            _ => None,
        })
    }

    /// `Init` or `Open → Active`: the stream's first frame was seen from the peer.
    pub fn activate(&self, id: StreamId) -> Result<StreamInfo> {
        self.transition(id, "activate", |s| match s {
            StreamState::Init | StreamState::Open => Some(StreamState::Active),
            _ => None,
        })
    }

    /// Any state but `Closed` `→ Closed`.
    pub fn close(&self, id: StreamId) -> Result<StreamInfo> {
        self.transition(id, "close", |s| match s {
            StreamState::Closed => None,
            _ => Some(StreamState::Closed),
        })
    }

    fn transition(
        &self,
        id: StreamId,
        op: &str,
        next: impl FnOnce(StreamState) -> Option<StreamState>,
    ) -> Result<StreamInfo> {
        let mut inner = self.inner.lock();
        let stamp = inner.tick();
        let entry = inner.map.get_mut(&id).ok_or_else(|| unknown(&id, op))?;
        let to = next(entry.info.state).ok_or_else(|| bad_state(&id, op, entry.info.state))?;
        entry.info.state = to;
        if to == StreamState::Closed {
            entry.stamp = stamp;
        }
        Ok(entry.info.clone())
    }

    /// The stream's next sequence number to send; advances it by one, wrapping from
    /// `u32::MAX` to 0. Errors on an unknown or closed stream.
    pub fn next_seq(&self, id: StreamId) -> Result<u32> {
        let mut inner = self.inner.lock();
        let entry = live(&mut inner, &id, "take a sequence number")?;
        let seq = entry.info.send_seq;
        entry.info.send_seq = seq.wrapping_add(1);
        Ok(seq)
    }

    /// Checks a sequence number received from the peer against the one expected.
    ///
    /// * the expected number: in order; the next expected is `seq + 1`.
    /// * ahead of it (by up to 2³¹ − 1, wrapping): the numbers from the expected one up to
    ///   `seq` (excluded) are returned as missing; the next expected is `seq + 1`.
    /// * behind it: a duplicate or a late, reordered frame. Nothing is missing and the
    ///   expected number does not move back.
    ///
    /// Errors on an unknown or closed stream.
    pub fn validate_seq(&self, id: StreamId, seq: u32) -> Result<Missing> {
        let mut inner = self.inner.lock();
        let entry = live(&mut inner, &id, "receive a sequence number")?;
        let expected = entry.info.next_seq;
        // RFC 1982 on u32: the signed distance says ahead (> 0) or behind (< 0).
        let d = seq.wrapping_sub(expected) as i32;
        if d < 0 {
            return Ok(Missing::none());
        }
        entry.info.next_seq = seq.wrapping_add(1);
        if d == 0 {
            // Always the same empty value, so `==` compares ranges, not leftovers.
            return Ok(Missing::none());
        }
        Ok(Missing {
            first: expected,
            count: d.unsigned_abs(),
        })
    }

    /// A snapshot of the stream, if the table holds it (closed streams included).
    pub fn get(&self, id: StreamId) -> Option<StreamInfo> {
        self.inner.lock().map.get(&id).map(|e| e.info.clone())
    }

    /// The ids of the streams in `state` (all streams with `None`), sorted.
    pub fn list_streams(&self, state: Option<StreamState>) -> Vec<StreamId> {
        let mut ids: Vec<StreamId> = self
            .inner
            .lock()
            .map
            .values()
            .filter(|e| state.is_none_or(|s| e.info.state == s))
            .map(|e| e.info.stream_id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// How many streams are `Active`.
    pub fn active_count(&self) -> usize {
        self.inner
            .lock()
            .map
            .values()
            .filter(|e| e.info.state == StreamState::Active)
            .count()
    }

    /// How many streams the table holds, closed ones included.
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// Whether the table holds no stream.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().map.is_empty()
    }

    /// Forgets the stream, whatever its state; returns its last snapshot.
    pub fn remove(&self, id: StreamId) -> Option<StreamInfo> {
        self.inner.lock().map.remove(&id).map(|e| e.info)
    }

    /// Forgets every stream.
    pub fn clear(&self) {
        self.inner.lock().map.clear();
    }
}

/// The stream's entry if it exists and is not closed.
fn live<'a>(inner: &'a mut Inner, id: &StreamId, op: &str) -> Result<&'a mut Entry> {
    match inner.map.get_mut(id) {
        None => Err(unknown(id, op)),
        Some(e) if e.info.state == StreamState::Closed => Err(bad_state(id, op, e.info.state)),
        Some(e) => Ok(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    fn sid(n: u32) -> StreamId {
        let mut id = [0u8; 16];
        id[12..].copy_from_slice(&n.to_be_bytes());
        id
    }

    fn reason(e: Error) -> String {
        match e {
            Error::Config { field, reason } => {
                assert_eq!(field, "stream");
                reason
            }
            other => panic!("{other:?}"),
        }
    }

    /// A table with one stream in `state`.
    fn in_state(state: StreamState) -> (StreamTable, StreamId) {
        let t = StreamTable::new();
        let id = sid(1);
        t.open(id).unwrap();
        match state {
            StreamState::Init => {}
            StreamState::Open => {
                t.subscribe(id).unwrap();
            }
            StreamState::Active => {
                t.activate(id).unwrap();
            }
            StreamState::Closed => {
                t.close(id).unwrap();
            }
        }
        assert_eq!(t.get(id).unwrap().state, state);
        (t, id)
    }

    const ALL: [StreamState; 4] = [
        StreamState::Init,
        StreamState::Open,
        StreamState::Active,
        StreamState::Closed,
    ];

    #[test]
    fn states_display_lowercase() {
        let names: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(names, ["init", "open", "active", "closed"]);
    }

    #[test]
    fn legal_transitions() {
        let t = StreamTable::new();
        let id = sid(9);
        let info = t.open(id).unwrap();
        assert_eq!(info.stream_id, id);
        assert_eq!(info.state, StreamState::Init);
        assert_eq!((info.next_seq, info.send_seq), (0, 0));
        assert_eq!(t.subscribe(id).unwrap().state, StreamState::Open);
        assert_eq!(t.activate(id).unwrap().state, StreamState::Active);
        assert_eq!(t.close(id).unwrap().state, StreamState::Closed);

        // Init → Active directly; every non-closed state → Closed.
        for from in [StreamState::Init, StreamState::Open, StreamState::Active] {
            let (t, id) = in_state(from);
            assert_eq!(t.close(id).unwrap().state, StreamState::Closed);
        }
        let (t, id) = in_state(StreamState::Init);
        assert_eq!(t.activate(id).unwrap().state, StreamState::Active);
    }

    #[test]
    fn reopening_a_closed_stream_starts_afresh() {
        let (t, id) = in_state(StreamState::Active);
        assert_eq!(t.next_seq(id).unwrap(), 0);
        assert_eq!(t.next_seq(id).unwrap(), 1);
        t.validate_seq(id, 0).unwrap();
        t.validate_seq(id, 1).unwrap();
        t.close(id).unwrap();
        let info = t.open(id).unwrap();
        assert_eq!(info.state, StreamState::Init);
        assert_eq!((info.next_seq, info.send_seq), (0, 0));
        assert_eq!(t.next_seq(id).unwrap(), 0);
        assert!(t.validate_seq(id, 0).unwrap().is_empty());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn illegal_transitions_err_naming_stream_and_state() {
        let hex = "00000000000000000000000000000001";
        for from in ALL {
            let (t, id) = in_state(from);
            let ops: [(&str, bool); 4] = [
                ("open", from == StreamState::Closed),
                ("subscribe", from == StreamState::Init),
                (
                    "activate",
                    matches!(from, StreamState::Init | StreamState::Open),
                ),
                ("close", from != StreamState::Closed),
            ];
            for (op, legal) in ops {
                if legal {
                    continue;
                }
                let r = match op {
                    "open" => t.open(id),
                    "subscribe" => t.subscribe(id),
                    "activate" => t.activate(id),
                    _ => t.close(id),
                };
                let msg = reason(r.unwrap_err());
                assert_eq!(msg, format!("stream {hex}: cannot {op} in state {from}"));
                // A refused operation changes nothing.
                assert_eq!(t.get(id).unwrap().state, from);
            }
        }
        // Sequence numbers on a closed stream.
        let (t, id) = in_state(StreamState::Closed);
        assert!(reason(t.next_seq(id).unwrap_err()).contains("in state closed"));
        assert!(reason(t.validate_seq(id, 0).unwrap_err()).contains("in state closed"));
    }

    #[test]
    fn unknown_streams_err() {
        let t = StreamTable::new();
        let id = sid(0xabcd);
        for r in [t.subscribe(id), t.activate(id), t.close(id)] {
            let msg = reason(r.unwrap_err());
            assert!(msg.contains("0000000000000000000000000000abcd"), "{msg}");
            assert!(msg.contains("unknown stream"), "{msg}");
        }
        assert!(t.next_seq(id).is_err());
        assert!(t.validate_seq(id, 0).is_err());
        assert!(t.get(id).is_none());
        assert!(t.remove(id).is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn in_order_sequence_numbers_have_no_gaps() {
        let (t, id) = in_state(StreamState::Active);
        for seq in 0..1000 {
            assert_eq!(t.validate_seq(id, seq).unwrap(), Missing::none());
        }
        assert_eq!(t.get(id).unwrap().next_seq, 1000);
    }

    #[test]
    fn a_jump_reports_exactly_the_missing_range() {
        let (t, id) = in_state(StreamState::Open);
        for seq in [0, 1, 2] {
            assert!(t.validate_seq(id, seq).unwrap().is_empty());
        }
        let gap = t.validate_seq(id, 5).unwrap();
        assert_eq!(gap.first(), Some(3));
        assert_eq!(gap.len(), 2);
        assert_eq!(gap.iter().collect::<Vec<_>>(), [3, 4]);
        assert_eq!(gap.to_vec_bounded(10), [3, 4]);
        assert_eq!(gap.to_vec_bounded(1), [3]);
        assert_eq!(t.get(id).unwrap().next_seq, 6);

        // The late 3 fills the gap: not a gap, and expected stays at 6.
        assert!(t.validate_seq(id, 3).unwrap().is_empty());
        assert_eq!(t.get(id).unwrap().next_seq, 6);
        // Duplicates, too.
        assert!(t.validate_seq(id, 5).unwrap().is_empty());
        assert!(t.validate_seq(id, 0).unwrap().is_empty());
        assert_eq!(t.get(id).unwrap().next_seq, 6);
        assert!(t.validate_seq(id, 6).unwrap().is_empty());
        assert_eq!(t.get(id).unwrap().next_seq, 7);
    }

    /// Sets the next expected number directly, to start near the wrap.
    fn expect(t: &StreamTable, id: StreamId, next: u32) {
        t.inner.lock().map.get_mut(&id).unwrap().info.next_seq = next;
    }

    #[test]
    fn wrapping_past_u32_max_is_not_a_gap() {
        let (t, id) = in_state(StreamState::Active);
        expect(&t, id, u32::MAX - 1);
        for seq in [u32::MAX - 1, u32::MAX, 0, 1] {
            assert!(t.validate_seq(id, seq).unwrap().is_empty(), "{seq}");
        }
        assert_eq!(t.get(id).unwrap().next_seq, 2);
        // Behind across the wrap: old, not a gap.
        assert!(t.validate_seq(id, u32::MAX).unwrap().is_empty());
        assert_eq!(t.get(id).unwrap().next_seq, 2);

        let (t, id) = in_state(StreamState::Active);
        expect(&t, id, u32::MAX - 1);
        assert!(t.validate_seq(id, u32::MAX - 1).unwrap().is_empty());
        let gap = t.validate_seq(id, 1).unwrap();
        assert_eq!(gap.first(), Some(u32::MAX));
        assert_eq!(gap.len(), 2);
        assert_eq!(gap.iter().collect::<Vec<_>>(), [u32::MAX, 0]);
        assert_eq!(t.get(id).unwrap().next_seq, 2);
    }

    #[test]
    fn a_huge_jump_costs_nothing() {
        let (t, id) = in_state(StreamState::Active);
        assert!(t.validate_seq(id, 0).unwrap().is_empty());
        let gap = t.validate_seq(id, u32::MAX / 2).unwrap();
        assert_eq!(gap.len(), u32::MAX / 2 - 1);
        assert_eq!(gap.first(), Some(1));
        assert_eq!(gap.to_vec_bounded(3), [1, 2, 3]);
        assert_eq!(gap.iter().nth(5), Some(6));
        assert_eq!(t.get(id).unwrap().next_seq, u32::MAX / 2 + 1);
        // Half the number space ahead or more reads as behind (RFC 1982): nothing missing,
        // nothing moved.
        let t2 = StreamTable::new();
        t2.open(id).unwrap();
        assert!(t2.validate_seq(id, 1 << 31).unwrap().is_empty());
        assert_eq!(t2.get(id).unwrap().next_seq, 0);
        let gap = t2.validate_seq(id, (1 << 31) - 1).unwrap();
        assert_eq!(gap.len(), (1 << 31) - 1);
    }

    #[test]
    fn missing_none() {
        let m = Missing::none();
        assert!(m.is_empty());
        assert_eq!(m.len(), 0);
        assert_eq!(m.first(), None);
        assert_eq!(m.iter().count(), 0);
        assert!(m.to_vec_bounded(100).is_empty());
        assert_eq!(Missing::default(), m);
        let m = Missing {
            first: u32::MAX,
            count: u32::MAX,
        };
        assert_eq!(m.to_vec_bounded(0), Vec::<u32>::new());
        assert_eq!(m.to_vec_bounded(2), [u32::MAX, 0]);
    }

    #[test]
    fn next_seq_counts_and_wraps() {
        let (t, id) = in_state(StreamState::Init);
        assert_eq!(t.next_seq(id).unwrap(), 0);
        assert_eq!(t.next_seq(id).unwrap(), 1);
        assert_eq!(t.get(id).unwrap().send_seq, 2);
        t.inner.lock().map.get_mut(&id).unwrap().info.send_seq = u32::MAX;
        assert_eq!(t.next_seq(id).unwrap(), u32::MAX);
        assert_eq!(t.next_seq(id).unwrap(), 0);
        assert_eq!(t.next_seq(id).unwrap(), 1);
    }

    #[test]
    fn the_cap_holds() {
        let max = 8;
        let t = StreamTable::with_capacity_limit(max);
        assert_eq!(t.capacity_limit(), max);
        for n in 0..max as u32 {
            t.open(sid(n)).unwrap();
        }
        let msg = reason(t.open(sid(100)).unwrap_err());
        assert!(msg.contains("limit of 8 streams"), "{msg}");
        assert_eq!(t.len(), max);
        // Closing one makes room: the closed entry is evicted.
        t.close(sid(3)).unwrap();
        t.open(sid(100)).unwrap();
        assert_eq!(t.len(), max);
        assert!(t.get(sid(3)).is_none());
        assert!(t.open(sid(101)).is_err());
        // Closed streams are evicted closed-longest-ago first.
        t.close(sid(5)).unwrap();
        t.close(sid(1)).unwrap();
        t.open(sid(101)).unwrap();
        assert!(t.get(sid(5)).is_none());
        assert_eq!(t.get(sid(1)).unwrap().state, StreamState::Closed);
        // Re-opening a closed id takes its own room.
        t.open(sid(1)).unwrap();
        assert_eq!(t.len(), max);
        assert!(t.open(sid(102)).is_err());

        let none = StreamTable::with_capacity_limit(0);
        assert!(none.open(sid(0)).is_err());
        assert!(none.is_empty());
        assert_eq!(StreamTable::default().capacity_limit(), MAX_STREAMS);
    }

    #[test]
    fn listing_counting_removing() {
        let t = StreamTable::new();
        for n in (0..6).rev() {
            t.open(sid(n)).unwrap();
        }
        t.subscribe(sid(1)).unwrap();
        t.activate(sid(2)).unwrap();
        t.activate(sid(3)).unwrap();
        t.close(sid(4)).unwrap();
        assert_eq!(t.list_streams(None), (0..6).map(sid).collect::<Vec<_>>());
        assert_eq!(t.list_streams(Some(StreamState::Init)), [sid(0), sid(5)]);
        assert_eq!(t.list_streams(Some(StreamState::Open)), [sid(1)]);
        assert_eq!(t.list_streams(Some(StreamState::Active)), [sid(2), sid(3)]);
        assert_eq!(t.list_streams(Some(StreamState::Closed)), [sid(4)]);
        assert_eq!(t.active_count(), 2);
        assert_eq!(t.len(), 6);
        let removed = t.remove(sid(2)).unwrap();
        assert_eq!(removed.state, StreamState::Active);
        assert_eq!(t.active_count(), 1);
        assert_eq!(t.len(), 5);
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn table_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<StreamTable>();
        check::<StreamInfo>();
        check::<Missing>();
    }

    #[test]
    fn threads_hammering_the_table() {
        const THREADS: u32 = 8;
        const PER_THREAD: u32 = 100;
        const SHARED: u32 = 4;
        let t = Arc::new(StreamTable::new());
        let counter = sid(u32::MAX);
        t.open(counter).unwrap();
        let handles: Vec<_> = (0..THREADS)
            .map(|th| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    let mut sent = Vec::new();
                    for k in 0..PER_THREAD {
                        // Distinct streams: every call must succeed.
                        let id = sid(1000 + th * PER_THREAD + k);
                        t.open(id).unwrap();
                        t.subscribe(id).unwrap();
                        for seq in 0..20 {
                            assert!(t.validate_seq(id, seq).unwrap().is_empty());
                        }
                        assert_eq!(t.validate_seq(id, 25).unwrap().len(), 5);
                        assert!(t.validate_seq(id, 21).unwrap().is_empty());
                        t.activate(id).unwrap();
                        if k % 2 == 1 {
                            t.close(id).unwrap();
                        }
                        // Shared streams: races make calls fail, never panic.
                        let s = sid(k % SHARED);
                        let _ = t.open(s);
                        let _ = t.validate_seq(s, k);
                        let _ = t.subscribe(s);
                        let _ = t.activate(s);
                        let _ = t.next_seq(s);
                        if k % 3 == 0 {
                            let _ = t.close(s);
                        }
                        let _ = t.get(s);
                        let _ = t.list_streams(Some(StreamState::Active));
                        // One shared sequence counter.
                        for _ in 0..10 {
                            sent.push(t.next_seq(counter).unwrap());
                        }
                    }
                    sent
                })
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            for seq in h.join().unwrap() {
                assert!(all.insert(seq), "sequence number {seq} taken twice");
            }
        }
        let total = THREADS * PER_THREAD * 10;
        assert_eq!(all.len(), total as usize);
        assert!(all.iter().all(|&s| s < total));
        assert_eq!(t.get(counter).unwrap().send_seq, total);

        let distinct = (THREADS * PER_THREAD) as usize;
        let shared: Vec<_> = (0..SHARED)
            .map(sid)
            .filter(|s| t.get(*s).is_some())
            .collect();
        assert_eq!(shared.len(), SHARED as usize);
        assert_eq!(t.len(), distinct + shared.len() + 1);
        let shared_active = shared
            .iter()
            .filter(|s| t.get(**s).unwrap().state == StreamState::Active)
            .count();
        assert_eq!(t.active_count(), distinct / 2 + shared_active);
        let distinct_closed = (0..THREADS * PER_THREAD)
            .filter(|n| t.get(sid(1000 + n)).unwrap().state == StreamState::Closed)
            .count();
        assert_eq!(distinct_closed, distinct / 2);
        for n in 0..THREADS * PER_THREAD {
            let info = t.get(sid(1000 + n)).unwrap();
            assert_eq!(info.next_seq, 26);
        }
    }

    #[test]
    fn threads_under_the_cap() {
        let max = 16;
        let t = Arc::new(StreamTable::with_capacity_limit(max));
        let handles: Vec<_> = (0..8u32)
            .map(|th| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    let mut opened = 0;
                    for k in 0..500u32 {
                        let id = sid(th * 1000 + k);
                        if t.open(id).is_ok() {
                            opened += 1;
                            let _ = t.validate_seq(id, k);
                            t.close(id).unwrap();
                        }
                        assert!(t.len() <= max);
                    }
                    opened
                })
            })
            .collect();
        let opened: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        // Each thread holds at most one live stream at a time, so no open is refused.
        assert_eq!(opened, 8 * 500);
        assert!(t.len() <= max);
        assert_eq!(t.list_streams(Some(StreamState::Closed)).len(), t.len());
    }
}
