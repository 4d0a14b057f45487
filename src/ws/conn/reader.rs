//! [`ConnRun`]: a handshaken connection, run on the reader thread: it reads, answers pings,
//! hands close replies to the writer, and calls back for each data message; at the end it
//! waits for a running writer to finish.

use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crossbeam_channel::bounded;
use tungstenite::error::{CapacityError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocket};
use tungstenite::Message;

use super::frame::WriteState;
use super::handle::{ConnHandle, Heartbeat};
use super::{
    BurstClock, ConnEnd, ConnInfo, ConnParams, Ctrl, EndReason, HalfStream, InboundBudget,
    Outbound, CTRL_CAPACITY,
};
use crate::error::Result;
use crate::stats::{InCounter, Stats};
use crate::threads::Threads;

/// A handshaken connection, ready to run on the current (reader) thread.
pub(crate) struct ConnRun {
    ws: WebSocket<HalfStream>,
    handle: Arc<ConnHandle>,
    received: InCounter,
}

impl ConnRun {
    /// Wraps a socket whose handshake is done. Its writer (when needed) and its heartbeat run
    /// on `threads`; a server passes its inbound `budget`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        mut ws: WebSocket<HalfStream>,
        info: ConnInfo,
        component: Arc<str>,
        outbound: Outbound,
        params: ConnParams,
        stats: Arc<Stats>,
        threads: &Arc<Threads>,
        budget: Option<Arc<InboundBudget>>,
    ) -> Result<(Self, Arc<ConnHandle>)> {
        let sock = ws.get_ref().sock().clone();
        let tls = ws.get_ref().tls().cloned();
        ws.get_mut().writes = false;
        let aborted = Arc::new(AtomicBool::new(false));
        let stop_reading = Arc::new(AtomicBool::new(false));
        if let Some(b) = &budget {
            ws.get_mut()
                .attach_budget(b.clone(), info.seq, stop_reading.clone());
        }
        let (ctrl_tx, ctrl_rx) = bounded(CTRL_CAPACITY);
        let (kill_tx, kill_rx) = bounded(0);
        let (wake_tx, wake_rx) = bounded(1);
        let (queue, make_queue, queue_capacity) = match outbound {
            Outbound::Shared(q) => {
                let cap = q.capacity();
                (OnceLock::from(Some(q)), None, cap)
            }
            Outbound::PerConnection {
                strategy,
                capacity,
                max_bytes,
            } => (
                OnceLock::new(),
                Some((strategy, capacity, max_bytes)),
                capacity,
            ),
        };
        let now = Instant::now();
        let received = stats.in_counter();
        let handle = Arc::new_cyclic(|me| ConnHandle {
            info,
            component,
            me: me.clone(),
            threads: threads.clone(),
            ctrl: ctrl_tx,
            ctrl_rx,
            queue,
            make_queue,
            queue_capacity,
            sock,
            ended: AtomicBool::new(false),
            aborted,
            budget,
            stop_reading,
            writer_running: AtomicBool::new(false),
            slot: parking_lot::Mutex::new(false),
            slot_cv: parking_lot::Condvar::new(),
            last_pong: AtomicU64::new(0),
            hb: parking_lot::Mutex::new(Heartbeat {
                next_ping: now,
                ping_sent: None,
            }),
            stats,
            kill_tx: parking_lot::Mutex::new(Some(kill_tx)),
            kill_rx,
            wr: parking_lot::Mutex::new(WriteState::new(params.role, params.ws, tls)),
            wake_tx,
            wake_rx,
            keep_unsent: params.keep_unsent,
            params,
            epoch: now,
            burst: BurstClock::default(),
            pongs_pending: AtomicUsize::new(0),
            own_wait_off: AtomicBool::new(false),
            buffered: AtomicU64::new(0),
            overflow_close: OnceLock::new(),
            overflowed: AtomicBool::new(false),
            cut: OnceLock::new(),
            dropping: AtomicBool::new(false),
            holding: AtomicBool::new(false),
        });
        // What rustls owes the peer after a read (an alert before a failed connection ends)
        // goes out through the write half.
        let weak = Arc::downgrade(&handle);
        ws.get_mut().on_tls_output(Arc::new(move || {
            if let Some(h) = weak.upgrade() {
                h.flush_tls();
            }
        }));
        Ok((
            ConnRun {
                ws,
                handle: handle.clone(),
                received,
            },
            handle,
        ))
    }

    /// Messages to write before anything queued (a client's unsent batch from the last
    /// connection).
    /// Encoded now, before the handle can take a direct write, so nothing overtakes them.
    pub(crate) fn with_pending(self, pending: Vec<Message>) -> Self {
        self.handle.preload(pending);
        self
    }

    /// Runs the connection: reads on this thread and calls `on_message` for each data
    /// message; returns when both directions are done (a writer thread, if one runs, has
    /// ended).
    pub(crate) fn run(self, mut on_message: impl FnMut(Message)) -> ConnEnd {
        let ConnRun {
            mut ws,
            handle,
            mut received,
        } = self;
        let component = handle.component.clone();
        let peer = handle.info.peer.to_string();
        let conn_id = handle.info.id.to_string();
        handle.start_heartbeat();
        // A client's queue may hold what was sent while it was disconnected.
        if handle.backlogged() {
            handle.ensure_writer();
        }

        let mut peer_close = None;
        let mut peer_first = false;
        let reason = loop {
            let read = ws.get_mut().read_message();
            // After an abort the socket still yields what the kernel (or tungstenite) had
            // buffered: none of it is delivered, so dispose is bounded however much waits.
            if handle.aborted.load(Ordering::Acquire) {
                break EndReason::Aborted;
            }
            match &read {
                Ok(Message::Text(_) | Message::Binary(_)) => ws.get_mut().message_done(),
                // A control frame may come between the fragments of a message: its bytes are
                // taken back out of the count (at least its 2-byte header), nothing is released.
                Ok(m @ (Message::Ping(_) | Message::Pong(_))) => {
                    ws.get_mut().control_done(m.len() + 2)
                }
                _ => {}
            }
            match read {
                Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                    received.record(msg.len());
                    on_message(msg);
                }
                Ok(Message::Ping(data)) => {
                    if !handle.pong(data) {
                        break EndReason::Lost("writer ended".into());
                    }
                }
                Ok(Message::Pong(_)) => {
                    handle
                        .last_pong
                        .store(handle.nanos().max(1), Ordering::Release);
                }
                Ok(Message::Close(frame)) => {
                    peer_first = handle.wr.lock().sent_close.is_none();
                    peer_close = Some(
                        frame
                            .as_ref()
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new())),
                    );
                    if !handle.to_writer(Ctrl::PeerClosed(frame)) {
                        break EndReason::Lost("writer ended".into());
                    }
                }
                Ok(Message::Frame(_)) => {}
                Err(e) => match *e {
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                        break EndReason::Closed;
                    }
                    tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                        break EndReason::Lost("peer closed without a close frame".into());
                    }
                    e => {
                        if let Some((code, why)) = fail_code(&e) {
                            log::debug!(component = &*component, conn_id = conn_id.as_str(), peer = peer.as_str(), code = u16::from(code), error:% = e; "protocol error from peer; failing the connection");
                            let _ = handle.to_writer(Ctrl::Fail(CloseFrame {
                                code,
                                reason: why.into(),
                            }));
                            break EndReason::ProtocolError(u16::from(code), e.to_string());
                        }
                        break EndReason::Lost(e.to_string());
                    }
                },
            }
        };
        // A peer that vanished can leave the writer blocked on a full socket: once the peer is
        // lost, or the writer has had its close timeout, shutting the socket down ends the write.
        if matches!(reason, EndReason::Lost(_)) {
            let _ = handle.sock.shutdown(Shutdown::Both);
        }
        // The writer's own close steps take up to one close timeout each.
        let deadline = Instant::now() + handle.params.close_timeout * 2;
        // No writer starts after this, so a running one (checked after) is the last.
        *handle.slot.lock() = true;
        if handle.writer_running.load(Ordering::SeqCst)
            && handle
                .ctrl
                .send_deadline(Ctrl::ReaderDone, deadline)
                .is_err()
        {
            let _ = handle.sock.shutdown(Shutdown::Both);
        }
        {
            // Wait for a running writer to end.
            let mut reader_done = handle.slot.lock();
            while handle.writer_running.load(Ordering::SeqCst) {
                if handle
                    .slot_cv
                    .wait_until(&mut reader_done, deadline)
                    .timed_out()
                {
                    let _ = handle.sock.shutdown(Shutdown::Both);
                    handle.slot_cv.wait(&mut reader_done);
                }
            }
        }
        handle.ended.store(true, Ordering::Release);
        // Under the lock senders write with: one that checked `ended` before it was set finds
        // the write half failed and queues instead (a buffering client keeps it for the next
        // connection) rather than adding to an `unsent` no one takes again.
        let (unsent, sent_close) = {
            let mut w = handle.wr.lock();
            w.failed = true;
            (std::mem::take(&mut w.unsent), w.sent_close.clone())
        };
        ConnEnd {
            reason,
            unsent,
            peer_close,
            sent_close,
            peer_first,
            cut: handle.cut.get().copied(),
        }
    }
}

/// The close code for a protocol violation by the peer, or None when the socket simply failed.
fn fail_code(e: &tungstenite::Error) -> Option<(CloseCode, &'static str)> {
    match e {
        tungstenite::Error::Utf8(_) => Some((CloseCode::Invalid, "invalid UTF-8")),
        tungstenite::Error::Capacity(CapacityError::MessageTooLong { .. }) => {
            Some((CloseCode::Size, "message too big"))
        }
        tungstenite::Error::Capacity(_) => Some((CloseCode::Size, "too big")),
        tungstenite::Error::Protocol(_) => Some((CloseCode::Protocol, "protocol error")),
        _ => None,
    }
}
