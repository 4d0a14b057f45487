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
//! * [`gateway::GatewayNode`]: a peer-to-peer node on the same connection core: listens and
//!   dials, a HELLO / HELLO_ACK handshake under a deadline, one overflow policy and stream
//!   table per connection, links that redial under the same id; any frame type implementing
//!   [`gateway::Framing`], or the ready [`gateway::DefaultFrame`] (see `docs/gateway.md`).
//!
//! ## A tour
//!
//! A server that echoes to the sender, a client that says hello:
//!
//! ```
//! use rxplus::ws::{RxWSClient, RxWSServer, Text, WSConnectionConfig};
//! use rxplus::Notification;
//! use std::time::Duration;
//!
//! let server = RxWSServer::<String>::bind("127.0.0.1:0", Text)?;
//! let echo = server.handle();
//! server.subscribe(move |m| echo.on_next(m.reply(format!("echo: {}", m.data))));
//!
//! let port = server.local_addr().port();
//! let client = RxWSClient::<String>::new(WSConnectionConfig::new("127.0.0.1", port, "/hi")?, Text)?;
//! let inbox = client.stream();
//! assert!(client.wait_connected(Duration::from_secs(5)));
//! client.send("hello".to_string())?;
//! match inbox.recv_timeout(Duration::from_secs(5)) {
//!     Ok(Notification::Next(reply)) => assert_eq!(reply, "echo: hello"),
//!     other => panic!("{other:?}"),
//! }
//! client.on_completed(); // flush, close handshake, join threads
//! server.dispose();
//! # Ok::<(), rxplus::Error>(())
//! ```
//!
//! ## The reactive rules
//!
//! Every component is a subject: an observer of outbound items (`send`, `on_next`,
//! `on_completed`, `on_error`, or the crossbeam sender from `sink()`) and an observable of
//! inbound items (`subscribe`, `subscribe_observer`, or the crossbeam receiver from `stream()`).
//!
//! * No item follows a terminal notification (`on_completed` / `on_error`); a late subscriber
//!   gets the terminal notification at once.
//! * Callbacks run on the component's threads, one at a time per subscriber, never while the
//!   component holds a lock. A slow callback slows the connection feeding it (TCP pushes back
//!   on the peer); it never makes memory grow.
//! * Every subscriber and every `stream()` receiver gets exactly one terminal notification,
//!   after the items delivered to it. Once `dispose()` begins, no new item is delivered.
//!
//! ## Subscriptions
//!
//! `subscribe` returns a [`Subscription`] that lasts until you call
//! [`Subscription::unsubscribe`] or the component ends: dropping it, or ignoring it, keeps the
//! subscriber. For a subscription tied to a scope, [`Subscription::guard`] returns a
//! [`SubscriptionGuard`] that unsubscribes when dropped. When `unsubscribe` returns, no
//! callback of that subscriber is running or will start.
//!
//! ## Errors
//!
//! One error type, [`Error`], names the component and, where there is one, the peer
//! ([`Context`]). Construction returns `Result`. `send` returns a [`SendError`] when an item is
//! not accepted (not connected, no connection on the path, queue full, completed), with the
//! item handed back where it was not consumed. Failures while running reach the
//! `subscribe_errors` stream (non-fatal: a refused `on_next`, a message that failed to decode,
//! a failed connection attempt) or subscribers' `on_error` (fatal: retries exhausted).
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
//!
//! ## TLS
//!
//! With the `tls` feature (on by default; rustls, no OpenSSL) every component speaks `wss://`:
//! a server or gateway node serves it with [`ws::WSConfig::tls_server`], and clients, groups and
//! gateway dials verify `wss://` servers against Mozilla's roots or [`ws::WSConfig::tls_client`].
//! Connections stay full duplex over TLS. See [`tls`] and `docs/websocket.md`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod component;
mod error;
pub mod gateway;
pub mod overflow;
mod reactive;
mod stats;
pub mod telemetry;
mod threads;
#[cfg(feature = "tls")]
pub mod tls;
pub mod ws;

pub use error::{CodecError, Context, Error, Result, SendError};
pub use overflow::OverflowStrategy;
pub use reactive::{FnObserver, Notification, Observer, Subscription, SubscriptionGuard};
pub use tungstenite;

#[allow(dead_code)]
fn _ensure_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<ws::RxWSServer<String>>();
    check::<ws::RxWSClient<String>>();
    check::<ws::RxWSClientGroup<String>>();
    check::<ws::ServerHandle<String>>();
    check::<ws::ClientHandle<String>>();
    check::<ws::GroupHandle<String>>();
    check::<SendError<String>>();
    check::<Error>();
    check::<Subscription>();
}
