//! `rxplus`: a WebSocket client, server, gateway node and benchmark on the command line, built
//! on the crate. Install with `cargo install --path . --features cli`.
//!
//! ```text
//! rxplus [--log LEVEL] connect [--buffer] [-H 'Name: value']... [--protocol P]... [--ca ROOT.pem]...
//!        [--binary] [--json] [--retries N] URL
//! rxplus [--log LEVEL] serve [--echo | --broadcast | --print] [--token TOKEN] [--protocols P1,P2]
//!        [--tls-cert CHAIN.pem --tls-key KEY.pem] [ADDR]
//! rxplus [--log LEVEL] gateway --listen HOST:PORT [--connect URL]... [--node-id 32HEX] ...
//! rxplus [--log LEVEL] bench [--messages N] [--size BYTES] [--window N] [--binary] URL
//! ```
//!
//! Exit codes: 0 done (stdin ended and the connection closed gracefully, or the server closed
//! it with 1000), 1 a runtime error (could not bind or connect, gave up reconnecting, a
//! refused handshake or certificate), 2 a usage error, 3 the server closed the connection
//! with a code other than 1000. See `docs/cli.md`.

mod bench;
mod client;
mod gateway;
mod server;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rxplus",
    version,
    about = "WebSocket client, server, gateway node and benchmark (rxplus)"
)]
struct Cli {
    /// Log records of this level and above on stderr: off, error, warn, info, debug, trace
    /// (default: RUST_LOG, else warn).
    #[arg(long, global = true, value_name = "LEVEL")]
    log: Option<log::LevelFilter>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Interactive client: stdin lines out, messages in on stdout, states on stderr.
    Connect(ConnectArgs),
    /// A server that echoes, broadcasts or prints what arrives; prints `listening on ADDR`.
    Serve(ServeArgs),
    /// A gateway node: events and frames on stdout; stdin commands `send CONNID TEXT`,
    /// `all TEXT`, `peers`, `connect URL`, `quit`.
    Gateway(GatewayArgs),
    /// Throughput and round trips against an echo server; one summary line on stdout.
    Bench(BenchArgs),
}

#[derive(Args)]
struct ConnectArgs {
    /// ws://HOST:PORT/PATH[?QUERY] or wss://...
    url: String,
    /// Queue lines typed while disconnected and send them on (re)connect, instead of waiting
    /// up to 10 s for the first connection.
    #[arg(long)]
    buffer: bool,
    /// A request header sent with every handshake. Repeatable.
    #[arg(short = 'H', long = "header", value_name = "Name: value", value_parser = header)]
    headers: Vec<(String, String)>,
    /// Offer this subprotocol, in the order given. Repeatable.
    #[arg(long = "protocol", value_name = "P")]
    protocols: Vec<String>,
    /// Also trust the CA certificates in this PEM file for wss://. Repeatable.
    #[arg(long = "ca", value_name = "ROOT.pem")]
    cas: Vec<String>,
    /// Send each line as a binary message.
    #[arg(long)]
    binary: bool,
    /// Lines must be JSON (others are refused on stderr); received JSON is pretty-printed.
    #[arg(long)]
    json: bool,
    /// Give up after N retries (N+1 failed attempts in a row) and exit 1 (default: retry
    /// forever).
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
}

#[derive(Args)]
#[group(id = "mode", multiple = false)]
struct ModeArgs {
    /// Send every message back to its sender (the default); a text `close:CODE:REASON`
    /// closes that connection with that code instead.
    #[arg(long)]
    echo: bool,
    /// Send every message to every client on its path, the sender included.
    #[arg(long)]
    broadcast: bool,
    /// Print every message on stdout (`CONNID PATH text TEXT` or `CONNID PATH binary HEX`).
    #[arg(long)]
    print: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// The address to bind; port 0 picks a free port.
    #[arg(default_value = "127.0.0.1:9001")]
    addr: String,
    #[command(flatten)]
    mode: ModeArgs,
    /// Handshakes must carry `Authorization: Bearer TOKEN` or `?token=TOKEN` (else 401).
    #[arg(long)]
    token: Option<String>,
    /// The subprotocols served; a handshake offering none of them is refused with 400.
    #[arg(long, value_name = "P1,P2", value_parser = server::parse_protocols)]
    protocols: Option<Vec<String>>,
    /// Serve wss:// with this PEM certificate chain (leaf first).
    #[arg(long, value_name = "CHAIN.pem", requires = "tls_key")]
    tls_cert: Option<String>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "KEY.pem", requires = "tls_cert")]
    tls_key: Option<String>,
}

