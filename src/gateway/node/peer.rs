//! One connection's state, shared by its link thread and every sender.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

use crate::gateway::resume::{Admit, LinkFrame, Session, SessionId, DATA_HEADER};
use crate::gateway::{
    Connection, ConnectionState, Direction, DisconnectCause, GatewayConfig, HelloPayload, NodeId,
    StreamTable,
};
use crate::stats::Stats;
use crate::ws::conn::{ConnHandle, SendRole};
use crate::ws::outbound::{push_outbound, OutQueue, Refused};
use crate::ws::{ConnId, WSConnectionConfig};

pub(crate) struct Peer {
    pub(crate) id: ConnId,
    pub(crate) direction: Direction,
    pub(crate) created_at: SystemTime,
    pub(crate) url: Option<WSConnectionConfig>,
    /// Names the link's threads.
    pub(crate) seq: u64,
    pub(crate) streams: StreamTable,
    st: Mutex<PeerState>,
    /// `Disconnected` was emitted.
    ended: AtomicBool,
    /// Wakes a dialer waiting between attempts.
    wake_tx: Sender<()>,
    pub(crate) wake_rx: Receiver<()>,
    /// A resumable link: the highest sequence number received in order...
    pub(crate) recv: AtomicU64,
    /// ...and the highest one acknowledged to the other side.
    acked_sent: AtomicU64,
    /// Has a session (set once, with it): sends take the resumable path.
    resumable: AtomicBool,
}

struct PeerState {
    state: ConnectionState,
    remote: Option<NodeId>,
    remote_version: Option<u16>,
    handle: Option<Arc<ConnHandle>>,
    /// The current socket, to cut it from another thread (handshake included).
    raw: Option<Arc<TcpStream>>,
    peer_addr: Option<SocketAddr>,
    /// An outbound connection that was connected once: frames sent while it redials wait.
    was_connected: bool,
    /// Frames waiting while interrupted: the same queue a live link has (the connection's
    /// policy, bounded by `overflow_size` frames and `ws.outbound_max_bytes`).
    pending: Option<OutQueue>,
    /// Set when this side decided the end (disconnect, stop, duplicate, overflow).
    cause: Option<DisconnectCause>,
    link_running: bool,
    /// A resumable link's session (from its first handshake on).
    session: Option<Session>,
    /// When the transport of a resumable link dropped (cleared by its resume).
    interrupted_at: Option<Instant>,
    /// A new transport is being attached to this resumable link.
    attaching: bool,
}

/// The most a framing's `encoded_len` reserves up front: a wrong hint must not allocate
/// without bound (a frame longer than this grows to fit, one reallocation).
const MAX_LEN_HINT: usize = 1 << 20;

/// A frame handed to a peer: encoded already (a broadcast encodes once), or encoded by the
/// send itself (straight into a resumable link's frame, after its header).
pub(crate) enum Outgoing<'a> {
    Encoded(Bytes),
    /// The encoder and the length it will append (`0`: not known).
    Encode(&'a dyn Fn(&mut Vec<u8>), usize),
}

impl Outgoing<'_> {
    fn into_bytes(self) -> Bytes {
        match self {
            Outgoing::Encoded(b) => b,
            Outgoing::Encode(f, len) => {
                let mut v = Vec::with_capacity(len.min(MAX_LEN_HINT));
                f(&mut v);
                Bytes::from(v)
            }
        }
    }

    /// As a resumable link's DATA frame, its header left for the sequence number.
    /// Allocated once and exactly when the framing knows its length (`encoded_len`, as
    /// `DefaultFrame` does): a `Bytes` made of a vector with spare room allocates again.
    fn framed(self) -> Vec<u8> {
        let extra = match &self {
            Outgoing::Encoded(b) => b.len(),
            Outgoing::Encode(_, len) => *len,
        };
        let mut v = Vec::with_capacity(DATA_HEADER + extra.min(MAX_LEN_HINT));
        v.extend_from_slice(&[0; DATA_HEADER]);
        match self {
            Outgoing::Encoded(b) => v.extend_from_slice(&b),
            Outgoing::Encode(f, _) => f(&mut v),
        }
        v
    }
}

/// What became of a frame handed to a peer.
pub(crate) enum Sent {
    Ok,
    NotConnected,
    /// The policy refused it; `disconnect`: the connection must end (interrupted, `buffer-k`).
    Overflow {
        disconnect: bool,
    },
}

