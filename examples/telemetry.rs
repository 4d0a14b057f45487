//! Telemetry to stdout: OpenTelemetry log records of a short scenario, then one metrics export.
//!
//! ```sh
//! cargo run --example telemetry --features telemetry
//! ```
//!
//! A JSON echo server and a text client exchange a few messages; one of them is not JSON, so
//! the server logs a `Frame decode error` (WARN) and counts it. Dropping the guard at the end
//! flushes the log records and prints the metrics (`rxplus.ws.*`) with their attributes.

use std::time::Duration;

use rxplus::ws::{Json, RxWSClient, RxWSServer, TaggedData, Text, WSConnectionConfig};
use rxplus::Notification;

fn main() -> Result<(), rxplus::Error> {
    // Installs the `log` → OpenTelemetry bridge and a meter provider; both print to stdout.
    let telemetry = rxplus::telemetry::init_stdout()?;

    let server = RxWSServer::<serde_json::Value>::bind("127.0.0.1:0", Json)?;
    let echo = server.handle();
    server.subscribe(move |m: TaggedData<serde_json::Value>| echo.on_next(m.reply(m.data.clone())));

    let port = server.local_addr().port();
    let client =
        RxWSClient::<String>::new(WSConnectionConfig::new("127.0.0.1", port, "/demo")?, Text)?;
    let replies = client.stream();
    if !client.wait_connected(Duration::from_secs(5)) {
        eprintln!("telemetry example: could not connect");
        std::process::exit(1);
    }
    for i in 0..3 {
        client.on_next(format!(r#"{{"n":{i}}}"#));
    }
    client.on_next("this is not JSON".to_string()); // a decode error on the server
    for _ in 0..3 {
        match replies.recv_timeout(Duration::from_secs(5)) {
            Ok(Notification::Next(_)) => {}
            other => {
                eprintln!("telemetry example: no reply: {other:?}");
                std::process::exit(1);
            }
        }
    }

    client.on_completed(); // close handshake: "Connection closed" on both sides
    server.dispose();
    // Flushes the log records and exports the metrics once more, then shuts both down.
    drop(telemetry);
    Ok(())
}
