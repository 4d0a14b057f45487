//! The WebSocket layer: [`RxWSServer`], [`RxWSClient`], [`RxWSClientGroup`].
//!
//! Each component is a subject: an observer of outbound items (its sink: `on_next`,
//! `on_completed`, `on_error`, or the crossbeam [`Sender`](crossbeam_channel::Sender) from
//! `sink()`) and an observable of inbound items (`subscribe`, or the crossbeam receiver from
//! `stream()`). Components own their threads; `dispose()` (and `Drop`) joins every one of them.
//! See `docs/websocket.md` for the threading model and every default.
//!
//! ## Datatypes
//!
//! A [`Datatype`] turns items into WebSocket messages and back; a server or a group may choose
//! one per path ([`Datatypes::per_path`]).
//!
//! | datatype | item types | sends | accepts |
//! |---|---|---|---|
//! | [`Text`] | `String`, [`Utf8Bytes`], [`WSMessage`] (text only) | text frames | text; binary if valid UTF-8 |
//! | [`Binary`] | `Vec<u8>`, [`Bytes`], [`WSMessage`] (binary only) | binary frames | binary; text is a decode error |
//! | [`Json`] | any `Serialize + DeserializeOwned` | text frames of JSON | text or binary JSON |
//! | [`Raw`] | [`WSMessage`] | the item's own kind | both kinds, kind preserved |
//! | `Pickle` (feature `pickle`) | any `Serialize + DeserializeOwned` | binary frames of Python pickle | binary pickle, protocols 0–5 |
//! | `PickleValue` (feature `pickle`) | `pickle::Value` (tuples, sets, big ints kept) | binary frames of Python pickle | binary pickle, protocols 0–5 |
//!
//! [`Utf8Bytes`] and [`Bytes`] items keep the buffer a message was read into: no allocation or
//! copy per received message (`String` and `Vec<u8>` items pay one each).
//!
//! A message that fails to decode is logged, counted and reported on the errors stream
//! ([`Error::Decode`](crate::Error::Decode)); the connection keeps going. An item a datatype
//! cannot encode is an [`Error::Encode`](crate::Error::Encode), never a panic.
//!
//! ## Outbound queues
//!
//! Each connection's outbound queue is bounded by count and bytes, with an overflow policy
//! ([`OverflowStrategy`](crate::OverflowStrategy), described in [`crate::overflow`]).

pub mod broker;
mod client;
mod config;
pub(crate) mod conn;
mod control;
mod datatype;
mod group;
pub(crate) mod handshake;
pub(crate) mod listen;
pub(crate) mod outbound;
#[cfg(feature = "pickle")]
pub mod pickle;
mod server;
mod tag;
mod types;

pub use crate::stats::StatsSnapshot;
pub(crate) use client::dial;
pub use client::{ClientHandle, RxWSClient};
pub use config::{default_max_connections, RetryPolicy, WSConfig, WSConnectionConfig};
pub use control::{check_close, AcceptHook, CloseInfo, HandshakeRequest, Verdict};
pub use datatype::{Binary, Datatype, Datatypes, Json, Raw, Text, WSMessage};
pub use group::{GroupHandle, RxWSClientGroup};
#[cfg(feature = "pickle")]
pub use pickle::{Pickle, PickleValue};
pub use server::{RxWSServer, ServerHandle};
pub use tag::Tag;
/// Shared, reference-counted byte buffers (the `bytes` crate's, as tungstenite uses them).
pub use tungstenite::Bytes;
/// A UTF-8 string in a shared [`Bytes`] buffer (tungstenite's).
pub use tungstenite::Utf8Bytes;
pub use types::{ConnId, ConnectionEvent, ConnectionEventKind, ConnectionState, TaggedData};
