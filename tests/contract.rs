//! Contracts a plausible bug would break, each checked over real loopback sockets: a client
//! keeps its connection through a decode error; malformed upgrades get exactly 400 and refused
//! connections exactly 503; `on_error` closes with 1011 (and `on_completed` with 1000) on both
//! sides; the query string is not part of a server's path.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use parking_lot::Mutex;
use rxplus::tungstenite::{self, Message, WebSocket};
use rxplus::ws::{
    Binary, ConnectionEvent, ConnectionEventKind, Datatype, Raw, RxWSClient, RxWSServer,
    TaggedData, Text, WSConnectionConfig, WSMessage,
};
use rxplus::{Error, Notification};
use support::*;

#[track_caller]
fn next<T: std::fmt::Debug>(rx: &crossbeam_channel::Receiver<Notification<T>>) -> T {
    match rx.recv_timeout(WAIT) {
        Ok(Notification::Next(v)) => v,
        other => panic!("expected an item, got {other:?}"),
    }
}

/// Some error to complete a component with.
fn an_error() -> Error {
    WSConnectionConfig::new("", 1, "/").unwrap_err()
}

fn recorded_events<T: Clone + Send + 'static>(
    server: &RxWSServer<T>,
) -> Arc<Mutex<Vec<ConnectionEvent>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    server.subscribe_events(move |ev: ConnectionEvent| e.lock().push(ev));
    events
}

// ---- 1. A client keeps its connection through a decode error ----

/// The server sends `bad` (which the client's datatype cannot decode) then `good` on one
/// connection. The client delivers `good`, counts one decode error, and the connection is the
/// same one afterwards: a marker sent back arrives on it, and nothing was closed or reopened.
fn client_keeps_its_connection_through_a_decode_error<T>(
    datatype: impl Datatype<T>,
    bad: WSMessage,
    good: WSMessage,
    expect: T,
    marker: T,
    marker_wire: WSMessage,
) where
    T: Clone + Send + PartialEq + std::fmt::Debug + 'static,
{
    let server = RxWSServer::<WSMessage>::bind_with_config(any_port(), Raw, quiet()).unwrap();
    let events = recorded_events(&server);
    let inbound = server.stream();
    let client = RxWSClient::<T>::with_config(
        local(server.local_addr().port(), "/decode"),
        datatype,
        quiet(),
    )
    .unwrap();
    let received = client.stream();
    assert!(client.wait_connected(WAIT));
    assert!(wait_until(WAIT, || events.lock().len() == 1));
    let id = events.lock()[0].id;

    server
        .send(TaggedData::to_conn("/decode", id, bad))
        .unwrap();
    server
        .send(TaggedData::to_conn("/decode", id, good))
        .unwrap();
    assert_eq!(next(&received), expect);
    // The client still talks on the same connection.
    client.send(marker).unwrap();
    let back = next(&inbound);
    assert_eq!((back.conn, back.data), (Some(id), marker_wire));

    let stats = client.stats();
    assert_eq!(stats.decode_errors, 1);
    assert_eq!(stats.connections_opened, 1, "the client reconnected");
    assert_eq!(
        stats.connections_closed, 0,
        "the client closed its connection"
    );
    assert_eq!(stats.connect_attempts, 1);
    assert!(client.is_connected());
    let events = events.lock().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].kind, events[0].id),
        (ConnectionEventKind::Opened, id)
    );
    assert_eq!(server.connections("/decode"), vec![id]);
    assert_eq!(server.stats().connections_closed, 0);
}

#[test]
fn bytes_client_keeps_its_connection_when_a_text_frame_fails_to_decode() {
    client_keeps_its_connection_through_a_decode_error::<Vec<u8>>(
        Binary,
        WSMessage::Text("not bytes".into()),
        WSMessage::Binary(vec![1, 2, 3]),
        vec![1, 2, 3],
        vec![7],
        WSMessage::Binary(vec![7]),
    );
}

#[test]
fn text_client_keeps_its_connection_when_invalid_utf8_fails_to_decode() {
    client_keeps_its_connection_through_a_decode_error::<String>(
        Text,
        WSMessage::Binary(vec![0xff, 0xfe, 0xfd]),
        WSMessage::Text("good".into()),
        "good".to_owned(),
        "marker".to_owned(),
        WSMessage::Text("marker".into()),
    );
}

// ---- 2, 3. HTTP answers: exactly 400 for a malformed upgrade, 503 beyond the limit ----

/// Connects, writes `request` (if any), and reads the server's answer to the end.
fn http_answer(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    if !request.is_empty() {
        s.write_all(request.as_bytes()).unwrap();
    }
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .unwrap_or_else(|e| panic!("no complete answer to {request:?}: {e}"));
    String::from_utf8(resp).unwrap()
}

fn status_line(resp: &str) -> &str {
    resp.split("\r\n").next().unwrap_or_default()
}

fn echoes(client: &RxWSClient<String>, text: &str) {
    let rx = client.stream();
    assert!(client.wait_connected(WAIT));
    client.send(text.to_owned()).unwrap();
    assert_eq!(next(&rx), text);
}

