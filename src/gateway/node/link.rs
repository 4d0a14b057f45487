//! A link's thread: the accept side (`rxgw-conn-N`) or the dial side (`rxgw-dial-N`, which
//! redials). Each runs the WebSocket upgrade and the HELLO / HELLO_ACK exchange synchronously,
//! under one deadline, before the connection is published; then it becomes the connection's
//! reader (the connection core spawns the writer).

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::{CloseFrame, Role, WebSocket};
use tungstenite::Message;

use super::peer::Peer;
use super::Inner;
use crate::error::{CodecError, Context, Error};
use crate::gateway::{
    close_code, ConnectionState, Direction, DisconnectCause, DuplicatePolicy, Framing,
    GatewayEvent, HelloPayload, TaggedFrame, PROTOCOL_VERSION,
};
use crate::telemetry::{self, event, Outcome};
use crate::ws::conn::{ConnEnd, ConnInfo, ConnRun, EndReason, HalfStream, Outbound};
use crate::ws::handshake::{self, reply_http, reply_http_on, BAD_REQUEST, UNAVAILABLE};
use crate::ws::listen::{Acceptor, HandshakeSlot, Handshakes, Refusal};
use crate::ws::{ConnId, WSConnectionConfig};

/// How a link's transport ended.
enum LinkEnd {
    /// The upgrade or the HELLO exchange failed or was refused.
    HandshakeFailed(DisconnectCause),
    /// The link was connected, then its transport ended.
    Ended(DisconnectCause),
}

impl<F: Framing> Acceptor for Inner<F> {
    fn name(&self) -> &str {
        &self.core.name
    }

    fn stopping(&self) -> bool {
        Inner::stopping(self)
    }

    fn handshakes(&self) -> &Handshakes {
        &self.handshakes
    }

    fn over_limit(&self, in_progress: usize) -> Option<Refusal> {
        if in_progress >= self.cfg.ws.max_handshakes {
            return Some(("max_handshakes", self.cfg.ws.max_handshakes));
        }
        // A first check; `serve_inbound` checks again when it adds the peer to the table.
        (self.peers.read().len() >= self.cfg.max_peers).then_some(("max_peers", self.cfg.max_peers))
    }

    fn serve(
        self: &Arc<Self>,
        sock: Arc<TcpStream>,
        addr: SocketAddr,
        accepted_at: Instant,
        slot: HandshakeSlot,
    ) -> crate::Result<()> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let w = Arc::downgrade(self);
        self.core
            .threads
            .spawn(format!("rxgw-conn-{seq}"), move || {
                serve_inbound(w, sock, addr, seq, accepted_at, slot)
            })
    }
}

