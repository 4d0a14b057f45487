//! The server's side of the shared accept loop (`ws::listen`: admission against
//! `max_handshakes` and `max_connections`, refusals with 503) and each connection's reader
//! thread up to the end of the connection: the HTTP upgrade (refusals get a status: 426, 400),
//! registration, the read loop, unregistration.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use std::panic::AssertUnwindSafe;
use tungstenite::error::ProtocolError;

use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::handshake::HandshakeError;
use tungstenite::http::{header, HeaderName, HeaderValue, StatusCode};
use tungstenite::protocol::Role;

use super::Inner;
use crate::telemetry::{self, event, Outcome};
use crate::ws::conn::{ConnInfo, ConnRun, Outbound};
use crate::ws::handshake::{self, reply_http_on, BAD_REQUEST, UPGRADE_REQUIRED};
use crate::ws::listen::{Acceptor, HandshakeSlot, Handshakes, Refusal};
use crate::ws::{
    ConnId, ConnectionEvent, ConnectionEventKind, HandshakeRequest, Tag, TaggedData, Verdict,
};

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

impl<T: Clone + Send + 'static> Acceptor for Inner<T> {
    fn name(&self) -> &str {
        &self.core.name
    }

    fn stopping(&self) -> bool {
        self.core.threads.is_stopping() || self.completing.load(Ordering::Acquire)
    }

    fn handshakes(&self) -> &Handshakes {
        &self.handshakes
    }

    fn over_limit(&self, in_progress: usize) -> Option<Refusal> {
        let cfg = &self.cfg;
        if in_progress >= cfg.max_handshakes {
            return Some(("max_handshakes", cfg.max_handshakes));
        }
        let open = self.registry.read().by_id.len();
        (open + in_progress >= cfg.max_connections)
            .then_some(("max_connections", cfg.max_connections))
    }

    fn serve(
        self: &Arc<Self>,
        sock: Arc<TcpStream>,
        peer: SocketAddr,
        accepted_at: Instant,
        slot: HandshakeSlot,
    ) -> crate::Result<()> {
        let seq = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        let w = Arc::downgrade(self);
        self.core
            .threads
            .spawn(format!("rxws-conn-{seq}-read"), move || {
                serve_conn(w, sock, peer, seq, accepted_at, slot)
            })
    }
}