#[test]
fn a_malformed_upgrade_gets_exactly_400_and_the_server_keeps_serving() {
    let server = echo_server::<String>(Text);
    let addr = server.local_addr();
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let upgrade = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let malformed = [
        ("no key", format!("GET / HTTP/1.1\r\n{upgrade}Sec-WebSocket-Version: 13\r\n\r\n")),
        (
            "bad key",
            format!(
                "GET / HTTP/1.1\r\n{upgrade}Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
        ),
        (
            "bad version",
            format!("GET / HTTP/1.1\r\n{upgrade}{key}Sec-WebSocket-Version: 8\r\n\r\n"),
        ),
        (
            "no version",
            format!("GET / HTTP/1.1\r\n{upgrade}{key}\r\n"),
        ),
    ];
    for (what, request) in &malformed {
        let resp = http_answer(addr, request);
        assert_eq!(
            status_line(&resp),
            "HTTP/1.1 400 Bad Request",
            "{what}: {resp}"
        );
    }
    assert_eq!(server.connection_count(), 0);
    let c = RxWSClient::<String>::with_config(local(addr.port(), "/"), Text, quiet()).unwrap();
    echoes(&c, "still serving");
    assert_eq!(server.stats().connections_opened, 1);
}

#[test]
fn a_connection_beyond_max_connections_gets_exactly_503_until_one_closes() {
    let server =
        RxWSServer::<String>::bind_with_config(any_port(), Text, quiet().max_connections(1))
            .unwrap();
    let h = server.handle();
    server.subscribe(move |m: TaggedData<String>| h.on_next(m.reply(m.data.clone())));
    let addr = server.local_addr();
    let first = RxWSClient::<String>::with_config(local(addr.port(), "/"), Text, quiet()).unwrap();
    echoes(&first, "first");
    assert!(wait_until(WAIT, || server.connection_count() == 1));

    // Refused before the request is read: the answer comes without one.
    let resp = http_answer(addr, "");
    assert_eq!(
        status_line(&resp),
        "HTTP/1.1 503 Service Unavailable",
        "{resp}"
    );

    // A client beyond the limit is refused and retries...
    let next_client =
        RxWSClient::<String>::with_config(local(addr.port(), "/"), Text, quiet()).unwrap();
    assert!(
        wait_until(WAIT, || next_client.stats().connect_attempts >= 2),
        "the second client was not refused"
    );
    assert!(!next_client.is_connected());
    assert_eq!(server.connection_count(), 1);
    // ...and is served once the first connection has closed.
    first.on_completed();
    echoes(&next_client, "second");
    assert_eq!(server.connection_count(), 1);
    assert_eq!(next_client.stats().connections_opened, 1);
    assert_eq!(server.stats().connections_opened, 2);
}

// ---- 4. on_error closes with 1011, on_completed with 1000 ----

/// Reads until the peer's close frame and returns its code; then lets the close handshake end.
fn close_code(ws: &mut WebSocket<TcpStream>) -> u16 {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                let code = u16::from(frame.code);
                // Flushes our close reply; ends when the peer closes the socket.
                while ws.read().is_ok() {}
                return code;
            }
            Ok(Message::Close(None)) => panic!("close frame without a code"),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

/// The close code a raw tungstenite server sees when `finish` ends a connected client.
fn close_code_from_client(finish: impl FnOnce(&RxWSClient<String>)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let mut ws = tungstenite::accept(sock).unwrap_or_else(|e| panic!("handshake: {e}"));
        close_code(&mut ws)
    });
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
    assert!(client.wait_connected(WAIT));
    finish(&client);
    peer.join().unwrap()
}

/// The close code a raw tungstenite client sees when `finish` ends the server.
fn close_code_from_server(finish: impl FnOnce(&RxWSServer<String>)) -> u16 {
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
    let sock = TcpStream::connect(server.local_addr()).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let url = format!("ws://{}/raw", server.local_addr());
    let (mut ws, _) =
        tungstenite::client::client(url, sock).unwrap_or_else(|e| panic!("handshake: {e}"));
    assert!(wait_until(WAIT, || server.connection_count() == 1));
    // Reads concurrently, so the server's close handshake completes.
    let peer = std::thread::spawn(move || close_code(&mut ws));
    finish(&server);
    peer.join().unwrap()
}

#[test]
fn client_on_error_closes_with_1011_and_on_completed_with_1000() {
    assert_eq!(close_code_from_client(|c| c.on_error(an_error())), 1011);
    assert_eq!(close_code_from_client(|c| c.on_completed()), 1000);
}

#[test]
fn server_on_error_closes_with_1011_and_on_completed_with_1000() {
    assert_eq!(close_code_from_server(|s| s.on_error(an_error())), 1011);
    assert_eq!(close_code_from_server(|s| s.on_completed()), 1000);
}

// ---- 5. The query string is not part of the path ----

#[test]
fn the_query_string_is_not_part_of_the_servers_path() {
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
    let events = recorded_events(&server);
    let rx = server.stream();
    let client = RxWSClient::<String>::with_config(
        local(server.local_addr().port(), "/chat?room=1&x=2"),
        Text,
        quiet(),
    )
    .unwrap();
    assert!(client.wait_connected(WAIT));
    client.send("hi".to_owned()).unwrap();
    let m = next(&rx);
    assert_eq!(&*m.tag, "/chat");
    assert_eq!(m.data, "hi");
    let id = m.conn.expect("inbound items carry their connection");
    assert_eq!(server.connections("/chat"), vec![id]);
    assert!(server.connections("/chat?room=1&x=2").is_empty());
    assert!(wait_until(WAIT, || events.lock().len() == 1));
    assert_eq!(events.lock()[0].path, "/chat");
    // A reply by path reaches it.
    let replies = client.stream();
    server
        .send(TaggedData::new("/chat", "to the room".to_owned()))
        .unwrap();
    assert_eq!(next(&replies), "to the room");
}
