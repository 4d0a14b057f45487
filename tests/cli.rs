//! The `rxplus` binary (feature `cli`) run as a user would, against servers started here:
//!
//! * `help_names_every_command`: `--help` of the tool and of each command, exit 0.
//! * `serve_echoes_and_connect_exits_0_at_eof`: `serve` prints `listening on ADDR` (port 0);
//!   `connect` sends stdin lines, prints the echoes, closes gracefully at EOF and exits 0;
//!   `--json` pretty-prints and refuses a line that is not JSON.
//! * `serve_broadcast_reaches_every_client_on_the_path_sender_included`.
//! * `serve_print_shows_text_and_binary`: `connect --binary` sends binary frames.
//! * `connect_exit_codes`: 3 for a server close other than 1000, 1 after `--retries` gave up.
//! * `bench_prints_one_summary_line`: `msg/s` and `p50` against `serve`.
//! * `usage_errors_exit_2` and `log_level_reaches_stderr`.
//!
//! `gateway` is driven by `tests/gateway_cli.rs`, with the `gateway_node` example's scenario.

mod harness;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use assert_cmd::prelude::*;
use harness::{Lines, Proc};
use rxplus::ws::{RxWSClient, Text};
use rxplus::Notification;

const WAIT: Duration = Duration::from_secs(20);

fn rxplus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rxplus"))
}

/// A running `rxplus serve ARGS 127.0.0.1:0`, its stdout and stderr, and its address.
struct Serve {
    _proc: Proc,
    out: Lines,
    err: Lines,
    addr: String,
}

