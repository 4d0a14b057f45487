//! Resumable gateway links over loopback, through a proxy that cuts and restores the
//! transport: exactly once and in order across cuts, the failures that are reported (resend
//! buffer overflow with exact counts, a restarted peer, expiry), the owner check, and
//! interoperation with nodes and clients that speak format 1.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rxplus::gateway::{
    close_code, DefaultFrame, DisconnectCause, Framing, GatewayConfig, GatewayEvent, GatewayNode,
    NodeId, ResumeConfig, ResumeFailure,
};
use rxplus::tungstenite::{self, Message};
use rxplus::ws::{ConnId, RetryPolicy};
use rxplus::OverflowStrategy;
use support::proxy::Proxy;
use support::*;

type Node = GatewayNode<DefaultFrame>;

fn retry() -> RetryPolicy {
    RetryPolicy::default()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(50))
        .jitter(0.0)
}

fn cfg(resume: Option<ResumeConfig>) -> GatewayConfig {
    let c = GatewayConfig::default()
        .host("127.0.0.1")
        .port(0)
        .ws(quiet())
        .retry(retry());
    match resume {
        Some(r) => c.resume(r),
        None => c,
    }
}

fn node(cfg: GatewayConfig) -> Node {
    let n = Node::new(cfg).unwrap();
    n.start().unwrap();
    n
}

fn url(n: &Node) -> String {
    format!("ws://{}/", n.local_addr().unwrap())
}

struct Seen {
    events: Mutex<Vec<GatewayEvent>>,
    /// Payload numbers received, per connection, in arrival order.
    frames: Mutex<HashMap<ConnId, Vec<u32>>>,
}

impl Seen {
    fn count(&self, pick: impl Fn(&GatewayEvent) -> bool) -> usize {
        self.events.lock().iter().filter(|e| pick(e)).count()
    }
    fn resumed(&self) -> usize {
        self.count(|e| matches!(e, GatewayEvent::Resumed { .. }))
    }
    fn disconnected(&self) -> usize {
        self.count(|e| matches!(e, GatewayEvent::Disconnected { .. }))
    }
    fn received(&self) -> usize {
        self.frames.lock().values().map(Vec::len).sum()
    }
    fn resume_failed(&self) -> Vec<(ConnId, ResumeFailure, u64)> {
        self.events
            .lock()
            .iter()
            .filter_map(|e| match e {
                GatewayEvent::ResumeFailed {
                    conn_id,
                    cause,
                    lost,
                } => Some((*conn_id, *cause, *lost)),
                _ => None,
            })
            .collect()
    }
    fn connected_ids(&self) -> Vec<ConnId> {
        self.events
            .lock()
            .iter()
            .filter_map(|e| match e {
                GatewayEvent::Connected { conn_id, .. } => Some(*conn_id),
                _ => None,
            })
            .collect()
    }
}

fn watch(n: &Node) -> Arc<Seen> {
    let seen = Arc::new(Seen {
        events: Mutex::new(Vec::new()),
        frames: Mutex::new(HashMap::new()),
    });
    let s = seen.clone();
    n.subscribe_events(move |e| s.events.lock().push(e));
    let s = seen.clone();
    n.subscribe(move |t| {
        let p = t.frame.payload().expect("data frame");
        let k = u32::from_be_bytes(p[..4].try_into().unwrap());
        s.frames.lock().entry(t.conn_id).or_default().push(k);
    });
    seen
}

/// A raw client's reads fail after 10 s instead of hanging the test.
fn bounded_reads(
    ws: &tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
) {
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
}

fn frame(k: u32) -> DefaultFrame {
    let mut p = k.to_be_bytes().to_vec();
    p.extend_from_slice(&[0xa5; 60]);
    DefaultFrame::data(p)
}