/// One connection's thread: the upgrade under the handshake deadline, registration (then
/// `slot` is given up), the read loop, unregistration.
fn serve_conn<T: Clone + Send + 'static>(
    weak: Weak<Inner<T>>,
    raw: Arc<TcpStream>,
    peer: SocketAddr,
    seq: u64,
    started: Instant,
    slot: HandshakeSlot,
) {
    let Some(inner) = weak.upgrade() else { return };
    let name = inner.core.name.clone();
    handshake::start(&raw, inner.cfg.handshake_timeout);
    // A total deadline from accept: a peer trickling bytes cannot stretch the handshake.
    let deadline = started + inner.cfg.handshake_timeout;
    let mut opening = Opening::default();
    // The callback's signature is tungstenite's (its error type is a full HTTP response).
    #[allow(clippy::result_large_err)]
    let callback =
        |req: &Request, resp: Response| decide(&inner, &name, peer, req, resp, &mut opening);
    let stream = match handshake::server_stream(&raw, deadline, &inner.cfg) {
        Ok(s) => s,
        Err(e) => {
            if inner.core.threads.is_stopping() {
                return;
            }
            let elapsed = started.elapsed();
            let outcome = if e.kind() == std::io::ErrorKind::TimedOut {
                Outcome::Timeout
            } else {
                Outcome::Failed
            };
            log::info!(component = &*name, peer:% = peer, error:% = e, tls = true, duration_ms = elapsed.as_secs_f64() * 1e3; "{}", event::HANDSHAKE_FAILED);
            telemetry::record_handshake(&name, outcome, elapsed);
            let _ = raw.shutdown(Shutdown::Both);
            return;
        }
    };
    let tls = stream.tls().cloned();
    let mut ws = match tungstenite::accept_hdr_with_config(
        stream,
        callback,
        Some(inner.cfg.handshake_config()),
    ) {
        Ok(ws) => ws,
        // Cut short by dispose (`Handshakes::abort_all`): nothing to report.
        Err(_) if inner.core.threads.is_stopping() => return,
        // Refused by the allow-list or the accept hook: the response went out (`decide`).
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let elapsed = started.elapsed();
            log::info!(component = &*name, peer:% = peer, path = opening.path.as_str(), status = resp.status().as_u16(), duration_ms = elapsed.as_secs_f64() * 1e3; "{}", event::HANDSHAKE_REFUSED);
            telemetry::record_handshake(&name, Outcome::Failed, elapsed);
            handshake::end_refused(&raw, tls.as_deref());
            return;
        }
        Err(HandshakeError::Failure(e)) => {
            let not_upgrade = matches!(
                e,
                tungstenite::Error::Protocol(
                    ProtocolError::MissingConnectionUpgradeHeader
                        | ProtocolError::MissingUpgradeWebSocketHeader
                        | ProtocolError::WrongHttpMethod
                )
            );
            let elapsed = started.elapsed();
            let duration_ms = elapsed.as_secs_f64() * 1e3;
            if matches!(e, tungstenite::Error::Io(_)) {
                log::debug!(component = &*name, peer:% = peer, error:% = e, duration_ms; "{}", event::HANDSHAKE_FAILED);
            } else if not_upgrade {
                log::info!(component = &*name, peer:% = peer, error = "not a WebSocket upgrade", status = 426, duration_ms; "{}", event::HANDSHAKE_FAILED);
                reply_http_on(&raw, tls.as_deref(), UPGRADE_REQUIRED);
            } else {
                log::info!(component = &*name, peer:% = peer, error:% = e, status = 400, duration_ms; "{}", event::HANDSHAKE_FAILED);
                reply_http_on(&raw, tls.as_deref(), BAD_REQUEST);
            }
            telemetry::record_handshake(&name, Outcome::Failed, elapsed);
            return;
        }
        Err(HandshakeError::Interrupted(_)) => {
            let elapsed = started.elapsed();
            log::info!(component = &*name, peer:% = peer, duration_ms = elapsed.as_secs_f64() * 1e3; "{}", event::HANDSHAKE_TIMED_OUT);
            telemetry::record_handshake(&name, Outcome::Timeout, elapsed);
            let _ = raw.shutdown(Shutdown::Both);
            return;
        }
    };
    let took = started.elapsed();
    let Opening {
        path,
        query,
        protocol,
        headers,
    } = opening;
    ws.get_mut().set_deadline(None);
    handshake::finish(&raw);
    if inner.core.threads.is_stopping() {
        return;
    }
    let info = ConnInfo {
        id: ConnId::new(),
        seq,
        peer,
    };
    let counters = inner.counters(&path);
    counters.record_handshake(Outcome::Ok, took);
    log::info!(component = &*name, conn_id:% = info.id, path = path.as_str(), peer:% = peer, duration_ms = took.as_secs_f64() * 1e3; "{}", event::HANDSHAKE_COMPLETED);
    let params = handshake::params(&inner.cfg, Role::Server, false);
    let (run, handle) = match ConnRun::new(
        ws,
        info.clone(),
        name.clone(),
        Outbound::PerConnection {
            strategy: inner.cfg.overflow_for(true),
            capacity: inner.cfg.outbound_capacity,
            max_bytes: inner.cfg.outbound_max_bytes,
        },
        params,
        counters.stats.clone(),
        &inner.core.threads,
        Some(inner.budget.clone()),
    ) {
        Ok(x) => x,
        Err(e) => {
            log::warn!(component = &*name, peer:% = peer, error:% = e; "{}", event::CONNECTION_SETUP_FAILED);
            return;
        }
    };
    // A reader cut for falling behind is told why when its socket still takes a frame.
    handle.set_overflow_close(1008);
    // Copied into every inbound item of this connection (inline up to 23 bytes: no
    // reference count per message).
    let tag = Tag::from(path.as_str());
    // Counted as a handshake until registered, so the accept loop never sees it in neither.
    let registered = inner.register(&path, handle.clone());
    drop(slot);
    let Some(datatype) = registered else {
        // A second guard behind the accept loop's check; not expected to be reached.
        log::warn!(component = &*name, conn_id:% = info.id, peer:% = peer, reason = "max_connections", limit = inner.cfg.max_connections; "{}", event::CONNECTION_REFUSED);
        handle.abort();
        return;
    };
    counters
        .stats
        .connections_opened
        .fetch_add(1, Ordering::Relaxed);
    log::info!(component = &*name, conn_id:% = info.id, path = path.as_str(), peer:% = peer, protocol:? = protocol; "{}", event::CONNECTION_OPENED);
    inner.events.next(ConnectionEvent {
        kind: ConnectionEventKind::Opened,
        id: info.id,
        path: path.clone(),
        peer,
        query,
        protocol,
        headers,
        close: None,
    });
    let stats = counters.stats;
    let id = info.id;
    let mut inbound = handshake::Inbound {
        datatype,
        subject: inner.core.inbound.clone(),
        errors: inner.core.errors.clone(),
        stats: stats.clone(),
        component: name.clone(),
        conn_id: id,
        path: tag.clone(),
        subscribers: Default::default(),
    };
    // Hold only a weak reference while running, so dropping the server is never blocked by us.
    drop(inner);
    let end = run.run(|msg| {
        inbound.deliver(msg, |data| TaggedData {
            tag: tag.clone(),
            data,
            conn: Some(id),
        })
    });
    handle.abort();
    let Some(inner) = weak.upgrade() else { return };
    inner.unregister(id);
    stats.connections_closed.fetch_add(1, Ordering::Relaxed);
    let close = end.close_info();
    log::info!(component = &*name, conn_id:% = id, path = path.as_str(), peer:% = peer, reason:? = end.reason, close_code:? = close.code(), close_reason = close.reason(), peer_close_code:? = end.peer_close.as_ref().map(|c| c.0), sent_close_code:? = end.sent_close.as_ref().map(|c| c.0); "{}", event::CONNECTION_CLOSED);
    inner.events.next(ConnectionEvent {
        kind: ConnectionEventKind::Closed,
        id,
        path,
        peer,
        query: None,
        protocol: None,
        headers: Vec::new(),
        close: Some(close),
    });
    let _ = inner.conn_done_tx.try_send(());
}

