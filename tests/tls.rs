//! `wss://` over loopback: every component over TLS, certificates made here (rcgen), refused
//! certificates, plain/TLS mismatches, and the connection core's bounds over TLS.
#![cfg(feature = "tls")]

mod support;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rxplus::tls::{ClientTls, ServerTls};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rxplus::gateway::{DefaultFrame, GatewayConfig, GatewayNode};
use rxplus::tls::rustls;
use rxplus::tungstenite;
use rxplus::ws::{
    Binary, ConnectionEventKind, ConnectionState, RetryPolicy, RxWSClient, RxWSClientGroup,
    RxWSServer, TaggedData, Text, WSConfig, WSConnectionConfig,
};
use rxplus::{Error, Notification};
use support::*;

/// A CA and a leaf certificate for `localhost` it signed.
struct Pki {
    ca_pem: String,
    chain_pem: String,
    key_pem: String,
}

fn pki_with(leaf: impl FnOnce(&mut CertificateParams)) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "rxplus test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf(&mut params);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn pki() -> Pki {
    pki_with(|_| {})
}

impl Pki {
    fn server(&self) -> ServerTls {
        ServerTls::from_pem(self.chain_pem.as_bytes(), self.key_pem.as_bytes()).unwrap()
    }
    fn client(&self) -> ClientTls {
        ClientTls::only_roots_pem(self.ca_pem.as_bytes()).unwrap()
    }
}

fn wss(port: u16, path: &str) -> WSConnectionConfig {
    WSConnectionConfig::from_url(&format!("wss://localhost:{port}{path}")).unwrap()
}

fn tls_echo<T: Clone + Send + 'static>(
    pki: &Pki,
    datatype: impl Into<rxplus::ws::Datatypes<T>>,
    cfg: WSConfig,
) -> RxWSServer<T> {
    let s = RxWSServer::<T>::bind_with_config(any_port(), datatype, cfg.tls_server(pki.server()))
        .unwrap();
    let h = s.handle();
    s.subscribe(move |m: TaggedData<T>| h.on_next(m.reply(m.data.clone())));
    s
}

/// A text client of `wss://localhost:port/path` trusting `pki`'s CA.
fn text_client(pki: &Pki, port: u16, path: &str) -> RxWSClient<String> {
    RxWSClient::<String>::with_config(wss(port, path), Text, quiet().tls_client(pki.client()))
        .unwrap()
}

fn next<T: std::fmt::Debug>(rx: &crossbeam_channel::Receiver<Notification<T>>) -> T {
    match rx.recv_timeout(WAIT) {
        Ok(Notification::Next(v)) => v,
        other => panic!("expected an item, got {other:?}"),
    }
}

#[test]
fn roundtrip_both_ways_over_tls() {
    let pki = pki();
    let server = tls_echo::<String>(&pki, Text, quiet());
    let port = server.local_addr().port();
    let client = text_client(&pki, port, "/s");
    let rx = client.stream();
    assert!(client.wait_connected(WAIT));
    client.send("héllo over TLS".into()).unwrap();
    assert_eq!(next(&rx), "héllo over TLS");
    // Server-initiated, to the path.
    server
        .send(TaggedData::new("/s", "pushed".to_string()))
        .unwrap();
    assert_eq!(next(&rx), "pushed");
    client.on_completed();
    server.dispose();
}

#[test]
fn a_16_mib_message_each_way() {
    let pki = pki();
    let big = WSConfig::default()
        .no_heartbeat()
        .max_message_size(32 << 20)
        .max_frame_size(32 << 20)
        .outbound_max_bytes(32 << 20);
    let server = tls_echo::<Vec<u8>>(&pki, Binary, big.clone());
    let client = RxWSClient::<Vec<u8>>::with_config(
        wss(server.local_addr().port(), "/big"),
        Binary,
        big.tls_client(pki.client()),
    )
    .unwrap();
    let rx = client.stream();
    assert!(client.wait_connected(WAIT));
    let payload: Vec<u8> = (0..16u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
    client.send(payload.clone()).unwrap();
    let back = next(&rx);
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "16 MiB came back altered");
    client.on_completed();
    server.dispose();
}

