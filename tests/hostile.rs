//! Hostile and slow peers against the connection core: a stalled reader among fast ones, a
//! peer that trickles, partial messages against the inbound budget, a server that accepts and
//! drops (reconnect backoff), a server that trickles its handshake, and no thread left behind
//! by a connection that ended. (That ended threads are joined at once, with no new connection
//! arriving, is a unit test in `src/threads.rs`: an exited thread leaves no trace in `/proc`.)

mod capture;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::LevelFilter;
use parking_lot::Mutex;
use rxplus::ws::{
    Binary, ConnectionEvent, ConnectionEventKind, RetryPolicy, RxWSClient, RxWSServer, TaggedData,
    Text,
};
use rxplus::{Error, Notification, OverflowStrategy};
use support::*;

/// Completes a WebSocket handshake by hand on a socket whose receive buffer is tiny, then
/// returns it: a peer that can stop reading and stall the server's writes within kilobytes.
fn stalled_peer(addr: SocketAddr, path: &str) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let mut s: TcpStream = s.into();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    let mut b = [0u8; 1];
    // Byte by byte: nothing after the response's end is consumed.
    while !resp.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1);
        resp.push(b[0]);
    }
    assert!(resp.starts_with(b"HTTP/1.1 101"));
    s
}

fn closed_events(server: &RxWSServer<String>) -> Arc<AtomicUsize> {
    let closed = Arc::new(AtomicUsize::new(0));
    let c = closed.clone();
    server.subscribe_events(move |e: ConnectionEvent| {
        if e.kind == ConnectionEventKind::Closed {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    closed
}

#[test]
fn one_stalled_reader_never_stalls_a_path_under_the_default_policy() {
    let otel = capture::otel(LevelFilter::Warn);
    let name = "stall-default";
    // The default policy (drop-old); a short write timeout so the stalled peer is cut soon.
    let cfg = quiet().name(name).write_timeout(Duration::from_secs(1));
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, cfg).unwrap();
    let closed = closed_events(&server);
    let addr = server.local_addr();
    let fast: Vec<_> = (0..3)
        .map(|_| RxWSClient::<String>::with_config(local(addr.port(), "/room"), Text, quiet()))
        .collect::<Result<_, _>>()
        .unwrap();
    let rxs: Vec<_> = fast.iter().map(|c| c.stream()).collect();
    let _stalled = stalled_peer(addr, "/room");
    assert!(wait_until(WAIT, || server.connections("/room").len() == 4));
    const N: usize = 5_000;
    let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
    let readers: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(k, rx)| {
            let counts = counts.clone();
            std::thread::spawn(move || {
                let mut got = Vec::with_capacity(N);
                while got.len() < N {
                    match rx.recv_timeout(WAIT) {
                        Ok(Notification::Next(m)) => got.push(m),
                        other => panic!("after {}: {other:?}", got.len()),
                    }
                    counts[k].store(got.len(), Ordering::SeqCst);
                }
                got
            })
        })
        .collect();
    // 1 KiB each: 5 MB to the stalled peer, far beyond its socket and its 1 MiB queue. The
    // producer keeps within 500 messages of the slowest fast reader (its own flow control):
    // it never waits on the stalled one.
    let pad = "x".repeat(1024);
    let start = Instant::now();
    for i in 0..N {
        while i >= 500 && counts.iter().any(|c| c.load(Ordering::SeqCst) + 500 < i) {
            std::thread::yield_now();
            assert!(start.elapsed() < WAIT, "the fast readers stalled at {i}");
        }
        server.on_next(TaggedData::new("/room", format!("{i} {pad}")));
    }
    for r in readers {
        let got = r.join().unwrap();
        assert_eq!(got.len(), N);
        for (i, m) in got.iter().enumerate() {
            assert!(m.starts_with(&format!("{i} ")), "out of order at {i}");
        }
    }
    // The stalled one fell behind (WARN once, oldest dropped), then was cut by the write
    // timeout (WARN); only it.
    assert!(wait_until(WAIT, || closed.load(Ordering::SeqCst) == 1));
    assert_eq!(server.connections("/room").len(), 3);
    let recs = otel.records_of(&[name]);
    let slow = capture::named(&recs, rxplus::telemetry::event::SLOW_READER);
    assert_eq!(slow.len(), 1, "{recs:#?}");
    assert_eq!(slow[0].attr("policy"), Some("drop-old"));
    assert_eq!(
        capture::named(&recs, rxplus::telemetry::event::WRITE_TIMEOUT).len(),
        1
    );
    let stats = server.stats();
    assert!(stats.overflow_dropped >= 1);
    assert_eq!(stats.write_timeouts, 1);
}

#[test]
fn a_peer_that_stops_reading_is_cut_after_write_timeout_however_it_trickles() {
    let otel = capture::otel(LevelFilter::Warn);
    for trickle in [false, true] {
        let name = if trickle { "wt-trickle" } else { "wt-stalled" };
        // A queue large enough that no overflow policy fires: only the write timeout can.
        let cfg = quiet()
            .name(name)
            .write_timeout(Duration::from_millis(800))
            .outbound(100_000, OverflowStrategy::DropNew)
            .outbound_max_bytes(256 << 20);
        let server = RxWSServer::<Vec<u8>>::bind_with_config(any_port(), Binary, cfg).unwrap();
        let addr = server.local_addr();
        let peer = stalled_peer(addr, "/w");
        assert!(wait_until(WAIT, || server.connection_count() == 1));
        let stop = Arc::new(AtomicBool::new(false));
        let trickler = trickle.then(|| {
            let mut p = peer.try_clone().unwrap();
            let stop = stop.clone();
            // About 20 KB/s: the writes keep progressing, by less than 64 KiB per timeout.
            std::thread::spawn(move || {
                let mut b = [0u8; 2048];
                while !stop.load(Ordering::SeqCst) && p.read(&mut b).is_ok_and(|n| n > 0) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        });
        let start = Instant::now();
        for _ in 0..64 {
            server.on_next(TaggedData::new("/w", vec![7u8; 64 << 10]));
        }
        assert!(
            wait_until(WAIT, || server.connection_count() == 0),
            "{name}: still connected"
        );
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(700),
            "{name}: cut after {took:?}"
        );
        assert_eq!(server.stats().write_timeouts, 1, "{name}");
        let recs = otel.records_of(&[name]);
        let warned = capture::named(&recs, rxplus::telemetry::event::WRITE_TIMEOUT);
        assert_eq!(warned.len(), 1, "{name}: {recs:#?}");
        assert_eq!(warned[0].attr("timeout_ms"), Some("800"));
        stop.store(true, Ordering::SeqCst);
        let _ = peer.shutdown(std::net::Shutdown::Both);
        if let Some(t) = trickler {
            t.join().unwrap();
        }
    }
}

/// Sends the first `part` bytes of a masked binary message of `total` bytes (one frame).
fn partial_message(sock: &mut TcpStream, total: usize, part: usize) {
    let mut head = vec![0x82, 0x80 | 127];
    head.extend_from_slice(&(total as u64).to_be_bytes());
    head.extend_from_slice(&[0, 0, 0, 0]); // zero mask: the payload goes as is
    sock.write_all(&head).unwrap();
    sock.write_all(&vec![1u8; part]).unwrap();
}

#[test]
fn partial_messages_draw_on_a_server_wide_budget_and_complete_messages_keep_flowing() {
    const BUDGET: usize = 2 << 20;
    const MSG: usize = 1 << 20;
    const PEERS: usize = 8;
    let cfg = quiet().inbound_budget(BUDGET).max_message_size(MSG + 1024);
    let server = RxWSServer::<Vec<u8>>::bind_with_config(any_port(), Binary, cfg).unwrap();
    let h = server.handle();
    let big = Arc::new(AtomicUsize::new(0));
    let b = big.clone();
    server.subscribe(move |m: TaggedData<Vec<u8>>| {
        if m.data.len() == MSG {
            b.fetch_add(1, Ordering::SeqCst);
        } else {
            h.on_next(m.reply(m.data.clone()));
        }
    });
    let addr = server.local_addr();
    // Each peer sends 90% of a 1 MiB message, waits, then the rest.
    let go_on = Arc::new(AtomicBool::new(false));
    let peers: Vec<_> = (0..PEERS)
        .map(|_| {
            let go_on = go_on.clone();
            std::thread::spawn(move || {
                let mut s = stalled_peer(addr, "/big");
                partial_message(&mut s, MSG, MSG * 9 / 10);
                while !go_on.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                s.write_all(&vec![1u8; MSG - MSG * 9 / 10]).unwrap();
                s
            })
        })
        .collect();
    // The server reads until the budget is spent, then stops: its peak stays within the
    // budget plus one message, far below the 7.2 MB the peers hold out.
    let echo =
        RxWSClient::<Vec<u8>>::with_config(local(addr.port(), "/small"), Binary, quiet()).unwrap();
    let rx = echo.stream();
    assert!(echo.wait_connected(WAIT));
    assert!(wait_until(WAIT, || server.inbound_buffered().1 >= BUDGET));
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..20u8 {
        echo.on_next(vec![i; 100]);
        match rx.recv_timeout(WAIT) {
            Ok(Notification::Next(m)) => assert_eq!(m, vec![i; 100]),
            other => panic!("echo {i}: {other:?}"),
        }
    }
    let (_, peak) = server.inbound_buffered();
    assert!(peak <= BUDGET + MSG, "peak {peak}");
    assert_eq!(big.load(Ordering::SeqCst), 0);
    // Let them finish: every message arrives whole, and the budget is all given back.
    go_on.store(true, Ordering::SeqCst);
    let socks: Vec<_> = peers.into_iter().map(|p| p.join().unwrap()).collect();
    assert!(
        wait_until(WAIT, || big.load(Ordering::SeqCst) == PEERS),
        "{} of {PEERS}",
        big.load(Ordering::SeqCst)
    );
    assert!(server.inbound_buffered().1 <= BUDGET + MSG);
    assert_eq!(server.inbound_buffered().0, 0);
    drop(socks);
}

/// A server that completes every WebSocket handshake and drops the connection at once;
/// returns its address and the instants of the handshakes.
fn accept_and_drop() -> (u16, Arc<Mutex<Vec<Instant>>>, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let times = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (t, st) = (times.clone(), stop.clone());
    std::thread::spawn(move || {
        while !st.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    if let Ok(ws) = tungstenite::accept(s) {
                        t.lock().push(Instant::now());
                        drop(ws);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    (port, times, stop)
}

#[test]
fn a_server_that_accepts_and_drops_gets_growing_delays_each_reported() {
    let (port, times, stop) = accept_and_drop();
    let retry = RetryPolicy::default()
        .initial_delay(Duration::from_millis(50))
        .factor(2.0)
        .max_delay(Duration::from_secs(5))
        .jitter(0.0);
    let client =
        RxWSClient::<String>::with_config(local(port, "/"), Text, quiet().retry(retry)).unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let e = errors.clone();
    client.subscribe_errors(move |err: Error| e.lock().push(err));
    assert!(wait_until(WAIT, || times.lock().len() >= 5));
    client.dispose();
    stop.store(true, Ordering::SeqCst);
    let t = times.lock().clone();
    // Delays 50, 100, 200, 400 ms between handshakes (a lower bound: never faster).
    for (i, pair) in t.windows(2).take(4).enumerate() {
        let gap = pair[1] - pair[0];
        let want = Duration::from_millis(50 << i);
        assert!(gap >= want * 9 / 10, "gap {i}: {gap:?} < {want:?}");
    }
    let errs = errors.lock();
    assert!(errs.len() >= 4, "{errs:?}");
    for (i, err) in errs.iter().take(4).enumerate() {
        match err {
            Error::ConnectFailed {
                attempt, source, ..
            } => {
                assert_eq!(*attempt as usize, i + 1);
                assert!(
                    matches!(**source, Error::ConnectionDropped { .. }),
                    "{source}"
                );
            }
            other => panic!("{other}"),
        }
    }
}

#[test]
fn a_client_handshake_is_bounded_by_one_total_deadline() {
    // The server answers the upgrade one byte every 200 ms: never done within 1 s.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let server = std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n";
            for b in resp {
                if st.load(Ordering::SeqCst) || s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });
    let cfg = quiet()
        .handshake_timeout(Duration::from_secs(1))
        .retry(RetryPolicy::default().max_retries(Some(0)));
    let start = Instant::now();
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, cfg).unwrap();
    let rx = client.stream();
    let end = rx.recv_timeout(WAIT);
    let took = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    assert!(
        matches!(end, Ok(Notification::Error(Error::RetriesExhausted { .. }))),
        "{end:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    drop(client);
    server.join().unwrap();
}

#[test]
fn after_each_connection_the_server_is_back_to_its_accept_and_timer_threads() {
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
    let port = server.local_addr().port();
    let idle = server.thread_count();
    for _ in 0..20 {
        let client = RxWSClient::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
        assert!(client.wait_connected(WAIT));
        assert!(wait_until(WAIT, || server.connection_count() == 1));
        client.dispose();
        // Back to the accept and timer threads with no new connection arriving.
        assert!(
            wait_until(WAIT, || server.thread_count() == idle),
            "{} threads, {} idle",
            server.thread_count(),
            idle
        );
    }
    assert_eq!(idle, 2, "accept + timer");
}

#[test]
fn a_peer_that_stops_reading_and_floods_pings_is_still_cut_and_disposed() {
    // The writer is stuck on the full socket, so every pong waits for it; the pongs fill the
    // control channel. When the write timeout cuts the connection, the reader must not stay
    // blocked handing the writer one more.
    let cfg = quiet()
        .write_timeout(Duration::from_millis(500))
        .outbound(100_000, OverflowStrategy::DropNew)
        .outbound_max_bytes(256 << 20);
    let server = RxWSServer::<Vec<u8>>::bind_with_config(any_port(), Binary, cfg).unwrap();
    let mut peer = stalled_peer(server.local_addr(), "/p");
    assert!(wait_until(WAIT, || server.connection_count() == 1));
    // 8 MiB: more than the kernel's socket buffers take, so the writer blocks.
    for _ in 0..128 {
        server.on_next(TaggedData::new("/p", vec![7u8; 64 << 10]));
    }
    // 64 masked, empty pings (zero mask).
    for _ in 0..64 {
        if peer.write_all(&[0x89, 0x80, 0, 0, 0, 0]).is_err() {
            break;
        }
    }
    assert!(
        wait_until(WAIT, || server.connection_count() == 0),
        "the connection's reader never ended"
    );
    let start = Instant::now();
    server.dispose();
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(peer);
}
