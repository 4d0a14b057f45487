//! Telemetry conventions: the names of log events, log keys and metrics, in one place.
//!
//! The crate reports through two facades and never installs anything by itself:
//!
//! * **Logs**: every lifecycle event is a [`log`] record whose message is an event name from
//!   [`event`] and whose structured key-values use the names in [`key`] (`log`'s `kv` feature).
//!   Lifecycle events are INFO, decode errors and overflow disconnects WARN, per-message detail
//!   DEBUG. With no logger installed, or at INFO and above, nothing is formatted or allocated per
//!   message: each per-message record is one relaxed load of `log`'s max level.
//! * **Metrics**: the instruments named in [`metric`], registered with the OpenTelemetry global
//!   meter provider. The counters are the atomics every component already keeps (see
//!   [`StatsSnapshot`](crate::ws::StatsSnapshot)); the instruments are *observable*, so they are
//!   read when the provider collects and cost nothing per message. With no provider installed
//!   the global one is a no-op.
//!
//! Both are opt-in at the application: install any `log` logger (e.g. `env_logger`), and/or any
//! OpenTelemetry meter provider. With the cargo feature `telemetry`, `install` does both for
//! OpenTelemetry in one call (`log` bridged to an OpenTelemetry logger provider with
//! `opentelemetry-appender-log`), and `init_stdout` does it with the stdout exporters:
//!
//! ```no_run
//! // Cargo.toml: rxplus = { version = "0.1", features = ["telemetry"] }
//! # #[cfg(feature = "telemetry")] {
//! let _telemetry = rxplus::telemetry::init_stdout()?; // flushes and shuts down on drop
//! // ... start servers and clients ...
//! # }
//! # Ok::<(), rxplus::Error>(())
//! ```
//!
//! `docs/telemetry.md` has the event table, the metric table and how to plug in any exporter.
//!
//! A later layer (the gateway) uses the same keys (with [`key::NODE_ID`]) and event names, and
//! its own metric prefix.

mod metrics;
#[cfg(feature = "telemetry")]
mod setup;

pub use metrics::register_instruments;
pub(crate) use metrics::{record_handshake, track, Kind, Outcome, Tracked};
#[cfg(feature = "telemetry")]
pub use setup::{init_stdout, install, TelemetryGuard};