#[test]
fn a_thousand_messages_arrive_in_order_over_tls() {
    let pki = pki();
    let server = tls_echo::<String>(&pki, Text, quiet());
    let client = text_client(&pki, server.local_addr().port(), "/n");
    let rx = client.stream();
    assert!(client.wait_connected(WAIT));
    for i in 0..1000 {
        client.send(i.to_string()).unwrap();
    }
    for i in 0..1000 {
        assert_eq!(next(&rx), i.to_string());
    }
    client.on_completed();
    server.dispose();
}

/// Both directions at full speed at once: 32 MiB each way. A connection whose read and write
/// took turns on the TLS session would stall here (each side's socket buffers full, each
/// writer waiting for a read that waits for the writer).
#[test]
fn full_duplex_large_transfers_both_ways_at_once() {
    const CHUNK: usize = 256 << 10;
    const COUNT: usize = 128;
    let pki = pki();
    let cfg = WSConfig::default()
        .no_heartbeat()
        .outbound(COUNT * 2, rxplus::OverflowStrategy::Block)
        .outbound_max_bytes(COUNT * CHUNK * 2);
    let server = RxWSServer::<Vec<u8>>::bind_with_config(
        any_port(),
        Binary,
        cfg.clone().tls_server(pki.server()),
    )
    .unwrap();
    let got_server = Arc::new(AtomicUsize::new(0));
    let g = got_server.clone();
    server.subscribe(move |m: TaggedData<Vec<u8>>| {
        g.fetch_add(m.data.len(), Ordering::Relaxed);
    });
    let client = RxWSClient::<Vec<u8>>::with_config(
        wss(server.local_addr().port(), "/dup"),
        Binary,
        cfg.tls_client(pki.client()),
    )
    .unwrap();
    let got_client = Arc::new(AtomicUsize::new(0));
    let g = got_client.clone();
    client.subscribe(move |m: Vec<u8>| {
        g.fetch_add(m.len(), Ordering::Relaxed);
    });
    assert!(client.wait_connected(WAIT));
    assert!(wait_until(WAIT, || server.connection_count() == 1));
    let chunk = vec![7u8; CHUNK];
    let handle = server.handle();
    let c2 = chunk.clone();
    let pusher = std::thread::spawn(move || {
        for _ in 0..COUNT {
            handle.send(TaggedData::new("/dup", c2.clone())).unwrap();
        }
    });
    for _ in 0..COUNT {
        client.send(chunk.clone()).unwrap();
    }
    pusher.join().unwrap();
    let total = COUNT * CHUNK;
    assert!(
        wait_until(WAIT * 3, || got_server.load(Ordering::Relaxed) == total
            && got_client.load(Ordering::Relaxed) == total),
        "server got {} and client {} of {total}",
        got_server.load(Ordering::Relaxed),
        got_client.load(Ordering::Relaxed)
    );
    client.on_completed();
    server.dispose();
}

#[test]
fn a_buffering_client_reconnects_over_tls_and_delivers_in_order() {
    let pki = pki();
    let first = tls_echo::<String>(&pki, Text, quiet());
    let port = first.local_addr().port();
    let client = RxWSClient::<String>::with_config(
        wss(port, "/r"),
        Text,
        quiet()
            .tls_client(pki.client())
            .buffer_while_disconnected(true)
            .retry(
                RetryPolicy::default()
                    .initial_delay(Duration::from_millis(20))
                    .max_delay(Duration::from_millis(100)),
            ),
    )
    .unwrap();
    assert!(client.wait_connected(WAIT));
    first.dispose();
    assert!(wait_until(WAIT, || !client.is_connected()));
    for i in 0..20 {
        client.send(format!("m{i}")).unwrap();
    }
    let got = Arc::new(Mutex::new(Vec::new()));
    let second = RxWSServer::<String>::bind_with_config(
        &format!("127.0.0.1:{port}"),
        Text,
        quiet().tls_server(pki.server()),
    )
    .unwrap();
    let g = got.clone();
    second.subscribe(move |m: TaggedData<String>| g.lock().push(m.data));
    assert!(wait_until(WAIT, || got.lock().len() == 20));
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(*got.lock(), want);
    client.on_completed();
    second.dispose();
}

