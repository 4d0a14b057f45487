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
//!
//! Connection control (`client.py --mode handshake|interactive`, `echo_server.py
//! --subprotocols`, `close-first`):
//!
//! * `python_client_accepted_or_refused_by_header_query_and_path`: our accept hook lets in
//!   `Authorization: Bearer TOKEN` or `?token=TOKEN` and refuses the rest with 401 (the Python
//!   client reports the status and body); `allowed_paths` refuses another path with 404 before
//!   the hook runs; the `Opened` events carry the query and only the kept headers.
//! * `our_hook_chooses_the_python_clients_subprotocol`: the hook picks from what the Python
//!   client offered and adds a response header; the client sees both; offering nothing it
//!   serves is refused with 400.
//! * `python_server_chooses_our_clients_subprotocol`: `subprotocols=` on the Python server picks
//!   from what our client offered (with an extra request header): `protocol()`,
//!   `response_headers()`; offering only unserved ones gets 400, which ends our client
//!   (`refused_status`, state `Closed`).
//! * `server_close_by_id_reaches_one_python_client_while_another_keeps_echoing`:
//!   `close(id, 4001, "bye")` gives that Python client 4001 "bye" in a clean close; a second
//!   connection on the same path keeps echoing; the `Closed` event says 4001 "bye".
//! * `python_server_close_code_in_our_clients_last_close`: the Python server closes with 4002
//!   "go"; `last_close()` says so when the state leaves `Connected`.
//! * `server_dispose_is_1001_for_python_clients`, `client_dispose_is_1001_for_a_python_server`:
//!   dispose sends 1001 (going away), not an abrupt 1006.
//! * `accept_hook_panic_is_500_and_the_server_keeps_serving`: a hook that panics refuses with
//!   500; the next handshake is accepted and echoes.

mod harness;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[cfg(feature = "tls")]
use harness::pki::{arg, write_pki};
use harness::py::{python, Py};
use harness::{example, lock, Proc};
use rxplus::ws::{
    AcceptHook, CloseInfo, ConnectionEvent, ConnectionEventKind, ConnectionState, Raw, RetryPolicy,
    RxWSClient, RxWSServer, TaggedData, Text, Verdict, WSConfig, WSConnectionConfig, WSMessage,
};
use rxplus::Notification;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

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

// ---- Connection control ----

/// `client.py --mode handshake` against `url` with `args`: its `handshake` event (the status
/// it got), after it exited 0.
fn py_handshake(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--mode", "handshake"];
    all.extend_from_slice(args);
    all.push(url);
    let mut py = Py::start("client.py", &all);
    let hs = py.event("handshake", WAIT);
    if hs["status"] == 101 {
        let closed = py.event("closed", WAIT);
        assert_eq!(closed["sent_code"], 1000, "{url} {args:?}: {closed}");
        assert_eq!(closed["clean"], true, "{url} {args:?}: {closed}");
    }
    assert!(
        py.proc.wait_timeout(WAIT).is_some_and(|s| s.success()),
        "client.py {args:?} {url} did not exit 0; stdout:\n{}",
        py.out.seen()
    );
    hs
}

/// A Python client in interactive mode: lines in, `message` events out.
struct PyChat {
    py: Py,
    stdin: Option<std::process::ChildStdin>,
}

impl PyChat {
    fn connect(url: &str) -> PyChat {
        let (mut py, stdin) = Py::start_with_stdin("client.py", &["--mode", "interactive", url]);
        let hs = py.event("handshake", WAIT);
        assert_eq!(hs["status"], 101, "{url}: {hs}");
        PyChat {
            py,
            stdin: Some(stdin),
        }
    }

    /// Sends `line` and expects it back.
    fn echoes(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to client.py");
        stdin.flush().expect("flush client.py stdin");
        let got = self.py.event("message", WAIT);
        assert_eq!(got["data"], line, "{got}");
    }

    /// The `closed` event, then a clean exit.
    fn closed(&mut self) -> Value {
        let closed = self.py.event("closed", WAIT);
        assert!(
            self.py.proc.wait_timeout(WAIT).is_some_and(|s| s.success()),
            "client.py did not exit 0; stdout:\n{}",
            self.py.out.seen()
        );
        closed
    }