#[derive(Args)]
struct GatewayArgs {
    /// The address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT")]
    listen: String,
    /// Dial this peer at start. Repeatable.
    #[arg(long, value_name = "URL")]
    connect: Vec<String>,
    /// This node's id (32 hex digits; default random).
    #[arg(long, value_name = "32HEX")]
    node_id: Option<String>,
    /// How long a HELLO/HELLO_ACK exchange may take.
    #[arg(long, value_name = "N")]
    handshake_timeout_ms: Option<u64>,
    /// The per-peer queue policy, e.g. drop-new:100, drop-old:1000, disconnect:64.
    #[arg(long, value_name = "STRATEGY:SIZE")]
    overflow: Option<String>,
    /// A second link to a node already connected: allow, or keep-one.
    #[arg(long, value_name = "allow|keep-one")]
    duplicates: Option<String>,
    /// Links resume across a dropped transport, exactly once and in order.
    #[arg(long)]
    resume: bool,
    /// How long an interrupted resumable link waits for its peer.
    #[arg(long, value_name = "N")]
    session_expiry_ms: Option<u64>,
}

#[derive(Args)]
struct BenchArgs {
    /// The echo server, ws://HOST:PORT/PATH.
    url: String,
    /// How many messages to send (up to 10,000,000).
    #[arg(long, default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    messages: u64,
    /// The size of each message in bytes (at least its 16-byte sequence number; up to 64 MiB).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=64 << 20))]
    size: u64,
    /// How many messages may be in flight (up to 65,536).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    window: u64,
    /// Send binary messages instead of text.
    #[arg(long)]
    binary: bool,
    /// Give up when no echo arrives for this many seconds.
    #[arg(long, default_value_t = 10, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    idle: u64,
}

fn header(h: &str) -> Result<(String, String), String> {
    client::parse_header(h).ok_or_else(|| format!("{h:?} is not 'Name: value'"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `--log` replaces RUST_LOG entirely (its per-module rules included).
    let mut logger = env_logger::Builder::new();
    match cli.log {
        Some(level) => logger.filter_level(level),
        None => logger
            .filter_level(log::LevelFilter::Warn)
            .parse_env("RUST_LOG"),
    };
    logger.init();
    match cli.command {
        Command::Connect(a) => {
            let opts = client::ConnectOpts {
                url: a.url,
                buffer: a.buffer,
                cas: a.cas,
                headers: a.headers,
                protocols: a.protocols,
                binary: a.binary,
                json: a.json,
                retries: a.retries,
            };
            failed(client::run("rxplus", &opts).map_err(|e| e.to_string()))
        }
        Command::Serve(a) => {
            let mode = if a.mode.broadcast {
                server::Mode::Broadcast
            } else if a.mode.print {
                server::Mode::Print
            } else {
                server::Mode::Echo
            };
            let tls = match server::tls_pair(a.tls_cert, a.tls_key) {
                Ok(t) => t,
                Err(e) => return usage(&e),
            };
            let opts = server::ServeOpts {
                addr: a.addr,
                tls,
                token: a.token,
                protocols: a.protocols,
                mode,
            };
            failed(server::run("rxplus", &opts).map_err(|e| e.to_string()))
        }
        Command::Gateway(a) => {
            let opts = gateway::GatewayOpts {
                listen: a.listen,
                connect: a.connect,
                node_id: a.node_id,
                handshake_timeout_ms: a.handshake_timeout_ms,
                overflow: a.overflow,
                duplicates: a.duplicates,
                resume: a.resume,
                session_expiry_ms: a.session_expiry_ms,
            };
            match opts.config() {
                Ok(cfg) => gateway::run(cfg, &opts.connect),
                Err(e) => usage(&e),
            }
        }
        Command::Bench(a) => failed(bench::run(&bench::BenchOpts {
            url: a.url,
            messages: a.messages,
            // At most 64 MiB: fits any usize this builds for.
            size: usize::try_from(a.size).unwrap_or(usize::MAX),
            window: a.window,
            binary: a.binary,
            idle: Duration::from_secs(a.idle),
        })),
    }
}

/// `rxplus: ERROR` and exit 1, or exit 0.
fn failed(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rxplus: {e}");
            ExitCode::from(1)
        }
    }
}

/// A bad combination clap cannot see: the reason and exit 2.
fn usage(e: &str) -> ExitCode {
    eprintln!("rxplus: {e}");
    ExitCode::from(2)
}
