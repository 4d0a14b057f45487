//! Interop with a WebSocket implementation written by others: Python `websockets` (PyPI),
//! installed on first use into `target/interop-venv` (Python 3 with venv and pip required;
//! without them these tests fail, they do not skip). The Python peers are
//! `tests/interop/echo_server.py` and `tests/interop/client.py`; they report what they saw as
//! JSON lines on stdout.
//!
//! * `rx_client_to_python_server`: our `RxWSClient` (Raw) against a websockets echo server.
//! * `python_client_to_rx_server`: a websockets client against our `RxWSServer` (Raw echo).
//! * `rx_client_to_python_server_over_tls`, `python_client_to_rx_server_over_tls`: the same two
//!   over `wss://`, with a CA and a `localhost` certificate made by the test (rcgen) and written
//!   under `target/test-pki/`; each side trusts only that CA.
//! * `rx_client_reconnects_after_python_server_drops_tcp`: the server drops TCP without a close
//!   frame; our client reconnects by its `RetryPolicy` and messages flow again.
//! * `many_clients_on_one_path_of_echo_server`: 20 clients on one path of
//!   `examples/echo_server`, each gets back exactly its own messages, in order.

mod harness;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[cfg(feature = "tls")]
use harness::pki::{arg, write_pki};
use harness::{example, lock, venv, Lines, Proc};
use rxplus::ws::{
    ConnectionState, Raw, RetryPolicy, RxWSClient, RxWSServer, TaggedData, Text, WSConfig,
    WSConnectionConfig, WSMessage,
};
use rxplus::Notification;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn python() -> PathBuf {
    venv("interop-venv", &["websockets==17.4"], "websockets")
        .join("bin")
        .join("python")
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("interop")
        .join(name)
}

/// A Python script whose stdout is JSON lines.
struct Py {
    proc: Proc,
    out: Lines,
}

impl Py {
    fn start(name: &str, args: &[&str]) -> Py {
        let mut proc = Proc::spawn(
            name,
            Command::new(python())
                .arg("-u")
                .arg(script(name))
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        );
        let out = proc.stdout_lines();
        Py { proc, out }
    }

    /// The next event named `event` (other events are skipped), within `timeout`.
    fn event(&mut self, event: &str, timeout: Duration) -> Value {
        let found = self.out.find(timeout, |l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v["event"] == event)
        });
        match found {
            Some(v) => v,
            None => panic!(
                "no {event:?} event from the Python peer within {timeout:?}; status {:?}; \
                 stdout so far:\n{}",
                self.proc.try_status(),
                self.out.seen()
            ),
        }
    }

    /// Starts `echo_server.py` with `args` (a mode, TLS flags) and returns it with its port.
    fn echo_server(args: &[&str]) -> (Py, u16) {
        let mut py = Py::start("echo_server.py", args);
        let ready = py.event("listening", Duration::from_secs(30));
        let port = ready["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("bad listening event {ready}"));
        (py, port)
    }
}

fn client_config() -> WSConfig {
    WSConfig::default()
        .no_heartbeat()
        .max_message_size(16 << 20)
}

fn recv(rx: &crossbeam_channel::Receiver<Notification<WSMessage>>, what: &str) -> WSMessage {
    match rx.recv_timeout(WAIT) {
        Ok(Notification::Next(m)) => m,
        other => panic!("{what}: expected a message, got {other:?}"),
    }
}

