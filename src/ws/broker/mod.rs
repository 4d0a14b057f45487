//! Scale-out: a path broadcast reaches the clients of every server instance through a broker.
//!
//! A server configured with a [`Broker`] ([`WSConfig::broker`](crate::ws::WSConfig::broker))
//! hands every outbound path broadcast (`TaggedData` with `conn: None`; never a reply to one
//! connection) to the broker after encoding it with the path's datatype, and delivers what
//! other instances publish to its own connections on that path, as the same text or binary
//! message. An instance never delivers its own publication twice: the broker drops what it
//! published itself (the instance id is in the [`envelope`]).
//!
//! The ready implementation is [`RedisBroker`] (feature `redis`): Redis pub/sub, one channel
//! per path (`prefix + path`). Its guarantees — at-most-once across instances, ordered per
//! publishing instance, local delivery unaffected while Redis is down — are in
//! `docs/scale-out.md`.
//!
//! ```no_run
//! # #[cfg(feature = "redis")] {
//! use rxplus::ws::broker::{RedisBroker, RedisConfig};
//! use rxplus::ws::{RxWSServer, Text, WSConfig};
//!
//! let broker = RedisBroker::new(RedisConfig::new("redis://127.0.0.1:6379/")?)?;
//! let server = RxWSServer::<String>::bind_with_config(
//!     "0.0.0.0:9001",
//!     Text,
//!     WSConfig::default().broker(broker.clone()),
//! )?;
//! // Reaches the /chat clients of this instance and of every other one on the same Redis.
//! server.on_next(rxplus::ws::TaggedData::new("/chat", "hello".to_string()));
//! server.dispose(); // joins the broker's threads too
//! # }
//! # Ok::<(), rxplus::Error>(())
//! ```

use std::fmt;
use std::sync::Arc;

use tungstenite::Message;

use crate::error::Result;

pub mod envelope;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
pub use self::redis::{BrokerStats, RedisBroker, RedisConfig};

/// Where a broker hands the path messages of other instances: called on the broker's own
/// thread with the path and the message, in the order the publishing instance published them.
pub type Deliver = Box<dyn Fn(&str, Message) + Send + Sync>;

/// A message broker that carries a server's path broadcasts to the other instances and back.
///
/// The server calls [`start`](Self::start) once when it binds, [`publish`](Self::publish) for
/// each outbound path broadcast (on the thread that broadcasts: it must return at once, never
/// waiting on the network), and [`stop`](Self::stop) when it is disposed.
pub trait Broker: Send + Sync + 'static {
    /// Starts the broker's threads for the server named `server`; from then on, messages
    /// published by other instances go to `deliver`.
    ///
    /// # Errors
    /// A broker that was already started (one broker serves one server), or whose threads
    /// could not start.
    fn start(&self, server: &str, deliver: Deliver) -> Result<()>;

    /// Hands one path broadcast over for the other instances. Must not block: queue it for the
    /// broker's own thread and return.
    ///
    /// # Errors
    /// The message was not taken (the broker is down, its queue is full, or it is stopped); it
    /// is counted as dropped by the broker.
    fn publish(&self, path: &str, message: &Message) -> Result<()>;

    /// Stops and joins every thread the broker started. Idempotent; the broker cannot be
    /// started again.
    fn stop(&self);
}

/// A shared [`Broker`] as a [`WSConfig`](crate::ws::WSConfig) field: compares by identity.
#[derive(Clone)]
pub struct SharedBroker(pub(crate) Arc<dyn Broker>);

impl SharedBroker {
    /// Wraps a broker.
    pub fn new(broker: impl Broker) -> Self {
        SharedBroker(Arc::new(broker))
    }
}

impl<B: Broker> From<B> for SharedBroker {
    fn from(b: B) -> Self {
        SharedBroker::new(b)
    }
}

impl fmt::Debug for SharedBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedBroker(..)")
    }
}

impl PartialEq for SharedBroker {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
