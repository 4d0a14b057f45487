//! The gateway layer: symmetric peer-to-peer nodes over WebSocket.
//!
//! A [`GatewayNode`] listens and dials; every connection, inbound or outbound, is a peer with
//! its own [`ConnId`](crate::ws::ConnId), a HELLO / HELLO_ACK handshake under a deadline, its
//! own outbound [overflow policy](crate::overflow) and its own [`StreamTable`]. Frames are any
//! type implementing [`Framing`]; [`DefaultFrame`] is a ready one with a fixed wire format.
//!
//! `docs/gateway.md` describes the protocol sequence, the wire format, states, events, causes
//! and defaults.

mod config;
mod connection;
mod framing;
mod node;
mod node_id;
mod resume;
mod stream;

pub use config::{DuplicatePolicy, GatewayConfig};
pub use connection::{
    close_code, Connection, ConnectionState, Direction, DisconnectCause, GatewayEvent,
};
pub use framing::{
    DefaultFrame, Framing, HelloPayload, TaggedFrame, DEFAULT_FORMAT, PROTOCOL_VERSION,
};
pub use node::{GatewayNode, GatewayStats, NodeHandle};
pub use node_id::NodeId;
pub use resume::{ResumeConfig, ResumeFailure};
pub use stream::{Missing, StreamId, StreamInfo, StreamState, StreamTable, MAX_STREAMS};