    /// Closes stdin: the client closes with 1000.
    fn finish(mut self) -> Value {
        self.stdin.take();
        self.closed()
    }
}

/// Echoes every message and records the connection events.
fn echo_with_events(server: &RxWSServer<WSMessage>) -> Arc<Mutex<Vec<ConnectionEvent>>> {
    let echo = server.handle();
    server.subscribe(move |m: TaggedData<WSMessage>| echo.on_next(m.reply(m.data.clone())));
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    server.subscribe_events(move |ev: ConnectionEvent| lock(&e).push(ev));
    events
}

/// Waits for the `n`-th event (from 0) of `kind`.
fn nth_event(
    events: &Mutex<Vec<ConnectionEvent>>,
    kind: ConnectionEventKind,
    n: usize,
) -> ConnectionEvent {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = lock(events)
            .iter()
            .filter(|e| e.kind == kind)
            .nth(n)
            .cloned();
        if let Some(e) = found {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind:?} event #{n}: {:?}",
            lock(events)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn python_client_accepted_or_refused_by_header_query_and_path() {
    let _ = python();
    let hook_calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls = hook_calls.clone();
    let hook = AcceptHook::new(move |req| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let by_header = req.header("authorization") == Some("Bearer s3cret");
        let by_query = req.query_param("token") == Some("s3cret");
        if by_header || by_query {
            Verdict::accept().keep_headers(["authorization", "x-extra"])
        } else {
            Verdict::refuse(401, "no token")
        }
    });
    let server = RxWSServer::<WSMessage>::bind_with_config(
        "127.0.0.1:0",
        Raw,
        server_config().accept_hook(hook).allowed_paths(["/api"]),
    )
    .expect("server");
    let events = echo_with_events(&server);
    let base = format!("ws://{}", server.local_addr());
    let api = format!("{base}/api");
    let calls = || hook_calls.load(std::sync::atomic::Ordering::SeqCst);

    // By header.
    let hs = py_handshake(
        &api,
        &["-H", "Authorization: Bearer s3cret", "-H", "X-Extra: 1"],
    );
    assert_eq!(hs["status"], 101, "{hs}");
    let opened = nth_event(&events, ConnectionEventKind::Opened, 0);
    assert_eq!(opened.path, "/api");
    assert_eq!(opened.query, None);
    let mut names: Vec<&str> = opened.headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["authorization", "x-extra"], "{opened:?}");
    assert!(opened
        .headers
        .contains(&("authorization".into(), "Bearer s3cret".into())));

    // Refused: no header, a wrong one, a wrong query token.
    for (url, args) in [
        (api.clone(), &[][..]),
        (api.clone(), &["-H", "Authorization: Bearer nope"][..]),
        (format!("{api}?token=nope"), &[][..]),
    ] {
        let hs = py_handshake(&url, args);
        assert_eq!(hs["status"], 401, "{url} {args:?}: {hs}");
        assert_eq!(hs["body"], "no token", "{hs}");
    }

    // By query.
    let hs = py_handshake(&format!("{api}?a=b&token=s3cret"), &[]);
    assert_eq!(hs["status"], 101, "{hs}");
    let opened = nth_event(&events, ConnectionEventKind::Opened, 1);
    assert_eq!(opened.query.as_deref(), Some("a=b&token=s3cret"));

    // Another path: 404 before the hook, even with the token.
    let before = calls();
    for path in ["/other", "/api/", "/"] {
        let hs = py_handshake(
            &format!("{base}{path}?token=s3cret"),
            &["-H", "Authorization: Bearer s3cret"],
        );
        assert_eq!(hs["status"], 404, "{path}: {hs}");
    }
    assert_eq!(calls(), before, "the hook ran for a path not allowed");
    assert_eq!(calls(), 5);

    // Refusals opened nothing; both accepted connections closed with the client's 1000.
    let closed = nth_event(&events, ConnectionEventKind::Closed, 1);
    assert_eq!(closed.close.as_ref().and_then(CloseInfo::code), Some(1000));
    assert_eq!(
        lock(&events)
            .iter()
            .filter(|e| e.kind == ConnectionEventKind::Opened)
            .count(),
        2
    );
}