/// Sends `n` numbered frames, retrying a frame the resend buffer refused (`drop-new` is full
/// until acknowledgements arrive). `sent` counts those taken.
fn send_all(n: &Node, to: ConnId, count: u32, sent: &AtomicU64) {
    for k in 0..count {
        let deadline = Instant::now() + WAIT;
        loop {
            match n.send_to(to, frame(k)) {
                Ok(()) => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "frame {k} refused for 10 s: {e}");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        sent.fetch_add(1, Ordering::Relaxed);
        // Paced (about 100 frames per millisecond at most): a link can take 10,000 frames in a
        // few milliseconds, and the cuts of the tests below must come while frames are still
        // being sent, not after everything was delivered and acknowledged.
        if k % 100 == 99 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A small pseudo-random generator (xorshift), seeded from the clock and printed so a failing
/// run can be replayed with RESUME_SEED.
fn rng() -> impl FnMut() -> u64 {
    let mut x: u64 = std::env::var("RESUME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("RESUME_SEED={x}");
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

fn pair_through(
    proxy_for: impl FnOnce(&Node) -> Proxy,
    a_cfg: GatewayConfig,
    b_cfg: GatewayConfig,
) -> (Node, Node, Proxy, ConnId, ConnId, Arc<Seen>, Arc<Seen>) {
    let a = node(a_cfg);
    let b = Node::new(b_cfg).unwrap();
    let sa = watch(&a);
    let sb = watch(&b);
    let proxy = proxy_for(&a);
    let b_to_a = b.connect_to(&proxy.url()).unwrap();
    assert!(b.wait_connected(b_to_a, WAIT));
    assert!(wait_until(WAIT, || !sa.connected_ids().is_empty()));
    let a_to_b = sa.connected_ids()[0];
    (a, b, proxy, a_to_b, b_to_a, sa, sb)
}

fn through_proxy(a: &Node) -> Proxy {
    Proxy::start(a.local_addr().unwrap())
}

fn resume() -> ResumeConfig {
    ResumeConfig::enabled().buffer(20_000, 32 << 20)
}

#[test]
fn ten_thousand_frames_each_way_survive_three_cuts_exactly_once_in_order() {
    const N: u32 = 10_000;
    let drop_new = |c: GatewayConfig| c.overflow(OverflowStrategy::DropNew, 1000);
    let (a, b, proxy, a_to_b, b_to_a, sa, sb) = pair_through(
        through_proxy,
        drop_new(cfg(Some(resume()))),
        drop_new(cfg(Some(resume()))),
    );
    let sent_a = Arc::new(AtomicU64::new(0));
    let sent_b = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| send_all(&a, a_to_b, N, &sent_a));
        s.spawn(|| send_all(&b, b_to_a, N, &sent_b));
        // Three cuts at random points of the transfer, each after the last resume completed
        // on both sides.
        let mut next = rng();
        for cut in 1..=3usize {
            let at = (u64::from(N) / 5) * cut as u64 + next() % (u64::from(N) / 6);
            assert!(wait_until(WAIT, || {
                sent_a
                    .load(Ordering::Relaxed)
                    .min(sent_b.load(Ordering::Relaxed))
                    >= at
            }));
            proxy.cut();
            assert!(
                wait_until(WAIT, || sa.resumed() == cut && sb.resumed() == cut),
                "resume {cut}: a {} b {}",
                sa.resumed(),
                sb.resumed()
            );
        }
    });
    assert!(wait_until(WAIT, || sa.received() == N as usize
        && sb.received() == N as usize));
    let want: Vec<u32> = (0..N).collect();
    assert_eq!(sa.frames.lock().get(&a_to_b), Some(&want), "a received");
    assert_eq!(sb.frames.lock().get(&b_to_a), Some(&want), "b received");
    assert_eq!((sa.resumed(), sb.resumed()), (3, 3));
    assert_eq!((sa.disconnected(), sb.disconnected()), (0, 0));
    assert!(sa.resume_failed().is_empty() && sb.resume_failed().is_empty());
    // Same ids throughout, and every connection resumed is still the one connection.
    assert_eq!(a.get_connected_peers(), vec![a_to_b]);
    assert_eq!(b.get_connected_peers(), vec![b_to_a]);
    assert!(proxy.accepted() >= 4);
    let (sta, stb) = (a.stats(), b.stats());
    eprintln!(
        "replayed a {} b {}, duplicates dropped a {} b {}",
        sta.replayed, stb.replayed, sta.duplicates, stb.duplicates
    );
    assert_eq!((sta.resumes, stb.resumes), (3, 3));
    // The cuts came mid-transfer: frames were in flight or sent while interrupted.
    assert!(sta.replayed + stb.replayed > 0);
    // Everything got acknowledged in the end: nothing held for a replay.
    assert!(wait_until(WAIT, || a
        .get_connection(a_to_b)
        .is_some_and(|c| c.queued == 0)
        && b.get_connection(b_to_a).is_some_and(|c| c.queued == 0)));
    b.stop();
    a.stop();
}

#[test]
fn resend_buffer_too_small_for_the_outage_reports_exact_losses_both_ways() {
    let small = || {
        cfg(Some(ResumeConfig::enabled().buffer(100, 1 << 20)))
            .overflow(OverflowStrategy::DropOld, 1000)
    };
    let (a, b, proxy, a_to_b, b_to_a, sa, sb) = pair_through(through_proxy, small(), small());
    let sent = AtomicU64::new(0);
    // 50 delivered and acknowledged each way before the outage.
    send_all(&a, a_to_b, 50, &sent);
    send_all(&b, b_to_a, 50, &sent);
    assert!(wait_until(WAIT, || sa.received() == 50 && sb.received() == 50));
    assert!(wait_until(WAIT, || {
        a.get_connection(a_to_b).unwrap().queued == 0
            && b.get_connection(b_to_a).unwrap().queued == 0
    }));
    proxy.refuse(true);
    proxy.cut();
    assert!(wait_until(WAIT, || a.stats().interrupted == 1
        && b.stats().interrupted == 1));
    // 300 more each way while the transport is down: the buffers keep the last 100.
    for k in 50..350 {
        a.send_to(a_to_b, frame(k)).unwrap();
        b.send_to(b_to_a, frame(k)).unwrap();
    }
    assert_eq!(a.get_connection(a_to_b).unwrap().queued, 100);
    proxy.refuse(false);
    assert!(wait_until(WAIT, || sa.resume_failed().len() == 1
        && sb.resume_failed().len() == 1));
    // Each side reports exactly the frames the other never got; sent = delivered + lost.
    assert_eq!(
        sa.resume_failed(),
        vec![(a_to_b, ResumeFailure::Overflow, 300)]
    );
    assert_eq!(
        sb.resume_failed(),
        vec![(b_to_a, ResumeFailure::Overflow, 300)]
    );
    assert_eq!(sb.received() as u64 + 300, 350);
    assert_eq!(sa.received() as u64 + 300, 350);
    // Then Disconnected for the old link, and a fresh one with new ids.
    assert!(wait_until(WAIT, || sa.connected_ids().len() == 2
        && sb.connected_ids().len() == 2));
    let cause = DisconnectCause::ResumeFailed(ResumeFailure::Overflow);
    for (seen, old) in [(&sa, a_to_b), (&sb, b_to_a)] {
        let ev = seen.events.lock().clone();
        let failed = ev
            .iter()
            .position(|e| matches!(e, GatewayEvent::ResumeFailed { .. }))
            .unwrap();
        let gone = ev
            .iter()
            .position(|e| matches!(e, GatewayEvent::Disconnected { conn_id, cause: c, .. } if *conn_id == old && *c == cause))
            .unwrap();
        let fresh = ev
            .iter()
            .rposition(|e| matches!(e, GatewayEvent::Connected { .. }))
            .unwrap();
        assert!(failed < gone && gone < fresh, "{ev:?}");
    }
    let (new_a, new_b) = (sa.connected_ids()[1], sb.connected_ids()[1]);
    assert!(new_a != a_to_b && new_b != b_to_a);
    assert_eq!(b.get_connected_peers(), vec![new_b]);
    assert_eq!((a.stats().resume_lost, b.stats().resume_lost), (300, 300));
    // The fresh link works, numbering from 1 again.
    b.send_to(new_b, frame(7)).unwrap();
    assert!(wait_until(WAIT, || sa
        .frames
        .lock()
        .get(&new_a)
        .is_some_and(|f| f == &vec![7])));
    b.stop();
    a.stop();
}

#[test]
fn a_restarted_peer_has_lost_the_session_then_a_fresh_link_follows() {
    let (a, b, proxy, _a_to_b, b_to_a, _sa, sb) =
        pair_through(through_proxy, cfg(Some(resume())), cfg(Some(resume())));
    let sent = AtomicU64::new(0);
    send_all(&b, b_to_a, 20, &sent);
    // The peer dies without a close reaching us, and a new process takes its place.
    proxy.refuse(true);
    proxy.cut();
    a.stop();
    let a2 = node(cfg(Some(resume())));
    let sa2 = watch(&a2);
    proxy.set_target(a2.local_addr().unwrap());
    // Frames sent while interrupted cannot reach the new process either: reported lost.
    for k in 20..25 {
        b.send_to(b_to_a, frame(k)).unwrap();
    }
    proxy.refuse(false);
    assert!(wait_until(WAIT, || sb.resume_failed().len() == 1));
    let (id, why, lost) = sb.resume_failed()[0];
    assert_eq!((id, why), (b_to_a, ResumeFailure::UnknownSession));
    // At least the 5 sent while interrupted; the 20 before only if unacknowledged.
    assert!((5..=25).contains(&lost), "lost {lost}");
    assert!(wait_until(WAIT, || sb.connected_ids().len() == 2));
    let fresh = sb.connected_ids()[1];
    assert_ne!(fresh, b_to_a);
    assert_eq!(
        sb.events
            .lock()
            .iter()
            .filter(|e| matches!(e, GatewayEvent::Disconnected { conn_id, cause: DisconnectCause::ResumeFailed(ResumeFailure::UnknownSession), .. } if *conn_id == b_to_a))
            .count(),
        1
    );
    b.send_to(fresh, frame(99)).unwrap();
    assert!(wait_until(WAIT, || sa2.received() == 1));
    assert_eq!(sa2.resume_failed(), vec![]);
    b.stop();
    a2.stop();
}

#[test]
fn nodes_with_and_without_resume_and_a_format_1_client_interoperate() {
    for (a_resume, b_resume) in [(true, false), (false, true), (true, true)] {
        let on = |yes: bool| yes.then(resume);
        let a = node(cfg(on(a_resume)));
        let b = Node::new(cfg(on(b_resume))).unwrap();
        let sa = watch(&a);
        let sb = watch(&b);
        let to_a = b.connect_to(&url(&a)).unwrap();
        assert!(b.wait_connected(to_a, WAIT));
        assert!(wait_until(WAIT, || sa.connected_ids().len() == 1));
        let to_b = sa.connected_ids()[0];
        for k in 0..100 {
            b.send_to(to_a, frame(k)).unwrap();
            a.send_to(to_b, frame(k)).unwrap();
        }
        assert!(wait_until(WAIT, || sa.received() == 100 && sb.received() == 100));
        let want: Vec<u32> = (0..100).collect();
        assert_eq!(sa.frames.lock()[&to_b], want);
        assert_eq!(sb.frames.lock()[&to_a], want);
        let both = a_resume && b_resume;
        assert_eq!(a.get_connection(to_b).unwrap().session.is_some(), both);
        assert_eq!(b.get_connection(to_a).unwrap().session.is_some(), both);
        b.stop();
        a.stop();
    }

    // A raw client speaking format 1 to a node with resume on.
    let a = node(cfg(Some(resume())));
    let sa = watch(&a);
    let (mut ws, _) = tungstenite::connect(url(&a)).unwrap();
    bounded_reads(&ws);
    let hello = match ws.read().unwrap() {
        Message::Binary(b) => DefaultFrame::decode(&b).unwrap(),
        m => panic!("{m:?}"),
    };
    assert!(hello.is_hello());
    assert_eq!(hello.get_hello_node_id(), Some(a.node_id()));
    let me = NodeId::random();
    ws.send(Message::Binary(
        DefaultFrame::create_hello_ack(me, 1).encode().into(),
    ))
    .unwrap();
    ws.send(Message::Binary(frame(5).encode().into())).unwrap();
    assert!(wait_until(WAIT, || sa.received() == 1));
    let id = sa.connected_ids()[0];
    assert_eq!(a.get_connection(id).unwrap().session, None);
    a.send_to(id, frame(6)).unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert_eq!(DefaultFrame::decode(&b).unwrap(), frame(6)),
        m => panic!("{m:?}"),
    }
    a.stop();
}

#[test]
fn a_session_presented_by_another_node_is_refused_and_stays_resumable() {
    let (a, b, proxy, a_to_b, b_to_a, sa, sb) =
        pair_through(through_proxy, cfg(Some(resume())), cfg(Some(resume())));
    let session = a.get_connection(a_to_b).unwrap().session.unwrap();
    assert_eq!(
        b.get_connection(b_to_a).unwrap().session.as_deref(),
        Some(&*session)
    );
    proxy.refuse(true);
    proxy.cut();
    assert!(wait_until(WAIT, || a.stats().interrupted == 1));
    // An impostor names the session with its own node id.
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(url(&a)).unwrap();
    req.headers_mut()
        .insert("x-rxplus-resume", format!("{session} 0").parse().unwrap());
    let (mut ws, resp) = tungstenite::connect(req).unwrap();
    bounded_reads(&ws);
    assert_eq!(
        resp.headers()
            .get("x-rxplus-resume")
            .map(|v| v.to_str().unwrap()),
        Some("2")
    );
    let hello = match ws.read().unwrap() {
        Message::Binary(b) => b,
        m => panic!("{m:?}"),
    };
    assert_eq!(hello.len(), 45);
    assert_eq!(&hello[..2], [2, 1]);
    let mut ack = hello.to_vec();
    ack[1] = 2;
    ack[2..18].copy_from_slice(NodeId::random().as_bytes());
    ws.send(Message::Binary(ack.into())).unwrap();
    let code = loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => break u16::from(f.code),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, close_code::SESSION);
    // The real owner still resumes it.
    proxy.refuse(false);
    assert!(wait_until(WAIT, || sa.resumed() == 1 && sb.resumed() == 1));
    assert_eq!(a.get_connected_peers(), vec![a_to_b]);
    drop(ws);
    // The only Disconnected is the impostor's own placeholder (a refused handshake).
    assert!(wait_until(WAIT, || sa.disconnected() == 1));
    assert_eq!(a.get_connected_peers(), vec![a_to_b]);
    b.stop();
    a.stop();
}

