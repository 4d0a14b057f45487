//! A client group: one `RxWSClientGroup` to one echo server, one client per path (`/news`,
//! `/weather`, `/sports`). The server tags each reply with the path it came in on; the group
//! prints each inbound `TaggedData` with its path. Shows `paths()`, `connection_state(path)`,
//! and that a path's client is created on first use but is not connected at once.
//!
//! Run: `cargo run --release --example group`

use std::time::Duration;

use crossbeam_channel::unbounded;
use rxplus::ws::{RxWSClientGroup, RxWSServer, TaggedData, Text, WSConnectionConfig};

/// `connection_state(path)` for printing: `None` means the group has no client for the path.
fn state(group: &RxWSClientGroup<String>, path: &str) -> String {
    group
        .connection_state(path)
        .map_or_else(|| "no client".into(), |s| s.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let timeout = Duration::from_secs(5);

    // An echo server that says which path each reply is for.
    let server = RxWSServer::<String>::bind("127.0.0.1:0", Text)?;
    let echo = server.handle();
    server.subscribe(move |m| {
        println!("server <- {:<8} {}", m.tag, m.data);
        echo.on_next(m.reply(format!("[{}] echo: {}", m.tag, m.data)));
    });
    let port = server.local_addr().port();

    // The group's base config names host and port; its path is not used.
    let group =
        RxWSClientGroup::<String>::new(WSConnectionConfig::new("127.0.0.1", port, "/")?, Text)?;
    let (tx, replies) = unbounded();
    group.subscribe(move |m| {
        println!("group  <- {:<8} {}", m.tag, m.data);
        let _ = tx.send(m);
    });
    println!("paths at start: {:?}", group.paths());

    // Two paths opened up front (their clients connect in the background), then waited for.
    for path in ["/news", "/weather"] {
        group.open_path(path)?;
    }
    println!("paths after open_path: {:?}", group.paths());
    for path in ["/news", "/weather"] {
        if !group.wait_connected(path, timeout)? {
            return Err(format!("{path} did not connect within {timeout:?}").into());
        }
    }
    for path in ["/news", "/weather", "/sports"] {
        println!("  {path:<8} {}", state(&group, path));
    }

    // One request per path, each reply awaited (bounded), so the output keeps its order.
    for (path, text) in [("/news", "headlines?"), ("/weather", "rain today?")] {
        group.send(TaggedData::new(path, text.to_string()))?;
        let reply = replies.recv_timeout(timeout)?;
        if *reply.tag != *path {
            return Err(format!("reply for {} arrived on {path}", reply.tag).into());
        }
    }

    // A third path is created by its first send, but its client has only started connecting:
    // without `buffer_while_disconnected` that first item is refused and handed back.
    let item = TaggedData::new("/sports", "score?".to_string());
    let item = match group.send(item) {
        Ok(()) => None,
        Err(e) if matches!(e.error(), rxplus::Error::NotConnected { .. }) => {
            println!("first send to /sports refused: not connected yet (the item is handed back)");
            e.into_item()
        }
        Err(e) => return Err(e.into()),
    };
    println!("paths after the first send: {:?}", group.paths());
    if !group.wait_connected("/sports", timeout)? {
        return Err(format!("/sports did not connect within {timeout:?}").into());
    }
    if let Some(item) = item {
        println!("/sports connected: sending the item again");
        group.send(item)?;
    }
    replies.recv_timeout(timeout)?;
    for path in group.paths() {
        println!(
            "  {path:<8} {}, server connections {}",
            state(&group, &path),
            server.connections(&path).len()
        );
    }

    // Completing the group completes every child.
    group.on_completed();
    for path in group.paths() {
        println!("  {path:<8} after on_completed: {}", state(&group, &path));
    }
    server.on_completed();
    println!("done");
    Ok(())
}