fn serve_inbound<F: Framing>(
    weak: Weak<Inner<F>>,
    raw: Arc<TcpStream>,
    addr: SocketAddr,
    seq: u64,
    started: Instant,
    slot: HandshakeSlot,
) {
    let Some(inner) = weak.upgrade() else { return };
    // One deadline from accept for the upgrade and the HELLO exchange.
    let deadline = started + inner.cfg.handshake_timeout;
    handshake::start(&raw, inner.cfg.handshake_timeout);
    let peer = Arc::new(Peer::new(ConnId::new(), Direction::Inbound, None, seq));
    {
        let mut peers = inner.peers.write();
        if inner.stopping() {
            return;
        }
        if peers.len() >= inner.cfg.max_peers {
            drop(peers);
            log::warn!(component = &*inner.core.name, peer:% = addr, reason = "max_peers", limit = inner.cfg.max_peers, status = 503; "{}", event::CONNECTION_REFUSED);
            reply_http(&raw, UNAVAILABLE);
            return;
        }
        peers.insert(peer.id, peer.clone());
    }
    peer.begin_transport(&raw, addr, ConnectionState::Pending);
    log::info!(component = &*inner.core.name, conn_id:% = peer.id, peer:% = addr; "{}", event::CONNECTION_OPENED);
    let upgraded = match handshake::server_stream(&raw, deadline, &inner.cfg.ws) {
        Err(e) => {
            let _ = raw.shutdown(Shutdown::Both);
            Err(if e.kind() == std::io::ErrorKind::TimedOut {
                DisconnectCause::HandshakeTimeout
            } else {
                DisconnectCause::Closed {
                    code: None,
                    reason: format!("TLS handshake failed: {e}"),
                }
            })
        }
        Ok(stream) => {
            let tls = stream.tls().cloned();
            tungstenite::accept_with_config(stream, Some(inner.cfg.ws.tungstenite())).map_err(|e| {
                match e {
                    HandshakeError::Interrupted(_) => {
                        let _ = raw.shutdown(Shutdown::Both);
                        DisconnectCause::HandshakeTimeout
                    }
                    HandshakeError::Failure(e) => {
                        if !matches!(e, tungstenite::Error::Io(_)) {
                            reply_http_on(&raw, tls.as_deref(), BAD_REQUEST);
                        }
                        DisconnectCause::Closed {
                            code: None,
                            reason: format!("upgrade failed: {e}"),
                        }
                    }
                }
            })
        }
    };
    let end = match upgraded {
        Ok(ws) => run_link(&inner, &peer, ws, raw, addr, started, Some(slot)),
        Err(cause) => {
            handshake_failed(&inner, &peer, &cause, started);
            LinkEnd::HandshakeFailed(cause)
        }
    };
    peer.set_link_done();
    inner.notify_state();
    let (LinkEnd::HandshakeFailed(cause) | LinkEnd::Ended(cause)) = end;
    inner.finish(&peer, cause);
}

pub(super) fn dial_loop<F: Framing>(
    weak: Weak<Inner<F>>,
    peer: Arc<Peer>,
    conn: WSConnectionConfig,
) {
    let mut failures: u32 = 0;
    let cause = loop {
        let Some(inner) = weak.upgrade() else { return };
        if let Some(c) = peer.cause() {
            break c;
        }
        if inner.stopping() {
            break DisconnectCause::Stopped;
        }
        let started = Instant::now();
        let deadline = started + inner.cfg.handshake_timeout;
        inner
            .core
            .stats
            .connect_attempts
            .fetch_add(1, Ordering::Relaxed);
        let mut ws_cfg = inner.cfg.ws.clone();
        ws_cfg.handshake_timeout = inner.cfg.handshake_timeout;
        let ending = || inner.stopping() || peer.cause().is_some();
        let attempt = crate::ws::dial(
            &conn,
            &ws_cfg,
            &inner.core.name,
            Some(deadline),
            &ending,
            |raw| {
                if let Ok(addr) = raw.peer_addr() {
                    peer.begin_transport(raw, addr, ConnectionState::Pending);
                    log::info!(component = &*inner.core.name, conn_id:% = peer.id, peer:% = addr; "{}", event::CONNECTION_OPENED);
                }
            },
        );
        let retry = &inner.cfg.ws.retry;
        let failed = |failures: u32, error: String| -> Result<Duration, DisconnectCause> {
            match retry.max_retries {
                Some(max) if failures > max => Err(DisconnectCause::RetriesExhausted {
                    attempts: failures,
                    error,
                }),
                _ => Ok(retry.delay(failures.saturating_sub(1))),
            }
        };
        let wait = match attempt {
            Ok((ws, addr, raw, _)) => match run_link(&inner, &peer, ws, raw, addr, started, None) {
                LinkEnd::HandshakeFailed(c) if c.is_final() => break c,
                LinkEnd::HandshakeFailed(c) => {
                    failures += 1;
                    match failed(failures, c.to_string()) {
                        Ok(d) => d,
                        Err(c) => break c,
                    }
                }
                LinkEnd::Ended(c) if c.is_final() || inner.stopping() => break c,
                LinkEnd::Ended(c) => {
                    failures = 0;
                    log::info!(component = &*inner.core.name, conn_id:% = peer.id, reason:% = c; "{}", event::GATEWAY_INTERRUPTED);
                    inner.notify_state();
                    inner
                        .events
                        .next(GatewayEvent::Interrupted { conn_id: peer.id });
                    retry.delay(0)
                }
            },
            Err(e) => {
                peer.transport_ended();
                failures += 1;
                // A refused certificate or a 4xx refusal stays so: no redial (reported, then
                // final).
                let verdict = if retry.gives_up_on(&e) {
                    inner.core.report(Error::ConnectFailed {
                        ctx: Context::new(&inner.core.name, Some(peer.id.to_string())),
                        attempt: failures,
                        source: Box::new(e.clone()),
                    });
                    Err(DisconnectCause::Closed {
                        code: None,
                        reason: format!("refused: {e}"),
                    })
                } else {
                    failed(failures, e.to_string())
                };
                match verdict {
                    Ok(d) => {
                        log::info!(component = &*inner.core.name, conn_id:% = peer.id, attempt = failures, delay_ms = d.as_millis() as u64, error:% = e; "{}", event::CONNECT_RETRY);
                        inner.core.report(Error::ConnectFailed {
                            ctx: Context::new(&inner.core.name, Some(peer.id.to_string())),
                            attempt: failures,
                            source: Box::new(e),
                        });
                        d
                    }
                    Err(c) => {
                        log::warn!(component = &*inner.core.name, conn_id:% = peer.id, attempt = failures, error:% = e; "{}", event::RETRIES_EXHAUSTED);
                        break c;
                    }
                }
            }
        };
        drop(inner);
        let _ = peer.wake_rx.recv_timeout(wait);
    };
    peer.set_link_done();
    if let Some(inner) = weak.upgrade() {
        inner.notify_state();
        inner.finish(&peer, cause);
    }
}

