//! Scale-out: two chat servers on one Redis. Each broadcasts what its clients say to `/chat`;
//! through the Redis broker the broadcast also reaches the `/chat` clients of the other
//! server. alice talks to server A, bob listens on server B: bob hears alice.
//!
//! Run: `cargo run --release --example cluster_chat --features redis -- [REDIS_URL]`
//! (default `redis://127.0.0.1:6379/`; start one with `redis-server --port 6379`).
//! Exits non-zero when the message does not arrive within 5 s.

use std::time::Duration;

use crossbeam_channel::unbounded;
use rxplus::ws::broker::{RedisBroker, RedisConfig};
use rxplus::ws::{
    ConnectionEventKind, RxWSClient, RxWSServer, TaggedData, Text, WSConfig, WSConnectionConfig,
};

/// A chat server on a free port whose broadcasts cross instances through `broker`.
fn chat_server(
    name: &str,
    broker: &RedisBroker,
) -> Result<RxWSServer<String>, Box<dyn std::error::Error>> {
    let cfg = WSConfig::default().name(name).broker(broker.clone());
    let server = RxWSServer::<String>::bind_with_setup("127.0.0.1:0", Text, cfg, |s| {
        let room = s.handle();
        s.subscribe(move |m| {
            // To the whole path: this server's clients and, through Redis, every other's.
            room.on_next(TaggedData::new(m.tag.clone(), m.data.clone()));
        });
    })?;
    println!("{name} listening on {}", server.local_addr());
    Ok(server)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned());
    let timeout = Duration::from_secs(5);

    let brokers = [
        RedisBroker::new(RedisConfig::new(&url)?)?,
        RedisBroker::new(RedisConfig::new(&url)?)?,
    ];
    let a = chat_server("server-A", &brokers[0])?;
    let b = chat_server("server-B", &brokers[1])?;
    for broker in &brokers {
        if !broker.wait_connected(timeout) {
            return Err(format!("{} could not reach Redis at {url}", broker.name()).into());
        }
    }
    println!("both servers connected to Redis at {url}");

    // bob listens on server B; wait until B has registered his connection.
    let (opened_tx, opened_rx) = unbounded();
    b.subscribe_events(move |e| {
        if e.kind == ConnectionEventKind::Opened {
            let _ = opened_tx.send(());
        }
    });
    let (heard_tx, heard_rx) = unbounded();
    let conn_b = WSConnectionConfig::new("127.0.0.1", b.local_addr().port(), "/chat")?;
    let bob = RxWSClient::<String>::with_setup(conn_b, Text, WSConfig::default(), |c| {
        c.subscribe(move |line| {
            println!("   bob (on B) <- {line}");
            let _ = heard_tx.send(line);
        });
    })?;
    opened_rx.recv_timeout(timeout)?;

    // alice talks to server A.
    let conn_a = WSConnectionConfig::new("127.0.0.1", a.local_addr().port(), "/chat")?;
    let alice = RxWSClient::<String>::new(conn_a, Text)?;
    if !alice.wait_connected(timeout) {
        return Err("alice could not connect to server A".into());
    }
    let line = "alice (on A): hello, cluster".to_owned();
    println!("alice -> A: {line}");
    alice.send(line.clone())?;

    let heard = heard_rx
        .recv_timeout(timeout)
        .map_err(|_| format!("bob did not hear alice within {timeout:?}"))?;
    if heard != line {
        return Err(format!("bob heard {heard:?}, expected {line:?}").into());
    }
    println!(
        "delivered across instances: A published {}, B received {}",
        brokers[0].stats().published,
        brokers[1].stats().received
    );
    alice.on_completed();
    bob.on_completed();
    a.dispose();
    b.dispose();
    Ok(())
}