fn describe(m: &WSMessage) -> String {
    match m {
        WSMessage::Text(s) => format!("text({} bytes)", s.len()),
        WSMessage::Binary(b) => format!("binary({} bytes)", b.len()),
    }
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// (a) Our client against a Python websockets echo server.
#[test]
fn rx_client_to_python_server() {
    let (mut py, port) = Py::echo_server(&["echo"]);
    let client = RxWSClient::<WSMessage>::with_config(
        WSConnectionConfig::new("127.0.0.1", port, "/interop/a").expect("conn config"),
        Raw,
        client_config(),
    )
    .expect("client");
    let open = rx_client_checks(&client, &mut py, "/interop/a");
    assert_eq!(open["tls"], Value::Null, "{open}");
}

/// (a) over TLS: the Python server serves wss:// with the test's certificate; our client
/// trusts only the test CA.
#[cfg(feature = "tls")]
#[test]
fn rx_client_to_python_server_over_tls() {
    let pki = write_pki("interop-a-tls");
    let (mut py, port) = Py::echo_server(&[
        "echo",
        "--tls-cert",
        arg(&pki.chain),
        "--tls-key",
        arg(&pki.key),
    ]);
    let trust = rxplus::tls::ClientTls::only_roots_pem(pki.ca_pem.as_bytes()).expect("CA");
    let client = RxWSClient::<WSMessage>::with_config(
        WSConnectionConfig::from_url(&format!("wss://localhost:{port}/interop/a-tls"))
            .expect("conn config"),
        Raw,
        client_config().tls_client(trust),
    )
    .expect("client");
    let open = rx_client_checks(&client, &mut py, "/interop/a-tls");
    assert!(
        open["tls"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "the Python server did not see TLS: {open}"
    );
}

/// The checks of (a): our client (not yet connected) exchanges messages with `py` (an
/// `echo_server.py`) on `path`, then completes. Returns the server's `open` event.
fn rx_client_checks(client: &RxWSClient<WSMessage>, py: &mut Py, path: &str) -> Value {
    let rx = client.stream();
    assert!(client.wait_connected(WAIT), "client did not connect");
    let open = py.event("open", WAIT);
    assert_eq!(open["path"], path, "{open}");

    // Kinds are preserved both ways.
    let text = WSMessage::Text("hello, ünïcode ✓".into());
    let binary = WSMessage::Binary(vec![0, 1, 2, 0xFE, 0xFF]);
    for m in [text, binary] {
        client.send(m.clone()).expect("send");
        let got = recv(&rx, "echo");
        assert_eq!(
            got,
            m,
            "echo of {} came back as {}",
            describe(&m),
            describe(&got)
        );
    }

    // 4 MiB each way, binary and text.
    let big = WSMessage::Binary(noise(4 << 20, 0x9E37_79B9_7F4A_7C15));
    let big_text = WSMessage::Text("abcdé✓".repeat((4 << 20) / 9));
    for m in [big, big_text] {
        client.send(m.clone()).expect("send big");
        let got = recv(&rx, "big echo");
        assert!(
            got == m,
            "4 MiB echo differs: sent {}, got {}",
            describe(&m),
            describe(&got)
        );
    }

    // 1,000 small messages, in order.
    let sent: Vec<WSMessage> = (0..1000)
        .map(|i| WSMessage::Text(format!("msg-{i}")))
        .collect();
    for m in &sent {
        client.send(m.clone()).expect("send small");
    }
    let got: Vec<WSMessage> = (0..sent.len()).map(|_| recv(&rx, "small echo")).collect();
    assert!(got == sent, "1,000 echoes out of order or changed");

    // Graceful completion: the server sees a close frame with 1000.
    client.on_completed();
    let closed = py.event("closed", WAIT);
    assert_eq!(closed["rcvd_code"], 1000, "Python server saw {closed}");
    assert_eq!(closed["clean"], true, "Python server saw {closed}");
    open
}

fn server_config() -> WSConfig {
    WSConfig::default()
        .no_heartbeat()
        .max_message_size(16 << 20)
}

/// (b) A Python websockets client against our server.
#[test]
fn python_client_to_rx_server() {
    let _ = python();
    let server = RxWSServer::<WSMessage>::bind_with_config("127.0.0.1:0", Raw, server_config())
        .expect("server");
    let url = format!("ws://{}/interop/b", server.local_addr());
    let result = python_client_checks(server, &[&url]);
    assert_eq!(result["tls"], Value::Null, "{result}");
}

/// (b) over TLS: our server serves wss:// with the test's certificate; the Python client's SSL
/// context trusts only the test CA (and checks the host name, `localhost`).
#[cfg(feature = "tls")]
#[test]
fn python_client_to_rx_server_over_tls() {
    let _ = python();
    let pki = write_pki("interop-b-tls");
    let tls = rxplus::tls::ServerTls::from_pem_files(&pki.chain, &pki.key).expect("server TLS");
    let server = RxWSServer::<WSMessage>::bind_with_config(
        "127.0.0.1:0",
        Raw,
        server_config().tls_server(tls),
    )
    .expect("server");
    let url = format!(
        "wss://localhost:{}/interop/b-tls",
        server.local_addr().port()
    );
    let result = python_client_checks(server, &["--ca", arg(&pki.ca), &url]);
    assert!(
        result["tls"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "the Python client did not see TLS: {result}"
    );
}

/// The checks of (b): `server` echoes; `client.py` with `args` runs its checks against it, then
/// the server completes. Returns the client's `result` event.
fn python_client_checks(server: RxWSServer<WSMessage>, args: &[&str]) -> Value {
    let echo = server.handle();
    server.subscribe(move |m: TaggedData<WSMessage>| echo.on_next(m.reply(m.data.clone())));
    let mut py = Py::start("client.py", args);

    let result = py.event("result", Duration::from_secs(60));
    for check in ["text", "binary", "big_binary", "big_text", "order"] {
        assert_eq!(
            result[check], true,
            "Python client check {check:?} failed: {result}"
        );
    }
    // The client offers permessage-deflate; the server declines it (not implemented).
    assert_eq!(
        result["extensions"],
        serde_json::json!([]),
        "negotiated extensions: {result}"
    );
    assert_eq!(server.connection_count(), 1);

    // Graceful completion: the client sees a close frame with 1000.
    server.on_completed();
    let closed = py.event("closed", WAIT);
    assert_eq!(closed["rcvd_code"], 1000, "Python client saw {closed}");
    assert_eq!(closed["clean"], true, "Python client saw {closed}");
    assert!(
        py.proc.wait_timeout(WAIT).is_some_and(|s| s.success()),
        "client.py did not exit cleanly; stdout:\n{}",
        py.out.seen()
    );
    result
}

/// (c) The Python server drops TCP without a close frame after echoing the first message; our
/// client reconnects by its RetryPolicy and messages flow on the new connection.
#[test]
fn rx_client_reconnects_after_python_server_drops_tcp() {
    let (mut py, port) = Py::echo_server(&["abort-first"]);
    let retry = RetryPolicy::default()
        .initial_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(200));
    let client = RxWSClient::<WSMessage>::with_config(
        WSConnectionConfig::new("127.0.0.1", port, "/interop/c").expect("conn config"),
        Raw,
        client_config().retry(retry),
    )
    .expect("client");
    let states: Arc<Mutex<Vec<ConnectionState>>> = Arc::new(Mutex::new(Vec::new()));
    let s = states.clone();
    let state_sub = client.subscribe_state(move |st: ConnectionState| lock(&s).push(st));
    let state_rx = client.state_stream();
    let rx = client.stream();
    assert!(client.wait_connected(WAIT), "client did not connect");
    py.event("open", WAIT);

    let first = WSMessage::Text("before the drop".into());
    client.send(first.clone()).expect("send");
    assert_eq!(recv(&rx, "first echo"), first);
    let aborted = py.event("aborted", WAIT);
    assert_eq!(aborted["conn"], 1);

    // Connected -> (Disconnected | Reconnecting) -> Connected. The stream starts with the
    // current state, which may be the initial Disconnected: only count a drop after a
    // Connected.
    let deadline = Instant::now() + WAIT;
    let mut connected_seen = 0;
    let mut dropped = false;
    while connected_seen < 2 {
        match state_rx.recv_deadline(deadline) {
            Ok(Notification::Next(ConnectionState::Connected)) => {
                if connected_seen == 0 || dropped {
                    connected_seen += 1;
                }
            }
            Ok(Notification::Next(ConnectionState::Disconnected))
            | Ok(Notification::Next(ConnectionState::Reconnecting)) => {
                dropped = connected_seen == 1;
            }
            Ok(Notification::Next(_)) => {}
            other => panic!(
                "no reconnect: {other:?}; states so far {:?}",
                lock(&states).clone()
            ),
        }
    }
    let reopened = py.event("open", WAIT);
    assert_eq!(reopened["conn"], 2, "{reopened}");
    let stats = client.stats();
    assert_eq!(stats.connections_opened, 2, "{stats:?}");
    assert_eq!(stats.connections_closed, 1, "{stats:?}");

    let second = WSMessage::Binary(b"after the reconnect".to_vec());
    client.send(second.clone()).expect("send after reconnect");
    assert_eq!(recv(&rx, "echo after reconnect"), second);

    let seen = lock(&states).clone();
    let connected_at: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == ConnectionState::Connected)
        .map(|(i, _)| i)
        .collect();
    assert!(
        connected_at.len() == 2
            && seen[connected_at[0]..connected_at[1]]
                .iter()
                .any(|s| matches!(
                    s,
                    ConnectionState::Disconnected | ConnectionState::Reconnecting
                )),
        "states {seen:?}"
    );

    client.on_completed();
    let closed = py.event("closed", WAIT);
    assert_eq!(closed["conn"], 2, "{closed}");
    assert_eq!(closed["rcvd_code"], 1000, "{closed}");
    drop(state_sub);
}

/// (d) Many clients on one path of `examples/echo_server`: each gets back exactly its own
/// messages, in order.
#[test]
fn many_clients_on_one_path_of_echo_server() {
    const CLIENTS: usize = 20;
    const MESSAGES: usize = 200;
    let mut server = Proc::spawn(
        "echo_server",
        Command::new(example("echo_server"))
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let lines = server.stdout_lines();
    let addr = lines
        .find(Duration::from_secs(20), |l| {
            l.strip_prefix("listening on ").map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("echo_server did not start; stdout: {:?}", lines.seen()));
    let url = format!("ws://{addr}/many");

    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let url = url.clone();
            std::thread::Builder::new()
                .name(format!("many-{k}"))
                .spawn(move || -> Result<(), String> {
                    let client = RxWSClient::<String>::with_config(
                        WSConnectionConfig::from_url(&url).map_err(|e| e.to_string())?,
                        Text,
                        WSConfig::default().no_heartbeat(),
                    )
                    .map_err(|e| e.to_string())?;
                    let rx = client.stream();
                    if !client.wait_connected(WAIT) {
                        return Err(format!("client {k}: not connected"));
                    }
                    let sent: Vec<String> =
                        (0..MESSAGES).map(|i| format!("client-{k}-msg-{i}")).collect();
                    for m in &sent {
                        client.send(m.clone()).map_err(|e| e.to_string())?;
                    }
                    let mut got = Vec::with_capacity(MESSAGES);
                    while got.len() < MESSAGES {
                        match rx.recv_timeout(WAIT) {
                            Ok(Notification::Next(m)) => got.push(m),
                            other => {
                                return Err(format!(
                                    "client {k}: after {} messages: {other:?}",
                                    got.len()
                                ))
                            }
                        }
                    }
                    if got != sent {
                        let first_bad = got.iter().zip(&sent).position(|(g, s)| g != s);
                        return Err(format!(
                            "client {k}: echoes differ from what it sent, first at {first_bad:?}: {:?}",
                            first_bad.map(|i| &got[i])
                        ));
                    }
                    // Nothing else arrives (no one else's messages).
                    if let Ok(extra) = rx.recv_timeout(Duration::from_millis(200)) {
                        return Err(format!("client {k}: unexpected extra {extra:?}"));
                    }
                    client.on_completed();
                    Ok(())
                })
                .expect("spawn client thread")
        })
        .collect();
    let errors: Vec<String> = clients
        .into_iter()
        .filter_map(|h| match h.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("client thread panicked".into()),
        })
        .collect();
    assert!(
        errors.is_empty(),
        "{} client(s) failed:\n{}",
        errors.len(),
        errors.join("\n")
    );
    assert!(
        server.try_status().is_none(),
        "echo_server exited during the test"
    );
}