/// The HELLO exchange, the duplicate check, publication, then the connection's read loop. An
/// accepted link counts as a handshake in progress (`slot`) until its HELLO exchange is over.
fn run_link<F: Framing>(
    inner: &Arc<Inner<F>>,
    peer: &Arc<Peer>,
    mut ws: WebSocket<HalfStream>,
    raw: Arc<TcpStream>,
    addr: SocketAddr,
    started: Instant,
    slot: Option<HandshakeSlot>,
) -> LinkEnd {
    let accepting = peer.direction == Direction::Inbound;
    let hello = match hello_exchange(inner, peer, &mut ws, accepting) {
        Ok(h) => h,
        Err(cause) => {
            match cause.code() {
                Some(code @ close_code::HANDSHAKE_TIMEOUT..=close_code::SELF_CONNECTION)
                    if !matches!(cause, DisconnectCause::Refused { .. }) =>
                {
                    close_raw(&mut ws, &raw, code, &cause, inner.cfg.ws.close_timeout)
                }
                _ => {
                    let _ = ws.flush();
                    let _ = raw.shutdown(Shutdown::Both);
                }
            }
            handshake_failed(inner, peer, &cause, started);
            return LinkEnd::HandshakeFailed(cause);
        }
    };
    drop(slot);
    ws.get_mut().set_deadline(None);
    handshake::finish(&raw);
    let role = if accepting {
        Role::Server
    } else {
        Role::Client
    };
    let params = handshake::params(&inner.cfg.ws, role, false);
    let info = ConnInfo {
        id: peer.id,
        seq: peer.seq,
        peer: addr,
    };
    let (run, handle) = match ConnRun::new(
        ws,
        info,
        inner.core.name.clone(),
        Outbound::PerConnection {
            strategy: inner.cfg.overflow_strategy,
            capacity: inner.cfg.overflow_size,
            max_bytes: inner.cfg.ws.outbound_max_bytes,
        },
        params,
        inner.core.stats.clone(),
        &inner.core.threads,
        None,
    ) {
        Ok(x) => x,
        Err(e) => {
            let _ = raw.shutdown(Shutdown::Both);
            let cause = DisconnectCause::Closed {
                code: None,
                reason: e.to_string(),
            };
            handshake_failed(inner, peer, &cause, started);
            return LinkEnd::HandshakeFailed(cause);
        }
    };
    handle.set_overflow_close(close_code::OVERFLOW);
    let losers = {
        let _publishing = inner.publish.lock();
        let losers = match duplicates(inner, peer, hello) {
            Ok(losers) => losers,
            Err(cause) => {
                drop(_publishing);
                handle.close_now(close_code::DUPLICATE, "duplicate");
                handshake_failed(inner, peer, &cause, started);
                return LinkEnd::HandshakeFailed(cause);
            }
        };
        if let Err(cause) = peer.publish(handle.clone(), hello) {
            drop(_publishing);
            handle.close_now(cause.code().unwrap_or(1000), "ending");
            return LinkEnd::HandshakeFailed(cause);
        }
        losers
    };
    for l in losers {
        l.end_with(DisconnectCause::Duplicate);
    }
    let took = started.elapsed();
    telemetry::record_handshake(&inner.core.name, Outcome::Ok, took);
    inner
        .core
        .stats
        .connections_opened
        .fetch_add(1, Ordering::Relaxed);
    log::info!(component = &*inner.core.name, conn_id:% = peer.id, remote_node_id:% = hello.node_id, direction:% = peer.direction, duration_ms = took.as_secs_f64() * 1e3; "{}", event::HANDSHAKE_COMPLETED);
    inner.notify_state();
    inner.events.next(GatewayEvent::Connected {
        conn_id: peer.id,
        remote_node_id: hello.node_id,
        direction: peer.direction,
    });
    let end = run.run(|msg| on_message(inner, peer, msg));
    handle.abort();
    inner
        .core
        .stats
        .connections_closed
        .fetch_add(1, Ordering::Relaxed);
    let local = peer.transport_ended();
    inner.notify_state();
    let cause = local
        .or_else(|| handle.overflowed().then_some(DisconnectCause::Overflow))
        .unwrap_or_else(|| ended_by(&end));
    LinkEnd::Ended(cause)
}