/// Log event names: the message of every record the crate logs.
///
/// Levels: INFO for lifecycle events, WARN for decode errors, overflow disconnects and
/// failures the component survives, DEBUG for per-message detail. `docs/telemetry.md` lists
/// the keys each event carries.
pub mod event {
    /// INFO. A server bound its address and accepts. Keys: `component`, `addr`.
    pub const SERVER_STARTED: &str = "Server started";
    /// INFO. A server was disposed; every thread it started has exited. Keys: `component`.
    pub const SERVER_STOPPED: &str = "Server stopped";
    /// INFO. A graceful shutdown (`on_completed` or `on_error`) began. Keys: `component`.
    pub const COMPLETING: &str = "Completing";
    /// WARN. A client's graceful completion ended with items it could not deliver within its
    /// bound (they are dropped; an `Undelivered` error reaches the errors stream). Keys:
    /// `component`, `path`, `count`.
    pub const COMPLETED_UNDELIVERED: &str = "Completed with undelivered items";
    /// INFO. The WebSocket opening handshake succeeded. Keys: `component`, `conn_id`, `path`,
    /// `peer`, `duration_ms`.
    pub const HANDSHAKE_COMPLETED: &str = "Handshake completed";
    /// INFO (DEBUG when the socket failed before a request arrived). A server refused an
    /// upgrade (a plain HTTP request gets 426, a malformed upgrade 400). Keys: `component`,
    /// `peer`, `error`, `status`, `duration_ms`.
    pub const HANDSHAKE_FAILED: &str = "Handshake failed";
    /// INFO. A server refused a handshake by its allowed paths (404) or its accept hook (the
    /// hook's status). Keys: `component`, `peer`, `path`, `status`, `duration_ms`.
    pub const HANDSHAKE_REFUSED: &str = "Handshake refused";
    /// ERROR. A server's accept hook panicked or answered something unusable (a status outside
    /// 400–599, a subprotocol the client did not offer, an invalid header): the handshake is
    /// refused with 500. Keys: `component`, `peer`, `path`, `panic` or `error`.
    pub const ACCEPT_HOOK_FAILED: &str = "Accept hook failed";
    /// INFO. A server's handshake did not finish by its deadline (`handshake_timeout`, total,
    /// from accept); the connection is closed. Keys: `component`, `peer`, `duration_ms`.
    pub const HANDSHAKE_TIMED_OUT: &str = "Handshake timed out";
    /// INFO. A connection is open and delivers. Keys: `component`, `conn_id`, `path`, `peer`.
    pub const CONNECTION_OPENED: &str = "Connection opened";
    /// INFO. A connection ended. Keys: `component`, `conn_id`, `path`, `peer`, `reason`,
    /// `close_code` and `close_reason` (the closing side's, or the cause without a close
    /// frame), `peer_close_code` and `sent_close_code` (each side's close frame, if any).
    pub const CONNECTION_CLOSED: &str = "Connection closed";
    /// INFO. A client's connection state changed. Keys: `component`, `path`, `state`.
    pub const CLIENT_STATE: &str = "Client state";
    /// INFO. A client's connection attempt failed; it retries after a delay. Keys:
    /// `component`, `path`, `attempt`, `delay_ms`, `error`.
    pub const CONNECT_RETRY: &str = "Connect retry";
    /// WARN. A client gave up: `max_retries` exhausted. Keys: `component`, `path`, `attempt`,
    /// `error`.
    pub const RETRIES_EXHAUSTED: &str = "Retries exhausted";
    /// INFO. A client group started the client for a path. Keys: `component`, `path`.
    pub const GROUP_PATH_OPENED: &str = "Group path opened";
    /// INFO. A client group and its clients were disposed. Keys: `component`.
    pub const GROUP_STOPPED: &str = "Group stopped";
    /// WARN. A received message could not be decoded; it was skipped. Keys: `component`,
    /// `conn_id`, `path`, `datatype`, `error`.
    pub const DECODE_ERROR: &str = "Frame decode error";
    /// WARN. An outbound queue's policy (`buffer-k`, `disconnect`) refused a message and the
    /// connection is closed. Keys: `component`, `conn_id`, `policy`, `capacity`.
    pub const OVERFLOW_DISCONNECT: &str = "Overflow disconnect";
    /// WARN. No pong within `ping_timeout`: the connection is closed. Keys: `component`,
    /// `conn_id`, `peer`, `timeout_ms`.
    pub const HEARTBEAT_TIMEOUT: &str = "Heartbeat timeout";
    /// WARN. A peer took fewer than 64 KiB of what waited for it within `write_timeout`: the
    /// connection is cut (with a 1008 close frame if the socket still takes one). Keys:
    /// `component`, `conn_id`, `peer`, `timeout_ms`.
    pub const WRITE_TIMEOUT: &str = "Write timeout";
    /// WARN. A server's inbound budget is spent: connections with partial messages stop
    /// reading until others complete. Logged when the first reader starts waiting. Keys:
    /// `component`, `used`, `budget`.
    pub const INBOUND_BUDGET_SPENT: &str = "Inbound budget spent";
    /// WARN, once per connection. Its outbound queue overflowed and the policy (`drop-old`,
    /// the server's default, or `drop-new`) started dropping: the reader falls behind. Further
    /// drops are counted (`overflow_dropped`) and logged at DEBUG. Keys: `component`,
    /// `conn_id`, `policy`, `capacity`.
    pub const SLOW_READER: &str = "Slow reader";
    /// WARN. A new connection was answered 503 before any upgrade, without blocking the
    /// accept thread. Keys: `component`, `peer`, `reason`, `status` (503), and `limit` with
    /// every reason but `descriptors`. `reason`: `max_handshakes` (handshakes in progress),
    /// `max_connections` (open connections and those in their handshake), `descriptors` (out
    /// of file descriptors: accepted on the spare descriptor), or on a gateway node
    /// `max_peers`.
    pub const CONNECTION_REFUSED: &str = "Connection refused";
    /// WARN. A server's `accept` failed and nothing could be done at once (out of descriptors
    /// with no spare descriptor to give up, or another error); it backs off 50 ms and goes on.
    /// Keys: `component`, `error`.
    pub const ACCEPT_FAILED: &str = "Accept failed";
    /// WARN. A connection could not be set up (thread or socket failure); when no thread could
    /// be started for an accepted connection it is answered 503. Keys: `component`, `peer`,
    /// `error`, `status` (503, in that case).
    pub const CONNECTION_SETUP_FAILED: &str = "Connection setup failed";
    /// WARN, once per server. More distinct paths than metrics keep apart (256): further
    /// paths are counted under the path `_other`. Keys: `component`, `path`, `limit`.
    pub const PATH_LIMIT: &str = "Path limit reached";
    /// ERROR. A subscriber panicked; it was unsubscribed. Keys: `component`, `subscriber`.
    pub const SUBSCRIBER_PANICKED: &str = "Subscriber panicked";
    /// DEBUG, per message. A data message arrived (before decoding). Keys: `component`,
    /// `conn_id`, `path`, `bytes`.
    pub const MESSAGE_RECEIVED: &str = "Message received";
    /// DEBUG, per message. An outbound item was encoded and handed to its connection(s)
    /// (written or queued). Keys: `component`, `path`, `conn_id` (one recipient) or
    /// `recipients`, `bytes`.
    pub const MESSAGE_SENT: &str = "Message sent";
    /// DEBUG, per message. The outbound overflow policy dropped a message (`drop-old` evicts
    /// the oldest, `drop-new` refuses the newest). Keys: `component`, `conn_id`, `policy`.
    pub const OVERFLOW_DROP: &str = "Overflow drop";
    /// DEBUG. Outbound items dropped because no connection could take them (client not
    /// connected with buffering off, reply to a closed connection, queue dropped on
    /// disconnect or dispose). Keys: `component`, `path` or `conn_id`, `reason`, `count`.
    pub const MESSAGE_DROPPED: &str = "Message dropped";
    /// INFO. A gateway node bound its address and accepts. Keys: `component`, `node_id`,
    /// `addr` (the seed's `host:port`).
    pub const GATEWAY_STARTED: &str = "GatewayNode started";
    /// INFO. A gateway node's `stop` began. Keys: `component`, `node_id`.
    pub const GATEWAY_STOPPING: &str = "GatewayNode stopping";
    /// INFO. A gateway node stopped; every thread it started has exited. Keys: `component`,
    /// `node_id`.
    pub const GATEWAY_STOPPED: &str = "GatewayNode stopped";
    /// INFO. A gateway HELLO / HELLO_ACK exchange failed or was refused. Keys: `component`,
    /// `conn_id`, `cause`, `code`.
    pub const GATEWAY_HANDSHAKE_FAILED: &str = "Gateway handshake failed";
    /// INFO. A gateway connection lost its transport: an outbound one redials, a resumable
    /// inbound one waits for its resume. Keys:
    /// `component`, `conn_id`, `reason`.
    pub const GATEWAY_INTERRUPTED: &str = "Connection interrupted";
    /// INFO. A resumable gateway link is back on a new transport, same id. Keys: `component`,
    /// `conn_id`, `remote_node_id`, `replayed`, `duration_ms`.
    pub const GATEWAY_RESUMED: &str = "Connection resumed";
    /// INFO. A scale-out broker started connecting for its server. Keys: `component`,
    /// `addr` (Redis, without credentials), `instance`, `prefix`.
    pub const BROKER_STARTED: &str = "Broker started";
    /// INFO. A broker stopped; its threads have exited. Keys: `component`, `dropped`
    /// (messages still queued, dropped).
    pub const BROKER_STOPPED: &str = "Broker stopped";
    /// INFO. A broker's connection state changed. Keys: `component`, `state`.
    pub const BROKER_STATE: &str = "Broker state";
    /// INFO. A broker is connected (both connections up), first or again. Keys:
    /// `component`, `dropped` (cross-instance messages dropped while it was not).
    pub const BROKER_CONNECTED: &str = "Broker connected";
    /// WARN. A broker connection to Redis broke: local delivery continues, cross-instance
    /// messages are dropped (and counted) until it reconnects. Keys: `component`, `role`
    /// (`publisher`, `subscriber`), `error`.
    pub const BROKER_DOWN: &str = "Broker down; cross-instance messages dropped until reconnect";
    /// INFO. A broker connection attempt failed; it retries after a delay. Keys: `component`,
    /// `role`, `attempt`, `delay_ms`, `error`.
    pub const BROKER_RETRY: &str = "Broker connect retry";
    /// WARN. A broker connection gave up (`max_retries`); the broker is closed and the server
    /// delivers locally only. Keys: `component`, `role`, `attempt`, `error`.
    pub const BROKER_GAVE_UP: &str = "Broker retries exhausted";
    /// WARN, when it starts. A broker's publish queue is full: new path messages are dropped
    /// (counted) until it has room. Keys: `component`, `path`, `capacity`.
    pub const BROKER_QUEUE_FULL: &str = "Broker queue full";
    /// DEBUG, per message. A path message was not published. Keys: `component`, `path`,
    /// `reason`, `count`.
    pub const BROKER_DROPPED: &str = "Broker message dropped";
    /// WARN. A broker received something that is not an envelope it can read; skipped. Keys:
    /// `component`, `path`, `error`.
    pub const BROKER_DECODE_ERROR: &str = "Broker envelope error";
    /// WARN. Messages of another instance never arrived (sequence numbers skipped: Redis
    /// pub/sub is at-most-once). Keys: `component`, `instance`, `count`.
    pub const BROKER_LOST: &str = "Broker messages lost";
    /// WARN. A resumable gateway link could not be resumed; it ends. Keys: `component`,
    /// `conn_id`, `cause`, `lost`.
    pub const GATEWAY_RESUME_FAILED: &str = "Resume failed";
}