#[test]
fn sessions_expire_and_count_against_max_peers_on_the_accepting_side() {
    let threads_before = thread_count();
    let expiry = Duration::from_millis(400);
    let short = || cfg(Some(resume().session_expiry(expiry)));
    let a = node(short().max_peers(2));
    let sa = watch(&a);
    let proxy = through_proxy(&a);
    let b1 = Node::new(short()).unwrap();
    let b2 = Node::new(short()).unwrap();
    let s1 = watch(&b1);
    let s2 = watch(&b2);
    let c1 = b1.connect_to(&proxy.url()).unwrap();
    let c2 = b2.connect_to(&proxy.url()).unwrap();
    assert!(b1.wait_connected(c1, WAIT) && b2.wait_connected(c2, WAIT));
    assert!(wait_until(WAIT, || sa.connected_ids().len() == 2));
    b1.send_to(c1, frame(1)).unwrap();
    proxy.refuse(true);
    proxy.cut();
    let cut_at = Instant::now();
    assert!(wait_until(WAIT, || a.stats().interrupted == 2));
    assert_eq!(a.stats().connections, 2);
    // Both waiting sessions hold the node's peer slots.
    let refused = tungstenite::connect(url(&a)).unwrap_err();
    assert!(
        matches!(&refused, tungstenite::Error::Http(r) if r.status() == 503),
        "{refused}"
    );
    // Past the expiry nothing is left on the accepting side, and each side said why.
    assert!(wait_until(WAIT, || a.stats().connections == 0));
    assert!(cut_at.elapsed() >= expiry);
    assert_eq!(a.stats().interrupted, 0);
    let expired = sa.resume_failed();
    assert_eq!(expired.len(), 2);
    assert!(expired.iter().all(|(_, w, _)| *w == ResumeFailure::Expired));
    assert_eq!(
        sa.count(|e| matches!(
            e,
            GatewayEvent::Disconnected {
                cause: DisconnectCause::ResumeFailed(ResumeFailure::Expired),
                ..
            }
        )),
        2
    );
    // The dialers give their sessions up too (one had an unacknowledged frame or none).
    assert!(wait_until(WAIT, || s1.resume_failed().len() == 1
        && s2.resume_failed().len() == 1));
    assert_eq!(s2.resume_failed()[0], (c2, ResumeFailure::Expired, 0));
    assert_eq!(s1.resume_failed()[0].1, ResumeFailure::Expired);
    // A slot is free again.
    let (mut ws, _) = tungstenite::connect(url(&a)).unwrap();
    ws.close(None).unwrap();
    // The dialers go on with fresh links once the transport is back.
    proxy.refuse(false);
    assert!(wait_until(WAIT, || s1.connected_ids().len() == 2
        && s2.connected_ids().len() == 2));
    assert_eq!(a.stats().connections, 2);
    b1.stop();
    b2.stop();
    a.stop();
    drop(proxy);
    assert!(
        wait_until(WAIT, || thread_count() <= threads_before),
        "{}",
        thread_report()
    );
}