/// Why a transport ended, as the reader saw it.
fn ended_by(end: &ConnEnd) -> DisconnectCause {
    if let Some((code, reason)) = &end.peer_close {
        return from_close(*code, reason);
    }
    DisconnectCause::Closed {
        code: None,
        reason: match &end.reason {
            EndReason::Closed => "closed".into(),
            EndReason::ProtocolError(code, e) => format!("protocol error ({code}): {e}"),
            EndReason::Lost(e) => e.clone(),
            EndReason::Aborted => "aborted".into(),
        },
    }
}

fn from_close(code: u16, reason: &str) -> DisconnectCause {
    if (close_code::HANDSHAKE_TIMEOUT..=close_code::OVERFLOW).contains(&code) {
        DisconnectCause::Refused {
            code,
            reason: reason.to_owned(),
        }
    } else {
        DisconnectCause::Closed {
            code: Some(code),
            reason: reason.to_owned(),
        }
    }
}

/// Sends our HELLO (accepting side) and waits for the other's frame under the deadline, then
/// checks it; the dialing side answers HELLO_ACK. Frames before it are dropped and counted.
fn hello_exchange<F: Framing>(
    inner: &Inner<F>,
    peer: &Peer,
    ws: &mut WebSocket<HalfStream>,
    accepting: bool,
) -> Result<HelloPayload, DisconnectCause> {
    let cfg = &inner.cfg;
    let lost = |e: tungstenite::Error| match e {
        tungstenite::Error::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            DisconnectCause::HandshakeTimeout
        }
        e => DisconnectCause::Closed {
            code: None,
            reason: e.to_string(),
        },
    };
    // Every read and write below is bounded by the deadline the stream carries.
    if accepting {
        peer.set_state(ConnectionState::Handshaking);
        let hello = F::create_hello(inner.node_id, cfg.protocol_version);
        ws.send(Message::Binary(hello.encode().into()))
            .map_err(lost)?;
    }
    let hello = loop {
        match ws.read().map_err(lost)? {
            Message::Binary(b) => match F::decode(&b) {
                Ok(f) if (accepting && f.is_hello_ack()) || (!accepting && f.is_hello()) => {
                    match f.get_hello_node_id() {
                        Some(node_id) => {
                            break HelloPayload {
                                node_id,
                                version: f.get_hello_version().unwrap_or(PROTOCOL_VERSION),
                            }
                        }
                        None => decode_error(
                            inner,
                            peer.id,
                            CodecError::msg("handshake frame without a node id"),
                        ),
                    }
                }
                Ok(_) => early_frame(inner, peer.id),
                Err(e) => decode_error(inner, peer.id, e),
            },
            Message::Text(_) => early_frame(inner, peer.id),
            Message::Close(frame) => {
                return Err(match frame {
                    Some(f) => from_close(u16::from(f.code), &f.reason),
                    None => DisconnectCause::Closed {
                        code: None,
                        reason: "closed during the handshake".into(),
                    },
                })
            }
            _ => {}
        }
    };
    peer.set_remote(hello);
    if hello.version < cfg.min_version {
        return Err(DisconnectCause::Version {
            version: hello.version,
            min: cfg.min_version,
        });
    }
    if hello.node_id == inner.node_id {
        return Err(DisconnectCause::SelfConnection);
    }
    if !accepting {
        let ack = F::create_hello_ack(inner.node_id, cfg.protocol_version);
        ws.send(Message::Binary(ack.encode().into()))
            .map_err(lost)?;
    }
    Ok(hello)
}

