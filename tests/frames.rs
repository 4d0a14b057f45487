//! The inbound frame parser over real sockets: frames that arrive in the same segment as the
//! opening handshake, frames cut at every byte, fragmented messages and violations answered
//! with the right close code, in both roles.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use rxplus::ws::{RxWSClient, RxWSServer, TaggedData, Text, WSMessage};
use rxplus::Notification;
use support::*;

const UPGRADE: &str = "GET /f HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A frame as a client sends it (masked with a fixed non-zero key) or as a server sends it.
fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n < 65536 => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// Reads an HTTP header byte by byte (nothing after it is consumed).
fn read_header(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "header cut: {head:?}");
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

/// A text server collecting `(message)` items into a channel.
fn text_server() -> (
    RxWSServer<String>,
    crossbeam_channel::Receiver<Notification<TaggedData<String>>>,
) {
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
    let rx = server.stream();
    (server, rx)
}

fn next_text(rx: &crossbeam_channel::Receiver<Notification<TaggedData<String>>>) -> String {
    match rx.recv_timeout(WAIT) {
        Ok(Notification::Next(m)) => m.data,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The close frame the server answers with: (code, reason).
fn close_reply(s: &mut TcpStream) -> u16 {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 256];
    loop {
        // A close frame from the server: 0x88, length, 2-byte code.
        if got.len() >= 4 && got[0] == 0x88 {
            return u16::from_be_bytes([got[2], got[3]]);
        }
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "closed without a close frame: {got:?}");
        got.extend_from_slice(&b[..n]);
    }
}

#[test]
fn frames_in_the_same_segment_as_the_upgrade_request_are_delivered() {
    let (server, rx) = text_server();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_nodelay(true).unwrap();
    let mut bytes = UPGRADE.as_bytes().to_vec();
    for i in 0..100 {
        bytes.extend(frame(true, 1, format!("early {i}").as_bytes(), true));
    }
    s.write_all(&bytes).unwrap();
    assert!(read_header(&mut s).starts_with("HTTP/1.1 101"));
    for i in 0..100 {
        assert_eq!(next_text(&rx), format!("early {i}"));
    }
}

/// A peer that answers a client's upgrade request with `response(key)` in one write, then
/// holds the connection until the client goes.
fn answering_peer(
    response: impl FnOnce(&str) -> Vec<u8> + Send + 'static,
) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind(any_port()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let req = read_header(&mut s);
        let key = req
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .trim()
            .to_string();
        s.write_all(&response(&tungstenite::handshake::derive_accept_key(
            key.as_bytes(),
        )))
        .unwrap();
        let mut b = [0u8; 64];
        let _ = s.read(&mut b);
    });
    (port, peer)
}