impl Peer {
    pub(crate) fn new(
        id: ConnId,
        direction: Direction,
        url: Option<WSConnectionConfig>,
        seq: u64,
    ) -> Self {
        let (wake_tx, wake_rx) = bounded(1);
        Peer {
            id,
            direction,
            created_at: SystemTime::now(),
            url,
            seq,
            streams: StreamTable::new(),
            st: Mutex::new(PeerState {
                state: ConnectionState::Pending,
                remote: None,
                remote_version: None,
                handle: None,
                raw: None,
                peer_addr: None,
                was_connected: false,
                pending: None,
                cause: None,
                link_running: true,
                session: None,
                interrupted_at: None,
                attaching: false,
            }),
            ended: AtomicBool::new(false),
            wake_tx,
            wake_rx,
            recv: AtomicU64::new(0),
            acked_sent: AtomicU64::new(0),
            resumable: AtomicBool::new(false),
        }
    }

    pub(crate) fn state(&self) -> ConnectionState {
        self.st.lock().state
    }

    pub(crate) fn remote(&self) -> Option<NodeId> {
        self.st.lock().remote
    }

    pub(crate) fn cause(&self) -> Option<DisconnectCause> {
        self.st.lock().cause.clone()
    }

    pub(crate) fn link_running(&self) -> bool {
        self.st.lock().link_running
    }

    pub(crate) fn set_link_done(&self) {
        self.st.lock().link_running = false;
    }

    pub(crate) fn set_link_running(&self) {
        self.st.lock().link_running = true;
    }

    /// True for the first caller: the one who emits `Disconnected`.
    pub(crate) fn mark_ended(&self) -> bool {
        if self.ended.swap(true, Ordering::AcqRel) {
            return false;
        }
        let mut st = self.st.lock();
        st.state = ConnectionState::Disconnected;
        if let Some(p) = st.pending.take() {
            p.close();
        }
        true
    }

    pub(crate) fn set_state(&self, state: ConnectionState) {
        self.st.lock().state = state;
    }

    /// A new transport: its socket (cut on abort) and the handshake state.
    pub(crate) fn begin_transport(
        &self,
        raw: &Arc<TcpStream>,
        addr: SocketAddr,
        state: ConnectionState,
    ) {
        let mut st = self.st.lock();
        st.raw = Some(raw.clone());
        st.peer_addr = Some(addr);
        st.state = state;
        // A stop or disconnect that raced the connect must still end this transport.
        if st.cause.is_some() {
            if let Some(r) = &st.raw {
                let _ = r.shutdown(Shutdown::Both);
            }
        }
    }

    /// Handshake done and not refused: the connection goes live. For a redialed connection the
    /// frames that waited go first, in order, under the lock senders take, so none overtakes
    /// them. `Err` with the cause when the connection was ended meanwhile.
    pub(crate) fn publish(
        &self,
        handle: Arc<ConnHandle>,
        hello: HelloPayload,
        session: Option<Session>,
    ) -> std::result::Result<(), DisconnectCause> {
        let mut st = self.st.lock();
        if let Some(c) = &st.cause {
            return Err(c.clone());
        }
        if session.is_some() {
            self.resumable.store(true, Ordering::Release);
        }
        st.session = session;
        // Into the write buffer before the link runs and before anyone else can send on it:
        // the writer sends them first, all of them, in order.
        if let Some(p) = &st.pending {
            handle.preload(p.drain());
        }
        st.state = ConnectionState::Connected;
        st.remote = Some(hello.node_id);
        st.remote_version = Some(hello.version);
        st.handle = Some(handle);
        st.was_connected = true;
        Ok(())
    }

    /// A resumable link back on a new transport: the frames the other side lacks (after
    /// `peer_recv`) and those sent while interrupted go first, in order, under the lock senders
    /// take. Returns how many; `Err` with the cause when the connection was ended meanwhile.
    pub(crate) fn publish_resumed(
        &self,
        handle: Arc<ConnHandle>,
        hello: HelloPayload,
        peer_recv: u64,
    ) -> std::result::Result<u64, DisconnectCause> {
        let mut st = self.st.lock();
        st.attaching = false;
        if let Some(c) = &st.cause {
            return Err(c.clone());
        }
        if st.state == ConnectionState::Disconnected {
            return Err(DisconnectCause::Stopped);
        }
        let replay = match st.session.as_mut() {
            Some(s) => s.replay_from(peer_recv),
            None => Vec::new(),
        };
        let replayed = replay.len() as u64;
        handle.preload(replay.into_iter().map(Message::Binary));
        st.state = ConnectionState::Connected;
        st.remote = Some(hello.node_id);
        st.remote_version = Some(hello.version);
        st.handle = Some(handle);
        st.interrupted_at = None;
        Ok(replayed)
    }

