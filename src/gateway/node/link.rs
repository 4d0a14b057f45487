//! A link's thread: the accept side (`rxgw-conn-N`) or the dial side (`rxgw-dial-N`, which
//! redials). Each runs the WebSocket upgrade and the HELLO / HELLO_ACK exchange synchronously,
//! under one deadline, before the connection is published; then it becomes the connection's
//! reader (the connection core spawns the writer).

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tungstenite::handshake::server::{Request, Response};
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::{CloseFrame, Role, WebSocket};
use tungstenite::Message;

use super::peer::Peer;
use super::Inner;
use crate::error::{CodecError, Context, Error};
use crate::gateway::resume::{
    LinkFrame, LinkHello, ResumeRequest, Session, SessionId, Status, RESUME_FORMAT, RESUME_HEADER,
};
use crate::gateway::{
    close_code, ConnectionState, Direction, DisconnectCause, DuplicatePolicy, Framing,
    GatewayEvent, HelloPayload, ResumeFailure, TaggedFrame, PROTOCOL_VERSION,
};
use crate::overflow::OverflowStrategy;
use crate::reactive::SubsCache;
use crate::telemetry::{self, event, Outcome};
use crate::ws::conn::{ConnEnd, ConnHandle, ConnInfo, ConnRun, EndReason, HalfStream, Outbound};
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
    let mut peer = Arc::new(Peer::new(ConnId::new(), Direction::Inbound, None, seq));
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
    // What the dialer's resume header asked for, when this node offers resume.
    let asked: Arc<parking_lot::Mutex<Option<ResumeRequest>>> = Arc::default();
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
            let offer = inner.cfg.resume.enabled;
            let got = asked.clone();
            // tungstenite's callback type fixes the error type.
            #[allow(clippy::result_large_err)]
            let callback = move |req: &Request, mut resp: Response| {
                let wanted = req
                    .headers()
                    .get(RESUME_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(ResumeRequest::parse);
                if let (true, Some(r)) = (offer, wanted) {
                    *got.lock() = Some(r);
                    resp.headers_mut()
                        .insert(RESUME_HEADER, HeaderValue::from(u16::from(RESUME_FORMAT)));
                }
                Ok(resp)
            };
            tungstenite::accept_hdr_with_config(
                stream,
                callback,
                Some(inner.cfg.ws.handshake_config()),
            )
            .map_err(|e| match e {
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
            })
        }
    };
    let asked = asked.lock().take();
    let end = match upgraded {
        Ok(ws) => run_link(&inner, &mut peer, ws, raw, addr, started, Some(slot), asked),
        Err(cause) => {
            handshake_failed(&inner, &peer, &cause, started);
            LinkEnd::HandshakeFailed(cause)
        }
    };
    // A resumable link whose transport dropped waits (without a thread) for its dialer to
    // resume it, until `session_expiry` (the node's resume thread ends it then). Said before
    // the link is let go: a resume waits for that, so `Interrupted` comes before `Resumed`.
    let detach = match &end {
        LinkEnd::Ended(c) if resumable_end(&peer, c) && !inner.stopping() => {
            interrupted(&inner, &peer, c);
            true
        }
        _ => false,
    };
    peer.set_link_done();
    inner.notify_state();
    // Ended meanwhile (a disconnect, an expiry, a failed resume while `Interrupted` was being
    // delivered): nobody else will report it now that its thread let go.
    if !detach || peer.cause().is_some() {
        let (LinkEnd::HandshakeFailed(cause) | LinkEnd::Ended(cause)) = end;
        inner.finish(&peer, cause);
    }
}

/// A link's transport dropped and it waits (a redial, or the dialer's resume): marked, logged,
/// `Interrupted`.
fn interrupted<F: Framing>(inner: &Inner<F>, peer: &Peer, why: &DisconnectCause) {
    peer.interrupted();
    log::info!(component = &*inner.core.name, conn_id:% = peer.id, reason:% = why; "{}", event::GATEWAY_INTERRUPTED);
    inner.notify_state();
    inner
        .events
        .next(GatewayEvent::Interrupted { conn_id: peer.id });
}