fn serve(args: &[&str]) -> Serve {
    let mut proc = Proc::spawn(
        "rxplus serve",
        rxplus()
            .args(["--log", "info", "serve"])
            .args(args)
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let out = proc.stdout_lines();
    let err = proc.stderr_lines();
    let addr = out
        .find(WAIT, |l| l.strip_prefix("listening on ").map(str::to_owned))
        .unwrap_or_else(|| panic!("no `listening on`; stderr: {}", err.seen()));
    assert!(!addr.ends_with(":0"), "{addr}");
    Serve {
        _proc: proc,
        out,
        err,
        addr,
    }
}

/// `rxplus connect ARGS URL` with `input` on stdin, run to its exit.
fn connect(args: &[&str], url: &str, input: &str) -> std::process::Output {
    let mut child = rxplus()
        .arg("connect")
        .args(args)
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rxplus connect");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_names_every_command() {
    let out = rxplus().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in ["connect", "serve", "gateway", "bench", "--log"] {
        assert!(help.contains(cmd), "{cmd} missing from:\n{help}");
    }
    for (cmd, flag) in [
        ("connect", "--retries"),
        ("serve", "--broadcast"),
        ("gateway", "--listen"),
        ("bench", "--window"),
    ] {
        let a = rxplus().args([cmd, "--help"]).assert().success();
        let help = text(&a.get_output().stdout);
        assert!(help.contains(flag), "{cmd} --help:\n{help}");
    }
}

#[test]
fn serve_echoes_and_connect_exits_0_at_eof() {
    let s = serve(&[]);
    let url = format!("ws://{}/echo", s.addr);
    let out = connect(&[], &url, "hello\nwörld ✓\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "hello\nwörld ✓\n");
    let err = text(&out.stderr);
    assert!(err.contains("[connected]"), "{err}");

    let out = connect(&["--json"], &url, "{\"a\":[1,2]}\nnot json\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "{\n  \"a\": [\n    1,\n    2\n  ]\n}\n");
    assert!(
        text(&out.stderr).contains("not sent, not JSON"),
        "{}",
        text(&out.stderr)
    );
    // `--log info` on the server: its connection records on stderr.
    assert!(
        s.err
            .find(WAIT, |l| l.contains("Connection opened").then_some(()))
            .is_some(),
        "{}",
        s.err.seen()
    );
}

#[test]
fn serve_broadcast_reaches_every_client_on_the_path_sender_included() {
    let s = serve(&["--broadcast"]);
    let url = format!("ws://{}/chat", s.addr);
    let listener = RxWSClient::<String>::connect(&url, Text).expect("client");
    let rx = listener.stream();
    assert!(listener.wait_connected(WAIT));
    // Another path hears nothing.
    let other =
        RxWSClient::<String>::connect(&format!("ws://{}/other", s.addr), Text).expect("client");
    let other_rx = other.stream();
    assert!(other.wait_connected(WAIT));
    let out = connect(&[], &url, "hi all\nsecond\n");
    assert!(out.status.success(), "{out:?}");
    // The sender gets its own lines back.
    assert_eq!(text(&out.stdout), "hi all\nsecond\n");
    for want in ["hi all", "second"] {
        match rx.recv_timeout(WAIT) {
            Ok(Notification::Next(m)) => assert_eq!(m, want),
            other => panic!("{other:?}"),
        }
    }
    assert!(other_rx.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn serve_print_shows_text_and_binary() {
    let s = serve(&["--print"]);
    let url = format!("ws://{}/p", s.addr);
    let out = connect(&["--binary"], &url, "abc\n");
    assert!(out.status.success(), "{out:?}");
    // Print sends nothing back.
    assert_eq!(text(&out.stdout), "");
    let line = s
        .out
        .find(WAIT, |l| {
            l.ends_with(" /p binary 616263").then(|| l.to_owned())
        })
        .unwrap_or_else(|| panic!("{}", s.out.seen()));
    let conn = line.split(' ').next().expect("conn");
    assert!(
        conn.parse::<rxplus::ws::ConnId>().is_ok(),
        "a connection id first: {line}"
    );
    connect(&[], &url, "plain\n");
    assert!(s
        .out
        .find(WAIT, |l| l.ends_with(" /p text plain").then_some(()))
        .is_some());
}

#[test]
fn connect_exit_codes() {
    let s = serve(&[]);
    let url = format!("ws://{}/x", s.addr);
    // Stdin stays open: the server's close ends the client, not EOF.
    let mut proc = Proc::spawn_with_stdin(
        "rxplus connect",
        rxplus()
            .args(["connect", &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut stdin = proc.stdin();
    let err = proc.stderr_lines();
    writeln!(stdin, "close:4001:bye").expect("write");
    let status = proc
        .wait_timeout(WAIT)
        .expect("exits after the server's close");
    assert_eq!(status.code(), Some(3), "{}", err.seen());
    assert!(
        err.find(WAIT, |l| (l == "[closed 4001 bye]").then_some(()))
            .is_some(),
        "{}",
        err.seen()
    );
    drop(stdin);

    // Nothing listens: one retry, then it gives up with exit 1.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("ws://{}/", free.local_addr().expect("addr"));
    drop(free);
    let out = connect(&["--retries", "1"], &dead, "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("rxplus: ") && err.contains("gave up"), "{err}");
}

#[test]
fn bench_prints_one_summary_line() {
    let s = serve(&[]);
    for extra in [
        &[][..],
        &["--binary", "--size", "1000", "--window", "8"][..],
    ] {
        let out = rxplus()
            .args(["bench", "--messages", "2000"])
            .args(extra)
            .arg(format!("ws://{}/bench", s.addr))
            .output()
            .expect("run");
        assert!(out.status.success(), "{out:?}");
        let stdout = text(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        assert!(stdout.starts_with("2000 "), "{stdout}");
        assert!(
            stdout.contains(" msg/s") && stdout.contains("p50 "),
            "{stdout}"
        );
    }
    // Not an echo server: nothing comes back, a clear error and exit 1.
    let quiet = serve(&["--print"]);
    let out = rxplus()
        .args(["bench", "--messages", "10", "--idle", "1"])
        .arg(format!("ws://{}/bench", quiet.addr))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("no echo"), "{out:?}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["serve", "--echo", "--print"][..],
        &["serve", "--tls-cert", "chain.pem"],
        &["serve", "--protocols", ","],
        &["--log", "loud", "serve"],
        &["connect", "-H", "no-colon", "ws://127.0.0.1:1/"],
        &["connect"],
        &["gateway", "--listen", "127.0.0.1:0", "--overflow", "nope"],
        &["bogus"],
        &["bench", "--messages", "0", "ws://127.0.0.1:1/"],
        &[
            "bench",
            "--messages",
            "18446744073709551615",
            "ws://127.0.0.1:1/",
        ],
        &["bench", "--size", "999999999999", "ws://127.0.0.1:1/"],
        &["bench", "--idle", "0", "ws://127.0.0.1:1/"],
    ] {
        let out = rxplus().args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no reason given");
    }
}

#[test]
fn log_level_reaches_stderr() {
    let s = serve(&[]);
    let url = format!("ws://{}/x", s.addr);
    let out = rxplus()
        .args(["--log", "debug", "connect", &url])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("DEBUG") || err.contains("INFO"), "{err}");
    let out = rxplus()
        .args(["--log", "off", "connect", &url])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let err = text(&out.stderr);
    assert!(!err.contains("INFO") && !err.contains("DEBUG"), "{err}");
    drop(s.out);
}
