//! The server's accept path against hostile peers and bursts, over loopback: the handshake is
//! a total deadline (a trickling peer is dropped at it); handshakes in progress are limited and
//! count against `max_connections` (the excess gets `503`, never a `101`); out of descriptors,
//! connections are refused cleanly (`503` or a refused connect) and every `101` stays open;
//! the listen backlog holds a burst; 1,000 clients connecting at once all get in; a gateway
//! node shares the accept path.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rxplus::tungstenite::{self, handshake::HandshakeError, Message, WebSocket};
use rxplus::ws::{RxWSServer, TaggedData, Text, WSConfig};
use support::*;

/// Set in a child process this file starts: which server the child runs.
const CHILD_ENV: &str = "RXPLUS_HOSTILE_ACCEPT_CHILD";

fn echo_server_with(cfg: WSConfig) -> RxWSServer<String> {
    let s = RxWSServer::<String>::bind_with_config(any_port(), Text, cfg).unwrap();
    let h = s.handle();
    s.subscribe(move |m: TaggedData<String>| h.on_next(m.reply(m.data.clone())));
    s
}

fn upgrade_request(port: u16) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// How one client's connection attempt ended.
#[derive(Debug)]
enum Attempt {
    Open(Box<WebSocket<TcpStream>>),
    /// `503`, or a TCP connect refused or reset.
    Refused(#[allow(dead_code)] String),
    Other(String),
}

/// Upgrades `sock` with a tungstenite client; every read and write bounded by `WAIT`.
fn upgrade(sock: TcpStream, port: u16) -> Attempt {
    let _ = sock.set_read_timeout(Some(WAIT));
    let _ = sock.set_write_timeout(Some(WAIT));
    match tungstenite::client::client(format!("ws://127.0.0.1:{port}/"), sock) {
        Ok((ws, _)) => Attempt::Open(Box::new(ws)),
        Err(HandshakeError::Failure(tungstenite::Error::Http(r))) if r.status() == 503 => {
            Attempt::Refused("503".into())
        }
        Err(HandshakeError::Failure(tungstenite::Error::Io(e)))
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
            ) =>
        {
            Attempt::Refused(format!("reset: {e}"))
        }
        Err(e) => Attempt::Other(format!("{e:?}")),
    }
}

/// A tungstenite client's attempt to connect to `port`.
fn attempt(port: u16) -> Attempt {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match TcpStream::connect_timeout(&addr, WAIT) {
        Ok(sock) => upgrade(sock, port),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            Attempt::Refused(format!("connect: {e}"))
        }
        Err(e) => Attempt::Other(format!("connect: {e}")),
    }
}

#[track_caller]
fn open(port: u16) -> WebSocket<TcpStream> {
    match attempt(port) {
        Attempt::Open(ws) => *ws,
        other => panic!("expected a connection, got {other:?}"),
    }
}

#[track_caller]
fn expect_503(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let sock = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    match tungstenite::client::client(format!("ws://127.0.0.1:{port}/"), sock) {
        Err(HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            assert_eq!(r.status(), 503);
            assert_eq!(
                r.headers().get("retry-after").map(|v| v.as_bytes()),
                Some(&b"1"[..])
            );
        }
        Ok(_) => panic!("expected 503, got 101"),
        Err(e) => panic!("expected 503, got {e:?}"),
    }
}

#[track_caller]
fn echoes(ws: &mut WebSocket<TcpStream>, text: &str) {
    ws.send(Message::text(text)).unwrap();
    match ws.read() {
        Ok(Message::Text(t)) => assert_eq!(t.as_str(), text),
        other => panic!("expected the echo of {text:?}, got {other:?}"),
    }
}

/// Connects until the server takes a connection (a limit just freed is seen by the accept
/// loop a moment later).
#[track_caller]
fn open_eventually(port: u16) -> WebSocket<TcpStream> {
    let deadline = Instant::now() + WAIT;
    loop {
        match attempt(port) {
            Attempt::Open(ws) => return *ws,
            Attempt::Refused(_) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20))
            }
            other => panic!("no connection within {WAIT:?}: last {other:?}"),
        }
    }
}

