//! A chat room: a server broadcasts every message received on `/chat` to every client on
//! `/chat` (`TaggedData::new(path, text)`, no connection id: the whole path). Two clients,
//! alice and bob, each say one line and print every line they receive: both see both lines.
//!
//! Run: `cargo run --release --example chat`

use std::time::Duration;

use crossbeam_channel::unbounded;
use rxplus::ws::{
    ConnectionEventKind, RxWSClient, RxWSServer, TaggedData, Text, WSConfig, WSConnectionConfig,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let timeout = Duration::from_secs(5);

    // The room: whatever arrives on /chat goes out to everyone on /chat, the sender included.
    let server = RxWSServer::<String>::bind("127.0.0.1:0", Text)?;
    let room = server.handle();
    server.subscribe(move |m| {
        println!("server <- {} {}", m.tag, m.data);
        if &*m.tag == "/chat" {
            room.on_next(TaggedData::new(m.tag.clone(), m.data.clone()));
        }
    });
    // A client is connected once its handshake is done; the server registers the connection
    // on its path just after. Wait for the server's Opened events before broadcasting.
    let (opened_tx, opened_rx) = unbounded();
    server.subscribe_events(move |e| {
        if e.kind == ConnectionEventKind::Opened {
            let _ = opened_tx.send(e.path);
        }
    });
    let port = server.local_addr().port();
    println!("chat server listening on {}", server.local_addr());

    // Two clients; each prints what it receives and reports it to main.
    let (got_tx, got_rx) = unbounded();
    let mut clients = Vec::new();
    for name in ["alice", "bob"] {
        let got = got_tx.clone();
        let conn = WSConnectionConfig::new("127.0.0.1", port, "/chat")?;
        // with_setup: the subscriber is in place before the client starts connecting.
        let client = RxWSClient::<String>::with_setup(conn, Text, WSConfig::default(), |c| {
            c.subscribe(move |line| {
                println!("{name:>6} -> {line}");
                let _ = got.send(name);
            });
        })?;
        if !client.wait_connected(timeout) {
            return Err(format!("{name} did not connect within {timeout:?}").into());
        }
        clients.push((name, client));
    }
    for _ in 0..clients.len() {
        let path = opened_rx.recv_timeout(timeout)?;
        println!("server: connection opened on {path}");
    }
    println!(
        "server: {} connections on /chat",
        server.connections("/chat").len()
    );

    // Each client says one line; everyone (the speaker included) receives it.
    let (mut alice, mut bob) = (0, 0);
    for (name, client) in &clients {
        let line = format!("{name}: hi, {name} here");
        println!("{name:>6} says {line:?}");
        client.send(line)?;
        for _ in 0..clients.len() {
            match got_rx.recv_timeout(timeout)? {
                "alice" => alice += 1,
                _ => bob += 1,
            }
        }
    }
    println!("alice received {alice} lines, bob {bob}");
    if (alice, bob) != (2, 2) {
        return Err("each client should have received both lines".into());
    }

    // Graceful shutdown: close handshakes, every thread joined.
    for (_, client) in &clients {
        client.on_completed();
    }
    server.on_completed();
    println!("done");
    Ok(())
}
