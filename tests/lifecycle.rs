//! Shutdown and protocol edges: dispose from callbacks, dead peers, heartbeat and handshake
//! timeouts, full duplex, size limits.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rxplus::ws::{
    ConnectionEventKind, RxWSClient, RxWSServer, TaggedData, Text, WSConfig, WSMessage,
};
use rxplus::{Notification, OverflowStrategy};
use support::*;

/// Opens a WebSocket as a raw, misbehaving peer: handshake done, then it does whatever the
/// test wants with the bare socket (usually nothing).
fn raw_ws_peer(port: u16, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 1024];
    let mut resp = Vec::new();
    while !resp.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        resp.extend_from_slice(&buf[..n]);
    }
    assert!(resp.starts_with(b"HTTP/1.1 101"));
    s
}

#[test]
fn server_dispose_from_inside_a_callback() {
    rxws_panics();
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
    let h = server.handle();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    server.subscribe(move |_m: TaggedData<String>| {
        c.fetch_add(1, Ordering::SeqCst);
        h.dispose(); // on the connection's own reader thread
    });
    let client =
        RxWSClient::<String>::with_config(local(server.local_addr().port(), "/"), Text, quiet())
            .unwrap();
    assert!(client.wait_connected(WAIT));
    client.on_next("stop".into());
    assert!(
        wait_until(WAIT, || server.thread_count() == 0),
        "threads: {}",
        server.thread_count()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    server.dispose(); // idempotent
    assert_eq!(rxws_panics(), 0, "a library thread panicked during dispose");
}

#[test]
fn client_dispose_from_inside_a_callback() {
    rxws_panics();
    let server = echo_server::<String>(Text);
    let client =
        RxWSClient::<String>::with_config(local(server.local_addr().port(), "/"), Text, quiet())
            .unwrap();
    let h = client.handle();
    client.subscribe(move |_m: String| h.dispose());
    assert!(client.wait_connected(WAIT));
    client.on_next("bye".into());
    assert!(wait_until(WAIT, || client.thread_count() == 0));
    assert_eq!(rxws_panics(), 0, "a library thread panicked during dispose");
}

#[test]
fn dispose_from_two_threads_at_once_waits_for_both() {
    let server = echo_server::<String>(Text);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            RxWSClient::<String>::with_config(local(server.local_addr().port(), "/"), Text, quiet())
                .unwrap()
        })
        .collect();
    for c in &clients {
        assert!(c.wait_connected(WAIT));
    }
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                server.dispose();
                assert_eq!(server.thread_count(), 0);
            });
        }
    });
}

#[test]
fn server_dispose_is_bounded_with_a_peer_that_never_reads() {
    let cfg = quiet().outbound(4, OverflowStrategy::Block);
    let server =
        RxWSServer::<Vec<u8>>::bind_with_config(any_port(), rxplus::ws::Binary, cfg).unwrap();
    let _peer = raw_ws_peer(server.local_addr().port(), "/dead");
    assert!(wait_until(WAIT, || server.connection_count() == 1));
    // Fill the socket and the queue; the broadcaster ends up blocked (backpressure).
    let h = server.handle();
    let sent = Arc::new(AtomicUsize::new(0));
    let s = sent.clone();
    let sender = std::thread::Builder::new()
        .name("blocked-sender".into())
        .spawn(move || {
            for _ in 0..200 {
                h.on_next(TaggedData::new("/dead", vec![7u8; 1 << 20]));
                s.fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap();
    // The broadcaster has sent a few and now waits for room in the queue.
    assert!(wait_until(WAIT, || sent.load(Ordering::SeqCst) >= 4
        && thread_sleeping("blocked-sender")));
    let t = Instant::now();
    server.dispose();
    let took = t.elapsed();
    sender.join().unwrap();
    assert!(took < Duration::from_secs(3), "dispose took {took:?}");
    assert_eq!(server.thread_count(), 0);
}

#[test]
fn graceful_completion_is_bounded_with_a_peer_that_never_answers_close() {
    let server = RxWSServer::<String>::bind_with_config(
        any_port(),
        Text,
        quiet().close_timeout(Duration::from_millis(300)),
    )
    .unwrap();
    let _peer = raw_ws_peer(server.local_addr().port(), "/mute");
    assert!(wait_until(WAIT, || server.connection_count() == 1));
    let t = Instant::now();
    server.on_completed();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(server.thread_count(), 0);
}

#[test]
fn client_dispose_is_bounded_while_the_server_never_answers_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
    let (mut conn, _) = listener.accept().unwrap(); // accepted, never answered
                                                    // Read the whole request: the client is now waiting for the response.
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0);
        req.extend_from_slice(&buf[..n]);
    }
    let t = Instant::now();
    client.dispose();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(client.thread_count(), 0);
}

