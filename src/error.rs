//! The crate's one error type.

use std::fmt;
use std::io;
use std::sync::Arc;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error this crate reports, by `Result` or by an error notification.
///
/// Errors are `Clone` (sources are shared behind `Arc`) because one error notification may reach
/// many subscribers. Every variant raised by a running component carries the same [`Context`]:
/// the component's name and, where there is one, the peer or connection. Configuration errors
/// come before any component exists and carry none.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value was rejected at construction.
    #[error("invalid config: {field}: {reason}")]
    Config {
        /// The field that was rejected, e.g. `port` or `ping_timeout`.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A URL could not be used (bad syntax, unsupported scheme). Never retried.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The server could not bind its listening socket.
    #[error("{ctx}: cannot bind {addr}: {source}")]
    Bind {
        /// The component that tried.
        ctx: Box<Context>,
        /// The address as given.
        addr: String,
        /// The operating system's error.
        source: Arc<io::Error>,
    },
    /// An I/O error on a connection or a socket.
    #[error("{ctx}: {source}")]
    Io {
        /// Where it happened.
        ctx: Box<Context>,
        /// The operating system's error.
        source: Arc<io::Error>,
    },
    /// A TLS handshake failed: the peer's certificate was refused (`certificate`: unknown
    /// issuer, expired, wrong name; not retried by default, see
    /// `RetryPolicy::retry_certificate_errors`), or the peer does not speak TLS, or it broke
    /// the protocol. The source wraps the `rustls::Error` where there is one
    /// (`source.get_ref()`, then `downcast_ref`).
    #[error("{ctx}: TLS handshake failed: {source}")]
    Tls {
        /// Where it happened.
        ctx: Box<Context>,
        /// Whether a certificate was refused (by us or by the peer).
        certificate: bool,
        /// The error.
        source: Arc<io::Error>,
    },
    /// The server answered the opening handshake with an HTTP status instead of `101`
    /// (401, 403, 404, 503 …). A 4xx other than 408 and 429 is not retried by default
    /// (`RetryPolicy::retry_client_errors`).
    #[error("{ctx}: handshake refused with HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    HandshakeRefused {
        /// The client, with the server.
        ctx: Box<Context>,
        /// The status.
        status: u16,
        /// The start of the response body (at most 256 bytes), as text.
        body: String,
    },
    /// The WebSocket protocol layer (tungstenite) reported an error.
    #[error("{ctx}: {source}")]
    WebSocket {
        /// Where it happened.
        ctx: Box<Context>,
        /// The protocol error.
        source: Arc<tungstenite::Error>,
    },
    /// An item could not be encoded into a message (for example a serde failure, or a binary
    /// message given to a text datatype).
    #[error("{ctx}: encode failed ({datatype}): {source}")]
    Encode {
        /// The component whose sink received the item.
        ctx: Box<Context>,
        /// The datatype that refused it.
        datatype: &'static str,
        /// Why.
        source: CodecError,
    },
    /// A received message could not be decoded into an item. Non-fatal: reported on the
    /// errors stream, and the connection keeps delivering.
    #[error("{ctx}: decode failed ({datatype}): {source}")]
    Decode {
        /// The component and the connection the message came from.
        ctx: Box<Context>,
        /// The datatype that refused it.
        datatype: &'static str,
        /// Why.
        source: CodecError,
    },
    /// A queue's overflow policy did not take the item (`drop-new` full, or `buffer-k` /
    /// `disconnect`, which also close the connection).
    #[error("{ctx}: outbound queue full ({policy}, capacity {capacity}): item not accepted")]
    Overflow {
        /// The component and connection whose queue overflowed.
        ctx: Box<Context>,
        /// The policy's name, e.g. `buffer-k`.
        policy: &'static str,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The client is not connected and does not buffer (`buffer_while_disconnected` is off):
    /// the item was not sent.
    #[error("{ctx}: not connected: item not sent")]
    NotConnected {
        /// The client.
        ctx: Box<Context>,
    },
    /// No open connection to send to: none on the item's path, or the item's connection id is
    /// gone.
    #[error("{ctx}: no open connection: item not sent")]
    NoConnection {
        /// The server, with the path or connection id as its peer.
        ctx: Box<Context>,
    },
    /// One connection attempt failed; the client retries by its `RetryPolicy`. Non-fatal:
    /// reported on the errors stream.
    #[error("{ctx}: connection attempt {attempt} failed")]
    ConnectFailed {
        /// The client.
        ctx: Box<Context>,
        /// Which attempt (1 is the first after a drop or at start).
        attempt: u32,
        /// Why it failed.
        source: Box<Error>,
    },
    /// A connection ended sooner than `RetryPolicy::reset_after` after its handshake (the
    /// server closed it, sent garbage, or an oversized frame): a failed attempt, reported as
    /// the source of [`Error::ConnectFailed`].
    #[error("{ctx}: connection ended {after_ms} ms after its handshake: {reason}")]
    ConnectionDropped {
        /// The client, with the peer.
        ctx: Box<Context>,
        /// How long it stayed open.
        after_ms: u64,
        /// How it ended.
        reason: String,
    },
    /// The client gave up reconnecting after its `RetryPolicy::max_retries`.
    #[error("{ctx}: gave up after {attempts} connection attempts")]
    RetriesExhausted {
        /// The client.
        ctx: Box<Context>,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        source: Box<Error>,
    },
    /// A graceful completion could not deliver everything it held within its bound.
    #[error("{ctx}: completed with {count} items not delivered")]
    Undelivered {
        /// The client.
        ctx: Box<Context>,
        /// Items dropped.
        count: usize,
    },
    /// The scale-out broker (Redis) did not take a path message (down, queue full), a
    /// connection to it broke, or a publication failed. Non-fatal: local delivery goes on;
    /// the message is counted as dropped by the broker. See `docs/scale-out.md`.
    #[error("{ctx}: broker: {reason}")]
    Broker {
        /// The broker.
        ctx: Box<Context>,
        /// What happened.
        reason: String,
        /// The broker client's error, where there is one (a `redis::RedisError` for
        /// `RedisBroker`).
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The component was already completed or disposed; the call had no effect.
    ///
    /// This is a misuse report, unlike a connection closing, which is a normal event.
    #[error("{ctx}: already closed")]
    AlreadyClosed {
        /// The component.
        ctx: Box<Context>,
    },
}

/// Why a [`Datatype`](crate::ws::Datatype) could not encode or decode: the underlying error
/// (a `serde_json::Error`, a UTF-8 error, …) kept as the source, or a plain reason.
#[derive(Debug, Clone)]
pub struct CodecError(Arc<dyn std::error::Error + Send + Sync>);

impl CodecError {
    /// Wraps an underlying error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        CodecError(Arc::new(e))
    }
    /// An underlying error with what was being done: displayed as `what: error`, the error
    /// kept as the source.
    pub fn context(what: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        #[derive(Debug)]
        struct Ctx<E>(&'static str, E);
        impl<E: std::error::Error> fmt::Display for Ctx<E> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}: {}", self.0, self.1)
            }
        }
        impl<E: std::error::Error + 'static> std::error::Error for Ctx<E> {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.1)
            }
        }
        CodecError(Arc::new(Ctx(what, e)))
    }
    /// A reason without an underlying error.
    pub fn msg(reason: impl Into<String>) -> Self {
        #[derive(Debug)]
        struct Msg(String);
        impl fmt::Display for Msg {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::error::Error for Msg {}
        CodecError(Arc::new(Msg(reason.into())))
    }
    /// The underlying error.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// An item that `send` did not accept: the reason, and the item itself where it was not
/// consumed (an item a datatype failed to encode is gone). Like crossbeam's `SendError`.
///
/// ```
/// # use rxplus::{Error, SendError};
/// fn retry_later<T>(e: SendError<T>) -> Option<T> {
///     eprintln!("not sent: {e}");
///     e.into_item()
/// }
/// ```
#[derive(Clone)]
pub struct SendError<T> {
    // Boxed: a `Result<(), SendError<T>>` stays about the size of the item (the reason is
    // built, and allocates, only when an item is refused).
    error: Box<Error>,
    item: Option<T>,
}

impl<T> SendError<T> {
    pub(crate) fn new(error: Error, item: Option<T>) -> Self {
        SendError {
            error: Box::new(error),
            item,
        }
    }
    /// Why the item was not accepted.
    pub fn error(&self) -> &Error {
        &self.error
    }
    /// The reason, dropping the item.
    pub fn into_error(self) -> Error {
        *self.error
    }
    /// The item, when it was not consumed.
    pub fn into_item(self) -> Option<T> {
        self.item
    }
    /// The item, if any, and the reason.
    pub fn into_parts(self) -> (Option<T>, Error) {
        (self.item, *self.error)
    }
    pub(crate) fn map_item<U>(self, f: impl FnOnce(T) -> U) -> SendError<U> {
        SendError {
            error: self.error,
            item: self.item.map(f),
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("error", &self.error)
            .field("item_returned", &self.item.is_some())
            .finish()
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<T> std::error::Error for SendError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

impl<T> From<SendError<T>> for Error {
    fn from(e: SendError<T>) -> Self {
        *e.error
    }
}

/// Where an error happened: the component and, when known, the peer or connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// Component name, e.g. `RxWSServer:127.0.0.1:9001`.
    pub component: Box<str>,
    /// Peer address, connection id or path, when the error belongs to one.
    pub peer: Option<String>,
}

impl Context {
    pub(crate) fn new(component: &str, peer: Option<String>) -> Box<Self> {
        Box::new(Context {
            component: component.into(),
            peer,
        })
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.peer {
            Some(p) => write!(f, "{} (peer {})", self.component, p),
            None => f.write_str(&self.component),
        }
    }
}

impl Error {
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Config {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(component: &str, peer: Option<String>, source: io::Error) -> Self {
        Error::Io {
            ctx: Context::new(component, peer),
            source: Arc::new(source),
        }
    }

    /// A failed TLS handshake (`source` as the session reported it).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn tls(component: &str, peer: Option<String>, source: io::Error) -> Self {
        #[cfg(feature = "tls")]
        let certificate = crate::tls::is_certificate_error(&source);
        #[cfg(not(feature = "tls"))]
        let certificate = false;
        Error::Tls {
            ctx: Context::new(component, peer),
            certificate,
            source: Arc::new(source),
        }
    }

    /// The HTTP status of a refused handshake (here or in the source of a failed attempt).
    pub fn refused_status(&self) -> Option<u16> {
        match self.attempt_cause() {
            Error::HandshakeRefused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A certificate refused in a TLS handshake: retrying does not help.
    pub fn is_certificate_error(&self) -> bool {
        matches!(
            self.attempt_cause(),
            Error::Tls {
                certificate: true,
                ..
            }
        )
    }

    /// What failed inside a failed attempt or given-up retries (this error otherwise).
    fn attempt_cause(&self) -> &Error {
        match self {
            Error::ConnectFailed { source, .. } | Error::RetriesExhausted { source, .. } => {
                source.attempt_cause()
            }
            other => other,
        }
    }

    pub(crate) fn ws(component: &str, peer: Option<String>, source: tungstenite::Error) -> Self {
        Error::WebSocket {
            ctx: Context::new(component, peer),
            source: Arc::new(source),
        }
    }

    pub(crate) fn closed(component: &str) -> Self {
        Error::AlreadyClosed {
            ctx: Context::new(component, None),
        }
    }

    /// Where it happened; `None` for configuration errors.
    pub fn context(&self) -> Option<&Context> {
        match self {
            Error::Config { .. } | Error::InvalidUrl { .. } => None,
            Error::Bind { ctx, .. }
            | Error::Io { ctx, .. }
            | Error::Tls { ctx, .. }
            | Error::HandshakeRefused { ctx, .. }
            | Error::WebSocket { ctx, .. }
            | Error::Encode { ctx, .. }
            | Error::Decode { ctx, .. }
            | Error::Overflow { ctx, .. }
            | Error::NotConnected { ctx }
            | Error::NoConnection { ctx }
            | Error::ConnectFailed { ctx, .. }
            | Error::ConnectionDropped { ctx, .. }
            | Error::RetriesExhausted { ctx, .. }
            | Error::Undelivered { ctx, .. }
            | Error::Broker { ctx, .. }
            | Error::AlreadyClosed { ctx } => Some(ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small() {
        // Errors travel through channels and notifications; keep them a few words wide.
        assert!(
            std::mem::size_of::<Error>() <= 64,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn a_send_error_is_the_items_size_plus_a_pointer_and_its_source_is_the_crate_error() {
        use std::error::Error as _;
        assert_eq!(
            std::mem::size_of::<SendError<[u64; 4]>>(),
            std::mem::size_of::<Option<[u64; 4]>>() + std::mem::size_of::<usize>()
        );
        let e = SendError::new(Error::closed("c"), Some(7));
        let source = e.source().and_then(|s| s.downcast_ref::<Error>());
        assert!(
            matches!(source, Some(Error::AlreadyClosed { .. })),
            "{source:?}"
        );
        assert_eq!(e.into_parts().0, Some(7));
    }

    #[test]
    fn the_component_is_named_once_and_sources_are_kept() {
        let inner = Error::io("c", Some("127.0.0.1:5".into()), io::Error::other("refused"));
        let e = Error::RetriesExhausted {
            ctx: Context::new("c", None),
            attempts: 3,
            source: Box::new(inner),
        };
        assert_eq!(e.to_string(), "c: gave up after 3 connection attempts");
        let src = std::error::Error::source(&e).map(|s| s.to_string());
        assert_eq!(src.as_deref(), Some("c (peer 127.0.0.1:5): refused"));
        let json = serde_json::from_str::<u32>("x").unwrap_err();
        let e = Error::Encode {
            ctx: Context::new("c", None),
            datatype: "json",
            source: CodecError::new(json),
        };
        assert!(e
            .to_string()
            .starts_with("c: encode failed (json): expected value"));
        let send = SendError::new(Error::closed("c"), Some(7u8));
        assert_eq!(send.to_string(), "c: already closed");
        assert_eq!(send.into_item(), Some(7));
    }

    #[test]
    fn messages_name_their_context() {
        let e = Error::io(
            "RxWSServer:127.0.0.1:1",
            Some("127.0.0.1:5".into()),
            io::Error::other("boom"),
        );
        assert_eq!(
            e.to_string(),
            "RxWSServer:127.0.0.1:1 (peer 127.0.0.1:5): boom"
        );
        let e = Error::config("port", "must be 0..=65535");
        assert_eq!(e.to_string(), "invalid config: port: must be 0..=65535");
    }
}
