//! What the server and the client do alike around a WebSocket opening handshake: bound the
//! handshake by socket timeouts and clear them after it (reads then block with no timeout: full
//! duplex), build a connection's parameters from the config, and decode each received message
//! into an item for the component's subject.

use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tungstenite::protocol::Role;
use tungstenite::Message;

use crate::error::{Context, Error};
use crate::reactive::Subject;
use crate::stats::Stats;
use crate::telemetry::event;
use crate::ws::conn::ConnParams;
use crate::ws::datatype::Datatype;
use crate::ws::{ConnId, WSConfig};

/// Bounds every read and write of the handshake by `timeout`.
pub(crate) fn start(sock: &TcpStream, timeout: Duration) {
    let _ = sock.set_nodelay(true);
    let _ = sock.set_read_timeout(Some(timeout));
    let _ = sock.set_write_timeout(Some(timeout));
}

/// The handshake is done: from here on, reads block without a timeout (full duplex).
pub(crate) fn finish(sock: &TcpStream) {
    let _ = sock.set_read_timeout(None);
    let _ = sock.set_write_timeout(None);
}

/// A connection's parameters from its component's config.
pub(crate) fn params(cfg: &WSConfig, role: Role, keep_unsent: bool) -> ConnParams {
    ConnParams {
        role,
        ping_interval: cfg.ping_interval,
        ping_timeout: cfg.ping_timeout,
        close_timeout: cfg.close_timeout,
        keep_unsent,
        ws: cfg.tungstenite(),
    }
}

/// Where one connection's received messages go.
pub(crate) struct Inbound<T, I> {
    pub(crate) datatype: Arc<dyn Datatype<T>>,
    pub(crate) subject: Arc<Subject<I>>,
    pub(crate) errors: Arc<Subject<Error>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) component: Arc<str>,
    pub(crate) conn_id: ConnId,
    pub(crate) path: Arc<str>,
}

impl<T: 'static, I: Clone + Send + 'static> Inbound<T, I> {
    /// Decodes one message and emits it (wrapped by `wrap`). A message that fails to decode is
    /// counted, logged and reported on the errors stream; the connection goes on.
    pub(crate) fn deliver(&self, msg: Message, wrap: impl FnOnce(T) -> I) {
        log::debug!(component = &*self.component, conn_id:% = self.conn_id, path = &*self.path, bytes = msg.len(); "{}", event::MESSAGE_RECEIVED);
        match self.datatype.decode(msg) {
            Ok(item) => self.subject.next(wrap(item)),
            Err(source) => {
                self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                log::warn!(component = &*self.component, conn_id:% = self.conn_id, path = &*self.path, datatype = self.datatype.name(), error:% = source; "{}", event::DECODE_ERROR);
                self.errors.next(Error::Decode {
                    ctx: Context::new(&self.component, Some(self.conn_id.to_string())),
                    datatype: self.datatype.name(),
                    source,
                });
            }
        }
    }
}
