//! The three WebSocket stacks under test, reduced to what the workloads share: connecting a
//! client, running a server, and the control surface a server child exposes to the
//! orchestrator ([`RunningServer`]).

use std::net::SocketAddr;

pub mod raw;
pub mod rx;
pub mod tls;
pub mod tokio_ws;

/// A server started by a workload inside a server child process.
pub trait RunningServer {
    /// The address clients connect to.
    fn addr(&self) -> SocketAddr;
    /// WebSocket connections whose handshake has completed and that are still open.
    fn connections(&self) -> usize;
    /// Stops the server and waits until every thread (or task) it started has ended.
    fn dispose(self: Box<Self>);
}

/// Which stack a variant runs on. Variant keys start with the stack's name
/// (`rxplus-blocking` is rxplus, `raw-flush-end` is raw).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    Rxplus,
    Raw,
    Tokio,
}

impl Stack {
    pub fn of(variant: &str) -> anyhow::Result<Stack> {
        if variant.starts_with("rxplus") {
            Ok(Stack::Rxplus)
        } else if variant.starts_with("raw") {
            Ok(Stack::Raw)
        } else if variant.starts_with("tokio") {
            Ok(Stack::Tokio)
        } else {
            anyhow::bail!("unknown implementation {variant:?} (expected rxplus*, raw*, tokio*)")
        }
    }
}

/// The `ws://` URL of `path` on a server.
pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("ws://{addr}{path}")
}