#[test]
fn resume_settings_are_validated() {
    for bad in [
        ResumeConfig::enabled().buffer(0, 1),
        ResumeConfig::enabled().buffer(1, 0),
        ResumeConfig::enabled().ack(0, Duration::from_millis(1)),
        ResumeConfig::enabled().ack(1, Duration::ZERO),
        ResumeConfig::enabled().session_expiry(Duration::ZERO),
    ] {
        let Err(e) = Node::new(cfg(Some(bad.clone()))) else {
            panic!("{bad:?} accepted")
        };
        assert!(e.to_string().contains("resume."), "{e}");
    }
    // Off: its numbers are not looked at.
    Node::new(cfg(Some(ResumeConfig::default().buffer(0, 0)))).unwrap();
}

/// A raw client speaking format 2 by hand: the wire format as documented, duplicates dropped,
/// acknowledgements sent, and a frame out of order cuts the transport.
#[test]
fn the_format_2_wire_as_documented_duplicates_dropped_gaps_cut() {
    let a = node(cfg(Some(resume().ack(2, Duration::from_secs(5)))));
    let sa = watch(&a);
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(url(&a)).unwrap();
    req.headers_mut()
        .insert("x-rxplus-resume", "new".parse().unwrap());
    let (mut ws, resp) = tungstenite::connect(req).unwrap();
    bounded_reads(&ws);
    assert_eq!(resp.headers()["x-rxplus-resume"], "2");
    let hello = match ws.read().unwrap() {
        Message::Binary(b) => b.to_vec(),
        m => panic!("{m:?}"),
    };
    // format 2, HELLO, node id, version 1, session, recv 0, status fresh.
    assert_eq!(hello.len(), 45);
    assert_eq!(&hello[..2], [2, 1]);
    assert_eq!(&hello[2..18], a.node_id().as_bytes());
    assert_eq!(&hello[18..20], [0, 1]);
    assert_eq!(&hello[36..45], [0; 9]);
    let mut ack = hello.clone();
    ack[1] = 2;
    ack[2..18].copy_from_slice(NodeId::random().as_bytes());
    ws.send(Message::Binary(ack.into())).unwrap();
    let data = |seq: u64, k: u32| {
        let mut m = vec![2, 3];
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(&frame(k).encode());
        Message::Binary(m.into())
    };
    for (seq, k) in [(1, 10), (1, 10), (2, 20), (2, 20), (1, 10)] {
        ws.send(data(seq, k)).unwrap();
    }
    assert!(wait_until(WAIT, || a.stats().duplicates == 3));
    assert_eq!(sa.frames.lock().values().next(), Some(&vec![10, 20]));
    // Two frames in: an acknowledgement of 2 (format 2, ACK, sequence number).
    let acked = loop {
        match ws.read().unwrap() {
            Message::Binary(b) => break b.to_vec(),
            Message::Ping(_) | Message::Pong(_) => {}
            m => panic!("{m:?}"),
        }
    };
    assert_eq!(acked, [2, 4, 0, 0, 0, 0, 0, 0, 0, 2]);
    // The node's own frames come numbered from 1.
    let id = sa.connected_ids()[0];
    assert!(a.get_connection(id).unwrap().session.is_some());
    a.send_to(id, frame(30)).unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => {
            assert_eq!(&b[..10], [2, 3, 0, 0, 0, 0, 0, 0, 0, 1]);
            assert_eq!(DefaultFrame::decode(&b[10..]).unwrap(), frame(30));
        }
        m => panic!("{m:?}"),
    }
    // A gap (4 after 2): the transport is cut, the link waits for a resume.
    ws.send(data(4, 40)).unwrap();
    let ended = loop {
        match ws.read() {
            Ok(Message::Close(_)) | Err(_) => break true,
            Ok(_) => {}
        }
    };
    assert!(ended);
    assert!(wait_until(WAIT, || a.stats().interrupted == 1));
    assert_eq!(sa.received(), 2);
    a.stop();
}

