//! The WebSocket layer: [`RxWSServer`], [`RxWSClient`], [`RxWSClientGroup`].
//!
//! Each component is a subject: an observer of outbound items (its sink: `on_next`,
//! `on_completed`, `on_error`, or the crossbeam [`Sender`](crossbeam_channel::Sender) from
//! `sink()`) and an observable of inbound items (`subscribe`, or the crossbeam receiver from
//! `stream()`). Components own their threads; `dispose()` (and `Drop`) joins every one of them.
//! See `docs/websocket.md` for the threading model and every default.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

mod client;
mod component;
mod config;
mod conn;
mod datatype;
mod group;
mod outbound;
mod server;
pub(crate) mod stats;

pub use client::{ClientHandle, RxWSClient};
pub use config::{RetryPolicy, WSConnectionConfig, WsConfig};
pub use datatype::{Bytes, Datatype, Datatypes, Json, Raw, Text, WsMessage};
pub use group::{GroupHandle, RxWSClientGroup};
pub use server::{RxWSServer, ServerHandle};
pub use stats::StatsSnapshot;

/// Identifies one connection of a server (or one connection of a client). Random (UUID v4), so
/// two connections on the same path are never confused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(uuid::Uuid);

impl ConnId {
    pub(crate) fn new() -> Self {
        ConnId(uuid::Uuid::new_v4())
    }
    /// The id as a UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.simple(), f)
    }
}

/// An item tagged with its path (`TaggedData(tag, data)` in the Python original).
///
/// Inbound items from a server carry the connection they came from in `conn`; an outbound item
/// with `conn: Some(id)` goes to exactly that connection, with `conn: None` to every connection
/// open on the path. [`reply`](Self::reply) builds the answer to an inbound item.
///
/// ```
/// use rxplus::ws::TaggedData;
///
/// let out = TaggedData::new("/chat", "hello everyone".to_string());
/// assert_eq!(&*out.tag, "/chat");
/// assert!(out.conn.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedData<T> {
    /// The path, e.g. `/chat`. Shared (`Arc<str>`): tagging an inbound message or building a
    /// reply costs a reference count, not an allocation.
    pub tag: Arc<str>,
    /// The item.
    pub data: T,
    /// The connection an inbound item came from; for outbound items, the only recipient.
    pub conn: Option<ConnId>,
}

impl<T> TaggedData<T> {
    /// An item for every connection on `tag`.
    pub fn new(tag: impl Into<Arc<str>>, data: T) -> Self {
        TaggedData {
            tag: tag.into(),
            data,
            conn: None,
        }
    }
    /// An item for exactly one connection.
    pub fn to_conn(tag: impl Into<Arc<str>>, conn: ConnId, data: T) -> Self {
        TaggedData {
            tag: tag.into(),
            data,
            conn: Some(conn),
        }
    }
    /// The answer to this item: same path, same connection, new data.
    pub fn reply<U>(&self, data: U) -> TaggedData<U> {
        TaggedData {
            tag: self.tag.clone(),
            data,
            conn: self.conn,
        }
    }
}

/// Whether a connection opened or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEventKind {
    /// The handshake completed.
    Opened,
    /// The connection ended (close handshake, error, or dispose).
    Closed,
}

/// A server's connection event: which connection, on which path, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionEvent {
    /// Opened or closed.
    pub kind: ConnectionEventKind,
    /// The connection.
    pub id: ConnId,
    /// Its path.
    pub path: String,
    /// The peer's address.
    pub peer: SocketAddr,
}

/// A client's connection state (`WSConnectionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Not connected (before the first attempt, or between a drop and the next attempt).
    Disconnected,
    /// First connection attempt under way.
    Connecting,
    /// Connected; items flow.
    Connected,
    /// A later attempt under way after a failure or a drop.
    Reconnecting,
    /// Terminal: completed, disposed, or retries exhausted.
    Closed,
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Reconnecting => "reconnecting",
            ConnectionState::Closed => "closed",
        })
    }
}