#[test]
fn our_hook_chooses_the_python_clients_subprotocol() {
    let _ = python();
    // Served in order of our preference; the client's order does not matter here.
    let served = ["chat.v3", "chat.v2"];
    let hook = AcceptHook::new(move |req| {
        match served
            .iter()
            .find(|p| req.protocols().iter().any(|o| o == *p))
        {
            Some(p) => Verdict::accept()
                .protocol(*p)
                .header("X-Served-By", "rxplus"),
            None => Verdict::refuse(400, "no served subprotocol"),
        }
    });
    let server = RxWSServer::<WSMessage>::bind_with_config(
        "127.0.0.1:0",
        Raw,
        server_config().accept_hook(hook),
    )
    .expect("server");
    let events = echo_with_events(&server);
    let url = format!("ws://{}/sub", server.local_addr());

    let hs = py_handshake(
        &url,
        &["--subprotocol", "chat.v1", "--subprotocol", "chat.v2"],
    );
    assert_eq!(hs["status"], 101, "{hs}");
    assert_eq!(hs["subprotocol"], "chat.v2", "{hs}");
    let headers = hs["headers"].as_array().cloned().unwrap_or_default();
    assert!(
        headers.contains(&serde_json::json!(["X-Served-By", "rxplus"]))
            || headers.contains(&serde_json::json!(["x-served-by", "rxplus"])),
        "{hs}"
    );
    let opened = nth_event(&events, ConnectionEventKind::Opened, 0);
    assert_eq!(opened.protocol.as_deref(), Some("chat.v2"));

    let hs = py_handshake(&url, &["--subprotocol", "chat.v1"]);
    assert_eq!(hs["status"], 400, "{hs}");
    assert_eq!(hs["body"], "no served subprotocol", "{hs}");
    let hs = py_handshake(&url, &[]);
    assert_eq!(hs["status"], 400, "{hs}");

    // And it echoes with the protocol chosen.
    let mut chat = Py::start("client.py", &["--subprotocol", "chat.v3", &url]);
    let hs = chat.event("handshake", WAIT);
    assert_eq!(hs["subprotocol"], "chat.v3", "{hs}");
    let result = chat.event("result", Duration::from_secs(60));
    for check in ["text", "binary", "order"] {
        assert_eq!(result[check], true, "{check}: {result}");
    }
    server.on_completed();
    assert_eq!(chat.event("closed", WAIT)["rcvd_code"], 1000);
}

#[test]
fn python_server_chooses_our_clients_subprotocol() {
    let (mut py, port) = Py::echo_server(&["--subprotocols", "v2.rx,v1.rx"]);
    let client = RxWSClient::<WSMessage>::with_config(
        WSConnectionConfig::new("127.0.0.1", port, "/sub").expect("conn config"),
        Raw,
        client_config()
            .subprotocol("v1.rx")
            .subprotocol("v2.rx")
            .header("X-Client", "rxplus"),
    )
    .expect("client");
    let rx = client.stream();
    assert!(client.wait_connected(WAIT), "client did not connect");
    // The Python server picks the first of ITS list that we offered.
    assert_eq!(client.protocol().as_deref(), Some("v2.rx"));
    assert!(
        client
            .response_headers()
            .contains(&("sec-websocket-protocol".into(), "v2.rx".into())),
        "{:?}",
        client.response_headers()
    );
    let open = py.event("open", WAIT);
    assert_eq!(open["subprotocol"], "v2.rx", "{open}");
    let headers = open["headers"].as_array().cloned().unwrap_or_default();
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .map(|h| h[1].clone())
    };
    assert_eq!(header("x-client"), Some(Value::from("rxplus")), "{open}");
    assert_eq!(
        header("sec-websocket-protocol"),
        Some(Value::from("v1.rx, v2.rx")),
        "{open}"
    );
    let m = WSMessage::Text("with v2.rx".into());
    client.send(m.clone()).expect("send");
    assert_eq!(recv(&rx, "echo"), m);
    client.on_completed();
    assert_eq!(py.event("closed", WAIT)["rcvd_code"], 1000);

    // Offering only what it does not serve: the Python server answers 400, which ends our
    // client (a 4xx other than 408/429 is not retried).
    let client = RxWSClient::<WSMessage>::with_config(
        WSConnectionConfig::new("127.0.0.1", port, "/sub").expect("conn config"),
        Raw,
        client_config().subprotocol("v9.rx"),
    )
    .expect("client");
    let rx = client.stream();
    match rx.recv_timeout(WAIT) {
        Ok(Notification::Error(e)) => {
            assert_eq!(e.refused_status(), Some(400), "{e}");
        }
        other => panic!("expected the client to end with a refusal, got {other:?}"),
    }
    assert_eq!(client.connection_state(), ConnectionState::Closed);
    assert_eq!(client.protocol(), None);
}

