//! [`ConnRun`]: a handshaken connection, run on the reader thread: it spawns the writer, reads
//! and hands protocol replies (pongs, close replies) to the writer, and calls back for each
//! data message.

use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver};
use tungstenite::error::{CapacityError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocket};
use tungstenite::Message;

use super::frame::WriteState;
use super::handle::ConnHandle;
use super::writer::Writer;
use super::{
    elapsed_nanos, ConnEnd, ConnInfo, ConnParams, Ctrl, EndReason, HalfStream, Outbound,
    CTRL_CAPACITY,
};
use crate::error::{Error, Result};
use crate::stats::Stats;
use crate::threads::Threads;

/// A handshaken connection, ready to run on the current (reader) thread.
pub(crate) struct ConnRun {
    ws: WebSocket<HalfStream>,
    handle: Arc<ConnHandle>,
    ctrl_rx: Receiver<Ctrl>,
    params: ConnParams,
}

impl ConnRun {
    /// Wraps a socket whose handshake is done.
    pub(crate) fn new(
        mut ws: WebSocket<HalfStream>,
        info: ConnInfo,
        component: Arc<str>,
        outbound: Outbound,
        params: ConnParams,
        stats: Arc<Stats>,
    ) -> Result<(Self, Arc<ConnHandle>)> {
        let sock = ws
            .get_ref()
            .sock()
            .try_clone()
            .map_err(|e| Error::io(&component, Some(info.peer.to_string()), e))?;
        ws.get_mut().writes = false;
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
        let handle = Arc::new(ConnHandle {
            info,
            component,
            ctrl: ctrl_tx,
            queue,
            make_queue,
            queue_capacity,
            sock,
            ended: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            stats,
            kill_tx: parking_lot::Mutex::new(Some(kill_tx)),
            kill_rx,
            wr: parking_lot::Mutex::new(WriteState::new(params.role, params.ws)),
            wake_tx,
            wake_rx,
            keep_unsent: params.keep_unsent,
            epoch: Instant::now(),
            direct_after: AtomicU64::new(0),
            pongs_pending: AtomicUsize::new(0),
            overflow_close: OnceLock::new(),
            overflowed: AtomicBool::new(false),
            holding: AtomicBool::new(false),
        });
        Ok((
            ConnRun {
                ws,
                handle: handle.clone(),
                ctrl_rx,
                params,
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

    /// Runs the connection: spawns the writer on `threads`, reads on this thread, calls
    /// `on_message` for each data message, and returns when both directions are done.
    pub(crate) fn run(
        self,
        threads: &Arc<Threads>,
        mut on_message: impl FnMut(Message),
    ) -> ConnEnd {
        let ConnRun {
            mut ws,
            handle,
            ctrl_rx,
            params,
        } = self;
        let component = handle.component.clone();
        let peer = handle.info.peer.to_string();
        let conn_id = handle.info.id.to_string();
        let start = Instant::now();
        let last_pong = Arc::new(AtomicU64::new(0));
        let (done_tx, done_rx) = bounded::<Vec<Message>>(1);

        let writer_sock = match handle.sock.try_clone() {
            Ok(s) => s,
            Err(e) => {
                handle.abort();
                return ConnEnd {
                    reason: EndReason::Lost(e.to_string()),
                    unsent: Vec::new(),
                    peer_close: None,
                };
            }
        };
        // A write that makes no progress for a whole heartbeat cycle means the peer stopped
        // reading: fail it rather than block forever (the heartbeat cannot run meanwhile).
        if let (Some(i), Some(t)) = (params.ping_interval, params.ping_timeout) {
            let _ = writer_sock.set_write_timeout(Some(i + t));
        }
        let writer = Writer {
            sock: writer_sock,
            ctrl_rx,
            handle: handle.clone(),
            params: params.clone(),
            start,
            last_pong: last_pong.clone(),
            held: None,
        };
        let name = format!("rxws-conn-{}-write", handle.info.seq);
        if let Err(e) = threads.spawn(name, move || {
            let unsent = writer.run();
            let _ = done_tx.send(unsent);
        }) {
            log::debug!(component = &*component, conn_id = conn_id.as_str(), error:% = e; "writer not started");
            handle.abort();
            return ConnEnd {
                reason: EndReason::Lost(e.to_string()),
                unsent: Vec::new(),
                peer_close: None,
            };
        }

        let ctrl = handle.ctrl.clone();
        let mut peer_close = None;
        let reason = loop {
            let read = ws.read();
            // After an abort the socket still yields what the kernel (or tungstenite) had
            // buffered: none of it is delivered, so dispose is bounded however much waits.
            if handle.aborted.load(Ordering::Acquire) {
                break EndReason::Aborted;
            }
            match read {
                Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                    handle.stats.record_in(msg.len());
                    on_message(msg);
                }
                Ok(Message::Ping(data)) => {
                    handle.pongs_pending.fetch_add(1, Ordering::AcqRel);
                    if ctrl.send(Ctrl::Pong(data)).is_err() {
                        break EndReason::Lost("writer ended".into());
                    }
                }
                Ok(Message::Pong(_)) => {
                    last_pong.store(elapsed_nanos(start), Ordering::Release);
                }
                Ok(Message::Close(frame)) => {
                    peer_close = Some(
                        frame
                            .as_ref()
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new())),
                    );
                    let _ = ctrl.send(Ctrl::PeerClosed(frame));
                }
                Ok(Message::Frame(_)) => {}
                Err(tungstenite::Error::ConnectionClosed)
                | Err(tungstenite::Error::AlreadyClosed) => {
                    break EndReason::Closed;
                }
                Err(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    break EndReason::Lost("peer closed without a close frame".into());
                }
                Err(e) => {
                    if let Some((code, why)) = fail_code(&e) {
                        log::debug!(component = &*component, conn_id = conn_id.as_str(), peer = peer.as_str(), code = u16::from(code), error:% = e; "protocol error from peer; failing the connection");
                        let _ = ctrl.send(Ctrl::Fail(CloseFrame {
                            code,
                            reason: why.into(),
                        }));
                        break EndReason::ProtocolError(u16::from(code), e.to_string());
                    }
                    break EndReason::Lost(e.to_string());
                }
            }
        };
        // A peer that vanished can leave the writer blocked on a full socket: once the peer is
        // lost, or the writer has had its close timeout, shutting the socket down ends the write.
        if matches!(reason, EndReason::Lost(_)) {
            let _ = handle.sock.shutdown(Shutdown::Both);
        }
        // The writer's own close steps take up to one close timeout each.
        let deadline = Instant::now() + params.close_timeout * 2;
        if ctrl.send_deadline(Ctrl::ReaderDone, deadline).is_err() {
            let _ = handle.sock.shutdown(Shutdown::Both);
        }
        drop(ctrl);
        let unsent = match done_rx.recv_deadline(deadline) {
            Ok(unsent) => unsent,
            Err(_) => {
                let _ = handle.sock.shutdown(Shutdown::Both);
                done_rx.recv().unwrap_or_default()
            }
        };
        handle.ended.store(true, Ordering::Release);
        ConnEnd {
            reason,
            unsent,
            peer_close,
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