#[test]
fn heartbeat_closes_a_connection_whose_pong_never_comes() {
    let cfg = WSConfig::default()
        .ping_interval(Some(Duration::from_millis(100)))
        .ping_timeout(Some(Duration::from_millis(200)));
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, cfg).unwrap();
    let closed = Arc::new(AtomicUsize::new(0));
    let c = closed.clone();
    server.subscribe_events(move |e: rxplus::ws::ConnectionEvent| {
        if e.kind == ConnectionEventKind::Closed {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    let t = Instant::now();
    let _peer = raw_ws_peer(server.local_addr().port(), "/silent");
    assert!(wait_until(WAIT, || closed.load(Ordering::SeqCst) == 1));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn heartbeat_keeps_a_live_connection_open() {
    let cfg = WSConfig::default()
        .ping_interval(Some(Duration::from_millis(50)))
        .ping_timeout(Some(Duration::from_millis(200)));
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, cfg.clone()).unwrap();
    let client =
        RxWSClient::<String>::with_config(local(server.local_addr().port(), "/"), Text, cfg)
            .unwrap();
    assert!(client.wait_connected(WAIT));
    // Sixteen ping intervals, four pong timeouts: the state must not change meanwhile (what
    // this test is about is a span of time with nothing in it).
    let states = client.state_stream();
    assert!(matches!(
        states.recv_timeout(WAIT),
        Ok(Notification::Next(rxplus::ws::ConnectionState::Connected))
    ));
    assert!(matches!(
        states.recv_timeout(Duration::from_millis(800)),
        Err(crossbeam_channel::RecvTimeoutError::Timeout)
    ));
    assert!(client.is_connected());
    assert_eq!(server.connection_count(), 1);
    assert_eq!(client.stats().connections_opened, 1);
}

#[test]
fn handshake_timeout_closes_a_silent_socket() {
    let cfg = quiet().handshake_timeout(Duration::from_millis(200));
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, cfg).unwrap();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0); // EOF (or reset) once the server gives up
    assert_eq!(n, 0);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn full_duplex_send_while_the_reader_is_blocked() {
    // The client's reader blocks waiting for input while a queued item must still go out.
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
    let rx = server.stream();
    let client =
        RxWSClient::<String>::with_config(local(server.local_addr().port(), "/"), Text, quiet())
            .unwrap();
    assert!(client.wait_connected(WAIT));
    // The client's connection thread is its reader: wait until it is parked in read(). The
    // server never sends, so a send that needed the reader to wake would never arrive.
    assert!(wait_until(WAIT, || thread_sleeping("rxws-client-")));
    client.on_next("through".into());
    match rx.recv_timeout(WAIT) {
        Ok(Notification::Next(m)) => assert_eq!(m.data, "through"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_message_over_the_size_limit_closes_with_1009_and_the_server_keeps_serving() {
    let cfg = quiet().max_message_size(1024).max_frame_size(1024);
    let server =
        RxWSServer::<WSMessage>::bind_with_config(any_port(), rxplus::ws::Raw, cfg).unwrap();
    let mut peer = raw_ws_peer(server.local_addr().port(), "/");
    // A masked binary frame with a 2048-byte payload.
    let mut frame = vec![0x82, 0x80 | 126, 0x08, 0x00, 1, 2, 3, 4];
    frame.extend(std::iter::repeat_n(0u8, 2048));
    peer.write_all(&frame).unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = [0u8; 4];
    peer.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([head[2], head[3]]), 1009);
    let client = RxWSClient::<WSMessage>::with_config(
        local(server.local_addr().port(), "/"),
        rxplus::ws::Raw,
        quiet(),
    )
    .unwrap();
    assert!(client.wait_connected(WAIT));
}

#[test]
fn nothing_is_written_after_a_close_frame() {
    // The peer closes; the server keeps broadcasting. After the close reply, no data frame
    // may follow on the wire. (`block`: the broadcast waits for the peer rather than cutting
    // it when it falls behind, as the server's default would.)
    let cfg = quiet().outbound(1024, rxplus::OverflowStrategy::Block);
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, cfg).unwrap();
    let mut peer = raw_ws_peer(server.local_addr().port(), "/c");
    assert!(wait_until(WAIT, || server.connection_count() == 1));
    let h = server.handle();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let b = std::thread::spawn(move || {
        while !st.load(Ordering::SeqCst) {
            h.on_next(TaggedData::new("/c", "x".into()));
        }
    });
    assert!(wait_until(WAIT, || server.stats().messages_out >= 100));
    // Masked close frame, code 1000.
    peer.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
        .unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let mut wire = Vec::new();
    // Ends with the server's close (EOF), or a reset if our close raced its writes.
    let ended = peer.read_to_end(&mut wire);
    assert!(
        ended.is_ok() || wire.len() > 2,
        "nothing read before {ended:?}"
    );
    stop.store(true, Ordering::SeqCst);
    b.join().unwrap();
    // Walk the frames: text frames, then exactly one close frame at the very end.
    let mut i = 0;
    let mut frames = Vec::new();
    while i + 2 <= wire.len() {
        let op = wire[i] & 0x0f;
        let len = (wire[i + 1] & 0x7f) as usize;
        assert!(len < 126);
        frames.push(op);
        i += 2 + len;
    }
    assert_eq!(i, wire.len(), "trailing garbage");
    assert_eq!(frames.last(), Some(&0x8), "last frame is the close");
    assert_eq!(frames.iter().filter(|&&o| o == 0x8).count(), 1);
}