/// A TLS client made by hand (rustls + tungstenite): it handshakes and then does whatever the
/// test says, e.g. never read again.
fn raw_tls_peer(
    pki: &Pki,
    port: u16,
    path: &str,
) -> tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let conn = rustls::ClientConnection::new(
        pki.client().rustls_config().clone(),
        "localhost".try_into().unwrap(),
    )
    .unwrap();
    let stream = rustls::StreamOwned::new(conn, tcp);
    let (ws, _) = tungstenite::client(format!("wss://localhost:{port}{path}"), stream).unwrap();
    ws
}

fn closed_events(server: &RxWSServer<String>) -> Arc<AtomicUsize> {
    let closed = Arc::new(AtomicUsize::new(0));
    let c = closed.clone();
    server.subscribe_events(move |e| {
        if e.kind == ConnectionEventKind::Closed {
            c.fetch_add(1, Ordering::Relaxed);
        }
    });
    closed
}

#[test]
fn a_tls_peer_that_never_answers_pings_is_closed_by_the_heartbeat() {
    let pki = pki();
    let server = tls_echo::<String>(
        &pki,
        Text,
        WSConfig::default()
            .ping_interval(Some(Duration::from_millis(100)))
            .ping_timeout(Some(Duration::from_millis(300))),
    );
    let closed = closed_events(&server);
    let _silent = raw_tls_peer(&pki, server.local_addr().port(), "/hb");
    assert!(wait_until(WAIT, || server.connection_count() == 1));
    let t = Instant::now();
    assert!(wait_until(WAIT, || closed.load(Ordering::Relaxed) == 1));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(server.connection_count(), 0);
    server.dispose();
}

#[test]
fn dispose_is_bounded_with_a_tls_peer_that_stopped_reading() {
    let before = thread_count();
    let pki = pki();
    let server = tls_echo::<String>(&pki, Text, quiet());
    let port = server.local_addr().port();
    let _stalled = raw_tls_peer(&pki, port, "/stall");
    assert!(wait_until(WAIT, || server.connection_count() == 1));
    fill_until_stalled(&server, "/stall");
    // The server's default overflow policy (drop-old) held: the queue did not grow past its
    // bound behind the stalled peer.
    assert!(server.stats().overflow_dropped > 0, "{:?}", server.stats());
    let t = Instant::now();
    server.dispose();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "dispose took {took:?}");
    drop(server);
    assert!(
        wait_threads_at_most(before) <= before,
        "{}",
        thread_report()
    );
}

/// Sends to `path` (paced, so the queue's policy does not simply drop it all) until the peer's
/// socket buffers are full: nothing more has gone out for 300 ms while more waits.
fn fill_until_stalled(server: &RxWSServer<String>, path: &str) {
    let chunk = "x".repeat(256 << 10);
    let deadline = Instant::now() + WAIT;
    let (mut last, mut since) = (0, Instant::now());
    while Instant::now() < deadline {
        let _ = server.send(TaggedData::new(path, chunk.clone()));
        std::thread::sleep(Duration::from_millis(5));
        let out = server.stats().bytes_out;
        if out != last {
            (last, since) = (out, Instant::now());
        } else if since.elapsed() > Duration::from_millis(300) {
            return;
        }
    }
    panic!("the peer never stopped taking data: {:?}", server.stats());
}

/// What a client that must fail ends with: its terminal error, after `within`.
fn terminal_error(client: &RxWSClient<String>, within: Duration) -> Error {
    let rx = client.stream();
    match rx.recv_timeout(within) {
        Ok(Notification::Error(e)) => e,
        other => panic!("expected the client to end with an error, got {other:?}"),
    }
}

/// A client trusting `client_tls` is refused by `server_pki`'s server; one trusting `good` (if
/// any) still gets in afterwards.
fn assert_certificate_refused(server_pki: &Pki, client_tls: ClientTls, good: Option<ClientTls>) {
    let server = tls_echo::<String>(server_pki, Text, quiet());
    let errors = Arc::new(Mutex::new(Vec::new()));
    let client = RxWSClient::<String>::with_config(
        wss(server.local_addr().port(), "/"),
        Text,
        quiet().tls_client(client_tls),
    )
    .unwrap();
    let e2 = errors.clone();
    client.subscribe_errors(move |e| e2.lock().push(e));
    let e = terminal_error(&client, WAIT);
    assert!(e.is_certificate_error(), "{e}");
    assert!(
        matches!(
            e,
            Error::Tls {
                certificate: true,
                ..
            }
        ),
        "{e:?}"
    );
    // Reported on the errors stream too, and not retried.
    assert!(errors.lock().iter().any(Error::is_certificate_error));
    assert!(wait_until(WAIT, || client.connection_state()
        == ConnectionState::Closed));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(client.stats().connect_attempts, 1);
    // The server keeps serving a client that trusts it.
    if let Some(tls) = good {
        let good = RxWSClient::<String>::with_config(
            wss(server.local_addr().port(), "/"),
            Text,
            quiet().tls_client(tls),
        )
        .unwrap();
        assert!(good.wait_connected(WAIT));
        good.on_completed();
    }
    server.dispose();
}

