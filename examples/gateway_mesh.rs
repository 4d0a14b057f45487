//! Three gateway nodes in one process, connected in a ring (a → b → c → a): each sends a frame
//! to every peer, prints its peers and counts, then everything stops.
//!
//! ```text
//! cargo run --release --example gateway_mesh
//! ```

use std::time::Duration;

use rxplus::gateway::{DefaultFrame, GatewayConfig, GatewayEvent, GatewayNode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let names = ["a", "b", "c"];
    let mut nodes = Vec::new();
    for name in names {
        let node = GatewayNode::<DefaultFrame>::new(
            GatewayConfig::default()
                .host("127.0.0.1")
                .port(0)
                .name(name),
        )?;
        node.subscribe(move |f| {
            let text = f
                .frame
                .payload()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default();
            println!("{name}: frame from {}: {text}", f.conn_id);
        });
        node.subscribe_events(move |e| {
            if let GatewayEvent::Connected {
                conn_id,
                remote_node_id,
                direction,
            } = e
            {
                println!("{name}: connected {conn_id} to {remote_node_id} ({direction})");
            }
        });
        node.start()?;
        nodes.push(node);
    }
    // The ring: each node dials the next.
    for i in 0..nodes.len() {
        let next = nodes[(i + 1) % nodes.len()]
            .local_addr()
            .ok_or("not listening")?;
        let id = nodes[i].connect_to(&format!("ws://{next}/"))?;
        if !nodes[i].wait_connected(id, Duration::from_secs(5)) {
            return Err(format!("{} could not reach its neighbour", names[i]).into());
        }
    }
    for n in &nodes {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while n.get_connected_peers().len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Every node greets each of its two peers.
    for (name, n) in names.iter().zip(&nodes) {
        let sent = n.broadcast(DefaultFrame::data(format!("hello from {name}")));
        println!("{name}: broadcast to {sent} peers");
    }
    // Six frames in all: wait until each node has received its two.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while nodes.iter().any(|n| n.stats().ws.messages_in < 2) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    for (name, n) in names.iter().zip(&nodes) {
        let s = n.stats();
        println!(
            "{name}: node {} peers {} frames in {} out {}",
            n.node_id(),
            n.get_connected_peers().len(),
            s.ws.messages_in,
            s.ws.messages_out
        );
        for c in n.connections() {
            println!(
                "{name}:   {} {} {} remote {}",
                c.conn_id,
                c.direction,
                c.state,
                c.remote_node_id.map(|r| r.to_string()).unwrap_or_default()
            );
        }
    }
    for n in &nodes {
        n.stop();
    }
    println!("stopped");
    Ok(())
}