/// Under `DuplicatePolicy::KeepOne`, decides between this link and the connected ones to the
/// same node: `Err` refuses this one; `Ok` lists links to close for it. The link dialed by the
/// node with the lower id wins; between links of one direction the older wins. Each side only
/// ever closes links it dialed: a losing inbound link is left for its dialer, which reaches the
/// same verdict and closes it with 4004. So no side drops a link the other still counts on, and
/// exactly one survives.
fn duplicates<F: Framing>(
    inner: &Inner<F>,
    peer: &Arc<Peer>,
    hello: HelloPayload,
) -> Result<Vec<Arc<Peer>>, DisconnectCause> {
    if inner.cfg.duplicates != DuplicatePolicy::KeepOne {
        return Ok(Vec::new());
    }
    let preferred = |d: Direction| {
        if inner.node_id < hello.node_id {
            d == Direction::Outbound
        } else {
            d == Direction::Inbound
        }
    };
    let others: Vec<Arc<Peer>> = inner
        .peers
        .read()
        .values()
        .filter(|p| p.id != peer.id)
        .cloned()
        .collect();
    let mut losers = Vec::new();
    for o in others {
        if o.state() != ConnectionState::Connected || o.remote() != Some(hello.node_id) {
            continue;
        }
        let this_wins = preferred(peer.direction) && !preferred(o.direction);
        if this_wins {
            if o.direction == Direction::Outbound {
                losers.push(o);
            }
        } else if peer.direction == Direction::Outbound {
            return Err(DisconnectCause::Duplicate);
        }
    }
    Ok(losers)
}

/// Sends a close frame with `code` on a link that never went live, waits (bounded) for the
/// peer's reply, and cuts the socket.
fn close_raw(
    ws: &mut WebSocket<HalfStream>,
    raw: &TcpStream,
    code: u16,
    cause: &DisconnectCause,
    close_timeout: Duration,
) {
    let deadline = Instant::now() + close_timeout.min(Duration::from_secs(1));
    // The handshake's deadline has passed (or was not the point): the close has its own.
    ws.get_mut().set_deadline(Some(deadline));
    let reason = match cause {
        DisconnectCause::HandshakeTimeout => "handshake timeout",
        DisconnectCause::Version { .. } => "protocol version not supported",
        DisconnectCause::SelfConnection => "connected to itself",
        _ => "refused",
    };
    let _ = ws.close(Some(CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }));
    let _ = ws.flush();
    // Until the peer's close reply, or the deadline (reads fail past it).
    while ws.read().is_ok() {}
    let _ = raw.shutdown(Shutdown::Both);
}

