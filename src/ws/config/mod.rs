//! Configuration: where to connect or listen ([`WSConnectionConfig`]), how connections behave
//! ([`WSConfig`]), and how a client reconnects ([`RetryPolicy`]). Everything is validated when a
//! component is built; a bad value is an [`Error::Config`] naming the field, never a panic.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::overflow::OverflowStrategy;

/// Host, port and path of a WebSocket endpoint a client connects to. Validated at
/// construction.
///
/// ```
/// use rxplus::ws::WSConnectionConfig;
///
/// let c = WSConnectionConfig::new("127.0.0.1", 9001, "/chat")?;
/// assert_eq!(c.url(), "ws://127.0.0.1:9001/chat");
/// let d = WSConnectionConfig::from_url("ws://[::1]:80/a?b=1")?;
/// assert_eq!((d.host(), d.port(), d.path()), ("::1", 80, "/a?b=1"));
/// assert!(WSConnectionConfig::new("", 1, "/").is_err());
/// assert!(WSConnectionConfig::from_url("ws://h:70000/").is_err());
/// assert!(WSConnectionConfig::new("h", 1, "chat").is_err());
/// assert!(WSConnectionConfig::from_url("http://h/").is_err());
/// # Ok::<(), rxplus::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WSConnectionConfig {
    host: String,
    port: u16,
    path: String,
    /// `wss://`: TLS to the server.
    secure: bool,
}

impl WSConnectionConfig {
    /// Validates and builds a config (a server's `local_addr().port()` passes straight in).
    ///
    /// # Errors
    /// [`Error::Config`] for an empty host or one with spaces, or a path not starting with `/`.
    pub fn new(host: impl Into<String>, port: u16, path: impl Into<String>) -> Result<Self> {
        let host = host.into();
        let path = path.into();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map(str::to_owned)
            .unwrap_or(host);
        if host.is_empty() {
            return Err(Error::config("host", "must not be empty"));
        }
        if host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(Error::config(
                "host",
                format!("{host:?} is not a host name or address"),
            ));
        }
        if !path.starts_with('/') {
            return Err(Error::config(
                "path",
                format!("{path:?} must start with '/'"),
            ));
        }
        Ok(WSConnectionConfig {
            host,
            port,
            path,
            secure: false,
        })
    }

    /// Parses `ws://host[:port][/path][?query]` (port defaults to 80) or `wss://…` (TLS,
    /// port defaults to 443; needs the `tls` feature, on by default).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for anything else, including `wss://` in a build without TLS.
    pub fn from_url(url: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: tungstenite::http::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") if cfg!(feature = "tls") => true,
            Some("wss") => {
                return Err(bad(
                    "wss:// (TLS) needs rxplus's `tls` feature, which this build leaves out",
                ))
            }
            Some(other) => return Err(bad(&format!("scheme {other:?} is not ws or wss"))),
            None => return Err(bad("missing ws:// or wss:// scheme")),
        };
        let host = uri.host().ok_or_else(|| bad("missing host"))?;
        // `Uri::port` hides an out-of-range port; read it from the authority text instead.
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        let after_host = authority
            .rsplit_once(']')
            .map(|(_, rest)| rest)
            .unwrap_or(authority);
        let port = match after_host.rsplit_once(':') {
            Some((_, p)) => p
                .parse::<u16>()
                .map_err(|_| bad("invalid port: must be 0..=65535"))?,
            None if secure => 443,
            None => 80,
        };
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        let c = WSConnectionConfig::new(host, port, path).map_err(|e| bad(&e.to_string()))?;
        Ok(WSConnectionConfig { secure, ..c })
    }

    /// A copy that connects with TLS (`wss://`) or without.
    #[cfg(feature = "tls")]
    pub fn secure(mut self, on: bool) -> Self {
        self.secure = on;
        self
    }
    /// Whether this is a `wss://` endpoint.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The host (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The path, with its query if any.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// A copy with another path (used by client groups).
    ///
    /// # Errors
    /// [`Error::Config`] when `path` does not start with `/`.
    pub fn with_path(&self, path: &str) -> Result<Self> {
        let c = WSConnectionConfig::new(self.host.clone(), self.port, path)?;
        Ok(WSConnectionConfig {
            secure: self.secure,
            ..c
        })
    }
    /// `host:port`, with brackets around an IPv6 host.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
    /// `ws://host:port/path` (`wss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.authority(), self.path)
    }
}