#[test]
fn a_refusal_s_body_in_the_same_segment_reaches_the_error() {
    let (port, peer) = answering_peer(|_| {
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 8\r\n\r\nno token".to_vec()
    });
    let client = RxWSClient::<String>::with_config(local(port, "/f"), Text, quiet()).unwrap();
    let rx = client.stream();
    match rx.recv_timeout(WAIT) {
        Ok(Notification::Error(rxplus::Error::HandshakeRefused { status, body, .. })) => {
            assert_eq!((status, body.as_str()), (401, "no token"));
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    client.dispose();
    peer.join().unwrap();
}

#[test]
fn frames_after_a_101_with_bare_line_feeds_reach_the_client() {
    let (port, peer) = answering_peer(|accept| {
        let mut b = format!("HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Accept: {accept}\n\n").into_bytes();
        b.extend(frame(true, 1, b"after lf", false));
        b
    });
    let client = RxWSClient::<String>::with_config(local(port, "/f"), Text, quiet()).unwrap();
    let rx = client.stream();
    match rx.recv_timeout(WAIT) {
        Ok(Notification::Next(m)) => assert_eq!(m, "after lf"),
        other => panic!("expected a message, got {other:?}"),
    }
    client.dispose();
    peer.join().unwrap();
}

#[test]
fn frames_in_the_same_segment_as_the_101_response_reach_the_client() {
    let (port, peer) = answering_peer(|accept| {
        let mut b = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").into_bytes();
        b.extend(frame(true, 1, b"first", false));
        b.extend(frame(false, 2, b"sec", false));
        b.extend(frame(true, 0, b"ond", false));
        b
    });
    let client =
        RxWSClient::<WSMessage>::with_config(local(port, "/f"), rxplus::ws::Raw, quiet()).unwrap();
    let rx = client.stream();
    let mut got = Vec::new();
    while got.len() < 2 {
        match rx.recv_timeout(WAIT) {
            Ok(Notification::Next(m)) => got.push(m),
            other => panic!("expected a message, got {other:?}"),
        }
    }
    assert_eq!(
        got,
        vec![
            WSMessage::Text("first".into()),
            WSMessage::Binary(b"second".to_vec())
        ]
    );
    client.dispose();
    peer.join().unwrap();
}

#[test]
fn frames_cut_at_every_byte_arrive_whole_and_in_order() {
    let (server, rx) = text_server();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(UPGRADE.as_bytes()).unwrap();
    read_header(&mut s);
    // Short, 16-bit and fragmented frames, with a multi-byte character split across fragments.
    let long = "ü".repeat(200);
    let mut bytes = frame(true, 1, b"short", true);
    bytes.extend(frame(true, 1, long.as_bytes(), true));
    let split = "añb".as_bytes();
    bytes.extend(frame(false, 1, &split[..2], true));
    bytes.extend(frame(true, 9, b"ping between fragments", true));
    bytes.extend(frame(true, 0, &split[2..], true));
    for b in &bytes {
        s.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_micros(50));
    }
    assert_eq!(next_text(&rx), "short");
    assert_eq!(next_text(&rx), long);
    assert_eq!(next_text(&rx), "añb");
}

/// Sends `bytes` after the handshake and expects the server to close with `code`.
fn violation(bytes: &[u8], code: u16) {
    let (server, rx) = text_server();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(UPGRADE.as_bytes()).unwrap();
    read_header(&mut s);
    s.write_all(bytes).unwrap();
    assert_eq!(close_reply(&mut s), code, "for {bytes:02x?}");
    assert!(
        rx.try_recv().is_err(),
        "nothing is delivered for {bytes:02x?}"
    );
}

#[test]
fn violations_are_answered_with_their_close_code() {
    // Reserved bits, an unmasked client frame, reserved opcodes, a bad continuation.
    violation(&[0xc1, 0x80, 0, 0, 0, 0], 1002);
    violation(&frame(true, 1, b"unmasked", false), 1002);
    violation(&frame(true, 3, b"x", true), 1002);
    violation(&frame(true, 11, b"x", true), 1002);
    violation(&frame(true, 0, b"orphan", true), 1002);
    let mut twice = frame(false, 1, b"a", true);
    twice.extend(frame(true, 1, b"b", true));
    violation(&twice, 1002);
    // Control frames: fragmented, or longer than 125 bytes (caught from the header alone).
    violation(&frame(false, 9, b"x", true), 1002);
    violation(&[0x89, 0x80 | 126, 0, 126, 0, 0, 0, 0], 1002);
    // A close frame of one byte.
    violation(&frame(true, 8, &[3], true), 1002);
    // Invalid UTF-8: in one frame, and in a first fragment before the message ends.
    violation(&frame(true, 1, &[0xce, 0xba, 0xff], true), 1007);
    violation(&frame(false, 1, &[b'a', 0xff], true), 1007);
    // A frame above max_frame_size (16 MiB by default): refused from its header.
    let mut huge = vec![0x82, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
    huge.extend_from_slice(&[0, 0, 0, 0]);
    violation(&huge, 1009);
}

#[test]
fn a_message_above_max_message_size_across_fragments_is_refused() {
    let server =
        RxWSServer::<String>::bind_with_config(any_port(), Text, quiet().max_message_size(1000))
            .unwrap();
    let rx = server.stream();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(UPGRADE.as_bytes()).unwrap();
    read_header(&mut s);
    // Five fragments of 300 bytes: each within the limit, the message not.
    let mut bytes = frame(false, 1, &[b'a'; 300], true);
    for _ in 0..4 {
        bytes.extend(frame(false, 0, &[b'a'; 300], true));
    }
    s.write_all(&bytes).unwrap();
    assert_eq!(close_reply(&mut s), 1009);
    assert!(rx.try_recv().is_err());
}
