//! A gateway connection as the application sees it: state, direction, the peer, and why it
//! ended.

use std::fmt;
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::gateway::{NodeId, ResumeFailure, StreamInfo};
use crate::overflow::OverflowStrategy;
use crate::ws::ConnId;

/// A gateway connection's state.
///
/// `Pending` (transport up, waiting for the peer's HELLO: the dialing side) or `Handshaking`
/// (our HELLO sent, waiting for HELLO_ACK: the accepting side) → `Connected` →
/// `Disconnected`. An outbound connection whose transport drops goes back to `Pending` while it
/// reconnects (an `Interrupted` event), and to `Connected` again after a new handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Awaiting the peer's HELLO (or, outbound, dialing).
    Pending,
    /// HELLO sent, awaiting HELLO_ACK.
    Handshaking,
    /// Handshake complete: frames flow.
    Connected,
    /// Ended for good.
    Disconnected,
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectionState::Pending => "pending",
            ConnectionState::Handshaking => "handshaking",
            ConnectionState::Connected => "connected",
            ConnectionState::Disconnected => "disconnected",
        })
    }
}

/// Who opened the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The peer dialed this node.
    Inbound,
    /// This node dialed the peer (`connect_to`).
    Outbound,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        })
    }
}

/// Close codes the gateway sends when it refuses or ends a connection.
pub mod close_code {
    /// The handshake did not finish within `handshake_timeout`.
    pub const HANDSHAKE_TIMEOUT: u16 = 4001;
    /// The peer's protocol version is below `min_version`.
    pub const VERSION: u16 = 4002;
    /// The peer is this node (its HELLO carries our own node id).
    pub const SELF_CONNECTION: u16 = 4003;
    /// A second connection to the same node, refused by `DuplicatePolicy::KeepOne`.
    pub const DUPLICATE: u16 = 4004;
    /// The connection's outbound queue overflowed under `buffer-k` or `disconnect`.
    pub const OVERFLOW: u16 = 4005;
    /// A resume was refused: the session belongs to another node, is being resumed on another
    /// transport already, or a fresh session id is taken.
    pub const SESSION: u16 = 4006;
}

/// Why a connection ended for good (carried by [`GatewayEvent::Disconnected`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectCause {
    /// This side closed it with 4001: no HELLO / HELLO_ACK within the timeout.
    HandshakeTimeout,
    /// This side closed it with 4002: the peer speaks `version`, below our minimum.
    Version {
        /// The peer's version.
        version: u16,
        /// Our minimum.
        min: u16,
    },
    /// This side closed it with 4003: the peer is this very node.
    SelfConnection,
    /// This side closed it with 4004 (`DuplicatePolicy::KeepOne`): another connection to the
    /// same node survives.
    Duplicate,
    /// This side closed it with 4005: its outbound queue overflowed (`buffer-k`, `disconnect`).
    Overflow,
    /// The peer closed it with a gateway refusal code (4001–4005); an outbound connection does
    /// not redial after one.
    Refused {
        /// The close code.
        code: u16,
        /// The close reason the peer gave.
        reason: String,
    },
    /// The peer closed the WebSocket (any other code) or the transport failed; for an outbound
    /// connection only once its retries are spent.
    Closed {
        /// The peer's close code, if it sent a close frame.
        code: Option<u16>,
        /// What happened.
        reason: String,
    },
    /// Every connection attempt failed ([`RetryPolicy::max_retries`](crate::ws::RetryPolicy)).
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        error: String,
    },
    /// A resumable link could not be resumed (after its
    /// [`GatewayEvent::ResumeFailed`]).
    ResumeFailed(ResumeFailure),
    /// [`GatewayNode::disconnect`](crate::gateway::GatewayNode::disconnect) was called.
    Local,
    /// The node stopped.
    Stopped,
}

impl DisconnectCause {
    /// The close code this side sent for the cause, if it sent one.
    pub fn code(&self) -> Option<u16> {
        match self {
            DisconnectCause::HandshakeTimeout => Some(close_code::HANDSHAKE_TIMEOUT),
            DisconnectCause::Version { .. } => Some(close_code::VERSION),
            DisconnectCause::SelfConnection => Some(close_code::SELF_CONNECTION),
            DisconnectCause::Duplicate => Some(close_code::DUPLICATE),
            DisconnectCause::Overflow => Some(close_code::OVERFLOW),
            DisconnectCause::Refused { code, .. } => Some(*code),
            DisconnectCause::Closed { code, .. } => *code,
            DisconnectCause::RetriesExhausted { .. } | DisconnectCause::ResumeFailed(_) => None,
            DisconnectCause::Local | DisconnectCause::Stopped => Some(1000),
        }
    }

