//! # rxplus: reactive WebSockets for synchronous Rust
//!
//! A thread-per-component WebSocket library with a small reactive surface. No async runtime:
//! components own named OS threads, application threads talk to them through calls that
//! enqueue, and receive through callbacks or crossbeam receivers.
//!
//! * [`ws::RxWSServer`]: accepts connections on any path; inbound messages come out as
//!   [`ws::TaggedData`] `(path, item)`; outbound items go to a path or to one connection.
//! * [`ws::RxWSClient`]: connects in the background, reconnects by a [`ws::RetryPolicy`],
//!   optionally buffers while disconnected.
//! * [`ws::RxWSClientGroup`]: one client per path behind one subject.
//!
//! ## A tour
//!
//! A server that echoes to the sender, a client that says hello:
//!
//! ```
//! use rxplus::ws::{RxWSClient, RxWSServer, TaggedData, Text, WSConnectionConfig};
//! use rxplus::Notification;
//! use std::time::Duration;
//!
//! let server = RxWSServer::<String>::new(WSConnectionConfig::new("127.0.0.1", 0, "/")?, Text)?;
//! let echo = server.handle();
//! server
//!     .subscribe(move |m: TaggedData<String>| echo.on_next(m.reply(format!("echo: {}", m.data))))
//!     .detach();
//!
//! let port = u32::from(server.local_addr().port());
//! let client = RxWSClient::<String>::new(WSConnectionConfig::new("127.0.0.1", port, "/hi")?, Text)?;
//! let inbox = client.stream();
//! assert!(client.wait_connected(Duration::from_secs(5)));
//! client.on_next("hello".to_string());
//! match inbox.recv_timeout(Duration::from_secs(5)) {
//!     Ok(Notification::Next(reply)) => assert_eq!(reply, "echo: hello"),
//!     other => panic!("{other:?}"),
//! }
//! client.on_completed(); // flush, close handshake, join threads
//! server.dispose();
//! # Ok::<(), rxplus::Error>(())
//! ```
//!
//! ## Subscriptions
//!
//! `subscribe` returns a [`Subscription`]; **dropping it unsubscribes**. Keep it in a variable,
//! or call [`Subscription::detach`] to keep it for the component's life. Callbacks run on the
//! component's threads, one at a time per subscriber, never while the component holds a lock.
//!
//! ## Errors
//!
//! One error type, [`Error`], names the component and, where there is one, the peer.
//! Construction returns `Result`; failures while running reach the `subscribe_errors` stream
//! (non-fatal) or subscribers' `on_error` (fatal, e.g. retries exhausted).
//!
//! ## Telemetry
//!
//! Every lifecycle event is a [`log`] record whose message is an event name (`Connection
//! opened`, `Frame decode error`, …) with structured key-values (`component`, `conn_id`,
//! `path`, `peer`, …); metrics (messages and bytes in/out, open connections, connect attempts,
//! drops by overflow policy, decode errors, handshake durations) go through the OpenTelemetry
//! metrics API's global meter provider. The names are in [`telemetry`]. The crate never
//! installs a logger or a provider by itself and never prints; with none installed, telemetry
//! costs a relaxed atomic load per message. The cargo feature `telemetry` adds
//! `telemetry::install` and `telemetry::init_stdout`, which bridge `log` to OpenTelemetry
//! and install a meter provider in one call (see `docs/telemetry.md`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod overflow;
mod reactive;
pub mod telemetry;
mod threads;
pub mod ws;

pub use error::{Context, Error, Result};
pub use overflow::{
    create_overflow_policy, Block, BufferK, Disconnect, DropNew, DropOld, OverflowPolicy,
    OverflowStrategy, Pushed, Rejected,
};
pub use reactive::{FnObserver, Notification, Observer, Subscription};
pub use tungstenite;

#[allow(dead_code)]
fn _ensure_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<ws::RxWSServer<String>>();
    check::<ws::RxWSClient<String>>();
    check::<ws::RxWSClientGroup<String>>();
    check::<ws::ServerHandle<String>>();
    check::<ws::ClientHandle<String>>();
    check::<Error>();
    check::<Subscription>();
}