fn handshake_failed<F: Framing>(
    inner: &Inner<F>,
    peer: &Peer,
    cause: &DisconnectCause,
    started: Instant,
) {
    inner.handshakes_failed.fetch_add(1, Ordering::Relaxed);
    let outcome = if *cause == DisconnectCause::HandshakeTimeout {
        Outcome::Timeout
    } else {
        Outcome::Failed
    };
    telemetry::record_handshake(&inner.core.name, outcome, started.elapsed());
    log::info!(component = &*inner.core.name, conn_id:% = peer.id, cause:% = cause, code:? = cause.code(); "{}", event::GATEWAY_HANDSHAKE_FAILED);
}

fn early_frame<F: Framing>(inner: &Inner<F>, conn_id: ConnId) {
    inner.early_frames.fetch_add(1, Ordering::Relaxed);
    log::debug!(component = &*inner.core.name, conn_id:% = conn_id; "frame before the handshake completed; dropped");
}

fn decode_error<F: Framing>(inner: &Inner<F>, conn_id: ConnId, e: CodecError) {
    inner
        .core
        .stats
        .decode_errors
        .fetch_add(1, Ordering::Relaxed);
    log::warn!(component = &*inner.core.name, conn_id:% = conn_id, error:% = e; "{}", event::DECODE_ERROR);
    inner.core.report(Error::Decode {
        ctx: Context::new(&inner.core.name, Some(conn_id.to_string())),
        datatype: std::any::type_name::<F>(),
        source: e,
    });
}

/// One message from a live link: decoded, tracked on its stream, delivered.
fn on_message<F: Framing>(inner: &Inner<F>, peer: &Peer, msg: Message) {
    let data = match msg {
        Message::Binary(b) => b,
        Message::Text(_) => {
            return decode_error(
                inner,
                peer.id,
                CodecError::msg("text message: gateway frames are binary"),
            )
        }
        _ => return,
    };
    let frame = match F::decode(&data) {
        Ok(f) => f,
        Err(e) => return decode_error(inner, peer.id, e),
    };
    if frame.is_hello() || frame.is_hello_ack() {
        log::debug!(component = &*inner.core.name, conn_id:% = peer.id; "handshake frame on a live link; dropped");
        return;
    }
    if let (Some(stream_id), Some(seq)) = (frame.stream_id(), frame.seq()) {
        track(inner, peer, stream_id, seq);
    }
    inner.core.inbound.next(TaggedFrame::new(peer.id, frame));
}

/// Opens the stream on its first frame and reports missing sequence numbers as a `Gap`.
fn track<F: Framing>(inner: &Inner<F>, peer: &Peer, stream_id: [u8; 16], seq: u32) {
    let t = &peer.streams;
    // One lock per frame on a known stream; a new (or closed) one is opened first.
    let missing = match t.validate_seq(stream_id, seq) {
        Ok(m) => m,
        Err(_) => match t
            .open(stream_id)
            .and_then(|_| t.activate(stream_id))
            .and_then(|_| t.validate_seq(stream_id, seq))
        {
            Ok(m) => m,
            Err(e) => {
                log::debug!(component = &*inner.core.name, conn_id:% = peer.id, error:% = e; "stream not tracked");
                return;
            }
        },
    };
    if let Some(first) = missing.first() {
        inner
            .core
            .stats
            .gaps
            .fetch_add(u64::from(missing.len()), Ordering::Relaxed);
        log::info!(component = &*inner.core.name, conn_id:% = peer.id, first, count = missing.len(), seq; "Sequence gap");
        inner.events.next(GatewayEvent::Gap {
            conn_id: peer.id,
            stream_id,
            first,
            count: missing.len(),
            seq,
        });
    }
}
