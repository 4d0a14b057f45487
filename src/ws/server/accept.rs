//! The server's side of the shared accept loop (`ws::listen`: admission against
//! `max_handshakes` and `max_connections`, refusals with 503) and each connection's reader
//! thread up to the end of the connection: the HTTP upgrade (refusals get a status: 426, 400),
//! registration, the read loop, unregistration.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use tungstenite::error::ProtocolError;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::Role;

use super::Inner;
use crate::telemetry::{self, event, Outcome};
use crate::ws::conn::{ConnInfo, ConnRun, Outbound};
use crate::ws::handshake::{self, reply_http_on, BAD_REQUEST, UPGRADE_REQUIRED};
use crate::ws::listen::{Acceptor, HandshakeSlot, Handshakes, Refusal};
use crate::ws::{ConnId, ConnectionEvent, ConnectionEventKind, TaggedData};

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
    let mut path = String::from("/");
    // The callback's signature is tungstenite's (its error type is a full HTTP response).
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
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
        Some(inner.cfg.tungstenite()),
    ) {
        Ok(ws) => ws,
        // Cut short by dispose (`Handshakes::abort_all`): nothing to report.
        Err(_) if inner.core.threads.is_stopping() => return,
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
    // Shared by every inbound item of this connection (a reference count, not an allocation).
    let tag: Arc<str> = Arc::from(path.as_str());
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
    log::info!(component = &*name, conn_id:% = info.id, path = path.as_str(), peer:% = peer; "{}", event::CONNECTION_OPENED);
    inner.events.next(ConnectionEvent {
        kind: ConnectionEventKind::Opened,
        id: info.id,
        path: path.clone(),
        peer,
    });
    let stats = counters.stats;
    let id = info.id;
    let inbound = handshake::Inbound {
        datatype,
        subject: inner.core.inbound.clone(),
        errors: inner.core.errors.clone(),
        stats: stats.clone(),
        component: name.clone(),
        conn_id: id,
        path: tag.clone(),
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
    log::info!(component = &*name, conn_id:% = id, path = path.as_str(), peer:% = peer, reason:? = end.reason; "{}", event::CONNECTION_CLOSED);
    inner.events.next(ConnectionEvent {
        kind: ConnectionEventKind::Closed,
        id,
        path,
        peer,
    });
    let _ = inner.conn_done_tx.try_send(());
}