impl fmt::Display for WSConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// How a client waits between connection attempts: exponential backoff with a cap, jitter and
/// an optional limit.
///
/// Delay before retry `n` (from 0) is `min(initial_delay * factor^n, max_delay)`, then spread by
/// ±`jitter` (a fraction).
///
/// ```
/// use rxplus::ws::RetryPolicy;
/// use std::time::Duration;
///
/// let p = RetryPolicy::default().jitter(0.0).max_retries(Some(3));
/// assert_eq!(p.delay(0), Duration::from_millis(100));
/// assert_eq!(p.delay(2), Duration::from_millis(400));
/// assert_eq!(p.delay(30), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// First delay. Default 100 ms.
    pub initial_delay: Duration,
    /// Cap on any delay. Default 10 s.
    pub max_delay: Duration,
    /// Growth per retry, at least 1. Default 2.0.
    pub factor: f64,
    /// Random spread as a fraction of the delay, 0..=1. Default 0.1.
    pub jitter: f64,
    /// Give up after this many failed attempts in a row; `None` retries forever. Default `None`.
    pub max_retries: Option<u32>,
    /// A connection counts as healthy, and the backoff starts over from `initial_delay`, only
    /// after it stayed open this long: a server that completes the handshake and then drops
    /// the connection at once is retried with growing delays, not ten times a second. A
    /// connection that ends sooner counts as a failed attempt. Default 5 s.
    pub reset_after: Duration,
    /// Retry after a TLS certificate was refused (unknown issuer, expired, wrong name)
    /// like after any failure. Off by default: such an attempt ends the client at once with
    /// [`Error::Tls`], as retrying cannot fix it (set it while a certificate is being
    /// rotated, say).
    pub retry_certificate_errors: bool,
    /// Retry after the server refused the handshake with a 4xx status other than 408 and 429.
    /// Off by default: such a refusal (401, 403, 404 …) ends the client at once with
    /// [`Error::HandshakeRefused`], as the same request will be refused again. 408, 429 and
    /// 5xx are always retried by the policy.
    pub retry_client_errors: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            factor: 2.0,
            jitter: 0.1,
            max_retries: None,
            reset_after: Duration::from_secs(5),
            retry_certificate_errors: false,
            retry_client_errors: false,
        }
    }
}

impl RetryPolicy {
    /// Sets [`Self::initial_delay`].
    pub fn initial_delay(mut self, d: Duration) -> Self {
        self.initial_delay = d;
        self
    }
    /// Sets [`Self::max_delay`].
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }
    /// Sets [`Self::factor`].
    pub fn factor(mut self, f: f64) -> Self {
        self.factor = f;
        self
    }
    /// Sets [`Self::jitter`].
    pub fn jitter(mut self, j: f64) -> Self {
        self.jitter = j;
        self
    }
    /// Sets [`Self::max_retries`].
    pub fn max_retries(mut self, n: Option<u32>) -> Self {
        self.max_retries = n;
        self
    }
    /// Sets [`Self::reset_after`].
    pub fn reset_after(mut self, d: Duration) -> Self {
        self.reset_after = d;
        self
    }
    /// Sets [`Self::retry_client_errors`].
    pub fn retry_client_errors(mut self, on: bool) -> Self {
        self.retry_client_errors = on;
        self
    }
    /// Sets [`Self::retry_certificate_errors`].
    pub fn retry_certificate_errors(mut self, on: bool) -> Self {
        self.retry_certificate_errors = on;
        self
    }

    /// Whether a failed attempt ends the retrying at once: a refused certificate (unless
    /// [`Self::retry_certificate_errors`]) or a 4xx refusal other than 408 and 429 (unless
    /// [`Self::retry_client_errors`]).
    pub fn gives_up_on(&self, e: &Error) -> bool {
        let refused = e.refused_status().is_some_and(|s| {
            (400..500).contains(&s) && s != 408 && s != 429 && !self.retry_client_errors
        });
        refused || (e.is_certificate_error() && !self.retry_certificate_errors)
    }

    /// The delay before retry `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.initial_delay.as_secs_f64() * self.factor.powi(attempt.min(64) as i32);
        let capped = base.min(self.max_delay.as_secs_f64());
        let spread = if self.jitter > 0.0 {
            1.0 + self.jitter * (rand::random::<f64>() * 2.0 - 1.0)
        } else {
            1.0
        };
        Duration::from_secs_f64((capped * spread).max(0.0))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.initial_delay.is_zero() {
            return Err(Error::config("retry.initial_delay", "must be above zero"));
        }
        if self.max_delay < self.initial_delay {
            return Err(Error::config(
                "retry.max_delay",
                "must be at least initial_delay",
            ));
        }
        if !(self.factor >= 1.0 && self.factor.is_finite()) {
            return Err(Error::config(
                "retry.factor",
                format!("{} must be >= 1", self.factor),
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::config(
                "retry.jitter",
                format!("{} must be within 0..=1", self.jitter),
            ));
        }
        Ok(())
    }
}

