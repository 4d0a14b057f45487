//! Channel style, no callbacks on the client side: each client's `sink()` is a crossbeam
//! `Sender` of outbound items and its `stream()` a crossbeam `Receiver` of `Notification`s.
//! One loop `select!`s over two clients' streams and a deadline (`crossbeam_channel::after`);
//! a client whose replies are all in is completed, and the loop ends when both streams have
//! delivered their `Completed`.
//!
//! Run: `cargo run --release --example channels`

use std::time::Duration;

use crossbeam_channel::{after, never, select, Receiver};
use rxplus::ws::{RxWSClient, RxWSServer, Text, WSConnectionConfig};
use rxplus::Notification;

const ITEMS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let timeout = Duration::from_secs(5);

    // An echo server (callback style, for brevity).
    let server = RxWSServer::<String>::bind("127.0.0.1:0", Text)?;
    let echo = server.handle();
    server.subscribe(move |m| echo.on_next(m.reply(format!("echo {}", m.data))));
    let port = server.local_addr().port();

    let a = RxWSClient::<String>::new(WSConnectionConfig::new("127.0.0.1", port, "/a")?, Text)?;
    let b = RxWSClient::<String>::new(WSConnectionConfig::new("127.0.0.1", port, "/b")?, Text)?;
    for (name, client) in [("a", &a), ("b", &b)] {
        if !client.wait_connected(timeout) {
            return Err(format!("client {name} did not connect within {timeout:?}").into());
        }
    }

    // Inbound: bounded receivers of Next(item), then one Completed (or Error).
    let mut a_in: Receiver<Notification<String>> = a.stream();
    let mut b_in: Receiver<Notification<String>> = b.stream();
    // Outbound: senders forwarded by a sink thread of each client.
    let a_out = a.sink()?;
    let b_out = b.sink()?;
    for i in 1..=ITEMS {
        a_out.send(format!("a{i}"))?;
        b_out.send(format!("b{i}"))?;
    }
    println!("sent {ITEMS} items through each sink");

    let deadline = after(timeout);
    let (mut a_got, mut b_got) = (0, 0);
    let mut open = 2;
    while open > 0 {
        select! {
            recv(a_in) -> n => match n {
                Ok(Notification::Next(m)) => {
                    println!("a <- {m}");
                    a_got += 1;
                    if a_got == ITEMS {
                        println!("a: all replies in, completing a");
                        a.on_completed();
                    }
                }
                Ok(Notification::Error(e)) => return Err(e.into()),
                // Completed, or the channel closed: this stream is done; never select it again.
                Ok(Notification::Completed) | Err(_) => {
                    println!("a: stream completed");
                    a_in = never();
                    open -= 1;
                }
            },
            recv(b_in) -> n => match n {
                Ok(Notification::Next(m)) => {
                    println!("b <- {m}");
                    b_got += 1;
                    if b_got == ITEMS {
                        println!("b: all replies in, completing b");
                        b.on_completed();
                    }
                }
                Ok(Notification::Error(e)) => return Err(e.into()),
                Ok(Notification::Completed) | Err(_) => {
                    println!("b: stream completed");
                    b_in = never();
                    open -= 1;
                }
            },
            recv(deadline) -> _ => {
                return Err(format!("timed out: a got {a_got}, b got {b_got} of {ITEMS}").into());
            }
        }
    }
    println!("both streams completed: a got {a_got}, b got {b_got}");

    server.on_completed();
    println!("done");
    Ok(())
}