#[test]
fn server_close_by_id_reaches_one_python_client_while_another_keeps_echoing() {
    let _ = python();
    let server = RxWSServer::<WSMessage>::bind_with_config("127.0.0.1:0", Raw, server_config())
        .expect("server");
    let events = echo_with_events(&server);
    let base = format!("ws://{}/room", server.local_addr());
    let mut a = PyChat::connect(&format!("{base}?who=a"));
    let mut b = PyChat::connect(&format!("{base}?who=b"));
    a.echoes("a is here");
    b.echoes("b is here");
    let id_of = |who: &str| {
        lock(&events)
            .iter()
            .find(|e| e.query.as_deref() == Some(who))
            .map(|e| e.id)
            .unwrap_or_else(|| panic!("no Opened event for {who}: {:?}", lock(&events)))
    };
    let (id_a, id_b) = (id_of("who=a"), id_of("who=b"));
    assert_ne!(id_a, id_b);

    server.close(id_a, 4001, "bye").expect("close a");
    let closed = a.closed();
    assert_eq!(closed["rcvd_code"], 4001, "{closed}");
    assert_eq!(closed["rcvd_reason"], "bye", "{closed}");
    assert_eq!(closed["sent_code"], 4001, "{closed}");
    assert_eq!(closed["exchanged"], true, "{closed}");

    let ev = nth_event(&events, ConnectionEventKind::Closed, 0);
    assert_eq!(ev.id, id_a);
    assert_eq!(
        ev.close,
        Some(CloseInfo::Closed {
            code: 4001,
            reason: "bye".into(),
            by_peer: false
        })
    );
    // Closing it again, or with a code that may not be sent: errors, nothing happens.
    assert!(server.close(id_a, 4001, "again").is_err());
    assert!(server.close(id_b, 1006, "reserved").is_err());

    b.echoes("b still echoes");
    b.echoes("and again");
    assert_eq!(server.connection_count(), 1);
    let closed = b.finish();
    assert_eq!(closed["sent_code"], 1000, "{closed}");
    assert_eq!(closed["clean"], true, "{closed}");
}