    /// True for the causes that end an outbound connection without a redial.
    pub(crate) fn is_final(&self) -> bool {
        !matches!(self, DisconnectCause::Closed { .. })
    }
}

/// One word (kebab case), then the code in parentheses when there is one: what
/// `gateway_node` prints after `disconnected CONNID`.
impl fmt::Display for DisconnectCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectCause::HandshakeTimeout => write!(f, "handshake-timeout (4001)"),
            DisconnectCause::Version { version, min } => {
                write!(f, "version (4002: peer {version}, minimum {min})")
            }
            DisconnectCause::SelfConnection => write!(f, "self-connection (4003)"),
            DisconnectCause::Duplicate => write!(f, "duplicate (4004)"),
            DisconnectCause::Overflow => write!(f, "overflow (4005)"),
            DisconnectCause::Refused { code, reason } if reason.is_empty() => {
                write!(f, "refused-by-peer ({code})")
            }
            DisconnectCause::Refused { code, reason } => {
                write!(f, "refused-by-peer ({code}: {reason})")
            }
            DisconnectCause::Closed {
                code: Some(c),
                reason,
            } => write!(f, "closed ({c}: {reason})"),
            DisconnectCause::Closed { code: None, reason } => write!(f, "closed ({reason})"),
            DisconnectCause::RetriesExhausted { attempts, error } => {
                write!(f, "retries-exhausted ({attempts} attempts: {error})")
            }
            DisconnectCause::ResumeFailed(why) => write!(f, "resume-failed ({why})"),
            DisconnectCause::Local => write!(f, "local"),
            DisconnectCause::Stopped => write!(f, "stopped"),
        }
    }
}

/// What a node's `events` emit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GatewayEvent {
    /// The handshake completed (again, after an `Interrupted`): frames flow.
    Connected {
        /// The connection.
        conn_id: ConnId,
        /// The peer's node id from its HELLO / HELLO_ACK.
        remote_node_id: NodeId,
        /// Who dialed.
        direction: Direction,
    },
    /// A connection's transport dropped: an outbound one redials under the same id, an
    /// inbound resumable one waits to be resumed. Frames sent meanwhile wait (in the overflow
    /// policy, or in the resend buffer of a resumable link).
    Interrupted {
        /// The connection.
        conn_id: ConnId,
    },
    /// A resumable link is back on a new transport: same id, nothing lost, nothing twice.
    Resumed {
        /// The connection.
        conn_id: ConnId,
        /// Frames this side sent again (sent before, not acknowledged, or sent meanwhile).
        replayed: u64,
    },
    /// A resumable link could not be resumed; `Disconnected` follows, and the next handshake
    /// is a fresh link with a new id.
    ResumeFailed {
        /// The connection.
        conn_id: ConnId,
        /// Why.
        cause: ResumeFailure,
        /// Frames this side sent that the other will never get.
        lost: u64,
    },
    /// The connection ended for good: exactly once per connection id.
    Disconnected {
        /// The connection.
        conn_id: ConnId,
        /// The peer, if a handshake ever completed.
        remote_node_id: Option<NodeId>,
        /// Why.
        cause: DisconnectCause,
    },
    /// Sequence numbers missing on a stream (frame types with `stream_id()`/`seq()`): the frame
    /// with `seq` arrived, and `count` numbers before it never did (starting at `first`).
    Gap {
        /// The connection.
        conn_id: ConnId,
        /// The stream.
        stream_id: crate::gateway::StreamId,
        /// The first missing number.
        first: u32,
        /// How many are missing.
        count: u32,
        /// The sequence number that revealed the gap.
        seq: u32,
    },
}

/// A snapshot of one connection ([`GatewayNode::get_connection`](crate::gateway::GatewayNode::get_connection)).
#[derive(Debug, Clone)]
pub struct Connection {
    /// The connection id (kept across an outbound connection's redials).
    pub conn_id: ConnId,
    /// Its state now.
    pub state: ConnectionState,
    /// The peer's node id, once a handshake completed.
    pub remote_node_id: Option<NodeId>,
    /// Who dialed.
    pub direction: Direction,
    /// The peer's address on the current transport.
    pub peer_addr: Option<SocketAddr>,
    /// The URL dialed (outbound only).
    pub url: Option<String>,
    /// The peer's protocol version from the last handshake.
    pub remote_version: Option<u16>,
    /// Streams seen on this connection.
    pub streams: Vec<StreamInfo>,
    /// Its outbound overflow policy and size.
    pub overflow: (OverflowStrategy, usize),
    /// Frames waiting while interrupted (a resumable link: frames not yet acknowledged).
    pub queued: usize,
    /// A resumable link's session id (32 hex digits); `None` for a link without resume.
    pub session: Option<String>,
    /// When the connection was created (`connect_to`, or the accept).
    pub created_at: SystemTime,
}
