//! The README's main demo: a server on a free port, a client, and a client group with two paths,
//! exchanging text and JSON objects. Prints what each side receives, disposes everything.
//!
//! Run: `cargo run --release --example quickstart`

use std::time::Duration;

use rxplus::ws::{
    Json, RxWSClient, RxWSClientGroup, RxWSServer, TaggedData, Text, WSConnectionConfig,
};
use rxplus::Notification;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    value: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let timeout = Duration::from_secs(5);

    // A text server that answers every message on its own connection.
    let text_server = RxWSServer::<String>::bind("127.0.0.1:0", Text)?;
    let reply = text_server.handle();
    text_server.subscribe(move |m| {
        println!("text server  <- {:>8}: {}", m.tag, m.data);
        reply.on_next(m.reply(format!("ack {}", m.data)));
    });
    let text_port = text_server.local_addr().port();
    println!("text server listening on {}", text_server.local_addr());

    // A JSON server that doubles each reading and broadcasts it back on the same path.
    let json_server = RxWSServer::<Reading>::bind("127.0.0.1:0", Json)?;
    let out = json_server.handle();
    json_server.subscribe(move |m| {
        println!("json server  <- {:>8}: {:?}", m.tag, m.data);
        let doubled = Reading {
            value: m.data.value * 2.0,
            ..m.data.clone()
        };
        out.on_next(TaggedData::new(m.tag.clone(), doubled));
    });
    let json_port = json_server.local_addr().port();

    // A plain client.
    let client = RxWSClient::<String>::new(
        WSConnectionConfig::new("127.0.0.1", text_port, "/chat")?,
        Text,
    )?;
    let client_inbox = client.stream();
    client.subscribe_state(|s| println!("client state: {s}"));
    if !client.wait_connected(timeout) {
        return Err("quickstart: the client did not connect within 5 s".into());
    }
    for word in ["hello", "world"] {
        client.on_next(word.to_string());
    }
    for _ in 0..2 {
        match client_inbox.recv_timeout(timeout) {
            Ok(Notification::Next(m)) => println!("client       -> {m}"),
            other => println!("client       !! {other:?}"),
        }
    }

    // A group with two paths, JSON objects.
    let group = RxWSClientGroup::<Reading>::new(
        WSConnectionConfig::new("127.0.0.1", json_port, "/")?,
        Json,
    )?;
    let group_inbox = group.stream();
    for path in ["/kitchen", "/garage"] {
        group.wait_connected(path, timeout)?;
    }
    group.on_next(TaggedData::new(
        "/kitchen",
        Reading {
            sensor: "t1".into(),
            value: 21.5,
        },
    ));
    group.on_next(TaggedData::new(
        "/garage",
        Reading {
            sensor: "t2".into(),
            value: 7.25,
        },
    ));
    for _ in 0..2 {
        match group_inbox.recv_timeout(timeout) {
            Ok(Notification::Next(m)) => println!("group        -> {:>8}: {:?}", m.tag, m.data),
            other => println!("group        !! {other:?}"),
        }
    }

    // Graceful shutdown: close handshakes, then every thread joined.
    client.on_completed();
    group.on_completed();
    text_server.on_completed();
    json_server.on_completed();
    println!(
        "done: text server saw {} messages, json server {}",
        text_server.stats().messages_in,
        json_server.stats().messages_in
    );
    Ok(())
}