/// Log keys (structured key-values of `log` records) and metric attribute keys.
pub mod key {
    /// The component's name: `RxWSServer:host:port`, `RxWSClient:ws://host:port/path`,
    /// `{group}:{path}` for a group's clients, or `WSConfig::name`.
    pub const COMPONENT: &str = "component";
    /// A connection's id (UUID, 32 hex digits).
    pub const CONN_ID: &str = "conn_id";
    /// The WebSocket path, without the query string.
    pub const PATH: &str = "path";
    /// The peer's socket address.
    pub const PEER: &str = "peer";
    /// A gateway node's id (reserved for the gateway layer).
    pub const NODE_ID: &str = "node_id";
    /// An error's text.
    pub const ERROR: &str = "error";
    /// An overflow policy's name: `drop-old`, `drop-new`, `buffer-k`, `disconnect`, `block`.
    pub const POLICY: &str = "policy";
    /// A client's connection state: `connecting`, `connected`, `disconnected`,
    /// `reconnecting`, `closed`.
    pub const STATE: &str = "state";
    /// A retry delay, milliseconds.
    pub const DELAY_MS: &str = "delay_ms";
    /// Which connection attempt (1 for the first failure).
    pub const ATTEMPT: &str = "attempt";
    /// A duration, milliseconds (fractional).
    pub const DURATION_MS: &str = "duration_ms";
    /// A server's bound address.
    pub const ADDR: &str = "addr";
    /// Why a connection closed or an item was dropped.
    pub const REASON: &str = "reason";
    /// A datatype's name: `text`, `bytes`, `json`, `raw`.
    pub const DATATYPE: &str = "datatype";
    /// A message's payload size, bytes.
    pub const BYTES: &str = "bytes";
    /// How many items.
    pub const COUNT: &str = "count";
    /// How many connections an outbound item went to.
    pub const RECIPIENTS: &str = "recipients";
    /// A queue's capacity.
    pub const CAPACITY: &str = "capacity";
    /// A timeout, milliseconds.
    pub const TIMEOUT_MS: &str = "timeout_ms";
    /// An HTTP status the server answered with.
    pub const STATUS: &str = "status";
    /// A configured limit that was reached.
    pub const LIMIT: &str = "limit";
    /// A subscriber's id.
    pub const SUBSCRIBER: &str = "subscriber";
    /// A broker connection's role: `publisher` or `subscriber`.
    pub const ROLE: &str = "role";
    /// A broker instance's id (UUID).
    pub const INSTANCE: &str = "instance";
    /// Metric attribute of `rxplus.ws.handshake.duration`: `ok`, `failed`, `timeout`.
    pub const OUTCOME: &str = "outcome";
}

