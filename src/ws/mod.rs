//! The WebSocket layer: [`RxWSServer`], [`RxWSClient`], [`RxWSClientGroup`].
//!
//! Each component is a subject: an observer of outbound items (its sink: `on_next`,
//! `on_completed`, `on_error`, or the crossbeam [`Sender`](crossbeam_channel::Sender) from
//! `sink()`) and an observable of inbound items (`subscribe`, or the crossbeam receiver from
//! `stream()`). Components own their threads; `dispose()` (and `Drop`) joins every one of them.
//! See `docs/websocket.md` for the threading model and every default.

mod client;
mod config;
mod conn;
mod datatype;
mod group;
mod handshake;
mod outbound;
mod server;
mod types;

pub use crate::stats::StatsSnapshot;
pub use client::{ClientHandle, RxWSClient};
pub use config::{RetryPolicy, WSConfig, WSConnectionConfig};
pub use datatype::{Binary, Datatype, Datatypes, Json, Raw, Text, WSMessage};
pub use group::{GroupHandle, RxWSClientGroup};
pub use server::{RxWSServer, ServerHandle};
pub use types::{ConnId, ConnectionEvent, ConnectionEventKind, ConnectionState, TaggedData};