/// Connection behaviour shared by servers, clients and groups. Public fields with defaults and
/// chained setters; validated when a component is built.
///
/// ```
/// use rxplus::ws::WSConfig;
/// use rxplus::OverflowStrategy;
/// use std::time::Duration;
///
/// let cfg = WSConfig::default()
///     .name("edge")
///     .ping_interval(Some(Duration::from_secs(5)))
///     .outbound(256, OverflowStrategy::DropOld);
/// assert!(cfg.validate().is_ok());
/// assert!(WSConfig::default().outbound(0, OverflowStrategy::Block).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WSConfig {
    /// Component name for logs and thread names; `None` derives one from the address
    /// (`RxWSServer:host:port`, `RxWSClient:ws://host:port/path`). Default `None`.
    pub name: Option<String>,
    /// Largest incoming message. Default 16 MiB.
    pub max_message_size: usize,
    /// Largest incoming frame payload. Default 16 MiB.
    pub max_frame_size: usize,
    /// Total time allowed for the opening handshake, from accept (server) or from the start of
    /// the TCP connect (client) to a completed upgrade: a peer trickling bytes cannot stretch
    /// it. Default 10 s.
    pub handshake_timeout: Duration,
    /// Server (and a gateway node's accepting side, up to the end of the HELLO exchange):
    /// connections still in the opening handshake at once; more are answered `503` before any
    /// upgrade. They count against [`Self::max_connections`] too. Default 256.
    pub max_handshakes: usize,
    /// Close a connection whose peer takes fewer than 64 KiB of what waits for it (or all of
    /// it, when less waits) in this long: a total deadline on a stalled write, however the
    /// peer trickles. The close is logged at WARN (`write timeout`) and carries code 1008
    /// when the socket can still take it. Default 10 s.
    pub write_timeout: Duration,
    /// Send a ping this often; `None` disables heartbeats. Default 20 s.
    pub ping_interval: Option<Duration>,
    /// Close a connection whose pong has not arrived this long after a ping; `None` never
    /// closes for a missing pong. Needs `ping_interval`. Default 20 s.
    pub ping_timeout: Option<Duration>,
    /// Bound on the graceful close: flushing queued items, then waiting for the peer's close
    /// frame. Default 2 s.
    pub close_timeout: Duration,
    /// Outbound messages queued per connection (per client, across reconnects). Default 1024.
    pub outbound_capacity: usize,
    /// What a full outbound queue does. `None` (the default) takes the component's own:
    /// [`OverflowStrategy::DropOld`] for a server (a send never waits on a connection; one that
    /// falls `outbound_capacity` messages or `outbound_max_bytes` behind loses its oldest
    /// queued messages, counted and logged, and one that takes nothing for
    /// [`Self::write_timeout`] is closed: one slow reader never holds up a broadcast or the
    /// others on its path), [`OverflowStrategy::Block`] for a client or group (the sender
    /// waits until the writer makes room: backpressure on the one producer that feeds the
    /// connection). See [`Self::overflow_for`].
    pub outbound_overflow: Option<OverflowStrategy>,
    /// Payload bytes queued per connection (per client, across reconnects). Going over it is an
    /// overflow like a full queue, handled by `outbound_overflow`; one message larger than this
    /// is still accepted when nothing is queued. Default 1 MiB.
    pub outbound_max_bytes: usize,
    /// Capacity of each `stream()` receiver. Default 1024.
    pub stream_capacity: usize,
    /// Most connections a server holds at once, counting those still in the handshake; more
    /// are refused with HTTP 503 before any upgrade. Default: derived from the process's
    /// descriptor limit when the config is made (soft `RLIMIT_NOFILE`, less 64 for the rest of
    /// the process, three quarters of that: 720 at the common 1,024; each connection holds
    /// one descriptor); 10,000 where the limit cannot be read. See
    /// [`default_max_connections`].
    pub max_connections: usize,
    /// Server and gateway node: the listen backlog (connections the kernel queues before
    /// `accept`; Linux caps it at `net.core.somaxconn`). Default 1,024.
    pub listen_backlog: u32,
    /// Server only: bytes of partial inbound messages all connections may hold together.
    /// Each connection reads its first 64 KiB towards a message freely; beyond that it draws
    /// on this budget, and when it is spent the connection stops reading (TCP pushes back on
    /// the peer) until other messages complete. One connection at a time may go over it by up
    /// to one message, so the largest message always fits. Completed messages keep flowing.
    /// Default 256 MiB.
    pub inbound_budget: usize,
    /// Per-connection read buffer: what each read offers at first. Default 8 KiB: it stays
    /// resident for each connection (the offered part is zeroed before each read), so 10,000
    /// idle connections cost 80 MiB in it. While a peer streams, reads grow to 64 KiB (or to
    /// this size, if larger) and shrink back when it stops; a larger frame is read into room
    /// reserved for it.
    pub read_buffer_size: usize,
    /// Stack size of connection threads. Default 256 KiB.
    pub thread_stack_size: usize,
    /// Client and group only: how to reconnect. Default [`RetryPolicy::default`].
    pub retry: RetryPolicy,
    /// Client and group only: queue items sent while disconnected (in order, delivered after the
    /// next connect) instead of dropping them. Default `false`.
    pub buffer_while_disconnected: bool,
    /// Server only: decides every opening handshake (accept, choose a subprotocol, add
    /// response headers, or refuse with a status). See [`AcceptHook`](crate::ws::AcceptHook).
    /// Default `None`: every handshake on an allowed path is accepted.
    pub accept_hook: Option<crate::ws::AcceptHook>,
    /// Server only: a scale-out broker ([`Broker`](crate::ws::broker::Broker), e.g.
    /// `RedisBroker` with the `redis` feature). Every outbound path broadcast is also
    /// published for the other instances, and what they publish reaches this server's
    /// connections on the path. One broker serves one server; `dispose` stops it. See
    /// `docs/scale-out.md`. Default `None`.
    pub broker: Option<crate::ws::broker::SharedBroker>,
    /// Server only: the paths served; a handshake for any other path is refused with `404`
    /// before the accept hook runs. Default `None`: every path.
    pub allowed_paths: Option<Vec<String>>,
    /// Client and group: extra request headers on every handshake (e.g. `Authorization`),
    /// kept across reconnects. Default none.
    pub request_headers: Vec<(String, String)>,
    /// Client and group: subprotocols offered on every handshake, in order of preference
    /// (`Sec-WebSocket-Protocol`). Default none.
    pub subprotocols: Vec<String>,
    /// Server and gateway node: serve `wss://` with this certificate; every connection must
    /// then start with a TLS handshake (within `handshake_timeout`), a plain one is cut.
    /// Default `None` (plain `ws://`).
    #[cfg(feature = "tls")]
    pub tls_server: Option<crate::tls::ServerTls>,
    /// Client, group and gateway node dialing `wss://` URLs: whom to trust. Default `None`:
    /// Mozilla's roots ([`ClientTls::webpki_roots`](crate::tls::ClientTls::webpki_roots)).
    #[cfg(feature = "tls")]
    pub tls_client: Option<crate::tls::ClientTls>,
}