/// Metric names (OpenTelemetry instrument names; units in the instrument's `unit`).
///
/// Every point carries `component`, and `path` where there is one (a client's path; for a
/// server, the path of the connections counted, see [`key::PATH`]).
pub mod metric {
    /// Observable counter, `{message}`: data messages received.
    pub const MESSAGES_IN: &str = "rxplus.ws.messages.in";
    /// Observable counter, `{message}`: data messages written to sockets.
    pub const MESSAGES_OUT: &str = "rxplus.ws.messages.out";
    /// Observable counter, `By`: payload bytes received.
    pub const BYTES_IN: &str = "rxplus.ws.bytes.in";
    /// Observable counter, `By`: payload bytes written to sockets.
    pub const BYTES_OUT: &str = "rxplus.ws.bytes.out";
    /// Observable up-down counter, `{connection}`: connections open now.
    pub const CONNECTIONS_OPEN: &str = "rxplus.ws.connections.open";
    /// Observable counter, `{attempt}`: client connection attempts, the first included.
    pub const CONNECT_ATTEMPTS: &str = "rxplus.ws.connect.attempts";
    /// Observable counter, `{message}`: outbound items dropped. Attribute `reason`:
    /// `overflow` (with `policy`, the outbound overflow policy) or `disconnected` (no
    /// connection could take it).
    pub const DROPPED: &str = "rxplus.ws.dropped";
    /// Observable counter, `{error}`: received messages that failed to decode.
    pub const DECODE_ERRORS: &str = "rxplus.ws.decode_errors";
    /// Histogram, `s`: opening handshake durations (a client's TCP connect included).
    /// Attribute `outcome`: `ok`, `failed`, `timeout`.
    pub const HANDSHAKE_DURATION: &str = "rxplus.ws.handshake.duration";
    /// Observable counter, `{message}`: path messages a scale-out broker published.
    pub const BROKER_PUBLISHED: &str = "rxplus.broker.published";
    /// Observable counter, `{message}`: path messages of other instances a broker received.
    pub const BROKER_RECEIVED: &str = "rxplus.broker.received";
    /// Observable counter, `{message}`: path messages a broker did not publish (down, queue
    /// full, publish failed).
    pub const BROKER_DROPPED: &str = "rxplus.broker.dropped";
    /// Observable counter, `{message}`: messages of other instances that never arrived.
    pub const BROKER_LOST: &str = "rxplus.broker.lost";
    /// Observable counter, `{error}`: broker envelopes that could not be read.
    pub const BROKER_DECODE_ERRORS: &str = "rxplus.broker.decode_errors";
    /// Observable up-down counter, `{connection}`: a broker's connections up now (0–2): its
    /// connection state.
    pub const BROKER_CONNECTIONS: &str = "rxplus.broker.connections";
    /// Observable counter, `{message}`: missing sequence numbers reported as gaps on a gateway
    /// node's streams.
    pub const GATEWAY_GAPS: &str = "rxplus.gateway.gaps";
    /// Observable counter, `{resume}`: resumable gateway links resumed on a new transport.
    pub const GATEWAY_RESUMES: &str = "rxplus.gateway.resumes";
    /// Observable counter, `{message}`: frames sent again by resumes.
    pub const GATEWAY_REPLAYED: &str = "rxplus.gateway.replayed";
    /// Observable counter, `{message}`: replayed frames received again and dropped.
    pub const GATEWAY_DUPLICATES: &str = "rxplus.gateway.duplicates";
    /// Observable counter, `{message}`: frames sent on resumable links that the other side
    /// never got (reported by `ResumeFailed`, or held by an interrupted link that ended).
    pub const GATEWAY_RESUME_LOST: &str = "rxplus.gateway.resume_lost";
}