#[test]
fn a_certificate_from_an_unknown_ca_is_refused_and_not_retried() {
    let server_pki = pki();
    let other = pki();
    assert_certificate_refused(&server_pki, other.client(), Some(server_pki.client()));
}

#[test]
fn an_expired_certificate_is_refused() {
    let expired = pki_with(|p| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    assert_certificate_refused(&expired, expired.client(), None);
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let pki = pki();
    let server = tls_echo::<String>(&pki, Text, quiet());
    // The certificate names `localhost`, not 127.0.0.1.
    let url = format!("wss://127.0.0.1:{}/", server.local_addr().port());
    let client = RxWSClient::<String>::with_config(
        WSConnectionConfig::from_url(&url).unwrap(),
        Text,
        quiet().tls_client(pki.client()),
    )
    .unwrap();
    let e = terminal_error(&client, WAIT);
    assert!(e.is_certificate_error(), "{e}");
    server.dispose();
}

#[test]
fn retry_certificate_errors_keeps_trying() {
    let pki = pki();
    let other = pki_with(|_| {});
    let server = tls_echo::<String>(&pki, Text, quiet());
    let client = RxWSClient::<String>::with_config(
        wss(server.local_addr().port(), "/"),
        Text,
        quiet().tls_client(other.client()).retry(
            RetryPolicy::default()
                .initial_delay(Duration::from_millis(10))
                .max_delay(Duration::from_millis(20))
                .retry_certificate_errors(true),
        ),
    )
    .unwrap();
    assert!(wait_until(WAIT, || client.stats().connect_attempts >= 3));
    assert_ne!(client.connection_state(), ConnectionState::Closed);
    client.dispose();
    server.dispose();
}

fn once() -> RetryPolicy {
    RetryPolicy::default().max_retries(Some(0))
}

#[test]
fn a_plain_client_at_a_tls_server_fails_quickly_and_the_server_keeps_serving() {
    let pki = pki();
    let server = tls_echo::<String>(&pki, Text, quiet());
    let port = server.local_addr().port();
    let t = Instant::now();
    let plain =
        RxWSClient::<String>::with_config(local(port, "/"), Text, quiet().retry(once())).unwrap();
    let e = terminal_error(&plain, WAIT);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(matches!(e, Error::RetriesExhausted { .. }), "{e:?}");
    let good = text_client(&pki, port, "/");
    let rx = good.stream();
    assert!(good.wait_connected(WAIT));
    good.send("still here".into()).unwrap();
    assert_eq!(next(&rx), "still here");
    good.on_completed();
    server.dispose();
}

#[test]
fn a_tls_client_at_a_plain_server_fails_quickly_with_a_tls_error() {
    let pki = pki();
    let server = echo_server::<String>(Text);
    let port = server.local_addr().port();
    let t = Instant::now();
    let client = RxWSClient::<String>::with_config(
        wss(port, "/"),
        Text,
        quiet().tls_client(pki.client()).retry(once()),
    )
    .unwrap();
    let e = terminal_error(&client, WAIT);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    match &e {
        Error::RetriesExhausted { source, .. } => {
            assert!(
                matches!(
                    **source,
                    Error::Tls {
                        certificate: false,
                        ..
                    }
                ),
                "{source:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    // The plain server keeps serving plain clients.
    let plain = RxWSClient::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
    assert!(plain.wait_connected(WAIT));
    plain.on_completed();
    server.dispose();
}

#[test]
fn a_silent_tcp_peer_at_a_tls_server_is_cut_at_the_handshake_timeout() {
    let pki = pki();
    let server = tls_echo::<String>(
        &pki,
        Text,
        quiet().handshake_timeout(Duration::from_millis(300)),
    );
    let port = server.local_addr().port();
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut silent, &mut buf).unwrap_or(0);
    assert_eq!(
        n, 0,
        "the server sent something to a peer that never said hello"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    server.dispose();
}

#[test]
fn a_client_group_opens_every_path_over_tls() {
    let pki = pki();
    let server = tls_echo::<String>(&pki, Text, quiet());
    let group = RxWSClientGroup::<String>::with_config(
        wss(server.local_addr().port(), "/"),
        Text,
        quiet().tls_client(pki.client()),
    )
    .unwrap();
    let rx = group.stream();
    for p in ["/a", "/b", "/c"] {
        group.open_path(p).unwrap();
    }
    for p in ["/a", "/b", "/c"] {
        assert!(group.wait_connected(p, WAIT).unwrap(), "{p}");
        group.send(TaggedData::new(p, format!("to {p}"))).unwrap();
    }
    let mut got: Vec<String> = (0..3).map(|_| next(&rx).data).collect();
    got.sort();
    assert_eq!(got, ["to /a", "to /b", "to /c"]);
    group.on_completed();
    server.dispose();
}

#[test]
fn gateway_nodes_link_over_tls() {
    type Node = GatewayNode<DefaultFrame>;
    let pki = pki();
    let ws = WSConfig::default()
        .tls_server(pki.server())
        .tls_client(pki.client());
    let cfg = || {
        GatewayConfig::default()
            .host("127.0.0.1")
            .port(0)
            .ws(ws.clone())
    };
    let a = Node::new(cfg()).unwrap();
    a.start().unwrap();
    let b = Node::new(cfg()).unwrap();
    b.start().unwrap();
    let rx = b.stream();
    let url = format!("wss://localhost:{}/", b.local_addr().unwrap().port());
    let id = a.connect_to(&url).unwrap();
    assert!(a.wait_connected(id, WAIT));
    a.send_to(id, DefaultFrame::data(&b"over tls"[..])).unwrap();
    let f = match rx.recv_timeout(WAIT) {
        Ok(Notification::Next(f)) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(f.frame.payload().map(|p| &p[..]), Some(&b"over tls"[..]));
    // A plain node dialing the TLS node never links.
    let plain = Node::new(
        GatewayConfig::default()
            .host("127.0.0.1")
            .port(0)
            .retry(once()),
    )
    .unwrap();
    let pid = plain
        .connect_to(&format!("ws://{}/", b.local_addr().unwrap()))
        .unwrap();
    assert!(!plain.wait_connected(pid, Duration::from_secs(1)));
    a.stop();
    b.stop();
    plain.stop();
}

#[test]
fn a_tls_peer_that_stops_reading_is_cut_at_the_write_timeout() {
    let pki = pki();
    let server = tls_echo::<String>(
        &pki,
        Text,
        quiet().write_timeout(Duration::from_millis(500)),
    );
    let closed = closed_events(&server);
    let _stalled = raw_tls_peer(&pki, server.local_addr().port(), "/wt");
    assert!(wait_until(WAIT, || server.connection_count() == 1));
    // Paced sends until the connection is cut.
    let chunk = "y".repeat(256 << 10);
    let t = Instant::now();
    while closed.load(Ordering::Relaxed) == 0 && t.elapsed() < WAIT {
        let _ = server.send(TaggedData::new("/wt", chunk.clone()));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        wait_until(WAIT, || closed.load(Ordering::Relaxed) == 1),
        "{:?} {}",
        server.stats(),
        thread_report()
    );
    assert_eq!(server.stats().write_timeouts, 1);
    server.dispose();
}

#[test]
fn an_oversized_message_over_tls_is_refused_with_1009() {
    let pki = pki();
    let server = tls_echo::<String>(&pki, Text, quiet().max_message_size(1024));
    let mut peer = raw_tls_peer(&pki, server.local_addr().port(), "/size");
    peer.get_ref()
        .get_ref()
        .set_read_timeout(Some(WAIT))
        .unwrap();
    peer.send(tungstenite::Message::text("z".repeat(4096)))
        .unwrap();
    let code = loop {
        match peer.read() {
            Ok(tungstenite::Message::Close(Some(f))) => break u16::from(f.code),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, 1009);
    server.dispose();
}

/// Sends `bytes` one per `gap`; how long until the server closed the socket, or `None` if it
/// was still open after `limit`.
fn trickle(sock: &mut TcpStream, bytes: &[u8], gap: Duration, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    sock.set_nonblocking(true).unwrap();
    for b in bytes {
        if t.elapsed() > limit {
            return None;
        }
        let mut probe = [0u8; 64];
        match sock.read(&mut probe) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Some(t.elapsed()),
        }
        if sock.write(std::slice::from_ref(b)).is_err() {
            return Some(t.elapsed());
        }
        std::thread::sleep(gap);
    }
    panic!("ran out of bytes to trickle");
}

const GET: &str = "GET /x HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn a_client_hello_trickled_a_byte_at_a_time_is_cut_at_the_handshake_timeout() {
    let pki = pki();
    let server = tls_echo::<String>(
        &pki,
        Text,
        quiet().handshake_timeout(Duration::from_millis(500)),
    );
    let mut sock = TcpStream::connect(server.local_addr()).unwrap();
    // A handshake record header announcing 512 bytes, then its body one byte at a time.
    let mut bytes = vec![0x16, 0x03, 0x01, 0x02, 0x00];
    bytes.extend(std::iter::repeat_n(0u8, 512));
    let r = trickle(
        &mut sock,
        &bytes,
        Duration::from_millis(200),
        Duration::from_secs(4),
    );
    assert!(r.is_some_and(|d| d < Duration::from_secs(2)), "{r:?}");
    server.dispose();
}

#[test]
fn an_upgrade_request_trickled_over_tls_is_cut_at_the_handshake_timeout() {
    let pki = pki();
    let server = tls_echo::<String>(
        &pki,
        Text,
        quiet().handshake_timeout(Duration::from_millis(1500)),
    );
    let mut sock = TcpStream::connect(server.local_addr()).unwrap();
    let mut conn = rustls::ClientConnection::new(
        pki.client().rustls_config().clone(),
        "localhost".try_into().unwrap(),
    )
    .unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    conn.writer().write_all(GET.as_bytes()).unwrap();
    let mut ct = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut ct).unwrap();
    }
    let r = trickle(
        &mut sock,
        &ct,
        Duration::from_millis(200),
        Duration::from_secs(5),
    );
    assert!(r.is_some_and(|d| d < Duration::from_secs(3)), "{r:?}");
    server.dispose();
}

#[test]
fn a_peer_updating_its_keys_before_every_message_keeps_its_echo() {
    let pki = pki();
    let server = tls_echo::<String>(&pki, Text, quiet());
    let port = server.local_addr().port();
    let mut ws = raw_tls_peer(&pki, port, "/ku");
    ws.get_ref().get_ref().set_read_timeout(Some(WAIT)).unwrap();
    for i in 0..20 {
        ws.get_mut().conn.refresh_traffic_keys().unwrap();
        ws.send(tungstenite::Message::text(format!("m{i}")))
            .unwrap();
        match ws.read().unwrap() {
            tungstenite::Message::Text(t) => assert_eq!(t.as_str(), format!("m{i}")),
            other => panic!("{other:?}"),
        }
    }
    server.dispose();
}

#[test]
fn the_accept_hook_refuses_over_tls_with_its_status() {
    let pki = pki();
    let server = RxWSServer::<String>::bind_with_config(
        any_port(),
        Text,
        quiet()
            .tls_server(pki.server())
            .accept_hook(rxplus::ws::AcceptHook::new(|req| {
                match req.header("authorization") {
                    Some("Bearer t") => rxplus::ws::Verdict::accept(),
                    _ => rxplus::ws::Verdict::refuse(401, "unauthorized"),
                }
            })),
    )
    .unwrap();
    let port = server.local_addr().port();
    let refused = text_client(&pki, port, "/");
    let e = terminal_error(&refused, WAIT);
    assert_eq!(e.refused_status(), Some(401), "{e:?}");
    let allowed = RxWSClient::<String>::with_config(
        wss(port, "/"),
        Text,
        quiet()
            .tls_client(pki.client())
            .header("Authorization", "Bearer t"),
    )
    .unwrap();
    assert!(allowed.wait_connected(WAIT));
    allowed.on_completed();
    server.dispose();
}