impl Default for WSConfig {
    fn default() -> Self {
        WSConfig {
            name: None,
            max_message_size: 16 << 20,
            max_frame_size: 16 << 20,
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 256,
            write_timeout: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Some(Duration::from_secs(20)),
            close_timeout: Duration::from_secs(2),
            outbound_capacity: 1024,
            outbound_overflow: None,
            outbound_max_bytes: 1 << 20,
            stream_capacity: 1024,
            max_connections: default_max_connections(),
            listen_backlog: 1024,
            inbound_budget: 256 << 20,
            read_buffer_size: 8 << 10,
            thread_stack_size: 256 << 10,
            retry: RetryPolicy::default(),
            buffer_while_disconnected: false,
            accept_hook: None,
            broker: None,
            allowed_paths: None,
            request_headers: Vec::new(),
            subprotocols: Vec::new(),
            #[cfg(feature = "tls")]
            tls_server: None,
            #[cfg(feature = "tls")]
            tls_client: None,
        }
    }
}

impl WSConfig {
    /// Sets [`Self::name`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Sets [`Self::max_message_size`]; lowers [`Self::max_frame_size`] to it if it was larger
    /// (raise the frame limit separately with [`Self::max_frame_size`]).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self.max_frame_size = self.max_frame_size.min(bytes);
        self
    }
    /// Sets [`Self::max_frame_size`].
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }
    /// Sets [`Self::handshake_timeout`].
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }
    /// Sets [`Self::ping_interval`].
    pub fn ping_interval(mut self, d: Option<Duration>) -> Self {
        self.ping_interval = d;
        self
    }
    /// Sets [`Self::ping_timeout`].
    pub fn ping_timeout(mut self, d: Option<Duration>) -> Self {
        self.ping_timeout = d;
        self
    }
    /// Disables heartbeats (no pings, no pong timeout).
    pub fn no_heartbeat(mut self) -> Self {
        self.ping_interval = None;
        self.ping_timeout = None;
        self
    }
    /// Sets [`Self::close_timeout`].
    pub fn close_timeout(mut self, d: Duration) -> Self {
        self.close_timeout = d;
        self
    }
    /// Sets [`Self::outbound_capacity`] and [`Self::outbound_overflow`].
    pub fn outbound(mut self, capacity: usize, overflow: OverflowStrategy) -> Self {
        self.outbound_capacity = capacity;
        self.outbound_overflow = Some(overflow);
        self
    }
    /// Sets [`Self::outbound_max_bytes`].
    pub fn outbound_max_bytes(mut self, bytes: usize) -> Self {
        self.outbound_max_bytes = bytes;
        self
    }
    /// Sets [`Self::stream_capacity`].
    pub fn stream_capacity(mut self, n: usize) -> Self {
        self.stream_capacity = n;
        self
    }
    /// Sets [`Self::max_handshakes`].
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n;
        self
    }
    /// Sets [`Self::write_timeout`].
    pub fn write_timeout(mut self, d: Duration) -> Self {
        self.write_timeout = d;
        self
    }
    /// Sets [`Self::listen_backlog`].
    pub fn listen_backlog(mut self, n: u32) -> Self {
        self.listen_backlog = n;
        self
    }
    /// Sets [`Self::inbound_budget`].
    pub fn inbound_budget(mut self, bytes: usize) -> Self {
        self.inbound_budget = bytes;
        self
    }
    /// The overflow policy a component uses: [`Self::outbound_overflow`] if set, otherwise
    /// `drop-old` for a server and `block` for a client or group.
    pub fn overflow_for(&self, server: bool) -> OverflowStrategy {
        self.outbound_overflow.unwrap_or(if server {
            OverflowStrategy::DropOld
        } else {
            OverflowStrategy::Block
        })
    }
    /// Sets [`Self::max_connections`].
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }
    /// Sets [`Self::read_buffer_size`].
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes;
        self
    }
    /// Sets [`Self::thread_stack_size`].
    pub fn thread_stack_size(mut self, bytes: usize) -> Self {
        self.thread_stack_size = bytes;
        self
    }
    /// Sets [`Self::retry`].
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    /// Sets [`Self::buffer_while_disconnected`].
    pub fn buffer_while_disconnected(mut self, on: bool) -> Self {
        self.buffer_while_disconnected = on;
        self
    }
    /// Sets [`Self::accept_hook`].
    pub fn accept_hook(mut self, hook: crate::ws::AcceptHook) -> Self {
        self.accept_hook = Some(hook);
        self
    }
    /// Sets [`Self::broker`].
    pub fn broker(mut self, broker: impl Into<crate::ws::broker::SharedBroker>) -> Self {
        self.broker = Some(broker.into());
        self
    }
    /// Sets [`Self::allowed_paths`].
    pub fn allowed_paths<S: Into<String>>(mut self, paths: impl IntoIterator<Item = S>) -> Self {
        self.allowed_paths = Some(paths.into_iter().map(Into::into).collect());
        self
    }
    /// Adds a request header (see [`Self::request_headers`]).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.request_headers.push((name.into(), value.into()));
        self
    }
    /// Adds an offered subprotocol (see [`Self::subprotocols`]).
    pub fn subprotocol(mut self, p: impl Into<String>) -> Self {
        self.subprotocols.push(p.into());
        self
    }
    /// Sets [`Self::tls_server`].
    #[cfg(feature = "tls")]
    pub fn tls_server(mut self, tls: crate::tls::ServerTls) -> Self {
        self.tls_server = Some(tls);
        self
    }
    /// Sets [`Self::tls_client`].
    #[cfg(feature = "tls")]
    pub fn tls_client(mut self, tls: crate::tls::ClientTls) -> Self {
        self.tls_client = Some(tls);
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        if matches!(&self.name, Some(n) if n.is_empty()) {
            return Err(Error::config("name", "must not be empty"));
        }
        if self.max_message_size == 0 {
            return Err(Error::config("max_message_size", "must be above zero"));
        }
        if self.max_frame_size == 0 || self.max_frame_size > self.max_message_size {
            return Err(Error::config(
                "max_frame_size",
                "must be above zero and at most max_message_size",
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(Error::config("handshake_timeout", "must be above zero"));
        }
        if self.ping_interval.is_some_and(|d| d.is_zero()) {
            return Err(Error::config(
                "ping_interval",
                "must be above zero (use None to disable)",
            ));
        }
        match (self.ping_interval, self.ping_timeout) {
            (None, Some(_)) => {
                return Err(Error::config(
                    "ping_timeout",
                    "needs ping_interval to be set",
                ))
            }
            (_, Some(t)) if t.is_zero() => {
                return Err(Error::config(
                    "ping_timeout",
                    "must be above zero (use None to disable)",
                ))
            }
            _ => {}
        }
        if self.close_timeout.is_zero() {
            return Err(Error::config("close_timeout", "must be above zero"));
        }
        if self.outbound_capacity == 0
            && self.outbound_overflow != Some(OverflowStrategy::Disconnect)
        {
            return Err(Error::config("outbound_capacity", "must be above zero"));
        }
        if self.outbound_max_bytes == 0 {
            return Err(Error::config("outbound_max_bytes", "must be above zero"));
        }
        if self.stream_capacity == 0 {
            return Err(Error::config("stream_capacity", "must be above zero"));
        }
        if self.max_connections == 0 {
            return Err(Error::config("max_connections", "must be above zero"));
        }
        if self.max_handshakes == 0 {
            return Err(Error::config("max_handshakes", "must be above zero"));
        }
        if self.write_timeout.is_zero() {
            return Err(Error::config("write_timeout", "must be above zero"));
        }
        if self.listen_backlog == 0 {
            return Err(Error::config("listen_backlog", "must be above zero"));
        }
        if self.inbound_budget < 1 << 20 {
            return Err(Error::config("inbound_budget", "must be at least 1 MiB"));
        }
        for (name, value) in &self.request_headers {
            if tungstenite::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(Error::config(
                    "request_headers",
                    format!("{name:?} is not a header name"),
                ));
            }
            if tungstenite::http::HeaderValue::from_str(value).is_err() {
                return Err(Error::config(
                    "request_headers",
                    format!("the value of {name} is not a header value"),
                ));
            }
        }
        for p in &self.subprotocols {
            let token = !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            if !token {
                return Err(Error::config(
                    "subprotocols",
                    format!("{p:?} is not a protocol token"),
                ));
            }
        }
        if let Some(paths) = &self.allowed_paths {
            if let Some(p) = paths.iter().find(|p| !p.starts_with('/')) {
                return Err(Error::config(
                    "allowed_paths",
                    format!("{p:?} must start with '/'"),
                ));
            }
        }
        if self.read_buffer_size < 1024 {
            return Err(Error::config("read_buffer_size", "must be at least 1024"));
        }
        if self.thread_stack_size < 64 << 10 {
            return Err(Error::config(
                "thread_stack_size",
                "must be at least 64 KiB",
            ));
        }
        self.retry.validate()
    }

    /// The config tungstenite's opening handshake runs with: the `WebSocket` it returns never
    /// reads (our parser does, `conn/parse.rs`), so it gets no read buffer.
    pub(crate) fn handshake_config(&self) -> tungstenite::protocol::WebSocketConfig {
        self.tungstenite().read_buffer_size(0)
    }

    pub(crate) fn tungstenite(&self) -> tungstenite::protocol::WebSocketConfig {
        tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(0)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_frame_size))
    }
}

/// The default [`WSConfig::max_connections`]: from the soft `RLIMIT_NOFILE`, 64 descriptors
/// left for the rest of the process and three quarters of the remainder for connections (one
/// descriptor each), so accepting never runs the process out of descriptors; 10,000 where the
/// limit cannot be read.
/// ```
/// let n = rxplus::ws::default_max_connections();
/// assert!(n >= 1);
/// ```
pub fn default_max_connections() -> usize {
    match nofile_limit() {
        Some(limit) => (limit.saturating_sub(64) / 4 * 3).max(1),
        None => 10_000,
    }
}

/// The soft descriptor limit, from `/proc/self/limits` (Linux; no `unsafe` for `getrlimit`).
fn nofile_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests;