#[test]
fn a_trickling_handshake_is_dropped_at_the_deadline() {
    let server = echo_server_with(quiet().handshake_timeout(Duration::from_secs(1)));
    let port = server.local_addr().port();
    let sock = Arc::new(TcpStream::connect(server.local_addr()).unwrap());
    let connected = Instant::now();
    let trickler = {
        let sock = sock.clone();
        thread::spawn(move || {
            // 300 ms a byte: the request would take about a minute.
            for b in upgrade_request(port).bytes() {
                if (&*sock).write_all(&[b]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(300));
            }
        })
    };
    // Meanwhile a normal client connects and is served.
    let mut ws = open(port);
    echoes(&mut ws, "while a peer trickles");

    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = Vec::new();
    let end = (&*sock).read_to_end(&mut answer);
    let after = connected.elapsed();
    match end {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("not closed by the server after {after:?}: {e}"),
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("101"), "answered {answer:?}");
    assert!(
        after >= Duration::from_millis(900) && after <= Duration::from_secs(3),
        "closed after {after:?}, expected about 1 s"
    );
    trickler.join().unwrap();
    echoes(&mut ws, "still served");
}

#[test]
fn handshakes_in_progress_are_limited_and_the_excess_gets_503() {
    let server = echo_server_with(quiet().max_handshakes(4));
    let port = server.local_addr().port();
    // Four peers that connect and send nothing. The accept loop takes connections in order,
    // so all four are in their handshake before the fifth is looked at.
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(server.local_addr()).unwrap())
        .collect();
    expect_503(port);
    expect_503(port);
    assert_eq!(server.connection_count(), 0);
    drop(idle);
    let mut ws = open_eventually(port);
    echoes(&mut ws, "in");
    assert!(wait_until(WAIT, || server.connection_count() == 1));
}

#[test]
fn max_connections_counts_handshakes_in_progress() {
    let server = echo_server_with(quiet().max_connections(3));
    let port = server.local_addr().port();
    let mut a = open(port);
    let mut b = open(port);
    assert!(wait_until(WAIT, || server.connection_count() == 2));
    let idle = TcpStream::connect(server.local_addr()).unwrap();
    // Two open and one in its handshake: the limit of three is reached.
    expect_503(port);
    assert_eq!(server.connection_count(), 2);
    drop(idle);
    let mut c = open_eventually(port);
    for (ws, text) in [(&mut a, "a"), (&mut b, "b"), (&mut c, "c")] {
        echoes(ws, text);
    }
    assert!(wait_until(WAIT, || server.connection_count() == 3));
}

/// A child server run under a low descriptor limit (`ulimit -n`): the parent side.
fn under_descriptor_limit(mode: &str, limit: u32, attempts: usize) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args([
            "--exact",
            "out_of_descriptors_refuses_cleanly_and_never_drops_after_101",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = lines
        .by_ref()
        .map_while(Result::ok)
        // libtest's "test … " may precede it on the line.
        .find_map(|l| l.split("PORT ").nth(1).and_then(|p| p.trim().parse().ok()))
        .unwrap_or_else(|| panic!("the child ({mode}) printed no port"));

    let mut open = Vec::new();
    let mut refused = 0;
    for i in 0..attempts {
        match attempt(port) {
            Attempt::Open(ws) => open.push(*ws),
            Attempt::Refused(_) => refused += 1,
            Attempt::Other(e) => {
                let _ = child.kill();
                panic!("{mode}: attempt {i} neither connected nor was refused: {e}");
            }
        }
    }
    // Every connection that got its 101 is still served.
    for (i, ws) in open.iter_mut().enumerate() {
        echoes(ws, &format!("{mode} {i}"));
    }
    eprintln!("{mode}: {} open, {refused} refused", open.len());
    assert!(refused >= 1, "{mode}: nothing was refused");
    assert!(!open.is_empty(), "{mode}: nothing was accepted");
    // The child disposes its server while the connections are still open (in "explicit", with
    // no descriptor left to wake its accept thread by connecting): it must end promptly.
    drop(child.stdin.take());
    // Read to the end on a thread (a closed pipe would fail the child's last words).
    let rest = thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<String>>());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{mode}: the child did not stop within {WAIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let done = rest
        .join()
        .unwrap()
        .iter()
        .any(|l| l.contains("CHILD DONE"));
    assert!(
        done && status.success(),
        "{mode}: the child failed: {status}"
    );
    drop(open);
}

#[test]
fn out_of_descriptors_refuses_cleanly_and_never_drops_after_101() {
    // Run again by itself in a child process under `ulimit -n`: there, it is the server.
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        return descriptor_limit_child(&mode);
    }
    // Derived max_connections: (128 - 64) / 4 * 3 = 48; the rest get 503.
    under_descriptor_limit("default", 128, 150);
    // A limit above what the descriptors allow: accept runs out of them, and the spare
    // descriptor lets each pending connection be refused with 503.
    under_descriptor_limit("explicit", 128, 150);
}