#[test]
fn python_server_close_code_in_our_clients_last_close() {
    let (mut py, port) = Py::echo_server(&[
        "close-first",
        "--close-code",
        "4002",
        "--close-reason",
        "go",
    ]);
    let retry = RetryPolicy::default()
        .initial_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(200));
    let client = RxWSClient::<WSMessage>::with_config(
        WSConnectionConfig::new("127.0.0.1", port, "/close").expect("conn config"),
        Raw,
        client_config().retry(retry),
    )
    .expect("client");
    let states = client.state_stream();
    let rx = client.stream();
    assert!(client.wait_connected(WAIT), "client did not connect");
    assert_eq!(client.last_close(), None);
    client
        .send(WSMessage::Text("close me".into()))
        .expect("send");
    // Wait for the state to leave Connected: last_close is set by then.
    let deadline = Instant::now() + WAIT;
    let mut was_connected = false;
    loop {
        match states.recv_deadline(deadline) {
            Ok(Notification::Next(ConnectionState::Connected)) => was_connected = true,
            Ok(Notification::Next(_)) if was_connected => break,
            Ok(Notification::Next(_)) => {}
            other => panic!("state stream: {other:?}"),
        }
    }
    assert_eq!(
        client.last_close(),
        Some(CloseInfo::Closed {
            code: 4002,
            reason: "go".into(),
            by_peer: true
        })
    );
    let closed = py.event("closed", WAIT);
    assert_eq!(closed["sent_code"], 4002, "{closed}");
    // Our reply echoes the code (RFC 6455 5.5.1).
    assert_eq!(closed["rcvd_code"], 4002, "{closed}");
    assert_eq!(closed["exchanged"], true, "{closed}");

    // Not a refusal: the client reconnects and the next connection echoes.
    assert!(client.wait_connected(WAIT), "client did not reconnect");
    let m = WSMessage::Text("after 4002".into());
    client.send(m.clone()).expect("send");
    assert_eq!(recv(&rx, "echo after reconnect"), m);
    client.on_completed();
    let closed = py.event("closed", WAIT);
    assert_eq!(closed["conn"], 2, "{closed}");
    assert_eq!(closed["rcvd_code"], 1000, "{closed}");
}

#[test]
fn server_dispose_is_1001_for_python_clients() {
    let _ = python();
    let server = RxWSServer::<WSMessage>::bind_with_config("127.0.0.1:0", Raw, server_config())
        .expect("server");
    let _events = echo_with_events(&server);
    let url = format!("ws://{}/bye", server.local_addr());
    let mut a = PyChat::connect(&url);
    let mut b = PyChat::connect(&url);
    a.echoes("a");
    b.echoes("b");
    server.dispose();
    for chat in [&mut a, &mut b] {
        let closed = chat.closed();
        assert_eq!(closed["rcvd_code"], 1001, "not going away: {closed}");
        assert_eq!(closed["rcvd_reason"], "going away", "{closed}");
    }
}

#[test]
fn client_dispose_is_1001_for_a_python_server() {
    let (mut py, port) = Py::echo_server(&["echo"]);
    let client = RxWSClient::<WSMessage>::with_config(
        WSConnectionConfig::new("127.0.0.1", port, "/bye").expect("conn config"),
        Raw,
        client_config(),
    )
    .expect("client");
    let rx = client.stream();
    assert!(client.wait_connected(WAIT), "client did not connect");
    let m = WSMessage::Binary(vec![1, 2, 3]);
    client.send(m.clone()).expect("send");
    assert_eq!(recv(&rx, "echo"), m);
    client.dispose();
    let closed = py.event("closed", WAIT);
    assert_eq!(closed["rcvd_code"], 1001, "not going away: {closed}");
    assert_eq!(closed["rcvd_reason"], "going away", "{closed}");
}

#[test]
fn accept_hook_panic_is_500_and_the_server_keeps_serving() {
    let _ = python();
    let hook = AcceptHook::new(|req| {
        if req.query_param("panic").is_some() {
            panic!("the accept hook failed on purpose");
        }
        Verdict::accept()
    });
    let server = RxWSServer::<WSMessage>::bind_with_config(
        "127.0.0.1:0",
        Raw,
        server_config().accept_hook(hook),
    )
    .expect("server");
    let events = echo_with_events(&server);
    let url = format!("ws://{}/p", server.local_addr());
    for _ in 0..2 {
        let hs = py_handshake(&format!("{url}?panic=1"), &[]);
        assert_eq!(hs["status"], 500, "{hs}");
    }
    assert!(lock(&events).is_empty(), "{:?}", lock(&events));
    let mut chat = PyChat::connect(&url);
    chat.echoes("still serving");
    let closed = chat.finish();
    assert_eq!(closed["sent_code"], 1000, "{closed}");
    let ev = nth_event(&events, ConnectionEventKind::Closed, 0);
    assert_eq!(ev.close.as_ref().and_then(CloseInfo::code), Some(1000));
}
