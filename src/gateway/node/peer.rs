//! One connection's state, shared by its link thread and every sender.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

use crate::gateway::{
    Connection, ConnectionState, Direction, DisconnectCause, GatewayConfig, HelloPayload, NodeId,
    StreamTable,
};
use crate::stats::Stats;
use crate::ws::conn::ConnHandle;
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
            }),
            ended: AtomicBool::new(false),
            wake_tx,
            wake_rx,
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
    ) -> std::result::Result<(), DisconnectCause> {
        let mut st = self.st.lock();
        if let Some(c) = &st.cause {
            return Err(c.clone());
        }
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

    /// Sends one encoded frame by the connection's state.
    pub(crate) fn send(
        &self,
        msg: Message,
        cfg: &GatewayConfig,
        component: &str,
        stats: &Stats,
    ) -> Sent {
        let mut st = self.st.lock();
        if st.cause.is_some() || st.state == ConnectionState::Disconnected {
            return Sent::NotConnected;
        }
        if st.state == ConnectionState::Connected {
            let Some(h) = st.handle.clone() else {
                return Sent::NotConnected;
            };
            drop(st);
            return match h.send(msg) {
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

    /// Ends the connection for good with `cause` (the first cause set wins): a close frame
    /// when it is live, the socket cut while it handshakes, the dialer woken while it waits.
    pub(crate) fn end_with(&self, cause: DisconnectCause) {
        let mut st = self.st.lock();
        if st.cause.is_none() {
            st.cause = Some(cause.clone());
        }
        let handle = st.handle.clone();
        let raw = st.raw.clone();
        drop(st);
        match handle {
            Some(h) => {
                let (code, reason) = match cause {
                    DisconnectCause::Duplicate => {
                        (crate::gateway::close_code::DUPLICATE, "duplicate")
                    }
                    DisconnectCause::Stopped => (1001, "node stopping"),
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
            queued: st.pending.as_ref().map_or(0, |p| p.len()),
            created_at: self.created_at,
        }
    }
}
