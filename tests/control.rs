//! Connection control over loopback: the accept hook (by header, query, path; subprotocols;
//! a panicking hook), closing one connection with a code, close codes seen both ways,
//! `dispose` sending 1001, refused clients not retried.

mod support;

use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rxplus::tungstenite::{self, Message};
use rxplus::ws::{
    AcceptHook, CloseInfo, ConnectionEvent, ConnectionEventKind, ConnectionState, RetryPolicy,
    RxWSClient, RxWSServer, TaggedData, Text, Verdict, WSConfig,
};
use rxplus::{Error, Notification};
use support::*;

fn hooked(hook: AcceptHook) -> RxWSServer<String> {
    let s = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet().accept_hook(hook))
        .unwrap();
    let h = s.handle();
    s.subscribe(move |m: TaggedData<String>| h.on_next(m.reply(m.data.clone())));
    s
}

fn bearer(token: &'static str) -> AcceptHook {
    AcceptHook::new(move |req| {
        let header_ok = req.header("authorization") == Some(&format!("Bearer {token}")[..]);
        if header_ok || req.query_param("token") == Some(token) {
            Verdict::accept()
        } else {
            Verdict::refuse(401, "unauthorized")
        }
    })
}

fn events(server: &RxWSServer<String>) -> Arc<Mutex<Vec<ConnectionEvent>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    server.subscribe_events(move |e| g.lock().push(e));
    got
}

/// A raw tungstenite client; the status of a refused handshake as `Err`.
fn raw(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<tungstenite::WebSocket<TcpStream>, u16> {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    for (n, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    match tungstenite::client(req, sock) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err(r.status().as_u16())
        }
        Err(e) => panic!("{e}"),
    }
}

/// The close frame the peer sent; tungstenite's reply goes out as the stream is read to its end.
fn close_code(ws: &mut tungstenite::WebSocket<TcpStream>) -> (u16, String) {
    let got = loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => break (u16::from(f.code), f.reason.to_string()),
            Ok(Message::Close(None)) => break (1005, String::new()),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    while ws.read().is_ok() {}
    got
}

#[test]
fn the_hook_accepts_by_header_or_query_token_and_refuses_with_its_status() {
    let server = hooked(bearer("s3cret"));
    let port = server.local_addr().port();
    assert!(raw(port, "/", &[("Authorization", "Bearer s3cret")]).is_ok());
    assert!(raw(port, "/a?x=1&token=s3cret", &[]).is_ok());
    assert_eq!(raw(port, "/", &[]).err(), Some(401));
    assert_eq!(
        raw(port, "/", &[("Authorization", "Bearer wrong")]).err(),
        Some(401)
    );
    // Our client: the header is sent on every attempt.
    let client = RxWSClient::<String>::with_config(
        local(port, "/c"),
        Text,
        quiet().header("Authorization", "Bearer s3cret"),
    )
    .unwrap();
    assert!(client.wait_connected(WAIT));
    client.on_completed();
    server.dispose();
}

#[test]
fn a_refused_client_ends_closed_with_the_status_and_is_not_retried() {
    let server = hooked(bearer("s3cret"));
    let port = server.local_addr().port();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
    let e2 = errors.clone();
    client.subscribe_errors(move |e| e2.lock().push(e));
    let rx = client.stream();
    let e = match rx.recv_timeout(WAIT) {
        Ok(Notification::Error(e)) => e,
        other => panic!("{other:?}"),
    };
    assert!(
        matches!(e, Error::HandshakeRefused { status: 401, .. }),
        "{e:?}"
    );
    assert_eq!(e.refused_status(), Some(401));
    assert!(wait_until(WAIT, || client.connection_state()
        == ConnectionState::Closed));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(client.stats().connect_attempts, 1);
    assert!(errors
        .lock()
        .iter()
        .any(|e| e.refused_status() == Some(401)));
    server.dispose();
}

#[test]
fn a_5xx_refusal_is_retried_until_accepted() {
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    let server = hooked(AcceptHook::new(move |_| {
        if s2.fetch_add(1, Ordering::SeqCst) < 2 {
            Verdict::refuse(503, "warming up")
        } else {
            Verdict::accept()
        }
    }));
    let client = RxWSClient::<String>::with_config(
        local(server.local_addr().port(), "/"),
        Text,
        quiet().retry(
            RetryPolicy::default()
                .initial_delay(Duration::from_millis(10))
                .max_delay(Duration::from_millis(20)),
        ),
    )
    .unwrap();
    assert!(client.wait_connected(WAIT));
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    client.on_completed();
    server.dispose();
}