    /// A resumable link's session id.
    pub(crate) fn session_id(&self) -> Option<SessionId> {
        self.st.lock().session.as_ref().map(|s| s.id)
    }

    /// Whether this resumable link can replay everything after `recv`.
    pub(crate) fn can_replay_from(&self, recv: u64) -> bool {
        self.st
            .lock()
            .session
            .as_ref()
            .is_some_and(|s| s.can_replay_from(recv))
    }

    /// Frames the other side will never get if the session ends now (it has up to `recv`,
    /// when known).
    pub(crate) fn lost(&self, recv: Option<u64>) -> u64 {
        self.st.lock().session.as_ref().map_or(0, |s| s.lost(recv))
    }

    /// The other side acknowledged everything up to `upto`; false for an acknowledgement of
    /// frames never sent.
    pub(crate) fn on_ack(&self, upto: u64) -> bool {
        match self.st.lock().session.as_mut() {
            Some(s) => s.ack(upto),
            None => false,
        }
    }

    /// Sends an acknowledgement of what arrived, unless one covering it went already.
    pub(crate) fn ack_now(&self, h: &ConnHandle) {
        let r = self.recv.load(Ordering::Acquire);
        if self.acked_sent.fetch_max(r, Ordering::AcqRel) < r {
            // Queued for the writer thread: the reader that calls this is the link's busiest
            // thread and should not pay the write.
            let _ = h.enqueue(Message::Binary(LinkFrame::Ack(r).encode()));
        }
    }

    /// Gives back the memory of an empty resend buffer that grew large.
    pub(crate) fn trim(&self) {
        if let Some(s) = self.st.lock().session.as_mut() {
            s.trim();
        }
    }

    /// The live transport of a resumable link with frames not yet acknowledged.
    pub(crate) fn ack_due(&self) -> Option<Arc<ConnHandle>> {
        if self.recv.load(Ordering::Acquire) <= self.acked_sent.load(Ordering::Acquire) {
            return None;
        }
        let st = self.st.lock();
        if st.session.is_none() || st.state != ConnectionState::Connected {
            return None;
        }
        st.handle.clone()
    }

    /// The transport of a resumable link dropped: it waits to be resumed (frames sent meanwhile
    /// go to its resend buffer).
    pub(crate) fn interrupted(&self) {
        let mut st = self.st.lock();
        st.interrupted_at.get_or_insert_with(Instant::now);
    }

    /// A resumable link whose transport dropped and which waits for its resume.
    pub(crate) fn is_interrupted(&self) -> bool {
        self.st.lock().interrupted_at.is_some()
    }

    /// How long a resumable link may still wait for its resume.
    pub(crate) fn expiry_left(&self, expiry: Duration) -> Option<Duration> {
        let st = self.st.lock();
        st.interrupted_at
            .map(|t| expiry.saturating_sub(t.elapsed()))
    }

    /// Claims this resumable link for a new transport: false when it has ended, is not
    /// resumable, or another transport is being attached. The current transport, if the old
    /// one is still up, is cut.
    pub(crate) fn begin_attach(&self) -> bool {
        let mut st = self.st.lock();
        if st.attaching
            || st.session.is_none()
            || st.cause.is_some()
            || st.state == ConnectionState::Disconnected
        {
            return false;
        }
        st.attaching = true;
        if let Some(h) = &st.handle {
            h.cut_for("resumed on a new transport");
        }
        true
    }

    /// Ends a resumable link that waited for its resume longer than `expiry` (and none is
    /// under way): true for the caller who ends it (the cause is set, so no resume can start).
    pub(crate) fn try_expire(&self, now: Instant, expiry: Duration) -> bool {
        let mut st = self.st.lock();
        // `interrupted_at` is cleared when a resume publishes the link.
        let expired = !st.attaching
            && st.cause.is_none()
            && st.session.is_some()
            && st
                .interrupted_at
                .is_some_and(|t| now.saturating_duration_since(t) >= expiry);
        if expired {
            st.cause = Some(DisconnectCause::ResumeFailed(
                crate::gateway::ResumeFailure::Expired,
            ));
        }
        expired
    }