/// `disconnect` as the link's policy: a resend buffer that fills while interrupted ends the
/// link (nothing is given up silently), and a broadcast reaches an interrupted link after its
/// resume.
#[test]
fn a_full_resend_buffer_under_disconnect_ends_the_link_and_broadcast_waits_for_resume() {
    let a = node(cfg(Some(resume())));
    let b_cfg = cfg(Some(ResumeConfig::enabled().buffer(10, 1 << 20)))
        .overflow(OverflowStrategy::Disconnect, 0);
    let b = Node::new(b_cfg).unwrap();
    let sa = watch(&a);
    let sb = watch(&b);
    let proxy = through_proxy(&a);
    let to_a = b.connect_to(&proxy.url()).unwrap();
    assert!(b.wait_connected(to_a, WAIT));
    assert!(wait_until(WAIT, || sa.connected_ids().len() == 1));
    let to_b = sa.connected_ids()[0];
    proxy.refuse(true);
    proxy.cut();
    assert!(wait_until(WAIT, || a.stats().interrupted == 1
        && b.stats().interrupted == 1));
    // Broadcast from the accepting side reaches the interrupted link once it is back.
    assert_eq!(a.broadcast(frame(1)), 1);
    for k in 0..10 {
        b.send_to(to_a, frame(k)).unwrap();
    }
    // Over the bound: a broadcast is refused and ends the link (as `send_to` would).
    assert_eq!(b.broadcast(frame(10)), 0);
    assert!(wait_until(WAIT, || sb.disconnected() == 1));
    let e = b.send_to(to_a, frame(11)).unwrap_err();
    assert!(matches!(e, rxplus::Error::NoConnection { .. }), "{e}");
    assert!(sb.events.lock().iter().any(|e| matches!(e, GatewayEvent::Disconnected { conn_id, cause: DisconnectCause::Overflow, .. } if *conn_id == to_a)));
    b.stop();
    // A broadcast while a resumable link is interrupted reaches it after its resume.
    let c = Node::new(cfg(Some(resume()))).unwrap();
    let sc = watch(&c);
    proxy.refuse(false);
    let to_a = c.connect_to(&proxy.url()).unwrap();
    assert!(c.wait_connected(to_a, WAIT));
    // Both sides have the session (the dialer is connected a moment before the acceptor).
    assert!(wait_until(WAIT, || sa.connected_ids().len() == 2));
    proxy.refuse(true);
    proxy.cut();
    // The accepting side still keeps b's session too (b gave up; no close could reach it):
    // until its expiry, both interrupted links take the broadcast.
    assert!(
        wait_until(WAIT, || a.stats().interrupted == 2
            && a.stats().connections == 2),
        "{:?} {:?}",
        a.stats(),
        a.connections()
    );
    assert_eq!(a.broadcast(frame(2)), 2);
    assert_eq!(sc.received(), 0);
    proxy.refuse(false);
    assert!(wait_until(WAIT, || sc.resumed() == 1 && sc.received() == 1));
    assert_eq!(sc.frames.lock()[&to_a], vec![2]);
    assert_eq!(to_b, sa.connected_ids()[0]);
    // b's session still waits on a (b gave up; no close could reach a). Disconnecting it ends
    // it at once, without a thread of its own, and counts the two broadcasts it held.
    assert_eq!(a.get_connection(to_b).unwrap().queued, 2);
    a.disconnect(to_b).unwrap();
    assert!(wait_until(WAIT, || a.get_connection(to_b).is_none()));
    assert!(sa.events.lock().iter().any(|e| matches!(e, GatewayEvent::Disconnected { conn_id, cause: DisconnectCause::Local, .. } if *conn_id == to_b)));
    assert_eq!(a.stats().resume_lost, 2);
    assert_eq!(a.stats().interrupted, 0);
    c.stop();
    a.stop();
}