#[test]
fn allowed_paths_refuse_others_with_404_before_the_hook() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let server = RxWSServer::<String>::bind_with_config(
        any_port(),
        Text,
        quiet()
            .allowed_paths(["/chat"])
            .accept_hook(AcceptHook::new(move |_| {
                c2.fetch_add(1, Ordering::SeqCst);
                Verdict::accept()
            })),
    )
    .unwrap();
    let port = server.local_addr().port();
    assert_eq!(raw(port, "/other", &[]).err(), Some(404));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(raw(port, "/chat?x=1", &[]).is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    server.dispose();
}

#[test]
fn the_hook_chooses_a_subprotocol_adds_headers_and_the_event_carries_the_handshake() {
    let server = hooked(AcceptHook::new(|req| {
        let chosen = req.protocols().iter().find(|p| *p == "v2").cloned();
        match chosen {
            Some(p) => Verdict::accept()
                .protocol(p)
                .header("X-Served-By", "test")
                .keep_headers(["x-tenant"]),
            None => Verdict::refuse(400, "no protocol"),
        }
    }));
    let got = events(&server);
    let port = server.local_addr().port();
    let client = RxWSClient::<String>::with_config(
        local(port, "/p?room=9"),
        Text,
        quiet()
            .subprotocol("v1")
            .subprotocol("v2")
            .header("X-Tenant", "acme")
            .header("X-Other", "dropped"),
    )
    .unwrap();
    assert!(client.wait_connected(WAIT));
    assert_eq!(client.protocol().as_deref(), Some("v2"));
    assert!(client
        .response_headers()
        .contains(&("x-served-by".to_string(), "test".to_string())));
    assert!(wait_until(WAIT, || !got.lock().is_empty()));
    let opened = got.lock()[0].clone();
    assert_eq!(opened.kind, ConnectionEventKind::Opened);
    assert_eq!(opened.path, "/p");
    assert_eq!(opened.query.as_deref(), Some("room=9"));
    assert_eq!(opened.protocol.as_deref(), Some("v2"));
    assert_eq!(
        opened.headers,
        vec![("x-tenant".to_string(), "acme".to_string())]
    );
    // None offered: refused with the hook's 400.
    assert_eq!(raw(port, "/p", &[]).err(), Some(400));
    client.on_completed();
    server.dispose();
}

#[test]
fn a_panicking_hook_refuses_with_500_and_the_server_keeps_serving() {
    let server = hooked(AcceptHook::new(|req| {
        if req.path() == "/boom" {
            panic!("hook failed on purpose");
        }
        Verdict::accept()
    }));
    let port = server.local_addr().port();
    for _ in 0..3 {
        assert_eq!(raw(port, "/boom", &[]).err(), Some(500));
    }
    let mut ws = raw(port, "/fine", &[]).unwrap();
    ws.send(Message::text("still here")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("still here"));
    // A protocol the client did not offer is the hook's mistake: 500 too.
    let wrong = hooked(AcceptHook::new(|_| {
        Verdict::accept().protocol("never-offered")
    }));
    assert_eq!(raw(wrong.local_addr().port(), "/", &[]).err(), Some(500));
    wrong.dispose();
    server.dispose();
}

#[test]
fn close_one_connection_with_a_code_and_the_others_on_its_path_go_on() {
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
    let got = events(&server);
    let h = server.handle();
    // "close" closes the sender's connection with 4001 after echoing what came before.
    server.subscribe(move |m: TaggedData<String>| {
        if m.data == "close" {
            h.close(m.conn.unwrap(), 4001, "bye").unwrap();
        } else {
            h.on_next(m.reply(m.data.clone()));
        }
    });
    let port = server.local_addr().port();
    let mut a = raw(port, "/room", &[]).unwrap();
    let mut b = raw(port, "/room", &[]).unwrap();
    a.send(Message::text("one")).unwrap();
    a.send(Message::text("close")).unwrap();
    assert_eq!(a.read().unwrap(), Message::text("one"));
    assert_eq!(close_code(&mut a), (4001, "bye".to_string()));
    b.send(Message::text("other")).unwrap();
    assert_eq!(b.read().unwrap(), Message::text("other"));
    assert!(wait_until(WAIT, || got
        .lock()
        .iter()
        .any(|e| e.kind == ConnectionEventKind::Closed)));
    let closed: Vec<CloseInfo> = got.lock().iter().filter_map(|e| e.close.clone()).collect();
    assert_eq!(
        closed,
        vec![CloseInfo::Closed {
            code: 4001,
            reason: "bye".into(),
            by_peer: false
        }]
    );
    assert_eq!(server.connection_count(), 1);
    server.dispose();
}