/// True when the end of a resumable link's transport leaves it waiting for a resume: the
/// transport failed (no close frame either way, no local decision).
/// A 4006 (the other side refused a resume it had not confirmed yet: another transport was
/// still being let go) counts as one too: the next attempt resumes, or learns the session is
/// gone and says so.
fn resumable_end(peer: &Peer, cause: &DisconnectCause) -> bool {
    peer.session_id().is_some()
        && peer.cause().is_none()
        && matches!(
            cause,
            DisconnectCause::Closed {
                code: None | Some(close_code::SESSION),
                ..
            }
        )
}

pub(super) fn dial_loop<F: Framing>(
    weak: Weak<Inner<F>>,
    mut peer: Arc<Peer>,
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
        let expiry = inner.cfg.resume.session_expiry;
        if peer.try_expire(Instant::now(), expiry) {
            // Interrupted longer than the session lives: the link ends, the next handshake is
            // a fresh one.
            peer = fail_outbound(&inner, &peer, ResumeFailure::Expired, None);
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
        let ask = inner.cfg.resume.enabled.then(|| match peer.session_id() {
            Some(session) => ResumeRequest::Resume {
                session,
                recv: peer.recv.load(Ordering::Acquire),
            },
            None => ResumeRequest::New,
        });
        if let Some(a) = &ask {
            ws_cfg
                .request_headers
                .push((RESUME_HEADER.into(), a.header_value()));
        }
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
            Ok((ws, addr, raw, accepted)) => {
                let offered = accepted.headers.iter().any(|(n, v)| {
                    n.eq_ignore_ascii_case(RESUME_HEADER) && v.trim() == RESUME_FORMAT.to_string()
                });
                let asked = ask.filter(|_| offered);
                if ask.is_some() && asked.is_none() && peer.session_id().is_some() {
                    // The other node no longer offers resume: the session cannot go on.
                    peer = fail_outbound(&inner, &peer, ResumeFailure::UnknownSession, None);
                    peer.begin_transport(&raw, addr, ConnectionState::Pending);
                }
                match run_link(&inner, &mut peer, ws, raw, addr, started, None, asked) {
                    // A resume that timed out is tried again (the session waits on the other
                    // side); any other final refusal ends the link.
                    LinkEnd::HandshakeFailed(c)
                        if c.is_final()
                            && !(c == DisconnectCause::HandshakeTimeout
                                && peer.session_id().is_some()) =>
                    {
                        break c
                    }
                    LinkEnd::HandshakeFailed(c) => {
                        failures += 1;
                        match failed(failures, c.to_string()) {
                            Ok(d) => d,
                            Err(c) => break c,
                        }
                    }
                    LinkEnd::Ended(c) if c.is_final() || inner.stopping() => break c,
                    // The other side closed a resumable link on purpose: its session is over.
                    LinkEnd::Ended(c)
                        if peer.session_id().is_some() && !resumable_end(&peer, &c) =>
                    {
                        break c
                    }
                    LinkEnd::Ended(c) => {
                        failures = 0;
                        interrupted(&inner, &peer, &c);
                        retry.delay(0)
                    }
                }
            }
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
        // An interrupted session is not kept waiting past its expiry.
        let wait = peer
            .expiry_left(inner.cfg.resume.session_expiry)
            .map_or(wait, |left| wait.min(left));
        drop(inner);
        let _ = peer.wake_rx.recv_timeout(wait);
    };
    peer.set_link_done();
    if let Some(inner) = weak.upgrade() {
        inner.notify_state();
        inner.finish(&peer, cause);
    }
}

/// Reports a resumable link that cannot go on (`ResumeFailed`) and ends it (`Disconnected`).
/// `recv`: what the other side said it has, when it said so. The count of lost frames is taken
/// as the cause is set, under one lock, so no send slips in between.
pub(super) fn resume_failed<F: Framing>(
    inner: &Inner<F>,
    peer: &Arc<Peer>,
    why: ResumeFailure,
    recv: Option<u64>,
) {
    let lost = peer.fail_session(why, recv);
    inner
        .core
        .stats
        .resume_lost
        .fetch_add(lost, Ordering::Relaxed);
    log::warn!(component = &*inner.core.name, conn_id:% = peer.id, cause:% = why, lost; "{}", event::GATEWAY_RESUME_FAILED);
    inner.events.next(GatewayEvent::ResumeFailed {
        conn_id: peer.id,
        cause: why,
        lost,
    });
    inner.end_peer(peer, DisconnectCause::ResumeFailed(why));
}