/// What the opening handshake said, kept for the `Opened` event.
#[derive(Default)]
struct Opening {
    path: String,
    query: Option<String>,
    protocol: Option<String>,
    headers: Vec<(String, String)>,
}

/// tungstenite's response for a refused handshake: `status` with a short text body.
fn refusal(status: u16, body: &str) -> ErrorResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = ErrorResponse::new(Some(format!("{body}\n")));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Ok(len) = HeaderValue::from_str(&(body.len() + 1).to_string()) {
        h.insert(header::CONTENT_LENGTH, len);
    }
    resp
}

/// Decides an opening handshake (on the connection's thread, no lock held): the allowed
/// paths, then the accept hook (a panic in it refuses with 500), then its subprotocol and
/// headers. Records what the `Opened` event carries.
#[allow(clippy::result_large_err)]
fn decide<T: Clone + Send + 'static>(
    inner: &Inner<T>,
    name: &str,
    peer: SocketAddr,
    req: &Request,
    mut resp: Response,
    opening: &mut Opening,
) -> Result<Response, ErrorResponse> {
    opening.path = req.uri().path().to_owned();
    opening.query = req.uri().query().map(str::to_owned);
    if let Some(allowed) = &inner.cfg.allowed_paths {
        if !allowed.contains(&opening.path) {
            return Err(refusal(404, "no such path"));
        }
    }
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let verdict = match &inner.cfg.accept_hook {
        None => Verdict::accept(),
        Some(hook) => {
            let request = HandshakeRequest {
                peer,
                path: opening.path.clone(),
                query: opening.query.clone(),
                headers: req.headers().clone(),
                protocols: offered.clone(),
            };
            match std::panic::catch_unwind(AssertUnwindSafe(|| hook.call(&request))) {
                Ok(v) => v,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    log::error!(component = name, peer:% = peer, path = opening.path.as_str(), panic = what.as_str(); "{}", event::ACCEPT_HOOK_FAILED);
                    return Err(refusal(500, "internal error"));
                }
            }
        }
    };
    let hook_error = |why: String| {
        log::error!(component = name, peer:% = peer, path = opening.path.as_str(), error = why.as_str(); "{}", event::ACCEPT_HOOK_FAILED);
        refusal(500, "internal error")
    };
    match verdict {
        Verdict::Refuse { status, body } => {
            if !(400..=599).contains(&status) {
                return Err(hook_error(format!(
                    "refused with status {status}, not 400-599"
                )));
            }
            Err(refusal(status, &body))
        }
        Verdict::Accept {
            protocol,
            headers,
            keep_headers,
        } => {
            if let Some(p) = &protocol {
                if !offered.contains(p) {
                    return Err(hook_error(format!(
                        "chose subprotocol {p:?}, which the client did not offer"
                    )));
                }
                let v = HeaderValue::from_str(p)
                    .map_err(|_| hook_error(format!("subprotocol {p:?} is not a header value")))?;
                resp.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, v);
            }
            for (n, v) in &headers {
                let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(n.as_bytes()),
                    HeaderValue::from_str(v),
                ) else {
                    return Err(hook_error(format!("response header {n:?} is not valid")));
                };
                resp.headers_mut().append(n, v);
            }
            let keep = |n: &HeaderName| {
                keep_headers
                    .as_ref()
                    .is_none_or(|k| k.iter().any(|x| x.eq_ignore_ascii_case(n.as_str())))
            };
            opening.headers = req
                .headers()
                .iter()
                .filter(|(n, _)| keep(n))
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            opening.protocol = protocol;
            Ok(resp)
        }
    }
}