#[test]
fn invalid_close_codes_are_errors() {
    let server = echo_server::<String>(Text);
    let mut ws = raw(server.local_addr().port(), "/", &[]).unwrap();
    ws.send(Message::text("hi")).unwrap();
    let _ = ws.read().unwrap();
    let id = server.connections("/")[0];
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        let e = server.close(id, code, "x").unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{code}: {e}");
    }
    assert!(server.close(id, 4000, &"r".repeat(124)).is_err());
    let unknown = rxplus::ws::ConnId::new();
    assert!(matches!(
        server.close(unknown, 1000, ""),
        Err(Error::NoConnection { .. })
    ));
    assert!(server.on_completed_with(1006, "").is_err());
    server.dispose();
}

#[test]
fn a_client_sees_the_servers_close_code_and_the_server_sees_the_clients() {
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
    let got = events(&server);
    let h = server.handle();
    server.subscribe(move |m: TaggedData<String>| {
        let _ = h.close(m.conn.unwrap(), 4002, "go");
    });
    let port = server.local_addr().port();
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
    let states = client.state_stream();
    assert!(client.wait_connected(WAIT));
    client.send("please close".into()).unwrap();
    // The close is readable when the state leaves Connected.
    loop {
        match states.recv_timeout(WAIT) {
            Ok(Notification::Next(ConnectionState::Connected)) => break,
            Ok(_) => {}
            other => panic!("{other:?}"),
        }
    }
    loop {
        match states.recv_timeout(WAIT) {
            Ok(Notification::Next(ConnectionState::Disconnected)) => break,
            Ok(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        client.last_close(),
        Some(CloseInfo::Closed {
            code: 4002,
            reason: "go".into(),
            by_peer: true
        })
    );
    client.dispose();
    // The client closing with its own code.
    let second = RxWSClient::<String>::with_config(local(port, "/two"), Text, quiet()).unwrap();
    assert!(second.wait_connected(WAIT));
    second.on_completed_with(4100, "done here").unwrap();
    assert!(wait_until(WAIT, || got.lock().iter().any(|e| e.path
        == "/two"
        && e.close
            == Some(CloseInfo::Closed {
                code: 4100,
                reason: "done here".into(),
                by_peer: true
            }))));
    server.dispose();
}

#[test]
fn dispose_sends_going_away_to_the_peers() {
    let server = echo_server::<String>(Text);
    let port = server.local_addr().port();
    let mut peers: Vec<_> = (0..3).map(|_| raw(port, "/", &[]).unwrap()).collect();
    assert!(wait_until(WAIT, || server.connection_count() == 3));
    server.dispose();
    for p in &mut peers {
        assert_eq!(close_code(p), (1001, "going away".to_string()));
    }
    // A client's dispose: the server sees 1001 from it.
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
    let got = events(&server);
    let client =
        RxWSClient::<String>::with_config(local(server.local_addr().port(), "/"), Text, quiet())
            .unwrap();
    assert!(client.wait_connected(WAIT));
    client.dispose();
    assert!(wait_until(WAIT, || got.lock().iter().any(|e| e.close
        == Some(CloseInfo::Closed {
            code: 1001,
            reason: "going away".into(),
            by_peer: true
        }))));
    server.dispose();
}

#[test]
fn request_headers_are_validated() {
    let bad = WSConfig::default().header("Bad Name", "x");
    assert!(bad.validate().is_err());
    let bad = WSConfig::default().header("X-Ok", "line\nbreak");
    assert!(bad.validate().is_err());
    assert!(WSConfig::default().subprotocol("a b").validate().is_err());
    assert!(WSConfig::default()
        .allowed_paths(["nope"])
        .validate()
        .is_err());
    assert!(WSConfig::default()
        .header("Authorization", "Bearer x")
        .subprotocol("chat.v2")
        .allowed_paths(["/a"])
        .validate()
        .is_ok());
}

#[test]
fn every_child_of_a_group_sends_the_headers_and_offers_the_subprotocols() {
    let server = hooked(AcceptHook::new(|req| {
        if req.header("authorization") != Some("Bearer g") {
            return Verdict::refuse(401, "unauthorized");
        }
        match req.protocols().first() {
            Some(p) => Verdict::accept().protocol(p.clone()),
            None => Verdict::refuse(400, "no protocol"),
        }
    }));
    let group = rxplus::ws::RxWSClientGroup::<String>::with_config(
        local(server.local_addr().port(), "/"),
        Text,
        quiet()
            .header("Authorization", "Bearer g")
            .subprotocol("g.v1"),
    )
    .unwrap();
    for p in ["/x", "/y"] {
        assert!(group.wait_connected(p, WAIT).unwrap(), "{p}");
        assert_eq!(group.protocol(p).as_deref(), Some("g.v1"), "{p}");
    }
    group.on_completed();
    server.dispose();
}