/// The child of `out_of_descriptors_…`: a server until stdin closes (or 60 s).
fn descriptor_limit_child(mode: &str) {
    let cfg = match mode {
        "explicit" => quiet().max_connections(10_000),
        _ => quiet(),
    };
    let server = echo_server_with(cfg);
    println!("PORT {}", server.local_addr().port());
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(60));
    server.dispose();
    println!("CHILD DONE");
}

/// The soft descriptor limit of this process.
fn nofile() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

const BURST: usize = 1000;
/// Descriptors the burst tests need: both ends of every connection, and some.
const BURST_FDS: u64 = 2 * BURST as u64 + 200;

/// Runs `body` here when the descriptor limit allows the burst (or this is the child),
/// otherwise runs the test `test` again in a child process with the soft limit raised
/// (skipped, with a message, when the hard limit forbids it).
fn with_burst_descriptors(test: &str, body: fn()) {
    if std::env::var(CHILD_ENV).is_ok() || nofile().is_some_and(|n| n >= BURST_FDS) {
        return body();
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {} 2>/dev/null || exit 77; exec \"$0\" \"$@\"",
            BURST_FDS + 100
        ))
        .arg(exe)
        .args(["--exact", test, "--nocapture"])
        .env(CHILD_ENV, "burst")
        .status()
        .unwrap();
    if out.code() == Some(77) {
        eprintln!("SKIPPED: the descriptor limit is below {BURST_FDS} and cannot be raised");
        return;
    }
    assert!(out.success(), "{test} failed in its child process: {out}");
}

fn burst_of_clients() {
    let server = echo_server_with(WSConfig::default());
    let port = server.local_addr().port();
    let threads: Vec<_> = (0..50)
        .map(|_| {
            thread::spawn(move || {
                (0..BURST / 50)
                    .map(|_| match attempt(port) {
                        Attempt::Open(ws) => *ws,
                        other => panic!("a client of the burst was not connected: {other:?}"),
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut open: Vec<WebSocket<TcpStream>> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(open.len(), BURST);
    assert!(
        wait_until(WAIT, || server.connection_count() == BURST),
        "{} of {BURST} registered",
        server.connection_count()
    );
    echoes(&mut open[0], "first");
    echoes(&mut open[BURST - 1], "last");
}

#[test]
fn a_burst_of_1000_clients_all_connect() {
    with_burst_descriptors("a_burst_of_1000_clients_all_connect", burst_of_clients);
}

/// The listen backlog holds what arrives while nothing is accepted: 1,000 TCP connections
/// made before the accept loop starts all complete (std's fixed backlog, 128, would leave the
/// rest waiting on SYN retries). A small configured backlog is honoured.
fn backlog_holds_a_burst() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    if somaxconn < BURST as u32 {
        eprintln!("SKIPPED: net.core.somaxconn is {somaxconn}, below {BURST}");
        return;
    }
    let pending = |backlog: Option<u32>, n: usize| -> usize {
        let mut cfg = quiet();
        if let Some(b) = backlog {
            cfg = cfg.listen_backlog(b);
        }
        let mut connected = 0;
        let mut socks = Vec::new();
        let _server = RxWSServer::<String>::bind_with_setup(any_port(), Text, cfg, |s| {
            // The accept loop starts after this closure: every connection waits in the backlog.
            let addr = s.local_addr();
            for _ in 0..n {
                match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                    Ok(sock) => {
                        connected += 1;
                        socks.push(sock);
                    }
                    Err(_) => break,
                }
            }
        })
        .unwrap();
        connected
    };
    assert_eq!(pending(None, BURST), BURST, "the default backlog (1,024)");
    let small = pending(Some(16), 64);
    // Linux lets the queue hold one more than the backlog.
    assert!((16..=17).contains(&small), "backlog 16 held {small}");
}

#[test]
fn the_listen_backlog_holds_a_burst_of_1000() {
    with_burst_descriptors(
        "the_listen_backlog_holds_a_burst_of_1000",
        backlog_holds_a_burst,
    );
}

#[test]
fn a_gateway_node_limits_handshakes_in_progress_too() {
    use rxplus::gateway::{DefaultFrame, GatewayConfig, GatewayNode};
    let node = GatewayNode::<DefaultFrame>::new(
        GatewayConfig::default()
            .host("127.0.0.1")
            .port(0)
            .ws(quiet().max_handshakes(2)),
    )
    .unwrap();
    node.start().unwrap();
    let addr = node.local_addr().unwrap();
    let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    expect_503(addr.port());
    drop(idle);
    // Upgraded: the node's HELLO follows.
    let mut ws = open_eventually(addr.port());
    assert!(matches!(ws.read(), Ok(Message::Binary(_))));
}