    /// Lets go of the transport in hand without cutting it (a dialer's link whose resume
    /// failed hands it to the fresh link that follows).
    pub(crate) fn forget_transport(&self) {
        let mut st = self.st.lock();
        st.raw = None;
        st.handle = None;
    }

    /// Frames received and not yet acknowledged.
    pub(crate) fn ack_owed(&self) -> u64 {
        self.recv
            .load(Ordering::Acquire)
            .saturating_sub(self.acked_sent.load(Ordering::Acquire))
    }

    /// Ends a resumable link's session with `why` (the first cause set wins) and returns how
    /// many frames it sent that the other side will never get (it has up to `recv`, when
    /// known), both under one lock: nothing sent after the count is taken is accepted.
    pub(crate) fn fail_session(
        &self,
        why: crate::gateway::ResumeFailure,
        recv: Option<u64>,
    ) -> u64 {
        let mut st = self.st.lock();
        if st.cause.is_none() {
            st.cause = Some(DisconnectCause::ResumeFailed(why));
        }
        st.session.as_ref().map_or(0, |s| s.lost(recv))
    }

    /// Gives up a claim from `begin_attach` (the new transport failed).
    pub(crate) fn end_attach(&self) {
        self.st.lock().attaching = false;
    }

    /// The remote id learned from a refused handshake (for the `Disconnected` event).
    pub(crate) fn set_remote(&self, hello: HelloPayload) {
        let mut st = self.st.lock();
        st.remote.get_or_insert(hello.node_id);
        st.remote_version = Some(hello.version);
    }

    /// The transport ended: forget it. Returns the cause this side set, if any.
    pub(crate) fn transport_ended(&self) -> Option<DisconnectCause> {
        let mut st = self.st.lock();
        st.handle = None;
        st.raw = None;
        if st.state != ConnectionState::Disconnected {
            st.state = ConnectionState::Pending;
        }
        st.cause.clone()
    }

    /// Sends one frame by the connection's state, as `role`: a send to this peer only may
    /// wait (bounded) for the write lock (`OwnMayWait`); a broadcast does not (`Own`).
    pub(crate) fn send(
        &self,
        frame: Outgoing<'_>,
        role: SendRole,
        cfg: &GatewayConfig,
        component: &str,
        stats: &Stats,
    ) -> Sent {
        // Encoded before the lock is taken, in the shape the link takes: a resumable link's
        // frame with room for its header (`resumable` is set with the session, never cleared).
        let encoded = if self.resumable.load(Ordering::Acquire) {
            Err(frame.framed())
        } else {
            Ok(frame.into_bytes())
        };
        let mut st = self.st.lock();
        if st.cause.is_some() || st.state == ConnectionState::Disconnected {
            return Sent::NotConnected;
        }
        let bytes = match encoded {
            // Its first handshake may have completed since the check above: numbered too.
            Ok(bytes) if st.session.is_some() => {
                let framed = Outgoing::Encoded(bytes).framed();
                return self.send_resumable(&mut st, framed, role, component, stats);
            }
            Ok(bytes) => bytes,
            Err(framed) => return self.send_resumable(&mut st, framed, role, component, stats),
        };
        let msg = Message::Binary(bytes);
        if st.state == ConnectionState::Connected {
            let Some(h) = st.handle.clone() else {
                return Sent::NotConnected;
            };
            drop(st);
            return match h.send(msg, role) {
                Ok(()) => Sent::Ok,
                Err(Refused::Overflow) => Sent::Overflow { disconnect: false },
                Err(Refused::Closed) => Sent::NotConnected,
            };
        }
        if !(st.was_connected && self.direction == Direction::Outbound) {
            return Sent::NotConnected;
        }
        if st.pending.is_none() {
            match OutQueue::new(
                cfg.overflow_strategy,
                cfg.overflow_size,
                cfg.ws.outbound_max_bytes,
            ) {
                Ok(q) => st.pending = Some(q),
                Err(_) => return Sent::NotConnected,
            }
        }
        let Some(pending) = &st.pending else {
            return Sent::NotConnected;
        };
        let mut disconnect = false;
        match push_outbound(pending, msg, component, None, stats, None, || {
            disconnect = true
        }) {
            Ok(()) => Sent::Ok,
            Err(Refused::Overflow) => Sent::Overflow { disconnect },
            Err(Refused::Closed) => Sent::NotConnected,
        }
    }