/// Ends a dialer's link whose resume failed (`ResumeFailed`, `Disconnected`; the transport in
/// hand, if any, is kept) and returns the new connection (new id, no session) that goes on.
fn fail_outbound<F: Framing>(
    inner: &Inner<F>,
    old: &Arc<Peer>,
    why: ResumeFailure,
    recv: Option<u64>,
) -> Arc<Peer> {
    old.set_link_done();
    old.forget_transport();
    resume_failed(inner, old, why, recv);
    let seq = inner.next_seq.fetch_add(1, Ordering::Relaxed);
    let peer = Arc::new(Peer::new(
        ConnId::new(),
        Direction::Outbound,
        old.url.clone(),
        seq,
    ));
    let mut peers = inner.peers.write();
    if inner.stopping() {
        // `stop` took its list already: this one ends now instead of joining the table.
        drop(peers);
        peer.end_with(DisconnectCause::Stopped);
    } else {
        peers.insert(peer.id, peer.clone());
    }
    peer
}

/// What the HELLO exchange decided about a link's session.
enum Plan {
    /// Format 1: no resume.
    Plain,
    /// A new session; `failed`: the link whose resume failed instead (ended first), with why
    /// and what the other side said it has of it (when it said).
    Fresh {
        session: SessionId,
        failed: Option<(Arc<Peer>, ResumeFailure, Option<u64>)>,
    },
    /// `target` goes on over this transport; the other side has its frames up to `peer_recv`.
    Resumed { target: Arc<Peer>, peer_recv: u64 },
}

