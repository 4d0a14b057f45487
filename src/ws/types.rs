//! The ground types of the WebSocket layer: connection ids, tagged items, connection events
//! and states.

use std::fmt;
use std::net::SocketAddr;

use crate::ws::Tag;

/// Identifies one connection of a server (or one connection of a client). Random (UUID v4), so
/// two connections on the same path are never confused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(uuid::Uuid);

impl ConnId {
    /// A fresh random id (connections get theirs from the library; this is for tests and
    /// lookups that must miss).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
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

impl From<uuid::Uuid> for ConnId {
    fn from(u: uuid::Uuid) -> Self {
        ConnId(u)
    }
}

/// Parses what [`Display`](fmt::Display) prints (32 hex digits), or any UUID form.
///
/// ```
/// use rxplus::ws::ConnId;
///
/// let id = ConnId::from(uuid::Uuid::from_u128(0xfeed));
/// let text = id.to_string();
/// assert_eq!(text, "0000000000000000000000000000feed");
/// assert_eq!(text.parse::<ConnId>()?, id);
/// assert!("not-an-id".parse::<ConnId>().is_err());
/// # Ok::<(), rxplus::Error>(())
/// ```
impl std::str::FromStr for ConnId {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(ConnId)
            .map_err(|e| crate::Error::config("conn_id", format!("{s:?}: {e}")))
    }
}

/// An item tagged with its path.
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
    /// The path, e.g. `/chat`. A [`Tag`]: tagging an inbound message or building a reply
    /// costs neither an allocation nor (for paths up to 23 bytes) a reference count.
    pub tag: Tag,
    /// The item.
    pub data: T,
    /// The connection an inbound item came from; for outbound items, the only recipient.
    pub conn: Option<ConnId>,
}

impl<T> TaggedData<T> {
    /// An item for every connection on `tag`.
    pub fn new(tag: impl Into<Tag>, data: T) -> Self {
        TaggedData {
            tag: tag.into(),
            data,
            conn: None,
        }
    }
    /// An item for exactly one connection.
    pub fn to_conn(tag: impl Into<Tag>, conn: ConnId, data: T) -> Self {
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

/// A server's connection event: which connection, on which path, from where; when it opened,
/// what the handshake said; when it closed, how.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionEvent {
    /// Opened or closed.
    pub kind: ConnectionEventKind,
    /// The connection.
    pub id: ConnId,
    /// Its path (without the query).
    pub path: String,
    /// The peer's address.
    pub peer: SocketAddr,
    /// `Opened`: the query string, without `?`.
    pub query: Option<String>,
    /// `Opened`: the subprotocol chosen (by the accept hook).
    pub protocol: Option<String>,
    /// `Opened`: the request headers (names in lower case): all of them, or those the accept
    /// hook's [`Verdict::keep_headers`](crate::ws::Verdict::keep_headers) named.
    pub headers: Vec<(String, String)>,
    /// `Closed`: the close code and reason, or the cause when there was no close frame.
    pub close: Option<crate::ws::CloseInfo>,
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