    /// A resumable link's send: numbered and kept until acknowledged, written now when the link
    /// is live (under the lock, so the wire order is the numbering order), replayed on resume
    /// otherwise.
    fn send_resumable(
        &self,
        st: &mut PeerState,
        framed: Vec<u8>,
        role: SendRole,
        component: &str,
        stats: &Stats,
    ) -> Sent {
        let Some(session) = st.session.as_mut() else {
            return Sent::NotConnected;
        };
        match session.admit(framed.len(), st.attaching) {
            Admit::Refused => {
                stats.record_overflow_drop(1);
                return Sent::Overflow { disconnect: false };
            }
            Admit::Disconnect => {
                stats.record_overflow_drop(1);
                return Sent::Overflow { disconnect: true };
            }
            Admit::Kept(0) => {}
            Admit::Kept(n) => {
                stats.record_overflow_drop(n as u64);
                log::debug!(component, conn_id:% = self.id, count = n; "resend buffer full: oldest unacknowledged frames given up");
            }
        }
        let data = session.push_framed(framed);
        if st.state == ConnectionState::Connected {
            if let Some(h) = &st.handle {
                // Not written now (its queue is full, or the transport just ended): the frame
                // is in the resend buffer, and a gap is never left behind it, so the transport
                // is cut and the resume replays it.
                if h.send(Message::Binary(data), role) == Err(Refused::Overflow) {
                    h.cut_for("resumable link: write queue full");
                }
            }
        }
        Sent::Ok
    }

    /// Ends the connection for good with `cause` (the first cause set wins): a close frame
    /// when it is live, the socket cut while it handshakes, the dialer woken while it waits.
    pub(crate) fn end_with(&self, cause: DisconnectCause) {
        let mut st = self.st.lock();
        if st.cause.is_none() {
            st.cause = Some(cause.clone());
        }
        let handle = st.handle.clone();
        let raw = st.raw.clone();
        let resumable = st.session.is_some();
        drop(st);
        match handle {
            Some(h) => {
                if resumable {
                    // What arrived is acknowledged before the close (the other side keeps no
                    // frame it need not).
                    self.ack_now(&h);
                }
                let (code, reason) = match cause {
                    DisconnectCause::Duplicate => {
                        (crate::gateway::close_code::DUPLICATE, "duplicate")
                    }
                    DisconnectCause::Stopped => (1001, "node stopping"),
                    DisconnectCause::Overflow => (crate::gateway::close_code::OVERFLOW, "overflow"),
                    _ => (1000, "disconnect"),
                };
                // Graceful when the writer can take it; a writer with a backlog may be stuck
                // on a peer that stopped reading, so the link is cut at once then.
                if h.backlogged()
                    || !h.close(Some(CloseFrame {
                        code: code.into(),
                        reason: reason.into(),
                    }))
                {
                    h.close_now(code, reason);
                }
            }
            None => {
                if let Some(r) = raw {
                    let _ = r.shutdown(Shutdown::Both);
                }
            }
        }
        let _ = self.wake_tx.try_send(());
    }

    /// Cuts the transport now (stop, after the graceful close had its time).
    pub(crate) fn abort(&self) {
        let st = self.st.lock();
        if let Some(h) = &st.handle {
            h.abort();
        }
        if let Some(r) = &st.raw {
            let _ = r.shutdown(Shutdown::Both);
        }
        drop(st);
        let _ = self.wake_tx.try_send(());
    }

    pub(crate) fn snapshot(&self, cfg: &GatewayConfig) -> Connection {
        let streams = self
            .streams
            .list_streams(None)
            .into_iter()
            .filter_map(|s| self.streams.get(s))
            .collect();
        let st = self.st.lock();
        Connection {
            conn_id: self.id,
            state: st.state,
            remote_node_id: st.remote,
            direction: self.direction,
            peer_addr: st.peer_addr,
            url: self.url.as_ref().map(|u| u.url()),
            remote_version: st.remote_version,
            streams,
            overflow: (cfg.overflow_strategy, cfg.overflow_size),
            queued: match &st.session {
                Some(s) => s.held(),
                None => st.pending.as_ref().map_or(0, |p| p.len()),
            },
            session: st.session.as_ref().map(|s| s.id.to_string()),
            created_at: self.created_at,
        }
    }
}