/// The HELLO exchange, the duplicate check, publication, then the connection's read loop. An
/// accepted link counts as a handshake in progress (`slot`) until its HELLO exchange is over.
/// `asked`: the link is resumable (format 2), with what the dialer asked for. `peer` becomes
/// the link this transport serves: a resumed one, or a dialer's fresh one after a failed
/// resume.
#[allow(clippy::too_many_arguments)]
fn run_link<F: Framing>(
    inner: &Arc<Inner<F>>,
    peer: &mut Arc<Peer>,
    mut ws: WebSocket<HalfStream>,
    raw: Arc<TcpStream>,
    addr: SocketAddr,
    started: Instant,
    slot: Option<HandshakeSlot>,
    asked: Option<ResumeRequest>,
) -> LinkEnd {
    let accepting = peer.direction == Direction::Inbound;
    let exchanged = match asked {
        Some(asked) => resume_exchange(inner, peer, &mut ws, accepting, asked),
        None => hello_exchange(inner, peer, &mut ws, accepting).map(|h| (h, Plan::Plain)),
    };
    let (hello, plan) = match exchanged {
        Ok(h) => h,
        Err(cause) => {
            // A dialer that claimed its link for a resume lets go of it.
            peer.end_attach();
            match cause.code() {
                Some(
                    code @ (close_code::HANDSHAKE_TIMEOUT
                    | close_code::VERSION
                    | close_code::SELF_CONNECTION
                    | close_code::SESSION),
                ) if !matches!(cause, DisconnectCause::Refused { .. }) => {
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
    let mut session = None;
    let mut resumed = None;
    match plan {
        Plan::Plain => {}
        Plan::Fresh {
            session: id,
            failed,
        } => {
            if let Some((old, why, recv)) = failed {
                if Arc::ptr_eq(&old, peer) {
                    *peer = fail_outbound(inner, &old, why, recv);
                    peer.begin_transport(&raw, addr, ConnectionState::Handshaking);
                } else {
                    resume_failed(inner, &old, why, recv);
                }
            }
            session = Some(Session::new(
                id,
                inner.cfg.overflow_strategy,
                inner.cfg.resume.buffer_frames,
                inner.cfg.resume.buffer_bytes,
            ));
        }
        Plan::Resumed { target, peer_recv } => {
            if !Arc::ptr_eq(&target, peer) {
                // The old transport's thread lets go of the link first (it was cut by
                // `begin_attach`), so one reader at a time delivers its frames, in order.
                if !wait_detached(inner, &target, started + inner.cfg.handshake_timeout) {
                    target.end_attach();
                    let cause = DisconnectCause::HandshakeTimeout;
                    close_raw(
                        &mut ws,
                        &raw,
                        close_code::SESSION,
                        &cause,
                        inner.cfg.ws.close_timeout,
                    );
                    handshake_failed(inner, peer, &cause, started);
                    return LinkEnd::HandshakeFailed(cause);
                }
                inner.discard(peer);
                target.set_link_running();
                target.begin_transport(&raw, addr, ConnectionState::Handshaking);
                *peer = target;
            }
            resumed = Some(peer_recv);
        }
    }
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
    let resumable = session.is_some() || resumed.is_some();
    let outbound = if resumable {
        // The resend buffer bounds what is in flight; this queue only must never drop a
        // numbered frame (a refusal cuts the transport and the resume replays it).
        Outbound::PerConnection {
            strategy: OverflowStrategy::DropNew,
            capacity: inner.cfg.resume.buffer_frames + RESUME_QUEUE_SLACK,
            max_bytes: inner.cfg.resume.buffer_bytes + (RESUME_QUEUE_SLACK << 10),
        }
    } else {
        Outbound::PerConnection {
            strategy: inner.cfg.overflow_strategy,
            capacity: inner.cfg.overflow_size,
            max_bytes: inner.cfg.ws.outbound_max_bytes,
        }
    };
    let (run, handle) = match ConnRun::new(
        ws,
        info,
        inner.core.name.clone(),
        outbound,
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
            if resumed.is_some() {
                peer.end_attach();
                peer.transport_ended();
            }
            handshake_failed(inner, peer, &cause, started);
            return LinkEnd::HandshakeFailed(cause);
        }
    };
    handle.set_overflow_close(close_code::OVERFLOW);
    let took = started.elapsed();
    if let Some(peer_recv) = resumed {
        let replayed = match peer.publish_resumed(handle.clone(), hello, peer_recv) {
            Ok(n) => n,
            Err(cause) => {
                handle.close_now(cause.code().unwrap_or(1000), "ending");
                return LinkEnd::Ended(cause);
            }
        };
        telemetry::record_handshake(&inner.core.name, Outcome::Ok, took);
        inner.core.stats.resumes.fetch_add(1, Ordering::Relaxed);
        inner
            .core
            .stats
            .replayed
            .fetch_add(replayed, Ordering::Relaxed);
        log::info!(component = &*inner.core.name, conn_id:% = peer.id, remote_node_id:% = hello.node_id, replayed, duration_ms = took.as_secs_f64() * 1e3; "{}", event::GATEWAY_RESUMED);
        inner.notify_state();
        inner.events.next(GatewayEvent::Resumed {
            conn_id: peer.id,
            replayed,
        });
    } else {
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
            if let Err(cause) = peer.publish(handle.clone(), hello, session) {
                drop(_publishing);
                handle.close_now(cause.code().unwrap_or(1000), "ending");
                return LinkEnd::HandshakeFailed(cause);
            }
            losers
        };
        for l in losers {
            l.end_with(DisconnectCause::Duplicate);
        }
        telemetry::record_handshake(&inner.core.name, Outcome::Ok, took);
        inner
            .core
            .stats
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        log::info!(component = &*inner.core.name, conn_id:% = peer.id, remote_node_id:% = hello.node_id, direction:% = peer.direction, resumable, duration_ms = took.as_secs_f64() * 1e3; "{}", event::HANDSHAKE_COMPLETED);
        inner.notify_state();
        inner.events.next(GatewayEvent::Connected {
            conn_id: peer.id,
            remote_node_id: hello.node_id,
            direction: peer.direction,
        });
    }
    let p: &Peer = peer;
    // This reader's copy of the node's subscriber set.
    let mut subs = SubsCache::default();
    let end = if resumable {
        let every = u64::from(inner.cfg.resume.ack_every);
        run.run(|msg| on_link_message(inner, p, &mut subs, &handle, every, msg))
    } else {
        run.run(|msg| on_message(inner, p, &mut subs, msg))
    };
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

/// Room in a resumable link's write queue beyond the resend buffer's bounds, for the
/// acknowledgements it also carries (frames; the bytes allowance is this many KiB).
const RESUME_QUEUE_SLACK: usize = 256;

/// Waits until the link's previous transport has let go of it (its thread ended), up to
/// `deadline`.
fn wait_detached<F: Framing>(inner: &Inner<F>, target: &Peer, deadline: Instant) -> bool {
    let mut guard = inner.state_lock.lock();
    while target.link_running() {
        if inner
            .state_changed
            .wait_until(&mut guard, deadline)
            .timed_out()
        {
            return !target.link_running();
        }
    }
    true
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
    // Every read and write below is bounded by the deadline the stream carries.
    if accepting {
        peer.set_state(ConnectionState::Handshaking);
        let hello = F::create_hello(inner.node_id, cfg.protocol_version);
        ws.send(Message::Binary(hello.encode().into()))
            .map_err(lost)?;
    }
    let hello = read_handshake(inner, peer, ws, |b| match F::decode(b)? {
        f if (accepting && f.is_hello_ack()) || (!accepting && f.is_hello()) => {
            let node_id = f
                .get_hello_node_id()
                .ok_or_else(|| CodecError::msg("handshake frame without a node id"))?;
            Ok(Some(HelloPayload {
                node_id,
                version: f.get_hello_version().unwrap_or(PROTOCOL_VERSION),
            }))
        }
        _ => Ok(None),
    })?;
    check_hello(inner, peer, hello)?;
    if !accepting {
        let ack = F::create_hello_ack(inner.node_id, cfg.protocol_version);
        ws.send(Message::Binary(ack.encode().into()))
            .map_err(lost)?;
    }
    Ok(hello)
}

fn lost(e: tungstenite::Error) -> DisconnectCause {
    match e {
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
    }
}

fn closed_in_handshake(frame: Option<CloseFrame>) -> DisconnectCause {
    match frame {
        Some(f) => from_close(u16::from(f.code), &f.reason),
        None => DisconnectCause::Closed {
            code: None,
            reason: "closed during the handshake".into(),
        },
    }
}

/// The checks every HELLO / HELLO_ACK passes: the version, and not this very node.
fn check_hello<F: Framing>(
    inner: &Inner<F>,
    peer: &Peer,
    hello: HelloPayload,
) -> Result<(), DisconnectCause> {
    peer.set_remote(hello);
    if hello.version < inner.cfg.min_version {
        return Err(DisconnectCause::Version {
            version: hello.version,
            min: inner.cfg.min_version,
        });
    }
    if hello.node_id == inner.node_id {
        return Err(DisconnectCause::SelfConnection);
    }
    Ok(())
}

/// A refusal of a resume or of a session id, closed with 4006.
fn session_refused(reason: &str) -> DisconnectCause {
    DisconnectCause::Closed {
        code: Some(close_code::SESSION),
        reason: reason.into(),
    }
}

/// Reads messages under the stream's deadline until `pick` accepts one (`Ok(Some)`): other
/// frames are dropped and counted as early (`Ok(None)`), undecodable ones as decode errors; a
/// close ends the handshake.
fn read_handshake<F: Framing, T>(
    inner: &Inner<F>,
    peer: &Peer,
    ws: &mut WebSocket<HalfStream>,
    pick: impl Fn(&[u8]) -> Result<Option<T>, CodecError>,
) -> Result<T, DisconnectCause> {
    loop {
        match ws.get_mut().read_message().map_err(|e| lost(*e))? {
            Message::Binary(b) => match pick(&b) {
                Ok(Some(t)) => return Ok(t),
                Ok(None) => early_frame(inner, peer.id),
                Err(e) => decode_error(inner, peer.id, e),
            },
            Message::Text(_) => early_frame(inner, peer.id),
            // Answered as tungstenite's reader did (the reply leaves with the next flush).
            Message::Close(frame) => {
                let _ = ws.close(frame.clone());
                return Err(closed_in_handshake(frame));
            }
            Message::Ping(data) => ws.send(Message::Pong(data)).map_err(lost)?,
            _ => {}
        }
    }
}

/// The other side's format 2 HELLO (dialing) or HELLO_ACK (accepting).
fn read_link_hello<F: Framing>(
    inner: &Inner<F>,
    peer: &Peer,
    ws: &mut WebSocket<HalfStream>,
    accepting: bool,
) -> Result<LinkHello, DisconnectCause> {
    read_handshake(inner, peer, ws, |b| {
        Ok(match LinkFrame::decode(b)? {
            LinkFrame::HelloAck(h) if accepting => Some(h),
            LinkFrame::Hello(h) if !accepting => Some(h),
            _ => None,
        })
    })
}

/// The inbound link with `session` in this node's table (only a link this node accepted can
/// be resumed by a dial; an outbound one resumes by its own redial).
fn find_session<F: Framing>(inner: &Inner<F>, session: SessionId) -> Option<Arc<Peer>> {
    inner
        .peers
        .read()
        .values()
        .find(|p| p.direction == Direction::Inbound && p.session_id() == Some(session))
        .cloned()
}

/// The HELLO exchange of a resumable link (format 2): the accepting side's HELLO answers the
/// dialer's request (resumed, fresh, or why not), the dialer's HELLO_ACK confirms or declines.
/// Both carry the highest sequence number received in order, so each side knows what to
/// replay.
fn resume_exchange<F: Framing>(
    inner: &Inner<F>,
    peer: &Arc<Peer>,
    ws: &mut WebSocket<HalfStream>,
    accepting: bool,
    asked: ResumeRequest,
) -> Result<(HelloPayload, Plan), DisconnectCause> {
    let cfg = &inner.cfg;
    let me = |session, recv, status| LinkHello {
        node_id: inner.node_id,
        version: cfg.protocol_version,
        session,
        recv,
        status,
    };
    let payload = |h: &LinkHello| HelloPayload {
        node_id: h.node_id,
        version: h.version,
    };
    if accepting {
        peer.set_state(ConnectionState::Handshaking);
        // The session asked for, and whether every frame the dialer lacks is still here.
        let (found, dialer_recv) = match asked {
            ResumeRequest::New => (None, 0),
            ResumeRequest::Resume { session, recv } => (find_session(inner, session), recv),
        };
        let ours = match &found {
            None if asked == ResumeRequest::New => me(SessionId::random(), 0, Status::Fresh),
            None => me(SessionId::random(), 0, Status::Unknown),
            Some(p) => {
                let recv = p.recv.load(Ordering::Acquire);
                match p.session_id() {
                    Some(s) if p.can_replay_from(dialer_recv) => me(s, recv, Status::Resumed),
                    _ => me(SessionId::random(), recv, Status::Overflow),
                }
            }
        };
        ws.send(Message::Binary(LinkFrame::Hello(ours).encode()))
            .map_err(lost)?;
        let ack = read_link_hello(inner, peer, ws, true)?;
        let hello = payload(&ack);
        check_hello(inner, peer, hello)?;
        let Some(old) = found else {
            // A fresh session, named by us.
            if ack.status == Status::Resumed || ack.session != ours.session {
                return Err(session_refused("not the session offered"));
            }
            return Ok((
                hello,
                Plan::Fresh {
                    session: ours.session,
                    failed: None,
                },
            ));
        };
        if old.remote() != Some(ack.node_id) {
            return Err(session_refused("session of another node"));
        }
        match (ours.status, ack.status) {
            (Status::Resumed, Status::Resumed) if ack.session == ours.session => {
                if ack.recv != dialer_recv {
                    return Err(session_refused("received count differs from the request"));
                }
                if !old.begin_attach() {
                    return Err(session_refused("session ended or being resumed"));
                }
                Ok((
                    hello,
                    Plan::Resumed {
                        target: old,
                        peer_recv: ack.recv,
                    },
                ))
            }
            // We could not replay (Overflow), or the dialer could not (its own fresh id).
            (_, Status::Fresh | Status::Overflow) => {
                let fresh_ok = (ours.status != Status::Resumed || ack.session != ours.session)
                    && find_session(inner, ack.session).is_none();
                if !fresh_ok {
                    return Err(session_refused("fresh session id taken"));
                }
                Ok((
                    hello,
                    Plan::Fresh {
                        session: ack.session,
                        failed: Some((old, ResumeFailure::Overflow, Some(dialer_recv))),
                    },
                ))
            }
            _ => Err(session_refused("unexpected resume status")),
        }
    } else {
        let h = read_link_hello(inner, peer, ws, false)?;
        let hello = payload(&h);
        check_hello(inner, peer, hello)?;
        let my_recv = peer.recv.load(Ordering::Acquire);
        let (ack, plan) = match (asked, h.status) {
            (ResumeRequest::New, Status::Fresh) => (
                me(h.session, 0, Status::Fresh),
                Plan::Fresh {
                    session: h.session,
                    failed: None,
                },
            ),
            (ResumeRequest::Resume { session, .. }, Status::Resumed) if h.session == session => {
                // Claimed first (no `drop-old` eviction until the replay), then checked.
                if peer.begin_attach() && peer.can_replay_from(h.recv) {
                    (
                        me(session, my_recv, Status::Resumed),
                        Plan::Resumed {
                            target: peer.clone(),
                            peer_recv: h.recv,
                        },
                    )
                } else {
                    peer.end_attach();
                    let fresh = SessionId::random();
                    (
                        me(fresh, 0, Status::Overflow),
                        Plan::Fresh {
                            session: fresh,
                            failed: Some((peer.clone(), ResumeFailure::Overflow, Some(h.recv))),
                        },
                    )
                }
            }
            (ResumeRequest::Resume { .. }, Status::Unknown | Status::Overflow) => {
                let known = (h.status == Status::Overflow).then_some(h.recv);
                let why = h.status.failure().unwrap_or(ResumeFailure::UnknownSession);
                (
                    me(h.session, 0, Status::Fresh),
                    Plan::Fresh {
                        session: h.session,
                        failed: Some((peer.clone(), why, known)),
                    },
                )
            }
            _ => {
                return Err(DisconnectCause::Closed {
                    code: None,
                    reason: format!("unexpected resume status {:?}", h.status),
                })
            }
        };
        ws.send(Message::Binary(LinkFrame::HelloAck(ack).encode()))
            .map_err(lost)?;
        Ok((hello, plan))
    }
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
        DisconnectCause::Closed { reason, .. } => reason.as_str(),
        _ => "refused",
    };
    let _ = ws.close(Some(CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }));
    let _ = ws.flush();
    // Until the peer's close reply, or the deadline (reads fail past it).
    while ws.get_mut().read_message().is_ok() {}
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
fn on_message<F: Framing>(
    inner: &Inner<F>,
    peer: &Peer,
    subs: &mut SubsCache<TaggedFrame<F>>,
    msg: Message,
) {
    let data = match msg {
        Message::Binary(b) => b,
        Message::Text(_) => return text_message(inner, peer),
        _ => return,
    };
    deliver(inner, peer, subs, &data);
}

fn text_message<F: Framing>(inner: &Inner<F>, peer: &Peer) {
    decode_error(
        inner,
        peer.id,
        CodecError::msg("text message: gateway frames are binary"),
    )
}

/// One application frame: decoded, tracked on its stream, delivered.
fn deliver<F: Framing>(
    inner: &Inner<F>,
    peer: &Peer,
    subs: &mut SubsCache<TaggedFrame<F>>,
    data: &[u8],
) {
    let frame = match F::decode(data) {
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
    inner
        .core
        .inbound
        .next_cached(TaggedFrame::new(peer.id, frame), subs);
}

/// One message from a live resumable link: a numbered frame is delivered once, in order (a
/// replayed one already delivered is dropped); an acknowledgement frees the resend buffer. A
/// frame out of order or an acknowledgement of frames never sent cuts the transport: the
/// resume that follows sets both sides straight.
fn on_link_message<F: Framing>(
    inner: &Inner<F>,
    peer: &Peer,
    subs: &mut SubsCache<TaggedFrame<F>>,
    h: &ConnHandle,
    ack_every: u64,
    msg: Message,
) {
    let data = match msg {
        Message::Binary(b) => b,
        Message::Text(_) => return text_message(inner, peer),
        _ => return,
    };
    match LinkFrame::decode(&data) {
        Ok(LinkFrame::Data { seq, frame }) => {
            let recv = peer.recv.load(Ordering::Acquire);
            if seq <= recv {
                inner.core.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if seq != recv + 1 {
                log::warn!(component = &*inner.core.name, conn_id:% = peer.id, expected = recv + 1, seq; "resumable link: frame out of order; transport cut");
                h.cut_for("resumable link: frame out of order");
                return;
            }
            peer.recv.store(seq, Ordering::Release);
            deliver(inner, peer, subs, frame);
            if peer.ack_owed() >= ack_every {
                peer.ack_now(h);
            }
        }
        Ok(LinkFrame::Ack(upto)) => {
            if !peer.on_ack(upto) {
                log::warn!(component = &*inner.core.name, conn_id:% = peer.id, upto; "resumable link: acknowledgement of frames never sent; transport cut");
                h.cut_for("resumable link: bad acknowledgement");
            }
        }
        Ok(_) => {
            log::debug!(component = &*inner.core.name, conn_id:% = peer.id; "handshake frame on a live link; dropped");
        }
        Err(e) => decode_error(inner, peer.id, e),
    }
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
