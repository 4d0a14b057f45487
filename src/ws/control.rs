//! Connection control: a server's accept hook ([`AcceptHook`], deciding each opening handshake
//! from a [`HandshakeRequest`] with a [`Verdict`]), how a connection closed ([`CloseInfo`]),
//! and which close codes may be sent.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use tungstenite::http::HeaderMap;

use crate::error::{Error, Result};

/// What a server's accept hook sees of an opening handshake.
#[derive(Debug, Clone)]
pub struct HandshakeRequest {
    pub(crate) peer: SocketAddr,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) protocols: Vec<String>,
}

impl HandshakeRequest {
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
    /// The request path, without the query (`/chat`).
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The query string, without the `?` (`token=abc`), if any.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }
    /// The value of query parameter `name` (not percent-decoded), if present.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .as_deref()?
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
    /// Every request header.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    /// The first value of header `name` (case-insensitive) that is valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
    /// The subprotocols the client offered (`Sec-WebSocket-Protocol`), in its order.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }
}

/// An accept hook's answer to one handshake.
///
/// ```
/// use rxplus::ws::Verdict;
///
/// let yes = Verdict::accept().protocol("chat.v2").header("X-Served-By", "edge-1");
/// let no = Verdict::refuse(401, "missing token");
/// assert!(matches!(no, Verdict::Refuse { status: 401, .. }));
/// # let _ = yes;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Upgrade the connection.
    Accept {
        /// The subprotocol to answer with; must be one the client offered (otherwise the
        /// handshake is refused with 500 and the hook's mistake logged).
        protocol: Option<String>,
        /// Extra response headers.
        headers: Vec<(String, String)>,
        /// Request headers to keep in the `Opened` event (names, case-insensitive); `None`
        /// keeps them all.
        keep_headers: Option<Vec<String>>,
    },
    /// Answer with this HTTP status (400–599) and a short text body; no upgrade.
    Refuse {
        /// The status, e.g. 401, 403, 404.
        status: u16,
        /// The body (plain text).
        body: String,
    },
}

impl Verdict {
    /// Accept, with no subprotocol, no extra headers, all request headers kept.
    pub fn accept() -> Self {
        Verdict::Accept {
            protocol: None,
            headers: Vec::new(),
            keep_headers: None,
        }
    }
    /// Refuse with `status` and `body`.
    pub fn refuse(status: u16, body: impl Into<String>) -> Self {
        Verdict::Refuse {
            status,
            body: body.into(),
        }
    }
    /// Chooses the subprotocol (on an `Accept`).
    pub fn protocol(mut self, p: impl Into<String>) -> Self {
        if let Verdict::Accept { protocol, .. } = &mut self {
            *protocol = Some(p.into());
        }
        self
    }
    /// Adds a response header (on an `Accept`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let Verdict::Accept { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }
    /// Keeps only these request headers in the `Opened` event (on an `Accept`).
    pub fn keep_headers<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        if let Verdict::Accept { keep_headers, .. } = &mut self {
            *keep_headers = Some(names.into_iter().map(Into::into).collect());
        }
        self
    }
}

/// A server's accept hook: called for every opening handshake on the connection's own thread,
/// before the `101`, with no lock held. A panic in it refuses the handshake with 500 (logged);
/// the server keeps serving.
///
/// ```
/// use rxplus::ws::{AcceptHook, Verdict, WSConfig};
///
/// let cfg = WSConfig::default().accept_hook(AcceptHook::new(|req| {
///     match req.header("authorization") {
///         Some("Bearer s3cret") => Verdict::accept(),
///         _ => Verdict::refuse(401, "unauthorized"),
///     }
/// }));
/// # let _ = cfg;
/// ```
#[derive(Clone)]
pub struct AcceptHook(Arc<dyn Fn(&HandshakeRequest) -> Verdict + Send + Sync>);

impl AcceptHook {
    /// Wraps a function.
    pub fn new(f: impl Fn(&HandshakeRequest) -> Verdict + Send + Sync + 'static) -> Self {
        AcceptHook(Arc::new(f))
    }
    pub(crate) fn call(&self, req: &HandshakeRequest) -> Verdict {
        (self.0)(req)
    }
}

impl fmt::Debug for AcceptHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AcceptHook(..)")
    }
}

impl PartialEq for AcceptHook {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseInfo {
    /// Close frames were exchanged (or at least one was received): the code and reason of the
    /// side that closed first (`by_peer`), 1005 when its frame had no code.
    Closed {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
        /// Whether the peer closed first.
        by_peer: bool,
    },
    /// This side closed with `code` (a protocol error by the peer, an overflow, a write
    /// timeout, `close`) and the peer's close frame never came.
    ClosedByUs {
        /// The code sent.
        code: u16,
        /// The reason sent.
        reason: String,
    },
    /// No close frame: the connection was lost (reset, end of stream) or cut (heartbeat
    /// timeout, dispose, an overflow policy). The text says which.
    Lost(String),
}

impl CloseInfo {
    /// The close code, if a close frame was sent or received.
    pub fn code(&self) -> Option<u16> {
        match self {
            CloseInfo::Closed { code, .. } | CloseInfo::ClosedByUs { code, .. } => Some(*code),
            CloseInfo::Lost(_) => None,
        }
    }
    /// The close reason, or the cause when there was no close frame.
    pub fn reason(&self) -> &str {
        match self {
            CloseInfo::Closed { reason, .. } | CloseInfo::ClosedByUs { reason, .. } => reason,
            CloseInfo::Lost(cause) => cause,
        }
    }
}

impl fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseInfo::Closed {
                code,
                reason,
                by_peer,
            } => {
                let who = if *by_peer { "peer" } else { "us" };
                write!(f, "closed by {who} with {code}")?;
                if !reason.is_empty() {
                    write!(f, " ({reason})")?;
                }
                Ok(())
            }
            CloseInfo::ClosedByUs { code, reason } => {
                write!(f, "closed by us with {code} ({reason}), no reply")
            }
            CloseInfo::Lost(cause) => write!(f, "lost: {cause}"),
        }
    }
}

/// Checks a close code an application may send (RFC 6455 7.4): 1000–1003, 1007–1014 and
/// 3000–4999; a reason of at most 123 bytes.
///
/// # Errors
/// [`Error::Config`] naming `close_code` or `close_reason`.
pub fn check_close(code: u16, reason: &str) -> Result<()> {
    let ok = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if !ok {
        return Err(Error::config(
            "close_code",
            format!("{code} may not be sent (1000-1003, 1007-1014 or 3000-4999)"),
        ));
    }
    if reason.len() > 123 {
        return Err(Error::config(
            "close_reason",
            format!("{} bytes; at most 123 fit a close frame", reason.len()),
        ));
    }
    Ok(())
}