/// Eight threads per side send on one resumable link while the transport is cut three times:
/// every frame arrives once, and each thread's frames arrive in the order it sent them.
#[test]
fn many_senders_on_one_link_keep_their_order_across_cuts() {
    const THREADS: u32 = 8;
    const EACH: u32 = 1_000;
    let drop_new = |c: GatewayConfig| c.overflow(OverflowStrategy::DropNew, 1000);
    let (a, b, proxy, a_to_b, b_to_a, sa, sb) = pair_through(
        through_proxy,
        drop_new(cfg(Some(resume()))),
        drop_new(cfg(Some(resume()))),
    );
    let sent = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (a, b, sent) = (&a, &b, &sent);
            s.spawn(move || {
                for i in 0..EACH {
                    let k = t << 16 | i;
                    for (n, to) in [(a, a_to_b), (b, b_to_a)] {
                        let deadline = Instant::now() + WAIT;
                        while n.send_to(to, frame(k)).is_err() {
                            assert!(Instant::now() < deadline, "frame {k:#x} refused for 10 s");
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let total = u64::from(THREADS * EACH);
        for cut in 1..=3usize {
            assert!(wait_until(WAIT, || sent.load(Ordering::Relaxed)
                >= total * cut as u64 / 4));
            proxy.cut();
            assert!(wait_until(WAIT, || sa.resumed() == cut && sb.resumed() == cut));
        }
    });
    let total = (THREADS * EACH) as usize;
    assert!(wait_until(WAIT, || sa.received() == total && sb.received() == total));
    for (seen, id) in [(&sa, a_to_b), (&sb, b_to_a)] {
        let got = seen.frames.lock()[&id].clone();
        let mut next = vec![0u32; THREADS as usize];
        for k in got {
            let (t, i) = ((k >> 16) as usize, k & 0xffff);
            assert_eq!(
                i, next[t],
                "thread {t}: {i} arrived when {} was due",
                next[t]
            );
            next[t] += 1;
        }
        assert!(next.iter().all(|&n| n == EACH));
    }
    assert_eq!((sa.disconnected(), sb.disconnected()), (0, 0));
    b.stop();
    a.stop();
}
