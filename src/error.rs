//! The crate's one error type.

use std::fmt;
use std::io;
use std::sync::Arc;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error this crate reports, by `Result` or by an error notification.
///
/// Errors are `Clone` (sources are shared behind `Arc`) because one error notification may reach
/// many subscribers. Each variant names the component (and, where there is one, the peer) it
/// came from.
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
    #[error("{component}: cannot bind {addr}: {source}")]
    Bind {
        /// The component that tried.
        component: Box<str>,
        /// `host:port` as configured.
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
    /// The WebSocket protocol layer (tungstenite) reported an error.
    #[error("{ctx}: {source}")]
    WebSocket {
        /// Where it happened.
        ctx: Box<Context>,
        /// The protocol error.
        source: Arc<tungstenite::Error>,
    },
    /// An item could not be encoded into a frame (for example a serde failure).
    #[error("{component}: encode failed ({datatype}): {reason}")]
    Encode {
        /// The component whose sink received the item.
        component: Box<str>,
        /// The datatype that refused it.
        datatype: &'static str,
        /// Why.
        reason: String,
    },
    /// A received frame could not be decoded into an item.
    #[error("{component}: decode failed ({datatype}): {reason}")]
    Decode {
        /// The component that received the frame.
        component: Box<str>,
        /// The datatype that refused it.
        datatype: &'static str,
        /// Why.
        reason: String,
    },
    /// A queue's overflow policy refused an item and asked for a disconnect
    /// (`buffer-k` over its limit, or `disconnect`).
    #[error("{component}: overflow ({policy}) at capacity {capacity}: disconnecting")]
    Overflow {
        /// The component whose queue overflowed.
        component: Box<str>,
        /// The policy's name, e.g. `buffer-k`.
        policy: &'static str,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The client gave up reconnecting after its `RetryPolicy::max_retries`.
    #[error("{component}: gave up after {attempts} connection attempts: {last}")]
    RetriesExhausted {
        /// The client.
        component: Box<str>,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error, as text.
        last: String,
    },
    /// The component was already completed or disposed; the call had no effect.
    ///
    /// This is a misuse report, unlike a connection closing, which is a normal event.
    #[error("{component}: already closed")]
    AlreadyClosed {
        /// The component.
        component: Box<str>,
    },
}

/// Where an I/O or protocol error happened: the component and, when known, the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// Component name, e.g. `RxWSServer:127.0.0.1:9001`.
    pub component: Box<str>,
    /// Peer address or connection id, when the error belongs to one connection.
    pub peer: Option<String>,
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
            ctx: Box::new(Context {
                component: component.into(),
                peer,
            }),
            source: Arc::new(source),
        }
    }

    pub(crate) fn ws(component: &str, peer: Option<String>, source: tungstenite::Error) -> Self {
        Error::WebSocket {
            ctx: Box::new(Context {
                component: component.into(),
                peer,
            }),
            source: Arc::new(source),
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
