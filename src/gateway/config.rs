//! [`GatewayConfig`]: a node's options, with the seed's defaults.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::gateway::{NodeId, ResumeConfig, PROTOCOL_VERSION};
use crate::overflow::OverflowStrategy;
use crate::ws::{RetryPolicy, WSConfig};

/// What to do with a second connection to a node already connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DuplicatePolicy {
    /// Keep every connection (the default): two links to one node are two peers.
    #[default]
    Allow,
    /// Keep one link per remote node. When both nodes dial each other, the link dialed by the
    /// node with the lower id survives on both sides; a later link in the same direction is
    /// refused by the node that dialed it. The other closes with 4004.
    KeepOne,
}

impl std::str::FromStr for DuplicatePolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "allow" => Ok(DuplicatePolicy::Allow),
            "keep-one" => Ok(DuplicatePolicy::KeepOne),
            other => Err(Error::config(
                "duplicates",
                format!("unknown policy {other:?} (expected allow or keep-one)"),
            )),
        }
    }
}

/// A gateway node's options. Defaults follow the seed: listen on `0.0.0.0:8765`, a random node
/// id, `drop-old` with 1,000 frames per connection; plus a 10 s handshake deadline, version 1,
/// 1,024 peers, duplicates allowed.
///
/// ```
/// use rxplus::gateway::{DuplicatePolicy, GatewayConfig};
/// use rxplus::OverflowStrategy;
/// use std::time::Duration;
///
/// let cfg = GatewayConfig::default()
///     .host("127.0.0.1")
///     .port(0)
///     .overflow(OverflowStrategy::BufferK, 500)
///     .handshake_timeout(Duration::from_secs(2))
///     .duplicates(DuplicatePolicy::KeepOne);
/// assert_eq!(cfg.port, 0);
/// ```
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address to listen on (`start`). Default `0.0.0.0`.
    pub host: String,
    /// Port to listen on; 0 picks a free one (see `local_addr`). Default 8765.
    pub port: u16,
    /// This node's id; random when `None`.
    pub node_id: Option<NodeId>,
    /// Each connection's outbound overflow policy. Default `drop-old`.
    pub overflow_strategy: OverflowStrategy,
    /// Each connection's outbound queue size, in frames. Default 1,000.
    pub overflow_size: usize,
    /// The version this node sends in HELLO / HELLO_ACK. Default 1.
    pub protocol_version: u16,
    /// The lowest version accepted from a peer (lower: closed with 4002). Default 1.
    pub min_version: u16,
    /// Total time from the TCP connection to a completed HELLO / HELLO_ACK exchange, upgrade
    /// included (over: closed with 4001). Default 10 s.
    pub handshake_timeout: Duration,
    /// Connections (inbound and outbound, any state) at most; an accept beyond gets HTTP 503,
    /// a `connect_to` beyond an error. Default 1,024.
    pub max_peers: usize,
    /// Second links to one node. Default [`DuplicatePolicy::Allow`].
    pub duplicates: DuplicatePolicy,
    /// The WebSocket settings of every link (frame and message limits, heartbeat, close
    /// timeout, stack size) and, in `ws.retry`, the redial policy of outbound connections.
    pub ws: WSConfig,
    /// Component name for logs and metrics; default `GatewayNode:{node id}`.
    pub name: Option<String>,
    /// Links that survive a dropped transport (replay, exactly once, in order). Default off.
    pub resume: ResumeConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            host: "0.0.0.0".into(),
            port: 8765,
            node_id: None,
            overflow_strategy: OverflowStrategy::DropOld,
            overflow_size: 1000,
            protocol_version: PROTOCOL_VERSION,
            min_version: PROTOCOL_VERSION,
            handshake_timeout: Duration::from_secs(10),
            max_peers: 1024,
            duplicates: DuplicatePolicy::Allow,
            ws: WSConfig::default(),
            name: None,
            resume: ResumeConfig::default(),
        }
    }
}

impl GatewayConfig {
    /// The listen host.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }
    /// The listen port (0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    /// Host and port from `HOST:PORT` (`[v6]:PORT` for IPv6).
    ///
    /// # Errors
    /// [`Error::Config`] when `addr` has no valid port.
    pub fn listen(mut self, addr: &str) -> Result<Self> {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| Error::config("listen", format!("{addr:?}: expected HOST:PORT")))?;
        self.port = port
            .parse()
            .map_err(|_| Error::config("listen", format!("{addr:?}: bad port")))?;
        self.host = host.trim_start_matches('[').trim_end_matches(']').into();
        Ok(self)
    }
    /// This node's id.
    pub fn node_id(mut self, id: NodeId) -> Self {
        self.node_id = Some(id);
        self
    }
    /// Each connection's outbound overflow policy and size.
    pub fn overflow(mut self, strategy: OverflowStrategy, size: usize) -> Self {
        self.overflow_strategy = strategy;
        self.overflow_size = size;
        self
    }
    /// The version sent, and the minimum accepted.
    pub fn versions(mut self, version: u16, min: u16) -> Self {
        self.protocol_version = version;
        self.min_version = min;
        self
    }
    /// The handshake deadline.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }
    /// The most connections.
    pub fn max_peers(mut self, n: usize) -> Self {
        self.max_peers = n;
        self
    }
    /// The duplicate-peer policy.
    pub fn duplicates(mut self, p: DuplicatePolicy) -> Self {
        self.duplicates = p;
        self
    }
    /// The WebSocket settings of every link.
    pub fn ws(mut self, ws: WSConfig) -> Self {
        self.ws = ws;
        self
    }
    /// The redial policy of outbound connections (sets `ws.retry`).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.ws.retry = retry;
        self
    }
    /// The resume settings ([`ResumeConfig::enabled`] turns resume on).
    pub fn resume(mut self, resume: ResumeConfig) -> Self {
        self.resume = resume;
        self
    }
    /// The component name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting: a zero overflow size (but for `disconnect`),
    /// `block` (a gateway never blocks a sender on one slow peer), a zero handshake timeout or
    /// peer limit, a minimum version above our own, a zero resume bound or time, or an
    /// invalid `ws`.
    pub fn validate(&self) -> Result<()> {
        if self.overflow_strategy == OverflowStrategy::Block {
            return Err(Error::config(
                "overflow_strategy",
                "block is not a gateway policy (expected drop-old, drop-new, buffer-k or disconnect)",
            ));
        }
        self.overflow_strategy.build::<()>(self.overflow_size)?;
        if self.handshake_timeout.is_zero() {
            return Err(Error::config("handshake_timeout", "must be above zero"));
        }
        if self.max_peers == 0 {
            return Err(Error::config("max_peers", "must be at least 1"));
        }
        if self.min_version > self.protocol_version {
            return Err(Error::config(
                "min_version",
                format!(
                    "{} is above this node's own version {}",
                    self.min_version, self.protocol_version
                ),
            ));
        }
        self.resume.validate()?;
        self.ws.validate()
    }
}
